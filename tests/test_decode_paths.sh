#!/bin/bash
# The one-token fast paths of the CPU backend against the general ones, bit
# for bit, on synthesised models (no conformance pack needed): the fused
# routed-expert step (each thread's own x row, SiLU·mul and down's
# activations quantized chunk by chunk, down and the weighted sum by output
# rows) against the general step, which a split of every layer's experts
# between CPU and CPU1 runs on both devices; q, k and v in one pass against
# three products (attn_q on CPU1). Thread counts 1-4 deal the expert step's
# units (q4_0, q4_0_r8: 32 rows, 16 per expert; q4_K, whose down activations
# come in 256-value blocks: 256 rows, two per expert) to ranges that begin and
# end inside an expert, and cut their chunks there and where a thread takes
# half of another's range (runtime/cpu/work_ranges.h): the boundaries where a
# piecewise SiLU or quantization would go wrong; n_embd 512 gives the weighted
# sum two row ranges; 5 threads exceed the experts per token and take the
# general step everywhere.
set -u
. "$MOE_TEST_DIR/sh_util.sh"
B="$MOE_BIN_DIR"
T=$(make_tmp decode-paths)
P="1 5 9 13 17 21 25 29 33 37"
for type in q4_0 q4_K q4_0_r8; do
    "$B/moe-synth" -a llama --n-embd 512 --n-layer 2 --n-head 4 --n-head-kv 2 --n-expert 8 \
        --n-expert-used 4 --n-ff 512 --n-vocab 512 --type "$type" -f "$T/$type.gguf" \
        > /dev/null 2>&1
    check "moe-synth $type" test -f "$T/$type.gguf"
    for t in 1 2 3 4 5; do
        run() { # OUT ARGS...
            local out=$1
            shift
            "$B/moe-run" -m "$T/$type.gguf" -t "$t" --prompt-tokens "$P" --feed-tokens "7 8 9 10" \
                --logits-out "$T/$out" "$@" > /dev/null 2> "$T/err"
            check "$type -t $t $out: exits 0" test $? -eq 0
        }
        run one
        run experts-split -ot 'ffn_(gate|up|down)_exps=CPU1:experts=0-3'
        run q-apart -ot 'attn_q\.=CPU1'
        check "$type -t $t: fused expert step = general step" cmp -s "$T/one" "$T/experts-split"
        check "$type -t $t: q/k/v in one pass = three products" cmp -s "$T/one" "$T/q-apart"
        [ "$t" -eq 1 ] && cp "$T/one" "$T/t1"
        check "$type -t $t: = -t 1" cmp -s "$T/one" "$T/t1"
        check "$type -t $t: 14 rows of logits" test "$(stat -c %s "$T/one")" -eq $((14 * 512 * 4))
    done
done
finish
