/* quant_iq4_lanes — the IQ4 block-scale search (quant_iq4.c's block_scale)
 * and the final code picking (pack_codes) over many 32-value blocks at once,
 * one block per vector lane, each lane doing the reference's float
 * arithmetic in the reference's order (no fused multiply-add:
 * -ffp-contract=off), so scales and codes are bit-identical to it. Internal
 * to formats/. */
#ifndef MOE_FORMATS_QUANT_IQ4_LANES_H
#define MOE_FORMATS_QUANT_IQ4_LANES_H

#include <stddef.h>
#include <stdint.h>

#include "formats/base/isa.h"

typedef struct {
    /* scales[b] = the reference block scale of x[32b..32b+31] under weights
     * w[32b..32b+31], for b < nblocks. */
    void (*scales)(const float *x, const float *w, int64_t nblocks, float *scales);
    /* out[stride b .. stride b + 16) = the codes of x[32b..32b+31] at
     * inverse scale id[b], split-half packed (low nibbles values 0..15). */
    void (*codes)(const float *x, const float *id, int64_t nblocks, uint8_t *out, size_t stride);
} moe_iq4_search;

/* The scalar reference (quant_iq4.c). */
extern const moe_iq4_search moe_iq4_search_ref;
/* The version for one level; NULL when this build has none for it. */
const moe_iq4_search *moe_iq4_search_for(moe_isa_level level);
/* The version of the detected level, or the one MOE_CPU_LEVEL names. */
const moe_iq4_search *moe_iq4_search_active(void);

/* The AVX2 build of quant_iq4_lanes.inc (x86 only), also the AVX-512 level's. */
extern const moe_iq4_search moe_iq4_search_avx2;

#endif
