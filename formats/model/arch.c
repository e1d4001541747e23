#include "formats/model/arch.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- the architecture table ---------------------------------------------------- */

/* Routing semantics per arch: ../shared/spec/model.md §2.2-2.7 and §2.14. */
static const moe_arch_info arch_table[MOE_ARCH_COUNT] = {
    [MOE_ARCH_LLAMA] = {.name = "llama", .rope = MOE_ROPE_NORM, .gating = MOE_GATING_SOFTMAX,
                        .norm_w = true},
    [MOE_ARCH_QWEN2MOE] = {.name = "qwen2moe", .rope = MOE_ROPE_NEOX,
                           .gating = MOE_GATING_SOFTMAX, .shexp = true, .shexp_gate = true,
                           .qkv_bias = true, .output_required = true,
                           .experts_required = true},
    [MOE_ARCH_QWEN3MOE] = {.name = "qwen3moe", .rope = MOE_ROPE_NEOX,
                           .gating = MOE_GATING_SOFTMAX, .norm_w = true,
                           .qk_norm = MOE_QK_NORM_HEAD, .experts_required = true},
    [MOE_ARCH_OLMOE] = {.name = "olmoe", .rope = MOE_ROPE_NEOX, .gating = MOE_GATING_SOFTMAX,
                        .qk_norm = MOE_QK_NORM_FULL, .output_required = true,
                        .experts_required = true},
    [MOE_ARCH_DEEPSEEK2] = {.name = "deepseek2", .rope = MOE_ROPE_NORM,
                            .gating = MOE_GATING_SOFTMAX, .norm_w_key = true, .scale_w = true,
                            .shexp = true, .mla = true, .output_required = true,
                            .experts_required = true},
};

const moe_arch_info *moe_arch_get(moe_arch a) {
    if ((unsigned)a >= MOE_ARCH_COUNT)
        return NULL;
    return &arch_table[a];
}

const char *moe_arch_name(moe_arch a) {
    const moe_arch_info *ai = moe_arch_get(a);
    return ai ? ai->name : "unknown";
}

bool moe_arch_from_name(const char *name, moe_arch *out) {
    for (int a = 0; a < MOE_ARCH_COUNT; a++) {
        if (strcmp(arch_table[a].name, name) == 0) {
            *out = (moe_arch)a;
            return true;
        }
    }
    return false;
}

void moe_hparams_defaults(moe_arch arch, moe_hparams *hp) {
    memset(hp, 0, sizeof(*hp));
    hp->arch = arch;
    const moe_arch_info *ai = moe_arch_get(arch);
    hp->gating = ai ? ai->gating : MOE_GATING_SOFTMAX;
    hp->expert_weights_norm = ai ? ai->norm_w : false;
    hp->expert_weights_scale = 1.0f;
    hp->rope_freq_base = 10000.0f;
    hp->rms_eps = 1e-5f;
    hp->layout = MOE_LAYOUT_STACKED;
    hp->mla = MOE_MLA_KV_B;
}

/* ---- the key table ------------------------------------------------------------- */

#define A_LLAMA (1u << MOE_ARCH_LLAMA)
#define A_QWEN2 (1u << MOE_ARCH_QWEN2MOE)
#define A_QWEN3 (1u << MOE_ARCH_QWEN3MOE)
#define A_OLMOE (1u << MOE_ARCH_OLMOE)
#define A_DS2 (1u << MOE_ARCH_DEEPSEEK2)
#define A_ALL (A_LLAMA | A_QWEN2 | A_QWEN3 | A_OLMOE | A_DS2)

typedef enum key_type { KT_U32, KT_F32, KT_BOOL, KT_GATING } key_type;

typedef struct key_def {
    const char *suffix; /* after "ARCH." */
    key_type type;
    size_t off;         /* field in moe_hparams */
    unsigned archs;
    bool required;      /* reading fails without it */
    bool per_layer;     /* may be stored as a per-layer array */
    bool write_nonzero; /* written only when non-zero */
} key_def;

#define HP(f) offsetof(moe_hparams, f)

/* Keys in the order we write them (the conformance files' order). Fields not
 * found keep the sentinel set before reading and are derived afterwards. */
static const key_def key_table[] = {
    {"context_length", KT_U32, HP(n_ctx_train), A_ALL, true, false, false},
    {"embedding_length", KT_U32, HP(n_embd), A_ALL, true, false, false},
    {"block_count", KT_U32, HP(n_layer), A_ALL, true, false, false},
    {"feed_forward_length", KT_U32, HP(n_ff), A_ALL, false, true, false},
    {"attention.head_count", KT_U32, HP(n_head), A_ALL, true, true, false},
    {"attention.head_count_kv", KT_U32, HP(n_head_kv), A_ALL, false, true, false},
    {"attention.layer_norm_rms_epsilon", KT_F32, HP(rms_eps), A_ALL, true, false, false},
    {"rope.freq_base", KT_F32, HP(rope_freq_base), A_ALL, false, false, false},
    {"expert_count", KT_U32, HP(n_expert), A_ALL, false, false, true},
    {"expert_used_count", KT_U32, HP(n_expert_used), A_ALL, false, false, true},
    {"leading_dense_block_count", KT_U32, HP(n_leading_dense), A_DS2, true, false, false},
    {"attention.q_lora_rank", KT_U32, HP(q_lora_rank), A_DS2, false, false, true},
    {"attention.kv_lora_rank", KT_U32, HP(kv_lora_rank), A_DS2, true, false, false},
    {"rope.dimension_count", KT_U32, HP(n_rot), A_ALL, false, false, false},
    {"attention.key_length", KT_U32, HP(head_dim_k), A_ALL, false, false, false},
    {"attention.value_length", KT_U32, HP(head_dim_v), A_ALL, false, false, false},
    {"expert_feed_forward_length", KT_U32, HP(n_ff_exp), A_QWEN2 | A_QWEN3 | A_DS2, false,
     false, false},
    {"expert_shared_feed_forward_length", KT_U32, HP(n_ff_shexp), A_QWEN2, false, false,
     false},
    {"expert_shared_count", KT_U32, HP(n_expert_shared), A_DS2, true, false, false},
    {"expert_weights_scale", KT_F32, HP(expert_weights_scale), A_DS2, true, false, false},
    {"expert_weights_norm", KT_BOOL, HP(expert_weights_norm), A_DS2, false, false, false},
    {"expert_gating_func", KT_GATING, HP(gating), A_DS2, false, false, false},
    {"rope.scaling.yarn_log_multiplier", KT_F32, HP(yarn_log_mul), A_DS2, false, false, false},
    {"vocab_size", KT_U32, HP(n_vocab), A_ALL, false, false, false},
};
#define N_KEYS (sizeof(key_table) / sizeof(key_table[0]))

static const char *const rope_scaling_names[] = {
    [MOE_ROPE_SCALING_NONE] = "none",
    [MOE_ROPE_SCALING_LINEAR] = "linear",
    [MOE_ROPE_SCALING_YARN] = "yarn",
    [MOE_ROPE_SCALING_LONGROPE] = "longrope",
};

static int64_t *field_i64(moe_hparams *hp, size_t off) { return (int64_t *)((char *)hp + off); }
static float *field_f32(moe_hparams *hp, size_t off) { return (float *)((char *)hp + off); }
static bool *field_bool(moe_hparams *hp, size_t off) { return (bool *)((char *)hp + off); }
static int64_t cfield_i64(const moe_hparams *hp, size_t off) {
    return *(const int64_t *)((const char *)hp + off);
}
static float cfield_f32(const moe_hparams *hp, size_t off) {
    return *(const float *)((const char *)hp + off);
}
static bool cfield_bool(const moe_hparams *hp, size_t off) {
    return *(const bool *)((const char *)hp + off);
}

static void key_name(char *buf, size_t cap, moe_arch a, const char *suffix) {
    snprintf(buf, cap, "%s.%s", moe_arch_name(a), suffix);
}

/* ---- validation ----------------------------------------------------------------- */

#define MAX_EXPERTS MOE_MAX_EXPERTS
#define MAX_LAYERS 512
#define MAX_DIM ((int64_t)1 << 31) /* counts are u32 keys; products stay far below int64 */

static moe_status check_dim(const char *what, int64_t v, int64_t min, moe_err *err) {
    MOE_FAIL_IF(v < min || v >= MAX_DIM, err, MOE_ERR_USAGE,
                "%s (%lld) must be in [%lld, %lld]", what, (long long)v, (long long)min,
                (long long)(MAX_DIM - 1));
    return MOE_OK;
}

static moe_status validate_attention(const moe_hparams *hp, const moe_arch_info *ai,
                                     moe_err *err) {
    MOE_TRY(check_dim("n_head", hp->n_head, 1, err));
    MOE_TRY(check_dim("n_head_kv", hp->n_head_kv, 1, err));
    MOE_TRY(check_dim("head_dim_k", hp->head_dim_k, 1, err));
    MOE_TRY(check_dim("head_dim_v", hp->head_dim_v, 1, err));
    MOE_TRY(check_dim("n_rot", hp->n_rot, 0, err));
    MOE_FAIL_IF(hp->n_head % hp->n_head_kv != 0, err, MOE_ERR_USAGE,
                "n_head_kv (%lld) must divide n_head (%lld)", (long long)hp->n_head_kv,
                (long long)hp->n_head);
    MOE_FAIL_IF(hp->n_rot % 2 != 0 || hp->n_rot > hp->head_dim_k, err, MOE_ERR_USAGE,
                "rope dimension count (%lld) must be even and at most the head size %lld",
                (long long)hp->n_rot, (long long)hp->head_dim_k);
    /* llama.cpp's llama loader insists on full-width rope ("invalid n_rot") */
    MOE_FAIL_IF(hp->arch == MOE_ARCH_LLAMA && hp->n_rot != hp->head_dim_k, err, MOE_ERR_USAGE,
                "llama: rope dimension count (%lld) must equal the head size (%lld)",
                (long long)hp->n_rot, (long long)hp->head_dim_k);
    if (ai->qk_norm == MOE_QK_NORM_FULL) {
        /* olmoe's q/k norms are declared [n_embd]: only consistent without GQA
         * and with H*dk == D */
        MOE_FAIL_IF(hp->n_head_kv != hp->n_head ||
                        hp->n_head * hp->head_dim_k != hp->n_embd,
                    err, MOE_ERR_USAGE,
                    "%s needs n_head_kv == n_head and n_head*head_dim == n_embd "
                    "(full-width q/k norms)", ai->name);
    }
    if (ai->mla) {
        MOE_TRY(check_dim("kv_lora_rank", hp->kv_lora_rank, 1, err));
        MOE_TRY(check_dim("q_lora_rank", hp->q_lora_rank, 0, err));
        MOE_FAIL_IF(hp->n_rot < 2 || moe_hp_qk_nope(hp) < 1, err, MOE_ERR_USAGE,
                    "deepseek2: key_length (%lld) must exceed the rope dimension count "
                    "(%lld), which must be at least 2", (long long)hp->head_dim_k,
                    (long long)hp->n_rot);
        MOE_FAIL_IF(hp->n_head_kv != hp->n_head, err, MOE_ERR_USAGE,
                    "deepseek2: n_head_kv (%lld) must equal n_head (%lld)",
                    (long long)hp->n_head_kv, (long long)hp->n_head);
    } else {
        MOE_FAIL_IF(hp->q_lora_rank != 0 || hp->kv_lora_rank != 0 || hp->mla != MOE_MLA_KV_B,
                    err, MOE_ERR_USAGE, "%s has no latent attention (q/kv LoRA ranks)",
                    ai->name);
    }
    return MOE_OK;
}

static moe_status validate_ffn(const moe_hparams *hp, const moe_arch_info *ai, moe_err *err) {
    MOE_FAIL_IF(hp->n_expert < 0 || hp->n_expert > MAX_EXPERTS, err, MOE_ERR_USAGE,
                "n_expert (%lld) must be in [0, %d]", (long long)hp->n_expert, MAX_EXPERTS);
    MOE_FAIL_IF(ai->experts_required && hp->n_expert == 0, err, MOE_ERR_USAGE,
                "%s needs experts (n_expert > 0)", ai->name);
    MOE_FAIL_IF(hp->n_expert_used < 0 || hp->n_expert_used > hp->n_expert, err, MOE_ERR_USAGE,
                "n_expert_used (%lld) must be at most n_expert (%lld)",
                (long long)hp->n_expert_used, (long long)hp->n_expert);
    MOE_FAIL_IF(hp->n_expert > 0 && hp->n_expert_used == 0, err, MOE_ERR_USAGE,
                "n_expert_used must be > 0 when there are experts");
    MOE_FAIL_IF(hp->n_leading_dense < 0 || hp->n_leading_dense > hp->n_layer, err,
                MOE_ERR_USAGE, "n_dense_lead (%lld) must be in [0, n_layer = %lld]",
                (long long)hp->n_leading_dense, (long long)hp->n_layer);
    MOE_FAIL_IF(hp->n_leading_dense > 0 && hp->arch != MOE_ARCH_DEEPSEEK2, err, MOE_ERR_USAGE,
                "%s has no leading dense blocks", ai->name);
    bool any_dense = hp->n_expert == 0 || hp->n_leading_dense > 0;
    MOE_TRY(check_dim("n_ff", hp->n_ff, any_dense ? 1 : 0, err));
    MOE_TRY(check_dim("n_ff_exp", hp->n_ff_exp, hp->n_expert > 0 ? 1 : 0, err));
    MOE_TRY(check_dim("n_ff_shexp", hp->n_ff_shexp, 0, err));
    MOE_TRY(check_dim("n_expert_shared", hp->n_expert_shared, 0, err));
    /* llama and olmoe have one width key: experts are feed_forward_length wide */
    bool one_width = hp->arch == MOE_ARCH_LLAMA || hp->arch == MOE_ARCH_OLMOE;
    MOE_FAIL_IF(one_width && hp->n_expert > 0 && hp->n_ff_exp != hp->n_ff, err, MOE_ERR_USAGE,
                "%s: the expert width n_ff_exp (%lld) must equal n_ff (%lld)", ai->name,
                (long long)hp->n_ff_exp, (long long)hp->n_ff);
    if (hp->arch == MOE_ARCH_QWEN2MOE)
        MOE_FAIL_IF(hp->n_ff_shexp < 1 || hp->n_expert_shared != 1, err, MOE_ERR_USAGE,
                    "qwen2moe needs one shared expert (n_ff_shexp > 0)");
    else if (hp->arch == MOE_ARCH_DEEPSEEK2)
        MOE_FAIL_IF(hp->n_ff_shexp != hp->n_ff_exp * hp->n_expert_shared, err, MOE_ERR_USAGE,
                    "deepseek2: n_ff_shexp (%lld) must be n_ff_exp * n_expert_shared (%lld)",
                    (long long)hp->n_ff_shexp, (long long)(hp->n_ff_exp * hp->n_expert_shared));
    else
        MOE_FAIL_IF(hp->n_ff_shexp != 0 || hp->n_expert_shared != 0, err, MOE_ERR_USAGE,
                    "%s has no shared experts", ai->name);
    MOE_FAIL_IF(hp->exp_probs_b && hp->n_expert == 0, err, MOE_ERR_USAGE,
                "exp_probs_b needs experts");
    MOE_FAIL_IF(hp->gating < MOE_GATING_SOFTMAX || hp->gating > MOE_GATING_SQRT_SOFTPLUS, err,
                MOE_ERR_USAGE, "expert gating function %d is not one of 1..4", (int)hp->gating);
    return MOE_OK;
}

moe_status moe_hparams_validate(const moe_hparams *hp, moe_err *err) {
    const moe_arch_info *ai = moe_arch_get(hp->arch);
    MOE_FAIL_IF(!ai, err, MOE_ERR_USAGE, "unknown architecture id %d", (int)hp->arch);
    MOE_TRY(check_dim("n_vocab", hp->n_vocab, 1, err));
    MOE_TRY(check_dim("n_ctx_train", hp->n_ctx_train, 1, err));
    MOE_TRY(check_dim("n_embd", hp->n_embd, 1, err));
    MOE_FAIL_IF(hp->n_layer < 1 || hp->n_layer > MAX_LAYERS, err, MOE_ERR_USAGE,
                "n_layer (%lld) must be in [1, %d]", (long long)hp->n_layer, MAX_LAYERS);
    MOE_TRY(validate_attention(hp, ai, err));
    MOE_TRY(validate_ffn(hp, ai, err));
    MOE_FAIL_IF(!(hp->rms_eps > 0) || !isfinite(hp->rms_eps), err, MOE_ERR_USAGE,
                "rms epsilon must be positive and finite");
    MOE_FAIL_IF(!(hp->rope_freq_base > 0) || !isfinite(hp->rope_freq_base), err,
                MOE_ERR_USAGE, "rope base must be positive and finite");
    MOE_FAIL_IF(!isfinite(hp->expert_weights_scale) || !isfinite(hp->yarn_log_mul) ||
                    !isfinite(hp->rope_scaling_factor),
                err, MOE_ERR_USAGE, "expert scale and rope scaling values must be finite");
    MOE_FAIL_IF(hp->tied_output && ai->output_required, err, MOE_ERR_USAGE,
                "%s needs output.weight (no tied output)", ai->name);
    MOE_FAIL_IF(hp->layout != MOE_LAYOUT_STACKED && hp->layout != MOE_LAYOUT_SPLIT, err,
                MOE_ERR_USAGE, "unknown expert layout %d", (int)hp->layout);
    MOE_FAIL_IF((unsigned)hp->mla > MOE_MLA_3D, err, MOE_ERR_USAGE, "unknown MLA layout %d",
                (int)hp->mla);
    MOE_FAIL_IF((unsigned)hp->rope_scaling > MOE_ROPE_SCALING_LONGROPE, err, MOE_ERR_USAGE,
                "unknown rope scaling %d", (int)hp->rope_scaling);
    return MOE_OK;
}

/* ---- reading -------------------------------------------------------------------- */

/* Reads an integer key that may be a per-layer array whose values agree.
 * *found = false (and MOE_OK) when the key is absent. */
static moe_status read_int_key(const moe_gguf *g, const char *key, bool per_layer,
                               int64_t *out, bool *found, moe_err *err) {
    int64_t ki = moe_gguf_find_key(g, key);
    *found = ki >= 0;
    if (ki < 0)
        return MOE_OK;
    const moe_gguf_kv *kv = &g->kv[ki];
    if (kv->type != MOE_GGUF_ARRAY) {
        MOE_TRY(moe_gguf_kv_int(kv, out, err));
    } else {
        MOE_FAIL_IF(!per_layer || kv->count == 0, err, MOE_ERR_FORMAT,
                    "key '%s' must be a single number", key);
        int64_t first = 0;
        MOE_TRY(moe_gguf_arr_int(kv, 0, &first, err));
        for (uint64_t i = 1; i < kv->count; i++) {
            int64_t v = 0;
            MOE_TRY(moe_gguf_arr_int(kv, i, &v, err));
            MOE_FAIL_IF(v != first, err, MOE_ERR_UNSUPPORTED,
                        "key '%s': per-layer values differ (%lld at layer 0, %lld at layer %llu)",
                        key, (long long)first, (long long)v, (unsigned long long)i);
        }
        *out = first;
    }
    MOE_FAIL_IF(*out < 0 || *out >= MAX_DIM, err, MOE_ERR_FORMAT,
                "key '%s' value %lld is out of range", key, (long long)*out);
    return MOE_OK;
}

static moe_status read_key(const moe_gguf *g, moe_arch arch, const key_def *kd,
                           moe_hparams *hp, moe_err *err) {
    char key[128];
    key_name(key, sizeof(key), arch, kd->suffix);
    int64_t ki = moe_gguf_find_key(g, key);
    if (ki < 0) {
        MOE_FAIL_IF(kd->required, err, MOE_ERR_FORMAT, "missing key '%s'", key);
        return MOE_OK;
    }
    const moe_gguf_kv *kv = &g->kv[ki];
    bool found = false;
    int64_t iv = 0;
    double fv = 0;
    switch (kd->type) {
    case KT_U32:
        return read_int_key(g, key, kd->per_layer, field_i64(hp, kd->off), &found, err);
    case KT_F32:
        MOE_TRY(moe_gguf_kv_float(kv, &fv, err));
        *field_f32(hp, kd->off) = (float)fv;
        return MOE_OK;
    case KT_BOOL:
        return moe_gguf_kv_bool(kv, field_bool(hp, kd->off), err);
    case KT_GATING:
        MOE_TRY(read_int_key(g, key, false, &iv, &found, err));
        /* 0 (NONE) means "not given": the arch default stays */
        if (iv != 0)
            hp->gating = (moe_gating)iv;
        return MOE_OK;
    }
    return moe_fail(err, MOE_ERR_INTERNAL, "bad key type");
}

static moe_status read_rope_scaling(const moe_gguf *g, moe_hparams *hp, moe_err *err) {
    char key[128];
    key_name(key, sizeof(key), hp->arch, "rope.scaling.type");
    if (moe_gguf_find_key(g, key) >= 0) {
        const char *s = NULL;
        MOE_TRY(moe_gguf_get_str(g, key, &s, err));
        hp->rope_scaling = MOE_ROPE_SCALING_UNSET;
        for (int i = MOE_ROPE_SCALING_NONE; i <= MOE_ROPE_SCALING_LONGROPE; i++)
            if (strcmp(s, rope_scaling_names[i]) == 0)
                hp->rope_scaling = (moe_rope_scaling)i;
        MOE_FAIL_IF(hp->rope_scaling == MOE_ROPE_SCALING_UNSET, err, MOE_ERR_UNSUPPORTED,
                    "key '%s': unknown rope scaling type '%s'", key, s);
    }
    double f = 0;
    key_name(key, sizeof(key), hp->arch, "rope.scaling.factor");
    if (moe_gguf_find_key(g, key) < 0) /* the old key, still read by both loaders */
        key_name(key, sizeof(key), hp->arch, "rope.scale_linear");
    if (moe_gguf_find_key(g, key) >= 0) {
        MOE_TRY(moe_gguf_get_float(g, key, &f, err));
        hp->rope_scaling_factor = (float)f;
    }
    bool found = false;
    key_name(key, sizeof(key), hp->arch, "rope.scaling.original_context_length");
    return read_int_key(g, key, false, &hp->n_ctx_orig, &found, err);
}

static bool has_tensor(moe_tensor_lookup find, const void *ctx, int64_t layer, const char *rest,
                       uint32_t *n_dims) {
    char name[MOE_GGUF_MAX_NAME + 16];
    snprintf(name, sizeof(name), "blk.%d.%s", (int)layer, rest);
    uint32_t nd = 0;
    bool found = find(ctx, name, &nd);
    if (n_dims)
        *n_dims = nd;
    return found;
}

/* The optional-tensor fields come from the tensor list: the keys do not say. */
void moe_hparams_detect_variants(moe_hparams *hp, moe_tensor_lookup find, const void *ctx) {
    uint32_t nd = 0;
    hp->tied_output = !find(ctx, "output.weight", &nd);
    int64_t il = hp->n_leading_dense; /* first MoE block */
    if (hp->n_expert > 0 && il < hp->n_layer) {
        if (!has_tensor(find, ctx, il, "ffn_up_exps.weight", NULL) &&
            has_tensor(find, ctx, il, "ffn_up.0.weight", NULL))
            hp->layout = MOE_LAYOUT_SPLIT;
        hp->exp_probs_b = has_tensor(find, ctx, il, "exp_probs_b.bias", NULL);
    }
    if (hp->arch != MOE_ARCH_DEEPSEEK2)
        return;
    bool kv_b = has_tensor(find, ctx, 0, "attn_kv_b.weight", NULL);
    uint32_t kb_dims = 0;
    if (!has_tensor(find, ctx, 0, "attn_k_b.weight", &kb_dims))
        hp->mla = MOE_MLA_KV_B;
    else if (kb_dims == 3)
        hp->mla = MOE_MLA_3D;
    else
        hp->mla = kv_b ? MOE_MLA_KV_B_PLUS_2D : MOE_MLA_2D;
}

static bool gguf_lookup(const void *ctx, const char *name, uint32_t *n_dims) {
    const moe_gguf *g = ctx;
    int64_t i = moe_gguf_find_tensor(g, name);
    if (i >= 0)
        *n_dims = g->tensors[i].n_dims;
    return i >= 0;
}

static void detect_tensor_variants(const moe_gguf *g, moe_hparams *hp) {
    moe_hparams_detect_variants(hp, gguf_lookup, g);
}

/* Mainline's newer MLA files store head_count_kv = 1 and the latent sizes in
 * key/value_length; the per-head sizes move to key/value_length_mla
 * (model.md §2.7, defaults 192/128 as ik_llama.cpp uses). */
static moe_status read_mla_3d_keys(const moe_gguf *g, moe_hparams *hp, moe_err *err) {
    char key[128];
    bool found = false;
    int64_t v = 192;
    key_name(key, sizeof(key), hp->arch, "attention.key_length_mla");
    MOE_TRY(read_int_key(g, key, false, &v, &found, err));
    hp->head_dim_k = v;
    v = 128;
    key_name(key, sizeof(key), hp->arch, "attention.value_length_mla");
    MOE_TRY(read_int_key(g, key, false, &v, &found, err));
    hp->head_dim_v = v;
    hp->n_head_kv = hp->n_head;
    hp->mla = MOE_MLA_3D;
    return MOE_OK;
}

static moe_status read_vocab_size(const moe_gguf *g, moe_hparams *hp, moe_err *err) {
    if (hp->n_vocab >= 0)
        return MOE_OK;
    int64_t ki = moe_gguf_find_key(g, "tokenizer.ggml.tokens");
    MOE_FAIL_IF(ki < 0, err, MOE_ERR_FORMAT,
                "missing key '%s.vocab_size' and no tokenizer.ggml.tokens",
                moe_arch_name(hp->arch));
    const moe_gguf_kv *kv = &g->kv[ki];
    MOE_FAIL_IF(kv->type != MOE_GGUF_ARRAY || kv->elem_type != MOE_GGUF_STRING, err,
                MOE_ERR_FORMAT, "tokenizer.ggml.tokens is not a string array");
    MOE_FAIL_IF(kv->count >= (uint64_t)MAX_DIM, err, MOE_ERR_FORMAT,
                "tokenizer.ggml.tokens has too many entries");
    hp->n_vocab = (int64_t)kv->count;
    return MOE_OK;
}

/* llama.cpp's defaults for what the keys did not say. */
static void derive_defaults(moe_hparams *hp) {
    if (hp->n_head_kv < 0)
        hp->n_head_kv = hp->n_head;
    int64_t hd = hp->n_head > 0 ? hp->n_embd / hp->n_head : 0;
    if (hp->head_dim_k < 0)
        hp->head_dim_k = hd;
    if (hp->head_dim_v < 0)
        hp->head_dim_v = hd;
    if (hp->n_rot < 0)
        hp->n_rot = hp->head_dim_k;
    switch (hp->arch) {
    case MOE_ARCH_QWEN2MOE:
        if (hp->n_ff_exp < 0)
            hp->n_ff_exp = hp->n_expert_used > 0 ? hp->n_ff / hp->n_expert_used : 0;
        if (hp->n_ff_shexp < 0)
            hp->n_ff_shexp = hp->n_ff;
        hp->n_expert_shared = 1;
        break;
    case MOE_ARCH_DEEPSEEK2:
        hp->n_ff_shexp = hp->n_ff_exp * hp->n_expert_shared;
        break;
    default:
        if (hp->n_ff_exp < 0)
            hp->n_ff_exp = hp->n_expert > 0 ? hp->n_ff : 0;
        break;
    }
    if (hp->n_ff_shexp < 0)
        hp->n_ff_shexp = 0;
}

moe_status moe_hparams_from_gguf(const moe_gguf *g, moe_hparams *hp, moe_err *err) {
    const char *arch_name = NULL;
    MOE_TRY(moe_gguf_get_str(g, "general.architecture", &arch_name, err));
    moe_arch arch;
    MOE_FAIL_IF(!moe_arch_from_name(arch_name, &arch), err, MOE_ERR_UNSUPPORTED,
                "architecture '%s' is not supported (llama, qwen2moe, qwen3moe, olmoe, "
                "deepseek2 are)", arch_name);
    moe_hparams h;
    moe_hparams_defaults(arch, &h);
    /* sentinels: derived from other values when the key is absent */
    h.n_head_kv = h.head_dim_k = h.head_dim_v = h.n_rot = h.n_vocab = -1;
    h.n_ff_exp = h.n_ff_shexp = -1;
    for (size_t i = 0; i < N_KEYS; i++)
        if (key_table[i].archs & (1u << arch))
            MOE_TRY(read_key(g, arch, &key_table[i], &h, err));
    MOE_TRY(read_rope_scaling(g, &h, err));
    MOE_TRY(read_vocab_size(g, &h, err));
    if (arch == MOE_ARCH_DEEPSEEK2 && h.n_head_kv == 1 && h.n_head > 1)
        MOE_TRY(read_mla_3d_keys(g, &h, err));
    derive_defaults(&h);
    detect_tensor_variants(g, &h);
    moe_status st = moe_hparams_validate(&h, err);
    if (st != MOE_OK) {
        /* the values came from the file: a bad combination is a format error */
        if (err)
            err->code = MOE_ERR_FORMAT;
        return MOE_ERR_FORMAT;
    }
    *hp = h;
    return MOE_OK;
}

/* ---- writing -------------------------------------------------------------------- */

static moe_status write_u32(moe_gguf_writer *w, moe_arch a, const char *suffix, int64_t v,
                            moe_err *err) {
    char key[128];
    key_name(key, sizeof(key), a, suffix);
    return moe_gguf_writer_set_u32(w, key, (uint32_t)v, err);
}

static moe_status write_key(moe_gguf_writer *w, const moe_hparams *hp, const key_def *kd,
                            moe_err *err) {
    char key[128];
    key_name(key, sizeof(key), hp->arch, kd->suffix);
    int64_t iv = 0;
    switch (kd->type) {
    case KT_U32:
        iv = cfield_i64(hp, kd->off);
        if (kd->write_nonzero && iv == 0)
            return MOE_OK;
        if (hp->mla == MOE_MLA_3D) {
            if (kd->off == HP(n_head_kv))
                iv = 1;
            else if (kd->off == HP(head_dim_k))
                iv = hp->kv_lora_rank + hp->n_rot;
            else if (kd->off == HP(head_dim_v))
                iv = hp->kv_lora_rank;
        }
        return moe_gguf_writer_set_u32(w, key, (uint32_t)iv, err);
    case KT_F32:
        return moe_gguf_writer_set_f32(w, key, cfield_f32(hp, kd->off), err);
    case KT_BOOL:
        return moe_gguf_writer_set_bool(w, key, cfield_bool(hp, kd->off), err);
    case KT_GATING:
        return moe_gguf_writer_set_u32(w, key, (uint32_t)hp->gating, err);
    }
    return moe_fail(err, MOE_ERR_INTERNAL, "bad key type");
}

moe_status moe_hparams_write(moe_gguf_writer *w, const moe_hparams *hp, moe_err *err) {
    MOE_TRY(moe_hparams_validate(hp, err));
    MOE_TRY(moe_gguf_writer_set_str(w, "general.architecture", moe_arch_name(hp->arch), err));
    for (size_t i = 0; i < N_KEYS; i++)
        if (key_table[i].archs & (1u << hp->arch))
            MOE_TRY(write_key(w, hp, &key_table[i], err));
    if (hp->mla == MOE_MLA_3D) {
        MOE_TRY(write_u32(w, hp->arch, "attention.key_length_mla", hp->head_dim_k, err));
        MOE_TRY(write_u32(w, hp->arch, "attention.value_length_mla", hp->head_dim_v, err));
    }
    char key[128];
    if (hp->rope_scaling != MOE_ROPE_SCALING_UNSET) {
        key_name(key, sizeof(key), hp->arch, "rope.scaling.type");
        MOE_TRY(moe_gguf_writer_set_str(w, key, rope_scaling_names[hp->rope_scaling], err));
    }
    if (hp->rope_scaling_factor != 0) {
        key_name(key, sizeof(key), hp->arch, "rope.scaling.factor");
        MOE_TRY(moe_gguf_writer_set_f32(w, key, hp->rope_scaling_factor, err));
    }
    if (hp->n_ctx_orig > 0)
        MOE_TRY(write_u32(w, hp->arch, "rope.scaling.original_context_length", hp->n_ctx_orig,
                          err));
    return MOE_OK;
}

/* ---- tensor roles ----------------------------------------------------------------- */

#define ROLE(r, base_, suffix_, layer_, f32_, init_)                                 \
    [r] = {.base = base_, .suffix = suffix_, .per_layer = layer_, .keep_f32 = f32_, \
           .init = init_}
#define W MOE_INIT_WEIGHT
#define N MOE_INIT_NORM
#define B MOE_INIT_BIAS

/* Name parts as in llama.cpp's LLM_TENSOR_NAMES; keep_f32 as its converter and
 * quantizer treat them (model.md §1.10, quant.md §4.3). */
static const moe_tensor_role_info role_table[MOE_T_ROLE_COUNT] = {
    ROLE(MOE_T_TOKEN_EMBD, "token_embd", "weight", false, false, W),
    ROLE(MOE_T_OUTPUT_NORM, "output_norm", "weight", false, true, N),
    ROLE(MOE_T_OUTPUT, "output", "weight", false, false, W),
    ROLE(MOE_T_ATTN_NORM, "attn_norm", "weight", true, true, N),
    ROLE(MOE_T_ATTN_Q, "attn_q", "weight", true, false, W),
    ROLE(MOE_T_ATTN_K, "attn_k", "weight", true, false, W),
    ROLE(MOE_T_ATTN_V, "attn_v", "weight", true, false, W),
    ROLE(MOE_T_ATTN_OUT, "attn_output", "weight", true, false, W),
    ROLE(MOE_T_ATTN_Q_BIAS, "attn_q", "bias", true, true, B),
    ROLE(MOE_T_ATTN_K_BIAS, "attn_k", "bias", true, true, B),
    ROLE(MOE_T_ATTN_V_BIAS, "attn_v", "bias", true, true, B),
    ROLE(MOE_T_ATTN_Q_NORM, "attn_q_norm", "weight", true, true, N),
    ROLE(MOE_T_ATTN_K_NORM, "attn_k_norm", "weight", true, true, N),
    ROLE(MOE_T_ATTN_Q_A, "attn_q_a", "weight", true, false, W),
    ROLE(MOE_T_ATTN_Q_A_NORM, "attn_q_a_norm", "weight", true, true, N),
    ROLE(MOE_T_ATTN_Q_B, "attn_q_b", "weight", true, false, W),
    ROLE(MOE_T_ATTN_KV_A_MQA, "attn_kv_a_mqa", "weight", true, false, W),
    ROLE(MOE_T_ATTN_KV_A_NORM, "attn_kv_a_norm", "weight", true, true, N),
    ROLE(MOE_T_ATTN_KV_B, "attn_kv_b", "weight", true, false, W),
    ROLE(MOE_T_ATTN_K_B, "attn_k_b", "weight", true, false, W),
    ROLE(MOE_T_ATTN_V_B, "attn_v_b", "weight", true, false, W),
    ROLE(MOE_T_FFN_NORM, "ffn_norm", "weight", true, true, N),
    ROLE(MOE_T_FFN_GATE, "ffn_gate", "weight", true, false, W),
    ROLE(MOE_T_FFN_DOWN, "ffn_down", "weight", true, false, W),
    ROLE(MOE_T_FFN_UP, "ffn_up", "weight", true, false, W),
    ROLE(MOE_T_FFN_GATE_INP, "ffn_gate_inp", "weight", true, true, W),
    ROLE(MOE_T_EXP_PROBS_B, "exp_probs_b", "bias", true, true, B),
    ROLE(MOE_T_FFN_GATE_EXPS, "ffn_gate_exps", "weight", true, false, W),
    ROLE(MOE_T_FFN_DOWN_EXPS, "ffn_down_exps", "weight", true, false, W),
    ROLE(MOE_T_FFN_UP_EXPS, "ffn_up_exps", "weight", true, false, W),
    ROLE(MOE_T_FFN_GATE_EXP, "ffn_gate", "weight", true, false, W),
    ROLE(MOE_T_FFN_DOWN_EXP, "ffn_down", "weight", true, false, W),
    ROLE(MOE_T_FFN_UP_EXP, "ffn_up", "weight", true, false, W),
    ROLE(MOE_T_FFN_GATE_INP_SHEXP, "ffn_gate_inp_shexp", "weight", true, true, W),
    ROLE(MOE_T_FFN_GATE_SHEXP, "ffn_gate_shexp", "weight", true, false, W),
    ROLE(MOE_T_FFN_DOWN_SHEXP, "ffn_down_shexp", "weight", true, false, W),
    ROLE(MOE_T_FFN_UP_SHEXP, "ffn_up_shexp", "weight", true, false, W),
};
#undef W
#undef N
#undef B

const moe_tensor_role_info *moe_tensor_role_get(moe_tensor_role r) {
    if ((unsigned)r >= MOE_T_ROLE_COUNT)
        return NULL;
    return &role_table[r];
}

/* ---- per-arch block contents ------------------------------------------------------ */

/* An entry is present in a block when all its condition bits hold there. */
enum {
    C_MOE = 1u << 0,      /* block has routed experts */
    C_DENSE = 1u << 1,    /* block has a dense FFN */
    C_QLORA = 1u << 2,    /* q_lora_rank > 0 */
    C_NO_QLORA = 1u << 3, /* plain attn_q (DeepSeek-V2-Lite) */
    C_KV_B = 1u << 4,     /* MLA layout has attn_kv_b */
    C_KB_VB = 1u << 5,    /* MLA layout has attn_k_b/attn_v_b */
    C_PROBS_B = 1u << 6,  /* hp->exp_probs_b */
    C_SHEXP = 1u << 7,    /* MoE block with shared experts */
};

typedef struct block_entry {
    moe_tensor_role role;
    unsigned cond;
    bool optional; /* loaders accept files without it */
} block_entry;

/* Per-block order as llama.cpp's converters write it (the conformance files). */
static const block_entry block_llama[] = {
    {MOE_T_ATTN_NORM, 0, false},       {MOE_T_ATTN_Q, 0, false},
    {MOE_T_ATTN_K, 0, false},          {MOE_T_ATTN_V, 0, false},
    {MOE_T_ATTN_OUT, 0, false},        {MOE_T_FFN_NORM, 0, false},
    {MOE_T_FFN_GATE_INP, C_MOE, false}, {MOE_T_FFN_GATE_EXPS, C_MOE, false},
    {MOE_T_FFN_DOWN_EXPS, C_MOE, false}, {MOE_T_FFN_UP_EXPS, C_MOE, false},
    {MOE_T_FFN_GATE, C_DENSE, false},  {MOE_T_FFN_DOWN, C_DENSE, false},
    {MOE_T_FFN_UP, C_DENSE, false},
};
static const block_entry block_qwen2moe[] = {
    {MOE_T_ATTN_NORM, 0, false},       {MOE_T_ATTN_Q, 0, false},
    {MOE_T_ATTN_K, 0, false},          {MOE_T_ATTN_V, 0, false},
    {MOE_T_ATTN_OUT, 0, false},        {MOE_T_ATTN_Q_BIAS, 0, false},
    {MOE_T_ATTN_K_BIAS, 0, false},     {MOE_T_ATTN_V_BIAS, 0, false},
    {MOE_T_FFN_NORM, 0, false},        {MOE_T_FFN_GATE_INP, C_MOE, false},
    {MOE_T_FFN_GATE_EXPS, C_MOE, false}, {MOE_T_FFN_DOWN_EXPS, C_MOE, false},
    {MOE_T_FFN_UP_EXPS, C_MOE, false}, {MOE_T_FFN_GATE_INP_SHEXP, C_SHEXP, false},
    {MOE_T_FFN_GATE_SHEXP, C_SHEXP, false}, {MOE_T_FFN_DOWN_SHEXP, C_SHEXP, false},
    {MOE_T_FFN_UP_SHEXP, C_SHEXP, false},
};
/* olmoe and qwen3moe differ only in the width of the q/k norms (shape code) */
static const block_entry block_qknorm[] = {
    {MOE_T_ATTN_NORM, 0, false},       {MOE_T_ATTN_Q, 0, false},
    {MOE_T_ATTN_K, 0, false},          {MOE_T_ATTN_V, 0, false},
    {MOE_T_ATTN_OUT, 0, false},        {MOE_T_ATTN_Q_NORM, 0, false},
    {MOE_T_ATTN_K_NORM, 0, false},     {MOE_T_FFN_NORM, 0, false},
    {MOE_T_FFN_GATE_INP, C_MOE, false}, {MOE_T_FFN_GATE_EXPS, C_MOE, false},
    {MOE_T_FFN_DOWN_EXPS, C_MOE, false}, {MOE_T_FFN_UP_EXPS, C_MOE, false},
};
/* Where ik's attn_k_b/attn_v_b sit is not pinned by any file we have; we put
 * them in attn_kv_b's place. */
static const block_entry block_deepseek2[] = {
    {MOE_T_ATTN_NORM, 0, false},
    {MOE_T_ATTN_Q_A_NORM, C_QLORA, false},
    {MOE_T_ATTN_KV_A_NORM, 0, false},
    {MOE_T_ATTN_Q_A, C_QLORA, false},
    {MOE_T_ATTN_Q_B, C_QLORA, false},
    {MOE_T_ATTN_Q, C_NO_QLORA, false},
    {MOE_T_ATTN_KV_A_MQA, 0, false},
    {MOE_T_ATTN_KV_B, C_KV_B, false},
    {MOE_T_ATTN_K_B, C_KB_VB, true},
    {MOE_T_ATTN_V_B, C_KB_VB, true},
    {MOE_T_ATTN_OUT, 0, false},
    {MOE_T_FFN_NORM, 0, false},
    {MOE_T_FFN_GATE, C_DENSE, false},
    {MOE_T_FFN_DOWN, C_DENSE, false},
    {MOE_T_FFN_UP, C_DENSE, false},
    {MOE_T_FFN_GATE_INP, C_MOE, false},
    {MOE_T_EXP_PROBS_B, C_MOE | C_PROBS_B, true},
    {MOE_T_FFN_GATE_EXPS, C_MOE, false},
    {MOE_T_FFN_DOWN_EXPS, C_MOE, false},
    {MOE_T_FFN_UP_EXPS, C_MOE, false},
    {MOE_T_FFN_GATE_SHEXP, C_SHEXP, false},
    {MOE_T_FFN_DOWN_SHEXP, C_SHEXP, false},
    {MOE_T_FFN_UP_SHEXP, C_SHEXP, false},
};

#define BLOCK(a) {a, sizeof(a) / sizeof(a[0])}
static const struct {
    const block_entry *e;
    size_t n;
} arch_blocks[MOE_ARCH_COUNT] = {
    [MOE_ARCH_LLAMA] = BLOCK(block_llama),
    [MOE_ARCH_QWEN2MOE] = BLOCK(block_qwen2moe),
    [MOE_ARCH_QWEN3MOE] = BLOCK(block_qknorm),
    [MOE_ARCH_OLMOE] = BLOCK(block_qknorm),
    [MOE_ARCH_DEEPSEEK2] = BLOCK(block_deepseek2),
};

static unsigned block_conditions(const moe_hparams *hp, int64_t il) {
    unsigned c = moe_hp_layer_is_moe(hp, il) ? C_MOE : C_DENSE;
    c |= hp->q_lora_rank > 0 ? C_QLORA : C_NO_QLORA;
    if (hp->mla == MOE_MLA_KV_B || hp->mla == MOE_MLA_KV_B_PLUS_2D)
        c |= C_KV_B;
    if (hp->mla != MOE_MLA_KV_B)
        c |= C_KB_VB;
    if (hp->exp_probs_b)
        c |= C_PROBS_B;
    if ((c & C_MOE) && hp->n_ff_shexp > 0)
        c |= C_SHEXP;
    return c;
}

/* Shape of a role in ggml order (model.md §2.0 common table, §2.7 MLA). */
static uint32_t role_shape(const moe_hparams *hp, moe_tensor_role r, int64_t ne[4]) {
    const int64_t D = hp->n_embd, H = hp->n_head, Hkv = hp->n_head_kv;
    const int64_t dk = hp->head_dim_k, dv = hp->head_dim_v, Rkv = hp->kv_lora_rank;
    const int64_t nope = moe_hp_qk_nope(hp);
    ne[0] = ne[1] = ne[2] = ne[3] = 1;
#define SET(n, a, b, c) (ne[0] = (a), ne[1] = (b), ne[2] = (c), (uint32_t)(n))
    switch (r) {
    case MOE_T_TOKEN_EMBD: case MOE_T_OUTPUT: return SET(2, D, hp->n_vocab, 1);
    case MOE_T_OUTPUT_NORM: case MOE_T_ATTN_NORM: case MOE_T_FFN_NORM:
    case MOE_T_FFN_GATE_INP_SHEXP: return SET(1, D, 1, 1);
    case MOE_T_ATTN_Q: return SET(2, D, H * dk, 1);
    case MOE_T_ATTN_K: return SET(2, D, Hkv * dk, 1);
    case MOE_T_ATTN_V: return SET(2, D, Hkv * dv, 1);
    case MOE_T_ATTN_OUT: return SET(2, H * dv, D, 1);
    case MOE_T_ATTN_Q_BIAS: return SET(1, H * dk, 1, 1);
    case MOE_T_ATTN_K_BIAS: return SET(1, Hkv * dk, 1, 1);
    case MOE_T_ATTN_V_BIAS: return SET(1, Hkv * dv, 1, 1);
    case MOE_T_ATTN_Q_NORM:
        return SET(1, moe_arch_get(hp->arch)->qk_norm == MOE_QK_NORM_FULL ? D : dk, 1, 1);
    case MOE_T_ATTN_K_NORM:
        return SET(1, moe_arch_get(hp->arch)->qk_norm == MOE_QK_NORM_FULL ? D : dk, 1, 1);
    case MOE_T_ATTN_Q_A: return SET(2, D, hp->q_lora_rank, 1);
    case MOE_T_ATTN_Q_A_NORM: return SET(1, hp->q_lora_rank, 1, 1);
    case MOE_T_ATTN_Q_B: return SET(2, hp->q_lora_rank, H * dk, 1);
    case MOE_T_ATTN_KV_A_MQA: return SET(2, D, Rkv + hp->n_rot, 1);
    case MOE_T_ATTN_KV_A_NORM: return SET(1, Rkv, 1, 1);
    case MOE_T_ATTN_KV_B: return SET(2, Rkv, H * (nope + dv), 1);
    case MOE_T_ATTN_K_B:
        return hp->mla == MOE_MLA_3D ? SET(3, nope, Rkv, H) : SET(2, nope, H * Rkv, 1);
    case MOE_T_ATTN_V_B:
        return hp->mla == MOE_MLA_3D ? SET(3, Rkv, dv, H) : SET(2, Rkv, H * dv, 1);
    case MOE_T_FFN_GATE: case MOE_T_FFN_UP: return SET(2, D, hp->n_ff, 1);
    case MOE_T_FFN_DOWN: return SET(2, hp->n_ff, D, 1);
    case MOE_T_FFN_GATE_INP: return SET(2, D, hp->n_expert, 1);
    case MOE_T_EXP_PROBS_B: return SET(1, hp->n_expert, 1, 1);
    case MOE_T_FFN_GATE_EXPS: case MOE_T_FFN_UP_EXPS: return SET(3, D, hp->n_ff_exp, hp->n_expert);
    case MOE_T_FFN_DOWN_EXPS: return SET(3, hp->n_ff_exp, D, hp->n_expert);
    case MOE_T_FFN_GATE_EXP: case MOE_T_FFN_UP_EXP: return SET(2, D, hp->n_ff_exp, 1);
    case MOE_T_FFN_DOWN_EXP: return SET(2, hp->n_ff_exp, D, 1);
    case MOE_T_FFN_GATE_SHEXP: case MOE_T_FFN_UP_SHEXP: return SET(2, D, hp->n_ff_shexp, 1);
    case MOE_T_FFN_DOWN_SHEXP: return SET(2, hp->n_ff_shexp, D, 1);
    case MOE_T_ROLE_COUNT: break;
    }
#undef SET
    return 0;
}

/* Appends one spec (or only counts it when list->specs is NULL). */
typedef struct spec_list {
    moe_tensor_spec *specs;
    size_t n;
} spec_list;

static void emit(spec_list *l, const moe_hparams *hp, moe_tensor_role r, int64_t il,
                 int64_t expert, bool optional) {
    const moe_tensor_role_info *ri = moe_tensor_role_get(r);
    if (!ri) /* cannot happen: the block tables hold valid roles */
        return;
    if (l->specs) {
        moe_tensor_spec *s = &l->specs[l->n];
        memset(s, 0, sizeof(*s));
        s->role = r;
        s->layer = (int32_t)il;
        s->expert = (int32_t)expert;
        s->n_dims = role_shape(hp, r, s->ne);
        s->optional = optional;
        s->keep_f32 = ri->keep_f32 || s->n_dims == 1;
        s->init = ri->init;
        /* names are < 64 bytes: bases are short and il, expert < 2^31 */
        if (!ri->per_layer)
            snprintf(s->name, sizeof(s->name), "%s.%s", ri->base, ri->suffix);
        else if (expert < 0)
            snprintf(s->name, sizeof(s->name), "blk.%d.%s.%s", (int)il, ri->base, ri->suffix);
        else
            snprintf(s->name, sizeof(s->name), "blk.%d.%s.%d.%s", (int)il, ri->base,
                     (int)expert, ri->suffix);
    }
    l->n++;
}

static moe_tensor_role split_role(moe_tensor_role r) {
    switch (r) {
    case MOE_T_FFN_GATE_EXPS: return MOE_T_FFN_GATE_EXP;
    case MOE_T_FFN_DOWN_EXPS: return MOE_T_FFN_DOWN_EXP;
    case MOE_T_FFN_UP_EXPS: return MOE_T_FFN_UP_EXP;
    default: return r;
    }
}

static void list_tensors(const moe_hparams *hp, spec_list *l) {
    const moe_arch_info *ai = moe_arch_get(hp->arch);
    emit(l, hp, MOE_T_TOKEN_EMBD, -1, -1, false);
    for (int64_t il = 0; il < hp->n_layer; il++) {
        unsigned c = block_conditions(hp, il);
        for (size_t i = 0; i < arch_blocks[hp->arch].n; i++) {
            const block_entry *e = &arch_blocks[hp->arch].e[i];
            if ((e->cond & c) != e->cond)
                continue;
            moe_tensor_role sr = split_role(e->role);
            if (hp->layout == MOE_LAYOUT_SPLIT && sr != e->role) {
                for (int64_t x = 0; x < hp->n_expert; x++)
                    emit(l, hp, sr, il, x, e->optional);
            } else {
                emit(l, hp, e->role, il, -1, e->optional);
            }
        }
    }
    emit(l, hp, MOE_T_OUTPUT_NORM, -1, -1, false);
    if (!hp->tied_output)
        emit(l, hp, MOE_T_OUTPUT, -1, -1, !ai->output_required);
}

moe_status moe_arch_tensors(const moe_hparams *hp, moe_tensor_spec **out, size_t *n,
                            moe_err *err) {
    MOE_TRY(moe_hparams_validate(hp, err));
    spec_list l = {NULL, 0};
    list_tensors(hp, &l);
    moe_tensor_spec *specs = calloc(l.n, sizeof(*specs));
    MOE_FAIL_IF(!specs, err, MOE_ERR_NOMEM, "out of memory listing %zu tensors", l.n);
    size_t count = l.n;
    l.specs = specs;
    l.n = 0;
    list_tensors(hp, &l);
    if (l.n != count) {
        free(specs);
        return moe_fail(err, MOE_ERR_INTERNAL, "tensor count changed between passes");
    }
    *out = specs;
    *n = count;
    return MOE_OK;
}

/* ---- comparing with a file ----------------------------------------------------------- */

static void format_ne(char *buf, size_t cap, const int64_t ne[4]) {
    int nd = 4;
    while (nd > 1 && ne[nd - 1] == 1)
        nd--;
    size_t pos = (size_t)snprintf(buf, cap, "[");
    for (int i = 0; i < nd && pos < cap; i++)
        pos += (size_t)snprintf(buf + pos, cap - pos, "%s%lld", i ? ", " : "", (long long)ne[i]);
    if (pos < cap)
        snprintf(buf + pos, cap - pos, "]");
}

static moe_status check_one(const moe_tensor_spec *s, const moe_gguf *g, size_t i,
                            bool check_order, bool *seen, moe_err *err) {
    int64_t ti = moe_gguf_find_tensor(g, s->name);
    MOE_FAIL_IF(ti < 0, err, MOE_ERR_FORMAT, "missing tensor '%s'", s->name);
    const moe_gguf_tensor *t = &g->tensors[ti];
    /* n_dims may differ only by trailing 1s (writers trim them differently) */
    if (memcmp(t->ne, s->ne, sizeof(s->ne)) != 0) {
        char got[96], want[96];
        format_ne(got, sizeof(got), t->ne);
        format_ne(want, sizeof(want), s->ne);
        return moe_fail(err, MOE_ERR_FORMAT, "tensor '%s' has shape %s, expected %s", s->name,
                        got, want);
    }
    MOE_FAIL_IF(check_order && (uint64_t)ti != i, err, MOE_ERR_FORMAT,
                "tensor '%s' is at position %lld, expected %zu", s->name, (long long)ti, i);
    seen[ti] = true;
    return MOE_OK;
}

moe_status moe_arch_check_gguf(const moe_hparams *hp, const moe_gguf *g, bool check_order,
                               moe_err *err) {
    moe_tensor_spec *specs = NULL;
    size_t n = 0;
    MOE_TRY(moe_arch_tensors(hp, &specs, &n, err));
    bool *seen = calloc(g->n_tensors ? g->n_tensors : 1, sizeof(bool));
    if (!seen) {
        free(specs);
        return moe_fail(err, MOE_ERR_NOMEM, "out of memory");
    }
    moe_status st = MOE_OK;
    for (size_t i = 0; i < n && st == MOE_OK; i++)
        st = check_one(&specs[i], g, i, check_order, seen, err);
    for (uint64_t i = 0; i < g->n_tensors && st == MOE_OK; i++)
        if (!seen[i])
            st = moe_fail(err, MOE_ERR_FORMAT, "unexpected tensor '%s' for %s",
                          g->tensors[i].name, moe_arch_name(hp->arch));
    free(seen);
    free(specs);
    return st;
}

/* ---- names ------------------------------------------------------------------------- */

const char *const moe_expert_family[MOE_EXPERT_FAMILIES] = {"ffn_gate", "ffn_down", "ffn_up"};
const char *const moe_expert_family_exps[MOE_EXPERT_FAMILIES] = {"ffn_gate_exps",
                                                                 "ffn_down_exps",
                                                                 "ffn_up_exps"};

/* Parses a decimal index at *p (no sign, no leading zeros but "0", < 2^31)
 * and advances *p past it. */
static bool parse_index(const char **p, int32_t *out) {
    const char *s = *p;
    if (*s < '0' || *s > '9' || (s[0] == '0' && s[1] >= '0' && s[1] <= '9'))
        return false;
    int64_t v = 0;
    while (*s >= '0' && *s <= '9') {
        v = v * 10 + (*s - '0');
        if (v > INT32_MAX)
            return false;
        s++;
    }
    *out = (int32_t)v;
    *p = s;
    return true;
}

int32_t moe_tensor_name_layer(const char *name) {
    if (strncmp(name, "blk.", 4) != 0)
        return -1;
    const char *p = name + 4;
    int32_t layer = 0;
    if (!parse_index(&p, &layer) || *p != '.')
        return -1;
    return layer;
}

bool moe_tensor_name_parse_split(const char *name, moe_split_name *out) {
    if (strncmp(name, "blk.", 4) != 0)
        return false;
    const char *p = name + 4;
    if (!parse_index(&p, &out->layer) || *p++ != '.')
        return false;
    out->family = -1;
    for (int f = 0; f < MOE_EXPERT_FAMILIES; f++) {
        size_t len = strlen(moe_expert_family[f]);
        if (strncmp(p, moe_expert_family[f], len) == 0 && p[len] == '.') {
            out->family = f;
            p += len + 1;
            break;
        }
    }
    if (out->family < 0 || !parse_index(&p, &out->expert) || *p++ != '.')
        return false;
    size_t slen = strlen(p);
    if (slen == 0 || slen >= sizeof(out->suffix) || strchr(p, '.'))
        return false;
    memcpy(out->suffix, p, slen + 1);
    return true;
}

static moe_status expert_name(char *buf, size_t cap, int32_t layer, const char *family,
                              int32_t expert, const char *suffix, moe_err *err) {
    int f = -1;
    for (int i = 0; i < MOE_EXPERT_FAMILIES; i++)
        if (strcmp(family, moe_expert_family[i]) == 0)
            f = i;
    MOE_FAIL_IF(f < 0, err, MOE_ERR_USAGE, "'%s' is not an expert family", family);
    MOE_FAIL_IF(layer < 0, err, MOE_ERR_USAGE, "negative layer index %d", (int)layer);
    int len = expert < 0 ? snprintf(buf, cap, "blk.%d.%s.%s", (int)layer,
                                    moe_expert_family_exps[f], suffix)
                         : snprintf(buf, cap, "blk.%d.%s.%d.%s", (int)layer, family,
                                    (int)expert, suffix);
    MOE_FAIL_IF(len < 0 || (size_t)len >= cap || len >= MOE_GGUF_MAX_NAME, err, MOE_ERR_USAGE,
                "tensor name for layer %d %s is too long", (int)layer, family);
    return MOE_OK;
}

moe_status moe_tensor_name_stacked(char *buf, size_t cap, int32_t layer, const char *family,
                                   const char *suffix, moe_err *err) {
    return expert_name(buf, cap, layer, family, -1, suffix, err);
}

moe_status moe_tensor_name_split(char *buf, size_t cap, int32_t layer, const char *family,
                                 int32_t expert, const char *suffix, moe_err *err) {
    MOE_FAIL_IF(expert < 0, err, MOE_ERR_USAGE, "negative expert index %d", (int)expert);
    return expert_name(buf, cap, layer, family, expert, suffix, err);
}
