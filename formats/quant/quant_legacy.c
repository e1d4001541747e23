/* quant_legacy — quantizers of the 32-value legacy block types Q4_0, Q4_1,
 * Q5_0, Q5_1 and Q8_0, bit-exact with llama.cpp (Feb 2025) as llama-quantize
 * calls them (../shared/spec/quant.md §1.2; contract in quant_impl.h).
 *
 * Two algorithms per type:
 *   - without an importance matrix, the reference quantizer: one scale per
 *     block straight from the block's extreme values (and min for _1 types);
 *   - with one, a weighted search per block (moe_make_qx_quants for the
 *     symmetric _0 types, moe_make_qkx3_quants for the _1 types), with weights
 *     qw_j * sqrt(sigma^2 + x_j^2), sigma^2 being the mean square of the
 *     whole row. Q8_0 has no importance-weighted variant.
 *
 * Bit-exactness rests on doing every float operation in llama.cpp's order
 * and precision (float, never double; no fused multiply-add), on its rounding
 * at each call site (truncation after +0.5 / +8.5 / +16.5 in the _ref
 * quantizers, roundf for Q8_0, ties-to-even inside the searches), and on
 * rounding the scale to fp16 only when it is stored.
 *
 * Blocks are written through explicit little-endian stores at offsetof()
 * positions, so output does not depend on host byte order or alignment.
 */
#include <float.h>
#include <math.h>
#include <stddef.h>
#include <stdint.h>

#include "formats/gguf/cursor.h"
#include "formats/quant/fp16.h"
#include "formats/quant/quant_blocks.h"
#include "formats/quant/quant_common.h"
#include "formats/quant/quant_impl.h"

/* No fused multiply-adds (see quant_common.h and -ffp-contract=off in CMakeLists.txt):
 * an FMA rounds once where llama.cpp rounds twice and changes bytes. */

/* (int32_t)v the way x86's cvttss2si computes it: truncation toward zero, and
 * INT32_MIN for NaN or out-of-range values. llama.cpp's float-to-integer
 * casts do exactly that on the machines its files come from; C leaves those
 * cases undefined, so they are spelled out here. */
static int32_t trunc_i32(float v) {
    if (v >= -2147483648.0f && v < 2147483648.0f)
        return (int32_t)v;
    return INT32_MIN;
}

/* llama.cpp casts these sums to int8_t: keep the low byte, as that cast does. */
static int trunc_i8(float v) { return (int8_t)(uint8_t)(uint32_t)trunc_i32(v); }

static void store_f16(uint8_t *p, float v) { moe_store_le16(p, moe_f32_to_f16(v)); }

/* Split-half nibble order: element j in the low nibble of qs[j], element
 * j + 16 in the high nibble (j < 16). Only the low 4 bits of q count. */
static void pack_nibbles(uint8_t *qs, const uint8_t q[MOE_QK]) {
    for (int j = 0; j < MOE_QK / 2; j++)
        qs[j] = (uint8_t)((q[j] & 0x0f) | (q[j + MOE_QK / 2] & 0x0f) << 4);
}

/* The fifth bit of each 5-bit value: bit j of a u32 LE word is bit 4 of q[j]. */
static void pack_fifth_bits(uint8_t *qh, const uint8_t q[MOE_QK]) {
    uint32_t h = 0;
    for (int j = 0; j < MOE_QK; j++)
        h |= (uint32_t)((q[j] >> 4) & 1) << j;
    moe_store_le32(qh, h);
}

/* ---- reference quantizers (no importance matrix) ---------------------------- */

/* Q4_0 / Q5_0 reference: d = max / -half (half = 8 or 16), so the extreme
 * value lands exactly on code 0 and the opposite side clips at 2*half - 1.
 * Codes are trunc(x/d + half + 0.5), i.e. round half up. */
static void ref_block_symmetric(const float *x, int half, uint8_t q[MOE_QK], float *d_out) {
    float amax;
    const float max = moe_signed_absmax(x, MOE_QK, &amax);
    const float d = max / (float)-half;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    const float bias = (float)half + 0.5f;
    const int qmax = 2 * half - 1;
    for (int j = 0; j < MOE_QK; j++) {
        const int v = trunc_i8(x[j] * id + bias);
        q[j] = (uint8_t)(v < qmax ? v : qmax);
    }
    *d_out = d;
}

/* Q4_1 / Q5_1 reference: d = (max - min) / nmax, m = min; codes are
 * trunc((x - min)/d + 0.5). Q4_1 clamps at 15; Q5_1 does not clamp (its
 * largest code is 31 by construction) and keeps whatever low bits result. */
static void ref_block_affine(const float *x, int nmax, uint8_t q[MOE_QK], float *d_out,
                             float *m_out) {
    float min = FLT_MAX, max = -FLT_MAX;
    for (int j = 0; j < MOE_QK; j++) {
        if (x[j] < min)
            min = x[j];
        if (x[j] > max)
            max = x[j];
    }
    const float d = (max - min) / (float)nmax;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    for (int j = 0; j < MOE_QK; j++) {
        const float v = (x[j] - min) * id + 0.5f;
        if (nmax == 15) {
            const int l = trunc_i8(v);
            q[j] = (uint8_t)(l < 15 ? l : 15);
        } else {
            q[j] = (uint8_t)(uint32_t)trunc_i32(v);
        }
    }
    *d_out = d;
    *m_out = min;
}

static void ref_q4_0(const float *x, uint8_t *blk) {
    uint8_t q[MOE_QK];
    float d;
    ref_block_symmetric(x, 8, q, &d);
    store_f16(blk + offsetof(block_q4_0, d), d);
    pack_nibbles(blk + offsetof(block_q4_0, qs), q);
}

static void ref_q5_0(const float *x, uint8_t *blk) {
    uint8_t q[MOE_QK];
    float d;
    ref_block_symmetric(x, 16, q, &d);
    store_f16(blk + offsetof(block_q5_0, d), d);
    pack_fifth_bits(blk + offsetof(block_q5_0, qh), q);
    pack_nibbles(blk + offsetof(block_q5_0, qs), q);
}

static void ref_q4_1(const float *x, uint8_t *blk) {
    uint8_t q[MOE_QK];
    float d, m;
    ref_block_affine(x, 15, q, &d, &m);
    store_f16(blk + offsetof(block_q4_1, d), d);
    store_f16(blk + offsetof(block_q4_1, m), m);
    pack_nibbles(blk + offsetof(block_q4_1, qs), q);
}

static void ref_q5_1(const float *x, uint8_t *blk) {
    uint8_t q[MOE_QK];
    float d, m;
    ref_block_affine(x, 31, q, &d, &m);
    store_f16(blk + offsetof(block_q5_1, d), d);
    store_f16(blk + offsetof(block_q5_1, m), m);
    pack_fifth_bits(blk + offsetof(block_q5_1, qh), q);
    pack_nibbles(blk + offsetof(block_q5_1, qs), q);
}

/* Q8_0: d = amax / 127, q = roundf(x/d) (ties away from zero, unlike the
 * searches' ties-to-even). */
static void ref_q8_0(const float *x, uint8_t *blk) {
    float amax = 0.0f;
    for (int j = 0; j < MOE_QK; j++) {
        const float a = fabsf(x[j]);
        amax = amax > a ? amax : a; /* not fmaxf: a NaN must propagate as in llama.cpp */
    }
    const float d = amax / 127.0f;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    store_f16(blk + offsetof(block_q8_0, d), d);
    uint8_t *qs = blk + offsetof(block_q8_0, qs);
    for (int j = 0; j < MOE_QK; j++)
        qs[j] = (uint8_t)(uint32_t)trunc_i32(roundf(x[j] * id));
}

/* ---- importance-weighted quantizers ------------------------------------------ */

typedef void (*block_fn)(const float *x, uint8_t *blk);
typedef void (*weighted_block_fn)(const float *x, const float *w, uint8_t *blk);

/* Mean square of the whole row: the weights' floor, so that columns the
 * imatrix rates unimportant still count in proportion to the row's scale. */
static float row_sigma2(const float *x, int64_t n) {
    float sum_x2 = 0.0f;
    for (int64_t j = 0; j < n; j++)
        sum_x2 += x[j] * x[j];
    return sum_x2 / (float)n;
}

static void block_weights(const float *x, const float *qw, float sigma2, float w[MOE_QK]) {
    for (int j = 0; j < MOE_QK; j++)
        w[j] = qw[j] * sqrtf(sigma2 + x[j] * x[j]);
}

static void wq_q4_0(const float *x, const float *w, uint8_t *blk) {
    int8_t L[MOE_QK];
    uint8_t q[MOE_QK];
    const float d = moe_make_qx_quants(MOE_QK, 8, x, L, 1, w);
    for (int j = 0; j < MOE_QK; j++)
        q[j] = (uint8_t)L[j];
    store_f16(blk + offsetof(block_q4_0, d), d);
    pack_nibbles(blk + offsetof(block_q4_0, qs), q);
}

static void wq_q5_0(const float *x, const float *w, uint8_t *blk) {
    int8_t L[MOE_QK];
    uint8_t q[MOE_QK];
    const float d = moe_make_qx_quants(MOE_QK, 16, x, L, 1, w);
    for (int j = 0; j < MOE_QK; j++)
        q[j] = (uint8_t)L[j];
    store_f16(blk + offsetof(block_q5_0, d), d);
    pack_fifth_bits(blk + offsetof(block_q5_0, qh), q);
    pack_nibbles(blk + offsetof(block_q5_0, qs), q);
}

/* The _1 types store m = -min: moe_make_qkx3_quants hands back the positive
 * amount to subtract. */
static void wq_q4_1(const float *x, const float *w, uint8_t *blk) {
    uint8_t L[MOE_QK], Laux[MOE_QK];
    float the_min;
    const float d = moe_make_qkx3_quants(MOE_QK, 15, x, w, L, &the_min, Laux, -0.9f, 0.05f, 36,
                                         false);
    store_f16(blk + offsetof(block_q4_1, d), d);
    store_f16(blk + offsetof(block_q4_1, m), -the_min);
    pack_nibbles(blk + offsetof(block_q4_1, qs), L);
}

static void wq_q5_1(const float *x, const float *w, uint8_t *blk) {
    uint8_t L[MOE_QK], Laux[MOE_QK];
    float the_min;
    const float d = moe_make_qkx3_quants(MOE_QK, 31, x, w, L, &the_min, Laux, -0.9f, 0.05f, 36,
                                         false);
    store_f16(blk + offsetof(block_q5_1, d), d);
    store_f16(blk + offsetof(block_q5_1, m), -the_min);
    pack_fifth_bits(blk + offsetof(block_q5_1, qh), L);
    pack_nibbles(blk + offsetof(block_q5_1, qs), L);
}

/* ---- drivers ------------------------------------------------------------------- */

/* Without an imatrix llama.cpp quantizes the chunk as one long row; blocks
 * are independent, so walking rows of blocks gives the same bytes. With one,
 * every row gets its own sigma^2 and the imatrix slice of each block. */
static void quantize_rows(const float *src, uint8_t *dst, int64_t nrow, int64_t n_per_row,
                          const float *imatrix, size_t block_bytes, block_fn ref,
                          weighted_block_fn weighted) {
    const int64_t nb = n_per_row / MOE_QK;
    for (int64_t r = 0; r < nrow; r++) {
        const float *x = src + r * n_per_row;
        uint8_t *row = dst + (size_t)r * (size_t)nb * block_bytes;
        const float sigma2 = imatrix && weighted ? row_sigma2(x, n_per_row) : 0.0f;
        for (int64_t b = 0; b < nb; b++) {
            uint8_t *blk = row + (size_t)b * block_bytes;
            if (imatrix && weighted) {
                float w[MOE_QK];
                block_weights(x + b * MOE_QK, imatrix + b * MOE_QK, sigma2, w);
                weighted(x + b * MOE_QK, w, blk);
            } else {
                ref(x + b * MOE_QK, blk);
            }
        }
    }
}

MOE_QUANT_FN(q4_0) {
    quantize_rows(src, dst, nrow, n_per_row, imatrix, sizeof(block_q4_0), ref_q4_0, wq_q4_0);
}

MOE_QUANT_FN(q4_1) {
    quantize_rows(src, dst, nrow, n_per_row, imatrix, sizeof(block_q4_1), ref_q4_1, wq_q4_1);
}

MOE_QUANT_FN(q5_0) {
    quantize_rows(src, dst, nrow, n_per_row, imatrix, sizeof(block_q5_0), ref_q5_0, wq_q5_0);
}

MOE_QUANT_FN(q5_1) {
    quantize_rows(src, dst, nrow, n_per_row, imatrix, sizeof(block_q5_1), ref_q5_1, wq_q5_1);
}

/* Q8_0 ignores the imatrix, as llama.cpp's quantize_q8_0 does. */
MOE_QUANT_FN(q8_0) {
    quantize_rows(src, dst, nrow, n_per_row, NULL, sizeof(block_q8_0), ref_q8_0, NULL);
}
