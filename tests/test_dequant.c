/* test_dequant — the scalar reference dequantizers of the plain block types.
 *
 * `test_dequant unit`: hand-made blocks.
 *   1. Literal blocks: bytes written out by hand from the spec
 *      (../shared/spec/quant.md §1.2-1.4), expected floats worked out by hand.
 *   2. Encoder round trips: random integer codes and scales (fixed, printed
 *      seed) are packed into block bytes by encoders written here from the
 *      spec's element-indexed description (the inverse direction of the
 *      decoders), then the decoded floats must equal the spec formula applied
 *      to those codes, exactly (all scales are small dyadic numbers, so every
 *      product is exact). Each case also runs from a misaligned buffer.
 *   3. moe_dequantize_rows(): several rows at once, and rejecting a row length
 *      that is not a multiple of the block size.
 *
 * `test_dequant golden`: the llama.cpp-quantized conformance models against
 * the F32 original (see test_golden()).
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "formats/gguf/cursor.h"
#include "formats/gguf/gguf.h"
#include "formats/quant/quant_blocks.h"
#include "formats/quant/types.h"
#include "test_util.h"

#define MAX_VALUES 256 /* values per block, largest type */
#define MAX_BYTES 256  /* bytes per block, largest type */

/* ---- helpers --------------------------------------------------------------- */

static int rng_int(int lo, int hi) {
    return lo + (int)(test_rng_next() % (uint32_t)(hi - lo + 1));
}

/* Dequantizes one block through the type table, also from a buffer misaligned
 * by one byte, and checks both agree. Returns the floats in y. */
static void decode(moe_type t, const uint8_t *bytes, size_t nbytes, int64_t n, float *y) {
    uint8_t shifted[MAX_BYTES + 1];
    float y2[MAX_VALUES];
    CHECK(nbytes <= MAX_BYTES && n <= MAX_VALUES, "test block too large");
    if (nbytes > MAX_BYTES || n > MAX_VALUES)
        return;
    memcpy(shifted + 1, bytes, nbytes);
    moe_err err = {0};
    moe_status st = moe_dequantize_rows(t, bytes, y, n, 1, &err);
    CHECK(st == MOE_OK, "%s: %s", moe_type_name(t), err.msg);
    st = moe_dequantize_rows(t, shifted + 1, y2, n, 1, &err);
    CHECK(st == MOE_OK && memcmp(y, y2, (size_t)n * sizeof(float)) == 0,
          "%s: misaligned source decodes differently", moe_type_name(t));
}

static void expect_at(moe_type t, const float *y, int i, float want) {
    CHECK(y[i] == want, "%s element %d: got %g, want %g", moe_type_name(t), i, y[i], want);
}

/* Exact comparison of a whole block; reports the first mismatch only. */
static void expect_all(moe_type t, const float *y, const double *want, int n) {
    int bad = -1;
    for (int i = 0; i < n && bad < 0; i++)
        if (y[i] != (float)want[i])
            bad = i;
    CHECK(bad < 0, "%s element %d: got %g, want %g", moe_type_name(t), bad,
          bad < 0 ? 0.0 : y[bad], bad < 0 ? 0.0 : want[bad]);
}

/* ---- 1. literal blocks ------------------------------------------------------ */

static void literal_legacy(void) {
    float y[32];
    /* Q4_0, d = 0.5: qs[0] = 0x9F -> e0 nibble 15 -> (15-8)*0.5, e16 nibble 9 */
    uint8_t q4_0[18] = {0x00, 0x38, 0x9F};
    memset(q4_0 + 3, 0x88, 12);
    q4_0[17] = 0x00; /* e15, e31: nibble 0 -> -4 */
    decode(MOE_TYPE_Q4_0, q4_0, sizeof q4_0, 32, y);
    expect_at(MOE_TYPE_Q4_0, y, 0, 3.5f);
    expect_at(MOE_TYPE_Q4_0, y, 16, 0.5f);
    expect_at(MOE_TYPE_Q4_0, y, 1, 0.0f);
    expect_at(MOE_TYPE_Q4_0, y, 15, -4.0f);
    expect_at(MOE_TYPE_Q4_0, y, 31, -4.0f);

    /* Q4_1, d = 1, m = -1: qs[1] = 0x3A -> e1 = 10 - 1, e17 = 3 - 1 */
    uint8_t q4_1[20] = {0x00, 0x3C, 0x00, 0xBC, 0x00, 0x3A};
    decode(MOE_TYPE_Q4_1, q4_1, sizeof q4_1, 32, y);
    expect_at(MOE_TYPE_Q4_1, y, 1, 9.0f);
    expect_at(MOE_TYPE_Q4_1, y, 17, 2.0f);
    expect_at(MOE_TYPE_Q4_1, y, 0, -1.0f);

    /* Q5_0, d = 2, qh bits 0 and 31 set: e0 = (1|16)-16, e16 = 2-16,
     * e15 = 0-16, e31 = (15|16)-16 */
    uint8_t q5_0[22] = {0x00, 0x40, 0x01, 0x00, 0x00, 0x80, 0x21};
    q5_0[21] = 0xF0;
    decode(MOE_TYPE_Q5_0, q5_0, sizeof q5_0, 32, y);
    expect_at(MOE_TYPE_Q5_0, y, 0, 2.0f);
    expect_at(MOE_TYPE_Q5_0, y, 16, -28.0f);
    expect_at(MOE_TYPE_Q5_0, y, 15, -32.0f);
    expect_at(MOE_TYPE_Q5_0, y, 31, 30.0f);

    /* Q5_1, d = 0.5, m = 3, qh bit 16: e0 = 15*0.5+3, e16 = (5+16)*0.5+3 */
    uint8_t q5_1[24] = {0x00, 0x38, 0x00, 0x42, 0x00, 0x00, 0x01, 0x00, 0x5F};
    decode(MOE_TYPE_Q5_1, q5_1, sizeof q5_1, 32, y);
    expect_at(MOE_TYPE_Q5_1, y, 0, 10.5f);
    expect_at(MOE_TYPE_Q5_1, y, 16, 13.5f);
    expect_at(MOE_TYPE_Q5_1, y, 1, 3.0f);

    /* Q8_0, d = 0.25: int8 -127, -1, +127 */
    uint8_t q8_0[34] = {0x00, 0x34, 0x81};
    q8_0[2 + 5] = 0xFF;
    q8_0[2 + 31] = 0x7F;
    decode(MOE_TYPE_Q8_0, q8_0, sizeof q8_0, 32, y);
    expect_at(MOE_TYPE_Q8_0, y, 0, -31.75f);
    expect_at(MOE_TYPE_Q8_0, y, 5, -0.25f);
    expect_at(MOE_TYPE_Q8_0, y, 31, 31.75f);

    /* IQ4_NL, d = 1: nibbles index the table {-127 ... 113} */
    uint8_t iq4_nl[18] = {0x00, 0x3C, 0xF0, 0x00, 0x00, 0x78};
    decode(MOE_TYPE_IQ4_NL, iq4_nl, sizeof iq4_nl, 32, y);
    expect_at(MOE_TYPE_IQ4_NL, y, 0, -127.0f);
    expect_at(MOE_TYPE_IQ4_NL, y, 16, 113.0f);
    expect_at(MOE_TYPE_IQ4_NL, y, 3, 1.0f);
    expect_at(MOE_TYPE_IQ4_NL, y, 19, -10.0f);
}

static void literal_q2_q3(void) {
    float y[256];
    /* Q2_K, d = 1, dmin = 0.5. qs[0] = 0xE4 holds codes 0,1,2,3 for e0, e32,
     * e64, e96 (sub-blocks 0, 2, 4, 6); qs[32] bits 1:0 = 3 is e128 (sub 8). */
    uint8_t q2[84] = {0};
    q2[0] = 0x23;  /* sub 0: sc 3, m 2 -> 0*3 - 1 */
    q2[2] = 0x12;  /* sub 2: sc 2, m 1 -> 1*2 - 0.5 */
    q2[4] = 0x4F;  /* sub 4: sc 15, m 4 -> 2*15 - 2 */
    q2[6] = 0xF1;  /* sub 6: sc 1, m 15 -> 3*1 - 7.5 */
    q2[8] = 0x05;  /* sub 8: sc 5, m 0 -> 3*5 */
    q2[16 + 0] = 0xE4;
    q2[16 + 32] = 0x03;
    q2[80] = 0x00, q2[81] = 0x3C; /* d */
    q2[82] = 0x00, q2[83] = 0x38; /* dmin */
    decode(MOE_TYPE_Q2_K, q2, sizeof q2, 256, y);
    expect_at(MOE_TYPE_Q2_K, y, 0, -1.0f);
    expect_at(MOE_TYPE_Q2_K, y, 32, 1.5f);
    expect_at(MOE_TYPE_Q2_K, y, 64, 28.0f);
    expect_at(MOE_TYPE_Q2_K, y, 96, -4.5f);
    expect_at(MOE_TYPE_Q2_K, y, 128, 15.0f);
    expect_at(MOE_TYPE_Q2_K, y, 1, -1.0f); /* code 0, same sub-block */

    /* Q3_K, d = 0.5. Scales (offset 32): sc0 = 1 (33: low 1, high 2),
     * sc9 = -32 (0), sc15 = 31 (63: low 15, high 3), all others 0 (32). */
    uint8_t q3[110] = {0};
    uint8_t *hmask = q3, *qs = q3 + 32, *sc = q3 + 96;
    sc[0] = 0x01;  /* low nibbles of sc0 | sc8 */
    sc[7] = 0xF0;  /* sc7 | sc15 */
    sc[8] = 0xAA;  /* high bits of sc0, sc4, sc8, sc12: 2 each */
    sc[9] = 0x8A;  /* sc1, sc5 = 2; sc9 = 0; sc13 = 2 */
    sc[10] = 0xAA;
    sc[11] = 0xEA; /* sc3, sc7, sc11 = 2; sc15 = 3 */
    q3[108] = 0x00, q3[109] = 0x38;
    qs[0] = 0x03, hmask[0] = 0x01;  /* e0: low 3, high set -> 3 -> 0.5*1*3 */
    /* e1: low 0, high clear -> -4 -> 0.5*1*-4 */
    qs[48] = 0x01;                  /* e144 (sub 9): low 1, hmask[16] bit 4 clear -> -3 */
    qs[63] = 0xC0, hmask[31] = 0x80; /* e255 (sub 15): low 3, high set -> 3 */
    decode(MOE_TYPE_Q3_K, q3, sizeof q3, 256, y);
    expect_at(MOE_TYPE_Q3_K, y, 0, 1.5f);
    expect_at(MOE_TYPE_Q3_K, y, 1, -2.0f);
    expect_at(MOE_TYPE_Q3_K, y, 144, 48.0f);
    expect_at(MOE_TYPE_Q3_K, y, 255, 46.5f);
    expect_at(MOE_TYPE_Q3_K, y, 40, 0.0f);
}

static void literal_q4_q5_q6(void) {
    float y[256];
    /* Q4_K, d = 1, dmin = 0.5. sc0 = 1, m0 = 2; sc5 = 63 (low 15, high 3),
     * m5 = 17 (low 1, high 1); all others 0. */
    uint8_t q4[144] = {0x00, 0x3C, 0x00, 0x38};
    uint8_t *s4 = q4 + 4, *qs4 = q4 + 16;
    s4[0] = 0x01;  /* sc0 */
    s4[4] = 0x02;  /* m0 */
    s4[1] = 0xC0;  /* sc1 = 0, high bits of sc5 = 3 */
    s4[5] = 0x40;  /* m1 = 0, high bits of m5 = 1 */
    s4[9] = 0x1F;  /* low nibbles: sc5 = 15, m5 = 1 */
    qs4[0] = 0x07;  /* e0 (sub 0, low nibble of chunk 0) = 7 -> 1*7 - 0.5*2 */
    qs4[67] = 0xA0; /* e163 (sub 5 = high nibbles of chunk 2, l = 3) = 10 */
    decode(MOE_TYPE_Q4_K, q4, sizeof q4, 256, y);
    expect_at(MOE_TYPE_Q4_K, y, 0, 6.0f);
    expect_at(MOE_TYPE_Q4_K, y, 163, 621.5f); /* 63*10 - 0.5*17 */
    expect_at(MOE_TYPE_Q4_K, y, 160, -8.5f);
    expect_at(MOE_TYPE_Q4_K, y, 100, 0.0f);

    /* Q5_K: the same scales and low nibbles, plus fifth bits: qh[0] bit 0
     * (e0) and qh[3] bit 5 (e163). */
    uint8_t q5[176] = {0};
    memcpy(q5, q4, 16);
    q5[16 + 0] = 0x01;
    q5[16 + 3] = 0x20;
    memcpy(q5 + 48, qs4, 128);
    decode(MOE_TYPE_Q5_K, q5, sizeof q5, 256, y);
    expect_at(MOE_TYPE_Q5_K, y, 0, 22.0f);      /* 1*23 - 1 */
    expect_at(MOE_TYPE_Q5_K, y, 163, 1629.5f);  /* 63*26 - 8.5 */
    expect_at(MOE_TYPE_Q5_K, y, 160, -8.5f);

    /* Q6_K, d = 0.5; scales: sub 0 = 2, sub 5 = -128, sub 15 = -1. */
    uint8_t q6[210] = {0};
    uint8_t *ql = q6, *qh = q6 + 128, *s6 = q6 + 192;
    s6[0] = 0x02, s6[5] = 0x80, s6[15] = 0xFF;
    q6[208] = 0x00, q6[209] = 0x38;
    /* e80: half 0, l = 16, third quarter -> high nibble of ql[16], qh[16] bits 5:4 */
    ql[16] = 0x50, qh[16] = 0x10; /* q = 5 | 1<<4 = 21 -> 21-32 = -11 */
    /* e255: half 1, l = 31, fourth quarter -> high nibble of ql[127], qh[63] bits 7:6 */
    ql[127] = 0xF0, qh[63] = 0xC0; /* q = 63 -> 31 */
    decode(MOE_TYPE_Q6_K, q6, sizeof q6, 256, y);
    expect_at(MOE_TYPE_Q6_K, y, 0, -32.0f);   /* 0.5*2*(0-32) */
    expect_at(MOE_TYPE_Q6_K, y, 80, 704.0f);  /* 0.5*-128*-11 */
    expect_at(MOE_TYPE_Q6_K, y, 255, -15.5f); /* 0.5*-1*31 */

    /* IQ4_XS, d = 0.5; ls0 = 33 (dl 0.5), ls3 = 0 (dl -16), ls7 = 63 (dl 15.5),
     * others 32 (dl 0). scales_h = 2,2,2,0,2,2,2,3 in 2-bit fields = 0xEA2A. */
    uint8_t xs[136] = {0x00, 0x38, 0x2A, 0xEA, 0x01, 0x00, 0x00, 0xF0};
    uint8_t *qx = xs + 8;
    qx[0] = 0xF0;  /* e0 -> T[0], e16 -> T[15] */
    qx[53] = 0x08; /* sub 3, j = 5: e101 -> T[8] = 1, e117 -> T[0] */
    qx[127] = 0x70; /* sub 7, j = 15: e239 -> T[0], e255 -> T[7] = -10 */
    decode(MOE_TYPE_IQ4_XS, xs, sizeof xs, 256, y);
    expect_at(MOE_TYPE_IQ4_XS, y, 0, -63.5f);
    expect_at(MOE_TYPE_IQ4_XS, y, 16, 56.5f);
    expect_at(MOE_TYPE_IQ4_XS, y, 101, -16.0f);
    expect_at(MOE_TYPE_IQ4_XS, y, 117, 2032.0f);
    expect_at(MOE_TYPE_IQ4_XS, y, 239, -1968.5f);
    expect_at(MOE_TYPE_IQ4_XS, y, 255, -155.0f);
    expect_at(MOE_TYPE_IQ4_XS, y, 40, 0.0f);
}

/* ---- 2. encoder round trips ---------------------------------------------------
 * Each encoder takes per-element integer codes and per-sub-block scales and
 * writes the bytes the way the spec describes them element by element. */

/* fp16 bit patterns of small dyadic numbers, so every product is exact */
static const uint16_t f16_bits[] = {0x3800, 0x3A00, 0x3C00, 0xB400, 0x3400, 0x4100};
static const double f16_vals[] = {0.5, 0.75, 1.0, -0.25, 0.25, 2.5};
#define N_F16 (sizeof f16_vals / sizeof f16_vals[0])

static int pick_f16(void) { return (int)(test_rng_next() % N_F16); }

/* Split-half nibbles of a 32-value block: low nibble of byte j = value j. */
static void put_nibbles(uint8_t *qs, const int *q) {
    for (int j = 0; j < 16; j++)
        qs[j] = (uint8_t)(q[j] | q[j + 16] << 4);
}

/* Legacy 32-value types: codes q (range per type), d and (type-1) m. */
static void roundtrip_legacy(moe_type t) {
    uint8_t blk[40] = {0};
    int q[32];
    double want[32];
    float y[32];
    const int id = pick_f16(), im = pick_f16();
    const double d = f16_vals[id], m = f16_vals[im];
    const int bits = t == MOE_TYPE_Q8_0 ? 8 : (t == MOE_TYPE_Q5_0 || t == MOE_TYPE_Q5_1) ? 5 : 4;
    for (int j = 0; j < 32; j++)
        q[j] = bits == 8 ? rng_int(-128, 127) : rng_int(0, (1 << bits) - 1);
    moe_store_le16(blk, f16_bits[id]);
    size_t size = 0;
    uint32_t qh = 0;
    int lo[32];
    for (int j = 0; j < 32; j++) {
        lo[j] = q[j] & 15;
        qh |= (uint32_t)(q[j] >> 4 & 1) << j;
    }
    switch (t) {
    case MOE_TYPE_Q4_0:
    case MOE_TYPE_IQ4_NL:
        put_nibbles(blk + 2, lo), size = 18;
        break;
    case MOE_TYPE_Q4_1:
        moe_store_le16(blk + 2, f16_bits[im]), put_nibbles(blk + 4, lo), size = 20;
        break;
    case MOE_TYPE_Q5_0:
        moe_store_le32(blk + 2, qh), put_nibbles(blk + 6, lo), size = 22;
        break;
    case MOE_TYPE_Q5_1:
        moe_store_le16(blk + 2, f16_bits[im]), moe_store_le32(blk + 4, qh);
        put_nibbles(blk + 8, lo), size = 24;
        break;
    default: /* Q8_0 */
        for (int j = 0; j < 32; j++)
            blk[2 + j] = (uint8_t)(int8_t)q[j];
        size = 34;
    }
    for (int j = 0; j < 32; j++) {
        switch (t) {
        case MOE_TYPE_Q4_0: want[j] = d * (q[j] - 8); break;
        case MOE_TYPE_Q5_0: want[j] = d * (q[j] - 16); break;
        case MOE_TYPE_Q4_1:
        case MOE_TYPE_Q5_1: want[j] = d * q[j] + m; break;
        case MOE_TYPE_IQ4_NL: want[j] = d * moe_iq4nl_values[q[j]]; break;
        default: want[j] = d * q[j];
        }
    }
    CHECK(size == moe_type_get(t)->type_size, "%s block size", moe_type_name(t));
    decode(t, blk, size, 32, y);
    expect_all(t, y, want, 32);
}

/* Where the spec puts element e's code in the shared 2-bit plane of
 * Q2_K/Q3_K: byte 32·(e/128) + e%32, bit pair (e%128)/32. */
static void put_code2(uint8_t *qs, int e, int v) {
    qs[32 * (e / 128) + e % 32] |= (uint8_t)(v << (2 * ((e % 128) / 32)));
}

static void roundtrip_q2_K(void) {
    uint8_t b[84] = {0};
    int sc[16], mn[16], q[256];
    double want[256];
    float y[256];
    const int id = pick_f16(), im = pick_f16();
    for (int s = 0; s < 16; s++) {
        sc[s] = rng_int(0, 15), mn[s] = rng_int(0, 15);
        b[s] = (uint8_t)(sc[s] | mn[s] << 4);
    }
    for (int e = 0; e < 256; e++) {
        q[e] = rng_int(0, 3);
        put_code2(b + 16, e, q[e]);
        want[e] = f16_vals[id] * sc[e / 16] * q[e] - f16_vals[im] * mn[e / 16];
    }
    moe_store_le16(b + 80, f16_bits[id]);
    moe_store_le16(b + 82, f16_bits[im]);
    decode(MOE_TYPE_Q2_K, b, sizeof b, 256, y);
    expect_all(MOE_TYPE_Q2_K, y, want, 256);
}

static void roundtrip_q3_K(void) {
    uint8_t b[110] = {0};
    uint8_t *hmask = b, *qs = b + 32, *scales = b + 96;
    int sc[16];
    double want[256];
    float y[256];
    const int id = pick_f16();
    for (int s = 0; s < 16; s++) {
        sc[s] = rng_int(-32, 31);
        const int u = sc[s] + 32; /* stored 6-bit */
        scales[s % 8] |= (uint8_t)((u & 15) << (s < 8 ? 0 : 4));
        scales[8 + s % 4] |= (uint8_t)((u >> 4) << (2 * (s / 4)));
    }
    for (int e = 0; e < 256; e++) {
        const int v = rng_int(-4, 3), u = v + 4; /* high bit set <=> v >= 0 */
        put_code2(qs, e, u & 3);
        hmask[e % 32] |= (uint8_t)((u >> 2) << (4 * (e / 128) + (e % 128) / 32));
        want[e] = f16_vals[id] * sc[e / 16] * v;
    }
    moe_store_le16(b + 108, f16_bits[id]);
    decode(MOE_TYPE_Q3_K, b, sizeof b, 256, y);
    expect_all(MOE_TYPE_Q3_K, y, want, 256);
}

/* Q4_K/Q5_K 6-bit scale and min of sub-block s into the 12 scale bytes. */
static void put_k4_scale_min(uint8_t *p, int s, int sc, int m) {
    if (s < 4) {
        p[s] |= (uint8_t)sc;
        p[s + 4] |= (uint8_t)m;
    } else {
        p[s + 4] |= (uint8_t)((sc & 15) | (m & 15) << 4);
        p[s - 4] |= (uint8_t)((sc >> 4) << 6);
        p[s] |= (uint8_t)((m >> 4) << 6);
    }
}

/* Q4_K (five_bits false) and Q5_K. */
static void roundtrip_q45_K(bool five_bits) {
    const moe_type t = five_bits ? MOE_TYPE_Q5_K : MOE_TYPE_Q4_K;
    uint8_t b[176] = {0};
    uint8_t *qh = b + 16, *qs = b + (five_bits ? 48 : 16);
    int sc[8], mn[8];
    double want[256];
    float y[256];
    const int id = pick_f16(), im = pick_f16();
    moe_store_le16(b, f16_bits[id]);
    moe_store_le16(b + 2, f16_bits[im]);
    for (int s = 0; s < 8; s++) {
        sc[s] = rng_int(0, 63), mn[s] = rng_int(0, 63);
        put_k4_scale_min(b + 4, s, sc[s], mn[s]);
    }
    for (int e = 0; e < 256; e++) {
        const int s = e / 32, l = e % 32;
        const int q = rng_int(0, five_bits ? 31 : 15);
        qs[32 * (s / 2) + l] |= (uint8_t)((q & 15) << (4 * (s % 2)));
        if (five_bits)
            qh[l] |= (uint8_t)((q >> 4) << s);
        want[e] = f16_vals[id] * sc[s] * q - f16_vals[im] * mn[s];
    }
    decode(t, b, five_bits ? 176 : 144, 256, y);
    expect_all(t, y, want, 256);
}

static void roundtrip_q6_K(void) {
    uint8_t b[210] = {0};
    uint8_t *ql = b, *qh = b + 128;
    int sc[16];
    double want[256];
    float y[256];
    const int id = pick_f16();
    for (int s = 0; s < 16; s++) {
        sc[s] = rng_int(-128, 127);
        b[192 + s] = (uint8_t)(int8_t)sc[s];
    }
    for (int e = 0; e < 256; e++) {
        /* quarter k of half n: low nibbles of ql[l], ql[l+32], then high nibbles */
        const int n = e / 128, k = (e % 128) / 32, l = e % 32;
        const int q = rng_int(0, 63);
        ql[64 * n + l + 32 * (k & 1)] |= (uint8_t)((q & 15) << (4 * (k >> 1)));
        qh[32 * n + l] |= (uint8_t)((q >> 4) << (2 * k));
        want[e] = f16_vals[id] * sc[e / 16] * (q - 32);
    }
    moe_store_le16(b + 208, f16_bits[id]);
    decode(MOE_TYPE_Q6_K, b, sizeof b, 256, y);
    expect_all(MOE_TYPE_Q6_K, y, want, 256);
}

static void roundtrip_iq4_xs(void) {
    uint8_t b[136] = {0};
    double want[256];
    float y[256];
    const int id = pick_f16();
    uint16_t scales_h = 0;
    moe_store_le16(b, f16_bits[id]);
    for (int s = 0; s < 8; s++) {
        const int ls = rng_int(0, 63);
        b[4 + s / 2] |= (uint8_t)((ls & 15) << (4 * (s % 2)));
        scales_h |= (uint16_t)((ls >> 4) << (2 * s));
        int q[32];
        for (int j = 0; j < 32; j++) {
            q[j] = rng_int(0, 15);
            want[32 * s + j] = f16_vals[id] * (ls - 32) * moe_iq4nl_values[q[j]];
        }
        put_nibbles(b + 8 + 16 * s, q);
    }
    moe_store_le16(b + 2, scales_h);
    decode(MOE_TYPE_IQ4_XS, b, sizeof b, 256, y);
    expect_all(MOE_TYPE_IQ4_XS, y, want, 256);
}

static void roundtrips(uint32_t seed) {
    printf("round-trip seed %u\n", seed);
    test_rng_state = seed;
    static const moe_type legacy[] = {MOE_TYPE_Q4_0, MOE_TYPE_Q4_1, MOE_TYPE_Q5_0,
                                      MOE_TYPE_Q5_1, MOE_TYPE_Q8_0, MOE_TYPE_IQ4_NL};
    for (int rep = 0; rep < 20; rep++) {
        for (size_t i = 0; i < sizeof legacy / sizeof legacy[0]; i++)
            roundtrip_legacy(legacy[i]);
        roundtrip_q2_K();
        roundtrip_q3_K();
        roundtrip_q45_K(false);
        roundtrip_q45_K(true);
        roundtrip_q6_K();
        roundtrip_iq4_xs();
    }
}

/* ---- 3. moe_dequantize_rows ------------------------------------------------- */

static void rows_api(void) {
    moe_err err = {0};
    /* Q4_0, 3 rows of 64: block b (row-major) has d = 1 and every nibble b,
     * so element i of row r is (2r + i/32) - 8. */
    uint8_t q4[6 * 18];
    for (int b = 0; b < 6; b++) {
        moe_store_le16(q4 + 18 * b, 0x3C00);
        memset(q4 + 18 * b + 2, b | b << 4, 16);
    }
    float y[3 * 512];
    CHECK(moe_dequantize_rows(MOE_TYPE_Q4_0, q4, y, 64, 3, &err) == MOE_OK, "%s", err.msg);
    int bad = 0;
    for (int r = 0; r < 3; r++)
        for (int i = 0; i < 64; i++)
            bad += y[64 * r + i] != (float)(2 * r + i / 32 - 8);
    CHECK(bad == 0, "q4_0 3x64: %d wrong values", bad);

    /* Q4_K, 2 rows of 512: super-block b has d = 1, dmin = 0.25, every scale 1,
     * every min 2 and every nibble b, so values are b - 0.5. */
    uint8_t q4k[4 * 144] = {0};
    for (int b = 0; b < 4; b++) {
        uint8_t *p = q4k + 144 * b;
        moe_store_le16(p, 0x3C00);
        moe_store_le16(p + 2, 0x3400);
        for (int s = 0; s < 8; s++)
            put_k4_scale_min(p + 4, s, 1, 2);
        memset(p + 16, b | b << 4, 128);
    }
    CHECK(moe_dequantize_rows(MOE_TYPE_Q4_K, q4k, y, 512, 2, &err) == MOE_OK, "%s", err.msg);
    bad = 0;
    for (int i = 0; i < 1024; i++)
        bad += y[i] != (float)(i / 256) - 0.5f;
    CHECK(bad == 0, "q4_K 2x512: %d wrong values", bad);

    /* Row lengths that do not fill whole blocks are rejected, dst untouched. */
    static const struct { moe_type t; int64_t ne0; } ragged[] = {
        {MOE_TYPE_Q4_0, 48}, {MOE_TYPE_Q8_0, 33}, {MOE_TYPE_IQ4_NL, 16},
        {MOE_TYPE_Q4_K, 128}, {MOE_TYPE_Q6_K, 288}, {MOE_TYPE_IQ4_XS, 255},
    };
    for (size_t i = 0; i < sizeof ragged / sizeof ragged[0]; i++) {
        y[0] = 42.0f;
        moe_status st = moe_dequantize_rows(ragged[i].t, q4k, y, ragged[i].ne0, 1, &err);
        CHECK(st == MOE_ERR_FORMAT && y[0] == 42.0f, "%s ne0 %lld: status %d",
              moe_type_name(ragged[i].t), (long long)ragged[i].ne0, (int)st);
        CHECK(strstr(err.msg, "multiple") != NULL, "message: %s", err.msg);
    }
}

/* ---- golden: llama.cpp's quantized conformance models ----------------------- */

/* Bands on the relative rms error rms(deq − ref)/rms(ref), from first
 * principles. A uniform quantizer with step Δ has rms error Δ/√12. Each block
 * scale maps the block's spread onto the code range, so Δ = spread/steps:
 *   symmetric codes (Q8_0, Q5_0, Q4_0, Q6_K, Q3_K): spread = max|x| of the block,
 *     steps = the negative half of the code range (127, 16, 8, 32, 4), since
 *     the reference quantizers map the extreme value to the most negative code;
 *   codes with a min (Q5_1, Q4_1, Q5_K, Q4_K, Q2_K): spread = max − min,
 *     steps = 2^b − 1;
 *   IQ4: 16 non-uniform levels spanning −127..113 of max|x|: Δ ≈ max|x|/8 as Q4_0.
 * The pack's weights are seeded Gaussians, so the spreads are order statistics
 * of N(0,1) (values below, per 16 or 32 values; the K-quants' sub-blocks are
 * 16 values for Q2_K/Q3_K/Q6_K and 32 for Q4_K/Q5_K). est = step/√12; the band
 * is est·1.15, which leaves room for the spread varying block to block, while
 * one mis-decoded bit plane or scale (errors of order 1) fails at once. */
#define AMAX32 2.345  /* E max|x| over 32 N(0,1) values */
#define AMAX16 2.077  /* ... over 16 */
#define RANGE32 4.136 /* E (max − min) over 32 */
#define RANGE16 3.531 /* ... over 16 */
#define BAND_FACTOR 1.15

typedef struct golden_case {
    const char *name;
    moe_type type;
    double step; /* expected Δ in units of the weights' rms */
} golden_case;

static const golden_case golden_cases[] = {
    {"q8_0", MOE_TYPE_Q8_0, AMAX32 / 127},   {"q6_K", MOE_TYPE_Q6_K, AMAX16 / 32},
    {"q5_0", MOE_TYPE_Q5_0, AMAX32 / 16},    {"q5_1", MOE_TYPE_Q5_1, RANGE32 / 31},
    {"q5_K", MOE_TYPE_Q5_K, RANGE32 / 31},   {"q4_0", MOE_TYPE_Q4_0, AMAX32 / 8},
    {"q4_1", MOE_TYPE_Q4_1, RANGE32 / 15},   {"q4_K", MOE_TYPE_Q4_K, RANGE32 / 15},
    {"iq4_nl", MOE_TYPE_IQ4_NL, AMAX32 / 8}, {"iq4_xs", MOE_TYPE_IQ4_XS, AMAX32 / 8},
    {"q3_K", MOE_TYPE_Q3_K, AMAX16 / 4},     {"q2_K", MOE_TYPE_Q2_K, RANGE16 / 3},
};
#define N_GOLDEN (sizeof golden_cases / sizeof golden_cases[0])

typedef struct golden_result {
    double rel;     /* relative rms error over all quantized tensors */
    double worst;   /* worst single tensor */
    double band;
    int n_quant, n_f32;
} golden_result;

static int64_t n_elements(const moe_gguf_tensor *t) {
    return t->ne[0] * t->ne[1] * t->ne[2] * t->ne[3];
}

/* Compares tensor i of q with the same-named tensor of ref, adding the squared
 * error and reference energy of a quantized tensor to *err2 / *ref2. */
static void golden_tensor(const golden_case *c, const moe_gguf_file *q, uint64_t i,
                          const moe_gguf_file *ref, double *err2, double *ref2,
                          golden_result *res) {
    const moe_gguf_tensor *t = &q->g->tensors[i];
    const int64_t j = moe_gguf_find_tensor(ref->g, t->name);
    CHECK(j >= 0, "%s: tensor %s not in the reference", c->name, t->name);
    if (j < 0)
        return;
    const moe_gguf_tensor *r = &ref->g->tensors[j];
    CHECK(memcmp(t->ne, r->ne, sizeof t->ne) == 0 && r->type == MOE_TYPE_F32,
          "%s: %s shape or reference type differs", c->name, t->name);
    const uint8_t *qd = moe_gguf_file_tensor_data(q, i);
    const uint8_t *rd = moe_gguf_file_tensor_data(ref, (uint64_t)j);
    if (t->type == MOE_TYPE_F32) {
        CHECK(t->nbytes == r->nbytes && memcmp(qd, rd, t->nbytes) == 0,
              "%s: F32 tensor %s is not bitwise identical", c->name, t->name);
        res->n_f32++;
        return;
    }
    CHECK(t->type == c->type, "%s: %s has type %s", c->name, t->name, moe_type_name(t->type));
    const int64_t n = n_elements(t);
    float *deq = malloc((size_t)n * sizeof(float)), *rv = malloc((size_t)n * sizeof(float));
    moe_err err = {0};
    CHECK(deq && rv, "out of memory");
    if (deq && rv && moe_dequantize_rows(t->type, qd, deq, t->ne[0], n / t->ne[0], &err) == MOE_OK &&
        moe_dequantize_rows(MOE_TYPE_F32, rd, rv, n, 1, &err) == MOE_OK) {
        double e2 = 0, r2 = 0;
        for (int64_t k = 0; k < n; k++) {
            const double dlt = (double)deq[k] - rv[k];
            e2 += dlt * dlt;
            r2 += (double)rv[k] * rv[k];
        }
        const double rel = sqrt(e2 / r2);
        CHECK(rel < res->band, "%s: %s relative rms error %.4f over band %.4f", c->name,
              t->name, rel, res->band);
        res->worst = rel > res->worst ? rel : res->worst;
        *err2 += e2, *ref2 += r2;
        res->n_quant++;
    } else {
        CHECK(0, "%s: %s: %s", c->name, t->name, err.msg);
    }
    free(deq);
    free(rv);
}

static void golden_model(const char *dir, const golden_case *c, const moe_gguf_file *ref,
                         golden_result *res) {
    char path[4096];
    snprintf(path, sizeof path, "%s/models/tiny-llama-%s.gguf", dir, c->name);
    moe_gguf_file *q = NULL;
    moe_err err = {0};
    CHECK(moe_gguf_file_open(path, true, &q, &err) == MOE_OK, "%s", err.msg);
    if (!q)
        return;
    CHECK(q->g->n_tensors == ref->g->n_tensors, "%s: %llu tensors, reference has %llu",
          c->name, (unsigned long long)q->g->n_tensors, (unsigned long long)ref->g->n_tensors);
    res->band = BAND_FACTOR * c->step / sqrt(12.0);
    double err2 = 0, ref2 = 0;
    for (uint64_t i = 0; i < q->g->n_tensors; i++)
        golden_tensor(c, q, i, ref, &err2, &ref2, res);
    res->rel = ref2 > 0 ? sqrt(err2 / ref2) : 1.0;
    CHECK(res->n_quant > 0 && res->n_f32 > 0, "%s: %d quantized, %d F32 tensors", c->name,
          res->n_quant, res->n_f32);
    CHECK(res->rel < res->band, "%s: relative rms error %.4f over band %.4f", c->name,
          res->rel, res->band);
    moe_gguf_file_close(q);
}

static double rel_of(const golden_result *res, const char *name) {
    for (size_t i = 0; i < N_GOLDEN; i++)
        if (strcmp(golden_cases[i].name, name) == 0)
            return res[i].rel;
    return NAN;
}

static void test_golden(void) {
    const char *dir = test_conformance_dir();
    char path[4096];
    snprintf(path, sizeof path, "%s/models/tiny-llama.gguf", dir);
    moe_gguf_file *ref = NULL;
    moe_err err = {0};
    CHECK(moe_gguf_file_open(path, true, &ref, &err) == MOE_OK, "%s", err.msg);
    if (!ref)
        return;
    golden_result res[N_GOLDEN] = {{0}};
    printf("%-7s %5s %7s %9s %9s %9s %9s\n", "type", "bpw", "q+f32", "rel rms", "worst",
           "estimate", "band");
    for (size_t i = 0; i < N_GOLDEN; i++) {
        const golden_case *c = &golden_cases[i];
        const moe_type_traits *tr = moe_type_get(c->type);
        golden_model(dir, c, ref, &res[i]);
        printf("%-7s %5.2f %3d+%-3d %9.5f %9.5f %9.5f %9.5f\n", c->name,
               8.0 * (double)tr->type_size / (double)tr->block_size, res[i].n_quant,
               res[i].n_f32, res[i].rel, res[i].worst, c->step / sqrt(12.0), res[i].band);
    }
    /* Fewer bits must mean more error; a decoder that reads the wrong plane
     * could still land inside a loose band but not keep this order. */
    static const char *const order[][2] = {
        {"q8_0", "q6_K"}, {"q6_K", "q5_K"}, {"q5_K", "q4_K"}, {"q4_K", "q3_K"},
        {"q3_K", "q2_K"}, {"q8_0", "q4_0"}, {"q5_0", "q4_0"}, {"q5_1", "q4_1"},
        {"q8_0", "iq4_nl"}, {"q5_K", "iq4_xs"},
    };
    for (size_t i = 0; i < sizeof order / sizeof order[0]; i++)
        CHECK(rel_of(res, order[i][0]) < rel_of(res, order[i][1]), "%s error %.4f is not below %s %.4f",
              order[i][0], rel_of(res, order[i][0]), order[i][1], rel_of(res, order[i][1]));
    moe_gguf_file_close(ref);
}

int main(int argc, char **argv) {
    const char *mode = argc > 1 ? argv[1] : "unit";
    if (strcmp(mode, "unit") == 0) {
        literal_legacy();
        literal_q2_q3();
        literal_q4_q5_q6();
        roundtrips(20250301u);
        rows_api();
    } else if (strcmp(mode, "golden") == 0) {
        test_golden();
    } else {
        fprintf(stderr, "usage: test_dequant unit|golden\n");
        return 2;
    }
    TEST_DONE();
}
