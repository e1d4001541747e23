/* Contexts: the arena sized once from the model and batch size, decoding a
 * batch (validation, cache cells, logits rows), and the KV cache API. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "formats/cpu.h"
#include "runtime/context.h"
#include "runtime/cpu/cpu_backend.h"
#include "runtime/cpu_ops.h"
#include "runtime/lora.h"

moe_context_params moe_context_default_params(void) {
    return (moe_context_params){.n_ctx = 0, .n_seq_max = 1, .n_batch = 512,
                                .type_k = MOE_TYPE_F16, .type_v = MOE_TYPE_F16, .n_threads = 0,
                                .defrag_thold = -1.0f};
}

static int64_t max64(int64_t a, int64_t b) { return a > b ? a : b; }

/* Lays out every activation buffer of ctx->s inside one allocation. */
static moe_status build_arena(moe_context *ctx, moe_err *err) {
    const moe_hparams *hp = &ctx->model->hp;
    const int64_t T = ctx->params.n_batch, D = hp->n_embd, H = hp->n_head;
    const int64_t dk = hp->head_dim_k, dv = hp->head_dim_v, E = hp->n_expert;
    const int64_t K = hp->n_expert_used, th = ctx->n_threads;
    const int64_t rope = hp->n_rot, rkv = hp->kv_lora_rank, rq = hp->q_lora_rank;
    const int64_t F = max64(hp->n_ff, max64(hp->n_ff_exp, hp->n_ff_shexp));
    int64_t n_in = max64(D, max64(F, max64(H * dv, max64(rq, rkv))));
    struct { float **p; int64_t n; } parts[] = {
        {&ctx->s.x, T * D}, {&ctx->s.h, T * D}, {&ctx->s.tmp, T * D},
        {&ctx->s.q, T * H * dk}, {&ctx->s.k, T * ctx->kv.row_k}, {&ctx->s.v, T * ctx->kv.row_v},
        {&ctx->s.att, T * H * dv}, {&ctx->s.qa, T * rq}, {&ctx->s.kvpe, T * (rkv + rope)},
        {&ctx->s.kvc, T * rkv}, {&ctx->s.kv, T * H * (dk - rope + dv)},
        {&ctx->s.attn_ws, th * moe_attention_workspace(hp, ctx->kv.row_k, ctx->kv.row_v, ctx->kv.size)},
        {&ctx->s.router, T * E}, {&ctx->s.topw, T * K}, {&ctx->s.xe, T * D},
        {&ctx->s.ge, T * F}, {&ctx->s.ue, T * F}, {&ctx->s.oe, T * D},
        {&ctx->s.slot_out, T * K * D},
        {&ctx->s.mm, (int64_t)moe_cpu_matmul_scratch(n_in, T, (int)th)},
    };
    int64_t total = 0;
    for (size_t i = 0; i < sizeof parts / sizeof parts[0]; i++)
        total += (parts[i].n + 3) & ~(int64_t)3; /* 16-byte aligned regions */
    ctx->arena = malloc((size_t)total * sizeof(float));
    int32_t *ints = calloc((size_t)(T * (2 * K + 3) + 1), sizeof *ints);
    MOE_FAIL_IF(!ctx->arena || !ints, err, MOE_ERR_NOMEM,
                "out of memory for a %lld-token batch (%.1f MB of activations)", (long long)T,
                (double)total * 4 / 1e6);
    float *p = ctx->arena;
    for (size_t i = 0; i < sizeof parts / sizeof parts[0]; i++) {
        *parts[i].p = p;
        p += (parts[i].n + 3) & ~(int64_t)3;
    }
    ctx->s.topk = ints;
    ctx->s.members = ints + T * K;
    ctx->s.cells = ints + 2 * T * K;
    ctx->pos_buf = ints + 2 * T * K + T;
    ctx->seq_buf = ints + 2 * T * K + 2 * T;
    ctx->logit_row = malloc((size_t)T * sizeof *ctx->logit_row);
    MOE_FAIL_IF(!ctx->logit_row, err, MOE_ERR_NOMEM, "out of memory");
    return MOE_OK;
}

moe_status moe_context_create(moe_model *model, const moe_context_params *params,
                              moe_context **out, moe_err *err) {
    *out = NULL;
    moe_context_params p = params ? *params : moe_context_default_params();
    if (p.n_ctx == 0)
        p.n_ctx = (int32_t)model->hp.n_ctx_train;
    if (p.n_batch == 0)
        p.n_batch = 512;
    if (p.n_seq_max == 0)
        p.n_seq_max = 1;
    MOE_FAIL_IF(p.n_ctx < 1, err, MOE_ERR_USAGE, "context size %d must be positive", p.n_ctx);
    MOE_FAIL_IF(p.n_batch < 1, err, MOE_ERR_USAGE, "batch size %d must be positive", p.n_batch);
    MOE_FAIL_IF(p.n_seq_max < 1 || p.n_seq_max > MOE_MAX_SEQ, err, MOE_ERR_USAGE,
                "sequences %d outside 1..%d", p.n_seq_max, MOE_MAX_SEQ);
    if (p.n_batch > p.n_ctx)
        p.n_batch = p.n_ctx;
    moe_context *ctx = calloc(1, sizeof *ctx);
    MOE_FAIL_IF(!ctx, err, MOE_ERR_NOMEM, "out of memory");
    ctx->model = model;
    ctx->params = p;
    ctx->n_threads = p.n_threads > 0 ? p.n_threads : moe_online_cpus();
    moe_status st = moe_kv_init(&ctx->kv, model, p.n_ctx, p.type_k, p.type_v, err);
    if (st == MOE_OK)
        st = build_arena(ctx, err);
    if (st == MOE_OK)
        st = moe_backend_init(&ctx->be, moe_backend_cpu(), ctx, err);
    if (st != MOE_OK) {
        moe_context_free(ctx);
        return st;
    }
    *out = ctx;
    return MOE_OK;
}

void moe_context_free(moe_context *ctx) {
    if (!ctx)
        return;
    moe_lora_clear(ctx);
    free(ctx->lora_tmp);
    moe_backend_release(&ctx->be);
    moe_kv_free(&ctx->kv);
    free(ctx->arena);
    free(ctx->s.topk);
    free(ctx->logits);
    free(ctx->logit_row);
    free(ctx);
}

int32_t moe_context_n_ctx(const moe_context *ctx) { return ctx->params.n_ctx; }

/* ---- decode -------------------------------------------------------------------------------- */

static moe_status check_batch(moe_context *ctx, const moe_batch *b, moe_err *err) {
    const int32_t T = b->n_tokens;
    MOE_FAIL_IF(T < 1 || T > ctx->params.n_batch, err, MOE_ERR_USAGE,
                "batch of %d tokens (allowed 1..%d)", T, ctx->params.n_batch);
    MOE_FAIL_IF(!b->token, err, MOE_ERR_USAGE, "batch without tokens");
    int32_t next[MOE_MAX_SEQ];
    for (int32_t s = 0; s < ctx->params.n_seq_max; s++)
        next[s] = -2;
    for (int32_t t = 0; t < T; t++) {
        int32_t seq = b->seq_id ? b->seq_id[t] : 0;
        MOE_FAIL_IF(b->token[t] < 0 || b->token[t] >= ctx->model->hp.n_vocab, err, MOE_ERR_USAGE,
                    "token %d at batch index %d is outside the vocabulary (0..%lld)", b->token[t],
                    t, (long long)ctx->model->hp.n_vocab - 1);
        MOE_FAIL_IF(seq < 0 || seq >= ctx->params.n_seq_max, err, MOE_ERR_USAGE,
                    "sequence %d at batch index %d outside 0..%d", seq, t,
                    ctx->params.n_seq_max - 1);
        if (next[seq] == -2)
            next[seq] = moe_kv_pos_max(&ctx->kv, seq) + 1;
        int32_t pos = b->pos ? b->pos[t] : next[seq];
        MOE_FAIL_IF(pos < 0 || pos == INT32_MAX, err, MOE_ERR_USAGE,
                    "position %d at batch index %d is out of range", pos, t);
        next[seq] = pos + 1;
        ctx->pos_buf[t] = pos;
        ctx->seq_buf[t] = seq;
    }
    return MOE_OK;
}

/* Room for the batch's logits rows; grows with the largest request, not per
 * token. The row mapping is set only once the batch is sure to run. */
static moe_status reserve_logits(moe_context *ctx, const moe_batch *b, moe_err *err) {
    int32_t n = 0;
    for (int32_t t = 0; t < b->n_tokens; t++)
        n += b->logits ? b->logits[t] != 0 : t == b->n_tokens - 1;
    if (n > ctx->logits_cap) {
        float *nl = realloc(ctx->logits, (size_t)n * (size_t)ctx->model->hp.n_vocab * sizeof(float));
        MOE_FAIL_IF(!nl, err, MOE_ERR_NOMEM, "out of memory for %d logits rows", n);
        ctx->logits = nl;
        ctx->logits_cap = n;
    }
    return MOE_OK;
}

moe_status moe_decode(moe_context *ctx, const moe_batch *b, moe_err *err) {
    ctx->n_last = 0; /* earlier logits are gone whatever happens */
    MOE_TRY(check_batch(ctx, b, err));
    MOE_TRY(reserve_logits(ctx, b, err));
    MOE_FAIL_IF(ctx->kv.size - ctx->kv.used < b->n_tokens, err, MOE_ERR_USAGE,
                "the KV cache is full: %d of %d cells used, %d more needed (use a larger -c)",
                ctx->kv.used, ctx->kv.size, b->n_tokens);
    /* the lazy update: pending K-shift, then a requested defragmentation, so
     * the batch's cells are claimed from a compact cache */
    moe_kv_update(ctx);
    MOE_TRY(moe_kv_claim(&ctx->kv, b->n_tokens, ctx->pos_buf, ctx->seq_buf, ctx->s.cells, err));
    for (int32_t t = 0, n = 0; t < b->n_tokens; t++) {
        bool want = b->logits ? b->logits[t] != 0 : t == b->n_tokens - 1;
        ctx->logit_row[t] = want ? n++ : -1;
    }
    ctx->n_last = b->n_tokens;
    MOE_TRY(moe_forward(ctx, b->n_tokens, b->token, ctx->pos_buf, ctx->seq_buf, err));
    /* llama.cpp decides after a decode, and defragments at the next update */
    if (ctx->params.defrag_thold >= 0.0f &&
        moe_kv_fragmentation(&ctx->kv, MOE_KV_PADDING) > ctx->params.defrag_thold)
        ctx->do_defrag = true;
    return MOE_OK;
}

const float *moe_get_logits_ith(moe_context *ctx, int32_t i) {
    if (i < 0)
        i += ctx->n_last;
    if (i < 0 || i >= ctx->n_last || ctx->logit_row[i] < 0)
        return NULL;
    return ctx->logits + (int64_t)ctx->logit_row[i] * ctx->model->hp.n_vocab;
}

/* Sequence ids outside the context's range name no cell: the calls do nothing. */
static bool seq_ok(const moe_context *ctx, int32_t seq, bool all_allowed) {
    return (seq >= 0 && seq < ctx->params.n_seq_max) || (all_allowed && seq < 0);
}

void moe_kv_clear(moe_context *ctx) { moe_kv_clear_all(&ctx->kv); }
void moe_kv_seq_rm(moe_context *ctx, int32_t seq, int32_t p0, int32_t p1) {
    if (seq_ok(ctx, seq, true))
        moe_kv_remove(&ctx->kv, seq, p0, p1);
}
void moe_kv_seq_add(moe_context *ctx, int32_t seq, int32_t p0, int32_t p1, int32_t delta) {
    if (seq_ok(ctx, seq, true))
        moe_kv_shift(&ctx->kv, seq, p0, p1, delta);
}
int32_t moe_kv_seq_pos_max(const moe_context *ctx, int32_t seq) {
    return seq_ok(ctx, seq, true) ? moe_kv_pos_max(&ctx->kv, seq) : -1;
}
int32_t moe_kv_seq_pos_min(const moe_context *ctx, int32_t seq) {
    return seq_ok(ctx, seq, true) ? moe_kv_pos_min(&ctx->kv, seq) : -1;
}
void moe_kv_seq_cp(moe_context *ctx, int32_t src, int32_t dst, int32_t p0, int32_t p1) {
    if (seq_ok(ctx, src, false) && seq_ok(ctx, dst, false))
        moe_kv_copy(&ctx->kv, src, dst, p0, p1);
}
void moe_kv_seq_keep(moe_context *ctx, int32_t seq) {
    if (seq_ok(ctx, seq, false))
        moe_kv_keep(&ctx->kv, seq);
}
void moe_kv_seq_div(moe_context *ctx, int32_t seq, int32_t p0, int32_t p1, int32_t d) {
    if (seq_ok(ctx, seq, true))
        moe_kv_divide(&ctx->kv, seq, p0, p1, d);
}
int32_t moe_kv_n_used(const moe_context *ctx) { return ctx->kv.used; }
void moe_kv_defrag(moe_context *ctx) { ctx->do_defrag = true; }

int32_t moe_kv_update(moe_context *ctx) {
    ctx->be.ops->kv_shift(&ctx->be, &ctx->kv, ctx->model);
    if (!ctx->do_defrag)
        return 0;
    ctx->do_defrag = false;
    return moe_kv_compact(&ctx->kv);
}

bool moe_kv_can_shift(const moe_context *ctx) {
    (void)ctx; /* every loaded architecture rotates its keys with one RoPE */
    return true;
}
