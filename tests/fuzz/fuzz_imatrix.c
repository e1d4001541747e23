/* fuzz_imatrix — fuzz target for the importance-matrix reader
 * (convert/imatrix.h: legacy .dat and GGUF forms). The input is the file;
 * it reaches the reader through a memory file (the reader takes a path).
 * Invariants: a rejected file leaves no table and a message; an accepted one
 * has named entries whose values are all readable and findable by name.
 * Corpus: tests/corpus/imatrix (replayed with --expect any). */
#include <string.h>

#include "convert/imatrix.h"
#include "fuzz/fuzz_target.h"

moe_status moe_fuzz_run(const uint8_t *data, size_t size, moe_err *err) {
    char path[64];
    int fd = moe_fuzz_memfd(data, size, path, sizeof path);
    MOE_FUZZ_REQUIRE(fd >= 0);
    moe_imatrix *im = NULL;
    moe_status st = moe_imatrix_load(path, &im, err);
    close(fd);
    if (st != MOE_OK) {
        MOE_FUZZ_REQUIRE(im == NULL && err->code == st && err->msg[0] != '\0');
        return st;
    }
    MOE_FUZZ_REQUIRE(im != NULL && im->n_entries >= 0);
    for (int64_t i = 0; i < im->n_entries; i++) {
        const moe_imatrix_entry *e = &im->entries[i];
        MOE_FUZZ_REQUIRE(e->name != NULL && e->n >= 0 && (e->n == 0 || e->values != NULL));
        moe_fuzz_touch(e->values, (size_t)e->n * sizeof *e->values);
        MOE_FUZZ_REQUIRE(moe_imatrix_find(im, e->name) != NULL);
    }
    moe_imatrix_free(im);
    return MOE_OK;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    moe_err err;
    moe_fuzz_run(data, size, &err);
    return 0;
}
