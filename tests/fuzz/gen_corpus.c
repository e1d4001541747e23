/* gen_corpus — writes the GGUF seed and bad-input corpus, deterministically.
 *
 *   gen_corpus OUTDIR          writes OUTDIR/good/NAME.gguf and OUTDIR/bad/NAME.gguf
 *   gen_corpus --check DIR     regenerates in memory and compares with DIR/good and
 *                              DIR/bad: every file equal, none missing, none extra
 *   gen_corpus --fields FILE   prints where each header field of a (valid) GGUF file
 *                              lies, one "KIND INDEX OFFSET LENGTH VALUE" per line
 *
 * The corpus is checked in (tests/corpus/gguf) so it stays stable; this program
 * is how it was made, and the --check test keeps the two in sync. To change the
 * corpus, change this file and run: gen_corpus tests/corpus/gguf
 *
 * good/ holds valid files that exercise every value type, several tensor types
 * (float, legacy and k-quant blocks, an IK type with per-row metadata, an
 * interleaved type) and the edges of the format. bad/ holds files that a strict
 * reader must reject with a format (or unsupported) error. Each bad file is
 * invalid by construction, not by what today's reader says: a mutation either
 * hits a rule of gguf.h's moe_gguf_parse contract directly, or is a truncation
 * before the end of the last tensor's data, or is a bit flip chosen so that the
 * flipped field is out of range whatever the other bytes are (e.g. bit 63 of a
 * dimension, bit 4 of a value type, bit 0 of an aligned offset).
 *
 * Files named found-*.gguf are inputs the fuzzer found, minimised and checked in
 * by hand; --check leaves them alone.
 *
 * Byte positions for targeted mutations come from a small walker (walk_gguf)
 * over the serialized base file, which is also what --fields prints.
 */
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <dirent.h>

#include "formats/gguf/cursor.h"
#include "formats/quant/types.h"

enum { MAX_KV = 40, MAX_T = 12, NAME_CAP = 256 };

static void die(const char *msg) {
    fprintf(stderr, "gen_corpus: %s\n", msg);
    exit(1);
}

/* ---- growable byte buffer -------------------------------------------------------- */

typedef struct buf {
    uint8_t *p;
    size_t len, cap;
} buf;

static void buf_put(buf *b, const void *p, size_t n) {
    if (b->len + n > b->cap || !b->p) { /* p is never NULL after a put */
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->len + n)
            cap *= 2;
        uint8_t *q = realloc(b->p, cap);
        if (!q)
            die("out of memory");
        b->p = q;
        b->cap = cap;
    }
    if (n)
        memcpy(b->p + b->len, p, n);
    b->len += n;
}

static void buf_free(buf *b) {
    free(b->p);
    *b = (buf){0};
}

static buf buf_copy(const buf *b, size_t len) {
    buf c = {0};
    buf_put(&c, b->p, len < b->len ? len : b->len);
    return c;
}

static void put_u8(buf *b, uint8_t v) { buf_put(b, &v, 1); }
static void put_u16(buf *b, uint16_t v) {
    uint8_t t[2];
    moe_store_le16(t, v);
    buf_put(b, t, 2);
}
static void put_u32(buf *b, uint32_t v) {
    uint8_t t[4];
    moe_store_le32(t, v);
    buf_put(b, t, 4);
}
static void put_u64(buf *b, uint64_t v) {
    uint8_t t[8];
    moe_store_le64(t, v);
    buf_put(b, t, 8);
}
static void put_f32(buf *b, float v) {
    uint32_t u;
    memcpy(&u, &v, 4);
    put_u32(b, u);
}
static void put_f64(buf *b, double v) {
    uint64_t u;
    memcpy(&u, &v, 8);
    put_u64(b, u);
}
/* A GGUF string: u64 length + bytes, no NUL. */
static void put_gstr(buf *b, const void *s, size_t n) {
    put_u64(b, n);
    buf_put(b, s, n);
}
static void put_zeros(buf *b, size_t n) {
    static const uint8_t z[64];
    while (n) {
        size_t k = n < sizeof z ? n : sizeof z;
        buf_put(b, z, k);
        n -= k;
    }
}

/* ---- a GGUF document: header fields, encoded KVs, tensor infos ---------------------- */

typedef struct tdef {
    char name[NAME_CAP];
    size_t name_len;
    uint32_t n_dims;
    int64_t ne[4];
    int32_t type;
    uint64_t offset, nbytes;
} tdef;

typedef struct doc {
    char magic[4];
    uint32_t version;
    buf kv[MAX_KV]; /* each: key length, key, value type, value */
    int n_kv;
    tdef t[MAX_T];
    int n_t;
    uint32_t alignment; /* used to lay out the data section */
    bool tail_pad;      /* pad the last tensor's data to the alignment */
    uint64_t data_len;  /* set by doc_layout */
} doc;

static void doc_init(doc *d, uint32_t version) {
    memset(d, 0, sizeof *d);
    memcpy(d->magic, "GGUF", 4);
    d->version = version;
    d->alignment = 32;
    d->tail_pad = true;
}

static void doc_free(doc *d) {
    for (int i = 0; i < d->n_kv; i++)
        buf_free(&d->kv[i]);
}

/* Starts a KV with a key of klen bytes (may hold NULs); the caller appends the
 * value. */
static buf *kv_begin_n(doc *d, const char *key, size_t klen, uint32_t vtype) {
    if (d->n_kv == MAX_KV)
        die("too many keys");
    buf *b = &d->kv[d->n_kv++];
    put_gstr(b, key, klen);
    put_u32(b, vtype);
    return b;
}
static buf *kv_begin(doc *d, const char *key, uint32_t vtype) {
    return kv_begin_n(d, key, strlen(key), vtype);
}
static void kv_u32(doc *d, const char *key, uint32_t v) { put_u32(kv_begin(d, key, 4), v); }
static void kv_str(doc *d, const char *key, const char *v) {
    put_gstr(kv_begin(d, key, 8), v, strlen(v));
}
/* An array of count elements given as encoded bytes. */
static void kv_arr(doc *d, const char *key, uint32_t elem, uint64_t count, const void *payload,
                   size_t n) {
    buf *b = kv_begin(d, key, 9);
    put_u32(b, elem);
    put_u64(b, count);
    buf_put(b, payload, n);
}
static void kv_arr_str(doc *d, const char *key, const char *const *v, size_t count) {
    buf *b = kv_begin(d, key, 9);
    put_u32(b, 8);
    put_u64(b, count);
    for (size_t i = 0; i < count; i++)
        put_gstr(b, v[i], strlen(v[i]));
}

static tdef *tensor_add(doc *d, const char *name, int32_t type, uint32_t n_dims, int64_t ne0,
                        int64_t ne1, int64_t ne2, int64_t ne3) {
    if (d->n_t == MAX_T)
        die("too many tensors");
    tdef *t = &d->t[d->n_t++];
    memset(t, 0, sizeof *t);
    t->name_len = strlen(name);
    memcpy(t->name, name, t->name_len);
    t->n_dims = n_dims;
    t->ne[0] = ne0;
    t->ne[1] = ne1;
    t->ne[2] = ne2;
    t->ne[3] = ne3;
    t->type = type;
    return t;
}

static uint64_t pad_to(uint64_t x, uint64_t a) { return (x + a - 1) / a * a; }

/* Packs the tensors in order, each at the next multiple of the alignment. */
static void doc_layout(doc *d) {
    uint64_t off = 0, end = 0;
    for (int i = 0; i < d->n_t; i++) {
        tdef *t = &d->t[i];
        moe_err e;
        if (moe_type_tensor_size(t->type, t->ne, &t->nbytes, &e) != MOE_OK)
            die(e.msg);
        t->offset = off;
        end = off + t->nbytes;
        off = pad_to(end, d->alignment);
    }
    d->data_len = d->tail_pad ? off : end;
}

/* Deterministic tensor contents: small float values, and quant blocks whose
 * scales are a sane f16 (0x2e66, about 0.1) followed by patterned bytes. */
static void fill_tensor(uint8_t *dst, uint64_t n, const tdef *t, int ti) {
    static const uint16_t halves[9] = {0xc000, 0xbe00, 0xbc00, 0xb800, 0x0000,
                                       0x3800, 0x3c00, 0x3e00, 0x4000};
    const moe_type_traits *tr = moe_type_get(t->type);
    if (t->type == MOE_TYPE_F32) {
        for (uint64_t k = 0; k + 4 <= n; k += 4) {
            float v = (float)((int)((k / 4 + (uint64_t)ti) % 17) - 8) * 0.25f;
            uint32_t u;
            memcpy(&u, &v, 4);
            moe_store_le32(dst + k, u);
        }
        return;
    }
    if (t->type == MOE_TYPE_F16) {
        for (uint64_t k = 0; k + 2 <= n; k += 2)
            moe_store_le16(dst + k, halves[(k / 2 + (uint64_t)ti) % 9]);
        return;
    }
    for (uint64_t k = 0; k < n; k++)
        dst[k] = (uint8_t)(k * 37 + (uint64_t)ti * 11 + 5);
    if (tr && tr->block_size > 1 && tr->row_meta == 0 && tr->type_size >= 4)
        for (uint64_t k = 0; k + tr->type_size <= n; k += tr->type_size)
            moe_store_le16(dst + k, 0x2e66);
}

/* Serializes d as is (header fields, counts from the lists, offsets as set). */
static void doc_write(const doc *d, buf *out) {
    buf_put(out, d->magic, 4);
    put_u32(out, d->version);
    put_u64(out, (uint64_t)d->n_t);
    put_u64(out, (uint64_t)d->n_kv);
    for (int i = 0; i < d->n_kv; i++)
        buf_put(out, d->kv[i].p, d->kv[i].len);
    for (int i = 0; i < d->n_t; i++) {
        const tdef *t = &d->t[i];
        put_gstr(out, t->name, t->name_len);
        put_u32(out, t->n_dims);
        for (uint32_t j = 0; j < t->n_dims; j++)
            put_u64(out, (uint64_t)t->ne[j]);
        put_u32(out, (uint32_t)t->type);
        put_u64(out, t->offset);
    }
    put_zeros(out, pad_to(out->len, d->alignment) - out->len);
    size_t data_start = out->len;
    put_zeros(out, d->data_len);
    for (int i = 0; i < d->n_t; i++) {
        const tdef *t = &d->t[i];
        if (t->offset >= d->data_len)
            continue;
        uint64_t n = t->nbytes < d->data_len - t->offset ? t->nbytes : d->data_len - t->offset;
        fill_tensor(out->p + data_start + t->offset, n, t, i);
    }
}

/* ---- the valid documents ----------------------------------------------------------- */

/* Every value type, and six tensors: f32, f16, q4_0, q8_0 (3-D), q4_K (3-D), f32 1-D
 * whose size leaves tail padding. */
static void base_doc(doc *d) {
    doc_init(d, 3);
    kv_str(d, "general.architecture", "llama");
    kv_str(d, "general.name", "moe-toolkit fuzz seed");
    put_u8(kv_begin(d, "test.u8", 0), 200);
    put_u8(kv_begin(d, "test.i8", 1), (uint8_t)-5);
    put_u16(kv_begin(d, "test.u16", 2), 65000);
    put_u16(kv_begin(d, "test.i16", 3), (uint16_t)-1234);
    kv_u32(d, "test.u32", 4000000000u);
    put_u32(kv_begin(d, "test.i32", 5), (uint32_t)-123456);
    put_f32(kv_begin(d, "test.f32", 6), 0.5f);
    put_u8(kv_begin(d, "test.bool", 7), 1);
    put_u64(kv_begin(d, "test.u64", 10), UINT64_MAX);
    put_u64(kv_begin(d, "test.i64", 11), (uint64_t)INT64_MIN);
    put_f64(kv_begin(d, "test.f64", 12), -2.25);
    static const uint8_t u8s[3] = {1, 2, 3};
    kv_arr(d, "test.arr_u8", 0, 3, u8s, sizeof u8s);
    buf tmp = {0};
    for (int v = -1; v <= 2; v++)
        put_u32(&tmp, (uint32_t)v);
    kv_arr(d, "test.arr_i32", 5, 4, tmp.p, tmp.len);
    tmp.len = 0;
    put_f32(&tmp, 0.5f);
    put_f32(&tmp, 1.5f);
    kv_arr(d, "test.arr_f32", 6, 2, tmp.p, tmp.len);
    tmp.len = 0;
    put_u64(&tmp, 1);
    put_u64(&tmp, UINT64_C(1) << 63);
    kv_arr(d, "test.arr_u64", 10, 2, tmp.p, tmp.len);
    buf_free(&tmp);
    static const uint8_t bools[2] = {1, 0};
    kv_arr(d, "test.arr_bool", 7, 2, bools, sizeof bools);
    static const char *const strs[3] = {"alpha", "", "gamma delta"};
    kv_arr_str(d, "test.arr_str", strs, 3);
    tensor_add(d, "token_embd.weight", MOE_TYPE_F32, 2, 8, 4, 1, 1);
    tensor_add(d, "blk.0.attn_q.weight", MOE_TYPE_F16, 2, 16, 2, 1, 1);
    tensor_add(d, "blk.0.ffn_down.weight", MOE_TYPE_Q4_0, 2, 32, 2, 1, 1);
    tensor_add(d, "blk.0.ffn_up_exps.weight", MOE_TYPE_Q8_0, 3, 32, 1, 2, 1);
    tensor_add(d, "blk.0.ffn_gate_exps.weight", MOE_TYPE_Q4_K, 3, 256, 1, 2, 1);
    tensor_add(d, "output_norm.weight", MOE_TYPE_F32, 1, 6, 1, 1, 1);
    doc_layout(d);
}

/* Version 2, general.alignment 64, no padding after the last tensor. */
static void align64_doc(doc *d) {
    doc_init(d, 2);
    kv_str(d, "general.architecture", "llama");
    kv_u32(d, "general.alignment", 64);
    d->alignment = 64;
    d->tail_pad = false;
    tensor_add(d, "a.weight", MOE_TYPE_F32, 1, 5, 1, 1, 1);
    tensor_add(d, "b.weight", MOE_TYPE_Q8_0, 2, 64, 3, 1, 1);
    tensor_add(d, "c.weight", MOE_TYPE_F16, 1, 3, 1, 1, 1);
    doc_layout(d);
}

/* Edges a strict reader must still accept: empty string and arrays, NUL bytes
 * inside string values, a 1-byte and a long UTF-8 key, a 63-byte tensor name, a
 * zero-size tensor, 4 dims, bf16, an IK type with per-row metadata, an
 * interleaved type. */
static void edge_doc(doc *d) {
    doc_init(d, 3);
    kv_str(d, "general.architecture", "llama");
    kv_str(d, "test.empty_str", "");
    put_gstr(kv_begin(d, "test.str_with_nul", 8), "a\0b", 3);
    kv_arr(d, "test.empty_arr_u8", 0, 0, NULL, 0);
    kv_arr_str(d, "test.empty_arr_str", NULL, 0);
    buf *b = kv_begin(d, "test.arr_str_with_nul", 9);
    put_u32(b, 8);
    put_u64(b, 2);
    put_gstr(b, "x\0y", 3);
    put_gstr(b, "\0", 1);
    put_u8(kv_begin(d, "k", 0), 0);
    char longkey[300];
    memset(longkey, 'k', sizeof longkey - 1);
    longkey[sizeof longkey - 1] = '\0';
    put_u8(kv_begin(d, longkey, 7), 0);
    kv_str(d, "test.utf8.\xd0\xba\xd0\xbb\xd1\x8e\xd1\x87", "\xe2\x9c\x93");
    char name63[64];
    memset(name63, 'n', 63);
    name63[63] = '\0';
    tensor_add(d, name63, MOE_TYPE_F32, 1, 4, 1, 1, 1);
    tensor_add(d, "zero.weight", MOE_TYPE_F32, 2, 0, 4, 1, 1);
    tensor_add(d, "four_dims.weight", MOE_TYPE_F32, 4, 2, 1, 2, 1);
    tensor_add(d, "bf16.weight", MOE_TYPE_BF16, 2, 8, 2, 1, 1);
    tensor_add(d, "iq4_ks.weight", MOE_TYPE_IQ4_KS, 2, 256, 2, 1, 1);
    tensor_add(d, "q8_0_r8.weight", MOE_TYPE_Q8_0_R8, 2, 32, 8, 1, 1);
    doc_layout(d);
}

static void no_tensor_doc(doc *d) {
    doc_init(d, 3);
    kv_str(d, "general.architecture", "llama");
    kv_u32(d, "test.u32", 7);
    doc_layout(d);
}

/* ---- output sinks ---------------------------------------------------------------- */

typedef struct sink {
    const char *dir;
    bool check;
    int passed, failed;
    char **names; /* "good/x.gguf", to catch duplicates and stale files */
    size_t n_names, cap_names;
} sink;

static void remember(sink *s, const char *rel) {
    for (size_t i = 0; i < s->n_names; i++)
        if (strcmp(s->names[i], rel) == 0) {
            fprintf(stderr, "gen_corpus: %s generated twice\n", rel);
            exit(1);
        }
    if (s->n_names == s->cap_names) {
        s->cap_names = s->cap_names ? 2 * s->cap_names : 256;
        char **n = realloc(s->names, s->cap_names * sizeof *n);
        if (!n)
            die("out of memory");
        s->names = n;
    }
    s->names[s->n_names] = strdup(rel);
    if (!s->names[s->n_names])
        die("out of memory");
    s->n_names++;
}

/* Reads path whole; NULL if it cannot. */
static uint8_t *slurp(const char *path, size_t *size) {
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    buf b = {0};
    uint8_t chunk[4096];
    size_t n;
    while ((n = fread(chunk, 1, sizeof chunk, f)) > 0)
        buf_put(&b, chunk, n);
    bool ok = !ferror(f);
    fclose(f);
    if (!ok) {
        buf_free(&b);
        return NULL;
    }
    if (!b.p)
        b.p = malloc(1);
    *size = b.len;
    return b.p;
}

static void emit(sink *s, const char *sub, const char *name, const buf *b) {
    char rel[512], path[1024];
    snprintf(rel, sizeof rel, "%s/%s", sub, name);
    snprintf(path, sizeof path, "%s/%s", s->dir, rel);
    remember(s, rel);
    if (!s->check) {
        FILE *f = fopen(path, "wb");
        if (!f || fwrite(b->p, 1, b->len, f) != b->len || fclose(f) != 0) {
            fprintf(stderr, "gen_corpus: cannot write %s: %s\n", path, strerror(errno));
            exit(1);
        }
        s->passed++;
        return;
    }
    size_t size = 0;
    uint8_t *have = slurp(path, &size);
    if (!have) {
        printf("FAIL %s: missing (run gen_corpus to regenerate)\n", rel);
        s->failed++;
    } else if (size != b->len || memcmp(have, b->p, size) != 0) {
        printf("FAIL %s: differs from the generator's output (%zu vs %zu bytes)\n", rel, size,
               b->len);
        s->failed++;
    } else {
        s->passed++;
    }
    free(have);
}

/* In --check mode: every file in DIR/sub must be one the generator makes. */
static void check_no_stale(sink *s, const char *sub) {
    char path[1024];
    snprintf(path, sizeof path, "%s/%s", s->dir, sub);
    DIR *d = opendir(path);
    if (!d) {
        printf("FAIL %s: cannot open: %s\n", path, strerror(errno));
        s->failed++;
        return;
    }
    for (struct dirent *e; (e = readdir(d)) != NULL;) {
        /* dot files, and found-* (fuzzer finds checked in by hand) are not ours */
        if (e->d_name[0] == '.' || strncmp(e->d_name, "found-", 6) == 0)
            continue;
        char rel[512];
        snprintf(rel, sizeof rel, "%s/%s", sub, e->d_name);
        bool known = false;
        for (size_t i = 0; i < s->n_names && !known; i++)
            known = strcmp(s->names[i], rel) == 0;
        if (!known) {
            printf("FAIL %s: not made by the generator (stale? remove it or add it here)\n", rel);
            s->failed++;
        }
    }
    closedir(d);
}

static void emit_doc(sink *s, const char *sub, const char *name, const doc *d) {
    buf b = {0};
    doc_write(d, &b);
    emit(s, sub, name, &b);
    buf_free(&b);
}

/* ---- field walker --------------------------------------------------------------- */

typedef struct field {
    char kind[16];
    int idx;
    size_t off, len;
    uint64_t value;
} field;

typedef struct fieldmap {
    field *f;
    size_t n, cap;
    uint64_t header_size, data_offset, alignment;
} fieldmap;

typedef struct walker {
    const uint8_t *p;
    size_t n, pos;
    bool bad;
    fieldmap *fm;
} walker;

static void fm_add(fieldmap *fm, const char *kind, int idx, size_t off, size_t len,
                   uint64_t value) {
    if (fm->n == fm->cap) {
        fm->cap = fm->cap ? 2 * fm->cap : 128;
        field *f = realloc(fm->f, fm->cap * sizeof *f);
        if (!f)
            die("out of memory");
        fm->f = f;
    }
    field *f = &fm->f[fm->n++];
    snprintf(f->kind, sizeof f->kind, "%s", kind);
    f->idx = idx;
    f->off = off;
    f->len = len;
    f->value = value;
}

/* The idx-th field of this kind (idx counts per kind, in file order: for kv
 * fields it is the kv index, for tensor fields the tensor index). */
static const field *fm_get(const fieldmap *fm, const char *kind, int idx) {
    for (size_t i = 0; i < fm->n; i++)
        if (fm->f[i].idx == idx && strcmp(fm->f[i].kind, kind) == 0)
            return &fm->f[i];
    fprintf(stderr, "gen_corpus: no field %s #%d\n", kind, idx);
    exit(1);
}

/* Reads a little-endian field of len (1, 2, 4 or 8) bytes, recording it when
 * kind is not NULL. */
static uint64_t w_read(walker *w, const char *kind, int idx, size_t len) {
    if (w->bad || len > w->n - w->pos) {
        w->bad = true;
        return 0;
    }
    const uint8_t *q = w->p + w->pos;
    uint64_t v = len == 1 ? q[0] : len == 2 ? moe_load_le16(q) : len == 4 ? moe_load_le32(q)
                                                                          : moe_load_le64(q);
    if (kind)
        fm_add(w->fm, kind, idx, w->pos, len, v);
    w->pos += len;
    return v;
}

static void w_skip(walker *w, const char *kind, int idx, uint64_t n) {
    if (w->bad || n > w->n - w->pos) {
        w->bad = true;
        return;
    }
    if (kind)
        fm_add(w->fm, kind, idx, w->pos, (size_t)n, 0);
    w->pos += (size_t)n;
}

static size_t scalar_size(uint64_t vtype) {
    static const uint8_t sizes[13] = {1, 1, 2, 2, 4, 4, 4, 1, 0, 0, 8, 8, 8};
    return vtype < 13 ? sizes[vtype] : 0;
}

static void walk_value(walker *w, int i, bool is_alignment) {
    uint64_t vt = w_read(w, "vtype", i, 4);
    if (vt == 8) {
        w_skip(w, "str", i, w_read(w, "str_len", i, 8));
    } else if (vt == 9) {
        uint64_t et = w_read(w, "arr_elem", i, 4);
        uint64_t count = w_read(w, "arr_count", i, 8);
        if (et == 8) {
            for (uint64_t j = 0; j < count && !w->bad; j++)
                w_skip(w, NULL, i, w_read(w, j == 0 ? "arr_str_len" : NULL, i, 8));
        } else if (scalar_size(et) && count <= (w->n - w->pos) / scalar_size(et)) {
            w_skip(w, NULL, i, count * scalar_size(et));
        } else {
            w->bad = true;
        }
    } else if (scalar_size(vt)) {
        uint64_t v = w_read(w, "value", i, scalar_size(vt));
        if (is_alignment && vt == 4 && v && !(v & (v - 1)))
            w->fm->alignment = v;
    } else {
        w->bad = true;
    }
}

/* Walks a valid GGUF's header, recording each field. Returns false if the bytes
 * do not walk (it is a helper for valid files, not a validator). */
static bool walk_gguf(const uint8_t *p, size_t n, fieldmap *fm) {
    walker w = {p, n, 0, false, fm};
    fm->alignment = 32;
    w_read(&w, "magic", -1, 4);
    w_read(&w, "version", -1, 4);
    uint64_t n_tensors = w_read(&w, "n_tensors", -1, 8);
    uint64_t n_kv = w_read(&w, "n_kv", -1, 8);
    for (uint64_t i = 0; i < n_kv && !w.bad; i++) {
        uint64_t klen = w_read(&w, "key_len", (int)i, 8);
        bool is_alignment = klen == 17 && klen <= n - w.pos &&
                            memcmp(p + w.pos, "general.alignment", 17) == 0;
        w_skip(&w, "key", (int)i, klen);
        walk_value(&w, (int)i, is_alignment);
    }
    for (uint64_t i = 0; i < n_tensors && !w.bad; i++) {
        w_skip(&w, "tname", (int)i, w_read(&w, "tname_len", (int)i, 8));
        uint64_t n_dims = w_read(&w, "n_dims", (int)i, 4);
        if (n_dims < 1 || n_dims > 4)
            return false;
        static const char *const ne_kinds[4] = {"ne0", "ne1", "ne2", "ne3"};
        for (uint64_t j = 0; j < n_dims; j++)
            w_read(&w, ne_kinds[j], (int)i, 8);
        w_read(&w, "ttype", (int)i, 4);
        w_read(&w, "toffset", (int)i, 8);
    }
    fm->header_size = w.pos;
    fm->data_offset = pad_to(w.pos, fm->alignment);
    return !w.bad;
}

/* ---- bad files: header-level mutations of the base file -------------------------- */

static void emit_patched(sink *s, const char *name, const buf *base, const field *f,
                         uint64_t v) {
    buf b = buf_copy(base, base->len);
    for (size_t k = 0; k < f->len; k++)
        b.p[f->off + k] = (uint8_t)(v >> (8 * k));
    emit(s, "bad", name, &b);
    buf_free(&b);
}

static void bad_patches(sink *s, const buf *base, const fieldmap *fm) {
    uint64_t size = base->len;
    buf b = buf_copy(base, base->len);
    memcpy(b.p, "gguf", 4);
    emit(s, "bad", "magic-lowercase.gguf", &b);
    memcpy(b.p, "GGML", 4);
    emit(s, "bad", "magic-ggml.gguf", &b);
    memset(b.p, 0, 4);
    emit(s, "bad", "magic-zeros.gguf", &b);
    buf_free(&b);
    b = buf_copy(base, 3);
    emit(s, "bad", "magic-only-3-bytes.gguf", &b);
    buf_free(&b);

    const field *ver = fm_get(fm, "version", -1);
    emit_patched(s, "version-0.gguf", base, ver, 0);
    emit_patched(s, "version-1.gguf", base, ver, 1);
    emit_patched(s, "version-4.gguf", base, ver, 4);
    emit_patched(s, "version-ffffffff.gguf", base, ver, 0xffffffffu);
    emit_patched(s, "version-3-big-endian.gguf", base, ver, 0x03000000u);

    const field *nt = fm_get(fm, "n_tensors", -1), *nk = fm_get(fm, "n_kv", -1);
    emit_patched(s, "n_kv-huge.gguf", base, nk, UINT64_C(1) << 62);
    emit_patched(s, "n_kv-int64-max.gguf", base, nk, INT64_MAX);
    emit_patched(s, "n_kv-negative.gguf", base, nk, UINT64_MAX);
    emit_patched(s, "n_kv-file-size.gguf", base, nk, size); /* 13+ bytes each */
    emit_patched(s, "n_tensors-huge.gguf", base, nt, UINT64_C(1) << 62);
    emit_patched(s, "n_tensors-negative.gguf", base, nt, UINT64_MAX);
    emit_patched(s, "n_tensors-file-size.gguf", base, nt, size); /* 32+ bytes each */

    /* Lengths that run past the end: huge, one byte too many, and wrapping. */
    const field *kl = fm_get(fm, "key_len", 0);
    emit_patched(s, "key-len-huge.gguf", base, kl, UINT64_C(1) << 62);
    emit_patched(s, "key-len-past-end-by-1.gguf", base, kl, size - (kl->off + 8) + 1);
    emit_patched(s, "key-len-max.gguf", base, kl, UINT64_MAX);
    const field *sl = fm_get(fm, "str_len", 1);
    emit_patched(s, "str-len-huge.gguf", base, sl, UINT64_C(1) << 62);
    emit_patched(s, "str-len-past-end-by-1.gguf", base, sl, size - (sl->off + 8) + 1);
    emit_patched(s, "str-len-max.gguf", base, sl, UINT64_MAX);
    /* kv 18 is test.arr_str, kv 13 test.arr_u8, kv 16 test.arr_u64 (see base_doc) */
    const field *asl = fm_get(fm, "arr_str_len", 18);
    emit_patched(s, "arr-str-elem-len-huge.gguf", base, asl, UINT64_C(1) << 62);
    emit_patched(s, "arr-str-elem-len-max.gguf", base, asl, UINT64_MAX);
    emit_patched(s, "arr-str-count-huge.gguf", base, fm_get(fm, "arr_count", 18),
                 UINT64_C(1) << 61);
    const field *ac = fm_get(fm, "arr_count", 13);
    emit_patched(s, "arr-count-huge.gguf", base, ac, UINT64_C(1) << 62);
    emit_patched(s, "arr-count-past-end-by-1.gguf", base, ac, size - (ac->off + 8) + 1);
    emit_patched(s, "arr-count-mul-overflow.gguf", base, fm_get(fm, "arr_count", 16),
                 (UINT64_C(1) << 61) + 1); /* x 8 bytes wraps to 8 */
    const field *vt = fm_get(fm, "vtype", 2);
    emit_patched(s, "vtype-13.gguf", base, vt, 13);
    emit_patched(s, "vtype-255.gguf", base, vt, 255);
    emit_patched(s, "vtype-negative.gguf", base, vt, 0xffffffffu);
    emit_patched(s, "arr-elem-type-13.gguf", base, fm_get(fm, "arr_elem", 13), 13);
    emit_patched(s, "arr-elem-type-negative.gguf", base, fm_get(fm, "arr_elem", 13),
                 0x80000000u);
    emit_patched(s, "arr-elem-type-array.gguf", base, fm_get(fm, "arr_elem", 13), 9);
    emit_patched(s, "bool-value-2.gguf", base, fm_get(fm, "value", 9), 2);
}

static void bad_tensor_patches(sink *s, const buf *base, const fieldmap *fm, const doc *d) {
    int last = d->n_t - 1;
    emit_patched(s, "ndims-0.gguf", base, fm_get(fm, "n_dims", 0), 0);
    emit_patched(s, "ndims-5.gguf", base, fm_get(fm, "n_dims", 0), 5);
    emit_patched(s, "ndims-ffffffff.gguf", base, fm_get(fm, "n_dims", last), 0xffffffffu);
    emit_patched(s, "ne0-negative.gguf", base, fm_get(fm, "ne0", 0), UINT64_MAX);
    emit_patched(s, "ne1-negative.gguf", base, fm_get(fm, "ne1", 1), UINT64_MAX);
    emit_patched(s, "ne2-int64-min.gguf", base, fm_get(fm, "ne2", 3), UINT64_C(1) << 63);
    emit_patched(s, "ne0-too-big-for-file.gguf", base, fm_get(fm, "ne0", last),
                 UINT64_C(1) << 40);
    /* 2^62 f32 elements fit int64; their 2^64 bytes do not fit uint64 */
    emit_patched(s, "ne0-bytes-overflow.gguf", base, fm_get(fm, "ne0", last),
                 UINT64_C(1) << 62);
    buf b = buf_copy(base, base->len);
    moe_store_le64(b.p + fm_get(fm, "ne0", 0)->off, UINT64_C(1) << 32);
    moe_store_le64(b.p + fm_get(fm, "ne1", 0)->off, UINT64_C(1) << 32);
    emit(s, "bad", "dims-product-overflow.gguf", &b);
    buf_free(&b);
    /* q4_0 (tensor 2) and q4_K (tensor 4) rows that are not whole blocks */
    emit_patched(s, "row-not-block-multiple-q4_0.gguf", base, fm_get(fm, "ne0", 2), 16);
    emit_patched(s, "row-not-block-multiple-q4_K.gguf", base, fm_get(fm, "ne0", 4), 128);
    static const struct {
        const char *name;
        uint32_t id;
    } types[] = {
        {"type-4-removed.gguf", 4},   {"type-5-removed.gguf", 5},
        {"type-36-removed.gguf", 36}, {"type-38-removed.gguf", 38},
        {"type-400.gguf", 400},       {"type-1000000.gguf", 1000000},
        {"type-negative.gguf", 0xffffffffu},
    };
    for (size_t i = 0; i < sizeof types / sizeof types[0]; i++)
        emit_patched(s, types[i].name, base, fm_get(fm, "ttype", (int)(i % 2 ? last : 1)),
                     types[i].id);
    emit_patched(s, "tensor-name-len-huge.gguf", base, fm_get(fm, "tname_len", 0),
                 UINT64_C(1) << 62);
    emit_patched(s, "tensor-name-len-past-end.gguf", base, fm_get(fm, "tname_len", last),
                 base->len - (fm_get(fm, "tname_len", last)->off + 8) + 1);
    /* Offsets: misaligned inside the q4_0 tensor's padding (no overlap), past the
     * end, and wrapping around when added to the data offset. */
    const field *o2 = fm_get(fm, "toffset", 2), *ol = fm_get(fm, "toffset", last);
    emit_patched(s, "offset-misaligned-by-1.gguf", base, o2, o2->value + 1);
    emit_patched(s, "offset-misaligned-by-16.gguf", base, o2, o2->value + 16);
    emit_patched(s, "offset-past-end.gguf", base, ol, ol->value + 64);
    emit_patched(s, "offset-huge.gguf", base, ol, UINT64_C(1) << 62);
    emit_patched(s, "offset-wraps.gguf", base, ol, UINT64_MAX & ~UINT64_C(31));
    uint64_t data_offset = fm->data_offset;
    emit_patched(s, "offset-end-wraps.gguf", base, fm_get(fm, "toffset", 0),
                 (UINT64_MAX - data_offset - 64) & ~UINT64_C(31)); /* + 128 bytes wraps */
}

/* Mutations that change the structure, built from the document. */
static void bad_docs(sink *s) {
    doc d;
    /* offsets: tensors 1 (64 bytes at 128) and 2 (36 bytes at 192) */
    base_doc(&d);
    uint64_t t = d.t[1].offset;
    d.t[1].offset = d.t[2].offset;
    d.t[2].offset = t;
    emit_doc(s, "bad", "offset-out-of-order.gguf", &d);
    doc_free(&d);
    base_doc(&d);
    d.t[2].offset = d.t[1].offset + 32;
    emit_doc(s, "bad", "offset-overlap.gguf", &d);
    d.t[2].offset = d.t[1].offset;
    emit_doc(s, "bad", "offset-same-as-previous.gguf", &d);
    doc_free(&d);

    base_doc(&d);
    kv_str(&d, "general.name", "again");
    emit_doc(s, "bad", "dup-key.gguf", &d);
    doc_free(&d);
    base_doc(&d);
    kv_str(&d, "test.u8", "now a string");
    emit_doc(s, "bad", "dup-key-other-type.gguf", &d);
    doc_free(&d);
    base_doc(&d);
    put_u8(kv_begin_n(&d, "test.a\0b", 8, 0), 1);
    emit_doc(s, "bad", "key-with-nul.gguf", &d);
    doc_free(&d);
    base_doc(&d);
    buf *b = kv_begin(&d, "test.nested", 9);
    put_u32(b, 9);
    put_u64(b, 1);
    put_u32(b, 0);
    put_u64(b, 1);
    put_u8(b, 7);
    emit_doc(s, "bad", "nested-array.gguf", &d);
    doc_free(&d);

    static const struct {
        const char *name;
        uint32_t vtype;
        uint64_t value;
        size_t size;
    } aligns[] = {
        {"alignment-0.gguf", 4, 0, 4},         {"alignment-3.gguf", 4, 3, 4},
        {"alignment-48.gguf", 4, 48, 4},       {"alignment-u64.gguf", 10, 32, 8},
        {"alignment-i32.gguf", 5, 32, 4},      {"alignment-u16.gguf", 2, 32, 2},
        {"alignment-2g.gguf", 4, UINT64_C(1) << 31, 4},
        /* 64 declared, data laid out at 32: tensor 4 sits at 352 = 32 mod 64 */
        {"alignment-64-data-at-32.gguf", 4, 64, 4},
    };
    for (size_t i = 0; i < sizeof aligns / sizeof aligns[0]; i++) {
        base_doc(&d);
        b = kv_begin(&d, "general.alignment", aligns[i].vtype);
        for (size_t k = 0; k < aligns[i].size; k++)
            put_u8(b, (uint8_t)(aligns[i].value >> (8 * k)));
        emit_doc(s, "bad", aligns[i].name, &d);
        doc_free(&d);
    }
    base_doc(&d);
    kv_str(&d, "general.alignment", "32");
    emit_doc(s, "bad", "alignment-str.gguf", &d);
    doc_free(&d);
    base_doc(&d);
    static const uint8_t a32[4] = {32, 0, 0, 0};
    kv_arr(&d, "general.alignment", 4, 1, a32, 4);
    emit_doc(s, "bad", "alignment-array.gguf", &d);
    doc_free(&d);

    base_doc(&d);
    memcpy(d.t[3].name, d.t[0].name, d.t[0].name_len);
    d.t[3].name_len = d.t[0].name_len;
    emit_doc(s, "bad", "dup-tensor-name.gguf", &d);
    memset(d.t[3].name, 'x', 64);
    d.t[3].name_len = 64;
    emit_doc(s, "bad", "tensor-name-64-bytes.gguf", &d);
    memset(d.t[3].name, 'y', 200);
    d.t[3].name_len = 200;
    emit_doc(s, "bad", "tensor-name-200-bytes.gguf", &d);
    d.t[3].name_len = 0;
    emit_doc(s, "bad", "tensor-name-empty.gguf", &d);
    memcpy(d.t[3].name, "blk.0\0x.weight", 14);
    d.t[3].name_len = 14;
    emit_doc(s, "bad", "tensor-name-with-nul.gguf", &d);
    doc_free(&d);
}

/* Truncations: every 37 bytes through the header, at each header boundary, and
 * inside the data; all before the end of the last tensor's bytes. */
static void bad_truncations(sink *s, const buf *base, const fieldmap *fm, const doc *d) {
    uint64_t last_end = 0;
    for (int i = 0; i < d->n_t; i++)
        if (d->t[i].offset + d->t[i].nbytes > last_end)
            last_end = d->t[i].offset + d->t[i].nbytes;
    last_end += fm->data_offset;
    uint64_t cuts[128];
    size_t n = 0;
    static const uint64_t early[] = {0, 1, 3, 4, 7, 8, 15, 16, 23, 24};
    for (size_t i = 0; i < sizeof early / sizeof early[0]; i++)
        cuts[n++] = early[i];
    for (uint64_t c = 37; c < fm->header_size && n < 100; c += 37)
        cuts[n++] = c;
    cuts[n++] = fm->header_size - 1;
    cuts[n++] = fm->header_size;
    cuts[n++] = fm->data_offset;
    cuts[n++] = fm->data_offset + 1;
    for (int i = 1; i < d->n_t; i++)
        cuts[n++] = fm->data_offset + d->t[i].offset + d->t[i].nbytes / 2;
    cuts[n++] = last_end - 1;
    for (size_t i = 0; i < n; i++) {
        bool seen = false;
        for (size_t j = 0; j < i; j++)
            seen = seen || cuts[j] == cuts[i];
        if (seen || cuts[i] >= last_end)
            continue;
        char name[64];
        snprintf(name, sizeof name, "trunc-at-%llu.gguf", (unsigned long long)cuts[i]);
        buf b = buf_copy(base, (size_t)cuts[i]);
        emit(s, "bad", name, &b);
        buf_free(&b);
    }
}

/* Bit flips that put a field out of range whatever the rest of the file says. */
static void bad_flips(sink *s, const buf *base, const fieldmap *fm, const doc *d) {
    static const struct {
        const char *kind;
        int bit;
    } rules[] = {
        {"magic", 0},     {"magic", 29},    {"version", 1},   {"version", 2},
        {"version", 24},  {"n_tensors", 62}, {"n_tensors", 63}, {"n_kv", 40},
        {"n_kv", 63},     {"key_len", 62},  {"key_len", 40},  {"vtype", 4},
        {"vtype", 31},    {"str_len", 62},  {"arr_elem", 4},  {"arr_count", 62},
        {"tname_len", 62}, {"n_dims", 3},   {"n_dims", 31},   {"ne0", 63},
        {"ne0", 45},      {"ne1", 63},      {"ttype", 12},    {"ttype", 31},
        {"toffset", 0},   {"toffset", 3},   {"toffset", 61},
    };
    for (size_t r = 0; r < sizeof rules / sizeof rules[0]; r++) {
        /* a global field once; kv fields at the first and a middle kv that has
         * one; tensor fields at the first and the last tensor that has one */
        int picks[2] = {-1, -1};
        int n_picks = 0;
        const char *k = rules[r].kind;
        bool tensor_kind = !strncmp(k, "ne", 2) || !strcmp(k, "tname_len") ||
                           !strcmp(k, "n_dims") || !strcmp(k, "ttype") ||
                           !strcmp(k, "toffset");
        bool global = !strcmp(k, "magic") || !strcmp(k, "version") ||
                      !strcmp(k, "n_tensors") || !strcmp(k, "n_kv");
        if (global) {
            n_picks = 1;
        } else if (tensor_kind) {
            for (size_t i = 0; i < fm->n; i++)
                if (!strcmp(fm->f[i].kind, k)) {
                    if (n_picks == 0)
                        picks[n_picks++] = fm->f[i].idx;
                    else
                        picks[1] = fm->f[i].idx, n_picks = 2;
                }
        } else {
            for (size_t i = 0; i < fm->n && n_picks < 2; i++)
                if (!strcmp(fm->f[i].kind, k) && (n_picks == 0 || fm->f[i].idx >= d->n_kv / 2))
                    picks[n_picks++] = fm->f[i].idx;
        }
        for (int p = 0; p < n_picks; p++) {
            const field *f = fm_get(fm, k, picks[p]);
            if (rules[r].bit >= (int)(8 * f->len))
                die("flip bit outside its field");
            buf b = buf_copy(base, base->len);
            b.p[f->off + (size_t)rules[r].bit / 8] ^= (uint8_t)(1u << (rules[r].bit % 8));
            char name[96];
            if (global)
                snprintf(name, sizeof name, "flip-%s-bit%d.gguf", k, rules[r].bit);
            else
                snprintf(name, sizeof name, "flip-%s-%s%d-bit%d.gguf", k,
                         tensor_kind ? "t" : "kv", picks[p], rules[r].bit);
            emit(s, "bad", name, &b);
            buf_free(&b);
        }
    }
}

/* ---- main -------------------------------------------------------------------- */

static void generate(sink *s) {
    doc d;
    base_doc(&d);
    emit_doc(s, "good", "basic.gguf", &d);
    buf base = {0};
    doc_write(&d, &base);
    fieldmap fm = {0};
    if (!walk_gguf(base.p, base.len, &fm))
        die("cannot walk the base file");
    bad_patches(s, &base, &fm);
    bad_tensor_patches(s, &base, &fm, &d);
    bad_truncations(s, &base, &fm, &d);
    bad_flips(s, &base, &fm, &d);
    free(fm.f);
    buf_free(&base);
    doc_free(&d);
    bad_docs(s);

    align64_doc(&d);
    emit_doc(s, "good", "v2-align64-no-tail-pad.gguf", &d);
    doc_free(&d);
    edge_doc(&d);
    emit_doc(s, "good", "edge-values.gguf", &d);
    doc_free(&d);
    no_tensor_doc(&d);
    emit_doc(s, "good", "no-tensors.gguf", &d);
    doc_free(&d);
    buf b = {0};
    buf_put(&b, "GGUF", 4);
    put_u32(&b, 3);
    put_u64(&b, 0);
    put_u64(&b, 0);
    emit(s, "good", "header-only-24-bytes.gguf", &b);
    buf_free(&b);
}

static int print_fields(const char *path) {
    size_t size = 0;
    uint8_t *p = slurp(path, &size);
    if (!p) {
        fprintf(stderr, "gen_corpus: cannot read %s: %s\n", path, strerror(errno));
        return 1;
    }
    fieldmap fm = {0};
    bool ok = walk_gguf(p, size, &fm);
    for (size_t i = 0; i < fm.n; i++)
        printf("%s %d %zu %zu %llu\n", fm.f[i].kind, fm.f[i].idx, fm.f[i].off, fm.f[i].len,
               (unsigned long long)fm.f[i].value);
    printf("header_size -1 %llu 0 0\n", (unsigned long long)fm.header_size);
    printf("data_offset -1 %llu 0 0\n", (unsigned long long)fm.data_offset);
    printf("file_size -1 %zu 0 0\n", size);
    free(fm.f);
    free(p);
    if (!ok)
        fprintf(stderr, "gen_corpus: %s does not walk as a GGUF file\n", path);
    return ok ? 0 : 1;
}

int main(int argc, char **argv) {
    if (argc == 3 && strcmp(argv[1], "--fields") == 0)
        return print_fields(argv[2]);
    sink s = {0};
    if (argc == 3 && strcmp(argv[1], "--check") == 0) {
        s.dir = argv[2];
        s.check = true;
    } else if (argc == 2 && argv[1][0] != '-') {
        s.dir = argv[1];
        char path[1024];
        const char *subs[2] = {"good", "bad"};
        mkdir(s.dir, 0777);
        for (int i = 0; i < 2; i++) {
            snprintf(path, sizeof path, "%s/%s", s.dir, subs[i]);
            if (mkdir(path, 0777) != 0 && errno != EEXIST) {
                fprintf(stderr, "gen_corpus: cannot create %s: %s\n", path, strerror(errno));
                return 1;
            }
        }
    } else {
        fprintf(stderr, "usage: gen_corpus OUTDIR | --check DIR | --fields FILE.gguf\n");
        return 2;
    }
    generate(&s);
    if (s.check) {
        check_no_stale(&s, "good");
        check_no_stale(&s, "bad");
    }
    printf("%d passed, %d failed\n", s.passed, s.failed);
    for (size_t i = 0; i < s.n_names; i++)
        free(s.names[i]);
    free(s.names);
    return s.failed ? 1 : 0;
}
