/* kv_state — the KV cache as a file (llama-cli's --prompt-cache), and the
 * model fingerprint that binds such a file to its model.
 *
 * File layout (version 1, integers little-endian; K/V rows as the cache holds
 * them: f32/f16 in the host's byte order, which is little-endian on every
 * platform we build for, q8_0 blocks as ggml lays them out):
 *
 *   "MOEKVST\0" | u32 version | u64 model fingerprint
 *   u32 type_k | u32 type_v | u64 row_k | u64 row_v | u64 n_layer | u64 n_vocab
 *   i32 n_tokens | n_tokens x i32 token ids
 *   u32 has_logits | (has_logits ? n_vocab x f32 : nothing)
 *   i32 n_cells | n_cells x (i32 pos | u64 sequence bits)
 *   u64 XXH3 of everything above
 *   per layer: n_cells K rows, u64 XXH3 of them, n_cells V rows, u64 XXH3
 *
 * Loading checks everything (magic, version, fingerprint, types, sizes,
 * checksums, positions, sequence ids) before it touches the context, so a
 * refused file leaves the context as it was.
 */
#include <errno.h>
#include <fcntl.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "formats/gguf/cursor.h"
#include "formats/gguf/gguf.h"
#include "formats/base/tempfile.h"
#include "runtime/context.h"

#define STATE_MAGIC "MOEKVST"
#define STATE_VERSION 1u

/* ---- fingerprint ------------------------------------------------------------------------- */

static uint64_t mix(uint64_t h, const void *p, size_t n) {
    uint8_t pair[16];
    moe_store_le64(pair, h);
    moe_store_le64(pair + 8, moe_xxh3(p, n));
    return moe_xxh3(pair, sizeof pair);
}

static uint64_t mix_u64(uint64_t h, uint64_t v) {
    uint8_t b[8];
    moe_store_le64(b, v);
    return mix(h, b, sizeof b);
}

#define SAMPLE_BYTES 4096

/* Name, type, shape and three 4 KiB samples (start, middle, end) of the
 * bytes: tells apart two models of one architecture with other weights
 * without reading whole tensors. */
static uint64_t mix_weight(uint64_t h, const moe_weight *w) {
    if (!w->data)
        return mix_u64(h, 0);
    h = mix(h, w->name ? w->name : "", w->name ? strlen(w->name) : 0);
    h = mix_u64(h, (uint64_t)w->type);
    uint64_t rows = 1;
    for (int d = 0; d < 4; d++) {
        h = mix_u64(h, (uint64_t)w->ne[d]);
        if (d > 0 && w->ne[d] > 1)
            rows *= (uint64_t)w->ne[d];
    }
    const uint64_t n = w->row_bytes * rows;
    const uint64_t s = n < SAMPLE_BYTES ? n : SAMPLE_BYTES;
    h = mix(h, w->data, s);
    h = mix(h, w->data + (n - s) / 2, s);
    return mix(h, w->data + n - s, s);
}

/* Every weight of a layer (the moe_layer members). */
static const size_t LAYER_WEIGHTS[] = {
    offsetof(moe_layer, attn_norm), offsetof(moe_layer, wq), offsetof(moe_layer, wk),
    offsetof(moe_layer, wv), offsetof(moe_layer, wo), offsetof(moe_layer, bq),
    offsetof(moe_layer, bk), offsetof(moe_layer, bv), offsetof(moe_layer, q_norm),
    offsetof(moe_layer, k_norm), offsetof(moe_layer, wq_a), offsetof(moe_layer, q_a_norm),
    offsetof(moe_layer, wq_b), offsetof(moe_layer, wkv_a_mqa), offsetof(moe_layer, kv_a_norm),
    offsetof(moe_layer, wkv_b), offsetof(moe_layer, ffn_norm), offsetof(moe_layer, ffn_gate),
    offsetof(moe_layer, ffn_up), offsetof(moe_layer, ffn_down), offsetof(moe_layer, gate_inp),
    offsetof(moe_layer, exp_probs_b), offsetof(moe_layer, gate_exps),
    offsetof(moe_layer, up_exps), offsetof(moe_layer, down_exps),
    offsetof(moe_layer, gate_inp_shexp), offsetof(moe_layer, gate_shexp),
    offsetof(moe_layer, up_shexp), offsetof(moe_layer, down_shexp),
};

uint64_t moe_model_fingerprint(const moe_model *m) {
    uint64_t h = mix(0, m->arch->name, strlen(m->arch->name));
    const moe_hparams *hp = &m->hp;
    const int64_t dims[] = {hp->n_vocab, hp->n_embd, hp->n_layer, hp->n_head, hp->n_head_kv,
                            hp->head_dim_k, hp->head_dim_v, hp->n_rot};
    for (size_t i = 0; i < sizeof dims / sizeof dims[0]; i++)
        h = mix_u64(h, (uint64_t)dims[i]);
    /* keys in the cache are rotated: the RoPE constants belong to the state */
    const moe_rope_params *r = &m->rope;
    const float rf[] = {r->freq_base, r->freq_scale, r->ext_factor, r->attn_factor,
                        r->beta_fast, r->beta_slow, m->kq_scale};
    for (size_t i = 0; i < sizeof rf / sizeof rf[0]; i++) {
        uint32_t u;
        memcpy(&u, &rf[i], 4);
        h = mix_u64(h, u);
    }
    h = mix_u64(h, (uint64_t)r->n_dims << 1 | (uint64_t)r->neox);
    h = mix_u64(h, (uint64_t)r->n_ctx_orig);
    h = mix_weight(h, &m->tok_embd);
    h = mix_weight(h, &m->output_norm);
    h = mix_weight(h, &m->output);
    for (int64_t l = 0; l < hp->n_layer; l++) {
        for (size_t i = 0; i < sizeof LAYER_WEIGHTS / sizeof LAYER_WEIGHTS[0]; i++)
            h = mix_weight(h, (const moe_weight *)((const uint8_t *)&m->layers[l] +
                                                   LAYER_WEIGHTS[i]));
        /* absorbed MLA's, only where present: other models keep their fingerprint */
        if (m->layers[l].wk_b.data)
            h = mix_weight(mix_weight(h, &m->layers[l].wk_b), &m->layers[l].wv_b);
    }
    return h;
}

/* ---- saving --------------------------------------------------------------------------------- */

/* A growable byte buffer for the head of the file. */
typedef struct bytes {
    uint8_t *p;
    size_t n, cap;
    bool oom;
} bytes;

static void put(bytes *b, const void *p, size_t n) {
    if (b->oom)
        return;
    if (b->n + n > b->cap) {
        size_t cap = b->cap ? b->cap : 4096;
        while (cap < b->n + n)
            cap *= 2;
        uint8_t *np = realloc(b->p, cap);
        if (!np) {
            b->oom = true;
            return;
        }
        b->p = np;
        b->cap = cap;
    }
    memcpy(b->p + b->n, p, n);
    b->n += n;
}

static void put_u32(bytes *b, uint32_t v) {
    uint8_t x[4];
    moe_store_le32(x, v);
    put(b, x, 4);
}

static void put_u64(bytes *b, uint64_t v) {
    uint8_t x[8];
    moe_store_le64(x, v);
    put(b, x, 8);
}

/* The head: everything up to and including its checksum. */
static void build_head(moe_context *ctx, const moe_token *tokens, int32_t n_tokens,
                       int32_t n_cells, bytes *b) {
    const moe_kv_cache *kv = &ctx->kv;
    const int64_t n_vocab = ctx->model->hp.n_vocab;
    put(b, STATE_MAGIC, 8);
    put_u32(b, STATE_VERSION);
    put_u64(b, moe_model_fingerprint(ctx->model));
    put_u32(b, (uint32_t)kv->type_k);
    put_u32(b, (uint32_t)kv->type_v);
    put_u64(b, (uint64_t)kv->row_k);
    put_u64(b, (uint64_t)kv->row_v);
    put_u64(b, (uint64_t)kv->n_layer);
    put_u64(b, (uint64_t)n_vocab);
    put_u32(b, (uint32_t)n_tokens);
    for (int32_t i = 0; i < n_tokens; i++)
        put_u32(b, (uint32_t)tokens[i]);
    const float *logits = moe_get_logits_ith(ctx, -1);
    put_u32(b, logits != NULL);
    for (int64_t i = 0; logits && i < n_vocab; i++) {
        uint32_t u;
        memcpy(&u, &logits[i], 4);
        put_u32(b, u);
    }
    put_u32(b, (uint32_t)n_cells);
    for (int32_t c = 0; c < kv->size; c++) {
        if (kv->cells[c].pos < 0)
            continue;
        put_u32(b, (uint32_t)kv->cells[c].pos);
        put_u64(b, kv->cells[c].seqs);
    }
    if (!b->oom)
        put_u64(b, moe_xxh3(b->p, b->n));
}

/* Gathers the used rows of one layer's K (or V) into buf and writes them
 * followed by their checksum. */
static bool write_rows(FILE *f, const moe_kv_cache *kv, int64_t layer, bool v, uint8_t *buf) {
    const uint64_t row_bytes = v ? kv->bytes_v : kv->bytes_k;
    size_t n = 0;
    for (int32_t c = 0; c < kv->size; c++) {
        if (kv->cells[c].pos < 0)
            continue;
        moe_kv_row_read(kv, v, layer, c, buf + n);
        n += row_bytes;
    }
    uint8_t sum[8];
    moe_store_le64(sum, moe_xxh3(buf, n));
    return fwrite(buf, 1, n, f) == n && fwrite(sum, 1, 8, f) == 8;
}

static moe_status write_state(moe_context *ctx, FILE *f, const moe_token *tokens,
                              int32_t n_tokens, const char *path, moe_err *err) {
    moe_kv_cache *kv = &ctx->kv;
    const int32_t n_cells = kv->used;
    bytes head = {0};
    build_head(ctx, tokens, n_tokens, n_cells, &head);
    uint64_t row_max = kv->bytes_k > kv->bytes_v ? kv->bytes_k : kv->bytes_v;
    uint8_t *buf = malloc((size_t)(row_max * (uint64_t)(n_cells ? n_cells : 1)));
    moe_status st = MOE_OK;
    if (head.oom || !buf) {
        st = moe_fail(err, MOE_ERR_NOMEM, "%s: out of memory for the state", path);
    } else {
        bool ok = fwrite(head.p, 1, head.n, f) == head.n;
        for (int64_t l = 0; ok && l < kv->n_layer; l++)
            ok = write_rows(f, kv, l, false, buf) && write_rows(f, kv, l, true, buf);
        if (!ok)
            st = moe_fail(err, MOE_ERR_IO, "%s: write failed: %s", path, strerror(errno));
    }
    free(buf);
    free(head.p);
    return st;
}

moe_status moe_state_save_file(moe_context *ctx, const char *path, const moe_token *tokens,
                               int32_t n_tokens, moe_err *err) {
    MOE_FAIL_IF(n_tokens < 0 || (n_tokens > 0 && !tokens), err, MOE_ERR_USAGE,
                "state: %d tokens without ids", n_tokens);
    moe_context_kv_shift(ctx); /* the file holds no pending deltas */
    moe_output out;
    MOE_TRY(moe_output_open(&out, path, MOE_OUTPUT_OVERWRITE, err));
    FILE *f = moe_output_stream(&out, err);
    moe_status st = f ? write_state(ctx, f, tokens, n_tokens, path, err) : MOE_ERR_IO;
    if (st == MOE_OK)
        return moe_output_commit(&out, err);
    moe_output_abort(&out);
    return st;
}

/* ---- loading -------------------------------------------------------------------------------- */

typedef struct state_view {
    int32_t n_tokens, n_cells;
    const uint8_t *tokens, *logits, *cells, *rows; /* borrowed from the file's bytes */
} state_view;

#define BAD(...) moe_fail(err, MOE_ERR_FORMAT, __VA_ARGS__)

/* Checks the head against ctx; fills v. */
static moe_status parse_head(moe_context *ctx, const char *path, moe_cursor *c, state_view *v,
                             moe_err *err) {
    const moe_kv_cache *kv = &ctx->kv;
    const uint8_t *magic;
    uint32_t version, tk, tv, has_logits, n_tokens, n_cells;
    uint64_t fp, row_k, row_v, n_layer, n_vocab;
    MOE_TRY(moe_cursor_bytes(c, 8, &magic, "magic", err));
    MOE_FAIL_IF(memcmp(magic, STATE_MAGIC, 8) != 0, err, MOE_ERR_FORMAT,
                "%s is not a moe-toolkit state (prompt cache) file", path);
    MOE_TRY(moe_cursor_u32(c, &version, "version", err));
    MOE_FAIL_IF(version != STATE_VERSION, err, MOE_ERR_FORMAT,
                "%s: state format version %u, this build reads version %u", path, version,
                STATE_VERSION);
    MOE_TRY(moe_cursor_u64(c, &fp, "fingerprint", err));
    uint64_t mine = moe_model_fingerprint(ctx->model);
    MOE_FAIL_IF(fp != mine, err, MOE_ERR_FORMAT,
                "%s was saved with another model (fingerprint %016llx, this model %016llx)",
                path, (unsigned long long)fp, (unsigned long long)mine);
    MOE_TRY(moe_cursor_u32(c, &tk, "type_k", err));
    MOE_TRY(moe_cursor_u32(c, &tv, "type_v", err));
    MOE_FAIL_IF(tk != (uint32_t)kv->type_k || tv != (uint32_t)kv->type_v, err, MOE_ERR_USAGE,
                "%s holds a %s/%s KV cache, this context uses %s/%s (-ctk/-ctv)", path,
                moe_type_name(tk), moe_type_name(tv),
                moe_type_name(kv->type_k), moe_type_name(kv->type_v));
    MOE_TRY(moe_cursor_u64(c, &row_k, "row_k", err));
    MOE_TRY(moe_cursor_u64(c, &row_v, "row_v", err));
    MOE_TRY(moe_cursor_u64(c, &n_layer, "n_layer", err));
    MOE_TRY(moe_cursor_u64(c, &n_vocab, "n_vocab", err));
    MOE_FAIL_IF(row_k != (uint64_t)kv->row_k || row_v != (uint64_t)kv->row_v ||
                    n_layer != (uint64_t)kv->n_layer ||
                    n_vocab != (uint64_t)ctx->model->hp.n_vocab,
                err, MOE_ERR_FORMAT, "%s: cache shape does not match the model", path);
    MOE_TRY(moe_cursor_u32(c, &n_tokens, "n_tokens", err));
    MOE_FAIL_IF(n_tokens > INT32_MAX / 4 || (uint64_t)n_tokens * 4 > moe_cursor_left(c), err,
                MOE_ERR_FORMAT, "%s: %u tokens do not fit the file", path, n_tokens);
    v->n_tokens = (int32_t)n_tokens;
    MOE_TRY(moe_cursor_bytes(c, (uint64_t)n_tokens * 4, &v->tokens, "tokens", err));
    MOE_TRY(moe_cursor_u32(c, &has_logits, "has_logits", err));
    MOE_FAIL_IF(has_logits > 1, err, MOE_ERR_FORMAT, "%s: bad logits flag", path);
    v->logits = NULL;
    if (has_logits)
        MOE_TRY(moe_cursor_bytes(c, n_vocab * 4, &v->logits, "logits", err));
    MOE_TRY(moe_cursor_u32(c, &n_cells, "n_cells", err));
    MOE_FAIL_IF(n_cells > (uint32_t)kv->size, err, MOE_ERR_USAGE,
                "%s holds %u cells, more than the context of %d (-c)", path, n_cells, kv->size);
    v->n_cells = (int32_t)n_cells;
    MOE_TRY(moe_cursor_bytes(c, (uint64_t)n_cells * 12, &v->cells, "cells", err));
    const size_t head_len = c->pos;
    uint64_t sum;
    MOE_TRY(moe_cursor_u64(c, &sum, "head checksum", err));
    MOE_FAIL_IF(sum != moe_xxh3(c->base, head_len), err, MOE_ERR_FORMAT,
                "%s: damaged (head checksum)", path);
    const uint64_t max_seqs = ctx->params.n_seq_max >= 64 ? ~0ull
                                                           : (1ull << ctx->params.n_seq_max) - 1;
    for (int32_t i = 0; i < v->n_cells; i++) {
        int32_t pos = (int32_t)moe_load_le32(v->cells + 12 * i);
        uint64_t seqs = moe_load_le64(v->cells + 12 * i + 4);
        MOE_FAIL_IF(pos < 0 || seqs == 0, err, MOE_ERR_FORMAT, "%s: cell %d is malformed", path,
                    i);
        MOE_FAIL_IF(seqs & ~max_seqs, err, MOE_ERR_USAGE,
                    "%s: cell %d holds a sequence beyond this context's %d", path, i,
                    ctx->params.n_seq_max);
    }
    return MOE_OK;
}

/* Checks the rows' size and checksums; v->rows points at the first layer's. */
static moe_status check_rows(const moe_kv_cache *kv, const char *path, moe_cursor *c,
                             state_view *v, moe_err *err) {
    v->rows = c->base + c->pos;
    for (int64_t l = 0; l < kv->n_layer; l++) {
        for (int kind = 0; kind < 2; kind++) {
            const uint64_t n = (uint64_t)v->n_cells * (kind ? kv->bytes_v : kv->bytes_k);
            const uint8_t *p;
            uint64_t sum;
            MOE_TRY(moe_cursor_bytes(c, n, &p, "rows", err));
            MOE_TRY(moe_cursor_u64(c, &sum, "rows checksum", err));
            MOE_FAIL_IF(sum != moe_xxh3(p, n), err, MOE_ERR_FORMAT,
                        "%s: damaged (layer %lld %s rows)", path, (long long)l, kind ? "V" : "K");
        }
    }
    MOE_FAIL_IF(moe_cursor_left(c) != 0, err, MOE_ERR_FORMAT, "%s: %zu trailing bytes", path,
                moe_cursor_left(c));
    return MOE_OK;
}

/* Replaces the cache with the verified state. */
static void apply_state(moe_context *ctx, const state_view *v) {
    moe_kv_cache *kv = &ctx->kv;
    moe_kv_clear_all(kv);
    ctx->do_defrag = false;
    for (int32_t i = 0; i < v->n_cells; i++)
        kv->cells[i] = (moe_kv_cell){.pos = (int32_t)moe_load_le32(v->cells + 12 * i),
                                     .seqs = moe_load_le64(v->cells + 12 * i + 4)};
    kv->used = v->n_cells;
    const uint8_t *p = v->rows;
    for (int64_t l = 0; l < kv->n_layer; l++) {
        for (int side = 0; side < 2; side++) { /* K, then V: whole rows in cell order */
            const uint64_t row_bytes = side ? kv->bytes_v : kv->bytes_k;
            for (int32_t i = 0; i < v->n_cells; i++)
                moe_kv_row_write(kv, side, l, i, p + (uint64_t)i * row_bytes);
            p += (uint64_t)v->n_cells * row_bytes + 8;
        }
    }
    ctx->n_last = 0;
    if (v->logits) { /* the last decode's row, as if it had just run */
        for (int64_t i = 0; i < ctx->model->hp.n_vocab; i++) {
            uint32_t u = moe_load_le32(v->logits + 4 * i);
            memcpy(&ctx->logits[i], &u, 4);
        }
        ctx->logit_row[0] = 0;
        ctx->n_last = 1;
    }
}

moe_status moe_state_load_file(moe_context *ctx, const char *path, moe_token *tokens,
                               int32_t cap, int32_t *n_tokens, moe_err *err) {
    *n_tokens = 0;
    FILE *f = fopen(path, "rb");
    MOE_FAIL_IF(!f, err, MOE_ERR_IO, "%s: %s", path, strerror(errno));
    struct stat sb;
    uint8_t *data = NULL;
    size_t len = 0;
    if (fstat(fileno(f), &sb) == 0 && sb.st_size > 0) {
        len = (size_t)sb.st_size;
        data = malloc(len);
        if (data && fread(data, 1, len, f) != len) {
            free(data);
            data = NULL;
        }
    }
    fclose(f);
    MOE_FAIL_IF(!data, err, len ? MOE_ERR_IO : MOE_ERR_FORMAT, "%s: %s", path,
                len ? "cannot read it" : "empty file");
    moe_cursor c = moe_cursor_make(data, len);
    state_view v = {0};
    moe_status st = parse_head(ctx, path, &c, &v, err);
    if (st == MOE_OK)
        st = check_rows(&ctx->kv, path, &c, &v, err);
    if (st == MOE_ERR_NEED_MORE)
        st = moe_fail(err, MOE_ERR_FORMAT, "%s: truncated state file", path);
    if (st == MOE_OK && v.n_tokens > cap)
        st = moe_fail(err, MOE_ERR_USAGE, "%s holds %d tokens, room for %d", path, v.n_tokens,
                      cap);
    if (st == MOE_OK && v.logits && ctx->logits_cap < 1) {
        float *nl = malloc((size_t)ctx->model->hp.n_vocab * sizeof(float));
        if (nl) {
            ctx->logits = nl;
            ctx->logits_cap = 1;
        } else {
            st = moe_fail(err, MOE_ERR_NOMEM, "out of memory");
        }
    }
    if (st == MOE_OK) {
        for (int32_t i = 0; i < v.n_tokens; i++)
            tokens[i] = (moe_token)moe_load_le32(v.tokens + 4 * i);
        *n_tokens = v.n_tokens;
        apply_state(ctx, &v);
    }
    free(data);
    return st;
}
