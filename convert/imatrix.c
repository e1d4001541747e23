#include "convert/imatrix.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "formats/gguf/cursor.h"
#include "formats/quant/fp16.h"
#include "formats/gguf/gguf.h"

/* Importance matrices are megabytes; this bounds what a wrong path can make us
 * allocate. */
#define IMATRIX_MAX_BYTES (4ULL << 30)

static moe_status read_whole(const char *path, uint8_t **data, size_t *len, moe_err *err) {
    FILE *f = fopen(path, "rb");
    MOE_FAIL_IF(!f, err, MOE_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    struct stat sb = {0};
    if (fstat(fileno(f), &sb) != 0 || !S_ISREG(sb.st_mode) ||
        (uint64_t)sb.st_size > IMATRIX_MAX_BYTES) {
        fclose(f);
        return moe_fail(err, MOE_ERR_USAGE, "%s: not an importance matrix (%s)", path,
                        S_ISDIR(sb.st_mode)   ? "a directory"
                        : !S_ISREG(sb.st_mode) ? "not a regular file"
                                               : "larger than 4 GiB");
    }
    size_t n = (size_t)sb.st_size;
    uint8_t *buf = malloc(n + 1);
    bool ok = buf && fread(buf, 1, n, f) == n;
    fclose(f);
    if (!ok) {
        free(buf);
        return moe_fail(err, MOE_ERR_IO, "%s: cannot read", path);
    }
    *data = buf;
    *len = (size_t)n;
    return MOE_OK;
}

/* Legacy layout: i32 n; n x {i32 len; name; i32 ncall; i32 nval; f32[nval]}
 * then optionally i32 chunks; i32 len; dataset name. Stored values are
 * mean(x^2) * ncall; llama-quantize divides by ncall. */
static moe_status parse_dat(moe_imatrix *im, const uint8_t *data, size_t len, moe_err *err) {
    moe_cursor c = moe_cursor_make(data, len);
    int32_t n;
    MOE_TRY(moe_cursor_i32(&c, &n, "entry count", err));
    MOE_FAIL_IF(n < 0 || (uint64_t)n > moe_cursor_left(&c) / 12, err, MOE_ERR_FORMAT,
                "entry count %d does not fit the file", n);
    MOE_FAIL_IF(n == 0, err, MOE_ERR_FORMAT, "no entries: not an importance matrix");
    im->entries = calloc(n ? (size_t)n : 1, sizeof *im->entries);
    MOE_FAIL_IF(!im->entries, err, MOE_ERR_NOMEM, "out of memory");
    for (int32_t i = 0; i < n; i++) {
        moe_imatrix_entry *e = &im->entries[i];
        int32_t name_len = 0, ncall = 0, nval = 0;
        const uint8_t *name = NULL;
        MOE_TRY(moe_cursor_i32(&c, &name_len, "name length", err));
        MOE_FAIL_IF(name_len <= 0 || name_len > 4096, err, MOE_ERR_FORMAT,
                    "entry %d: name length %d", i, name_len);
        MOE_TRY(moe_cursor_bytes(&c, (uint64_t)name_len, &name, "name", err));
        e->name = strndup((const char *)name, (size_t)name_len);
        MOE_FAIL_IF(!e->name, err, MOE_ERR_NOMEM, "out of memory");
        im->n_entries++;
        MOE_TRY(moe_cursor_i32(&c, &ncall, "ncall", err));
        MOE_TRY(moe_cursor_i32(&c, &nval, "nval", err));
        MOE_FAIL_IF(nval <= 0 || (uint64_t)nval > moe_cursor_left(&c) / 4, err, MOE_ERR_FORMAT,
                    "entry '%s': %d values do not fit the file", e->name, nval);
        e->n = nval;
        e->values = malloc((size_t)nval * sizeof *e->values);
        MOE_FAIL_IF(!e->values, err, MOE_ERR_NOMEM, "out of memory");
        for (int32_t k = 0; k < nval; k++) {
            uint32_t bits;
            moe_cursor_u32(&c, &bits, "value", err);
            e->values[k] = moe_bits_to_f32(bits);
            if (ncall > 0)
                e->values[k] /= (float)ncall;
        }
    }
    /* the trailer (chunks, dataset name) is optional, but when bytes follow the
     * entries they must be exactly one whole trailer: anything else is a cut
     * or damaged file */
    uint64_t rest = moe_cursor_left(&c);
    if (rest == 0)
        return MOE_OK;
    int32_t chunks = 0, dlen = 0;
    const uint8_t *ds = NULL;
    MOE_FAIL_IF(!(rest >= 8 && moe_cursor_i32(&c, &chunks, "chunks", NULL) == MOE_OK &&
                  moe_cursor_i32(&c, &dlen, "dataset length", NULL) == MOE_OK && dlen >= 0 &&
                  moe_cursor_bytes(&c, (uint64_t)dlen, &ds, "dataset", NULL) == MOE_OK &&
                  moe_cursor_left(&c) == 0),
                err, MOE_ERR_FORMAT,
                "%llu bytes after the %d entries are not a whole trailer (chunk count, dataset "
                "name): truncated or damaged file",
                (unsigned long long)rest, n);
    im->chunks = chunks;
    im->dataset = strndup((const char *)ds, (size_t)dlen);
    return MOE_OK;
}

/* GGUF layout: <w>.in_sum2 [ne0, n_mat] and <w>.counts [1, n_mat], f32;
 * mean(x^2) = in_sum2 / counts per matrix. */
static moe_status parse_gguf(moe_imatrix *im, const uint8_t *data, size_t len, moe_err *err) {
    moe_gguf *g;
    MOE_TRY(moe_gguf_parse(data, len, len, &g, err));
    moe_status st = MOE_OK;
    im->entries = calloc(g->n_tensors ? g->n_tensors : 1, sizeof *im->entries);
    if (!im->entries)
        st = moe_fail(err, MOE_ERR_NOMEM, "out of memory");
    for (uint64_t i = 0; i < g->n_tensors && st == MOE_OK; i++) {
        const moe_gguf_tensor *s = &g->tensors[i];
        size_t nl = strlen(s->name);
        if (nl < 8 || strcmp(s->name + nl - 8, ".in_sum2") != 0)
            continue;
        char cname[MOE_GGUF_MAX_NAME + 8];
        snprintf(cname, sizeof cname, "%.*s.counts", (int)(nl - 8), s->name);
        int64_t ci = moe_gguf_find_tensor(g, cname);
        const moe_gguf_tensor *c = ci >= 0 ? &g->tensors[ci] : NULL;
        if (!c || s->type != MOE_TYPE_F32 || c->type != MOE_TYPE_F32 || c->ne[0] != 1 ||
            c->ne[1] != s->ne[1]) {
            st = moe_fail(err, MOE_ERR_FORMAT, "'%s' has no matching f32 '%s'", s->name, cname);
            break;
        }
        moe_imatrix_entry *e = &im->entries[im->n_entries++];
        e->name = strndup(s->name, nl - 8);
        e->n = s->ne[0] * s->ne[1];
        e->values = malloc((size_t)e->n * sizeof *e->values);
        if (!e->name || !e->values) {
            st = moe_fail(err, MOE_ERR_NOMEM, "out of memory");
            break;
        }
        const uint8_t *sum = data + g->data_offset + s->offset;
        const uint8_t *cnt = data + g->data_offset + c->offset;
        for (int64_t m = 0; m < s->ne[1]; m++) {
            float count = moe_bits_to_f32(moe_load_le32(cnt + 4 * m));
            for (int64_t k = 0; k < s->ne[0]; k++) {
                float v = moe_bits_to_f32(moe_load_le32(sum + 4 * (m * s->ne[0] + k)));
                e->values[m * s->ne[0] + k] = count > 0 ? v / count : 0.0f;
            }
        }
    }
    if (st == MOE_OK && im->n_entries == 0)
        st = moe_fail(err, MOE_ERR_FORMAT, "a GGUF file without importance-matrix entries (no "
                      "'*.in_sum2' tensors; is it a model?)");
    int64_t chunks = -1;
    if (st == MOE_OK && moe_gguf_get_int(g, "imatrix.chunk_count", &chunks, NULL) == MOE_OK)
        im->chunks = chunks;
    moe_gguf_free(g);
    return st;
}

moe_status moe_imatrix_load(const char *path, moe_imatrix **out, moe_err *err) {
    *out = NULL;
    uint8_t *data = NULL;
    size_t len = 0;
    MOE_TRY(read_whole(path, &data, &len, err));
    moe_imatrix *im = calloc(1, sizeof *im);
    moe_status st = im ? MOE_OK : moe_fail(err, MOE_ERR_NOMEM, "out of memory");
    if (st == MOE_OK) {
        im->chunks = -1;
        im->path = strdup(path);
        st = len >= 4 && !memcmp(data, "GGUF", 4) ? parse_gguf(im, data, len, err)
                                                  : parse_dat(im, data, len, err);
    }
    free(data);
    if (st != MOE_OK) {
        moe_err_prefix(err, "%s", path);
        moe_imatrix_free(im);
        return st;
    }
    *out = im;
    return MOE_OK;
}

void moe_imatrix_free(moe_imatrix *im) {
    if (!im)
        return;
    for (int64_t i = 0; i < im->n_entries; i++) {
        free(im->entries[i].name);
        free(im->entries[i].values);
    }
    free(im->entries);
    free(im->dataset);
    free(im->path);
    free(im);
}

const moe_imatrix_entry *moe_imatrix_find(const moe_imatrix *im, const char *name) {
    for (int64_t i = 0; im && i < im->n_entries; i++)
        if (!strcmp(im->entries[i].name, name))
            return &im->entries[i];
    return NULL;
}
