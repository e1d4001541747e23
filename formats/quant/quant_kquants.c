/* quant_kquants — Q2_K..Q6_K quantizers; contract in quant_impl.h.
 *
 * Each type has two block quantizers, as llama.cpp has (spec quant.md §1.3):
 * the reference one (no importance matrix; what llama-quantize runs without
 * --imatrix) and the importance-weighted one (imatrix given; qw is the
 * super-block's 256-column slice of it). Both end the same way: the
 * super-block scale(s) are rounded to fp16 first, and the elements are then
 * re-quantized against the *rounded* scales, so the stored integers match the
 * stored scales. We keep llama.cpp's float operation order throughout; see
 * quant_common.c for why that matters.
 *
 * Layout of the 2-bit planes shared by Q2_K and Q3_K (per 128 elements):
 *   qs[l] bits 2k..2k+1 = element 32k + l   (k = 0..3, l = 0..31)
 */
#include <math.h>
#include <string.h>

#include "formats/quant/fp16.h"
#include "formats/quant/quant_blocks.h"
#include "formats/quant/quant_common.h"
#include "formats/quant/quant_impl.h"
#include "formats/quant/quant_kq_lanes.h"

#define QK_K MOE_QK_K

static inline int imin(int a, int b) { return a < b ? a : b; }
static inline int imax(int a, int b) { return a > b ? a : b; }

/* Packs 256 2-bit values (L < 4) into the 64-byte plane described above. */
static void pack_2bit(const uint8_t *L, uint8_t *qs) {
    for (int j = 0; j < QK_K; j += 128)
        for (int l = 0; l < 32; ++l)
            qs[j / 4 + l] = (uint8_t)(L[j + l] | (L[j + l + 32] << 2) | (L[j + l + 64] << 4) |
                                      (L[j + l + 96] << 6));
}

/* ---------------------------------------------------------------- Q2_K */

/* Re-quantizes the 16 sub-blocks against the stored (fp16) d/dmin and 4-bit
 * scale/min pairs and packs the result. Sub-blocks whose scale is 0 keep the
 * integers of the search, as llama.cpp does. */
static void q2k_finish(const float *x, block_q2_K *y, uint8_t *L) {
    const float dm = moe_f16_to_f32(y->d), mm = moe_f16_to_f32(y->dmin);
    for (int j = 0; j < QK_K / 16; ++j) {
        const float d = dm * (y->scales[j] & 0xF);
        if (!d)
            continue;
        const float m = mm * (y->scales[j] >> 4);
        for (int ii = 0; ii < 16; ++ii) {
            int l = moe_nearest_int((x[16 * j + ii] + m) / d);
            L[16 * j + ii] = (uint8_t)imax(0, imin(3, l));
        }
    }
    pack_2bit(L, y->qs);
}

static void q2k_block_ref(const moe_kq_search *search, const float *x, block_q2_K *y) {
    static const moe_qkx_params params = {.n = 16, .nmax = 3, .rmin = -0.5f, .rdelta = 0.1f,
                                          .nstep = 15, .use_mad = true};
    uint8_t L[QK_K];
    float weights[QK_K], mins[QK_K / 16], scales[QK_K / 16];
    const float q4scale = 15.f;
    for (int l = 0; l < QK_K; ++l)
        weights[l] = fabsf(x[l]);
    search->qkx(&params, x, weights, QK_K / 16, L, scales, mins);
    /* scales and mins are both >= 0: the min is subtracted */
    float max_scale = 0, max_min = 0;
    for (int j = 0; j < QK_K / 16; ++j) {
        if (scales[j] > max_scale)
            max_scale = scales[j];
        if (mins[j] > max_min)
            max_min = mins[j];
    }
    if (max_scale > 0) {
        float iscale = q4scale / max_scale;
        for (int j = 0; j < QK_K / 16; ++j)
            y->scales[j] = (uint8_t)moe_nearest_int(iscale * scales[j]);
        y->d = moe_f32_to_f16(max_scale / q4scale);
    } else {
        memset(y->scales, 0, sizeof y->scales);
        y->d = moe_f32_to_f16(0.f);
    }
    if (max_min > 0) {
        float iscale = q4scale / max_min;
        for (int j = 0; j < QK_K / 16; ++j)
            y->scales[j] |= (uint8_t)(moe_nearest_int(iscale * mins[j]) << 4);
        y->dmin = moe_f32_to_f16(max_min / q4scale);
    } else {
        y->dmin = moe_f32_to_f16(0.f);
    }
    q2k_finish(x, y, L);
}

static void q2k_block_imat(const moe_kq_search *search, const float *x, block_q2_K *y,
                           const float *qw) {
    static const moe_qkx_params params = {.n = 16, .nmax = 3, .rmin = -0.9f, .rdelta = 0.05f,
                                          .nstep = 36, .qkx3 = true};
    uint8_t L[QK_K], Ls[QK_K / 16], Lm[QK_K / 16];
    float mins[QK_K / 16], scales[QK_K / 16], sw[QK_K / 16], weight[QK_K];
    float sumx2 = 0;
    for (int j = 0; j < QK_K; ++j)
        sumx2 += x[j] * x[j];
    float sigma2 = sumx2 / QK_K;
    for (int j = 0; j < QK_K / 16; ++j) {
        float *wj = weight + 16 * j;
        for (int l = 0; l < 16; ++l)
            wj[l] = qw[16 * j + l] * sqrtf(sigma2 + x[16 * j + l] * x[16 * j + l]);
        sw[j] = 0;
        for (int l = 0; l < 16; ++l)
            sw[j] += wj[l];
    }
    search->qkx(&params, x, weight, QK_K / 16, L, scales, mins);
    float dm = moe_make_qp_quants(QK_K / 16, 15, scales, Ls, sw);
    float mm = moe_make_qp_quants(QK_K / 16, 15, mins, Lm, sw);
    y->d = moe_f32_to_f16(dm);
    y->dmin = moe_f32_to_f16(mm);
    for (int j = 0; j < QK_K / 16; ++j)
        y->scales[j] = (uint8_t)(Ls[j] | (Lm[j] << 4));
    q2k_finish(x, y, L);
}

/* ---------------------------------------------------------------- Q3_K */

/* Stores 16 6-bit scales (0..63, i.e. signed + 32): low nibbles of s < 8 in
 * scales[s], of s >= 8 in the high nibble of scales[s-8]; the top 2 bits of
 * s at bits 2*(s/4) of scales[8 + s%4]. */
static void q3k_pack_scales(const uint8_t *ls, uint8_t *scales) {
    memset(scales, 0, 12);
    for (int j = 0; j < QK_K / 16; ++j) {
        int l = ls[j];
        if (j < 8)
            scales[j] = (uint8_t)(l & 0xF);
        else
            scales[j - 8] |= (uint8_t)((l & 0xF) << 4);
        scales[j % 4 + 8] |= (uint8_t)((l >> 4) << (2 * (j / 4)));
    }
}

/* Re-quantizes against the stored fp16 d and 6-bit scales to [-4, 3], then
 * splits each value into the hmask bit (set when the biased value is >= 4)
 * and the low 2 bits. L holds values biased by +4 (the search's output for
 * sub-blocks with a zero scale). */
static void q3k_finish(const float *x, block_q3_K *y, int8_t *L) {
    const float d_all = moe_f16_to_f32(y->d);
    for (int j = 0; j < QK_K / 16; ++j) {
        int sc = j < 8 ? y->scales[j] & 0xF : y->scales[j - 8] >> 4;
        sc = (sc | (((y->scales[8 + j % 4] >> (2 * (j / 4))) & 3) << 4)) - 32;
        float d = d_all * (int8_t)sc;
        if (!d)
            continue;
        for (int ii = 0; ii < 16; ++ii) {
            int l = moe_nearest_int(x[16 * j + ii] / d);
            L[16 * j + ii] = (int8_t)(imax(-4, imin(3, l)) + 4);
        }
    }
    /* hmask[m] bit b holds element 32*b + m */
    memset(y->hmask, 0, sizeof y->hmask);
    uint8_t Lu[QK_K];
    for (int j = 0; j < QK_K; ++j) {
        Lu[j] = (uint8_t)L[j];
        if (Lu[j] > 3) {
            y->hmask[j % 32] |= (uint8_t)(1u << (j / 32));
            Lu[j] -= 4;
        }
    }
    pack_2bit(Lu, y->qs);
}

static void q3k_block_ref(const float *x, block_q3_K *y) {
    int8_t L[QK_K];
    float scales[QK_K / 16];
    /* max_scale is the signed scale of largest magnitude */
    float max_scale = 0, amax = 0;
    for (int j = 0; j < QK_K / 16; ++j) {
        scales[j] = moe_make_q3_quants(16, 4, x + 16 * j, L + 16 * j, true);
        float scale = fabsf(scales[j]);
        if (scale > amax) {
            amax = scale;
            max_scale = scales[j];
        }
    }
    if (max_scale) {
        uint8_t ls[QK_K / 16];
        float iscale = -32.f / max_scale;
        for (int j = 0; j < QK_K / 16; ++j) {
            /* llama.cpp narrows to int8 before clamping; |value| <= 32 here */
            int8_t l = (int8_t)moe_nearest_int(iscale * scales[j]);
            ls[j] = (uint8_t)(imax(-32, imin(31, l)) + 32);
        }
        q3k_pack_scales(ls, y->scales);
        y->d = moe_f32_to_f16(1 / iscale);
    } else {
        memset(y->scales, 0, sizeof y->scales);
        y->d = moe_f32_to_f16(0.f);
    }
    q3k_finish(x, y, L);
}

static void q3k_block_imat(const moe_kq_search *search, const float *x, block_q3_K *y,
                           const float *qw) {
    int8_t L[QK_K], Ls[QK_K / 16];
    float scales[QK_K / 16], weight[QK_K], sw[QK_K / 16];
    float sumx2 = 0;
    for (int j = 0; j < QK_K; ++j)
        sumx2 += x[j] * x[j];
    float sigma2 = 2 * sumx2 / QK_K;
    for (int j = 0; j < QK_K / 16; ++j) {
        float *wj = weight + 16 * j;
        for (int l = 0; l < 16; ++l)
            wj[l] = qw[16 * j + l] * sqrtf(sigma2 + x[16 * j + l] * x[16 * j + l]);
        float sumw = 0;
        for (int l = 0; l < 16; ++l)
            sumw += wj[l];
        sw[j] = sumw;
    }
    search->qx1(16, 4, x, weight, QK_K / 16, L, scales);
    float d_block = moe_make_qx_quants(QK_K / 16, 32, scales, Ls, 1, sw);
    uint8_t ls[QK_K / 16];
    for (int j = 0; j < QK_K / 16; ++j)
        ls[j] = (uint8_t)Ls[j];
    q3k_pack_scales(ls, y->scales);
    y->d = moe_f32_to_f16(d_block);
    q3k_finish(x, y, L);
}

/* ------------------------------------------------------- Q4_K and Q5_K */

/* The fields Q4_K and Q5_K share (same order, same offsets). */
typedef struct k45_head {
    uint16_t *d, *dmin;
    uint8_t *scales;
} k45_head;

/* Packs 8 6-bit scales and mins: s < 4 in the low 6 bits of scales[s] and
 * scales[s+4]; s >= 4 as nibbles of scales[s+4] with the top 2 bits in the
 * high bits of scales[s-4] (scale) and scales[s] (min). */
static void k45_pack_scales(const uint8_t *ls, const uint8_t *lm, uint8_t *q) {
    for (int j = 0; j < QK_K / 32; ++j) {
        if (j < 4) {
            q[j] = ls[j];
            q[j + 4] = lm[j];
        } else {
            q[j + 4] = (uint8_t)((ls[j] & 0xF) | ((lm[j] & 0xF) << 4));
            q[j - 4] |= (uint8_t)((ls[j] >> 4) << 6);
            q[j - 0] |= (uint8_t)((lm[j] >> 4) << 6);
        }
    }
}

static void k45_scale_min(int j, const uint8_t *q, uint8_t *sc, uint8_t *m) {
    if (j < 4) {
        *sc = q[j] & 63;
        *m = q[j + 4] & 63;
    } else {
        *sc = (uint8_t)((q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4));
        *m = (uint8_t)((q[j + 4] >> 4) | ((q[j - 0] >> 6) << 4));
    }
}

/* Re-quantizes to [0, nmax] against the stored fp16 d/dmin and 6-bit pairs. */
static void k45_requant(const float *x, k45_head h, int nmax, uint8_t *L) {
    const float d_all = moe_f16_to_f32(*h.d), m_all = moe_f16_to_f32(*h.dmin);
    for (int j = 0; j < QK_K / 32; ++j) {
        uint8_t sc, m;
        k45_scale_min(j, h.scales, &sc, &m);
        const float d = d_all * sc;
        if (!d)
            continue;
        const float dm = m_all * m;
        for (int ii = 0; ii < 32; ++ii) {
            int l = moe_nearest_int((x[32 * j + ii] + dm) / d);
            L[32 * j + ii] = (uint8_t)imax(0, imin(nmax, l));
        }
    }
}

/* Reference search: per 32 values weights av_x + |x| with av_x the RMS of
 * those 32; scales and mins to 6 bits linearly by their maxima. */
static void k45_ref(const moe_kq_search *search, const float *x, k45_head h, int nmax,
                    float rmin, float rdelta, int nstep, uint8_t *L) {
    const moe_qkx_params params = {
        .n = 32, .nmax = nmax, .rmin = rmin, .rdelta = rdelta, .nstep = nstep};
    float weights[QK_K], mins[QK_K / 32], scales[QK_K / 32];
    for (int j = 0; j < QK_K / 32; ++j) {
        float sum_x2 = 0;
        for (int l = 0; l < 32; ++l)
            sum_x2 += x[32 * j + l] * x[32 * j + l];
        float av_x = sqrtf(sum_x2 / 32);
        for (int l = 0; l < 32; ++l)
            weights[32 * j + l] = av_x + fabsf(x[32 * j + l]);
    }
    search->qkx(&params, x, weights, QK_K / 32, L, scales, mins);
    float max_scale = 0, max_min = 0;
    for (int j = 0; j < QK_K / 32; ++j) {
        if (scales[j] > max_scale)
            max_scale = scales[j];
        if (mins[j] > max_min)
            max_min = mins[j];
    }
    float inv_scale = max_scale > 0 ? 63.f / max_scale : 0.f;
    float inv_min = max_min > 0 ? 63.f / max_min : 0.f;
    uint8_t ls[QK_K / 32], lm[QK_K / 32];
    for (int j = 0; j < QK_K / 32; ++j) {
        /* narrowed to uint8 before the clamp, as llama.cpp does */
        ls[j] = (uint8_t)moe_nearest_int(inv_scale * scales[j]);
        lm[j] = (uint8_t)moe_nearest_int(inv_min * mins[j]);
        if (ls[j] > 63)
            ls[j] = 63;
        if (lm[j] > 63)
            lm[j] = 63;
    }
    k45_pack_scales(ls, lm, h.scales);
    *h.d = moe_f32_to_f16(max_scale / 63.f);
    *h.dmin = moe_f32_to_f16(max_min / 63.f);
    k45_requant(x, h, nmax, L);
}

/* Importance-weighted search: weights qw * sqrt(sigma2 + x^2) with sigma2
 * twice the mean square of the super-block; scales and mins to 6 bits by
 * make_qp_quants weighted with each sub-block's total weight. */
static void k45_imat(const moe_kq_search *search, const float *x, k45_head h, int nmax,
                     const float *qw, uint8_t *L) {
    const moe_qkx_params params = {
        .n = 32, .nmax = nmax, .rmin = -0.9f, .rdelta = 0.05f, .nstep = 36, .qkx3 = true};
    uint8_t Ls[QK_K / 32], Lm[QK_K / 32];
    float weights[QK_K], sw[QK_K / 32], mins[QK_K / 32], scales[QK_K / 32];
    float sum_x2 = 0;
    for (int l = 0; l < QK_K; ++l)
        sum_x2 += x[l] * x[l];
    float sigma2 = 2 * sum_x2 / QK_K;
    for (int j = 0; j < QK_K / 32; ++j) {
        float *wj = weights + 32 * j;
        for (int l = 0; l < 32; ++l)
            wj[l] = qw[32 * j + l] * sqrtf(sigma2 + x[32 * j + l] * x[32 * j + l]);
        float sumw = 0;
        for (int l = 0; l < 32; ++l)
            sumw += wj[l];
        sw[j] = sumw;
    }
    search->qkx(&params, x, weights, QK_K / 32, L, scales, mins);
    float d_block = moe_make_qp_quants(QK_K / 32, 63, scales, Ls, sw);
    float m_block = moe_make_qp_quants(QK_K / 32, 63, mins, Lm, sw);
    k45_pack_scales(Ls, Lm, h.scales);
    *h.d = moe_f32_to_f16(d_block);
    *h.dmin = moe_f32_to_f16(m_block);
    k45_requant(x, h, nmax, L);
}

/* Q4_K data: 64-element chunk k is qs[32k..32k+31], low nibble element
 * 64k + l, high nibble element 64k + 32 + l. */
static void q4k_pack(const uint8_t *L, block_q4_K *y) {
    uint8_t *q = y->qs;
    for (int j = 0; j < QK_K; j += 64) {
        for (int l = 0; l < 32; ++l)
            q[l] = (uint8_t)(L[j + l] | (L[j + l + 32] << 4));
        q += 32;
    }
}

/* Q5_K data: as Q4_K for the low 4 bits; the 5th bit of element 64k + l is
 * bit 2k of qh[l], of element 64k + 32 + l bit 2k + 1. */
static void q5k_pack(const uint8_t *L, block_q5_K *y) {
    uint8_t *ql = y->qs;
    memset(y->qh, 0, sizeof y->qh);
    uint8_t m1 = 1, m2 = 2;
    for (int n = 0; n < QK_K; n += 64) {
        for (int j = 0; j < 32; ++j) {
            int l1 = L[n + j], l2 = L[n + j + 32];
            if (l1 > 15) {
                l1 -= 16;
                y->qh[j] |= m1;
            }
            if (l2 > 15) {
                l2 -= 16;
                y->qh[j] |= m2;
            }
            ql[j] = (uint8_t)(l1 | (l2 << 4));
        }
        m1 = (uint8_t)(m1 << 2);
        m2 = (uint8_t)(m2 << 2);
        ql += 32;
    }
}

static void q4k_block(const moe_kq_search *search, const float *x, block_q4_K *y,
                      const float *qw) {
    uint8_t L[QK_K];
    k45_head h = {&y->d, &y->dmin, y->scales};
    if (qw)
        k45_imat(search, x, h, 15, qw, L);
    else
        k45_ref(search, x, h, 15, -1.f, 0.1f, 20, L);
    q4k_pack(L, y);
}

static void q5k_block(const moe_kq_search *search, const float *x, block_q5_K *y,
                      const float *qw) {
    uint8_t L[QK_K];
    k45_head h = {&y->d, &y->dmin, y->scales};
    if (qw)
        k45_imat(search, x, h, 31, qw, L);
    else
        k45_ref(search, x, h, 31, -0.5f, 0.1f, 15, L);
    q5k_pack(L, y);
}

/* ---------------------------------------------------------------- Q6_K */

/* Reference and importance-weighted Q6_K differ only in the weights of the
 * sub-block search: x^2 (qw NULL) or qw itself (the sqrt(sigma2 + x^2) form
 * is not used for Q6_K in llama.cpp). */
static void q6k_block(const moe_kq_search *search, const float *x, block_q6_K *y,
                      const float *qw) {
    int8_t L[QK_K];
    float scales[QK_K / 16];
    float max_scale = 0, max_abs_scale = 0;
    search->qx1(16, 32, x, qw, QK_K / 16, L, scales);
    for (int ib = 0; ib < QK_K / 16; ++ib) {
        const float abs_scale = fabsf(scales[ib]);
        if (abs_scale > max_abs_scale) {
            max_abs_scale = abs_scale;
            max_scale = scales[ib];
        }
    }
    if (max_abs_scale < MOE_GROUP_MAX_EPS) {
        memset(y, 0, sizeof *y);
        y->d = moe_f32_to_f16(0.f);
        return;
    }
    float iscale = -128.f / max_scale;
    y->d = moe_f32_to_f16(1 / iscale);
    for (int ib = 0; ib < QK_K / 16; ++ib)
        y->scales[ib] = (int8_t)imin(127, moe_nearest_int(iscale * scales[ib]));
    const float d_all = moe_f16_to_f32(y->d);
    for (int j = 0; j < QK_K / 16; ++j) {
        float d = d_all * y->scales[j];
        if (!d)
            continue;
        for (int ii = 0; ii < 16; ++ii) {
            int l = moe_nearest_int(x[16 * j + ii] / d);
            L[16 * j + ii] = (int8_t)(imax(-32, imin(31, l)) + 32);
        }
    }
    /* per 128: ql[l] = low nibbles of elements l (lo) and l+64 (hi),
     * ql[l+32] of l+32 and l+96; qh[l] = their top 2 bits, 2 bits each */
    uint8_t *ql = y->ql, *qh = y->qh;
    const uint8_t *Lu = (const uint8_t *)L;
    for (int j = 0; j < QK_K; j += 128) {
        for (int l = 0; l < 32; ++l) {
            const uint8_t *e = Lu + j + l;
            ql[l + 0] = (uint8_t)((e[0] & 0xF) | ((e[64] & 0xF) << 4));
            ql[l + 32] = (uint8_t)((e[32] & 0xF) | ((e[96] & 0xF) << 4));
            qh[l] = (uint8_t)((e[0] >> 4) | ((e[32] >> 4) << 2) | ((e[64] >> 4) << 4) |
                              ((e[96] >> 4) << 6));
        }
        ql += 64;
        qh += 32;
    }
}

/* ------------------------------------------------------ row entry points */

static void q2k_block(const moe_kq_search *search, const float *x, block_q2_K *y,
                      const float *qw) {
    if (qw)
        q2k_block_imat(search, x, y, qw);
    else
        q2k_block_ref(search, x, y);
}

/* Q3_K without an imatrix searches by make_q3_quants' coordinate descent,
 * which has no lane version; with one, by make_qx_quants. */
static void q3k_block(const moe_kq_search *search, const float *x, block_q3_K *y,
                      const float *qw) {
    if (qw)
        q3k_block_imat(search, x, y, qw);
    else
        q3k_block_ref(x, y);
}

/* Every super-block is independent; with an imatrix, block i of each row
 * uses columns [256 i, 256 i + 256) of it. */
#define KQUANT_ROWS(name, block_t, block_fn)                                            \
    MOE_QUANT_FN(name) {                                                                \
        const int64_t nb = n_per_row / QK_K;                                            \
        const moe_kq_search *search = moe_kq_search_active();                           \
        block_t *y = dst;                                                               \
        for (int64_t r = 0; r < nrow; ++r)                                              \
            for (int64_t i = 0; i < nb; ++i)                                            \
                block_fn(search, src + r * n_per_row + i * QK_K, &y[r * nb + i],        \
                         imatrix ? imatrix + i * QK_K : NULL);                          \
    }

KQUANT_ROWS(q2_K, block_q2_K, q2k_block)
KQUANT_ROWS(q3_K, block_q3_K, q3k_block)
KQUANT_ROWS(q4_K, block_q4_K, q4k_block)
KQUANT_ROWS(q5_K, block_q5_K, q5k_block)
KQUANT_ROWS(q6_K, block_q6_K, q6k_block)
