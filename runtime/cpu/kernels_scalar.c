/* The scalar level: quantized-activation kernels in plain C. They state the
 * arithmetic every SIMD level implements (exact integer dot products per
 * block, scaled by the weight's and the activation's block scales) and are
 * the reference those levels are tested against.
 *
 * Each weight type is read through an "unpack" that turns row k of one block
 * (group) into small signed integers and scales; interleaved types unpack the
 * same values from their interleaved bytes (formats/quant/dequant_interleaved.c has
 * the layouts), so a plain and an interleaved tensor give identical results. */
#include <math.h>
#include <stddef.h>
#include <string.h>

#include "formats/gguf/cursor.h"
#include "formats/quant/fp16.h"
#include "formats/quant/quant_blocks.h"
#include "runtime/cpu/kernels.h"
#include "runtime/cpu_ops.h"

static float f16_at(const uint8_t *p, int i) { return moe_f16_to_f32(moe_load_le16(p + 2 * i)); }

/* ---- activations --------------------------------------------------------------------------- */

/* llama.cpp's quantize_row_q8_0 (x86) for one block: d = amax/127 kept as
 * fp16, q = the nearest integer (ties to even) of x * (127/amax) (not
 * x * (1/d), its generic C reference: the two multipliers differ in the
 * last bit for some amax, which flips a rounding now and then), and Q8_1's
 * s = fp16(d * sum q) from the unrounded d. */
void moe_act_quantize_q8_block(const float *x, moe_act_q8 *b) {
    float amax = 0.0f;
    for (int j = 0; j < 32; j++)
        amax = fmaxf(amax, fabsf(x[j]));
    const float d = amax / 127.0f, id = amax != 0.0f ? 127.0f / amax : 0.0f;
    int32_t sum = 0;
    for (int j = 0; j < 32; j++) {
        b->qs[j] = (int8_t)nearbyintf(x[j] * id);
        sum += b->qs[j];
    }
    b->d = moe_f16_to_f32(moe_f32_to_f16(d));
    b->sum = sum;
    b->s = moe_f16_to_f32(moe_f32_to_f16(d * (float)sum)); /* Q8_1's s */
}

void moe_act_quantize_q8_ref(const float *x, void *dst, int64_t n) {
    moe_act_q8 *b = dst;
    for (int64_t i = 0; i < n / 32; i++)
        moe_act_quantize_q8_block(x + 32 * i, &b[i]);
}

/* llama.cpp's F16 and BF16 vec_dot types: each value rounded to nearest even. */
void moe_act_quantize_f16_ref(const float *x, void *dst, int64_t n) {
    uint8_t *o = dst;
    for (int64_t i = 0; i < n; i++) {
        const uint16_t h = moe_f32_to_f16(x[i]);
        o[2 * i] = (uint8_t)h, o[2 * i + 1] = (uint8_t)(h >> 8);
    }
}

void moe_act_quantize_bf16_ref(const float *x, void *dst, int64_t n) {
    uint8_t *o = dst;
    for (int64_t i = 0; i < n; i++) {
        const uint16_t h = moe_f32_to_bf16(x[i]);
        o[2 * i] = (uint8_t)h, o[2 * i + 1] = (uint8_t)(h >> 8);
    }
}

/* llama.cpp's quantize_row_q8_K: scale from the value of largest magnitude
 * (its sign kept), q = nearest integer of -127/max * x, capped at 127. */
void moe_act_quantize_q8k_ref(const float *x, void *dst, int64_t n) {
    moe_act_q8k *b = dst;
    for (int64_t i = 0; i < n / 256; i++, x += 256) {
        float amax = 0.0f, max = 0.0f;
        for (int j = 0; j < 256; j++)
            if (fabsf(x[j]) > amax) {
                amax = fabsf(x[j]);
                max = x[j];
            }
        memset(&b[i], 0, sizeof b[i]);
        if (amax == 0.0f)
            continue;
        const float iscale = -127.0f / max;
        for (int j = 0; j < 256; j++) {
            const int v = (int)nearbyintf(iscale * x[j]);
            b[i].qs[j] = (int8_t)(v > 127 ? 127 : v);
        }
        for (int j = 0; j < 16; j++) {
            int s = 0;
            for (int l = 0; l < 16; l++)
                s += b[i].qs[16 * j + l];
            b[i].bsums[j] = (int16_t)s;
        }
        b[i].d = 1.0f / iscale;
    }
}

/* ---- 32-value blocks ------------------------------------------------------------------------- */

/* Row k of one block (group): q[32] signed values and the scale. */
typedef float (*unpack32_fn)(const uint8_t *blk, int k, int8_t q[32]);

static float unpack_q4_0(const uint8_t *b, int k, int8_t q[32]) {
    (void)k;
    const uint8_t *qs = b + offsetof(block_q4_0, qs);
    for (int j = 0; j < 16; j++) {
        q[j] = (int8_t)((qs[j] & 15) - 8);
        q[j + 16] = (int8_t)((qs[j] >> 4) - 8);
    }
    return f16_at(b, 0);
}

/* Q4_1's values unsigned (0..15); its min enters through the activation's s. */
static float unpack_q4_1(const uint8_t *b, int k, int8_t q[32]) {
    (void)k;
    const uint8_t *qs = b + offsetof(block_q4_1, qs);
    for (int j = 0; j < 16; j++) {
        q[j] = (int8_t)(qs[j] & 15);
        q[j + 16] = (int8_t)(qs[j] >> 4);
    }
    return f16_at(b + offsetof(block_q4_1, d), 0);
}

/* Q5_0/Q5_1: the nibbles of qs plus bit j of the little-endian word qh as bit 4
 * of value j; Q5_0 centres them (-16), Q5_1 keeps them unsigned (0..31). */
static void q5_values(const uint8_t *qh4, const uint8_t *qs, int offset, int8_t q[32]) {
    const uint32_t qh = moe_load_le32(qh4);
    for (int j = 0; j < 16; j++) {
        q[j] = (int8_t)(((qs[j] & 15) | ((qh >> j) & 1) << 4) - offset);
        q[j + 16] = (int8_t)(((qs[j] >> 4) | ((qh >> (j + 16)) & 1) << 4) - offset);
    }
}

static float unpack_q5_0(const uint8_t *b, int k, int8_t q[32]) {
    (void)k;
    q5_values(b + offsetof(block_q5_0, qh), b + offsetof(block_q5_0, qs), 16, q);
    return f16_at(b + offsetof(block_q5_0, d), 0);
}

static float unpack_q5_1(const uint8_t *b, int k, int8_t q[32]) {
    (void)k;
    q5_values(b + offsetof(block_q5_1, qh), b + offsetof(block_q5_1, qs), 0, q);
    return f16_at(b + offsetof(block_q5_1, d), 0);
}

static float unpack_q8_0(const uint8_t *b, int k, int8_t q[32]) {
    (void)k;
    memcpy(q, b + offsetof(block_q8_0, qs), 32);
    return f16_at(b, 0);
}

static float unpack_iq4_nl(const uint8_t *b, int k, int8_t q[32]) {
    (void)k;
    const uint8_t *qs = b + offsetof(block_iq4_nl, qs);
    for (int j = 0; j < 16; j++) {
        q[j] = moe_iq4nl_values[qs[j] & 15];
        q[j + 16] = moe_iq4nl_values[qs[j] >> 4];
    }
    return f16_at(b, 0);
}

/* Q4_0_R8: element e of row k is nibble e/16 of qs[32·(j/4) + 4k + j%4], j = e%16. */
static float unpack_q4_0_r8(const uint8_t *b, int k, int8_t q[32]) {
    const uint8_t *qs = b + offsetof(block_q4_0_r8, qs);
    for (int e = 0; e < 32; e++) {
        const int j = e & 15;
        q[e] = (int8_t)(((qs[32 * (j >> 2) + 4 * k + (j & 3)] >> 4 * (e >> 4)) & 15) - 8);
    }
    return f16_at(b + offsetof(block_q4_0_r8, d), k);
}

/* Q8_0_R8: element e of row k is qs[128·(e/16) + 32·((e%16)/4) + 4k + e%4]. */
static float unpack_q8_0_r8(const uint8_t *b, int k, int8_t q[32]) {
    const uint8_t *qs = b + offsetof(block_q8_0_r8, qs);
    for (int e = 0; e < 32; e++)
        q[e] = (int8_t)qs[128 * (e >> 4) + 32 * ((e & 15) >> 2) + 4 * k + (e & 3)];
    return f16_at(b + offsetof(block_q8_0_r8, d), k);
}

/* IQ4_NL_R4: 64 bytes in 4 chunks of 16; element e of row k is nibble (e/8)%2
 * of byte 16·chunk(e) + 4k + e%4, chunk(e) = (e/16)%2 + 2·((e/4)%2). */
static float unpack_iq4_nl_r4(const uint8_t *b, int k, int8_t q[32]) {
    const uint8_t *qs = b + offsetof(block_iq4_nl_r4, qs);
    for (int e = 0; e < 32; e++) {
        const int chunk = ((e >> 4) & 1) | ((e >> 1) & 2);
        q[e] = moe_iq4nl_values[(qs[16 * chunk + 4 * k + (e & 3)] >> 4 * ((e >> 3) & 1)) & 15];
    }
    return f16_at(b + offsetof(block_iq4_nl_r4, d), k);
}

/* The 64-byte chunk group of IQ4_NL_R4 (and Q5_0_R4, Q4_K_R4..Q6_K_R4 per
 * 32 values): element e of row k is nibble (e/8)%2 of byte 16·chunk(e) + 4k +
 * e%4, chunk(e) = (e/16)%2 + 2·((e/4)%2). */
static int r4_nibble(const uint8_t *qs64, int k, int e) {
    const int chunk = ((e >> 4) & 1) | ((e >> 1) & 2);
    return (qs64[16 * chunk + 4 * k + (e & 3)] >> 4 * ((e >> 3) & 1)) & 15;
}

/* Q5_0_R4: the 5th bit of element e is bit chunk(e) + 4·((e/8)%2) of qh[4k + e%4]. */
static float unpack_q5_0_r4(const uint8_t *b, int k, int8_t q[32]) {
    const uint8_t *qs = b + offsetof(block_q5_0_r4, qs), *qh = b + offsetof(block_q5_0_r4, qh);
    for (int e = 0; e < 32; e++) {
        const int bit = (((e >> 4) & 1) | ((e >> 1) & 2)) + 4 * ((e >> 3) & 1);
        q[e] = (int8_t)((r4_nibble(qs, k, e) | ((qh[4 * k + (e & 3)] >> bit) & 1) << 4) - 16);
    }
    return f16_at(b + offsetof(block_q5_0_r4, d), k);
}

/* min_off: the byte offset of the block's fp16 min (Q4_1, Q5_1), or -1. As
 * llama.cpp's vec_dot with Q8_1: block value d·q + m against activation
 * a.d·qa gives d·a.d·Σq·qa + m·a.s. */
static void mm_blocks32(const uint8_t *w, uint64_t row_bytes, int64_t n_in, int64_t r0, int64_t r1,
                        const uint8_t *act, uint64_t act_stride, int64_t T, float *y, int64_t ldy,
                        int R, uint64_t group_bytes, unpack32_fn unpack, int min_off) {
    const int64_t nb = n_in / 32;
    int8_t q[32];
    for (int64_t r = r0; r < r1; r += R) {
        const uint8_t *grp = w + (uint64_t)r * row_bytes;
        for (int k = 0; k < R; k++)
            for (int64_t t = 0; t < T; t++) {
                const moe_act_q8 *a = (const moe_act_q8 *)(act + (uint64_t)t * act_stride);
                float acc = 0.0f;
                for (int64_t ib = 0; ib < nb; ib++) {
                    const uint8_t *blk = grp + (uint64_t)ib * group_bytes;
                    const float d = unpack(blk, k, q);
                    int32_t isum = 0;
                    for (int j = 0; j < 32; j++)
                        isum += (int32_t)q[j] * a[ib].qs[j];
                    acc += (float)isum * (d * a[ib].d);
                    if (min_off >= 0)
                        acc += f16_at(blk + min_off, 0) * a[ib].s;
                }
                y[t * ldy + r + k] = acc;
            }
    }
}

#define MM32(name, R, blk, unpack, min_off)                                                      \
    static void name(const uint8_t *w, uint64_t rb, int64_t n, int64_t r0, int64_t r1,          \
                     const uint8_t *act, uint64_t as, int64_t T, float *y, int64_t ldy) {       \
        mm_blocks32(w, rb, n, r0, r1, act, as, T, y, ldy, R, sizeof(blk), unpack, min_off);     \
    }
MM32(mm_q4_0, 1, block_q4_0, unpack_q4_0, -1)
MM32(mm_q4_1, 1, block_q4_1, unpack_q4_1, (int)offsetof(block_q4_1, m))
MM32(mm_q5_0, 1, block_q5_0, unpack_q5_0, -1)
MM32(mm_q5_1, 1, block_q5_1, unpack_q5_1, (int)offsetof(block_q5_1, m))
MM32(mm_q8_0, 1, block_q8_0, unpack_q8_0, -1)
MM32(mm_iq4_nl, 1, block_iq4_nl, unpack_iq4_nl, -1)
MM32(mm_q4_0_r8, 8, block_q4_0_r8, unpack_q4_0_r8, -1)
MM32(mm_q8_0_r8, 8, block_q8_0_r8, unpack_q8_0_r8, -1)
MM32(mm_iq4_nl_r4, 4, block_iq4_nl_r4, unpack_iq4_nl_r4, -1)
MM32(mm_q5_0_r4, 4, block_q5_0_r4, unpack_q5_0_r4, -1)

/* ---- 256-value super-blocks ------------------------------------------------------------------ */

/* Row k of one super-block: q[256] values, per-16 integer scales sc[16] and
 * mins mn[16] (a min of 0 where the type has none), and the two float
 * scales: value i = d·sc[i/16]·q[i] − dmin·mn[i/16]. */
typedef void (*unpack256_fn)(const uint8_t *blk, int k, int8_t q[256], int16_t sc[16],
                             int16_t mn[16], float *d, float *dmin);

static void k4_scale_min(const uint8_t *s, int j, int *sc, int *m) {
    if (j < 4) {
        *sc = s[j] & 63;
        *m = s[j + 4] & 63;
    } else {
        *sc = (s[j + 4] & 0x0f) | ((s[j - 4] >> 6) << 4);
        *m = (s[j + 4] >> 4) | ((s[j] >> 6) << 4);
    }
}

static void unpack_q4_K(const uint8_t *b, int k, int8_t q[256], int16_t sc[16], int16_t mn[16],
                        float *d, float *dmin) {
    (void)k;
    const uint8_t *qs = b + offsetof(block_q4_K, qs);
    for (int j = 0; j < 8; j++) {
        int s, m;
        k4_scale_min(b + offsetof(block_q4_K, scales), j, &s, &m);
        sc[2 * j] = sc[2 * j + 1] = (int16_t)s;
        mn[2 * j] = mn[2 * j + 1] = (int16_t)m;
        for (int l = 0; l < 32; l++)
            q[32 * j + l] = (int8_t)((qs[32 * (j / 2) + l] >> 4 * (j % 2)) & 15);
    }
    *d = f16_at(b + offsetof(block_q4_K, d), 0);
    *dmin = f16_at(b + offsetof(block_q4_K, dmin), 0);
}

/* Q5_K: Q4_K's nibbles, scales and mins, plus bit j of qh[l] as bit 4 of
 * value 32j + l (sub-block j). */
static void unpack_q5_K(const uint8_t *b, int k, int8_t q[256], int16_t sc[16], int16_t mn[16],
                        float *d, float *dmin) {
    (void)k;
    const uint8_t *qs = b + offsetof(block_q5_K, qs), *qh = b + offsetof(block_q5_K, qh);
    for (int j = 0; j < 8; j++) {
        int s, m;
        k4_scale_min(b + offsetof(block_q5_K, scales), j, &s, &m);
        sc[2 * j] = sc[2 * j + 1] = (int16_t)s;
        mn[2 * j] = mn[2 * j + 1] = (int16_t)m;
        for (int l = 0; l < 32; l++)
            q[32 * j + l] = (int8_t)(((qs[32 * (j / 2) + l] >> 4 * (j % 2)) & 15) |
                                     ((qh[l] >> j) & 1) << 4);
    }
    *d = f16_at(b + offsetof(block_q5_K, d), 0);
    *dmin = f16_at(b + offsetof(block_q5_K, dmin), 0);
}

/* The 2-bit plane of Q2_K and Q3_K: value 128n + 32j + l is bits 2j..2j+1 of
 * qs[32n + l]. */
static int k2_code(const uint8_t *qs, int e) {
    return (qs[32 * (e / 128) + e % 32] >> 2 * ((e % 128) / 32)) & 3;
}

/* Q3_K: value = code − 4 unless hmask's bit (value / 32) of byte value % 32
 * is set; signed 6-bit scales (offset 32) packed in 12 bytes. */
static void unpack_q3_K(const uint8_t *b, int k, int8_t q[256], int16_t sc[16], int16_t mn[16],
                        float *d, float *dmin) {
    (void)k;
    const uint8_t *hm = b + offsetof(block_q3_K, hmask), *qs = b + offsetof(block_q3_K, qs);
    const uint8_t *p = b + offsetof(block_q3_K, scales);
    for (int g = 0; g < 16; g++) {
        const int low = g < 8 ? p[g] & 15 : p[g - 8] >> 4;
        sc[g] = (int16_t)((low | ((p[8 + g % 4] >> 2 * (g / 4)) & 3) << 4) - 32);
        mn[g] = 0;
    }
    for (int e = 0; e < 256; e++)
        q[e] = (int8_t)(k2_code(qs, e) - ((hm[e % 32] >> (e / 32)) & 1 ? 0 : 4));
    *d = f16_at(b + offsetof(block_q3_K, d), 0);
    *dmin = 0.0f;
}

/* Q2_K: codes 0..3, a 4-bit scale and a 4-bit min per 16 values. */
static void unpack_q2_K(const uint8_t *b, int k, int8_t q[256], int16_t sc[16], int16_t mn[16],
                        float *d, float *dmin) {
    (void)k;
    const uint8_t *s = b + offsetof(block_q2_K, scales), *qs = b + offsetof(block_q2_K, qs);
    for (int g = 0; g < 16; g++) {
        sc[g] = s[g] & 15;
        mn[g] = s[g] >> 4;
    }
    for (int e = 0; e < 256; e++)
        q[e] = (int8_t)k2_code(qs, e);
    *d = f16_at(b + offsetof(block_q2_K, d), 0);
    *dmin = f16_at(b + offsetof(block_q2_K, dmin), 0);
}

static void unpack_q6_K(const uint8_t *b, int k, int8_t q[256], int16_t sc[16], int16_t mn[16],
                        float *d, float *dmin) {
    (void)k;
    const uint8_t *ql = b + offsetof(block_q6_K, ql), *qh = b + offsetof(block_q6_K, qh);
    const int8_t *s = (const int8_t *)(b + offsetof(block_q6_K, scales));
    for (int n = 0; n < 2; n++)
        for (int l = 0; l < 32; l++) {
            const uint8_t lo0 = ql[64 * n + l], lo1 = ql[64 * n + l + 32], hi = qh[32 * n + l];
            q[128 * n + l] = (int8_t)(((lo0 & 15) | (hi & 3) << 4) - 32);
            q[128 * n + l + 32] = (int8_t)(((lo1 & 15) | ((hi >> 2) & 3) << 4) - 32);
            q[128 * n + l + 64] = (int8_t)(((lo0 >> 4) | ((hi >> 4) & 3) << 4) - 32);
            q[128 * n + l + 96] = (int8_t)(((lo1 >> 4) | ((hi >> 6) & 3) << 4) - 32);
        }
    for (int j = 0; j < 16; j++) {
        sc[j] = s[j];
        mn[j] = 0;
    }
    *d = f16_at(b + offsetof(block_q6_K, d), 0);
    *dmin = 0.0f;
}

static void unpack_iq4_xs(const uint8_t *b, int k, int8_t q[256], int16_t sc[16], int16_t mn[16],
                          float *d, float *dmin) {
    (void)k;
    const uint16_t sh = moe_load_le16(b + offsetof(block_iq4_xs, scales_h));
    const uint8_t *sl = b + offsetof(block_iq4_xs, scales_l), *qs = b + offsetof(block_iq4_xs, qs);
    for (int j = 0; j < 8; j++) {
        const int ls = ((sl[j / 2] >> 4 * (j % 2)) & 15) | ((sh >> 2 * j) & 3) << 4;
        sc[2 * j] = sc[2 * j + 1] = (int16_t)(ls - 32);
        mn[2 * j] = mn[2 * j + 1] = 0;
        for (int l = 0; l < 16; l++) {
            q[32 * j + l] = moe_iq4nl_values[qs[16 * j + l] & 15];
            q[32 * j + l + 16] = moe_iq4nl_values[qs[16 * j + l] >> 4];
        }
    }
    *d = f16_at(b + offsetof(block_iq4_xs, d), 0);
    *dmin = 0.0f;
}

/* Q4_K_R4: d[0..3] the rows' scales, d[4..7] their mins' scales; the 6-bit
 * scale and min of sub-block ib, row k (number s = 4ib + k) are split over
 * scales_l[s] (low 4 bits each) and nibble s/16 of scales_h[s % 16] (2 bits
 * each); sub-block ib's values sit in the 64-byte chunk group at qs + 64ib
 * (as IQ4_NL_R4's). */
static void unpack_q4_K_r4(const uint8_t *b, int k, int8_t q[256], int16_t sc[16],
                           int16_t mn[16], float *d, float *dmin) {
    const uint8_t *sl = b + offsetof(block_q4_K_r4, scales_l);
    const uint8_t *sh = b + offsetof(block_q4_K_r4, scales_h);
    const uint8_t *qs = b + offsetof(block_q4_K_r4, qs);
    for (int ib = 0; ib < 8; ib++) {
        const int s = 4 * ib + k, h = (sh[s % 16] >> 4 * (s / 16)) & 15;
        sc[2 * ib] = sc[2 * ib + 1] = (int16_t)((sl[s] & 15) | (h & 3) << 4);
        mn[2 * ib] = mn[2 * ib + 1] = (int16_t)((sl[s] >> 4) | (h >> 2) << 4);
        for (int e = 0; e < 32; e++) {
            const int chunk = ((e >> 4) & 1) | ((e >> 1) & 2);
            q[32 * ib + e] = (int8_t)((qs[64 * ib + 16 * chunk + 4 * k + (e & 3)] >> 4 * ((e >> 3) & 1)) & 15);
        }
    }
    *d = f16_at(b + offsetof(block_q4_K_r4, d), k);
    *dmin = f16_at(b + offsetof(block_q4_K_r4, d), 4 + k);
}

/* Q5_K_R4: Q4_K_R4's scales, mins and nibbles, plus the 5th bit of element
 * e at bit slot(e) of qh[16ib + 4k + e%4], where the column's 8 bits hold
 * elements (i, i+8, i+4, i+12, i+16, i+24, i+20, i+28): slot(e) = 4·((e/16)%2)
 * + 2·((e/4)%2) + (e/8)%2. */
static int r4_hi_slot(int e) { return 4 * ((e >> 4) & 1) + 2 * ((e >> 2) & 1) + ((e >> 3) & 1); }

static void unpack_q5_K_r4(const uint8_t *b, int k, int8_t q[256], int16_t sc[16],
                           int16_t mn[16], float *d, float *dmin) {
    unpack_q4_K_r4(b, k, q, sc, mn, d, dmin); /* the same offsets up to qh */
    const uint8_t *qh = b + offsetof(block_q5_K_r4, qh), *qs = b + offsetof(block_q5_K_r4, qs);
    for (int ib = 0; ib < 8; ib++)
        for (int e = 0; e < 32; e++)
            q[32 * ib + e] = (int8_t)(r4_nibble(qs + 64 * ib, k, e) |
                                      ((qh[16 * ib + 4 * k + (e & 3)] >> r4_hi_slot(e)) & 1) << 4);
}

/* Q6_K_R4: low nibbles in ql as Q4_K_R4's qs; the high 2 bits of element e
 * are field slot(e)%4 of qh[32ib + 16·(e/16) + 4k + e%4]; the int8 scale of
 * the 16 values 32ib + 16h.. of row k is scales[8ib + 4h + k]. */
static void unpack_q6_K_r4(const uint8_t *b, int k, int8_t q[256], int16_t sc[16],
                           int16_t mn[16], float *d, float *dmin) {
    const int8_t *s = (const int8_t *)(b + offsetof(block_q6_K_r4, scales));
    const uint8_t *qh = b + offsetof(block_q6_K_r4, qh), *ql = b + offsetof(block_q6_K_r4, ql);
    for (int ib = 0; ib < 8; ib++) {
        for (int h = 0; h < 2; h++) {
            sc[2 * ib + h] = s[8 * ib + 4 * h + k];
            mn[2 * ib + h] = 0;
        }
        for (int e = 0; e < 32; e++) {
            const int hi = (qh[32 * ib + 16 * (e >> 4) + 4 * k + (e & 3)] >> 2 * (r4_hi_slot(e) & 3)) & 3;
            q[32 * ib + e] = (int8_t)((r4_nibble(ql + 64 * ib, k, e) | hi << 4) - 32);
        }
    }
    *d = f16_at(b + offsetof(block_q6_K_r4, d), k);
    *dmin = 0.0f;
}

/* Q3_K_R4 / IQ4_XS_R8: 6-bit scale code number s, low 4 bits in nibble s/32
 * of scales_l[s % 32], high 2 bits in field s/16 of scales_h[s % 16]. */
static int r_scale6(const uint8_t *sl, const uint8_t *sh, int s) {
    return ((sl[s % 32] >> 4 * (s / 32)) & 15) | ((sh[s % 16] >> 2 * (s / 16)) & 3) << 4;
}

/* IQ4_XS_R8: element e of row k, 32-block ib, is nibble (e/4)%2 of
 * qs[128ib + 32·(e/8) + 4k + e%4]; its scale code is number 8ib + k. */
static void unpack_iq4_xs_r8(const uint8_t *b, int k, int8_t q[256], int16_t sc[16],
                             int16_t mn[16], float *d, float *dmin) {
    const uint8_t *sl = b + offsetof(block_iq4_xs_r8, scales_l);
    const uint8_t *sh = b + offsetof(block_iq4_xs_r8, scales_h);
    const uint8_t *qs = b + offsetof(block_iq4_xs_r8, qs);
    for (int ib = 0; ib < 8; ib++) {
        sc[2 * ib] = sc[2 * ib + 1] = (int16_t)(r_scale6(sl, sh, 8 * ib + k) - 32);
        mn[2 * ib] = mn[2 * ib + 1] = 0;
        for (int e = 0; e < 32; e++)
            q[32 * ib + e] = moe_iq4nl_values[(qs[128 * ib + 32 * (e >> 3) + 4 * k + (e & 3)] >>
                                               4 * ((e >> 2) & 1)) & 15];
    }
    *d = f16_at(b + offsetof(block_iq4_xs_r8, d), k);
    *dmin = 0.0f;
}

/* Q2_K_R4 / Q3_K_R4 2-bit plane: element e of 32-block ib, row k, is field
 * (e/4)%4 of qs[32ib + 16·(e/16) + 4k + e%4]. */
static int r4_code2(const uint8_t *qs, int ib, int k, int e) {
    return (qs[32 * ib + 16 * (e >> 4) + 4 * k + (e & 3)] >> 2 * ((e >> 2) & 3)) & 3;
}

/* Q3_K_R4: high bit of element e at bit e/4 of qh[16ib + 4k + e%4] (set: no
 * −4); the scale of the 16 values 32ib + 16h.. is code number 8ib + 4h + k. */
static void unpack_q3_K_r4(const uint8_t *b, int k, int8_t q[256], int16_t sc[16],
                           int16_t mn[16], float *d, float *dmin) {
    const uint8_t *sl = b + offsetof(block_q3_K_r4, scales_l);
    const uint8_t *sh = b + offsetof(block_q3_K_r4, scales_h);
    const uint8_t *qh = b + offsetof(block_q3_K_r4, qh), *qs = b + offsetof(block_q3_K_r4, qs);
    for (int ib = 0; ib < 8; ib++) {
        for (int h = 0; h < 2; h++) {
            sc[2 * ib + h] = (int16_t)(r_scale6(sl, sh, 8 * ib + 4 * h + k) - 32);
            mn[2 * ib + h] = 0;
        }
        for (int e = 0; e < 32; e++) {
            const int hb = (qh[16 * ib + 4 * k + (e & 3)] >> (e >> 2)) & 1;
            q[32 * ib + e] = (int8_t)((r4_code2(qs, ib, k, e) | hb << 2) - 4);
        }
    }
    *d = f16_at(b + offsetof(block_q3_K_r4, d), k);
    *dmin = 0.0f;
}

/* Q2_K_R4: the 16 values 32ib + 16h.. of row k take byte scales[4(2ib + h) + k]
 * (scale in the low nibble, min in the high); d[4 + k] is the mins' scale. */
static void unpack_q2_K_r4(const uint8_t *b, int k, int8_t q[256], int16_t sc[16],
                           int16_t mn[16], float *d, float *dmin) {
    const uint8_t *s = b + offsetof(block_q2_K_r4, scales), *qs = b + offsetof(block_q2_K_r4, qs);
    for (int g = 0; g < 16; g++) {
        sc[g] = s[4 * g + k] & 15;
        mn[g] = s[4 * g + k] >> 4;
    }
    for (int ib = 0; ib < 8; ib++)
        for (int e = 0; e < 32; e++)
            q[32 * ib + e] = (int8_t)r4_code2(qs, ib, k, e);
    *d = f16_at(b + offsetof(block_q2_K_r4, d), k);
    *dmin = f16_at(b + offsetof(block_q2_K_r4, d), 4 + k);
}

static void mm_blocks256(const uint8_t *w, uint64_t row_bytes, int64_t n_in, int64_t r0,
                         int64_t r1, const uint8_t *act, uint64_t act_stride, int64_t T, float *y,
                         int64_t ldy, int R, uint64_t group_bytes, unpack256_fn unpack) {
    const int64_t nb = n_in / 256;
    int8_t q[256];
    int16_t sc[16], mn[16];
    for (int64_t r = r0; r < r1; r += R) {
        const uint8_t *grp = w + (uint64_t)r * row_bytes;
        for (int k = 0; k < R; k++)
            for (int64_t t = 0; t < T; t++) {
                const moe_act_q8k *a = (const moe_act_q8k *)(act + (uint64_t)t * act_stride);
                float acc = 0.0f;
                for (int64_t ib = 0; ib < nb; ib++) {
                    float d, dmin;
                    unpack(grp + (uint64_t)ib * group_bytes, k, q, sc, mn, &d, &dmin);
                    int32_t isum = 0, msum = 0;
                    for (int g = 0; g < 16; g++) {
                        int32_t s = 0;
                        for (int l = 0; l < 16; l++)
                            s += (int32_t)q[16 * g + l] * a[ib].qs[16 * g + l];
                        isum += s * sc[g];
                        msum += (int32_t)a[ib].bsums[g] * mn[g];
                    }
                    acc += a[ib].d * (d * (float)isum - dmin * (float)msum);
                }
                y[t * ldy + r + k] = acc;
            }
    }
}

#define MM256(name, R, blk, unpack)                                                              \
    static void name(const uint8_t *w, uint64_t rb, int64_t n, int64_t r0, int64_t r1,          \
                     const uint8_t *act, uint64_t as, int64_t T, float *y, int64_t ldy) {       \
        mm_blocks256(w, rb, n, r0, r1, act, as, T, y, ldy, R, sizeof(blk), unpack);             \
    }
MM256(mm_q2_K, 1, block_q2_K, unpack_q2_K)
MM256(mm_q3_K, 1, block_q3_K, unpack_q3_K)
MM256(mm_q4_K, 1, block_q4_K, unpack_q4_K)
MM256(mm_q5_K, 1, block_q5_K, unpack_q5_K)
MM256(mm_q6_K, 1, block_q6_K, unpack_q6_K)
MM256(mm_iq4_xs, 1, block_iq4_xs, unpack_iq4_xs)
MM256(mm_q4_K_r4, 4, block_q4_K_r4, unpack_q4_K_r4)
MM256(mm_q5_K_r4, 4, block_q5_K_r4, unpack_q5_K_r4)
MM256(mm_q6_K_r4, 4, block_q6_K_r4, unpack_q6_K_r4)
MM256(mm_iq4_xs_r8, 8, block_iq4_xs_r8, unpack_iq4_xs_r8)
MM256(mm_q3_K_r4, 4, block_q3_K_r4, unpack_q3_K_r4)
MM256(mm_q2_K_r4, 4, block_q2_K_r4, unpack_q2_K_r4)

/* ---- 16-bit floats --------------------------------------------------------------------------- */

/* F16 and BF16 keep the reference path's bits (README: float models are
 * bit-identical at every level): the activations are rounded to the weight's
 * type as it rounds them, and each row is summed in its float orders, the
 * ones cpu_ops.c's dot_gemm_scalar and dot_vec_scalar state (one 16-lane
 * fused accumulator for batched dense products as tinyBLAS; four for vec_dot,
 * folded, plus a tail in double). What the kernels save is the dequantized
 * row buffer, and F16 experts get the fused expert step. */
typedef float (*half_fn)(uint16_t h);

static inline float half_at(const uint8_t *p, int64_t i, half_fn widen) {
    return widen(moe_load_le16(p + 2 * i));
}

/* n a multiple of 16 (the kernels take whole 32-blocks) */
static float dot_half_gemm(const uint8_t *w, const uint8_t *a, int64_t n, half_fn widen) {
    float acc[16] = {0};
    for (int64_t i = 0; i < n; i += 16)
        for (int l = 0; l < 16; l++)
            acc[l] = fmaf(half_at(w, i + l, widen), half_at(a, i + l, widen), acc[l]);
    return moe_reduce16(acc);
}

static float dot_half_vec(const uint8_t *w, const uint8_t *a, int64_t n, half_fn widen) {
    float acc[4][16] = {{0}};
    const int64_t np = n & ~(int64_t)63;
    for (int64_t i = 0; i < np; i += 64)
        for (int j = 0; j < 4; j++)
            for (int l = 0; l < 16; l++) {
                const int64_t k = i + 16 * j + l;
                acc[j][l] = fmaf(half_at(w, k, widen), half_at(a, k, widen), acc[j][l]);
            }
    double sum = moe_reduce64((const float *)acc);
    for (int64_t i = np; i < n; i++)
        sum += (double)(half_at(w, i, widen) * half_at(a, i, widen));
    return (float)sum;
}

static void mm_half(const uint8_t *w, uint64_t row_bytes, int64_t n_in, int64_t r0, int64_t r1,
                    const uint8_t *act, uint64_t act_stride, int64_t T, float *y, int64_t ldy,
                    half_fn widen, bool vec) {
    for (int64_t r = r0; r < r1; r++)
        for (int64_t t = 0; t < T; t++) {
            const uint8_t *row = w + (uint64_t)r * row_bytes, *a = act + (uint64_t)t * act_stride;
            y[t * ldy + r] = vec ? dot_half_vec(row, a, n_in, widen) : dot_half_gemm(row, a, n_in, widen);
        }
}

#define MMHALF(name, widen, vec)                                                                 \
    static void name(const uint8_t *w, uint64_t rb, int64_t n, int64_t r0, int64_t r1,          \
                     const uint8_t *act, uint64_t as, int64_t T, float *y, int64_t ldy) {       \
        mm_half(w, rb, n, r0, r1, act, as, T, y, ldy, widen, vec);                              \
    }
MMHALF(mm_f16, moe_f16_to_f32, false)
MMHALF(mm_f16_vec, moe_f16_to_f32, true)
MMHALF(mm_bf16, moe_bf16_to_f32, false)
MMHALF(mm_bf16_vec, moe_bf16_to_f32, true)

static const moe_cpu_kernel scalar_kernels[] = {
    {.type = MOE_TYPE_Q4_0, .act = MOE_ACT_Q8, .rows = 1, .mm = mm_q4_0},
    {.type = MOE_TYPE_Q4_1, .act = MOE_ACT_Q8, .rows = 1, .mm = mm_q4_1},
    {.type = MOE_TYPE_Q5_0, .act = MOE_ACT_Q8, .rows = 1, .mm = mm_q5_0},
    {.type = MOE_TYPE_Q5_1, .act = MOE_ACT_Q8, .rows = 1, .mm = mm_q5_1},
    {.type = MOE_TYPE_Q8_0, .act = MOE_ACT_Q8, .rows = 1, .mm = mm_q8_0},
    {.type = MOE_TYPE_IQ4_NL, .act = MOE_ACT_Q8, .rows = 1, .mm = mm_iq4_nl},
    {.type = MOE_TYPE_Q4_0_R8, .act = MOE_ACT_Q8, .rows = 8, .mm = mm_q4_0_r8},
    {.type = MOE_TYPE_Q8_0_R8, .act = MOE_ACT_Q8, .rows = 8, .mm = mm_q8_0_r8},
    {.type = MOE_TYPE_IQ4_NL_R4, .act = MOE_ACT_Q8, .rows = 4, .mm = mm_iq4_nl_r4},
    {.type = MOE_TYPE_Q5_0_R4, .act = MOE_ACT_Q8, .rows = 4, .mm = mm_q5_0_r4},
    {.type = MOE_TYPE_Q2_K, .act = MOE_ACT_Q8K, .rows = 1, .mm = mm_q2_K},
    {.type = MOE_TYPE_Q3_K, .act = MOE_ACT_Q8K, .rows = 1, .mm = mm_q3_K},
    {.type = MOE_TYPE_Q4_K, .act = MOE_ACT_Q8K, .rows = 1, .mm = mm_q4_K},
    {.type = MOE_TYPE_Q5_K, .act = MOE_ACT_Q8K, .rows = 1, .mm = mm_q5_K},
    {.type = MOE_TYPE_Q6_K, .act = MOE_ACT_Q8K, .rows = 1, .mm = mm_q6_K},
    {.type = MOE_TYPE_IQ4_XS, .act = MOE_ACT_Q8K, .rows = 1, .mm = mm_iq4_xs},
    {.type = MOE_TYPE_Q4_K_R4, .act = MOE_ACT_Q8K, .rows = 4, .mm = mm_q4_K_r4},
    {.type = MOE_TYPE_Q5_K_R4, .act = MOE_ACT_Q8K, .rows = 4, .mm = mm_q5_K_r4},
    {.type = MOE_TYPE_Q6_K_R4, .act = MOE_ACT_Q8K, .rows = 4, .mm = mm_q6_K_r4},
    {.type = MOE_TYPE_IQ4_XS_R8, .act = MOE_ACT_Q8K, .rows = 8, .mm = mm_iq4_xs_r8},
    {.type = MOE_TYPE_Q3_K_R4, .act = MOE_ACT_Q8K, .rows = 4, .mm = mm_q3_K_r4},
    {.type = MOE_TYPE_Q2_K_R4, .act = MOE_ACT_Q8K, .rows = 4, .mm = mm_q2_K_r4},
    {.type = MOE_TYPE_F16, .act = MOE_ACT_F16, .rows = 1, .mm = mm_f16, .mm_vec = mm_f16_vec},
    {.type = MOE_TYPE_BF16, .act = MOE_ACT_BF16, .rows = 1, .mm = mm_bf16, .mm_vec = mm_bf16_vec},
    {.type = MOE_TYPE_F32},
};

static const moe_cpu_kernel_table scalar_table = {
    .level = MOE_CPU_SCALAR,
    .fops = NULL, /* the scalar float helpers (cpu_ops.c) */
    .quantize = {NULL, moe_act_quantize_q8_ref, moe_act_quantize_q8k_ref, moe_act_quantize_f16_ref,
                 moe_act_quantize_bf16_ref},
    .kernels = scalar_kernels,
};

const moe_cpu_kernel_table *moe_cpu_kernels_scalar(void) { return &scalar_table; }
