#!/bin/bash
# moe-quantize against llama.cpp's own outputs (the conformance pack), the
# interleaved layouts against moe-repack, determinism and fallbacks.
set -u
. "$MOE_TEST_DIR/sh_util.sh"
require_conformance
T=$(make_tmp quantize-cli)
Q="$MOE_BIN_DIR/moe-quantize"
REPACK="$MOE_BIN_DIR/moe-repack"
CMP="$(dirname "$MOE_BIN_DIR")/tests/gguf_compare"
M="$MOE_CONFORMANCE_DIR/models"
IM="$MOE_CONFORMANCE_DIR/imatrix"

# twelve plain types: every tensor equals llama-quantize --pure's, byte for byte
for t in q8_0 q4_0 q4_1 q5_0 q5_1 q2_K q3_K q4_K q5_K q6_K iq4_nl iq4_xs; do
    "$Q" -q --pure --type "$t" "$M/tiny-llama.gguf" "$T/$t.gguf"
    check "--pure $t runs" test $? -eq 0
    "$CMP" "$M/tiny-llama-$t.gguf" "$T/$t.gguf" > "$T/$t.cmp"
    check "--pure $t equals llama-quantize ($(tail -1 "$T/$t.cmp"))" test $? -eq 0
done

# six types with the importance matrix
for t in q4_0 iq4_nl q4_K iq4_xs q6_K q2_K; do
    "$Q" -q --pure --imatrix "$IM/tiny-llama.imatrix.dat" --type "$t" "$M/tiny-llama.gguf" \
        "$T/$t-imat.gguf"
    check "imatrix $t runs" test $? -eq 0
    "$CMP" "$IM/tiny-llama-$t-imat.gguf" "$T/$t-imat.gguf" > "$T/$t-imat.cmp"
    check "imatrix $t equals llama-quantize ($(tail -1 "$T/$t-imat.cmp"))" test $? -eq 0
done

# thread count does not change a byte
"$Q" -q --pure -t 1 --type q4_K "$M/tiny-llama.gguf" "$T/t1.gguf"
"$Q" -q --pure -t 2 --type q4_K "$M/tiny-llama.gguf" "$T/t2.gguf"
check "output independent of thread count" cmp -s "$T/t1.gguf" "$T/t2.gguf"

# each interleaved type: direct quantization == plain quantization + repack --interleave,
# and deinterleave(interleave(x)) == x
for pair in q4_0:q4_0_r8 q8_0:q8_0_r8 iq4_nl:iq4_nl_r4 q5_0:q5_0_r4 q2_K:q2_k_r4 \
            q3_K:q3_k_r4 q4_K:q4_k_r4 q5_K:q5_k_r4 q6_K:q6_k_r4 iq4_xs:iq4_xs_r8; do
    plain=${pair%%:*}
    ilv=${pair##*:}
    "$Q" -q --pure --type "$ilv" "$M/tiny-llama.gguf" "$T/$ilv.gguf"
    "$REPACK" -q --interleave --interleave-pattern . "$T/$plain.gguf" "$T/$ilv-repacked.gguf"
    "$CMP" "$T/$ilv.gguf" "$T/$ilv-repacked.gguf" > /dev/null
    check "$ilv: quantize == quantize $plain + repack --interleave" test $? -eq 0
    check "$ilv: tensors really interleaved" grep -q " $ilv " <("$MOE_BIN_DIR/moe-inspect" "$T/$ilv.gguf")
    "$REPACK" -q --deinterleave "$T/$ilv.gguf" "$T/$ilv-back.gguf"
    "$CMP" "$T/$plain.gguf" "$T/$ilv-back.gguf" > /dev/null
    check "$ilv: deinterleave restores $plain byte for byte" test $? -eq 0
done

# round trips on synthetic models written directly in each interleaved type
for ilv in q4_0_r8 q8_0_r8 iq4_nl_r4 q5_0_r4 q2_k_r4 q3_k_r4 q4_k_r4 q5_k_r4 q6_k_r4 iq4_xs_r8; do
    "$MOE_BIN_DIR/moe-synth" --preset tiny --arch qwen3moe --type "$ilv" --seed 11 \
        "$T/synth-$ilv.gguf" 2> /dev/null
    "$REPACK" -q --deinterleave "$T/synth-$ilv.gguf" "$T/synth-$ilv-plain.gguf"
    "$REPACK" -q --interleave --interleave-pattern . "$T/synth-$ilv-plain.gguf" "$T/synth-$ilv-again.gguf"
    "$CMP" "$T/synth-$ilv.gguf" "$T/synth-$ilv-again.gguf" > /dev/null
    check "synthetic $ilv: interleave(deinterleave(x)) == x" test $? -eq 0
    check "synthetic $ilv: the plain file has no interleaved tensor" \
        test -z "$("$MOE_BIN_DIR/moe-inspect" "$T/synth-$ilv-plain.gguf" | grep " $ilv ")"
done

# --interleave alone touches only the routed experts; token_embd never
"$Q" -q --pure --interleave --type q4_0 "$M/tiny-llama.gguf" "$T/exps-only.gguf"
"$MOE_BIN_DIR/moe-inspect" "$T/exps-only.gguf" > "$T/exps-only.txt"
check "--interleave: experts interleaved" grep -q "ffn_up_exps.weight *q4_0_r8" "$T/exps-only.txt"
check "--interleave: attention stays plain" grep -q "attn_q.weight *q4_0 " "$T/exps-only.txt"
check "token_embd never interleaved" grep -q "token_embd.weight *q4_0 " <("$MOE_BIN_DIR/moe-inspect" "$T/q4_0_r8.gguf")

# rows that do not fit a 256-block fall back as llama-quantize does, and say so
"$MOE_BIN_DIR/moe-synth" --preset tiny --arch llama --type f16 --n-ff 1408 --seed 3 "$T/ff1408.gguf" 2> /dev/null
"$Q" --pure --type q4_K "$T/ff1408.gguf" "$T/ff1408-q4k.gguf" 2> "$T/fallback.txt"
check "fallback run succeeds" test $? -eq 0
check "fallback reported" grep -q "ffn_down_exps.weight.*q5_0 *fallback" "$T/fallback.txt"

# mixes follow llama-quantize's rules (8 experts: attn_v and attn_k to q8_0)
"$Q" --dry-run --type Q4_K_M "$M/tiny-llama.gguf" "$T/mix.gguf" > "$T/mix.txt"
check "Q4_K_M: attn_v -> q8_0 for 8 experts" grep -q "blk.0.attn_v.weight *f32 *-> q8_0" "$T/mix.txt"
check "Q4_K_M: output -> q6_K" grep -q "output.weight *f32 *-> q6_K" "$T/mix.txt"
check "Q4_K_M: router stays f32" grep -q "ffn_gate_inp.weight *f32 *-> f32" "$T/mix.txt"
check "dry run writes nothing" test ! -e "$T/mix.gguf"

# usage errors
"$Q" "$M/tiny-llama.gguf" "$T/x.gguf" 2> /dev/null; rc=$?
check "no type: usage error" test $rc -eq 2
"$Q" --type q7_K "$M/tiny-llama.gguf" "$T/x.gguf" 2> "$T/err.txt"; rc=$?
check "unknown type: usage error naming it" test $rc -eq 2 -a -n "$(grep q7_K "$T/err.txt")"
# its own input, --force or not, through a link too: refused, the source intact
cp "$M/tiny-llama.gguf" "$T/self.gguf"
ln -sf "$T/self.gguf" "$T/self-link.gguf"
for out in "$T/self.gguf" "$T/self-link.gguf"; do
    "$Q" -q -f --type q4_0 "$T/self.gguf" "$out" 2> "$T/err.txt"; rc=$?
    check "refuses to write over its input ($(basename "$out"))" test $rc -eq 2
    check "message says why" grep -q "refusing to write over it" "$T/err.txt"
done
check "the input is untouched" cmp -s "$M/tiny-llama.gguf" "$T/self.gguf"
check_no_temp_files "$T"
finish
