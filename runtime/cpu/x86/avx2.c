/* The AVX2 level (AVX2 + FMA + F16C): the x86 kernels with byte products
 * through vpmaddubsw / vpmaddwd. Compiled with -mavx2 -mfma -mf16c only
 * (CMake), reached only when the CPU has them (dispatch.c). */
#include <immintrin.h>

#define KFN(name) name##_avx2

/* u8 x s8 products summed in pairs (int16; the kernels keep |u·s| pairs below
 * 32767), then in fours (int32). */
static inline __m256i dot_u8s8(__m256i acc, __m256i u, __m256i s) {
    const __m256i p16 = _mm256_maddubs_epi16(u, s);
    return _mm256_add_epi32(acc, _mm256_madd_epi16(p16, _mm256_set1_epi16(1)));
}

/* signed x signed as |a| x (b with a's sign) */
static inline __m256i dot_s8s8(__m256i acc, __m256i a, __m256i b) {
    return dot_u8s8(acc, _mm256_sign_epi8(a, a), _mm256_sign_epi8(b, a));
}

/* acc + per 32-bit lane sum of the two int16 products */
static inline __m256i madd16_acc(__m256i acc, __m256i a, __m256i b) {
    return _mm256_add_epi32(acc, _mm256_madd_epi16(a, b));
}

#include "runtime/cpu/x86/kernels_x86.inc"

const moe_cpu_kernel_table *moe_cpu_kernels_avx2(void) {
    static const moe_cpu_kernel_table table = {
        .level = MOE_CPU_AVX2,
        .fops = &fops_avx2,
        .quantize = {NULL, quantize_q8_avx2, quantize_q8k_avx2, quantize_f16_avx2,
                     quantize_bf16_avx2},
        .kernels = kernels_avx2,
        .rtr_kernels = rtr_kernels_avx2,
    };
    return &table;
}
