/* model — a loaded model: hyper-parameters, the vocabulary, and every weight
 * bound to bytes (a read-only mapping, or memory we own).
 *
 * Owns: binding the schema's tensors (formats/model/arch.h) to data, validating
 * names, shapes and types before any compute, the legacy split-expert
 * compatibility path (experts copied into stacked buffers), .gguf.zst and
 * shard loading. Inside the runtime experts are always stacked (ne[2] = E).
 * Does not own: compute (backend.h, forward.c), the KV cache (kv_cache.h).
 */
#ifndef MOE_RUNTIME_MODEL_H
#define MOE_RUNTIME_MODEL_H

#include <stdbool.h>
#include <stdint.h>

#include "formats/model/arch.h"
#include "formats/gguf/gguf_set.h"
#include "formats/quant/types.h"
#include "runtime/include/moe.h"
#include "runtime/vocab.h"

/* One weight tensor in ggml order: ne[0] is the row length (inputs of a
 * matmul), ne[1] the rows (outputs), ne[2] the experts. NULL data = absent. */
typedef struct moe_weight {
    const uint8_t *data;
    moe_type type;
    int64_t ne[4];
    uint64_t row_bytes;    /* bytes of one row of ne[0] values */
    uint64_t expert_bytes; /* bytes of one ne[0] x ne[1] matrix */
    int8_t device;         /* index into the model's devices (device.h); 0 = CPU */
    const char *name;      /* borrowed from the spec list */
    /* set by the backend the weight is bound to (backend.h), once at load */
    const struct moe_cpu_kernel *kern; /* CPU: the product kernel for this type and ISA */
    void *dev;             /* a device backend's copy; NULL for host weights */
} moe_weight;

/* A layer whose routed experts are split between devices (-ot
 * PATTERN=DEVICE:experts=RANGES, --hot-experts). The stacked tensors stay on
 * their home device with every expert; each other device holds copies of its
 * experts only, as parts of ne[2] = its count, in expert order. */
typedef struct moe_expert_split {
    int8_t dev[MOE_MAX_EXPERTS];     /* device computing each expert */
    int32_t local[MOE_MAX_EXPERTS];  /* its index in that device's part (home: itself) */
    uint32_t devs;                   /* bit d: device d computes some experts */
    struct moe_weight part[MOE_MAX_DEVICES][3]; /* gate, up, down on each other device */
    void *gathered[MOE_MAX_DEVICES][3]; /* host copies a part still points to (freed with it) */
} moe_expert_split;

typedef struct moe_layer {
    moe_weight attn_norm, wq, wk, wv, wo, bq, bk, bv, q_norm, k_norm;
    moe_weight wq_a, q_a_norm, wq_b, wkv_a_mqa, kv_a_norm, wkv_b; /* deepseek2 MLA */
    /* absorbed MLA (no attn_kv_b): per head h, wk_b [nope, Rkv, H] takes q's
     * non-rope part into the latent space, wv_b [Rkv, dv, H] takes the
     * attended latent back out (ik's 2-D files are viewed as the same 3-D) */
    moe_weight wk_b, wv_b;
    moe_weight ffn_norm;
    moe_weight ffn_gate, ffn_up, ffn_down;                         /* dense FFN */
    moe_weight gate_inp, exp_probs_b, gate_exps, up_exps, down_exps;
    moe_weight gate_inp_shexp, gate_shexp, up_shexp, down_shexp;
    bool is_moe;
    moe_expert_split *split;  /* NULL: every expert where the stacked tensors are */
} moe_layer;

/* Every weight field of moe_layer, for code that visits them all:
 * #define X(f) ... then MOE_LAYER_WEIGHTS(X). */
#define MOE_LAYER_WEIGHTS(X)                                                                    \
    X(attn_norm) X(wq) X(wk) X(wv) X(wo) X(bq) X(bk) X(bv) X(q_norm) X(k_norm) X(wq_a)          \
    X(q_a_norm) X(wq_b) X(wkv_a_mqa) X(kv_a_norm) X(wkv_b) X(wk_b) X(wv_b) X(ffn_norm)          \
    X(ffn_gate) X(ffn_up) X(ffn_down) X(gate_inp) X(exp_probs_b) X(gate_exps) X(up_exps)       \
    X(down_exps) X(gate_inp_shexp) X(gate_shexp) X(up_shexp) X(down_shexp)

/* Bytes of w's data (every expert). */
static inline uint64_t moe_weight_nbytes(const moe_weight *w) {
    return w->expert_bytes * (uint64_t)(w->ne[2] * w->ne[3]);
}

/* The floats of a 1-D weight (the loader keeps every 1-D weight as aligned
 * F32), or NULL when the weight is absent. */
static inline const float *moe_weight_f32(const moe_weight *w) {
    return w->data ? (const float *)w->data : NULL;
}

/* RoPE constants derived once from the hyper-parameters (model.md §2.0). */
typedef struct moe_rope_params {
    int n_dims;
    bool neox;
    float freq_base, freq_scale, ext_factor, attn_factor, beta_fast, beta_slow;
    float corr_lo, corr_hi;
    int n_ctx_orig;
    /* Rotate with fused multiply-adds (x0*c - x1*s as fma(x0, c, -(x1*s))),
     * as the CPU build of current llama.cpp does (its RoPE is C++ the
     * compiler contracts); the Feb 2025 build the conformance goldens come
     * from rounds both products. The results differ in the last bit now and
     * then, which the F16 KV cache mostly, but not always, absorbs. Set for
     * every model but non-absorbed MLA: current llama.cpp's is what users
     * compare with (llama-imatrix's and llama-perplexity's figures on 128-token
     * batches need it bit for bit: unfused, Q and K differ in ~20% of values
     * from position 1 on), and the Feb 2025 goldens of the other architectures
     * stay bit-identical either way; the deepseek2 goldens (Feb 2025, the only
     * reference for MLA read the non-absorbed way) are bit-identical only
     * unfused (fused: max|d| 0.0036 and 0.0061). */
    bool fused;
} moe_rope_params;

/* What the KV cache holds per token and layer, and what attention runs over:
 * n_head_kv heads of dk keys and dv values. The hyper-parameters' sizes,
 * except for absorbed MLA (deepseek2 files with attn_k_b/attn_v_b and no
 * attn_kv_b), which current llama.cpp runs as multi-query attention: one
 * head whose key is [latent (kv_lora_rank) | rope part] and whose value is
 * the latent itself (the first dv = kv_lora_rank values of the key). */
typedef struct moe_attn_shape {
    int64_t n_head_kv, dk, dv;
    bool absorbed;
    /* Cells attended over: the used ones rounded up to this (hidden ones
     * masked), which sets the summation lanes of single-token attention. 32
     * as in the llama.cpp the conformance goldens come from; 256 for absorbed
     * MLA, which only current llama.cpp reads, and it pads to 256. */
    int32_t n_kv_pad;
} moe_attn_shape;

struct moe_model {
    moe_hparams hp;
    const moe_arch_info *arch;
    char *general_name;       /* general.name of the first file, NULL when absent; owned */
    moe_vocab *vocab;
    moe_weight tok_embd, output_norm, output;
    moe_layer *layers;
    moe_rope_params rope;
    float kq_scale;
    moe_attn_shape attn;
    /* storage */
    moe_gguf_set *set;        /* open files (mapped when use_mmap) */
    uint8_t **owned;          /* weights we hold: --no-mmap, legacy stacking, .zst */
    size_t n_owned;
    uint64_t owned_bytes;
    moe_tensor_spec *specs;   /* the schema; names borrowed by the weights */
    size_t n_specs;
    uint64_t weight_bytes, bytes_per_token;
    struct moe_lora_adapter *lora; /* loaded LoRA adapters (lora.h), freed with the model */
    /* placement (device.h) */
    int n_dev;
    struct moe_device_entry *dev; /* [n_dev] every device known at load */
    int8_t *layer_dev;            /* [n_layer] where a layer's attention and KV cache live */
    uint32_t dev_used;            /* bit d: device d holds a weight or a layer */
    bool expert_split;            /* some layer's experts are split between devices */
    bool bound;                   /* weights bound to their devices (unbind at free) */
    char *placement_args;         /* what a plan (--fit, --hot-experts) chose; owned */
};

/* Fills the RoPE constants, kq_scale and the attention shape from model->hp
 * (YaRN included). */
void moe_model_derive_rope(moe_model *model);

#endif
