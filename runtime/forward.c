/* The forward pass: one generic transformer block for every architecture,
 * switched by the arch table (q/k norms, biases, MLA, MoE routing, shared
 * experts). Steps run per layer on explicit activation buffers (ctx->s), so a
 * scheduler can later place each step on a device. Shape alphabet: D n_embd,
 * T tokens, H/Hkv heads, dk/dv head sizes, E experts, K used, Fe expert width. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "runtime/backend.h"
#include "runtime/context.h"
#include "runtime/cpu/cpu_backend.h"
#include "runtime/lora.h"

/* Hands the activations of one weight product to the context's observer. */
static void observe(moe_context *ctx, const moe_weight *w, int64_t e, const float *x, int64_t T) {
    if (ctx->observer)
        ctx->observer(ctx->observer_user, w->name, (int32_t)e, x, w->ne[0], T);
}

/* Every dense weight product of the graph: llama.cpp's mul_mat order (GEMM
 * for batches). */
static void matmul(moe_context *ctx, const moe_weight *w, const float *x, int64_t T, float *y) {
    observe(ctx, w, -1, x, T);
    ctx->be.ops->mul_mat(&ctx->be, w, 0, x, T, y, MOE_DOT_GEMM);
    moe_lora_dense(ctx, w, x, T, y); /* applied adapters' s * B (A x), if any */
}

moe_status moe_backend_init(moe_backend *be, const moe_backend_ops *ops, moe_context *ctx,
                            moe_err *err) {
    moe_scratch *s = &ctx->s;
    const moe_hparams *hp = &ctx->model->hp;
    *be = (moe_backend){.ops = ops, .n_threads = ctx->n_threads, .scratch = s->mm,
                        .attn_ws = s->attn_ws, .xe = s->xe, .ge = s->ge, .ue = s->ue,
                        .oe = s->oe, .slot_out = s->slot_out, .members = s->members};
    be->attn_ws_floats = moe_attention_workspace(hp, ctx->kv.row_k, ctx->kv.row_v, ctx->kv.size);
    /* quantized activations take at most 40 bytes per 32 values */
    const int64_t T = ctx->params.n_batch, K = hp->n_expert_used, E = hp->n_expert;
    const int64_t D = hp->n_embd, Fe = hp->n_ff_exp;
    int64_t n_in = D;
    const int64_t widths[] = {hp->n_ff, Fe, hp->n_ff_shexp, hp->n_head * hp->head_dim_v,
                              hp->q_lora_rank, hp->kv_lora_rank};
    for (size_t i = 0; i < sizeof widths / sizeof widths[0]; i++)
        n_in = widths[i] > n_in ? widths[i] : n_in;
    const int64_t row = n_in / 32 * 40 + 64;
    const int64_t act_dense = T * row, act_experts = T * row + T * K * row * 2;
    be->act = malloc((size_t)(act_dense > act_experts ? act_dense : act_experts));
    be->fg = malloc((size_t)(T * K * Fe + 1) * sizeof(float));
    be->fu = malloc((size_t)(T * K * Fe + 1) * sizeof(float));
    int32_t *ints = malloc((size_t)(3 * E + 2 * T * K + 1) * sizeof *ints);
    if (!be->act || !be->fg || !be->fu || !ints) {
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
    be->act = NULL;
    be->fg = be->fu = NULL;
    be->e_count = NULL;
}

void moe_context_set_matmul_observer(moe_context *ctx, moe_matmul_observer fn, void *user) {
    ctx->observer = fn;
    ctx->observer_user = fn ? user : NULL;
}

static void norm_rows(moe_context *ctx, const float *x, const moe_weight *w, int64_t T,
                      int64_t n, float *out) {
    ctx->be.ops->rms_norm(&ctx->be, x, moe_weight_f32(w), T, n, ctx->model->hp.rms_eps, out);
}

static void rope(moe_context *ctx, float *v, int64_t n_heads, int64_t stride, int32_t pos) {
    ctx->be.ops->rope(&ctx->be, v, n_heads, stride, pos, &ctx->model->rope);
}

static void add_bias(float *x, const moe_weight *b, int64_t n) {
    const float *bias = moe_weight_f32(b);
    if (bias)
        for (int64_t i = 0; i < n; i++)
            x[i] += bias[i];
}

/* q, k, v for the llama / qwen2moe / qwen3moe / olmoe block. */
static void qkv_standard(moe_context *ctx, const moe_layer *L, int32_t T, const int32_t *pos) {
    moe_scratch *s = &ctx->s;
    const moe_hparams *hp = &ctx->model->hp;
    const int64_t H = hp->n_head, Hkv = hp->n_head_kv, dk = hp->head_dim_k, dv = hp->head_dim_v;
    matmul(ctx, &L->wq, s->h, T, s->q);
    matmul(ctx, &L->wk, s->h, T, s->k);
    matmul(ctx, &L->wv, s->h, T, s->v);
    for (int32_t t = 0; t < T; t++) {
        float *q = s->q + t * H * dk, *k = s->k + t * Hkv * dk, *v = s->v + t * Hkv * dv;
        add_bias(q, &L->bq, H * dk);
        add_bias(k, &L->bk, Hkv * dk);
        add_bias(v, &L->bv, Hkv * dv);
        switch (ctx->model->arch->qk_norm) {
        case MOE_QK_NORM_FULL: /* olmoe: the whole projection, before splitting heads */
            norm_rows(ctx, q, &L->q_norm, 1, H * dk, q);
            norm_rows(ctx, k, &L->k_norm, 1, Hkv * dk, k);
            break;
        case MOE_QK_NORM_HEAD: /* qwen3moe: every head on its own */
            norm_rows(ctx, q, &L->q_norm, H, dk, q);
            norm_rows(ctx, k, &L->k_norm, Hkv, dk, k);
            break;
        case MOE_QK_NORM_NONE:
            break;
        }
        rope(ctx, q, H, dk, pos[t]);
        rope(ctx, k, Hkv, dk, pos[t]);
    }
}

/* deepseek2 multi-head latent attention, computed the reference way: the
 * latent c is expanded by attn_kv_b into per-head K (nope part) and V; the
 * rope part of K is one shared head (model.md §2.7). */
static void qkv_mla(moe_context *ctx, const moe_layer *L, int32_t T, const int32_t *pos) {
    moe_scratch *s = &ctx->s;
    const moe_hparams *hp = &ctx->model->hp;
    const int64_t H = hp->n_head, dk = hp->head_dim_k, dv = hp->head_dim_v;
    const int64_t n_rope = hp->n_rot, nope = dk - n_rope, rkv = hp->kv_lora_rank;
    if (L->wq_a.data) {
        matmul(ctx, &L->wq_a, s->h, T, s->qa);
        norm_rows(ctx, s->qa, &L->q_a_norm, T, hp->q_lora_rank, s->qa);
        matmul(ctx, &L->wq_b, s->qa, T, s->q);
    } else {
        matmul(ctx, &L->wq, s->h, T, s->q);
    }
    matmul(ctx, &L->wkv_a_mqa, s->h, T, s->kvpe);
    for (int32_t t = 0; t < T; t++) /* the latent is the first rkv values of each row */
        norm_rows(ctx, s->kvpe + t * (rkv + n_rope), &L->kv_a_norm, 1, rkv, s->kvc + t * rkv);
    matmul(ctx, &L->wkv_b, s->kvc, T, s->kv);
    for (int32_t t = 0; t < T; t++) {
        float *q = s->q + t * H * dk, *kpe = s->kvpe + t * (rkv + n_rope) + rkv;
        const float *kv = s->kv + t * H * (nope + dv);
        rope(ctx, q + nope, H, dk, pos[t]);
        rope(ctx, kpe, 1, n_rope, pos[t]);
        float *k = s->k + t * H * dk, *v = s->v + t * H * dv;
        for (int64_t h = 0; h < H; h++) {
            memcpy(k + h * dk, kv + h * (nope + dv), (size_t)nope * sizeof(float));
            memcpy(k + h * dk + nope, kpe, (size_t)n_rope * sizeof(float));
            memcpy(v + h * dv, kv + h * (nope + dv) + nope, (size_t)dv * sizeof(float));
        }
    }
}

/* The cells attended over: llama.cpp attends over the used cells rounded up
 * to 32 (its cache padding), hidden ones masked. */
static int32_t attended_cells(const moe_kv_cache *kv) {
    int32_t used_end = 0;
    for (int32_t c = 0; c < kv->size; c++)
        if (kv->cells[c].pos >= 0)
            used_end = c + 1;
    const int32_t padded = (used_end + 31) / 32 * 32;
    return padded < kv->size ? padded : kv->size;
}

static void attention(moe_context *ctx, int64_t il, int32_t T, const int32_t *pos,
                      const int32_t *seq) {
    const moe_layer *L = &ctx->model->layers[il];
    moe_scratch *s = &ctx->s;
    if (ctx->model->arch->mla)
        qkv_mla(ctx, L, T, pos);
    else
        qkv_standard(ctx, L, T, pos);
    ctx->n_kv = attended_cells(&ctx->kv);
    const moe_attn_step st = {.kv = &ctx->kv, .layer = il, .T = T, .n_kv = ctx->n_kv,
                              .pos = pos, .seq = seq, .cells = s->cells, .q = s->q, .k = s->k,
                              .v = s->v, .out = s->att};
    ctx->be.ops->attention(&ctx->be, ctx->model, &st);
    matmul(ctx, &L->wo, s->att, T, s->tmp);
}

/* ---- feed-forward ----------------------------------------------------------------------- */

static void dense_ffn(moe_context *ctx, const moe_weight *gate, const moe_weight *up,
                      const moe_weight *down, int32_t T, float *out) {
    moe_lora_ffn lora;
    const moe_ffn_step st = {.gate = gate, .up = up, .down = down, .x = ctx->s.h, .T = T,
                             .out = out, .observer = ctx->observer,
                             .observer_user = ctx->observer_user,
                             .lora = moe_lora_ffn_terms(ctx, gate, up, down, &lora)};
    ctx->be.ops->ffn(&ctx->be, &st);
}

/* Router: logits by the graph, the rest (probabilities, selection with the
 * exp_probs_b bias, weights) by the backend, per the arch's table. */
static void route(moe_context *ctx, const moe_layer *L, int32_t T) {
    moe_scratch *s = &ctx->s;
    const moe_model *m = ctx->model;
    const moe_hparams *hp = &m->hp;
    matmul(ctx, &L->gate_inp, s->h, T, s->router);
    const moe_route_step st = {
        .probs = s->router, .T = T, .E = (int32_t)hp->n_expert, .K = (int32_t)hp->n_expert_used,
        .sigmoid = hp->gating == MOE_GATING_SIGMOID, .bias = moe_weight_f32(&L->exp_probs_b),
        .norm = m->arch->norm_w_key ? hp->expert_weights_norm : m->arch->norm_w,
        .scale = m->arch->scale_w ? hp->expert_weights_scale : 1.0f, .ids = s->topk,
        .w = s->topw};
    ctx->be.ops->route(&ctx->be, &st);
}

/* Routed experts, then the shared experts (qwen2moe: behind a scalar sigmoid
 * gate per token). */
static void moe_ffn(moe_context *ctx, const moe_layer *L, int32_t T) {
    moe_scratch *s = &ctx->s;
    const int64_t D = ctx->model->hp.n_embd;
    route(ctx, L, T);
    moe_lora_ffn lora;
    const moe_expert_step st = {
        .gate = &L->gate_exps, .up = &L->up_exps, .down = &L->down_exps, .x = s->h, .T = T,
        .K = (int32_t)ctx->model->hp.n_expert_used, .ids = s->topk, .w = s->topw, .out = s->tmp,
        .observer = ctx->observer, .observer_user = ctx->observer_user,
        .lora = moe_lora_ffn_terms(ctx, &L->gate_exps, &L->up_exps, &L->down_exps, &lora)};
    ctx->be.ops->experts(&ctx->be, &st);
    if (!L->gate_shexp.data)
        return;
    dense_ffn(ctx, &L->gate_shexp, &L->up_shexp, &L->down_shexp, T, s->oe);
    float *gate = s->router; /* the router's probabilities are no longer needed */
    if (L->gate_inp_shexp.data)
        matmul(ctx, &L->gate_inp_shexp, s->h, T, gate);
    for (int32_t t = 0; t < T; t++) {
        float g = 1.0f;
        if (L->gate_inp_shexp.data) { /* llama.cpp computes this sigmoid as silu(v)/v */
            const float v = gate[t];
            g = v / (1.0f + expf(-v)) / v;
        }
        for (int64_t d = 0; d < D; d++)
            s->tmp[t * D + d] += g * s->oe[t * D + d];
    }
}

static void ffn(moe_context *ctx, int64_t il, int32_t T) {
    const moe_layer *L = &ctx->model->layers[il];
    if (L->is_moe)
        moe_ffn(ctx, L, T);
    else
        dense_ffn(ctx, &L->ffn_gate, &L->ffn_up, &L->ffn_down, T, ctx->s.tmp);
}

/* ---- the pass ------------------------------------------------------------------------------- */

static void embed(moe_context *ctx, int32_t T, const moe_token *tokens) {
    const moe_weight *w = &ctx->model->tok_embd;
    const moe_type_traits *tr = moe_type_get(w->type);
    for (int32_t t = 0; t < T; t++)
        tr->to_f32(w->data + (uint64_t)tokens[t] * w->row_bytes, ctx->s.x + t * w->ne[0],
                   w->ne[0], 1);
    if (ctx->n_lora)
        moe_lora_embed(ctx, T, tokens);
}

static void add_residual(float *x, const float *y, int64_t n) {
    for (int64_t i = 0; i < n; i++)
        x[i] += y[i];
}

moe_status moe_forward(moe_context *ctx, int32_t T, const moe_token *tokens, const int32_t *pos,
                       const int32_t *seq, moe_err *err) {
    const moe_model *m = ctx->model;
    const moe_hparams *hp = &m->hp;
    moe_scratch *s = &ctx->s;
    const int64_t D = hp->n_embd;
    embed(ctx, T, tokens);
    for (int64_t il = 0; il < hp->n_layer; il++) {
        const moe_layer *L = &m->layers[il];
        norm_rows(ctx, s->x, &L->attn_norm, T, D, s->h);
        attention(ctx, il, T, pos, seq);
        add_residual(s->x, s->tmp, T * D);
        norm_rows(ctx, s->x, &L->ffn_norm, T, D, s->h);
        ffn(ctx, il, T);
        add_residual(s->x, s->tmp, T * D);
    }
    /* only the rows that asked for logits go through the output head */
    int32_t n = 0;
    for (int32_t t = 0; t < T; t++) {
        if (ctx->logit_row[t] < 0)
            continue;
        memcpy(s->tmp + (int64_t)n * D, s->x + t * D, (size_t)D * sizeof(float));
        n++;
    }
    if (n) {
        norm_rows(ctx, s->tmp, &m->output_norm, n, D, s->h);
        matmul(ctx, &m->output, s->h, n, ctx->logits);
    }
    (void)err;
    return MOE_OK;
}
