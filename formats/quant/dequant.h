/* dequant — scalar reference dequantizers and reference quantizers, one per
 * type, referenced by the type table (types.c). Internal to formats/: callers
 * use moe_dequantize_rows() or the traits' function pointers.
 *
 * Every moe_dequant_X has the moe_to_f32_fn contract (types.h): nrows rows of
 * ne0 values, rows contiguous, ne0 a multiple of the block size, nrows a
 * multiple of the interleave factor. Every moe_quant_X has the moe_from_f32_fn
 * contract. They never fail and never allocate.
 */
#ifndef MOE_FORMATS_DEQUANT_H
#define MOE_FORMATS_DEQUANT_H

#include <stdint.h>

void moe_dequant_f32(const void *src, float *dst, int64_t ne0, int64_t nrows);
void moe_dequant_f16(const void *src, float *dst, int64_t ne0, int64_t nrows);
void moe_dequant_bf16(const void *src, float *dst, int64_t ne0, int64_t nrows);

/* block quantization types (dequant_*.c) */
void moe_dequant_q4_0(const void *src, float *dst, int64_t ne0, int64_t nrows);
void moe_dequant_q4_1(const void *src, float *dst, int64_t ne0, int64_t nrows);
void moe_dequant_q5_0(const void *src, float *dst, int64_t ne0, int64_t nrows);
void moe_dequant_q5_1(const void *src, float *dst, int64_t ne0, int64_t nrows);
void moe_dequant_q8_0(const void *src, float *dst, int64_t ne0, int64_t nrows);
void moe_dequant_q2_K(const void *src, float *dst, int64_t ne0, int64_t nrows);
void moe_dequant_q3_K(const void *src, float *dst, int64_t ne0, int64_t nrows);
void moe_dequant_q4_K(const void *src, float *dst, int64_t ne0, int64_t nrows);
void moe_dequant_q5_K(const void *src, float *dst, int64_t ne0, int64_t nrows);
void moe_dequant_q6_K(const void *src, float *dst, int64_t ne0, int64_t nrows);
void moe_dequant_iq4_nl(const void *src, float *dst, int64_t ne0, int64_t nrows);
void moe_dequant_iq4_xs(const void *src, float *dst, int64_t ne0, int64_t nrows);

/* row-interleaved types (dequant_interleaved.c) */
void moe_dequant_q4_0_r8(const void *src, float *dst, int64_t ne0, int64_t nrows);
void moe_dequant_q5_0_r4(const void *src, float *dst, int64_t ne0, int64_t nrows);
void moe_dequant_q8_0_r8(const void *src, float *dst, int64_t ne0, int64_t nrows);
void moe_dequant_q2_K_r4(const void *src, float *dst, int64_t ne0, int64_t nrows);
void moe_dequant_q3_K_r4(const void *src, float *dst, int64_t ne0, int64_t nrows);
void moe_dequant_q4_K_r4(const void *src, float *dst, int64_t ne0, int64_t nrows);
void moe_dequant_q5_K_r4(const void *src, float *dst, int64_t ne0, int64_t nrows);
void moe_dequant_q6_K_r4(const void *src, float *dst, int64_t ne0, int64_t nrows);
void moe_dequant_iq4_nl_r4(const void *src, float *dst, int64_t ne0, int64_t nrows);
void moe_dequant_iq4_xs_r8(const void *src, float *dst, int64_t ne0, int64_t nrows);

#endif
