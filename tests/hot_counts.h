/* hot_counts — skewed expert statistics for the tests of --hot-experts
 * (test_split, test_placement_plan): every count distinct, so "the hottest N"
 * has one answer, and a few experts per layer taking most of the routing. */
#ifndef MOE_TESTS_HOT_COUNTS_H
#define MOE_TESTS_HOT_COUNTS_H

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "runtime/include/moe.h"

#define HOT_MAX_LAYERS 64

typedef struct hot_counts {
    moe_expert_counts c;
    int32_t layer[HOT_MAX_LAYERS];
    uint64_t *count; /* [n_layers][E], owned */
} hot_counts;

/* The count of expert e of block il: rank r = (7e + 3il) mod E (a
 * permutation of the experts when E is odd or a power of two not divisible
 * by 7) spread by layer so no two are equal, then cubed for the skew. */
static inline uint64_t hot_count_of(int64_t il, int64_t e, int64_t E, int64_t n_layer) {
    const uint64_t r = (uint64_t)((7 * e + 3 * il) % E);
    const uint64_t v = r * (uint64_t)n_layer + (uint64_t)il + 1;
    return v * v * v;
}

/* Counts for every MoE layer of m (those with blk.N.ffn_gate_exps). */
static inline void hot_counts_make(const moe_model *m, hot_counts *h) {
    memset(h, 0, sizeof *h);
    const int64_t E = moe_model_n_expert(m), L = moe_model_n_layer(m);
    h->count = calloc((size_t)(L * E), sizeof *h->count);
    h->c = (moe_expert_counts){.source = "skewed test counts", .model = moe_model_name(m),
                               .arch = moe_model_arch_name(m), .n_expert = (int32_t)E,
                               .n_expert_used = (int32_t)moe_model_n_expert_used(m),
                               .layer = h->layer, .count = h->count};
    for (int64_t il = 0; il < L && il < HOT_MAX_LAYERS; il++) {
        if (moe_model_expert_device(m, il, 0) < 0)
            continue;
        h->layer[h->c.n_layers] = (int32_t)il;
        for (int64_t e = 0; e < E; e++)
            h->count[h->c.n_layers * E + e] = hot_count_of(il, e, E, L);
        h->c.n_layers++;
    }
}

/* Writes h as a statistics file (counts split between prompt and generation,
 * which --hot-experts adds back). */
static inline bool hot_counts_write(const char *path, const moe_model *m, const hot_counts *h) {
    FILE *f = fopen(path, "w");
    if (!f)
        return false;
    const int64_t E = h->c.n_expert;
    fprintf(f, "{\"model\": \"%s\", \"arch\": \"%s\", \"n_expert\": %d, \"n_expert_used\": %d, "
            "\"layers\": [", moe_model_name(m) ? moe_model_name(m) : "x", moe_model_arch_name(m),
            h->c.n_expert, h->c.n_expert_used);
    for (int32_t i = 0; i < h->c.n_layers; i++) {
        fprintf(f, "%s{\"layer\": %d", i ? ", " : "", h->layer[i]);
        for (int ph = 0; ph < 2; ph++) {
            fprintf(f, ", \"%s\": {\"count\": [", ph ? "gen" : "prompt");
            for (int64_t e = 0; e < E; e++) {
                const uint64_t c = h->count[i * E + e], part = ph ? c - c / 3 : c / 3;
                fprintf(f, "%s%" PRIu64, e ? ", " : "", part);
            }
            fprintf(f, "], \"weight\": [");
            for (int64_t e = 0; e < E; e++)
                fprintf(f, "%s0.5", e ? ", " : "");
            fprintf(f, "]}");
        }
        fprintf(f, "}");
    }
    fprintf(f, "]}\n");
    return fclose(f) == 0;
}

static inline void hot_counts_free(hot_counts *h) {
    free(h->count);
    h->count = NULL;
}

#endif
