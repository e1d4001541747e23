/* fuzz_zstd — fuzz target for the seekable .gguf.zst reader
 * (formats/gguf/zstd_seekable.h): open from memory (seek table validation and the
 * truncation check), then whole-file and random-access decoding of files of
 * at most 1 MiB of plain bytes. Invariants: a rejected file leaves no handle
 * and a message; decoding either fails cleanly or gives the same bytes both
 * ways. Corpus: tests/corpus/zstd (replayed with --expect any). */
#include <string.h>

#include "formats/gguf/zstd_seekable.h"
#include "fuzz/fuzz_target.h"

enum { MAX_PLAIN = 1 << 20 };

static void check_decoding(moe_zstd_file *f) {
    uint64_t n = moe_zstd_size(f);
    if (n > MAX_PLAIN)
        n = 4096; /* only a prefix, by random access */
    uint8_t *all = malloc(n + 1), *part = malloc(n + 1);
    MOE_FUZZ_REQUIRE(all && part);
    moe_err e;
    bool whole = n == moe_zstd_size(f);
    moe_status st = whole ? moe_zstd_decompress_all(f, all, (size_t)n, 1, &e)
                          : moe_zstd_read(f, 0, all, (size_t)n, &e);
    if (st == MOE_OK && n > 0) {
        uint64_t off = n / 3; /* a read starting inside a frame */
        st = moe_zstd_read(f, off, part, (size_t)(n - off), &e);
        MOE_FUZZ_REQUIRE(st != MOE_OK || memcmp(all + off, part, (size_t)(n - off)) == 0);
    }
    MOE_FUZZ_REQUIRE(st == MOE_OK || e.msg[0] != '\0');
    free(all);
    free(part);
}

moe_status moe_fuzz_run(const uint8_t *data, size_t size, moe_err *err) {
    moe_zstd_file *f = NULL;
    moe_status st = moe_zstd_open_mem(data, size, "fuzz.gguf.zst", &f, err);
    if (st != MOE_OK) {
        MOE_FUZZ_REQUIRE(f == NULL && err->code == st && err->msg[0] != '\0');
        return st;
    }
    if (moe_zstd_has_seek_table(f))
        check_decoding(f);
    else
        MOE_FUZZ_REQUIRE(moe_zstd_size(f) == 0 && moe_zstd_n_frames(f) == 0);
    moe_zstd_close(f);
    return MOE_OK;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    moe_err err;
    moe_fuzz_run(data, size, &err);
    return 0;
}
