/* ISA level detection (cpuid + xgetbv) and the MOE_CPU_LEVEL override. */
#include "formats/base/isa.h"
#include "runtime/cpu/kernels.h"

/* Detection and the level names live in formats/base/isa.c (the quantizers use
 * them too); moe_cpu_level is numbered like moe_isa_level. */
const char *moe_cpu_level_name(moe_cpu_level level) {
    return moe_isa_level_name((moe_isa_level)level);
}

bool moe_cpu_level_parse(const char *name, moe_cpu_level *out) {
    moe_isa_level level;
    if (!moe_isa_level_parse(name, &level))
        return false;
    *out = (moe_cpu_level)level;
    return true;
}

moe_cpu_level moe_cpu_level_detected(void) { return (moe_cpu_level)moe_isa_detected(); }

moe_cpu_level moe_cpu_level_active(void) {
    static int cached = -1;
    if (cached >= 0)
        return (moe_cpu_level)cached;
    moe_cpu_level level = moe_cpu_level_detected();
    while (level > MOE_CPU_SCALAR && !moe_cpu_kernels(level))
        level--; /* the build lacks this level's code */
    level = (moe_cpu_level)moe_isa_level_from_env((moe_isa_level)level);
    cached = (int)level;
    return level;
}

const moe_cpu_kernel_table *moe_cpu_kernels(moe_cpu_level level) {
    switch (level) {
    case MOE_CPU_SCALAR: return moe_cpu_kernels_scalar();
    case MOE_CPU_AVX2: return moe_cpu_kernels_avx2();
    case MOE_CPU_AVX512: return moe_cpu_kernels_avx512();
    case MOE_CPU_AMX: return moe_cpu_kernels_amx();
    default: return NULL;
    }
}

/* type's entry in a list terminated by MOE_TYPE_F32 (list may be NULL). */
static const moe_cpu_kernel *find_in(const moe_cpu_kernel *list, moe_type type) {
    for (const moe_cpu_kernel *k = list; k && k->type != MOE_TYPE_F32; k++)
        if (k->type == type)
            return k;
    return NULL;
}

const moe_cpu_kernel *moe_cpu_kernel_find(moe_cpu_level level, moe_type type) {
    const moe_cpu_kernel_table *t = moe_cpu_kernels(level);
    return t ? find_in(t->kernels, type) : NULL;
}

const moe_cpu_kernel *moe_cpu_kernel_find_rtr(moe_cpu_level level, moe_type type) {
    const moe_cpu_kernel_table *t = moe_cpu_kernels(level);
    return t ? find_in(t->rtr_kernels, type) : NULL;
}

int64_t moe_act_block(moe_act_format f) { return f == MOE_ACT_Q8K ? 256 : 32; }

uint64_t moe_act_row_bytes(moe_act_format f, int64_t n) {
    switch (f) {
    case MOE_ACT_Q8K: return (uint64_t)(n / 256) * sizeof(moe_act_q8k);
    case MOE_ACT_F16:
    case MOE_ACT_BF16: return (uint64_t)n * 2;
    default: return (uint64_t)(n / 32) * sizeof(moe_act_q8);
    }
}

uint64_t moe_act_row_bytes_max(int64_t n) {
    const int64_t whole = (n + 255) / 256 * 256; /* whole blocks of every format */
    uint64_t max = 0;
    for (int f = MOE_ACT_Q8; f < MOE_ACT_FORMAT_COUNT; f++) {
        const uint64_t b = moe_act_row_bytes((moe_act_format)f, whole);
        max = b > max ? b : max;
    }
    return max;
}

const moe_cpu_float_ops *moe_cpu_float_ops_active(void) {
    static const moe_cpu_float_ops *cached;
    if (!cached) {
        const moe_cpu_kernel_table *t = moe_cpu_kernels(moe_cpu_level_active());
        cached = t && t->fops ? t->fops : moe_cpu_float_ops_scalar();
    }
    return cached;
}
