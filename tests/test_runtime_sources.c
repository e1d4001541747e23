/* Every way of loading a model gives the same logits, bit for bit: mapped,
 * read into memory, a legacy split-expert file, llama.cpp-style shards, and a
 * seekable .gguf.zst; plus --verify on stored checksums and load-time errors. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "formats/gguf/zstd_seekable.h"
#include "repack/repack.h"
#include "runtime/include/moe.h"
#include "test_util.h"

enum { N_PROMPT = 16, N_VOCAB = 512 };

static int32_t prompt[N_PROMPT];

/* Logits of the prompt batch, all rows; false on any failure (reported). */
static bool run(const char *path, bool use_mmap, bool verify, float *out) {
    moe_err err = {0};
    moe_model_params mp = moe_model_default_params();
    mp.use_mmap = use_mmap;
    mp.verify = verify;
    moe_model *m = NULL;
    moe_context *c = NULL;
    bool ok = moe_model_load(path, &mp, &m, &err) == MOE_OK;
    moe_context_params cp = moe_context_default_params();
    cp.n_ctx = 64;
    cp.n_threads = 2;
    ok = ok && moe_context_create(m, &cp, &c, &err) == MOE_OK;
    int8_t want[N_PROMPT];
    memset(want, 1, sizeof want);
    moe_batch b = {.n_tokens = N_PROMPT, .token = prompt, .logits = want};
    ok = ok && moe_decode(c, &b, &err) == MOE_OK;
    for (int i = 0; ok && i < N_PROMPT; i++)
        memcpy(out + i * N_VOCAB, moe_get_logits_ith(c, i), N_VOCAB * sizeof(float));
    if (!ok)
        fprintf(stderr, "%s: %s\n", path, err.msg);
    moe_context_free(c);
    moe_model_free(m);
    return ok;
}

static void make_shards(const char *src, const char *out) {
    moe_err err = {0};
    moe_gguf_set *set = NULL;
    moe_repack_plan plan = {0};
    moe_repack_result res = {0};
    moe_repack_write_opts wo = {.overwrite = true, .split_max_tensors = 7};
    CHECK(moe_gguf_set_open(src, false, &set, &err) == MOE_OK &&
              moe_repack_plan_build(set, NULL, &plan, &err) == MOE_OK &&
              moe_repack_write(set, &plan, out, &wo, &res, &err) == MOE_OK,
          "shards: %s", err.msg);
    moe_repack_result_free(&res);
    moe_repack_plan_free(&plan);
    moe_gguf_set_close(set);
}

int main(void) {
    const char *dir = test_conformance_dir();
    char base[1024], split[1024], tmp[] = "/tmp/moe-test-sources-XXXXXX";
    snprintf(base, sizeof base, "%s/models/tiny-llama.gguf", dir);
    snprintf(split, sizeof split, "%s/models/tiny-llama-split.gguf", dir);
    if (!mkdtemp(tmp))
        return 1;
    char tokens[1024];
    snprintf(tokens, sizeof tokens, "%s/prompt.tokens", dir);
    FILE *tf = fopen(tokens, "r");
    for (int i = 0; tf && i < N_PROMPT; i++)
        CHECK(fscanf(tf, "%d", &prompt[i]) == 1, "prompt token %d", i);
    if (tf)
        fclose(tf);
    static float ref[N_PROMPT * N_VOCAB], got[N_PROMPT * N_VOCAB];
    CHECK(run(base, true, false, ref), "mapped load");
    CHECK(run(base, false, false, got) && !memcmp(ref, got, sizeof ref), "--no-mmap equals mmap");
    CHECK(run(split, true, false, got) && !memcmp(ref, got, sizeof ref),
          "legacy split layout equals the stacked file");
    char shards[256], first[256], zst[256];
    snprintf(shards, sizeof shards, "%s/sh.gguf", tmp);
    snprintf(first, sizeof first, "%s/sh-00001-of-00004.gguf", tmp);
    make_shards(base, shards);
    CHECK(run(first, true, true, got) && !memcmp(ref, got, sizeof ref),
          "four shards, verified, equal the single file");
    snprintf(zst, sizeof zst, "%s/m.gguf.zst", tmp);
    moe_err err = {0};
    CHECK(moe_zstd_compress_file(base, zst, 3, 1 << 20, 2, true, &err) == MOE_OK, "%s", err.msg);
    CHECK(run(zst, true, false, got) && !memcmp(ref, got, sizeof ref),
          ".gguf.zst (decompressed in parallel at load) equals the plain file");
    /* a compressed shard set (what moe-repack --zstd --split-max-size writes) */
    char sh[256], shz[300];
    for (int k = 1; k <= 4; k++) {
        snprintf(sh, sizeof sh, "%s/sh-%05d-of-00004.gguf", tmp, k);
        snprintf(shz, sizeof shz, "%s.zst", sh);
        CHECK(moe_zstd_compress_file(sh, shz, 3, 1 << 20, 2, true, &err) == MOE_OK, "%s", err.msg);
    }
    snprintf(shz, sizeof shz, "%s/sh-00001-of-00004.gguf.zst", tmp);
    CHECK(run(shz, true, true, got) && !memcmp(ref, got, sizeof ref),
          "compressed shards, verified, equal the single file");
    /* a decode that fails (cache full) changes nothing and leaves no stale logits */
    {
        moe_model *mm = NULL;
        moe_context *c = NULL;
        moe_context_params cp = moe_context_default_params();
        cp.n_ctx = 4;
        CHECK(moe_model_load(base, NULL, &mm, &err) == MOE_OK &&
                  moe_context_create(mm, &cp, &c, &err) == MOE_OK, "%s", err.msg);
        moe_batch b3 = {.n_tokens = 3, .token = prompt};
        CHECK(c && moe_decode(c, &b3, &err) == MOE_OK && moe_get_logits_ith(c, 2), "3 tokens fit");
        int8_t all[3] = {1, 1, 1};
        moe_batch again = {.n_tokens = 3, .token = prompt + 3, .logits = all};
        CHECK(c && moe_decode(c, &again, &err) == MOE_ERR_USAGE && strstr(err.msg, "full"),
              "a fourth to sixth token do not fit: %s", err.msg);
        for (int i = 0; c && i < 3; i++)
            CHECK(moe_get_logits_ith(c, i) == NULL, "no logits row %d after a failed decode", i);
        CHECK(c && moe_kv_seq_pos_max(c, 0) == 2 && moe_kv_seq_pos_max(c, 99) == -1,
              "the cache still holds exactly the first batch");
        moe_context_free(c);
        moe_model_free(mm);
    }
    /* errors before any compute, naming what is wrong */
    moe_model *m = NULL;
    CHECK(moe_model_load("/nonexistent/model.gguf", NULL, &m, &err) == MOE_ERR_IO && !m &&
              strstr(err.msg, "/nonexistent/model.gguf"),
          "missing file named: %s", err.msg);
    char vocab[1024];
    snprintf(vocab, sizeof vocab, "%s/vocab/ggml-vocab-llama-spm.gguf", dir);
    CHECK(moe_model_load(vocab, NULL, &m, &err) != MOE_OK && !m, "vocab-only file refused: %s",
          err.msg);
    test_remove_dir(tmp);
    TEST_DONE();
}
