/* The AVX-512 level (F/BW/VL + VNNI): the x86 kernels with byte products
 * through vpdpbusd on 256-bit registers (no int16 step, no saturation).
 * Compiled with the AVX-512 flags only (CMake), reached only when the CPU
 * and the OS support them (dispatch.c). */
#include <immintrin.h>

#define KFN(name) name##_avx512

static inline __m256i dot_u8s8(__m256i acc, __m256i u, __m256i s) {
    return _mm256_dpbusd_epi32(acc, u, s);
}

static inline __m256i dot_s8s8(__m256i acc, __m256i a, __m256i b) {
    return _mm256_dpbusd_epi32(acc, _mm256_abs_epi8(a), _mm256_sign_epi8(b, a));
}

static inline __m256i madd16_acc(__m256i acc, __m256i a, __m256i b) {
    return _mm256_dpwssd_epi32(acc, a, b);
}

/* 512-bit kernels for the types that carry most bytes */
#define MOE_X86_WIDE_KERNELS "runtime/cpu/x86/kernels_zmm.inc"
#include "runtime/cpu/x86/kernels_x86.inc"

const moe_cpu_kernel_table *moe_cpu_kernels_avx512(void) {
    static const moe_cpu_kernel_table table = {
        .level = MOE_CPU_AVX512,
        .fops = &fops_avx512,
        .quantize = {NULL, quantize_q8_avx512, quantize_q8k_avx512, quantize_f16_avx512,
                     quantize_bf16_avx512},
        .kernels = kernels_avx512,
        .rtr_kernels = rtr_kernels_avx512,
    };
    return &table;
}
