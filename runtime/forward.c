/* The forward pass: one generic transformer block for every architecture,
 * switched by the arch table (q/k norms, biases, MLA, MoE routing, shared
 * experts). Steps run per layer on explicit activation buffers (ctx->s), so a
 * scheduler can later place each step on a device. Shape alphabet: D n_embd,
 * T tokens, H/Hkv heads, dk/dv head sizes, E experts, K used, Fe expert width. */
#include <math.h>
#include <string.h>

#include "formats/fp16.h"
#include "runtime/context.h"
#include "runtime/cpu_ops.h"

/* Hands the activations of one weight product to the context's observer. */
static void observe(moe_context *ctx, const moe_weight *w, int64_t e, const float *x, int64_t T) {
    if (ctx->observer)
        ctx->observer(ctx->observer_user, w->name, (int32_t)e, x, w->ne[0], T);
}

/* Dense weights: llama.cpp's mul_mat order (GEMM for batches). */
static void matmul(moe_context *ctx, const moe_weight *w, int64_t e, const float *x, int64_t T,
                   float *y) {
    observe(ctx, w, -1, x, T);
    moe_cpu_matmul(w, e, x, T, y, ctx->s.mm, ctx->n_threads, MOE_DOT_GEMM);
}

void moe_context_set_matmul_observer(moe_context *ctx, moe_matmul_observer fn, void *user) {
    ctx->observer = fn;
    ctx->observer_user = fn ? user : NULL;
}


static float round_f16(float v) { return moe_f16_to_f32(moe_f32_to_f16(v)); }

/* ---- attention ----------------------------------------------------------------------- */

/* out[h][d] = sum over cells c < n_kv of p[h][c] * v[c][h/group][d], in the
 * lane order of llama.cpp's product (see attend_token). lanes holds 64
 * accumulators per output value. */
static void weighted_sum(moe_context *ctx, int64_t il, int32_t pos, int32_t seq,
                         const float *scores, float *vrow, float *lanes, float *out, bool batched) {
    const moe_hparams *hp = &ctx->model->hp;
    const moe_kv_cache *kv = &ctx->kv;
    const int64_t H = hp->n_head, dv = hp->head_dim_v, group = H / hp->n_head_kv;
    const int32_t n_kv = ctx->n_kv;
    const int W = batched ? 16 : 64;             /* lanes per output */
    const int32_t full = batched ? n_kv : n_kv & ~63; /* VEC sums the rest in double */
    double tail[1024];
    const bool big = H * dv > 1024;
    memset(lanes, 0, (size_t)(W * H * dv) * sizeof *lanes);
    for (int64_t i = 0; i < H * dv && !big; i++)
        tail[i] = 0.0;
    for (int32_t c = 0; c < n_kv; c++) {
        const moe_kv_cell *cell = &kv->cells[c];
        if (cell->pos < 0 || cell->pos > pos || !(cell->seqs >> seq & 1))
            continue; /* weight 0: adds nothing */
        moe_kv_load_v(kv, il, c, vrow);
        for (int64_t h = 0; h < H; h++) {
            const float p = scores[h * n_kv + c];
            const float *vh = vrow + (h / group) * dv;
            if (c < full) {
                float *acc = lanes + h * dv * W + c % W;
                for (int64_t d = 0; d < dv; d++)
                    acc[d * W] = fmaf(p, vh[d], acc[d * W]);
            } else {
                /* the VEC tail: float products summed in double */
                double *tl = big ? (double *)(lanes + W * H * dv) : tail;
                for (int64_t d = 0; d < dv; d++)
                    tl[h * dv + d] += (double)(p * vh[d]);
            }
        }
    }
    const double *tl = big ? (const double *)(lanes + W * H * dv) : tail;
    for (int64_t i = 0; i < H * dv; i++) {
        float *acc = lanes + i * W;
        if (batched) {
            out[i] = moe_reduce16(acc);
            continue;
        }
        for (int l = 0; l < 16; l++) { /* fold the four 16-lane accumulators */
            acc[l] += acc[32 + l];
            acc[16 + l] += acc[48 + l];
            acc[l] += acc[16 + l];
        }
        out[i] = (float)((double)moe_reduce16(acc) + tl[i]);
    }
}

/* Causal attention of token t against every visible cell of its sequence,
 * all heads: scores = kq_scale * q·k, softmax, weighted sum of v. llama.cpp
 * rounds q to the K cache's type (F16) for the dot product and the softmax
 * weights to the V cache's type before the weighted sum; so do we. Both
 * products follow llama.cpp's order: GEMM for a batch, VEC for one token; the
 * weighted sum runs over cell indices (hidden cells weigh 0 and add nothing),
 * so cell c sits in lane c % 16 (GEMM) or c % 64 (VEC). */
static void attend_token(moe_context *ctx, int64_t il, int32_t pos, int32_t seq, const float *q,
                         float *out, float *scores, float *krow, float *vrow, float *qr,
                         float *lanes, bool batched) {
    const moe_model *m = ctx->model;
    const moe_hparams *hp = &m->hp;
    const moe_kv_cache *kv = &ctx->kv;
    const int64_t H = hp->n_head, Hkv = hp->n_head_kv, dk = hp->head_dim_k;
    const int64_t group = H / Hkv;
    const int32_t n_kv = ctx->n_kv; /* cells llama.cpp would attend over, hidden ones masked */
    const bool kf16 = kv->type_k == MOE_TYPE_F16, vf16 = kv->type_v == MOE_TYPE_F16;
    for (int64_t i = 0; i < H * dk; i++)
        qr[i] = kf16 ? round_f16(q[i]) : q[i];
    for (int32_t c = 0; c < n_kv; c++) {
        const moe_kv_cell *cell = &kv->cells[c];
        bool visible = cell->pos >= 0 && cell->pos <= pos && (cell->seqs >> seq & 1);
        if (visible)
            moe_kv_load_k(kv, il, c, krow);
        for (int64_t h = 0; h < H; h++)
            scores[h * n_kv + c] =
                visible ? (batched ? moe_dot_gemm : moe_dot_vec)(qr + h * dk, krow + (h / group) * dk, dk) *
                              m->kq_scale
                        : -INFINITY;
    }
    for (int64_t h = 0; h < H; h++) {
        float *sh = scores + h * n_kv;
        moe_cpu_softmax(sh, n_kv);
        for (int32_t c = 0; c < n_kv && vf16; c++)
            sh[c] = round_f16(sh[c]);
    }
    weighted_sum(ctx, il, pos, seq, scores, vrow, lanes, out, batched);
}

/* Floats of per-thread attention workspace: scores for every head and cell,
 * one K row, one V row, the rounded q, and 16 lanes per output value. */
static int64_t even(int64_t n) { return (n + 1) & ~(int64_t)1; }

int64_t moe_attention_workspace(const moe_hparams *hp, int64_t row_k, int64_t row_v,
                                int32_t n_cells) {
    /* 64 lanes per output value, plus room for a double tail per value */
    int64_t qd = hp->n_head * hp->head_dim_k, lanes = (64 + 2) * hp->n_head * hp->head_dim_v;
    return even(hp->n_head * n_cells) + even(row_k) + even(row_v) + even(qd) + even(lanes);
}

/* Stores the batch's K/V rows, then attends token by token (tokens of one
 * batch see each other causally through the cache); tokens are split into
 * contiguous chunks, one per thread. */
static void attend_batch(moe_context *ctx, int64_t il, int32_t T, const int32_t *pos,
                         const int32_t *seq) {
    moe_scratch *s = &ctx->s;
    const moe_hparams *hp = &ctx->model->hp;
    const int64_t qd = hp->n_head * hp->head_dim_k, od = hp->n_head * hp->head_dim_v;
    const int64_t kd = ctx->kv.row_k, vd = ctx->kv.row_v;
    for (int32_t t = 0; t < T; t++)
        moe_kv_store(&ctx->kv, il, s->cells[t], s->k + t * kd, s->v + t * vd);
    const int64_t ws = moe_attention_workspace(hp, kd, vd, ctx->kv.size);
    /* llama.cpp attends over the used cells rounded up to 32 (cache padding) */
    int32_t used_end = 0;
    for (int32_t c = 0; c < ctx->kv.size; c++)
        if (ctx->kv.cells[c].pos >= 0)
            used_end = c + 1;
    ctx->n_kv = (used_end + 31) / 32 * 32 < ctx->kv.size ? (used_end + 31) / 32 * 32 : ctx->kv.size;
    int nth = ctx->n_threads < T ? ctx->n_threads : T;
#pragma omp parallel for num_threads(nth) schedule(static)
    for (int k = 0; k < nth; k++) {
        float *scores = s->attn_ws + k * ws;
        float *krow = scores + even(hp->n_head * ctx->kv.size);
        float *vrow = krow + even(kd);
        float *qr = vrow + even(vd);
        float *lanes = qr + even(qd);
        for (int32_t t = (int32_t)((int64_t)T * k / nth); t < (int32_t)((int64_t)T * (k + 1) / nth); t++)
            attend_token(ctx, il, pos[t], seq[t], s->q + t * qd, s->att + t * od, scores, krow,
                         vrow, qr, lanes, T > 1);
    }
}

/* q, k, v for the llama / qwen2moe / qwen3moe / olmoe block. */
static void qkv_standard(moe_context *ctx, const moe_layer *L, int32_t T, const int32_t *pos) {
    moe_scratch *s = &ctx->s;
    const moe_hparams *hp = &ctx->model->hp;
    const int64_t H = hp->n_head, Hkv = hp->n_head_kv, dk = hp->head_dim_k, dv = hp->head_dim_v;
    matmul(ctx, &L->wq, 0, s->h, T, s->q);
    matmul(ctx, &L->wk, 0, s->h, T, s->k);
    matmul(ctx, &L->wv, 0, s->h, T, s->v);
    for (int32_t t = 0; t < T; t++) {
        float *q = s->q + t * H * dk, *k = s->k + t * Hkv * dk, *v = s->v + t * Hkv * dv;
        moe_cpu_add_bias(q, moe_weight_f32(&L->bq), H * dk);
        moe_cpu_add_bias(k, moe_weight_f32(&L->bk), Hkv * dk);
        moe_cpu_add_bias(v, moe_weight_f32(&L->bv), Hkv * dv);
        switch (ctx->model->arch->qk_norm) {
        case MOE_QK_NORM_FULL: /* olmoe: the whole projection, before splitting heads */
            moe_cpu_rms_norm(q, moe_weight_f32(&L->q_norm), H * dk, hp->rms_eps, q);
            moe_cpu_rms_norm(k, moe_weight_f32(&L->k_norm), Hkv * dk, hp->rms_eps, k);
            break;
        case MOE_QK_NORM_HEAD: /* qwen3moe: every head on its own */
            for (int64_t h = 0; h < H; h++)
                moe_cpu_rms_norm(q + h * dk, moe_weight_f32(&L->q_norm), dk, hp->rms_eps, q + h * dk);
            for (int64_t h = 0; h < Hkv; h++)
                moe_cpu_rms_norm(k + h * dk, moe_weight_f32(&L->k_norm), dk, hp->rms_eps, k + h * dk);
            break;
        case MOE_QK_NORM_NONE:
            break;
        }
        moe_cpu_rope(q, H, dk, pos[t], &ctx->model->rope);
        moe_cpu_rope(k, Hkv, dk, pos[t], &ctx->model->rope);
    }
}

/* deepseek2 multi-head latent attention, computed the reference way: the
 * latent c is expanded by attn_kv_b into per-head K (nope part) and V; the
 * rope part of K is one shared head (model.md §2.7). */
static void qkv_mla(moe_context *ctx, const moe_layer *L, int32_t T, const int32_t *pos) {
    moe_scratch *s = &ctx->s;
    const moe_hparams *hp = &ctx->model->hp;
    const int64_t H = hp->n_head, dk = hp->head_dim_k, dv = hp->head_dim_v;
    const int64_t rope = hp->n_rot, nope = dk - rope, rkv = hp->kv_lora_rank;
    if (L->wq_a.data) {
        matmul(ctx, &L->wq_a, 0, s->h, T, s->qa);
        for (int32_t t = 0; t < T; t++)
            moe_cpu_rms_norm(s->qa + t * hp->q_lora_rank, moe_weight_f32(&L->q_a_norm),
                             hp->q_lora_rank, hp->rms_eps, s->qa + t * hp->q_lora_rank);
        matmul(ctx, &L->wq_b, 0, s->qa, T, s->q);
    } else {
        matmul(ctx, &L->wq, 0, s->h, T, s->q);
    }
    matmul(ctx, &L->wkv_a_mqa, 0, s->h, T, s->kvpe);
    for (int32_t t = 0; t < T; t++)
        moe_cpu_rms_norm(s->kvpe + t * (rkv + rope), moe_weight_f32(&L->kv_a_norm), rkv,
                         hp->rms_eps, s->kvc + t * rkv);
    matmul(ctx, &L->wkv_b, 0, s->kvc, T, s->kv);
    for (int32_t t = 0; t < T; t++) {
        float *q = s->q + t * H * dk, *kpe = s->kvpe + t * (rkv + rope) + rkv;
        const float *kv = s->kv + t * H * (nope + dv);
        moe_cpu_rope(q + nope, H, dk, pos[t], &ctx->model->rope);
        moe_cpu_rope(kpe, 1, rope, pos[t], &ctx->model->rope);
        float *k = s->k + t * H * dk, *v = s->v + t * H * dv;
        for (int64_t h = 0; h < H; h++) {
            memcpy(k + h * dk, kv + h * (nope + dv), (size_t)nope * sizeof(float));
            memcpy(k + h * dk + nope, kpe, (size_t)rope * sizeof(float));
            memcpy(v + h * dv, kv + h * (nope + dv) + nope, (size_t)dv * sizeof(float));
        }
    }
}

static void attention(moe_context *ctx, int64_t il, int32_t T, const int32_t *pos,
                      const int32_t *seq) {
    const moe_layer *L = &ctx->model->layers[il];
    if (ctx->model->arch->mla)
        qkv_mla(ctx, L, T, pos);
    else
        qkv_standard(ctx, L, T, pos);
    attend_batch(ctx, il, T, pos, seq);
    matmul(ctx, &L->wo, 0, ctx->s.att, T, ctx->s.tmp);
}

/* ---- feed-forward ----------------------------------------------------------------------- */

/* out = down( silu(gate·x) * (up·x) ) for n rows of x (the SwiGLU FFN). */
static void swiglu(moe_context *ctx, const moe_weight *gate, const moe_weight *up,
                   const moe_weight *down, int64_t e, const float *x, int64_t n, float *g,
                   float *u, float *out, moe_dot_order order) {
    const int64_t eo = gate->ne[2] > 1 ? e : -1; /* stacked experts name their slice */
    observe(ctx, gate, eo, x, n);
    moe_cpu_matmul(gate, e, x, n, g, ctx->s.mm, ctx->n_threads, order);
    observe(ctx, up, eo, x, n);
    moe_cpu_matmul(up, e, x, n, u, ctx->s.mm, ctx->n_threads, order);
    const int64_t F = gate->ne[1];
    for (int64_t r = 0; r < n; r++)
        moe_cpu_silu(g + r * F, F);
    for (int64_t i = 0; i < n * F; i++)
        g[i] *= u[i];
    observe(ctx, down, eo, g, n);
    moe_cpu_matmul(down, e, g, n, out, ctx->s.mm, ctx->n_threads, order);
}

/* Descending exchange sort of the first k of n indices by value, strict '>'
 * as ggml's CPU argsort (ties keep the lower index first). */
static void top_k(const float *v, int64_t n, int64_t k, int32_t *idx) {
    int32_t all[512];
    for (int64_t i = 0; i < n; i++)
        all[i] = (int32_t)i;
    for (int64_t i = 0; i < k; i++)
        for (int64_t j = i + 1; j < n; j++)
            if (v[all[j]] > v[all[i]]) {
                int32_t tmp = all[i];
                all[i] = all[j];
                all[j] = tmp;
            }
    memcpy(idx, all, (size_t)k * sizeof *idx);
}

/* Router: probabilities, selection (with the exp_probs_b bias when present),
 * weights (renormalised and scaled per the arch). */
static void route(moe_context *ctx, const moe_layer *L, int32_t T) {
    moe_scratch *s = &ctx->s;
    const moe_model *m = ctx->model;
    const moe_hparams *hp = &m->hp;
    const int64_t E = hp->n_expert, K = hp->n_expert_used;
    matmul(ctx, &L->gate_inp, 0, s->h, T, s->router);
    const float *bias = moe_weight_f32(&L->exp_probs_b);
    for (int32_t t = 0; t < T; t++) {
        float *p = s->router + t * E;
        if (hp->gating == MOE_GATING_SIGMOID)
            for (int64_t e = 0; e < E; e++)
                p[e] = 1.0f / (1.0f + expf(-p[e]));
        else
            moe_cpu_softmax(p, E);
        float sel[512];
        for (int64_t e = 0; e < E; e++)
            sel[e] = bias ? p[e] + bias[e] : p[e];
        int32_t *ids = s->topk + t * K;
        float *w = s->topw + t * K;
        top_k(sel, E, K, ids);
        float sum = 0.0f;
        for (int64_t k = 0; k < K; k++)
            sum += w[k] = p[ids[k]];
        bool norm = m->arch->norm_w_key ? hp->expert_weights_norm : m->arch->norm_w;
        for (int64_t k = 0; k < K; k++) {
            if (norm)
                w[k] /= sum;
            if (m->arch->scale_w)
                w[k] *= hp->expert_weights_scale;
        }
    }
}

/* Routed experts: tokens are grouped per expert so each expert's rows are
 * decoded once per batch; outputs are summed per token in slot order. */
static void moe_ffn(moe_context *ctx, const moe_layer *L, int32_t T) {
    moe_scratch *s = &ctx->s;
    const moe_hparams *hp = &ctx->model->hp;
    const int64_t D = hp->n_embd, E = hp->n_expert, K = hp->n_expert_used;
    route(ctx, L, T);
    for (int64_t e = 0; e < E; e++) {
        int64_t n = 0;
        for (int32_t t = 0; t < T; t++)
            for (int64_t k = 0; k < K; k++)
                if (s->topk[t * K + k] == e) {
                    s->members[n] = (int32_t)(t * K + k);
                    memcpy(s->xe + n * D, s->h + t * D, (size_t)D * sizeof(float));
                    n++;
                }
        if (!n)
            continue;
        swiglu(ctx, &L->gate_exps, &L->up_exps, &L->down_exps, e, s->xe, n, s->ge, s->ue, s->oe,
               MOE_DOT_VEC);
        for (int64_t i = 0; i < n; i++)
            memcpy(s->slot_out + (int64_t)s->members[i] * D, s->oe + i * D, (size_t)D * sizeof(float));
    }
    for (int32_t t = 0; t < T; t++) {
        float *out = s->tmp + t * D;
        for (int64_t d = 0; d < D; d++)
            out[d] = s->slot_out[(t * K) * D + d] * s->topw[t * K];
        for (int64_t k = 1; k < K; k++)
            for (int64_t d = 0; d < D; d++)
                out[d] += s->slot_out[(t * K + k) * D + d] * s->topw[t * K + k];
    }
    if (!L->gate_shexp.data)
        return;
    swiglu(ctx, &L->gate_shexp, &L->up_shexp, &L->down_shexp, 0, s->h, T, s->ge, s->ue, s->oe,
           MOE_DOT_GEMM);
    const float *gin = moe_weight_f32(&L->gate_inp_shexp);
    if (gin)
        observe(ctx, &L->gate_inp_shexp, -1, s->h, T);
    for (int32_t t = 0; t < T; t++) {
        float g = 1.0f;
        if (gin) { /* qwen2moe: a scalar sigmoid gate per token */
            const float v = (T > 1 ? moe_dot_gemm : moe_dot_vec)(gin, s->h + t * D, D);
            /* llama.cpp computes this sigmoid as silu(v)/v */
            g = v / (1.0f + expf(-v)) / v;
        }
        for (int64_t d = 0; d < D; d++)
            s->tmp[t * D + d] += g * s->oe[t * D + d];
    }
}

static void ffn(moe_context *ctx, int64_t il, int32_t T) {
    const moe_layer *L = &ctx->model->layers[il];
    moe_scratch *s = &ctx->s;
    if (L->is_moe)
        moe_ffn(ctx, L, T);
    else
        swiglu(ctx, &L->ffn_gate, &L->ffn_up, &L->ffn_down, 0, s->h, T, s->ge, s->ue, s->tmp,
               MOE_DOT_GEMM);
}

/* ---- the pass ------------------------------------------------------------------------------- */

static void embed(moe_context *ctx, int32_t T, const moe_token *tokens) {
    const moe_weight *w = &ctx->model->tok_embd;
    const moe_type_traits *tr = moe_type_get(w->type);
    for (int32_t t = 0; t < T; t++)
        tr->to_f32(w->data + (uint64_t)tokens[t] * w->row_bytes, ctx->s.x + t * w->ne[0],
                   w->ne[0], 1);
}

static void add_residual(float *x, const float *y, int64_t n) {
    for (int64_t i = 0; i < n; i++)
        x[i] += y[i];
}

static void norm_rows(const float *x, const moe_weight *w, int32_t T, int64_t D, float eps,
                      float *out) {
    for (int32_t t = 0; t < T; t++)
        moe_cpu_rms_norm(x + t * D, moe_weight_f32(w), D, eps, out + t * D);
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
        norm_rows(s->x, &L->attn_norm, T, D, hp->rms_eps, s->h);
        attention(ctx, il, T, pos, seq);
        add_residual(s->x, s->tmp, T * D);
        norm_rows(s->x, &L->ffn_norm, T, D, hp->rms_eps, s->h);
        ffn(ctx, il, T);
        add_residual(s->x, s->tmp, T * D);
    }
    /* only the rows that asked for logits go through the output head */
    int32_t n = 0;
    for (int32_t t = 0; t < T; t++) {
        if (ctx->logit_row[t] < 0)
            continue;
        moe_cpu_rms_norm(s->x + t * D, moe_weight_f32(&m->output_norm), D, hp->rms_eps,
                         s->h + (int64_t)n * D);
        n++;
    }
    if (n)
        matmul(ctx, &m->output, 0, s->h, n, ctx->logits);
    (void)err;
    return MOE_OK;
}
