/* quant_kq_lanes — the K-quant sub-block scale searches (make_qkx2/3_quants
 * and make_qx_quants with rmse_type 1, quant_common.h) over many sub-blocks
 * at once, one sub-block per vector lane, each lane doing the reference's
 * float arithmetic in the reference's order (no fused multiply-add), so the
 * scales, mins and integers are bit-identical to it. These searches are 90%
 * of Q2_K/Q4_K/Q5_K/Q6_K quantization time (and Q3_K's with an importance
 * matrix; without one Q3_K's coordinate descent stays scalar). Internal to
 * formats/. */
#ifndef MOE_FORMATS_QUANT_KQ_LANES_H
#define MOE_FORMATS_QUANT_KQ_LANES_H

#include <stdbool.h>
#include <stdint.h>

#include "formats/base/isa.h"

/* The arguments of make_qkx2/3_quants that are the same for every sub-block
 * of a super-block. n is 16 or 32. */
typedef struct {
    int n, nmax;
    float rmin, rdelta;
    int nstep;
    bool use_mad;
    bool qkx3; /* make_qkx3's early exit (max <= min) rather than make_qkx2's (max == min) */
} moe_qkx_params;

/* For b < nsub, sub-block b = x[n b .. n b + n) under weights w[n b ..]:
 * L[n b ..], scales[b] and mins[b] exactly as moe_make_qkx2_quants (or
 * qkx3) returns them. */
typedef void (*moe_qkx_subblocks_fn)(const moe_qkx_params *p, const float *x, const float *w,
                                     int nsub, uint8_t *L, float *scales, float *mins);

/* For b < nsub: scales[b] = moe_make_qx_quants(n, nmax, x + n b, L + n b, 1,
 * qw ? qw + n b : NULL). n is 16 or 32. */
typedef void (*moe_qx1_subblocks_fn)(int n, int nmax, const float *x, const float *qw, int nsub,
                                     int8_t *L, float *scales);

typedef struct {
    moe_qkx_subblocks_fn qkx;
    moe_qx1_subblocks_fn qx1;
} moe_kq_search;

/* The scalar reference: loops over quant_common.c's functions. */
extern const moe_kq_search moe_kq_search_ref;
/* The version for one level; NULL when this build has none for it. */
const moe_kq_search *moe_kq_search_for(moe_isa_level level);
/* The version of the detected level, or the one MOE_CPU_LEVEL names. */
const moe_kq_search *moe_kq_search_active(void);

/* The AVX2 build of quant_kq_lanes.inc (x86 only), also the AVX-512 level's. */
extern const moe_kq_search moe_kq_search_avx2;

#endif
