/* imatrix_check — test helper for moe-imatrix's outputs.
 *
 *   imatrix_check dat OURS.dat EXPECTED.dat [exact]
 *       same entries, same ncall and value counts, same chunk count, values
 *       within 1e-4 relative (raw .dat values, parsed here independently);
 *       with exact, every value bit for bit (entry order and the dataset
 *       name may differ: llama-imatrix stores a hash map's order and its -f)
 *   imatrix_check gguf OURS.dat OURS.gguf
 *       the two forms give the same per-column mean squares (1e-6) through
 *       convert/imatrix.h, the reader moe-quantize --imatrix uses
 *   imatrix_check quant OURS_Q.gguf REF_Q.gguf
 *       a model quantized with our imatrix against llama-quantize's with
 *       llama.cpp's: every tensor's bytes identical (the quantizers' searches
 *       flip near-ties on importance values that differ in the last bits, so
 *       this holds only when the imatrix is bit-identical); the count of
 *       differing blocks is printed either way
 * Prints what it measured; exit 0 when everything holds. */
#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "convert/imatrix.h"
#include "formats/gguf/gguf.h"
#include "formats/quant/types.h"
#include "test_util.h"

typedef struct dat_entry {
    char name[256];
    int32_t ncall, nval;
    float *v;
} dat_entry;

typedef struct dat {
    int32_t n, chunks;
    dat_entry *e;
} dat;

static int32_t rd32(FILE *f, bool *ok) {
    uint8_t b[4] = {0};
    *ok = *ok && fread(b, 1, 4, f) == 4;
    return (int32_t)((uint32_t)b[0] | (uint32_t)b[1] << 8 | (uint32_t)b[2] << 16 |
                     (uint32_t)b[3] << 24);
}

static bool load_dat(const char *path, dat *d) {
    FILE *f = fopen(path, "rb");
    bool ok = f != NULL;
    d->n = ok ? rd32(f, &ok) : 0;
    ok = ok && d->n > 0 && d->n < 100000;
    d->e = ok ? calloc((size_t)d->n, sizeof *d->e) : NULL;
    for (int32_t i = 0; ok && i < d->n; i++) {
        dat_entry *e = &d->e[i];
        int32_t len = rd32(f, &ok);
        ok = ok && len > 0 && len < 256 && fread(e->name, 1, (size_t)len, f) == (size_t)len;
        e->ncall = rd32(f, &ok);
        e->nval = rd32(f, &ok);
        ok = ok && e->nval > 0 && e->nval < (1 << 28);
        e->v = ok ? malloc((size_t)e->nval * 4) : NULL;
        for (int32_t k = 0; ok && k < e->nval; k++) {
            uint32_t u = (uint32_t)rd32(f, &ok);
            memcpy(&e->v[k], &u, 4);
        }
    }
    d->chunks = rd32(f, &ok);
    if (f)
        fclose(f);
    if (!ok)
        fprintf(stderr, "%s: cannot parse as an imatrix .dat\n", path);
    return ok;
}

static const dat_entry *find(const dat *d, const char *name) {
    for (int32_t i = 0; i < d->n; i++)
        if (!strcmp(d->e[i].name, name))
            return &d->e[i];
    return NULL;
}

static bool identical(const dat_entry *a, const dat_entry *b) {
    return a && b && a->nval == b->nval && !memcmp(a->v, b->v, (size_t)a->nval * 4);
}

static void check_dat(const dat *ours, const dat *ref, bool exact) {
    CHECK(ours->n == ref->n, "%d entries, expected %d", ours->n, ref->n);
    CHECK(ours->chunks == ref->chunks, "chunk count %d, expected %d", ours->chunks, ref->chunks);
    double max_rel = 0;
    int n_same = 0;
    for (int32_t i = 0; i < ref->n; i++) {
        const dat_entry *r = &ref->e[i], *o = find(ours, r->name);
        CHECK(o != NULL, "entry %s missing", r->name);
        if (!o)
            continue;
        CHECK(o->ncall == r->ncall, "%s: ncall %d, expected %d", r->name, o->ncall, r->ncall);
        CHECK(o->nval == r->nval, "%s: %d values, expected %d", r->name, o->nval, r->nval);
        if (o->nval != r->nval)
            continue;
        double rel = 0;
        for (int32_t k = 0; k < r->nval; k++) {
            double d = fabs((double)o->v[k] - r->v[k]) / fmax(fabs((double)r->v[k]), 1e-30);
            rel = d > rel ? d : rel;
        }
        CHECK(rel <= 1e-4, "%s: values differ by %.3g relative", r->name, rel);
        max_rel = rel > max_rel ? rel : max_rel;
        n_same += identical(o, r);
        CHECK(!exact || identical(o, r), "%s: not bit-identical", r->name);
    }
    printf("%d entries, %d chunks; values: max relative difference %.3g, %d entries "
           "bit-identical\n", ours->n, ours->chunks, max_rel, n_same);
}

static void check_gguf(const char *dat_path, const char *gguf_path) {
    moe_imatrix *a = NULL, *b = NULL;
    moe_err err = {0};
    CHECK(moe_imatrix_load(dat_path, &a, &err) == MOE_OK, "%s", err.msg);
    CHECK(moe_imatrix_load(gguf_path, &b, &err) == MOE_OK, "%s", err.msg);
    if (!a || !b)
        goto done;
    CHECK(a->n_entries == b->n_entries, "%lld vs %lld entries", (long long)a->n_entries,
          (long long)b->n_entries);
    CHECK(a->chunks == b->chunks, "%lld vs %lld chunks", (long long)a->chunks,
          (long long)b->chunks);
    double max_rel = 0;
    for (int64_t i = 0; i < a->n_entries; i++) {
        const moe_imatrix_entry *x = &a->entries[i], *y = moe_imatrix_find(b, x->name);
        CHECK(y && y->n == x->n, "%s: missing or resized in the GGUF form", x->name);
        for (int64_t k = 0; y && y->n == x->n && k < x->n; k++) {
            double d = fabs((double)x->values[k] - y->values[k]) / fmax(fabs(x->values[k]), 1e-30);
            max_rel = d > max_rel ? d : max_rel;
        }
    }
    CHECK(max_rel <= 1e-6, "the forms differ by %.3g relative", max_rel);
    printf("GGUF form: %lld entries, same means as the .dat (max relative difference %.3g)\n",
           (long long)b->n_entries, max_rel);
done:
    moe_imatrix_free(a);
    moe_imatrix_free(b);
}

static void check_quant(const char *ours_q, const char *ref_q) {
    moe_gguf_file *a = NULL, *b = NULL;
    moe_err err = {0};
    CHECK(moe_gguf_file_open(ours_q, true, &a, &err) == MOE_OK, "%s", err.msg);
    CHECK(moe_gguf_file_open(ref_q, true, &b, &err) == MOE_OK, "%s", err.msg);
    int same = 0, total = 0;
    long long blocks = 0, blocks_same = 0;
    for (uint64_t i = 0; a && b && i < b->g->n_tensors; i++) {
        const moe_gguf_tensor *tb = &b->g->tensors[i];
        int64_t j = moe_gguf_find_tensor(a->g, tb->name);
        const moe_gguf_tensor *ta = j >= 0 ? &a->g->tensors[j] : NULL;
        CHECK(ta && ta->type == tb->type && ta->nbytes == tb->nbytes, "%s: type or size differs",
              tb->name);
        if (!ta || ta->type != tb->type || ta->nbytes != tb->nbytes)
            continue;
        const uint8_t *pa = a->map + a->g->data_offset + ta->offset;
        const uint8_t *pb = b->map + b->g->data_offset + tb->offset;
        size_t bs = moe_type_get(tb->type)->type_size, nb = tb->nbytes / bs, eq = 0;
        for (size_t k = 0; k < nb; k++)
            eq += !memcmp(pa + k * bs, pb + k * bs, bs);
        total++;
        same += eq == nb;
        blocks += (long long)nb, blocks_same += (long long)eq;
        CHECK(eq == nb, "%s: %zu of %zu blocks differ", tb->name, nb - eq, nb);
    }
    printf("%s: %d of %d tensors identical to llama-quantize's, %lld of %lld blocks (%.3f%%)\n",
           ours_q, same, total, blocks_same, blocks,
           blocks ? 100.0 * (double)blocks_same / (double)blocks : 0.0);
    moe_gguf_file_close(a);
    moe_gguf_file_close(b);
}

int main(int argc, char **argv) {
    dat ours = {0}, ref = {0};
    const bool exact = argc == 5 && !strcmp(argv[4], "exact");
    if ((argc == 4 || exact) && !strcmp(argv[1], "dat")) {
        if (!load_dat(argv[2], &ours) || !load_dat(argv[3], &ref))
            return 1;
        check_dat(&ours, &ref, exact);
    } else if (argc == 4 && !strcmp(argv[1], "gguf")) {
        check_gguf(argv[2], argv[3]);
    } else if (argc == 4 && !strcmp(argv[1], "quant")) {
        check_quant(argv[2], argv[3]);
    } else {
        fprintf(stderr, "usage: imatrix_check dat OURS.dat EXPECTED.dat [exact] | gguf "
                        "OURS.dat OURS.gguf | quant OURS_Q.gguf REF_Q.gguf\n");
        return 2;
    }
    for (int32_t i = 0; i < ours.n; i++)
        free(ours.e[i].v);
    for (int32_t i = 0; i < ref.n; i++)
        free(ref.e[i].v);
    free(ours.e);
    free(ref.e);
    TEST_DONE();
}
