/* test_quant_legacy — the Q4_0/Q4_1/Q5_0/Q5_1/Q8_0 and IQ4_NL/IQ4_XS
 * quantizers (formats/quant/quant_legacy.c, formats/quant/quant_iq4.c) through
 * moe_quantize_rows.
 *
 * `test_quant_legacy unit`: hand-made rows. All-zero, constant and
 * one-huge-outlier rows give finite blocks that dequantize sensibly; the
 * rounding rule of each call site (roundf in Q8_0, +8.5 truncation in Q4_0)
 * shows in exact bytes; results do not depend on how rows are split.
 *
 * `test_quant_legacy golden TYPE`: requantizes every TYPE tensor of the
 * conformance pack's F32 tiny-llama.gguf and compares the bytes with
 * llama.cpp's tiny-llama-TYPE.gguf (`llama-quantize --pure`, no imatrix).
 * `test_quant_legacy imatrix TYPE`: the same with the pack's importance
 * matrix against imatrix/tiny-llama-TYPE-imat.gguf. 3-D expert tensors
 * [ne0, ne1, E] are quantized one expert slice of ne1 rows at a time with
 * the expert's imatrix slice, as llama-quantize does. Mismatches are
 * reported per tensor with the first differing block. Exits 77 when the
 * pack is absent.
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "formats/gguf/cursor.h"
#include "formats/quant/fp16.h"
#include "formats/gguf/gguf.h"
#include "formats/quant/quant.h"
#include "formats/quant/quant_blocks.h"
#include "formats/quant/types.h"
#include "test_util.h"

typedef struct type_case {
    const char *name;
    moe_type type;
} type_case;

static const type_case types[] = {
    {"q8_0", MOE_TYPE_Q8_0}, {"q4_0", MOE_TYPE_Q4_0},     {"q4_1", MOE_TYPE_Q4_1},
    {"q5_0", MOE_TYPE_Q5_0}, {"q5_1", MOE_TYPE_Q5_1},     {"iq4_nl", MOE_TYPE_IQ4_NL},
    {"iq4_xs", MOE_TYPE_IQ4_XS},
};
#define N_TYPES (sizeof types / sizeof types[0])

static const type_case *find_type(const char *name) {
    for (size_t i = 0; i < N_TYPES; i++)
        if (strcmp(types[i].name, name) == 0)
            return &types[i];
    return NULL;
}

static size_t row_bytes(moe_type t, int64_t n) {
    uint64_t b = 0;
    moe_err err = {0};
    if (moe_type_row_size(t, n, &b, &err) != MOE_OK)
        return 0;
    return (size_t)b;
}

/* Quantizes nrow rows and dequantizes them again into back (nrow*n floats).
 * Returns 0 on success. */
static int roundtrip(moe_type t, const float *x, int64_t nrow, int64_t n, const float *imat,
                     uint8_t *q, float *back) {
    moe_err err = {0};
    if (moe_quantize_rows(t, x, q, nrow, n, imat, &err) != MOE_OK) {
        CHECK(0, "%s: quantize: %s", moe_type_name(t), err.msg);
        return 1;
    }
    if (moe_dequantize_rows(t, q, back, n, nrow, &err) != MOE_OK) {
        CHECK(0, "%s: dequantize: %s", moe_type_name(t), err.msg);
        return 1;
    }
    return 0;
}

/* ---- unit ---------------------------------------------------------------------- */

#define N 512 /* two IQ4_XS super-blocks */

/* Fixed LCG so failures reproduce; roughly N(0,1) by summing uniforms. */
static uint32_t rng_state;
static float rnd(void) {
    float s = 0.0f;
    for (int i = 0; i < 4; i++) {
        rng_state = rng_state * 1664525u + 1013904223u;
        s += (float)(rng_state >> 8) / 16777216.0f;
    }
    return (s - 2.0f) * 1.7320508f;
}

/* Block (or IQ4_XS super-block) width over which a value's error is judged. */
static int64_t group_of(moe_type t) { return t == MOE_TYPE_IQ4_XS ? MOE_QK_K : MOE_QK; }

/* Every value finite and within frac * (largest |x| of its group) of x. */
static void check_close(moe_type t, const char *what, const float *x, const float *y, int64_t n,
                        double frac) {
    const int64_t g = group_of(t);
    int bad = 0;
    for (int64_t b = 0; b < n; b += g) {
        double amax = 0;
        for (int64_t j = b; j < b + g; j++)
            amax = fmax(amax, fabs(x[j]));
        for (int64_t j = b; j < b + g; j++)
            if (!isfinite(y[j]) || fabs((double)y[j] - x[j]) > frac * amax + 1e-30) {
                if (!bad++)
                    CHECK(0, "%s %s: element %lld is %g, want %g (group amax %g)",
                          moe_type_name(t), what, (long long)j, y[j], x[j], amax);
            }
    }
    if (!bad)
        CHECK(1, "ok");
}

static void unit_zero_and_constant(void) {
    static float x[2 * N], back[2 * N], ones[N];
    static uint8_t q[2 * N * 2];
    for (int i = 0; i < N; i++)
        ones[i] = 1.0f;
    for (size_t k = 0; k < N_TYPES; k++) {
        const moe_type t = types[k].type;
        for (int im = 0; im < 2; im++) {
            memset(x, 0, sizeof x);
            if (roundtrip(t, x, 2, N, im ? ones : NULL, q, back))
                continue;
            int nonzero = 0;
            for (int i = 0; i < 2 * N; i++)
                nonzero += back[i] != 0.0f;
            CHECK(nonzero == 0, "%s zero rows (imatrix %d): %d nonzero values", types[k].name,
                  im, nonzero);
            for (int i = 0; i < 2 * N; i++)
                x[i] = i < N ? 0.7f : -1.3f;
            if (roundtrip(t, x, 2, N, im ? ones : NULL, q, back))
                continue;
            check_close(t, im ? "constant rows (imatrix)" : "constant rows", x, back, 2 * N,
                        2e-3);
        }
    }
    /* llama.cpp's exact bytes for an all-zero block: the code nearest 0 is 8
     * (Q4_0: trunc(0 + 8.5); IQ4: T[8] = 1 beats T[7] = -10). Q4_0's d is
     * 0 / -8 = -0.0 and IQ4_XS's super-scale -0 / 32 = -0.0 (fp16 0x8000),
     * with every 6-bit IQ4_XS block scale at 32; IQ4_NL's scale is +0. */
    memset(x, 0, sizeof x);
    moe_err err = {0};
    CHECK(moe_quantize_rows(MOE_TYPE_Q4_0, x, q, 1, MOE_QK, NULL, &err) == MOE_OK, "%s", err.msg);
    CHECK(moe_load_le16(q) == 0x8000 && q[2] == 0x88 && q[17] == 0x88, "q4_0 zero block");
    CHECK(moe_quantize_rows(MOE_TYPE_IQ4_NL, x, q, 1, MOE_QK, NULL, &err) == MOE_OK, "%s",
          err.msg);
    CHECK(q[0] == 0 && q[1] == 0 && q[2] == 0x88 && q[17] == 0x88, "iq4_nl zero block");
    CHECK(moe_quantize_rows(MOE_TYPE_IQ4_XS, x, q, 1, MOE_QK_K, NULL, &err) == MOE_OK, "%s",
          err.msg);
    CHECK(moe_load_le16(q) == 0x8000 && moe_load_le16(q + 2) == 0xaaaa && q[4] == 0 &&
              q[8] == 0x88 && q[135] == 0x88,
          "iq4_xs zero super-block: d %04x scales_h %04x", moe_load_le16(q),
          moe_load_le16(q + 2));
}

/* Rounding at each call site, in bytes. */
static void unit_rounding(void) {
    float x[MOE_QK] = {0};
    uint8_t q[64];
    moe_err err = {0};
    /* Q8_0: amax 127 gives d = 1, and roundf sends halves away from zero:
     * 2.5 -> 3 and -2.5 -> -3 (ties-to-even would give 2 and -2). */
    x[0] = 127.0f, x[1] = 2.5f, x[2] = -2.5f, x[3] = 0.5f;
    CHECK(moe_quantize_rows(MOE_TYPE_Q8_0, x, q, 1, MOE_QK, NULL, &err) == MOE_OK, "%s", err.msg);
    CHECK(moe_f16_to_f32((uint16_t)(q[0] | q[1] << 8)) == 1.0f, "q8_0 d");
    CHECK((int8_t)q[2] == 127 && (int8_t)q[3] == 3 && (int8_t)q[4] == -3 && (int8_t)q[5] == 1,
          "q8_0 codes %d %d %d %d", (int8_t)q[2], (int8_t)q[3], (int8_t)q[4], (int8_t)q[5]);
    /* Q4_0: max -8 gives d = 1; code = trunc(x + 8.5) clamped to 15. */
    memset(x, 0, sizeof x);
    x[0] = -8.0f, x[1] = 0.5f, x[2] = -0.5f, x[3] = 7.6f, x[16] = 1.49f;
    CHECK(moe_quantize_rows(MOE_TYPE_Q4_0, x, q, 1, MOE_QK, NULL, &err) == MOE_OK, "%s", err.msg);
    CHECK(moe_f16_to_f32((uint16_t)(q[0] | q[1] << 8)) == 1.0f, "q4_0 d");
    CHECK(q[2] == (0 | 9 << 4) && (q[3] & 15) == 9 && (q[4] & 15) == 8 && (q[5] & 15) == 15,
          "q4_0 codes %02x %02x %02x %02x", q[2], q[3], q[4], q[5]);
}

static void unit_outlier_and_determinism(uint32_t seed) {
    static float x[4 * N], back[4 * N], imat[N];
    static uint8_t q1[4 * N * 2], q2[4 * N * 2];
    printf("seed %u\n", seed);
    rng_state = seed;
    for (int i = 0; i < 4 * N; i++)
        x[i] = rnd();
    for (int i = 0; i < N; i++)
        imat[i] = 0.1f + fabsf(rnd());
    x[37] = 1000.0f;
    x[N + 300] = -1000.0f;
    for (size_t k = 0; k < N_TYPES; k++) {
        const moe_type t = types[k].type;
        const size_t rb = row_bytes(t, N);
        for (int im = 0; im < 2; im++) {
            const float *w = im ? imat : NULL;
            if (roundtrip(t, x, 4, N, w, q1, back))
                continue;
            check_close(t, im ? "outlier rows (imatrix)" : "outlier rows", x, back, 4 * N, 0.25);
            CHECK(fabsf(back[37] - 1000.0f) < 5.0f && fabsf(back[N + 300] + 1000.0f) < 5.0f,
                  "%s outliers come back as %g and %g", types[k].name, back[37], back[N + 300]);
            /* same bytes when quantized again and when split row by row */
            moe_err err = {0};
            int same = moe_quantize_rows(t, x, q2, 4, N, w, &err) == MOE_OK &&
                       memcmp(q1, q2, 4 * rb) == 0;
            CHECK(same, "%s (imatrix %d) is not deterministic", types[k].name, im);
            memset(q2, 0, sizeof q2);
            for (int r = 0; r < 4; r++)
                CHECK(moe_quantize_rows(t, x + r * N, q2 + r * rb, 1, N, w, &err) == MOE_OK, "%s",
                      err.msg);
            CHECK(memcmp(q1, q2, 4 * rb) == 0, "%s (imatrix %d) depends on the row split",
                  types[k].name, im);
        }
    }
    CHECK(!moe_quant_uses_imatrix(MOE_TYPE_Q8_0) && moe_quant_uses_imatrix(MOE_TYPE_IQ4_NL),
          "uses_imatrix flags");
}

/* ---- imatrix (.dat) reader, test-local ---------------------------------------- */

typedef struct imat_entry {
    char name[128];
    int32_t nval;
    float *values; /* divided by ncall, as llama-quantize's loader does */
} imat_entry;

typedef struct imat {
    int n;
    imat_entry *e;
} imat;

static int rd_i32(const uint8_t *b, size_t len, size_t *off, int32_t *v) {
    if (len - *off < 4)
        return 1;
    memcpy(v, b + *off, 4);
    *off += 4;
    return 0;
}

static void imat_free(imat *im) {
    for (int i = 0; im->e && i < im->n; i++)
        free(im->e[i].values);
    free(im->e);
}

/* llama.cpp's legacy binary imatrix: int32 count; per entry int32 len, name,
 * int32 ncall, int32 nval, f32 values[nval]; a trailer we ignore. */
static int imat_load(const char *path, imat *im) {
    memset(im, 0, sizeof *im);
    FILE *f = fopen(path, "rb");
    if (!f)
        return 1;
    static uint8_t buf[1 << 20];
    const size_t len = fread(buf, 1, sizeof buf, f);
    fclose(f);
    size_t off = 0;
    int32_t n;
    if (rd_i32(buf, len, &off, &n) || n <= 0 || n > 10000)
        return 1;
    im->e = calloc((size_t)n, sizeof *im->e);
    if (!im->e)
        return 1;
    for (im->n = 0; im->n < n; im->n++) {
        imat_entry *e = &im->e[im->n];
        int32_t nl, ncall;
        if (rd_i32(buf, len, &off, &nl) || nl <= 0 || nl >= (int32_t)sizeof e->name ||
            len - off < (size_t)nl)
            return 1;
        memcpy(e->name, buf + off, (size_t)nl);
        off += (size_t)nl;
        if (rd_i32(buf, len, &off, &ncall) || rd_i32(buf, len, &off, &e->nval) || e->nval <= 0 ||
            (len - off) / 4 < (size_t)e->nval)
            return 1;
        e->values = malloc((size_t)e->nval * sizeof(float));
        if (!e->values)
            return 1;
        memcpy(e->values, buf + off, (size_t)e->nval * 4);
        off += (size_t)e->nval * 4;
        if (ncall > 0)
            for (int32_t i = 0; i < e->nval; i++)
                e->values[i] /= (float)ncall;
    }
    return 0;
}

static const imat_entry *imat_find(const imat *im, const char *name) {
    for (int i = 0; i < im->n; i++)
        if (strcmp(im->e[i].name, name) == 0)
            return &im->e[i];
    return NULL;
}

/* ---- golden -------------------------------------------------------------------- */

typedef struct golden_stats {
    int exact, differ, f32, other, with_imatrix;
} golden_stats;

/* Requantizes tensor i of want (type T) from the F32 tensor of the same name
 * in ref; reports the first differing block. */
static void golden_tensor(const type_case *tc, const moe_gguf_file *want, uint64_t i,
                          const moe_gguf_file *ref, const imat *im, golden_stats *st) {
    const moe_gguf_tensor *t = &want->g->tensors[i];
    const int64_t j = moe_gguf_find_tensor(ref->g, t->name);
    CHECK(j >= 0, "%s: %s not in tiny-llama.gguf", tc->name, t->name);
    if (j < 0)
        return;
    const moe_gguf_tensor *r = &ref->g->tensors[j];
    CHECK(r->type == MOE_TYPE_F32 && memcmp(r->ne, t->ne, sizeof t->ne) == 0,
          "%s: %s shape/type differs from the reference", tc->name, t->name);
    const int64_t ne0 = t->ne[0], ne1 = t->ne[1], nmat = t->ne[2] * t->ne[3];
    const imat_entry *ie = im ? imat_find(im, t->name) : NULL;
    if (ie) {
        CHECK(ie->nval == ne0 * nmat, "%s: imatrix for %s has %d values, want %lld", tc->name,
              t->name, ie->nval, (long long)(ne0 * nmat));
        if (ie->nval != ne0 * nmat)
            return;
        st->with_imatrix++;
    }
    const size_t rb = row_bytes(t->type, ne0);
    const size_t bb = rb / (size_t)(ne0 / moe_type_get(t->type)->block_size);
    uint8_t *got = malloc(rb * (size_t)(ne1 * nmat));
    CHECK(got != NULL, "out of memory");
    if (!got)
        return;
    const float *src = (const float *)moe_gguf_file_tensor_data(ref, (uint64_t)j);
    moe_err err = {0};
    for (int64_t e = 0; e < nmat; e++) {
        const moe_status s = moe_quantize_rows(t->type, src + e * ne0 * ne1,
                                               got + (size_t)(e * ne1) * rb, ne1, ne0,
                                               ie ? ie->values + e * ne0 : NULL, &err);
        CHECK(s == MOE_OK, "%s: %s: %s", tc->name, t->name, err.msg);
    }
    const uint8_t *exp = moe_gguf_file_tensor_data(want, i);
    const size_t nblocks = rb * (size_t)(ne1 * nmat) / bb;
    size_t ndiff = 0, first = 0;
    for (size_t b = 0; b < nblocks; b++)
        if (memcmp(got + b * bb, exp + b * bb, bb) != 0 && !ndiff++)
            first = b;
    if (ndiff) {
        const size_t per_row = rb / bb;
        char hw[2 * 136 + 1], hg[2 * 136 + 1];
        for (size_t k = 0; k < bb; k++) {
            snprintf(hw + 2 * k, 3, "%02x", exp[first * bb + k]);
            snprintf(hg + 2 * k, 3, "%02x", got[first * bb + k]);
        }
        CHECK(0, "%s%s: %s: %zu of %zu blocks differ; first: row %zu block %zu\n  want %s\n  got  %s",
              tc->name, im ? " (imatrix)" : "", t->name, ndiff, nblocks, first / per_row,
              first % per_row, hw, hg);
        st->differ++;
    } else {
        CHECK(1, "ok");
        st->exact++;
    }
    free(got);
}

static int golden(const char *type_name, int with_imatrix) {
    const type_case *tc = find_type(type_name);
    if (!tc) {
        fprintf(stderr, "unknown type %s\n", type_name);
        return 2;
    }
    const char *dir = test_conformance_dir();
    char ref_path[4096], want_path[4096], imat_path[4096];
    snprintf(ref_path, sizeof ref_path, "%s/models/tiny-llama.gguf", dir);
    if (with_imatrix)
        snprintf(want_path, sizeof want_path, "%s/imatrix/tiny-llama-%s-imat.gguf", dir, tc->name);
    else
        snprintf(want_path, sizeof want_path, "%s/models/tiny-llama-%s.gguf", dir, tc->name);
    snprintf(imat_path, sizeof imat_path, "%s/imatrix/tiny-llama.imatrix.dat", dir);
    if (access(ref_path, R_OK) || access(want_path, R_OK) ||
        (with_imatrix && access(imat_path, R_OK))) {
        fprintf(stderr, "conformance files missing under %s: skipping\n", dir);
        exit(77);
    }
    imat im = {0};
    if (with_imatrix)
        CHECK(imat_load(imat_path, &im) == 0 && im.n > 0, "cannot read %s", imat_path);
    moe_gguf_file *ref = NULL, *want = NULL;
    moe_err err = {0};
    CHECK(moe_gguf_file_open(ref_path, true, &ref, &err) == MOE_OK, "%s", err.msg);
    CHECK(moe_gguf_file_open(want_path, true, &want, &err) == MOE_OK, "%s", err.msg);
    golden_stats st = {0};
    for (uint64_t i = 0; ref && want && i < want->g->n_tensors; i++) {
        const moe_type ty = want->g->tensors[i].type;
        if (ty == tc->type)
            golden_tensor(tc, want, i, ref, with_imatrix ? &im : NULL, &st);
        else if (ty == MOE_TYPE_F32)
            st.f32++;
        else
            st.other++;
    }
    printf("%s%s: %d tensors bit-exact, %d differ (%d with imatrix); %d F32, %d other\n",
           tc->name, with_imatrix ? " imatrix" : "", st.exact, st.differ, st.with_imatrix,
           st.f32, st.other);
    CHECK(st.exact + st.differ > 0 && st.other == 0, "%s: nothing compared or unexpected types",
          tc->name);
    if (with_imatrix)
        CHECK(st.with_imatrix > 0, "%s: no tensor used the imatrix", tc->name);
    moe_gguf_file_close(want);
    moe_gguf_file_close(ref);
    imat_free(&im);
    TEST_DONE();
}

int main(int argc, char **argv) {
    const char *mode = argc > 1 ? argv[1] : "unit";
    if (strcmp(mode, "unit") == 0) {
        unit_zero_and_constant();
        unit_rounding();
        unit_outlier_and_determinism(20250220u);
        TEST_DONE();
    }
    if ((strcmp(mode, "golden") == 0 || strcmp(mode, "imatrix") == 0) && argc > 2)
        return golden(argv[2], strcmp(mode, "imatrix") == 0);
    fprintf(stderr, "usage: test_quant_legacy unit | golden TYPE | imatrix TYPE\n");
    return 2;
}
