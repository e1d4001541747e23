/* kld_recompute — test helper: recomputes a moe-perplexity --kl-divergence
 * run in float64 from the two models' saved log-probability files and checks
 * the tool's --json figures against it.
 *
 *   kld_recompute [--expect-zero] BASE.kld Q.kld RESULT.json
 *
 * BASE.kld: --kl-divergence-base of the base model; Q.kld: the same of the
 * compared model (its rows are the ones the tool compared); RESULT.json: the
 * tool's --kl-divergence --json output. The files are read by this program's
 * own parser of the layout documented in runtime/quality/kld.h, and every row
 * is recomputed with plain exp/log in double: KLD of the renormalised rows,
 * PPL of both, their difference, RMS delta-p, same top token, the KLD median,
 * 99% and maximum. Each must equal the tool's within 1e-6 (relative).
 * --expect-zero: also KLD, PPL difference and RMS delta-p exactly 0 and 100%
 * same top token (a model against itself). Exit 0 when all hold. */
#include <jansson.h>
#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "test_util.h"

typedef struct kfile {
    FILE *f;
    uint32_t n_vocab, n_ctx, n_chunk, first;
    int32_t *tokens;
} kfile;

static uint32_t le32(const uint8_t *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static bool kopen(kfile *k, const char *path) {
    uint8_t h[96];
    k->f = fopen(path, "rb");
    if (!k->f || fread(h, 1, 96, k->f) != 96 || memcmp(h, "MOEKLDB\0", 8) || le32(h + 8) != 1) {
        fprintf(stderr, "%s: not a version-1 base file\n", path);
        return false;
    }
    k->n_vocab = le32(h + 12), k->n_ctx = le32(h + 16), k->n_chunk = le32(h + 20);
    k->first = le32(h + 24);
    size_t n = (size_t)k->n_chunk * k->n_ctx;
    k->tokens = malloc(n * 4);
    uint8_t *b = malloc(n * 4);
    bool ok = k->tokens && b && fread(b, 4, n, k->f) == n;
    for (size_t i = 0; ok && i < n; i++)
        k->tokens[i] = (int32_t)le32(b + 4 * i);
    free(b);
    return ok;
}

typedef struct krow {
    double nll;
    float scale, offset;
    int32_t top, next;
    uint16_t *codes;
} krow;

static bool kread(kfile *k, krow *r, uint8_t *buf) {
    size_t n = 24 + 2 * (size_t)k->n_vocab;
    if (fread(buf, 1, n, k->f) != n)
        return false;
    uint64_t u = le32(buf) | (uint64_t)le32(buf + 4) << 32;
    memcpy(&r->nll, &u, 8);
    uint32_t s = le32(buf + 8), o = le32(buf + 12);
    memcpy(&r->scale, &s, 4);
    memcpy(&r->offset, &o, 4);
    r->top = (int32_t)le32(buf + 16), r->next = (int32_t)le32(buf + 20);
    for (uint32_t i = 0; i < k->n_vocab; i++)
        r->codes[i] = (uint16_t)(buf[24 + 2 * i] | buf[25 + 2 * i] << 8);
    return true;
}

/* log-probabilities of a row, renormalised */
static void logp(const krow *r, uint32_t n, double *out) {
    double z = 0;
    for (uint32_t i = 0; i < n; i++) {
        out[i] = (double)r->offset + (double)r->scale * r->codes[i];
        z += exp(out[i]);
    }
    for (uint32_t i = 0; i < n; i++)
        out[i] -= log(z);
}

static int cmp(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double pct(const double *v, size_t n, double f) {
    double p = f * (double)(n - 1);
    size_t i = (size_t)p;
    p -= (double)i;
    return (1 - p) * v[i] + p * v[i + 1 < n ? i + 1 : n - 1];
}

static void expect(json_t *js, const char *key, double want) {
    json_t *v = json_object_get(js, key);
    double got = json_number_value(v);
    CHECK(v && fabs(got - want) <= 1e-6 * fabs(want) + 1e-12, "%s: tool %.12g, float64 %.12g",
          key, got, want);
}

int main(int argc, char **argv) {
    bool zero = argc > 1 && !strcmp(argv[1], "--expect-zero");
    if (argc - zero != 4) {
        fprintf(stderr, "usage: kld_recompute [--expect-zero] BASE.kld Q.kld RESULT.json\n");
        return 2;
    }
    kfile b = {0}, q = {0};
    json_error_t je;
    json_t *js = json_load_file(argv[3 + zero], 0, &je);
    if (!kopen(&b, argv[1 + zero]) || !kopen(&q, argv[2 + zero]) || !js) {
        fprintf(stderr, "cannot read the inputs (%s)\n", js ? "base files" : je.text);
        return 2;
    }
    CHECK(b.n_vocab == q.n_vocab && b.n_ctx == q.n_ctx && b.first == q.first &&
              q.n_chunk >= b.n_chunk,
          "the two files describe different runs");
    CHECK(!memcmp(b.tokens, q.tokens, (size_t)b.n_chunk * b.n_ctx * 4), "different tokens");
    const uint32_t nv = b.n_vocab;
    const size_t rows = (size_t)b.n_chunk * (b.n_ctx - 1 - b.first);
    krow rb = {.codes = malloc(nv * 2)}, rq = {.codes = malloc(nv * 2)};
    uint8_t *buf = malloc(24 + 2 * (size_t)nv);
    double *lb = malloc(nv * 8), *lq = malloc(nv * 8), *klds = malloc(rows * 8);
    double s_kld = 0, s_nq = 0, s_nb = 0, s_dp2 = 0;
    size_t same = 0, n = 0;
    for (; n < rows && kread(&b, &rb, buf) && kread(&q, &rq, buf); n++) {
        CHECK(rb.next == rq.next, "row %zu: tokens %d and %d", n, rb.next, rq.next);
        logp(&rb, nv, lb);
        logp(&rq, nv, lq);
        double k = 0;
        for (uint32_t i = 0; i < nv; i++)
            k += exp(lb[i]) * (lb[i] - lq[i]);
        klds[n] = k;
        s_kld += k, s_nq += rq.nll, s_nb += rb.nll;
        double dp = exp(-rq.nll) - exp(-rb.nll);
        s_dp2 += dp * dp;
        same += rq.top == rb.top;
    }
    CHECK(n == rows, "%zu rows read of %zu", n, rows);
    const double N = (double)n;
    qsort(klds, n, 8, cmp);
    expect(js, "count", N);
    expect(js, "kld", s_kld / N);
    expect(js, "ppl", exp(s_nq / N));
    expect(js, "ppl_base", exp(s_nb / N));
    expect(js, "ppl_diff", exp(s_nq / N) - exp(s_nb / N));
    expect(js, "rms_dp", sqrt(s_dp2 / N));
    expect(js, "same_top", (double)same / N);
    json_t *p = json_object_get(js, "kld_percentiles");
    expect(p, "50", pct(klds, n, 0.5));
    expect(p, "99", pct(klds, n, 0.99));
    expect(p, "100", klds[n - 1]);
    printf("recomputed %zu rows: KLD %.9g, PPL %.6f vs base %.6f, RMS dp %.6g, same top %.4f\n",
           n, s_kld / N, exp(s_nq / N), exp(s_nb / N), sqrt(s_dp2 / N), (double)same / N);
    if (zero) {
        CHECK(json_number_value(json_object_get(js, "kld")) == 0.0, "KLD is not exactly 0");
        CHECK(json_number_value(json_object_get(p, "100")) == 0.0, "max KLD is not exactly 0");
        CHECK(json_number_value(json_object_get(js, "ppl_diff")) == 0.0, "PPL differs");
        CHECK(json_number_value(json_object_get(js, "rms_dp")) == 0.0, "RMS dp is not 0");
        CHECK(json_number_value(json_object_get(js, "same_top")) == 1.0, "same top below 100%%");
    }
    json_decref(js);
    fclose(b.f);
    fclose(q.f);
    free(b.tokens), free(q.tokens), free(rb.codes), free(rq.codes), free(buf);
    free(lb), free(lq), free(klds);
    TEST_DONE();
}
