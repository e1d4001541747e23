/* Sampler (moe.h): greedy and top-k 1 are the argmax, a seed fixes the
 * sequence, the repetition penalty lowers seen tokens, top-p and min-p cut the
 * tails they should on hand-made distributions, and draws follow the
 * probabilities. Seeds are fixed and printed in messages. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "runtime/include/moe.h"
#include "test_util.h"

#define NV 8

static moe_sampler_params plain(float temp, uint64_t seed) {
    moe_sampler_params p = moe_sampler_default_params();
    p.temp = temp;
    p.top_k = 0;
    p.top_p = 1.0f;
    p.min_p = 0.0f;
    p.seed = seed;
    return p;
}

/* How often each token comes out of `draws` samples of logits. */
static void histogram(const moe_sampler_params *p, const float *logits, int n, int draws,
                      int *count) {
    moe_sampler *s = moe_sampler_create(p);
    memset(count, 0, (size_t)n * sizeof *count);
    for (int i = 0; i < draws; i++) {
        moe_token t = moe_sampler_sample(s, logits, n);
        if (t >= 0 && t < n)
            count[t]++;
    }
    moe_sampler_free(s);
}

static void test_defaults(void) {
    moe_sampler_params d = moe_sampler_default_params();
    CHECK(d.temp == 0.8f && d.top_k == 40 && d.top_p == 0.95f && d.min_p == 0.05f &&
              d.repeat_penalty == 1.0f && d.repeat_last_n == 64 && d.seed == 0xFFFFFFFFu,
          "llama-cli defaults");
}

static void test_greedy(void) {
    const float logits[NV] = {0.1f, 2.0f, -1.0f, 3.5f, 3.4f, 0, 0, -7};
    moe_sampler_params p = plain(0.0f, 1);
    moe_sampler *s = moe_sampler_create(&p);
    CHECK(moe_sampler_sample(s, logits, NV) == 3, "temp 0 is the argmax");
    moe_sampler_free(s);
    p = plain(-1.0f, 1);
    s = moe_sampler_create(&p);
    CHECK(moe_sampler_sample(s, logits, NV) == 3, "negative temp is greedy too");
    moe_sampler_free(s);
    /* top-k 1 at a high temperature: still the argmax, every time */
    p = plain(5.0f, 42);
    p.top_k = 1;
    int count[NV];
    histogram(&p, logits, NV, 200, count);
    CHECK(count[3] == 200, "top-k 1 gives the argmax (seed 42): %d/200", count[3]);
    /* ties go to the lower id */
    const float tie[4] = {1, 5, 5, 0};
    p = plain(0.0f, 1);
    s = moe_sampler_create(&p);
    CHECK(moe_sampler_sample(s, tie, 4) == 1, "greedy tie: lower id");
    CHECK(moe_sampler_sample(NULL, tie, 4) == -1 && moe_sampler_sample(s, tie, 0) == -1,
          "bad arguments give -1");
    moe_sampler_free(s);
}

static void test_seed(void) {
    float logits[64];
    for (int i = 0; i < 64; i++)
        logits[i] = (float)((i * 37) % 11) * 0.3f;
    moe_sampler_params p = moe_sampler_default_params();
    p.seed = 1234;
    moe_sampler *a = moe_sampler_create(&p), *b = moe_sampler_create(&p);
    p.seed = 1235;
    moe_sampler *c = moe_sampler_create(&p);
    int same = 0, differ = 0;
    for (int i = 0; i < 100; i++) {
        moe_token x = moe_sampler_sample(a, logits, 64), y = moe_sampler_sample(b, logits, 64);
        moe_token z = moe_sampler_sample(c, logits, 64);
        same += x == y;
        differ += x != z;
        moe_sampler_accept(a, x);
        moe_sampler_accept(b, y);
        moe_sampler_accept(c, z);
    }
    CHECK(same == 100, "same seed (1234), same sequence: %d/100", same);
    CHECK(differ > 10, "another seed (1235) gives another sequence: %d/100 differ", differ);
    moe_sampler_free(a);
    moe_sampler_free(b);
    moe_sampler_free(c);
}

static void test_penalty(void) {
    const float logits[NV] = {1.0f, 2.0f, 1.9f, -1.0f, -1.2f, 0, 0, 0};
    moe_sampler_params p = plain(0.0f, 1);
    p.repeat_penalty = 1.5f;
    p.repeat_last_n = 4;
    moe_sampler *s = moe_sampler_create(&p);
    CHECK(moe_sampler_sample(s, logits, NV) == 1, "no history: argmax 1");
    moe_sampler_accept(s, 1);
    moe_sampler_accept(s, 1); /* a repeat counts once: 2.0 / 1.5 = 1.33 < 1.9 */
    CHECK(moe_sampler_sample(s, logits, NV) == 2, "penalised 1 loses to 2");
    /* negative logits are multiplied: -1.0 * 1.5 = -1.5 < -1.2 */
    const float neg[3] = {-1.0f, -1.2f, -5.0f};
    moe_sampler *s2 = moe_sampler_create(&p);
    moe_sampler_accept(s2, 0);
    CHECK(moe_sampler_sample(s2, neg, 3) == 1, "negative logit pushed down");
    moe_sampler_free(s2);
    /* the window forgets: after 4 more tokens, 1 and 0 are free again */
    for (int i = 0; i < 4; i++)
        moe_sampler_accept(s, 7);
    CHECK(moe_sampler_sample(s, logits, NV) == 1, "out of the window, no penalty");
    moe_sampler_free(s);
    /* off at 1.0 */
    p.repeat_penalty = 1.0f;
    s = moe_sampler_create(&p);
    moe_sampler_accept(s, 1);
    CHECK(moe_sampler_sample(s, logits, NV) == 1, "penalty 1.0 is off");
    moe_sampler_free(s);
}

/* logits = log(probs): probabilities 0.5 0.3 0.15 0.05 */
static void test_cuts(void) {
    const float probs[4] = {0.5f, 0.3f, 0.15f, 0.05f};
    float logits[4];
    for (int i = 0; i < 4; i++)
        logits[i] = logf(probs[i]);
    int count[4];
    const int draws = 4000;
    /* top-p 0.79: 0.5 + 0.3 reaches it, so only tokens 0 and 1 (0.8 itself
     * is a coin toss in float) */
    moe_sampler_params p = plain(1.0f, 7);
    p.top_p = 0.79f;
    histogram(&p, logits, 4, draws, count);
    CHECK(count[2] == 0 && count[3] == 0 && count[0] > 0 && count[1] > 0,
          "top-p 0.79 keeps {0,1} (seed 7): %d %d %d %d", count[0], count[1], count[2], count[3]);
    /* top-p 0.81: needs token 2 as well */
    p.top_p = 0.81f;
    histogram(&p, logits, 4, draws, count);
    CHECK(count[3] == 0 && count[2] > 0, "top-p 0.81 keeps {0,1,2}: %d %d %d %d", count[0],
          count[1], count[2], count[3]);
    /* min-p 0.2: keep p >= 0.1, i.e. {0,1,2} */
    p = plain(1.0f, 8);
    p.min_p = 0.2f;
    histogram(&p, logits, 4, draws, count);
    CHECK(count[3] == 0 && count[2] > 0, "min-p 0.2 keeps {0,1,2} (seed 8): %d %d %d %d",
          count[0], count[1], count[2], count[3]);
    /* min-p 0.7: keep p >= 0.35: only token 0 */
    p.min_p = 0.7f;
    histogram(&p, logits, 4, draws, count);
    CHECK(count[0] == draws, "min-p 0.7 keeps {0}: %d", count[0]);
    /* min-p sees the untempered distribution: a high temperature does not
     * bring token 3 back */
    p = plain(10.0f, 9);
    p.min_p = 0.2f;
    histogram(&p, logits, 4, draws, count);
    CHECK(count[3] == 0, "min-p before temperature: %d draws of token 3", count[3]);
    /* top-k 2 */
    p = plain(1.0f, 10);
    p.top_k = 2;
    histogram(&p, logits, 4, draws, count);
    CHECK(count[2] == 0 && count[3] == 0, "top-k 2 keeps {0,1}");
}

/* Draws follow the (renormalised) probabilities: within 4 sigma each. */
static void test_frequencies(void) {
    const float probs[4] = {0.5f, 0.3f, 0.15f, 0.05f};
    float logits[4];
    for (int i = 0; i < 4; i++)
        logits[i] = logf(probs[i]);
    int count[4];
    const int draws = 20000;
    moe_sampler_params p = plain(1.0f, 99);
    histogram(&p, logits, 4, draws, count);
    for (int i = 0; i < 4; i++) {
        double want = probs[i] * draws, sd = sqrt(draws * probs[i] * (1 - probs[i]));
        CHECK(fabs(count[i] - want) < 4 * sd, "token %d: %d draws, expected %.0f (seed 99)", i,
              count[i], want);
    }
    /* temperature 0.5 squares the odds: 0.5^2 : 0.3^2 ... normalised */
    p = plain(0.5f, 100);
    histogram(&p, logits, 4, draws, count);
    double z = 0.25 + 0.09 + 0.0225 + 0.0025;
    double want0 = 0.25 / z * draws, sd0 = sqrt(draws * (0.25 / z) * (1 - 0.25 / z));
    CHECK(fabs(count[0] - want0) < 4 * sd0, "temp 0.5: token 0 %d draws, expected %.0f",
          count[0], want0);
}

/* A large vocabulary with the default chain: sample stays in range and the
 * same seed repeats (top-k heap path). */
static void test_large(void) {
    enum { N = 50000 };
    float *logits = malloc(N * sizeof *logits);
    uint32_t x = 12345;
    for (int i = 0; i < N; i++) {
        x = x * 1664525u + 1013904223u;
        logits[i] = (float)(x >> 8) / (float)(1u << 24) * 10.0f;
    }
    moe_sampler_params p = moe_sampler_default_params();
    p.seed = 5;
    moe_sampler *a = moe_sampler_create(&p), *b = moe_sampler_create(&p);
    int ok = 0;
    for (int i = 0; i < 50; i++) {
        moe_token t = moe_sampler_sample(a, logits, N);
        ok += t >= 0 && t < N && t == moe_sampler_sample(b, logits, N) && logits[t] > 9.0f;
    }
    CHECK(ok == 50, "large vocabulary, default chain (seed 5): %d/50 in the top tail", ok);
    moe_sampler_free(a);
    moe_sampler_free(b);
    free(logits);
}

int main(void) {
    test_defaults();
    test_greedy();
    test_seed();
    test_penalty();
    test_cuts();
    test_frequencies();
    test_large();
    TEST_DONE();
}
