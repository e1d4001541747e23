/* The forward pass: one generic transformer block for every architecture,
 * switched by the arch table (q/k norms, biases, MLA, MoE routing, shared
 * experts), and the scheduler that runs each step where it belongs.
 *
 * Where: a step with a weight runs on the weight's device; a layer's RoPE,
 * attention and residual adds on the layer's device (where its KV cache is);
 * the router's selection where the router weight is; the shared-expert gate
 * where the routed experts ran. Every activation (context.h, moe_buf) may
 * have a copy on several devices: a step asks for its inputs on its device
 * (rd: copied there, explicitly, only when that copy is stale) and declares
 * its outputs (wr: that device's copy becomes the only current one). With
 * one device nothing is ever copied.
 * Shape alphabet: D n_embd, T tokens, H/Hkv heads, dk/dv head sizes, E
 * experts, K used, Fe expert width. */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "runtime/backend.h"
#include "runtime/context.h"
#include "runtime/cpu/cpu_backend.h"
#include "runtime/lora.h"
#include "formats/base/clock.h"

static moe_backend *BE(moe_context *ctx, int d) { return &ctx->dev[d].be; }

/* ---- activations across devices --------------------------------------------------------- */

/* Counts one copy of bytes that started at t0 (ms) in the context's time split. */
static void count_copy(moe_context *ctx, double t0, int64_t bytes) {
    ctx->perf.copy_ms += moe_now_ms() - t0;
    ctx->perf.n_copies++;
    ctx->perf.copy_bytes += bytes;
}

/* Copies the current elements of b from device src to dst: host <-> device by
 * the device's upload/download, device <-> device through the CPU's copy. */
static void copy_buf(moe_context *ctx, moe_buf b, int src, int dst) {
    const double t0 = moe_now_ms();
    const size_t bytes = (size_t)ctx->valid_n[b] * 4;
    void *to = ctx->dev[dst].s.buf[b];
    const void *from = ctx->dev[src].s.buf[b];
    if (src != 0 && dst != 0) {
        copy_buf(ctx, b, src, 0);
        ctx->valid[b] |= 1u;
        copy_buf(ctx, b, 0, dst);
        return;
    }
    if (dst == 0) {
        BE(ctx, src)->ops->download(BE(ctx, src), to, from, bytes);
        BE(ctx, src)->ops->synchronize(BE(ctx, src)); /* the host reads it next */
    } else {
        BE(ctx, dst)->ops->upload(BE(ctx, dst), to, from, bytes);
    }
    count_copy(ctx, t0, (int64_t)bytes);
}

/* b's copy on device d, made current first. */
static void *rd(moe_context *ctx, int d, moe_buf b) {
    if (!(ctx->valid[b] & (1u << d))) {
        int src = 0;
        while (!(ctx->valid[b] & (1u << src)))
            src++;
        copy_buf(ctx, b, src, d);
        ctx->valid[b] |= 1u << d;
    }
    return ctx->dev[d].s.buf[b];
}

/* b's copy on device d, about to receive n elements: the only current copy. */
static void *wr(moe_context *ctx, int d, moe_buf b, int64_t n) {
    ctx->valid[b] = 1u << d;
    ctx->valid_n[b] = n;
    return ctx->dev[d].s.buf[b];
}

/* b's copy on device d, made current, about to be changed in place. */
static void *rw(moe_context *ctx, int d, moe_buf b) {
    void *p = rd(ctx, d, b);
    ctx->valid[b] = 1u << d;
    return p;
}

/* ---- steps ------------------------------------------------------------------------------- */

/* Hands the activations of one weight product to the context's observer. */
static void observe(moe_context *ctx, const moe_weight *w, int64_t e, const float *x, int64_t T) {
    if (ctx->observer)
        ctx->observer(ctx->observer_user, w->name, (int32_t)e, x, w->ne[0], T);
}

/* Every dense weight product of the graph, on the weight's device: llama.cpp's
 * mul_mat order (GEMM for batches). */
static void matmul(moe_context *ctx, const moe_weight *w, moe_buf in, int64_t T, moe_buf out) {
    const int d = w->device;
    const float *x = rd(ctx, d, in);
    float *y = wr(ctx, d, out, T * w->ne[1]);
    observe(ctx, w, -1, x, T);
    BE(ctx, d)->ops->mul_mat(BE(ctx, d), w, 0, x, T, y, MOE_DOT_GEMM);
    moe_lora_dense(ctx, w, x, T, y); /* applied adapters' s * B (A x), if any */
}

/* Three products of one input (q, k, v): in one pass where the three weights
 * share a device that has one (mul_mat_n), else one by one; the same values. */
static void matmul3(moe_context *ctx, const moe_weight *const w[3], moe_buf in, int64_t T,
                    const moe_buf out[3]) {
    const int d = w[0]->device;
    const moe_backend_ops *ops = BE(ctx, d)->ops;
    if (!ops->mul_mat_n || w[1]->device != d || w[2]->device != d) {
        for (int i = 0; i < 3; i++)
            matmul(ctx, w[i], in, T, out[i]);
        return;
    }
    const float *x = rd(ctx, d, in);
    float *y[3];
    for (int i = 0; i < 3; i++) {
        y[i] = wr(ctx, d, out[i], T * w[i]->ne[1]);
        observe(ctx, w[i], -1, x, T);
    }
    ops->mul_mat_n(BE(ctx, d), w, 3, x, T, y, MOE_DOT_GEMM);
    for (int i = 0; i < 3; i++)
        moe_lora_dense(ctx, w[i], x, T, y[i]); /* applied adapters' s * B (A x), if any */
}

/* RMS norm of T rows of n (rows `stride` apart in both buffers) from in into
 * out, on the norm weight's device. */
static void norm(moe_context *ctx, const moe_weight *w, moe_buf in, int64_t T, int64_t n,
                 int64_t stride, moe_buf out) {
    const int d = w->device;
    const float *x = rd(ctx, d, in);
    float *y = in == out ? rw(ctx, d, out) : wr(ctx, d, out, T * stride);
    BE(ctx, d)->ops->rms_norm(BE(ctx, d), x, stride, w, T, n, ctx->model->hp.rms_eps, y, stride);
}

static void rope(moe_context *ctx, int d, moe_buf b, int64_t off, int32_t T, int64_t tok_stride,
                 int64_t n_heads, int64_t head_stride, const int32_t *pos) {
    float *v = (float *)rw(ctx, d, b) + off;
    BE(ctx, d)->ops->rope(BE(ctx, d), v, T, tok_stride, n_heads, head_stride, pos,
                          &ctx->model->rope);
}

static void add_bias(moe_context *ctx, moe_buf b, const moe_weight *bias, int64_t T, int64_t n) {
    if (!bias->data)
        return;
    const int d = bias->device;
    BE(ctx, d)->ops->add_bias(BE(ctx, d), rw(ctx, d, b), bias, T, n);
}

/* x += g * y on device d (gate NULL: g = 1). */
static void add_into(moe_context *ctx, int d, moe_buf x, moe_buf y, const float *gate, int64_t T,
                     int64_t n) {
    const float *yp = rd(ctx, d, y);
    BE(ctx, d)->ops->add_gated(BE(ctx, d), rw(ctx, d, x), yp, gate, T, n);
}

/* q, k, v for the llama / qwen2moe / qwen3moe / olmoe block. */
static void qkv_standard(moe_context *ctx, const moe_layer *L, int d, int32_t T,
                         const int32_t *pos) {
    const moe_hparams *hp = &ctx->model->hp;
    const int64_t H = hp->n_head, Hkv = hp->n_head_kv, dk = hp->head_dim_k;
    matmul3(ctx, (const moe_weight *[]){&L->wq, &L->wk, &L->wv}, MOE_BUF_H, T,
            (const moe_buf[]){MOE_BUF_Q, MOE_BUF_K, MOE_BUF_V});
    add_bias(ctx, MOE_BUF_Q, &L->bq, T, H * dk);
    add_bias(ctx, MOE_BUF_K, &L->bk, T, Hkv * dk);
    add_bias(ctx, MOE_BUF_V, &L->bv, T, Hkv * hp->head_dim_v);
    switch (ctx->model->arch->qk_norm) {
    case MOE_QK_NORM_FULL: /* olmoe: the whole projection, before splitting heads */
        norm(ctx, &L->q_norm, MOE_BUF_Q, T, H * dk, H * dk, MOE_BUF_Q);
        norm(ctx, &L->k_norm, MOE_BUF_K, T, Hkv * dk, Hkv * dk, MOE_BUF_K);
        break;
    case MOE_QK_NORM_HEAD: /* qwen3moe: every head on its own */
        norm(ctx, &L->q_norm, MOE_BUF_Q, T * H, dk, dk, MOE_BUF_Q);
        norm(ctx, &L->k_norm, MOE_BUF_K, T * Hkv, dk, dk, MOE_BUF_K);
        break;
    case MOE_QK_NORM_NONE:
        break;
    }
    rope(ctx, d, MOE_BUF_Q, 0, T, H * dk, H, dk, pos);
    rope(ctx, d, MOE_BUF_K, 0, T, Hkv * dk, Hkv, dk, pos);
}

/* Products of a per-head weight [n_in, n_out, H] (wk_b, wv_b): in holds H
 * blocks of [T][n_in], out receives H blocks of [T][n_out]; llama.cpp's
 * mul_mat broadcast over the heads, one GEMM per head. */
static void per_head_matmul(moe_context *ctx, const moe_weight *w, moe_buf in, int32_t T,
                            moe_buf out) {
    const int d = w->device;
    const int64_t H = w->ne[2], n_in = w->ne[0], n_out = w->ne[1];
    const float *x = rd(ctx, d, in);
    float *y = wr(ctx, d, out, H * T * n_out);
    observe(ctx, w, -1, x, H * T); /* one slice for all heads */
    for (int64_t h = 0; h < H; h++)
        BE(ctx, d)->ops->mul_mat(BE(ctx, d), w, h, x + h * T * n_in, T, y + h * T * n_out,
                                 MOE_DOT_GEMM);
}

/* Copies na x nb runs of n floats from src to dst on device d (copy_runs in
 * backend.h); dst gets n_dst elements written when `first`, else is updated
 * in place. */
static void copy_runs(moe_context *ctx, int d, moe_buf dst, int64_t n_dst, bool first,
                      int64_t dst_off, int64_t dst_a, int64_t dst_b, moe_buf src,
                      int64_t src_off, int64_t src_a, int64_t src_b, int64_t na, int64_t nb,
                      int64_t n) {
    const float *from = (const float *)rd(ctx, d, src) + src_off;
    float *to = (float *)(first ? wr(ctx, d, dst, n_dst) : rw(ctx, d, dst)) + dst_off;
    BE(ctx, d)->ops->copy_runs(BE(ctx, d), to, dst_a, dst_b, from, src_a, src_b, na, nb, n);
}

/* deepseek2 MLA the absorbed way (files with attn_k_b/attn_v_b and no
 * attn_kv_b), as current llama.cpp computes it: each head's non-rope query
 * part goes through wk_b into the latent space, and attention is
 * multi-query over cached rows [latent c | rotated k_pe] with the latent as
 * the value (moe_attn_shape); attention_absorbed_out takes the attended
 * latents back out through wv_b. Queries are [latent part | rope part], in
 * llama.cpp's concatenation order (the order the dot products sum in). */
static void qkv_mla_absorbed(moe_context *ctx, const moe_layer *L, int d, int32_t T) {
    const moe_hparams *hp = &ctx->model->hp;
    const int64_t H = hp->n_head, dk = hp->head_dim_k, n_rope = hp->n_rot, nope = dk - n_rope;
    const int64_t rkv = hp->kv_lora_rank, dq = rkv + n_rope, dkv = rkv + n_rope;
    /* q_nope [T][H][nope] -> [H][T][nope] -> wk_b -> [H][T][rkv] */
    copy_runs(ctx, d, MOE_BUF_MLA_HEADS, H * T * nope, true, 0, T * nope, nope, MOE_BUF_Q, 0, dk,
              H * dk, H, T, nope);
    per_head_matmul(ctx, &L->wk_b, MOE_BUF_MLA_HEADS, T, MOE_BUF_MLA_PROJ);
    copy_runs(ctx, d, MOE_BUF_MLA_Q, T * H * dq, true, 0, dq, H * dq, MOE_BUF_MLA_PROJ, 0,
              T * rkv, rkv, H, T, rkv);
    copy_runs(ctx, d, MOE_BUF_MLA_Q, 0, false, rkv, dq, H * dq, MOE_BUF_Q, nope, dk, H * dk, H,
              T, n_rope);
    /* keys [c | k_pe]; the values are the keys' first rkv (kv_cache.h) */
    copy_runs(ctx, d, MOE_BUF_K, T * dkv, true, 0, 0, dkv, MOE_BUF_KVC, 0, 0, rkv, 1, T, rkv);
    copy_runs(ctx, d, MOE_BUF_K, 0, false, rkv, 0, dkv, MOE_BUF_KVPE, rkv, 0, dkv, 1, T, n_rope);
    copy_runs(ctx, d, MOE_BUF_V, T * rkv, true, 0, 0, rkv, MOE_BUF_KVC, 0, 0, rkv, 1, T, rkv);
}

/* Absorbed MLA after attention: the attended latents [T][H][rkv] through
 * each head's wv_b into [T][H][dv], in place of MOE_BUF_ATT. */
static void attention_absorbed_out(moe_context *ctx, const moe_layer *L, int d, int32_t T) {
    const moe_hparams *hp = &ctx->model->hp;
    const int64_t H = hp->n_head, rkv = hp->kv_lora_rank, dv = hp->head_dim_v;
    copy_runs(ctx, d, MOE_BUF_MLA_HEADS, H * T * rkv, true, 0, T * rkv, rkv, MOE_BUF_ATT, 0, rkv,
              H * rkv, H, T, rkv);
    per_head_matmul(ctx, &L->wv_b, MOE_BUF_MLA_HEADS, T, MOE_BUF_MLA_PROJ);
    copy_runs(ctx, d, MOE_BUF_ATT, T * H * dv, true, 0, dv, H * dv, MOE_BUF_MLA_PROJ, 0, T * dv,
              dv, H, T, dv);
}

/* deepseek2 multi-head latent attention, computed the reference way: the
 * latent c is expanded by attn_kv_b into per-head K (nope part) and V; the
 * rope part of K is one shared head (model.md §2.7). */
static void qkv_mla(moe_context *ctx, const moe_layer *L, int d, int32_t T, const int32_t *pos) {
    const moe_hparams *hp = &ctx->model->hp;
    const int64_t H = hp->n_head, dk = hp->head_dim_k, dv = hp->head_dim_v;
    const int64_t n_rope = hp->n_rot, nope = dk - n_rope, rkv = hp->kv_lora_rank;
    if (L->wq_a.data) {
        matmul(ctx, &L->wq_a, MOE_BUF_H, T, MOE_BUF_QA);
        norm(ctx, &L->q_a_norm, MOE_BUF_QA, T, hp->q_lora_rank, hp->q_lora_rank, MOE_BUF_QA);
        matmul(ctx, &L->wq_b, MOE_BUF_QA, T, MOE_BUF_Q);
    } else {
        matmul(ctx, &L->wq, MOE_BUF_H, T, MOE_BUF_Q);
    }
    matmul(ctx, &L->wkv_a_mqa, MOE_BUF_H, T, MOE_BUF_KVPE);
    { /* the latent is the first rkv values of each row */
        const int dn = L->kv_a_norm.device;
        const float *kvpe = rd(ctx, dn, MOE_BUF_KVPE);
        float *kvc = wr(ctx, dn, MOE_BUF_KVC, T * rkv);
        BE(ctx, dn)->ops->rms_norm(BE(ctx, dn), kvpe, rkv + n_rope, &L->kv_a_norm, T, rkv,
                                   hp->rms_eps, kvc, rkv);
    }
    rope(ctx, d, MOE_BUF_Q, nope, T, H * dk, H, dk, pos);
    rope(ctx, d, MOE_BUF_KVPE, rkv, T, rkv + n_rope, 1, n_rope, pos);
    if (ctx->model->attn.absorbed) {
        qkv_mla_absorbed(ctx, L, d, T);
        return;
    }
    matmul(ctx, &L->wkv_b, MOE_BUF_KVC, T, MOE_BUF_KV);
    const float *kv = rd(ctx, d, MOE_BUF_KV);
    const float *kpe = (const float *)rd(ctx, d, MOE_BUF_KVPE) + rkv;
    float *k = wr(ctx, d, MOE_BUF_K, T * H * dk), *v = wr(ctx, d, MOE_BUF_V, T * H * dv);
    BE(ctx, d)->ops->mla_kv(BE(ctx, d), kv, kpe, rkv + n_rope, T, H, nope, n_rope, dv, k, v);
}

static void attention(moe_context *ctx, int64_t il, int32_t T, const int32_t *pos,
                      const int32_t *seq) {
    const moe_layer *L = &ctx->model->layers[il];
    const moe_hparams *hp = &ctx->model->hp;
    const int d = ctx->model->layer_dev[il];
    if (ctx->model->arch->mla)
        qkv_mla(ctx, L, d, T, pos);
    else
        qkv_standard(ctx, L, d, T, pos);
    const bool absorbed = ctx->model->attn.absorbed;
    const float *q = rd(ctx, d, absorbed ? MOE_BUF_MLA_Q : MOE_BUF_Q);
    const float *k = rd(ctx, d, MOE_BUF_K), *v = rd(ctx, d, MOE_BUF_V);
    float *out = wr(ctx, d, MOE_BUF_ATT, T * hp->n_head * ctx->model->attn.dv);
    const moe_attn_step st = {.kv = &ctx->kv, .layer = il, .T = T, .pos = pos, .seq = seq,
                              .cells = ctx->cells, .seq_cells = ctx->tok_cells,
                              .n_seq_cells = ctx->tok_n_cells, .q = q, .k = k, .v = v,
                              .out = out};
    BE(ctx, d)->ops->attention(BE(ctx, d), ctx->model, &st);
    if (absorbed)
        attention_absorbed_out(ctx, L, d, T);
    matmul(ctx, &L->wo, MOE_BUF_ATT, T, MOE_BUF_TMP);
}

/* ---- feed-forward ----------------------------------------------------------------------- */

static void dense_ffn(moe_context *ctx, const moe_weight *gate, const moe_weight *up,
                      const moe_weight *down, int32_t T, moe_buf out) {
    const int d = gate->device; /* placement keeps the three together */
    moe_lora_ffn lora;
    const moe_ffn_step st = {.gate = gate, .up = up, .down = down,
                             .x = rd(ctx, d, MOE_BUF_H), .T = T,
                             .out = wr(ctx, d, out, T * down->ne[1]), .observer = ctx->observer,
                             .observer_user = ctx->observer_user,
                             .lora = moe_lora_ffn_terms(ctx, gate, up, down, &lora)};
    BE(ctx, d)->ops->ffn(BE(ctx, d), &st);
}

/* Router: logits by the graph, the rest (probabilities, selection with the
 * exp_probs_b bias, weights) by the backend, per the arch's table. */
static void route(moe_context *ctx, const moe_layer *L, int32_t T) {
    const moe_model *m = ctx->model;
    const moe_hparams *hp = &m->hp;
    const int d = L->gate_inp.device;
    matmul(ctx, &L->gate_inp, MOE_BUF_H, T, MOE_BUF_ROUTER);
    const int64_t K = hp->n_expert_used;
    const moe_route_step st = {
        .probs = rw(ctx, d, MOE_BUF_ROUTER), .T = T, .E = (int32_t)hp->n_expert,
        .K = (int32_t)K, .sigmoid = hp->gating == MOE_GATING_SIGMOID,
        .bias = L->exp_probs_b.data ? &L->exp_probs_b : NULL,
        .norm = m->arch->norm_w_key ? hp->expert_weights_norm : m->arch->norm_w,
        .scale = m->arch->scale_w ? hp->expert_weights_scale : 1.0f,
        .ids = wr(ctx, d, MOE_BUF_TOPK, T * K), .w = wr(ctx, d, MOE_BUF_TOPW, T * K)};
    BE(ctx, d)->ops->route(BE(ctx, d), &st);
    if (ctx->route_observer) {
        const int64_t il = L - m->layers;
        ctx->route_observer(ctx->route_observer_user, (int32_t)il, T, (int32_t)K,
                            rd(ctx, 0, MOE_BUF_TOPK), rd(ctx, 0, MOE_BUF_TOPW));
    }
}

/* ---- routed experts, and their offload for large batches ------------------------------ */

/* Where the layer's experts compute for this batch: where they live, or the
 * layer's device when they live elsewhere (--cpu-moe) and the batch routes
 * enough rows per expert (tokens * K / E >= op_offload_min) to pay for
 * uploading the experts it uses. */
static int experts_device(const moe_context *ctx, int64_t il, const moe_layer *L, int32_t T) {
    const moe_hparams *hp = &ctx->model->hp;
    const int home = L->gate_exps.device, ld = ctx->model->layer_dev[il];
    const int64_t min = ctx->params.op_offload_min;
    if (ld == home || min <= 0 || (int64_t)T * hp->n_expert_used < min * hp->n_expert)
        return home;
    if (ctx->n_lora || ctx->observer) /* both name experts by their index in the model */
        return home;
    return ld;
}

/* Uploads the experts the batch routes to (ascending ids) into device d's
 * staging buffer as three stacked weights of n_sel experts, and rewrites the
 * batch's ids to their rank there. Returns false when staging memory cannot
 * be had (the step then runs where the experts live). */
static bool stage_experts(moe_context *ctx, int d, const moe_layer *L, int32_t T, int32_t *ids,
                          moe_weight out[3]) {
    const moe_hparams *hp = &ctx->model->hp;
    const int64_t E = hp->n_expert, TK = (int64_t)T * hp->n_expert_used;
    const moe_weight *src[3] = {&L->gate_exps, &L->up_exps, &L->down_exps};
    moe_device_ctx *dc = &ctx->dev[d];
    const uint64_t need = (src[0]->expert_bytes + src[1]->expert_bytes + src[2]->expert_bytes) *
                          (uint64_t)E;
    if (dc->staging_bytes < need) {
        if (dc->staging)
            dc->be.ops->free(&dc->be, dc->staging);
        dc->staging = dc->be.ops->alloc(&dc->be, need);
        dc->staging_bytes = dc->staging ? need : 0;
        if (!dc->staging)
            return false;
    }
    int32_t rank[MOE_MAX_EXPERTS];
    int32_t n_sel = 0;
    for (int64_t e = 0; e < E; e++)
        rank[e] = -1;
    for (int64_t i = 0; i < TK; i++)
        rank[ids[i]] = 0;
    for (int64_t e = 0; e < E; e++)
        if (rank[e] == 0)
            rank[e] = n_sel++ + 1;
    const double t0 = moe_now_ms();
    uint8_t *at = dc->staging;
    for (int k = 0; k < 3; k++) {
        out[k] = *src[k];
        out[k].ne[2] = n_sel;
        out[k].dev = at;
        out[k].data = dc->be.ops->host_memory ? at : NULL;
        for (int64_t e = 0; e < E; e++)
            if (rank[e] > 0) {
                dc->be.ops->upload(&dc->be, at, src[k]->data + (uint64_t)e * src[k]->expert_bytes,
                                   src[k]->expert_bytes);
                at += src[k]->expert_bytes;
            }
    }
    for (int64_t i = 0; i < TK; i++)
        ids[i] = rank[ids[i]] - 1;
    ctx->perf.copy_ms += moe_now_ms() - t0;
    ctx->perf.n_copies += 3 * n_sel;
    ctx->perf.copy_bytes += (int64_t)(at - (uint8_t *)dc->staging);
    ctx->perf.expert_offloads++;
    return true;
}

static void routed_experts(moe_context *ctx, int64_t il, const moe_layer *L, int32_t T) {
    int d = experts_device(ctx, il, L, T);
    const int64_t D = ctx->model->hp.n_embd, K = ctx->model->hp.n_expert_used;
    const moe_weight *w[3] = {&L->gate_exps, &L->up_exps, &L->down_exps};
    moe_weight staged[3];
    if (d != L->gate_exps.device) {
        /* the ids are rewritten on the host, then go to d with the experts */
        int32_t *ids = rw(ctx, 0, MOE_BUF_TOPK);
        if (stage_experts(ctx, d, L, T, ids, staged))
            w[0] = &staged[0], w[1] = &staged[1], w[2] = &staged[2];
        else
            d = L->gate_exps.device; /* ids untouched: staging failed before rewriting */
    }
    moe_lora_ffn lora;
    const moe_expert_step st = {
        .gate = w[0], .up = w[1], .down = w[2], .x = rd(ctx, d, MOE_BUF_H), .T = T, .K = (int32_t)K,
        .ids = rd(ctx, d, MOE_BUF_TOPK), .w = rd(ctx, d, MOE_BUF_TOPW),
        .out = wr(ctx, d, MOE_BUF_TMP, T * D), .observer = ctx->observer,
        .observer_user = ctx->observer_user,
        .lora = moe_lora_ffn_terms(ctx, &L->gate_exps, &L->up_exps, &L->down_exps, &lora)};
    const double t0 = moe_now_ms();
    BE(ctx, d)->ops->experts(BE(ctx, d), &st);
    ctx->perf.experts_ms += moe_now_ms() - t0;
}

/* A layer whose experts are split between devices: each device computes the
 * slots of its experts (ids rewritten to its part, -1 for the others), the
 * home device (host memory) gathers every device's slots and sums them in
 * slot order, so the result has the unsplit bits. The other devices are
 * queued first; the last one's work overlaps the home's. */
/* Copies the slots device `from` computed (on the home device now) into the
 * gathered slots of the home device. */
static float *gather_slots(moe_context *ctx, const moe_expert_split *sp, int home, int from,
                           const int32_t *ids, int64_t TK, int64_t D, float *all) {
    const float *theirs = rd(ctx, home, MOE_BUF_SLOTS);
    if (!all)
        all = wr(ctx, home, MOE_BUF_SLOTS_ALL, TK * D);
    for (int64_t s = 0; s < TK; s++)
        if (sp->dev[ids[s]] == from)
            memcpy(all + s * D, theirs + s * D, (size_t)D * sizeof *all);
    return all;
}

static void split_experts(moe_context *ctx, const moe_layer *L, int32_t T) {
    const moe_expert_split *sp = L->split;
    const int home = L->gate_exps.device;
    const int64_t D = ctx->model->hp.n_embd, K = ctx->model->hp.n_expert_used, TK = T * K;
    const int32_t *ids = rd(ctx, 0, MOE_BUF_TOPK);
    float *all = NULL;
    int pending = -1; /* a device whose slots are still to be gathered */
    for (int pass = 0; pass < 2; pass++) /* the other devices first, then the home */
        for (int d = 0; d < ctx->model->n_dev; d++) {
            if (!(sp->devs & (1u << d)) || (pass == 0) == (d == home))
                continue;
            int32_t *mine = wr(ctx, 0, MOE_BUF_SPLIT_IDS, TK);
            int64_t n = 0;
            for (int64_t s = 0; s < TK; s++) {
                const int32_t e = ids[s];
                mine[s] = sp->dev[e] == d ? sp->local[e] : -1;
                n += mine[s] >= 0;
            }
            if (!n && d != home)
                continue;
            if (pending >= 0 && d != home) { /* before this device's slots take the buffer */
                all = gather_slots(ctx, sp, home, pending, ids, TK, D, all);
                pending = -1;
            }
            const moe_weight *w[3] = {&L->gate_exps, &L->up_exps, &L->down_exps};
            if (d != home)
                w[0] = &sp->part[d][0], w[1] = &sp->part[d][1], w[2] = &sp->part[d][2];
            if (d == home && !all)
                all = wr(ctx, home, MOE_BUF_SLOTS_ALL, TK * D);
            if (!n) /* the home with nothing to do */
                continue;
            const moe_expert_step st = {
                .gate = w[0], .up = w[1], .down = w[2], .x = rd(ctx, d, MOE_BUF_H), .T = T,
                .K = (int32_t)K, .ids = rd(ctx, d, MOE_BUF_SPLIT_IDS),
                .w = rd(ctx, d, MOE_BUF_TOPW), .out = NULL,
                .slots = d == home ? all : wr(ctx, d, MOE_BUF_SLOTS, TK * D)};
            const double t0 = moe_now_ms();
            BE(ctx, d)->ops->experts(BE(ctx, d), &st);
            ctx->perf.experts_ms += moe_now_ms() - t0;
            if (d != home)
                pending = d;
        }
    if (pending >= 0) /* the last other device, after the home's own work */
        all = gather_slots(ctx, sp, home, pending, ids, TK, D, all);
    BE(ctx, home)->ops->experts_combine(BE(ctx, home), all, rd(ctx, home, MOE_BUF_TOPW), T, K,
                                        D, wr(ctx, home, MOE_BUF_TMP, T * D));
}

/* Routed experts plus the shared experts (qwen2moe: behind a scalar sigmoid
 * gate per token). The shared expert is queued first: on another device it
 * then runs while the routed experts compute. */
static void moe_ffn(moe_context *ctx, int64_t il, const moe_layer *L, int32_t T) {
    const int64_t D = ctx->model->hp.n_embd;
    route(ctx, L, T);
    const bool shared = L->gate_shexp.data != NULL;
    if (shared) {
        dense_ffn(ctx, &L->gate_shexp, &L->up_shexp, &L->down_shexp, T, MOE_BUF_SHEXP);
        if (L->gate_inp_shexp.data)
            matmul(ctx, &L->gate_inp_shexp, MOE_BUF_H, T, MOE_BUF_SHGATE);
    }
    if (L->split)
        split_experts(ctx, L, T);
    else
        routed_experts(ctx, il, L, T);
    if (!shared)
        return;
    const int d = ctx->valid[MOE_BUF_TMP] & (1u << L->gate_exps.device)
                      ? L->gate_exps.device
                      : ctx->model->layer_dev[il]; /* where the experts ran */
    const float *gate = L->gate_inp_shexp.data ? rd(ctx, d, MOE_BUF_SHGATE) : NULL;
    add_into(ctx, d, MOE_BUF_TMP, MOE_BUF_SHEXP, gate, T, D);
}

static void ffn(moe_context *ctx, int64_t il, int32_t T) {
    const moe_layer *L = &ctx->model->layers[il];
    if (L->is_moe)
        moe_ffn(ctx, il, L, T);
    else
        dense_ffn(ctx, &L->ffn_gate, &L->ffn_up, &L->ffn_down, T, MOE_BUF_TMP);
}

/* ---- the pass ------------------------------------------------------------------------------- */

static void embed(moe_context *ctx, int32_t T, const moe_token *tokens) {
    const moe_weight *w = &ctx->model->tok_embd;
    const int d = w->device;
    float *x = wr(ctx, d, MOE_BUF_X, T * w->ne[0]);
    BE(ctx, d)->ops->get_rows(BE(ctx, d), w, tokens, T, x);
    if (ctx->n_lora)
        moe_lora_embed(ctx, T, tokens, x);
}

/* The output head for the rows that asked for logits: the norm gathers them
 * (one call per run of consecutive rows), the product writes the logits. */
static void output(moe_context *ctx, int32_t T) {
    const moe_model *m = ctx->model;
    const int64_t D = m->hp.n_embd, V = m->hp.n_vocab;
    const int dn = m->output_norm.device;
    const float *x = rd(ctx, dn, MOE_BUF_X);
    float *h = wr(ctx, dn, MOE_BUF_H, 0);
    int32_t n = 0;
    for (int32_t t = 0; t < T;) {
        if (ctx->logit_row[t] < 0) {
            t++;
            continue;
        }
        int32_t run = 1;
        while (t + run < T && ctx->logit_row[t + run] >= 0)
            run++;
        BE(ctx, dn)->ops->rms_norm(BE(ctx, dn), x + t * D, D, &m->output_norm, run, D,
                                   m->hp.rms_eps, h + n * D, D);
        n += run;
        t += run;
    }
    if (!n)
        return;
    ctx->valid_n[MOE_BUF_H] = n * D;
    const moe_weight *w = &m->output;
    const int d = w->device;
    const float *hx = rd(ctx, d, MOE_BUF_H);
    float *y = d == 0 ? ctx->logits : wr(ctx, d, MOE_BUF_LOGITS, n * V);
    observe(ctx, w, -1, hx, n);
    BE(ctx, d)->ops->mul_mat(BE(ctx, d), w, 0, hx, n, y, MOE_DOT_GEMM);
    moe_lora_dense(ctx, w, hx, n, y);
    if (d != 0) { /* the logits are the host's */
        const double t0 = moe_now_ms();
        BE(ctx, d)->ops->download(BE(ctx, d), ctx->logits, y, (size_t)(n * V) * sizeof(float));
        BE(ctx, d)->ops->synchronize(BE(ctx, d));
        count_copy(ctx, t0, n * V * 4);
    }
}

moe_status moe_forward(moe_context *ctx, int32_t T, const moe_token *tokens, const int32_t *pos,
                       const int32_t *seq, moe_err *err) {
    const moe_model *m = ctx->model;
    const moe_hparams *hp = &m->hp;
    const int64_t D = hp->n_embd;
    const double t0 = moe_now_ms();
    const double busy0 = ctx->perf.experts_ms + ctx->perf.copy_ms;
    memset(ctx->valid, 0, sizeof ctx->valid);
    embed(ctx, T, tokens);
    for (int64_t il = 0; il < hp->n_layer; il++) {
        const moe_layer *L = &m->layers[il];
        const int d = m->layer_dev[il];
        norm(ctx, &L->attn_norm, MOE_BUF_X, T, D, D, MOE_BUF_H);
        attention(ctx, il, T, pos, seq);
        add_into(ctx, d, MOE_BUF_X, MOE_BUF_TMP, NULL, T, D);
        norm(ctx, &L->ffn_norm, MOE_BUF_X, T, D, D, MOE_BUF_H);
        ffn(ctx, il, T);
        add_into(ctx, d, MOE_BUF_X, MOE_BUF_TMP, NULL, T, D);
    }
    output(ctx, T);
    for (int dd = 0; dd < m->n_dev; dd++) /* every queued step is done when decode returns */
        if (ctx->dev[dd].active)
            BE(ctx, dd)->ops->synchronize(BE(ctx, dd));
    const double total = moe_now_ms() - t0;
    ctx->perf.other_ms += total - (ctx->perf.experts_ms + ctx->perf.copy_ms - busy0);
    ctx->perf.n_decodes++;
    ctx->perf.n_tokens += T;
    (void)err;
    return MOE_OK;
}

void moe_context_perf(const moe_context *ctx, moe_perf *out) { *out = ctx->perf; }

void moe_context_perf_reset(moe_context *ctx) { memset(&ctx->perf, 0, sizeof ctx->perf); }

void moe_context_kv_shift(moe_context *ctx) {
    BE(ctx, 0)->ops->kv_shift(BE(ctx, 0), &ctx->kv, ctx->model);
}

void moe_context_set_route_observer(moe_context *ctx, moe_route_observer fn, void *user) {
    ctx->route_observer = fn;
    ctx->route_observer_user = fn ? user : NULL;
}

void moe_context_set_matmul_observer(moe_context *ctx, moe_matmul_observer fn, void *user) {
    ctx->observer = fn;
    ctx->observer_user = fn ? user : NULL;
}
