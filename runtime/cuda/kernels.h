/* cuda/kernels — C-callable CUDA kernels on device memory.
 *
 * Owns: launching the kernels. Pointers are device pointers; `stream` is a
 * cudaStream_t passed as void* (NULL: the default stream). Launches are
 * asynchronous; each function returns 0, or -1 when the launch failed or the
 * arguments are outside what caps.h reports as supported.
 *
 * Tolerances against the CPU reference (what each test asserts):
 * - GEMV, GEMM: weights decode exactly as formats/dequant_*.c (bit for bit,
 *   test_cuda_decode); sums run in f32 in another order, so
 *   |err| <= 1e-5 * sum_i |w_i x_i| + 1e-6.
 * - RMS norm: relative 1e-5.
 * - RoPE: angles are formed as moe_cpu_rope forms them (the same f32
 *   products in the same order, no fused multiply-adds), and the rotation
 *   fuses exactly where the CPU's does (moe_rope_params.fused); cosf/sinf differ by
 *   a few ulp, so |err| <= 1e-5 * (|x0| + |x1|) + 1e-6 per rotated pair.
 * - softmax, router: expf and sums in f32 on the device (the CPU sums each
 *   16 values in double), |err| <= 1e-5 * p + 1e-7; top-k picks the same
 *   experts except where the CPU's selection values are within 1e-5 of each
 *   other (a near-tie may order either way).
 * - attention: as the CPU, q is rounded to f16 before q.k and the softmax
 *   weights are rounded to f16 before the weighted sum of V; a weight within
 *   rounding distance of an f16 boundary may round the other way, so
 *   |err| <= 2^-10 * sum_c p_c |v_c| + 1e-6.
 *
 * Shape alphabet: T tokens, E experts, K experts used, H / Hkv query / KV
 * heads, dk / dv head sizes.
 */
#ifndef MOE_RUNTIME_CUDA_KERNELS_H
#define MOE_RUNTIME_CUDA_KERNELS_H

#include <stdbool.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

struct moe_rope_params; /* runtime/model.h */

/* y[r] = dot(dequant(W row r), x) for r < nrows; W rows of ne0 values of type
 * `type` (row stride = moe_type_row_size), x and y f32. Types: those
 * moe_cuda_supports_weight accepts (F16, BF16, Q8_0, Q4_0, IQ4_NL, Q4_K,
 * Q5_K, Q6_K, IQ4_XS), ne0 a multiple of the block size. */
int moe_cuda_gemv(int64_t type, const void *w, int64_t ne0, int64_t nrows, const float *x,
                  float *y, void *stream);

/* y[t][i] = x[t][i] / sqrt(mean(x[t]^2) + eps) * (weight ? weight[i] : 1) for
 * t < nrows rows of n values; rows start stride_x / stride_y floats apart.
 * Safe in place (x == y, same stride). */
int moe_cuda_rms_norm(const float *x, int64_t stride_x, const float *weight, float *y,
                      int64_t stride_y, int64_t n, int64_t nrows, float eps, void *stream);

/* Several tokens: y[t][r] = dot(dequant(W row r), x[t]) for t < T, r < nrows
 * (x [T][ne0], y [T][nrows], packed). Tiles of 64 rows x 32 tokens: weight
 * parts are decoded once per tile into shared memory and reused by every
 * token of the tile. Types and ne0 as moe_cuda_gemv. */
int moe_cuda_gemm(int64_t type, const void *w, int64_t ne0, int64_t nrows, const float *x,
                  int64_t T, float *y, void *stream);

/* In-place softmax of nrows rows of n values, rows `stride` floats apart
 * (max subtracted; -inf entries give 0). */
int moe_cuda_softmax(float *x, int64_t n, int64_t nrows, int64_t stride, void *stream);

/* The router after the gate product, as the CPU backend's route step: per
 * token t < T, probs[t] (E router logits) become probabilities (sigmoid, or
 * softmax over the E), the K largest of probs + bias (bias [E] may be NULL)
 * are chosen in descending order (ties: the lower expert first), ids[t][k]
 * receives the experts and w[t][k] their probabilities, divided by their sum
 * when norm and multiplied by scale. E <= MOE_CUDA_MAX_EXPERTS, K <=
 * MOE_CUDA_MAX_EXPERTS_USED (caps.h), K <= E; -1 otherwise. */
int moe_cuda_route(float *probs, int32_t T, int32_t E, int32_t K, bool sigmoid,
                   const float *bias, bool norm, float scale, int32_t *ids, float *w,
                   void *stream);

/* RoPE as moe_cpu_rope (NORM: adjacent pairs, NEOX: the two halves; YaRN
 * when r->ext_factor != 0): rotates the first r->n_dims values of each of
 * n_heads heads (head_stride floats apart) of T tokens (token_stride apart),
 * token t by pos[t] (a device array). r is a host struct, read at the call. */
int moe_cuda_rope(float *v, int64_t T, int64_t token_stride, int64_t n_heads,
                  int64_t head_stride, const int32_t *pos, const struct moe_rope_params *r,
                  void *stream);

/* Attention of T tokens over an F16 KV cache, every query head h attending
 * with KV head h / (H / Hkv) (GQA; H a multiple of Hkv):
 *   out[t][h] = sum_c softmax_c(kq_scale * q[t][h] . k[c][hk] + mask[t][c]) v[c][hk]
 * over cells c < n_kv; mask entries are 0 (visible) or -INFINITY (hidden,
 * weight 0). dk, dv <= MOE_CUDA_MAX_HEAD_DIM. */
typedef struct moe_cuda_attn_args {
    const float *q;           /* [T][H*dk] */
    const uint16_t *k, *v;    /* f16 bits: cell c's row at k + c*row_k, v + c*row_v */
    int64_t row_k, row_v;     /* values per cell (>= Hkv*dk, Hkv*dv) */
    const float *mask;        /* [T][n_kv] */
    float *scores;            /* workspace: moe_cuda_attention_ws_floats floats */
    float *out;               /* [T][H*dv] */
    int32_t T, n_kv;
    int64_t H, Hkv, dk, dv;
    float kq_scale;
} moe_cuda_attn_args;

int64_t moe_cuda_attention_ws_floats(int32_t T, int64_t H, int32_t n_kv);
int moe_cuda_attention_f16(const moe_cuda_attn_args *a, void *stream);

/* ---- element-wise steps (the CPU backend's steps of the same names) ---- */

/* g[i] = silu(g[i]) * u[i] for n values (SwiGLU). */
int moe_cuda_silu_mul(float *g, const float *u, int64_t n, void *stream);
/* x[t][i] += b[i] for T rows of n. */
int moe_cuda_add_bias(float *x, const float *b, int64_t T, int64_t n, void *stream);
/* x[t][i] += g_t * y[t][i], g_t = sigmoid(gate[t]) (as silu(v) / v), or 1
 * when gate is NULL; T rows of n. */
int moe_cuda_add_gated(float *x, const float *y, const float *gate, int64_t T, int64_t n,
                       void *stream);
/* out[t] = sum_k w[t][k] * slots[t][k] in order k for T rows of D (slots
 * [T][K][D], w [T][K]); the CPU's order and roundings, so its bits. */
int moe_cuda_experts_combine(const float *slots, const float *w, int64_t T, int64_t K,
                             int64_t D, float *out, void *stream);
/* deepseek2 MLA, as the CPU backend's mla_kv: k [T][H][nope + n_rope] =
 * [kv's nope part | the shared kpe row], v [T][H][dv] = kv's value part;
 * kv [T][H][nope + dv], kpe rows kpe_stride floats apart. */
int moe_cuda_mla_kv(const float *kv, const float *kpe, int64_t kpe_stride, int64_t T, int64_t H,
                    int64_t nope, int64_t n_rope, int64_t dv, float *k, float *v, void *stream);
/* out[t] = row ids[t] of W (a device array of T ids), decoded to f32 exactly
 * as the CPU decoders (bit for bit); types and ne0 as moe_cuda_gemv. */
int moe_cuda_get_rows(int64_t type, const void *w, int64_t ne0, const int32_t *ids, int32_t T,
                      float *out, void *stream);

#ifdef __cplusplus
}
#endif

#endif
