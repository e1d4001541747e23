/* Loading: open the files (or decompress a .gguf.zst), read the
 * hyper-parameters, check every tensor against the architecture's schema, and
 * bind each weight to its bytes. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "formats/base/checked.h"
#include "formats/base/cpu.h"
#include "formats/gguf/cursor.h"
#include "formats/base/log.h"
#include "formats/gguf/zstd_seekable.h"
#include "runtime/backend.h"
#include "runtime/device.h"
#include "runtime/lora.h"
#include "runtime/model.h"

/* Where tensor bytes come from: files (mapped or read) or one decompressed
 * buffer. */
enum { MAX_ZST_SHARDS = 256 };

typedef struct source {
    moe_gguf_set *set;      /* files */
    uint32_t n_mem;         /* or: parsed in-memory GGUFs (.gguf.zst, one per shard) */
    moe_gguf *mem_g[MAX_ZST_SHARDS];
    const uint8_t *mem[MAX_ZST_SHARDS];
    bool use_mmap;
} source;

typedef struct loader {
    moe_model *m;
    source src;
    const moe_model_params *params;
    moe_err *err;
    uint8_t **blocks;       /* owned allocations */
    size_t n_blocks, cap_blocks;
    bool warned_split;
} loader;

static const moe_gguf *first_gguf(const source *s) {
    return s->set ? s->set->files[0]->g : s->mem_g[0];
}

static void *own(loader *L, uint64_t bytes) {
    uint8_t **nb = moe_grow(L->blocks, &L->cap_blocks, L->n_blocks + 1, 64, sizeof *nb);
    if (!nb)
        return NULL;
    L->blocks = nb;
    void *p = malloc(bytes ? (size_t)bytes : 1);
    if (p) {
        L->blocks[L->n_blocks++] = p;
        L->m->owned_bytes += bytes;
    }
    return p;
}

/* ---- sources -------------------------------------------------------------------------- */

static moe_status open_zst_one(loader *L, const char *path) {
    moe_zstd_file *z;
    MOE_TRY(moe_zstd_open(path, &z, L->err));
    moe_status st = MOE_OK;
    uint64_t size = moe_zstd_size(z);
    uint8_t *buf = NULL;
    if (!moe_zstd_has_seek_table(z))
        st = moe_fail(L->err, MOE_ERR_UNSUPPORTED,
                      "%s has no seek table: decompress it with zstd -d or moe-repack first", path);
    else if (!(buf = own(L, size)))
        st = moe_fail(L->err, MOE_ERR_NOMEM, "%s: cannot hold %llu decompressed bytes", path,
                      (unsigned long long)size);
    if (st == MOE_OK) {
        MOE_INFO("%s: decompressing %.1f MB on %d threads", path, (double)size / 1e6,
                 L->params->n_threads);
        st = moe_zstd_decompress_all(z, buf, (size_t)size, L->params->n_threads, L->err);
    }
    moe_zstd_close(z);
    uint32_t k = L->src.n_mem;
    if (st == MOE_OK)
        st = moe_gguf_parse(buf, (size_t)size, size, &L->src.mem_g[k], L->err);
    if (st == MOE_OK) {
        L->src.mem[k] = buf;
        L->src.n_mem++;
    }
    return st;
}

/* A .gguf.zst, or every shard of a PREFIX-00001-of-0000N.gguf.zst set. */
static moe_status open_zst(loader *L, const char *path) {
    char plain[4096], prefix[4096], shard[4200];
    size_t n = strlen(path);
    int no = 0, count = 0;
    bool sharded = n > 4 && n - 4 < sizeof plain &&
                   (memcpy(plain, path, n - 4), plain[n - 4] = '\0',
                    moe_split_path_parse(plain, prefix, sizeof prefix, &no, &count));
    if (!sharded)
        return open_zst_one(L, path);
    MOE_FAIL_IF(no != 1, L->err, MOE_ERR_USAGE, "%s is shard %d of %d: open the first shard", path,
                no, count);
    MOE_FAIL_IF(count > MAX_ZST_SHARDS, L->err, MOE_ERR_UNSUPPORTED,
                "%s: %d compressed shards (at most %d)", path, count, MAX_ZST_SHARDS);
    for (int k = 1; k <= count; k++) {
        MOE_TRY(moe_split_path(shard, sizeof shard - 4, prefix, k, count, L->err));
        strcat(shard, ".zst");
        MOE_TRY(open_zst_one(L, shard));
    }
    return MOE_OK;
}

/* Stored checksums, when asked: every file, or the decompressed buffer. */
static moe_status verify(loader *L) {
    if (L->src.set) {
        for (uint32_t i = 0; i < L->src.set->n_files; i++) {
            moe_gguf_verify_result vr;
            MOE_TRY(moe_gguf_file_verify(L->src.set->files[i], false, &vr, L->err));
            if (!vr.had_checksums)
                MOE_WARN("%s has no stored checksums: nothing to verify",
                         L->src.set->files[i]->path);
        }
        return MOE_OK;
    }
    for (uint32_t f = 0; f < L->src.n_mem; f++) {
        const moe_gguf *g = L->src.mem_g[f];
        int64_t k = moe_gguf_find_key(g, MOE_GGUF_XXH3_KEY);
        if (k < 0) {
            MOE_WARN("the model has no stored checksums: nothing to verify");
            continue;
        }
        const moe_gguf_kv *kv = &g->kv[k];
        MOE_FAIL_IF(kv->type != MOE_GGUF_ARRAY || kv->elem_type != MOE_GGUF_U64 ||
                        kv->count != g->n_tensors,
                    L->err, MOE_ERR_FORMAT, "malformed %s key", MOE_GGUF_XXH3_KEY);
        for (uint64_t i = 0; i < g->n_tensors; i++) {
            const moe_gguf_tensor *t = &g->tensors[i];
            MOE_FAIL_IF(moe_xxh3(L->src.mem[f] + g->data_offset + t->offset, t->nbytes) !=
                            moe_load_le64(kv->raw + 12 + 8 * i),
                        L->err, MOE_ERR_INTEGRITY, "tensor '%s' fails its stored XXH3 checksum",
                        t->name);
        }
    }
    return MOE_OK;
}

/* Finds a tensor; sets *t and *data (NULL when absent). Without mmap the
 * bytes are read into memory we own. */
static moe_status find_tensor(loader *L, const char *name, const moe_gguf_tensor **t,
                              const uint8_t **data) {
    *t = NULL;
    *data = NULL;
    if (!L->src.set) {
        for (uint32_t f = 0; f < L->src.n_mem; f++) {
            int64_t i = moe_gguf_find_tensor(L->src.mem_g[f], name);
            if (i >= 0) {
                *t = &L->src.mem_g[f]->tensors[i];
                *data = L->src.mem[f] + L->src.mem_g[f]->data_offset + (*t)->offset;
                break;
            }
        }
        return MOE_OK;
    }
    int64_t i = moe_gguf_set_find(L->src.set, name);
    if (i < 0)
        return MOE_OK;
    const moe_gguf_file *f;
    *t = moe_gguf_set_tensor(L->src.set, (uint64_t)i, &f);
    if (f->map) {
        *data = f->map + f->g->data_offset + (*t)->offset;
        return MOE_OK;
    }
    uint8_t *buf = own(L, (*t)->nbytes);
    MOE_FAIL_IF(!buf, L->err, MOE_ERR_NOMEM, "out of memory reading '%s'", name);
    MOE_TRY(moe_gguf_file_read(f, f->g->data_offset + (*t)->offset, buf, (size_t)(*t)->nbytes,
                               L->err));
    *data = buf;
    return MOE_OK;
}

static bool set_lookup(const void *ctx, const char *name, uint32_t *n_dims) {
    const moe_gguf_set *set = ctx;
    int64_t i = moe_gguf_set_find(set, name);
    if (i >= 0)
        *n_dims = moe_gguf_set_tensor(set, (uint64_t)i, NULL)->n_dims;
    return i >= 0;
}

static bool mem_lookup(const void *ctx, const char *name, uint32_t *n_dims) {
    const source *src = ctx;
    for (uint32_t f = 0; f < src->n_mem; f++) {
        int64_t i = moe_gguf_find_tensor(src->mem_g[f], name);
        if (i >= 0) {
            *n_dims = src->mem_g[f]->tensors[i].n_dims;
            return true;
        }
    }
    return false;
}

/* ---- binding ------------------------------------------------------------------------------ */

static moe_weight *slot_of(moe_model *m, const moe_tensor_spec *s) {
    if (s->layer < 0) {
        switch (s->role) {
        case MOE_T_TOKEN_EMBD: return &m->tok_embd;
        case MOE_T_OUTPUT_NORM: return &m->output_norm;
        case MOE_T_OUTPUT: return &m->output;
        default: return NULL;
        }
    }
    moe_layer *l = &m->layers[s->layer];
    switch (s->role) {
    case MOE_T_ATTN_NORM: return &l->attn_norm;
    case MOE_T_ATTN_Q: return &l->wq;
    case MOE_T_ATTN_K: return &l->wk;
    case MOE_T_ATTN_V: return &l->wv;
    case MOE_T_ATTN_OUT: return &l->wo;
    case MOE_T_ATTN_Q_BIAS: return &l->bq;
    case MOE_T_ATTN_K_BIAS: return &l->bk;
    case MOE_T_ATTN_V_BIAS: return &l->bv;
    case MOE_T_ATTN_Q_NORM: return &l->q_norm;
    case MOE_T_ATTN_K_NORM: return &l->k_norm;
    case MOE_T_ATTN_Q_A: return &l->wq_a;
    case MOE_T_ATTN_Q_A_NORM: return &l->q_a_norm;
    case MOE_T_ATTN_Q_B: return &l->wq_b;
    case MOE_T_ATTN_KV_A_MQA: return &l->wkv_a_mqa;
    case MOE_T_ATTN_KV_A_NORM: return &l->kv_a_norm;
    case MOE_T_ATTN_KV_B: return &l->wkv_b;
    case MOE_T_ATTN_K_B: return &l->wk_b;
    case MOE_T_ATTN_V_B: return &l->wv_b;
    case MOE_T_FFN_NORM: return &l->ffn_norm;
    case MOE_T_FFN_GATE: return &l->ffn_gate;
    case MOE_T_FFN_DOWN: return &l->ffn_down;
    case MOE_T_FFN_UP: return &l->ffn_up;
    case MOE_T_FFN_GATE_INP: return &l->gate_inp;
    case MOE_T_EXP_PROBS_B: return &l->exp_probs_b;
    case MOE_T_FFN_GATE_EXPS: case MOE_T_FFN_GATE_EXP: return &l->gate_exps;
    case MOE_T_FFN_DOWN_EXPS: case MOE_T_FFN_DOWN_EXP: return &l->down_exps;
    case MOE_T_FFN_UP_EXPS: case MOE_T_FFN_UP_EXP: return &l->up_exps;
    case MOE_T_FFN_GATE_INP_SHEXP: return &l->gate_inp_shexp;
    case MOE_T_FFN_GATE_SHEXP: return &l->gate_shexp;
    case MOE_T_FFN_DOWN_SHEXP: return &l->down_shexp;
    case MOE_T_FFN_UP_SHEXP: return &l->up_shexp;
    default: return NULL;
    }
}

static void set_weight(moe_weight *w, const moe_tensor_spec *s, moe_type type,
                       const uint8_t *data, const int64_t ne[4]) {
    w->data = data;
    w->type = type;
    memcpy(w->ne, ne, sizeof w->ne);
    moe_type_row_size(type, ne[0], &w->row_bytes, NULL);
    w->expert_bytes = w->row_bytes * (uint64_t)ne[1];
    w->device = 0; /* the CPU until placement (device.h) */
    w->name = s->name;
}

/* ik's 2-D attn_k_b [nope, H*Rkv] / attn_v_b [Rkv, H*dv] hold the rows of
 * the 3-D [nope, Rkv, H] / [Rkv, dv, H] in the same order: both become H
 * matrices of ne[1] / H rows, one per head (what the products index). */
static void per_head_view(moe_weight *w, int64_t H) {
    if (w->ne[2] != 1)
        return;
    w->ne[1] /= H;
    w->ne[2] = H;
    w->expert_bytes = w->row_bytes * (uint64_t)w->ne[1];
}

/* Legacy layout: expert e of a family is copied into slot e of a stacked
 * buffer; the first expert fixes the type every other must share. */
static moe_status bind_split_expert(loader *L, moe_weight *w, const moe_tensor_spec *s,
                                    const moe_gguf_tensor *t, const uint8_t *data) {
    int64_t E = L->m->hp.n_expert;
    if (!w->data) {
        int64_t ne[4] = {t->ne[0], t->ne[1], E, 1};
        uint8_t *buf = own(L, t->nbytes * (uint64_t)E);
        MOE_FAIL_IF(!buf, L->err, MOE_ERR_NOMEM, "out of memory stacking '%s'", s->name);
        set_weight(w, s, t->type, buf, ne);
        if (!L->warned_split) {
            MOE_INFO("legacy split-expert layout: stacking experts in memory (no mmap); "
                     "`moe-repack` converts the file once so it loads directly");
            L->warned_split = true;
        }
    }
    MOE_FAIL_IF(t->type != w->type, L->err, MOE_ERR_FORMAT,
                "tensor '%s' has type %s but expert 0 of its family has %s", s->name,
                moe_type_name(t->type), moe_type_name(w->type));
    memcpy((uint8_t *)w->data + (uint64_t)s->expert * t->nbytes, data, (size_t)t->nbytes);
    return MOE_OK;
}

static moe_status bind_one(loader *L, const moe_tensor_spec *s) {
    const moe_gguf_tensor *t;
    const uint8_t *data;
    MOE_TRY(find_tensor(L, s->name, &t, &data));
    if (!t) {
        MOE_FAIL_IF(!s->optional, L->err, MOE_ERR_FORMAT, "missing tensor '%s'", s->name);
        return MOE_OK;
    }
    for (int d = 0; d < 4; d++)
        MOE_FAIL_IF(t->ne[d] != s->ne[d], L->err, MOE_ERR_FORMAT,
                    "tensor '%s' has wrong shape; expected [%lld, %lld, %lld], got [%lld, %lld, "
                    "%lld]",
                    s->name, (long long)s->ne[0], (long long)s->ne[1], (long long)s->ne[2],
                    (long long)t->ne[0], (long long)t->ne[1], (long long)t->ne[2]);
    const moe_type_traits *tr = moe_type_get(t->type);
    MOE_FAIL_IF(!tr->to_f32 || tr->activation_only, L->err, MOE_ERR_UNSUPPORTED,
                "tensor '%s' has type %s, which this runtime cannot compute with", s->name,
                tr->name);
    /* embeddings are looked up one row at a time; an interleaved row group has
     * no single-row reading */
    MOE_FAIL_IF(s->role == MOE_T_TOKEN_EMBD && tr->interleave_rows, L->err, MOE_ERR_UNSUPPORTED,
                "tensor '%s' has the row-interleaved type %s, which embeddings cannot use",
                s->name, tr->name);
    if ((s->role == MOE_T_ATTN_K_B || s->role == MOE_T_ATTN_V_B) && L->m->hp.mla != MOE_MLA_2D &&
        L->m->hp.mla != MOE_MLA_3D)
        return MOE_OK; /* ik's copies beside attn_kv_b: attn_kv_b computes, as in llama.cpp */
    moe_weight *w = slot_of(L->m, s);
    MOE_FAIL_IF(!w, L->err, MOE_ERR_INTERNAL, "tensor '%s' has no place in the model", s->name);
    if (s->expert >= 0)
        return bind_split_expert(L, w, s, t, data);
    if (t->ne[1] == 1 && t->ne[2] == 1 && (t->type != MOE_TYPE_F32 || ((uintptr_t)data & 3))) {
        /* norms and biases are read as plain floats in the hot loop: convert
         * the rare non-F32 or unaligned ones once */
        float *f = own(L, (uint64_t)t->ne[0] * sizeof(float));
        MOE_FAIL_IF(!f, L->err, MOE_ERR_NOMEM, "out of memory");
        tr->to_f32(data, f, t->ne[0], 1);
        set_weight(w, s, MOE_TYPE_F32, (const uint8_t *)f, t->ne);
        return MOE_OK;
    }
    set_weight(w, s, t->type, data, t->ne);
    if (s->role == MOE_T_ATTN_K_B || s->role == MOE_T_ATTN_V_B)
        per_head_view(w, L->m->hp.n_head);
    return MOE_OK;
}

/* Everything the schema lists, plus a check that the files hold nothing else
 * (llama.cpp refuses unknown tensors too). */
static moe_status bind_all(loader *L) {
    moe_model *m = L->m;
    MOE_TRY(moe_arch_tensors(&m->hp, &m->specs, &m->n_specs, L->err));
    m->layers = calloc((size_t)m->hp.n_layer, sizeof *m->layers);
    MOE_FAIL_IF(!m->layers, L->err, MOE_ERR_NOMEM, "out of memory");
    moe_strmap known = {0};
    moe_status st = MOE_OK;
    for (size_t i = 0; i < m->n_specs && st == MOE_OK; i++) {
        int64_t dup;
        st = moe_strmap_put(&known, m->specs[i].name, (int64_t)i, &dup, L->err);
        if (st == MOE_OK)
            st = bind_one(L, &m->specs[i]);
    }
    uint64_t n = 0;
    if (L->src.set)
        n = L->src.set->n_tensors;
    for (uint32_t f = 0; f < L->src.n_mem; f++)
        n += L->src.mem_g[f]->n_tensors;
    for (uint64_t i = 0, f = 0, base = 0; i < n && st == MOE_OK; i++) {
        while (!L->src.set && i - base >= L->src.mem_g[f]->n_tensors)
            base += L->src.mem_g[f++]->n_tensors;
        const moe_gguf_tensor *t = L->src.set ? moe_gguf_set_tensor(L->src.set, i, NULL)
                                              : &L->src.mem_g[f]->tensors[i - base];
        if (!strcmp(t->name, "rope_freqs.weight"))
            st = moe_fail(L->err, MOE_ERR_UNSUPPORTED,
                          "rope frequency factors (rope_freqs.weight) are not supported yet");
        else if (moe_strmap_get(&known, t->name) < 0)
            st = moe_fail(L->err, MOE_ERR_FORMAT, "unexpected tensor '%s' for a %s model",
                          t->name, m->arch->name);
    }
    moe_strmap_free(&known);
    for (int64_t il = 0; il < m->hp.n_layer && st == MOE_OK; il++)
        m->layers[il].is_moe = moe_hp_layer_is_moe(&m->hp, il);
    if (st == MOE_OK && !m->output.data) /* tied embeddings */
        m->output = m->tok_embd;
    return st;
}

/* ---- derived values --------------------------------------------------------------------- */

static float yarn_corr_dim(int n_dims, int n_ctx_orig, float beta, float base) {
    return (float)n_dims * logf((float)n_ctx_orig / (beta * 2.0f * (float)M_PI)) /
           (2.0f * logf(base));
}

void moe_model_derive_rope(moe_model *m) {
    const moe_hparams *hp = &m->hp;
    moe_rope_params *r = &m->rope;
    r->n_dims = (int)hp->n_rot;
    r->neox = m->arch->rope == MOE_ROPE_NEOX;
    r->freq_base = hp->rope_freq_base;
    bool scaled = hp->rope_scaling != MOE_ROPE_SCALING_NONE && hp->rope_scaling_factor > 0;
    r->freq_scale = scaled ? 1.0f / hp->rope_scaling_factor : 1.0f;
    r->ext_factor = hp->rope_scaling == MOE_ROPE_SCALING_YARN ? 1.0f : 0.0f;
    r->attn_factor = 1.0f;
    r->beta_fast = 32.0f;
    r->beta_slow = 1.0f;
    r->n_ctx_orig = (int)(hp->n_ctx_orig > 0 ? hp->n_ctx_orig : hp->n_ctx_train);
    float lo = floorf(yarn_corr_dim(r->n_dims, r->n_ctx_orig, r->beta_fast, r->freq_base));
    float hi = ceilf(yarn_corr_dim(r->n_dims, r->n_ctx_orig, r->beta_slow, r->freq_base));
    r->corr_lo = lo > 0 ? lo : 0;
    r->corr_hi = hi < (float)(r->n_dims - 1) ? hi : (float)(r->n_dims - 1);
    m->kq_scale = 1.0f / sqrtf((float)hp->head_dim_k);
    m->attn = (moe_attn_shape){.n_head_kv = hp->n_head_kv, .dk = hp->head_dim_k,
                               .dv = hp->head_dim_v, .n_kv_pad = 32};
    if (m->arch->mla && (hp->mla == MOE_MLA_2D || hp->mla == MOE_MLA_3D))
        m->attn = (moe_attn_shape){.n_head_kv = 1, .dk = hp->kv_lora_rank + hp->n_rot,
                                   .dv = hp->kv_lora_rank, .absorbed = true, .n_kv_pad = 256};
    r->fused = !m->arch->mla || m->attn.absorbed; /* which llama.cpp: see moe_rope_params */
    if (m->arch->mla) {
        /* deepseek2 folds YaRN's magnitude into the score scale and cancels it in
         * the rotation (model.md §2.7 step 5-6) */
        float mscale = r->attn_factor * (1.0f + hp->yarn_log_mul * logf(1.0f / r->freq_scale));
        r->attn_factor = 1.0f / (1.0f + 0.1f * logf(1.0f / r->freq_scale));
        if (m->attn.absorbed) {
            /* the same value in current llama.cpp's steps: it undoes the
             * rotation's correction and divides the stored multiplier by 0.1 */
            const float undone = r->attn_factor * (1.0f + 0.1f * logf(1.0f / r->freq_scale));
            const float log_mul = hp->yarn_log_mul / 0.1f;
            mscale = undone * (1.0f + 0.1f * log_mul * logf(1.0f / r->freq_scale));
        }
        m->kq_scale = mscale * mscale / sqrtf((float)hp->head_dim_k);
    }
}

static uint64_t wbytes(const moe_weight *w) {
    return w->data ? w->expert_bytes * (uint64_t)(w->ne[2] * w->ne[3]) : 0;
}

/* Bytes a one-token forward pass reads: everything but the embedding table
 * (one row) and the experts not chosen (K of E per MoE layer). */
static void account_bytes(moe_model *m) {
    uint64_t all = wbytes(&m->tok_embd) + wbytes(&m->output_norm);
    uint64_t tok = m->tok_embd.row_bytes + wbytes(&m->output_norm) + wbytes(&m->output);
    if (m->output.data != m->tok_embd.data)
        all += wbytes(&m->output);
    for (int64_t il = 0; il < m->hp.n_layer; il++) {
        const moe_layer *L = &m->layers[il];
        const moe_weight *w = (const moe_weight *)L;
        size_t n = offsetof(moe_layer, is_moe) / sizeof(moe_weight);
        for (size_t k = 0; k < n; k++) {
            uint64_t b = wbytes(&w[k]);
            all += b;
            bool expert = m->hp.n_expert > 0 && (&w[k] == &L->gate_exps ||
                                                  &w[k] == &L->up_exps ||
                                                  &w[k] == &L->down_exps); /* not wk_b/wv_b */
            tok += expert ? b / (uint64_t)m->hp.n_expert * (uint64_t)m->hp.n_expert_used : b;
        }
    }
    m->weight_bytes = all;
    m->bytes_per_token = tok;
}

/* ---- load / free ---------------------------------------------------------------------------- */

static moe_status load_vocab(loader *L) {
    const moe_gguf *g = first_gguf(&L->src);
    if (moe_gguf_find_key(g, "tokenizer.ggml.model") < 0) {
        MOE_WARN("the model has no tokenizer: only token ids can be used");
        return MOE_OK;
    }
    return moe_vocab_load(g, &L->m->vocab, L->err);
}

static moe_status load(loader *L, const char *path) {
    moe_model *m = L->m;
    if (moe_zstd_path_is_zstd(path))
        MOE_TRY(open_zst(L, path));
    else
        MOE_TRY(moe_gguf_set_open(path, L->params->use_mmap, &L->src.set, L->err));
    for (uint32_t f = 0; L->src.set && f < L->src.set->n_files; f++)
        moe_gguf_file_populate(L->src.set->files[f]); /* no page faults while computing */
    if (L->params->verify)
        MOE_TRY(verify(L));
    MOE_TRY(moe_hparams_from_gguf(first_gguf(&L->src), &m->hp, L->err));
    if (L->src.set && L->src.set->n_files > 1) /* tensors live in every shard */
        moe_hparams_detect_variants(&m->hp, set_lookup, L->src.set);
    if (L->src.n_mem > 1)
        moe_hparams_detect_variants(&m->hp, mem_lookup, &L->src);
    m->arch = moe_arch_get(m->hp.arch);
    MOE_FAIL_IF(m->hp.n_expert > 0 && m->hp.gating != MOE_GATING_SOFTMAX &&
                    m->hp.gating != MOE_GATING_SIGMOID,
                L->err, MOE_ERR_UNSUPPORTED,
                "expert gating function %d is not supported (softmax 1 and sigmoid 2 are)",
                (int)m->hp.gating);
    MOE_TRY(bind_all(L));
    account_bytes(m); /* before placement: copies on devices are not more weights */
    MOE_TRY(moe_placement_apply(m, L->params, L->err));
    MOE_TRY(load_vocab(L));
    if (m->vocab && moe_vocab_n_tokens(m->vocab) != m->hp.n_vocab)
        return moe_fail(L->err, MOE_ERR_FORMAT,
                        "the vocabulary has %lld tokens but token_embd has %lld rows",
                        (long long)moe_vocab_n_tokens(m->vocab), (long long)m->hp.n_vocab);
    moe_model_derive_rope(m);
    return MOE_OK;
}

/* general.name outlives the headers (a .gguf.zst's are freed after load). */
static moe_status keep_general_name(loader *L) {
    const moe_gguf *g = L->src.set ? L->src.set->files[0]->g : L->src.mem_g[0];
    const char *name = NULL;
    if (moe_gguf_find_key(g, "general.name") < 0 ||
        moe_gguf_get_str(g, "general.name", &name, NULL) != MOE_OK)
        return MOE_OK;
    L->m->general_name = strdup(name);
    MOE_FAIL_IF(!L->m->general_name, L->err, MOE_ERR_NOMEM, "out of memory");
    return MOE_OK;
}

moe_model_params moe_model_default_params(void) {
    return (moe_model_params){.use_mmap = true, .verify = false, .n_threads = 0,
                              .fit_margin = (uint64_t)1 << 30, .fit_type_k = MOE_TYPE_F16,
                              .fit_type_v = MOE_TYPE_F16};
}

moe_status moe_model_load(const char *path, const moe_model_params *params, moe_model **out,
                          moe_err *err) {
    *out = NULL;
    moe_model_params p = params ? *params : moe_model_default_params();
    if (p.n_threads <= 0)
        p.n_threads = moe_online_cpus();
    moe_model *m = calloc(1, sizeof *m);
    MOE_FAIL_IF(!m, err, MOE_ERR_NOMEM, "out of memory");
    loader L = {.m = m, .params = &p, .err = err, .src = {.use_mmap = p.use_mmap}};
    moe_status st = load(&L, path);
    m->set = L.src.set;
    m->owned = L.blocks; /* the decompressed buffer and every other allocation */
    m->n_owned = L.n_blocks;
    if (st == MOE_OK)
        st = keep_general_name(&L);
    for (uint32_t f = 0; f < L.src.n_mem; f++)
        moe_gguf_free(L.src.mem_g[f]);
    if (st != MOE_OK) {
        if (!strstr(err->msg, path))
            moe_err_prefix(err, "%s", path);
        moe_model_free(m);
        return st;
    }
    *out = m;
    return MOE_OK;
}

void moe_model_free(moe_model *m) {
    if (!m)
        return;
    moe_lora_free_all(m);
    moe_placement_release(m);
    for (size_t i = 0; i < m->n_owned; i++)
        free(m->owned[i]);
    free(m->owned);
    moe_gguf_set_close(m->set);
    moe_vocab_free(m->vocab);
    free(m->specs);
    free(m->layers);
    free(m->general_name);
    free(m);
}
