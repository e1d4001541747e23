/* quant_blocks — byte layouts of the quantized blocks we decode or produce.
 *
 * Owns: one packed struct per block format, field order exactly as stored in
 * GGUF, and a static_assert pinning each size. These sizes are the only block
 * byte counts in the code base; the type table (types.c) takes sizeof() of
 * these. Does not own: the algorithms (dequant_*.c, quant_*.c).
 *
 * Conventions: `uint16_t` fields named d/dmin/m are IEEE fp16 bit patterns;
 * every multi-byte field is little-endian on disk. Nibble order inside a 32-value
 * legacy block is "split-half": element j is the low nibble of qs[j], element
 * j+16 the high nibble (j < 16).
 *
 * Interleaved (_Rn) structs hold one block position of n consecutive rows; their
 * per-row byte count equals the base type's, which the asserts check.
 */
#ifndef MOE_FORMATS_QUANT_BLOCKS_H
#define MOE_FORMATS_QUANT_BLOCKS_H

#include <assert.h>
#include <stdint.h>

#define MOE_QK 32   /* values per legacy / NL block */
#define MOE_QK_K 256 /* values per k-quant super-block */
#define MOE_K_SCALE_SIZE 12

typedef struct { uint16_t d; uint8_t qs[MOE_QK / 2]; } block_q4_0;
typedef struct { uint16_t d, m; uint8_t qs[MOE_QK / 2]; } block_q4_1;
typedef struct { uint16_t d; uint8_t qh[4]; uint8_t qs[MOE_QK / 2]; } block_q5_0;
typedef struct { uint16_t d, m; uint8_t qh[4]; uint8_t qs[MOE_QK / 2]; } block_q5_1;
typedef struct { uint16_t d; int8_t qs[MOE_QK]; } block_q8_0;
typedef struct { uint16_t d, s; int8_t qs[MOE_QK]; } block_q8_1;
typedef struct { uint16_t d; uint8_t qs[MOE_QK / 2]; } block_iq4_nl;

/* Q2_K: 16 sub-blocks of 16; scales[i] low nibble = scale, high nibble = min. */
typedef struct { uint8_t scales[MOE_QK_K / 16]; uint8_t qs[MOE_QK_K / 4]; uint16_t d, dmin; } block_q2_K;
/* Q3_K: hmask = high bit, qs = low 2 bits, 16 6-bit signed scales (offset 32). */
typedef struct { uint8_t hmask[MOE_QK_K / 8]; uint8_t qs[MOE_QK_K / 4]; uint8_t scales[12]; uint16_t d; } block_q3_K;
/* Q4_K/Q5_K: 8 sub-blocks of 32 with 6-bit scale and min packed in scales[12]. */
typedef struct { uint16_t d, dmin; uint8_t scales[MOE_K_SCALE_SIZE]; uint8_t qs[MOE_QK_K / 2]; } block_q4_K;
typedef struct { uint16_t d, dmin; uint8_t scales[MOE_K_SCALE_SIZE]; uint8_t qh[MOE_QK_K / 8]; uint8_t qs[MOE_QK_K / 2]; } block_q5_K;
/* Q6_K: ql = low 4 bits, qh = high 2 bits, 16 int8 scales. */
typedef struct { uint8_t ql[MOE_QK_K / 2]; uint8_t qh[MOE_QK_K / 4]; int8_t scales[MOE_QK_K / 16]; uint16_t d; } block_q6_K;
/* Q8_K (llama.cpp form; activation-only): f32 scale. */
typedef struct { float d; int8_t qs[MOE_QK_K]; int16_t bsums[MOE_QK_K / 16]; } block_q8_K;
/* IQ4_XS: 8 sub-blocks of 32, 6-bit scales split into scales_l (4) and scales_h (2). */
typedef struct { uint16_t d; uint16_t scales_h; uint8_t scales_l[MOE_QK_K / 64]; uint8_t qs[MOE_QK_K / 2]; } block_iq4_xs;

/* ik_llama.cpp row-interleaved layouts (see ../shared/spec/quant.md §2). */
typedef struct { uint16_t d[8]; uint8_t qs[8 * MOE_QK / 2]; } block_q4_0_r8;
typedef struct { uint16_t d[8]; int8_t qs[8 * MOE_QK]; } block_q8_0_r8;
typedef struct { uint16_t d[4]; uint8_t qs[4 * MOE_QK / 2]; } block_iq4_nl_r4;
typedef struct { uint16_t d[4]; uint8_t qh[4 * MOE_QK / 8]; uint8_t qs[4 * MOE_QK / 2]; } block_q5_0_r4;
typedef struct { uint16_t d[8]; uint8_t scales[64]; uint8_t qs[4 * MOE_QK_K / 4]; } block_q2_K_r4;
typedef struct { uint16_t d[4]; uint8_t scales_h[16]; uint8_t scales_l[32]; uint8_t qh[128]; uint8_t qs[4 * MOE_QK_K / 4]; } block_q3_K_r4;
typedef struct { uint16_t d[8]; uint8_t scales_h[16]; uint8_t scales_l[32]; uint8_t qs[4 * MOE_QK_K / 2]; } block_q4_K_r4;
typedef struct { uint16_t d[8]; uint8_t scales_h[16]; uint8_t scales_l[32]; uint8_t qh[128]; uint8_t qs[4 * MOE_QK_K / 2]; } block_q5_K_r4;
typedef struct { uint16_t d[4]; int8_t scales[64]; uint8_t qh[256]; uint8_t ql[512]; } block_q6_K_r4;
typedef struct { uint16_t d[8]; uint8_t scales_h[16]; uint8_t scales_l[32]; uint8_t qs[8 * MOE_QK_K / 2]; } block_iq4_xs_r8;

static_assert(sizeof(block_q4_0) == 18, "block_q4_0 size");
static_assert(sizeof(block_q4_1) == 20, "block_q4_1 size");
static_assert(sizeof(block_q5_0) == 22, "block_q5_0 size");
static_assert(sizeof(block_q5_1) == 24, "block_q5_1 size");
static_assert(sizeof(block_q8_0) == 34, "block_q8_0 size");
static_assert(sizeof(block_q8_1) == 36, "block_q8_1 size");
static_assert(sizeof(block_iq4_nl) == 18, "block_iq4_nl size");
static_assert(sizeof(block_q2_K) == 84, "block_q2_K size");
static_assert(sizeof(block_q3_K) == 110, "block_q3_K size");
static_assert(sizeof(block_q4_K) == 144, "block_q4_K size");
static_assert(sizeof(block_q5_K) == 176, "block_q5_K size");
static_assert(sizeof(block_q6_K) == 210, "block_q6_K size");
static_assert(sizeof(block_q8_K) == 292, "block_q8_K size");
static_assert(sizeof(block_iq4_xs) == 136, "block_iq4_xs size");
static_assert(sizeof(block_q4_0_r8) == 8 * sizeof(block_q4_0), "block_q4_0_r8 size");
static_assert(sizeof(block_q8_0_r8) == 8 * sizeof(block_q8_0), "block_q8_0_r8 size");
static_assert(sizeof(block_iq4_nl_r4) == 4 * sizeof(block_iq4_nl), "block_iq4_nl_r4 size");
static_assert(sizeof(block_q5_0_r4) == 4 * sizeof(block_q5_0), "block_q5_0_r4 size");
static_assert(sizeof(block_q2_K_r4) == 4 * sizeof(block_q2_K), "block_q2_K_r4 size");
static_assert(sizeof(block_q3_K_r4) == 4 * sizeof(block_q3_K), "block_q3_K_r4 size");
static_assert(sizeof(block_q4_K_r4) == 4 * sizeof(block_q4_K), "block_q4_K_r4 size");
static_assert(sizeof(block_q5_K_r4) == 4 * sizeof(block_q5_K), "block_q5_K_r4 size");
static_assert(sizeof(block_q6_K_r4) == 4 * sizeof(block_q6_K), "block_q6_K_r4 size");
static_assert(sizeof(block_iq4_xs_r8) == 8 * sizeof(block_iq4_xs), "block_iq4_xs_r8 size");

/* IQ4_NL / IQ4_XS code book (../shared/spec/quant.md §1.4): a 4-bit index picks
 * one of these non-uniform levels, scaled by the block's d. Asymmetric on
 * purpose: the quantizers map a block's extreme value to -127. Shared by the
 * plain and the row-interleaved decoders. */
static const int8_t moe_iq4nl_values[16] = {
    -127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113,
};

#endif
