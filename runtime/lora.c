/* LoRA adapters: loading into the model's cache, the context's applied list,
 * and the low-rank terms of the graph (lora.h). */
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "formats/gguf/gguf.h"
#include "formats/base/log.h"
#include "runtime/lora.h"

#define COUNT_ONE(f) +1
enum { LAYER_WEIGHTS = 0 MOE_LAYER_WEIGHTS(COUNT_ONE) };
#undef COUNT_ONE
/* every weight field of moe_layer sits in one run from offset 0 */
_Static_assert(offsetof(moe_layer, down_shexp) == (LAYER_WEIGHTS - 1) * sizeof(moe_weight),
               "moe_layer's weights must be consecutive");
_Static_assert(offsetof(moe_layer, attn_norm) == 0, "moe_layer starts with its weights");

int64_t moe_lora_n_slots(const moe_model *m) { return 2 + m->hp.n_layer * LAYER_WEIGHTS; }

int64_t moe_lora_slot(const moe_model *m, const moe_weight *w) {
    if (w == &m->tok_embd)
        return 0;
    if (w == &m->output)
        return 1;
    const char *p = (const char *)w, *l0 = (const char *)m->layers;
    if (!m->layers || p < l0 || p >= l0 + (size_t)m->hp.n_layer * sizeof(moe_layer))
        return -1;
    const size_t off = (size_t)(p - l0);
    const size_t il = off / sizeof(moe_layer), in = off % sizeof(moe_layer);
    if (in % sizeof(moe_weight) || in / sizeof(moe_weight) >= LAYER_WEIGHTS)
        return -1;
    return 2 + (int64_t)il * LAYER_WEIGHTS + (int64_t)(in / sizeof(moe_weight));
}

static moe_weight *slot_weight(moe_model *m, int64_t slot) {
    if (slot == 0)
        return &m->tok_embd;
    if (slot == 1)
        return &m->output;
    slot -= 2;
    return (moe_weight *)&m->layers[slot / LAYER_WEIGHTS] + slot % LAYER_WEIGHTS;
}

/* ---- arithmetic
 * ---------------------------------------------------------------------------
 */

static float dot(const float *a, const float *b, int64_t n) {
    float s[8] = {0};
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        for (int j = 0; j < 8; j++)
            s[j] += a[i + j] * b[i + j];
    for (; i < n; i++)
        s[0] += a[i] * b[i];
    return ((s[0] + s[4]) + (s[1] + s[5])) + ((s[2] + s[6]) + (s[3] + s[7]));
}

void moe_lora_row(const moe_lora_mat *m, int64_t e, const float *x, int64_t n_in, int64_t n_out,
                  float *y, float *tmp) {
    const int64_t r = m->r;
    const float *A = m->a + e * r * n_in, *B = m->b + e * n_out * r;
    for (int64_t k = 0; k < r; k++)
        tmp[k] = dot(A + k * n_in, x, n_in);
    for (int64_t o = 0; o < n_out; o++)
        y[o] += m->s * dot(B + o * r, tmp, r);
}

void moe_lora_rows(const moe_lora_ffn *l, const moe_lora_mat *ms, int64_t e, const float *x,
                   int64_t n, int64_t n_in, int64_t n_out, float *y, int nth) {
    if (!l)
        return;
    for (int32_t i = 0; i < l->n; i++) {
        if (!ms[i].a)
            continue;
        float *tmp = l->tmp;
        const int64_t stride = l->r_max;
#pragma omp parallel for num_threads(nth < 1 ? 1 : nth) schedule(static) if (n >= 4)
        for (int64_t r = 0; r < n; r++)
            moe_lora_row(&ms[i], e, x + r * n_in, n_in, n_out, y + r * n_out, tmp + r * stride);
    }
}

static float eff_scale(const moe_lora_adapter *a, float scale, int32_t r) {
    return a->alpha != 0.0f ? scale * a->alpha / (float)r : scale;
}

void moe_lora_dense(moe_context *ctx, const moe_weight *w, const float *x, int64_t T, float *y) {
    if (!ctx->n_lora)
        return;
    const int64_t slot = moe_lora_slot(ctx->model, w);
    if (slot < 0)
        return;
    const int64_t n_in = w->ne[0], n_out = w->ne[1];
    for (int32_t i = 0; i < ctx->n_lora; i++) {
        const moe_lora_adapter *ad = ctx->lora[i].adapter;
        const moe_lora_factors *f = &ad->slots[slot];
        if (!f->a)
            continue;
        const moe_lora_mat mat = {
            .a = f->a, .b = f->b, .r = f->r, .s = eff_scale(ad, ctx->lora[i].scale, f->r)};
        float *tmp = ctx->lora_tmp;
        const int32_t r_max = ctx->lora_r_max;
#pragma omp parallel for num_threads(ctx->n_threads) schedule(static) if (T >= 4)
        for (int64_t t = 0; t < T; t++)
            moe_lora_row(&mat, 0, x + t * n_in, n_in, n_out, y + t * n_out, tmp + t * r_max);
    }
}

static moe_lora_mat term(const moe_context *ctx, int32_t i, const moe_weight *w) {
    const moe_lora_adapter *ad = ctx->lora[i].adapter;
    const int64_t slot = w && w->data ? moe_lora_slot(ctx->model, w) : -1;
    if (slot < 0 || !ad->slots[slot].a)
        return (moe_lora_mat){0};
    const moe_lora_factors *f = &ad->slots[slot];
    return (moe_lora_mat){
        .a = f->a, .b = f->b, .r = f->r, .s = eff_scale(ad, ctx->lora[i].scale, f->r)};
}

const moe_lora_ffn *moe_lora_ffn_terms(moe_context *ctx, const moe_weight *gate,
                                       const moe_weight *up, const moe_weight *down,
                                       moe_lora_ffn *out) {
    if (!ctx->n_lora)
        return NULL;
    bool any = false;
    out->n = ctx->n_lora;
    out->tmp = ctx->lora_tmp;
    out->r_max = ctx->lora_r_max;
    for (int32_t i = 0; i < ctx->n_lora; i++) {
        out->gate[i] = term(ctx, i, gate);
        out->up[i] = term(ctx, i, up);
        out->down[i] = term(ctx, i, down);
        any |= out->gate[i].a || out->up[i].a || out->down[i].a;
    }
    return any ? out : NULL;
}

void moe_lora_embed(moe_context *ctx, int32_t T, const moe_token *tokens, float *x_rows) {
    const int64_t D = ctx->model->hp.n_embd;
    for (int32_t i = 0; i < ctx->n_lora; i++) {
        const moe_lora_adapter *ad = ctx->lora[i].adapter;
        const moe_lora_factors *f = &ad->slots[0];
        if (!f->a)
            continue;
        const float s = eff_scale(ad, ctx->lora[i].scale, f->r);
        for (int32_t t = 0; t < T; t++) { /* A's row of the token is already A x */
            const float *a = f->a + (int64_t)tokens[t] * f->r;
            float *x = x_rows + t * D;
            for (int64_t d = 0; d < D; d++)
                x[d] += s * dot(f->b + d * f->r, a, f->r);
        }
    }
}

/* ---- loading
 * ------------------------------------------------------------------------------
 */

static moe_status check_str_key(const moe_gguf *g, const char *key, const char *want,
                                moe_err *err) {
    const char *v;
    MOE_TRY(moe_gguf_get_str(g, key, &v, err));
    MOE_FAIL_IF(strcmp(v, want) != 0, err, MOE_ERR_FORMAT, "key '%s' is '%s', not '%s'", key, v,
                want);
    return MOE_OK;
}

static moe_status check_header(const moe_model *m, const moe_gguf *g, float *alpha, moe_err *err) {
    const char *arch;
    MOE_TRY(check_str_key(g, "general.type", "adapter", err));
    MOE_TRY(check_str_key(g, "adapter.type", "lora", err));
    MOE_TRY(moe_gguf_get_str(g, "general.architecture", &arch, err));
    MOE_FAIL_IF(strcmp(arch, m->arch->name) != 0, err, MOE_ERR_UNSUPPORTED,
                "the adapter is for architecture '%s', the model is '%s'", arch, m->arch->name);
    MOE_FAIL_IF(moe_gguf_find_key(g, "adapter.lora.alpha") < 0, err, MOE_ERR_FORMAT,
                "missing key 'adapter.lora.alpha' (the LoRA alpha)");
    double a;
    MOE_TRY(moe_gguf_get_float(g, "adapter.lora.alpha", &a, err));
    *alpha = (float)a;
    return MOE_OK;
}

static bool has_suffix(const char *s, const char *suf) {
    size_t n = strlen(s), k = strlen(suf);
    return n >= k && !strcmp(s + n - k, suf);
}

/* The slot whose weight is called base, or -1 (load time only). */
static int64_t find_slot(moe_model *m, const char *base) {
    for (int64_t s = 0; s < moe_lora_n_slots(m); s++) {
        const moe_weight *w = slot_weight(m, s);
        if (w->data && w->name && !strcmp(w->name, base))
            return s;
    }
    return -1;
}

/* Pairs every tensor with its base weight's slot: ia/ib[slot] = tensor index.
 */
static moe_status pair_tensors(moe_model *m, const moe_gguf *g, int64_t *ia, int64_t *ib,
                               moe_err *err) {
    for (uint64_t i = 0; i < g->n_tensors; i++) {
        const char *name = g->tensors[i].name;
        bool is_a = has_suffix(name, ".lora_a");
        if (!is_a && !has_suffix(name, ".lora_b")) {
            if (has_suffix(name, "_norm.weight")) /* llama.cpp ignores these */
                continue;
            return moe_fail(err, MOE_ERR_FORMAT,
                            "tensor '%s' has an unexpected suffix (want .lora_a or .lora_b)", name);
        }
        char base[MOE_GGUF_MAX_NAME];
        size_t n = strlen(name) - strlen(".lora_a");
        memcpy(base, name, n);
        base[n] = '\0';
        int64_t s = find_slot(m, base);
        MOE_FAIL_IF(s < 0, err, MOE_ERR_UNSUPPORTED, "tensor '%s': the model has no weight '%s'",
                    name, base);
        const moe_weight *w = slot_weight(m, s);
        MOE_FAIL_IF(w->ne[1] == 1 && s != 0, err, MOE_ERR_UNSUPPORTED,
                    "tensor '%s': '%s' is not a matrix product", name, base);
        (is_a ? ia : ib)[s] = (int64_t)i;
    }
    return MOE_OK;
}

static moe_status check_pair(const moe_weight *w, bool embd, const moe_gguf_tensor *A,
                             const moe_gguf_tensor *B, moe_err *err) {
    const moe_type_traits *ta = moe_type_get(A->type), *tb = moe_type_get(B->type);
    MOE_FAIL_IF(!ta || !ta->to_f32 || !tb || !tb->to_f32, err, MOE_ERR_UNSUPPORTED,
                "tensor '%s': factor type %s cannot be decoded",
                (!ta || !ta->to_f32) ? A->name : B->name,
                (!ta || !ta->to_f32) ? moe_type_name(A->type) : moe_type_name(B->type));
    MOE_FAIL_IF(A->ne[3] != 1 || B->ne[3] != 1 || A->ne[2] != w->ne[2] || B->ne[2] != w->ne[2], err,
                MOE_ERR_UNSUPPORTED,
                "tensors '%s' / '%s': %lld / %lld experts, the weight has %lld", A->name, B->name,
                (long long)A->ne[2], (long long)B->ne[2], (long long)w->ne[2]);
    if (embd) {
        MOE_FAIL_IF(A->ne[0] != B->ne[0], err, MOE_ERR_UNSUPPORTED,
                    "tensors '%s' / '%s': ranks %lld and %lld differ", A->name, B->name,
                    (long long)A->ne[0], (long long)B->ne[0]);
        MOE_FAIL_IF(B->ne[1] != w->ne[0] || A->ne[1] != w->ne[1], err, MOE_ERR_UNSUPPORTED,
                    "tensors '%s' / '%s': shapes [%lld, %lld] / [%lld, %lld] do "
                    "not fit '%s' "
                    "[%lld, %lld]",
                    A->name, B->name, (long long)A->ne[0], (long long)A->ne[1], (long long)B->ne[0],
                    (long long)B->ne[1], w->name, (long long)w->ne[0], (long long)w->ne[1]);
        return MOE_OK;
    }
    MOE_FAIL_IF(A->ne[1] != B->ne[0], err, MOE_ERR_UNSUPPORTED,
                "tensors '%s' / '%s': ranks %lld and %lld differ (is lora_a transposed?)", A->name,
                B->name, (long long)A->ne[1], (long long)B->ne[0]);
    MOE_FAIL_IF(A->ne[0] != w->ne[0] || B->ne[1] != w->ne[1], err, MOE_ERR_UNSUPPORTED,
                "tensors '%s' / '%s': shapes [%lld, %lld] / [%lld, %lld] do not fit '%s' "
                "[%lld, %lld]",
                A->name, B->name, (long long)A->ne[0], (long long)A->ne[1], (long long)B->ne[0],
                (long long)B->ne[1], w->name, (long long)w->ne[0], (long long)w->ne[1]);
    return MOE_OK;
}

static int64_t n_elems(const moe_gguf_tensor *t) {
    return t->ne[0] * t->ne[1] * t->ne[2] * t->ne[3];
}

/* Reads tensor t of f and decodes it into dst (F32). */
static moe_status read_f32(const moe_gguf_file *f, const moe_gguf_tensor *t, float *dst,
                           uint8_t *buf, moe_err *err) {
    MOE_TRY(moe_gguf_file_read(f, f->g->data_offset + t->offset, buf, (size_t)t->nbytes, err));
    moe_type_get(t->type)->to_f32(buf, dst, t->ne[0], n_elems(t) / t->ne[0]);
    return MOE_OK;
}

/* Validates every pair, then reads the factors into ad->data. */
static moe_status load_factors(moe_lora_adapter *ad, const moe_gguf_file *f, const int64_t *ia,
                               const int64_t *ib, moe_err *err) {
    moe_model *m = ad->model;
    const moe_gguf *g = f->g;
    const int64_t n_slots = moe_lora_n_slots(m);
    uint64_t floats = 0, max_bytes = 0;
    for (int64_t s = 0; s < n_slots; s++) {
        if (ia[s] < 0 && ib[s] < 0)
            continue;
        const moe_weight *w = slot_weight(m, s);
        MOE_FAIL_IF(ia[s] < 0 || ib[s] < 0, err, MOE_ERR_FORMAT,
                    "weight '%s' has only one LoRA factor (%s missing)", w->name,
                    ia[s] < 0 ? "lora_a" : "lora_b");
        const moe_gguf_tensor *A = &g->tensors[ia[s]], *B = &g->tensors[ib[s]];
        MOE_TRY(check_pair(w, s == 0, A, B, err));
        floats += (uint64_t)(n_elems(A) + n_elems(B));
        max_bytes = A->nbytes > max_bytes ? A->nbytes : max_bytes;
        max_bytes = B->nbytes > max_bytes ? B->nbytes : max_bytes;
        ad->n_pairs++;
    }
    MOE_FAIL_IF(!ad->n_pairs, err, MOE_ERR_FORMAT, "the adapter has no LoRA tensors");
    ad->bytes = floats * sizeof(float);
    ad->data = malloc((size_t)ad->bytes);
    uint8_t *buf = malloc((size_t)max_bytes);
    moe_status st = ad->data && buf ? MOE_OK
                                    : moe_fail(err, MOE_ERR_NOMEM,
                                               "out of memory for %.1f MB "
                                               "of LoRA factors",
                                               (double)ad->bytes / 1e6);
    float *p = ad->data;
    for (int64_t s = 0; s < n_slots && st == MOE_OK; s++) {
        if (ia[s] < 0)
            continue;
        const moe_gguf_tensor *A = &g->tensors[ia[s]], *B = &g->tensors[ib[s]];
        moe_lora_factors *fs = &ad->slots[s];
        fs->r = (int32_t)(s == 0 ? A->ne[0] : A->ne[1]);
        fs->a = p;
        st = read_f32(f, A, p, buf, err);
        p += n_elems(A);
        fs->b = p;
        if (st == MOE_OK)
            st = read_f32(f, B, p, buf, err);
        p += n_elems(B);
        ad->r_max = fs->r > ad->r_max ? fs->r : ad->r_max;
    }
    free(buf);
    return st;
}

static void destroy(moe_lora_adapter *ad) {
    free(ad->data);
    free(ad->slots);
    free(ad);
}

moe_status moe_lora_load(moe_model *model, const char *path, moe_lora_adapter **out, moe_err *err) {
    *out = NULL;
    moe_gguf_file *f = NULL;
    MOE_TRY(moe_gguf_file_open(path, false, &f, err));
    const int64_t n_slots = moe_lora_n_slots(model);
    moe_lora_adapter *ad = calloc(1, sizeof *ad);
    int64_t *idx = malloc((size_t)(2 * n_slots) * sizeof *idx);
    moe_status st = MOE_OK;
    if (!ad || !idx || !(ad->slots = calloc((size_t)n_slots, sizeof *ad->slots)))
        st = moe_fail(err, MOE_ERR_NOMEM, "out of memory");
    if (st == MOE_OK) {
        ad->model = model;
        for (int64_t i = 0; i < 2 * n_slots; i++)
            idx[i] = -1;
        st = check_header(model, f->g, &ad->alpha, err);
    }
    if (st == MOE_OK)
        st = pair_tensors(model, f->g, idx, idx + n_slots, err);
    if (st == MOE_OK)
        st = load_factors(ad, f, idx, idx + n_slots, err);
    free(idx);
    moe_gguf_file_close(f); /* nothing reads the file again */
    if (st != MOE_OK) {
        if (ad)
            destroy(ad);
        if (!strstr(err->msg, path))
            moe_err_prefix(err, "%s", path);
        return st;
    }
    ad->next = model->lora;
    model->lora = ad;
    MOE_INFO("%s: LoRA adapter on %lld weights, rank <= %d, alpha %g, %.2f MB", path,
             (long long)ad->n_pairs, ad->r_max, (double)ad->alpha, (double)ad->bytes / 1e6);
    *out = ad;
    return MOE_OK;
}

static void unlink_destroy(moe_lora_adapter *ad) {
    for (moe_lora_adapter **p = &ad->model->lora; *p; p = &(*p)->next)
        if (*p == ad) {
            *p = ad->next;
            break;
        }
    destroy(ad);
}

void moe_lora_free(moe_lora_adapter *ad) {
    if (!ad)
        return;
    if (ad->n_refs > 0)
        ad->orphan = true; /* the last context to let go frees it */
    else
        unlink_destroy(ad);
}

void moe_lora_free_all(moe_model *m) {
    while (m->lora) {
        moe_lora_adapter *ad = m->lora;
        m->lora = ad->next;
        destroy(ad);
    }
}

/* ---- the context's applied list
 * ------------------------------------------------------------ */

moe_status moe_lora_apply(moe_context *ctx, moe_lora_adapter *ad, float scale, moe_err *err) {
    MOE_FAIL_IF(!ad || ad->model != ctx->model || ad->orphan, err, MOE_ERR_USAGE,
                "the LoRA adapter does not belong to this context's model");
    for (int32_t i = 0; i < ctx->n_lora; i++)
        if (ctx->lora[i].adapter == ad) {
            ctx->lora[i].scale = scale;
            return MOE_OK;
        }
    for (int d = 0; d < ctx->model->n_dev; d++) /* the terms are computed by the host */
        MOE_FAIL_IF(ctx->dev[d].active && !ctx->model->dev[d].ops->host_memory, err,
                    MOE_ERR_UNSUPPORTED, "LoRA adapters need every weight in host memory, but "
                    "the model is placed on %s too", ctx->model->dev[d].info.name);
    MOE_FAIL_IF(ctx->model->expert_split, err, MOE_ERR_UNSUPPORTED,
                "LoRA adapters cannot be applied while routed experts are split between "
                "devices (-ot ...:experts=)");
    MOE_FAIL_IF(ctx->n_lora >= MOE_LORA_MAX, err, MOE_ERR_USAGE,
                "at most %d LoRA adapters can be applied at once", MOE_LORA_MAX);
    /* per-row scratch for the largest step: T tokens, or T*K expert slots */
    const int64_t K = ctx->model->hp.n_expert_used > 1 ? ctx->model->hp.n_expert_used : 1;
    const int64_t need = (int64_t)ctx->params.n_batch * K * ad->r_max;
    if (need > ctx->lora_tmp_cap) {
        float *nt = realloc(ctx->lora_tmp, (size_t)need * sizeof(float));
        MOE_FAIL_IF(!nt, err, MOE_ERR_NOMEM, "out of memory for LoRA scratch");
        ctx->lora_tmp = nt;
        ctx->lora_tmp_cap = need;
    }
    if (ad->r_max > ctx->lora_r_max)
        ctx->lora_r_max = ad->r_max;
    ctx->lora[ctx->n_lora++] = (moe_lora_applied){.adapter = ad, .scale = scale};
    ad->n_refs++;
    return MOE_OK;
}

static void release(moe_lora_adapter *ad) {
    if (--ad->n_refs == 0 && ad->orphan)
        unlink_destroy(ad);
}

moe_status moe_lora_remove(moe_context *ctx, moe_lora_adapter *ad, moe_err *err) {
    for (int32_t i = 0; i < ctx->n_lora; i++) {
        if (ctx->lora[i].adapter != ad)
            continue;
        memmove(&ctx->lora[i], &ctx->lora[i + 1],
                (size_t)(ctx->n_lora - i - 1) * sizeof ctx->lora[0]);
        ctx->n_lora--;
        release(ad);
        return MOE_OK;
    }
    return moe_fail(err, MOE_ERR_USAGE, "the LoRA adapter is not applied to this context");
}

void moe_lora_clear(moe_context *ctx) {
    while (ctx->n_lora > 0)
        release(ctx->lora[--ctx->n_lora].adapter);
}

int32_t moe_lora_count(const moe_context *ctx) { return ctx->n_lora; }
