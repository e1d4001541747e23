/* interleave — plain ↔ ik_llama.cpp row-interleaved layouts (see interleave.h).
 *
 * Every conversion goes through one intermediate form: a row's block unpacked
 * into small integers in element order (`unpacked`: the fp16 scale bit
 * patterns, the sub-block scale codes, and the full quant code of each
 * element). Each type then needs four small functions — plain block → unpacked,
 * unpacked → plain block, R unpacked rows → interleaved block, and back —
 * written straight from ../shared/spec/quant.md §1 (plain) and §2 (interleaved).
 * Because both layouts are bit permutations of the same fields, the round trip
 * is exact for every byte pattern, including fp16 NaNs and unused codes.
 *
 * Offsets come from offsetof() on the quant_blocks.h structs; multi-byte fields
 * go through explicit little-endian loads/stores, so neither host byte order
 * nor buffer alignment matters.
 */
#include "formats/quant/interleave.h"

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "formats/base/checked.h"
#include "formats/gguf/cursor.h"
#include "formats/quant/quant_blocks.h"

#define MAX_ROWS 8 /* the largest R among the layouts handled here */

typedef struct unpacked {
    uint16_t d, dmin;          /* fp16 bit patterns, never converted */
    uint8_t sc[MOE_QK_K / 16]; /* per sub-block scale code, as stored (see each type) */
    uint8_t mn[MOE_QK_K / 32]; /* Q4_K/Q5_K: 6-bit min code per 32-block */
    uint8_t q[MOE_QK_K];       /* every bit of each element's quant code */
} unpacked;

typedef struct codec {
    moe_type type, base;
    int rows;           /* R of the layout */
    int block;          /* values per row in one block */
    size_t block_bytes; /* bytes of one plain block */
    void (*plain_unpack)(const uint8_t *blk, unpacked *u);
    void (*plain_pack)(const unpacked *u, uint8_t *blk);
    void (*ilv_pack)(const unpacked *u, uint8_t *out); /* u[rows] → one interleaved block */
    void (*ilv_unpack)(const uint8_t *in, unpacked *u);
} codec;

/* ---- shared pieces of the layouts ------------------------------------------------ */

/* Split-half nibble order of a plain 32-value block (spec preamble): byte j
 * holds element j in its low nibble and element j+16 in its high nibble. */
static void split_half_get(const uint8_t *qs, uint8_t *q) {
    for (int j = 0; j < MOE_QK / 2; j++) {
        q[j] = qs[j] & 15;
        q[j + MOE_QK / 2] = qs[j] >> 4;
    }
}
static void split_half_put(const uint8_t *q, uint8_t *qs) {
    for (int j = 0; j < MOE_QK / 2; j++)
        qs[j] = (uint8_t)((q[j] & 15) | (q[j + MOE_QK / 2] & 15) << 4);
}

/* §2.1 chunk pattern, shared by IQ4_NL_R4, Q5_0_R4 and (per 32-block) the
 * K_R4 types. 64 bytes = four 16-byte chunks c; byte 16c + 4k + i holds the low
 * 4 bits of element NL_LO[c] + i of row k (low nibble) and of element
 * NL_LO[c] + i + 8 (high nibble), for rows k = 0..3 and i = 0..3. */
static const uint8_t NL_LO[4] = {0, 16, 4, 20};

static void nl_chunks_put(const unpacked *u, int e0, uint8_t *qs) {
    for (int c = 0; c < 4; c++)
        for (int k = 0; k < 4; k++)
            for (int i = 0; i < 4; i++) {
                int e = e0 + NL_LO[c] + i;
                qs[16 * c + 4 * k + i] = (uint8_t)((u[k].q[e] & 15) | (u[k].q[e + 8] & 15) << 4);
            }
}
/* Sets the low 4 bits of the codes (overwriting them); high bits are OR-ed in later. */
static void nl_chunks_get(const uint8_t *qs, int e0, unpacked *u) {
    for (int c = 0; c < 4; c++)
        for (int k = 0; k < 4; k++)
            for (int i = 0; i < 4; i++) {
                int e = e0 + NL_LO[c] + i;
                u[k].q[e] = qs[16 * c + 4 * k + i] & 15;
                u[k].q[e + 8] = qs[16 * c + 4 * k + i] >> 4;
            }
}

/* Order in which Q5_K_R4 (one bit each) and Q6_K_R4 (two bits each, two bytes)
 * store the high bits of the 8 elements i + HI_ORDER[b] of a 32-block (§2.6, §2.7). */
static const uint8_t HI_ORDER[8] = {0, 8, 4, 12, 16, 24, 20, 28};

/* Q3_K_R4 and IQ4_XS_R8 keep a 6-bit scale code number s (0..63) split in two:
 * low 4 bits in nibble s/32 of scales_l[s % 32], high 2 bits at bit 2·(s/16) of
 * scales_h[s % 16]. Both arrays must be zeroed before the first put. */
static void scale6_put(uint8_t *sl, uint8_t *sh, int s, uint8_t v) {
    sl[s % 32] |= (uint8_t)((v & 15) << 4 * (s / 32));
    sh[s % 16] |= (uint8_t)((v >> 4) << 2 * (s / 16));
}
static uint8_t scale6_get(const uint8_t *sl, const uint8_t *sh, int s) {
    return (uint8_t)(((sl[s % 32] >> 4 * (s / 32)) & 15) | ((sh[s % 16] >> 2 * (s / 16)) & 3) << 4);
}

/* ---- Q4_0 ↔ Q4_0_R8 (§1.2, §2.2) ------------------------------------------------- */

static void q4_0_unpack(const uint8_t *b, unpacked *u) {
    u->d = moe_load_le16(b + offsetof(block_q4_0, d));
    split_half_get(b + offsetof(block_q4_0, qs), u->q);
}
static void q4_0_pack(const unpacked *u, uint8_t *b) {
    moe_store_le16(b + offsetof(block_q4_0, d), u->d);
    split_half_put(u->q, b + offsetof(block_q4_0, qs));
}
/* qs[32l + 4k + i] = byte 4l + i of row k's qs, nibbles untouched (no XOR). */
static void q4_0_r8_pack(const unpacked *u, uint8_t *out) {
    uint8_t *qs = out + offsetof(block_q4_0_r8, qs);
    for (int k = 0; k < 8; k++) {
        moe_store_le16(out + offsetof(block_q4_0_r8, d) + 2 * k, u[k].d);
        uint8_t row[MOE_QK / 2];
        split_half_put(u[k].q, row);
        for (int l = 0; l < 4; l++)
            for (int i = 0; i < 4; i++)
                qs[32 * l + 4 * k + i] = row[4 * l + i];
    }
}
static void q4_0_r8_unpack(const uint8_t *in, unpacked *u) {
    const uint8_t *qs = in + offsetof(block_q4_0_r8, qs);
    for (int k = 0; k < 8; k++) {
        u[k].d = moe_load_le16(in + offsetof(block_q4_0_r8, d) + 2 * k);
        uint8_t row[MOE_QK / 2];
        for (int l = 0; l < 4; l++)
            for (int i = 0; i < 4; i++)
                row[4 * l + i] = qs[32 * l + 4 * k + i];
        split_half_get(row, u[k].q);
    }
}

/* ---- Q8_0 ↔ Q8_0_R8 (§2.3) --------------------------------------------------------- */

static void q8_0_unpack(const uint8_t *b, unpacked *u) {
    u->d = moe_load_le16(b + offsetof(block_q8_0, d));
    memcpy(u->q, b + offsetof(block_q8_0, qs), MOE_QK);
}
static void q8_0_pack(const unpacked *u, uint8_t *b) {
    moe_store_le16(b + offsetof(block_q8_0, d), u->d);
    memcpy(b + offsetof(block_q8_0, qs), u->q, MOE_QK);
}
/* qs[128h + 32l + 4k + i] = row k element 16h + 4l + i: 4-byte groups cycle over
 * the 8 rows, first for elements 0..15, then for 16..31. */
static void q8_0_r8_pack(const unpacked *u, uint8_t *out) {
    uint8_t *qs = out + offsetof(block_q8_0_r8, qs);
    for (int k = 0; k < 8; k++) {
        moe_store_le16(out + offsetof(block_q8_0_r8, d) + 2 * k, u[k].d);
        for (int h = 0; h < 2; h++)
            for (int l = 0; l < 4; l++)
                for (int i = 0; i < 4; i++)
                    qs[128 * h + 32 * l + 4 * k + i] = u[k].q[16 * h + 4 * l + i];
    }
}
static void q8_0_r8_unpack(const uint8_t *in, unpacked *u) {
    const uint8_t *qs = in + offsetof(block_q8_0_r8, qs);
    for (int k = 0; k < 8; k++) {
        u[k].d = moe_load_le16(in + offsetof(block_q8_0_r8, d) + 2 * k);
        for (int h = 0; h < 2; h++)
            for (int l = 0; l < 4; l++)
                for (int i = 0; i < 4; i++)
                    u[k].q[16 * h + 4 * l + i] = qs[128 * h + 32 * l + 4 * k + i];
    }
}

/* ---- IQ4_NL ↔ IQ4_NL_R4 (§1.4, §2.1) ----------------------------------------------- */

static void iq4_nl_unpack(const uint8_t *b, unpacked *u) {
    u->d = moe_load_le16(b + offsetof(block_iq4_nl, d));
    split_half_get(b + offsetof(block_iq4_nl, qs), u->q);
}
static void iq4_nl_pack(const unpacked *u, uint8_t *b) {
    moe_store_le16(b + offsetof(block_iq4_nl, d), u->d);
    split_half_put(u->q, b + offsetof(block_iq4_nl, qs));
}
static void iq4_nl_r4_pack(const unpacked *u, uint8_t *out) {
    for (int k = 0; k < 4; k++)
        moe_store_le16(out + offsetof(block_iq4_nl_r4, d) + 2 * k, u[k].d);
    nl_chunks_put(u, 0, out + offsetof(block_iq4_nl_r4, qs));
}
static void iq4_nl_r4_unpack(const uint8_t *in, unpacked *u) {
    for (int k = 0; k < 4; k++)
        u[k].d = moe_load_le16(in + offsetof(block_iq4_nl_r4, d) + 2 * k);
    nl_chunks_get(in + offsetof(block_iq4_nl_r4, qs), 0, u);
}

/* ---- Q5_0 ↔ Q5_0_R4 (§1.2, §2.4) --------------------------------------------------- */

static void q5_0_unpack(const uint8_t *b, unpacked *u) {
    u->d = moe_load_le16(b + offsetof(block_q5_0, d));
    split_half_get(b + offsetof(block_q5_0, qs), u->q);
    uint32_t qh = moe_load_le32(b + offsetof(block_q5_0, qh)); /* bit j: element j */
    for (int j = 0; j < MOE_QK; j++)
        u->q[j] |= (uint8_t)(((qh >> j) & 1) << 4);
}
static void q5_0_pack(const unpacked *u, uint8_t *b) {
    moe_store_le16(b + offsetof(block_q5_0, d), u->d);
    split_half_put(u->q, b + offsetof(block_q5_0, qs));
    uint32_t qh = 0;
    for (int j = 0; j < MOE_QK; j++)
        qh |= (uint32_t)((u->q[j] >> 4) & 1) << j;
    moe_store_le32(b + offsetof(block_q5_0, qh), qh);
}
/* qs: §2.1 chunks of the low 4 bits. qh[4k + i]: bit c is the 5th bit of the
 * chunk-c low element NL_LO[c] + i, bit c + 4 that of its high partner (+8). */
static void q5_0_r4_pack(const unpacked *u, uint8_t *out) {
    uint8_t *qh = out + offsetof(block_q5_0_r4, qh);
    memset(qh, 0, sizeof(((block_q5_0_r4 *)0)->qh));
    for (int k = 0; k < 4; k++) {
        moe_store_le16(out + offsetof(block_q5_0_r4, d) + 2 * k, u[k].d);
        for (int c = 0; c < 4; c++)
            for (int i = 0; i < 4; i++) {
                int e = NL_LO[c] + i;
                qh[4 * k + i] |= (uint8_t)(((u[k].q[e] >> 4) & 1) << c |
                                           ((u[k].q[e + 8] >> 4) & 1) << (c + 4));
            }
    }
    nl_chunks_put(u, 0, out + offsetof(block_q5_0_r4, qs));
}
static void q5_0_r4_unpack(const uint8_t *in, unpacked *u) {
    const uint8_t *qh = in + offsetof(block_q5_0_r4, qh);
    nl_chunks_get(in + offsetof(block_q5_0_r4, qs), 0, u);
    for (int k = 0; k < 4; k++) {
        u[k].d = moe_load_le16(in + offsetof(block_q5_0_r4, d) + 2 * k);
        for (int c = 0; c < 4; c++)
            for (int i = 0; i < 4; i++) {
                int e = NL_LO[c] + i;
                u[k].q[e] |= (uint8_t)(((qh[4 * k + i] >> c) & 1) << 4);
                u[k].q[e + 8] |= (uint8_t)(((qh[4 * k + i] >> (c + 4)) & 1) << 4);
            }
    }
}

/* ---- Q2_K ↔ Q2_K_R4 (§1.3, §2.8) --------------------------------------------------- */

/* Plain Q2_K and Q3_K share the 2-bit plane: element 128n + 32j + l is bits
 * 2j..2j+1 of qs[32n + l]. These touch only bits 0-1 of the codes. */
static void k_low2_get(const uint8_t *qs, uint8_t *q) {
    for (int n = 0; n < 2; n++)
        for (int j = 0; j < 4; j++)
            for (int l = 0; l < 32; l++)
                q[128 * n + 32 * j + l] = (qs[32 * n + l] >> 2 * j) & 3;
}
static void k_low2_put(const uint8_t *q, uint8_t *qs) {
    memset(qs, 0, MOE_QK_K / 4);
    for (int n = 0; n < 2; n++)
        for (int j = 0; j < 4; j++)
            for (int l = 0; l < 32; l++)
                qs[32 * n + l] |= (uint8_t)((q[128 * n + 32 * j + l] & 3) << 2 * j);
}
/* Interleaved Q2_K_R4/Q3_K_R4 2-bit plane: qs[32ib + 16h + 4k + i] holds, at bits
 * 2f, element 32ib + 16h + 4f + i of row k (f = 0..3). */
static void r4_low2_put(const unpacked *u, uint8_t *qs) {
    memset(qs, 0, MOE_QK_K);
    for (int ib = 0; ib < MOE_QK_K / 32; ib++)
        for (int h = 0; h < 2; h++)
            for (int k = 0; k < 4; k++)
                for (int i = 0; i < 4; i++)
                    for (int f = 0; f < 4; f++)
                        qs[32 * ib + 16 * h + 4 * k + i] |=
                            (uint8_t)((u[k].q[32 * ib + 16 * h + 4 * f + i] & 3) << 2 * f);
}
static void r4_low2_get(const uint8_t *qs, unpacked *u) {
    for (int ib = 0; ib < MOE_QK_K / 32; ib++)
        for (int h = 0; h < 2; h++)
            for (int k = 0; k < 4; k++)
                for (int i = 0; i < 4; i++)
                    for (int f = 0; f < 4; f++)
                        u[k].q[32 * ib + 16 * h + 4 * f + i] =
                            (qs[32 * ib + 16 * h + 4 * k + i] >> 2 * f) & 3;
}

/* sc[s] = the whole scale byte of sub-block s (scale low nibble, min high). */
static void q2_K_unpack(const uint8_t *b, unpacked *u) {
    u->d = moe_load_le16(b + offsetof(block_q2_K, d));
    u->dmin = moe_load_le16(b + offsetof(block_q2_K, dmin));
    memcpy(u->sc, b + offsetof(block_q2_K, scales), MOE_QK_K / 16);
    k_low2_get(b + offsetof(block_q2_K, qs), u->q);
}
static void q2_K_pack(const unpacked *u, uint8_t *b) {
    moe_store_le16(b + offsetof(block_q2_K, d), u->d);
    moe_store_le16(b + offsetof(block_q2_K, dmin), u->dmin);
    memcpy(b + offsetof(block_q2_K, scales), u->sc, MOE_QK_K / 16);
    k_low2_put(u->q, b + offsetof(block_q2_K, qs));
}
/* d[k] = d, d[4 + k] = dmin; scales[4s + k] = scale byte s of row k. */
static void q2_K_r4_pack(const unpacked *u, uint8_t *out) {
    uint8_t *scales = out + offsetof(block_q2_K_r4, scales);
    for (int k = 0; k < 4; k++) {
        moe_store_le16(out + offsetof(block_q2_K_r4, d) + 2 * k, u[k].d);
        moe_store_le16(out + offsetof(block_q2_K_r4, d) + 2 * (4 + k), u[k].dmin);
        for (int s = 0; s < MOE_QK_K / 16; s++)
            scales[4 * s + k] = u[k].sc[s];
    }
    r4_low2_put(u, out + offsetof(block_q2_K_r4, qs));
}
static void q2_K_r4_unpack(const uint8_t *in, unpacked *u) {
    const uint8_t *scales = in + offsetof(block_q2_K_r4, scales);
    for (int k = 0; k < 4; k++) {
        u[k].d = moe_load_le16(in + offsetof(block_q2_K_r4, d) + 2 * k);
        u[k].dmin = moe_load_le16(in + offsetof(block_q2_K_r4, d) + 2 * (4 + k));
        for (int s = 0; s < MOE_QK_K / 16; s++)
            u[k].sc[s] = scales[4 * s + k];
    }
    r4_low2_get(in + offsetof(block_q2_K_r4, qs), u);
}

/* ---- Q3_K ↔ Q3_K_R4 (§1.3, §2.8) --------------------------------------------------- */

/* q = low2 | h << 2 with h = the hmask bit (so the value is q − 4); sc[s] = the
 * stored 6-bit code (value + 32). Plain scale code s: low 4 bits in the low
 * nibble of scales[s] (s < 8) or the high nibble of scales[s − 8]; high 2 bits
 * at bit 2·(s/4) of scales[8 + s % 4]. */
static void q3_K_unpack(const uint8_t *b, unpacked *u) {
    const uint8_t *hm = b + offsetof(block_q3_K, hmask);
    const uint8_t *sc = b + offsetof(block_q3_K, scales);
    u->d = moe_load_le16(b + offsetof(block_q3_K, d));
    k_low2_get(b + offsetof(block_q3_K, qs), u->q);
    for (int n = 0; n < 2; n++)
        for (int j = 0; j < 4; j++)
            for (int l = 0; l < 32; l++)
                u->q[128 * n + 32 * j + l] |= (uint8_t)(((hm[l] >> (4 * n + j)) & 1) << 2);
    for (int s = 0; s < 16; s++) {
        uint8_t lo = s < 8 ? sc[s] & 15 : sc[s - 8] >> 4;
        u->sc[s] = (uint8_t)(lo | ((sc[8 + s % 4] >> 2 * (s / 4)) & 3) << 4);
    }
}
static void q3_K_pack(const unpacked *u, uint8_t *b) {
    uint8_t *hm = b + offsetof(block_q3_K, hmask);
    uint8_t *sc = b + offsetof(block_q3_K, scales);
    moe_store_le16(b + offsetof(block_q3_K, d), u->d);
    k_low2_put(u->q, b + offsetof(block_q3_K, qs));
    memset(hm, 0, MOE_QK_K / 8);
    for (int n = 0; n < 2; n++)
        for (int j = 0; j < 4; j++)
            for (int l = 0; l < 32; l++)
                hm[l] |= (uint8_t)(((u->q[128 * n + 32 * j + l] >> 2) & 1) << (4 * n + j));
    memset(sc, 0, MOE_K_SCALE_SIZE);
    for (int s = 0; s < 16; s++) {
        sc[s % 8] |= (uint8_t)((u->sc[s] & 15) << 4 * (s / 8));
        sc[8 + s % 4] |= (uint8_t)(((u->sc[s] >> 4) & 3) << 2 * (s / 4));
    }
}
/* d[k]; scale code of sub-block 2ib + h is number s = 8ib + k + 4h (scale6_put);
 * 2-bit plane as Q2_K_R4; qh[16ib + 4k + i] bit b = high bit of element
 * 32ib + 4b + i. */
static void q3_K_r4_pack(const unpacked *u, uint8_t *out) {
    uint8_t *sl = out + offsetof(block_q3_K_r4, scales_l);
    uint8_t *sh = out + offsetof(block_q3_K_r4, scales_h);
    uint8_t *qh = out + offsetof(block_q3_K_r4, qh);
    memset(sl, 0, 32);
    memset(sh, 0, 16);
    memset(qh, 0, 128);
    for (int k = 0; k < 4; k++) {
        moe_store_le16(out + offsetof(block_q3_K_r4, d) + 2 * k, u[k].d);
        for (int ib = 0; ib < MOE_QK_K / 32; ib++) {
            scale6_put(sl, sh, 8 * ib + k, u[k].sc[2 * ib]);
            scale6_put(sl, sh, 8 * ib + k + 4, u[k].sc[2 * ib + 1]);
            for (int i = 0; i < 4; i++)
                for (int bit = 0; bit < 8; bit++)
                    qh[16 * ib + 4 * k + i] |=
                        (uint8_t)(((u[k].q[32 * ib + 4 * bit + i] >> 2) & 1) << bit);
        }
    }
    r4_low2_put(u, out + offsetof(block_q3_K_r4, qs));
}
static void q3_K_r4_unpack(const uint8_t *in, unpacked *u) {
    const uint8_t *sl = in + offsetof(block_q3_K_r4, scales_l);
    const uint8_t *sh = in + offsetof(block_q3_K_r4, scales_h);
    const uint8_t *qh = in + offsetof(block_q3_K_r4, qh);
    r4_low2_get(in + offsetof(block_q3_K_r4, qs), u);
    for (int k = 0; k < 4; k++) {
        u[k].d = moe_load_le16(in + offsetof(block_q3_K_r4, d) + 2 * k);
        for (int ib = 0; ib < MOE_QK_K / 32; ib++) {
            u[k].sc[2 * ib] = scale6_get(sl, sh, 8 * ib + k);
            u[k].sc[2 * ib + 1] = scale6_get(sl, sh, 8 * ib + k + 4);
            for (int i = 0; i < 4; i++)
                for (int bit = 0; bit < 8; bit++)
                    u[k].q[32 * ib + 4 * bit + i] |=
                        (uint8_t)(((qh[16 * ib + 4 * k + i] >> bit) & 1) << 2);
        }
    }
}

/* ---- Q4_K / Q5_K ↔ Q4_K_R4 / Q5_K_R4 (§1.3, §2.5, §2.6) ---------------------------- */

/* The 12-byte scale field of Q4_K/Q5_K: 8 (scale, min) pairs of 6 bits.
 * Pair j < 4: low 6 bits of bytes j and j + 4. Pair j ≥ 4: nibbles of byte
 * j + 4, top 2 bits from bits 6-7 of bytes j − 4 (scale) and j (min). */
static void k4_scales_get(const uint8_t *q, uint8_t *sc, uint8_t *mn) {
    for (int j = 0; j < 8; j++) {
        if (j < 4) {
            sc[j] = q[j] & 63;
            mn[j] = q[j + 4] & 63;
        } else {
            sc[j] = (uint8_t)((q[j + 4] & 15) | (q[j - 4] >> 6) << 4);
            mn[j] = (uint8_t)((q[j + 4] >> 4) | (q[j] >> 6) << 4);
        }
    }
}
static void k4_scales_put(const uint8_t *sc, const uint8_t *mn, uint8_t *q) {
    memset(q, 0, MOE_K_SCALE_SIZE);
    for (int j = 0; j < 8; j++) {
        if (j < 4) {
            q[j] |= sc[j] & 63;
            q[j + 4] |= mn[j] & 63;
        } else {
            q[j + 4] = (uint8_t)((sc[j] & 15) | (mn[j] & 15) << 4);
            q[j - 4] |= (uint8_t)((sc[j] >> 4) << 6);
            q[j] |= (uint8_t)((mn[j] >> 4) << 6);
        }
    }
}
/* qs chunk c (c = 0..3) = qs[32c .. 32c + 31]: low nibbles are elements 64c + l,
 * high nibbles 64c + 32 + l. Q5_K's 5th bits: bit 2c (+1 for the high half) of qh[l]. */
static void k4_qs_get(const uint8_t *qs, uint8_t *q) {
    for (int c = 0; c < 4; c++)
        for (int l = 0; l < 32; l++) {
            q[64 * c + l] = qs[32 * c + l] & 15;
            q[64 * c + 32 + l] = qs[32 * c + l] >> 4;
        }
}
static void k4_qs_put(const uint8_t *q, uint8_t *qs) {
    for (int c = 0; c < 4; c++)
        for (int l = 0; l < 32; l++)
            qs[32 * c + l] = (uint8_t)((q[64 * c + l] & 15) | (q[64 * c + 32 + l] & 15) << 4);
}

static void q4_K_unpack(const uint8_t *b, unpacked *u) {
    u->d = moe_load_le16(b + offsetof(block_q4_K, d));
    u->dmin = moe_load_le16(b + offsetof(block_q4_K, dmin));
    k4_scales_get(b + offsetof(block_q4_K, scales), u->sc, u->mn);
    k4_qs_get(b + offsetof(block_q4_K, qs), u->q);
}
static void q4_K_pack(const unpacked *u, uint8_t *b) {
    moe_store_le16(b + offsetof(block_q4_K, d), u->d);
    moe_store_le16(b + offsetof(block_q4_K, dmin), u->dmin);
    k4_scales_put(u->sc, u->mn, b + offsetof(block_q4_K, scales));
    k4_qs_put(u->q, b + offsetof(block_q4_K, qs));
}
static void q5_K_unpack(const uint8_t *b, unpacked *u) {
    const uint8_t *qh = b + offsetof(block_q5_K, qh);
    u->d = moe_load_le16(b + offsetof(block_q5_K, d));
    u->dmin = moe_load_le16(b + offsetof(block_q5_K, dmin));
    k4_scales_get(b + offsetof(block_q5_K, scales), u->sc, u->mn);
    k4_qs_get(b + offsetof(block_q5_K, qs), u->q);
    for (int c = 0; c < 4; c++)
        for (int l = 0; l < 32; l++) {
            u->q[64 * c + l] |= (uint8_t)(((qh[l] >> (2 * c)) & 1) << 4);
            u->q[64 * c + 32 + l] |= (uint8_t)(((qh[l] >> (2 * c + 1)) & 1) << 4);
        }
}
static void q5_K_pack(const unpacked *u, uint8_t *b) {
    uint8_t *qh = b + offsetof(block_q5_K, qh);
    moe_store_le16(b + offsetof(block_q5_K, d), u->d);
    moe_store_le16(b + offsetof(block_q5_K, dmin), u->dmin);
    k4_scales_put(u->sc, u->mn, b + offsetof(block_q5_K, scales));
    k4_qs_put(u->q, b + offsetof(block_q5_K, qs));
    memset(qh, 0, MOE_QK_K / 8);
    for (int c = 0; c < 4; c++)
        for (int l = 0; l < 32; l++)
            qh[l] |= (uint8_t)(((u->q[64 * c + l] >> 4) & 1) << (2 * c) |
                               ((u->q[64 * c + 32 + l] >> 4) & 1) << (2 * c + 1));
}

/* Common part of Q4_K_R4 and Q5_K_R4 (same offsets up to qh, asserted below):
 * d[k] = d, d[4 + k] = dmin; for s = 4ib + k, scales_l[s] = scale low 4 | min
 * low 4 << 4 and the 4-bit (scale >> 4) | (min >> 4) << 2 goes to nibble s/16 of
 * scales_h[s % 16]; qs: §2.1 chunks per 32-block at qs + 64ib. */
static_assert(offsetof(block_q4_K_r4, scales_h) == offsetof(block_q5_K_r4, scales_h) &&
                  offsetof(block_q4_K_r4, scales_l) == offsetof(block_q5_K_r4, scales_l),
              "Q4_K_R4 and Q5_K_R4 share their scale fields");

static void k4_r4_put(const unpacked *u, uint8_t *out, uint8_t *qs) {
    uint8_t *sl = out + offsetof(block_q4_K_r4, scales_l);
    uint8_t *sh = out + offsetof(block_q4_K_r4, scales_h);
    memset(sh, 0, 16);
    for (int k = 0; k < 4; k++) {
        moe_store_le16(out + offsetof(block_q4_K_r4, d) + 2 * k, u[k].d);
        moe_store_le16(out + offsetof(block_q4_K_r4, d) + 2 * (4 + k), u[k].dmin);
        for (int ib = 0; ib < MOE_QK_K / 32; ib++) {
            int s = 4 * ib + k;
            uint8_t sc = u[k].sc[ib], mn = u[k].mn[ib];
            sl[s] = (uint8_t)((sc & 15) | (mn & 15) << 4);
            sh[s % 16] |= (uint8_t)(((sc >> 4) | (mn >> 4) << 2) << 4 * (s / 16));
        }
    }
    for (int ib = 0; ib < MOE_QK_K / 32; ib++)
        nl_chunks_put(u, 32 * ib, qs + 64 * ib);
}
static void k4_r4_get(const uint8_t *in, const uint8_t *qs, unpacked *u) {
    const uint8_t *sl = in + offsetof(block_q4_K_r4, scales_l);
    const uint8_t *sh = in + offsetof(block_q4_K_r4, scales_h);
    for (int ib = 0; ib < MOE_QK_K / 32; ib++)
        nl_chunks_get(qs + 64 * ib, 32 * ib, u);
    for (int k = 0; k < 4; k++) {
        u[k].d = moe_load_le16(in + offsetof(block_q4_K_r4, d) + 2 * k);
        u[k].dmin = moe_load_le16(in + offsetof(block_q4_K_r4, d) + 2 * (4 + k));
        for (int ib = 0; ib < MOE_QK_K / 32; ib++) {
            int s = 4 * ib + k;
            uint8_t h = (sh[s % 16] >> 4 * (s / 16)) & 15;
            u[k].sc[ib] = (uint8_t)((sl[s] & 15) | (h & 3) << 4);
            u[k].mn[ib] = (uint8_t)((sl[s] >> 4) | (h >> 2) << 4);
        }
    }
}
static void q4_K_r4_pack(const unpacked *u, uint8_t *out) {
    k4_r4_put(u, out, out + offsetof(block_q4_K_r4, qs));
}
static void q4_K_r4_unpack(const uint8_t *in, unpacked *u) {
    k4_r4_get(in, in + offsetof(block_q4_K_r4, qs), u);
}
/* Q5_K_R4 adds qh[16ib + 4k + i]: bit b = 5th bit of element 32ib + i + HI_ORDER[b]. */
static void q5_K_r4_pack(const unpacked *u, uint8_t *out) {
    uint8_t *qh = out + offsetof(block_q5_K_r4, qh);
    k4_r4_put(u, out, out + offsetof(block_q5_K_r4, qs));
    memset(qh, 0, 128);
    for (int ib = 0; ib < MOE_QK_K / 32; ib++)
        for (int k = 0; k < 4; k++)
            for (int i = 0; i < 4; i++)
                for (int b = 0; b < 8; b++)
                    qh[16 * ib + 4 * k + i] |=
                        (uint8_t)(((u[k].q[32 * ib + i + HI_ORDER[b]] >> 4) & 1) << b);
}
static void q5_K_r4_unpack(const uint8_t *in, unpacked *u) {
    const uint8_t *qh = in + offsetof(block_q5_K_r4, qh);
    k4_r4_get(in, in + offsetof(block_q5_K_r4, qs), u);
    for (int ib = 0; ib < MOE_QK_K / 32; ib++)
        for (int k = 0; k < 4; k++)
            for (int i = 0; i < 4; i++)
                for (int b = 0; b < 8; b++)
                    u[k].q[32 * ib + i + HI_ORDER[b]] |=
                        (uint8_t)(((qh[16 * ib + 4 * k + i] >> b) & 1) << 4);
}

/* ---- Q6_K ↔ Q6_K_R4 (§1.3, §2.7) --------------------------------------------------- */

/* Element 128n + 32m + l (m = 0..3): low 4 bits in nibble m/2 of
 * ql[64n + 32·(m % 2) + l], high 2 bits at bits 2m of qh[32n + l]. sc[s] = the
 * int8 scale of sub-block s, as a byte. */
static void q6_K_unpack(const uint8_t *b, unpacked *u) {
    const uint8_t *ql = b + offsetof(block_q6_K, ql);
    const uint8_t *qh = b + offsetof(block_q6_K, qh);
    u->d = moe_load_le16(b + offsetof(block_q6_K, d));
    memcpy(u->sc, b + offsetof(block_q6_K, scales), MOE_QK_K / 16);
    for (int n = 0; n < 2; n++)
        for (int m = 0; m < 4; m++)
            for (int l = 0; l < 32; l++) {
                uint8_t lo = (ql[64 * n + 32 * (m % 2) + l] >> 4 * (m / 2)) & 15;
                uint8_t hi = (qh[32 * n + l] >> 2 * m) & 3;
                u->q[128 * n + 32 * m + l] = (uint8_t)(lo | hi << 4);
            }
}
static void q6_K_pack(const unpacked *u, uint8_t *b) {
    uint8_t *ql = b + offsetof(block_q6_K, ql);
    uint8_t *qh = b + offsetof(block_q6_K, qh);
    moe_store_le16(b + offsetof(block_q6_K, d), u->d);
    memcpy(b + offsetof(block_q6_K, scales), u->sc, MOE_QK_K / 16);
    memset(ql, 0, MOE_QK_K / 2);
    memset(qh, 0, MOE_QK_K / 4);
    for (int n = 0; n < 2; n++)
        for (int m = 0; m < 4; m++)
            for (int l = 0; l < 32; l++) {
                uint8_t q = u->q[128 * n + 32 * m + l];
                ql[64 * n + 32 * (m % 2) + l] |= (uint8_t)((q & 15) << 4 * (m / 2));
                qh[32 * n + l] |= (uint8_t)(((q >> 4) & 3) << 2 * m);
            }
}
/* d[k]; scales[8ib + k] = sub-block 2ib, scales[8ib + 4 + k] = 2ib + 1; ql: §2.1
 * chunks per 32-block; qh[32ib + 16·(b/4) + 4k + i], bits 2·(b % 4): high 2
 * bits of element 32ib + i + HI_ORDER[b]. */
static void q6_K_r4_pack(const unpacked *u, uint8_t *out) {
    uint8_t *scales = out + offsetof(block_q6_K_r4, scales);
    uint8_t *qh = out + offsetof(block_q6_K_r4, qh);
    uint8_t *ql = out + offsetof(block_q6_K_r4, ql);
    memset(qh, 0, 256);
    for (int k = 0; k < 4; k++) {
        moe_store_le16(out + offsetof(block_q6_K_r4, d) + 2 * k, u[k].d);
        for (int ib = 0; ib < MOE_QK_K / 32; ib++) {
            scales[8 * ib + k] = u[k].sc[2 * ib];
            scales[8 * ib + 4 + k] = u[k].sc[2 * ib + 1];
            for (int i = 0; i < 4; i++)
                for (int b = 0; b < 8; b++)
                    qh[32 * ib + 16 * (b / 4) + 4 * k + i] |=
                        (uint8_t)(((u[k].q[32 * ib + i + HI_ORDER[b]] >> 4) & 3) << 2 * (b % 4));
        }
    }
    for (int ib = 0; ib < MOE_QK_K / 32; ib++)
        nl_chunks_put(u, 32 * ib, ql + 64 * ib);
}
static void q6_K_r4_unpack(const uint8_t *in, unpacked *u) {
    const uint8_t *scales = in + offsetof(block_q6_K_r4, scales);
    const uint8_t *qh = in + offsetof(block_q6_K_r4, qh);
    const uint8_t *ql = in + offsetof(block_q6_K_r4, ql);
    for (int ib = 0; ib < MOE_QK_K / 32; ib++)
        nl_chunks_get(ql + 64 * ib, 32 * ib, u);
    for (int k = 0; k < 4; k++) {
        u[k].d = moe_load_le16(in + offsetof(block_q6_K_r4, d) + 2 * k);
        for (int ib = 0; ib < MOE_QK_K / 32; ib++) {
            u[k].sc[2 * ib] = scales[8 * ib + k];
            u[k].sc[2 * ib + 1] = scales[8 * ib + 4 + k];
            for (int i = 0; i < 4; i++)
                for (int b = 0; b < 8; b++)
                    u[k].q[32 * ib + i + HI_ORDER[b]] |= (uint8_t)(
                        ((qh[32 * ib + 16 * (b / 4) + 4 * k + i] >> 2 * (b % 4)) & 3) << 4);
        }
    }
}

/* ---- IQ4_XS ↔ IQ4_XS_R8 (§1.4, §2.11) ---------------------------------------------- */

/* sc[ib] = the 6-bit code ls (value ls − 32): low 4 bits in nibble ib % 2 of
 * scales_l[ib / 2], high 2 bits at bits 2ib of the u16 scales_h. Elements
 * 32ib + j and 32ib + j + 16 are the nibbles of qs[16ib + j]. */
static void iq4_xs_unpack(const uint8_t *b, unpacked *u) {
    const uint8_t *sl = b + offsetof(block_iq4_xs, scales_l);
    uint16_t sh = moe_load_le16(b + offsetof(block_iq4_xs, scales_h));
    u->d = moe_load_le16(b + offsetof(block_iq4_xs, d));
    for (int ib = 0; ib < MOE_QK_K / 32; ib++) {
        u->sc[ib] = (uint8_t)(((sl[ib / 2] >> 4 * (ib % 2)) & 15) | ((sh >> 2 * ib) & 3) << 4);
        split_half_get(b + offsetof(block_iq4_xs, qs) + 16 * ib, u->q + 32 * ib);
    }
}
static void iq4_xs_pack(const unpacked *u, uint8_t *b) {
    uint8_t *sl = b + offsetof(block_iq4_xs, scales_l);
    uint16_t sh = 0;
    moe_store_le16(b + offsetof(block_iq4_xs, d), u->d);
    memset(sl, 0, MOE_QK_K / 64);
    for (int ib = 0; ib < MOE_QK_K / 32; ib++) {
        sl[ib / 2] |= (uint8_t)((u->sc[ib] & 15) << 4 * (ib % 2));
        sh |= (uint16_t)(((u->sc[ib] >> 4) & 3) << 2 * ib);
        split_half_put(u->q + 32 * ib, b + offsetof(block_iq4_xs, qs) + 16 * ib);
    }
    moe_store_le16(b + offsetof(block_iq4_xs, scales_h), sh);
}
/* d[k]; scale code of row k, 32-block ib is number s = 8ib + k (scale6_put);
 * qs[128ib + 32c + 4k + i] = element 32ib + 8c + i (low nibble) | element
 * 32ib + 8c + 4 + i (high nibble) — a different pairing from §2.1. */
static void iq4_xs_r8_pack(const unpacked *u, uint8_t *out) {
    uint8_t *sl = out + offsetof(block_iq4_xs_r8, scales_l);
    uint8_t *sh = out + offsetof(block_iq4_xs_r8, scales_h);
    uint8_t *qs = out + offsetof(block_iq4_xs_r8, qs);
    memset(sl, 0, 32);
    memset(sh, 0, 16);
    for (int k = 0; k < 8; k++) {
        moe_store_le16(out + offsetof(block_iq4_xs_r8, d) + 2 * k, u[k].d);
        for (int ib = 0; ib < MOE_QK_K / 32; ib++) {
            scale6_put(sl, sh, 8 * ib + k, u[k].sc[ib]);
            for (int c = 0; c < 4; c++)
                for (int i = 0; i < 4; i++) {
                    const uint8_t *q = u[k].q + 32 * ib + 8 * c + i;
                    qs[128 * ib + 32 * c + 4 * k + i] = (uint8_t)((q[0] & 15) | (q[4] & 15) << 4);
                }
        }
    }
}
static void iq4_xs_r8_unpack(const uint8_t *in, unpacked *u) {
    const uint8_t *sl = in + offsetof(block_iq4_xs_r8, scales_l);
    const uint8_t *sh = in + offsetof(block_iq4_xs_r8, scales_h);
    const uint8_t *qs = in + offsetof(block_iq4_xs_r8, qs);
    for (int k = 0; k < 8; k++) {
        u[k].d = moe_load_le16(in + offsetof(block_iq4_xs_r8, d) + 2 * k);
        for (int ib = 0; ib < MOE_QK_K / 32; ib++) {
            u[k].sc[ib] = scale6_get(sl, sh, 8 * ib + k);
            for (int c = 0; c < 4; c++)
                for (int i = 0; i < 4; i++) {
                    uint8_t byte = qs[128 * ib + 32 * c + 4 * k + i];
                    u[k].q[32 * ib + 8 * c + i] = byte & 15;
                    u[k].q[32 * ib + 8 * c + 4 + i] = byte >> 4;
                }
        }
    }
}

/* ---- table and drivers ------------------------------------------------------------ */

#define CODEC(t_, b_, r_, blk_, plain_, ilv_)                                              \
    {.type = t_, .base = b_, .rows = r_, .block = blk_, .block_bytes = sizeof(block_##plain_), \
     .plain_unpack = plain_##_unpack, .plain_pack = plain_##_pack,                           \
     .ilv_pack = ilv_##_pack, .ilv_unpack = ilv_##_unpack}

static const codec codecs[] = {
    CODEC(MOE_TYPE_Q4_0_R8, MOE_TYPE_Q4_0, 8, MOE_QK, q4_0, q4_0_r8),
    CODEC(MOE_TYPE_Q5_0_R4, MOE_TYPE_Q5_0, 4, MOE_QK, q5_0, q5_0_r4),
    CODEC(MOE_TYPE_Q8_0_R8, MOE_TYPE_Q8_0, 8, MOE_QK, q8_0, q8_0_r8),
    CODEC(MOE_TYPE_IQ4_NL_R4, MOE_TYPE_IQ4_NL, 4, MOE_QK, iq4_nl, iq4_nl_r4),
    CODEC(MOE_TYPE_Q2_K_R4, MOE_TYPE_Q2_K, 4, MOE_QK_K, q2_K, q2_K_r4),
    CODEC(MOE_TYPE_Q3_K_R4, MOE_TYPE_Q3_K, 4, MOE_QK_K, q3_K, q3_K_r4),
    CODEC(MOE_TYPE_Q4_K_R4, MOE_TYPE_Q4_K, 4, MOE_QK_K, q4_K, q4_K_r4),
    CODEC(MOE_TYPE_Q5_K_R4, MOE_TYPE_Q5_K, 4, MOE_QK_K, q5_K, q5_K_r4),
    CODEC(MOE_TYPE_Q6_K_R4, MOE_TYPE_Q6_K, 4, MOE_QK_K, q6_K, q6_K_r4),
    CODEC(MOE_TYPE_IQ4_XS_R8, MOE_TYPE_IQ4_XS, 8, MOE_QK_K, iq4_xs, iq4_xs_r8),
};

static const codec *find_codec(moe_type t) {
    for (size_t i = 0; i < sizeof(codecs) / sizeof(codecs[0]); i++)
        if (codecs[i].type == t)
            return &codecs[i];
    return NULL;
}

bool moe_interleave_supported(moe_type t) { return find_codec(t) != NULL; }

moe_type moe_interleaved_variant(moe_type base) {
    for (size_t i = 0; i < sizeof(codecs) / sizeof(codecs[0]); i++)
        if (codecs[i].base == base)
            return codecs[i].type;
    return base;
}

static bool overlaps(const void *a, const void *b, uint64_t n) {
    uintptr_t pa = (uintptr_t)a, pb = (uintptr_t)b;
    return pa < pb ? pb - pa < n : pa - pb < n;
}

/* Validates the arguments of both directions; on success *c is the codec and
 * *nbytes the tensor's byte count (0 for an empty tensor). */
static moe_status check_args(moe_type t, const void *src, const void *dst, int64_t ne0,
                             int64_t nrows, const codec **c, uint64_t *nbytes, moe_err *err) {
    const moe_type_traits *tr = moe_type_get(t);
    MOE_FAIL_IF(!tr || !tr->interleave_rows, err, MOE_ERR_USAGE,
                "type %s (%d) is not a row-interleaved type", moe_type_name(t), (int)t);
    *c = find_codec(t);
    MOE_FAIL_IF(!*c, err, MOE_ERR_UNSUPPORTED, "interleaving rows of %s is not supported",
                tr->name);
    /* The layouts fix R and the block: a disagreement with the type table is a bug. */
    MOE_FAIL_IF(tr->interleave_rows != (*c)->rows || tr->base != (*c)->base ||
                    tr->block_size != (*c)->block ||
                    tr->type_size != (*c)->block_bytes,
                err, MOE_ERR_INTERNAL, "type table and %s layout disagree", tr->name);
    MOE_FAIL_IF(ne0 < 0 || nrows < 0, err, MOE_ERR_USAGE,
                "negative %s shape: ne0 = %lld, rows = %lld", tr->name, (long long)ne0,
                (long long)nrows);
    MOE_FAIL_IF(ne0 % (*c)->block != 0, err, MOE_ERR_FORMAT,
                "row length %lld is not a multiple of the %s block size %d", (long long)ne0,
                tr->name, (*c)->block);
    MOE_FAIL_IF(nrows % (*c)->rows != 0, err, MOE_ERR_FORMAT,
                "%lld rows are not a multiple of the %d rows %s interleaves", (long long)nrows,
                (*c)->rows, tr->name);
    uint64_t row = 0;
    MOE_TRY(moe_type_row_size(t, ne0, &row, err));
    MOE_FAIL_IF(!moe_mul_u64(row, (uint64_t)nrows, nbytes) || *nbytes > SIZE_MAX, err,
                MOE_ERR_USAGE, "%lld rows of %lld %s values do not fit in memory",
                (long long)nrows, (long long)ne0, tr->name);
    if (*nbytes == 0)
        return MOE_OK;
    MOE_FAIL_IF(!src || !dst, err, MOE_ERR_USAGE, "NULL buffer for %llu bytes of %s",
                (unsigned long long)*nbytes, tr->name);
    MOE_FAIL_IF(overlaps(src, dst, *nbytes), err, MOE_ERR_USAGE,
                "source and destination of %s rows overlap (in-place is not supported)",
                tr->name);
    return MOE_OK;
}

/* Walks the tensor one (row group, block position) at a time. The plain block
 * of row k of group g at position ib and the interleaved block (g, ib) are both
 * at computable offsets, so the two directions share the walk. */
static void convert(const codec *c, const uint8_t *src, uint8_t *dst, int64_t ne0,
                    int64_t nrows, bool to_interleaved) {
    const size_t nb = (size_t)(ne0 / c->block);
    const size_t R = (size_t)c->rows;
    unpacked u[MAX_ROWS];
    memset(u, 0, sizeof(u));
    for (size_t g = 0; g < (size_t)nrows / R; g++) {
        for (size_t ib = 0; ib < nb; ib++) {
            size_t ilv = (g * nb + ib) * R * c->block_bytes;
            if (to_interleaved) {
                for (size_t k = 0; k < R; k++)
                    c->plain_unpack(src + ((g * R + k) * nb + ib) * c->block_bytes, &u[k]);
                c->ilv_pack(u, dst + ilv);
            } else {
                c->ilv_unpack(src + ilv, u);
                for (size_t k = 0; k < R; k++)
                    c->plain_pack(&u[k], dst + ((g * R + k) * nb + ib) * c->block_bytes);
            }
        }
    }
}

moe_status moe_interleave_rows(moe_type ilv_type, const void *plain, void *out, int64_t ne0,
                               int64_t nrows, moe_err *err) {
    const codec *c = NULL;
    uint64_t nbytes = 0;
    MOE_TRY(check_args(ilv_type, plain, out, ne0, nrows, &c, &nbytes, err));
    if (nbytes)
        convert(c, plain, out, ne0, nrows, true);
    return MOE_OK;
}

moe_status moe_deinterleave_rows(moe_type ilv_type, const void *in, void *plain, int64_t ne0,
                                 int64_t nrows, moe_err *err) {
    const codec *c = NULL;
    uint64_t nbytes = 0;
    MOE_TRY(check_args(ilv_type, in, plain, ne0, nrows, &c, &nbytes, err));
    if (nbytes)
        convert(c, in, plain, ne0, nrows, false);
    return MOE_OK;
}
