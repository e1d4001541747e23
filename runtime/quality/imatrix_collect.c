#include "runtime/quality/imatrix_collect.h"

#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "formats/gguf/cursor.h"
#include "formats/quant/fp16.h"
#include "formats/gguf/gguf.h"
#include "formats/base/log.h"
#include "runtime/quality/outfile.h"

typedef struct im_entry {
    char *name;
    int64_t n_in, n_mat; /* columns; matrices (experts, or 1) */
    bool stacked;
    float *sum;          /* n_in * n_mat, expert-major */
    int64_t *count;      /* rows per matrix */
    int32_t ncall;
    int64_t last_call;   /* decode that last counted a call (stacked) */
} im_entry;

struct moe_imatrix_collector {
    bool process_output;
    int32_t n_expert;
    im_entry *e;
    int64_t n, cap, hint;
    int64_t call;        /* decodes begun */
    moe_err err;         /* first error the observer met */
};

moe_status moe_imatrix_collector_create(bool process_output, int32_t n_expert,
                                        moe_imatrix_collector **out, moe_err *err) {
    *out = calloc(1, sizeof **out);
    MOE_FAIL_IF(!*out, err, MOE_ERR_NOMEM, "out of memory");
    (*out)->process_output = process_output;
    (*out)->n_expert = n_expert > 0 ? n_expert : 0;
    return MOE_OK;
}

void moe_imatrix_collector_free(moe_imatrix_collector *c) {
    if (!c)
        return;
    for (int64_t i = 0; i < c->n; i++) {
        free(c->e[i].name);
        free(c->e[i].sum);
        free(c->e[i].count);
    }
    free(c->e);
    free(c);
}

void moe_imatrix_collector_begin_call(moe_imatrix_collector *c) { c->call++; }

moe_status moe_imatrix_collector_status(const moe_imatrix_collector *c, moe_err *err) {
    if (c->err.code != MOE_OK && err)
        *err = c->err;
    return c->err.code;
}

int64_t moe_imatrix_collector_n_entries(const moe_imatrix_collector *c) { return c->n; }

int32_t moe_imatrix_collector_n_calls(const moe_imatrix_collector *c) {
    int32_t m = 0;
    for (int64_t i = 0; i < c->n; i++)
        if (c->e[i].ncall > m)
            m = c->e[i].ncall;
    return m;
}

/* The entry of name: products come in the same graph order every decode, so
 * the one after the last hit (or the last hit itself, for experts) is tried
 * first. NULL if absent. */
static im_entry *find(moe_imatrix_collector *c, const char *name) {
    for (int64_t k = 0; k < c->n; k++) {
        int64_t i = (c->hint + k) % c->n;
        if (!strcmp(c->e[i].name, name)) {
            c->hint = i;
            return &c->e[i];
        }
    }
    return NULL;
}

static im_entry *add(moe_imatrix_collector *c, const char *name, int64_t n_in, bool stacked,
                     int64_t n_mat) {
    if (c->n == c->cap) {
        int64_t cap = c->cap ? c->cap * 2 : 64;
        im_entry *ne = realloc(c->e, (size_t)cap * sizeof *ne);
        if (!ne)
            return NULL;
        c->e = ne;
        c->cap = cap;
    }
    im_entry *e = &c->e[c->n];
    *e = (im_entry){.name = strdup(name), .n_in = n_in, .n_mat = n_mat, .stacked = stacked,
                    .sum = calloc((size_t)(n_in * n_mat), sizeof(float)),
                    .count = calloc((size_t)n_mat, sizeof(int64_t)), .last_call = -1};
    if (!e->name || !e->sum || !e->count) {
        free(e->name);
        free(e->sum);
        free(e->count);
        return NULL;
    }
    c->hint = c->n;
    c->n++;
    return e;
}

/* Grows a stacked entry to n_mat slices (expert count unknown up front). */
static bool grow(im_entry *e, int64_t n_mat) {
    float *ns = realloc(e->sum, (size_t)(e->n_in * n_mat) * sizeof *ns);
    if (!ns)
        return false;
    e->sum = ns;
    int64_t *nc = realloc(e->count, (size_t)n_mat * sizeof *nc);
    if (!nc)
        return false;
    e->count = nc;
    memset(e->sum + e->n_in * e->n_mat, 0, (size_t)(e->n_in * (n_mat - e->n_mat)) * sizeof(float));
    memset(e->count + e->n_mat, 0, (size_t)(n_mat - e->n_mat) * sizeof(int64_t));
    e->n_mat = n_mat;
    return true;
}

static bool wanted(const moe_imatrix_collector *c, const char *tensor, int32_t expert,
                   int64_t n_rows) {
    bool named = !strncmp(tensor, "blk.", 4) ||
                 (c->process_output && !strcmp(tensor, "output.weight"));
    return named && (expert >= 0 || n_rows >= MOE_IMATRIX_MIN_ROWS);
}

/* The entry for this product, created or grown as needed; NULL after
 * recording an error. */
static im_entry *entry_for(moe_imatrix_collector *c, const char *tensor, int32_t expert,
                           int64_t n_in) {
    const bool stacked = expert >= 0;
    im_entry *e = find(c, tensor);
    if (!e) {
        int64_t n_mat = !stacked ? 1 : c->n_expert > expert ? c->n_expert : expert + 1;
        e = add(c, tensor, n_in, stacked, n_mat);
        if (!e)
            moe_fail(&c->err, MOE_ERR_NOMEM, "out of memory for '%s'", tensor);
        return e;
    }
    if (e->n_in != n_in || e->stacked != stacked) {
        moe_fail(&c->err, MOE_ERR_INTERNAL, "inconsistent sizes for '%s' (%" PRId64 " vs %" PRId64
                 " columns)", tensor, e->n_in, n_in);
        return NULL;
    }
    if (stacked && expert >= e->n_mat) {
        if (c->n_expert > 0) {
            moe_fail(&c->err, MOE_ERR_INTERNAL, "'%s': expert %" PRId32 " of %" PRId32, tensor,
                     expert, c->n_expert);
            return NULL;
        }
        if (!grow(e, expert + 1)) {
            moe_fail(&c->err, MOE_ERR_NOMEM, "out of memory for '%s'", tensor);
            return NULL;
        }
    }
    return e;
}

void moe_imatrix_observe(void *user, const char *tensor, int32_t expert, const float *x,
                         int64_t n_in, int64_t n_rows) {
    moe_imatrix_collector *c = user;
    if (c->err.code != MOE_OK || !wanted(c, tensor, expert, n_rows) || n_rows < 1)
        return;
    im_entry *e = entry_for(c, tensor, expert, n_in);
    if (!e)
        return;
    if (expert < 0)
        e->ncall++;
    else if (e->last_call != c->call) {
        e->ncall++;
        e->last_call = c->call;
    }
    const int64_t m = expert < 0 ? 0 : expert;
    float *sum = e->sum + m * n_in;
    for (int64_t r = 0; r < n_rows; r++) {
        const float *xr = x + r * n_in;
        for (int64_t j = 0; j < n_in; j++)
            sum[j] += xr[j] * xr[j];
    }
    e->count[m] += n_rows;
    for (int64_t j = 0; j < n_in; j++)
        if (!isfinite(sum[j])) {
            moe_fail(&c->err, MOE_ERR_FORMAT, "non-finite activations in '%s' (column %" PRId64
                     ")", tensor, j);
            return;
        }
}

static int64_t empty_mats(const im_entry *e) {
    int64_t z = 0;
    for (int64_t m = 0; m < e->n_mat; m++)
        z += e->count[m] == 0;
    return z;
}

static moe_status put_i32(moe_outfile *o, int32_t v, moe_err *err) {
    uint8_t b[4];
    moe_store_le32(b, (uint32_t)v);
    return moe_outfile_write(o, b, 4, err);
}

static moe_status write_dat_entry(moe_outfile *o, const im_entry *e, moe_err *err) {
    const int64_t nval = e->n_in * e->n_mat;
    MOE_FAIL_IF(nval > INT32_MAX, err, MOE_ERR_UNSUPPORTED, "'%s': too many values for .dat",
                e->name);
    MOE_TRY(put_i32(o, (int32_t)strlen(e->name), err));
    MOE_TRY(moe_outfile_write(o, e->name, strlen(e->name), err));
    MOE_TRY(put_i32(o, e->ncall, err));
    MOE_TRY(put_i32(o, (int32_t)nval, err));
    uint8_t *buf = malloc((size_t)e->n_in * 4);
    MOE_FAIL_IF(!buf, err, MOE_ERR_NOMEM, "out of memory");
    moe_status st = MOE_OK;
    for (int64_t m = 0; m < e->n_mat && st == MOE_OK; m++) {
        for (int64_t j = 0; j < e->n_in; j++) {
            float v = e->sum[m * e->n_in + j] / (float)e->count[m] * (float)e->ncall;
            moe_store_le32(buf + 4 * j, moe_f32_to_bits(v));
        }
        st = moe_outfile_write(o, buf, (size_t)e->n_in * 4, err);
    }
    free(buf);
    return st;
}

static moe_status write_dat(const moe_imatrix_collector *c, moe_outfile *o, const char *dataset,
                            int64_t *n_written, moe_err *err) {
    int32_t n_keep = 0;
    for (int64_t i = 0; i < c->n; i++) {
        int64_t z = empty_mats(&c->e[i]);
        if (z == 0)
            n_keep++;
        else
            MOE_WARN("entry '%s' has %s data (%" PRId64 " of %" PRId64 " experts without rows): "
                     "left out of the .dat, as llama-imatrix does", c->e[i].name,
                     z == c->e[i].n_mat ? "no" : "partial", z, c->e[i].n_mat);
    }
    MOE_TRY(put_i32(o, n_keep, err));
    for (int64_t i = 0; i < c->n; i++)
        if (empty_mats(&c->e[i]) == 0)
            MOE_TRY(write_dat_entry(o, &c->e[i], err));
    MOE_TRY(put_i32(o, moe_imatrix_collector_n_calls(c), err));
    size_t dl = dataset ? strlen(dataset) : 0;
    MOE_TRY(put_i32(o, (int32_t)dl, err));
    if (dl)
        MOE_TRY(moe_outfile_write(o, dataset, dl, err));
    if (n_written)
        *n_written = n_keep;
    return MOE_OK;
}

moe_status moe_imatrix_save_dat(const moe_imatrix_collector *c, const char *path,
                                const char *dataset, int64_t *n_written, moe_err *err) {
    MOE_TRY(moe_imatrix_collector_status(c, err));
    moe_outfile o;
    MOE_TRY(moe_outfile_open(&o, path, err));
    moe_status st = write_dat(c, &o, dataset, n_written, err);
    if (st != MOE_OK) {
        moe_outfile_abort(&o);
        return st;
    }
    return moe_outfile_commit(&o, err);
}

static moe_status gguf_meta(moe_gguf_writer *w, const moe_imatrix_collector *c,
                            const char *dataset, int32_t chunk_size, moe_err *err) {
    MOE_TRY(moe_gguf_writer_set_str(w, "general.type", "imatrix", err));
    MOE_TRY(moe_gguf_writer_set_u32(w, "imatrix.chunk_count",
                                    (uint32_t)moe_imatrix_collector_n_calls(c), err));
    MOE_TRY(moe_gguf_writer_set_u32(w, "imatrix.chunk_size", (uint32_t)chunk_size, err));
    const char *ds[1] = {dataset ? dataset : ""};
    MOE_TRY(moe_gguf_writer_set_arr_str(w, "imatrix.datasets", ds, 1, err));
    for (int64_t i = 0; i < c->n; i++) {
        const im_entry *e = &c->e[i];
        if (empty_mats(e) == e->n_mat)
            continue;
        char name[MOE_GGUF_MAX_NAME + 16];
        snprintf(name, sizeof name, "%s.in_sum2", e->name);
        MOE_TRY(moe_gguf_writer_add_tensor(w, name, MOE_TYPE_F32, 2,
                                           (const int64_t[4]){e->n_in, e->n_mat, 1, 1}, err));
        snprintf(name, sizeof name, "%s.counts", e->name);
        MOE_TRY(moe_gguf_writer_add_tensor(w, name, MOE_TYPE_F32, 2,
                                           (const int64_t[4]){1, e->n_mat, 1, 1}, err));
    }
    return moe_gguf_writer_begin_data(w, err);
}

static moe_status write_f32s(moe_gguf_writer *w, const float *v, const int64_t *iv, int64_t n,
                             moe_err *err) {
    uint8_t b[4 * 256];
    for (int64_t i = 0; i < n;) {
        int64_t k = 0;
        for (; k < 256 && i < n; k++, i++)
            moe_store_le32(b + 4 * k, moe_f32_to_bits(v ? v[i] : (float)iv[i]));
        MOE_TRY(moe_gguf_writer_write(w, b, (size_t)k * 4, err));
    }
    return MOE_OK;
}

moe_status moe_imatrix_save_gguf(const moe_imatrix_collector *c, const char *path,
                                 const char *dataset, int32_t chunk_size, moe_err *err) {
    MOE_TRY(moe_imatrix_collector_status(c, err));
    moe_gguf_writer *w = NULL;
    const moe_gguf_writer_opts opts = {.overwrite = true};
    MOE_TRY(moe_gguf_writer_create(path, &opts, &w, err));
    moe_status st = gguf_meta(w, c, dataset, chunk_size, err);
    for (int64_t i = 0; i < c->n && st == MOE_OK; i++) {
        const im_entry *e = &c->e[i];
        if (empty_mats(e) == e->n_mat)
            continue;
        st = write_f32s(w, e->sum, NULL, e->n_in * e->n_mat, err);
        if (st == MOE_OK)
            st = write_f32s(w, NULL, e->count, e->n_mat, err);
    }
    if (st != MOE_OK) {
        moe_gguf_writer_abort(w);
        return st;
    }
    return moe_gguf_writer_finish(w, err);
}
