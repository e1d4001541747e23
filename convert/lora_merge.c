/* Offline LoRA merge (lora_merge.h): W' = W + sum_i s_i B_i A_i in F32. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "convert/lora_merge.h"
#include "convert/source.h"
#include "formats/base/cli.h"
#include "formats/gguf/gguf.h"
#include "formats/base/log.h"

typedef struct adapter {
    moe_gguf_file *f;
    float s_user, alpha;
    int64_t *ia, *ib; /* [base tensors]: the adapter's tensor index, or -1 */
} adapter;

moe_status moe_lora_merge_parse(const char *arg, char *buf, size_t cap, moe_lora_merge_spec *spec,
                                moe_err *err) {
    MOE_FAIL_IF(strlen(arg) >= cap, err, MOE_ERR_USAGE, "option --merge-lora: path too long");
    strcpy(buf, arg);
    spec->path = buf;
    spec->scale = 1.0f;
    char *colon = strrchr(buf, ':');
    double v;
    moe_err e2 = {0};
    if (colon && colon[1] && moe_parse_f64(colon + 1, &v, "scale", &e2) == MOE_OK) {
        *colon = '\0';
        spec->scale = (float)v;
    }
    MOE_FAIL_IF(!buf[0], err, MOE_ERR_USAGE, "option --merge-lora: no file in '%s'", arg);
    return MOE_OK;
}

static int64_t nel(const moe_gguf_tensor *t) { return t->ne[0] * t->ne[1] * t->ne[2] * t->ne[3]; }

static bool ends(const char *s, const char *suf) {
    size_t n = strlen(s), k = strlen(suf);
    return n >= k && !strcmp(s + n - k, suf);
}

static moe_status want_str(const moe_gguf *g, const char *key, const char *want, moe_err *err) {
    const char *v;
    MOE_TRY(moe_gguf_get_str(g, key, &v, err));
    MOE_FAIL_IF(strcmp(v, want) != 0, err, MOE_ERR_FORMAT, "key '%s' is '%s', not '%s'", key, v,
                want);
    return MOE_OK;
}

static moe_status check_shapes(const moe_gguf_tensor *W, const moe_gguf_tensor *A,
                               const moe_gguf_tensor *B, moe_err *err) {
    const bool embd = !strcmp(W->name, "token_embd.weight");
    const moe_type_traits *ta = moe_type_get(A->type), *tb = moe_type_get(B->type);
    MOE_FAIL_IF(!ta || !ta->to_f32 || !tb || !tb->to_f32, err, MOE_ERR_UNSUPPORTED,
                "tensors '%s' / '%s': a factor type cannot be decoded", A->name, B->name);
    MOE_FAIL_IF(A->ne[2] != W->ne[2] || B->ne[2] != W->ne[2] || A->ne[3] != 1 || B->ne[3] != 1, err,
                MOE_ERR_UNSUPPORTED, "tensors '%s' / '%s': expert count does not fit '%s'", A->name,
                B->name, W->name);
    const bool rank_ok = embd ? A->ne[0] == B->ne[0] : A->ne[1] == B->ne[0];
    MOE_FAIL_IF(!rank_ok, err, MOE_ERR_UNSUPPORTED, "tensors '%s' / '%s': ranks differ", A->name,
                B->name);
    const bool fit = embd ? B->ne[1] == W->ne[0] && A->ne[1] == W->ne[1]
                          : A->ne[0] == W->ne[0] && B->ne[1] == W->ne[1];
    MOE_FAIL_IF(!fit, err, MOE_ERR_UNSUPPORTED,
                "tensors '%s' / '%s': shapes [%lld, %lld] / [%lld, %lld] do not "
                "fit '%s' [%lld, "
                "%lld]",
                A->name, B->name, (long long)A->ne[0], (long long)A->ne[1], (long long)B->ne[0],
                (long long)B->ne[1], W->name, (long long)W->ne[0], (long long)W->ne[1]);
    return MOE_OK;
}

/* Opens one adapter and pairs its tensors with the base's (the stacked
 * tensors when the base is a legacy split-expert file: adapters name those). */
static moe_status open_adapter(const moe_qsource *base, const moe_lora_merge_spec *sp, adapter *a,
                               moe_err *err) {
    MOE_TRY(moe_gguf_file_open(sp->path, true, &a->f, err));
    const moe_gguf *g = a->f->g;
    const char *arch, *barch;
    MOE_TRY(want_str(g, "general.type", "adapter", err));
    MOE_TRY(want_str(g, "adapter.type", "lora", err));
    MOE_TRY(moe_gguf_get_str(g, "general.architecture", &arch, err));
    MOE_TRY(moe_gguf_get_str(base->meta, "general.architecture", &barch, err));
    MOE_FAIL_IF(strcmp(arch, barch) != 0, err, MOE_ERR_UNSUPPORTED,
                "the adapter is for architecture '%s', the model is '%s'", arch, barch);
    MOE_FAIL_IF(moe_gguf_find_key(g, "adapter.lora.alpha") < 0, err, MOE_ERR_FORMAT,
                "missing key 'adapter.lora.alpha' (the LoRA alpha)");
    double alpha;
    MOE_TRY(moe_gguf_get_float(g, "adapter.lora.alpha", &alpha, err));
    a->alpha = (float)alpha;
    a->s_user = sp->scale;
    a->ia = malloc((size_t)(2 * base->n_tensors + 1) * sizeof *a->ia);
    MOE_FAIL_IF(!a->ia, err, MOE_ERR_NOMEM, "out of memory");
    a->ib = a->ia + base->n_tensors;
    for (uint64_t i = 0; i < 2 * base->n_tensors; i++)
        a->ia[i] = -1;
    for (uint64_t i = 0; i < g->n_tensors; i++) {
        const char *name = g->tensors[i].name;
        const bool is_a = ends(name, ".lora_a");
        if (!is_a && !ends(name, ".lora_b")) {
            MOE_FAIL_IF(!ends(name, "_norm.weight"), err, MOE_ERR_FORMAT,
                        "tensor '%s' has an unexpected suffix (want .lora_a or .lora_b)", name);
            continue;
        }
        char bn[MOE_GGUF_MAX_NAME];
        const size_t n = strlen(name) - 7;
        memcpy(bn, name, n);
        bn[n] = '\0';
        const int64_t w = moe_qsource_find(base, bn);
        MOE_FAIL_IF(w < 0, err, MOE_ERR_UNSUPPORTED, "tensor '%s': the model has no weight '%s'",
                    name, bn);
        MOE_FAIL_IF(base->tensors[w].ne[1] == 1, err, MOE_ERR_UNSUPPORTED,
                    "tensor '%s': '%s' is not a matrix", name, bn);
        (is_a ? a->ia : a->ib)[w] = (int64_t)i;
    }
    for (uint64_t w = 0; w < base->n_tensors; w++) {
        if (a->ia[w] < 0 && a->ib[w] < 0)
            continue;
        MOE_FAIL_IF(a->ia[w] < 0 || a->ib[w] < 0, err, MOE_ERR_FORMAT,
                    "weight '%s' has only one LoRA factor", base->tensors[w].name);
        MOE_TRY(check_shapes(&base->tensors[w], &g->tensors[a->ia[w]], &g->tensors[a->ib[w]], err));
    }
    return MOE_OK;
}

/* Decodes an adapter tensor into a new F32 buffer. */
static float *decode(const adapter *a, int64_t i) {
    const moe_gguf_tensor *t = &a->f->g->tensors[i];
    float *out = malloc((size_t)nel(t) * sizeof(float));
    if (out)
        moe_type_get(t->type)->to_f32(moe_gguf_file_tensor_data(a->f, (uint64_t)i), out, t->ne[0],
                                      nel(t) / t->ne[0]);
    return out;
}

/* w [n_out][n_in] of expert e += s * B_e A_e (token_embd: w[v][d] += s B[d] .
 * A[v]). */
static void add_delta(float *w, const moe_gguf_tensor *W, int64_t e, const float *A, const float *B,
                      int64_t r, float s) {
    const int64_t n_in = W->ne[0], n_out = W->ne[1];
    if (!strcmp(W->name, "token_embd.weight")) {
        for (int64_t v = 0; v < n_out; v++)
            for (int64_t d = 0; d < n_in; d++) {
                float acc = 0.0f;
                for (int64_t k = 0; k < r; k++)
                    acc += B[d * r + k] * A[v * r + k];
                w[v * n_in + d] += s * acc;
            }
        return;
    }
    const float *Ae = A + e * r * n_in, *Be = B + e * n_out * r;
#pragma omp parallel for schedule(static)
    for (int64_t o = 0; o < n_out; o++)
        for (int64_t k = 0; k < r; k++) {
            const float c = s * Be[o * r + k];
            for (int64_t i = 0; i < n_in; i++)
                w[o * n_in + i] += c * Ae[k * n_in + i];
        }
}

/* Writes tensor w of the base merged with every adapter touching it. */
static moe_status write_merged(moe_gguf_writer *wr, moe_qsource *src, uint64_t w,
                               const adapter *ads, int n, moe_err *err) {
    const moe_gguf_tensor *W = &src->tensors[w];
    const int64_t n_in = W->ne[0], n_out = W->ne[1], E = W->ne[2] * W->ne[3];
    const uint64_t slice = W->nbytes / (uint64_t)E;
    float *buf = malloc((size_t)(n_in * n_out) * sizeof(float));
    MOE_FAIL_IF(!buf, err, MOE_ERR_NOMEM, "out of memory merging '%s'", W->name);
    moe_status st = MOE_OK;
    for (int64_t e = 0; e < E && st == MOE_OK; e++) {
        const uint8_t *p = NULL;
        st = moe_qsource_bytes(src, w, (uint64_t)e * slice, slice, &p, err);
        if (st == MOE_OK)
            st = moe_dequantize_rows(W->type, p, buf, n_in, n_out, err);
        for (int i = 0; i < n && st == MOE_OK; i++) {
            if (ads[i].ia[w] < 0)
                continue;
            float *A = decode(&ads[i], ads[i].ia[w]), *B = decode(&ads[i], ads[i].ib[w]);
            const moe_gguf_tensor *tb = &ads[i].f->g->tensors[ads[i].ib[w]];
            const int64_t r = tb->ne[0];
            const float s =
                ads[i].alpha != 0.0f ? ads[i].s_user * ads[i].alpha / (float)r : ads[i].s_user;
            if (A && B)
                add_delta(buf, W, e, A, B, r, s);
            else
                st = moe_fail(err, MOE_ERR_NOMEM, "out of memory merging '%s'", W->name);
            free(A);
            free(B);
        }
        if (st == MOE_OK)
            st = moe_gguf_writer_write(wr, buf, (size_t)(n_in * n_out) * sizeof(float), err);
    }
    free(buf);
    return st;
}

/* Whether tensor w is decoded to F32: touched by an adapter, or every matrix.
 */
static bool touched(const adapter *ads, int n, uint64_t w, const moe_gguf_tensor *t,
                    bool all_f32) {
    if (all_f32 && t->ne[1] > 1 && t->type != MOE_TYPE_F32)
        return true;
    for (int i = 0; i < n; i++)
        if (ads[i].ia[w] >= 0)
            return true;
    return false;
}

static moe_status write_all(moe_qsource *src, const adapter *ads, int n, const char *out_path,
                            bool overwrite, bool all_f32, moe_err *err) {
    const moe_gguf *g = src->meta;
    moe_gguf_writer *wr;
    const moe_gguf_writer_opts o = {.overwrite = overwrite};
    MOE_TRY(moe_gguf_writer_create(out_path, &o, &wr, err));
    moe_status st = MOE_OK;
    for (uint64_t k = 0; k < g->n_kv && st == MOE_OK; k++)
        if (!moe_qsource_drops_key(src, g->kv[k].key))
            st = moe_gguf_writer_copy_kv(wr, &g->kv[k], err);
    for (uint64_t w = 0; w < src->n_tensors && st == MOE_OK; w++) {
        const moe_gguf_tensor *t = &src->tensors[w];
        st = moe_gguf_writer_add_tensor(wr, t->name,
                                        touched(ads, n, w, t, all_f32) ? MOE_TYPE_F32 : t->type,
                                        t->n_dims, t->ne, err);
    }
    if (st == MOE_OK)
        st = moe_gguf_writer_begin_data(wr, err);
    for (uint64_t w = 0; w < src->n_tensors && st == MOE_OK; w++) {
        /* the merged file gets fresh checksums: a corrupt base must stop here */
        st = moe_qsource_check(src, w, err);
        if (st == MOE_OK && touched(ads, n, w, &src->tensors[w], all_f32))
            st = write_merged(wr, src, w, ads, n, err);
        else if (st == MOE_OK)
            st = moe_qsource_copy(src, w, wr, err);
        moe_qsource_release(src, w);
    }
    if (st != MOE_OK) {
        moe_gguf_writer_abort(wr);
        return st;
    }
    return moe_gguf_writer_finish(wr, err);
}

moe_status moe_lora_merge_file(const char *base_path, const moe_lora_merge_spec *loras, int n,
                               const char *out_path, bool overwrite, bool all_f32, moe_err *err) {
    moe_qsource src;
    MOE_TRY(moe_qsource_open(base_path, &src, err));
    adapter *ads = calloc((size_t)(n > 0 ? n : 1), sizeof *ads);
    moe_status st = ads ? MOE_OK : moe_fail(err, MOE_ERR_NOMEM, "out of memory");
    for (int i = 0; i < n && st == MOE_OK; i++) {
        st = open_adapter(&src, &loras[i], &ads[i], err);
        if (st != MOE_OK && !strstr(err->msg, loras[i].path))
            moe_err_prefix(err, "%s", loras[i].path);
    }
    if (st == MOE_OK)
        st = write_all(&src, ads, n, out_path, overwrite, all_f32, err);
    if (st == MOE_OK)
        MOE_INFO("%s: %d LoRA adapter(s) merged into %s (merged tensors F32)", out_path, n,
                 base_path);
    for (int i = 0; ads && i < n; i++) {
        moe_gguf_file_close(ads[i].f);
        free(ads[i].ia);
    }
    free(ads);
    moe_qsource_close(&src);
    return st;
}
