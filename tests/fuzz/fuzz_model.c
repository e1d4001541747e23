/* fuzz_model — fuzz target for the model loader up to the first decode
 * (runtime/include/moe.h). Input: a GGUF model file (the seeds: moe-synth
 * models of a few KB, one per architecture), handed over through a memory
 * file since the loader takes a path. A model that loads gets a context of
 * 16 cells and decodes one token. Invariants: a rejected model leaves no
 * handle and a message; an accepted one gives n_vocab finite-or-not logits
 * that can all be read. Corpus: tests/corpus/model (replayed with --expect
 * any). */
#include <string.h>

#include "formats/base/log.h"
#include "fuzz/fuzz_target.h"
#include "runtime/include/moe.h"

static moe_status first_decode(moe_model *m, moe_err *err) {
    moe_context_params cp = moe_context_default_params();
    cp.n_ctx = 16;
    cp.n_batch = 4;
    cp.n_threads = 1;
    moe_context *ctx = NULL;
    MOE_TRY(moe_context_create(m, &cp, &ctx, err));
    int64_t n_vocab = moe_model_n_vocab(m);
    moe_token tok = (moe_token)(n_vocab > 1 ? 1 : 0);
    moe_batch b = {.n_tokens = 1, .token = &tok};
    moe_status st = moe_decode(ctx, &b, err);
    if (st == MOE_OK) {
        const float *logits = moe_get_logits_ith(ctx, 0);
        MOE_FUZZ_REQUIRE(logits != NULL);
        moe_fuzz_touch(logits, (size_t)n_vocab * sizeof *logits);
    } else {
        MOE_FUZZ_REQUIRE(err->msg[0] != '\0');
    }
    moe_context_free(ctx);
    return st;
}

moe_status moe_fuzz_run(const uint8_t *data, size_t size, moe_err *err) {
    moe_log_set_level(MOE_LOG_ERROR);
    char path[64];
    int fd = moe_fuzz_memfd(data, size, path, sizeof path);
    MOE_FUZZ_REQUIRE(fd >= 0);
    moe_model_params mp = moe_model_default_params();
    mp.n_threads = 1;
    moe_model *m = NULL;
    moe_status st = moe_model_load(path, &mp, &m, err);
    close(fd);
    if (st != MOE_OK) {
        MOE_FUZZ_REQUIRE(m == NULL && err->msg[0] != '\0');
        return st;
    }
    st = first_decode(m, err);
    moe_model_free(m);
    return st;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    moe_err err;
    moe_fuzz_run(data, size, &err);
    return 0;
}
