/* GGUF header parser: every count, length, type, dim and offset is validated
 * against the bytes that exist before anything is trusted or allocated. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

#include "formats/base/checked.h"
#include "formats/gguf/cursor.h"
#include "formats/gguf/gguf.h"
#include "formats/base/strmap.h"

/* Smallest encodings, used to bound counts by the bytes left before allocating:
 * a KV is key length (8) + type (4) + at least one value byte; a tensor info is
 * name length (8) + n_dims (4) + one dim (8) + type (4) + offset (8). */
enum { MIN_KV_BYTES = 13, MIN_TENSOR_INFO_BYTES = 32 };

struct moe_gguf_index {
    moe_strmap keys;    /* key -> index in g->kv */
    moe_strmap tensors; /* tensor name -> index in g->tensors */
};

static const size_t vtype_sizes[MOE_GGUF_VTYPE_COUNT] = {
    [MOE_GGUF_U8] = 1, [MOE_GGUF_I8] = 1, [MOE_GGUF_U16] = 2, [MOE_GGUF_I16] = 2,
    [MOE_GGUF_U32] = 4, [MOE_GGUF_I32] = 4, [MOE_GGUF_F32] = 4, [MOE_GGUF_BOOL] = 1,
    [MOE_GGUF_U64] = 8, [MOE_GGUF_I64] = 8, [MOE_GGUF_F64] = 8,
};
static const char *const vtype_names[MOE_GGUF_VTYPE_COUNT] = {
    "u8", "i8", "u16", "i16", "u32", "i32", "f32", "bool", "str", "arr", "u64", "i64", "f64",
};

size_t moe_gguf_vtype_size(moe_gguf_vtype t) {
    return (unsigned)t < MOE_GGUF_VTYPE_COUNT ? vtype_sizes[t] : 0;
}

const char *moe_gguf_vtype_name(int64_t t) {
    return t >= 0 && t < MOE_GGUF_VTYPE_COUNT ? vtype_names[t] : "unknown";
}

uint64_t moe_xxh3(const void *p, size_t len) { return XXH3_64bits(p, len); }

/* ---- parse state and name lookup ----------------------------------------- */

typedef struct parse_state {
    moe_cursor c;
    uint64_t file_size;
    moe_gguf *g;
    moe_err *err;
} parse_state;

int64_t moe_gguf_find_key(const moe_gguf *g, const char *key) {
    return moe_strmap_get(&g->index->keys, key);
}

int64_t moe_gguf_find_tensor(const moe_gguf *g, const char *name) {
    return moe_strmap_get(&g->index->tensors, name);
}

/* ---- low-level reads ---------------------------------------------------------- */

static uint64_t file_left(const parse_state *ps) { return ps->file_size - ps->c.pos; }

/* Rejects a count of items of at least min_bytes each that cannot fit in the
 * file, and asks for a longer prefix when they cannot fit in what we have. */
static moe_status check_count(parse_state *ps, uint64_t count, uint64_t min_bytes,
                              const char *what) {
    if (count > file_left(ps) / min_bytes)
        return moe_fail(ps->err, MOE_ERR_FORMAT,
                        "%s = %llu is larger than the %llu bytes left in the file can hold",
                        what, (unsigned long long)count, (unsigned long long)file_left(ps));
    if (count > moe_cursor_left(&ps->c) / min_bytes)
        return moe_fail(ps->err, MOE_ERR_NEED_MORE, "%s needs a longer header prefix", what);
    return MOE_OK;
}

/* Reads a GGUF string (u64 length + bytes) into a new NUL-terminated copy.
 * Embedded NULs are rejected: names and keys must be C strings. */
static moe_status read_string(parse_state *ps, char **out, const char *what, bool allow_nul) {
    uint64_t len;
    MOE_TRY(moe_cursor_u64(&ps->c, &len, what, ps->err));
    MOE_TRY(check_count(ps, len, 1, what));
    const uint8_t *p;
    MOE_TRY(moe_cursor_bytes(&ps->c, len, &p, what, ps->err));
    if (!allow_nul && memchr(p, 0, (size_t)len))
        return moe_fail(ps->err, MOE_ERR_FORMAT, "%s contains a NUL byte", what);
    char *s = malloc((size_t)len + 1);
    MOE_FAIL_IF(!s, ps->err, MOE_ERR_NOMEM, "out of memory for %s (%llu bytes)", what,
                (unsigned long long)len);
    memcpy(s, p, (size_t)len);
    s[len] = '\0';
    *out = s;
    return MOE_OK;
}

static moe_status read_vtype(parse_state *ps, moe_gguf_vtype *t, const char *key,
                             const char *role) {
    int32_t v;
    MOE_TRY(moe_cursor_i32(&ps->c, &v, role, ps->err));
    if (v < 0 || v >= MOE_GGUF_VTYPE_COUNT)
        return moe_fail(ps->err, MOE_ERR_FORMAT, "key '%s' has invalid %s %d (expected 0..12)",
                        key, role, v);
    *t = (moe_gguf_vtype)v;
    return MOE_OK;
}

/* Parses an array value after its type tag; fills kv->elem_type, count, raw,
 * str_offsets. */
static moe_status read_array(parse_state *ps, moe_gguf_kv *kv, size_t raw_start) {
    MOE_TRY(read_vtype(ps, &kv->elem_type, kv->key, "array element type"));
    if (kv->elem_type == MOE_GGUF_ARRAY)
        return moe_fail(ps->err, MOE_ERR_FORMAT, "key '%s' is a nested array (not allowed)",
                        kv->key);
    MOE_TRY(moe_cursor_u64(&ps->c, &kv->count, "array length", ps->err));
    if (kv->elem_type != MOE_GGUF_STRING) {
        uint64_t bytes;
        size_t esize = vtype_sizes[kv->elem_type];
        MOE_FAIL_IF(!moe_mul_u64(kv->count, esize, &bytes), ps->err, MOE_ERR_FORMAT,
                    "key '%s': array length %llu overflows", kv->key,
                    (unsigned long long)kv->count);
        MOE_TRY(check_count(ps, bytes, 1, "array data"));
        MOE_TRY(moe_cursor_skip(&ps->c, bytes, "array data", ps->err));
        if (kv->elem_type == MOE_GGUF_BOOL) {
            const uint8_t *b = ps->c.base + ps->c.pos - bytes;
            for (uint64_t i = 0; i < bytes; i++)
                MOE_FAIL_IF(b[i] > 1, ps->err, MOE_ERR_FORMAT,
                            "key '%s': bool element %llu has value %u (expected 0 or 1)",
                            kv->key, (unsigned long long)i, b[i]);
        }
    } else {
        MOE_TRY(check_count(ps, kv->count, 8, "string array length"));
        kv->str_offsets = malloc((kv->count ? kv->count : 1) * sizeof *kv->str_offsets);
        MOE_FAIL_IF(!kv->str_offsets, ps->err, MOE_ERR_NOMEM, "out of memory for key '%s'",
                    kv->key);
        for (uint64_t i = 0; i < kv->count; i++) {
            kv->str_offsets[i] = ps->c.pos - raw_start;
            uint64_t len;
            MOE_TRY(moe_cursor_u64(&ps->c, &len, "string length", ps->err));
            MOE_TRY(check_count(ps, len, 1, "string element"));
            MOE_TRY(moe_cursor_skip(&ps->c, len, "string element", ps->err));
        }
    }
    return MOE_OK;
}

/* Parses one value of kv->type (already read) and keeps a copy of its bytes. */
static moe_status read_value(parse_state *ps, moe_gguf_kv *kv) {
    size_t start = ps->c.pos;
    kv->count = 1;
    if (kv->type == MOE_GGUF_ARRAY) {
        MOE_TRY(read_array(ps, kv, start));
    } else if (kv->type == MOE_GGUF_STRING) {
        MOE_TRY(read_string(ps, &kv->str, "string value", true));
    } else {
        MOE_TRY(moe_cursor_skip(&ps->c, vtype_sizes[kv->type], "value", ps->err));
        if (kv->type == MOE_GGUF_BOOL && ps->c.base[start] > 1)
            return moe_fail(ps->err, MOE_ERR_FORMAT,
                            "key '%s' is a bool with value %u (expected 0 or 1)", kv->key,
                            ps->c.base[start]);
    }
    kv->raw_len = ps->c.pos - start;
    kv->raw = malloc(kv->raw_len ? (size_t)kv->raw_len : 1);
    MOE_FAIL_IF(!kv->raw, ps->err, MOE_ERR_NOMEM, "out of memory for key '%s'", kv->key);
    memcpy(kv->raw, ps->c.base + start, (size_t)kv->raw_len);
    return MOE_OK;
}

static moe_status check_alignment_key(parse_state *ps, const moe_gguf_kv *kv) {
    if (kv->type != MOE_GGUF_U32)
        return moe_fail(ps->err, MOE_ERR_FORMAT,
                        "key 'general.alignment' has type %s (expected u32)",
                        moe_gguf_vtype_name(kv->type));
    uint32_t a = moe_load_le32(kv->raw);
    if (a == 0 || (a & (a - 1)) != 0)
        return moe_fail(ps->err, MOE_ERR_FORMAT,
                        "general.alignment = %u is not a non-zero power of two", a);
    ps->g->alignment = a;
    return MOE_OK;
}

static moe_status read_kvs(parse_state *ps) {
    moe_gguf *g = ps->g;
    MOE_TRY(check_count(ps, g->n_kv, MIN_KV_BYTES, "n_kv"));
    g->kv = calloc(g->n_kv ? g->n_kv : 1, sizeof *g->kv);
    MOE_FAIL_IF(!g->kv, ps->err, MOE_ERR_NOMEM, "out of memory for %llu keys",
                (unsigned long long)g->n_kv);
    for (uint64_t i = 0; i < g->n_kv; i++) {
        moe_gguf_kv *kv = &g->kv[i];
        char what[48];
        snprintf(what, sizeof what, "key #%llu name", (unsigned long long)i);
        MOE_TRY(read_string(ps, &kv->key, what, false));
        int64_t dup;
        MOE_TRY(moe_strmap_put(&g->index->keys, kv->key, (int64_t)i, &dup, ps->err));
        MOE_FAIL_IF(dup >= 0, ps->err, MOE_ERR_FORMAT, "duplicate key '%s'", kv->key);
        MOE_TRY(read_vtype(ps, &kv->type, kv->key, "value type"));
        MOE_TRY(read_value(ps, kv));
        if (strcmp(kv->key, "general.alignment") == 0)
            MOE_TRY(check_alignment_key(ps, kv));
    }
    return MOE_OK;
}

/* ---- tensor infos ------------------------------------------------------------ */

static moe_status read_tensor_info(parse_state *ps, uint64_t i) {
    moe_gguf *g = ps->g;
    moe_gguf_tensor *t = &g->tensors[i];
    char what[48];
    snprintf(what, sizeof what, "tensor #%llu name", (unsigned long long)i);
    MOE_TRY(read_string(ps, &t->name, what, false));
    size_t len = strlen(t->name);
    MOE_FAIL_IF(len == 0, ps->err, MOE_ERR_FORMAT, "tensor #%llu has an empty name",
                (unsigned long long)i);
    MOE_FAIL_IF(len >= MOE_GGUF_MAX_NAME, ps->err, MOE_ERR_FORMAT,
                "tensor name '%.40s...' is %zu bytes (limit %d)", t->name, len,
                MOE_GGUF_MAX_NAME - 1);
    int64_t dup;
    MOE_TRY(moe_strmap_put(&g->index->tensors, t->name, (int64_t)i, &dup, ps->err));
    MOE_FAIL_IF(dup >= 0, ps->err, MOE_ERR_FORMAT, "duplicate tensor name '%s'", t->name);
    MOE_TRY(moe_cursor_u32(&ps->c, &t->n_dims, "n_dims", ps->err));
    MOE_FAIL_IF(t->n_dims < 1 || t->n_dims > MOE_GGUF_MAX_DIMS, ps->err, MOE_ERR_FORMAT,
                "tensor '%s' has n_dims %u (expected 1..%d)", t->name, t->n_dims,
                MOE_GGUF_MAX_DIMS);
    int64_t elements = 1;
    for (int d = 0; d < MOE_GGUF_MAX_DIMS; d++) {
        t->ne[d] = 1;
        if ((uint32_t)d >= t->n_dims)
            continue;
        MOE_TRY(moe_cursor_i64(&ps->c, &t->ne[d], "dimension", ps->err));
        MOE_FAIL_IF(t->ne[d] < 0, ps->err, MOE_ERR_FORMAT, "tensor '%s' has ne[%d] = %lld < 0",
                    t->name, d, (long long)t->ne[d]);
        MOE_FAIL_IF(!moe_mul_i64(elements, t->ne[d], &elements), ps->err, MOE_ERR_FORMAT,
                    "tensor '%s': element count overflows at ne[%d] = %lld", t->name, d,
                    (long long)t->ne[d]);
    }
    int32_t type;
    MOE_TRY(moe_cursor_i32(&ps->c, &type, "tensor type", ps->err));
    const moe_type_traits *tr = moe_type_get(type);
    MOE_FAIL_IF(!tr, ps->err, MOE_ERR_FORMAT, "tensor '%s' has unknown type id %d", t->name,
                type);
    t->type = (moe_type)type;
    if (t->ne[0] % tr->block_size != 0)
        return moe_fail(ps->err, MOE_ERR_FORMAT,
                        "tensor '%s': row length ne[0] = %lld is not a multiple of the %s "
                        "block size %lld",
                        t->name, (long long)t->ne[0], tr->name, (long long)tr->block_size);
    moe_err size_err;
    if (moe_type_tensor_size(t->type, t->ne, &t->nbytes, &size_err) != MOE_OK)
        return moe_fail(ps->err, MOE_ERR_FORMAT, "tensor '%s': %s", t->name, size_err.msg);
    MOE_TRY(moe_cursor_u64(&ps->c, &t->offset, "tensor offset", ps->err));
    MOE_FAIL_IF(t->offset % g->alignment != 0, ps->err, MOE_ERR_FORMAT,
                "tensor '%s' offset %llu is not a multiple of the alignment %u", t->name,
                (unsigned long long)t->offset, g->alignment);
    return MOE_OK;
}

/* Offsets must be in order, not overlap, and the data must lie in the file. */
static moe_status check_tensor_layout(parse_state *ps) {
    moe_gguf *g = ps->g;
    uint64_t prev_end = 0;
    for (uint64_t i = 0; i < g->n_tensors; i++) {
        const moe_gguf_tensor *t = &g->tensors[i];
        if (t->offset < prev_end)
            return moe_fail(ps->err, MOE_ERR_FORMAT,
                            "tensor '%s' offset %llu overlaps the previous tensor (which ends "
                            "at %llu): offsets must be in order and not overlap",
                            t->name, (unsigned long long)t->offset,
                            (unsigned long long)prev_end);
        uint64_t abs_start, abs_end;
        if (!moe_add_u64(g->data_offset, t->offset, &abs_start) ||
            !moe_add_u64(abs_start, t->nbytes, &abs_end) || abs_end > g->file_size)
            return moe_fail(ps->err, MOE_ERR_FORMAT,
                            "tensor '%s' data (offset %llu, %llu bytes) runs past the end of "
                            "the file (%llu bytes): truncated or corrupt",
                            t->name, (unsigned long long)t->offset,
                            (unsigned long long)t->nbytes, (unsigned long long)g->file_size);
        prev_end = t->offset + t->nbytes;
    }
    return MOE_OK;
}

static moe_status read_tensor_infos(parse_state *ps) {
    moe_gguf *g = ps->g;
    MOE_TRY(check_count(ps, g->n_tensors, MIN_TENSOR_INFO_BYTES, "n_tensors"));
    g->tensors = calloc(g->n_tensors ? g->n_tensors : 1, sizeof *g->tensors);
    MOE_FAIL_IF(!g->tensors, ps->err, MOE_ERR_NOMEM, "out of memory for %llu tensors",
                (unsigned long long)g->n_tensors);
    for (uint64_t i = 0; i < g->n_tensors; i++)
        MOE_TRY(read_tensor_info(ps, i));
    return MOE_OK;
}

static moe_status parse_header(parse_state *ps) {
    moe_gguf *g = ps->g;
    const uint8_t *magic;
    MOE_TRY(moe_cursor_bytes(&ps->c, 4, &magic, "magic", ps->err));
    if (memcmp(magic, MOE_GGUF_MAGIC, 4) != 0)
        return moe_fail(ps->err, MOE_ERR_FORMAT,
                        "bad magic %02x %02x %02x %02x (expected 'GGUF'): not a GGUF file",
                        magic[0], magic[1], magic[2], magic[3]);
    MOE_TRY(moe_cursor_u32(&ps->c, &g->version, "version", ps->err));
    if (g->version != 2 && g->version != 3)
        return moe_fail(ps->err, MOE_ERR_UNSUPPORTED,
                        "GGUF version %u is not supported (expected 2 or 3)%s", g->version,
                        (g->version & 0xffff) == 0 ? "; big-endian files are not supported" : "");
    int64_t n_tensors, n_kv;
    MOE_TRY(moe_cursor_i64(&ps->c, &n_tensors, "n_tensors", ps->err));
    MOE_TRY(moe_cursor_i64(&ps->c, &n_kv, "n_kv", ps->err));
    MOE_FAIL_IF(n_tensors < 0, ps->err, MOE_ERR_FORMAT, "n_tensors = %lld is negative",
                (long long)n_tensors);
    MOE_FAIL_IF(n_kv < 0, ps->err, MOE_ERR_FORMAT, "n_kv = %lld is negative", (long long)n_kv);
    g->n_tensors = (uint64_t)n_tensors;
    g->n_kv = (uint64_t)n_kv;
    g->alignment = MOE_GGUF_DEFAULT_ALIGNMENT;
    MOE_TRY(read_kvs(ps));
    MOE_TRY(read_tensor_infos(ps));
    g->header_size = ps->c.pos;
    if (!moe_pad_u64(g->header_size, g->alignment, &g->data_offset) ||
        (g->n_tensors > 0 && g->data_offset > g->file_size))
        return moe_fail(ps->err, MOE_ERR_FORMAT,
                        "data section would start at %llu, past the end of the file (%llu bytes)",
                        (unsigned long long)g->data_offset, (unsigned long long)g->file_size);
    return check_tensor_layout(ps);
}

moe_status moe_gguf_parse(const void *data, size_t avail, uint64_t file_size, moe_gguf **out,
                          moe_err *err) {
    *out = NULL;
    if (avail > file_size)
        return moe_fail(err, MOE_ERR_INTERNAL, "parse: %zu bytes available > file size %llu",
                        avail, (unsigned long long)file_size);
    moe_gguf *g = calloc(1, sizeof *g);
    struct moe_gguf_index *index = calloc(1, sizeof *index);
    if (!g || !index) {
        free(g);
        free(index);
        return moe_fail(err, MOE_ERR_NOMEM, "out of memory");
    }
    g->index = index;
    g->file_size = file_size;
    moe_err local;
    parse_state ps = {moe_cursor_make(data, avail), file_size, g, err ? err : &local};
    moe_status st = parse_header(&ps);
    if (st == MOE_ERR_NEED_MORE && avail == file_size) {
        char detail[sizeof ps.err->msg];
        memcpy(detail, ps.err->msg, sizeof detail);
        st = moe_fail(ps.err, MOE_ERR_FORMAT, "file ends inside the header (%llu bytes): %s",
                      (unsigned long long)file_size, detail);
    }
    if (st != MOE_OK) {
        moe_gguf_free(g);
        return st;
    }
    *out = g;
    return MOE_OK;
}

void moe_gguf_free(moe_gguf *g) {
    if (!g)
        return;
    if (g->kv) {
        for (uint64_t i = 0; i < g->n_kv; i++) {
            free(g->kv[i].key);
            free(g->kv[i].raw);
            free(g->kv[i].str);
            free(g->kv[i].str_offsets);
        }
    }
    if (g->tensors) {
        for (uint64_t i = 0; i < g->n_tensors; i++)
            free(g->tensors[i].name);
    }
    if (g->index) {
        moe_strmap_free(&g->index->keys);
        moe_strmap_free(&g->index->tensors);
    }
    free(g->index);
    free(g->kv);
    free(g->tensors);
    free(g);
}
