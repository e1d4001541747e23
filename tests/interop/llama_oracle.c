/* The llama.cpp side of ci/interop: a small program against the libllama that
 * node-llama-cpp ships prebuilt, compiled by ci/interop with the llama.h of the
 * same release (never part of the CMake build: the header exists only after
 * ci/interop downloaded it).
 *
 *   llama_oracle logits MODEL TOKENS OUT.f32   one batch of TOKENS (comma-
 *       separated ids), every position's logits as f32 rows of n_vocab;
 *       exit 3 when llama.cpp refuses to load MODEL
 *   llama_oracle logits MODEL TOKENS OUT.f32 LORA SCALE   the same with a
 *       LoRA adapter applied at SCALE
 *   llama_oracle quantize IN OUT FTYPE [pure]  llama_model_quantize (FTYPE is
 *       llama.cpp's numeric llama_ftype)
 *   llama_oracle imatrix MODEL TEXT N_CTX N_SEQ OUT.dat   an importance
 *       matrix collected as llama-imatrix collects it (chunks of N_CTX tokens,
 *       BOS first, N_SEQ chunks per decode, one KV stream per sequence), in
 *       its legacy .dat form; with ORACLE_DUMP_DIR set, only the first decode
 *       runs and each of its contiguous f32 tensors is written there as
 *       NAME.OP.f32 (an index file lists names, ops and shapes)
 *   llama_oracle ppl MODEL TEXT N_CTX   llama-perplexity's figure (chunks of
 *       N_CTX tokens, BOS first, the second half scored), printed as
 *       "PPL = x" with its four decimals
 *   llama_oracle compare A.f32 B.f32 N_VOCAB MAX_ABS|rms:RMS [NAME]
 *       compares two logits files; on failure names NAME and the first row
 *       over the tolerance. MAX_ABS 0 means bit for bit.
 *
 * Flash attention is off: it changes llama.cpp's own numbers, and the
 * conformance goldens were made without it. LLAMA_ORACLE_NO_REPACK=1 loads
 * models without weight repacking (use_extra_bufts off): on x86 llama.cpp
 * otherwise runs Q4_0 and a few other types through interleaved 8x8 GEMM
 * kernels whose sums are ordered differently from its plain dot products. */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ggml-backend.h"
#include "llama.h"

#define MAX_TOKENS 512

static void quiet_log(enum ggml_log_level level, const char *text, void *user) {
    (void)user;
    if (level == GGML_LOG_LEVEL_ERROR)
        fputs(text, stderr);
}

static int parse_tokens(const char *s, llama_token *out) {
    int n = 0;
    while (*s && n < MAX_TOKENS) {
        char *end;
        errno = 0;
        long v = strtol(s, &end, 10);
        if (end == s || errno || v < 0 || v > INT32_MAX)
            return -1;
        out[n++] = (llama_token)v;
        s = *end == ',' ? end + 1 : end;
        if (*end && *end != ',')
            return -1;
    }
    return n;
}

static int write_all(const char *path, const float *data, size_t n) {
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(data, sizeof *data, n, f) != n || fclose(f) != 0) {
        fprintf(stderr, "llama_oracle: %s: cannot write\n", path);
        return 1;
    }
    return 0;
}

/* lora_path: an adapter applied at lora_scale, or NULL */
static int cmd_logits(const char *model_path, const char *token_list, const char *out_path,
                      const char *lora_path, float lora_scale) {
    llama_token tok[MAX_TOKENS];
    int n = parse_tokens(token_list, tok);
    if (n <= 0) {
        fprintf(stderr, "llama_oracle: bad token list '%s'\n", token_list);
        return 2;
    }
    struct llama_model_params mp = llama_model_default_params();
    mp.n_gpu_layers = 0;
    mp.use_extra_bufts = !getenv("LLAMA_ORACLE_NO_REPACK");
    struct llama_model *model = llama_model_load_from_file(model_path, mp);
    if (!model) {
        fprintf(stderr, "llama_oracle: llama.cpp refused %s\n", model_path);
        return 3;
    }
    struct llama_context_params cp = llama_context_default_params();
    cp.n_ctx = 256;
    cp.n_batch = cp.n_ubatch = MAX_TOKENS;
    cp.n_threads = cp.n_threads_batch = 2;
    cp.flash_attn_type = LLAMA_FLASH_ATTN_TYPE_DISABLED;
    struct llama_context *ctx = llama_init_from_model(model, cp);
    int rc = 1;
    struct llama_batch b = llama_batch_init(n, 0, 1);
    struct llama_adapter_lora *lora = NULL;
    if (!ctx) {
        fprintf(stderr, "llama_oracle: %s: no context\n", model_path);
        goto done;
    }
    if (lora_path) {
        lora = llama_adapter_lora_init(model, lora_path);
        if (!lora || llama_set_adapters_lora(ctx, &lora, 1, &lora_scale) != 0) {
            fprintf(stderr, "llama_oracle: llama.cpp refused the adapter %s\n", lora_path);
            rc = 3;
            goto done;
        }
    }
    b.n_tokens = n;
    for (int i = 0; i < n; i++) {
        b.token[i] = tok[i];
        b.pos[i] = i;
        b.n_seq_id[i] = 1;
        b.seq_id[i][0] = 0;
        b.logits[i] = 1;
    }
    if (llama_decode(ctx, b) != 0) {
        fprintf(stderr, "llama_oracle: %s: llama_decode failed\n", model_path);
        goto done;
    }
    const int32_t n_vocab = llama_vocab_n_tokens(llama_model_get_vocab(model));
    float *rows = malloc((size_t)n * (size_t)n_vocab * sizeof *rows);
    if (!rows)
        goto done;
    for (int i = 0; i < n; i++)
        memcpy(rows + (size_t)i * (size_t)n_vocab, llama_get_logits_ith(ctx, i),
               (size_t)n_vocab * sizeof *rows);
    rc = write_all(out_path, rows, (size_t)n * (size_t)n_vocab);
    free(rows);
done:
    llama_batch_free(b);
    if (ctx)
        llama_free(ctx);
    if (lora)
        llama_adapter_lora_free(lora);
    llama_model_free(model);
    return rc;
}

static int cmd_quantize(const char *in, const char *out, const char *ftype, bool pure) {
    llama_model_quantize_params qp = llama_model_quantize_default_params();
    qp.nthread = 2;
    qp.ftype = (enum llama_ftype)atoi(ftype);
    qp.pure = pure;
    if (llama_model_quantize(in, out, &qp) != 0) {
        fprintf(stderr, "llama_oracle: llama_model_quantize %s -> %s failed\n", in, out);
        return 1;
    }
    return 0;
}

static float *read_all(const char *path, size_t *n) {
    FILE *f = fopen(path, "rb");
    if (!f) {
        fprintf(stderr, "llama_oracle: %s: cannot open\n", path);
        return NULL;
    }
    fseek(f, 0, SEEK_END);
    long size = ftell(f);
    rewind(f);
    float *d = size > 0 ? malloc((size_t)size) : NULL;
    if (!d || fread(d, 1, (size_t)size, f) != (size_t)size) {
        fprintf(stderr, "llama_oracle: %s: cannot read\n", path);
        free(d);
        fclose(f);
        return NULL;
    }
    fclose(f);
    *n = (size_t)size / sizeof *d;
    return d;
}

/* The conformance pack's tolerances: a max |difference| for float weights, or
 * an rms plus the same arg-max wherever B's top-2 margin exceeds 0.25 for
 * quantized ones. */
static int cmd_compare(const char *pa, const char *pb, long n_vocab, const char *tol,
                       const char *name) {
    size_t na, nb;
    float *a = read_all(pa, &na), *b = read_all(pb, &nb);
    int rc = 1;
    if (!a || !b)
        goto done;
    if (n_vocab <= 0 || na != nb || na % (size_t)n_vocab) {
        fprintf(stderr, "%s: %s has %zu values, %s %zu: not the same rows of %ld\n", name, pa,
                na, pb, nb, n_vocab);
        goto done;
    }
    const bool by_rms = !strncmp(tol, "rms:", 4);
    const double limit = atof(by_rms ? tol + 4 : tol);
    double worst = 0, sq = 0;
    size_t rows = na / (size_t)n_vocab, worst_row = 0;
    for (size_t r = 0; r < rows; r++) {
        const float *x = a + r * (size_t)n_vocab, *y = b + r * (size_t)n_vocab;
        size_t ax = 0, ay = 0;
        for (long v = 0; v < n_vocab; v++) {
            double d = fabs((double)x[v] - (double)y[v]);
            if (d > worst || d != d)
                worst = d, worst_row = r;
            sq += d * d;
            if (x[v] > x[ax])
                ax = (size_t)v;
        }
        for (long v = 0; v < n_vocab; v++)
            if (y[v] > y[ay])
                ay = (size_t)v;
        size_t ay2 = ay == 0 ? 1 : 0;
        for (long v = 0; v < n_vocab; v++)
            if ((size_t)v != ay && y[v] > y[ay2])
                ay2 = (size_t)v;
        if (by_rms && ax != ay && y[ay] - y[ay2] > 0.25f) {
            fprintf(stderr, "%s: row %zu: arg-max %zu, llama.cpp's %zu (margin %.3f)\n", name,
                    r, ax, ay, (double)(y[ay] - y[ay2]));
            goto done;
        }
    }
    const double rms = sqrt(sq / (double)na);
    const bool ok = by_rms ? rms <= limit : (limit == 0 ? !memcmp(a, b, na * sizeof *a)
                                                        : worst <= limit);
    printf("%s: %zu rows, max |diff| %.6f (row %zu), rms %.6f: %s\n", name, rows, worst,
           worst_row, rms, ok ? "ok" : "FAILED");
    if (!ok)
        fprintf(stderr, "%s: over the tolerance %s, worst at row %zu (%s vs %s)\n", name, tol,
                worst_row, pa, pb);
    rc = ok ? 0 : 1;
done:
    free(a);
    free(b);
    return rc;
}

/* ---- imatrix: llama-imatrix's collection (Feb 2025 rules: one call per
 * decode for each accepted product, expert rows summed slot by slot, each
 * slot's rows in token order), written without its code ---- */

#define IM_MAX 256

typedef struct im_entry {
    char name[128];
    int64_t n_in, n_mat;
    float *sum;     /* n_in * n_mat */
    int64_t *count; /* rows per matrix */
    int32_t ncall;
} im_entry;

typedef struct im_state {
    im_entry e[IM_MAX];
    int n;
    const char *dump_dir; /* NULL, or where the first decode's tensors go */
    FILE *index;
    bool first_decode;
} im_state;

static im_entry *im_find(im_state *s, const char *name, int64_t n_in, int64_t n_mat) {
    for (int i = 0; i < s->n; i++)
        if (!strcmp(s->e[i].name, name))
            return s->e[i].n_in == n_in && s->e[i].n_mat == n_mat ? &s->e[i] : NULL;
    if (s->n == IM_MAX)
        return NULL;
    im_entry *e = &s->e[s->n++];
    snprintf(e->name, sizeof e->name, "%s", name);
    e->n_in = n_in;
    e->n_mat = n_mat;
    e->sum = calloc((size_t)(n_in * n_mat), sizeof *e->sum);
    e->count = calloc((size_t)n_mat, sizeof *e->count);
    return e->sum && e->count ? e : NULL;
}

/* Writes a contiguous f32 tensor of the first decode as DIR/NAME.f32. */
static void im_dump(im_state *s, const struct ggml_tensor *t) {
    if (!s->first_decode || t->type != GGML_TYPE_F32 || !ggml_is_contiguous(t))
        return;
    char path[1024];
    snprintf(path, sizeof path, "%s/%s.%s.f32", s->dump_dir, t->name, ggml_op_desc(t));
    if (write_all(path, (const float *)t->data, (size_t)ggml_nelements(t)) == 0)
        fprintf(s->index, "%s %s %lld %lld %lld %lld\n", t->name, ggml_op_desc(t),
                (long long)t->ne[0], (long long)t->ne[1], (long long)t->ne[2],
                (long long)t->ne[3]);
}

static bool im_eval(struct ggml_tensor *t, bool ask, void *user) {
    im_state *s = user;
    if (ask) /* dumps want every node; collecting only the products */
        return s->dump_dir || t->op == GGML_OP_MUL_MAT || t->op == GGML_OP_MUL_MAT_ID;
    if (s->dump_dir)
        im_dump(s, t);
    const struct ggml_tensor *w = t->src[0], *x = t->src[1];
    if (t->op != GGML_OP_MUL_MAT && t->op != GGML_OP_MUL_MAT_ID)
        return true;
    if (strncmp(w->name, "blk.", 4) != 0 || x->type != GGML_TYPE_F32)
        return true;
    if (t->op == GGML_OP_MUL_MAT && x->ne[1] < 16)
        return true;
    const bool by_id = t->op == GGML_OP_MUL_MAT_ID;
    im_entry *e = im_find(s, w->name, x->ne[0], by_id ? w->ne[2] : 1);
    if (!e) {
        fprintf(stderr, "llama_oracle: imatrix entry %s: no room or a changed size\n", w->name);
        return false;
    }
    e->ncall++;
    if (by_id) { /* x: [n_in, slots or 1, tokens]; ids: [slots, tokens] */
        const struct ggml_tensor *ids = t->src[2];
        for (int64_t k = 0; k < ids->ne[0]; k++)
            for (int64_t r = 0; r < ids->ne[1]; r++) {
                const int32_t ex = *(const int32_t *)((const char *)ids->data + r * ids->nb[1] +
                                                      k * ids->nb[0]);
                const float *xr = (const float *)((const char *)x->data +
                                                  (k % x->ne[1]) * x->nb[1] + r * x->nb[2]);
                float *acc = e->sum + ex * e->n_in;
                for (int64_t j = 0; j < e->n_in; j++)
                    acc[j] += xr[j] * xr[j];
                e->count[ex]++;
            }
        return true;
    }
    for (int64_t r = 0; r < x->ne[1] * x->ne[2] * x->ne[3]; r++) {
        const float *xr = (const float *)((const char *)x->data + (r % x->ne[1]) * x->nb[1] +
                                          (r / x->ne[1]) % x->ne[2] * x->nb[2] +
                                          r / (x->ne[1] * x->ne[2]) * x->nb[3]);
        for (int64_t j = 0; j < e->n_in; j++)
            e->sum[j] += xr[j] * xr[j];
        e->count[0]++;
    }
    return true;
}

static int im_cmp(const void *a, const void *b) {
    return strcmp(((const im_entry *)a)->name, ((const im_entry *)b)->name);
}

/* The legacy .dat: entries in name order, value = sum / count * ncall. */
static int im_save(im_state *s, const char *path, const char *dataset, int32_t chunks) {
    FILE *f = fopen(path, "wb");
    if (!f)
        return 1;
    qsort(s->e, (size_t)s->n, sizeof s->e[0], im_cmp);
    int32_t n = s->n;
    fwrite(&n, 4, 1, f);
    for (int i = 0; i < s->n; i++) {
        const im_entry *e = &s->e[i];
        int32_t len = (int32_t)strlen(e->name), nval = (int32_t)(e->n_in * e->n_mat);
        fwrite(&len, 4, 1, f);
        fwrite(e->name, 1, (size_t)len, f);
        fwrite(&e->ncall, 4, 1, f);
        fwrite(&nval, 4, 1, f);
        for (int64_t v = 0; v < nval; v++) {
            const float c = (float)e->count[v / e->n_in];
            const float val = e->sum[v] / c * (float)e->ncall;
            fwrite(&val, 4, 1, f);
        }
    }
    int32_t len = (int32_t)strlen(dataset);
    fwrite(&chunks, 4, 1, f);
    fwrite(&len, 4, 1, f);
    fwrite(dataset, 1, (size_t)len, f);
    return fclose(f) != 0;
}

static char *read_text(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    fseek(f, 0, SEEK_END);
    long size = ftell(f);
    rewind(f);
    char *d = malloc((size_t)size + 1);
    if (d && fread(d, 1, (size_t)size, f) == (size_t)size) {
        d[size] = 0;
        *len = (size_t)size;
    } else {
        free(d);
        d = NULL;
    }
    fclose(f);
    return d;
}

static int cmd_imatrix(const char *model_path, const char *text_path, int n_ctx, int n_seq,
                       const char *out_path) {
    static im_state st;
    size_t len = 0;
    char *text = read_text(text_path, &len);
    struct llama_model_params mp = llama_model_default_params();
    mp.n_gpu_layers = 0;
    mp.use_extra_bufts = !getenv("LLAMA_ORACLE_NO_REPACK");
    struct llama_model *model = text ? llama_model_load_from_file(model_path, mp) : NULL;
    if (!model || n_ctx < 16 || n_seq < 1) {
        fprintf(stderr, "llama_oracle: imatrix: bad arguments\n");
        free(text);
        return 2;
    }
    const struct llama_vocab *vocab = llama_model_get_vocab(model);
    int32_t n_tok = -llama_tokenize(vocab, text, (int32_t)len, NULL, 0, true, false);
    llama_token *tok = malloc((size_t)n_tok * sizeof *tok);
    n_tok = llama_tokenize(vocab, text, (int32_t)len, tok, n_tok, true, false);
    st.dump_dir = getenv("ORACLE_DUMP_DIR");
    if (st.dump_dir) {
        char ip[1024];
        snprintf(ip, sizeof ip, "%s/index", st.dump_dir);
        st.index = fopen(ip, "w");
        st.dump_dir = st.index ? st.dump_dir : NULL;
    }
    st.first_decode = true;
    struct llama_context_params cp = llama_context_default_params();
    cp.n_ctx = (uint32_t)(n_ctx * n_seq);
    cp.n_batch = cp.n_ubatch = (uint32_t)(n_ctx * n_seq);
    cp.n_seq_max = (uint32_t)n_seq;
    cp.n_threads = cp.n_threads_batch = 2;
    cp.flash_attn_type = LLAMA_FLASH_ATTN_TYPE_DISABLED;
    cp.cb_eval = im_eval;
    cp.cb_eval_user_data = &st;
    struct llama_context *ctx = llama_init_from_model(model, cp);
    struct llama_batch b = llama_batch_init(n_ctx * n_seq, 0, 1);
    const int n_chunk = n_tok / n_ctx;
    int rc = ctx && tok ? 0 : 1;
    for (int c = 0; c < n_chunk && rc == 0 && (c == 0 || !st.dump_dir); c += n_seq) {
        llama_memory_clear(llama_get_memory(ctx), true);
        b.n_tokens = 0;
        for (int s = 0; s < n_seq && c + s < n_chunk; s++)
            for (int i = 0; i < n_ctx; i++) {
                const int k = b.n_tokens++;
                b.token[k] = i == 0 ? llama_vocab_bos(vocab) : tok[(c + s) * n_ctx + i];
                b.pos[k] = i;
                b.n_seq_id[k] = 1;
                b.seq_id[k][0] = s;
                b.logits[k] = 1;
            }
        rc = llama_decode(ctx, b) != 0;
        st.first_decode = false;
    }
    if (rc == 0)
        rc = im_save(&st, out_path, text_path, n_chunk);
    else
        fprintf(stderr, "llama_oracle: imatrix: decode failed\n");
    if (st.index)
        fclose(st.index);
    llama_batch_free(b);
    if (ctx)
        llama_free(ctx);
    llama_model_free(model);
    free(tok);
    free(text);
    return rc;
}

/* Perplexity as llama-perplexity computes it, one chunk per decode. */
static int cmd_ppl(const char *model_path, const char *text_path, int n_ctx) {
    size_t len = 0;
    char *text = read_text(text_path, &len);
    struct llama_model_params mp = llama_model_default_params();
    mp.n_gpu_layers = 0;
    mp.use_extra_bufts = !getenv("LLAMA_ORACLE_NO_REPACK");
    struct llama_model *model = text ? llama_model_load_from_file(model_path, mp) : NULL;
    if (!model || n_ctx < 4) {
        fprintf(stderr, "llama_oracle: ppl: bad arguments\n");
        free(text);
        return 2;
    }
    const struct llama_vocab *vocab = llama_model_get_vocab(model);
    int32_t n_tok = -llama_tokenize(vocab, text, (int32_t)len, NULL, 0, true, false);
    llama_token *tok = malloc((size_t)n_tok * sizeof *tok);
    n_tok = tok ? llama_tokenize(vocab, text, (int32_t)len, tok, n_tok, true, false) : 0;
    struct llama_context_params cp = llama_context_default_params();
    cp.n_ctx = cp.n_batch = cp.n_ubatch = (uint32_t)n_ctx;
    cp.n_threads = cp.n_threads_batch = 2;
    cp.flash_attn_type = LLAMA_FLASH_ATTN_TYPE_DISABLED;
    struct llama_context *ctx = llama_init_from_model(model, cp);
    struct llama_batch b = llama_batch_init(n_ctx, 0, 1);
    const int32_t n_vocab = llama_vocab_n_tokens(vocab);
    double nll = 0;
    long count = 0;
    int rc = ctx && tok ? 0 : 1;
    for (int c = 0; c < n_tok / n_ctx && rc == 0; c++) {
        llama_memory_clear(llama_get_memory(ctx), true);
        b.n_tokens = n_ctx;
        for (int i = 0; i < n_ctx; i++) {
            b.token[i] = i == 0 ? llama_vocab_bos(vocab) : tok[c * n_ctx + i];
            b.pos[i] = i;
            b.n_seq_id[i] = 1;
            b.seq_id[i][0] = 0;
            b.logits[i] = 1;
        }
        rc = llama_decode(ctx, b) != 0;
        for (int j = n_ctx / 2; j < n_ctx - 1 && rc == 0; j++) {
            const float *l = llama_get_logits_ith(ctx, j);
            float mx = l[0];
            for (int32_t v = 1; v < n_vocab; v++)
                mx = l[v] > mx ? l[v] : mx;
            double sum = 0;
            for (int32_t v = 0; v < n_vocab; v++)
                sum += exp((double)(l[v] - mx));
            nll -= (double)(l[tok[c * n_ctx + j + 1]] - mx) - log(sum);
            count++;
        }
    }
    if (rc == 0 && count > 0)
        printf("PPL = %.4f\n", exp(nll / (double)count));
    else
        fprintf(stderr, "llama_oracle: ppl: decode failed\n");
    llama_batch_free(b);
    if (ctx)
        llama_free(ctx);
    llama_model_free(model);
    free(tok);
    free(text);
    return rc;
}

int main(int argc, char **argv) {
    const char *bins = getenv("LLAMA_ORACLE_BACKENDS");
    llama_log_set(quiet_log, NULL);
    if (argc >= 2 && strcmp(argv[1], "compare") != 0) {
        if (bins)
            ggml_backend_load_all_from_path(bins);
        else
            ggml_backend_load_all();
        llama_backend_init();
    }
    int rc = 2;
    if ((argc == 5 || argc == 7) && !strcmp(argv[1], "logits"))
        rc = cmd_logits(argv[2], argv[3], argv[4], argc == 7 ? argv[5] : NULL,
                        argc == 7 ? strtof(argv[6], NULL) : 0.0f);
    else if ((argc == 5 || argc == 6) && !strcmp(argv[1], "quantize"))
        rc = cmd_quantize(argv[2], argv[3], argv[4], argc == 6 && !strcmp(argv[5], "pure"));
    else if (argc == 5 && !strcmp(argv[1], "ppl"))
        rc = cmd_ppl(argv[2], argv[3], atoi(argv[4]));
    else if (argc == 7 && !strcmp(argv[1], "imatrix"))
        rc = cmd_imatrix(argv[2], argv[3], atoi(argv[4]), atoi(argv[5]), argv[6]);
    else if ((argc == 6 || argc == 7) && !strcmp(argv[1], "compare"))
        return cmd_compare(argv[2], argv[3], atol(argv[4]), argv[5], argc == 7 ? argv[6] : argv[2]);
    else
        fprintf(stderr, "usage: llama_oracle logits MODEL TOKENS OUT [LORA SCALE] | quantize IN OUT FTYPE "
                        "[pure] | imatrix MODEL TEXT N_CTX N_SEQ OUT | ppl MODEL TEXT N_CTX | compare A B "
                        "N_VOCAB TOL [NAME]\n");
    if (argc >= 2)
        llama_backend_free();
    return rc;
}
