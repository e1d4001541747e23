/* quant_iq4_lanes.inc for AVX-512: 16 blocks per vector (flags in CMakeLists.txt). */
#define IQ4_LANES 16
#define IQ4_LANES_FN moe_iq4_block_scales_avx512
#include "formats/quant_iq4_lanes.inc"
