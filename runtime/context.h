/* context — one inference session over a model: KV cache, the scratch arena
 * the forward pass works in (sized once, from the hyper-parameters and the
 * batch size: nothing is allocated per token), and the last logits.
 */
#ifndef MOE_RUNTIME_CONTEXT_H
#define MOE_RUNTIME_CONTEXT_H

#include "runtime/backend.h"
#include "runtime/device.h"
#include "runtime/kv_cache.h"
#include "runtime/model.h"

#define MOE_MAX_SEQ 64
/* llama.cpp pads the attended cells to a multiple of 32 (no flash attention) */
#define MOE_KV_PADDING 32

/* The graph's activations: each may have a copy on several devices
 * (forward.c keeps track of which copies are current and copies between
 * them). Rows are token-major. */
typedef enum moe_buf {
    MOE_BUF_X,      /* [T][D] residual stream */
    MOE_BUF_H,      /* [T][D] normed input of a block */
    MOE_BUF_TMP,    /* [T][D] branch output */
    MOE_BUF_Q,      /* [T][H*dk] */
    MOE_BUF_K,      /* [T][Hkv*dk] */
    MOE_BUF_V,      /* [T][Hkv*dv] */
    MOE_BUF_ATT,    /* [T][H*dv] (absorbed MLA: first [T][H*Rkv], the attended latents) */
    MOE_BUF_QA,     /* deepseek2 MLA intermediates */
    MOE_BUF_KVPE,
    MOE_BUF_KVC,
    MOE_BUF_KV,
    MOE_BUF_MLA_Q,     /* absorbed MLA: [T][H*(Rkv+rope)] queries in the latent space */
    MOE_BUF_MLA_HEADS, /* [H][T][max(nope, Rkv)] per-head inputs of wk_b / wv_b */
    MOE_BUF_MLA_PROJ,  /* [H][T][max(Rkv, dv)] per-head products of wk_b / wv_b */
    MOE_BUF_ROUTER, /* [T][E] router logits, then probabilities */
    MOE_BUF_TOPK,   /* [T][K] int32 expert ids */
    MOE_BUF_TOPW,   /* [T][K] routing weights */
    MOE_BUF_SHEXP,  /* [T][D] shared-expert output */
    MOE_BUF_SHGATE, /* [T] shared-expert gate logits */
    MOE_BUF_LOGITS, /* [T][n_vocab], on a device holding the output head other than the CPU */
    MOE_BUF_SPLIT_IDS, /* [T][K] a device's share of a split expert step: local ids, -1 elsewhere */
    MOE_BUF_SLOTS,     /* [T][K][D] a device's expert outputs in a split step */
    MOE_BUF_SLOTS_ALL, /* [T][K][D] every device's, gathered where they are summed */
    MOE_BUF_COUNT
} moe_buf;

/* One device's buffers for a decode of up to n_batch tokens: the graph's
 * activations and the backend's working memory. */
typedef struct moe_scratch {
    void *buf[MOE_BUF_COUNT];
    float *attn_ws;              /* [threads][moe_attention_workspace()] */
    int32_t *members;            /* [T*K] (token, slot) pairs routed to one expert */
    float *xe, *ge, *ue, *oe;    /* gathered inputs, gate/up, outputs of one expert */
    float *slot_out;             /* [T][K][D] expert outputs before the weighted sum */
    float *mm;                   /* matmul scratch */
} moe_scratch;

/* A device a context computes on: its backend instance and buffers. */
typedef struct moe_device_ctx {
    bool active;                 /* the model placed something on it */
    moe_backend be;
    moe_scratch s;
    void *arena;                 /* device memory holding s */
    void *staging;               /* routed experts uploaded for one layer step */
    uint64_t staging_bytes;
} moe_device_ctx;

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
    moe_device_ctx dev[MOE_MAX_DEVICES]; /* indexed as the model's devices; 0 = CPU */
    uint32_t valid[MOE_BUF_COUNT];       /* bit d: device d's copy of the buffer is current */
    int64_t valid_n[MOE_BUF_COUNT];      /* 4-byte elements written by the last step */
    moe_perf perf;                       /* where decoding time went (moe_context_perf) */
    int32_t *cells;        /* [n_batch] cache cells of the batch (host) */
    float *logits;         /* [n_logit_rows][n_vocab] */
    int32_t logits_cap;    /* rows allocated */
    int32_t *logit_row;    /* [n_batch] batch index -> row, -1 none */
    int32_t n_last;        /* tokens in the last batch */
    int32_t *pos_buf, *seq_buf; /* [n_batch] resolved positions and sequences */
    /* each batch sequence's cells in position order (moe_kv_seq_cells): lists
     * of kv.size, one per distinct sequence of the batch (at most
     * min(n_batch, n_seq_max)); token t reads tok_cells[t][0..tok_n_cells[t]) */
    int32_t *seq_cells;
    uint64_t *seq_cells_key;    /* [kv.size] sort scratch */
    const int32_t **tok_cells;  /* [n_batch] */
    int32_t *tok_n_cells;       /* [n_batch] */
    bool do_defrag;        /* defragment at the next update (moe_kv_update / decode) */
    moe_matmul_observer observer; /* NULL: none (moe_context_set_matmul_observer) */
    void *observer_user;
    moe_route_observer route_observer; /* NULL: none (moe_context_set_route_observer) */
    void *route_observer_user;
    moe_lora_applied lora[MOE_LORA_MAX]; /* applied adapters, n_lora of them */
    int32_t n_lora;
    int32_t lora_r_max;    /* largest rank applied so far (scratch row stride) */
    float *lora_tmp;       /* [n_batch * max(K, 1)][lora_r_max], grown by moe_lora_apply */
    int64_t lora_tmp_cap;
};

/* Applies the cache's pending K-shift (its keys are host memory, rotated by
 * the CPU backend). */
void moe_context_kv_shift(moe_context *ctx);

/* Runs the forward pass of one validated batch whose tokens already own cache
 * cells (ctx->cells) and positions; fills logits rows for logit_row >= 0. */
moe_status moe_forward(moe_context *ctx, int32_t T, const moe_token *tokens, const int32_t *pos,
                       const int32_t *seq, moe_err *err);

#endif
