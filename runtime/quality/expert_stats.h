/* expert_stats — how often each routed expert of each MoE layer is chosen.
 *
 * Owns: per MoE layer and expert, the number of token choices (count) and the
 * sum of routing weights, kept apart for prompt and generation; collecting
 * them through the runtime's public router observer; the JSON file that holds
 * them (written atomically, read back with validation), merging files of the
 * same model, and the summary figures moe-stats reports. Does not own the
 * context it observes or decide placement (the runtime reads the JSON).
 *
 * The file (format "moe-expert-stats", version 1):
 *   {"format": "moe-expert-stats", "version": 1, "model": NAME, "arch": ARCH,
 *    "n_expert": E, "n_expert_used": K,
 *    "layers": [{"layer": i,
 *                "prompt": {"n_tokens": T, "count": [E ints], "weight": [E floats]},
 *                "gen":    {...same...}}, ...]}
 * Layers without routed experts (dense leading layers) are absent; layers are
 * in increasing block order. "format", "version", "arch" and "n_tokens" are
 * optional on reading (files from other writers), everything else required.
 */
#ifndef MOE_RUNTIME_QUALITY_EXPERT_STATS_H
#define MOE_RUNTIME_QUALITY_EXPERT_STATS_H

#include <stdint.h>

#include "formats/base/status.h"
#include "runtime/include/moe.h"

#define MOE_EXPERT_STATS_VERSION 1

typedef enum { MOE_STATS_PROMPT = 0, MOE_STATS_GEN = 1, MOE_STATS_N_PHASES = 2 } moe_stats_phase;

typedef struct moe_expert_phase_stats {
    uint64_t n_tokens; /* tokens that went through the layer in this phase */
    uint64_t *count;   /* [E] token choices per expert; sums to n_tokens * K */
    double *weight;    /* [E] sum of the routing weights per expert */
} moe_expert_phase_stats;

typedef struct moe_expert_layer_stats {
    int32_t layer; /* block index in the model */
    moe_expert_phase_stats phase[MOE_STATS_N_PHASES];
} moe_expert_layer_stats;

typedef struct moe_expert_stats {
    char *model, *arch; /* owned; arch may be NULL (unknown) */
    int32_t n_expert, n_expert_used;
    int32_t n_layers;                /* MoE layers seen / read */
    moe_expert_layer_stats *layers;  /* [n_layers], increasing .layer; owned */
    moe_stats_phase phase;           /* where the observer adds choices */
    moe_status observe_status;       /* first error inside the observer */
    moe_err observe_err;
} moe_expert_stats;

/* Empty statistics for a model with E experts of which K are used per token.
 * model / arch are copied (arch may be NULL). Free with moe_expert_stats_free. */
moe_status moe_expert_stats_create(const char *model, const char *arch, int32_t n_expert,
                                   int32_t n_expert_used, moe_expert_stats **out, moe_err *err);
/* Empty statistics sized from the loaded model m (its architecture, expert
 * counts, general.name or else the base name of model_path, which also names
 * the model in errors). Fails for a model without routed experts. */
moe_status moe_expert_stats_for_model(const moe_model *m, const char *model_path,
                                      moe_expert_stats **out, moe_err *err);
/* NULL is a no-op. */
void moe_expert_stats_free(moe_expert_stats *s);

/* Installs (s != NULL) or removes (s == NULL) the route observer on ctx that
 * adds every later decode's router choices to s's current phase. */
void moe_expert_stats_attach(moe_context *ctx, moe_expert_stats *s);
/* The phase later decodes count as (prompt until told otherwise). */
void moe_expert_stats_set_phase(moe_expert_stats *s, moe_stats_phase phase);
/* The observer's entry point, exposed for tests and other collectors: adds T
 * tokens' K choices of block `layer`. An expert id out of range or a K that
 * differs from the model's is recorded in s->observe_status / observe_err
 * (the observer cannot fail) and the batch is ignored. */
void moe_expert_stats_add(moe_expert_stats *s, int32_t layer, int32_t T, int32_t K,
                          const int32_t *ids, const float *weights);

/* The tools' --expert-stats: with out_path set, statistics for model m (loaded
 * from model_path) attached to ctx, counting as prompt; with out_path NULL,
 * *out is NULL and nothing is attached. */
moe_status moe_expert_stats_begin(moe_context *ctx, const moe_model *m, const char *model_path,
                                  const char *out_path, moe_expert_stats **out, moe_err *err);
/* Ends what _begin started: when st is MOE_OK and s is set, saves s to
 * out_path; frees s either way (the context must not decode with s attached
 * afterwards). Returns st, or the save's status. */
moe_status moe_expert_stats_end(moe_expert_stats *s, const char *out_path, moe_status st,
                                moe_err *err);

/* Writes s to path atomically (temp file, fsync, rename; replaces path).
 * Fails with s->observe_status if collecting failed. */
moe_status moe_expert_stats_save(const moe_expert_stats *s, const char *path, moe_err *err);
/* Reads and validates path; errors name the file and the JSON key
 * ("stats.json: layers[2].gen.count[5]: ..."). */
moe_status moe_expert_stats_load(const char *path, moe_expert_stats **out, moe_err *err);
/* --hot-experts: reads and validates path (as moe_expert_stats_load) into
 * the plain counts the runtime takes (moe_model_params.hot_experts): per
 * layer and expert, prompt and generation added. *out is one allocation
 * holding everything it points to (its source is path); free it with free(). */
moe_status moe_expert_stats_load_counts(const char *path, moe_expert_counts **out,
                                        moe_err *err);
/* Adds src into dst: counts, weights and n_tokens add; layers only in src are
 * added. Refuses (MOE_ERR_USAGE, dst unchanged) another model name, arch,
 * n_expert or n_expert_used. */
moe_status moe_expert_stats_merge(moe_expert_stats *dst, const moe_expert_stats *src,
                                  moe_err *err);
/* The layer with block index `layer`, or NULL. */
const moe_expert_layer_stats *moe_expert_stats_layer(const moe_expert_stats *s, int32_t layer);

/* Summary of one routing distribution (counts of E experts). */
typedef struct moe_expert_summary {
    uint64_t total;        /* sum of counts (token choices) */
    double entropy_bits;   /* of p_e = count_e / total; 0 when total is 0 */
    double top10_share;    /* share of total taken by the ceil(E/10) most chosen experts */
    int32_t n_unused;      /* experts with count 0 */
} moe_expert_summary;
moe_expert_summary moe_expert_summarize(const uint64_t *count, int32_t n_expert);

#endif
