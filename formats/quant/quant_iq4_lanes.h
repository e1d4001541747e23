/* quant_iq4_lanes — the IQ4 block-scale search (quant_iq4.c's block_scale)
 * over many 32-value blocks at once, one block per vector lane, each lane
 * doing the reference's float arithmetic in the reference's order (no fused
 * multiply-add: -ffp-contract=off), so the scales are bit-identical to it.
 * Internal to formats/. */
#ifndef MOE_FORMATS_QUANT_IQ4_LANES_H
#define MOE_FORMATS_QUANT_IQ4_LANES_H

#include <stdint.h>

#include "formats/base/isa.h"

/* scales[b] = the reference block scale of x[32b..32b+31] under weights
 * w[32b..32b+31], for b < nblocks. */
typedef void (*moe_iq4_scales_fn)(const float *x, const float *w, int64_t nblocks, float *scales);

/* The scalar reference (quant_iq4.c). */
void moe_iq4_block_scales_ref(const float *x, const float *w, int64_t nblocks, float *scales);
/* The version for one level; NULL when this build has none for it. */
moe_iq4_scales_fn moe_iq4_block_scales_for(moe_isa_level level);
/* The version of the detected level, or the one MOE_CPU_LEVEL names. */
moe_iq4_scales_fn moe_iq4_block_scales_active(void);

/* The AVX2 build of quant_iq4_lanes.inc (x86 only), also the AVX-512
 * level's version. */
void moe_iq4_block_scales_avx2(const float *x, const float *w, int64_t nblocks, float *scales);

#endif
