/* quant_iq4_lanes.inc built for AVX2 (flags in CMakeLists.txt). */
#define IQ4_LANES_TABLE moe_iq4_search_avx2
#include "formats/quant/quant_iq4_lanes.inc"
