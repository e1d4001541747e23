/* quant_iq4 — quantizers of the non-linear 4-bit types IQ4_NL (32-value
 * blocks, one fp16 scale) and IQ4_XS (256-value super-blocks of eight
 * 32-value blocks with 6-bit block scales), bit-exact with llama.cpp's
 * quantize_row_iq4_nl_impl (Feb 2025) as llama-quantize calls it: always
 * with the scale search (ntry = 7), weights x^2 without an importance matrix
 * and qw * sqrt(sigma^2 + x^2) with one (../shared/spec/quant.md §1.4;
 * contract in quant_impl.h). ik_llama.cpp's extra candidates and greedy
 * refinement are deliberately not done: the output must match llama.cpp.
 *
 * The code book moe_iq4nl_values runs from -127 to +113; the search mostly
 * settles on a scale that maps a block's extreme value near the -127 end, so
 * the block scale is usually negative when that value is positive.
 *
 * Bit-exactness rests on float (never double) arithmetic in llama.cpp's
 * order, no fused multiply-add, ties-to-even only where llama.cpp uses
 * nearest_int, and the nearest-code search below with its exact tie rule.
 */
#include <math.h>
#include <stddef.h>
#include <stdint.h>

#include "formats/gguf/cursor.h"
#include "formats/quant/fp16.h"
#include "formats/quant/quant_blocks.h"
#include "formats/quant/quant_common.h"
#include "formats/quant/quant_impl.h"
#include "formats/quant/quant_iq4_lanes.h"

/* No fused multiply-adds: -ffp-contract=off (CMakeLists.txt) and quant_common.h. */

/* Candidate inverse scales tried on each side of the extreme value's code:
 * llama-quantize's value at both call sites, with or without an imatrix. */
#define IQ4_NTRY 7
#define IQ4_NVALUES 16
#define IQ4_XS_BLOCKS (MOE_QK_K / MOE_QK)

/* Index of the code book entry nearest to x: binary search for the bracket
 * [T[mu-1], T[mu]], then the lower entry only if strictly nearer, so an exact
 * midpoint goes up. Both distances are float subtractions, as in llama.cpp;
 * comparing 2x with the sum of the pair instead would round differently. */
/* The table as floats (exact), so the search does not convert on every step. */
static const float iq4_values_f[IQ4_NVALUES] = {-127, -104, -83, -65, -49, -35, -22, -10,
                                                1,    13,   25,  38,  53,  69,  89,  113};

/* llama.cpp's binary search finds mu with T[mu-1] <= x < T[mu]; counting the
 * entries <= x gives the same mu without data-dependent branches. The tie
 * rule is kept to the letter: the lower neighbour wins only if strictly
 * nearer, computed as the same two float subtractions. */
static int nearest_code(float x) {
    const float *T = iq4_values_f;
    if (x <= T[0])
        return 0;
    if (x >= T[IQ4_NVALUES - 1])
        return IQ4_NVALUES - 1;
    int mu = 0;
    for (int k = 0; k < IQ4_NVALUES; k++)
        mu += x >= T[k];
    return x - T[mu - 1] < T[mu] - x ? mu - 1 : mu;
}

/* Weighted fit of one candidate: sum w*q*x and sum w*q^2 over the block with
 * q the code value nearest to id*x. */
static void fit_codes(const float *xb, const float *w, float id, float *sumqx, float *sumq2) {
    /* codes first (independent per value, so the compiler can vectorise),
     * then the sums in llama.cpp's order */
    float q[MOE_QK];
    for (int j = 0; j < MOE_QK; j++)
        q[j] = iq4_values_f[nearest_code(id * xb[j])];
    float sqx = 0.0f, sq2 = 0.0f;
    for (int j = 0; j < MOE_QK; j++) {
        sqx += w[j] * q[j] * xb[j];
        sq2 += w[j] * q[j] * q[j];
    }
    *sumqx = sqx;
    *sumq2 = sq2;
}

/* The scale of one 32-value block: first a least-squares refit of the codes
 * picked at d = max/127 (which puts the extreme value on the +113 end), then
 * the 2*IQ4_NTRY+1 inverse scales (itry - 127)/max (extreme value near the
 * -127 end), keeping whichever refit explains most weighted energy
 * ((sum wqx)^2 / sum wq^2; the earliest wins ties). Returns 0 for an
 * all-(near-)zero block.
 *
 * The first refit divides without checking sum wq^2, as llama.cpp (Feb 2025)
 * does: a block whose weights are all zero gets a NaN scale there too. */
static float block_scale(const float *xb, const float *w) {
    float amax;
    const float max = moe_signed_absmax(xb, MOE_QK, &amax);
    if (amax < MOE_GROUP_MAX_EPS)
        return 0.0f;
    const int8_t *T = moe_iq4nl_values;
    float sumqx, sumq2;
    fit_codes(xb, w, 1.0f / (-max / (float)T[0]), &sumqx, &sumq2);
    float d = sumqx / sumq2;
    float best = d * sumqx;
    for (int itry = -IQ4_NTRY; itry <= IQ4_NTRY; itry++) {
        fit_codes(xb, w, (float)(itry + T[0]) / max, &sumqx, &sumq2);
        if (sumq2 > 0 && sumqx * sumqx > best * sumq2) {
            d = sumqx / sumq2;
            best = d * sumqx;
        }
    }
    return d;
}

static void block_scales_ref(const float *x, const float *w, int64_t nblocks, float *scales) {
    for (int64_t b = 0; b < nblocks; b++)
        scales[b] = block_scale(x + b * MOE_QK, w + b * MOE_QK);
}

/* Codes of a block at inverse scale id, split-half packed into qs[16]. */
static void pack_codes(const float *xb, float id, uint8_t *qs) {
    for (int j = 0; j < MOE_QK / 2; j++) {
        const int lo = nearest_code(id * xb[j]);
        const int hi = nearest_code(id * xb[j + MOE_QK / 2]);
        qs[j] = (uint8_t)(lo | hi << 4);
    }
}

static void codes_ref(const float *x, const float *id, int64_t nblocks, uint8_t *out,
                      size_t stride) {
    for (int64_t b = 0; b < nblocks; b++)
        pack_codes(x + b * MOE_QK, id[b], out + (size_t)b * stride);
}

const moe_iq4_search moe_iq4_search_ref = {.scales = block_scales_ref, .codes = codes_ref};

#ifdef MOE_FORMATS_X86
static const moe_iq4_search *const search_avx2 = &moe_iq4_search_avx2;
#else
static const moe_iq4_search *const search_avx2 = NULL;
#endif

const moe_iq4_search *moe_iq4_search_for(moe_isa_level level) {
    switch (level) {
    case MOE_ISA_REF:
    case MOE_ISA_SCALAR: return &moe_iq4_search_ref;
    case MOE_ISA_AVX2:
    case MOE_ISA_AVX512:
    case MOE_ISA_AMX: return search_avx2; /* measured faster there (quant_iq4_lanes.inc) */
    default: return NULL;
    }
}

const moe_iq4_search *moe_iq4_search_active(void) {
    moe_isa_level level = moe_isa_detected();
    while (level > MOE_ISA_REF && !moe_iq4_search_for(level))
        level--;
    return moe_iq4_search_for(moe_isa_level_from_env(level));
}

/* Blocks whose scales are searched together: a full vector of the widest
 * level, and two IQ4_XS super-blocks. */
#define IQ4_CHUNK_BLOCKS 16

/* sigma^2 = 2 * mean square over the super-block (32 values for IQ4_NL, 256
 * for IQ4_XS): the floor under the importance weights. */
static float superblock_sigma2(const float *x, int n) {
    float s = 0.0f;
    for (int j = 0; j < n; j++)
        s += x[j] * x[j];
    return s * (2.0f / (float)n);
}

static void block_weights(const float *xb, const float *qw, float sigma2, float w[MOE_QK]) {
    for (int j = 0; j < MOE_QK; j++)
        w[j] = qw ? qw[j] * sqrtf(sigma2 + xb[j] * xb[j]) : xb[j] * xb[j];
}

/* IQ4_NL blocks, 18 bytes each: [d fp16][qs 16 B split-half nibbles],
 * y = d·T[q]. The codes are re-picked at the final (unrounded) scale d. */
static void iq4_nl_store(const moe_iq4_search *search, const float *x, const float *d,
                         int64_t nblocks, uint8_t *out) {
    float id[IQ4_CHUNK_BLOCKS];
    for (int64_t b = 0; b < nblocks; b++) {
        moe_store_le16(out + b * sizeof(block_iq4_nl) + offsetof(block_iq4_nl, d),
                       moe_f32_to_f16(d[b]));
        id[b] = d[b] != 0.0f ? 1.0f / d[b] : 0.0f;
    }
    search->codes(x, id, nblocks, out + offsetof(block_iq4_nl, qs), sizeof(block_iq4_nl));
}

/* IQ4_XS super-block, 136 bytes:
 *
 *   [d fp16][scales_h u16 LE][scales_l 4 B][qs 128 B]
 *   block ib's 6-bit scale ls = l + 32: low 4 bits in nibble ib%2 of
 *   scales_l[ib/2], high 2 bits at bits 2ib+1..2ib of scales_h;
 *   y = d·(ls - 32)·T[q], codes of block ib split-half in qs[16ib..16ib+15].
 *
 * d = -(block scale of largest magnitude)/32, so that block's l is +-32 and
 * clamps to -32 at worst. Codes are re-picked at the unrounded d·l. */
static void iq4_xs_store(const moe_iq4_search *search, const float *x, const float *scales,
                         uint8_t *blk) {
    float max_scale = 0.0f, amax_scale = 0.0f;
    for (int ib = 0; ib < IQ4_XS_BLOCKS; ib++) {
        if (fabsf(scales[ib]) > amax_scale) {
            amax_scale = fabsf(scales[ib]);
            max_scale = scales[ib];
        }
    }
    const float d = -max_scale / 32.0f; /* -0.0 for an all-zero super-block, as in llama.cpp */
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    uint16_t scales_h = 0;
    uint8_t *scales_l = blk + offsetof(block_iq4_xs, scales_l);
    float idl[IQ4_XS_BLOCKS];
    for (int ib = 0; ib < IQ4_XS_BLOCKS; ib++) {
        int l = moe_nearest_int(id * scales[ib]);
        l = l < -32 ? -32 : l > 31 ? 31 : l;
        const float dl = d * (float)l;
        idl[ib] = dl != 0.0f ? 1.0f / dl : 0.0f;
        const unsigned ls = (unsigned)(l + 32);
        if (ib % 2 == 0)
            scales_l[ib / 2] = (uint8_t)(ls & 0x0f);
        else
            scales_l[ib / 2] |= (uint8_t)((ls & 0x0f) << 4);
        scales_h |= (uint16_t)((ls >> 4) << (2 * ib));
    }
    search->codes(x, idl, IQ4_XS_BLOCKS, blk + offsetof(block_iq4_xs, qs), MOE_QK / 2);
    moe_store_le16(blk + offsetof(block_iq4_xs, d), moe_f32_to_f16(d));
    moe_store_le16(blk + offsetof(block_iq4_xs, scales_h), scales_h);
}

MOE_QUANT_FN(iq4_nl) {
    const moe_iq4_search *search = moe_iq4_search_active();
    const int64_t nb = n_per_row / MOE_QK;
    uint8_t *out = dst;
    for (int64_t r = 0; r < nrow; r++) {
        const float *x = src + r * n_per_row;
        for (int64_t b0 = 0; b0 < nb; b0 += IQ4_CHUNK_BLOCKS) {
            const int64_t n = nb - b0 < IQ4_CHUNK_BLOCKS ? nb - b0 : IQ4_CHUNK_BLOCKS;
            float w[IQ4_CHUNK_BLOCKS * MOE_QK], scales[IQ4_CHUNK_BLOCKS];
            for (int64_t b = b0; b < b0 + n; b++) {
                const float *xb = x + b * MOE_QK, *qw = imatrix ? imatrix + b * MOE_QK : NULL;
                block_weights(xb, qw, qw ? superblock_sigma2(xb, MOE_QK) : 0.0f,
                              w + (b - b0) * MOE_QK);
            }
            search->scales(x + b0 * MOE_QK, w, n, scales);
            iq4_nl_store(search, x + b0 * MOE_QK, scales, n, out);
            out += n * sizeof(block_iq4_nl);
        }
    }
}

MOE_QUANT_FN(iq4_xs) {
    enum { SUPERS = IQ4_CHUNK_BLOCKS / IQ4_XS_BLOCKS };
    const moe_iq4_search *search = moe_iq4_search_active();
    const int64_t nb = n_per_row / MOE_QK_K;
    uint8_t *out = dst;
    for (int64_t r = 0; r < nrow; r++) {
        const float *x = src + r * n_per_row;
        for (int64_t s0 = 0; s0 < nb; s0 += SUPERS) {
            const int64_t n = nb - s0 < SUPERS ? nb - s0 : SUPERS;
            float w[IQ4_CHUNK_BLOCKS * MOE_QK], scales[IQ4_CHUNK_BLOCKS];
            for (int64_t s = s0; s < s0 + n; s++) {
                const float *xs = x + s * MOE_QK_K, *qs = imatrix ? imatrix + s * MOE_QK_K : NULL;
                const float sigma2 = qs ? superblock_sigma2(xs, MOE_QK_K) : 0.0f;
                for (int ib = 0; ib < IQ4_XS_BLOCKS; ib++)
                    block_weights(xs + ib * MOE_QK, qs ? qs + ib * MOE_QK : NULL, sigma2,
                                  w + ((s - s0) * IQ4_XS_BLOCKS + ib) * MOE_QK);
            }
            search->scales(x + s0 * MOE_QK_K, w, n * IQ4_XS_BLOCKS, scales);
            for (int64_t s = s0; s < s0 + n; s++, out += sizeof(block_iq4_xs))
                iq4_xs_store(search, x + s * MOE_QK_K, scales + (s - s0) * IQ4_XS_BLOCKS, out);
        }
    }
}
