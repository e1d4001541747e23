/* Contexts: the arena sized once from the model and batch size, decoding a
 * batch (validation, cache cells, logits rows), and the KV cache API. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "formats/base/cpu.h"
#include "runtime/context.h"
#include "runtime/cpu/cpu_backend.h"
#include "runtime/cpu/kernels.h"
#include "runtime/cpu/work_ranges.h"
#include "runtime/cpu_ops.h"
#include "runtime/lora.h"

moe_context_params moe_context_default_params(void) {
    return (moe_context_params){.n_ctx = 0, .n_seq_max = 1, .n_batch = 512,
                                .type_k = MOE_TYPE_F16, .type_v = MOE_TYPE_F16, .n_threads = 0,
                                .defrag_thold = -1.0f, .op_offload_min = 32};
}

static int64_t max64(int64_t a, int64_t b) { return a > b ? a : b; }

/* The device whose pinned host memory the CPU's buffers use: the first
 * active device that offers it (a GPU), or none. */
static const moe_device_ctx *pinning_device(const moe_context *ctx) {
    const moe_model *m = ctx->model;
    for (int d = 1; d < m->n_dev; d++)
        if (ctx->dev[d].active && ctx->dev[d].be.ops->host_alloc)
            return &ctx->dev[d];
    return NULL;
}

/* Lays out device d's buffers (ctx->dev[d].s) inside one allocation of its
 * memory; the logits buffer only where the output head runs off the CPU. */
static moe_status build_arena(moe_context *ctx, int d, moe_err *err) {
    const moe_model *m = ctx->model;
    const moe_hparams *hp = &m->hp;
    moe_device_ctx *dc = &ctx->dev[d];
    const int64_t T = ctx->params.n_batch, D = hp->n_embd, H = hp->n_head;
    const int64_t dk = hp->head_dim_k, dv = hp->head_dim_v, E = hp->n_expert;
    const int64_t K = hp->n_expert_used, th = ctx->n_threads;
    const int64_t rope = hp->n_rot, rkv = hp->kv_lora_rank, rq = hp->q_lora_rank;
    const int64_t F = max64(hp->n_ff, max64(hp->n_ff_exp, hp->n_ff_shexp));
    const int64_t n_in = max64(max64(D, dk), max64(F, max64(H * dv, max64(rq, rkv))));
    const bool logits_here = d != 0 && m->output.device == d;
    const int64_t nope = m->arch->mla ? dk - rope : 0, dv_att = max64(dv, m->attn.dv);
    const int64_t mla = m->attn.absorbed ? T * H : 0; /* absorbed MLA's buffers */
    void **b = dc->s.buf;
    struct { void **p; int64_t n; } parts[] = {
        {&b[MOE_BUF_X], T * D}, {&b[MOE_BUF_H], T * D}, {&b[MOE_BUF_TMP], T * D},
        {&b[MOE_BUF_Q], T * H * dk}, {&b[MOE_BUF_K], T * ctx->kv.row_k},
        {&b[MOE_BUF_V], T * ctx->kv.row_v}, {&b[MOE_BUF_ATT], T * H * dv_att},
        {&b[MOE_BUF_QA], T * rq}, {&b[MOE_BUF_KVPE], T * (rkv + rope)},
        {&b[MOE_BUF_KVC], T * rkv}, {&b[MOE_BUF_KV], T * H * (dk - rope + dv)},
        {&b[MOE_BUF_MLA_Q], mla * (rkv + rope)}, {&b[MOE_BUF_MLA_HEADS], mla * max64(nope, rkv)},
        {&b[MOE_BUF_MLA_PROJ], mla * max64(rkv, dv)},
        {&b[MOE_BUF_ROUTER], T * E}, {&b[MOE_BUF_TOPK], T * K}, {&b[MOE_BUF_TOPW], T * K},
        {&b[MOE_BUF_SHEXP], T * D}, {&b[MOE_BUF_SHGATE], T},
        {&b[MOE_BUF_LOGITS], logits_here ? T * hp->n_vocab : 0},
        {&b[MOE_BUF_SPLIT_IDS], m->expert_split ? T * K : 0},
        {&b[MOE_BUF_SLOTS], m->expert_split ? T * K * D : 0},
        {&b[MOE_BUF_SLOTS_ALL], m->expert_split ? T * K * D : 0},
        {(void **)&dc->s.attn_ws,
         th * moe_attention_workspace(m, ctx->kv.row_k, ctx->kv.row_v, ctx->kv.size)},
        {(void **)&dc->s.members, T * K}, {(void **)&dc->s.xe, T * D},
        {(void **)&dc->s.ge, T * F}, {(void **)&dc->s.ue, T * F}, {(void **)&dc->s.oe, T * D},
        {(void **)&dc->s.slot_out, T * K * D},
        {(void **)&dc->s.mm, (int64_t)moe_cpu_matmul_scratch(n_in, T, (int)th)},
    };
    int64_t total = 0; /* 4-byte elements, regions 16-byte aligned */
    for (size_t i = 0; i < sizeof parts / sizeof parts[0]; i++)
        total += (parts[i].n + 3) & ~(int64_t)3;
    const moe_device_ctx *pin = pinning_device(ctx);
    dc->arena = d == 0 && pin ? pin->be.ops->host_alloc((moe_backend *)&pin->be, (size_t)total * 4)
                              : dc->be.ops->alloc(&dc->be, (size_t)total * 4);
    MOE_FAIL_IF(!dc->arena, err, MOE_ERR_NOMEM,
                "%s: out of memory for a %lld-token batch (%.1f MB of activations)",
                m->dev[d].info.name, (long long)T, (double)total * 4 / 1e6);
    float *p = dc->arena;
    for (size_t i = 0; i < sizeof parts / sizeof parts[0]; i++) {
        *parts[i].p = p;
        p += (parts[i].n + 3) & ~(int64_t)3;
    }
    return MOE_OK;
}

/* The host's per-batch bookkeeping: cells, positions, sequences, logit rows. */
static moe_status alloc_batch_state(moe_context *ctx, moe_err *err) {
    const int64_t T = ctx->params.n_batch;
    ctx->cells = calloc((size_t)(4 * T), sizeof *ctx->cells);
    MOE_FAIL_IF(!ctx->cells, err, MOE_ERR_NOMEM, "out of memory");
    ctx->pos_buf = ctx->cells + T;
    ctx->seq_buf = ctx->cells + 2 * T;
    ctx->logit_row = ctx->cells + 3 * T;
    const int64_t lists = T < ctx->params.n_seq_max ? T : ctx->params.n_seq_max;
    ctx->seq_cells = malloc((size_t)(lists * ctx->kv.size) * sizeof *ctx->seq_cells);
    ctx->seq_cells_key = malloc((size_t)ctx->kv.size * sizeof *ctx->seq_cells_key);
    ctx->tok_cells = malloc((size_t)T * sizeof *ctx->tok_cells);
    ctx->tok_n_cells = malloc((size_t)T * sizeof *ctx->tok_n_cells);
    MOE_FAIL_IF(!ctx->seq_cells || !ctx->seq_cells_key || !ctx->tok_cells || !ctx->tok_n_cells,
                err, MOE_ERR_NOMEM, "out of memory for the attention cell lists (%lld x %d)",
                (long long)lists, ctx->kv.size);
    return MOE_OK;
}

/* After the batch claimed its cells: every distinct sequence's cells in
 * position order, once for all layers. */
static void order_cells(moe_context *ctx, int32_t T) {
    int32_t list_of[MOE_MAX_SEQ], list_n[MOE_MAX_SEQ], n_lists = 0;
    for (int32_t s = 0; s < MOE_MAX_SEQ; s++)
        list_of[s] = -1;
    for (int32_t t = 0; t < T; t++) {
        const int32_t s = ctx->seq_buf[t];
        if (list_of[s] < 0) {
            int32_t *list = ctx->seq_cells + (int64_t)n_lists * ctx->kv.size;
            list_n[n_lists] = moe_kv_seq_cells(&ctx->kv, s, list, ctx->seq_cells_key);
            list_of[s] = n_lists++;
        }
        ctx->tok_cells[t] = ctx->seq_cells + (int64_t)list_of[s] * ctx->kv.size;
        ctx->tok_n_cells[t] = list_n[list_of[s]];
    }
}

moe_status moe_backend_init(moe_backend *be, const moe_backend_ops *ops, moe_context *ctx,
                            moe_scratch *s, moe_err *err) {
    const moe_hparams *hp = &ctx->model->hp;
    *be = (moe_backend){.ops = ops, .n_threads = ctx->n_threads, .scratch = s->mm,
                        .attn_ws = s->attn_ws, .xe = s->xe, .ge = s->ge, .ue = s->ue,
                        .oe = s->oe, .slot_out = s->slot_out, .members = s->members};
    be->attn_ws_floats = moe_attention_workspace(ctx->model, ctx->kv.row_k, ctx->kv.row_v, ctx->kv.size);
    /* activation rows of any format (kernels.h): at most 2 bytes per value */
    const int64_t T = ctx->params.n_batch, K = hp->n_expert_used, E = hp->n_expert;
    const int64_t D = hp->n_embd, Fe = hp->n_ff_exp;
    int64_t n_in = D;
    const int64_t widths[] = {hp->n_ff, Fe, hp->n_ff_shexp, hp->n_head * hp->head_dim_v,
                              hp->q_lora_rank, hp->kv_lora_rank, hp->head_dim_k};
    for (size_t i = 0; i < sizeof widths / sizeof widths[0]; i++)
        n_in = widths[i] > n_in ? widths[i] : n_in;
    const int64_t row = (int64_t)moe_act_row_bytes_max(n_in) + 64;
    const int64_t act_dense = T * row, act_experts = T * row + T * K * row * 2;
    be->act_bytes = (uint64_t)(act_dense > act_experts ? act_dense : act_experts);
    be->act = malloc((size_t)be->act_bytes);
    be->fg = malloc((size_t)(T * K * Fe + 1) * sizeof(float));
    be->fu = malloc((size_t)(T * K * Fe + 1) * sizeof(float));
    int32_t *ints = malloc((size_t)(3 * E + 2 * T * K + 1) * sizeof *ints);
    be->ranges = aligned_alloc(64, (size_t)(2 * moe_work_ranges_bytes(be->n_threads)));
    if (!be->act || !be->fg || !be->fu || !ints || !be->ranges) {
        free(ints);
        moe_backend_release(be);
        return moe_fail(err, MOE_ERR_NOMEM, "out of memory for the %s backend's buffers",
                        ops->name);
    }
    be->e_count = ints;
    be->e_offset = ints + E;
    be->e_active = ints + 2 * E;
    be->slot_pos = ints + 3 * E;
    be->pos_tok = ints + 3 * E + T * K;
    return MOE_OK;
}

void moe_backend_release(moe_backend *be) {
    if (!be)
        return;
    free(be->act);
    free(be->fg);
    free(be->fu);
    free(be->e_count);
    free(be->ranges);
    be->ranges = NULL;
    be->act = NULL;
    be->fg = be->fu = NULL;
    be->e_count = NULL;
}


/* A backend instance and buffers on every device the model uses. */
static moe_status init_devices(moe_context *ctx, moe_err *err) {
    const moe_model *m = ctx->model;
    for (int d = m->n_dev - 1; d >= 0; d--) { /* the CPU last: it may use a GPU's pinned memory */
        if (!(m->dev_used & (1u << d)) && d != 0)
            continue;
        moe_device_ctx *dc = &ctx->dev[d];
        dc->be = (moe_backend){.ops = m->dev[d].ops, .n_threads = ctx->n_threads};
        MOE_TRY(build_arena(ctx, d, err));
        dc->active = true;
        moe_backend keep = dc->be;
        moe_status st = moe_backend_init(&dc->be, m->dev[d].ops, ctx, &dc->s, err);
        if (st != MOE_OK) {
            dc->be = keep; /* the arena is freed through it */
            return st;
        }
    }
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
        st = alloc_batch_state(ctx, err);
    if (st == MOE_OK)
        st = init_devices(ctx, err);
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
    for (int d = 0; d < MOE_MAX_DEVICES; d++) {
        moe_device_ctx *dc = &ctx->dev[d];
        moe_backend_release(&dc->be);
        const moe_device_ctx *pin = d == 0 ? pinning_device(ctx) : NULL;
        if (dc->arena && pin)
            pin->be.ops->host_free((moe_backend *)&pin->be, dc->arena);
        else if (dc->arena)
            dc->be.ops->free(&dc->be, dc->arena);
        if (dc->staging)
            dc->be.ops->free(&dc->be, dc->staging);
    }
    moe_kv_free(&ctx->kv);
    free(ctx->cells);
    free(ctx->seq_cells);
    free(ctx->seq_cells_key);
    free(ctx->tok_cells);
    free(ctx->tok_n_cells);
    free(ctx->logits);
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
    MOE_TRY(moe_kv_claim(&ctx->kv, b->n_tokens, ctx->pos_buf, ctx->seq_buf, ctx->cells, err));
    order_cells(ctx, b->n_tokens);
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
    moe_context_kv_shift(ctx);
    if (!ctx->do_defrag)
        return 0;
    ctx->do_defrag = false;
    return moe_kv_compact(&ctx->kv);
}

bool moe_kv_can_shift(const moe_context *ctx) {
    (void)ctx; /* every loaded architecture rotates its keys with one RoPE */
    return true;
}
