/* quant_iq4_lanes.inc built for AVX2 (flags in CMakeLists.txt). */
#define IQ4_LANES_FN moe_iq4_block_scales_avx2
#include "formats/quant/quant_iq4_lanes.inc"
