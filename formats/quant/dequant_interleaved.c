/* dequant_interleaved — scalar reference dequantizers of the row-interleaved
 * types Q4_0_R8, Q5_0_R4, Q8_0_R8, IQ4_NL_R4, Q2_K_R4..Q6_K_R4 and IQ4_XS_R8
 * (../shared/spec/quant.md §2).
 *
 * These read the interleaved bytes directly; they do not call the
 * de-interleaver (interleave.c). The direction is deliberately the opposite of
 * interleave.c's: there each layout is written as "byte → the elements it
 * holds", straight from the spec tables; here each element is located by a
 * closed-form "element → byte, bit" formula derived from the same tables. The
 * test that dequantizing an interleaved tensor gives exactly its plain twin's
 * floats is therefore a check of two independent readings of the spec.
 *
 * Output is row-major like the plain twin: a group of R rows, block position
 * ib, writes elements [ib·block, (ib+1)·block) of each of the R rows.
 *
 * Bit-exactness with the plain dequantizers does not depend on operation order:
 * every product below (fp16 scale × small integers) is exact in f32, so the only
 * rounding is the final subtraction of the types with a min.
 */
#include <stddef.h>
#include <stdint.h>

#include "formats/gguf/cursor.h"
#include "formats/quant/dequant.h"
#include "formats/quant/fp16.h"
#include "formats/quant/quant_blocks.h"

/* Dequantizes one interleaved block: row k of the group goes to y + k·ld. */
typedef void (*ilv_block_fn)(const uint8_t *blk, float *y, int64_t ld);

static void for_each_block(const void *src, float *dst, int64_t ne0, int64_t nrows, int rows,
                           int64_t block, size_t ilv_bytes, ilv_block_fn fn) {
    const uint8_t *p = src;
    const int64_t nb = ne0 / block;
    for (int64_t g = 0; g < nrows / rows; g++)
        for (int64_t ib = 0; ib < nb; ib++, p += ilv_bytes)
            fn(p, dst + g * rows * ne0 + ib * block, ne0);
}

static float f16_at(const uint8_t *p, int i) { return moe_f16_to_f32(moe_load_le16(p + 2 * i)); }

/* Element e (0..31) of row k in the §2.1 64-byte chunk group. The chunk order
 * (i, i+8), (i+16, i+24), (i+4, i+12), (i+20, i+28) means: bit 2 of e picks the
 * upper pair of chunks, bit 4 of e the odd chunk, bit 3 of e the high nibble. */
static int nl_chunk(int e) { return ((e >> 4) & 1) | ((e >> 1) & 2); }
static int nl_byte(int k, int e) { return 16 * nl_chunk(e) + 4 * k + (e & 3); }
static int nl_nibble(const uint8_t *qs64, int k, int e) {
    return (qs64[nl_byte(k, e)] >> 4 * ((e >> 3) & 1)) & 15;
}
/* Q5_K_R4's qh bit / Q6_K_R4's 2-bit field index of element e within its
 * 4-byte column: order (i, i+8, i+4, i+12, i+16, i+24, i+20, i+28). */
static int hi_slot(int e) { return 4 * ((e >> 4) & 1) + 2 * ((e >> 2) & 1) + ((e >> 3) & 1); }

/* Q3_K_R4 / IQ4_XS_R8: 6-bit scale code number s, split over scales_l/scales_h. */
static int scale6(const uint8_t *sl, const uint8_t *sh, int s) {
    return ((sl[s % 32] >> 4 * (s / 32)) & 15) | ((sh[s % 16] >> 2 * (s / 16)) & 3) << 4;
}

/* ---- 32-value blocks ---------------------------------------------------------------- */

/* Q4_0_R8: element e of row k is nibble e/16 of qs[32·(j/4) + 4k + j%4], j = e % 16. */
static void q4_0_r8_block(const uint8_t *b, float *y, int64_t ld) {
    const uint8_t *qs = b + offsetof(block_q4_0_r8, qs);
    for (int k = 0; k < 8; k++) {
        const float d = f16_at(b + offsetof(block_q4_0_r8, d), k);
        for (int e = 0; e < MOE_QK; e++) {
            int j = e & 15;
            int q = (qs[32 * (j >> 2) + 4 * k + (j & 3)] >> 4 * (e >> 4)) & 15;
            y[k * ld + e] = (float)(q - 8) * d;
        }
    }
}

/* Q8_0_R8: element e of row k is qs[128·(e/16) + 32·((e%16)/4) + 4k + e%4]. */
static void q8_0_r8_block(const uint8_t *b, float *y, int64_t ld) {
    const uint8_t *qs = b + offsetof(block_q8_0_r8, qs);
    for (int k = 0; k < 8; k++) {
        const float d = f16_at(b + offsetof(block_q8_0_r8, d), k);
        for (int e = 0; e < MOE_QK; e++) {
            int8_t q = (int8_t)qs[128 * (e >> 4) + 32 * ((e & 15) >> 2) + 4 * k + (e & 3)];
            y[k * ld + e] = (float)q * d;
        }
    }
}

static void iq4_nl_r4_block(const uint8_t *b, float *y, int64_t ld) {
    const uint8_t *qs = b + offsetof(block_iq4_nl_r4, qs);
    for (int k = 0; k < 4; k++) {
        const float d = f16_at(b + offsetof(block_iq4_nl_r4, d), k);
        for (int e = 0; e < MOE_QK; e++)
            y[k * ld + e] = d * (float)moe_iq4nl_values[nl_nibble(qs, k, e)];
    }
}

/* Q5_0_R4: the 5th bit of element e is bit (chunk + 4·high-nibble) of qh[4k + e%4]. */
static void q5_0_r4_block(const uint8_t *b, float *y, int64_t ld) {
    const uint8_t *qs = b + offsetof(block_q5_0_r4, qs);
    const uint8_t *qh = b + offsetof(block_q5_0_r4, qh);
    for (int k = 0; k < 4; k++) {
        const float d = f16_at(b + offsetof(block_q5_0_r4, d), k);
        for (int e = 0; e < MOE_QK; e++) {
            int bit = nl_chunk(e) + 4 * ((e >> 3) & 1);
            int q = nl_nibble(qs, k, e) | ((qh[4 * k + (e & 3)] >> bit) & 1) << 4;
            y[k * ld + e] = (float)(q - 16) * d;
        }
    }
}

/* ---- 256-value super-blocks ----------------------------------------------------------- */

/* Q2_K_R4 / Q3_K_R4 2-bit plane: element e (0..31) of 32-block ib, row k, sits at
 * bits 2·((e/4) % 4) of qs[32ib + 16·(e/16) + 4k + e%4]. */
static int r4_low2(const uint8_t *qs, int ib, int k, int e) {
    return (qs[32 * ib + 16 * (e >> 4) + 4 * k + (e & 3)] >> 2 * ((e >> 2) & 3)) & 3;
}

/* Q2_K_R4: sub-block s = 2ib + e/16 uses byte scales[4s + k] (scale | min << 4). */
static void q2_K_r4_block(const uint8_t *b, float *y, int64_t ld) {
    const uint8_t *scales = b + offsetof(block_q2_K_r4, scales);
    const uint8_t *qs = b + offsetof(block_q2_K_r4, qs);
    for (int k = 0; k < 4; k++) {
        const float d = f16_at(b + offsetof(block_q2_K_r4, d), k);
        const float dmin = f16_at(b + offsetof(block_q2_K_r4, d), 4 + k);
        for (int ib = 0; ib < MOE_QK_K / 32; ib++)
            for (int e = 0; e < 32; e++) {
                uint8_t sc = scales[4 * (2 * ib + (e >> 4)) + k];
                float dl = d * (float)(sc & 15), ml = dmin * (float)(sc >> 4);
                y[k * ld + 32 * ib + e] = dl * (float)r4_low2(qs, ib, k, e) - ml;
            }
    }
}

/* Q3_K_R4: high bit of element e at bit e/4 of qh[16ib + 4k + e%4]; the scale
 * code of sub-block 2ib + e/16 is number 8ib + k + 4·(e/16). */
static void q3_K_r4_block(const uint8_t *b, float *y, int64_t ld) {
    const uint8_t *sl = b + offsetof(block_q3_K_r4, scales_l);
    const uint8_t *sh = b + offsetof(block_q3_K_r4, scales_h);
    const uint8_t *qh = b + offsetof(block_q3_K_r4, qh);
    const uint8_t *qs = b + offsetof(block_q3_K_r4, qs);
    for (int k = 0; k < 4; k++) {
        const float d = f16_at(b + offsetof(block_q3_K_r4, d), k);
        for (int ib = 0; ib < MOE_QK_K / 32; ib++)
            for (int e = 0; e < 32; e++) {
                int h = (qh[16 * ib + 4 * k + (e & 3)] >> (e >> 2)) & 1;
                int v = (r4_low2(qs, ib, k, e) | h << 2) - 4;
                float dl = d * (float)(scale6(sl, sh, 8 * ib + k + 4 * (e >> 4)) - 32);
                y[k * ld + 32 * ib + e] = dl * (float)v;
            }
    }
}

/* Q4_K_R4 / Q5_K_R4 scale and min of row k, 32-block ib: number s = 4ib + k,
 * low nibbles in scales_l[s], high bits in nibble s/16 of scales_h[s % 16]
 * (bits 0-1 the scale's, bits 2-3 the min's). */
static void k_r4_scale_min(const uint8_t *b, int ib, int k, int *sc, int *mn) {
    const uint8_t *sl = b + offsetof(block_q4_K_r4, scales_l);
    const uint8_t *sh = b + offsetof(block_q4_K_r4, scales_h);
    int s = 4 * ib + k, h = (sh[s % 16] >> 4 * (s / 16)) & 15;
    *sc = (sl[s] & 15) | (h & 3) << 4;
    *mn = (sl[s] >> 4) | (h >> 2) << 4;
}

/* qh == NULL: Q4_K_R4. Otherwise Q5_K_R4, whose 5th bit of element e is bit
 * hi_slot(e) of qh[16ib + 4k + e%4]. */
static void k_r4_rows(const uint8_t *b, const uint8_t *qs, const uint8_t *qh, float *y,
                      int64_t ld) {
    for (int k = 0; k < 4; k++) {
        const float d = f16_at(b + offsetof(block_q4_K_r4, d), k);
        const float dmin = f16_at(b + offsetof(block_q4_K_r4, d), 4 + k);
        for (int ib = 0; ib < MOE_QK_K / 32; ib++) {
            int sc, mn;
            k_r4_scale_min(b, ib, k, &sc, &mn);
            float dl = d * (float)sc, ml = dmin * (float)mn;
            for (int e = 0; e < 32; e++) {
                int q = nl_nibble(qs + 64 * ib, k, e);
                if (qh)
                    q |= ((qh[16 * ib + 4 * k + (e & 3)] >> hi_slot(e)) & 1) << 4;
                y[k * ld + 32 * ib + e] = dl * (float)q - ml;
            }
        }
    }
}
static void q4_K_r4_block(const uint8_t *b, float *y, int64_t ld) {
    k_r4_rows(b, b + offsetof(block_q4_K_r4, qs), NULL, y, ld);
}
static void q5_K_r4_block(const uint8_t *b, float *y, int64_t ld) {
    k_r4_rows(b, b + offsetof(block_q5_K_r4, qs), b + offsetof(block_q5_K_r4, qh), y, ld);
}

/* Q6_K_R4: high 2 bits of element e at field hi_slot(e) % 4 of
 * qh[32ib + 16·(e/16) + 4k + e%4]; int8 scale scales[8ib + 4·(e/16) + k]. */
static void q6_K_r4_block(const uint8_t *b, float *y, int64_t ld) {
    const uint8_t *scales = b + offsetof(block_q6_K_r4, scales);
    const uint8_t *qh = b + offsetof(block_q6_K_r4, qh);
    const uint8_t *ql = b + offsetof(block_q6_K_r4, ql);
    for (int k = 0; k < 4; k++) {
        const float d = f16_at(b + offsetof(block_q6_K_r4, d), k);
        for (int ib = 0; ib < MOE_QK_K / 32; ib++)
            for (int e = 0; e < 32; e++) {
                int hi = (qh[32 * ib + 16 * (e >> 4) + 4 * k + (e & 3)] >> 2 * (hi_slot(e) & 3)) & 3;
                int q = nl_nibble(ql + 64 * ib, k, e) | hi << 4;
                float dl = d * (float)(int8_t)scales[8 * ib + 4 * (e >> 4) + k];
                y[k * ld + 32 * ib + e] = dl * (float)(q - 32);
            }
    }
}

/* IQ4_XS_R8: element e of row k, 32-block ib, is nibble (e/4) % 2 of
 * qs[128ib + 32·(e/8) + 4k + e%4]; its scale code is number 8ib + k. */
static void iq4_xs_r8_block(const uint8_t *b, float *y, int64_t ld) {
    const uint8_t *sl = b + offsetof(block_iq4_xs_r8, scales_l);
    const uint8_t *sh = b + offsetof(block_iq4_xs_r8, scales_h);
    const uint8_t *qs = b + offsetof(block_iq4_xs_r8, qs);
    for (int k = 0; k < 8; k++) {
        const float d = f16_at(b + offsetof(block_iq4_xs_r8, d), k);
        for (int ib = 0; ib < MOE_QK_K / 32; ib++) {
            float dl = d * (float)(scale6(sl, sh, 8 * ib + k) - 32);
            for (int e = 0; e < 32; e++) {
                int q = (qs[128 * ib + 32 * (e >> 3) + 4 * k + (e & 3)] >> 4 * ((e >> 2) & 1)) & 15;
                y[k * ld + 32 * ib + e] = dl * (float)moe_iq4nl_values[q];
            }
        }
    }
}

/* ---- moe_to_f32_fn entry points (types.c) ---------------------------------------------- */

#define ENTRY(name_, blk_, rows_, block_)                                                    \
    void moe_dequant_##name_(const void *src, float *dst, int64_t ne0, int64_t nrows) {      \
        for_each_block(src, dst, ne0, nrows, rows_, block_, sizeof(blk_), name_##_block); \
    }

ENTRY(q4_0_r8, block_q4_0_r8, 8, MOE_QK)
ENTRY(q5_0_r4, block_q5_0_r4, 4, MOE_QK)
ENTRY(q8_0_r8, block_q8_0_r8, 8, MOE_QK)
ENTRY(iq4_nl_r4, block_iq4_nl_r4, 4, MOE_QK)
ENTRY(q2_K_r4, block_q2_K_r4, 4, MOE_QK_K)
ENTRY(q3_K_r4, block_q3_K_r4, 4, MOE_QK_K)
ENTRY(q4_K_r4, block_q4_K_r4, 4, MOE_QK_K)
ENTRY(q5_K_r4, block_q5_K_r4, 4, MOE_QK_K)
ENTRY(q6_K_r4, block_q6_K_r4, 4, MOE_QK_K)
ENTRY(iq4_xs_r8, block_iq4_xs_r8, 8, MOE_QK_K)
