/* quant_kq_lanes — the reference sub-block searches and the choice of
 * version; contract in quant_kq_lanes.h. */
#include "formats/quant/quant_kq_lanes.h"

#include "formats/quant/quant_common.h"

static void qkx_ref(const moe_qkx_params *p, const float *x, const float *w, int nsub, uint8_t *L,
                    float *scales, float *mins) {
    uint8_t Laux[32];
    for (int b = 0; b < nsub; b++) {
        const int o = p->n * b;
        scales[b] = (p->qkx3 ? moe_make_qkx3_quants : moe_make_qkx2_quants)(
            p->n, p->nmax, x + o, w + o, L + o, &mins[b], Laux, p->rmin, p->rdelta, p->nstep,
            p->use_mad);
    }
}

static void qx1_ref(int n, int nmax, const float *x, const float *qw, int nsub, int8_t *L,
                    float *scales) {
    for (int b = 0; b < nsub; b++)
        scales[b] = moe_make_qx_quants(n, nmax, x + n * b, L + n * b, 1, qw ? qw + n * b : NULL);
}

const moe_kq_search moe_kq_search_ref = {.qkx = qkx_ref, .qx1 = qx1_ref};

#ifdef MOE_FORMATS_X86
static const moe_kq_search *const search_avx2 = &moe_kq_search_avx2;
#else
static const moe_kq_search *const search_avx2 = NULL;
#endif

const moe_kq_search *moe_kq_search_for(moe_isa_level level) {
    switch (level) {
    case MOE_ISA_REF:
    case MOE_ISA_SCALAR: return &moe_kq_search_ref;
    case MOE_ISA_AVX2:
    case MOE_ISA_AVX512:
    case MOE_ISA_AMX: return search_avx2; /* eight lanes: see quant_kq_lanes.inc */
    default: return NULL;
    }
}

const moe_kq_search *moe_kq_search_active(void) {
    moe_isa_level level = moe_isa_detected();
    while (level > MOE_ISA_REF && !moe_kq_search_for(level))
        level--;
    return moe_kq_search_for(moe_isa_level_from_env(level));
}
