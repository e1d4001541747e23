/* interleave — lossless row-interleaving of plain quantized rows into
 * ik_llama.cpp's "_R4"/"_R8" layouts, and back.
 *
 * Owns: the byte layouts of Q4_0_R8, Q5_0_R4, Q8_0_R8, IQ4_NL_R4, Q2_K_R4,
 * Q3_K_R4, Q4_K_R4, Q5_K_R4, Q6_K_R4 and IQ4_XS_R8 as permutations of their
 * plain twins' bits (../shared/spec/quant.md §2). The output must equal
 * ik_llama.cpp's `llama-quantize --repack` byte for byte, so nothing here
 * re-quantizes, rounds or adds the in-register bias tricks of its kernels.
 * Does not own: deciding which tensors to interleave (repack/, convert/), the
 * dequantizers of these types (dequant_interleaved.c, via the type table), or
 * the other _R types (IQ2_XXS_R4..., BF16_R16, Q8_K_R8...), which are
 * recognised and sized by types.c but not converted here.
 *
 * Model: rows are taken in consecutive groups of R (R = the type's
 * interleave_rows). In each group, block i of each of the R rows becomes
 * interleaved block i of the group, R times the plain block's bytes. So a
 * tensor keeps its byte size and row size, and groups are independent: a
 * caller may split the work at any multiple of R rows (for a 3-D expert tensor,
 * ne1·ne2 flat rows; ne1 % R == 0 keeps groups inside one expert).
 */
#ifndef MOE_FORMATS_INTERLEAVE_H
#define MOE_FORMATS_INTERLEAVE_H

#include <stdbool.h>
#include <stdint.h>

#include "formats/base/status.h"
#include "formats/quant/types.h"

/* True when t is one of the interleaved types listed above, i.e. one that
 * moe_interleave_rows / moe_deinterleave_rows convert. False for plain types,
 * unknown ids and the interleaved types this module does not handle. */
bool moe_interleave_supported(moe_type t);

/* The interleaved type this module produces from plain type `base`
 * (Q4_0→Q4_0_R8, Q5_0→Q5_0_R4, Q8_0→Q8_0_R8, IQ4_NL→IQ4_NL_R4,
 * Q2_K..Q6_K→Q2_K_R4..Q6_K_R4, IQ4_XS→IQ4_XS_R8), or `base` itself when there
 * is none (including when base is already interleaved). */
moe_type moe_interleaved_variant(moe_type base);

/* Interleaves nrows rows of ne0 values of the plain twin of ilv_type, stored
 * contiguously at `plain` (each row moe_type_row_size(base, ne0) bytes), into
 * `out`, which receives the same number of bytes. Reads plain, writes only out;
 * the two buffers must not overlap (in-place is refused). Neither is retained.
 *
 * Fails, writing nothing, with: MOE_ERR_USAGE when ilv_type is not an
 * interleaved type, ne0 or nrows is negative, a pointer is NULL for a
 * non-empty tensor, or the buffers overlap; MOE_ERR_UNSUPPORTED for an
 * interleaved type this module does not handle; MOE_ERR_FORMAT when ne0 is not
 * a multiple of the block size or nrows not a multiple of R. err names the type
 * and the offending number. nrows == 0 or ne0 == 0 succeeds and writes nothing. */
moe_status moe_interleave_rows(moe_type ilv_type, const void *plain, void *out, int64_t ne0,
                               int64_t nrows, moe_err *err);

/* Exact inverse of moe_interleave_rows: reads nrows interleaved rows at `in`,
 * writes the plain twin's rows to `plain`. Same contract and failures. Every
 * interleaved byte pattern is accepted (the layouts are bit permutations), so
 * interleave(deinterleave(x)) == x for any x as well. */
moe_status moe_deinterleave_rows(moe_type ilv_type, const void *in, void *plain, int64_t ne0,
                                 int64_t nrows, moe_err *err);

#endif
