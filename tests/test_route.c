/* The CPU router's arithmetic against llama.cpp's build_moe_ffn steps: the
 * chosen experts in descending order, their weights summed in double
 * (ggml_sum_rows), the sum clamped to F16's smallest normal, each weight
 * divided by it, then scaled. Cases: softmax top-3 of 8 with norm and scale
 * 1.5 on rows where a float sum rounds differently (the case that moved a
 * V2-Lite-shaped model's logits by up to 0.039), sigmoid weights whose sum
 * is below the clamp, and top-2 without norm. Seed fixed and printed. */
#include <math.h>
#include <string.h>

#include "runtime/backend.h"
#include "test_util.h"

enum { E = 8, ROWS = 256 };

static float frand(void) { return (float)((double)test_rng_next() / 4294967296.0 * 8.0 - 4.0); }

/* Routes T rows of logits; returns how many rows a plain float sum would
 * have normalised differently (so a case shows it tests something). */
static int check_case(const char *label, int32_t T, int32_t K, bool sigmoid, bool norm,
                      float scale, float offset) {
    static float logits[ROWS * E], probs[ROWS * E], w[ROWS * E];
    static int32_t ids[ROWS * E];
    for (int64_t i = 0; i < (int64_t)T * E; i++)
        probs[i] = logits[i] = frand() + offset;
    const moe_route_step st = {.probs = probs, .T = T, .E = E, .K = K, .sigmoid = sigmoid,
                               .norm = norm, .scale = scale, .ids = ids, .w = w};
    moe_backend_cpu()->route(NULL, &st);
    int float_sum_differs = 0;
    for (int32_t t = 0; t < T; t++) {
        const float *p = probs + t * E; /* the probabilities the router computed */
        const int32_t *id = ids + t * K;
        for (int32_t k = 0; k < K; k++) {
            int32_t above = 0; /* experts strictly more probable than this one */
            for (int32_t e = 0; e < E; e++)
                above += p[e] > p[id[k]];
            CHECK(above == k, "%s row %d: choice %d is expert %d, rank %d", label, t, k, id[k],
                  above);
        }
        double sum = 0.0;
        float fsum = 0.0f;
        for (int32_t k = 0; k < K; k++)
            sum += p[id[k]], fsum += p[id[k]];
        const float div = (float)sum > 6.103515625e-5f ? (float)sum : 6.103515625e-5f;
        for (int32_t k = 0; k < K; k++) {
            float want = norm ? p[id[k]] / div : p[id[k]];
            if (scale != 1.0f)
                want *= scale;
            CHECK(!memcmp(&want, &w[t * K + k], 4), "%s row %d slot %d: weight %.9g, want %.9g",
                  label, t, k, w[t * K + k], want);
            if (norm && p[id[k]] / fsum * scale != want)
                float_sum_differs++;
        }
    }
    printf("%-34s %d rows, %d weights a float sum would change\n", label, T, float_sum_differs);
    return float_sum_differs;
}

int main(void) {
    const uint32_t seed = 20261205u;
    test_rng_state = seed;
    printf("seed %u\n", seed);
    int moved = check_case("softmax top-3 of 8, norm, x1.5", ROWS, 3, false, true, 1.5f, 0.0f);
    CHECK(moved > 0, "no row where the sum's precision matters: the case tests nothing");
    check_case("sigmoid top-3, tiny sum (clamped)", 16, 3, true, true, 2.5f, -20.0f);
    check_case("softmax top-2, no norm", 64, 2, false, false, 1.0f, 0.0f);
    TEST_DONE();
}
