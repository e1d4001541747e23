#!/bin/bash
# moe-run's KV features (issue 10): the K-shift goldens through --kv, --kv
# defrag changing nothing, shared sequences through --kv cp/keep and --seq,
# a 4,000-token generation through context shifts, the prompt cache.
# $1: the test_golden program (compares logits files).
set -u
. "$MOE_TEST_DIR/sh_util.sh"
require_conformance
GOLDEN=$1
T=$(make_tmp kv-cli)
RUN="$MOE_BIN_DIR/moe-run"
SYNTH="$MOE_BIN_DIR/moe-synth"
C="$MOE_CONFORMANCE_DIR"
PROMPT_IDS=$(cat "$C/prompt.tokens")
FEED_IDS=$(cat "$C/kvshift.feed")

run_rc() { # run_rc WANT NAME CMD...: stdout $T/o.txt, stderr $T/e.txt
    local want=$1 name=$2 rc
    shift 2
    "$@" > "$T/o.txt" 2> "$T/e.txt"
    rc=$?
    check "$name: exit $want (got $rc)" test "$rc" -eq "$want"
    [ "$rc" -eq "$want" ] || sed 's/^/    /' "$T/e.txt" >&2
}

# ---- the K-shift goldens through the CLI ------------------------------------------------
for m in tiny-llama tiny-qwen2moe tiny-olmoe tiny-deepseek2; do
    M="$C/models/$m.gguf"
    [ -f "$M" ] && [ -f "$C/expected/$m.kvshift.logits" ] || { echo "skip: $m"; continue; }
    run_rc 0 "$m kvshift" "$RUN" -m "$M" --prompt-tokens "$PROMPT_IDS" --kv "rm 0 1 5" \
        --kv "add 0 5 -1 -4" --feed-tokens "$FEED_IDS" --logits-out "$T/$m.logits"
    "$GOLDEN" compare "$T/$m.logits" "$C/expected/$m.kvshift.logits" 512 > "$T/cmp.txt" 2>&1
    check "$m: kvshift golden within the float tolerance" test $? -eq 0
    sed 's/^/    /' "$T/cmp.txt" | head -1
    run_rc 0 "$m kvshift + defrag" "$RUN" -m "$M" --prompt-tokens "$PROMPT_IDS" --kv "rm 0 1 5" \
        --kv "add 0 5 -1 -4" --kv defrag --feed-tokens "$FEED_IDS" --logits-out "$T/$m.d.logits"
    # attention walks a sequence's cells in position order: where a defrag
    # puts them changes nothing
    check "$m: --kv defrag changes no bit" cmp -s "$T/$m.logits" "$T/$m.d.logits"
done

# ---- sequences through --kv and --seq ---------------------------------------------------
LLAMA="$C/models/tiny-llama.gguf"
run_rc 0 "feed seq 0" "$RUN" -m "$LLAMA" --prompt-tokens "$PROMPT_IDS" --feed-tokens "$FEED_IDS" \
    --logits-out "$T/s0.logits"
run_rc 0 "cp to seq 1, keep 1, feed seq 1" "$RUN" -m "$LLAMA" --prompt-tokens "$PROMPT_IDS" \
    --kv "cp 0 1 0 -1" --kv "keep 1" --seq 1 --feed-tokens "$FEED_IDS" --logits-out "$T/s1.logits"
check "a copied sequence decodes exactly as the original" cmp -s "$T/s0.logits" "$T/s1.logits"
run_rc 0 "div then feed" "$RUN" -m "$LLAMA" --prompt-tokens "$PROMPT_IDS" --kv "div 0 0 -1 2" \
    --feed-tokens "1" --logits-out "$T/div.logits" -v
check "  fed at seq_pos_max + 1 after div" test "$(stat -c %s "$T/div.logits")" = $((17 * 512 * 4))
run_rc 2 "--kv with too few numbers" "$RUN" -m "$LLAMA" --prompt-tokens 1 --kv "rm 0 1" \
    --logits-out "$T/x.logits"
run_rc 2 "--kv unknown operation" "$RUN" -m "$LLAMA" --prompt-tokens 1 --kv "jump 1" \
    --logits-out "$T/x.logits"
run_rc 2 "--kv without --prompt-tokens" "$RUN" -m "$LLAMA" -p hi --kv defrag
run_rc 2 "--prompt-cache with --prompt-tokens" "$RUN" -m "$LLAMA" --prompt-tokens 1 \
    --logits-out "$T/x.logits" --prompt-cache "$T/x.cache"

# ---- context shift ------------------------------------------------------------------------
# a one-layer model of 0.1 MiB: 4,000 tokens take seconds, even under ASan
NANO="--preset tiny --arch llama --n-embd 32 --n-head 2 --n-head-kv 1 --n-ff 32 --n-vocab 259
      --n-layer 1 --n-expert 4 --n-expert-used 2"
"$SYNTH" $NANO -f "$T/micro.gguf" > /dev/null 2>&1
MICRO="$T/micro.gguf"
check "micro model synthesised" test -s "$MICRO"
run_rc 0 "4000 tokens with -c 256" "$RUN" -m "$MICRO" -p "Hello" -n 4000 -c 256 -s 7 \
    --ignore-eos -t 1
check "  ran to the end" grep -q "stopped: -n reached" "$T/e.txt"
check "  3999 single-token evaluations" grep -q "  eval time = .* / *3999 runs" "$T/e.txt"
check "  through context shifts" grep -q "context shifts: [1-9][0-9]" "$T/e.txt"
grep "context shifts\|  eval time" "$T/e.txt" | sed 's/^/    /'
run_rc 0 "--no-context-shift stops at a full context" "$RUN" -m "$MICRO" -p "Hello" -n 400 -c 64 \
    -s 7 --ignore-eos --no-context-shift
check "  stopped: context full" grep -q "stopped: context full" "$T/e.txt"
run_rc 0 "-n -2 stops at a full context" "$RUN" -m "$MICRO" -p "Hello" -n -2 -c 64 -s 7 --ignore-eos
check "  stopped: context full" grep -q "stopped: context full" "$T/e.txt"
run_rc 0 "--keep -1 keeps the prompt" "$RUN" -m "$MICRO" -p "Hello world" -n 100 -c 32 -s 7 \
    --ignore-eos --keep -1 --defrag-thold -1
check "  ran to the end" grep -q "stopped: -n reached" "$T/e.txt"

# ---- prompt cache ----------------------------------------------------------------------------
P="The quick brown fox jumps over the lazy dog and keeps on running"
run_rc 0 "no cache" "$RUN" -m "$MICRO" -p "$P" -n 24 -s 42
cp "$T/o.txt" "$T/plain.txt"
run_rc 0 "first run writes the cache" "$RUN" -m "$MICRO" -p "$P" -n 24 -s 42 --prompt-cache "$T/pc.bin"
check "  same text as without a cache" cmp -s "$T/o.txt" "$T/plain.txt"
check "  cache written" test -s "$T/pc.bin"
N=$(sed -n 's/.*prompt eval time = *[0-9.]* ms \/ *\([0-9]*\) tokens.*/\1/p' "$T/e.txt")
run_rc 0 "second run reuses it" "$RUN" -m "$MICRO" -p "$P" -n 24 -s 42 --prompt-cache "$T/pc.bin"
check "  identical text" cmp -s "$T/o.txt" "$T/plain.txt"
check "  prompt evaluation skipped (0 tokens)" grep -q "prompt eval time = .* / *0 tokens" "$T/e.txt"
check "  all $N prompt tokens reused" grep -q "reusing $N of $N prompt tokens" "$T/e.txt"
run_rc 0 "a longer prompt reuses the prefix" "$RUN" -m "$MICRO" -p "$P and jumping" -n 8 -s 42 \
    --prompt-cache "$T/pc.bin"
check "  only the new tokens evaluated" grep -q "reusing $N of" "$T/e.txt"
"$RUN" -m "$MICRO" -p "$P and jumping" -n 8 -s 42 > "$T/long-plain.txt" 2> /dev/null
check "  same text as without a cache" cmp -s "$T/o.txt" "$T/long-plain.txt"
"$SYNTH" $NANO --seed 2 -f "$T/other.gguf" > /dev/null 2>&1
run_rc 1 "a cache from another model" "$RUN" -m "$T/other.gguf" -p "$P" -n 4 --prompt-cache "$T/pc.bin"
check "  refused with a message" grep -q "another model" "$T/e.txt"
sed 's/^/    /' "$T/e.txt" | tail -1
printf 'garbage' > "$T/bad.bin"
run_rc 1 "a file that is no cache" "$RUN" -m "$MICRO" -p "$P" -n 4 --prompt-cache "$T/bad.bin"
check_no_temp_files "$T"
finish
