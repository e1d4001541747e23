/* Streaming GGUF writer: metadata and tensor infos are collected first, then
 * tensor bytes stream through a fixed buffer into a temp file that is renamed
 * over the destination only after everything was written and fsynced. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

#include "formats/base/checked.h"
#include "formats/gguf/cursor.h"
#include "formats/quant/fp16.h"
#include "formats/gguf/gguf.h"
#include "formats/base/strmap.h"
#include "formats/base/tempfile.h"

/* Small writes (headers, padding, small tensors) gather in the buffer; writes
 * of at least DIRECT_WRITE bytes go straight to write() without a copy. */
enum { WRITE_BUFFER = 8 << 20, DIRECT_WRITE = 256 << 10 };

typedef struct wkv {
    char *key;
    moe_gguf_vtype type;
    uint8_t *raw; /* encoded value after the type tag */
    uint64_t raw_len;
} wkv;

typedef struct wtensor {
    char *name;
    uint32_t n_dims;
    int64_t ne[4];
    moe_type type;
    uint64_t nbytes;
    uint64_t offset;
} wtensor;

struct moe_gguf_writer {
    char *path;
    moe_output out;       /* fd and publication (formats/base/tempfile.h) */
    uint64_t written;     /* bytes written to out.fd so far */
    moe_gguf_writer_opts opts;
    wkv *kv;
    uint64_t n_kv;
    size_t cap_kv;
    wtensor *t;
    uint64_t n_t;
    size_t cap_t;
    moe_strmap tensor_names;
    uint32_t alignment;
    bool data_started;
    uint64_t cur;         /* tensor receiving bytes */
    uint64_t cur_written; /* bytes of it written so far */
    uint64_t checksum_pos; /* absolute offset of the checksum array's first u64 */
    uint8_t *buf;
    size_t buf_len;
    XXH3_state_t *state;
    uint64_t *hashes;
};

/* ---- plumbing --------------------------------------------------------------- */

static moe_status write_all(moe_gguf_writer *w, const void *p, size_t n, moe_err *err) {
    const uint8_t *b = p;
    while (n > 0) {
        ssize_t k = write(w->out.fd, b, n);
        if (k < 0 && errno == EINTR)
            continue;
        if (k < 0)
            return moe_fail(err, MOE_ERR_IO, "%s: write failed: %s", w->path, strerror(errno));
        b += k;
        n -= (size_t)k;
        w->written += (uint64_t)k;
    }
    return MOE_OK;
}

static moe_status flush(moe_gguf_writer *w, moe_err *err) {
    moe_status st = write_all(w, w->buf, w->buf_len, err);
    w->buf_len = 0;
    return st;
}

static moe_status put(moe_gguf_writer *w, const void *p, size_t n, moe_err *err) {
    const uint8_t *b = p;
    if (n >= DIRECT_WRITE) {
        MOE_TRY(flush(w, err));
        return write_all(w, b, n, err);
    }
    while (n > 0) {
        size_t take = WRITE_BUFFER - w->buf_len < n ? WRITE_BUFFER - w->buf_len : n;
        memcpy(w->buf + w->buf_len, b, take);
        w->buf_len += take;
        b += take;
        n -= take;
        if (w->buf_len == WRITE_BUFFER)
            MOE_TRY(flush(w, err));
    }
    return MOE_OK;
}

static moe_status put_zeros(moe_gguf_writer *w, uint64_t n, moe_err *err) {
    static const uint8_t zeros[256];
    while (n > 0) {
        size_t take = n < sizeof zeros ? (size_t)n : sizeof zeros;
        MOE_TRY(put(w, zeros, take, err));
        n -= take;
    }
    return MOE_OK;
}

/* ---- lifecycle --------------------------------------------------------------- */

moe_status moe_gguf_writer_create(const char *path, const moe_gguf_writer_opts *opts,
                                  moe_gguf_writer **out, moe_err *err) {
    *out = NULL;
    moe_gguf_writer *w = calloc(1, sizeof *w);
    MOE_FAIL_IF(!w, err, MOE_ERR_NOMEM, "out of memory");
    w->out.fd = -1;
    w->alignment = MOE_GGUF_DEFAULT_ALIGNMENT;
    if (opts)
        w->opts = *opts;
    w->path = strdup(path);
    w->buf = malloc(WRITE_BUFFER);
    w->state = XXH3_createState();
    if (!w->path || !w->buf || !w->state) {
        moe_gguf_writer_abort(w);
        return moe_fail(err, MOE_ERR_NOMEM, "out of memory");
    }
    unsigned flags = (w->opts.overwrite ? MOE_OUTPUT_OVERWRITE : 0) |
                     (w->opts.named_temp ? MOE_OUTPUT_NAMED_TEMP : 0);
    moe_status st = moe_output_open(&w->out, path, flags, err);
    /* the checksums are patched into the header after the data */
    if (st == MOE_OK && !w->out.seekable)
        st = moe_fail(err, MOE_ERR_USAGE,
                      "%s: a GGUF file cannot be streamed (its header is completed after the "
                      "data): write it to a file, a device or /dev/stdout redirected to a file",
                      path);
    if (st != MOE_OK) {
        moe_gguf_writer_abort(w);
        return st;
    }
    *out = w;
    return MOE_OK;
}

void moe_gguf_writer_abort(moe_gguf_writer *w) {
    if (!w)
        return;
    moe_output_abort(&w->out);
    for (uint64_t i = 0; i < w->n_kv; i++) {
        free(w->kv[i].key);
        free(w->kv[i].raw);
    }
    for (uint64_t i = 0; i < w->n_t; i++)
        free(w->t[i].name);
    moe_strmap_free(&w->tensor_names);
    XXH3_freeState(w->state);
    free(w->kv);
    free(w->t);
    free(w->hashes);
    free(w->buf);
    free(w->path);
    free(w);
}

const uint64_t *moe_gguf_writer_checksums(const moe_gguf_writer *w) { return w->hashes; }


/* ---- metadata ------------------------------------------------------------------ */

static int64_t find_kv(const moe_gguf_writer *w, const char *key) {
    for (uint64_t i = 0; i < w->n_kv; i++)
        if (strcmp(w->kv[i].key, key) == 0)
            return (int64_t)i;
    return -1;
}

void moe_gguf_writer_remove_kv(moe_gguf_writer *w, const char *key) {
    int64_t i = find_kv(w, key);
    if (i < 0)
        return;
    free(w->kv[i].key);
    free(w->kv[i].raw);
    memmove(&w->kv[i], &w->kv[i + 1], (w->n_kv - (uint64_t)i - 1) * sizeof *w->kv);
    w->n_kv--;
}

/* Takes ownership of raw (freed on failure too). */
static moe_status set_raw(moe_gguf_writer *w, const char *key, moe_gguf_vtype type, uint8_t *raw,
                          uint64_t raw_len, moe_err *err) {
    if (w->data_started) {
        free(raw);
        return moe_fail(err, MOE_ERR_INTERNAL, "metadata set after the data section started");
    }
    if (strcmp(key, MOE_GGUF_XXH3_KEY) == 0) { /* the writer owns this key */
        free(raw);
        return MOE_OK;
    }
    if (strcmp(key, "general.alignment") == 0) {
        uint32_t a = raw_len == 4 ? moe_load_le32(raw) : 0;
        if (type != MOE_GGUF_U32 || a == 0 || (a & (a - 1)) != 0) {
            free(raw);
            return moe_fail(err, MOE_ERR_USAGE, "general.alignment must be a u32 power of two");
        }
        w->alignment = a;
    }
    int64_t i = find_kv(w, key);
    if (i >= 0) {
        free(w->kv[i].raw);
    } else {
        wkv *nk = moe_grow(w->kv, &w->cap_kv, w->n_kv + 1, 32, sizeof *nk);
        if (!nk) {
            free(raw);
            return moe_fail(err, MOE_ERR_NOMEM, "out of memory");
        }
        w->kv = nk;
        i = (int64_t)w->n_kv;
        w->kv[i].key = strdup(key);
        if (!w->kv[i].key) {
            free(raw);
            return moe_fail(err, MOE_ERR_NOMEM, "out of memory");
        }
        w->n_kv++;
    }
    w->kv[i].type = type;
    w->kv[i].raw = raw;
    w->kv[i].raw_len = raw_len;
    return MOE_OK;
}

static moe_status set_copy(moe_gguf_writer *w, const char *key, moe_gguf_vtype type,
                           const void *raw, uint64_t raw_len, moe_err *err) {
    uint8_t *copy = malloc(raw_len ? (size_t)raw_len : 1);
    MOE_FAIL_IF(!copy, err, MOE_ERR_NOMEM, "out of memory");
    memcpy(copy, raw, (size_t)raw_len);
    return set_raw(w, key, type, copy, raw_len, err);
}

moe_status moe_gguf_writer_copy_kv(moe_gguf_writer *w, const moe_gguf_kv *kv, moe_err *err) {
    return set_copy(w, kv->key, kv->type, kv->raw, kv->raw_len, err);
}

moe_status moe_gguf_writer_set_str(moe_gguf_writer *w, const char *key, const char *val,
                                   moe_err *err) {
    size_t n = strlen(val);
    uint8_t *raw = malloc(8 + n);
    MOE_FAIL_IF(!raw, err, MOE_ERR_NOMEM, "out of memory");
    moe_store_le64(raw, n);
    memcpy(raw + 8, val, n);
    return set_raw(w, key, MOE_GGUF_STRING, raw, 8 + n, err);
}

moe_status moe_gguf_writer_set_u32(moe_gguf_writer *w, const char *key, uint32_t val,
                                   moe_err *err) {
    uint8_t raw[4];
    moe_store_le32(raw, val);
    return set_copy(w, key, MOE_GGUF_U32, raw, 4, err);
}

moe_status moe_gguf_writer_set_i32(moe_gguf_writer *w, const char *key, int32_t val,
                                   moe_err *err) {
    uint8_t raw[4];
    moe_store_le32(raw, (uint32_t)val);
    return set_copy(w, key, MOE_GGUF_I32, raw, 4, err);
}

moe_status moe_gguf_writer_set_u16(moe_gguf_writer *w, const char *key, uint16_t val,
                                   moe_err *err) {
    uint8_t raw[2];
    moe_store_le16(raw, val);
    return set_copy(w, key, MOE_GGUF_U16, raw, 2, err);
}

moe_status moe_gguf_writer_set_f32(moe_gguf_writer *w, const char *key, float val,
                                   moe_err *err) {
    uint8_t raw[4];
    moe_store_le32(raw, moe_f32_to_bits(val));
    return set_copy(w, key, MOE_GGUF_F32, raw, 4, err);
}

moe_status moe_gguf_writer_set_bool(moe_gguf_writer *w, const char *key, bool val,
                                    moe_err *err) {
    uint8_t raw = val ? 1 : 0;
    return set_copy(w, key, MOE_GGUF_BOOL, &raw, 1, err);
}

moe_status moe_gguf_writer_set_arr(moe_gguf_writer *w, const char *key, moe_gguf_vtype elem_type,
                                   uint64_t count, const void *le_data, moe_err *err) {
    size_t esize = moe_gguf_vtype_size(elem_type);
    MOE_FAIL_IF(esize == 0, err, MOE_ERR_USAGE, "key '%s': array element type %s is not numeric",
                key, moe_gguf_vtype_name(elem_type));
    uint64_t bytes;
    MOE_FAIL_IF(!moe_mul_u64(count, esize, &bytes) || bytes > SIZE_MAX - 12, err,
                MOE_ERR_USAGE, "key '%s': array too large", key);
    uint8_t *raw = malloc((size_t)bytes + 12);
    MOE_FAIL_IF(!raw, err, MOE_ERR_NOMEM, "out of memory");
    moe_store_le32(raw, (uint32_t)elem_type);
    moe_store_le64(raw + 4, count);
    memcpy(raw + 12, le_data, (size_t)bytes);
    return set_raw(w, key, MOE_GGUF_ARRAY, raw, bytes + 12, err);
}

moe_status moe_gguf_writer_set_arr_str(moe_gguf_writer *w, const char *key,
                                       const char *const *vals, uint64_t count, moe_err *err) {
    uint64_t bytes = 12;
    for (uint64_t i = 0; i < count; i++)
        bytes += 8 + strlen(vals[i]);
    uint8_t *raw = malloc((size_t)bytes);
    MOE_FAIL_IF(!raw, err, MOE_ERR_NOMEM, "out of memory");
    moe_store_le32(raw, MOE_GGUF_STRING);
    moe_store_le64(raw + 4, count);
    uint8_t *p = raw + 12;
    for (uint64_t i = 0; i < count; i++) {
        size_t n = strlen(vals[i]);
        moe_store_le64(p, n);
        memcpy(p + 8, vals[i], n);
        p += 8 + n;
    }
    return set_raw(w, key, MOE_GGUF_ARRAY, raw, bytes, err);
}

/* ---- tensors and header ------------------------------------------------------------- */

moe_status moe_gguf_writer_add_tensor(moe_gguf_writer *w, const char *name, moe_type type,
                                      uint32_t n_dims, const int64_t ne[4], moe_err *err) {
    MOE_FAIL_IF(w->data_started, err, MOE_ERR_INTERNAL, "tensor added after the data started");
    size_t len = strlen(name);
    MOE_FAIL_IF(len == 0 || len >= MOE_GGUF_MAX_NAME, err, MOE_ERR_USAGE,
                "tensor name '%s' must be 1..%d bytes", name, MOE_GGUF_MAX_NAME - 1);
    MOE_FAIL_IF(n_dims < 1 || n_dims > MOE_GGUF_MAX_DIMS, err, MOE_ERR_USAGE,
                "tensor '%s': n_dims %u (expected 1..4)", name, n_dims);
    wtensor *nt = moe_grow(w->t, &w->cap_t, w->n_t + 1, 64, sizeof *nt);
    MOE_FAIL_IF(!nt, err, MOE_ERR_NOMEM, "out of memory");
    w->t = nt;
    wtensor *t = &w->t[w->n_t];
    memset(t, 0, sizeof *t);
    for (int d = 0; d < 4; d++)
        t->ne[d] = (uint32_t)d < n_dims ? ne[d] : 1;
    moe_status st = moe_type_tensor_size(type, t->ne, &t->nbytes, err);
    if (st != MOE_OK) {
        moe_err_prefix(err, "tensor '%s'", name);
        return st;
    }
    t->name = strdup(name);
    MOE_FAIL_IF(!t->name, err, MOE_ERR_NOMEM, "out of memory");
    int64_t dup;
    st = moe_strmap_put(&w->tensor_names, t->name, (int64_t)w->n_t, &dup, err);
    if (st != MOE_OK || dup >= 0) {
        free(t->name);
        return st != MOE_OK ? st : moe_fail(err, MOE_ERR_USAGE, "duplicate tensor '%s'", name);
    }
    t->n_dims = n_dims;
    t->type = type;
    w->n_t++;
    return MOE_OK;
}

static moe_status put_u32(moe_gguf_writer *w, uint32_t v, moe_err *err) {
    uint8_t b[4];
    moe_store_le32(b, v);
    return put(w, b, 4, err);
}

static moe_status put_u64(moe_gguf_writer *w, uint64_t v, moe_err *err) {
    uint8_t b[8];
    moe_store_le64(b, v);
    return put(w, b, 8, err);
}

static moe_status put_str(moe_gguf_writer *w, const char *s, moe_err *err) {
    size_t n = strlen(s);
    MOE_TRY(put_u64(w, n, err));
    return put(w, s, n, err);
}

/* Position in the file the next byte put() will land at. */
static uint64_t out_pos(moe_gguf_writer *w) {
    return w->written + w->buf_len;
}

static moe_status put_checksum_kv(moe_gguf_writer *w, moe_err *err) {
    MOE_TRY(put_str(w, MOE_GGUF_XXH3_KEY, err));
    MOE_TRY(put_u32(w, MOE_GGUF_ARRAY, err));
    MOE_TRY(put_u32(w, MOE_GGUF_U64, err));
    MOE_TRY(put_u64(w, w->n_t, err));
    w->checksum_pos = out_pos(w);
    return put_zeros(w, 8 * w->n_t, err); /* patched in finish() */
}

moe_status moe_gguf_writer_begin_data(moe_gguf_writer *w, moe_err *err) {
    MOE_FAIL_IF(w->data_started, err, MOE_ERR_INTERNAL, "begin_data called twice");
    w->hashes = calloc(w->n_t ? w->n_t : 1, sizeof *w->hashes);
    MOE_FAIL_IF(!w->hashes, err, MOE_ERR_NOMEM, "out of memory");
    uint64_t off = 0;
    for (uint64_t i = 0; i < w->n_t; i++) {
        w->t[i].offset = off;
        uint64_t padded = 0;
        MOE_FAIL_IF(!moe_pad_u64(w->t[i].nbytes, w->alignment, &padded) ||
                        !moe_add_u64(off, padded, &off),
                    err, MOE_ERR_USAGE, "total tensor size overflows");
    }
    bool checksums = !w->opts.no_checksums;
    MOE_TRY(put(w, MOE_GGUF_MAGIC, 4, err));
    MOE_TRY(put_u32(w, MOE_GGUF_VERSION, err));
    MOE_TRY(put_u64(w, w->n_t, err));
    MOE_TRY(put_u64(w, w->n_kv + (checksums ? 1 : 0), err));
    for (uint64_t i = 0; i < w->n_kv; i++) {
        MOE_TRY(put_str(w, w->kv[i].key, err));
        MOE_TRY(put_u32(w, w->kv[i].type, err));
        MOE_TRY(put(w, w->kv[i].raw, (size_t)w->kv[i].raw_len, err));
    }
    if (checksums)
        MOE_TRY(put_checksum_kv(w, err));
    for (uint64_t i = 0; i < w->n_t; i++) {
        const wtensor *t = &w->t[i];
        MOE_TRY(put_str(w, t->name, err));
        MOE_TRY(put_u32(w, t->n_dims, err));
        for (uint32_t d = 0; d < t->n_dims; d++)
            MOE_TRY(put_u64(w, (uint64_t)t->ne[d], err));
        MOE_TRY(put_u32(w, (uint32_t)t->type, err));
        MOE_TRY(put_u64(w, t->offset, err));
    }
    uint64_t pos = out_pos(w), data_start = pos;
    moe_pad_u64(pos, w->alignment, &data_start);
    MOE_TRY(put_zeros(w, data_start - pos, err));
    w->data_started = true;
    XXH3_64bits_reset(w->state);
    return MOE_OK;
}

/* ---- data ------------------------------------------------------------------------ */

/* Closes the tensor receiving bytes once complete, and any zero-size tensors
 * after it: records its hash and pads to the alignment. */
static moe_status advance_full_tensors(moe_gguf_writer *w, moe_err *err) {
    while (w->cur < w->n_t && w->cur_written == w->t[w->cur].nbytes) {
        const wtensor *t = &w->t[w->cur];
        w->hashes[w->cur] = XXH3_64bits_digest(w->state);
        uint64_t padded = t->nbytes;
        moe_pad_u64(t->nbytes, w->alignment, &padded);
        MOE_TRY(put_zeros(w, padded - t->nbytes, err));
        XXH3_64bits_reset(w->state);
        w->cur++;
        w->cur_written = 0;
    }
    return MOE_OK;
}

moe_status moe_gguf_writer_write(moe_gguf_writer *w, const void *p, size_t n, moe_err *err) {
    MOE_FAIL_IF(!w->data_started, err, MOE_ERR_INTERNAL, "tensor data before begin_data");
    const uint8_t *b = p;
    MOE_TRY(advance_full_tensors(w, err));
    while (n > 0) {
        MOE_FAIL_IF(w->cur >= w->n_t, err, MOE_ERR_INTERNAL,
                    "%s: %zu bytes of tensor data beyond the declared tensors", w->path, n);
        uint64_t left = w->t[w->cur].nbytes - w->cur_written;
        size_t take = left < n ? (size_t)left : n;
        XXH3_64bits_update(w->state, b, take);
        MOE_TRY(put(w, b, take, err));
        w->cur_written += take;
        b += take;
        n -= take;
        MOE_TRY(advance_full_tensors(w, err));
    }
    return MOE_OK;
}

static moe_status patch_checksums(moe_gguf_writer *w, moe_err *err) {
    if (w->opts.no_checksums || w->n_t == 0)
        return MOE_OK;
    uint8_t *le = malloc(8 * w->n_t);
    MOE_FAIL_IF(!le, err, MOE_ERR_NOMEM, "out of memory");
    for (uint64_t i = 0; i < w->n_t; i++)
        moe_store_le64(le + 8 * i, w->hashes[i]);
    size_t len = 8 * w->n_t, done = 0;
    while (done < len) {
        ssize_t k = pwrite(w->out.fd, le + done, len - done, (off_t)(w->checksum_pos + done));
        if (k < 0 && errno == EINTR)
            continue;
        if (k < 0) {
            free(le);
            return moe_fail(err, MOE_ERR_IO, "%s: write failed: %s", w->path, strerror(errno));
        }
        done += (size_t)k;
    }
    free(le);
    return MOE_OK;
}

static moe_status finish_steps(moe_gguf_writer *w, moe_err *err) {
    MOE_FAIL_IF(!w->data_started, err, MOE_ERR_INTERNAL, "finish before begin_data");
    MOE_TRY(advance_full_tensors(w, err));
    if (w->cur < w->n_t)
        return moe_fail(err, MOE_ERR_INTERNAL,
                        "%s: tensor '%s' got %llu of its %llu bytes before finish", w->path,
                        w->t[w->cur].name, (unsigned long long)w->cur_written,
                        (unsigned long long)w->t[w->cur].nbytes);
    MOE_TRY(flush(w, err));
    MOE_TRY(patch_checksums(w, err));
    return MOE_OK;
}

moe_status moe_gguf_writer_finish(moe_gguf_writer *w, moe_err *err) {
    moe_status st = finish_steps(w, err);
    if (st == MOE_OK)
        st = moe_output_commit(&w->out, err);
    moe_gguf_writer_abort(w); /* frees; removes the temp file unless it was published */
    return st;
}

moe_status moe_gguf_writer_finish_deferred(moe_gguf_writer *w, moe_output *out, moe_err *err) {
    moe_status st = finish_steps(w, err);
    if (st == MOE_OK) {
        *out = w->out; /* the caller publishes or drops it */
        memset(&w->out, 0, sizeof w->out);
        w->out.fd = -1;
    }
    moe_gguf_writer_abort(w);
    return st;
}
