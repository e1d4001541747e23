/* moe.h — the moe-toolkit inference runtime's C API.
 *
 * What it owns: loading a GGUF MoE model (llama/Mixtral, qwen2moe, qwen3moe,
 * olmoe, deepseek2, and dense llama), contexts with a KV cache, decoding token
 * batches into logits, tokenization, sampling and chat templates. The moe-run
 * tool is built on exactly this API. Errors are values (moe_status + moe_err);
 * nothing here exits or prints unless asked to log.
 *
 * Ownership: every *_free / *_close accepts NULL. A context borrows its model:
 * free contexts before the model. Pointers returned by getters are borrowed
 * and valid until the next call that changes the object (e.g. moe_decode
 * invalidates earlier logits pointers).
 */
#ifndef MOE_RUNTIME_MOE_H
#define MOE_RUNTIME_MOE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "formats/base/status.h"
#include "formats/quant/types.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef int32_t moe_token;
typedef struct moe_model moe_model;
typedef struct moe_context moe_context;

/* ---- model ------------------------------------------------------------------------- */

/* ---- devices --------------------------------------------------------------------------
 * Where weights live and steps run. "CPU" (index 0) always exists; "CPU1" is a
 * second CPU device with memory of its own (the same kernels; it exists so
 * that split execution, copies and synchronisation can be used and tested on
 * any machine); "CUDA0", "CUDA1"... when the CUDA backend is built and a GPU
 * is present. */
#define MOE_MAX_DEVICES 8

typedef struct moe_device_info {
    char name[16];          /* "CPU", "CPU1", "CUDA0" */
    char description[128];  /* "NVIDIA H200 (sm_90)" */
    bool gpu;               /* an offload device -ngl uses by default */
    uint64_t free_bytes, total_bytes; /* 0 when unknown (host devices); a GPU backend
                                          fills them, and CPU1 reports the size in the
                                          environment variable MOE_CPU1_MEMORY ("64M",
                                          "2G": a stand-in GPU for tests of --fit) */
} moe_device_info;

int moe_device_count(void);
/* Fills *out for device i; false if there is no such device. */
bool moe_device_get(int i, moe_device_info *out);

/* ---- model ------------------------------------------------------------------------- */

/* How often each routed expert was chosen, per MoE layer (made from an expert
 * statistics file by runtime/quality/expert_stats.h), for --hot-experts. */
typedef struct moe_expert_counts {
    const char *source;       /* the file they came from, for messages */
    const char *model, *arch; /* the model counted (general.name, architecture); NULL: unknown */
    int32_t n_expert, n_expert_used;
    int32_t n_layers;
    const int32_t *layer;     /* [n_layers] block indices, increasing */
    const uint64_t *count;    /* [n_layers][n_expert] token choices */
} moe_expert_counts;

typedef struct moe_model_params {
    bool use_mmap;   /* default true; false reads weights into memory */
    bool verify;     /* check stored XXH3 checksums before use */
    int n_threads;   /* for loading (decompression, legacy-layout stacking); 0 = all */
    /* Placement, as llama.cpp's flags. A tensor goes to the device of the first
     * tensor override whose pattern (ECMAScript-style regex, searched in the
     * GGUF name) matches; then --n-cpu-moe / --cpu-moe put expert tensors on
     * the CPU; then -ngl: the last n_gpu_layers layers (more than the layer
     * count: the output head too) are split evenly, in order, over the
     * offload devices; the rest stays on the CPU. A layer's attention and KV
     * cache live on its -ngl device; every other step runs where its weight
     * is, activations crossing devices by explicit copies. */
    int32_t n_gpu_layers;                 /* -ngl N; default 0 */
    const char *devices;                  /* -dev A,B: offload devices; NULL = every GPU */
    const char *const *tensor_overrides;  /* -ot PATTERN=DEVICE, n_tensor_overrides of them */
    int32_t n_tensor_overrides;
    bool cpu_moe;                         /* --cpu-moe: every expert tensor on the CPU */
    int32_t n_cpu_moe;                    /* --n-cpu-moe N: the experts of layers < N */
    /* Placement plans (--hot-experts, --gpu-budget, --fit): computed at load
     * into the flags above (-dev, -ngl, -ot), which then place as usual, so the
     * arguments moe_model_placement_args prints reproduce the placement. The
     * target is the first offload device (-dev's first, else the first GPU).
     *  - hot_experts + gpu_budget: the most chosen experts of all MoE layers,
     *    greedily by count (prompt and generation added) while their bytes
     *    fit gpu_budget, go to the target; every other routed expert stays on
     *    the CPU. -ngl, -dev and -ot are the user's (-ot rules come first).
     *  - fit: the target's free memory minus fit_margin is filled with the
     *    dense part of the last layers (every weight but the routed experts,
     *    and the layer's KV cache of fit_n_ctx cells), as a -ngl count, the
     *    output head when every layer fits; then, when every dense part fits,
     *    the whole routed-expert tensors of the last MoE layers, or with
     *    hot_experts the hottest experts as above. Not with -ngl, -ot,
     *    --cpu-moe, --n-cpu-moe or gpu_budget (fit chooses them). */
    const moe_expert_counts *hot_experts; /* NULL: none; read only during the load */
    uint64_t gpu_budget;                  /* bytes of hot experts on the target (no fit) */
    bool fit;
    uint64_t fit_margin;                  /* free memory --fit leaves; default 1 GiB */
    int32_t fit_n_ctx;                    /* KV cells --fit counts; 0 = the training context */
    moe_type fit_type_k, fit_type_v;      /* and their types; default F16 */
    /* -rtr: CPU products of 4 tokens or more with plain Q4_0, IQ4_NL and
     * Q4_K weights take the arithmetic of their interleaved twins (Q4_0_R8,
     * IQ4_NL_R4, Q4_K_R4), read from the plain rows in place: the interleaved
     * kernels' prompt speed and their bits (not llama.cpp's), no copy and no
     * time at load (the weights stay mmapped). Fewer tokens (generation) keep
     * the plain kernels. Default false. */
    bool run_time_repack;
} moe_model_params;

moe_model_params moe_model_default_params(void);

/* Loads path: a .gguf, the first shard of a split set, or a .gguf.zst. Legacy
 * split-expert files are stacked into memory at load (logged once). Fails
 * before any compute, naming the key, tensor or value at fault, for an
 * unsupported architecture, missing or misshapen tensor, or impossible
 * hyperparameter. */
moe_status moe_model_load(const char *path, const moe_model_params *params, moe_model **out,
                          moe_err *err);
void moe_model_free(moe_model *model);

int64_t moe_model_n_vocab(const moe_model *model);
int64_t moe_model_n_ctx_train(const moe_model *model);
int64_t moe_model_n_embd(const moe_model *model);
const char *moe_model_arch_name(const moe_model *model);
int64_t moe_model_n_layer(const moe_model *model);
/* Routed experts per MoE layer (0: a dense model) and how many each token uses. */
int64_t moe_model_n_expert(const moe_model *model);
int64_t moe_model_n_expert_used(const moe_model *model);
/* general.name of the (first) file, or NULL when it has none. */
const char *moe_model_name(const moe_model *model);
/* Bytes of weights one token's forward pass reads (experts: only the K used
 * per layer), for the GB/s figure. */
uint64_t moe_model_bytes_per_token(const moe_model *model);
/* Total bytes of weight data. */
uint64_t moe_model_weight_bytes(const moe_model *model);
/* Writes where every tensor went (name, type, MiB, device) and the bytes and
 * layers per device, one line each, to f. */
void moe_model_print_placement(const moe_model *model, FILE *f);
/* The device (an index for moe_device_get) tensor name was placed on, or -1
 * when the model has no such tensor. */
int moe_model_tensor_device(const moe_model *model, const char *name);
/* The device computing routed expert `expert` of block `layer` (it differs
 * from its tensor's device when the layer's experts are split), or -1 when
 * the layer has no such expert. */
int moe_model_expert_device(const moe_model *model, int64_t layer, int64_t expert);
/* The placement a plan (--fit, --hot-experts) chose, as arguments that give
 * it back ("-dev CUDA0 -ngl 28 -ot '...'"), or NULL when no plan was asked
 * for. Borrowed; valid until the model is freed. */
const char *moe_model_placement_args(const moe_model *model);

/* ---- context ----------------------------------------------------------------------- */

typedef struct moe_context_params {
    int32_t n_ctx;       /* KV cache cells; 0 = the model's training context */
    int32_t n_seq_max;   /* distinct sequences; default 1 */
    int32_t n_batch;     /* most tokens per moe_decode call; default 512 */
    moe_type type_k;     /* KV cache types: F16 (default), F32, Q8_0 */
    moe_type type_v;
    int n_threads;       /* 0 = all cores */
    float defrag_thold;  /* llama.cpp's --defrag-thold: after a decode whose cache
                            fragmentation (1 - (used + 32) / attended cells)
                            exceeds it, the next update defragments; < 0 (the
                            default) = only on request (moe_kv_defrag) */
    int32_t op_offload_min; /* a batch whose routed experts live on another device
                               than the layer (--cpu-moe with a GPU) computes them on
                               the layer's device, uploading only the experts it
                               routes to, when tokens * K / E >= this; 0 = never
                               (llama.cpp's --no-op-offload); default 32 */
} moe_context_params;

moe_context_params moe_context_default_params(void);

moe_status moe_context_create(moe_model *model, const moe_context_params *params,
                              moe_context **out, moe_err *err);
void moe_context_free(moe_context *ctx);
int32_t moe_context_n_ctx(const moe_context *ctx);

/* ---- decoding --------------------------------------------------------------------- */

typedef struct moe_batch {
    int32_t n_tokens;
    const moe_token *token;  /* n_tokens ids */
    const int32_t *pos;      /* positions; NULL = continue each sequence after its last */
    const int32_t *seq_id;   /* one sequence per token; NULL = all sequence 0 */
    const int8_t *logits;    /* non-zero: produce logits for this token; NULL = last only */
} moe_batch;

/* Evaluates a batch (causal attention within each sequence), storing K/V in the
 * cache. Fails without changing the cache when the batch is malformed (token
 * out of range, no free cells, n_tokens > n_batch...). */
moe_status moe_decode(moe_context *ctx, const moe_batch *batch, moe_err *err);

/* Logits row (n_vocab floats) of batch token i of the last decode (i < 0
 * counts from the end: -1 is the last token), or NULL if
 * that token did not request logits or the last decode failed. Every pointer
 * returned is invalidated by the next moe_decode, successful or not. */
const float *moe_get_logits_ith(moe_context *ctx, int32_t i);

/* Where decoding time went since the context was made or last reset: routed
 * experts, every other step, and copies between devices with the waits for
 * device queues. Steps queued on a device that runs asynchronously are
 * counted when the host waits for them. */
typedef struct moe_perf {
    double experts_ms, other_ms, copy_ms;
    int64_t n_copies, copy_bytes;
    int64_t n_decodes, n_tokens;
    int64_t expert_offloads;   /* layer steps whose experts were uploaded (op_offload_min) */
} moe_perf;

void moe_context_perf(const moe_context *ctx, moe_perf *out);
void moe_context_perf_reset(moe_context *ctx);

/* ---- KV cache (llama.cpp semantics: p1 < 0 means "to the end") ------------------------
 * A sequence id outside 0..n_seq_max-1 (other than -1 = all, where allowed)
 * names no cell: the call does nothing (pos_max returns -1). */

void moe_kv_clear(moe_context *ctx);
/* Removes positions [p0, p1) of seq (seq < 0: every sequence). */
void moe_kv_seq_rm(moe_context *ctx, int32_t seq, int32_t p0, int32_t p1);
/* Adds delta to positions [p0, p1) of seq; keys are re-rotated (K-shift)
 * before the next decode. */
void moe_kv_seq_add(moe_context *ctx, int32_t seq, int32_t p0, int32_t p1, int32_t delta);
/* Largest position stored for seq, or -1. */
int32_t moe_kv_seq_pos_max(const moe_context *ctx, int32_t seq);
/* Smallest position stored for seq, or -1. */
int32_t moe_kv_seq_pos_min(const moe_context *ctx, int32_t seq);
/* Makes positions [p0, p1) of src visible to dst too: the cells are shared
 * between the sequences, not copied (no memory used). src == dst: nothing. */
void moe_kv_seq_cp(moe_context *ctx, int32_t src, int32_t dst, int32_t p0, int32_t p1);
/* Removes every cell not holding seq; the rest then belong to seq only. */
void moe_kv_seq_keep(moe_context *ctx, int32_t seq);
/* Integer-divides positions [p0, p1) of seq by d (d > 1); keys are
 * re-rotated (K-shift) before the next decode, as for seq_add. */
void moe_kv_seq_div(moe_context *ctx, int32_t seq, int32_t p0, int32_t p1, int32_t d);
/* Cells holding at least one sequence. */
int32_t moe_kv_n_used(const moe_context *ctx);
/* Asks for defragmentation at the next moe_kv_update or moe_decode. */
void moe_kv_defrag(moe_context *ctx);
/* Applies what is pending now: the K-shift of every shifted cell, then a
 * requested defragmentation (holes from the front filled with cells from the
 * end, never overlapping). moe_decode does the same lazily before it
 * evaluates; nothing else does. Returns the cells defragmentation moved.
 * Logits of the last decode stay valid. */
int32_t moe_kv_update(moe_context *ctx);
/* Whether seq_add / seq_div may be used: true for every architecture we load
 * (deepseek2 MLA included: only the rope part of the key is re-rotated). */
bool moe_kv_can_shift(const moe_context *ctx);

/* ---- state (prompt caches) -----------------------------------------------------------
 * A versioned file holding the tokens it was made from, the used KV cells
 * (positions, sequences, K/V rows) and the logits of the last decoded token,
 * bound to its model by a fingerprint (tensor names, types, shapes, sampled
 * bytes of every weight, RoPE constants). */

/* Writes the state atomically (temp file, fsync, rename) to path. tokens
 * (n_tokens, may be 0) are stored for the caller to match later prompts
 * against. Pending shifts are applied first. */
moe_status moe_state_save_file(moe_context *ctx, const char *path, const moe_token *tokens,
                               int32_t n_tokens, moe_err *err);
/* Replaces ctx's KV cache with the state in path (cells packed from 0) and
 * restores the saved logits as the last decode's row -1. The stored tokens go
 * to tokens (capacity cap), their count to *n_tokens. A file of another model,
 * another KV cache type or format version, one that does not fit the context,
 * or a damaged one is refused (MOE_ERR_FORMAT / MOE_ERR_USAGE) with ctx
 * unchanged. */
moe_status moe_state_load_file(moe_context *ctx, const char *path, moe_token *tokens,
                               int32_t cap, int32_t *n_tokens, moe_err *err);
/* The fingerprint the state files of this model carry. */
uint64_t moe_model_fingerprint(const moe_model *model);

/* ---- observing weight products (importance matrices, statistics) -------------------------
 * fn is called once per weight product of every later moe_decode, with the f32
 * activations the weight multiplies (before any rounding to the weight's
 * vec-dot type): tensor is the weight's GGUF name ("blk.0.attn_q.weight",
 * "blk.1.ffn_down_exps.weight", "output.weight"), expert the expert index for
 * stacked expert tensors (-1 otherwise), x holds n_rows rows of n_in floats,
 * token-major (for an expert: only the rows routed to it, slot by slot: the
 * tokens that chose it first, in batch order, then those that chose it
 * second, ..., the order in which llama-imatrix sums them).
 * Called on the decoding thread in graph order; x is valid only during the
 * call. fn NULL turns observing off. Observing costs a copy of each
 * expert's input rows and a pause of the other threads while fn runs. */
typedef void (*moe_matmul_observer)(void *user, const char *tensor, int32_t expert,
                                    const float *x, int64_t n_in, int64_t n_rows);
void moe_context_set_matmul_observer(moe_context *ctx, moe_matmul_observer fn, void *user);

/* ---- observing the router (expert statistics) ------------------------------------------
 * fn is called once per MoE layer of every later moe_decode, after the router
 * chose: layer is the block index, ids [T][K] the experts chosen for each of
 * the batch's T tokens (in selection order), weights [T][K] their routing
 * weights as the layer applies them. Host arrays, valid only during the call;
 * called on the decoding thread in layer order. fn NULL turns it off. Costs a
 * copy of the choices to the host when the router runs on another device. */
typedef void (*moe_route_observer)(void *user, int32_t layer, int32_t T, int32_t K,
                                   const int32_t *ids, const float *weights);
void moe_context_set_route_observer(moe_context *ctx, moe_route_observer fn, void *user);

/* ---- LoRA adapters ---------------------------------------------------------------------
 * llama.cpp's GGUF LoRA format (general.type "adapter", adapter.type "lora",
 * adapter.lora.alpha, tensors "<base name>.lora_a" [n_in, r(, E)] and
 * ".lora_b" [r, n_out(, E)]). Adapters are applied unmerged: every product
 * with factors computes y = W x + sum_adapters s * B (A x), s = scale * alpha
 * / r; the base weights are never touched, so removing an adapter gives the
 * base model's results back bit for bit. An adapter's factors are read once,
 * by moe_lora_load, into memory owned by the model (as F32) and shared by all
 * its contexts; apply / remove / rescale only change the context's list and
 * take effect at the next moe_decode (no file is read). */
typedef struct moe_lora_adapter moe_lora_adapter;

/* Reads the adapter at path for model into *out. Fails, naming the key or
 * tensor, for another architecture, a file that is not a LoRA adapter, a
 * missing alpha, a tensor naming no weight of the model (or one that is not
 * a product), a missing half, a shape or rank that does not fit, or a type
 * that cannot be decoded; the model is unchanged then. The adapter lives
 * until moe_lora_free or moe_model_free. */
moe_status moe_lora_load(moe_model *model, const char *path, moe_lora_adapter **out,
                         moe_err *err);
/* Frees the adapter's factors. An adapter still applied to a context is freed
 * when the last context lets go of it (moe_lora_remove/clear, context free).
 * NULL is a no-op. */
void moe_lora_free(moe_lora_adapter *adapter);
/* Applies adapter at scale to ctx, or changes its scale when already applied.
 * At most 8 adapters per context; the adapter must belong to ctx's model. */
moe_status moe_lora_apply(moe_context *ctx, moe_lora_adapter *adapter, float scale,
                          moe_err *err);
/* Removes adapter from ctx; MOE_ERR_USAGE if it was not applied. */
moe_status moe_lora_remove(moe_context *ctx, moe_lora_adapter *adapter, moe_err *err);
/* Removes every adapter from ctx. */
void moe_lora_clear(moe_context *ctx);
/* Adapters applied to ctx. */
int32_t moe_lora_count(const moe_context *ctx);

/* ---- text ----------------------------------------------------------------------------- */

/* Tokenizes text (len bytes) into out (capacity cap). add_special: BOS/EOS as
 * the vocabulary asks; parse_special: recognise control-token text. Returns
 * the token count, or minus the count needed when cap is too small. */
int32_t moe_tokenize(const moe_model *model, const char *text, int32_t len, moe_token *out,
                     int32_t cap, bool add_special, bool parse_special);
/* Writes the text of token t (no NUL) into buf; returns its length, or minus
 * the length needed. special: render control tokens too. */
int32_t moe_token_to_piece(const moe_model *model, moe_token t, char *buf, int32_t cap,
                           bool special);
moe_token moe_token_bos(const moe_model *model); /* -1 if none */
moe_token moe_token_eos(const moe_model *model);
bool moe_token_is_eog(const moe_model *model, moe_token t);
bool moe_model_add_bos(const moe_model *model); /* the vocabulary asks for a BOS token */

/* ---- sampling --------------------------------------------------------------------------- */

typedef struct moe_sampler moe_sampler;

typedef struct moe_sampler_params {
    float temp;           /* <= 0: greedy */
    int32_t top_k;        /* <= 0: off */
    float top_p;          /* >= 1: off */
    float min_p;          /* <= 0: off */
    float repeat_penalty; /* 1: off */
    int32_t repeat_last_n;
    uint64_t seed;
} moe_sampler_params;

/* llama-cli's defaults: temp 0.8, top_k 40, top_p 0.95, min_p 0.05,
 * repeat_penalty 1.0 (off), repeat_last_n 64, seed random. */
moe_sampler_params moe_sampler_default_params(void);
moe_sampler *moe_sampler_create(const moe_sampler_params *params);
moe_token moe_sampler_sample(moe_sampler *s, const float *logits, int64_t n_vocab);
void moe_sampler_accept(moe_sampler *s, moe_token t);
void moe_sampler_free(moe_sampler *s);

/* ---- chat --------------------------------------------------------------------------------- */

typedef struct moe_chat_message {
    const char *role;    /* "system", "user", "assistant" */
    const char *content;
} moe_chat_message;

/* Formats messages with tmpl (NULL: the model's tokenizer.chat_template),
 * recognising the common built-in templates (chatml, llama2/mistral, llama3,
 * deepseek, deepseek3) by their text. add_assistant: end with the assistant
 * prefix. *out is malloc'd (caller frees). Unsupported template: error. */
moe_status moe_chat_apply(const moe_model *model, const char *tmpl, const moe_chat_message *msgs,
                          int n_msgs, bool add_assistant, char **out, moe_err *err);

#ifdef __cplusplus
}
#endif

#endif
