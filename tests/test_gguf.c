/* GGUF writer -> reader round trips, checksums, atomic-write behaviour, and
 * both file sources on every conformance model. */
#include <dirent.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "formats/gguf/cursor.h"
#include "formats/quant/fp16.h"
#include "formats/gguf/gguf.h"
#include "test_util.h"

static char tmpdir[256];

static void path_in_tmp(char *buf, size_t n, const char *name) {
    snprintf(buf, n, "%s/%s", tmpdir, name);
}

static int count_temp_files(const char *dir) {
    DIR *d = opendir(dir);
    int n = 0;
    for (struct dirent *e; d && (e = readdir(d));)
        n += strstr(e->d_name, ".tmp.") != NULL;
    if (d)
        closedir(d);
    return n;
}

/* Tensor i holds bytes (i*7 + k) & 0xff, so content and order are checkable. */
static uint8_t pattern(uint64_t i, uint64_t k) { return (uint8_t)(i * 7 + k); }

static const int64_t shapes[3][4] = {{32, 3, 1, 1}, {64, 2, 2, 1}, {5, 1, 1, 1}};
static const moe_type types[3] = {MOE_TYPE_Q8_0, MOE_TYPE_F16, MOE_TYPE_F32};
static const uint32_t dims[3] = {2, 3, 1};

static moe_status write_sample(const char *path, uint32_t alignment, size_t chunk, bool abort_it,
                               moe_err *err) {
    moe_gguf_writer *w;
    moe_gguf_writer_opts o = {.overwrite = true};
    MOE_TRY(moe_gguf_writer_create(path, &o, &w, err));
    const char *strs[] = {"a", "", "hello \"world\""};
    const int32_t ints[] = {-1, 0, 7};
    MOE_TRY(moe_gguf_writer_set_str(w, "general.architecture", "llama", err));
    MOE_TRY(moe_gguf_writer_set_u32(w, "test.u32", 4000000000u, err));
    MOE_TRY(moe_gguf_writer_set_i32(w, "test.i32", -5, err));
    MOE_TRY(moe_gguf_writer_set_u16(w, "test.u16", 65535, err));
    MOE_TRY(moe_gguf_writer_set_f32(w, "test.f32", 0.25f, err));
    MOE_TRY(moe_gguf_writer_set_bool(w, "test.bool", true, err));
    MOE_TRY(moe_gguf_writer_set_arr_str(w, "test.strs", strs, 3, err));
    uint8_t le[12];
    for (int i = 0; i < 3; i++)
        moe_store_le32(le + 4 * i, (uint32_t)ints[i]);
    MOE_TRY(moe_gguf_writer_set_arr(w, "test.ints", MOE_GGUF_I32, 3, le, err));
    MOE_TRY(moe_gguf_writer_set_u32(w, "test.u32", 17, err)); /* replaces in place */
    if (alignment != 32)
        MOE_TRY(moe_gguf_writer_set_u32(w, "general.alignment", alignment, err));
    char name[32];
    for (int i = 0; i < 3; i++) {
        snprintf(name, sizeof name, "t%d.weight", i);
        MOE_TRY(moe_gguf_writer_add_tensor(w, name, types[i], dims[i], shapes[i], err));
    }
    MOE_TRY(moe_gguf_writer_begin_data(w, err));
    for (int i = 0; i < 3; i++) {
        uint64_t nb;
        MOE_TRY(moe_type_tensor_size(types[i], shapes[i], &nb, err));
        uint8_t *buf = malloc(nb);
        for (uint64_t k = 0; k < nb; k++)
            buf[k] = pattern((uint64_t)i, k);
        if (types[i] == MOE_TYPE_F32) /* keep floats finite: not needed, but tidy */
            for (uint64_t k = 0; k < nb; k += 4)
                moe_store_le32(buf + k, moe_f32_to_bits((float)k));
        for (uint64_t k = 0; k < nb; k += chunk) {
            size_t n = nb - k < chunk ? (size_t)(nb - k) : chunk;
            MOE_TRY(moe_gguf_writer_write(w, buf + k, n, err));
        }
        free(buf);
    }
    if (abort_it) {
        moe_gguf_writer_abort(w);
        return MOE_OK;
    }
    return moe_gguf_writer_finish(w, err);
}

static void check_sample(const char *path, uint32_t alignment, bool use_mmap) {
    moe_err err = {0};
    moe_gguf_file *f;
    moe_status st = moe_gguf_file_open(path, use_mmap, &f, &err);
    CHECK(st == MOE_OK, "open %s: %s", path, err.msg);
    if (st != MOE_OK)
        return;
    const moe_gguf *g = f->g;
    CHECK(g->version == 3 && g->alignment == alignment, "version %u alignment %u", g->version,
          g->alignment);
    CHECK(g->data_offset % alignment == 0, "data offset %llu", (unsigned long long)g->data_offset);
    int64_t v = 0;
    const char *s = NULL;
    CHECK(moe_gguf_get_int(g, "test.u32", &v, &err) == MOE_OK && v == 17, "u32 %lld", (long long)v);
    CHECK(moe_gguf_find_key(g, "test.u32") == 1, "replaced key keeps its position");
    CHECK(moe_gguf_get_int(g, "test.i32", &v, &err) == MOE_OK && v == -5, "i32");
    CHECK(moe_gguf_get_int(g, "test.u16", &v, &err) == MOE_OK && v == 65535, "u16");
    double d = 0;
    CHECK(moe_gguf_get_float(g, "test.f32", &d, &err) == MOE_OK && d == 0.25, "f32");
    CHECK(moe_gguf_get_str(g, "general.architecture", &s, &err) == MOE_OK && !strcmp(s, "llama"),
          "str");
    bool b = false;
    CHECK(moe_gguf_kv_bool(&g->kv[moe_gguf_find_key(g, "test.bool")], &b, &err) == MOE_OK && b,
          "bool");
    const moe_gguf_kv *sa = &g->kv[moe_gguf_find_key(g, "test.strs")];
    uint64_t len = 0;
    CHECK(sa->count == 3 && moe_gguf_arr_str(sa, 2, &s, &len, &err) == MOE_OK && len == 13 &&
              !memcmp(s, "hello \"world\"", 13),
          "string array");
    CHECK(moe_gguf_arr_str(sa, 1, &s, &len, &err) == MOE_OK && len == 0, "empty string element");
    const moe_gguf_kv *ia = &g->kv[moe_gguf_find_key(g, "test.ints")];
    CHECK(moe_gguf_arr_int(ia, 0, &v, &err) == MOE_OK && v == -1, "int array");
    CHECK(moe_gguf_arr_int(ia, 3, &v, &err) != MOE_OK, "index past end rejected");
    CHECK(moe_gguf_get_int(g, "missing.key", &v, &err) == MOE_ERR_FORMAT &&
              strstr(err.msg, "missing.key"),
          "missing key named: %s", err.msg);
    CHECK(moe_gguf_get_str(g, "test.u32", &s, &err) == MOE_ERR_FORMAT, "type mismatch");
    CHECK(g->n_tensors == 3, "tensor count");
    for (uint64_t i = 0; i < g->n_tensors && i < 3; i++) {
        const moe_gguf_tensor *t = &g->tensors[i];
        CHECK(t->type == types[i] && t->n_dims == dims[i], "tensor %llu type/dims",
              (unsigned long long)i);
        for (int dd = 0; dd < 4; dd++)
            CHECK(t->ne[dd] == shapes[i][dd], "tensor %llu ne[%d]", (unsigned long long)i, dd);
        CHECK(t->offset % alignment == 0, "aligned offset");
        uint8_t *buf = malloc(t->nbytes);
        moe_gguf_file_read(f, g->data_offset + t->offset, buf, t->nbytes, &err);
        bool same = true;
        for (uint64_t k = 0; k < t->nbytes && types[i] != MOE_TYPE_F32; k++)
            same &= buf[k] == pattern(i, k);
        CHECK(same, "tensor %llu bytes", (unsigned long long)i);
        if (use_mmap)
            CHECK(!memcmp(moe_gguf_file_tensor_data(f, i), buf, t->nbytes), "mapped bytes");
        free(buf);
    }
    CHECK(moe_gguf_find_tensor(g, "t1.weight") == 1 && moe_gguf_find_tensor(g, "nope") == -1,
          "tensor lookup");
    moe_gguf_verify_result vr;
    st = moe_gguf_file_verify(f, true, &vr, &err);
    CHECK(st == MOE_OK && vr.had_checksums && vr.n_checked == 3 && vr.n_mismatch == 0,
          "verify: %s", err.msg);
    free(vr.computed);
    moe_gguf_file_close(f);
}

static void test_round_trip(void) {
    char path[512];
    path_in_tmp(path, sizeof path, "rt.gguf");
    const size_t chunks[] = {1, 7, 4096, 1 << 20};
    const uint32_t aligns[] = {32, 64, 1};
    for (int a = 0; a < 3; a++) {
        for (int c = 0; c < 4; c++) {
            moe_err err = {0};
            moe_status st = write_sample(path, aligns[a], chunks[c], false, &err);
            CHECK(st == MOE_OK, "write (align %u chunk %zu): %s", aligns[a], chunks[c], err.msg);
            check_sample(path, aligns[a], true);
            check_sample(path, aligns[a], false);
        }
    }
    CHECK(count_temp_files(tmpdir) == 0, "no temp files left behind");
}

static void test_corruption_detected(void) {
    char path[512];
    path_in_tmp(path, sizeof path, "corrupt.gguf");
    moe_err err = {0};
    CHECK(write_sample(path, 32, 4096, false, &err) == MOE_OK, "write: %s", err.msg);
    moe_gguf_file *f;
    CHECK(moe_gguf_file_open(path, true, &f, &err) == MOE_OK, "open");
    uint64_t off = f->g->data_offset + f->g->tensors[1].offset + 5;
    moe_gguf_file_close(f);
    int fd = open(path, O_RDWR);
    uint8_t byte;
    CHECK(pread(fd, &byte, 1, (off_t)off) == 1, "read byte");
    byte ^= 0x40;
    CHECK(pwrite(fd, &byte, 1, (off_t)off) == 1, "flip byte");
    close(fd);
    for (int m = 0; m < 2; m++) {
        CHECK(moe_gguf_file_open(path, m == 0, &f, &err) == MOE_OK, "open");
        moe_gguf_verify_result vr;
        moe_status st = moe_gguf_file_verify(f, false, &vr, &err);
        CHECK(st == MOE_ERR_INTEGRITY && vr.first_bad == 1 && vr.n_mismatch == 1 &&
                  strstr(err.msg, "t1.weight"),
              "corruption named: %s", err.msg);
        moe_gguf_file_close(f);
    }
}

static void test_writer_refusals(void) {
    char path[512];
    path_in_tmp(path, sizeof path, "exists.gguf");
    FILE *fp = fopen(path, "w");
    fputs("precious", fp);
    fclose(fp);
    moe_gguf_writer *w = NULL;
    moe_err err = {0};
    CHECK(moe_gguf_writer_create(path, NULL, &w, &err) == MOE_ERR_USAGE && !w,
          "refuses existing output: %s", err.msg);
    /* aborted and incomplete writes leave nothing behind and the old file intact */
    CHECK(write_sample(path, 32, 100, true, &err) == MOE_OK, "aborted write");
    moe_gguf_writer_opts o = {.overwrite = true};
    CHECK(moe_gguf_writer_create(path, &o, &w, &err) == MOE_OK, "create");
    int64_t ne[4] = {32, 1, 1, 1};
    CHECK(moe_gguf_writer_add_tensor(w, "a", MOE_TYPE_Q4_0, 1, ne, &err) == MOE_OK, "add");
    CHECK(moe_gguf_writer_add_tensor(w, "a", MOE_TYPE_Q4_0, 1, ne, &err) == MOE_ERR_USAGE,
          "duplicate tensor refused");
    ne[0] = 33;
    CHECK(moe_gguf_writer_add_tensor(w, "b", MOE_TYPE_Q4_0, 1, ne, &err) != MOE_OK &&
              strstr(err.msg, "block size"),
          "bad row refused: %s", err.msg);
    CHECK(moe_gguf_writer_begin_data(w, &err) == MOE_OK, "begin");
    uint8_t half[9] = {0};
    CHECK(moe_gguf_writer_write(w, half, 9, &err) == MOE_OK, "partial write");
    CHECK(moe_gguf_writer_finish(w, &err) != MOE_OK && strstr(err.msg, "'a'"),
          "incomplete tensor refused: %s", err.msg);
    fp = fopen(path, "r");
    char buf[16] = {0};
    CHECK(fp && fgets(buf, sizeof buf, fp) && !strcmp(buf, "precious"), "old file untouched");
    if (fp)
        fclose(fp);
    CHECK(count_temp_files(tmpdir) == 0, "no temp files after failures");
    unlink(path);
}

static void test_conformance_models(void) {
    const char *dir = test_conformance_dir();
    const char *sub[] = {"models", "vocab", "imatrix"};
    for (int s = 0; s < 3; s++) {
        char d[1024];
        snprintf(d, sizeof d, "%s/%s", dir, sub[s]);
        DIR *dp = opendir(d);
        CHECK(dp != NULL, "open %s", d);
        for (struct dirent *e; dp && (e = readdir(dp));) {
            size_t n = strlen(e->d_name);
            if (n < 5 || strcmp(e->d_name + n - 5, ".gguf") != 0)
                continue;
            char path[2048];
            snprintf(path, sizeof path, "%s/%s", d, e->d_name);
            moe_err err = {0};
            moe_gguf_file *a = NULL, *b = NULL;
            CHECK(moe_gguf_file_open(path, true, &a, &err) == MOE_OK, "%s", err.msg);
            CHECK(moe_gguf_file_open(path, false, &b, &err) == MOE_OK, "%s", err.msg);
            if (a && b) {
                CHECK(a->g->n_tensors == b->g->n_tensors && a->g->n_kv == b->g->n_kv &&
                          a->g->data_offset == b->g->data_offset,
                      "mmap and read() agree on %s", e->d_name);
                moe_gguf_verify_result va, vb;
                CHECK(moe_gguf_file_verify(a, true, &va, &err) == MOE_OK, "%s", err.msg);
                CHECK(moe_gguf_file_verify(b, true, &vb, &err) == MOE_OK, "%s", err.msg);
                CHECK(va.computed && vb.computed &&
                          !memcmp(va.computed, vb.computed, 8 * a->g->n_tensors),
                      "hashes agree between sources for %s", e->d_name);
                free(va.computed);
                free(vb.computed);
            }
            moe_gguf_file_close(a);
            moe_gguf_file_close(b);
        }
        if (dp)
            closedir(dp);
    }
}

int main(int argc, char **argv) {
    snprintf(tmpdir, sizeof tmpdir, "/tmp/moe-test-gguf-XXXXXX");
    if (!mkdtemp(tmpdir))
        return 1;
    if (argc > 1 && !strcmp(argv[1], "conformance")) {
        test_conformance_models();
    } else {
        test_round_trip();
        test_corruption_detected();
        test_writer_refusals();
    }
    test_remove_dir(tmpdir);
    TEST_DONE();
}
