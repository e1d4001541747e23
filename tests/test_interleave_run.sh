#!/bin/bash
# Interleaved models through moe-run against their plain twins, for the types
# whose interleaved kernels came after Q4_0_R8 / IQ4_NL_R4 / Q4_K_R4:
#  - tiny-llama-TYPE from the pack, every eligible tensor interleaved by
#    moe-repack: the pack's golden for TYPE holds at every level;
#  - tiny-qwen3moe quantized --pure to TYPE and to its interleaved twin (the
#    stacked expert tensors interleaved), so the expert products run through
#    the interleaved kernels too.
# Each run is the conformance one: the prompt as a batch (the GEMM path), then
# 16 ids fed one at a time (the GEMV path). At the ref and scalar levels the
# logits are byte-identical to the plain model's (same integer sums in the
# same order). At the SIMD levels the float sums run in another order: the
# products differ in the last bits, which the next Q8 quantization of the
# activations erases except where a value sits on a rounding boundary; there
# one quantum flips (or a near-tie routes to another expert) and that token's
# logits move by up to ~0.1. So the logits are held to the golden tolerances
# against the plain model's at the same level: rms, and the same greedy token
# wherever the plain model's top-2 margin exceeds 0.25. (Free generation is
# not compared: one such flip on a near-tie, e.g. Q5_0_R4 on tiny-llama at
# avx2, changes every token after it.) $1: the test_golden program.
set -u
. "$MOE_TEST_DIR/sh_util.sh"
require_conformance
GOLDEN=$1
T=$(make_tmp interleave-run)
B="$MOE_BIN_DIR"
C="$MOE_CONFORMANCE_DIR"
LEVELS="ref scalar avx2 avx512 amx" # a level above the CPU's runs as the best it has

# twin_checks NAME PLAIN INTERLEAVED N_VOCAB FEED
twin_checks() {
    local name=$1 plain=$2 ilv=$3 nv=$4 feed=$5 level
    for level in $LEVELS; do
        pack_logits $level "$plain" "$T/p.bin" "$feed" && pack_logits $level "$ilv" "$T/i.bin" "$feed"
        check "$name: moe-run ($level)" test $? -eq 0
        if [ $level = ref ] || [ $level = scalar ]; then
            check "$name: the plain model's logits exactly ($level)" cmp -s "$T/p.bin" "$T/i.bin"
        else
            "$GOLDEN" compare "$T/i.bin" "$T/p.bin" "$nv" quant > "$T/cmp.txt" 2>&1
            check "$name: logits within the golden tolerances of the plain model's ($level)" \
                test $? -eq 0
            [ $level = avx2 ] && sed 's/^/    /' "$T/cmp.txt" | head -1
        fi
    done
}

for type in q6_K q5_K iq4_xs q5_0 q3_K q2_K; do
    lower=$(echo "$type" | tr 'K' 'k')
    src="$C/models/tiny-llama-$type.gguf"
    [ -f "$src" ] || continue
    "$B/moe-repack" -q -f --interleave --interleave-pattern . "$src" "$T/llama-r.gguf"
    check "tiny-llama-$type: interleaved by moe-repack" test $? -eq 0
    check "tiny-llama-$type: has ${lower}_r tensors" \
        grep -q "${lower}_r[48]" <("$B/moe-inspect" "$T/llama-r.gguf")
    feed=$(cat "$C/expected/tiny-llama-$type.greedy")
    for level in $LEVELS; do
        pack_logits $level "$T/llama-r.gguf" "$T/r.bin" "$feed"
        "$GOLDEN" compare "$T/r.bin" "$C/expected/tiny-llama-$type.logits" 512 quant \
            > "$T/cmp.txt" 2>&1
        check "tiny-llama-$type interleaved: the $type golden holds ($level)" test $? -eq 0
    done
    twin_checks "tiny-llama-$type" "$src" "$T/llama-r.gguf" 512 "$feed"

    moe="$C/models/tiny-qwen3moe.gguf"
    "$B/moe-quantize" -q -f --pure "$moe" "$T/moe-p.gguf" "$type" &&
        "$B/moe-quantize" -q -f --pure --interleave "$moe" "$T/moe-r.gguf" "$type"
    check "tiny-qwen3moe: $type and its interleaved twin written" test $? -eq 0
    check "tiny-qwen3moe: interleaved experts" \
        grep -q "ffn_up_exps.*${lower}_r[48]" <("$B/moe-inspect" "$T/moe-r.gguf")
    twin_checks "tiny-qwen3moe $type" "$T/moe-p.gguf" "$T/moe-r.gguf" 512 \
        "$(cat "$C/expected/tiny-qwen3moe.greedy")"
done

finish
