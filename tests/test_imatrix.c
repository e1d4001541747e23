/* The importance-matrix reader on llama.cpp's own .dat file, the same data in
 * the GGUF form, and the guard for experts the calibration never reached. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "convert/imatrix.h"
#include "convert/quantize.h"
#include "formats/gguf/cursor.h"
#include "formats/quant/fp16.h"
#include "formats/gguf/gguf.h"
#include "test_util.h"

static char tmp[] = "/tmp/moe-test-imatrix-XXXXXX";

/* Writes im back in the legacy layout with ncall = 1, zeroing expert `zero_e`
 * of entry `zero_name` (ne0 values per expert). */
static void write_dat(const moe_imatrix *im, const char *path, const char *zero_name, int64_t ne0,
                      int zero_e) {
    FILE *f = fopen(path, "wb");
    int32_t n = (int32_t)im->n_entries;
    fwrite(&n, 4, 1, f);
    for (int64_t i = 0; i < im->n_entries; i++) {
        const moe_imatrix_entry *e = &im->entries[i];
        int32_t len = (int32_t)strlen(e->name), ncall = 1, nval = (int32_t)e->n;
        fwrite(&len, 4, 1, f);
        fwrite(e->name, 1, (size_t)len, f);
        fwrite(&ncall, 4, 1, f);
        fwrite(&nval, 4, 1, f);
        for (int32_t k = 0; k < nval; k++) {
            bool zero = !strcmp(e->name, zero_name) && k / ne0 == zero_e;
            float v = zero ? 0.0f : e->values[k];
            fwrite(&v, 4, 1, f);
        }
    }
    fclose(f);
}

/* Same values as a GGUF imatrix: in_sum2 = value * count, counts = count. */
static void write_gguf(const moe_imatrix *im, const char *path, int64_t ne0_of_first) {
    moe_err err = {0};
    moe_gguf_writer *w;
    CHECK(moe_gguf_writer_create(path, &(moe_gguf_writer_opts){.overwrite = true}, &w, &err) ==
              MOE_OK, "%s", err.msg);
    moe_gguf_writer_set_str(w, "general.type", "imatrix", &err);
    moe_gguf_writer_set_u32(w, "imatrix.chunk_count", 125, &err);
    const moe_imatrix_entry *e = &im->entries[0];
    int64_t n_mat = e->n / ne0_of_first;
    char name[96];
    snprintf(name, sizeof name, "%s.in_sum2", e->name);
    moe_gguf_writer_add_tensor(w, name, MOE_TYPE_F32, 2, (int64_t[4]){ne0_of_first, n_mat, 1, 1}, &err);
    snprintf(name, sizeof name, "%s.counts", e->name);
    moe_gguf_writer_add_tensor(w, name, MOE_TYPE_F32, 2, (int64_t[4]){1, n_mat, 1, 1}, &err);
    moe_gguf_writer_begin_data(w, &err);
    for (int64_t k = 0; k < e->n; k++) {
        uint8_t b[4];
        moe_store_le32(b, moe_f32_to_bits(e->values[k] * 4.0f));
        moe_gguf_writer_write(w, b, 4, &err);
    }
    for (int64_t m = 0; m < n_mat; m++) {
        uint8_t b[4];
        moe_store_le32(b, moe_f32_to_bits(4.0f));
        moe_gguf_writer_write(w, b, 4, &err);
    }
    CHECK(moe_gguf_writer_finish(w, &err) == MOE_OK, "%s", err.msg);
}

/* Loading path must fail with a message that contains want. */
static void check_refused(const char *path, const char *want, const char *what) {
    moe_err err = {0};
    moe_imatrix *im = NULL;
    moe_status st = moe_imatrix_load(path, &im, &err);
    CHECK(st != MOE_OK && !im && strstr(err.msg, want) && strstr(err.msg, path),
          "%s refused naming the file and '%s' (status %d: %s)", what, want, (int)st, err.msg);
    moe_imatrix_free(im);
}

/* Copies src to dst without its last `cut` bytes. */
static void copy_cut(const char *src, const char *dst, long cut) {
    FILE *in = fopen(src, "rb"), *out = fopen(dst, "wb");
    CHECK(in && out, "copy %s", src);
    if (in && out) {
        fseek(in, 0, SEEK_END);
        long n = ftell(in) - cut;
        fseek(in, 0, SEEK_SET);
        for (long i = 0; i < n; i++)
            fputc(fgetc(in), out);
    }
    if (in)
        fclose(in);
    if (out)
        fclose(out);
}

/* Wrong files given as --imatrix (issue 16, hardening 7). */
static void check_bad_inputs(const char *dat, const char *model) {
    check_refused(model, "in_sum2", "a model file");
    check_refused(tmp, "directory", "a directory");
    char cut[256];
    snprintf(cut, sizeof cut, "%s/cut.dat", tmp);
    copy_cut(dat, cut, 1);
    check_refused(cut, "truncated", "a .dat one byte short (in its trailer)");
    copy_cut(dat, cut, 9);
    check_refused(cut, "truncated", "a .dat nine bytes short");
}

int main(void) {
    const char *dir = test_conformance_dir();
    if (!mkdtemp(tmp))
        return 1;
    char dat[1024], model[1024], ref[1024];
    snprintf(dat, sizeof dat, "%s/imatrix/tiny-llama.imatrix.dat", dir);
    snprintf(model, sizeof model, "%s/models/tiny-llama.gguf", dir);
    snprintf(ref, sizeof ref, "%s/models/tiny-llama-q4_0.gguf", dir);
    moe_err err = {0};
    moe_imatrix *im = NULL;
    CHECK(moe_imatrix_load(dat, &im, &err) == MOE_OK, "%s", err.msg);
    if (!im)
        return 1;
    CHECK(im->n_entries == 16, "16 entries, got %lld", (long long)im->n_entries);
    const moe_imatrix_entry *up = moe_imatrix_find(im, "blk.0.ffn_up_exps.weight");
    CHECK(up && up->n == 256 * 8, "stacked entry has ne0 x 8 experts values");
    CHECK(im->chunks == 125, "chunk count from the trailer: %lld", (long long)im->chunks);
    /* the GGUF form reads back to the same values */
    char gguf_path[256];
    snprintf(gguf_path, sizeof gguf_path, "%s/imatrix.gguf", tmp);
    write_gguf(im, gguf_path, 256);
    moe_imatrix *ig = NULL;
    CHECK(moe_imatrix_load(gguf_path, &ig, &err) == MOE_OK, "%s", err.msg);
    if (ig) {
        const moe_imatrix_entry *a = &im->entries[0], *b = moe_imatrix_find(ig, a->name);
        CHECK(b && b->n == a->n && !memcmp(a->values, b->values, (size_t)a->n * 4),
              "GGUF imatrix values equal the .dat values for %s", a->name);
        CHECK(ig->chunks == 125, "GGUF chunk count");
    }
    moe_imatrix_free(ig);
    check_bad_inputs(dat, model);
    /* an expert with an all-zero slice is quantized as without an imatrix */
    char zdat[256], out[256];
    snprintf(zdat, sizeof zdat, "%s/zero-expert.dat", tmp);
    snprintf(out, sizeof out, "%s/out.gguf", tmp);
    write_dat(im, zdat, "blk.0.ffn_up_exps.weight", 256, 3);
    moe_quantize_opts o = {.pure = true, .imatrix_path = zdat, .threads = 2,
                           .output_type = (moe_type)MOE_TYPE_ID_LIMIT,
                           .token_embd_type = (moe_type)MOE_TYPE_ID_LIMIT};
    CHECK(moe_qtype_parse("q4_0", &o.choice, &err) == MOE_OK, "type");
    moe_quantize_report rep;
    CHECK(moe_quantize_file(model, out, &o, &rep, &err) == MOE_OK, "%s", err.msg);
    moe_quantize_report_free(&rep);
    moe_gguf_file *a = NULL, *b = NULL;
    moe_gguf_file_open(out, true, &a, &err);
    moe_gguf_file_open(ref, true, &b, &err);
    if (a && b) {
        int64_t ia = moe_gguf_find_tensor(a->g, "blk.0.ffn_up_exps.weight");
        int64_t ib = moe_gguf_find_tensor(b->g, "blk.0.ffn_up_exps.weight");
        uint64_t slice = a->g->tensors[ia].nbytes / 8;
        CHECK(!memcmp(moe_gguf_file_tensor_data(a, (uint64_t)ia) + 3 * slice,
                      moe_gguf_file_tensor_data(b, (uint64_t)ib) + 3 * slice, slice),
              "the zero-slice expert equals llama-quantize's output without an imatrix");
        CHECK(memcmp(moe_gguf_file_tensor_data(a, (uint64_t)ia) + 2 * slice,
                     moe_gguf_file_tensor_data(b, (uint64_t)ib) + 2 * slice, slice) != 0,
              "the other experts did use the imatrix");
    }
    moe_gguf_file_close(a);
    moe_gguf_file_close(b);
    moe_imatrix_free(im);
    test_remove_dir(tmp);
    TEST_DONE();
}
