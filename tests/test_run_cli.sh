#!/bin/bash
# moe-run as a user runs it: the conformance interface against the goldens and
# the API, a demo model end to end (deterministic with -s, timing lines),
# --chat, and refusals with the right exit codes (usage 2, failures 1).
# $1: the test_golden program (compares logits files, writes the API's rows).
set -u
. "$MOE_TEST_DIR/sh_util.sh"
require_conformance
GOLDEN=$1
T=$(make_tmp run-cli)
RUN="$MOE_BIN_DIR/moe-run"
SYNTH="$MOE_BIN_DIR/moe-synth"
C="$MOE_CONFORMANCE_DIR"
LLAMA="$C/models/tiny-llama.gguf"
PROMPT_IDS=$(cat "$C/prompt.tokens")

# run_rc WANT NAME CMD...: runs CMD (stdout $T/o.txt, stderr $T/e.txt) and
# checks its exit status and that a failure says something on stderr
run_rc() {
    local want=$1 name=$2 rc
    shift 2
    "$@" > "$T/o.txt" 2> "$T/e.txt"
    rc=$?
    check "$name: exit $want (got $rc)" test "$rc" -eq "$want"
    if [ "$want" -ne 0 ]; then
        check "$name: a message on stderr" test -s "$T/e.txt"
        [ "$rc" -eq "$want" ] || sed 's/^/    /' "$T/e.txt" >&2
    fi
}

# tokens of the prompt, read from the "prompt eval time = X ms / N tokens" line
prompt_tokens_of() {
    sed -n 's/.*prompt eval time = *[0-9.]* ms \/ *\([0-9]*\) tokens.*/\1/p' "$1"
}

# ---- conformance interface -------------------------------------------------------------
if [ -f "$LLAMA" ]; then
    run_rc 0 "tiny-llama logits" "$RUN" -m "$LLAMA" --prompt-tokens "$PROMPT_IDS" \
        --feed-tokens "$(cat "$C/expected/tiny-llama.greedy")" --logits-out "$T/llama.logits"
    cp "$T/o.txt" "$T/argmax.txt"
    check "logits file holds 32 rows of 512" test "$(stat -c %s "$T/llama.logits" 2>/dev/null)" = $((32 * 512 * 4))
    check "one arg-max per row on stdout" test "$(wc -w < "$T/argmax.txt")" -eq 32
    "$GOLDEN" compare "$T/llama.logits" "$C/expected/tiny-llama.logits" 512 > "$T/cmp.txt" 2>&1
    check "CLI logits within 0.01 of the golden" test $? -eq 0
    sed 's/^/    /' "$T/cmp.txt"
    "$GOLDEN" dump tiny-llama "$T/api.logits" > /dev/null 2>&1
    check "CLI logits byte-identical to the API's" cmp -s "$T/llama.logits" "$T/api.logits"
    check "timing lines in conformance mode" grep -q "prompt eval time = .* / *16 tokens" "$T/e.txt"
    check "no temp file left" test -z "$(ls -A "$T" | grep '\.tmp\.')"

    # ids may be separated by commas too; no feed is fine
    run_rc 0 "prompt only, commas" "$RUN" -m "$LLAMA" --prompt-tokens "$(echo $PROMPT_IDS | tr ' ' ',')" \
        --logits-out "$T/p.logits"
    check "16 rows" test "$(stat -c %s "$T/p.logits" 2>/dev/null)" = $((16 * 512 * 4))
    check "prompt rows equal the full run's" cmp -s "$T/p.logits" <(head -c $((16 * 512 * 4)) "$T/llama.logits")

    Q="$C/models/tiny-llama-q4_K.gguf"
    if [ -f "$Q" ]; then
        run_rc 0 "q4_K logits" "$RUN" -m "$Q" --prompt-tokens "$PROMPT_IDS" \
            --feed-tokens "$(cat "$C/expected/tiny-llama-q4_K.greedy")" --logits-out "$T/q4k.logits"
        "$GOLDEN" compare "$T/q4k.logits" "$C/expected/tiny-llama-q4_K.logits" 512 quant > "$T/cmp.txt" 2>&1
        check "q4_K CLI logits within the quantized tolerance" test $? -eq 0
    fi

    run_rc 2 "--prompt-tokens without --logits-out" "$RUN" -m "$LLAMA" --prompt-tokens "1 2"
    run_rc 2 "--logits-out without --prompt-tokens" "$RUN" -m "$LLAMA" --logits-out "$T/x.logits"
    run_rc 2 "--feed-tokens alone" "$RUN" -m "$LLAMA" --feed-tokens "1"
    run_rc 2 "--prompt-tokens with -p" "$RUN" -m "$LLAMA" -p hi --prompt-tokens 1 --logits-out "$T/x.logits"
    run_rc 2 "junk token id" "$RUN" -m "$LLAMA" --prompt-tokens "1 x2" --logits-out "$T/x.logits"
    run_rc 2 "negative token id" "$RUN" -m "$LLAMA" --prompt-tokens "1 -2" --logits-out "$T/x.logits"
    run_rc 2 "empty --prompt-tokens" "$RUN" -m "$LLAMA" --prompt-tokens " " --logits-out "$T/x.logits"
    run_rc 2 "token id past the vocabulary" "$RUN" -m "$LLAMA" --prompt-tokens "1 512" --logits-out "$T/x.logits"
    check "  names the id" grep -q "512" "$T/e.txt"
    check "  no output file" test ! -e "$T/x.logits"
    run_rc 1 "unwritable --logits-out" "$RUN" -m "$LLAMA" --prompt-tokens "1" --logits-out "$T/no/such/dir/x"
    check "  names the path" grep -q "no/such/dir" "$T/e.txt"
fi

# ---- demo model end to end ---------------------------------------------------------------
"$SYNTH" --preset tiny --arch llama --vocab "$C/vocab/ggml-vocab-llama-spm.gguf" -f "$T/demo.gguf" > /dev/null 2>&1
check "demo model synthesised" test -s "$T/demo.gguf"
DEMO="$T/demo.gguf"

run_rc 0 "generate 16 tokens" "$RUN" -m "$DEMO" -p "Hello" -n 16 -s 42
cp "$T/o.txt" "$T/out1.txt"; cp "$T/e.txt" "$T/err1.txt"
check "prompt echoed" grep -q "Hello" "$T/out1.txt"
check "text generated after the prompt" test "$(wc -c < "$T/out1.txt")" -gt 8
for line in "load time = *[0-9.]* ms" \
            "prompt eval time = *[0-9.]* ms / *[0-9]* tokens ( *[0-9.]* ms per token, *[0-9.]* tokens per second)" \
            "eval time = *[0-9.]* ms / *[0-9]* runs *( *[0-9.]* ms per token, *[0-9.]* tokens per second)" \
            "total time = *[0-9.]* ms / *[0-9]* tokens" \
            "weight bandwidth = *[0-9.]* GB/s"; do
    check "timing line: $line" grep -q "$line" "$T/err1.txt"
done
check "15 single-token evaluations for 16 tokens" grep -q "  eval time = .* / *15 runs" "$T/err1.txt"
check "prompt is BOS + Hello" test "$(prompt_tokens_of "$T/err1.txt")" = 2
sed -n 's/^/    /; /eval time\|bandwidth/p' "$T/err1.txt"

"$RUN" -m "$DEMO" -p "Hello" -n 16 -s 42 > "$T/out2.txt" 2> /dev/null
check "same seed, same text" cmp -s "$T/out1.txt" "$T/out2.txt"
"$RUN" -m "$DEMO" -p "Hello" -n 16 -s 43 > "$T/out3.txt" 2> /dev/null
check "another seed, other text" test "$(cat "$T/out1.txt")" != "$(cat "$T/out3.txt")"
"$RUN" -m "$DEMO" -p "Hello" -n 16 -s 42 --no-mmap > "$T/out4.txt" 2> /dev/null
check "--no-mmap: same text" cmp -s "$T/out1.txt" "$T/out4.txt"
printf 'Hello\n' > "$T/prompt.txt"
"$RUN" -m "$DEMO" -f "$T/prompt.txt" -n 16 -s 42 > "$T/out5.txt" 2> /dev/null
check "-f FILE (trailing newline dropped) = -p" cmp -s "$T/out1.txt" "$T/out5.txt"
"$RUN" -m "$DEMO" -p "Hello" -n 8 --temp 0 > "$T/g1.txt" 2> /dev/null
"$RUN" -m "$DEMO" -p "Hello" -n 8 --temp 0 > "$T/g2.txt" 2> /dev/null
check "greedy without a seed is deterministic" cmp -s "$T/g1.txt" "$T/g2.txt"
"$RUN" -m "$DEMO" -p "Hello" -n 16 -s 42 -t 1 > "$T/t1.txt" 2> /dev/null
"$RUN" -m "$DEMO" -p "Hello" -n 16 -s 42 -t 2 > "$T/t2.txt" 2> /dev/null
check "the text does not depend on -t" cmp -s "$T/t1.txt" "$T/t2.txt"
run_rc 0 "sampling flags" "$RUN" -m "$DEMO" -p "Hello" -n 4 -s 1 --top-k 5 --top-p 0.9 \
    --min-p 0.1 --repeat-penalty 1.1 --repeat-last-n -1 -t 1 -c 64
run_rc 0 "q8_0 KV cache" "$RUN" -m "$DEMO" -p "Hello" -n 4 -s 1 -ctk q8_0 -ctv q8_0
run_rc 0 "f32 KV cache" "$RUN" -m "$DEMO" -p "Hello" -n 4 -s 1 --cache-type-k f32 --cache-type-v f32
run_rc 0 "-n 0 evaluates the prompt only" "$RUN" -m "$DEMO" -p "Hello" -n 0
run_rc 0 "--verify on an intact model" "$RUN" -m "$DEMO" -p "Hello" -n 2 -s 1 --verify
run_rc 0 "-n -2 runs to the end of a small context" "$RUN" -m "$DEMO" -p "Hello" -n -2 -c 24 -s 1
check "  stops at a full context or end of text" grep -q "context full\|end of text" "$T/e.txt"
run_rc 0 "--help" "$RUN" --help
check "  help on stdout" grep -q "usage: moe-run" "$T/o.txt"
check "  help lists -ctk" grep -q -- "-ctk, --cache-type-k" "$T/o.txt"

# Ctrl-C ends generation early, as in llama-cli, and the timings still print
"$RUN" -m "$DEMO" -p "Hello" -n -1 -s 1 > "$T/int.txt" 2> "$T/int-err.txt" &
pid=$!
for _ in $(seq 100); do
    [ "$(wc -c < "$T/int.txt")" -gt 20 ] && break
    sleep 0.1
done
if kill -INT $pid 2> /dev/null; then
    wait $pid; rc=$?
    check "Ctrl-C: exit 0 (got $rc)" test $rc -eq 0
    check "Ctrl-C: says it was interrupted" grep -q "stopped: interrupted" "$T/int-err.txt"
else
    wait $pid; rc=$?
    echo "note: generation ended before Ctrl-C could be sent (exit $rc)"
fi
check "Ctrl-C: timings printed" grep -q "  eval time = " "$T/int-err.txt"

# a corrupted weight byte: caught by --verify, not otherwise
cp "$DEMO" "$T/corrupt.gguf"
printf '\xff\xff\xff\xff' | dd of="$T/corrupt.gguf" bs=1 seek=800000 conv=notrunc status=none
run_rc 1 "--verify rejects a corrupted tensor" "$RUN" -m "$T/corrupt.gguf" -p hi -n 1 --verify

# ---- --chat -------------------------------------------------------------------------------
# phi-3's vocabulary is the only conformance vocabulary with a chat template
"$SYNTH" --preset tiny --arch llama --vocab "$C/vocab/ggml-vocab-phi-3.gguf" -f "$T/chat.gguf" > /dev/null 2>&1
"$RUN" -m "$T/chat.gguf" -p "Hello" -n 4 -s 1 > /dev/null 2> "$T/plain.txt"
"$RUN" -m "$T/chat.gguf" -p "Hello" -n 4 -s 1 --chat > "$T/o.txt" 2> "$T/e.txt"; rc=$?
if [ $rc -eq 0 ]; then
    check "--chat with the model's template adds the template's tokens" \
        test "$(prompt_tokens_of "$T/e.txt")" -gt "$(prompt_tokens_of "$T/plain.txt")"
else
    echo "note: the model's (phi-3) template is not supported: $(cat "$T/e.txt")"
    check "--chat with an unsupported template fails as a runtime error" test $rc -eq 1 -a -s "$T/e.txt"
fi
run_rc 0 "--chat-template chatml" "$RUN" -m "$DEMO" -p "Hello" -n 4 -s 1 --chat-template chatml
cp "$T/e.txt" "$T/chatml.txt"
check "  the template's text is in the prompt" \
    test "$(prompt_tokens_of "$T/chatml.txt")" -gt "$(prompt_tokens_of "$T/err1.txt")"
# without a template of its own the model gets chatml, as in llama.cpp
run_rc 0 "--chat on a model without a template" "$RUN" -m "$DEMO" -p "Hello" -n 4 -s 1 --chat
check "  falls back to chatml" \
    test "$(prompt_tokens_of "$T/e.txt")" = "$(prompt_tokens_of "$T/chatml.txt")"
run_rc 1 "--chat-template that is not one we know" "$RUN" -m "$DEMO" -p "Hello" -n 1 \
    --chat-template "{{ no such template }}"

# ---- usage errors: exit 2 ----------------------------------------------------------------
run_rc 2 "no arguments" "$RUN"
run_rc 2 "no -m" "$RUN" -p hi
run_rc 2 "-n -3" "$RUN" -m "$DEMO" -n -3
run_rc 2 "-n junk" "$RUN" -m "$DEMO" -n 12x
run_rc 2 "-t 0" "$RUN" -m "$DEMO" -t 0
run_rc 2 "-t -1" "$RUN" -m "$DEMO" -t -1
run_rc 2 "-c -1" "$RUN" -m "$DEMO" -c -1
run_rc 0 "-c 0 runs with the training context" "$RUN" -m "$DEMO" -p "Hello" -n 2 -c 0 -s 1
check "-c 0: context equals the trained one" grep -q 'context \([0-9]*\) (trained \1)' "$T/e.txt"
run_rc 2 "-n -5" "$RUN" -m "$DEMO" -n -5
run_rc 2 "--temp -1" "$RUN" -m "$DEMO" --temp -1
run_rc 2 "--top-p 0" "$RUN" -m "$DEMO" --top-p 0
run_rc 2 "--top-p 1.5" "$RUN" -m "$DEMO" --top-p 1.5
run_rc 2 "--min-p 2" "$RUN" -m "$DEMO" --min-p 2
run_rc 2 "--repeat-penalty 0" "$RUN" -m "$DEMO" --repeat-penalty 0
run_rc 2 "--top-k -1" "$RUN" -m "$DEMO" --top-k -1
run_rc 2 "-p and -f" "$RUN" -m "$DEMO" -p hi -f "$T/prompt.txt"
run_rc 2 "-ctk q4_0" "$RUN" -m "$DEMO" -ctk q4_0
run_rc 2 "-ctv nonsense" "$RUN" -m "$DEMO" -ctv nonsense
run_rc 2 "unknown option" "$RUN" -m "$DEMO" --no-such-flag
run_rc 2 "a positional argument" "$RUN" -m "$DEMO" extra
run_rc 2 "-s given twice" "$RUN" -m "$DEMO" -s 1 -s 2
run_rc 2 "prompt longer than the context" "$RUN" -m "$DEMO" -p "one two three four five six seven eight nine ten" -c 4

# ---- runtime failures: exit 1, naming the file -----------------------------------------
run_rc 1 "missing model" "$RUN" -m "$T/missing.gguf" -p hi
check "  names the path" grep -q "missing.gguf" "$T/e.txt"
run_rc 1 "missing prompt file" "$RUN" -m "$DEMO" -f "$T/missing-prompt.txt"
check "  names the path" grep -q "missing-prompt.txt" "$T/e.txt"
run_rc 1 "a directory as the model" "$RUN" -m "$T" -p hi
: > "$T/empty.gguf"
run_rc 1 "an empty file" "$RUN" -m "$T/empty.gguf" -p hi
head -c 1000000 "$DEMO" > "$T/truncated.gguf"
run_rc 1 "a truncated model" "$RUN" -m "$T/truncated.gguf" -p hi
check "  names the file" grep -q "truncated.gguf" "$T/e.txt"
n_bad=0; n_ok=0
for f in "$MOE_TEST_DIR"/corpus/gguf/bad/*.gguf "$MOE_TEST_DIR"/corpus/gguf/good/*.gguf; do
    [ -e "$f" ] || continue
    n_bad=$((n_bad + 1))
    # good-but-not-a-model files (no architecture, no tensors) must fail too
    timeout 10 "$RUN" -m "$f" -p hi -n 1 > /dev/null 2> "$T/e.txt"; rc=$?
    if [ $rc -eq 1 ] && [ -s "$T/e.txt" ]; then
        n_ok=$((n_ok + 1))
    else
        echo "  $f: exit $rc" >&2
    fi
done
check "all $n_bad malformed or model-less files rejected with exit 1" test "$n_ok" -eq "$n_bad" -a "$n_bad" -gt 0

# a dense llama (no experts) runs; an interleaved file gives its plain twin's logits
"$SYNTH" --force --preset tiny --arch llama --n-expert 0 --n-expert-used 0 --type q8_0 --seed 3 \
    "$T/dense.gguf" 2> /dev/null
"$RUN" -m "$T/dense.gguf" -p "Hello" -n 4 -s 1 > "$T/dense.txt" 2> "$T/dense.err"
check "dense llama model generates" test $? -eq 0 -a -s "$T/dense.txt"
P="1 450 306 372 263 310 278 338 260 13 322 411 297 373 304 376"
"$MOE_BIN_DIR/moe-repack" -q --interleave --interleave-pattern . \
    "$MOE_CONFORMANCE_DIR/models/tiny-llama-q4_0.gguf" "$T/r8.gguf"
# exact at the reference and scalar levels (same sums in the same order); the
# SIMD levels sum plain and interleaved blocks in different float orders
# (test_kernels bounds those differences)
for level in ref scalar; do
    MOE_CPU_LEVEL=$level "$RUN" -m "$MOE_CONFORMANCE_DIR/models/tiny-llama-q4_0.gguf" \
        --prompt-tokens "$P" --logits-out "$T/plain.bin" > /dev/null 2>&1
    MOE_CPU_LEVEL=$level "$RUN" -m "$T/r8.gguf" --prompt-tokens "$P" --logits-out "$T/r8.bin" \
        > /dev/null 2>&1
    check "q4_0_r8 gives exactly the q4_0 logits ($level level)" cmp -s "$T/plain.bin" "$T/r8.bin"
done

finish
