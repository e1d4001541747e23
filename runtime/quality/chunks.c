#include "runtime/quality/chunks.h"
#include "formats/base/clock.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static moe_status read_text(const char *path, char **out, size_t *len, moe_err *err) {
    FILE *f = fopen(path, "rb");
    MOE_FAIL_IF(!f, err, MOE_ERR_IO, "%s: %s", path, strerror(errno));
    char *buf = NULL;
    size_t n = 0, cap = 0;
    bool bad = false;
    for (;;) {
        if (n + 65536 + 1 > cap) {
            cap = cap ? cap * 2 : 131072;
            char *nb = realloc(buf, cap);
            if (!nb) {
                bad = true;
                break;
            }
            buf = nb;
        }
        size_t got = fread(buf + n, 1, 65536, f);
        n += got;
        if (got < 65536)
            break;
    }
    bad = bad || ferror(f);
    fclose(f);
    if (bad) {
        free(buf);
        return moe_fail(err, MOE_ERR_IO, "%s: read failed", path);
    }
    buf[n] = '\0';
    *out = buf;
    *len = n;
    return MOE_OK;
}

moe_status moe_quality_tokenize_file(const moe_model *model, const char *path,
                                     moe_token **tokens, int32_t *n_tokens, moe_err *err) {
    *tokens = NULL;
    *n_tokens = 0;
    char *text = NULL;
    size_t len = 0;
    MOE_TRY(read_text(path, &text, &len, err));
    if (len && text[len - 1] == '\n') /* llama.cpp's -f drops one trailing newline */
        text[--len] = '\0';
    if (len > INT32_MAX / 2) {
        free(text);
        return moe_fail(err, MOE_ERR_USAGE, "%s: too large (%zu bytes)", path, len);
    }
    int32_t cap = (int32_t)len + 8;
    moe_token *toks = NULL;
    moe_status st = MOE_OK;
    for (int attempt = 0; attempt < 2; attempt++) {
        moe_token *nt = realloc(toks, (size_t)cap * sizeof *toks);
        if (!nt) {
            st = moe_fail(err, MOE_ERR_NOMEM, "out of memory for %" PRId32 " tokens", cap);
            break;
        }
        toks = nt;
        int32_t n = moe_tokenize(model, text, (int32_t)len, toks, cap, true, false);
        if (n >= 0) {
            *tokens = toks;
            *n_tokens = n;
            free(text);
            return MOE_OK;
        }
        cap = -n;
    }
    if (st == MOE_OK)
        st = moe_fail(err, MOE_ERR_INTERNAL, "the tokenizer asked for more room twice");
    free(toks);
    free(text);
    return st;
}

moe_status moe_chunk_plan_make(const moe_model *model, int32_t n_tokens, int32_t n_ctx,
                               int32_t n_batch, bool pack, int32_t max_chunks,
                               moe_chunk_plan *plan, moe_err *err) {
    memset(plan, 0, sizeof *plan);
    MOE_FAIL_IF(n_ctx < 4, err, MOE_ERR_USAGE, "a context of %" PRId32 " tokens is too small",
                n_ctx);
    MOE_FAIL_IF(n_batch < 1, err, MOE_ERR_USAGE, "batch size %" PRId32 " must be positive",
                n_batch);
    MOE_FAIL_IF(n_tokens / 2 < n_ctx, err, MOE_ERR_USAGE,
                "the text tokenizes to only %" PRId32 " tokens: at least %" PRId64
                " are needed for a context of %" PRId32 " (-c)",
                n_tokens, 2 * (int64_t)n_ctx, n_ctx);
    plan->n_vocab = moe_model_n_vocab(model);
    plan->n_ctx = n_ctx;
    plan->n_chunk = n_tokens / n_ctx;
    if (max_chunks >= 0 && max_chunks < plan->n_chunk)
        plan->n_chunk = max_chunks;
    MOE_FAIL_IF(plan->n_chunk < 1, err, MOE_ERR_USAGE, "no chunk to evaluate (--chunks 0)");
    plan->first = n_ctx / 2;
    plan->n_seq = 1;
    plan->n_batch = n_batch;
    if (n_batch >= n_ctx) {
        int32_t n_seq = pack ? n_batch / n_ctx : 1;
        if (n_seq > MOE_CHUNK_MAX_SEQ)
            n_seq = MOE_CHUNK_MAX_SEQ;
        if (n_seq > plan->n_chunk)
            n_seq = plan->n_chunk;
        plan->n_seq = n_seq;
        plan->n_batch = n_seq * n_ctx;
    }
    plan->add_bos = moe_model_add_bos(model);
    plan->bos = moe_token_bos(model);
    MOE_FAIL_IF(plan->add_bos && plan->bos < 0, err, MOE_ERR_UNSUPPORTED,
                "the vocabulary asks for BOS but has no BOS token");
    return MOE_OK;
}

moe_context_params moe_chunk_plan_context_params(const moe_chunk_plan *plan, int n_threads) {
    moe_context_params cp = moe_context_default_params();
    cp.n_ctx = plan->n_ctx * plan->n_seq;
    cp.n_seq_max = plan->n_seq;
    cp.n_batch = plan->n_batch;
    cp.n_threads = n_threads;
    cp.type_k = MOE_TYPE_F16;
    cp.type_v = MOE_TYPE_F16;
    return cp;
}

typedef struct batch_bufs {
    moe_token *tok;
    int32_t *pos, *seq;
    int8_t *want;
} batch_bufs;

/* One decode: positions [p0, p0 + w) of the ns chunks from chunk c0, then
 * the scored rows it produced, in batch order (chunk, then position). */
static moe_status decode_span(moe_context *ctx, const moe_chunk_plan *p, const moe_token *tokens,
                              const moe_chunk_callbacks *cb, int32_t c0, int32_t ns, int32_t p0,
                              int32_t w, batch_bufs *bb, moe_err *err) {
    int32_t n = 0;
    for (int32_t s = 0; s < ns; s++) {
        const moe_token *chunk = tokens + (int64_t)(c0 + s) * p->n_ctx;
        for (int32_t k = 0; k < w; k++, n++) {
            int32_t pos = p0 + k;
            bb->tok[n] = pos == 0 && p->add_bos ? p->bos : chunk[pos];
            bb->pos[n] = pos;
            bb->seq[n] = s;
            bb->want[n] = cb->row && pos >= p->first && pos <= p->n_ctx - 2;
        }
    }
    moe_batch b = {.n_tokens = n, .token = bb->tok, .pos = bb->pos, .seq_id = bb->seq,
                   .logits = bb->want};
    if (cb->before_decode)
        cb->before_decode(cb->user);
    MOE_TRY(moe_decode(ctx, &b, err));
    for (int32_t i = 0; i < n; i++) {
        if (!bb->want[i])
            continue;
        const float *row = moe_get_logits_ith(ctx, i);
        MOE_FAIL_IF(!row, err, MOE_ERR_INTERNAL, "no logits for a row that asked for them");
        int32_t c = c0 + bb->seq[i];
        moe_token next = tokens[(int64_t)c * p->n_ctx + bb->pos[i] + 1];
        MOE_TRY(cb->row(cb->user, c, bb->pos[i], row, next, err));
    }
    return MOE_OK;
}

moe_status moe_chunk_run(moe_context *ctx, const moe_chunk_plan *p, const moe_token *tokens,
                         const moe_chunk_callbacks *cb, moe_err *err) {
    batch_bufs bb = {.tok = malloc((size_t)p->n_batch * sizeof *bb.tok),
                     .pos = malloc((size_t)p->n_batch * sizeof *bb.pos),
                     .seq = malloc((size_t)p->n_batch * sizeof *bb.seq),
                     .want = malloc((size_t)p->n_batch)};
    moe_status st = bb.tok && bb.pos && bb.seq && bb.want
                        ? MOE_OK
                        : moe_fail(err, MOE_ERR_NOMEM, "out of memory");
    const int32_t w = p->n_batch / p->n_seq; /* positions per decode */
    const double t0 = moe_now_s();
    for (int32_t c0 = 0; st == MOE_OK && c0 < p->n_chunk; c0 += p->n_seq) {
        int32_t ns = p->n_chunk - c0 < p->n_seq ? p->n_chunk - c0 : p->n_seq;
        moe_kv_clear(ctx);
        for (int32_t p0 = 0; st == MOE_OK && p0 < p->n_ctx; p0 += w) {
            int32_t span = p->n_ctx - p0 < w ? p->n_ctx - p0 : w;
            st = decode_span(ctx, p, tokens, cb, c0, ns, p0, span, &bb, err);
        }
        if (st == MOE_OK && cb->progress)
            cb->progress(cb->user, c0 + ns, moe_now_s() - t0);
    }
    free(bb.tok);
    free(bb.pos);
    free(bb.seq);
    free(bb.want);
    return st;
}

double moe_nll(const float *logits, int64_t n_vocab, moe_token tok) {
    float max = logits[0];
    for (int64_t i = 1; i < n_vocab; i++)
        if (logits[i] > max)
            max = logits[i];
    double sum = 0.0;
    for (int64_t i = 0; i < n_vocab; i++)
        sum += (double)expf(logits[i] - max);
    return log(sum) - (double)(logits[tok] - max);
}

double moe_ppl_value(const moe_ppl_acc *a) {
    return a->count ? exp(a->sum / (double)a->count) : 0.0;
}

double moe_ppl_error(const moe_ppl_acc *a) {
    if (a->count < 2)
        return 0.0;
    double mean = a->sum / (double)a->count;
    double var = a->sum2 / (double)a->count - mean * mean;
    return var > 0 ? sqrt(var / (double)(a->count - 1)) * exp(mean) : 0.0;
}
