/* quant_kq_lanes.inc built for AVX2 (flags in CMakeLists.txt). */
#define KQ_LANES_TABLE moe_kq_search_avx2
#include "formats/quant/quant_kq_lanes.inc"
