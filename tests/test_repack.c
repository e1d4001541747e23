/* moe_repack_* against the conformance pack (split -> stacked equals the
 * stacked model) and against small synthetic models for gate/up, shards,
 * checksums and every refusal. */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "formats/gguf/cursor.h"
#include "formats/gguf/gguf_set.h"
#include "repack/repack.h"
#include "test_util.h"

static char tmpdir[128];

static const char *tmp_path(const char *name) { return test_path_in(tmpdir, name); }

static bool exists(const char *path) {
    struct stat sb;
    return stat(path, &sb) == 0;
}

static moe_status repack(const char *in, const char *out, const moe_repack_opts *ro,
                         const moe_repack_write_opts *wo, moe_repack_plan *plan_out,
                         moe_err *err) {
    moe_gguf_set *set;
    MOE_TRY(moe_gguf_set_open(in, false, &set, err));
    moe_repack_plan plan;
    moe_status st = moe_repack_plan_build(set, ro, &plan, err);
    moe_repack_result res = {0};
    if (st == MOE_OK)
        st = moe_repack_write(set, &plan, out, wo, &res, err);
    moe_repack_result_free(&res);
    if (plan_out && st == MOE_OK)
        *plan_out = plan;
    else
        moe_repack_plan_free(&plan);
    moe_gguf_set_close(set);
    return st;
}

/* Every tensor of a equals the same-named tensor of b (type, shape, bytes);
 * with same_order also the same order. Returns the number of differences. */
static int compare_models(const char *a, const char *b, bool same_order) {
    moe_err err = {0};
    moe_gguf_set *x = NULL, *y = NULL;
    int bad = 0;
    if (moe_gguf_set_open(a, true, &x, &err) != MOE_OK ||
        moe_gguf_set_open(b, true, &y, &err) != MOE_OK) {
        fprintf(stderr, "open: %s\n", err.msg);
        bad = 1;
    }
    if (!bad && x->n_tensors != y->n_tensors) {
        fprintf(stderr, "%s has %llu tensors, %s %llu\n", a, (unsigned long long)x->n_tensors, b,
                (unsigned long long)y->n_tensors);
        bad++;
    }
    for (uint64_t i = 0; !bad && i < x->n_tensors; i++) {
        const moe_gguf_file *fx, *fy;
        const moe_gguf_tensor *tx = moe_gguf_set_tensor(x, i, &fx);
        int64_t j = moe_gguf_set_find(y, tx->name);
        if (j < 0 || (same_order && (uint64_t)j != i)) {
            fprintf(stderr, "%s: '%s' missing or out of place\n", b, tx->name);
            bad++;
            continue;
        }
        const moe_gguf_tensor *ty = moe_gguf_set_tensor(y, (uint64_t)j, &fy);
        if (tx->type != ty->type || tx->n_dims != ty->n_dims ||
            memcmp(tx->ne, ty->ne, sizeof tx->ne) || tx->nbytes != ty->nbytes ||
            memcmp(fx->map + fx->g->data_offset + tx->offset,
                   fy->map + fy->g->data_offset + ty->offset, tx->nbytes)) {
            fprintf(stderr, "tensor '%s' differs\n", tx->name);
            bad++;
        }
    }
    moe_gguf_set_close(x);
    moe_gguf_set_close(y);
    return bad;
}

static bool same_file(const char *a, const char *b) {
    char cmd[1200];
    snprintf(cmd, sizeof cmd, "cmp -s '%s' '%s'", a, b);
    return system(cmd) == 0;
}

static void test_conformance(void) {
    const char *dir = test_conformance_dir();
    char split[1024], stacked[1024], q4k[1024];
    snprintf(split, sizeof split, "%s/models/tiny-llama-split.gguf", dir);
    snprintf(stacked, sizeof stacked, "%s/models/tiny-llama.gguf", dir);
    snprintf(q4k, sizeof q4k, "%s/models/tiny-llama-q4_K.gguf", dir);
    moe_err err = {0};
    moe_repack_write_opts wo = {.verify = true};
    moe_repack_plan plan = {0};
    const char *out = tmp_path("from-split.gguf");
    CHECK(repack(split, out, NULL, &wo, &plan, &err) == MOE_OK, "repack split: %s", err.msg);
    CHECK(plan.n_stacked == 6 && plan.n_expert_inputs == 48, "6 stacks of 8 experts, got %llu/%llu",
          (unsigned long long)plan.n_stacked, (unsigned long long)plan.n_expert_inputs);
    moe_repack_plan_free(&plan);
    CHECK(compare_models(out, stacked, true) == 0, "split -> stacked equals tiny-llama.gguf");
    /* metadata byte for byte */
    moe_gguf_file *a = NULL, *b = NULL;
    moe_gguf_file_open(split, true, &a, &err);
    moe_gguf_file_open(out, true, &b, &err);
    for (uint64_t k = 0; a && b && k < a->g->n_kv; k++) {
        int64_t j = moe_gguf_find_key(b->g, a->g->kv[k].key);
        CHECK(j >= 0 && b->g->kv[j].raw_len == a->g->kv[k].raw_len &&
                  !memcmp(b->g->kv[j].raw, a->g->kv[k].raw, a->g->kv[k].raw_len),
              "key %s copied byte for byte", a->g->kv[k].key);
    }
    CHECK(b && moe_gguf_find_key(b->g, MOE_GGUF_XXH3_KEY) >= 0, "checksums recorded");
    moe_gguf_file_close(a);
    moe_gguf_file_close(b);
    /* stacked and quantized files pass through with identical data and order */
    const char *models[] = {stacked, q4k};
    for (int m = 0; m < 2; m++) {
        const char *o1 = tmp_path("pass1.gguf"), *o2 = tmp_path("pass2.gguf");
        moe_repack_write_opts force = {.overwrite = true};
        CHECK(repack(models[m], o1, NULL, &force, NULL, &err) == MOE_OK, "%s", err.msg);
        CHECK(repack(o1, o2, NULL, &force, NULL, &err) == MOE_OK, "%s", err.msg);
        CHECK(compare_models(models[m], o1, true) == 0, "pass-through keeps data and order");
        CHECK(same_file(o1, o2), "repacking twice gives identical files");
        const char *o3 = tmp_path("pass3.gguf");
        CHECK(repack(models[m], o3, NULL, &force, NULL, &err) == MOE_OK, "%s", err.msg);
        CHECK(same_file(o1, o3), "deterministic output");
    }
}

/* ---- synthetic models ----------------------------------------------------------- */

typedef enum variant { V_OK, V_MISSING, V_WRONG_TYPE, V_OUT_OF_RANGE, V_NO_KEY } variant;

enum { D = 64, F = 32, E = 4 };

static moe_status add_f32(moe_gguf_writer *w, const char *name, uint32_t nd, int64_t n0, int64_t n1,
                          moe_type type, moe_err *err) {
    int64_t ne[4] = {n0, n1, 1, 1};
    return moe_gguf_writer_add_tensor(w, name, type, nd, ne, err);
}

/* token_embd, blk.0 (router + experts in the split layout), output. Tensor
 * bytes: byte k of tensor i is (i * 31 + k * 7) & 0xff. */
static moe_status make_split(const char *path, variant v, moe_err *err) {
    moe_gguf_writer *w;
    moe_gguf_writer_opts o = {.overwrite = true};
    MOE_TRY(moe_gguf_writer_create(path, &o, &w, err));
    MOE_TRY(moe_gguf_writer_set_str(w, "general.architecture", "llama", err));
    if (v != V_NO_KEY)
        MOE_TRY(moe_gguf_writer_set_u32(w, "llama.expert_count", v == V_OUT_OF_RANGE ? E - 1 : E,
                                        err));
    MOE_TRY(add_f32(w, "token_embd.weight", 2, D, 8, MOE_TYPE_F32, err));
    MOE_TRY(add_f32(w, "blk.0.ffn_gate_inp.weight", 2, D, E, MOE_TYPE_F32, err));
    const char *fam[3] = {"ffn_gate", "ffn_down", "ffn_up"};
    for (int f = 0; f < 3; f++) {
        for (int e = 0; e < E; e++) {
            if (v == V_MISSING && f == 2 && e == 2)
                continue;
            char name[64];
            snprintf(name, sizeof name, "blk.0.%s.%d.weight", fam[f], e);
            moe_type t = v == V_WRONG_TYPE && f == 1 && e == 1 ? MOE_TYPE_F16 : MOE_TYPE_F32;
            MOE_TRY(add_f32(w, name, 2, f == 1 ? F : D, f == 1 ? D : F, t, err));
        }
    }
    MOE_TRY(add_f32(w, "output.weight", 2, D, 8, MOE_TYPE_F32, err));
    MOE_TRY(moe_gguf_writer_begin_data(w, err));
    uint8_t buf[64 * 64 * 4];
    int64_t sizes[32];
    int n = 0;
    sizes[n++] = D * 8 * 4;
    sizes[n++] = D * E * 4;
    for (int f = 0; f < 3; f++)
        for (int e = 0; e < E; e++)
            if (!(v == V_MISSING && f == 2 && e == 2))
                sizes[n++] = D * F * (v == V_WRONG_TYPE && f == 1 && e == 1 ? 2 : 4);
    sizes[n++] = D * 8 * 4;
    for (int i = 0; i < n; i++) {
        for (int64_t k = 0; k < sizes[i]; k++)
            buf[k] = (uint8_t)(i * 31 + k * 7);
        MOE_TRY(moe_gguf_writer_write(w, buf, (size_t)sizes[i], err));
    }
    return moe_gguf_writer_finish(w, err);
}

static void test_refusals(void) {
    struct {
        variant v;
        const char *needle;
    } cases[] = {
        {V_MISSING, "blk.0.ffn_up.2.weight"},
        {V_WRONG_TYPE, "blk.0.ffn_down.1.weight"},
        {V_OUT_OF_RANGE, "expert 3 is out of range"},
        {V_NO_KEY, "expert_count"},
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        moe_err err = {0};
        const char *in = tmp_path("bad-split.gguf"), *out = tmp_path("bad-out.gguf");
        CHECK(make_split(in, cases[c].v, &err) == MOE_OK, "make: %s", err.msg);
        moe_status st = repack(in, out, NULL, NULL, NULL, &err);
        CHECK(st == MOE_ERR_FORMAT && strstr(err.msg, cases[c].needle),
              "case %zu refused naming '%s': %s", c, cases[c].needle, err.msg);
        CHECK(!exists(out), "nothing written for case %zu", c);
    }
    /* output over the input, and over an existing file without overwrite */
    moe_err err = {0};
    const char *in = tmp_path("ok-split.gguf");
    CHECK(make_split(in, V_OK, &err) == MOE_OK, "make: %s", err.msg);
    moe_repack_write_opts force = {.overwrite = true};
    CHECK(repack(in, in, NULL, &force, NULL, &err) == MOE_ERR_USAGE && strstr(err.msg, "input"),
          "refuses to overwrite its input: %s", err.msg);
    const char *link_path = tmp_path("hardlink.gguf");
    CHECK(link(in, link_path) == 0, "hard link");
    CHECK(repack(in, link_path, NULL, &force, NULL, &err) == MOE_ERR_USAGE,
          "refuses a hard link to its input: %s", err.msg);
    unlink(link_path);
    const char *out = tmp_path("exists.gguf");
    FILE *fp = fopen(out, "w");
    fputs("x", fp);
    fclose(fp);
    CHECK(repack(in, out, NULL, NULL, NULL, &err) == MOE_ERR_USAGE && strstr(err.msg, "--force"),
          "refuses existing output: %s", err.msg);
    CHECK(repack(in, out, NULL, &force, NULL, &err) == MOE_OK, "replaces with force: %s", err.msg);
}

static void test_gate_up(void) {
    moe_err err = {0};
    const char *split = tmp_path("gu-split.gguf"), *stacked = tmp_path("gu-stacked.gguf");
    const char *merged = tmp_path("gu-merged.gguf"), *back = tmp_path("gu-back.gguf");
    moe_repack_write_opts force = {.overwrite = true, .verify = true};
    CHECK(make_split(split, V_OK, &err) == MOE_OK, "make: %s", err.msg);
    CHECK(repack(split, stacked, NULL, &force, NULL, &err) == MOE_OK, "stack: %s", err.msg);
    moe_repack_opts merge = {.gate_up = MOE_GATE_UP_MERGE};
    moe_repack_opts unmerge = {.gate_up = MOE_GATE_UP_SPLIT};
    CHECK(repack(stacked, merged, &merge, &force, NULL, &err) == MOE_OK, "merge: %s", err.msg);
    CHECK(repack(merged, back, &unmerge, &force, NULL, &err) == MOE_OK, "split: %s", err.msg);
    CHECK(compare_models(stacked, back, false) == 0, "merge then split restores every tensor");
    /* legacy experts merge directly */
    const char *merged2 = tmp_path("gu-merged2.gguf");
    CHECK(repack(split, merged2, &merge, &force, NULL, &err) == MOE_OK, "%s", err.msg);
    CHECK(compare_models(merged, merged2, true) == 0, "split -> merged equals stacked -> merged");
    /* per expert: gate rows then up rows */
    moe_gguf_set *m = NULL, *s = NULL;
    moe_gguf_set_open(merged, true, &m, &err);
    moe_gguf_set_open(stacked, true, &s, &err);
    int64_t gi = m ? moe_gguf_set_find(m, "blk.0.ffn_gate_up_exps.weight") : -1;
    CHECK(gi >= 0, "merged tensor present");
    if (gi >= 0 && s) {
        const moe_gguf_file *fm, *fg, *fu;
        const moe_gguf_tensor *tm = moe_gguf_set_tensor(m, (uint64_t)gi, &fm);
        const moe_gguf_tensor *tg =
            moe_gguf_set_tensor(s, (uint64_t)moe_gguf_set_find(s, "blk.0.ffn_gate_exps.weight"), &fg);
        const moe_gguf_tensor *tu =
            moe_gguf_set_tensor(s, (uint64_t)moe_gguf_set_find(s, "blk.0.ffn_up_exps.weight"), &fu);
        CHECK(tm->ne[0] == D && tm->ne[1] == 2 * F && tm->ne[2] == E, "merged shape");
        uint64_t half = tg->nbytes / E;
        const uint8_t *pm = fm->map + fm->g->data_offset + tm->offset;
        const uint8_t *pg = fg->map + fg->g->data_offset + tg->offset;
        const uint8_t *pu = fu->map + fu->g->data_offset + tu->offset;
        for (int e = 0; e < E; e++) {
            CHECK(!memcmp(pm + 2 * e * half, pg + e * half, half), "expert %d gate rows first", e);
            CHECK(!memcmp(pm + (2 * e + 1) * half, pu + e * half, half), "expert %d up rows", e);
        }
    }
    moe_gguf_set_close(m);
    moe_gguf_set_close(s);
    /* an up-first input read as such comes out gate-first with the halves swapped */
    const char *swapped = tmp_path("gu-swapped.gguf");
    moe_repack_opts up_first = {.input_up_first = true};
    moe_repack_plan plan;
    CHECK(repack(merged, swapped, &up_first, &force, &plan, &err) == MOE_OK, "%s", err.msg);
    CHECK(plan.n_gate_up == 1, "one tensor reordered");
    moe_repack_plan_free(&plan);
    const char *swapped_split = tmp_path("gu-swapped-split.gguf");
    CHECK(repack(swapped, swapped_split, &unmerge, &force, NULL, &err) == MOE_OK, "%s", err.msg);
    moe_gguf_set *x = NULL, *y = NULL;
    moe_gguf_set_open(swapped_split, true, &x, &err);
    moe_gguf_set_open(stacked, true, &y, &err);
    if (x && y) {
        const moe_gguf_file *fx, *fy;
        const moe_gguf_tensor *g2 =
            moe_gguf_set_tensor(x, (uint64_t)moe_gguf_set_find(x, "blk.0.ffn_gate_exps.weight"), &fx);
        const moe_gguf_tensor *u1 =
            moe_gguf_set_tensor(y, (uint64_t)moe_gguf_set_find(y, "blk.0.ffn_up_exps.weight"), &fy);
        CHECK(!memcmp(fx->map + fx->g->data_offset + g2->offset,
                      fy->map + fy->g->data_offset + u1->offset, g2->nbytes),
              "reordered halves: what was read as gate is the old up");
    }
    moe_gguf_set_close(x);
    moe_gguf_set_close(y);
}

static void test_shards_and_checksums(void) {
    moe_err err = {0};
    const char *split = tmp_path("sh-split.gguf"), *single = tmp_path("sh-single.gguf");
    CHECK(make_split(split, V_OK, &err) == MOE_OK, "make: %s", err.msg);
    moe_repack_write_opts one = {.overwrite = true};
    CHECK(repack(split, single, NULL, &one, NULL, &err) == MOE_OK, "%s", err.msg);
    moe_repack_write_opts shards = {.overwrite = true, .split_max_tensors = 2, .verify = true};
    CHECK(repack(split, tmp_path("sh.gguf"), NULL, &shards, NULL, &err) == MOE_OK, "%s", err.msg);
    const char *first = tmp_path("sh-00001-of-00003.gguf");
    CHECK(exists(first) && exists(tmp_path("sh-00003-of-00003.gguf")) && !exists(tmp_path("sh.gguf")),
          "three shards named like llama.cpp's");
    CHECK(compare_models(single, first, true) == 0, "the shard set holds the same tensors");
    moe_gguf_set *set = NULL;
    CHECK(moe_gguf_set_open(tmp_path("sh-00002-of-00003.gguf"), false, &set, &err) ==
                  MOE_ERR_USAGE &&
              strstr(err.msg, "sh-00001-of-00003.gguf"),
          "a later shard points to the first: %s", err.msg);
    /* a byte flipped in an input tensor with a stored checksum stops the repack */
    moe_gguf_file *f = NULL;
    CHECK(moe_gguf_file_open(single, false, &f, &err) == MOE_OK, "%s", err.msg);
    uint64_t off = f ? f->g->data_offset + f->g->tensors[3].offset + 11 : 0;
    moe_gguf_file_close(f);
    int fd = open(single, O_RDWR);
    uint8_t byte = 0;
    CHECK(pread(fd, &byte, 1, (off_t)off) == 1, "read");
    byte ^= 1;
    CHECK(pwrite(fd, &byte, 1, (off_t)off) == 1, "flip");
    close(fd);
    const char *out = tmp_path("sh-after-corruption.gguf");
    CHECK(repack(single, out, NULL, &one, NULL, &err) == MOE_ERR_INTEGRITY &&
              strstr(err.msg, "blk.0.ffn_down_exps.weight"),
          "corrupt input named: %s", err.msg);
    CHECK(!exists(out), "no output after an integrity failure");
}

int main(int argc, char **argv) {
    snprintf(tmpdir, sizeof tmpdir, "/tmp/moe-test-repack-XXXXXX");
    if (!mkdtemp(tmpdir))
        return 1;
    if (argc > 1 && !strcmp(argv[1], "conformance")) {
        test_conformance();
    } else {
        test_refusals();
        test_gate_up();
        test_shards_and_checksums();
    }
    char cmd[256];
    snprintf(cmd, sizeof cmd, "ls -A %s | grep -q '\\.tmp\\.'", tmpdir);
    CHECK(system(cmd) != 0, "no temp files left in %s", tmpdir);
    test_remove_dir(tmpdir);
    TEST_DONE();
}
