/* convert/source.h on a small legacy model written here: the stacked view
 * (names, shapes, order) is repack's plan, every byte range of every tensor
 * (ranges across experts included) equals the stacked bytes, whole copies
 * too; and moe_quantize_file on the legacy file gives the bytes of
 * moe_repack_write + moe_quantize_file, including a 1-D per-expert weight
 * whose stacked rows each come from another input tensor. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "convert/quantize.h"
#include "convert/source.h"
#include "repack/repack.h"
#include "test_util.h"

enum { D = 64, F = 32, E = 3, MAX_BYTES = D * F * 4 };

static char tmpdir[128];

static const char *tmp_path(const char *name) { return test_path_in(tmpdir, name); }

/* Byte k of input tensor `id` (ids are stable per name, below), so the
 * expected stacked bytes are known without reading the file: the bytes of
 * finite floats, distinct per tensor, so that they quantize. */
static uint8_t pattern(int id, int64_t k) {
    float v = (float)((id * 37 + (k / 4) * 11) % 201 - 100) / 64.0f;
    uint8_t b[4];
    memcpy(b, &v, 4);
    return b[k % 4];
}

typedef struct spec {
    char name[64];
    uint32_t nd;
    int64_t n0, n1;
    int id;
} spec;

/* token_embd, the router, ffn_up experts [D, F] in reverse expert order,
 * 1-D ffn_gate experts [D] (stacked: [D, E], one row per input tensor),
 * output. */
static int model_specs(spec *s) {
    int n = 0;
    s[n++] = (spec){"token_embd.weight", 2, D, 8, 0};
    s[n++] = (spec){"blk.0.ffn_gate_inp.weight", 2, D, E, 1};
    for (int e = E - 1; e >= 0; e--) {
        s[n] = (spec){"", 2, D, F, 10 + e};
        snprintf(s[n++].name, sizeof s->name, "blk.0.ffn_up.%d.weight", e);
    }
    for (int e = 0; e < E; e++) {
        s[n] = (spec){"", 1, D, 1, 20 + e};
        snprintf(s[n++].name, sizeof s->name, "blk.0.ffn_gate.%d.weight", e);
    }
    s[n++] = (spec){"output.weight", 2, D, 8, 2};
    return n;
}

static moe_status write_legacy(const char *path, moe_err *err) {
    spec s[16];
    int n = model_specs(s);
    moe_gguf_writer *w;
    moe_gguf_writer_opts o = {.overwrite = true};
    MOE_TRY(moe_gguf_writer_create(path, &o, &w, err));
    MOE_TRY(moe_gguf_writer_set_str(w, "general.architecture", "llama", err));
    MOE_TRY(moe_gguf_writer_set_u32(w, "llama.block_count", 1, err));
    MOE_TRY(moe_gguf_writer_set_u32(w, "llama.expert_count", E, err));
    for (int i = 0; i < n; i++) {
        int64_t ne[4] = {s[i].n0, s[i].n1, 1, 1};
        MOE_TRY(moe_gguf_writer_add_tensor(w, s[i].name, MOE_TYPE_F32, s[i].nd, ne, err));
    }
    MOE_TRY(moe_gguf_writer_begin_data(w, err));
    static uint8_t buf[MAX_BYTES];
    for (int i = 0; i < n; i++) {
        int64_t bytes = s[i].n0 * s[i].n1 * 4;
        for (int64_t k = 0; k < bytes; k++)
            buf[k] = pattern(s[i].id, k);
        MOE_TRY(moe_gguf_writer_write(w, buf, (size_t)bytes, err));
    }
    return moe_gguf_writer_finish(w, err);
}

/* The bytes tensor `name` of the stacked model must have, into out. */
static int64_t expected(const char *name, uint8_t *out) {
    int64_t n = 0;
    for (int e = 0; e < E; e++) {
        if (!strcmp(name, "blk.0.ffn_up_exps.weight"))
            for (int64_t k = 0; k < D * F * 4; k++)
                out[n++] = pattern(10 + e, k);
        if (!strcmp(name, "blk.0.ffn_gate_exps.weight"))
            for (int64_t k = 0; k < D * 4; k++)
                out[n++] = pattern(20 + e, k);
    }
    if (n)
        return n;
    spec s[16];
    int ns = model_specs(s);
    for (int i = 0; i < ns; i++)
        if (!strcmp(s[i].name, name))
            for (int64_t k = 0; k < s[i].n0 * s[i].n1 * 4; k++)
                out[n++] = pattern(s[i].id, k);
    return n;
}

static void test_view(const char *legacy) {
    moe_err err = {0};
    moe_qsource s;
    CHECK(moe_qsource_open(legacy, &s, &err) == MOE_OK, "%s", err.msg);
    CHECK(s.legacy && s.n_stacked == 2 && s.n_expert_inputs == 2 * E,
          "legacy, 2 stacks of %d experts: %d %llu %llu", E, s.legacy,
          (unsigned long long)s.n_stacked, (unsigned long long)s.n_expert_inputs);
    /* llama.cpp's order, as moe-repack writes it: by block, then by the input
     * position of each stack's first expert */
    static const char *const order[] = {"token_embd.weight", "blk.0.ffn_gate_inp.weight",
                                        "blk.0.ffn_up_exps.weight", "blk.0.ffn_gate_exps.weight",
                                        "output.weight"};
    CHECK(s.n_tensors == 5, "5 tensors, got %llu", (unsigned long long)s.n_tensors);
    for (uint64_t i = 0; i < s.n_tensors && i < 5; i++)
        CHECK(!strcmp(s.tensors[i].name, order[i]), "tensor %llu is %s, expected %s",
              (unsigned long long)i, s.tensors[i].name, order[i]);
    const moe_gguf_tensor *up = &s.tensors[2], *gate = &s.tensors[3];
    CHECK(up->n_dims == 3 && up->ne[0] == D && up->ne[1] == F && up->ne[2] == E, "up shape");
    CHECK(gate->n_dims == 2 && gate->ne[0] == D && gate->ne[1] == E, "gate shape");
    CHECK(moe_qsource_drops_key(&s, "split.count") && !moe_qsource_drops_key(&s, "llama.expert_count"),
          "split.* keys dropped, others kept");
    static uint8_t want[E * MAX_BYTES];
    for (uint64_t i = 0; i < s.n_tensors; i++) {
        int64_t n = expected(s.tensors[i].name, want);
        CHECK(n == (int64_t)s.tensors[i].nbytes, "%s: %lld bytes", s.tensors[i].name, (long long)n);
        CHECK(moe_qsource_check(&s, i, &err) == MOE_OK, "%s", err.msg);
        /* ranges of every length at many offsets: inside one expert, across
         * two or all of them */
        int bad = 0;
        for (int64_t off = 0; off < n; off += 97)
            for (int64_t len = 1; off + len <= n; len = len * 3 + 5) {
                const uint8_t *p = NULL;
                if (moe_qsource_bytes(&s, i, (uint64_t)off, (uint64_t)len, &p, &err) != MOE_OK ||
                    memcmp(p, want + off, (size_t)len) != 0)
                    bad++;
            }
        CHECK(bad == 0, "%s: %d ranges differ from the stacked bytes", s.tensors[i].name, bad);
    }
    /* whole copies through a writer read back as the stacked bytes */
    moe_gguf_writer *w;
    moe_gguf_writer_opts o = {.overwrite = true};
    moe_status st = moe_gguf_writer_create(tmp_path("copy.gguf"), &o, &w, &err);
    for (uint64_t i = 0; i < s.n_tensors && st == MOE_OK; i++)
        st = moe_gguf_writer_add_tensor(w, s.tensors[i].name, s.tensors[i].type,
                                        s.tensors[i].n_dims, s.tensors[i].ne, &err);
    if (st == MOE_OK)
        st = moe_gguf_writer_begin_data(w, &err);
    for (uint64_t i = 0; i < s.n_tensors && st == MOE_OK; i++) {
        st = moe_qsource_copy(&s, i, w, &err);
        moe_qsource_release(&s, i);
    }
    CHECK(st == MOE_OK && moe_gguf_writer_finish(w, &err) == MOE_OK, "copy: %s", err.msg);
    moe_qsource_close(&s);
    moe_qsource_close(&s); /* a closed source closes again harmlessly */

    moe_qsource c;
    CHECK(moe_qsource_open(tmp_path("copy.gguf"), &c, &err) == MOE_OK, "%s", err.msg);
    CHECK(!c.legacy && c.n_tensors == 5, "the copy is stacked, 5 tensors");
    for (uint64_t i = 0; i < c.n_tensors; i++) {
        int64_t n = expected(c.tensors[i].name, want);
        const uint8_t *p = NULL;
        CHECK(moe_qsource_bytes(&c, i, 0, (uint64_t)n, &p, &err) == MOE_OK &&
                  !memcmp(p, want, (size_t)n),
              "copy of %s", c.tensors[i].name);
    }
    moe_qsource_close(&c);
}

static bool same_file(const char *a, const char *b) {
    size_t na, nb;
    char *x = test_read_file(a, &na), *y = test_read_file(b, &nb);
    bool same = x && y && na == nb && !memcmp(x, y, na);
    free(x);
    free(y);
    return same;
}

/* The one step against the two, on a type that quantizes the 1-D-per-expert
 * gate too (its stacked rows come from E input tensors). */
static void test_quantize(const char *legacy) {
    moe_err err = {0};
    moe_gguf_set *set = NULL;
    moe_repack_plan plan = {0};
    moe_repack_result res = {0};
    moe_repack_write_opts wo = {.overwrite = true};
    moe_status st = moe_gguf_set_open(legacy, true, &set, &err);
    if (st == MOE_OK)
        st = moe_repack_plan_build(set, NULL, &plan, &err);
    if (st == MOE_OK)
        st = moe_repack_write(set, &plan, tmp_path("stacked.gguf"), &wo, &res, &err);
    CHECK(st == MOE_OK, "repack: %s", err.msg);
    moe_repack_result_free(&res);
    moe_repack_plan_free(&plan);
    moe_gguf_set_close(set);
    moe_quantize_opts o = {.threads = 2, .overwrite = true,
                           .output_type = (moe_type)MOE_TYPE_ID_LIMIT,
                           .token_embd_type = (moe_type)MOE_TYPE_ID_LIMIT};
    CHECK(moe_qtype_parse("q8_0", &o.choice, &err) == MOE_OK, "%s", err.msg);
    moe_quantize_report one, two;
    CHECK(moe_quantize_file(legacy, tmp_path("one.gguf"), &o, &one, &err) == MOE_OK, "%s", err.msg);
    CHECK(moe_quantize_file(tmp_path("stacked.gguf"), tmp_path("two.gguf"), &o, &two, &err) ==
              MOE_OK,
          "%s", err.msg);
    CHECK(one.n_tensors == 5 && !strcmp(one.tensors[3].name, "blk.0.ffn_gate_exps.weight") &&
              one.tensors[3].converted,
          "the stacked 1-D-per-expert gate is quantized");
    CHECK(same_file(tmp_path("one.gguf"), tmp_path("two.gguf")),
          "one step == repack then quantize, byte for byte");
    moe_quantize_report_free(&one);
    moe_quantize_report_free(&two);
}

int main(void) {
    snprintf(tmpdir, sizeof tmpdir, "/tmp/moe-test-qsource-XXXXXX");
    if (!mkdtemp(tmpdir))
        return 1;
    moe_err err = {0};
    char legacy[512]; /* tmp_path's buffers are reused */
    snprintf(legacy, sizeof legacy, "%s", tmp_path("legacy.gguf"));
    moe_status st = write_legacy(legacy, &err);
    CHECK(st == MOE_OK, "write: %s", err.msg);
    if (st == MOE_OK) {
        test_view(legacy);
        test_quantize(legacy);
    }
    test_remove_dir(tmpdir);
    TEST_DONE();
}
