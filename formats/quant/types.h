/* types — the one table of tensor element types.
 *
 * Owns: type ids (equal to the GGUF/ggml ids; ik_llama.cpp's ids for the
 * row-interleaved and IK-only types), names, block geometry and the scalar
 * dequantize/quantize entry points. Every size computation on tensor data goes
 * through moe_type_row_size/moe_type_tensor_size. Does not own: SIMD kernels
 * (runtime/) or the requantization policy (convert/).
 *
 * Ids 31..33 are the ARM-interleaved Q4_0 types that llama.cpp later removed
 * from files; they are recognised and sized so such files can be inspected.
 * Ids that were removed without a size (4, 5, 36..38) are unknown.
 */
#ifndef MOE_FORMATS_TYPES_H
#define MOE_FORMATS_TYPES_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "formats/base/status.h"

typedef enum moe_type {
    MOE_TYPE_F32 = 0, MOE_TYPE_F16 = 1, MOE_TYPE_Q4_0 = 2, MOE_TYPE_Q4_1 = 3,
    MOE_TYPE_Q5_0 = 6, MOE_TYPE_Q5_1 = 7, MOE_TYPE_Q8_0 = 8, MOE_TYPE_Q8_1 = 9,
    MOE_TYPE_Q2_K = 10, MOE_TYPE_Q3_K = 11, MOE_TYPE_Q4_K = 12, MOE_TYPE_Q5_K = 13,
    MOE_TYPE_Q6_K = 14, MOE_TYPE_Q8_K = 15, MOE_TYPE_IQ2_XXS = 16, MOE_TYPE_IQ2_XS = 17,
    MOE_TYPE_IQ3_XXS = 18, MOE_TYPE_IQ1_S = 19, MOE_TYPE_IQ4_NL = 20, MOE_TYPE_IQ3_S = 21,
    MOE_TYPE_IQ2_S = 22, MOE_TYPE_IQ4_XS = 23, MOE_TYPE_I8 = 24, MOE_TYPE_I16 = 25,
    MOE_TYPE_I32 = 26, MOE_TYPE_I64 = 27, MOE_TYPE_F64 = 28, MOE_TYPE_IQ1_M = 29,
    MOE_TYPE_BF16 = 30, MOE_TYPE_Q4_0_4_4 = 31, MOE_TYPE_Q4_0_4_8 = 32,
    MOE_TYPE_Q4_0_8_8 = 33, MOE_TYPE_TQ1_0 = 34, MOE_TYPE_TQ2_0 = 35, MOE_TYPE_MXFP4 = 39,
    MOE_TYPE_Q1_0_G128 = 41,
    MOE_TYPE_Q8_0_X4 = 97, MOE_TYPE_Q8_1_X4 = 98, MOE_TYPE_Q8_2_X4 = 99,
    MOE_TYPE_Q6_0 = 133, MOE_TYPE_IQ1_BN = 134, MOE_TYPE_IQ2_BN = 135, MOE_TYPE_Q8_K64 = 136,
    MOE_TYPE_IQ2_K = 137, MOE_TYPE_IQ3_K = 138, MOE_TYPE_IQ4_K = 139, MOE_TYPE_IQ5_K = 140,
    MOE_TYPE_IQ6_K = 141, MOE_TYPE_IQ4_KS = 144, MOE_TYPE_IQ2_KS = 145,
    MOE_TYPE_IQ4_KSS = 146, MOE_TYPE_Q8_K16 = 147, MOE_TYPE_Q8_K32 = 148,
    MOE_TYPE_Q8_KR8 = 149, MOE_TYPE_Q8_K128 = 150, MOE_TYPE_Q8_KV = 151,
    MOE_TYPE_IQ5_KS = 152, MOE_TYPE_IQ2_KT = 153, MOE_TYPE_IQ3_KT = 154,
    MOE_TYPE_IQ4_KT = 155, MOE_TYPE_IQ3_KS = 156, MOE_TYPE_IQ2_KL = 157,
    MOE_TYPE_IQ1_KT = 158,
    MOE_TYPE_Q4_0_R8 = 202, MOE_TYPE_Q5_0_R4 = 206, MOE_TYPE_Q8_0_R8 = 208,
    MOE_TYPE_Q2_K_R4 = 210, MOE_TYPE_Q3_K_R4 = 211, MOE_TYPE_Q4_K_R4 = 212,
    MOE_TYPE_Q5_K_R4 = 213, MOE_TYPE_Q6_K_R4 = 214, MOE_TYPE_IQ2_XXS_R4 = 216,
    MOE_TYPE_IQ2_XS_R4 = 217, MOE_TYPE_IQ3_XXS_R4 = 218, MOE_TYPE_IQ1_S_R4 = 219,
    MOE_TYPE_IQ4_NL_R4 = 220, MOE_TYPE_IQ3_S_R4 = 221, MOE_TYPE_IQ2_S_R4 = 222,
    MOE_TYPE_IQ4_XS_R8 = 223, MOE_TYPE_IQ1_M_R4 = 229, MOE_TYPE_BF16_R16 = 230,
    MOE_TYPE_Q6_0_R4 = 233, MOE_TYPE_IQ2_BN_R4 = 335, MOE_TYPE_IQ2_K_R4 = 337,
    MOE_TYPE_IQ3_K_R4 = 338, MOE_TYPE_IQ4_K_R4 = 339, MOE_TYPE_IQ5_K_R4 = 340,
    MOE_TYPE_IQ4_KS_R4 = 344, MOE_TYPE_IQ5_KS_R4 = 352, MOE_TYPE_MXFP4_R8 = 353,
    MOE_TYPE_Q8_K_R16 = 397, MOE_TYPE_Q8_KV_R8 = 398, MOE_TYPE_Q8_K_R8 = 399,
} moe_type;

#define MOE_TYPE_ID_LIMIT 400 /* every id is < this */

/* Dequantizes nrows rows of ne0 values each from src (rows contiguous, each row
 * moe_type_row_size(type, ne0) bytes) into dst (nrows*ne0 floats). For an
 * interleaved type nrows is a multiple of interleave_rows. ne0 is a multiple of
 * block_size (the caller checked). */
typedef void (*moe_to_f32_fn)(const void *src, float *dst, int64_t ne0, int64_t nrows);
/* Reference quantization of nrow rows of n_per_row values (a multiple of
 * block_size), llama.cpp's quantize_<type> contract: imatrix is NULL or
 * n_per_row importance weights, ignored by types that take none. */
typedef void (*moe_from_f32_fn)(const float *src, void *dst, int64_t nrow, int64_t n_per_row,
                                const float *imatrix);

typedef struct moe_type_traits {
    const char *name;        /* ggml's type_name, e.g. "q4_K" */
    int64_t block_size;      /* values per block */
    size_t type_size;        /* bytes per block (per row, for interleaved types) */
    size_t row_meta;         /* extra bytes at the start of each row (IK types) */
    int interleave_rows;     /* R for _Rn types, 0 otherwise */
    moe_type base;           /* plain twin of an interleaved type; itself otherwise */
    bool activation_only;    /* never stored by llama.cpp writers */
    moe_to_f32_fn to_f32;    /* NULL: recognised and sized, cannot compute */
    moe_from_f32_fn from_f32;  /* NULL: we cannot write it (an interleaved type is written
                                * by its base's quantizer, then re-laid out) */
    bool from_f32_imatrix;     /* from_f32 uses an importance matrix */
} moe_type_traits;

/* Traits of type id t, or NULL if t is not a known type. Static storage. */
const moe_type_traits *moe_type_get(int64_t t);

/* Name of type t ("q4_K"), or "unknown" for an unknown id. Static storage. */
const char *moe_type_name(int64_t t);

/* Finds a type by name, case-insensitively ("Q4_K", "q4_k", "IQ4_NL_R4").
 * Returns true and sets *t on success. */
bool moe_type_from_name(const char *name, moe_type *t);

/* Bytes of one row of ne0 values: row_meta + ne0/block_size*type_size. Fails
 * (format error naming the type) when ne0 is not a multiple of the block size,
 * the type is unknown, or the size overflows. */
moe_status moe_type_row_size(int64_t t, int64_t ne0, uint64_t *bytes, moe_err *err);

/* Bytes of a tensor of shape ne[0..3] (missing dims = 1). Same failures, plus
 * overflow of the total. */
moe_status moe_type_tensor_size(int64_t t, const int64_t ne[4], uint64_t *bytes, moe_err *err);

/* Dequantizes rows as moe_to_f32_fn does, after checking the type can be
 * dequantized (unsupported error naming it otherwise), that ne0 fits the block
 * size and that nrows fits the interleave factor. */
moe_status moe_dequantize_rows(int64_t t, const void *src, float *dst, int64_t ne0,
                               int64_t nrows, moe_err *err);

/* Iteration over the table: the n-th known type (0-based) or NULL past the end. */
const moe_type_traits *moe_type_at(size_t index, moe_type *id);

#endif
