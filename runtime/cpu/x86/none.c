/* Builds for other architectures have no x86 levels. */
#include "runtime/cpu/kernels.h"

#if !(defined(__x86_64__) || defined(__i386__))
const moe_cpu_kernel_table *moe_cpu_kernels_avx2(void) { return NULL; }
const moe_cpu_kernel_table *moe_cpu_kernels_avx512(void) { return NULL; }
const moe_cpu_kernel_table *moe_cpu_kernels_amx(void) { return NULL; }
#else
typedef int moe_x86_levels_live_in_avx2_c_and_avx512_c;
#endif
