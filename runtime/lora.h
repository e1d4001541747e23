/* lora — LoRA adapters applied unmerged (moe.h has the public API).
 *
 * Owns: reading and validating an adapter file once into F32 factors held by
 * the model (a cache shared by every context), binding each factor pair to
 * its base weight's slot at load (so the graph finds it by the weight's
 * position in the model, never by name), the list of (adapter, scale) a
 * context applies, and the low-rank terms the graph adds to products:
 * y += s * B (A x), s = scale * alpha / r.
 * Does not own: the base weights (never modified), the backend's products
 * (backend.h carries the FFN and expert terms to the backend in moe_lora_ffn),
 * the offline merge (convert/lora_merge.h).
 *
 * Slots: 0 token_embd, 1 output, then MOE_LORA_LAYER_SLOTS per layer in the
 * order of MOE_LAYER_WEIGHTS.
 */
#ifndef MOE_RUNTIME_LORA_H
#define MOE_RUNTIME_LORA_H

#include "runtime/backend.h"
#include "runtime/context.h"

/* The factors of one base weight: A [n_in, r, E], B [r, n_out, E] as F32
 * (token_embd: A [r, n_vocab], B [r, n_embd]). a == NULL: none. */
typedef struct moe_lora_factors {
    const float *a, *b;
    int32_t r;
} moe_lora_factors;

struct moe_lora_adapter {
    moe_model *model;
    float alpha;
    int32_t r_max;   /* largest rank of any pair */
    int64_t n_pairs; /* weights with factors */
    float *data;     /* every factor, F32 (owned) */
    uint64_t bytes;
    moe_lora_factors *slots;       /* [moe_lora_n_slots(model)] */
    int32_t n_refs;                /* contexts it is applied to */
    bool orphan;                   /* moe_lora_free called while applied */
    struct moe_lora_adapter *next; /* the model's list */
};

/* Slots of a model's weights, and the slot of weight w (one of the model's
 * own moe_weight fields), or -1. O(1): pointer arithmetic, no lookup. */
int64_t moe_lora_n_slots(const moe_model *m);
int64_t moe_lora_slot(const moe_model *m, const moe_weight *w);

/* Graph hooks; each does nothing when ctx applies no adapter.
 * Adds every applied adapter's term for w to y[T][w->ne[1]] (x: [T][w->ne[0]]).
 */
void moe_lora_dense(moe_context *ctx, const moe_weight *w, const float *x, int64_t T, float *y);
/* Fills *out with the terms of gate/up/down (NULL weights allowed) and returns
 * it, or NULL when no applied adapter has factors for any of them. */
const moe_lora_ffn *moe_lora_ffn_terms(moe_context *ctx, const moe_weight *gate,
                                       const moe_weight *up, const moe_weight *down,
                                       moe_lora_ffn *out);
/* Adds the token_embd terms to the embedded rows x_rows[T][D]. */
void moe_lora_embed(moe_context *ctx, int32_t T, const moe_token *tokens, float *x_rows);

/* Frees every adapter of the model (moe_model_free). */
void moe_lora_free_all(moe_model *m);

#endif
