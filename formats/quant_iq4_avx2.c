/* quant_iq4_lanes.inc for AVX2: 8 blocks per vector (flags in CMakeLists.txt). */
#define IQ4_LANES 8
#define IQ4_LANES_FN moe_iq4_block_scales_avx2
#include "formats/quant_iq4_lanes.inc"
