#!/bin/bash
# Bad surroundings found by trying (issue 16, "Hardening"): output that cannot
# be written is an error, not a silent exit 0. Runs on a moe-synth model, so
# it needs no conformance pack.
set -u
source "$MOE_TEST_DIR/sh_util.sh"
T=$(make_tmp hardening-cli)
B="$MOE_BIN_DIR"
"$B/moe-synth" -f "$T/m.gguf" > /dev/null 2>&1
check "synth model written" test -s "$T/m.gguf"

"$B/moe-run" -m "$T/m.gguf" -p hi -n 2 -s 1 --expert-stats "$T/stats.json" > /dev/null 2>&1
check "expert statistics written" test -s "$T/stats.json"

# stdout on a full device: every tool that prints results must notice
if [ -w /dev/full ]; then
    while IFS='|' read -r name cmd; do
        eval "$cmd" > /dev/full 2> "$T/err.txt"; rc=$?
        check "$name > /dev/full: exit 1 (got $rc)" test $rc -eq 1
        check "$name > /dev/full: says so" grep -q "writing to standard output failed" "$T/err.txt"
    done <<LIST
moe-inspect --json|"$B/moe-inspect" --json "$T/m.gguf"
moe-inspect|"$B/moe-inspect" "$T/m.gguf"
moe-manifest hash|"$B/moe-manifest" hash "$T/m.gguf"
moe-run -p|"$B/moe-run" -m "$T/m.gguf" -p hi -n 4 -s 1
moe-stats report|"$B/moe-stats" report "$T/stats.json"
LIST
fi
# --json: the stored checksums (moe.xxh3, u64) as 16-digit hex strings, equal
# to the XXH3-64 that --verify computes for the same tensor
"$B/moe-inspect" --json --verify "$T/m.gguf" > "$T/m.json"
check "moe.xxh3 values are 16-digit hex strings" \
    grep -qE '"key": "moe.xxh3".*"value": \["[0-9a-f]{16}"(, "[0-9a-f]{16}")*\]' "$T/m.json"
first=$(grep -oE '"key": "moe.xxh3".*"value": \["[0-9a-f]{16}"' "$T/m.json" | grep -oE '[0-9a-f]{16}"$' | tr -d '"')
check "the first stored checksum is tensor 0's computed one" \
    test -n "$first" -a "$(grep -oE '"xxh3": "[0-9a-f]{16}"' "$T/m.json" | head -1)" = "\"xxh3\": \"$first\""
# a tensor with a zero dimension (corpus edge-values.gguf: zero.weight [0, 4]):
# every tool accepts it; moe-quantize keeps it as it is (there is nothing to
# quantize) instead of dividing by its row length
EDGE="$MOE_TEST_DIR/corpus/gguf/good/edge-values.gguf"
"$B/moe-inspect" --verify "$EDGE" > "$T/edge.txt" 2>&1
check "moe-inspect accepts a zero-sized tensor" grep -q "zero.weight .*\[0, 4\]" "$T/edge.txt"
"$B/moe-repack" -f "$EDGE" "$T/edge-repack.gguf" > /dev/null 2>&1
check "moe-repack copies it" bash -c "'$B/moe-inspect' '$T/edge-repack.gguf' | grep -q 'zero.weight .*f32 *\[0, 4\]'"
"$B/moe-quantize" -f --tensor-type 'iq4_ks=iq4_ks' --type q8_0 "$EDGE" "$T/edge-q.gguf" \
    > /dev/null 2> "$T/edge-q.err"; rc=$?
check "moe-quantize on it: exit 0 (got $rc)" test $rc -eq 0
check "moe-quantize keeps it f32 [0, 4]" \
    bash -c "'$B/moe-inspect' --verify '$T/edge-q.gguf' | grep -q 'zero.weight .*f32 *\[0, 4\]'"
finish
