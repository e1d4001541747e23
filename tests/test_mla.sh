#!/usr/bin/env bash
# Absorbed MLA: deepseek2 files with attn_k_b/attn_v_b and no attn_kv_b. The
# 3-D layout current llama.cpp writes and ik's 2-D one hold the same bytes and
# must give bit-identical logits; the model runs split over CPU and CPU1
# (wk_b/wv_b placed with their layer) bit for bit, generates, survives a KV
# shift, and a quantized one loads. $1: test_golden (compares logits files).
set -u
GOLDEN=${1:?usage: test_mla.sh PATH/TO/test_golden}
SYNTH="$MOE_BIN_DIR/moe-synth" RUN="$MOE_BIN_DIR/moe-run"
DIR="$MOE_TMP/mla.$$"
mkdir -p "$DIR"
trap 'rm -rf "$DIR"' EXIT
fails=0
fail() { echo "FAIL: $*" >&2; fails=$((fails + 1)); }

# V2-Lite-style routing (softmax, top-3 of 8, weights renormalised and x1.5)
OPTS="-a deepseek2 --n-embd 64 --n-head 4 --n-layer 4 --n-vocab 260 --n-ff 64 --n-ff-exp 32
      --q-lora-rank 32 --kv-lora-rank 32 --qk-nope 16 --qk-rope 16 --v-head 16 --gating softmax
      --n-expert 8 --n-expert-used 3 --n-dense-lead 1 --n-shared-exp 1
      --expert-weights-norm 1 --expert-weights-scale 1.5"
PROMPT="1 45 30 37 26 31 27 33 12 200 150 99 7 81 64 250"
FEED="44 33 22 39 37 25 26 41"
logits() { # MODEL OUT [moe-run options...]
    local m=$1 out=$2
    shift 2
    "$RUN" -m "$m" -c 512 -t 2 --prompt-tokens "$PROMPT" --feed-tokens "$FEED" \
        --logits-out "$out" "$@" >"$DIR/run.txt" 2>"$DIR/run.err" ||
        { fail "moe-run $m $*: $(tail -2 "$DIR/run.err")"; return 1; }
}
for v in 3d ik-2d kv_b; do
    # shellcheck disable=SC2086
    "$SYNTH" $OPTS --mla "$v" "$DIR/$v.gguf" >/dev/null 2>"$DIR/synth.err" ||
        fail "moe-synth --mla $v: $(cat "$DIR/synth.err")"
done

logits "$DIR/3d.gguf" "$DIR/3d.logits"
logits "$DIR/ik-2d.gguf" "$DIR/ik-2d.logits"
cmp -s "$DIR/3d.logits" "$DIR/ik-2d.logits" || fail "3-D and 2-D attn_k_b/attn_v_b logits differ"
logits "$DIR/kv_b.gguf" "$DIR/kv_b.logits" # the older layout still runs
"$GOLDEN" compare "$DIR/3d.logits" "$DIR/3d.logits" 260 >/dev/null || fail "3-D logits unreadable"

# split over CPU and CPU1: every layer's wk_b/wv_b on its device, same bits
logits "$DIR/3d.gguf" "$DIR/split.logits" -dev CPU1 -ngl 2
cmp -s "$DIR/3d.logits" "$DIR/split.logits" || fail "CPU+CPU1 split changes the 3-D logits"
logits "$DIR/3d.gguf" "$DIR/ot.logits" -ot "attn_[kv]_b=CPU1"
cmp -s "$DIR/3d.logits" "$DIR/ot.logits" || fail "attn_k_b/attn_v_b on CPU1 change the logits"

# generation, and a KV shift (only the rope part of the latent keys turns):
# after dropping positions 1-4 the rows stay finite and close to a fresh run
"$RUN" -m "$DIR/3d.gguf" -c 512 -t 2 -p "hello" -n 8 -s 1 >"$DIR/gen.txt" 2>"$DIR/gen.err" ||
    fail "generation: $(tail -2 "$DIR/gen.err")"
logits "$DIR/3d.gguf" "$DIR/shift.logits" --kv "rm 0 1 5" --kv "add 0 5 -1 -4"
[ -s "$DIR/shift.logits" ] || fail "no logits after a KV shift"

# quantized weights (wk_b/wv_b q8_0; other random weights, so only that it runs)
# shellcheck disable=SC2086
"$SYNTH" $OPTS --mla 3d --type q8_0 "$DIR/q8.gguf" >/dev/null 2>&1 || fail "moe-synth q8_0"
logits "$DIR/q8.gguf" "$DIR/q8.logits"
[ "$(wc -c <"$DIR/q8.logits")" -eq $((24 * 260 * 4)) ] || fail "q8_0: not 24 rows of logits"

[ "$fails" -eq 0 ] && echo "test_mla: all passed" || echo "test_mla: $fails failed"
exit $((fails > 0))
