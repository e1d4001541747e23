/* Several sequences in one context behave as if each had a context of its
 * own: a batch that interleaves two prompts gives each prompt the logits it
 * gets alone, later single-token steps of one sequence do not see the other,
 * and removing one sequence leaves the other intact. Checked on a MoE model
 * (tiny-llama) and on the MLA model (deepseek2), whose caches differ. */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "runtime/include/moe.h"
#include "test_util.h"

enum { N_HALF = 8, N_FEED = 3, N_VOCAB_MAX = 4096 };

/* Per-element summation order depends only on the reduction length, not on
 * which other tokens share the batch, so equality is expected; the tolerance
 * only leaves room for a later kernel that blocks rows differently. */
static const float tolerance = 1e-4f;

static int32_t tokens[2 * N_HALF + 2 * N_FEED];

static float max_abs_diff(const float *a, const float *b, int n) {
    float d = 0;
    for (int i = 0; i < n; i++)
        d = fmaxf(d, fabsf(a[i] - b[i]));
    return d;
}

static moe_context *new_context(moe_model *m, int n_seq) {
    moe_err err = {0};
    moe_context_params cp = moe_context_default_params();
    cp.n_ctx = 64;
    cp.n_seq_max = n_seq;
    cp.n_threads = 2;
    moe_context *c = NULL;
    CHECK(moe_context_create(m, &cp, &c, &err) == MOE_OK, "context: %s", err.msg);
    return c;
}

/* One prompt alone: logits of its N_HALF prompt rows then of N_FEED fed tokens. */
static void run_alone(moe_model *m, const int32_t *prompt, const int32_t *feed, int n_vocab,
                      float *rows) {
    moe_err err = {0};
    moe_context *c = new_context(m, 1);
    int8_t all[N_HALF];
    memset(all, 1, sizeof all);
    moe_batch b = {.n_tokens = N_HALF, .token = prompt, .logits = all};
    CHECK(c && moe_decode(c, &b, &err) == MOE_OK, "alone: %s", err.msg);
    for (int i = 0; c && i < N_HALF; i++)
        memcpy(rows + i * n_vocab, moe_get_logits_ith(c, i), n_vocab * sizeof(float));
    for (int k = 0; c && k < N_FEED; k++) {
        moe_batch one = {.n_tokens = 1, .token = feed + k};
        CHECK(moe_decode(c, &one, &err) == MOE_OK, "alone feed: %s", err.msg);
        memcpy(rows + (N_HALF + k) * n_vocab, moe_get_logits_ith(c, 0), n_vocab * sizeof(float));
    }
    moe_context_free(c);
}

/* A context holding both prompts, decoded as one batch that interleaves them
 * token by token, every row with logits. */
static moe_context *new_two_prompt_context(moe_model *m, const int32_t *const prompt[2],
                                           moe_err *err) {
    moe_context *c = new_context(m, 2);
    int32_t tok[2 * N_HALF], pos[2 * N_HALF], seq[2 * N_HALF];
    int8_t all[2 * N_HALF];
    for (int i = 0; i < 2 * N_HALF; i++) {
        seq[i] = i % 2;
        pos[i] = i / 2;
        tok[i] = prompt[seq[i]][pos[i]];
        all[i] = 1;
    }
    moe_batch b = {.n_tokens = 2 * N_HALF, .token = tok, .pos = pos, .seq_id = seq, .logits = all};
    CHECK(c && moe_decode(c, &b, err) == MOE_OK, "interleaved batch: %s", err->msg);
    return c;
}

/* A batch that steps both sequences at once: seq 0's row must not depend on
 * what seq 1 is fed. (Its reference is another two-token batch, not a
 * single-token decode: batches of several tokens use the GEMM summation order
 * and single tokens the vec_dot order, as llama.cpp on x86 does.) */
static void check_batched_step_isolation(moe_model *m, const int32_t *const prompt[2],
                                         const int32_t *const feed[2], int n_vocab,
                                         const char *path) {
    static float seq0_row[2][N_VOCAB_MAX];
    for (int variant = 0; variant < 2; variant++) {
        moe_err err = {0};
        moe_context *c = new_two_prompt_context(m, prompt, &err);
        int32_t step_tok[2] = {feed[0][0], feed[1][variant]}, step_seq[2] = {0, 1};
        int8_t both[2] = {1, 1};
        moe_batch step = {.n_tokens = 2, .token = step_tok, .seq_id = step_seq, .logits = both};
        CHECK(c && moe_decode(c, &step, &err) == MOE_OK, "%s: two-sequence step: %s", path,
              err.msg);
        if (c)
            memcpy(seq0_row[variant], moe_get_logits_ith(c, 0), n_vocab * sizeof(float));
        moe_context_free(c);
    }
    CHECK(feed[1][0] != feed[1][1] && !memcmp(seq0_row[0], seq0_row[1], n_vocab * sizeof(float)),
          "%s: in a two-sequence step, seq 0 is blind to seq 1's token", path);
}

static void check_model(const char *path) {
    moe_err err = {0};
    moe_model *m = NULL;
    if (moe_model_load(path, NULL, &m, &err) != MOE_OK) {
        CHECK(false, "%s: %s", path, err.msg);
        return;
    }
    int n_vocab = (int)moe_model_n_vocab(m);
    CHECK(n_vocab > 0 && n_vocab <= N_VOCAB_MAX, "%s: n_vocab %d", path, n_vocab);
    if (n_vocab <= 0 || n_vocab > N_VOCAB_MAX) {
        moe_model_free(m);
        return;
    }
    static float alone[2][(N_HALF + N_FEED) * N_VOCAB_MAX], got[N_VOCAB_MAX];
    const int32_t *const prompt[2] = {tokens, tokens + N_HALF};
    const int32_t *const feed[2] = {tokens + 2 * N_HALF, tokens + 2 * N_HALF + N_FEED};
    for (int s = 0; s < 2; s++)
        run_alone(m, prompt[s], feed[s], n_vocab, alone[s]);

    /* both prompts in one batch, interleaved token by token */
    moe_context *c = new_two_prompt_context(m, prompt, &err);
    float worst = 0;
    for (int i = 0; c && i < 2 * N_HALF; i++) {
        const float *row = moe_get_logits_ith(c, i);
        worst = fmaxf(worst, max_abs_diff(row, alone[i % 2] + (i / 2) * n_vocab, n_vocab));
    }
    CHECK(worst <= tolerance, "%s: interleaved prompts match each alone (max|d| %g)", path, worst);

    /* one step each, then seq 1 alone after seq 0 is removed */
    for (int s = 0; c && s < 2; s++) {
        moe_batch one = {.n_tokens = 1, .token = feed[s], .seq_id = &(int32_t){s}};
        CHECK(moe_decode(c, &one, &err) == MOE_OK, "%s: step: %s", path, err.msg);
        float d = max_abs_diff(moe_get_logits_ith(c, 0), alone[s] + N_HALF * n_vocab, n_vocab);
        CHECK(d <= tolerance, "%s: seq %d continues as alone (max|d| %g)", path, s, d);
    }
    CHECK(c && moe_kv_seq_pos_max(c, 0) == N_HALF && moe_kv_seq_pos_max(c, 1) == N_HALF,
          "%s: each sequence holds its own positions", path);
    moe_kv_seq_rm(c, 0, 0, -1);
    CHECK(c && moe_kv_seq_pos_max(c, 0) == -1 && moe_kv_seq_pos_max(c, 1) == N_HALF,
          "%s: removing seq 0 leaves seq 1", path);
    for (int k = 1; c && k < N_FEED; k++) {
        moe_batch one = {.n_tokens = 1, .token = feed[1] + k, .seq_id = &(int32_t){1}};
        CHECK(moe_decode(c, &one, &err) == MOE_OK, "%s: seq 1 feed: %s", path, err.msg);
        memcpy(got, moe_get_logits_ith(c, 0), n_vocab * sizeof(float));
        float d = max_abs_diff(got, alone[1] + (N_HALF + k) * n_vocab, n_vocab);
        CHECK(d <= tolerance, "%s: seq 1 step %d after seq 0 removed (max|d| %g)", path, k, d);
    }
    check_batched_step_isolation(m, prompt, feed, n_vocab, path);

    /* a sequence id the context was not made for is refused, cache unchanged */
    int32_t bad_seq = 2;
    moe_batch bad = {.n_tokens = 1, .token = tokens, .seq_id = &bad_seq};
    CHECK(c && moe_decode(c, &bad, &err) == MOE_ERR_USAGE && strstr(err.msg, "seq"),
          "%s: seq id 2 with n_seq_max 2 refused: %s", path, err.msg);
    CHECK(c && moe_kv_seq_pos_max(c, 1) == N_HALF + N_FEED - 1, "%s: cache unchanged", path);
    moe_context_free(c);
    moe_model_free(m);
}

int main(void) {
    const char *dir = test_conformance_dir();
    char path[1024];
    snprintf(path, sizeof path, "%s/prompt.tokens", dir);
    FILE *tf = fopen(path, "r");
    CHECK(tf != NULL, "%s", path);
    for (int i = 0; tf && i < 2 * N_HALF; i++)
        CHECK(fscanf(tf, "%d", &tokens[i]) == 1, "prompt token %d", i);
    if (tf)
        fclose(tf);
    /* fed tokens: the prompt reversed, so each sequence continues differently */
    for (int i = 0; i < 2 * N_FEED; i++)
        tokens[2 * N_HALF + i] = tokens[2 * N_HALF - 1 - i];
    const char *models[] = {"tiny-llama.gguf", "tiny-deepseek2.gguf"};
    for (size_t i = 0; i < sizeof models / sizeof *models; i++) {
        snprintf(path, sizeof path, "%s/models/%s", dir, models[i]);
        check_model(path);
    }
    TEST_DONE();
}
