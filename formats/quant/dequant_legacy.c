/* dequant_legacy — scalar reference dequantizers of the 32-value block types:
 * Q4_0, Q4_1, Q5_0, Q5_1, Q8_0 and IQ4_NL (../shared/spec/quant.md §1.2, §1.4).
 *
 * This is the reference path the SIMD kernels are tested against, so it favours
 * the obvious over the fast. Every block is read through explicit little-endian
 * loads at offsetof() positions of the block structs, never through struct
 * fields as host integers: the result does not depend on host byte order or on
 * the alignment of src (GGUF only aligns whole tensors).
 *
 * Each decoder first turns a block into 32 small integer codes, then applies
 * the type's affine or table map, in the same operation order as the
 * reference implementation so that results agree bit for bit.
 */
#include <stddef.h>
#include <stdint.h>

#include "formats/gguf/cursor.h"
#include "formats/quant/dequant.h"
#include "formats/quant/fp16.h"
#include "formats/quant/quant_blocks.h"

static float load_f16(const uint8_t *p) { return moe_f16_to_f32(moe_load_le16(p)); }

/* The split-half nibble order shared by every type here:
 *
 *   qs byte j (j = 0..15):   7      4 3      0
 *                           [ q[j+16] | q[j]   ]
 *
 * so the first 16 values sit in the low nibbles and the last 16 in the high
 * ones, not interleaved pairwise. */
static void split_half_nibbles(const uint8_t *qs, int q[MOE_QK]) {
    for (int j = 0; j < MOE_QK / 2; j++) {
        q[j] = qs[j] & 0x0f;
        q[j + MOE_QK / 2] = qs[j] >> 4;
    }
}

/* Q5_*'s fifth bit: qh is one 32-bit little-endian word whose bit j is bit 4
 * of value j (j = 0..31), in plain element order:
 *
 *   qh (u32 LE):  bit 31 ............ bit 16 | bit 15 ............ bit 0
 *                 q[31]..q[16] high bits     | q[15]..q[0] high bits      */
static void add_fifth_bits(const uint8_t *qh_bytes, int q[MOE_QK]) {
    uint32_t qh = moe_load_le32(qh_bytes);
    for (int j = 0; j < MOE_QK; j++)
        q[j] |= (int)((qh >> j) & 1u) << 4;
}

/* Q4_0, 18 bytes:  [d fp16][qs 16 B split-half nibbles]   y = d·(q − 8) */
void moe_dequant_q4_0(const void *src, float *dst, int64_t ne0, int64_t nrows) {
    const uint8_t *p = src;
    const int64_t nblocks = ne0 / MOE_QK * nrows;
    for (int64_t b = 0; b < nblocks; b++, p += sizeof(block_q4_0), dst += MOE_QK) {
        const float d = load_f16(p + offsetof(block_q4_0, d));
        int q[MOE_QK];
        split_half_nibbles(p + offsetof(block_q4_0, qs), q);
        for (int j = 0; j < MOE_QK; j++)
            dst[j] = (float)(q[j] - 8) * d;
    }
}

/* Q4_1, 20 bytes:  [d fp16][m fp16][qs 16 B split-half nibbles]   y = d·q + m */
void moe_dequant_q4_1(const void *src, float *dst, int64_t ne0, int64_t nrows) {
    const uint8_t *p = src;
    const int64_t nblocks = ne0 / MOE_QK * nrows;
    for (int64_t b = 0; b < nblocks; b++, p += sizeof(block_q4_1), dst += MOE_QK) {
        const float d = load_f16(p + offsetof(block_q4_1, d));
        const float m = load_f16(p + offsetof(block_q4_1, m));
        int q[MOE_QK];
        split_half_nibbles(p + offsetof(block_q4_1, qs), q);
        for (int j = 0; j < MOE_QK; j++)
            dst[j] = (float)q[j] * d + m;
    }
}

/* Q5_0, 22 bytes:  [d fp16][qh u32 LE: bit j = bit 4 of q[j]][qs 16 B nibbles]
 * y = d·(q − 16), q in 0..31 */
void moe_dequant_q5_0(const void *src, float *dst, int64_t ne0, int64_t nrows) {
    const uint8_t *p = src;
    const int64_t nblocks = ne0 / MOE_QK * nrows;
    for (int64_t b = 0; b < nblocks; b++, p += sizeof(block_q5_0), dst += MOE_QK) {
        const float d = load_f16(p + offsetof(block_q5_0, d));
        int q[MOE_QK];
        split_half_nibbles(p + offsetof(block_q5_0, qs), q);
        add_fifth_bits(p + offsetof(block_q5_0, qh), q);
        for (int j = 0; j < MOE_QK; j++)
            dst[j] = (float)(q[j] - 16) * d;
    }
}

/* Q5_1, 24 bytes:  [d fp16][m fp16][qh u32 LE][qs 16 B nibbles]   y = d·q + m */
void moe_dequant_q5_1(const void *src, float *dst, int64_t ne0, int64_t nrows) {
    const uint8_t *p = src;
    const int64_t nblocks = ne0 / MOE_QK * nrows;
    for (int64_t b = 0; b < nblocks; b++, p += sizeof(block_q5_1), dst += MOE_QK) {
        const float d = load_f16(p + offsetof(block_q5_1, d));
        const float m = load_f16(p + offsetof(block_q5_1, m));
        int q[MOE_QK];
        split_half_nibbles(p + offsetof(block_q5_1, qs), q);
        add_fifth_bits(p + offsetof(block_q5_1, qh), q);
        for (int j = 0; j < MOE_QK; j++)
            dst[j] = (float)q[j] * d + m;
    }
}

/* Q8_0, 34 bytes:  [d fp16][qs 32 × int8, element order]   y = d·q */
void moe_dequant_q8_0(const void *src, float *dst, int64_t ne0, int64_t nrows) {
    const uint8_t *p = src;
    const int64_t nblocks = ne0 / MOE_QK * nrows;
    for (int64_t b = 0; b < nblocks; b++, p += sizeof(block_q8_0), dst += MOE_QK) {
        const float d = load_f16(p + offsetof(block_q8_0, d));
        const uint8_t *qs = p + offsetof(block_q8_0, qs);
        for (int j = 0; j < MOE_QK; j++)
            dst[j] = (float)(int8_t)qs[j] * d;
    }
}

/* IQ4_NL, 18 bytes:  [d fp16][qs 16 B split-half nibbles]   y = d·T[q]
 * with T = moe_iq4nl_values, the non-uniform 16-level code book. */
void moe_dequant_iq4_nl(const void *src, float *dst, int64_t ne0, int64_t nrows) {
    const uint8_t *p = src;
    const int64_t nblocks = ne0 / MOE_QK * nrows;
    for (int64_t b = 0; b < nblocks; b++, p += sizeof(block_iq4_nl), dst += MOE_QK) {
        const float d = load_f16(p + offsetof(block_iq4_nl, d));
        int q[MOE_QK];
        split_half_nibbles(p + offsetof(block_iq4_nl, qs), q);
        for (int j = 0; j < MOE_QK; j++)
            dst[j] = d * (float)moe_iq4nl_values[q[j]];
    }
}
