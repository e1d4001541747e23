/* context — one inference session over a model: KV cache, the scratch arena
 * the forward pass works in (sized once, from the hyper-parameters and the
 * batch size: nothing is allocated per token), and the last logits.
 */
#ifndef MOE_RUNTIME_CONTEXT_H
#define MOE_RUNTIME_CONTEXT_H

#include "runtime/backend.h"
#include "runtime/kv_cache.h"
#include "runtime/model.h"

#define MOE_MAX_SEQ 64
/* llama.cpp pads the attended cells to a multiple of 32 (no flash attention) */
#define MOE_KV_PADDING 32

/* Activation buffers of one decode (T <= n_batch tokens), rows token-major. */
typedef struct moe_scratch {
    float *x, *h, *tmp;          /* [T][D] residual stream, normed, branch output */
    float *q, *k, *v, *att;      /* [T][H*dk], [T][Hkv*dk], [T][Hkv*dv], [T][H*dv] */
    float *qa, *kvpe, *kvc, *kv; /* deepseek2 MLA intermediates */
    float *attn_ws;              /* [threads][moe_attention_workspace()] */
    float *router;               /* [T][E] */
    int32_t *topk;               /* [T][K] */
    float *topw;                 /* [T][K] */
    int32_t *members;            /* [T*K] (token, slot) pairs routed to one expert */
    float *xe, *ge, *ue, *oe;    /* gathered inputs, gate/up, outputs of one expert */
    float *slot_out;             /* [T][K][D] expert outputs before the weighted sum */
    float *mm;                   /* matmul scratch */
    int32_t *cells;              /* [T] cache cells of the batch */
} moe_scratch;

/* One adapter applied to a context (lora.h). */
typedef struct moe_lora_applied {
    moe_lora_adapter *adapter;
    float scale;
} moe_lora_applied;

struct moe_context {
    moe_model *model;
    moe_context_params params;
    int n_threads;
    moe_kv_cache kv;
    moe_scratch s;
    float *arena;
    float *logits;         /* [n_logit_rows][n_vocab] */
    int32_t logits_cap;    /* rows allocated */
    int32_t *logit_row;    /* [n_batch] batch index -> row, -1 none */
    int32_t n_last;        /* tokens in the last batch */
    int32_t n_kv;          /* cells attended over in the current layer pass */
    int32_t *pos_buf, *seq_buf; /* [n_batch] resolved positions and sequences */
    bool do_defrag;        /* defragment at the next update (moe_kv_update / decode) */
    moe_backend be;        /* the backend the graph runs on (backend.h) */
    moe_matmul_observer observer; /* NULL: none (moe_context_set_matmul_observer) */
    void *observer_user;
    moe_lora_applied lora[MOE_LORA_MAX]; /* applied adapters, n_lora of them */
    int32_t n_lora;
    int32_t lora_r_max;    /* largest rank applied so far (scratch row stride) */
    float *lora_tmp;       /* [n_batch * max(K, 1)][lora_r_max], grown by moe_lora_apply */
    int64_t lora_tmp_cap;
};

/* Runs the forward pass of one validated batch whose tokens already own cache
 * cells (s.cells) and positions; fills logits rows for logit_row >= 0. */
moe_status moe_forward(moe_context *ctx, int32_t T, const moe_token *tokens, const int32_t *pos,
                       const int32_t *seq, moe_err *err);

#endif
