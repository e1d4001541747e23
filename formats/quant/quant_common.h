/* quant_common — the scalar search helpers shared by the quantizers (internal
 * to formats/).
 *
 * Owns: the rounding rule (moe_nearest_int), the group epsilons, and the
 * per-sub-block scale searches that llama.cpp's K-quant, legacy and IQ4
 * quantizers are built from. Each helper has the semantics and the argument
 * meaning of the llama.cpp function of the same name without the moe_ prefix
 * (ggml/src/ggml-quants.c as of Feb 2025, commit c392e50; see
 * ../shared/spec/quant.md §1.3), and the same float operation order, because
 * the callers must reproduce llama.cpp's bytes exactly. Does not own: block
 * layouts (quant_blocks.h) or the per-type quantizers (quant_impl.h).
 *
 * All functions are pure: they read x / weights, write only the L / Laux /
 * the_min outputs they are given, keep no state, and are thread-safe.
 * n is at most 256 everywhere.
 */
#ifndef MOE_FORMATS_QUANT_COMMON_H
#define MOE_FORMATS_QUANT_COMMON_H

#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>

/* Every includer is a quantizer that must round like llama.cpp: a fused
 * multiply-add (e.g. iscale*x + 1.5*2^23 inside moe_nearest_int once inlined)
 * rounds once where llama.cpp rounds twice and changes bytes. GCC keeps
 * contraction off in ISO C mode (-std=c11, which we use) and warns on this
 * pragma; clang contracts by default, so it is switched off for the rest of
 * the including file. Never build these files with -ffast-math. */
#ifdef __clang__
#pragma STDC FP_CONTRACT OFF
#endif

/* Below these a group's largest magnitude counts as zero (llama.cpp's values). */
#define MOE_GROUP_MAX_EPS 1e-15f
#define MOE_GROUP_MAX_EPS_IQ3_XXS 1e-8f
#define MOE_GROUP_MAX_EPS_IQ2_S 1e-8f
#define MOE_GROUP_MAX_EPS_IQ1_M 1e-7f
#define MOE_GROUP_MAX_EPS_IQ1_S 1e-12f

/* Rounds to the nearest integer, ties to even, for |fval| <= 2^22 - 1.
 * Adding 1.5 * 2^23 pushes the value into the binade where one unit of the
 * mantissa is 1.0, so the FPU's own round-to-nearest-even does the rounding;
 * the integer is then read back from the low mantissa bits. This is not
 * roundf (ties away from zero): llama.cpp uses this rule, so we must too.
 * Outside the range the result is meaningless (llama.cpp's is the same). */
static inline int moe_nearest_int(float fval) {
    float val = fval + 12582912.f;
    int32_t i;
    memcpy(&i, &val, sizeof i);
    return (i & 0x007fffff) - 0x00400000;
}

/* The value of largest magnitude among x[0..n), with its sign (the first one
 * on ties; 0 when all are zero); *amax receives its magnitude. A NaN never
 * wins the comparison, as in llama.cpp's loops. */
static inline float moe_signed_absmax(const float *x, int n, float *amax) {
    float best = 0.0f, max = 0.0f;
    for (int i = 0; i < n; ++i) {
        const float ax = fabsf(x[i]);
        if (ax > best) {
            best = ax;
            max = x[i];
        }
    }
    *amax = best;
    return max;
}

/* Symmetric quantization of n values to integers in [-nmax, nmax-1] with a
 * scale chosen by weighted least squares.
 * L receives the integers offset by +nmax (so 0..2*nmax-1). Returns the scale
 * (value ≈ scale * (L - nmax)); 0 with L all 0 when max |x| < MOE_GROUP_MAX_EPS.
 * rmse_type: 0 = plain rounding at scale max/-nmax, no search; 1..4 = search
 * 19 candidate scales, weights qw if non-NULL else x^2 (1), 1 (2), |x| (3),
 * sqrt|x| (4); negative = one fit then return the mean of fitted and initial
 * scale. qw may be NULL. */
float moe_make_qx_quants(int n, int nmax, const float *x, int8_t *L, int rmse_type,
                         const float *qw);

/* Asymmetric quantization of n values to 0..nmax with an offset:
 * value ≈ scale * L - *the_min. weights (n, required) weigh the error;
 * the search tries nstep+1 inverse scales (rmin + rdelta*is + nmax)/(max-min)
 * and keeps the lowest weighted error, |err| if use_mad else err^2. The min
 * is never positive, so *the_min >= 0. Laux is scratch of n bytes.
 * Returns the scale (0 with L all 0 when all x are equal). */
float moe_make_qkx2_quants(int n, int nmax, const float *x, const float *weights, uint8_t *L,
                           float *the_min, uint8_t *Laux, float rmin, float rdelta, int nstep,
                           bool use_mad);

/* As moe_make_qkx2_quants, but weights may be NULL (then x^2), and an all
 * non-positive group (max <= min after clamping min to 0) returns 0. */
float moe_make_qkx3_quants(int n, int nmax, const float *x, const float *weights, uint8_t *L,
                           float *the_min, uint8_t *Laux, float rmin, float rdelta, int nstep,
                           bool use_mad);

/* Quantizes n non-negative values (sub-block scales or mins) to 0..nmax with
 * one scale: tries 9 inverse scales, then up to 5 passes of per-element
 * re-rounding that only accept improvements of the weighted fit.
 * quant_weights (n, required) weigh each value. L receives the integers.
 * Returns the scale: 0 with L all 0 when max < MOE_GROUP_MAX_EPS, and 0 when
 * the weighted fit is empty (all weights 0). There llama.cpp of Feb 2025
 * returns NaN, which its llama-quantize rejects; we take its later guarded
 * form, identical wherever the Feb 2025 result is finite. */
float moe_make_qp_quants(int n, int nmax, const float *x, uint8_t *L, const float *quant_weights);

/* Symmetric quantization to [-nmax, nmax-1] with x^2 weights. With do_rmse,
 * up to 5 passes of per-element re-rounding improve the least-squares fit;
 * without it, plain rounding at scale max/-nmax. L receives the integers
 * offset by +nmax. Returns the scale (0 with L all 0 for an all-zero group;
 * 0, where llama.cpp of Feb 2025 gives NaN, if every x^2 underflows). */
float moe_make_q3_quants(int n, int nmax, const float *x, int8_t *L, bool do_rmse);

#endif
