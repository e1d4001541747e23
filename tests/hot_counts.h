/* hot_counts — skewed expert statistics for the tests of --hot-experts
 * (test_split, test_placement_plan): every count distinct, so "the hottest N"
 * has one answer, and a few experts per layer taking most of the routing. */
#ifndef MOE_TESTS_HOT_COUNTS_H
#define MOE_TESTS_HOT_COUNTS_H

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
    const uint64_t r = (uint64_t)((7 * e + 3 * il) % E), v = r * (uint64_t)n_layer + (uint64_t)il + 1;
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

static inline void hot_counts_free(hot_counts *h) {
    free(h->count);
    h->count = NULL;
}

#endif
