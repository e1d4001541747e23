/* cpu_ops — the CPU reference implementation of the runtime's operations.
 *
 * Owns: matrix-vector products against weights of any type the type table can
 * dequantize, RMSNorm, RoPE (NORM/NEOX, YaRN), softmax, SiLU. Numerics follow
 * llama.cpp's CPU path where it rounds: activations meeting F16/BF16 weights
 * are rounded to that type first (ggml's vec_dot_type), quantized weights are
 * dequantized to f32 (llama.cpp instead quantizes activations to Q8; the
 * differences stay far inside the conformance tolerances). Float dot products
 * accumulate the way llama.cpp's x86 AVX-512 build does (moe_dot_order).
 * Does not own: scheduling or memory — callers pass scratch from their arena.
 */
#ifndef MOE_RUNTIME_CPU_OPS_H
#define MOE_RUNTIME_CPU_OPS_H

#include <math.h>
#include <stdint.h>

#include "runtime/backend.h"
#include "runtime/model.h"

/* Summation orders (moe_dot_order, backend.h): llama.cpp's x86 AVX-512 build
 * sums products in two orders, and which one a product used matters on deep
 * f16 models: a different order alone moves the logits by ~0.01 and can flip
 * near-tied expert choices.
 * GEMM: batched dense products (tinyBLAS) — one 16-lane fused-multiply-add
 *       accumulator, then the AVX-512 reduction tree; n must be a multiple
 *       of 16, otherwise llama.cpp (and we) fall back to VEC.
 * VEC:  single-token products and expert products (ggml_vec_dot) — four
 *       16-lane accumulators over steps of 64, folded, the tree, and a
 *       double-precision tail. */
float moe_dot_gemm(const float *a, const float *b, int64_t n);
float moe_dot_vec(const float *a, const float *b, int64_t n);

/* Whether llama.cpp sums a product of a T-row batch with a weight of type
 * type and n_out rows (requested as MOE_DOT_GEMM) in the GEMM order: only
 * batches (T > 1) go to tinyBLAS, and its float kernels (F32, F16, BF16)
 * take only weights whose row count is a multiple of 4 (its tile heights),
 * so e.g. qwen2moe's one-row shared-expert gate is a VEC product. */
bool moe_gemm_order(moe_type type, int64_t n_out, int64_t T);

/* Scratch one matmul needs: T*n_in floats for rounded activations plus
 * n_threads*n_in floats for dequantized rows. */
uint64_t moe_cpu_matmul_scratch(int64_t n_in, int64_t T, int n_threads);

/* y[t*n_out + r] = sum_i W[e][r][i] * x[t*n_in + i] for every row r of expert
 * e (0 for 2-D weights) and token t < T; n_in = w->ne[0], n_out = w->ne[1].
 * order GEMM sums in the GEMM order when T > 1 and the VEC order for a single
 * token, as llama.cpp's mul_mat does; VEC always uses the VEC order (its
 * mul_mat_id, the expert products). Rows are split between n_threads. */
void moe_cpu_matmul(const moe_weight *w, int64_t e, const float *x, int64_t T, float *y,
                    float *scratch, int n_threads, moe_dot_order order);

/* out[i] = x[i] / sqrt(mean(x^2) + eps) * (w ? w[i] : 1). out may be x. */
void moe_cpu_rms_norm(const float *x, const float *w, int64_t n, float eps, float *out);

/* Rotates the first r->n_dims values of each of n_heads heads (stride
 * head_stride floats) by position pos. */
void moe_cpu_rope(float *v, int64_t n_heads, int64_t head_stride, int32_t pos,
                  const moe_rope_params *r);
/* moe_cpu_rope in two steps, so that a position's angles can serve several
 * calls: cs[2i], cs[2i + 1] = the cos and sin (magnitude included) of pairs
 * p0 + i, i < n; then the rotation of those pairs with them. */
void moe_cpu_rope_angles(int32_t pos, const moe_rope_params *r, int p0, int n, float *cs);
void moe_cpu_rope_apply(float *v, int64_t n_heads, int64_t head_stride, const float *cs, int p0,
                        int n, const moe_rope_params *r);

/* In-place softmax over n values (max subtracted; -inf entries give 0), in
 * ggml's arithmetic (see moe_expf_ggml). */
void moe_cpu_softmax(float *x, int64_t n);

/* In-place x / (1 + exp(-x)) over a row of n values, in ggml's arithmetic. */
void moe_cpu_silu(float *x, int64_t n);

/* exp in llama.cpp's AVX-512 vector arithmetic. */
float moe_expf_ggml(float x);


/* The AVX-512 horizontal-sum order of 16 lanes. */
float moe_reduce16(const float v[16]);
/* 64 lanes as moe_dot_vec folds its four 16-lane accumulators ([0] + [2],
 * [1] + [3], then those two), then moe_reduce16. */
float moe_reduce64(const float v[64]);

/* x[i] += b[i] when b is not NULL. */
void moe_cpu_add_bias(float *x, const float *b, int64_t n);

#endif
