/* test_quant_kquants — the Q2_K..Q6_K quantizers (formats/quant/quant_kquants.c).
 *
 * `test_quant_kquants unit`: hand-made rows (all zero, constant, one huge
 * outlier, tiny values, random) quantize to finite blocks that decode close to
 * the input, and twice to the same bytes; the shared helpers' rounding rule.
 * `test_quant_kquants golden`: requantizing the F32 tiny-llama.gguf of the
 * conformance pack reproduces, byte for byte, every quantized tensor of
 * llama.cpp's tiny-llama-T.gguf (T = q2_K..q6_K, no importance matrix) and of
 * imatrix/tiny-llama-T-imat.gguf (T = q2_K, q4_K, q6_K, with
 * imatrix/tiny-llama.imatrix.dat). Mismatches name the tensor, the first bad
 * row/block and the field in it.
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "formats/quant/dequant.h"
#include "formats/quant/fp16.h"
#include "formats/gguf/gguf.h"
#include "formats/quant/quant.h"
#include "formats/quant/quant_blocks.h"
#include "formats/quant/quant_common.h"
#include "formats/quant/types.h"
#include "test_util.h"

static const moe_type kquants[] = {MOE_TYPE_Q2_K, MOE_TYPE_Q3_K, MOE_TYPE_Q4_K, MOE_TYPE_Q5_K,
                                   MOE_TYPE_Q6_K};
#define N_KQUANTS (sizeof kquants / sizeof kquants[0])

/* Approximately N(0,1): sum of 4 uniforms, rescaled. */
static float rng_gauss(void) {
    float s = 0;
    for (int i = 0; i < 4; i++)
        s += (float)(test_rng_next() >> 8) / 16777216.0f;
    return (s - 2.0f) * 1.7320508f;
}

static uint64_t row_bytes(moe_type t, int64_t n) {
    uint64_t b = 0;
    moe_err err = {0};
    moe_status st = moe_type_row_size(t, n, &b, &err);
    CHECK(st == MOE_OK, "%s: row size: %s", moe_type_name(t), err.msg);
    return b;
}

/* ---- unit ------------------------------------------------------------------ */

static void unit_nearest_int(void) {
    static const struct { float x; int want; } cases[] = {
        {0.5f, 0}, {1.5f, 2}, {2.5f, 2}, {-0.5f, 0}, {-1.5f, -2}, {-2.5f, -2},
        {0.49999997f, 0}, {3.7f, 4}, {-3.7f, -4}, {4194303.f, 4194303}, {-4194303.f, -4194303},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        CHECK(moe_nearest_int(cases[i].x) == cases[i].want, "nearest_int(%.9g) = %d, want %d",
              cases[i].x, moe_nearest_int(cases[i].x), cases[i].want);
}

/* Quantizes nrow rows without an imatrix, with a varied one and with an
 * all-zero one (an expert no calibration token reached), twice each, and
 * checks: same bytes both times, finite values after decoding, and a decode
 * error below tol * max|x| per row (max|x| itself for the zero imatrix, where
 * the weighted fit may legitimately give up and store zeros). */
static void roundtrip(const char *what, const float *x, int64_t nrow, int64_t n, double tol) {
    float *imat = malloc((size_t)n * sizeof(float));
    float *y = malloc((size_t)(nrow * n) * sizeof(float));
    uint8_t *q1 = malloc((size_t)nrow * 256 * 2 * (size_t)(n / 256 + 1));
    uint8_t *q2 = malloc((size_t)nrow * 256 * 2 * (size_t)(n / 256 + 1));
    float *zero = calloc((size_t)n, sizeof(float));
    for (int64_t i = 0; i < n; i++)
        imat[i] = 0.5f + (float)(i % 7) * 0.25f;
    static const char *const wname[] = {"", " imatrix", " zero-imatrix"};
    for (size_t k = 0; k < N_KQUANTS; k++)
        for (int w = 0; w < 3; w++) {
            moe_type t = kquants[k];
            const float *im = w == 0 ? NULL : w == 1 ? imat : zero;
            const double lim = w == 2 ? fmax(tol, 1.0) : tol;
            uint64_t rb = row_bytes(t, n);
            moe_err err = {0};
            memset(q1, 0xAA, (size_t)(rb * (uint64_t)nrow));
            memset(q2, 0x55, (size_t)(rb * (uint64_t)nrow));
            moe_status st = moe_quantize_rows(t, x, q1, nrow, n, im, &err);
            CHECK(st == MOE_OK, "%s %s: %s", what, moe_type_name(t), err.msg);
            st = moe_quantize_rows(t, x, q2, nrow, n, im, &err);
            CHECK(memcmp(q1, q2, (size_t)(rb * (uint64_t)nrow)) == 0,
                  "%s %s%s: not deterministic", what, moe_type_name(t), wname[w]);
            st = moe_dequantize_rows(t, q1, y, n, nrow, &err);
            CHECK(st == MOE_OK, "%s %s: dequant: %s", what, moe_type_name(t), err.msg);
            for (int64_t r = 0; r < nrow; r++) {
                double amax = 0, worst = 0;
                int finite = 1;
                for (int64_t i = 0; i < n; i++) {
                    double v = x[r * n + i], d = y[r * n + i];
                    amax = fmax(amax, fabs(v));
                    finite &= isfinite(d) != 0;
                    worst = fmax(worst, fabs(d - v));
                }
                CHECK(finite, "%s %s%s row %lld: non-finite output", what, moe_type_name(t),
                      wname[w], (long long)r);
                CHECK(worst <= lim * amax, "%s %s%s row %lld: max error %g > %g * %g", what,
                      moe_type_name(t), wname[w], (long long)r, worst, lim, amax);
            }
        }
    free(imat);
    free(zero);
    free(y);
    free(q1);
    free(q2);
}

static void unit_rows(void) {
    enum { N = 512, R = 4 };
    static float x[R * N];

    memset(x, 0, sizeof x);
    roundtrip("all-zero", x, R, N, 0.0);

    for (int i = 0; i < R * N; i++)
        x[i] = (i / N) % 2 ? -0.75f : 0.3f;
    roundtrip("constant", x, R, N, 0.02);

    test_rng_state = 12345;
    for (int i = 0; i < R * N; i++)
        x[i] = rng_gauss();
    /* a uniform quantizer's worst error is about half a step; Q2_K's step is
     * the block's range / 3, so allow half of that range */
    roundtrip("gaussian", x, R, N, 0.75);

    for (int i = 0; i < R * N; i++)
        x[i] = 1e-3f * rng_gauss();
    for (int r = 0; r < R; r++)
        x[r * N + 37 + r] = r % 2 ? -1e4f : 1e4f;
    /* the outlier sets the scale, so small values round to 0: error ~ 1e-3 */
    roundtrip("outlier", x, R, N, 0.02);

    for (int i = 0; i < R * N; i++)
        x[i] = 1e-20f * rng_gauss();
    roundtrip("tiny", x, R, N, 1.0);
}

/* A fixed row must not depend on the rows quantized alongside it. */
static void unit_row_independence(void) {
    enum { N = 768, R = 3 };
    static float x[R * N];
    static uint8_t all[R * 4 * 256], one[4 * 256];
    test_rng_state = 777;
    for (int i = 0; i < R * N; i++)
        x[i] = rng_gauss();
    for (size_t k = 0; k < N_KQUANTS; k++) {
        moe_type t = kquants[k];
        uint64_t rb = row_bytes(t, N);
        moe_err err = {0};
        CHECK(moe_quantize_rows(t, x, all, R, N, NULL, &err) == MOE_OK, "%s", err.msg);
        for (int r = 0; r < R; r++) {
            CHECK(moe_quantize_rows(t, x + r * N, one, 1, N, NULL, &err) == MOE_OK, "%s",
                  err.msg);
            CHECK(memcmp(one, all + (uint64_t)r * rb, (size_t)rb) == 0,
                  "%s: row %d differs when quantized alone", moe_type_name(t), r);
        }
    }
}

/* ---- golden: imatrix .dat reader (test-local) ------------------------------ */

typedef struct imat_entry {
    char name[128];
    int32_t nval;
    float *values; /* already divided by ncall */
} imat_entry;

typedef struct imatrix {
    int32_t n;
    imat_entry *e;
} imatrix;

static int read_i32(FILE *f, int32_t *v) { return fread(v, 4, 1, f) == 1; }

/* Legacy llama.cpp imatrix (spec quant.md §4.1). Returns 0 on a malformed file. */
static int imatrix_load(const char *path, imatrix *im) {
    memset(im, 0, sizeof *im);
    FILE *f = fopen(path, "rb");
    if (!f)
        return 0;
    int ok = read_i32(f, &im->n) && im->n > 0 && im->n < 100000;
    if (ok)
        im->e = calloc((size_t)im->n, sizeof *im->e);
    for (int32_t i = 0; ok && i < im->n; i++) {
        imat_entry *e = &im->e[i];
        int32_t len = 0, ncall = 0;
        ok = read_i32(f, &len) && len > 0 && len < (int32_t)sizeof e->name &&
             fread(e->name, 1, (size_t)len, f) == (size_t)len && read_i32(f, &ncall) &&
             read_i32(f, &e->nval) && e->nval > 0 && e->nval < (1 << 26);
        if (!ok)
            break;
        e->values = malloc((size_t)e->nval * sizeof(float));
        ok = fread(e->values, 4, (size_t)e->nval, f) == (size_t)e->nval;
        /* llama-quantize's loader divides by ncall when ncall > 0 */
        for (int32_t j = 0; ok && ncall > 0 && j < e->nval; j++)
            e->values[j] /= (float)ncall;
    }
    fclose(f);
    return ok;
}

static void imatrix_free(imatrix *im) {
    for (int32_t i = 0; im->e && i < im->n; i++)
        free(im->e[i].values);
    free(im->e);
}

static const imat_entry *imatrix_find(const imatrix *im, const char *name) {
    for (int32_t i = 0; im && i < im->n; i++)
        if (strcmp(im->e[i].name, name) == 0)
            return &im->e[i];
    return NULL;
}

/* ---- golden: comparison ---------------------------------------------------- */

/* Names the field of a K-quant block that holds byte offset off. */
static const char *kquant_field(moe_type t, size_t off) {
    switch (t) {
    case MOE_TYPE_Q2_K: return off < 16 ? "scales" : off < 80 ? "qs" : off < 82 ? "d" : "dmin";
    case MOE_TYPE_Q3_K: return off < 32 ? "hmask" : off < 96 ? "qs" : off < 108 ? "scales" : "d";
    case MOE_TYPE_Q4_K: return off < 2 ? "d" : off < 4 ? "dmin" : off < 16 ? "scales" : "qs";
    case MOE_TYPE_Q5_K:
        return off < 2 ? "d" : off < 4 ? "dmin" : off < 16 ? "scales" : off < 48 ? "qh" : "qs";
    case MOE_TYPE_Q6_K: return off < 128 ? "ql" : off < 192 ? "qh" : off < 208 ? "scales" : "d";
    default: return "?";
    }
}

/* Quantizes F32 tensor src (from ref) to t and compares with want (nbytes).
 * 3-D tensors are quantized per expert slice with that slice's imatrix. */
static int compare_tensor(const char *label, moe_type t, const moe_gguf_tensor *rt,
                          const float *src, const uint8_t *want, uint64_t nbytes,
                          const imat_entry *ie) {
    const int64_t ne0 = rt->ne[0], rows = rt->ne[1], slices = rt->ne[2] * rt->ne[3];
    const uint64_t rb = row_bytes(t, ne0), bb = moe_type_get(t)->type_size;
    CHECK(rb * (uint64_t)(rows * slices) == nbytes, "%s %s: size %llu, want %llu", label,
          rt->name, (unsigned long long)(rb * (uint64_t)(rows * slices)),
          (unsigned long long)nbytes);
    if (rb * (uint64_t)(rows * slices) != nbytes)
        return 0;
    if (ie) {
        CHECK(ie->nval == ne0 * slices, "%s %s: imatrix has %d values, want %lld", label,
              rt->name, ie->nval, (long long)(ne0 * slices));
        if (ie->nval != ne0 * slices)
            return 0;
    }
    uint8_t *got = malloc((size_t)nbytes);
    moe_err err = {0};
    for (int64_t e = 0; e < slices; e++) {
        moe_status st = moe_quantize_rows(t, src + e * rows * ne0, got + (uint64_t)(e * rows) * rb,
                                          rows, ne0, ie ? ie->values + e * ne0 : NULL, &err);
        CHECK(st == MOE_OK, "%s %s: %s", label, rt->name, err.msg);
    }
    uint64_t nbad = 0, first = UINT64_MAX;
    for (uint64_t b = 0; b < nbytes; b++)
        if (got[b] != want[b]) {
            nbad++;
            if (first == UINT64_MAX)
                first = b;
        }
    if (nbad) {
        uint64_t blk = first / bb, nblk_row = rb / bb;
        uint64_t bad_blocks = 0;
        for (uint64_t k = 0; k < nbytes / bb; k++)
            bad_blocks += memcmp(got + k * bb, want + k * bb, (size_t)bb) != 0;
        CHECK(0,
              "%s %s%s: %llu bytes differ in %llu of %llu blocks; first at row %llu block "
              "%llu field %s (got 0x%02x want 0x%02x)",
              label, rt->name, ie ? " (imatrix)" : "", (unsigned long long)nbad,
              (unsigned long long)bad_blocks, (unsigned long long)(nbytes / bb),
              (unsigned long long)(blk / nblk_row), (unsigned long long)(blk % nblk_row),
              kquant_field(t, (size_t)(first % bb)), got[first], want[first]);
    } else {
        CHECK(1, "%s", "match");
    }
    free(got);
    return nbad == 0;
}

/* Every tensor of type t in file path against tiny-llama.gguf. Returns the
 * number of tensors that matched; *n_cmp gets the number compared. */
static int golden_file(const char *label, const char *path, moe_type t,
                       const moe_gguf_file *ref, const imatrix *im, int *n_cmp) {
    moe_gguf_file *q = NULL;
    moe_err err = {0};
    moe_status st = moe_gguf_file_open(path, true, &q, &err);
    CHECK(st == MOE_OK, "%s", err.msg);
    if (st != MOE_OK)
        return 0;
    int ok = 0, n = 0, n_imat = 0;
    for (uint64_t i = 0; i < q->g->n_tensors; i++) {
        const moe_gguf_tensor *qt = &q->g->tensors[i];
        if (qt->type != t) {
            CHECK(qt->type == MOE_TYPE_F32, "%s %s: unexpected type %s", label, qt->name,
                  moe_type_name(qt->type));
            continue;
        }
        int64_t j = moe_gguf_find_tensor(ref->g, qt->name);
        CHECK(j >= 0, "%s: %s not in tiny-llama.gguf", label, qt->name);
        if (j < 0)
            continue;
        const moe_gguf_tensor *rt = &ref->g->tensors[j];
        CHECK(rt->type == MOE_TYPE_F32, "%s: reference %s is not F32", label, rt->name);
        const imat_entry *ie = imatrix_find(im, qt->name);
        n_imat += ie != NULL;
        n++;
        ok += compare_tensor(label, t, rt, (const float *)moe_gguf_file_tensor_data(ref, (uint64_t)j),
                             moe_gguf_file_tensor_data(q, i), qt->nbytes, ie);
    }
    printf("%-8s %-28s %d/%d tensors identical%s", label, moe_type_name(t), ok, n,
           im ? "" : "\n");
    if (im)
        printf(" (%d with an imatrix entry)\n", n_imat);
    CHECK(n > 0, "%s: no %s tensors", label, moe_type_name(t));
    if (im)
        CHECK(n_imat > 0, "%s: no tensor had an imatrix entry", label);
    *n_cmp = n;
    moe_gguf_file_close(q);
    return ok;
}

static void golden(void) {
    const char *dir = test_conformance_dir();
    char path[4096];
    moe_err err = {0};
    moe_gguf_file *ref = NULL;
    snprintf(path, sizeof path, "%s/models/tiny-llama.gguf", dir);
    moe_status st = moe_gguf_file_open(path, true, &ref, &err);
    CHECK(st == MOE_OK, "%s", err.msg);
    if (st != MOE_OK)
        return;

    int n_files_ok = 0, n_files = 0;
    for (size_t k = 0; k < N_KQUANTS; k++) {
        const char *tn = moe_type_name(kquants[k]);
        snprintf(path, sizeof path, "%s/models/tiny-llama-%s.gguf", dir, tn);
        int n = 0;
        int ok = golden_file("plain", path, kquants[k], ref, NULL, &n);
        n_files++;
        n_files_ok += ok == n && n > 0;
    }

    imatrix im;
    snprintf(path, sizeof path, "%s/imatrix/tiny-llama.imatrix.dat", dir);
    int loaded = imatrix_load(path, &im);
    CHECK(loaded, "cannot read %s", path);
    static const moe_type imat_types[] = {MOE_TYPE_Q2_K, MOE_TYPE_Q4_K, MOE_TYPE_Q6_K};
    for (size_t k = 0; loaded && k < sizeof imat_types / sizeof imat_types[0]; k++) {
        snprintf(path, sizeof path, "%s/imatrix/tiny-llama-%s-imat.gguf", dir,
                 moe_type_name(imat_types[k]));
        int n = 0;
        int ok = golden_file("imatrix", path, imat_types[k], ref, &im, &n);
        n_files++;
        n_files_ok += ok == n && n > 0;
    }
    printf("%d of %d files reproduced exactly\n", n_files_ok, n_files);
    imatrix_free(&im);
    moe_gguf_file_close(ref);
}

int main(int argc, char **argv) {
    const char *mode = argc > 1 ? argv[1] : "unit";
    if (strcmp(mode, "golden") == 0) {
        golden();
    } else {
        unit_nearest_int();
        unit_rows();
        unit_row_independence();
    }
    TEST_DONE();
}
