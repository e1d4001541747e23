/* quant — scalar quantization of f32 rows into block types, bit-exact with
 * llama.cpp's quantizers (ggml-quants.c, Feb 2025) as llama-quantize calls them.
 *
 * Owns: choosing the per-type algorithm the way llama-quantize does for a row
 * chunk (reference quantizers when no importance matrix is given, the
 * importance-weighted searches when one is; IQ4_NL/IQ4_XS always search), and
 * quantizing rows straight into a row-interleaved type (plain quantization,
 * then the lossless re-layout of interleave.h). Does not own: which type a
 * tensor gets (convert/), threading (callers split rows; every row is
 * independent, so results never depend on how rows are split).
 */
#ifndef MOE_FORMATS_QUANT_H
#define MOE_FORMATS_QUANT_H

#include <stdbool.h>
#include <stdint.h>

#include "formats/base/status.h"
#include "formats/quant/types.h"

/* Whether moe_quantize_rows can produce type t (plain or interleaved). */
bool moe_quant_supported(moe_type t);

/* Whether the type's quantizer uses an importance matrix when given one
 * (q8_0 and the float types ignore it). */
bool moe_quant_uses_imatrix(moe_type t);

/* Quantizes nrows rows of n_per_row floats (src, row-major) into dst, which
 * must hold nrows * moe_type_row_size(t, n_per_row) bytes. imatrix: NULL, or
 * n_per_row per-column importance weights (one expert's slice for 3-D
 * tensors) shared by every row. For interleaved types nrows must be a multiple
 * of the interleave factor. Fails (usage error naming the type) for types it
 * cannot produce or rows that do not fit the block size; never allocates more
 * than one interleave group of scratch. */
moe_status moe_quantize_rows(moe_type t, const float *src, void *dst, int64_t nrows,
                             int64_t n_per_row, const float *imatrix, moe_err *err);

#endif
