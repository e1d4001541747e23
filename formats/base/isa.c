#include "formats/base/isa.h"

#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "formats/base/log.h"

static const char *const level_names[MOE_ISA_LEVEL_COUNT] = {"ref", "scalar", "avx2", "avx512", "amx"};

const char *moe_isa_level_name(moe_isa_level level) {
    return level >= 0 && level < MOE_ISA_LEVEL_COUNT ? level_names[level] : "?";
}

bool moe_isa_level_parse(const char *name, moe_isa_level *out) {
    for (int i = 0; i < MOE_ISA_LEVEL_COUNT; i++)
        if (!strcmp(name, level_names[i])) {
            *out = (moe_isa_level)i;
            return true;
        }
    return false;
}

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#ifdef __linux__
#include <sys/syscall.h>
#include <unistd.h>
#endif

static uint64_t xgetbv0(void) {
    uint32_t lo, hi;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    return (uint64_t)hi << 32 | lo;
}

/* AMX-TILE and AMX-INT8 (cpuid 7.0 edx bits 24, 25), the OS saving the tile
 * state (XCR0 bits 17, 18), and, on Linux, this process granted the tile data
 * (arch_prctl ARCH_REQ_XCOMP_PERM: without it the first tile instruction
 * faults). */
static bool amx_granted(unsigned edx7, uint64_t xcr0) {
    if (!(edx7 >> 24 & 1) || !(edx7 >> 25 & 1) || (xcr0 & 0x60000) != 0x60000)
        return false;
#if defined(__linux__) && defined(__x86_64__) /* no tiles in 32-bit mode */
    return syscall(SYS_arch_prctl, 0x1023 /* ARCH_REQ_XCOMP_PERM */, 18 /* XTILEDATA */) == 0;
#else
    return false;
#endif
}

static moe_isa_level detect(void) {
    unsigned a, b, c, d;
    if (!__get_cpuid(1, &a, &b, &c, &d))
        return MOE_ISA_SCALAR;
    const bool osxsave = c >> 27 & 1, fma = c >> 12 & 1, f16c = c >> 29 & 1, avx = c >> 28 & 1;
    if (!osxsave || !avx)
        return MOE_ISA_SCALAR;
    const uint64_t xcr0 = xgetbv0();
    const bool ymm_os = (xcr0 & 6) == 6, zmm_os = (xcr0 & 0xe6) == 0xe6;
    if (!__get_cpuid_count(7, 0, &a, &b, &c, &d))
        return MOE_ISA_SCALAR;
    const bool avx2 = b >> 5 & 1, avx512f = b >> 16 & 1, avx512dq = b >> 17 & 1;
    const bool avx512bw = b >> 30 & 1, avx512vl = b >> 31 & 1, vnni = c >> 11 & 1;
    if (!(ymm_os && avx2 && fma && f16c))
        return MOE_ISA_SCALAR;
    /* every extension the 512-bit objects are compiled with (DQ: the 256-bit
     * float halves of a register, vinsertf32x8 / vextractf32x8) */
    if (zmm_os && avx512f && avx512dq && avx512bw && avx512vl && vnni)
        return amx_granted(d, xcr0) ? MOE_ISA_AMX : MOE_ISA_AVX512;
    return MOE_ISA_AVX2;
}
#else
static moe_isa_level detect(void) { return MOE_ISA_SCALAR; }
#endif

/* Cached: the quantizers ask per row, and cpuid traps to the hypervisor in a
 * VM (0.8% of an IQ4_NL conversion's time before). */
moe_isa_level moe_isa_detected(void) {
    static atomic_int cached = -1;
    int level = atomic_load_explicit(&cached, memory_order_relaxed);
    if (level < 0) {
        level = (int)detect();
        atomic_store_explicit(&cached, level, memory_order_relaxed);
    }
    return (moe_isa_level)level;
}

moe_isa_level moe_isa_level_from_env(moe_isa_level best) {
    const char *env = getenv("MOE_CPU_LEVEL");
    moe_isa_level forced;
    if (!env || !*env)
        return best;
    if (!moe_isa_level_parse(env, &forced))
        MOE_WARN("MOE_CPU_LEVEL=%s is not a level (ref, scalar, avx2, avx512, amx): ignored", env);
    else if (forced > best)
        MOE_WARN("MOE_CPU_LEVEL=%s: this CPU or build runs at most %s", env,
                 moe_isa_level_name(best));
    else
        return forced;
    return best;
}
