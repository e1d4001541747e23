/* dequant_kquants — scalar reference dequantizers of the 256-value super-block
 * types: Q2_K, Q3_K, Q4_K, Q5_K, Q6_K and IQ4_XS (../shared/spec/quant.md §1.3,
 * §1.4).
 *
 * The reference path: plain loops, explicit little-endian loads at offsetof()
 * positions (host byte order and src alignment do not matter), and the same
 * floating-point operation order as the reference implementation, so results
 * agree bit for bit. Each decoder first unpacks the sub-block scales, then
 * walks the packed codes.
 */
#include <stddef.h>
#include <stdint.h>

#include "formats/gguf/cursor.h"
#include "formats/quant/dequant.h"
#include "formats/quant/fp16.h"
#include "formats/quant/quant_blocks.h"

static float load_f16(const uint8_t *p) { return moe_f16_to_f32(moe_load_le16(p)); }

/* The 2-bit code plane of Q2_K and Q3_K. Each half n (elements 128n..128n+127)
 * owns 32 bytes; byte l of it packs four elements 32 apart:
 *
 *   qs[32n + l]:   7  6 | 5  4 | 3  2 | 1  0
 *                 e+96  | e+64 | e+32 | e        (e = 128n + l)
 *
 * Returns the code of element e (0..255) of the super-block. */
static int code2(const uint8_t *qs, int e) {
    const int n = e / 128, j = (e % 128) / 32, l = e % 32;
    return (qs[32 * n + l] >> (2 * j)) & 3;
}

/* Q2_K, 84 bytes, 16 sub-blocks of 16:
 *
 *   scales[16]  byte s: [ min m_s (4 bits) | scale sc_s (4 bits) ]
 *   qs[64]      2-bit codes, see code2()
 *   d, dmin     fp16
 *
 *   y = d·sc_s·q − dmin·m_s,  s = element / 16 */
void moe_dequant_q2_K(const void *src, float *dst, int64_t ne0, int64_t nrows) {
    const uint8_t *p = src;
    const int64_t nblocks = ne0 / MOE_QK_K * nrows;
    for (int64_t b = 0; b < nblocks; b++, p += sizeof(block_q2_K), dst += MOE_QK_K) {
        const float d = load_f16(p + offsetof(block_q2_K, d));
        const float dmin = load_f16(p + offsetof(block_q2_K, dmin));
        const uint8_t *scales = p + offsetof(block_q2_K, scales);
        const uint8_t *qs = p + offsetof(block_q2_K, qs);
        for (int s = 0; s < MOE_QK_K / 16; s++) {
            const float dl = d * (float)(scales[s] & 0x0f);
            const float ml = dmin * (float)(scales[s] >> 4);
            for (int e = 16 * s; e < 16 * s + 16; e++)
                dst[e] = dl * (float)code2(qs, e) - ml;
        }
    }
}

/* Q3_K's 16 signed 6-bit sub-block scales, stored with offset 32 in 12 bytes:
 *
 *   scales[0..7]   byte i: [ low 4 bits of sc_{i+8} | low 4 bits of sc_i ]
 *   scales[8..11]  byte 8+i: [ sc_{12+i} | sc_{8+i} | sc_{4+i} | sc_i ]
 *                            bits 5:4 of each, 2 bits per scale, LSB first */
static void q3_K_scales(const uint8_t *packed, int sc[16]) {
    for (int s = 0; s < 16; s++) {
        const int low = s < 8 ? packed[s] & 0x0f : packed[s - 8] >> 4;
        const int high = (packed[8 + s % 4] >> (2 * (s / 4))) & 3;
        sc[s] = (low | high << 4) - 32;
    }
}

/* Q3_K, 110 bytes, 16 sub-blocks of 16:
 *
 *   hmask[32]   bit (4n + j) of hmask[l] = high bit of element 128n + 32j + l
 *   qs[64]      low 2 bits, see code2()
 *   scales[12]  see q3_K_scales()
 *   d           fp16
 *
 *   v = low2 − (high bit set ? 0 : 4)  in −4..3;   y = d·sc_s·v */
void moe_dequant_q3_K(const void *src, float *dst, int64_t ne0, int64_t nrows) {
    const uint8_t *p = src;
    const int64_t nblocks = ne0 / MOE_QK_K * nrows;
    for (int64_t b = 0; b < nblocks; b++, p += sizeof(block_q3_K), dst += MOE_QK_K) {
        const float d = load_f16(p + offsetof(block_q3_K, d));
        const uint8_t *hmask = p + offsetof(block_q3_K, hmask);
        const uint8_t *qs = p + offsetof(block_q3_K, qs);
        int sc[16];
        q3_K_scales(p + offsetof(block_q3_K, scales), sc);
        for (int s = 0; s < 16; s++) {
            const float dl = d * (float)sc[s];
            for (int e = 16 * s; e < 16 * s + 16; e++) {
                const int bit = (e / 128) * 4 + (e % 128) / 32;
                const int high = (hmask[e % 32] >> bit) & 1;
                dst[e] = dl * (float)(code2(qs, e) - (high ? 0 : 4));
            }
        }
    }
}

/* Q4_K/Q5_K's 8 sub-block scales and mins, 6 bits each, in 12 bytes:
 *
 *   byte i   (i < 4):  [ sc_{i+4} bits 5:4 | sc_i  (6 bits) ]
 *   byte 4+i (i < 4):  [ m_{i+4}  bits 5:4 | m_i   (6 bits) ]
 *   byte 8+i (i < 4):  [ m_{i+4}  bits 3:0 | sc_{i+4} bits 3:0 ] */
static void k4_scale_min(const uint8_t *q, int j, int *sc, int *m) {
    if (j < 4) {
        *sc = q[j] & 63;
        *m = q[j + 4] & 63;
    } else {
        *sc = (q[j + 4] & 0x0f) | ((q[j - 4] >> 6) << 4);
        *m = (q[j + 4] >> 4) | ((q[j] >> 6) << 4);
    }
}

/* Q4_K, 144 bytes, 8 sub-blocks of 32:
 *
 *   d, dmin     fp16
 *   scales[12]  see k4_scale_min()
 *   qs[128]     4 chunks of 32 bytes; byte l of chunk k:
 *                 [ element 64k+32+l (sub-block 2k+1) | element 64k+l (sub-block 2k) ]
 *
 *   y = d·sc_s·q − dmin·m_s,  s = element / 32 */
void moe_dequant_q4_K(const void *src, float *dst, int64_t ne0, int64_t nrows) {
    const uint8_t *p = src;
    const int64_t nblocks = ne0 / MOE_QK_K * nrows;
    for (int64_t b = 0; b < nblocks; b++, p += sizeof(block_q4_K), dst += MOE_QK_K) {
        const float d = load_f16(p + offsetof(block_q4_K, d));
        const float dmin = load_f16(p + offsetof(block_q4_K, dmin));
        const uint8_t *scales = p + offsetof(block_q4_K, scales);
        const uint8_t *qs = p + offsetof(block_q4_K, qs);
        for (int s = 0; s < 8; s++) {
            int sc, m;
            k4_scale_min(scales, s, &sc, &m);
            const float d1 = d * (float)sc, m1 = dmin * (float)m;
            const uint8_t *chunk = qs + 32 * (s / 2);
            const int shift = 4 * (s % 2);
            for (int l = 0; l < 32; l++)
                dst[32 * s + l] = d1 * (float)((chunk[l] >> shift) & 0x0f) - m1;
        }
    }
}

/* Q5_K, 176 bytes: Q4_K plus a fifth bit per value.
 *
 *   d, dmin, scales[12]   as Q4_K
 *   qh[32]      bit s of qh[l] = bit 4 of element 32s + l (sub-block s)
 *   qs[128]     low 4 bits, as Q4_K
 *
 *   y = d·sc_s·q − dmin·m_s,  q in 0..31 */
void moe_dequant_q5_K(const void *src, float *dst, int64_t ne0, int64_t nrows) {
    const uint8_t *p = src;
    const int64_t nblocks = ne0 / MOE_QK_K * nrows;
    for (int64_t b = 0; b < nblocks; b++, p += sizeof(block_q5_K), dst += MOE_QK_K) {
        const float d = load_f16(p + offsetof(block_q5_K, d));
        const float dmin = load_f16(p + offsetof(block_q5_K, dmin));
        const uint8_t *scales = p + offsetof(block_q5_K, scales);
        const uint8_t *qh = p + offsetof(block_q5_K, qh);
        const uint8_t *qs = p + offsetof(block_q5_K, qs);
        for (int s = 0; s < 8; s++) {
            int sc, m;
            k4_scale_min(scales, s, &sc, &m);
            const float d1 = d * (float)sc, m1 = dmin * (float)m;
            const uint8_t *chunk = qs + 32 * (s / 2);
            const int shift = 4 * (s % 2);
            for (int l = 0; l < 32; l++) {
                const int q = ((chunk[l] >> shift) & 0x0f) | ((qh[l] >> s) & 1) << 4;
                dst[32 * s + l] = d1 * (float)q - m1;
            }
        }
    }
}

/* Q6_K, 210 bytes, 16 sub-blocks of 16. Half n = elements 128n..128n+127 uses
 * ql[64n..], qh[32n..]; for l = 0..31 (e = 128n + l):
 *
 *   ql[64n + l]      [ e+64 bits 3:0 | e    bits 3:0 ]
 *   ql[64n + 32 + l] [ e+96 bits 3:0 | e+32 bits 3:0 ]
 *   qh[32n + l]      [ e+96 | e+64 | e+32 | e ]   bits 5:4 of each, 2 bits apiece
 *   scales[16]       int8, one per sub-block (element / 16)
 *   d                fp16
 *
 *   y = d·sc_s·(q − 32),  q in 0..63 */
void moe_dequant_q6_K(const void *src, float *dst, int64_t ne0, int64_t nrows) {
    const uint8_t *p = src;
    const int64_t nblocks = ne0 / MOE_QK_K * nrows;
    for (int64_t b = 0; b < nblocks; b++, p += sizeof(block_q6_K), dst += MOE_QK_K) {
        const float d = load_f16(p + offsetof(block_q6_K, d));
        const uint8_t *ql = p + offsetof(block_q6_K, ql);
        const uint8_t *qh = p + offsetof(block_q6_K, qh);
        const uint8_t *sc = p + offsetof(block_q6_K, scales);
        for (int n = 0; n < 2; n++) {
            const uint8_t *lo = ql + 64 * n, *hi = qh + 32 * n;
            for (int l = 0; l < 32; l++) {
                const int e = 128 * n + l;
                const int q[4] = {
                    (lo[l] & 0x0f) | ((hi[l] >> 0) & 3) << 4,
                    (lo[l + 32] & 0x0f) | ((hi[l] >> 2) & 3) << 4,
                    (lo[l] >> 4) | ((hi[l] >> 4) & 3) << 4,
                    (lo[l + 32] >> 4) | ((hi[l] >> 6) & 3) << 4,
                };
                for (int k = 0; k < 4; k++) {
                    const int ek = e + 32 * k;
                    dst[ek] = d * (float)(int8_t)sc[ek / 16] * (float)(q[k] - 32);
                }
            }
        }
    }
}

/* IQ4_XS, 136 bytes, 8 sub-blocks of 32:
 *
 *   d           fp16
 *   scales_h    u16 LE: bits 2s+1..2s = bits 5:4 of ls_s
 *   scales_l[4] byte i: [ ls_{2i+1} bits 3:0 | ls_{2i} bits 3:0 ]
 *   qs[128]     16 bytes per sub-block, split-half nibbles as IQ4_NL
 *
 *   y = d·(ls_s − 32)·T[q],  T = moe_iq4nl_values */
void moe_dequant_iq4_xs(const void *src, float *dst, int64_t ne0, int64_t nrows) {
    const uint8_t *p = src;
    const int64_t nblocks = ne0 / MOE_QK_K * nrows;
    for (int64_t b = 0; b < nblocks; b++, p += sizeof(block_iq4_xs), dst += MOE_QK_K) {
        const float d = load_f16(p + offsetof(block_iq4_xs, d));
        const unsigned scales_h = moe_load_le16(p + offsetof(block_iq4_xs, scales_h));
        const uint8_t *scales_l = p + offsetof(block_iq4_xs, scales_l);
        const uint8_t *qs = p + offsetof(block_iq4_xs, qs);
        for (int s = 0; s < 8; s++) {
            const int ls = ((scales_l[s / 2] >> (4 * (s % 2))) & 0x0f) |
                           (int)((scales_h >> (2 * s)) & 3) << 4;
            const float dl = d * (float)(ls - 32);
            const uint8_t *q = qs + 16 * s;
            float *y = dst + 32 * s;
            for (int j = 0; j < 16; j++) {
                y[j] = dl * (float)moe_iq4nl_values[q[j] & 0x0f];
                y[j + 16] = dl * (float)moe_iq4nl_values[q[j] >> 4];
            }
        }
    }
}
