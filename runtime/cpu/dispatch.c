/* ISA level detection (cpuid + xgetbv) and the MOE_CPU_LEVEL override. */
#include <stdlib.h>
#include <string.h>

#include "formats/log.h"
#include "runtime/cpu/kernels.h"

static const char *const level_names[MOE_CPU_LEVEL_COUNT] = {"ref", "scalar", "avx2", "avx512"};

const char *moe_cpu_level_name(moe_cpu_level level) {
    return level >= 0 && level < MOE_CPU_LEVEL_COUNT ? level_names[level] : "?";
}

bool moe_cpu_level_parse(const char *name, moe_cpu_level *out) {
    for (int i = 0; i < MOE_CPU_LEVEL_COUNT; i++)
        if (!strcmp(name, level_names[i])) {
            *out = (moe_cpu_level)i;
            return true;
        }
    return false;
}

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>

static uint64_t xgetbv0(void) {
    uint32_t lo, hi;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    return (uint64_t)hi << 32 | lo;
}

moe_cpu_level moe_cpu_level_detected(void) {
    unsigned a, b, c, d;
    if (!__get_cpuid(1, &a, &b, &c, &d))
        return MOE_CPU_SCALAR;
    const bool osxsave = c >> 27 & 1, fma = c >> 12 & 1, f16c = c >> 29 & 1, avx = c >> 28 & 1;
    if (!osxsave || !avx)
        return MOE_CPU_SCALAR;
    const uint64_t xcr0 = xgetbv0();
    const bool ymm_os = (xcr0 & 6) == 6, zmm_os = (xcr0 & 0xe6) == 0xe6;
    if (!__get_cpuid_count(7, 0, &a, &b, &c, &d))
        return MOE_CPU_SCALAR;
    const bool avx2 = b >> 5 & 1, avx512f = b >> 16 & 1, avx512bw = b >> 30 & 1;
    const bool avx512vl = b >> 31 & 1, vnni = c >> 11 & 1;
    if (!(ymm_os && avx2 && fma && f16c))
        return MOE_CPU_SCALAR;
    if (zmm_os && avx512f && avx512bw && avx512vl && vnni)
        return MOE_CPU_AVX512;
    return MOE_CPU_AVX2;
}
#else
moe_cpu_level moe_cpu_level_detected(void) { return MOE_CPU_SCALAR; }
#endif

moe_cpu_level moe_cpu_level_active(void) {
    static int cached = -1;
    if (cached >= 0)
        return (moe_cpu_level)cached;
    moe_cpu_level level = moe_cpu_level_detected();
    while (level > MOE_CPU_SCALAR && !moe_cpu_kernels(level))
        level--; /* the build lacks this level's code */
    const char *env = getenv("MOE_CPU_LEVEL");
    moe_cpu_level forced;
    if (env && *env) {
        if (!moe_cpu_level_parse(env, &forced))
            MOE_WARN("MOE_CPU_LEVEL=%s is not a level (ref, scalar, avx2, avx512): ignored", env);
        else if (forced > level)
            MOE_WARN("MOE_CPU_LEVEL=%s: this CPU or build runs at most %s", env,
                     moe_cpu_level_name(level));
        else
            level = forced;
    }
    cached = (int)level;
    return level;
}

const moe_cpu_kernel_table *moe_cpu_kernels(moe_cpu_level level) {
    switch (level) {
    case MOE_CPU_SCALAR: return moe_cpu_kernels_scalar();
    case MOE_CPU_AVX2: return moe_cpu_kernels_avx2();
    case MOE_CPU_AVX512: return moe_cpu_kernels_avx512();
    default: return NULL;
    }
}

const moe_cpu_kernel *moe_cpu_kernel_find(moe_cpu_level level, moe_type type) {
    const moe_cpu_kernel_table *t = moe_cpu_kernels(level);
    for (const moe_cpu_kernel *k = t ? t->kernels : NULL; k && k->type != MOE_TYPE_F32; k++)
        if (k->type == type)
            return k;
    return NULL;
}

uint64_t moe_act_row_bytes(moe_act_format f, int64_t n) {
    return f == MOE_ACT_Q8K ? (uint64_t)(n / 256) * sizeof(moe_act_q8k)
                            : (uint64_t)(n / 32) * sizeof(moe_act_q8);
}

const moe_cpu_float_ops *moe_cpu_float_ops_active(void) {
    static const moe_cpu_float_ops *cached;
    if (!cached) {
        const moe_cpu_kernel_table *t = moe_cpu_kernels(moe_cpu_level_active());
        cached = t && t->fops ? t->fops : moe_cpu_float_ops_scalar();
    }
    return cached;
}
