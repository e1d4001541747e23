/* quant_impl — the per-type quantizers behind moe_quantize_rows (internal to
 * formats/). Each has the contract of llama.cpp's quantize_<type>(src, dst,
 * nrow, n_per_row, imatrix): nrow rows of n_per_row floats, n_per_row a
 * multiple of the block size, imatrix NULL or n_per_row weights; writes
 * nrow * row_size bytes. With imatrix == NULL each one does exactly what
 * llama-quantize does without an importance matrix (the reference quantizer
 * for Q4_0..Q8_0 and the K-quants; the searches with x^2 weights for
 * IQ4_NL/IQ4_XS).
 *
 * Shared search helpers used by several families live in quant_common.h.
 */
#ifndef MOE_FORMATS_QUANT_IMPL_H
#define MOE_FORMATS_QUANT_IMPL_H

#include <stdint.h>

#define MOE_QUANT_FN(name)                                                                \
    void moe_quantize_##name(const float *src, void *dst, int64_t nrow, int64_t n_per_row, \
                             const float *imatrix)

/* dequant_float.c: plain conversions, imatrix ignored */
MOE_QUANT_FN(f32);
MOE_QUANT_FN(f16);
MOE_QUANT_FN(bf16);
/* quant_legacy.c */
MOE_QUANT_FN(q4_0);
MOE_QUANT_FN(q4_1);
MOE_QUANT_FN(q5_0);
MOE_QUANT_FN(q5_1);
MOE_QUANT_FN(q8_0);
/* quant_iq4.c */
MOE_QUANT_FN(iq4_nl);
MOE_QUANT_FN(iq4_xs);
/* quant_kquants.c */
MOE_QUANT_FN(q2_K);
MOE_QUANT_FN(q3_K);
MOE_QUANT_FN(q4_K);
MOE_QUANT_FN(q5_K);
MOE_QUANT_FN(q6_K);

#endif
