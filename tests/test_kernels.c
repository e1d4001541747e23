/* Fast CPU kernels against their references, at ragged shapes.
 *
 * For every kernel of the scalar level (runtime/cpu/kernels_scalar.c):
 *  - the scalar kernel against a double-precision sum of dequantized weights
 *    times dequantized activations (is the stated arithmetic right?);
 *  - every SIMD level this machine runs against the scalar kernel: the same
 *    activation bytes, and products within 1e-5 of the row's magnitude
 *    (sum of |w·x|), since only the order of float sums may differ; both
 *    orders (mm, and mm_vec where a level has one);
 *  - F16 and BF16 exactly: the scalar kernels against the reference path's
 *    float helpers (dot_gemm, dot_vec), the SIMD levels against the scalar;
 *  - Q4_1 and Q5_1 against the double sum plus the Q8_1 s correction;
 *  - an interleaved type against its plain twin: bit-identical at the scalar
 *    level (same integer sums in the same order), within the tolerance above
 *    at each SIMD level (the layouts put a row's values in other lanes).
 * One token over 17 row groups: every group the bits of that group alone
 * (the 512-bit one-token kernels read several streams of groups).
 * Shapes: T = 1, 3, 7, 64 tokens; rows not a multiple of the kernels' token
 * tile; row ranges starting inside the matrix; row lengths of 1, 3 and 9
 * blocks (32-value types) or 1 and 3 super-blocks. Seeds are fixed and printed. */
#include <math.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "formats/quant/fp16.h"
#include "formats/quant/interleave.h"
#include "formats/quant/quant.h"
#include "runtime/cpu/kernels.h"
#include "runtime/cpu_ops.h"
#include "test_util.h"

static float frand(void) { return (float)((double)test_rng_next() / 4294967296.0 * 2.0 - 1.0); }

/* Weights of type t (n_out rows of n_in) from random floats; interleaved
 * types are made from their plain twin. */
static uint8_t *make_weights(moe_type t, int64_t n_in, int64_t n_out, uint64_t *row_bytes) {
    const moe_type base = moe_type_get(t)->base;
    moe_type_row_size(t, n_in, row_bytes, NULL);
    float *f = malloc((size_t)(n_in * n_out) * sizeof *f);
    uint8_t *plain = malloc((size_t)(*row_bytes * (uint64_t)n_out));
    uint8_t *out = malloc((size_t)(*row_bytes * (uint64_t)n_out));
    for (int64_t i = 0; i < n_in * n_out; i++)
        f[i] = frand() * (i % 97 == 0 ? 8.0f : 1.0f); /* some outliers */
    moe_err err = {0};
    moe_status st = moe_quantize_rows(base, f, plain, n_out, n_in, NULL, &err);
    if (st == MOE_OK && t != base)
        st = moe_interleave_rows(t, plain, out, n_in, n_out, &err);
    else
        memcpy(out, plain, (size_t)(*row_bytes * (uint64_t)n_out));
    CHECK(st == MOE_OK, "making %s weights: %s", moe_type_name(t), err.msg);
    free(f);
    free(plain);
    return out;
}

/* Dequantized activation row (for the double-precision check). */
static void act_to_f32(moe_act_format f, const uint8_t *a, int64_t n, float *out) {
    if (f == MOE_ACT_F16 || f == MOE_ACT_BF16) {
        for (int64_t i = 0; i < n; i++) {
            const uint16_t h = (uint16_t)(a[2 * i] | a[2 * i + 1] << 8);
            out[i] = f == MOE_ACT_F16 ? moe_f16_to_f32(h) : moe_bf16_to_f32(h);
        }
    } else if (f == MOE_ACT_Q8) {
        const moe_act_q8 *b = (const moe_act_q8 *)a;
        for (int64_t i = 0; i < n; i++)
            out[i] = b[i / 32].d * (float)b[i / 32].qs[i % 32];
    } else {
        const moe_act_q8k *b = (const moe_act_q8k *)a;
        for (int64_t i = 0; i < n; i++)
            out[i] = b[i / 256].d * (float)b[i / 256].qs[i % 256];
    }
}

/* Weights with a min (Q4_1, Q5_1) meet the activation's Q8_1 s, which is
 * d·Σq rounded to fp16 on its own, not the dequantized activations' sum:
 * the part the dequantized product misses, Σ over blocks of m·(s − d·Σq). */
static double q8_1_correction(moe_type t, const uint8_t *wrow, const uint8_t *a, int64_t n_in) {
    if (t != MOE_TYPE_Q4_1 && t != MOE_TYPE_Q5_1)
        return 0.0;
    const uint64_t bsize = moe_type_get(t)->type_size;
    const moe_act_q8 *b = (const moe_act_q8 *)a;
    double c = 0.0;
    for (int64_t ib = 0; ib < n_in / 32; ib++) {
        const uint8_t *m = wrow + (uint64_t)ib * bsize + 2; /* fp16 after d */
        c += (double)moe_f16_to_f32((uint16_t)(m[0] | m[1] << 8)) *
             ((double)b[ib].s - (double)b[ib].d * b[ib].sum);
    }
    return c;
}

typedef struct shape {
    int64_t n_in, n_out, T, r0, r1;
} shape;

/* A level's products (yl) against the scalar level's (ys): within 1e-5 of
 * each row's magnitude, or bit-identical where exact; rows outside the range
 * must stay untouched (zero). */
static void compare_level(const moe_cpu_kernel *sk, int level, const char *which, const shape *s,
                          const float *yl, const float *ys, const double *mag, bool exact) {
    const int64_t n_out = s->n_out;
    int off = 0, outside = 0;
    double worst = 0;
    for (int64_t ti = 0; ti < s->T; ti++)
        for (int64_t r = 0; r < n_out; r++) {
            const int64_t i = ti * n_out + r;
            if (r < s->r0 || r >= s->r1) {
                outside += yl[i] != 0.0f;
                continue;
            }
            const double d = fabs((double)yl[i] - ys[i]) / (mag[i] + 1e-6);
            worst = d > worst ? d : worst;
            off += exact ? memcmp(&yl[i], &ys[i], sizeof *yl) != 0 : d > 1e-5;
        }
    CHECK(!off && !outside, "%s %s %s: %d values off%s (worst %.2e of the magnitude), %d written outside rows [%lld, %lld); n_in %lld n_out %lld T %lld",
          moe_type_name(sk->type), moe_cpu_level_name((moe_cpu_level)level), which, off,
          exact ? " (exact expected)" : "", worst, outside, (long long)s->r0, (long long)s->r1,
          (long long)s->n_in, (long long)n_out, (long long)s->T);
}

/* For a plain type: keeps the first SIMD level's products (*first), or
 * checks a later level's are the same bits. */
static void keep_or_match(const moe_cpu_kernel *sk, int level, int first_level, const char *which,
                          const shape *s, const float *yl, float **first) {
    const size_t bytes = (size_t)(s->T * s->n_out) * sizeof *yl;
    if (sk->rows != 1)
        return;
    if (!*first) {
        *first = malloc(bytes);
        memcpy(*first, yl, bytes);
        return;
    }
    CHECK(!memcmp(*first, yl, bytes), "%s %s %s: not the bits of level %s (n_in %lld, rows [%lld, %lld), T %lld)",
          moe_type_name(sk->type), moe_cpu_level_name((moe_cpu_level)level), which,
          moe_cpu_level_name((moe_cpu_level)first_level), (long long)s->n_in, (long long)s->r0,
          (long long)s->r1, (long long)s->T);
}

/* F16/BF16 at the scalar level are the reference path's products: its float
 * helpers (dot_gemm, dot_vec) on the widened weight row and activations. */
static void check_reference_order(const moe_cpu_kernel *sk, const uint8_t *w, uint64_t rb,
                                  const uint8_t *act, uint64_t as, const shape *s, const float *ys,
                                  const float *yv) {
    const moe_cpu_float_ops *ref = moe_cpu_float_ops_scalar();
    float *wf = malloc((size_t)s->n_in * sizeof *wf), *xf = malloc((size_t)s->n_in * sizeof *xf);
    int bad = 0;
    for (int64_t ti = 0; ti < s->T; ti++) {
        act_to_f32(sk->act, act + (uint64_t)ti * as, s->n_in, xf);
        for (int64_t r = s->r0; r < s->r1; r++) {
            act_to_f32(sk->act, w + (uint64_t)r * rb, s->n_in, wf); /* the same 16-bit layout */
            const float g = ref->dot_gemm(wf, xf, s->n_in), v = ref->dot_vec(wf, xf, s->n_in);
            bad += memcmp(&g, &ys[ti * s->n_out + r], sizeof g) != 0;
            bad += !yv || memcmp(&v, &yv[ti * s->n_out + r], sizeof v) != 0;
        }
    }
    CHECK(!bad, "%s scalar: %d products differ from the reference float orders (n_in %lld, T %lld)",
          moe_type_name(sk->type), bad, (long long)s->n_in, (long long)s->T);
    free(wf), free(xf);
}

/* At each SIMD level, the interleaved kernel on w against the plain twin's
 * kernel of the same level on the de-interleaved rows: the integer block sums
 * agree, but the two layouts put a row's values in different lanes, so the
 * float sums may differ in order: within the same 1e-5 of the magnitude. */
static void check_twin_levels(moe_type t, moe_type base, const uint8_t *w, const uint8_t *plain,
                              uint64_t rb, const uint8_t *act, uint64_t as, const shape *s,
                              const double *mag) {
    const size_t ny = (size_t)(s->T * s->n_out);
    float *yi = calloc(ny, sizeof *yi), *yp = calloc(ny, sizeof *yp);
    for (int level = MOE_CPU_AVX2; level <= (int)moe_cpu_level_detected(); level++) {
        const moe_cpu_kernel *ik = moe_cpu_kernel_find((moe_cpu_level)level, t);
        const moe_cpu_kernel *pk = moe_cpu_kernel_find((moe_cpu_level)level, base);
        if (!ik || !pk)
            continue;
        memset(yi, 0, ny * sizeof *yi), memset(yp, 0, ny * sizeof *yp);
        ik->mm(w, rb, s->n_in, s->r0, s->r1, act, as, s->T, yi, s->n_out);
        pk->mm(plain, rb, s->n_in, s->r0, s->r1, act, as, s->T, yp, s->n_out);
        compare_level(ik, level, "mm vs its plain twin's", s, yi, yp, mag, false);
    }
    free(yi), free(yp);
}

static void check_kernel(const moe_cpu_kernel *sk, const shape *s) {
    const moe_type t = sk->type;
    const int64_t n_in = s->n_in, n_out = s->n_out, T = s->T;
    uint64_t rb;
    uint8_t *w = make_weights(t, n_in, n_out, &rb);
    float *x = malloc((size_t)(n_in * T) * sizeof *x);
    for (int64_t i = 0; i < n_in * T; i++)
        x[i] = frand() * 3.0f;
    const uint64_t as = moe_act_row_bytes(sk->act, n_in);
    uint8_t *act = malloc((size_t)(as * (uint64_t)T)), *act2 = malloc((size_t)(as * (uint64_t)T));
    for (int64_t i = 0; i < T; i++)
        moe_cpu_kernels_scalar()->quantize[sk->act](x + i * n_in, act + i * as, n_in);
    float *ys = calloc((size_t)(T * n_out), sizeof *ys), *yl = calloc((size_t)(T * n_out), sizeof *yl);
    sk->mm(w, rb, n_in, s->r0, s->r1, act, as, T, ys, n_out);

    /* the scalar kernel against a double sum, and each row's magnitude */
    float *wf = malloc((size_t)(n_in * n_out) * sizeof *wf), *xf = malloc((size_t)n_in * sizeof *xf);
    moe_type_get(t)->to_f32(w, wf, n_in, n_out);
    double *mag = calloc((size_t)(T * n_out), sizeof *mag);
    int bad = 0;
    for (int64_t ti = 0; ti < T; ti++) {
        act_to_f32(sk->act, act + ti * as, n_in, xf);
        for (int64_t r = s->r0; r < s->r1; r++) {
            double sum = q8_1_correction(t, w + (uint64_t)r * rb, act + ti * as, n_in), m = 0;
            for (int64_t i = 0; i < n_in; i++) {
                sum += (double)wf[r * n_in + i] * xf[i];
                m += fabs((double)wf[r * n_in + i] * xf[i]);
            }
            mag[ti * n_out + r] = m;
            bad += fabs(sum - ys[ti * n_out + r]) > 1e-5 * (m + 1e-6);
        }
    }
    CHECK(!bad, "%s scalar vs double: %d of %lld values off (n_in %lld, T %lld)", moe_type_name(t),
          bad, (long long)(T * (s->r1 - s->r0)), (long long)n_in, (long long)T);

    /* F16/BF16 keep the reference path's bits: its float orders, exactly */
    const bool exact = sk->act == MOE_ACT_F16 || sk->act == MOE_ACT_BF16;
    float *yv = NULL; /* the scalar level's vec order, where it has one */
    if (sk->mm_vec) {
        yv = calloc((size_t)(T * n_out), sizeof *yv);
        sk->mm_vec(w, rb, n_in, s->r0, s->r1, act, as, T, yv, n_out);
    }
    if (exact)
        check_reference_order(sk, w, rb, act, as, s, ys, yv);

    /* plain types keep one float order (llama.cpp's) at every SIMD level, whatever
     * the register width: the first SIMD level's bits, mm and mm_vec */
    float *first[2] = {NULL, NULL}, *y512 = NULL;
    int first_level = -1;
    for (int level = MOE_CPU_AVX2; level <= (int)moe_cpu_level_detected(); level++) {
        const moe_cpu_kernel_table *tab = moe_cpu_kernels((moe_cpu_level)level);
        const moe_cpu_kernel *lk = moe_cpu_kernel_find((moe_cpu_level)level, t);
        if (!tab || !lk)
            continue;
        for (int64_t i = 0; i < T; i++)
            tab->quantize[sk->act](x + i * n_in, act2 + i * as, n_in);
        CHECK(!memcmp(act, act2, (size_t)(as * (uint64_t)T)), "%s: %s activations differ from the scalar level's",
              moe_type_name(t), moe_cpu_level_name((moe_cpu_level)level));
        memset(yl, 0, (size_t)(T * n_out) * sizeof *yl);
        lk->mm(w, rb, n_in, s->r0, s->r1, act, as, T, yl, n_out);
        compare_level(sk, level, "mm vs scalar", s, yl, ys, mag, exact);
        /* the AMX level runs the AVX-512 level's arithmetic (some of it on tiles): its bits */
        if (level == MOE_CPU_AVX512)
            y512 = memcpy(malloc((size_t)(T * n_out) * sizeof *yl), yl, (size_t)(T * n_out) * sizeof *yl);
        else if (level == MOE_CPU_AMX && y512)
            CHECK(!memcmp(y512, yl, (size_t)(T * n_out) * sizeof *yl),
                  "%s amx: not the bits of level avx512 (n_in %lld, rows [%lld, %lld), T %lld)",
                  moe_type_name(t), (long long)n_in, (long long)s->r0, (long long)s->r1, (long long)T);
        keep_or_match(sk, level, first_level, "mm", s, yl, &first[0]);
        if (lk->mm_vec) { /* against the scalar vec order, or its only order */
            memset(yl, 0, (size_t)(T * n_out) * sizeof *yl);
            lk->mm_vec(w, rb, n_in, s->r0, s->r1, act, as, T, yl, n_out);
            compare_level(sk, level, "mm_vec vs scalar", s, yl, yv ? yv : ys, mag, exact);
            keep_or_match(sk, level, first_level, "mm_vec", s, yl, &first[1]);
        }
        if (first_level < 0)
            first_level = level;
    }
    free(yv), free(first[0]), free(first[1]), free(y512);

    /* interleaved vs plain twin: identical at the scalar level */
    const moe_type base = moe_type_get(t)->base;
    const moe_cpu_kernel *pk = moe_cpu_kernel_find(MOE_CPU_SCALAR, base);
    if (t != base && pk) {
        uint8_t *plain = malloc((size_t)(rb * (uint64_t)n_out));
        moe_err err = {0};
        moe_status st = moe_deinterleave_rows(t, w, plain, n_in, n_out, &err);
        memset(yl, 0, (size_t)(T * n_out) * sizeof *yl);
        pk->mm(plain, rb, n_in, s->r0, s->r1, act, as, T, yl, n_out);
        CHECK(st == MOE_OK && !memcmp(ys, yl, (size_t)(T * n_out) * sizeof *ys),
              "%s differs from its plain twin %s", moe_type_name(t), moe_type_name(base));
        check_twin_levels(t, base, w, plain, rb, act, as, s, mag);
        free(plain);
    }
    free(w), free(x), free(act), free(act2), free(ys), free(yl), free(wf), free(xf), free(mag);
}

/* Run-time repacking: at each level with an -rtr kernel for plain type base,
 * that kernel on plain rows, in batches of 4 tokens or more, equals the
 * interleaved twin's kernel of the same level on the interleaved rows, bit
 * for bit (same integers, same float operations): the 256-bit tiles, the
 * 512-bit strips with their rest, the activation chunks and the few tokens
 * they may leave. Fewer tokens, and rows too long for the 512-bit strip
 * buffer (plain_only): the plain kernel's bits (llama.cpp's orders, mm and mm_vec).
 * On a CPU without AVX-512 the 512-bit paths (and Q4_K's) are not run. */
/* One token over many row groups: the 512-bit one-token kernels read a
 * range's groups as several streams side by side, groups left over one at a
 * time (kernels_zmm_one.inc). Every group's values must be the bits the same
 * kernel gives for that group alone (the one-group path): rows [R, 18R) of
 * 19R, 17 groups, two per stream and one left over, and [0, 5R) (all left
 * over). */
static void check_streams(moe_type t, int64_t n_in) {
    for (int level = MOE_CPU_AVX2; level <= (int)moe_cpu_level_detected(); level++) {
        const moe_cpu_kernel *k = moe_cpu_kernel_find((moe_cpu_level)level, t);
        if (!k)
            continue;
        const int64_t R = k->rows, n_out = 19 * R;
        uint64_t rb;
        uint8_t *w = make_weights(t, n_in, n_out, &rb);
        float *x = malloc((size_t)n_in * sizeof *x);
        for (int64_t i = 0; i < n_in; i++)
            x[i] = frand() * 3.0f;
        const uint64_t as = moe_act_row_bytes(k->act, n_in);
        uint8_t *act = malloc((size_t)as);
        moe_cpu_kernels((moe_cpu_level)level)->quantize[k->act](x, act, n_in);
        float *ya = calloc((size_t)n_out, sizeof *ya), *yg = calloc((size_t)n_out, sizeof *yg);
        const int64_t ranges[2][2] = {{R, 18 * R}, {0, 5 * R}};
        for (int vec = 0; vec < 2; vec++) {
            const moe_mm_fn mm = vec && k->mm_vec ? k->mm_vec : k->mm;
            for (int ri = 0; ri < 2; ri++) {
                const int64_t r0 = ranges[ri][0], r1 = ranges[ri][1];
                mm(w, rb, n_in, r0, r1, act, as, 1, ya, n_out);
                for (int64_t r = r0; r < r1; r += R)
                    mm(w, rb, n_in, r, r + R, act, as, 1, yg, n_out);
                int bad = 0;
                for (int64_t r = r0; r < r1; r++)
                    bad += memcmp(&ya[r], &yg[r], sizeof *ya) != 0;
                CHECK(!bad, "%s %s%s one token, rows [%lld, %lld): %d values differ from one group at a time",
                      moe_cpu_level_name((moe_cpu_level)level), moe_type_name(t), vec ? " (vec)" : "",
                      (long long)r0, (long long)r1, bad);
            }
        }
        free(w), free(x), free(act), free(ya), free(yg);
    }
}

static void check_rtr(moe_type base, int64_t n_in, int64_t n_out, int64_t T, int64_t r0, int64_t r1,
                      bool plain_only) {
    for (int level = MOE_CPU_AVX2; level <= (int)moe_cpu_level_detected(); level++) {
        const moe_cpu_kernel *rk = moe_cpu_kernel_find_rtr((moe_cpu_level)level, base);
        if (!rk)
            continue;
        const moe_type twin = moe_interleaved_variant(base);
        const moe_cpu_kernel *ik = moe_cpu_kernel_find((moe_cpu_level)level, twin);
        const moe_cpu_kernel *pk = moe_cpu_kernel_find((moe_cpu_level)level, base);
        CHECK(ik && pk && ik->rows == rk->rows && ik->act == rk->act && pk->act == rk->act,
              "%s: -rtr kernel of %s without matching %s and %s kernels",
              moe_cpu_level_name((moe_cpu_level)level), moe_type_name(base), moe_type_name(twin),
              moe_type_name(base));
        if (!ik || !pk)
            continue;
        uint64_t rb;
        uint8_t *plain = make_weights(base, n_in, n_out, &rb);
        uint8_t *ilv = malloc((size_t)(rb * (uint64_t)n_out));
        moe_err err = {0};
        CHECK(moe_interleave_rows(twin, plain, ilv, n_in, n_out, &err) == MOE_OK, "%s", err.msg);
        float *x = malloc((size_t)(n_in * T) * sizeof *x);
        for (int64_t i = 0; i < n_in * T; i++)
            x[i] = frand() * 3.0f;
        const uint64_t as = moe_act_row_bytes(rk->act, n_in);
        uint8_t *act = malloc((size_t)(as * (uint64_t)T));
        for (int64_t i = 0; i < T; i++)
            moe_cpu_kernels((moe_cpu_level)level)->quantize[rk->act](x + i * n_in, act + i * as, n_in);
        const size_t ny = (size_t)(T * n_out);
        float *yr = calloc(ny, sizeof *yr), *ye = calloc(ny, sizeof *ye);
        /* the strip buffer is the 512-bit levels' (avx512, amx); the 256-bit level transposes per tile */
        const bool as_twin = T >= 4 && !(plain_only && level >= MOE_CPU_AVX512);
        for (int vec = 0; vec < 2; vec++) {
            moe_mm_fn r_mm = vec && rk->mm_vec ? rk->mm_vec : rk->mm;
            moe_mm_fn e_mm = as_twin ? ik->mm : vec && pk->mm_vec ? pk->mm_vec : pk->mm;
            memset(yr, 0, ny * sizeof *yr), memset(ye, 0, ny * sizeof *ye);
            r_mm(plain, rb, n_in, r0, r1, act, as, T, yr, n_out);
            e_mm(as_twin ? ilv : plain, rb, n_in, r0, r1, act, as, T, ye, n_out);
            int bad = 0;
            for (size_t i = 0; i < ny; i++)
                bad += memcmp(&yr[i], &ye[i], sizeof *yr) != 0;
            CHECK(!bad, "%s -rtr %s%s vs %s: %d of %zu values differ (n_in %lld, rows [%lld, %lld) of %lld, T %lld)",
                  moe_cpu_level_name((moe_cpu_level)level), moe_type_name(base), vec ? " (vec)" : "",
                  moe_type_name(as_twin ? twin : base), bad, ny, (long long)n_in, (long long)r0,
                  (long long)r1, (long long)n_out, (long long)T);
        }
        free(plain), free(ilv), free(x), free(act), free(yr), free(ye);
    }
}

/* ggml's exp through SiLU and softmax's exp-and-sum, bit for bit, over values
 * that reach every branch: exp's polynomial range, subnormal results, the
 * underflow to 0 and overflow to inf, signed zeros, infinities and NaN. */
static void check_exp_ops(const moe_cpu_float_ops *ref, const moe_cpu_float_ops *f, const char *name) {
    enum { N = 4096 };
    static float v[N], s0[N], s1[N];
    const float special[] = {0.0f, -0.0f, 88.0f, 88.8f, -87.0f, -103.0f, -104.5f, -120.0f, -133.0f,
                             -140.0f, 133.0f, 1e30f, -1e30f, INFINITY, -INFINITY, NAN, 1e-30f, -1e-40f};
    for (int i = 0; i < N; i++) {
        const float r = frand();
        v[i] = i < (int)(sizeof special / sizeof special[0]) ? special[i]
               : i % 3 == 0 ? r * 200.0f /* the edges of the 192 exponent cut */
               : i % 3 == 1 ? r * 20.0f : r;
    }
    memcpy(s0, v, sizeof v);
    memcpy(s1, v, sizeof v);
    ref->silu16(s0, N);
    f->silu16(s1, N);
    CHECK(!memcmp(s0, s1, sizeof s0), "%s silu16 differs from the scalar", name);
    for (int i = 0; i < N; i++) /* softmax sees x - max <= 0, down to -inf */
        v[i] = i < 4 ? -INFINITY : -fabsf(v[i]);
    v[5] = NAN;
    for (int64_t n16 = 16; n16 <= N; n16 *= 4) {
        memcpy(s0, v, sizeof v);
        memcpy(s1, v, sizeof v);
        const double a = ref->exp_sum16(s0, n16, 0.25f), b = f->exp_sum16(s1, n16, 0.25f);
        CHECK(!memcmp(s0, s1, (size_t)n16 * 4), "%s exp_sum16 n=%lld: values differ", name, (long long)n16);
        CHECK(!memcmp(&a, &b, sizeof a) || (a != a && b != b), "%s exp_sum16 n=%lld: sum %.17g vs %.17g",
              name, (long long)n16, b, a);
    }
    float e[16];
    for (int i = 0; i < 16; i++)
        e[i] = -88.0f - (float)i; /* e^-88 .. e^-103: results in the subnormals */
    memcpy(s0, e, sizeof e);
    ref->exp_sum16(s0, 16, 0.0f);
    CHECK(s0[0] > 0.0f && s0[0] < 1.17549435e-38f, "subnormal case not reached (%g)", s0[0]);
}

/* The float helpers of each level give the scalar helpers' bits exactly. */
/* One head's scores (vec: one token's order) at a level against the scalar
 * ones, and the scalar ones against dot_vec / dot_gemm on the widened rows. */
static void check_scores_one_head(const moe_cpu_float_ops *ref, const moe_cpu_float_ops *f, const char *name,
                                  bool vec, const float *q, const uint8_t *base, uint64_t stride,
                                  const int32_t *cell, int64_t n, int64_t dk) {
    static float s0[256], s1[256], w[1024];
    const char *op = vec ? "scores_f16_vec" : "scores_f16";
    (vec ? ref->scores_f16_vec : ref->scores_f16)(q, base, stride, cell, n, dk, s0, 1, 0);
    (vec ? f->scores_f16_vec : f->scores_f16)(q, base, stride, cell, n, dk, s1, 1, 0);
    CHECK(!memcmp(s0, s1, (size_t)n * 4), "%s %s n=%lld dk=%lld differs", name, op, (long long)n, (long long)dk);
    for (int64_t j = 0; j < n && f == ref; j++) {
        ref->f16_row(base + (uint64_t)cell[j] * stride, w, dk);
        const float d = (vec ? ref->dot_vec : ref->dot_gemm)(q, w, dk);
        CHECK(!memcmp(&d, &s0[j], 4), "scalar %s n=%lld dk=%lld slot %lld: not %s's", op, (long long)n,
              (long long)dk, (long long)j, vec ? "dot_vec" : "dot_gemm");
    }
}

/* Several query heads on one KV head (1..7: groups of 4 and the rest), both
 * orders, against the scalar ones head by head. */
static void check_scores_heads(const moe_cpu_float_ops *ref, const moe_cpu_float_ops *f, const char *name,
                               const uint8_t *kv, int64_t row, const int32_t *cell) {
    const uint64_t stride = (uint64_t)row * 2;
    {
        static float qh[7 * 192], s0[7 * 64], s1[7 * 64], s2[64];
        for (int i = 0; i < 7 * 192; i++)
            qh[i] = frand() * 2.0f;
        /* 128 and 64: the 512-bit kernels' compile-time head sizes; 100: q held
         * in registers with a scalar tail (VEC); 144, 192: run-time sizes */
        static const int64_t dks[2][5] = {{64, 128, 192, 0, 0}, {64, 100, 128, 144, 192}};
        for (int64_t nh = 1; nh <= 7; nh++)
            for (int vec = 0; vec < 2; vec++)
                for (int di = 0; di < 5 && dks[vec][di]; di++) {
                    const int64_t dk = dks[vec][di], n = 37;
                    (vec ? f->scores_f16_vec : f->scores_f16)(qh, kv, stride, cell, n, dk, s1, nh, 64);
                    (vec ? ref->scores_f16_vec : ref->scores_f16)(qh, kv, stride, cell, n, dk, s0, nh, 64);
                    int off = 0;
                    for (int64_t h = 0; h < nh; h++) {
                        (vec ? ref->scores_f16_vec : ref->scores_f16)(qh + h * dk, kv, stride, cell, n, dk, s2, 1, 0);
                        off += memcmp(s0 + h * 64, s2, (size_t)n * 4) != 0;
                        off += memcmp(s1 + h * 64, s2, (size_t)n * 4) != 0;
                    }
                    CHECK(!off, "%s %s %lld heads dk=%lld: %d heads differ from one head at a time", name,
                          vec ? "scores_f16_vec" : "scores_f16", (long long)nh, (long long)dk, off);
                }
    }
}

/* The batched attention helpers over an F16 cache: the scalar ones against
 * the reference composition (dot_gemm on the widened rows; fma_row into lane
 * j % 16, moe_reduce16 per value), every level's against the scalar ones, bit
 * for bit, with cells out of order, n = 0..40 slots and head sizes that leave
 * 16- and 8-value tails. Also round_f16_row and max_row. */
static void check_attention_ops(const moe_cpu_float_ops *ref, const moe_cpu_float_ops *f, const char *name) {
    enum { CELLS = 200, ROW = 400 };
    static uint8_t kv[CELLS * ROW * 2];
    float q[ROW], p[CELLS], o0[ROW], o1[ROW], w[ROW];
    int32_t cell[CELLS];
    for (int i = 0; i < CELLS * ROW; i++) {
        const uint16_t v = (uint16_t)(test_rng_next() & 0xbbff); /* finite halves, both signs */
        kv[2 * i] = (uint8_t)v, kv[2 * i + 1] = (uint8_t)(v >> 8);
    }
    for (int i = 0; i < ROW; i++)
        q[i] = frand() * 3.0f;
    for (int j = 0; j < CELLS; j++) {
        cell[j] = (j * 29 + 7) % CELLS; /* a permutation */
        p[j] = frand() * frand();
    }
    const int64_t dks[] = {16, 48, 128, 256};
    const int64_t dvs[] = {8, 24, 128, 136, 152, 400};
    check_scores_heads(ref, f, name, kv, ROW, cell);
    /* one token: 64 lanes and a double tail (n_lane = n_slots & ~63 capped at n) */
    const int64_t dks_vec[] = {16, 64, 100, 128, 192, 576};
    const int64_t nls[][2] = {{0, 0}, {0, 31}, {17, 17}, {64, 64}, {64, 100}, {70, 90}, {128, 128}, {128, 190}, {192, 200}};
    for (size_t c = 0; c < sizeof nls / sizeof nls[0]; c++) {
        const int64_t n_lane = nls[c][0], n = nls[c][1];
        for (size_t k = 0; k < sizeof dks_vec / sizeof dks_vec[0] && dks_vec[k] <= ROW; k++) {
            check_scores_one_head(ref, f, name, true, q, kv, ROW * 2, cell, n, dks_vec[k]);
        }
        for (size_t k = 0; k < sizeof dvs / sizeof dvs[0]; k++) {
            const int64_t dv = dvs[k];
            static float pv[CELLS];
            for (int64_t j = 0; j < CELLS; j++)
                pv[j] = p[j % 48];
            ref->wsum_f16_vec(pv, 0, kv, ROW * 2, cell, n_lane, n, dv, o0, 1, 0);
            f->wsum_f16_vec(pv, 0, kv, ROW * 2, cell, n_lane, n, dv, o1, 1, 0);
            CHECK(!memcmp(o0, o1, (size_t)dv * 4), "%s wsum_f16_vec n_lane=%lld n=%lld dv=%lld differs", name,
                  (long long)n_lane, (long long)n, (long long)dv);
            /* query heads sharing the rows (5: two pairs and one), each with
             * its own weights: as one head at a time */
            static float ph[5][CELLS], oh[5][ROW], o2[ROW];
            for (int h = 0; h < 5; h++)
                for (int64_t j = 0; j < CELLS; j++)
                    ph[h][j] = p[(j * (h + 3) + h) % CELLS];
            int off_h = 0;
            f->wsum_f16_vec(ph[0], CELLS, kv, ROW * 2, cell, n_lane, n, dv, oh[0], 5, ROW);
            for (int h = 0; h < 5; h++) {
                ref->wsum_f16_vec(ph[h], 0, kv, ROW * 2, cell, n_lane, n, dv, o2, 1, 0);
                off_h += memcmp(oh[h], o2, (size_t)dv * 4) != 0;
            }
            CHECK(!off_h, "%s wsum_f16_vec 5 heads n_lane=%lld n=%lld dv=%lld: %d heads differ", name,
                  (long long)n_lane, (long long)n, (long long)dv, off_h);
            if (f != ref)
                continue;
            static float lanes[64][ROW];
            static double tail[ROW];
            memset(lanes, 0, sizeof lanes);
            memset(tail, 0, sizeof tail);
            for (int64_t j = 0; j < n; j++) {
                ref->f16_row(kv + (uint64_t)cell[j] * ROW * 2, w, dv);
                if (j < n_lane)
                    ref->fma_row(pv[j], w, lanes[j % 64], dv);
                else
                    for (int64_t d = 0; d < dv; d++)
                        tail[d] += (double)(pv[j] * w[d]);
            }
            int off = 0;
            for (int64_t d = 0; d < dv; d++) {
                float v16[16];
                for (int l = 0; l < 16; l++) /* quarters 0 += 2, 1 += 3, 0 += 1 */
                    v16[l] = (lanes[l][d] + lanes[32 + l][d]) + (lanes[16 + l][d] + lanes[48 + l][d]);
                const float r = (float)((double)moe_reduce16(v16) + tail[d]);
                off += memcmp(&r, &o0[d], 4) != 0;
            }
            CHECK(!off, "scalar wsum_f16_vec n_lane=%lld n=%lld dv=%lld: %d values not the lane sums'",
                  (long long)n_lane, (long long)n, (long long)dv, off);
        }
    }
    for (int64_t n = 0; n <= 40; n += (n < 18 ? 1 : 11)) {
        for (size_t k = 0; k < sizeof dks / sizeof dks[0]; k++) {
            /* rows from value 16 on (a head's part) */
            check_scores_one_head(ref, f, name, false, q, kv + 2 * 16, ROW * 2, cell, n, dks[k]);
        }
        for (size_t k = 0; k < sizeof dvs / sizeof dvs[0]; k++) {
            const int64_t dv = dvs[k];
            ref->wsum_f16(p, 0, kv, ROW * 2, cell, n, dv, o0, 1, 0);
            f->wsum_f16(p, 0, kv, ROW * 2, cell, n, dv, o1, 1, 0);
            CHECK(!memcmp(o0, o1, (size_t)dv * 4), "%s wsum_f16 n=%lld dv=%lld differs", name, (long long)n,
                  (long long)dv);
            /* five query heads sharing the rows, each with its own weights */
            static float ph[5][CELLS], oh[5][ROW], o2[ROW];
            for (int h = 0; h < 5; h++)
                for (int64_t j = 0; j < CELLS; j++)
                    ph[h][j] = p[(j * (h + 3) + h) % CELLS];
            int off_h = 0;
            f->wsum_f16(ph[0], CELLS, kv, ROW * 2, cell, n, dv, oh[0], 5, ROW);
            for (int h = 0; h < 5; h++) {
                ref->wsum_f16(ph[h], 0, kv, ROW * 2, cell, n, dv, o2, 1, 0);
                off_h += memcmp(oh[h], o2, (size_t)dv * 4) != 0;
            }
            CHECK(!off_h, "%s wsum_f16 5 heads n=%lld dv=%lld: %d heads differ", name, (long long)n,
                  (long long)dv, off_h);
            if (f != ref)
                continue;
            static float lanes[16][ROW];
            memset(lanes, 0, sizeof lanes);
            for (int64_t j = 0; j < n; j++) {
                ref->f16_row(kv + (uint64_t)cell[j] * ROW * 2, w, dv);
                ref->fma_row(p[j], w, lanes[j % 16], dv);
            }
            int off = 0;
            for (int64_t d = 0; d < dv; d++) {
                float v16[16];
                for (int l = 0; l < 16; l++)
                    v16[l] = lanes[l][d];
                const float r = moe_reduce16(v16);
                off += memcmp(&r, &o0[d], 4) != 0;
            }
            CHECK(!off, "scalar wsum_f16 n=%lld dv=%lld: %d values not the lane sums'", (long long)n,
                  (long long)dv, off);
        }
    }
}

/* round_f16_row and max_row against the scalar ones, with the values that
 * have their own branches (NaN, -0, infinities, overflow, subnormals). */
static void check_round_max_ops(const moe_cpu_float_ops *ref, const moe_cpu_float_ops *f, const char *name) {
    enum { ROW = 400 };
    float x0[ROW], x1[ROW];
    for (int i = 0; i < ROW; i++)
        x0[i] = (frand() - 0.5f) * (i % 7 == 0 ? 1e5f : i % 5 == 0 ? 1e-6f : 1.0f);
    x0[3] = NAN, x0[9] = -0.0f, x0[10] = INFINITY, x0[11] = -INFINITY, x0[12] = 65520.0f, x0[13] = 1e-8f;
    memcpy(x1, x0, sizeof x0);
    ref->round_f16_row(x0, ROW);
    f->round_f16_row(x1, ROW);
    CHECK(!memcmp(x0, x1, sizeof x0), "%s round_f16_row differs", name);
    CHECK(moe_f16_to_f32(moe_f32_to_f16(1.0f / 3.0f)) == (x1[0] = 1.0f / 3.0f, f->round_f16_row(x1, 1), x1[0]),
          "%s round_f16_row(1/3)", name);
    for (int64_t n = 0; n <= 40; n++) {
        float v[40];
        for (int64_t i = 0; i < n; i++)
            v[i] = i % 9 == 4 ? NAN : frand() - 2.0f;
        const float m0 = ref->max_row(v, n), m1 = f->max_row(v, n);
        CHECK(!memcmp(&m0, &m1, 4), "%s max_row n=%lld: %g vs %g", name, (long long)n, m1, m0);
    }
}

/* Q8_K activations at every level byte for byte as the reference's on the
 * blocks random rows rarely give: the largest magnitude twice with both signs
 * (the first one's sign counts), all zero, subnormals, tiny values, values
 * that round to ties. (NaNs and blocks whose scale overflows convert through
 * a cast C leaves undefined: not compared.) */
static void check_q8k_edges(void) {
    enum { NB = 7 };
    float x[NB * 256];
    for (int i = 0; i < NB * 256; i++)
        x[i] = frand() - 0.5f;
    x[10] = -3.0f, x[200] = 3.0f;          /* block 0: -max first */
    x[256 + 5] = 3.0f, x[256 + 77] = -3.0f; /* block 1: +max first */
    for (int i = 512; i < 768; i++)         /* block 2: all zero */
        x[i] = i % 2 ? 0.0f : -0.0f;
    x[768 + 33] = 1e-40f, x[768 + 34] = -1e-44f; /* block 3: subnormals among values */
    for (int i = 1024; i < 1280; i++)       /* block 4: tiny values (iscale near FLT_MAX) */
        x[i] = (float)(i - 1150) * 1e-38f;
    for (int i = 1280; i < 1536; i++)       /* block 5: halves (ties) of the scale */
        x[i] = (float)((i % 255) - 127) * 0.5f;
    x[1536 + 255] = -1e30f;                 /* block 6: the largest last */
    moe_act_q8k ref[NB], lv[NB];
    moe_act_quantize_q8k_ref(x, ref, NB * 256);
    for (int level = MOE_CPU_AVX2; level <= (int)moe_cpu_level_detected(); level++) {
        const moe_cpu_kernel_table *tab = moe_cpu_kernels((moe_cpu_level)level);
        if (!tab)
            continue;
        memset(lv, 0x5a, sizeof lv);
        tab->quantize[MOE_ACT_Q8K](x, lv, NB * 256);
        for (int b = 0; b < NB; b++)
            CHECK(!memcmp(&ref[b], &lv[b], sizeof ref[b]), "%s Q8_K block %d differs from the reference",
                  moe_cpu_level_name((moe_cpu_level)level), b);
    }
}

static void check_float_ops(void) {
    const moe_cpu_float_ops *ref = moe_cpu_float_ops_scalar();
    const int64_t ns[] = {1, 7, 15, 16, 17, 63, 64, 65, 100, 256, 1000};
    float a[1000], b[1000], acc0[1000], acc1[1000], f0[1000], f1[1000];
    uint8_t h[2000];
    for (int i = 0; i < 1000; i++) {
        a[i] = frand() * 4.0f;
        b[i] = frand() * (i % 31 == 0 ? 1000.0f : 1.0f);
        acc0[i] = frand();
        const uint16_t v = (uint16_t)(test_rng_next() & 0x7bff); /* finite halves, both signs */
        h[2 * i] = (uint8_t)v, h[2 * i + 1] = (uint8_t)(v >> 8);
    }
    for (int level = MOE_CPU_AVX2; level <= (int)moe_cpu_level_detected(); level++) {
        const moe_cpu_kernel_table *tab = moe_cpu_kernels((moe_cpu_level)level);
        if (!tab || !tab->fops)
            continue;
        const moe_cpu_float_ops *f = tab->fops;
        const char *name = moe_cpu_level_name((moe_cpu_level)level);
        for (size_t k = 0; k < sizeof ns / sizeof ns[0]; k++) {
            const int64_t n = ns[k];
            const float g0 = ref->dot_gemm(a, b, n), g1 = f->dot_gemm(a, b, n);
            const float v0 = ref->dot_vec(a, b, n), v1 = f->dot_vec(a, b, n);
            CHECK(!memcmp(&g0, &g1, 4), "%s dot_gemm n=%lld: %.9g vs %.9g", name, (long long)n, g1, g0);
            CHECK(!memcmp(&v0, &v1, 4), "%s dot_vec n=%lld: %.9g vs %.9g", name, (long long)n, v1, v0);
            memcpy(acc1, acc0, sizeof acc0);
            float acc2[1000];
            memcpy(acc2, acc0, sizeof acc0);
            ref->fma_row(0.37f, a, acc1, n);
            f->fma_row(0.37f, a, acc2, n);
            CHECK(!memcmp(acc1, acc2, (size_t)n * 4), "%s fma_row n=%lld differs", name, (long long)n);
            ref->f16_row(h, f0, n);
            f->f16_row(h, f1, n);
            CHECK(!memcmp(f0, f1, (size_t)n * 4), "%s f16_row n=%lld differs", name, (long long)n);
        }
        check_exp_ops(ref, f, name);
        check_attention_ops(ref, f, name);
        check_round_max_ops(ref, f, name);
    }
    check_attention_ops(ref, ref, "scalar");
}

int main(void) {
    const uint32_t seed = 20261204u;
    test_rng_state = seed;
    printf("seed %u; levels up to %s\n", seed, moe_cpu_level_name(moe_cpu_level_detected()));
    const int64_t Ts[] = {1, 2, 3, 7, 13, 64}; /* 13: the 512-bit tiles of 8, 4 and 1 */
    /* the AMX tiles: 16 tokens and 16 rows at a time, 64 blocks per pass, the rest at avx512 */
    const moe_cpu_kernel *q4r8 = moe_cpu_kernel_find(MOE_CPU_SCALAR, MOE_TYPE_Q4_0_R8);
    const int64_t amx_T[] = {16, 17, 35, 145}; /* a 1-token tail; two 128-token passes */
    for (size_t i = 0; q4r8 && i < sizeof amx_T / sizeof amx_T[0]; i++) {
        shape amx = {65 * 32, 40, amx_T[i], 0, 40};
        check_kernel(q4r8, &amx);
        shape inside = {65 * 32, 40, amx_T[i], 8, 32}; /* a strip from row 8, an 8-row rest */
        check_kernel(q4r8, &inside);
    }
    for (const moe_cpu_kernel *k = moe_cpu_kernels_scalar()->kernels; k->type != MOE_TYPE_F32; k++) {
        const int64_t block = moe_act_block(k->act), R = k->rows;
        /* 9 blocks: the Q4_K_R4 batch kernel decodes 8 at a time */
        const int64_t lens[] = {block, 3 * block, 9 * block};
        for (size_t li = 0; li < 3; li++)
            for (size_t ti = 0; ti < sizeof Ts / sizeof Ts[0]; ti++) {
                const int64_t n_out = 5 * R;
                shape s = {lens[li], n_out, Ts[ti], 0, n_out};
                check_kernel(k, &s);
                shape part = {lens[li], n_out, Ts[ti], 2 * R, 4 * R}; /* a range inside */
                check_kernel(k, &part);
                if (R == 1) { /* plain rows: the wide kernels' 8-row strips and a rest */
                    shape strips = {lens[li], 21, Ts[ti], 3, 21};
                    check_kernel(k, &strips);
                }
            }
    }
    /* the activation formats of other shapes: 2080 values (65 blocks) */
    check_float_ops();
    check_q8k_edges();
    shape big = {2080, 8, 7, 0, 8};
    const moe_type big_types[] = {MOE_TYPE_Q4_0_R8, MOE_TYPE_Q4_1, MOE_TYPE_Q5_0,
                                  MOE_TYPE_Q5_1, MOE_TYPE_F16, MOE_TYPE_BF16};
    for (size_t i = 0; i < sizeof big_types / sizeof big_types[0]; i++)
        check_kernel(moe_cpu_kernel_find(MOE_CPU_SCALAR, big_types[i]), &big);
    /* 100 tokens of long rows: the 512-bit kernels take them in chunks that
     * keep the activations in L2 (64 + 36 tokens for 2080 values, 72 + 28 for
     * 2304), with 16-row strips and a rest */
    const moe_type chunk_types[] = {MOE_TYPE_Q4_0, MOE_TYPE_IQ4_NL, MOE_TYPE_Q4_0_R8, MOE_TYPE_Q8_0_R8,
                                    MOE_TYPE_IQ4_NL_R4, MOE_TYPE_Q4_K, MOE_TYPE_Q4_K_R4};
    for (size_t i = 0; i < sizeof chunk_types / sizeof chunk_types[0]; i++) {
        const moe_cpu_kernel *k = moe_cpu_kernel_find(MOE_CPU_SCALAR, chunk_types[i]);
        shape chunks = {k->act == MOE_ACT_Q8K ? 2304 : 2080, 24, 100, 0, 24};
        check_kernel(k, &chunks);
    }
    const moe_type stream_types[] = {MOE_TYPE_Q4_0_R8, MOE_TYPE_IQ4_NL_R4, MOE_TYPE_Q4_K_R4, MOE_TYPE_Q8_0_R8};
    for (size_t i = 0; i < sizeof stream_types / sizeof stream_types[0]; i++)
        check_streams(stream_types[i], stream_types[i] == MOE_TYPE_Q4_K_R4 ? 768 : 288);
    /* -rtr: 16-row strips and a rest of one group, whole and from inside;
     * batches whose activation chunks (ACT_CHUNK_BYTES: 64 tokens of 2080
     * values, 72 of 2304, 16 of 8192) leave 1 to 3 tokens, which the twin
     * takes through its small-batch paths; rows too long for the strip
     * buffer (the plain kernel) */
    const moe_type rtr_types[] = {MOE_TYPE_Q4_0, MOE_TYPE_IQ4_NL, MOE_TYPE_Q4_K};
    const int64_t rtr_T[] = {1, 2, 3, 4, 7, 13, 64, 100};
    for (size_t i = 0; i < sizeof rtr_types / sizeof rtr_types[0]; i++) {
        const int64_t R = moe_type_get(moe_interleaved_variant(rtr_types[i]))->interleave_rows;
        const bool k = rtr_types[i] == MOE_TYPE_Q4_K;
        const int64_t lens[] = {k ? 256 : 32, k ? 768 : 96, k ? 2304 : 288, k ? 4608 : 2080};
        for (size_t ti = 0; ti < sizeof rtr_T / sizeof rtr_T[0]; ti++)
            for (size_t li = 0; li < sizeof lens / sizeof lens[0]; li++) {
                check_rtr(rtr_types[i], lens[li], 32 + R, rtr_T[ti], 0, 32 + R, false);
                check_rtr(rtr_types[i], lens[li], 32 + 2 * R, rtr_T[ti], R, 32 + 2 * R, false);
            }
        const int64_t chunk = k ? 72 : 64, n_chunk = k ? 2304 : 2080;
        for (int64_t rest = 1; rest <= 3; rest++)
            check_rtr(rtr_types[i], n_chunk, 32 + R, chunk + rest, R, 32 + R, false);
        if (!k) {
            check_rtr(rtr_types[i], 8192, 32 + R, 17, 0, 32 + R, false);
            check_rtr(rtr_types[i], 8192, 32 + R, 35, R, 32 + R, false);
        }
        const int64_t n_long = k ? 23040 : 22528;
        check_rtr(rtr_types[i], n_long, 32 + R, 7, 0, 32 + R, true);
    }
    TEST_DONE();
}
