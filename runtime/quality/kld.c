#include "runtime/quality/kld.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "formats/gguf/cursor.h"
#include "formats/quant/fp16.h"
#include "formats/gguf/gguf.h"
#include "runtime/quality/outfile.h"

enum { ROW_FIXED = 24 }; /* f64 nll, f32 scale, f32 offset, i32 top, i32 next */

/* ---- rows --------------------------------------------------------------------------- */

void moe_logprob_quantize(const float *l, int64_t n, moe_token next, moe_logprob_row *r) {
    float max = l[0], min = l[0];
    int32_t top = 0;
    for (int64_t i = 1; i < n; i++) {
        if (l[i] > max) {
            max = l[i];
            top = (int32_t)i;
        }
        if (l[i] < min)
            min = l[i];
    }
    double sum = 0.0;
    for (int64_t i = 0; i < n; i++)
        sum += (double)expf(l[i] - max);
    const double lse = log(sum);
    const float lo = min > max - MOE_LOGPROB_RANGE ? min : max - MOE_LOGPROB_RANGE;
    const float scale = (max - lo) / 65535.0f;
    r->nll = lse - (double)(l[next] - max);
    r->offset = (float)((double)(lo - max) - lse);
    r->scale = scale;
    r->top = top;
    r->next = next;
    if (!(scale > 0.0f)) {
        memset(r->codes, 0, (size_t)n * sizeof *r->codes);
        return;
    }
    const float inv = 1.0f / scale;
    for (int64_t i = 0; i < n; i++) {
        float c = l[i] > lo ? rintf(inv * (l[i] - lo)) : 0.0f;
        r->codes[i] = (uint16_t)(c > 65535.0f ? 65535.0f : c);
    }
}

/* exp(offset + scale * code) for every code, from two 256-entry tables per
 * row (code = 256 hi + lo): n_vocab exponentials become 512 and products. */
static double row_exps(const moe_logprob_row *r, int64_t n, double *out) {
    double t_lo[256], t_hi[256];
    for (int k = 0; k < 256; k++) {
        t_lo[k] = exp((double)r->scale * k);
        t_hi[k] = exp((double)r->offset + (double)r->scale * 256.0 * k);
    }
    double z = 0.0;
    for (int64_t i = 0; i < n; i++) {
        out[i] = t_hi[r->codes[i] >> 8] * t_lo[r->codes[i] & 255];
        z += out[i];
    }
    return z;
}

static double row_z(const moe_logprob_row *r, int64_t n) {
    double t_lo[256], t_hi[256];
    for (int k = 0; k < 256; k++) {
        t_lo[k] = exp((double)r->scale * k);
        t_hi[k] = exp((double)r->offset + (double)r->scale * 256.0 * k);
    }
    double z = 0.0;
    for (int64_t i = 0; i < n; i++)
        z += t_hi[r->codes[i] >> 8] * t_lo[r->codes[i] & 255];
    return z;
}

double moe_logprob_kld(const moe_logprob_row *b, const moe_logprob_row *q, int64_t n,
                       double *scratch) {
    const double zb = row_exps(b, n, scratch), zq = row_z(q, n);
    /* log p_i = offset + scale * code_i - log z, for each row */
    const double cb = (double)b->offset - log(zb), cq = (double)q->offset - log(zq);
    const double sb = b->scale, sq = q->scale;
    double kld = 0.0;
    for (int64_t i = 0; i < n; i++) {
        const double lb = cb + sb * b->codes[i], lq = cq + sq * q->codes[i];
        kld += scratch[i] / zb * (lb - lq);
    }
    return kld;
}

uint64_t moe_vocab_fingerprint(const moe_model *model) {
    const int64_t n = moe_model_n_vocab(model);
    size_t cap = (size_t)n * 8 + 64, len = 0;
    uint8_t *buf = malloc(cap);
    char piece[256];
    for (int64_t t = 0; buf && t < n; t++) {
        int32_t k = moe_token_to_piece(model, (moe_token)t, piece, sizeof piece, true);
        if (k < 0) /* longer than 256 bytes: its length still counts */
            k = 0;
        if (len + 4 + (size_t)k > cap) {
            uint8_t *nb = realloc(buf, cap * 2 + (size_t)k);
            if (!nb) {
                free(buf);
                buf = NULL;
                break;
            }
            buf = nb;
            cap = cap * 2 + (size_t)k;
        }
        moe_store_le32(buf + len, (uint32_t)k);
        memcpy(buf + len + 4, piece, (size_t)k);
        len += 4 + (size_t)k;
    }
    uint64_t h = buf ? moe_xxh3(buf, len) : (uint64_t)n; /* out of memory: the size only */
    free(buf);
    return h;
}

moe_kld_header moe_kld_header_make(const moe_model *model, const moe_chunk_plan *plan) {
    moe_kld_header h = {.n_vocab = (uint32_t)plan->n_vocab, .n_ctx = (uint32_t)plan->n_ctx,
                        .n_chunk = (uint32_t)plan->n_chunk, .first = (uint32_t)plan->first,
                        .add_bos = plan->add_bos, .bos = plan->add_bos ? plan->bos : -1,
                        .range = MOE_LOGPROB_RANGE, .vocab_fp = moe_vocab_fingerprint(model),
                        .model_fp = moe_model_fingerprint(model)};
    snprintf(h.arch, sizeof h.arch, "%s", moe_model_arch_name(model));
    return h;
}

moe_status moe_kld_check_model(const moe_kld_header *h, const moe_model *model, moe_err *err) {
    MOE_FAIL_IF((int64_t)h->n_vocab != moe_model_n_vocab(model), err, MOE_ERR_USAGE,
                "the base was computed with a vocabulary of %" PRIu32 " tokens, this model has "
                "%" PRId64, h->n_vocab, moe_model_n_vocab(model));
    MOE_FAIL_IF(h->vocab_fp != moe_vocab_fingerprint(model), err, MOE_ERR_USAGE,
                "the base was computed with another vocabulary (same size, other tokens)");
    MOE_FAIL_IF(h->add_bos != moe_model_add_bos(model) ||
                    (h->add_bos && h->bos != moe_token_bos(model)),
                err, MOE_ERR_USAGE, "the base model and this one treat BOS differently");
    return MOE_OK;
}

/* ---- file ----------------------------------------------------------------------------- */

static uint64_t row_bytes(uint32_t n_vocab) { return ROW_FIXED + 2 * (uint64_t)n_vocab; }

static uint64_t n_rows(const moe_kld_header *h) {
    return (uint64_t)h->n_chunk * (h->n_ctx - 1 - h->first);
}

static void put_row(uint8_t *p, const moe_logprob_row *r, uint32_t n_vocab) {
    uint64_t nll;
    memcpy(&nll, &r->nll, 8);
    moe_store_le64(p, nll);
    moe_store_le32(p + 8, moe_f32_to_bits(r->scale));
    moe_store_le32(p + 12, moe_f32_to_bits(r->offset));
    moe_store_le32(p + 16, (uint32_t)r->top);
    moe_store_le32(p + 20, (uint32_t)r->next);
    for (uint32_t i = 0; i < n_vocab; i++)
        moe_store_le16(p + ROW_FIXED + 2 * i, r->codes[i]);
}

static void get_row(const uint8_t *p, moe_logprob_row *r, uint32_t n_vocab) {
    uint64_t nll = moe_load_le64(p);
    memcpy(&r->nll, &nll, 8);
    r->scale = moe_bits_to_f32(moe_load_le32(p + 8));
    r->offset = moe_bits_to_f32(moe_load_le32(p + 12));
    r->top = (int32_t)moe_load_le32(p + 16);
    r->next = (int32_t)moe_load_le32(p + 20);
    for (uint32_t i = 0; i < n_vocab; i++)
        r->codes[i] = moe_load_le16(p + ROW_FIXED + 2 * i);
}

struct moe_kld_writer {
    moe_outfile out;
    uint8_t *buf;
    moe_kld_header h;
    uint64_t rows;
};

static moe_status write_header(moe_kld_writer *w, const moe_token *tokens, moe_err *err) {
    uint8_t hd[MOE_KLD_HEADER_BYTES] = {0};
    memcpy(hd, MOE_KLD_MAGIC, 8);
    const moe_kld_header *h = &w->h;
    moe_store_le32(hd + 8, MOE_KLD_VERSION);
    moe_store_le32(hd + 12, h->n_vocab);
    moe_store_le32(hd + 16, h->n_ctx);
    moe_store_le32(hd + 20, h->n_chunk);
    moe_store_le32(hd + 24, h->first);
    moe_store_le32(hd + 28, h->add_bos ? 1u : 0u);
    moe_store_le32(hd + 32, (uint32_t)h->bos);
    moe_store_le32(hd + 36, moe_f32_to_bits(h->range));
    moe_store_le64(hd + 40, h->vocab_fp);
    moe_store_le64(hd + 48, h->model_fp);
    memcpy(hd + 56, h->arch, strnlen(h->arch, 31));
    MOE_TRY(moe_outfile_write(&w->out, hd, sizeof hd, err));
    const uint64_t n_tok = (uint64_t)h->n_chunk * h->n_ctx;
    for (uint64_t i = 0; i < n_tok; i++) {
        uint8_t b[4];
        moe_store_le32(b, (uint32_t)tokens[i]);
        MOE_TRY(moe_outfile_write(&w->out, b, 4, err));
    }
    return MOE_OK;
}

moe_status moe_kld_writer_create(const char *path, const moe_kld_header *h,
                                 const moe_token *tokens, moe_kld_writer **out, moe_err *err) {
    *out = NULL;
    moe_kld_writer *w = calloc(1, sizeof *w);
    MOE_FAIL_IF(!w, err, MOE_ERR_NOMEM, "out of memory");
    w->h = *h;
    w->buf = malloc(row_bytes(h->n_vocab));
    moe_status st = w->buf ? moe_outfile_open(&w->out, path, err)
                           : moe_fail(err, MOE_ERR_NOMEM, "out of memory");
    if (st == MOE_OK)
        st = write_header(w, tokens, err);
    if (st != MOE_OK) {
        moe_kld_writer_abort(w);
        return st;
    }
    *out = w;
    return MOE_OK;
}

moe_status moe_kld_writer_row(moe_kld_writer *w, const moe_logprob_row *row, moe_err *err) {
    MOE_FAIL_IF(w->rows >= n_rows(&w->h), err, MOE_ERR_INTERNAL, "%s: more rows than declared",
                w->out.out.path);
    put_row(w->buf, row, w->h.n_vocab);
    MOE_TRY(moe_outfile_write(&w->out, w->buf, (size_t)row_bytes(w->h.n_vocab), err));
    w->rows++;
    return MOE_OK;
}

moe_status moe_kld_writer_finish(moe_kld_writer *w, moe_err *err) {
    moe_status st = MOE_OK;
    if (w->rows != n_rows(&w->h))
        st = moe_fail(err, MOE_ERR_INTERNAL, "%s: %" PRIu64 " rows written of %" PRIu64,
                      w->out.out.path, w->rows, n_rows(&w->h));
    else
        st = moe_outfile_commit(&w->out, err);
    moe_kld_writer_abort(w);
    return st;
}

void moe_kld_writer_abort(moe_kld_writer *w) {
    if (!w)
        return;
    moe_outfile_abort(&w->out);
    free(w->buf);
    free(w);
}

struct moe_kld_reader {
    char *path;
    FILE *f;
    moe_kld_header h;
    moe_token *tokens;
    uint8_t *buf;
    uint64_t rows;
};

static moe_status parse_header(moe_kld_reader *r, const uint8_t *hd, uint64_t size,
                               moe_err *err) {
    MOE_FAIL_IF(memcmp(hd, MOE_KLD_MAGIC, 8) != 0, err, MOE_ERR_FORMAT,
                "not a moe-perplexity base-logits file (bad magic)");
    uint32_t version = moe_load_le32(hd + 8);
    MOE_FAIL_IF(version != MOE_KLD_VERSION, err, MOE_ERR_UNSUPPORTED,
                "format version %" PRIu32 " (this build reads %u)", version, MOE_KLD_VERSION);
    moe_kld_header *h = &r->h;
    h->n_vocab = moe_load_le32(hd + 12);
    h->n_ctx = moe_load_le32(hd + 16);
    h->n_chunk = moe_load_le32(hd + 20);
    h->first = moe_load_le32(hd + 24);
    h->add_bos = moe_load_le32(hd + 28) & 1u;
    h->bos = (int32_t)moe_load_le32(hd + 32);
    h->range = moe_bits_to_f32(moe_load_le32(hd + 36));
    h->vocab_fp = moe_load_le64(hd + 40);
    h->model_fp = moe_load_le64(hd + 48);
    memcpy(h->arch, hd + 56, 31);
    h->arch[31] = '\0';
    MOE_FAIL_IF(h->n_vocab < 2 || h->n_vocab > (1u << 24) || h->n_ctx < 4 ||
                    h->n_ctx > (1u << 24) || h->first >= h->n_ctx - 1 || h->n_chunk < 1 ||
                    h->n_chunk > (1u << 24),
                err, MOE_ERR_FORMAT,
                "implausible header (n_vocab %" PRIu32 ", n_ctx %" PRIu32 ", first %" PRIu32
                ", %" PRIu32 " chunks)", h->n_vocab, h->n_ctx, h->first, h->n_chunk);
    uint64_t want = MOE_KLD_HEADER_BYTES + 4 * (uint64_t)h->n_chunk * h->n_ctx +
                    n_rows(h) * row_bytes(h->n_vocab);
    MOE_FAIL_IF(size != want, err, MOE_ERR_FORMAT,
                "%" PRIu64 " bytes, but its header describes %" PRIu64, size, want);
    return MOE_OK;
}

static moe_status reader_start(moe_kld_reader *r, moe_err *err) {
    struct stat sb;
    MOE_FAIL_IF(fstat(fileno(r->f), &sb) != 0, err, MOE_ERR_IO, "%s", strerror(errno));
    uint8_t hd[MOE_KLD_HEADER_BYTES];
    MOE_FAIL_IF((uint64_t)sb.st_size < sizeof hd || fread(hd, 1, sizeof hd, r->f) != sizeof hd,
                err, MOE_ERR_FORMAT, "too short for a base-logits file");
    MOE_TRY(parse_header(r, hd, (uint64_t)sb.st_size, err));
    const uint64_t n_tok = (uint64_t)r->h.n_chunk * r->h.n_ctx;
    r->tokens = malloc(n_tok * sizeof *r->tokens);
    r->buf = malloc(row_bytes(r->h.n_vocab) > 4 * n_tok ? row_bytes(r->h.n_vocab) : 4 * n_tok);
    MOE_FAIL_IF(!r->tokens || !r->buf, err, MOE_ERR_NOMEM, "out of memory");
    MOE_FAIL_IF(fread(r->buf, 4, n_tok, r->f) != n_tok, err, MOE_ERR_IO, "read failed");
    for (uint64_t i = 0; i < n_tok; i++) {
        r->tokens[i] = (moe_token)moe_load_le32(r->buf + 4 * i);
        MOE_FAIL_IF(r->tokens[i] < 0 || (uint32_t)r->tokens[i] >= r->h.n_vocab, err,
                    MOE_ERR_FORMAT, "token %" PRIu64 " (%" PRId32 ") is outside the vocabulary",
                    i, r->tokens[i]);
    }
    return MOE_OK;
}

moe_status moe_kld_reader_open(const char *path, moe_kld_reader **out, moe_err *err) {
    *out = NULL;
    moe_kld_reader *r = calloc(1, sizeof *r);
    MOE_FAIL_IF(!r, err, MOE_ERR_NOMEM, "out of memory");
    r->path = strdup(path);
    r->f = fopen(path, "rb");
    moe_status st = !r->path ? moe_fail(err, MOE_ERR_NOMEM, "out of memory")
                    : !r->f  ? moe_fail(err, MOE_ERR_IO, "cannot open: %s", strerror(errno))
                             : reader_start(r, err);
    if (st != MOE_OK) {
        moe_err_prefix(err, "%s", path);
        moe_kld_reader_close(r);
        return st;
    }
    *out = r;
    return MOE_OK;
}

const moe_kld_header *moe_kld_reader_header(const moe_kld_reader *r) { return &r->h; }

const moe_token *moe_kld_reader_tokens(const moe_kld_reader *r) { return r->tokens; }

moe_status moe_kld_reader_row(moe_kld_reader *r, moe_logprob_row *row, moe_err *err) {
    MOE_FAIL_IF(r->rows >= n_rows(&r->h), err, MOE_ERR_INTERNAL, "%s: read past the last row",
                r->path);
    size_t n = (size_t)row_bytes(r->h.n_vocab);
    MOE_FAIL_IF(fread(r->buf, 1, n, r->f) != n, err, MOE_ERR_IO, "%s: read failed", r->path);
    get_row(r->buf, row, r->h.n_vocab);
    MOE_FAIL_IF(row->next < 0 || (uint32_t)row->next >= r->h.n_vocab || row->top < 0 ||
                    (uint32_t)row->top >= r->h.n_vocab || !isfinite(row->nll),
                err, MOE_ERR_FORMAT, "%s: row %" PRIu64 " is damaged", r->path, r->rows);
    r->rows++;
    return MOE_OK;
}

void moe_kld_reader_close(moe_kld_reader *r) {
    if (!r)
        return;
    if (r->f)
        fclose(r->f);
    free(r->path);
    free(r->tokens);
    free(r->buf);
    free(r);
}

/* ---- statistics ------------------------------------------------------------------------- */

const double moe_kld_pct_levels[11] = {1.0, 0.999, 0.99, 0.95, 0.90, 0.5,
                                       0.10, 0.05, 0.01, 0.001, 0.0};
const double moe_dp_pct_levels[13] = {1.0, 0.999, 0.99, 0.95, 0.90, 0.75, 0.5,
                                      0.25, 0.10, 0.05, 0.01, 0.001, 0.0};

moe_status moe_kld_stats_add(moe_kld_stats *s, double kld, double nll_q, double nll_base,
                             bool same_top, moe_err *err) {
    if (s->count == s->cap) {
        int64_t cap = s->cap ? s->cap * 2 : 4096;
        double *nk = realloc(s->kld, (size_t)cap * sizeof *nk);
        if (nk)
            s->kld = nk;
        double *nd = nk ? realloc(s->dp, (size_t)cap * sizeof *nd) : NULL;
        if (nd)
            s->dp = nd;
        MOE_FAIL_IF(!nk || !nd, err, MOE_ERR_NOMEM, "out of memory for %" PRId64 " rows", cap);
        s->cap = cap;
    }
    moe_ppl_add(&s->q, nll_q);
    moe_ppl_add(&s->base, nll_base);
    s->sum_nll_cross += nll_q * nll_base;
    s->sum_kld += kld;
    s->sum_kld2 += kld * kld;
    const double dp = exp(-nll_q) - exp(-nll_base);
    s->sum_dp += dp;
    s->sum_dp2 += dp * dp;
    s->sum_dp4 += dp * dp * dp * dp;
    if (fabs(dp) > s->max_abs_dp)
        s->max_abs_dp = fabs(dp);
    s->n_same_top += same_top;
    s->kld[s->count] = kld;
    s->dp[s->count] = dp;
    s->count++;
    return MOE_OK;
}

void moe_kld_stats_free(moe_kld_stats *s) {
    free(s->kld);
    free(s->dp);
    memset(s, 0, sizeof *s);
}

static moe_val mean_unc(double sum, double sum2, int64_t n) {
    if (n < 1)
        return (moe_val){0, 0};
    double f = sum / (double)n, df = sum2 / (double)n - f * f;
    return (moe_val){f, df > 0 && n > 10 ? sqrt(df / (double)(n - 1)) : 0.0};
}

static double covariance(double sa, double sb, double sab, int64_t n) {
    if (n < 10)
        return 0.0;
    double c = sab / (double)n - (sa / (double)n) * (sb / (double)n);
    return c / (double)(n - 1);
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Linear interpolation at fraction * (n - 1) of sorted v. */
static double percentile(const double *v, int64_t n, double fraction) {
    if (n < 1)
        return 0.0;
    if (fraction <= 0)
        return v[0];
    if (fraction >= 1)
        return v[n - 1];
    double p = fraction * (double)(n - 1);
    int64_t ip = (int64_t)p;
    p -= (double)ip;
    int64_t ip1 = ip + 1 < n ? ip + 1 : n - 1;
    return (1 - p) * v[ip] + p * v[ip1];
}

void moe_kld_summarize(moe_kld_stats *s, bool percentiles, moe_kld_summary *o) {
    memset(o, 0, sizeof *o);
    const int64_t n = s->count;
    o->count = n;
    moe_val lq = mean_unc(s->q.sum, s->q.sum2, n), lb = mean_unc(s->base.sum, s->base.sum2, n);
    o->ppl_q = (moe_val){exp(lq.v), exp(lq.v) * lq.err};
    o->ppl_base = (moe_val){exp(lb.v), exp(lb.v) * lb.err};
    const double cov = covariance(s->q.sum, s->base.sum, s->sum_nll_cross, n);
    o->ln_ppl_cor = lq.err > 0 && lb.err > 0 ? cov / (lq.err * lb.err) : 0.0;
    double v = lq.err * lq.err + lb.err * lb.err - 2.0 * cov;
    o->ln_ppl_ratio = (moe_val){lq.v - lb.v, v > 0 ? sqrt(v) : 0.0};
    o->ppl_ratio = (moe_val){exp(o->ln_ppl_ratio.v), exp(o->ln_ppl_ratio.v) * o->ln_ppl_ratio.err};
    double pcov = o->ppl_q.v * o->ppl_base.v * cov;
    v = o->ppl_q.err * o->ppl_q.err + o->ppl_base.err * o->ppl_base.err - 2.0 * pcov;
    o->ppl_diff = (moe_val){o->ppl_q.v - o->ppl_base.v, v > 0 ? sqrt(v) : 0.0};
    o->kld = mean_unc(s->sum_kld, s->sum_kld2, n);
    o->dp = mean_unc(s->sum_dp, s->sum_dp2, n);
    moe_val mse = mean_unc(s->sum_dp2, s->sum_dp4, n);
    double rms = sqrt(mse.v);
    o->rms_dp = (moe_val){rms, rms > 0 ? 0.5 / rms * mse.err : 0.0};
    double top = n ? (double)s->n_same_top / (double)n : 0.0;
    o->same_top = (moe_val){top, n > 1 ? sqrt(top * (1.0 - top) / (double)(n - 1)) : 0.0};
    if (!percentiles || n < 1)
        return;
    qsort(s->kld, (size_t)n, sizeof *s->kld, cmp_double);
    qsort(s->dp, (size_t)n, sizeof *s->dp, cmp_double);
    for (int i = 0; i < 11; i++)
        o->kld_pct[i] = percentile(s->kld, n, moe_kld_pct_levels[i]);
    for (int i = 0; i < 13; i++)
        o->dp_pct[i] = percentile(s->dp, n, moe_dp_pct_levels[i]);
}
