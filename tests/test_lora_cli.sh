#!/bin/bash
# LoRA from the command line: moe-run --lora / --lora-scaled against the pack's
# LoRA goldens (machine level and reference), refusals, and moe-quantize
# --merge-lora (merged into the weights, then the type) against the same goldens.
# $1: the test_golden program (compares logits files).
set -u
. "$MOE_TEST_DIR/sh_util.sh"
require_conformance
GOLDEN=$1
T=$(make_tmp lora-cli)
RUN="$MOE_BIN_DIR/moe-run"
QUANT="$MOE_BIN_DIR/moe-quantize"
C="$MOE_CONFORMANCE_DIR"
LLAMA="$C/models/tiny-llama.gguf"
LORA="$C/models/tiny-llama-lora.gguf"
[ -f "$LORA" ] || { echo "no LoRA adapter in the pack: skipping"; exit 77; }
PROMPT_IDS=$(cat "$C/prompt.tokens")

# logits MODEL GOLDEN OUT [ARGS...]: the conformance rows of MODEL with ARGS
logits() {
    local model=$1 golden=$2 out=$3
    shift 3
    "$RUN" -m "$model" "$@" --prompt-tokens "$PROMPT_IDS" \
        --feed-tokens "$(cat "$C/expected/$golden.greedy")" --logits-out "$out" \
        > "$T/o.txt" 2> "$T/e.txt" || { sed 's/^/    /' "$T/e.txt" >&2; return 1; }
}

compare() { "$GOLDEN" compare "$1" "$C/expected/$2.logits" 512 > "$T/cmp.txt" 2>&1 ||
            { cat "$T/cmp.txt" >&2; return 1; }; head -1 "$T/cmp.txt"; }

for level in "" ref; do
    export MOE_CPU_LEVEL=$level
    check "--lora ($level)" logits "$LLAMA" tiny-llama+lora "$T/a.logits" --lora "$LORA"
    check "--lora golden ($level)" compare "$T/a.logits" tiny-llama+lora
    check "--lora-scaled 0.5 ($level)" logits "$LLAMA" tiny-llama+lora0.5 "$T/b.logits" \
        --lora-scaled "$LORA" 0.5
    check "--lora-scaled golden ($level)" compare "$T/b.logits" tiny-llama+lora0.5
done
unset MOE_CPU_LEVEL
# two adapters: the same file at 0.25 twice is the 0.5 golden
check "--lora-scaled x2" logits "$LLAMA" tiny-llama+lora0.5 "$T/c.logits" \
    --lora-scaled "$LORA" 0.25 --lora-scaled "$LORA" 0.25
check "--lora-scaled x2 golden" compare "$T/c.logits" tiny-llama+lora0.5

# refusals: usage errors exit 2, a bad adapter 1 with its message
"$RUN" -m "$LLAMA" --lora-scaled "$LORA" > "$T/o.txt" 2> "$T/e.txt"
check "--lora-scaled without a scale: exit 2" test $? -eq 2
"$RUN" -m "$LLAMA" --lora-scaled "$LORA" x1 -p hi > "$T/o.txt" 2> "$T/e.txt"
check "--lora-scaled bad scale: exit 2" test $? -eq 2
QWEN="$C/models/tiny-qwen2moe.gguf"
if [ -f "$QWEN" ]; then
    "$RUN" -m "$QWEN" --lora "$LORA" -n 1 -p hi > "$T/o.txt" 2> "$T/e.txt"
    check "adapter of another architecture: exit 1" test $? -eq 1
    check "... naming both" grep -q "architecture 'llama', the model is 'qwen2moe'" "$T/e.txt"
fi
"$RUN" -m "$LLAMA" --lora "$T/missing.gguf" -n 1 -p hi > "$T/o.txt" 2> "$T/e.txt"
check "missing adapter file: exit 1" test $? -eq 1

# moe-quantize --merge-lora: float merge, then the type
check "merge f32" "$QUANT" -q --merge-lora "$LORA" "$LLAMA" "$T/m32.gguf" f32
check "merged f32 logits" logits "$T/m32.gguf" tiny-llama+lora "$T/m.logits"
check "merged f32 golden" compare "$T/m.logits" tiny-llama+lora
check "merge :0.5 f32" "$QUANT" -q -f --merge-lora "$LORA:0.5" "$LLAMA" "$T/m32.gguf" f32
check "merged :0.5 logits" logits "$T/m32.gguf" tiny-llama+lora0.5 "$T/m.logits"
check "merged :0.5 golden" compare "$T/m.logits" tiny-llama+lora0.5
# a quantized target: the merged weights are rounded to q8_0 (tiny-llama is F32, and on
# its random weights any rounding of the weights moves logits by more than the float
# tolerance), so this only has to run; the figure is printed for the record
check "merge q8_0" "$QUANT" -q --merge-lora "$LORA" "$LLAMA" "$T/m8.gguf" q8_0
check "merged q8_0 logits" logits "$T/m8.gguf" tiny-llama+lora "$T/m.logits"
"$GOLDEN" compare "$T/m.logits" "$C/expected/tiny-llama+lora.logits" 512 quant | grep max
"$RUN" -m "$LLAMA" --lora "$T/m8.gguf" -n 1 -p hi > "$T/o.txt" 2> "$T/e.txt"
check "a model is not an adapter: exit 1" test $? -eq 1
"$QUANT" -q --merge-lora "$T/missing.gguf" "$LLAMA" "$T/x.gguf" f32 > "$T/o.txt" 2> "$T/e.txt"
check "merge of a missing adapter fails" test $? -ne 0
check "... and writes nothing" test ! -e "$T/x.gguf"
check_no_temp_files "$T"
finish
