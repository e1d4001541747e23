#include "runtime/cpu_ops.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "formats/gguf/cursor.h"
#include "formats/quant/fp16.h"
#include "runtime/cpu/kernels.h"

/* Interleaved types decode up to 16 rows at once: each thread gets room for that. */
enum { MAX_ROW_GROUP = 16 };

uint64_t moe_cpu_matmul_scratch(int64_t n_in, int64_t T, int n_threads) {
    /* rounded activations, per-thread rows, and one Q8_1 correction per 32 */
    return (uint64_t)n_in * (uint64_t)(T + (int64_t)n_threads * MAX_ROW_GROUP) +
           (uint64_t)(n_in / 32 + 1) * (uint64_t)T;
}

/* Activations as llama.cpp sees them: converted to the weight's vec_dot type
 * first — F16/BF16 for float weights, 8-bit blocks for quantized ones (Q8_0
 * for the 32-blocks, whose Q8_1 twin carries the same values, and Q8_K for
 * the 256-blocks). We keep the dequantized activation values. */
/* Q8_0/Q8_1 activations. For Q8_1 llama.cpp adds min*s per block, with
 * s = fp16(d * sum q) rounded on its own; corr (if not NULL) receives, per
 * block, s - fp16(d) * sum q, the part our dequantized product misses. */
static void q8_0_round(const float *x, float *out, int64_t n, float *corr) {
    for (int64_t b = 0; b < n; b += 32) {
        moe_act_q8 blk;
        moe_act_quantize_q8_block(x + b, &blk);
        for (int j = 0; j < 32; j++)
            out[b + j] = (float)blk.qs[j] * blk.d;
        if (corr)
            corr[b / 32] = blk.s - blk.d * (float)blk.sum;
    }
}

static void q8_K_round(const float *x, float *out, int64_t n) {
    for (int64_t b = 0; b < n; b += 256) {
        float amax = 0.0f, max = 0.0f;
        for (int j = 0; j < 256; j++) {
            if (fabsf(x[b + j]) > amax) {
                amax = fabsf(x[b + j]);
                max = x[b + j];
            }
        }
        if (amax == 0.0f) {
            memset(out + b, 0, 256 * sizeof *out);
            continue;
        }
        const float iscale = -127.0f / max;
        for (int j = 0; j < 256; j++) {
            float q = nearbyintf(iscale * x[b + j]);
            out[b + j] = (q > 127.0f ? 127.0f : q) / iscale;
        }
    }
}

static const float *round_activations(moe_type t, const float *x, int64_t n, float *buf,
                                      float *corr) {
    const moe_type_traits *tr = moe_type_get(t);
    switch (tr->base) {
    case MOE_TYPE_F32:
        return x;
    case MOE_TYPE_F16:
        for (int64_t i = 0; i < n; i++)
            buf[i] = moe_f16_to_f32(moe_f32_to_f16(x[i]));
        return buf;
    case MOE_TYPE_BF16:
        for (int64_t i = 0; i < n; i++)
            buf[i] = moe_bf16_to_f32(moe_f32_to_bf16(x[i]));
        return buf;
    default:
        if (tr->block_size == 256 && n % 256 == 0)
            q8_K_round(x, buf, n);
        else if (n % 32 == 0)
            q8_0_round(x, buf, n, tr->base == MOE_TYPE_Q4_1 || tr->base == MOE_TYPE_Q5_1 ? corr : NULL);
        else
            return x;
        return buf;
    }
}

/* The AVX-512 horizontal sum: halves, quarters, then the two pairs. */
float moe_reduce16(const float v[16]) {
    float h8[8], h4[4];
    for (int l = 0; l < 8; l++)
        h8[l] = v[l] + v[l + 8];
    for (int l = 0; l < 4; l++)
        h4[l] = h8[l] + h8[l + 4];
    return (h4[0] + h4[2]) + (h4[1] + h4[3]);
}

float moe_reduce64(const float v[64]) {
    float a[4][16];
    memcpy(a, v, sizeof a);
    for (int l = 0; l < 16; l++) {
        a[0][l] += a[2][l];
        a[1][l] += a[3][l];
        a[0][l] += a[1][l];
    }
    return moe_reduce16(a[0]);
}

static float dot_vec_scalar(const float *a, const float *b, int64_t n) {
    float acc[4][16] = {{0}};
    const int64_t np = n & ~(int64_t)63;
    for (int64_t i = 0; i < np; i += 64)
        for (int j = 0; j < 4; j++)
            for (int l = 0; l < 16; l++)
                acc[j][l] = fmaf(a[i + 16 * j + l], b[i + 16 * j + l], acc[j][l]);
    double sum = moe_reduce64((const float *)acc);
    for (int64_t i = np; i < n; i++)
        sum += (double)(a[i] * b[i]);
    return (float)sum;
}

static float dot_gemm_scalar(const float *a, const float *b, int64_t n) {
    if (n % 16 != 0)
        return dot_vec_scalar(a, b, n);
    float acc[16] = {0};
    for (int64_t i = 0; i < n; i += 16)
        for (int l = 0; l < 16; l++)
            acc[l] = fmaf(a[i + l], b[i + l], acc[l]);
    return moe_reduce16(acc);
}

static void fma_row_scalar(float p, const float *v, float *acc, int64_t n) {
    for (int64_t i = 0; i < n; i++)
        acc[i] = fmaf(p, v[i], acc[i]);
}

static void f16_row_scalar(const uint8_t *src, float *dst, int64_t n) {
    for (int64_t i = 0; i < n; i++)
        dst[i] = moe_f16_to_f32(moe_load_le16(src + 2 * i));
}

static void scores_f16_one_head(const float *q, const uint8_t *base, uint64_t stride,
                              const int32_t *cell, int64_t n, int64_t dk, float *out) {
    float k[16];
    for (int64_t j = 0; j < n; j++) {
        const uint8_t *row = base + (uint64_t)cell[j] * stride;
        float acc[16] = {0};
        for (int64_t i = 0; i < dk; i += 16) {
            f16_row_scalar(row + 2 * i, k, 16);
            for (int l = 0; l < 16; l++)
                acc[l] = fmaf(q[i + l], k[l], acc[l]);
        }
        out[j] = moe_reduce16(acc);
    }
}

static void wsum_f16_one_head(const float *p, const uint8_t *base, uint64_t stride,
                              const int32_t *cell, int64_t n, int64_t dv, float *out) {
    float v[8];
    for (int64_t d0 = 0; d0 < dv; d0 += 8) {
        float lanes[8][16] = {{0}}; /* value d0 + i, lane l */
        for (int64_t j = 0; j < n; j++) {
            f16_row_scalar(base + (uint64_t)cell[j] * stride + 2 * d0, v, 8);
            for (int i = 0; i < 8; i++)
                lanes[i][j % 16] = fmaf(p[j], v[i], lanes[i][j % 16]);
        }
        for (int i = 0; i < 8; i++)
            out[d0 + i] = moe_reduce16(lanes[i]);
    }
}

/* dot_vec_scalar's order with the row widened value by value */
static void scores_f16_vec_one_head(const float *q, const uint8_t *base, uint64_t stride,
                                  const int32_t *cell, int64_t n, int64_t dk, float *out) {
    const int64_t np = dk & ~(int64_t)63;
    for (int64_t j = 0; j < n; j++) {
        const uint8_t *row = base + (uint64_t)cell[j] * stride;
        float acc[4][16] = {{0}};
        for (int64_t i = 0; i < np; i += 64)
            for (int c = 0; c < 4; c++)
                for (int l = 0; l < 16; l++) {
                    const int64_t k = i + 16 * c + l;
                    acc[c][l] = fmaf(q[k], moe_f16_to_f32(moe_load_le16(row + 2 * k)), acc[c][l]);
                }
        double sum = moe_reduce64((const float *)acc);
        for (int64_t k = np; k < dk; k++)
            sum += (double)(q[k] * moe_f16_to_f32(moe_load_le16(row + 2 * k)));
        out[j] = (float)sum;
    }
}

static void wsum_f16_vec_one_head(const float *p, const uint8_t *base, uint64_t stride,
                                  const int32_t *cell, int64_t n_lane, int64_t n, int64_t dv, float *out) {
    float v[8];
    for (int64_t d0 = 0; d0 < dv; d0 += 8) {
        float lanes[8][64] = {{0}};
        double tail[8] = {0};
        for (int64_t j = 0; j < n; j++) {
            f16_row_scalar(base + (uint64_t)cell[j] * stride + 2 * d0, v, 8);
            for (int i = 0; i < 8; i++) {
                if (j < n_lane)
                    lanes[i][j % 64] = fmaf(p[j], v[i], lanes[i][j % 64]);
                else
                    tail[i] += (double)(p[j] * v[i]);
            }
        }
        for (int i = 0; i < 8; i++)
            out[d0 + i] = (float)((double)moe_reduce64(lanes[i]) + tail[i]);
    }
}

static void wsum_f16_scalar(const float *p, int64_t ldp, const uint8_t *base, uint64_t stride,
                            const int32_t *cell, int64_t n, int64_t dv, float *out, int64_t nh,
                            int64_t ldo) {
    for (int64_t h = 0; h < nh; h++)
        wsum_f16_one_head(p + h * ldp, base, stride, cell, n, dv, out + h * ldo);
}

static void wsum_f16_vec_scalar(const float *p, int64_t ldp, const uint8_t *base, uint64_t stride,
                                const int32_t *cell, int64_t n_lane, int64_t n, int64_t dv, float *out,
                                int64_t nh, int64_t ldo) {
    for (int64_t h = 0; h < nh; h++)
        wsum_f16_vec_one_head(p + h * ldp, base, stride, cell, n_lane, n, dv, out + h * ldo);
}

static void scores_f16_scalar(const float *q, const uint8_t *base, uint64_t stride, const int32_t *cell,
                              int64_t n, int64_t dk, float *out, int64_t nh, int64_t ldo) {
    for (int64_t h = 0; h < nh; h++)
        scores_f16_one_head(q + h * dk, base, stride, cell, n, dk, out + h * ldo);
}

static void scores_f16_vec_scalar(const float *q, const uint8_t *base, uint64_t stride,
                                  const int32_t *cell, int64_t n, int64_t dk, float *out, int64_t nh,
                                  int64_t ldo) {
    for (int64_t h = 0; h < nh; h++)
        scores_f16_vec_one_head(q + h * dk, base, stride, cell, n, dk, out + h * ldo);
}

static void round_f16_row_scalar(float *x, int64_t n) {
    for (int64_t i = 0; i < n; i++)
        x[i] = moe_f16_to_f32(moe_f32_to_f16(x[i]));
}

static float max_row_scalar(const float *x, int64_t n) {
    float max = -INFINITY;
    for (int64_t i = 0; i < n; i++)
        max = fmaxf(max, x[i]);
    return max;
}

static double exp_sum16_scalar(float *x, int64_t n16, float max);
static void silu16_scalar(float *x, int64_t n16);

const moe_cpu_float_ops *moe_cpu_float_ops_scalar(void) {
    static const moe_cpu_float_ops ops = {.dot_gemm = dot_gemm_scalar, .dot_vec = dot_vec_scalar,
                                          .fma_row = fma_row_scalar, .f16_row = f16_row_scalar,
                                          .silu16 = silu16_scalar, .exp_sum16 = exp_sum16_scalar,
                                          .scores_f16 = scores_f16_scalar, .wsum_f16 = wsum_f16_scalar,
                                          .scores_f16_vec = scores_f16_vec_scalar,
                                          .wsum_f16_vec = wsum_f16_vec_scalar,
                                          .round_f16_row = round_f16_row_scalar,
                                          .max_row = max_row_scalar};
    return &ops;
}

float moe_dot_gemm(const float *a, const float *b, int64_t n) {
    return moe_cpu_float_ops_active()->dot_gemm(a, b, n);
}

bool moe_gemm_order(moe_type type, int64_t n_out, int64_t T) {
    const bool float_type = type == MOE_TYPE_F32 || type == MOE_TYPE_F16 || type == MOE_TYPE_BF16;
    return T > 1 && (!float_type || n_out % 4 == 0);
}

float moe_dot_vec(const float *a, const float *b, int64_t n) {
    return moe_cpu_float_ops_active()->dot_vec(a, b, n);
}

/* Rows [g0*group, g1*group) of one expert against all T tokens. */
/* sum over blocks of the block's min (fp16 at byte 2 of Q4_1/Q5_1 blocks)
 * times the activation's Q8_1 correction. */
static float min_correction(const moe_weight *w, const uint8_t *row, const float *corr,
                            int64_t n_in) {
    const uint64_t bsize = moe_type_get(w->type)->type_size;
    float sum = 0.0f;
    for (int64_t b = 0; b < n_in / 32; b++)
        sum += moe_f16_to_f32(moe_load_le16(row + (uint64_t)b * bsize + 2)) * corr[b];
    return sum;
}

static void matmul_rows(const moe_weight *w, const uint8_t *base, const float *xa,
                        const float *corr, int64_t T, float *y, float *row, int64_t g0,
                        int64_t g1, int64_t group,
                        float (*dot)(const float *, const float *, int64_t)) {
    const int64_t n_in = w->ne[0], n_out = w->ne[1];
    const moe_type_traits *tr = moe_type_get(w->type);
    const bool has_min = tr->base == MOE_TYPE_Q4_1 || tr->base == MOE_TYPE_Q5_1;
    for (int64_t g = g0; g < g1; g++) {
        const uint8_t *src = base + (uint64_t)(g * group) * w->row_bytes;
        const float *rf = row; /* the rows in f32: F32 weights are read in place */
        if (w->type == MOE_TYPE_F32)
            rf = (const float *)(const void *)src;
        else if (w->type == MOE_TYPE_F16)
            moe_cpu_float_ops_active()->f16_row(src, row, n_in * group);
        else
            tr->to_f32(src, row, n_in, group);
        for (int64_t rr = 0; rr < group; rr++)
            for (int64_t t = 0; t < T; t++) {
                float v = dot(rf + rr * n_in, xa + t * n_in, n_in);
                if (has_min)
                    v += min_correction(w, src + (uint64_t)rr * w->row_bytes,
                                        corr + t * (n_in / 32), n_in);
                y[t * n_out + g * group + rr] = v;
            }
    }
}

void moe_cpu_matmul(const moe_weight *w, int64_t e, const float *x, int64_t T, float *y,
                    float *scratch, int n_threads, moe_dot_order order) {
    float (*dot)(const float *, const float *, int64_t) =
        order == MOE_DOT_GEMM && moe_gemm_order(w->type, w->ne[1], T) ? moe_dot_gemm : moe_dot_vec;
    const int64_t n_in = w->ne[0], n_out = w->ne[1];
    float *corr = scratch + n_in * T;
    const float *xa = round_activations(w->type, x, n_in * T, scratch, corr);
    float *rows = corr + (n_in / 32 + 1) * T;
    const uint8_t *base = w->data + (uint64_t)e * w->expert_bytes;
    const moe_type_traits *tr = moe_type_get(w->type);
    const int64_t group = tr->interleave_rows ? tr->interleave_rows : 1;
    const int64_t n_groups = n_out / group;
    int nth = n_threads < 1 ? 1 : n_threads;
    if (nth > n_groups)
        nth = (int)(n_groups > 0 ? n_groups : 1);
#pragma omp parallel for num_threads(nth) schedule(static)
    for (int k = 0; k < nth; k++)
        matmul_rows(w, base, xa, corr, T, y, rows + (int64_t)k * n_in * MAX_ROW_GROUP,
                    n_groups * k / nth, n_groups * (k + 1) / nth, group, dot);
}

void moe_cpu_rms_norm(const float *x, const float *w, int64_t n, float eps, float *out) {
    double sum = 0.0;
    for (int64_t i = 0; i < n; i++)
        sum += (double)(x[i] * x[i]); /* ggml squares in float, sums in double */
    const float scale = 1.0f / sqrtf((float)(sum / (double)n) + eps);
    for (int64_t i = 0; i < n; i++)
        out[i] = x[i] * scale;
    if (w)
        for (int64_t i = 0; i < n; i++)
            out[i] *= w[i];
}

void moe_cpu_add_bias(float *x, const float *b, int64_t n) {
    if (b)
        for (int64_t i = 0; i < n; i++)
            x[i] += b[i];
}

/* YaRN angle correction (model.md §2.0): ramp between interpolated and
 * extrapolated frequencies, and the magnitude boost. */
static void rope_yarn(float theta_extrap, const moe_rope_params *r, int p, float *cos_t,
                      float *sin_t) {
    float theta_interp = r->freq_scale * theta_extrap;
    float theta = theta_interp, mscale = r->attn_factor;
    if (r->ext_factor != 0.0f) {
        float y = ((float)p - r->corr_lo) / fmaxf(0.001f, r->corr_hi - r->corr_lo);
        float ramp = 1.0f - fminf(1.0f, fmaxf(0.0f, y));
        float mix = ramp * r->ext_factor;
        theta = theta_interp * (1.0f - mix) + theta_extrap * mix;
        mscale *= 1.0f + 0.1f * logf(1.0f / r->freq_scale);
    }
    *cos_t = cosf(theta) * mscale;
    *sin_t = sinf(theta) * mscale;
}

void moe_cpu_rope_angles(int32_t pos, const moe_rope_params *r, int p0, int n, float *cs) {
    const float theta_scale = powf(r->freq_base, -2.0f / (float)r->n_dims);
    float theta = (float)pos; /* the running product, as ggml forms it: pair p's angle after p steps */
    for (int p = 0; p < p0; p++)
        theta *= theta_scale;
    for (int p = p0; p < p0 + n; p++) {
        rope_yarn(theta, r, p, &cs[2 * (p - p0)], &cs[2 * (p - p0) + 1]);
        theta *= theta_scale;
    }
}

void moe_cpu_rope_apply(float *v, int64_t n_heads, int64_t head_stride, const float *cs, int p0,
                        int n, const moe_rope_params *r) {
    const int half = r->n_dims / 2;
    for (int p = p0; p < p0 + n; p++) {
        const float c = cs[2 * (p - p0)], s = cs[2 * (p - p0) + 1];
        /* NORM rotates adjacent pairs, NEOX the two halves */
        const int i0 = r->neox ? p : 2 * p, i1 = r->neox ? p + half : 2 * p + 1;
        for (int64_t h = 0; h < n_heads; h++) {
            float *x = v + h * head_stride;
            const float x0 = x[i0], x1 = x[i1];
            if (r->fused) { /* current llama.cpp's contracted C++ (moe_rope_params) */
                x[i0] = fmaf(x0, c, -(x1 * s));
                x[i1] = fmaf(x0, s, x1 * c);
            } else {
                x[i0] = x0 * c - x1 * s;
                x[i1] = x0 * s + x1 * c;
            }
        }
    }
}

void moe_cpu_rope(float *v, int64_t n_heads, int64_t head_stride, int32_t pos,
                  const moe_rope_params *r) {
    enum { CHUNK = 64 }; /* pairs per table: any n_dims without a bound on the stack */
    float cs[2 * CHUNK];
    for (int p0 = 0; p0 < r->n_dims / 2; p0 += CHUNK) {
        const int n = r->n_dims / 2 - p0 < CHUNK ? r->n_dims / 2 - p0 : CHUNK;
        moe_cpu_rope_angles(pos, r, p0, n, cs);
        moe_cpu_rope_apply(v, n_heads, head_stride, cs, p0, n, r);
    }
}

/* exp as llama.cpp's AVX-512 build computes it in softmax and SiLU: the
 * Arm Optimized Routines polynomial (published constants; max error about
 * 1.45 ulp + 0.5), written out in scalar form. Underflow gives 0, overflow inf. */
float moe_expf_ggml(float x) {
    const float shift = 0x1.8p23f; /* adding it rounds x/ln2 to an integer */
    const float z = fmaf(x, 0x1.715476p+0f, shift);
    const float n = z - shift;
    const float b = fmaf(-n, 0x1.7f7d1cp-20f, fmaf(-n, 0x1.62e4p-1f, x)); /* x - n*ln2 */
    if (!(fabsf(n) <= 192.0f))
        return n <= 0.0f ? 0.0f : INFINITY;
    const float u = b * b;
    const float j = fmaf(fmaf(fmaf(0x1.0e4020p-7f, b, 0x1.573e2ep-5f), u,
                              fmaf(0x1.555e66p-3f, b, 0x1.fffdb6p-2f)),
                         u, fmaf(0x1.ffffecp-1f, b, 1.0f));
    return ldexpf(j, (int)n);
}

static double exp_sum16_scalar(float *x, int64_t n16, float max) {
    double sum = 0.0;
    for (int64_t i = 0; i < n16; i += 16) {
        for (int l = 0; l < 16; l++)
            x[i + l] = moe_expf_ggml(x[i + l] - max);
        sum += moe_reduce16(x + i);
    }
    return sum;
}

static void silu16_scalar(float *x, int64_t n16) {
    for (int64_t i = 0; i < n16; i++)
        x[i] = x[i] / (1.0f + moe_expf_ggml(-x[i]));
}

/* ggml's softmax: 16-value blocks through the polynomial, each block summed in
 * the AVX-512 tree and the blocks in double; a tail through libm expf. */
void moe_cpu_softmax(float *x, int64_t n) {
    /* the maximum's value does not depend on the order (only a zero's sign
     * could, and x - (+0) and x - (-0) have the same exp) */
    const float max = moe_cpu_float_ops_active()->max_row(x, n);
    const int64_t n16 = n & ~(int64_t)15;
    double sum = moe_cpu_float_ops_active()->exp_sum16(x, n16, max);
    for (int64_t i = n16; i < n; i++) {
        x[i] = expf(x[i] - max);
        sum += x[i];
    }
    const float inv = (float)(1.0 / sum);
    for (int64_t k = 0; k < n; k++)
        x[k] *= inv;
}

void moe_cpu_silu(float *x, int64_t n) {
    const int64_t n16 = n & ~(int64_t)15;
    moe_cpu_float_ops_active()->silu16(x, n16);
    for (int64_t i = n16; i < n; i++)
        x[i] = x[i] / (1.0f + expf(-x[i]));
}
