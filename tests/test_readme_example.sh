#!/bin/bash
# The README's worked example, as written: every `build/bin/...` command of
# its "Worked example" section runs (in order, with its pipes; a pipeline
# counts by its last command, as in a shell) on moe-synth stand-ins named
# like the real downloads (a legacy split-expert Mixtral shape, an OLMoE
# shape, both scaled down), and the files it writes are what
# the text says: the legacy input has per-expert tensors, the repacked and
# quantized outputs are stacked, the interleaved one in q4_0_r8. A command
# edited in the README is tried here; no network, no conformance pack.
set -u
. "$MOE_TEST_DIR/sh_util.sh"
T=$(make_tmp readme-example)
B="$MOE_BIN_DIR"
README="$MOE_TEST_DIR/../README.md"

section=$(awk '/^## Worked example/ {on = 1; next} /^## / {on = 0} on' "$README")
commands=$(printf '%s\n' "$section" | sed -n 's|^    build/bin/|build/bin/|p')
check "the README has a worked example with moe-* commands" test -n "$commands"

cd "$T" || exit 1
mkdir -p build && ln -s "$B" build/bin
"$B/moe-synth" -f --preset mixtral-8x7b --scale 0.002 --layout split --type q4_0 -t 2 \
    mixtral-8x7b-instruct-v0.1.Q4_0.gguf 2>/dev/null
"$B/moe-synth" -f --preset olmoe-1b-7b --scale 0.01 --type q4_0 -t 2 \
    OLMoE-1b-7b-0924-Instruct-Q4_0.gguf 2>/dev/null

n=0
while IFS= read -r cmd; do
    n=$((n + 1))
    # moe-bench: one repetition is enough to show it runs
    case "$cmd" in build/bin/moe-bench*) cmd="$cmd -r 1" ;; esac
    check "README command $n runs: $cmd" bash -c "$cmd >cmd$n.out 2>&1"
done <<<"$commands"
check "at least the eight commands of the example ran" test "$n" -ge 8

check "the downloaded Mixtral stand-in is a legacy split-expert file" \
    bash -c "'$B/moe-inspect' mixtral-8x7b-instruct-v0.1.Q4_0.gguf | grep -q 'blk\.0\.ffn_gate\.0\.weight'"
check "moe-repack --interleave wrote stacked q4_0_r8 experts" \
    bash -c "'$B/moe-inspect' mixtral-q4_0_r8.gguf | grep -Eq 'blk\.0\.ffn_gate_exps\.weight +q4_0_r8'"
check "moe-quantize on the legacy file wrote stacked iq4_nl experts" \
    bash -c "'$B/moe-inspect' mixtral-iq4_nl.gguf | grep -Eq 'blk\.0\.ffn_gate_exps\.weight +iq4_nl'"
check "no per-expert tensor is left in moe-quantize's output" \
    bash -c "! '$B/moe-inspect' mixtral-iq4_nl.gguf | grep -q 'ffn_gate\.0\.weight'"
check "the OLMoE stand-in was interleaved" \
    bash -c "'$B/moe-inspect' olmoe-q4_0_r8.gguf | grep -Eq 'ffn_down_exps\.weight +q4_0_r8'"
check "moe-bench printed its table for the interleaved file" \
    bash -c "grep -h 'olmoe Q4_0_R8' cmd*.out | grep -q tg32"
finish
