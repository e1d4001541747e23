/* test_interleave — row-interleaved layouts (formats/quant/interleave.h) and their
 * dequantizers (formats/quant/dequant_interleaved.c).
 *
 * For every supported interleaved type, on random plain rows (fixed, printed
 * seed; fp16 scales replaced by finite small halves):
 *   - deinterleave(interleave(x)) == x, and interleave(deinterleave(y)) == y for
 *     random interleaved bytes y;
 *   - every byte of the interleaved block agrees with the spec tables
 *     (../shared/spec/quant.md §2), restated here element by element from the
 *     plain bytes (§1) — a third reading, independent of interleave.c;
 *   - dequantizing the interleaved tensor gives bit-identical floats to
 *     dequantizing its plain twin (dequant_interleaved.c vs the plain decoders);
 * at ne0 = 1 and 3 blocks (2 super-blocks) and nrows = R and 3R, on misaligned
 * buffers. Plus argument errors, the type mapping and the row-size invariant.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "formats/gguf/cursor.h"
#include "formats/quant/fp16.h"
#include "formats/quant/interleave.h"
#include "formats/quant/quant_blocks.h"
#include "formats/quant/types.h"
#include "test_util.h"

static uint64_t rng_state;
static uint64_t rng_next(void) { /* splitmix64 */
    uint64_t z = (rng_state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* ---- plain element codes, read per spec §1 ------------------------------------------- */

static int nib32(const uint8_t *qs, int e) { return e < 16 ? qs[e] & 15 : qs[e - 16] >> 4; }
static int le16(const uint8_t *p) { return moe_load_le16(p); }

static int q5_0_code(const uint8_t *b, int e) {
    return nib32(b + offsetof(block_q5_0, qs), e) |
           (int)((moe_load_le32(b + offsetof(block_q5_0, qh)) >> e) & 1) << 4;
}
static int k_low2(const uint8_t *qs, int e) {
    return (qs[32 * (e / 128) + e % 32] >> 2 * ((e % 128) / 32)) & 3;
}
static int q3_K_code(const uint8_t *b, int e) { /* low2 | hmask bit << 2 */
    const uint8_t *hm = b + offsetof(block_q3_K, hmask);
    return k_low2(b + offsetof(block_q3_K, qs), e) |
           ((hm[e % 32] >> (4 * (e / 128) + (e % 128) / 32)) & 1) << 2;
}
static int q3_K_scale(const uint8_t *b, int s) { /* the stored 6-bit code */
    const uint8_t *sc = b + offsetof(block_q3_K, scales);
    int lo = s < 8 ? sc[s] & 15 : sc[s - 8] >> 4;
    return lo | ((sc[8 + s % 4] >> 2 * (s / 4)) & 3) << 4;
}
static void k4_scale_min(const uint8_t *q, int j, int *sc, int *m) {
    if (j < 4) {
        *sc = q[j] & 63;
        *m = q[j + 4] & 63;
    } else {
        *sc = (q[j + 4] & 15) | (q[j - 4] >> 6) << 4;
        *m = (q[j + 4] >> 4) | (q[j] >> 6) << 4;
    }
}
static int q4_K_code(const uint8_t *qs, int e) { /* qs of Q4_K or Q5_K */
    return (qs[32 * (e / 64) + e % 32] >> 4 * ((e % 64) / 32)) & 15;
}
static int q5_K_code(const uint8_t *b, int e) {
    const uint8_t *qh = b + offsetof(block_q5_K, qh);
    return q4_K_code(b + offsetof(block_q5_K, qs), e) |
           ((qh[e % 32] >> (2 * (e / 64) + (e % 64) / 32)) & 1) << 4;
}
static int q6_K_code(const uint8_t *b, int e) {
    const uint8_t *ql = b + offsetof(block_q6_K, ql), *qh = b + offsetof(block_q6_K, qh);
    int n = e / 128, m = (e % 128) / 32, l = e % 32;
    return ((ql[64 * n + 32 * (m % 2) + l] >> 4 * (m / 2)) & 15) |
           ((qh[32 * n + l] >> 2 * m) & 3) << 4;
}
static int iq4_xs_code(const uint8_t *b, int e) {
    return nib32(b + offsetof(block_iq4_xs, qs) + 16 * (e / 32), e % 32);
}
static int iq4_xs_scale(const uint8_t *b, int ib) {
    int sl = b[offsetof(block_iq4_xs, scales_l) + ib / 2] >> 4 * (ib % 2) & 15;
    return sl | ((le16(b + offsetof(block_iq4_xs, scales_h)) >> 2 * ib) & 3) << 4;
}

/* ---- spec §2 checks: rows[k] is row k's plain block, ilv the interleaved block --------
 * Each returns the number of mismatching fields. */

/* §2.1 table: chunk c holds (element a | element b << 4) at 16c + 4k + i. */
static const int NL_PAIR[4][2] = {{0, 8}, {16, 24}, {4, 12}, {20, 28}};

static int check_nl_chunks(const uint8_t *qs64, int k, int (*code)(const uint8_t *, int),
                           const uint8_t *row, int e0) {
    int bad = 0;
    for (int c = 0; c < 4; c++)
        for (int i = 0; i < 4; i++) {
            int byte = qs64[16 * c + 4 * k + i];
            bad += (byte & 15) != (code(row, e0 + NL_PAIR[c][0] + i) & 15);
            bad += (byte >> 4) != (code(row, e0 + NL_PAIR[c][1] + i) & 15);
        }
    return bad;
}
static int d_mismatch(const uint8_t *ilv, int slot, const uint8_t *row, size_t off) {
    return le16(ilv + 2 * slot) != le16(row + off);
}

static int iq4_nl_code(const uint8_t *b, int e) { return nib32(b + offsetof(block_iq4_nl, qs), e); }
static int spec_iq4_nl_r4(const uint8_t *const *rows, const uint8_t *ilv) {
    int bad = 0;
    for (int k = 0; k < 4; k++) {
        bad += d_mismatch(ilv, k, rows[k], offsetof(block_iq4_nl, d));
        bad += check_nl_chunks(ilv + offsetof(block_iq4_nl_r4, qs), k, iq4_nl_code, rows[k], 0);
    }
    return bad;
}
/* §2.2: qs[32l + 4k + i] = byte 4l + i of row k's Q4_0 block. */
static int spec_q4_0_r8(const uint8_t *const *rows, const uint8_t *ilv) {
    int bad = 0;
    for (int k = 0; k < 8; k++) {
        bad += d_mismatch(ilv, k, rows[k], offsetof(block_q4_0, d));
        for (int l = 0; l < 4; l++)
            for (int i = 0; i < 4; i++)
                bad += ilv[offsetof(block_q4_0_r8, qs) + 32 * l + 4 * k + i] !=
                       rows[k][offsetof(block_q4_0, qs) + 4 * l + i];
    }
    return bad;
}
/* §2.3: qs[32l + 4k + i] = element 4l + i; qs[128 + 32l + 4k + i] = element 16 + 4l + i. */
static int spec_q8_0_r8(const uint8_t *const *rows, const uint8_t *ilv) {
    int bad = 0;
    const uint8_t *qs = ilv + offsetof(block_q8_0_r8, qs);
    for (int k = 0; k < 8; k++) {
        const uint8_t *q = rows[k] + offsetof(block_q8_0, qs);
        bad += d_mismatch(ilv, k, rows[k], offsetof(block_q8_0, d));
        for (int l = 0; l < 4; l++)
            for (int i = 0; i < 4; i++) {
                bad += qs[32 * l + 4 * k + i] != q[4 * l + i];
                bad += qs[128 + 32 * l + 4 * k + i] != q[16 + 4 * l + i];
            }
    }
    return bad;
}
/* §2.4: qh[4k + i] bit l = 5th bit of a(l), bit l + 4 = 5th bit of b(l). */
static int spec_q5_0_r4(const uint8_t *const *rows, const uint8_t *ilv) {
    int bad = 0;
    const uint8_t *qh = ilv + offsetof(block_q5_0_r4, qh);
    for (int k = 0; k < 4; k++) {
        bad += d_mismatch(ilv, k, rows[k], offsetof(block_q5_0, d));
        bad += check_nl_chunks(ilv + offsetof(block_q5_0_r4, qs), k, q5_0_code, rows[k], 0);
        for (int l = 0; l < 4; l++)
            for (int i = 0; i < 4; i++) {
                bad += ((qh[4 * k + i] >> l) & 1) != q5_0_code(rows[k], NL_PAIR[l][0] + i) >> 4;
                bad += ((qh[4 * k + i] >> (l + 4)) & 1) !=
                       q5_0_code(rows[k], NL_PAIR[l][1] + i) >> 4;
            }
    }
    return bad;
}
/* §2.5 scales: s = 4ib + k; scales_l[s] = sc & 15 | (m & 15) << 4; the 4-bit
 * (sc >> 4) | (m >> 4) << 2 in nibble s/16 of scales_h[s % 16]. */
static int check_k4_scales(const uint8_t *ilv, const uint8_t *const *rows, size_t sc_off) {
    int bad = 0;
    const uint8_t *sl = ilv + offsetof(block_q4_K_r4, scales_l);
    const uint8_t *sh = ilv + offsetof(block_q4_K_r4, scales_h);
    for (int k = 0; k < 4; k++) {
        bad += d_mismatch(ilv, k, rows[k], offsetof(block_q4_K, d));
        bad += d_mismatch(ilv, 4 + k, rows[k], offsetof(block_q4_K, dmin));
        for (int ib = 0; ib < 8; ib++) {
            int sc, m, s = 4 * ib + k;
            k4_scale_min(rows[k] + sc_off, ib, &sc, &m);
            bad += sl[s] != ((sc & 15) | (m & 15) << 4);
            bad += ((sh[s % 16] >> 4 * (s / 16)) & 15) != ((sc >> 4) | (m >> 4) << 2);
        }
    }
    return bad;
}
static int q4_K_elem(const uint8_t *b, int e) { return q4_K_code(b + offsetof(block_q4_K, qs), e); }
static int spec_q4_K_r4(const uint8_t *const *rows, const uint8_t *ilv) {
    int bad = check_k4_scales(ilv, rows, offsetof(block_q4_K, scales));
    for (int k = 0; k < 4; k++)
        for (int ib = 0; ib < 8; ib++)
            bad += check_nl_chunks(ilv + offsetof(block_q4_K_r4, qs) + 64 * ib, k, q4_K_elem,
                                   rows[k], 32 * ib);
    return bad;
}
/* §2.6: qh[16ib + 4k + i] bits 0..7 = 5th bits of i, i+8, i+4, i+12, i+16, i+24, i+20, i+28. */
static const int HI8[8] = {0, 8, 4, 12, 16, 24, 20, 28};
static int spec_q5_K_r4(const uint8_t *const *rows, const uint8_t *ilv) {
    int bad = check_k4_scales(ilv, rows, offsetof(block_q5_K, scales));
    const uint8_t *qh = ilv + offsetof(block_q5_K_r4, qh);
    for (int k = 0; k < 4; k++)
        for (int ib = 0; ib < 8; ib++) {
            bad += check_nl_chunks(ilv + offsetof(block_q5_K_r4, qs) + 64 * ib, k, q5_K_code,
                                   rows[k], 32 * ib);
            for (int i = 0; i < 4; i++)
                for (int b = 0; b < 8; b++)
                    bad += ((qh[16 * ib + 4 * k + i] >> b) & 1) !=
                           q5_K_code(rows[k], 32 * ib + i + HI8[b]) >> 4;
        }
    return bad;
}
/* §2.7: scales[8ib + k] = sub-block 2ib, scales[8ib + k + 4] = 2ib + 1; qh
 * [32ib + 4k + i]: 2-bit highs of i, i+8, i+4, i+12; [32ib + 16 + 4k + i] of +16. */
static int spec_q6_K_r4(const uint8_t *const *rows, const uint8_t *ilv) {
    int bad = 0;
    const uint8_t *sc = ilv + offsetof(block_q6_K_r4, scales), *qh = ilv + offsetof(block_q6_K_r4, qh);
    for (int k = 0; k < 4; k++) {
        const uint8_t *psc = rows[k] + offsetof(block_q6_K, scales);
        bad += d_mismatch(ilv, k, rows[k], offsetof(block_q6_K, d));
        for (int ib = 0; ib < 8; ib++) {
            bad += sc[8 * ib + k] != psc[2 * ib];
            bad += sc[8 * ib + k + 4] != psc[2 * ib + 1];
            bad += check_nl_chunks(ilv + offsetof(block_q6_K_r4, ql) + 64 * ib, k, q6_K_code,
                                   rows[k], 32 * ib);
            for (int i = 0; i < 4; i++)
                for (int b = 0; b < 8; b++)
                    bad += ((qh[32 * ib + 16 * (b / 4) + 4 * k + i] >> 2 * (b % 4)) & 3) !=
                           q6_K_code(rows[k], 32 * ib + i + HI8[b]) >> 4;
        }
    }
    return bad;
}
/* §2.8 2-bit plane: qs[32ib + 4k + i] bits 2f = element i + 4f, qs[32ib + 16 + 4k + i]
 * the same for i + 16 + 4f. code() returns the element's code (low 2 bits used). */
static int check_r4_low2(const uint8_t *qs, int k, const uint8_t *row,
                         int (*code)(const uint8_t *, int)) {
    int bad = 0;
    for (int ib = 0; ib < 8; ib++)
        for (int i = 0; i < 4; i++)
            for (int f = 0; f < 4; f++) {
                bad += ((qs[32 * ib + 4 * k + i] >> 2 * f) & 3) !=
                       (code(row, 32 * ib + i + 4 * f) & 3);
                bad += ((qs[32 * ib + 16 + 4 * k + i] >> 2 * f) & 3) !=
                       (code(row, 32 * ib + 16 + i + 4 * f) & 3);
            }
    return bad;
}
static int q2_K_code(const uint8_t *b, int e) { return k_low2(b + offsetof(block_q2_K, qs), e); }
static int spec_q2_K_r4(const uint8_t *const *rows, const uint8_t *ilv) {
    int bad = 0;
    for (int k = 0; k < 4; k++) {
        bad += d_mismatch(ilv, k, rows[k], offsetof(block_q2_K, d));
        bad += d_mismatch(ilv, 4 + k, rows[k], offsetof(block_q2_K, dmin));
        for (int s = 0; s < 16; s++)
            bad += ilv[offsetof(block_q2_K_r4, scales) + 4 * s + k] !=
                   rows[k][offsetof(block_q2_K, scales) + s];
        bad += check_r4_low2(ilv + offsetof(block_q2_K_r4, qs), k, rows[k], q2_K_code);
    }
    return bad;
}
/* §2.8/§2.11 6-bit scale number s: low 4 bits in nibble s/32 of scales_l[s % 32],
 * high 2 bits at bits 2·(s/16) of scales_h[s % 16]. */
static int scale6_bad(const uint8_t *sl, const uint8_t *sh, int s, int want) {
    return ((sl[s % 32] >> 4 * (s / 32)) & 15) != (want & 15) ||
           ((sh[s % 16] >> 2 * (s / 16)) & 3) != want >> 4;
}
static int spec_q3_K_r4(const uint8_t *const *rows, const uint8_t *ilv) {
    int bad = 0;
    const uint8_t *sl = ilv + offsetof(block_q3_K_r4, scales_l);
    const uint8_t *sh = ilv + offsetof(block_q3_K_r4, scales_h);
    const uint8_t *qh = ilv + offsetof(block_q3_K_r4, qh);
    for (int k = 0; k < 4; k++) {
        bad += d_mismatch(ilv, k, rows[k], offsetof(block_q3_K, d));
        bad += check_r4_low2(ilv + offsetof(block_q3_K_r4, qs), k, rows[k], q3_K_code);
        for (int ib = 0; ib < 8; ib++) {
            bad += scale6_bad(sl, sh, 8 * ib + k, q3_K_scale(rows[k], 2 * ib));
            bad += scale6_bad(sl, sh, 8 * ib + k + 4, q3_K_scale(rows[k], 2 * ib + 1));
            for (int i = 0; i < 4; i++)
                for (int b = 0; b < 8; b++) /* bit set exactly where hmask was set */
                    bad += ((qh[16 * ib + 4 * k + i] >> b) & 1) !=
                           q3_K_code(rows[k], 32 * ib + i + 4 * b) >> 2;
        }
    }
    return bad;
}
/* §2.11 table: chunk c holds (i + 8c) | (i + 8c + 4) << 4 at 128ib + 32c + 4k + i. */
static int spec_iq4_xs_r8(const uint8_t *const *rows, const uint8_t *ilv) {
    static const int XS_PAIR[4][2] = {{0, 4}, {8, 12}, {16, 20}, {24, 28}};
    int bad = 0;
    const uint8_t *sl = ilv + offsetof(block_iq4_xs_r8, scales_l);
    const uint8_t *sh = ilv + offsetof(block_iq4_xs_r8, scales_h);
    const uint8_t *qs = ilv + offsetof(block_iq4_xs_r8, qs);
    for (int k = 0; k < 8; k++) {
        bad += d_mismatch(ilv, k, rows[k], offsetof(block_iq4_xs, d));
        for (int ib = 0; ib < 8; ib++) {
            bad += scale6_bad(sl, sh, 8 * ib + k, iq4_xs_scale(rows[k], ib));
            for (int c = 0; c < 4; c++)
                for (int i = 0; i < 4; i++) {
                    int byte = qs[128 * ib + 32 * c + 4 * k + i];
                    bad += (byte & 15) != iq4_xs_code(rows[k], 32 * ib + XS_PAIR[c][0] + i);
                    bad += (byte >> 4) != iq4_xs_code(rows[k], 32 * ib + XS_PAIR[c][1] + i);
                }
        }
    }
    return bad;
}

/* ---- cases ------------------------------------------------------------------------- */

typedef struct tcase {
    moe_type type, base;
    size_t f16[2]; /* offsets of the fp16 fields in the plain block */
    int n_f16;
    int (*spec)(const uint8_t *const *rows, const uint8_t *ilv);
} tcase;

static const tcase cases[] = {
    {MOE_TYPE_Q4_0_R8, MOE_TYPE_Q4_0, {offsetof(block_q4_0, d)}, 1, spec_q4_0_r8},
    {MOE_TYPE_Q5_0_R4, MOE_TYPE_Q5_0, {offsetof(block_q5_0, d)}, 1, spec_q5_0_r4},
    {MOE_TYPE_Q8_0_R8, MOE_TYPE_Q8_0, {offsetof(block_q8_0, d)}, 1, spec_q8_0_r8},
    {MOE_TYPE_IQ4_NL_R4, MOE_TYPE_IQ4_NL, {offsetof(block_iq4_nl, d)}, 1, spec_iq4_nl_r4},
    {MOE_TYPE_Q2_K_R4, MOE_TYPE_Q2_K, {offsetof(block_q2_K, d), offsetof(block_q2_K, dmin)}, 2,
     spec_q2_K_r4},
    {MOE_TYPE_Q3_K_R4, MOE_TYPE_Q3_K, {offsetof(block_q3_K, d)}, 1, spec_q3_K_r4},
    {MOE_TYPE_Q4_K_R4, MOE_TYPE_Q4_K, {offsetof(block_q4_K, d), offsetof(block_q4_K, dmin)}, 2,
     spec_q4_K_r4},
    {MOE_TYPE_Q5_K_R4, MOE_TYPE_Q5_K, {offsetof(block_q5_K, d), offsetof(block_q5_K, dmin)}, 2,
     spec_q5_K_r4},
    {MOE_TYPE_Q6_K_R4, MOE_TYPE_Q6_K, {offsetof(block_q6_K, d)}, 1, spec_q6_K_r4},
    {MOE_TYPE_IQ4_XS_R8, MOE_TYPE_IQ4_XS, {offsetof(block_iq4_xs, d)}, 1, spec_iq4_xs_r8},
};
#define N_CASES (sizeof(cases) / sizeof(cases[0]))

/* Random plain blocks whose fp16 fields are finite: ±[2^-12, 1), some exactly ±0. */
static void fill_plain(const tcase *tc, uint8_t *p, size_t nblocks, size_t bb) {
    for (size_t i = 0; i < nblocks * bb; i++)
        p[i] = (uint8_t)rng_next();
    for (size_t b = 0; b < nblocks; b++)
        for (int f = 0; f < tc->n_f16; f++) {
            uint64_t r = rng_next();
            float v = (float)(r & 0xffff) / 65536.0f / (float)(1u << ((r >> 16) % 12));
            if ((r >> 24) % 16 == 0)
                v = 0.0f;
            moe_store_le16(p + b * bb + tc->f16[f], moe_f32_to_f16((r >> 32) & 1 ? -v : v));
        }
}

static void run_shape(const tcase *tc, int nb, int groups) {
    const moe_type_traits *tr = moe_type_get(tc->type);
    const int R = tr->interleave_rows;
    const int64_t ne0 = nb * tr->block_size, nrows = (int64_t)groups * R;
    const size_t bb = tr->type_size, nbytes = (size_t)nb * (size_t)nrows * bb;
    const char *nm = tr->name;
    /* +1: every buffer misaligned, the code must not care */
    uint8_t *plain = malloc(nbytes + 1), *ilv = malloc(nbytes + 1), *back = malloc(nbytes + 1);
    float *f_ilv = malloc((size_t)(ne0 * nrows) * sizeof(float));
    float *f_plain = malloc((size_t)(ne0 * nrows) * sizeof(float));
    uint8_t *P = plain + 1, *I = ilv + 1, *B = back + 1;
    moe_err err = {0};

    fill_plain(tc, P, (size_t)nb * (size_t)nrows, bb);
    CHECK(moe_interleave_rows(tc->type, P, I, ne0, nrows, &err) == MOE_OK, "%s: %s", nm, err.msg);
    CHECK(moe_deinterleave_rows(tc->type, I, B, ne0, nrows, &err) == MOE_OK, "%s: %s", nm, err.msg);
    CHECK(memcmp(P, B, nbytes) == 0, "%s nb=%d rows=%lld: deinterleave(interleave(x)) != x", nm,
          nb, (long long)nrows);

    int bad = 0;
    for (int g = 0; g < groups; g++)
        for (int ib = 0; ib < nb; ib++) {
            const uint8_t *rows[8];
            for (int k = 0; k < R; k++)
                rows[k] = P + ((size_t)(g * R + k) * (size_t)nb + (size_t)ib) * bb;
            bad += tc->spec(rows, I + ((size_t)g * (size_t)nb + (size_t)ib) * (size_t)R * bb);
        }
    CHECK(bad == 0, "%s nb=%d rows=%lld: %d interleaved fields disagree with the spec", nm, nb,
          (long long)nrows, bad);

    CHECK(moe_dequantize_rows(tc->type, I, f_ilv, ne0, nrows, &err) == MOE_OK, "%s: %s", nm,
          err.msg);
    CHECK(moe_dequantize_rows(tc->base, P, f_plain, ne0, nrows, &err) == MOE_OK, "%s: %s", nm,
          err.msg);
    int64_t first = -1, n = ne0 * nrows, nonfinite = 0, nonzero = 0;
    for (int64_t j = 0; j < n; j++) {
        if (first < 0 && moe_f32_to_bits(f_ilv[j]) != moe_f32_to_bits(f_plain[j]))
            first = j;
        nonfinite += !(f_plain[j] - f_plain[j] == 0.0f);
        nonzero += f_plain[j] != 0.0f;
    }
    CHECK(first < 0, "%s nb=%d rows=%lld: dequant differs from plain at row %lld col %lld: %a vs %a",
          nm, nb, (long long)nrows, (long long)(first / ne0), (long long)(first % ne0),
          first < 0 ? 0.0 : (double)f_ilv[first], first < 0 ? 0.0 : (double)f_plain[first]);
    CHECK(nonfinite == 0 && nonzero > n / 2, "%s: %lld non-finite, %lld nonzero of %lld values", nm,
          (long long)nonfinite, (long long)nonzero, (long long)n);

    /* the other direction: any interleaved bytes survive a round trip */
    for (size_t i = 0; i < nbytes; i++)
        I[i] = (uint8_t)rng_next();
    CHECK(moe_deinterleave_rows(tc->type, I, B, ne0, nrows, &err) == MOE_OK, "%s: %s", nm, err.msg);
    CHECK(moe_interleave_rows(tc->type, B, P, ne0, nrows, &err) == MOE_OK, "%s: %s", nm, err.msg);
    CHECK(memcmp(P, I, nbytes) == 0, "%s nb=%d: interleave(deinterleave(y)) != y", nm, nb);

    free(plain), free(ilv), free(back), free(f_ilv), free(f_plain);
}

/* A hand-built IQ4_NL_R4 block: element e of row k has code (5k + e) % 16.
 * Spot values from the §2.1 table: chunk 2 low nibble = element i + 4. */
static void test_iq4_nl_r4_by_hand(void) {
    uint8_t plain[4 * sizeof(block_iq4_nl)], ilv[sizeof(block_iq4_nl_r4)];
    for (int k = 0; k < 4; k++) {
        uint8_t *b = plain + k * sizeof(block_iq4_nl);
        moe_store_le16(b, (uint16_t)(0x3c00 + k)); /* 1.0, 1.0009765625, ... */
        for (int j = 0; j < 16; j++)
            b[2 + j] = (uint8_t)((5 * k + j) % 16 | ((5 * k + j + 16) % 16) << 4);
    }
    moe_err err = {0};
    CHECK(moe_interleave_rows(MOE_TYPE_IQ4_NL_R4, plain, ilv, 32, 4, &err) == MOE_OK, "%s", err.msg);
    const uint8_t *qs = ilv + offsetof(block_iq4_nl_r4, qs);
    CHECK(le16(ilv + 2 * 3) == 0x3c03, "d[3] = %04x", le16(ilv + 6));
    /* chunk 2 (bytes 32..47), row 1, i = 2: low = element 6, high = element 14 */
    CHECK(qs[32 + 4 * 1 + 2] == ((5 + 6) % 16 | ((5 + 14) % 16) << 4), "c2 k1 i2: %02x",
          qs[32 + 4 + 2]);
    /* chunk 1, row 3, i = 0: elements 16 and 24 */
    CHECK(qs[16 + 12] == ((15 + 16) % 16 | ((15 + 24) % 16) << 4), "c1 k3 i0: %02x", qs[28]);
    /* chunk 3, row 0, i = 3: elements 23 and 31 */
    CHECK(qs[48 + 3] == (23 % 16 | (31 % 16) << 4), "c3 k0 i3: %02x", qs[51]);
    float y[4 * 32];
    CHECK(moe_dequantize_rows(MOE_TYPE_IQ4_NL_R4, ilv, y, 32, 4, &err) == MOE_OK, "%s", err.msg);
    /* row 2 element 9: code (10 + 9) % 16 = 3 → T[3] = −65, d = 1.001953125 */
    CHECK(y[2 * 32 + 9] == -65.0f * moe_f16_to_f32(0x3c02), "y[2][9] = %g", (double)y[73]);
}

static void test_errors(void) {
    uint8_t a[2 * 8 * sizeof(block_q8_0)] = {0}, b[sizeof(a)];
    moe_err err = {0};
    moe_status st = moe_interleave_rows(MOE_TYPE_Q8_0_R8, a, b, 32, 12, &err);
    CHECK(st == MOE_ERR_FORMAT && strstr(err.msg, "12 rows"), "nrows %% R: %d %s", st, err.msg);
    st = moe_deinterleave_rows(MOE_TYPE_Q4_K_R4, a, b, 300, 4, &err);
    CHECK(st == MOE_ERR_FORMAT && strstr(err.msg, "300"), "ne0 %% block: %d %s", st, err.msg);
    st = moe_interleave_rows(MOE_TYPE_Q8_0, a, b, 32, 8, &err);
    CHECK(st == MOE_ERR_USAGE && strstr(err.msg, "q8_0"), "plain type: %d %s", st, err.msg);
    st = moe_interleave_rows((moe_type)4, a, b, 32, 8, &err);
    CHECK(st == MOE_ERR_USAGE, "unknown id: %d %s", st, err.msg);
    st = moe_interleave_rows(MOE_TYPE_IQ2_XXS_R4, a, b, 256, 4, &err);
    CHECK(st == MOE_ERR_UNSUPPORTED && strstr(err.msg, "iq2_xxs_r4"), "other _R4: %d %s", st,
          err.msg);
    st = moe_interleave_rows(MOE_TYPE_Q8_0_R8, a, b, -32, 8, &err);
    CHECK(st == MOE_ERR_USAGE, "negative ne0: %d %s", st, err.msg);
    st = moe_interleave_rows(MOE_TYPE_Q8_0_R8, a, a + sizeof(block_q8_0), 32, 8, &err);
    CHECK(st == MOE_ERR_USAGE && strstr(err.msg, "overlap"), "overlap: %d %s", st, err.msg);
    st = moe_interleave_rows(MOE_TYPE_Q8_0_R8, NULL, b, 32, 8, &err);
    CHECK(st == MOE_ERR_USAGE, "NULL: %d %s", st, err.msg);
    st = moe_interleave_rows(MOE_TYPE_Q8_0_R8, a, b, INT64_MAX / 64 * 32, 8, &err);
    CHECK(st == MOE_ERR_USAGE, "size overflow: %d %s", st, err.msg);
    CHECK(moe_interleave_rows(MOE_TYPE_Q8_0_R8, NULL, NULL, 32, 0, &err) == MOE_OK, "0 rows");
    CHECK(moe_deinterleave_rows(MOE_TYPE_Q8_0_R8, NULL, NULL, 0, 8, &err) == MOE_OK, "0 cols");
    /* a failed call writes nothing */
    memset(b, 0x5a, sizeof(b));
    moe_interleave_rows(MOE_TYPE_Q8_0_R8, a, b, 32, 9, NULL);
    CHECK(b[0] == 0x5a && b[sizeof(b) - 1] == 0x5a, "output touched on failure");
}

static void test_mapping(void) {
    for (size_t i = 0; i < N_CASES; i++) {
        const moe_type_traits *tr = moe_type_get(cases[i].type);
        CHECK(moe_interleave_supported(cases[i].type), "%s supported", tr->name);
        CHECK(moe_interleaved_variant(cases[i].base) == cases[i].type, "variant of %s",
              moe_type_name(cases[i].base));
        CHECK(tr->base == cases[i].base && tr->to_f32, "%s: table base/to_f32", tr->name);
    }
    CHECK(moe_interleaved_variant(MOE_TYPE_Q4_1) == MOE_TYPE_Q4_1, "Q4_1 has none");
    CHECK(moe_interleaved_variant(MOE_TYPE_F16) == MOE_TYPE_F16, "F16 has none here");
    CHECK(moe_interleaved_variant(MOE_TYPE_Q4_K_R4) == MOE_TYPE_Q4_K_R4, "already interleaved");
    int n_supported = 0;
    moe_type id;
    for (size_t i = 0; moe_type_at(i, &id); i++)
        n_supported += moe_interleave_supported(id);
    CHECK(n_supported == (int)N_CASES, "%d types supported", n_supported);
}

/* §2.0: an interleaved tensor has its plain twin's row size, except the Q8_K_R8/R16
 * and Q8_KV_R8 types (and the IQ1_*_R4 types, which have no plain twin). */
static void test_row_sizes(void) {
    moe_type id;
    const moe_type_traits *tr;
    int checked = 0;
    for (size_t i = 0; (tr = moe_type_at(i, &id)); i++) {
        if (!tr->interleave_rows || tr->base == id || id == MOE_TYPE_Q8_K_R8 ||
            id == MOE_TYPE_Q8_K_R16 || id == MOE_TYPE_Q8_KV_R8)
            continue;
        for (int64_t ne0 = 256; ne0 <= 4096; ne0 *= 16) {
            uint64_t a = 0, b = 0;
            moe_err err = {0};
            CHECK(moe_type_row_size(id, ne0, &a, &err) == MOE_OK &&
                      moe_type_row_size(tr->base, ne0, &b, &err) == MOE_OK && a == b,
                  "%s row of %lld: %llu bytes, %s: %llu", tr->name, (long long)ne0,
                  (unsigned long long)a, moe_type_name(tr->base), (unsigned long long)b);
        }
        checked++;
    }
    CHECK(checked >= 20, "only %d interleaved types had their row size checked", checked);
}

int main(int argc, char **argv) {
    uint64_t seed = argc > 1 ? strtoull(argv[1], NULL, 0) : 0x1e4f5eedull;
    printf("seed 0x%llx\n", (unsigned long long)seed);
    rng_state = seed;
    for (size_t i = 0; i < N_CASES; i++) {
        int nb_big = moe_type_get(cases[i].type)->block_size == MOE_QK ? 3 : 2;
        run_shape(&cases[i], 1, 1);
        run_shape(&cases[i], 1, 3);
        run_shape(&cases[i], nb_big, 1);
        run_shape(&cases[i], nb_big, 3);
    }
    test_iq4_nl_r4_by_hand();
    test_errors();
    test_mapping();
    test_row_sizes();
    TEST_DONE();
}
