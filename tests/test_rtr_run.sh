#!/bin/bash
# -rtr (run-time repacking) through moe-run: plain Q4_0, IQ4_NL and Q4_K models
# whose batched products take their interleaved twins' arithmetic (the kernel
# test holds each product to the twin's bits; here the whole model):
#  - the pack's golden for TYPE holds with -rtr at every level;
#  - at ref and scalar (no -rtr kernels; nor at avx2 for Q4_K; the level
#    that ran, from the load's message) the logits are the plain run's, byte
#    for byte, and the load says no tensor was taken;
#  - at avx2, avx512 and amx (Q4_K: avx512, amx) the logits stay within the golden
#    tolerances of the plain run's and of the interleaved file's
#    (moe-repack --interleave):
#    products of fewer than 4 tokens (the fed tokens, a batch's rarely chosen
#    experts) are the plain kernels', the rest the twin's, so neither is
#    matched bit for bit;
#  - the bits do not depend on the thread count (-t 1 and -t 2);
#  - tiny-qwen3moe quantized --pure to TYPE: the expert products too.
# $1: the test_golden program.
set -u
. "$MOE_TEST_DIR/sh_util.sh"
require_conformance
GOLDEN=$1
T=$(make_tmp rtr-run)
B="$MOE_BIN_DIR"
C="$MOE_CONFORMANCE_DIR"
LEVELS="ref scalar avx2 avx512 amx" # a level above the CPU's runs as the best it has
PACK_LOGITS_ERR="$T/err.txt" # the load's -rtr line

# within NAME A B: A's logits within the golden tolerances of B's
within() {
    "$GOLDEN" compare "$2" "$3" 512 quant > "$T/cmp.txt" 2>&1
    check "$1" test $? -eq 0
}

for type in q4_0 iq4_nl q4_K; do
    src="$C/models/tiny-llama-$type.gguf"
    [ -f "$src" ] || continue
    feed=$(cat "$C/expected/tiny-llama-$type.greedy")
    "$B/moe-repack" -q -f --interleave --interleave-pattern . "$src" "$T/llama-r.gguf"
    check "tiny-llama-$type: interleaved by moe-repack" test $? -eq 0
    for level in $LEVELS; do
        pack_logits $level "$src" "$T/r.bin" "$feed" -rtr
        check "tiny-llama-$type -rtr: moe-run ($level)" test $? -eq 0
        n=$(sed -n 's/.*-rtr: \([0-9]*\) weight tensors.*/\1/p' "$T/err.txt")
        # the level that ran (a level above the CPU's runs as the best it has)
        ran=$(sed -n 's/.*-rtr: .*kernel level \([a-z0-9]*\).*/\1/p' "$T/err.txt")
        check "tiny-llama-$type -rtr: the load names the tensors taken and the level ($level)" \
            test -n "$n" -a -n "$ran"
        within "tiny-llama-$type -rtr: the $type golden holds ($level)" \
            "$T/r.bin" "$C/expected/tiny-llama-$type.logits"
        pack_logits $level "$src" "$T/p.bin" "$feed"
        if [ "$ran" != avx512 ] && [ "$ran" != amx ] && { [ "$ran" != avx2 ] || [ $type = q4_K ]; }; then
            check "tiny-llama-$type -rtr: no tensor taken ($level, ran $ran)" test "$n" = 0
            check "tiny-llama-$type -rtr: the plain run's logits exactly ($level)" \
                cmp -s "$T/r.bin" "$T/p.bin"
            continue
        fi
        check "tiny-llama-$type -rtr: tensors taken ($level, ran $ran: $n)" test "${n:-0}" -gt 0
        within "tiny-llama-$type -rtr: within the golden tolerances of the plain run ($level)" \
            "$T/r.bin" "$T/p.bin"
        pack_logits $level "$T/llama-r.gguf" "$T/i.bin" "$feed"
        within "tiny-llama-$type -rtr: within the golden tolerances of the interleaved file ($level)" \
            "$T/r.bin" "$T/i.bin"
        pack_logits $level "$src" "$T/r1.bin" "$feed" -rtr -t 1 && pack_logits $level "$src" "$T/r2.bin" "$feed" -rtr -t 2
        check "tiny-llama-$type -rtr: the same bits with 1 and 2 threads ($level)" \
            cmp -s "$T/r1.bin" "$T/r2.bin"
    done

    "$B/moe-quantize" -q -f --pure "$C/models/tiny-qwen3moe.gguf" "$T/moe-p.gguf" "$type"
    check "tiny-qwen3moe: quantized to $type" test $? -eq 0
    feed=$(cat "$C/expected/tiny-qwen3moe.greedy")
    for level in avx2 avx512 amx; do
        pack_logits $level "$T/moe-p.gguf" "$T/r.bin" "$feed" -rtr && pack_logits $level "$T/moe-p.gguf" "$T/p.bin" "$feed"
        check "tiny-qwen3moe $type -rtr: moe-run ($level)" test $? -eq 0
        within "tiny-qwen3moe $type -rtr: within the golden tolerances of the plain run ($level)" \
            "$T/r.bin" "$T/p.bin"
    done
done

finish
