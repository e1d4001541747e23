/* kernels — the CPU product kernels on quantized activations, per ISA level.
 *
 * Owns: the ISA levels and their detection (cpuid + xgetbv, chosen once, with
 * the MOE_CPU_LEVEL environment override), the activation block formats, and
 * one kernel table per level: for each weight type it supports, which
 * activation format the weight multiplies (llama.cpp's vec_dot type: Q8_0
 * blocks of 32 for the legacy and IQ4_NL types, with Q8_1's s for Q4_1 and
 * Q5_1, Q8_K super-blocks of 256 for the K-quants, the weight's own 16-bit
 * type for F16 and BF16) and the product function. A type a table does not list falls
 * back to the reference path (cpu_ops.h), which handles every type.
 *
 * Numerics: weights are never dequantized to floats. Activations are
 * quantized once per product to 8-bit blocks exactly as llama.cpp's
 * quantize_row_q8_0 / q8_K do; each block's integer dot product is exact and
 * is scaled by the two block scales. The scalar level is the plain-C statement
 * of that arithmetic and the reference the SIMD levels are tested against;
 * SIMD levels sum the scaled block results in another order (differences of a
 * few float ulps of the row's magnitude).
 *
 * Does not own: threading and work splitting (matmul_fast.c), the reference
 * path that reproduces llama.cpp bit for bit (cpu_ops.c).
 */
#ifndef MOE_RUNTIME_CPU_KERNELS_H
#define MOE_RUNTIME_CPU_KERNELS_H

#include <stdbool.h>
#include <stdint.h>

#include "formats/quant/types.h"

/* ISA levels, lowest first. REF is today's reference arithmetic (no kernel
 * table: every product dequantizes, as llama.cpp's result is reproduced). */
typedef enum moe_cpu_level {
    MOE_CPU_REF = 0,
    MOE_CPU_SCALAR = 1, /* quantized-activation kernels in plain C */
    MOE_CPU_AVX2 = 2,   /* AVX2 + FMA + F16C */
    MOE_CPU_AVX512 = 3, /* AVX-512 F/DQ/BW/VL + VNNI */
    MOE_CPU_AMX = 4,    /* AVX-512 and AMX-INT8 tiles for some batches */
    MOE_CPU_LEVEL_COUNT
} moe_cpu_level;

/* The best level this CPU runs (the build's compiler must know it too). */
moe_cpu_level moe_cpu_level_detected(void);
/* The level in use: MOE_CPU_LEVEL=ref|scalar|avx2|avx512|amx in the environment
 * forces one (capped at the detected level; an unknown name is ignored with
 * a warning), otherwise the detected level. Decided once per process. */
moe_cpu_level moe_cpu_level_active(void);
const char *moe_cpu_level_name(moe_cpu_level level);
/* Parses a level name; false for an unknown one. */
bool moe_cpu_level_parse(const char *name, moe_cpu_level *out);

/* Activation formats (internal, never stored in files). F16 and BF16 are
 * llama.cpp's vec_dot types of F16 and BF16 weights: each activation value is
 * rounded to the weight's 16-bit type and kept as those 2 bytes (the
 * reference path rounds the same way, so every level multiplies the same
 * values; a product of two 16-bit floats is exact in f32, so only the order
 * of the sums differs). Two bytes rather than a pre-widened f32 keep the
 * scratch small; widening them again per weight row is one instruction. */
typedef enum moe_act_format {
    MOE_ACT_Q8 = 1,
    MOE_ACT_Q8K = 2,
    MOE_ACT_F16 = 3,
    MOE_ACT_BF16 = 4,
    MOE_ACT_FORMAT_COUNT
} moe_act_format;

/* 32 values: d is llama.cpp's Q8_0 scale (amax/127 rounded to fp16), sum the
 * sum of qs (for weights with an offset, such as Q4_0's -8), s llama.cpp's
 * Q8_1 term for weights with a min (Q4_1, Q5_1): the unrounded d times sum,
 * rounded to fp16 on its own. One format serves Q8_0 and Q8_1 users: the qs
 * and d of the two are the same values. */
typedef struct moe_act_q8 {
    float d;
    int32_t sum;
    float s;
    int8_t qs[32];
} moe_act_q8;

/* 256 values as llama.cpp's Q8_K: d = 1/iscale, bsums = sums of 16 values. */
typedef struct moe_act_q8k {
    float d;
    int32_t pad;
    int16_t bsums[16];
    int8_t qs[256];
} moe_act_q8k;

/* Values per activation block: 256 for Q8K, 32 for the others (the F16 and
 * BF16 kernels also step 32 values at a time). A weight takes its kernel only
 * when its rows are whole blocks. */
int64_t moe_act_block(moe_act_format f);
/* Bytes of one activation row of n values (n a multiple of the block). */
uint64_t moe_act_row_bytes(moe_act_format f, int64_t n);
/* The most bytes any format takes for a row of n values (any n): what a
 * scratch buffer for activations of unknown format needs per row. */
uint64_t moe_act_row_bytes_max(int64_t n);

/* Quantizes n values (a multiple of the format's block) into dst. */
typedef void (*moe_act_quantize_fn)(const float *x, void *dst, int64_t n);

/* The scalar level's activation quantizers (llama.cpp's arithmetic). */
/* One Q8_0 block of 32 values, the one statement of that rounding (the
 * reference path in cpu_ops.c uses it too), with Q8_1's s. */
void moe_act_quantize_q8_block(const float *x, moe_act_q8 *b);
void moe_act_quantize_q8_ref(const float *x, void *dst, int64_t n);
void moe_act_quantize_q8k_ref(const float *x, void *dst, int64_t n);
void moe_act_quantize_f16_ref(const float *x, void *dst, int64_t n);
void moe_act_quantize_bf16_ref(const float *x, void *dst, int64_t n);

/* Products of rows [r0, r1) of one weight matrix with T activation rows:
 * y[t * ldy + r] = row r · act row t, for r0 <= r < r1 and t < T. w points at
 * row 0 of the matrix (row_bytes per row; an interleaved type keeps groups of
 * R rows together, and r0, r1 are multiples of R); act row t starts at
 * act + t * act_stride. n_in is the row length in values. */
typedef void (*moe_mm_fn)(const uint8_t *w, uint64_t row_bytes, int64_t n_in, int64_t r0,
                          int64_t r1, const uint8_t *act, uint64_t act_stride, int64_t T,
                          float *y, int64_t ldy);

typedef struct moe_cpu_kernel {
    moe_type type;
    moe_act_format act;
    int rows;         /* rows handled per pass (interleave factor, or 1) */
    moe_mm_fn mm;
    /* where llama.cpp's x86 build sums one type's blocks in another float
     * order for expert products (its vec_dot) than for dense ones (tinyBLAS):
     * that order; NULL when mm serves both */
    moe_mm_fn mm_vec;
} moe_cpu_kernel;

/* Float helpers of the reference-order paths (attention, float weights):
 * each returns exactly what the scalar code in cpu_ops.c returns (same
 * operations in the same order, fused multiply-adds where it has fmaf), only
 * vectorised, so every level keeps the reference's bits there. */
typedef struct moe_cpu_float_ops {
    float (*dot_gemm)(const float *a, const float *b, int64_t n); /* moe_dot_gemm's order */
    float (*dot_vec)(const float *a, const float *b, int64_t n);  /* moe_dot_vec's order */
    void (*fma_row)(float p, const float *v, float *acc, int64_t n); /* acc[i] = fmaf(p, v[i], acc[i]) */
    void (*f16_row)(const uint8_t *src, float *dst, int64_t n);     /* n fp16 values to f32 */
    /* ggml's exp and SiLU on the first n16 values (a multiple of 16), as
     * moe_expf_ggml and moe_cpu_silu compute them: x[i] = silu(x[i]) */
    void (*silu16)(float *x, int64_t n16);
    /* x[i] = exp(x[i] - max); returns the sum of the 16-value blocks, each
     * block in the AVX-512 tree (moe_reduce16), the blocks added in double */
    double (*exp_sum16)(float *x, int64_t n16, float max);
    /* Batched attention over an F16 cache, rows at base + cell[j] * stride,
     * for nh query heads that share them (head i: q + i * dk, out + i * ldo):
     * out[j] = dot_gemm(q, row j widened, dk) for j < n (dk a multiple of 16) */
    void (*scores_f16)(const float *q, const uint8_t *base, uint64_t stride, const int32_t *cell,
                       int64_t n, int64_t dk, float *out, int64_t nh, int64_t ldo);
    /* out[d] (d < dv, a multiple of 8) = the sum over j < n of p[j] * row j's
     * value d in the batched order: slot j fmaf'ed into lane j % 16 of the
     * value, the 16 lanes then folded as moe_reduce16 folds. For nh query
     * heads that share the rows: head i's weights at p + i * ldp, its values
     * at out + i * ldo. */
    void (*wsum_f16)(const float *p, int64_t ldp, const uint8_t *base, uint64_t stride,
                     const int32_t *cell, int64_t n, int64_t dv, float *out, int64_t nh, int64_t ldo);
    /* One token (the VEC order): out[j] = dot_vec(q, row j widened, dk), heads as scores_f16 */
    void (*scores_f16_vec)(const float *q, const uint8_t *base, uint64_t stride, const int32_t *cell,
                           int64_t n, int64_t dk, float *out, int64_t nh, int64_t ldo);
    /* One token: slots j < n_lane fmaf'ed into lane j % 64 of each value (the
     * 64 lanes folded as moe_dot_vec folds its accumulators, then moe_reduce16),
     * slots [n_lane, n) as float products summed in double; out[d] = (float)
     * (fold + tail); dv a multiple of 8. For nh query heads that share the
     * rows: head i's weights at p + i * ldp, its values at out + i * ldo. */
    void (*wsum_f16_vec)(const float *p, int64_t ldp, const uint8_t *base, uint64_t stride,
                         const int32_t *cell, int64_t n_lane, int64_t n, int64_t dv, float *out,
                         int64_t nh, int64_t ldo);
    /* x[i] through fp16 and back (round to nearest even, as moe_f32_to_f16) */
    void (*round_f16_row)(float *x, int64_t n);
    /* fmaxf over x[0..n) from -INFINITY (NaNs ignored; n >= 0) */
    float (*max_row)(const float *x, int64_t n);
} moe_cpu_float_ops;

/* The float helpers of the active level (the scalar ones at ref and scalar). */
const moe_cpu_float_ops *moe_cpu_float_ops_active(void);
const moe_cpu_float_ops *moe_cpu_float_ops_scalar(void);

typedef struct moe_cpu_kernel_table {
    moe_cpu_level level;
    const moe_cpu_float_ops *fops;
    moe_act_quantize_fn quantize[MOE_ACT_FORMAT_COUNT]; /* indexed by moe_act_format */
    const moe_cpu_kernel *kernels;   /* terminated by type == MOE_TYPE_F32 */
    /* Run-time repacking (-rtr): kernels for plain types (Q4_0, IQ4_NL; Q4_K
     * at the 512-bit level) that, for 4 tokens or more, compute what their
     * interleaved twin's kernel computes on the interleaved rows (same
     * integers, same float operations, so the same bits), reading the plain
     * rows where they lie; fewer tokens take the plain kernel (its bits).
     * rows is the twin's group. NULL or terminated by MOE_TYPE_F32. */
    const moe_cpu_kernel *rtr_kernels;
} moe_cpu_kernel_table;

/* The table of a level (NULL for REF, and for levels this build lacks). */
const moe_cpu_kernel_table *moe_cpu_kernels(moe_cpu_level level);
/* The kernel for type at level, or NULL (the reference path then). */
const moe_cpu_kernel *moe_cpu_kernel_find(moe_cpu_level level, moe_type type);

/* The run-time repacking kernel for plain type at level, or NULL. */
const moe_cpu_kernel *moe_cpu_kernel_find_rtr(moe_cpu_level level, moe_type type);

/* Per-level tables, defined in kernels_scalar.c and x86/. */
const moe_cpu_kernel_table *moe_cpu_kernels_scalar(void);
const moe_cpu_kernel_table *moe_cpu_kernels_avx2(void);
const moe_cpu_kernel_table *moe_cpu_kernels_avx512(void);
const moe_cpu_kernel_table *moe_cpu_kernels_amx(void);

#endif
