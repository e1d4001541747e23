/* isa — which x86 vector extensions this CPU and OS run (cpuid + xgetbv),
 * and the MOE_CPU_LEVEL override. Shared by the quantizers here and the
 * runtime's kernel dispatch, so both always agree on the level. */
#ifndef MOE_FORMATS_ISA_H
#define MOE_FORMATS_ISA_H

#include <stdbool.h>

/* Numbered like the runtime's moe_cpu_level. */
typedef enum moe_isa_level {
    MOE_ISA_REF = 0,    /* the scalar reference code only */
    MOE_ISA_SCALAR = 1, /* plain C fast paths */
    MOE_ISA_AVX2 = 2,   /* AVX2 + FMA + F16C */
    MOE_ISA_AVX512 = 3, /* AVX-512 F/DQ/BW/VL + VNNI */
    MOE_ISA_AMX = 4,    /* AVX-512 + AMX-TILE/INT8, the OS granting the tile data */
    MOE_ISA_LEVEL_COUNT
} moe_isa_level;

/* The best level this CPU and OS run (scalar off x86). */
moe_isa_level moe_isa_detected(void);
const char *moe_isa_level_name(moe_isa_level level);
/* Parses ref|scalar|avx2|avx512|amx; false for anything else. */
bool moe_isa_level_parse(const char *name, moe_isa_level *out);
/* best, or the lower level MOE_CPU_LEVEL names (warning on an unknown name
 * or one above best). */
moe_isa_level moe_isa_level_from_env(moe_isa_level best);

#endif
