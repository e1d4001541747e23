/* Unit tests of runtime/quality: 16-bit log-probability rows and their KLD,
 * the base file (round trip, damaged files refused), llama-perplexity's
 * statistics on known values, and the importance-matrix collector's rules
 * (what is collected, call counts, .dat values, the GGUF form read back by
 * convert/imatrix.h). No model needed. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "convert/imatrix.h"
#include "runtime/quality/imatrix_collect.h"
#include "runtime/quality/kld.h"
#include "test_util.h"

enum { NV = 300 };

static void fill_logits(float *l, uint32_t seed, float spread) {
    test_rng_state = seed;
    for (int i = 0; i < NV; i++)
        l[i] = spread * ((float)(test_rng_next() % 20001) / 10000.0f - 1.0f);
}

/* exact KL(p || q) of two logits rows, in double */
static double exact_kld(const float *a, const float *b) {
    double za = 0, zb = 0, k = 0;
    for (int i = 0; i < NV; i++)
        za += exp(a[i]), zb += exp(b[i]);
    for (int i = 0; i < NV; i++) {
        double la = a[i] - log(za), lb = b[i] - log(zb);
        k += exp(la) * (la - lb);
    }
    return k;
}

static void test_rows(void) {
    float a[NV], b[NV];
    uint16_t ca[NV], cb[NV];
    double scratch[NV];
    moe_logprob_row ra = {.codes = ca}, rb = {.codes = cb};
    fill_logits(a, 11, 6.0f);
    memcpy(b, a, sizeof b);
    for (int i = 0; i < NV; i += 7)
        b[i] += 0.3f;
    moe_logprob_quantize(a, NV, 5, &ra);
    moe_logprob_quantize(b, NV, 5, &rb);
    double za = 0;
    float max = a[0];
    for (int i = 0; i < NV; i++)
        max = a[i] > max ? a[i] : max;
    for (int i = 0; i < NV; i++)
        za += exp((double)a[i] - max);
    CHECK(fabs(ra.nll - (log(za) - (a[5] - max))) < 1e-6, "nll %.9g", ra.nll);
    CHECK(a[ra.top] == max, "top %d", ra.top);
    CHECK(moe_logprob_kld(&ra, &ra, NV, scratch) == 0.0, "a row against itself is not 0");
    double k = moe_logprob_kld(&ra, &rb, NV, scratch), want = exact_kld(a, b);
    CHECK(fabs(k - want) < 1e-3 * want + 1e-7, "KLD %.9g, exact %.9g", k, want);
    CHECK(moe_logprob_kld(&rb, &ra, NV, scratch) > 0, "KLD not positive");
    /* flat logits: no range, every code 0, p = 1/n */
    for (int i = 0; i < NV; i++)
        a[i] = 1.5f;
    moe_logprob_quantize(a, NV, 0, &ra);
    CHECK(ra.scale == 0.0f && ra.codes[NV - 1] == 0, "flat row: scale %g", ra.scale);
    CHECK(fabs(ra.nll - log((double)NV)) < 1e-6, "flat row: nll %.9g", ra.nll);
    CHECK(moe_logprob_kld(&ra, &ra, NV, scratch) == 0.0, "flat row against itself");
}

static void test_file(const char *dir) {
    char path[512], bad[512];
    snprintf(path, sizeof path, "%s/q.kld", dir);
    snprintf(bad, sizeof bad, "%s/bad.kld", dir);
    moe_kld_header h = {.n_vocab = NV, .n_ctx = 8, .n_chunk = 2, .first = 4, .add_bos = true,
                        .bos = 1, .range = MOE_LOGPROB_RANGE, .vocab_fp = 42, .model_fp = 7,
                        .arch = "llama"};
    moe_token tokens[16];
    for (int i = 0; i < 16; i++)
        tokens[i] = i * 3;
    moe_err err = {0};
    moe_kld_writer *w = NULL;
    CHECK(moe_kld_writer_create(path, &h, tokens, &w, &err) == MOE_OK, "%s", err.msg);
    float l[NV];
    uint16_t c[NV], c2[NV];
    moe_logprob_row r = {.codes = c}, back = {.codes = c2};
    for (int i = 0; w && i < 6; i++) { /* 2 chunks x (8 - 1 - 4) rows */
        fill_logits(l, 100 + (uint32_t)i, 4.0f);
        moe_logprob_quantize(l, NV, i, &r);
        CHECK(moe_kld_writer_row(w, &r, &err) == MOE_OK, "%s", err.msg);
    }
    CHECK(w && moe_kld_writer_finish(w, &err) == MOE_OK, "%s", err.msg);
    moe_kld_reader *rd = NULL;
    CHECK(moe_kld_reader_open(path, &rd, &err) == MOE_OK, "%s", err.msg);
    if (rd) {
        const moe_kld_header *g = moe_kld_reader_header(rd);
        CHECK(g->n_vocab == NV && g->n_ctx == 8 && g->n_chunk == 2 && g->first == 4 &&
                  g->add_bos && g->bos == 1 && g->vocab_fp == 42 && g->model_fp == 7 &&
                  !strcmp(g->arch, "llama"), "header fields changed");
        CHECK(!memcmp(moe_kld_reader_tokens(rd), tokens, sizeof tokens), "tokens changed");
        for (int i = 0; i < 6; i++) {
            fill_logits(l, 100 + (uint32_t)i, 4.0f);
            moe_logprob_quantize(l, NV, i, &r);
            CHECK(moe_kld_reader_row(rd, &back, &err) == MOE_OK, "%s", err.msg);
            CHECK(back.nll == r.nll && back.scale == r.scale && back.offset == r.offset &&
                      back.top == r.top && back.next == i && !memcmp(c, c2, sizeof c),
                  "row %d changed", i);
        }
        CHECK(moe_kld_reader_row(rd, &back, &err) != MOE_OK, "read past the last row");
    }
    moe_kld_reader_close(rd);
    /* truncated and foreign files are refused with a format error */
    FILE *in = fopen(path, "rb"), *out = fopen(bad, "wb");
    char buf[4096];
    size_t n = in ? fread(buf, 1, sizeof buf, in) : 0;
    if (out)
        fwrite(buf, 1, n - 10, out);
    if (in)
        fclose(in);
    if (out)
        fclose(out);
    CHECK(moe_kld_reader_open(bad, &rd, &err) == MOE_ERR_FORMAT, "truncated file: %s", err.msg);
    out = fopen(bad, "wb");
    if (out) {
        fwrite("GGUFxxxx", 1, 8, out);
        fwrite(buf, 1, 200, out);
        fclose(out);
    }
    CHECK(moe_kld_reader_open(bad, &rd, &err) == MOE_ERR_FORMAT, "foreign file: %s", err.msg);
    unlink(path);
    unlink(bad);
}

static void test_stats(void) {
    moe_kld_stats s = {0};
    moe_err err = {0};
    for (int i = 1; i <= 100; i++) /* KLD 0.01 .. 1.00; the same NLL on both sides */
        CHECK(moe_kld_stats_add(&s, i / 100.0, 2.0, 2.0, i % 4 != 0, &err) == MOE_OK, "%s",
              err.msg);
    moe_kld_summary o;
    moe_kld_summarize(&s, true, &o);
    CHECK(fabs(o.kld.v - 0.505) < 1e-12, "mean %.12g", o.kld.v);
    /* sqrt((mean of squares - square of mean) / (n - 1)) */
    double var = 0.0;
    for (int i = 1; i <= 100; i++)
        var += (i / 100.0) * (i / 100.0) / 100.0;
    CHECK(fabs(o.kld.err - sqrt((var - 0.505 * 0.505) / 99.0)) < 1e-12, "err %.12g", o.kld.err);
    CHECK(fabs(o.kld_pct[0] - 1.0) < 1e-12 && fabs(o.kld_pct[10] - 0.01) < 1e-12, "max/min");
    CHECK(fabs(o.kld_pct[5] - 0.505) < 1e-12, "median %.12g", o.kld_pct[5]);
    CHECK(fabs(o.kld_pct[2] - 0.9901) < 1e-12, "99%% %.12g", o.kld_pct[2]);
    CHECK(fabs(o.kld_pct[4] - 0.9010) < 1e-12, "90%% %.12g", o.kld_pct[4]);
    CHECK(fabs(o.same_top.v - 0.75) < 1e-12, "same top %.12g", o.same_top.v);
    CHECK(o.ppl_diff.v == 0.0 && o.rms_dp.v == 0.0, "identical NLLs: no PPL or p difference");
    CHECK(fabs(o.ppl_q.v - exp(2.0)) < 1e-9, "ppl %.12g", o.ppl_q.v);
    moe_kld_stats_free(&s);
    moe_ppl_acc a = {0};
    for (int i = 0; i < 10; i++)
        moe_ppl_add(&a, i % 2 ? 1.0 : 3.0); /* mean 2, variance 1 */
    CHECK(fabs(moe_ppl_value(&a) - exp(2.0)) < 1e-9, "ppl");
    CHECK(fabs(moe_ppl_error(&a) - exp(2.0) * sqrt(1.0 / 9.0)) < 1e-9, "ppl error");
}

static void observe_rows(moe_imatrix_collector *c, const char *name, int32_t e, float v,
                         int64_t n_rows) {
    float x[32 * 4];
    for (int64_t i = 0; i < 4 * n_rows; i++)
        x[i] = v * (float)(1 + i % 4); /* column j holds v * (j + 1) */
    moe_imatrix_observe(c, name, e, x, 4, n_rows);
}

static void test_collector(const char *dir) {
    moe_imatrix_collector *c = NULL;
    moe_err err = {0};
    CHECK(moe_imatrix_collector_create(false, 3, &c, &err) == MOE_OK, "%s", err.msg);
    if (!c)
        return;
    for (int call = 0; call < 2; call++) {
        moe_imatrix_collector_begin_call(c);
        observe_rows(c, "blk.0.attn_q.weight", -1, 1.0f, 16);
        observe_rows(c, "blk.0.attn_k.weight", -1, 1.0f, 15);  /* < 16 rows: skipped */
        observe_rows(c, "output.weight", -1, 1.0f, 32);        /* not collected */
        observe_rows(c, "blk.0.ffn_up_exps.weight", 0, 1.0f, 2); /* one call per decode */
        observe_rows(c, "blk.0.ffn_up_exps.weight", 2, 2.0f, 1);
        observe_rows(c, "blk.0.ffn_down_exps.weight", 1, 1.0f, 3); /* experts 0, 2 never */
    }
    CHECK(moe_imatrix_collector_status(c, &err) == MOE_OK, "%s", err.msg);
    CHECK(moe_imatrix_collector_n_entries(c) == 3, "%lld entries",
          (long long)moe_imatrix_collector_n_entries(c));
    CHECK(moe_imatrix_collector_n_calls(c) == 2, "calls %d", moe_imatrix_collector_n_calls(c));
    char dat[512], gguf[512];
    snprintf(dat, sizeof dat, "%s/u.dat", dir);
    snprintf(gguf, sizeof gguf, "%s/u.gguf", dir);
    int64_t written = 0;
    CHECK(moe_imatrix_save_dat(c, dat, "calib.txt", &written, &err) == MOE_OK, "%s", err.msg);
    CHECK(written == 1, "%lld .dat entries (the partial expert entry is left out)",
          (long long)written);
    CHECK(moe_imatrix_save_gguf(c, gguf, "calib.txt", 128, &err) == MOE_OK, "%s", err.msg);
    /* a size that changes is an error, kept for the caller */
    observe_rows(c, "blk.0.attn_q.weight", -1, 1.0f, 16);
    float x[8 * 16] = {0};
    moe_imatrix_observe(c, "blk.0.attn_q.weight", -1, x, 8, 16);
    CHECK(moe_imatrix_collector_status(c, &err) == MOE_ERR_INTERNAL, "size change accepted");
    moe_imatrix_collector_free(c);

    moe_imatrix *im = NULL;
    CHECK(moe_imatrix_load(dat, &im, &err) == MOE_OK, "%s", err.msg);
    const moe_imatrix_entry *q = moe_imatrix_find(im, "blk.0.attn_q.weight");
    CHECK(q && q->n == 4 && q->values[0] == 1.0f && q->values[3] == 16.0f, "dat: attn_q means");
    CHECK(im && im->chunks == 2 && im->dataset && !strcmp(im->dataset, "calib.txt"),
          "dat: trailer");
    moe_imatrix_free(im);
    im = NULL;
    CHECK(moe_imatrix_load(gguf, &im, &err) == MOE_OK, "%s", err.msg);
    const moe_imatrix_entry *up = moe_imatrix_find(im, "blk.0.ffn_up_exps.weight");
    /* expert 0: rows of 1..4, expert 1: none, expert 2: rows of 2..8 */
    CHECK(up && up->n == 12 && up->values[1] == 4.0f && up->values[4] == 0.0f &&
              up->values[8 + 3] == 64.0f, "gguf: per-expert means");
    CHECK(im && moe_imatrix_find(im, "blk.0.ffn_down_exps.weight") != NULL,
          "gguf keeps partial entries");
    CHECK(im && im->chunks == 2, "gguf: chunk count");
    moe_imatrix_free(im);
    unlink(dat);
    unlink(gguf);
}

int main(void) {
    char dir[] = "/tmp/moe-quality-XXXXXX";
    if (!mkdtemp(dir))
        return 1;
    test_rows();
    test_file(dir);
    test_stats();
    test_collector(dir);
    rmdir(dir);
    TEST_DONE();
}
