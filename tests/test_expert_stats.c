/* Expert usage statistics (runtime/quality/expert_stats): on conformance
 * models the counts per layer sum to tokens x K, two runs are equal and the
 * counts equal a count taken here from the router observer's ids; merging
 * adds exactly; the JSON round-trips; damaged files are refused naming the
 * key; the summary's entropy / top-10% figures match values computed here.
 * The model part skips (77) without the conformance pack only at its end, so
 * the file tests always run. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "runtime/quality/expert_stats.h"
#include "test_util.h"

enum { MAXL = 64, MAXE = 256, NTOK = 9, NGEN = 3 };

/* an independent count from the raw observer, chained in front of the library's */
typedef struct tap {
    moe_expert_stats *s;
    uint64_t count[MAXL][MAXE];
    uint64_t choices;
} tap;

static void tap_observer(void *user, int32_t layer, int32_t T, int32_t K, const int32_t *ids,
                         const float *w) {
    tap *t = user;
    for (int32_t i = 0; i < T * K; i++)
        if (layer < MAXL && ids[i] >= 0 && ids[i] < MAXE)
            t->count[layer][ids[i]]++;
    t->choices += (uint64_t)T * K;
    moe_expert_stats_add(t->s, layer, T, K, ids, w);
}

/* NTOK prompt tokens as one batch, then NGEN one at a time as generation */
static moe_expert_stats *collect(const char *path, tap *t) {
    moe_err err = {0};
    moe_model *m = NULL;
    moe_context *ctx = NULL;
    moe_expert_stats *s = NULL;
    moe_model_params mp = moe_model_default_params();
    moe_context_params cp = moe_context_default_params();
    cp.n_ctx = 64;
    if (moe_model_load(path, &mp, &m, &err) || moe_context_create(m, &cp, &ctx, &err) ||
        moe_expert_stats_for_model(m, path, &s, &err)) {
        CHECK(0, "%s: %s", path, err.msg);
        moe_context_free(ctx);
        moe_model_free(m);
        return NULL;
    }
    memset(t, 0, sizeof *t);
    t->s = s;
    moe_context_set_route_observer(ctx, tap_observer, t);
    moe_token tok[NTOK];
    int32_t pos[NTOK];
    for (int i = 0; i < NTOK; i++)
        tok[i] = (moe_token)(1 + i * 7 % 50), pos[i] = i;
    moe_batch b = {.n_tokens = NTOK, .token = tok, .pos = pos};
    CHECK(moe_decode(ctx, &b, &err) == MOE_OK, "%s", err.msg);
    moe_expert_stats_set_phase(s, MOE_STATS_GEN);
    for (int i = 0; i < NGEN; i++) {
        moe_token g = (moe_token)(3 + i);
        int32_t p = NTOK + i;
        moe_batch one = {.n_tokens = 1, .token = &g, .pos = &p};
        CHECK(moe_decode(ctx, &one, &err) == MOE_OK, "%s", err.msg);
    }
    moe_context_free(ctx);
    moe_model_free(m);
    return s;
}

static bool same_stats(const moe_expert_stats *a, const moe_expert_stats *b) {
    if (a->n_layers != b->n_layers || a->n_expert != b->n_expert || strcmp(a->model, b->model))
        return false;
    for (int32_t i = 0; i < a->n_layers; i++)
        for (int p = 0; p < MOE_STATS_N_PHASES; p++) {
            const moe_expert_phase_stats *x = &a->layers[i].phase[p], *y = &b->layers[i].phase[p];
            if (a->layers[i].layer != b->layers[i].layer || x->n_tokens != y->n_tokens ||
                memcmp(x->count, y->count, (size_t)a->n_expert * 8) ||
                memcmp(x->weight, y->weight, (size_t)a->n_expert * 8))
                return false;
        }
    return true;
}

static void test_model(const char *dir, const char *name, const char *tmp) {
    char path[1024], out[1100];
    snprintf(path, sizeof path, "%s/models/%s.gguf", dir, name);
    tap *t1 = calloc(1, sizeof *t1), *t2 = calloc(1, sizeof *t2);
    moe_expert_stats *a = collect(path, t1), *b = collect(path, t2);
    if (!a || !b)
        goto done;
    CHECK(a->n_layers > 0, "%s: no MoE layer seen", name);
    const int32_t K = a->n_expert_used;
    for (int32_t i = 0; i < a->n_layers; i++) {
        const moe_expert_layer_stats *l = &a->layers[i];
        const int n_tok[2] = {NTOK, NGEN};
        for (int p = 0; p < MOE_STATS_N_PHASES; p++) {
            uint64_t sum = 0;
            for (int32_t e = 0; e < a->n_expert; e++)
                sum += l->phase[p].count[e];
            CHECK(sum == (uint64_t)n_tok[p] * K && l->phase[p].n_tokens == (uint64_t)n_tok[p],
                  "%s layer %d phase %d: %llu choices, want %d x %d", name, l->layer, p,
                  (unsigned long long)sum, n_tok[p], K);
        }
        for (int32_t e = 0; e < a->n_expert; e++)
            CHECK(l->phase[0].count[e] + l->phase[1].count[e] == t1->count[l->layer][e],
                  "%s layer %d expert %d: library and observer counts differ", name, l->layer, e);
    }
    CHECK(same_stats(a, b), "%s: two runs differ", name);
    if (!strcmp(name, "tiny-deepseek2"))
        CHECK(!moe_expert_stats_layer(a, 0) && moe_expert_stats_layer(a, 1),
              "deepseek2: the dense leading block must be absent, block 1 present");
    /* round trip, then merge a file with itself: everything doubles exactly */
    snprintf(out, sizeof out, "%s/%s.json", tmp, name);
    moe_err err = {0};
    moe_expert_stats *back = NULL;
    CHECK(moe_expert_stats_save(a, out, &err) == MOE_OK, "%s", err.msg);
    CHECK(moe_expert_stats_load(out, &back, &err) == MOE_OK, "%s", err.msg);
    CHECK(back && same_stats(a, back), "%s: JSON round trip differs", name);
    if (back) {
        CHECK(moe_expert_stats_merge(back, b, &err) == MOE_OK, "%s", err.msg);
        for (int32_t i = 0; i < a->n_layers; i++)
            for (int32_t e = 0; e < a->n_expert; e++) {
                CHECK(back->layers[i].phase[1].count[e] == 2 * a->layers[i].phase[1].count[e],
                      "%s: merged count", name);
                CHECK(back->layers[i].phase[0].weight[e] ==
                          a->layers[i].phase[0].weight[e] + b->layers[i].phase[0].weight[e],
                      "%s: merged weight", name);
            }
    }
    moe_expert_stats_free(back);
    unlink(out);
done:
    moe_expert_stats_free(a);
    moe_expert_stats_free(b);
    free(t1);
    free(t2);
}

static void write_text(const char *path, const char *text) {
    FILE *f = fopen(path, "w");
    fputs(text, f);
    fclose(f);
}

/* a damaged file is refused with an error naming the key */
static void expect_bad(const char *tmp, const char *text, const char *key) {
    char path[1024];
    snprintf(path, sizeof path, "%s/bad.json", tmp);
    write_text(path, text);
    moe_err err = {0};
    moe_expert_stats *s = NULL;
    moe_status st = moe_expert_stats_load(path, &s, &err);
    CHECK(st == MOE_ERR_FORMAT && !s && strstr(err.msg, key) && strstr(err.msg, "bad.json"),
          "want a format error naming %s, got %d: %s", key, st, err.msg);
    moe_expert_stats_free(s);
    unlink(path);
}

#define GOOD_LAYER "{\"layer\": 3, \"prompt\": {\"count\": [1, 2, 3, 0], \"weight\": [0.5, 1, 1.5, 0]}, " \
                   "\"gen\": {\"count\": [0, 0, 1, 1], \"weight\": [0, 0, 0.25, 0.75]}}"

static void test_files(const char *tmp) {
    expect_bad(tmp, "[1]", "expected a JSON object");
    expect_bad(tmp, "{\"n_expert\": 4, \"n_expert_used\": 2, \"layers\": []}", "model");
    expect_bad(tmp, "{\"model\": \"m\", \"n_expert\": \"4\", \"n_expert_used\": 2, \"layers\": []}",
               "n_expert");
    expect_bad(tmp, "{\"model\": \"m\", \"n_expert\": 4, \"n_expert_used\": 5, \"layers\": []}",
               "n_expert_used");
    expect_bad(tmp, "{\"model\": \"m\", \"n_expert\": 4, \"n_expert_used\": 2}", "layers");
    expect_bad(tmp, "{\"model\": \"m\", \"n_expert\": 5, \"n_expert_used\": 2, \"layers\": [" GOOD_LAYER
               "]}", "layers[0].prompt.count");
    expect_bad(tmp, "{\"model\": \"m\", \"n_expert\": 4, \"n_expert_used\": 2, \"layers\": [{\"layer\": 1, "
               "\"prompt\": {\"count\": [1, 2, -3, 0], \"weight\": [0, 0, 0, 0]}}]}",
               "layers[0].prompt.count[2]");
    expect_bad(tmp, "{\"model\": \"m\", \"n_expert\": 4, \"n_expert_used\": 2, \"layers\": [{\"layer\": 1, "
               "\"prompt\": {\"count\": [1, 2, 3, 0], \"weight\": [0, 0, 0, 0]}}]}", "layers[0].gen");
    expect_bad(tmp, "{\"model\": \"m\", \"n_expert\": 4, \"n_expert_used\": 2, \"layers\": [" GOOD_LAYER
               ", " GOOD_LAYER "]}", "layers[1].layer");
    expect_bad(tmp, "{\"model\": \"m\", \"n_expert\": 4, ", "line");

    char path[1024];
    snprintf(path, sizeof path, "%s/good.json", tmp);
    write_text(path, "{\"model\": \"m\", \"n_expert\": 4, \"n_expert_used\": 2, \"layers\": [" GOOD_LAYER
                     "]}");
    moe_err err = {0};
    moe_expert_stats *s = NULL, *other = NULL;
    CHECK(moe_expert_stats_load(path, &s, &err) == MOE_OK, "%s", err.msg);
    unlink(path);
    if (!s)
        return;
    const moe_expert_layer_stats *l = moe_expert_stats_layer(s, 3);
    CHECK(l && l->phase[0].count[2] == 3 && l->phase[1].weight[3] == 0.75, "values read");
    CHECK(moe_expert_stats_create("m", NULL, 8, 2, &other, &err) == MOE_OK, "%s", err.msg);
    CHECK(moe_expert_stats_merge(s, other, &err) == MOE_ERR_USAGE && strstr(err.msg, "8 experts"),
          "mismatched E merged: %s", err.msg);
    moe_expert_stats_free(other);
    CHECK(moe_expert_stats_create("other", NULL, 4, 2, &other, &err) == MOE_OK, "%s", err.msg);
    CHECK(moe_expert_stats_merge(s, other, &err) == MOE_ERR_USAGE && strstr(err.msg, "other"),
          "other model merged: %s", err.msg);
    moe_expert_stats_free(other);
    /* ids out of range never count */
    int32_t ids[2] = {1, 9};
    float w[2] = {0.5f, 0.5f};
    moe_expert_stats_add(s, 3, 1, 2, ids, w);
    CHECK(s->observe_status != MOE_OK && l->phase[0].count[1] == 2, "bad id accepted");
    CHECK(moe_expert_stats_save(s, path, &err) != MOE_OK && access(path, F_OK) != 0,
          "stats with a collection error were written");
    moe_expert_stats_free(s);
}

/* figures of the summary against values worked out here */
static void test_summary(void) {
    const uint64_t c[12] = {6, 0, 2, 0, 1, 1, 0, 0, 2, 0, 0, 0}; /* total 12 */
    moe_expert_summary m = moe_expert_summarize(c, 12);
    /* p = 1/2, 1/6, 1/6, 1/12, 1/12 */
    double h = 0.5 * 1 + 2 * (1.0 / 6) * log2(6) + 2 * (1.0 / 12) * log2(12);
    CHECK(m.total == 12 && m.n_unused == 7, "total %llu unused %d", (unsigned long long)m.total,
          m.n_unused);
    CHECK(fabs(m.entropy_bits - h) < 1e-12, "entropy %.15g want %.15g", m.entropy_bits, h);
    /* ceil(12 / 10) = 2 experts: 6 + 2 of 12 */
    CHECK(fabs(m.top10_share - 8.0 / 12) < 1e-15, "top10 %.15g", m.top10_share);
    const uint64_t even[4] = {5, 5, 5, 5};
    m = moe_expert_summarize(even, 4);
    CHECK(fabs(m.entropy_bits - 2) < 1e-15 && fabs(m.top10_share - 0.25) < 1e-15, "even");
    const uint64_t none[3] = {0, 0, 0};
    m = moe_expert_summarize(none, 3);
    CHECK(m.total == 0 && m.entropy_bits == 0 && m.n_unused == 3, "empty");
}

int main(int argc, char **argv) {
    const char *tmp = argc > 1 ? argv[1] : "/tmp";
    test_summary();
    test_files(tmp);
    const char *dir = getenv("MOE_CONFORMANCE_DIR");
    if (!dir || !*dir || access(dir, F_OK) != 0) {
        printf("conformance pack absent: model checks skipped\n");
        if (test_failed)
            TEST_DONE();
        return 77;
    }
    test_model(dir, "tiny-qwen2moe", tmp);
    test_model(dir, "tiny-deepseek2", tmp);
    test_model(dir, "tiny-olmoe", tmp);
    TEST_DONE();
}
