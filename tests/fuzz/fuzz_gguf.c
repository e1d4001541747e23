/* fuzz_gguf — fuzz target for the GGUF header reader (moe_gguf_parse) and the
 * metadata accessors.
 *
 * Each input is a whole file: it is parsed with avail == file_size. Besides
 * "no crash, no leak, no UB", the target checks the contract of gguf.h:
 *   - a rejection is MOE_ERR_FORMAT or MOE_ERR_UNSUPPORTED with a message
 *     (never NEED_MORE when the whole file is there, never NOMEM for a small
 *     input: counts must be checked against the bytes left before allocating);
 *   - an accepted header is self-consistent: types known, dims non-negative,
 *     nbytes equal to moe_type_tensor_size, offsets aligned, in order, not
 *     overlapping and inside the file, names unique and findable;
 *   - prefixes behave: the header_size-byte prefix parses to the same result,
 *     one byte less asks for more (NEED_MORE), and a prefix never turns a
 *     rejected file into an accepted one;
 *   - every accessor either succeeds or fails cleanly on every value.
 * Prefix copies are exact-size heap buffers, so ASan catches a read past avail.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "formats/base/checked.h"
#include "formats/gguf/cursor.h"
#include "formats/gguf/gguf.h"
#include "formats/quant/types.h"
#include "fuzz/fuzz_target.h"

#define FUZZ_REQUIRE(cond)                                                               \
    do {                                                                                 \
        if (!(cond)) {                                                                   \
            fprintf(stderr, "fuzz_gguf: invariant failed at %s:%d: %s\n", __FILE__,     \
                    __LINE__, #cond);                                                    \
            abort();                                                                     \
        }                                                                                \
    } while (0)

/* Array elements read per key: the first ones and the last one. */
enum { MAX_ELEMS_PER_ARRAY = 64 };

/* Reads every byte of p[0..n) so ASan sees the whole range. */
static volatile uint8_t sink;
static void touch(const void *p, size_t n) {
    const uint8_t *b = (const uint8_t *)p;
    uint8_t acc = 0;
    for (size_t i = 0; i < n; i++)
        acc ^= b[i];
    sink = acc;
}

/* An accessor result is OK, or a clean error carrying a message. */
static void require_clean(moe_status st, const moe_err *e) {
    if (st == MOE_OK)
        return;
    FUZZ_REQUIRE(st == MOE_ERR_FORMAT || st == MOE_ERR_USAGE);
    FUZZ_REQUIRE(e->code == st);
    FUZZ_REQUIRE(e->msg[0] != '\0');
}

static void exercise_element(const moe_gguf_kv *kv, uint64_t i) {
    moe_err e;
    int64_t iv;
    double dv;
    const char *s = NULL;
    uint64_t len = 0;
    require_clean(moe_gguf_arr_int(kv, i, &iv, &e), &e);
    require_clean(moe_gguf_arr_float(kv, i, &dv, &e), &e);
    moe_status st = moe_gguf_arr_str(kv, i, &s, &len, &e);
    require_clean(st, &e);
    FUZZ_REQUIRE((st == MOE_OK) == (kv->elem_type == MOE_GGUF_STRING));
    if (st == MOE_OK) {
        const uint8_t *raw_end = kv->raw + kv->raw_len;
        FUZZ_REQUIRE((const uint8_t *)s >= kv->raw && (const uint8_t *)s <= raw_end);
        FUZZ_REQUIRE(len <= (uint64_t)(raw_end - (const uint8_t *)s));
        touch(s, (size_t)len);
    }
}

static void exercise_array(const moe_gguf_kv *kv) {
    FUZZ_REQUIRE((unsigned)kv->elem_type < MOE_GGUF_VTYPE_COUNT);
    FUZZ_REQUIRE(kv->elem_type != MOE_GGUF_ARRAY);
    FUZZ_REQUIRE(kv->raw_len >= 12);
    FUZZ_REQUIRE((moe_gguf_vtype)moe_load_le32(kv->raw) == kv->elem_type);
    FUZZ_REQUIRE(moe_load_le64(kv->raw + 4) == kv->count);
    if (kv->elem_type == MOE_GGUF_STRING) {
        FUZZ_REQUIRE(kv->count == 0 || kv->str_offsets != NULL);
    } else {
        uint64_t payload;
        FUZZ_REQUIRE(moe_mul_u64(kv->count, moe_gguf_vtype_size(kv->elem_type), &payload));
        FUZZ_REQUIRE(kv->raw_len == 12 + payload);
    }
    uint64_t n = kv->count < MAX_ELEMS_PER_ARRAY ? kv->count : MAX_ELEMS_PER_ARRAY;
    for (uint64_t i = 0; i < n; i++)
        exercise_element(kv, i);
    if (kv->count > n)
        exercise_element(kv, kv->count - 1);
    /* One past the end is the caller's mistake: a usage error, not a read. */
    moe_err e;
    int64_t iv;
    const char *s;
    uint64_t len;
    moe_status st = moe_gguf_arr_int(kv, kv->count, &iv, &e);
    FUZZ_REQUIRE(st != MOE_OK);
    require_clean(st, &e);
    st = moe_gguf_arr_str(kv, kv->count, &s, &len, &e);
    FUZZ_REQUIRE(st != MOE_OK);
    require_clean(st, &e);
}

static void exercise_kv(const moe_gguf *g, uint64_t i) {
    const moe_gguf_kv *kv = &g->kv[i];
    FUZZ_REQUIRE(kv->key != NULL);
    touch(kv->key, strlen(kv->key) + 1);
    FUZZ_REQUIRE(moe_gguf_find_key(g, kv->key) == (int64_t)i);
    FUZZ_REQUIRE((unsigned)kv->type < MOE_GGUF_VTYPE_COUNT);
    FUZZ_REQUIRE(strcmp(moe_gguf_vtype_name(kv->type), "unknown") != 0);
    FUZZ_REQUIRE(kv->raw != NULL || kv->raw_len == 0);
    touch(kv->raw, (size_t)kv->raw_len);

    moe_err e;
    int64_t iv;
    double dv;
    bool bv;
    const char *sv;
    require_clean(moe_gguf_kv_int(kv, &iv, &e), &e);
    require_clean(moe_gguf_kv_float(kv, &dv, &e), &e);
    require_clean(moe_gguf_kv_bool(kv, &bv, &e), &e);
    require_clean(moe_gguf_get_int(g, kv->key, &iv, &e), &e);
    require_clean(moe_gguf_get_float(g, kv->key, &dv, &e), &e);
    moe_status st = moe_gguf_get_str(g, kv->key, &sv, &e);
    require_clean(st, &e);
    FUZZ_REQUIRE((st == MOE_OK) == (kv->type == MOE_GGUF_STRING));

    if (kv->type == MOE_GGUF_STRING) {
        FUZZ_REQUIRE(kv->str != NULL && sv == kv->str);
        FUZZ_REQUIRE(kv->raw_len >= 8 && kv->raw_len == 8 + moe_load_le64(kv->raw));
        touch(kv->str, (size_t)(kv->raw_len - 8) + 1); /* the copy holds len bytes + NUL */
        FUZZ_REQUIRE(kv->str[kv->raw_len - 8] == '\0');
    } else if (kv->type == MOE_GGUF_ARRAY) {
        exercise_array(kv);
    } else {
        FUZZ_REQUIRE(kv->count == 1);
        FUZZ_REQUIRE(kv->raw_len == moe_gguf_vtype_size(kv->type));
    }
    /* A missing key is a clean format error. */
    st = moe_gguf_get_int(g, "fuzz.no.such.key\x01", &iv, &e);
    FUZZ_REQUIRE(st == MOE_ERR_FORMAT && e.msg[0] != '\0');
}

static void check_tensor(const moe_gguf *g, uint64_t i, uint64_t *prev_end) {
    const moe_gguf_tensor *t = &g->tensors[i];
    FUZZ_REQUIRE(t->name != NULL);
    size_t name_len = strlen(t->name);
    FUZZ_REQUIRE(name_len > 0 && name_len < MOE_GGUF_MAX_NAME);
    FUZZ_REQUIRE(moe_gguf_find_tensor(g, t->name) == (int64_t)i);
    FUZZ_REQUIRE(t->n_dims >= 1 && t->n_dims <= MOE_GGUF_MAX_DIMS);
    for (int d = 0; d < MOE_GGUF_MAX_DIMS; d++) {
        FUZZ_REQUIRE(t->ne[d] >= 0);
        if ((uint32_t)d >= t->n_dims)
            FUZZ_REQUIRE(t->ne[d] == 1);
    }
    FUZZ_REQUIRE(moe_type_get(t->type) != NULL);
    FUZZ_REQUIRE(strcmp(moe_type_name(t->type), "unknown") != 0);
    uint64_t nbytes = 0;
    moe_err e;
    FUZZ_REQUIRE(moe_type_tensor_size(t->type, t->ne, &nbytes, &e) == MOE_OK);
    FUZZ_REQUIRE(nbytes == t->nbytes);
    FUZZ_REQUIRE(t->offset % g->alignment == 0);
    FUZZ_REQUIRE(t->offset >= *prev_end);
    uint64_t abs_start, abs_end;
    FUZZ_REQUIRE(moe_add_u64(g->data_offset, t->offset, &abs_start));
    FUZZ_REQUIRE(moe_add_u64(abs_start, t->nbytes, &abs_end));
    FUZZ_REQUIRE(abs_end <= g->file_size);
    *prev_end = t->offset + t->nbytes;
}

static void check_accepted(const moe_gguf *g, uint64_t file_size) {
    FUZZ_REQUIRE(g->version == 2 || g->version == 3);
    FUZZ_REQUIRE(g->alignment != 0 && (g->alignment & (g->alignment - 1)) == 0);
    FUZZ_REQUIRE(g->file_size == file_size);
    FUZZ_REQUIRE(g->header_size <= file_size);
    uint64_t data_offset;
    FUZZ_REQUIRE(moe_pad_u64(g->header_size, g->alignment, &data_offset));
    FUZZ_REQUIRE(g->data_offset == data_offset);
    FUZZ_REQUIRE(g->n_kv == 0 || g->kv != NULL);
    FUZZ_REQUIRE(g->n_tensors == 0 || g->tensors != NULL);
    for (uint64_t i = 0; i < g->n_kv; i++)
        exercise_kv(g, i);
    uint64_t prev_end = 0;
    for (uint64_t i = 0; i < g->n_tensors; i++)
        check_tensor(g, i, &prev_end);
    FUZZ_REQUIRE(moe_gguf_find_tensor(g, "fuzz.no.such.tensor\x01") == -1);
}

/* Two accepted parses of the same header agree. */
static void check_same(const moe_gguf *a, const moe_gguf *b) {
    FUZZ_REQUIRE(a->version == b->version && a->alignment == b->alignment);
    FUZZ_REQUIRE(a->n_kv == b->n_kv && a->n_tensors == b->n_tensors);
    FUZZ_REQUIRE(a->header_size == b->header_size && a->data_offset == b->data_offset);
    for (uint64_t i = 0; i < a->n_tensors; i++) {
        FUZZ_REQUIRE(strcmp(a->tensors[i].name, b->tensors[i].name) == 0);
        FUZZ_REQUIRE(a->tensors[i].offset == b->tensors[i].offset);
        FUZZ_REQUIRE(a->tensors[i].nbytes == b->tensors[i].nbytes);
    }
}

/* Parses the first avail bytes of a file of file_size bytes from an exact-size
 * copy. Returns the status; *out gets the header on MOE_OK. */
static moe_status parse_prefix(const uint8_t *data, size_t avail, uint64_t file_size,
                               moe_gguf **out) {
    uint8_t *copy = malloc(avail ? avail : 1);
    FUZZ_REQUIRE(copy != NULL);
    if (avail)
        memcpy(copy, data, avail);
    moe_err e;
    moe_err_clear(&e);
    moe_status st = moe_gguf_parse(copy, avail, file_size, out, &e);
    free(copy);
    FUZZ_REQUIRE((st == MOE_OK) == (*out != NULL));
    if (st != MOE_OK) {
        FUZZ_REQUIRE(st == MOE_ERR_FORMAT || st == MOE_ERR_UNSUPPORTED ||
                     st == MOE_ERR_NEED_MORE);
        FUZZ_REQUIRE(e.code == st && e.msg[0] != '\0');
    }
    return st;
}

static void check_prefixes(const uint8_t *data, size_t size, const moe_gguf *full) {
    moe_gguf *g = NULL;
    size_t half = size / 2;
    moe_status st = parse_prefix(data, half, size, &g);
    if (!full) {
        FUZZ_REQUIRE(st != MOE_OK); /* a prefix cannot make a bad file good */
        return;
    }
    FUZZ_REQUIRE(st == (full->header_size <= half ? MOE_OK : MOE_ERR_NEED_MORE));
    moe_gguf_free(g);
    g = NULL;
    size_t h = (size_t)full->header_size;
    FUZZ_REQUIRE(parse_prefix(data, h, size, &g) == MOE_OK);
    check_same(full, g);
    moe_gguf_free(g);
    g = NULL;
    if (h > 0)
        FUZZ_REQUIRE(parse_prefix(data, h - 1, size, &g) == MOE_ERR_NEED_MORE);
    /* The same bytes in a longer file stay valid: every check is "fits in". */
    FUZZ_REQUIRE(parse_prefix(data, size, (uint64_t)size + 4096, &g) == MOE_OK);
    check_same(full, g);
    moe_gguf_free(g);
}

moe_status moe_fuzz_run(const uint8_t *data, size_t size, moe_err *err) {
    moe_gguf *g = NULL;
    moe_err_clear(err);
    moe_status st = moe_gguf_parse(data, size, size, &g, err);
    FUZZ_REQUIRE((st == MOE_OK) == (g != NULL));
    if (st == MOE_OK) {
        check_accepted(g, size);
    } else {
        FUZZ_REQUIRE(st == MOE_ERR_FORMAT || st == MOE_ERR_UNSUPPORTED);
        FUZZ_REQUIRE(err->code == st);
        FUZZ_REQUIRE(err->msg[0] != '\0');
    }
    check_prefixes(data, size, g);
    moe_gguf_free(g);
    return st;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    moe_err err;
    (void)moe_fuzz_run(data, size, &err);
    return 0;
}
