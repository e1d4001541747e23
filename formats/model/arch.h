/* arch — what the keys and tensors of a MoE model mean, per architecture.
 *
 * Owns: the architecture table (llama/Mixtral, qwen2moe, qwen3moe, olmoe,
 * deepseek2: routing semantics, rope type, which optional parts exist), the
 * hyper-parameter record read from and written to GGUF metadata (keys exactly
 * as ../shared/spec/model.md §2 lists them), the expected tensor set of a
 * model (names, shapes in ggml order, which are optional, which stay F32) in
 * both expert layouts, and the tensor-name helpers (per-layer names, legacy
 * per-expert names, stacked names).
 * Does not own: reading or writing GGUF bytes (gguf.h), tensor types or
 * quantization policy (types.h, convert/), the tokenizer keys (runtime/), or
 * the forward pass. Nothing here allocates except moe_arch_tensors (and the
 * temporaries of moe_arch_check_gguf).
 *
 * Dimension alphabet in shape comments: D = n_embd, F = n_ff (dense FFN),
 * Fe = n_ff_exp (one routed expert), Fs = n_ff_shexp (all shared experts),
 * E = n_expert, H = n_head, Hkv = n_head_kv, dk/dv = per-head K/V dims,
 * V = n_vocab, Rq/Rkv = q/kv LoRA ranks (deepseek2 MLA).
 *
 * Tensor order: moe_arch_tensors lists tensors in the order llama.cpp's
 * converter writes them (token_embd, every block in block order, output_norm,
 * output), the order of the F32/F16 conformance models. Inside a block of the
 * split layout, the per-expert tensors of one family are consecutive in expert
 * order (all ffn_gate.E, then ffn_down.E, then ffn_up.E), as in
 * tiny-llama-split.gguf. llama-quantize sorts tensors by name, so quantized
 * files legitimately differ in order: compare by name unless order matters.
 */
#ifndef MOE_FORMATS_ARCH_H
#define MOE_FORMATS_ARCH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "formats/gguf/gguf.h"
#include "formats/base/status.h"

typedef enum moe_arch {
    MOE_ARCH_LLAMA = 0, /* Mixtral-style MoE; dense llama when n_expert == 0 */
    MOE_ARCH_QWEN2MOE,
    MOE_ARCH_QWEN3MOE,
    MOE_ARCH_OLMOE,
    MOE_ARCH_DEEPSEEK2,
    MOE_ARCH_COUNT,
} moe_arch;

/* `%s.expert_gating_func` values (pinned by llama.cpp / ik_llama.cpp). */
typedef enum moe_gating {
    MOE_GATING_NONE = 0,
    MOE_GATING_SOFTMAX = 1,
    MOE_GATING_SIGMOID = 2,
    MOE_GATING_SOFTMAX_WEIGHT = 3, /* ik: top-k on logits, softmax over the k */
    MOE_GATING_SQRT_SOFTPLUS = 4,  /* ik */
} moe_gating;

typedef enum moe_rope_type {
    MOE_ROPE_NORM = 0, /* rotate adjacent pairs */
    MOE_ROPE_NEOX = 2, /* rotate (x[i], x[i + n_rot/2]) */
} moe_rope_type;

typedef enum moe_qk_norm {
    MOE_QK_NORM_NONE = 0,
    MOE_QK_NORM_HEAD, /* attn_q_norm/attn_k_norm [dk], per head (qwen3moe) */
    MOE_QK_NORM_FULL, /* attn_q_norm/attn_k_norm [D], whole projection (olmoe) */
} moe_qk_norm;

/* How routed experts are stored. */
typedef enum moe_expert_layout {
    MOE_LAYOUT_STACKED = 0, /* blk.N.ffn_{gate,up,down}_exps.weight, 3-D, ne[2] = E */
    MOE_LAYOUT_SPLIT,       /* legacy: blk.N.ffn_{gate,up,down}.E.weight, 2-D each */
} moe_expert_layout;

/* deepseek2 attention (MLA) tensor variants (model.md §3.3). */
typedef enum moe_mla_layout {
    MOE_MLA_KV_B = 0,       /* attn_kv_b [Rkv, H*(nope+dv)] (llama.cpp Feb 2025) */
    MOE_MLA_KV_B_PLUS_2D,   /* ik: attn_kv_b plus attn_k_b [nope, H*Rkv], attn_v_b [Rkv, H*dv] */
    MOE_MLA_2D,             /* ik: attn_k_b/attn_v_b 2-D only (attn_kv_b dropped) */
    MOE_MLA_3D,             /* mainline-new: attn_k_b [nope, Rkv, H], attn_v_b [Rkv, dv, H],
                               no attn_kv_b; keys head_count_kv = 1, key_length = Rkv + n_rot,
                               value_length = Rkv, key/value_length_mla = dk/dv */
} moe_mla_layout;

/* What one architecture is, beyond its hyper-parameters. Static storage. */
typedef struct moe_arch_info {
    const char *name;         /* general.architecture string */
    moe_rope_type rope;
    moe_gating gating;        /* default when the file has no expert_gating_func */
    bool norm_w;              /* renormalise the top-k weights (default) */
    bool norm_w_key;          /* norm_w comes from `%s.expert_weights_norm` */
    bool scale_w;             /* multiply weights by expert_weights_scale */
    bool shexp;               /* has shared experts (ffn_*_shexp) */
    bool shexp_gate;          /* shared expert output gated by sigmoid(ffn_gate_inp_shexp·x) */
    bool qkv_bias;            /* attn_{q,k,v}.bias required */
    moe_qk_norm qk_norm;
    bool mla;                 /* deepseek2 latent attention */
    bool output_required;     /* output.weight must exist (no tying) */
    bool experts_required;    /* n_expert must be > 0 */
} moe_arch_info;

/* Info of a (valid) arch. Static storage. */
const moe_arch_info *moe_arch_get(moe_arch a);
/* general.architecture string of a, or "unknown". */
const char *moe_arch_name(moe_arch a);
/* Finds an arch by its general.architecture string (exact). */
bool moe_arch_from_name(const char *name, moe_arch *out);

/* Rope scaling as in `%s.rope.scaling.type`; UNSET: the keys are absent. */
typedef enum moe_rope_scaling {
    MOE_ROPE_SCALING_UNSET = 0,
    MOE_ROPE_SCALING_NONE,
    MOE_ROPE_SCALING_LINEAR,
    MOE_ROPE_SCALING_YARN,
    MOE_ROPE_SCALING_LONGROPE,
} moe_rope_scaling;

/* Most routed experts a model may have (ik_llama.cpp's limit; llama.cpp's is 256). */
#define MOE_MAX_EXPERTS 512

/* Hyper-parameters of one model. Counts are int64_t for arithmetic; in GGUF
 * they are u32. Every field is meaningful for every arch (0 when the arch has
 * no such part), so code can read them without switching on arch. */
typedef struct moe_hparams {
    moe_arch arch;
    int64_t n_vocab;
    int64_t n_ctx_train;     /* context_length */
    int64_t n_embd;          /* D */
    int64_t n_layer;         /* L */
    int64_t n_head;          /* H */
    int64_t n_head_kv;       /* Hkv; MLA: = H */
    int64_t head_dim_k;      /* dk per head (MLA: qk_nope + qk_rope) */
    int64_t head_dim_v;      /* dv per head */
    int64_t n_rot;           /* rope dims (MLA: qk_rope) */
    int64_t n_ff;            /* F: dense FFN width (dense llama, deepseek2 lead blocks) */
    int64_t n_ff_exp;        /* Fe: one routed expert */
    int64_t n_ff_shexp;      /* Fs: all shared experts together; 0 = none */
    int64_t n_expert;        /* E; 0 = dense */
    int64_t n_expert_used;   /* K */
    int64_t n_expert_shared; /* deepseek2: expert_shared_count; qwen2moe: 1 */
    int64_t n_leading_dense; /* first blocks with a dense FFN (deepseek2) */
    int64_t q_lora_rank;     /* Rq; 0 = plain attn_q (DeepSeek-V2-Lite) */
    int64_t kv_lora_rank;    /* Rkv */
    float rope_freq_base;
    float rms_eps;
    moe_gating gating;
    bool expert_weights_norm;
    float expert_weights_scale; /* 1 where the arch has no scale */
    float yarn_log_mul;         /* deepseek2 rope.scaling.yarn_log_multiplier */
    moe_rope_scaling rope_scaling;
    float rope_scaling_factor;  /* 0 = none */
    int64_t n_ctx_orig;         /* rope.scaling.original_context_length; 0 = absent */
    /* Which optional tensors the model carries and how experts are stored:
     * from the tensor list when read from a file, chosen when writing one. */
    bool tied_output;           /* no output.weight: logits reuse token_embd */
    bool exp_probs_b;           /* blk.N.exp_probs_b.bias (selection bias) */
    moe_mla_layout mla;
    moe_expert_layout layout;
} moe_hparams;

/* MLA head dims (deepseek2): the non-rope and rope parts of dk, and dv. */
static inline int64_t moe_hp_qk_nope(const moe_hparams *hp) { return hp->head_dim_k - hp->n_rot; }
static inline int64_t moe_hp_qk_rope(const moe_hparams *hp) { return hp->n_rot; }
static inline int64_t moe_hp_v_head(const moe_hparams *hp) { return hp->head_dim_v; }

/* Whether block il has routed experts (else a dense FFN). */
static inline bool moe_hp_layer_is_moe(const moe_hparams *hp, int64_t il) {
    return hp->n_expert > 0 && il >= hp->n_leading_dense;
}

/* Fills *hp with the arch's defaults: routing semantics from the arch table,
 * rope base 10000, rms eps 1e-5, expert scale 1, everything else 0/false,
 * stacked layout. Shapes must then be set by the caller. */
void moe_hparams_defaults(moe_arch arch, moe_hparams *hp);

/* Checks that the shapes make a model llama.cpp / ik_llama.cpp could load:
 * positive sizes, Hkv divides H, K <= E (and K > 0 iff E > 0), at most 512
 * experts and 512 layers, the arch's required parts, rope dims even and
 * <= dk (llama: == dk), MLA ranks, olmoe's full-width norms needing Hkv == H
 * and H*dk == D, and that every dimension fits a u32 key. Returns a usage
 * error naming the offending value (messages speak of the keys' meaning,
 * e.g. "n_head (5) must divide n_embd"). */
moe_status moe_hparams_validate(const moe_hparams *hp, moe_err *err);

/* Reads the hyper-parameters of a parsed GGUF: general.architecture, then
 * `ARCH.*` keys with llama.cpp's defaults (head_count_kv = head_count,
 * key/value_length = D/H, rope.dimension_count = dk, qwen2moe expert widths
 * from feed_forward_length, ...), n_vocab from `ARCH.vocab_size` or the length
 * of tokenizer.ggml.tokens, and the optional-tensor fields (tied_output,
 * exp_probs_b, mla, layout) from the tensor list. Per-layer array values are
 * accepted when all layers agree. Borrows g; fills *hp on success. Fails with
 * a format error naming a missing or mistyped required key, unsupported for
 * an unknown arch or per-layer values that differ, and runs
 * moe_hparams_validate. */
moe_status moe_hparams_from_gguf(const moe_gguf *g, moe_hparams *hp, moe_err *err);

/* Looks a tensor up by name: false if absent, else its n_dims in *n_dims. */
typedef bool (*moe_tensor_lookup)(const void *ctx, const char *name, uint32_t *n_dims);

/* Sets the optional-tensor fields of hp (tied_output, exp_probs_b, layout, mla)
 * from a tensor list reached through find — for models whose tensors span
 * several files, where moe_hparams_from_gguf saw only the first. */
void moe_hparams_detect_variants(moe_hparams *hp, moe_tensor_lookup find, const void *ctx);

/* Writes general.architecture and the `ARCH.*` keys of hp (u32 counts, f32
 * floats, bool flags; arch-specific keys only for their arch; MOE_MLA_3D in
 * its head_count_kv = 1 form). Does not write general.name, general.file_type
 * or tokenizer keys. Validates hp first. */
moe_status moe_hparams_write(moe_gguf_writer *w, const moe_hparams *hp, moe_err *err);

/* ---- tensors --------------------------------------------------------------- */

typedef enum moe_tensor_role {
    MOE_T_TOKEN_EMBD = 0, MOE_T_OUTPUT_NORM, MOE_T_OUTPUT,
    MOE_T_ATTN_NORM, MOE_T_ATTN_Q, MOE_T_ATTN_K, MOE_T_ATTN_V, MOE_T_ATTN_OUT,
    MOE_T_ATTN_Q_BIAS, MOE_T_ATTN_K_BIAS, MOE_T_ATTN_V_BIAS,
    MOE_T_ATTN_Q_NORM, MOE_T_ATTN_K_NORM,
    MOE_T_ATTN_Q_A, MOE_T_ATTN_Q_A_NORM, MOE_T_ATTN_Q_B,
    MOE_T_ATTN_KV_A_MQA, MOE_T_ATTN_KV_A_NORM, MOE_T_ATTN_KV_B,
    MOE_T_ATTN_K_B, MOE_T_ATTN_V_B,
    MOE_T_FFN_NORM, MOE_T_FFN_GATE, MOE_T_FFN_DOWN, MOE_T_FFN_UP,
    MOE_T_FFN_GATE_INP, MOE_T_EXP_PROBS_B,
    MOE_T_FFN_GATE_EXPS, MOE_T_FFN_DOWN_EXPS, MOE_T_FFN_UP_EXPS,
    MOE_T_FFN_GATE_EXP, MOE_T_FFN_DOWN_EXP, MOE_T_FFN_UP_EXP, /* split layout, one expert */
    MOE_T_FFN_GATE_INP_SHEXP, MOE_T_FFN_GATE_SHEXP, MOE_T_FFN_DOWN_SHEXP, MOE_T_FFN_UP_SHEXP,
    MOE_T_ROLE_COUNT,
} moe_tensor_role;

/* How synthetic or initialised data for a tensor should look. */
typedef enum moe_tensor_init {
    MOE_INIT_WEIGHT = 0, /* random, std ~ 1/sqrt(ne[0]) */
    MOE_INIT_NORM,       /* ~1 */
    MOE_INIT_BIAS,       /* small, ~0 */
} moe_tensor_init;

typedef struct moe_tensor_role_info {
    const char *base;    /* "token_embd", "attn_q", "ffn_up_exps", "ffn_up" (split) */
    const char *suffix;  /* "weight" or "bias" */
    bool per_layer;      /* name is blk.N.<base>... */
    bool keep_f32;       /* llama.cpp keeps it F32 whatever the file type */
    moe_tensor_init init;
} moe_tensor_role_info;

/* Info of role r (< MOE_T_ROLE_COUNT). Static storage. */
const moe_tensor_role_info *moe_tensor_role_get(moe_tensor_role r);

typedef struct moe_tensor_spec {
    char name[MOE_GGUF_MAX_NAME];
    moe_tensor_role role;
    int32_t layer;      /* block index, -1 for token_embd/output_norm/output */
    int32_t expert;     /* split layout: the expert; -1 otherwise */
    uint32_t n_dims;
    int64_t ne[MOE_GGUF_MAX_DIMS]; /* ggml order, missing dims 1 */
    bool optional;      /* the arch's loaders accept files without it */
    bool keep_f32;      /* 1-D tensors and the router: F32 in every file type */
    moe_tensor_init init;
} moe_tensor_spec;

/* Lists the tensors a model with these hyper-parameters has, in file order
 * (see the top of this header), honouring hp->layout, hp->mla, tied_output and
 * exp_probs_b. On success *out is a malloc'd array of *n specs (the caller
 * frees it with free()). Validates hp first. */
moe_status moe_arch_tensors(const moe_hparams *hp, moe_tensor_spec **out, size_t *n,
                            moe_err *err);

/* Compares g's tensor table with the schema of hp: the same names, n_dims and
 * shapes; with check_order also the same order. Returns MOE_OK or a format
 * error naming the first difference: a missing tensor, an unexpected one, a
 * wrong shape ("blk.0.attn_q.weight: ne [256, 128] expected [256, 256]"), or
 * an out-of-order one. Borrows both. */
moe_status moe_arch_check_gguf(const moe_hparams *hp, const moe_gguf *g, bool check_order,
                               moe_err *err);

/* ---- names ------------------------------------------------------------------- */

/* The three routed-expert families of the split layout, and their stacked base
 * names: "ffn_gate" <-> "ffn_gate_exps" etc. */
#define MOE_EXPERT_FAMILIES 3
extern const char *const moe_expert_family[MOE_EXPERT_FAMILIES];     /* ffn_gate, ffn_down, ffn_up */
extern const char *const moe_expert_family_exps[MOE_EXPERT_FAMILIES]; /* ..._exps */

/* A parsed legacy per-expert name "blk.12.ffn_up.3.weight". */
typedef struct moe_split_name {
    int32_t layer;   /* 12 */
    int family;      /* index into moe_expert_family (2 = ffn_up) */
    int32_t expert;  /* 3 */
    char suffix[16]; /* "weight" */
} moe_split_name;

/* Parses a legacy per-expert tensor name: "blk." digits "." family "."
 * digits "." suffix, family one of moe_expert_family, numbers without sign or
 * leading zeros (except "0") and < 2^31, suffix non-empty, without '.' and
 * shorter than 16 bytes. Returns false (and leaves *out unspecified) for any
 * other name, e.g. "blk.1.ffn_up_exps.weight" or "blk.1.ffn_up.weight". */
bool moe_tensor_name_parse_split(const char *name, moe_split_name *out);

/* Block index of a "blk.N." name, or -1 for a name outside blocks. */
int32_t moe_tensor_name_layer(const char *name);

/* Writes "blk.L.<family>_exps.<suffix>" (stacked) or "blk.L.<family>.E.<suffix>"
 * (split) into buf (cap bytes), family one of moe_expert_family. Fails with a
 * usage error for an unknown family, a negative index or a name of
 * MOE_GGUF_MAX_NAME bytes or more (or longer than cap). */
moe_status moe_tensor_name_stacked(char *buf, size_t cap, int32_t layer, const char *family,
                                   const char *suffix, moe_err *err);
moe_status moe_tensor_name_split(char *buf, size_t cap, int32_t layer, const char *family,
                                 int32_t expert, const char *suffix, moe_err *err);

#endif
