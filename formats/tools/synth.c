/* moe-synth — writes random-weight MoE models for tests and benchmarks.
 *
 * Shapes come from a preset (real models' shapes, or `tiny` ≈ the conformance
 * models), optionally shrunk with --scale, then overridden by shape flags.
 * Every key and tensor comes from formats/model/arch.h, so the output has exactly
 * the schema a llama.cpp-style loader expects. Data: see synth_data.c.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#ifdef _OPENMP
#include <omp.h>
#endif

#include "formats/model/arch.h"
#include "formats/base/cli.h"
#include "formats/gguf/gguf.h"
#include "formats/tools/synth.h"
#include "formats/quant/types.h"
#include "formats/base/clock.h"

/* ---- presets ------------------------------------------------------------------------- */

typedef struct preset {
    const char *name;
    const char *what;
    moe_hparams hp;
} preset;

#define SOFTMAX MOE_GATING_SOFTMAX
/* tiny-*: the conformance models' shapes (../shared/conformance/README.md);
 * the rest: the published configurations of the real models. */
static const preset presets[] = {
    {"tiny-llama", "conformance tiny-llama shapes",
     {.arch = MOE_ARCH_LLAMA, .n_vocab = 512, .n_ctx_train = 512, .n_embd = 256, .n_layer = 2,
      .n_head = 4, .n_head_kv = 2, .head_dim_k = 64, .head_dim_v = 64, .n_rot = 64,
      .n_ff = 256, .n_ff_exp = 256, .n_expert = 8, .n_expert_used = 2,
      .rope_freq_base = 10000, .rms_eps = 1e-5f, .gating = SOFTMAX,
      .expert_weights_norm = true, .expert_weights_scale = 1}},
    {"tiny-qwen2moe", "conformance tiny-qwen2moe shapes",
     {.arch = MOE_ARCH_QWEN2MOE, .n_vocab = 512, .n_ctx_train = 512, .n_embd = 256,
      .n_layer = 2, .n_head = 4, .n_head_kv = 2, .head_dim_k = 64, .head_dim_v = 64,
      .n_rot = 64, .n_ff = 256, .n_ff_exp = 256, .n_ff_shexp = 256, .n_expert = 8,
      .n_expert_used = 2, .n_expert_shared = 1, .rope_freq_base = 10000, .rms_eps = 1e-5f,
      .gating = SOFTMAX, .expert_weights_scale = 1}},
    {"tiny-qwen3moe", "conformance tiny-qwen3moe shapes",
     {.arch = MOE_ARCH_QWEN3MOE, .n_vocab = 512, .n_ctx_train = 512, .n_embd = 256,
      .n_layer = 2, .n_head = 4, .n_head_kv = 2, .head_dim_k = 64, .head_dim_v = 64,
      .n_rot = 64, .n_ff = 256, .n_ff_exp = 256, .n_expert = 8, .n_expert_used = 2,
      .rope_freq_base = 10000, .rms_eps = 1e-5f, .gating = SOFTMAX,
      .expert_weights_norm = true, .expert_weights_scale = 1}},
    {"tiny-olmoe", "conformance tiny-olmoe shapes",
     {.arch = MOE_ARCH_OLMOE, .n_vocab = 512, .n_ctx_train = 512, .n_embd = 256, .n_layer = 2,
      .n_head = 4, .n_head_kv = 4, .head_dim_k = 64, .head_dim_v = 64, .n_rot = 64,
      .n_ff = 256, .n_ff_exp = 256, .n_expert = 8, .n_expert_used = 2,
      .rope_freq_base = 10000, .rms_eps = 1e-5f, .gating = SOFTMAX,
      .expert_weights_scale = 1}},
    {"tiny-deepseek2", "conformance tiny-deepseek2 shapes (MLA, sigmoid + exp_probs_b)",
     {.arch = MOE_ARCH_DEEPSEEK2, .n_vocab = 512, .n_ctx_train = 512, .n_embd = 256,
      .n_layer = 2, .n_head = 4, .n_head_kv = 4, .head_dim_k = 64, .head_dim_v = 32,
      .n_rot = 32, .n_ff = 512, .n_ff_exp = 256, .n_ff_shexp = 256, .n_expert = 8,
      .n_expert_used = 2, .n_expert_shared = 1, .n_leading_dense = 1, .q_lora_rank = 128,
      .kv_lora_rank = 64, .rope_freq_base = 10000, .rms_eps = 1e-5f,
      .gating = MOE_GATING_SIGMOID, .expert_weights_norm = true,
      .expert_weights_scale = 2.5f, .yarn_log_mul = 0.1f, .exp_probs_b = true}},
    {"mixtral-8x7b", "Mixtral 8x7B (46.7B, llama arch)",
     {.arch = MOE_ARCH_LLAMA, .n_vocab = 32000, .n_ctx_train = 32768, .n_embd = 4096,
      .n_layer = 32, .n_head = 32, .n_head_kv = 8, .head_dim_k = 128, .head_dim_v = 128,
      .n_rot = 128, .n_ff = 14336, .n_ff_exp = 14336, .n_expert = 8, .n_expert_used = 2,
      .rope_freq_base = 1e6f, .rms_eps = 1e-5f, .gating = SOFTMAX,
      .expert_weights_norm = true, .expert_weights_scale = 1}},
    {"olmoe-1b-7b", "OLMoE-1B-7B (6.9B)",
     {.arch = MOE_ARCH_OLMOE, .n_vocab = 50304, .n_ctx_train = 4096, .n_embd = 2048,
      .n_layer = 16, .n_head = 16, .n_head_kv = 16, .head_dim_k = 128, .head_dim_v = 128,
      .n_rot = 128, .n_ff = 1024, .n_ff_exp = 1024, .n_expert = 64, .n_expert_used = 8,
      .rope_freq_base = 10000, .rms_eps = 1e-5f, .gating = SOFTMAX,
      .expert_weights_scale = 1}},
    {"qwen1.5-moe-a2.7b", "Qwen1.5-MoE-A2.7B (14.3B, qwen2moe)",
     {.arch = MOE_ARCH_QWEN2MOE, .n_vocab = 151936, .n_ctx_train = 8192, .n_embd = 2048,
      .n_layer = 24, .n_head = 16, .n_head_kv = 16, .head_dim_k = 128, .head_dim_v = 128,
      .n_rot = 128, .n_ff = 5632, .n_ff_exp = 1408, .n_ff_shexp = 5632, .n_expert = 60,
      .n_expert_used = 4, .n_expert_shared = 1, .rope_freq_base = 1e6f, .rms_eps = 1e-6f,
      .gating = SOFTMAX, .expert_weights_scale = 1}},
    {"qwen3-30b-a3b", "Qwen3-30B-A3B (30.5B, qwen3moe)",
     {.arch = MOE_ARCH_QWEN3MOE, .n_vocab = 151936, .n_ctx_train = 40960, .n_embd = 2048,
      .n_layer = 48, .n_head = 32, .n_head_kv = 4, .head_dim_k = 128, .head_dim_v = 128,
      .n_rot = 128, .n_ff = 6144, .n_ff_exp = 768, .n_expert = 128, .n_expert_used = 8,
      .rope_freq_base = 1e6f, .rms_eps = 1e-6f, .gating = SOFTMAX,
      .expert_weights_norm = true, .expert_weights_scale = 1}},
    /* model.md §2.7 quotes the real DeepSeek-Coder-V2-Lite GGUF metadata */
    {"deepseek-v2-lite", "DeepSeek-V2-Lite (15.7B, deepseek2 without q LoRA)",
     {.arch = MOE_ARCH_DEEPSEEK2, .n_vocab = 102400, .n_ctx_train = 163840, .n_embd = 2048,
      .n_layer = 27, .n_head = 16, .n_head_kv = 16, .head_dim_k = 192, .head_dim_v = 128,
      .n_rot = 64, .n_ff = 10944, .n_ff_exp = 1408, .n_ff_shexp = 2816, .n_expert = 64,
      .n_expert_used = 6, .n_expert_shared = 2, .n_leading_dense = 1, .kv_lora_rank = 512,
      .rope_freq_base = 10000, .rms_eps = 1e-6f, .gating = SOFTMAX,
      .expert_weights_scale = 1, .yarn_log_mul = 0.0707f,
      .rope_scaling = MOE_ROPE_SCALING_YARN, .rope_scaling_factor = 40, .n_ctx_orig = 4096}},
};
#undef SOFTMAX
#define N_PRESETS (sizeof(presets) / sizeof(presets[0]))

static const preset *find_preset(const char *name) {
    for (size_t i = 0; i < N_PRESETS; i++)
        if (strcmp(presets[i].name, name) == 0)
            return &presets[i];
    return NULL;
}

/* ---- command line -------------------------------------------------------------------- */

#define UNSET (-1)

typedef struct synth_args {
    const char *arch, *preset, *type, *layout, *vocab, *name, *gating, *mla;
    double scale, weights_scale;
    int64_t weights_norm;
    int64_t seed, threads;
    bool force, tie_output, dry_run;
    int64_t n_embd, n_layer, n_head, n_head_kv, head_dim, n_ff, n_ff_exp, n_ff_shexp;
    int64_t n_expert, n_expert_used, n_vocab, n_shared, n_dense_lead, q_lora, kv_lora;
    int64_t qk_nope, qk_rope, v_head, n_ctx;
} synth_args;

static synth_args args = {
    .preset = "tiny", .type = "f16", .layout = "stacked", .seed = 1, .threads = 0,
    .n_embd = UNSET, .n_layer = UNSET, .n_head = UNSET, .n_head_kv = UNSET,
    .head_dim = UNSET, .n_ff = UNSET, .n_ff_exp = UNSET, .n_ff_shexp = UNSET,
    .n_expert = UNSET, .n_expert_used = UNSET, .n_vocab = UNSET, .n_shared = UNSET,
    .n_dense_lead = UNSET, .q_lora = UNSET, .kv_lora = UNSET, .qk_nope = UNSET,
    .qk_rope = UNSET, .v_head = UNSET, .n_ctx = UNSET, .weights_norm = UNSET,
};

#define DIM(names, field, help) \
    {names, MOE_OPT_INT, &args.field, "N", help, 0, INT32_MAX, 0, 0, 0}

static const moe_opt options[] = {
    {"a,arch", MOE_OPT_STRING, &args.arch, "NAME",
     "llama | qwen2moe | qwen3moe | olmoe | deepseek2 (default: the preset's, llama for tiny)",
     0, 0, 0, 0, 0},
    {"preset", MOE_OPT_STRING, &args.preset, "NAME",
     "tiny (default; the conformance shapes of --arch), mixtral-8x7b, olmoe-1b-7b, "
     "qwen1.5-moe-a2.7b, qwen3-30b-a3b, deepseek-v2-lite", 0, 0, 0, 0, 0},
    {"scale", MOE_OPT_FLOAT, &args.scale, "F",
     "shrink the preset to about F of its parameters: widths (n_embd, n_ff, n_ff_exp, "
     "LoRA ranks) x sqrt(F), rounded to a multiple of 256 for 256-block types, else 32 "
     "(never below one); heads follow n_embd at the same head size and GQA ratio; layers, "
     "experts, vocab and head sizes stay",
     0, 0, 1e-9, 1, 0},
    {"type", MOE_OPT_STRING, &args.type, "TYPE",
     "type of 2-D+ weights: f32 f16 bf16 q4_0 q4_1 q5_0 q5_1 q8_0 iq4_nl q2_K q3_K q4_K q5_K "
     "q6_K iq4_xs and the interleaved q4_0_r8 q8_0_r8 iq4_nl_r4 q5_0_r4 q2_k_r4 ... "
     "iq4_xs_r8 (default f16); norms, biases and routers stay f32",
     0, 0, 0, 0, 0},
    {"layout", MOE_OPT_STRING, &args.layout, "L",
     "stacked (blk.N.ffn_*_exps, default) | split (legacy blk.N.ffn_*.E)", 0, 0, 0, 0, 0},
    {"vocab", MOE_OPT_STRING, &args.vocab, "FILE",
     "copy the tokenizer.* keys of FILE.gguf (n_vocab = its token count); default: a "
     "built-in SentencePiece-style vocabulary", 0, 0, 0, 0, 0},
    {"seed", MOE_OPT_INT, &args.seed, "N", "random seed (default 1); same args, same bytes",
     0, 0, 0, 0, 0},
    {"t,threads", MOE_OPT_INT, &args.threads, "N",
     "threads (default: all); the output does not depend on it", 1, 1024, 0, 0, 0},
    {"name", MOE_OPT_STRING, &args.name, "NAME", "general.name (default synth-PRESET)", 0, 0,
     0, 0, 0},
    {"f,force", MOE_OPT_FLAG, &args.force, NULL, "overwrite OUT if it exists", 0, 0, 0, 0, 0},
    {"dry-run", MOE_OPT_FLAG, &args.dry_run, NULL, "print the shapes and size, write nothing",
     0, 0, 0, 0, 0},
    DIM("n-embd", n_embd, "embedding width"),
    DIM("n-layer", n_layer, "blocks"),
    DIM("n-head", n_head, "attention heads"),
    DIM("n-head-kv", n_head_kv, "KV heads"),
    DIM("head-dim", head_dim, "head size (default n_embd/n_head; qwen3moe: the preset's)"),
    DIM("n-ff", n_ff, "dense FFN width (llama/olmoe: also the expert width)"),
    DIM("n-ff-exp", n_ff_exp, "routed expert width"),
    DIM("n-ff-shexp", n_ff_shexp, "qwen2moe shared expert width"),
    DIM("n-expert", n_expert, "routed experts (llama: 0 = dense)"),
    DIM("n-expert-used", n_expert_used, "experts per token"),
    DIM("n-vocab", n_vocab, "vocabulary size (built-in vocabulary)"),
    DIM("n-shared-exp", n_shared, "deepseek2 shared experts"),
    DIM("n-dense-lead", n_dense_lead, "deepseek2 leading dense blocks"),
    DIM("q-lora-rank", q_lora, "deepseek2 q LoRA rank (0: plain attn_q, V2-Lite style)"),
    DIM("kv-lora-rank", kv_lora, "deepseek2 kv LoRA rank"),
    DIM("qk-nope", qk_nope, "deepseek2 non-rope part of the K head"),
    DIM("qk-rope", qk_rope, "deepseek2 rope part of the K head"),
    DIM("v-head", v_head, "deepseek2 V head size"),
    DIM("n-ctx", n_ctx, "context_length"),
    {"gating", MOE_OPT_STRING, &args.gating, "G",
     "deepseek2 expert gating: softmax | sigmoid (sigmoid adds exp_probs_b)", 0, 0, 0, 0, 0},
    {"expert-weights-norm", MOE_OPT_INT, &args.weights_norm, "0|1",
     "deepseek2: renormalise the chosen experts' weights to sum 1", 0, 1, 0, 0, 0},
    {"expert-weights-scale", MOE_OPT_FLOAT, &args.weights_scale, "F",
     "deepseek2: factor on the routed experts' weights", 0, 0, 1e-6, 1e6, 0},
    {"mla", MOE_OPT_STRING, &args.mla, "V",
     "deepseek2 attention tensors: kv_b (default) | ik (kv_b + 2-D k_b/v_b) | ik-2d "
     "(2-D k_b/v_b only) | 3d (mainline: 3-D k_b/v_b, head_count_kv 1)", 0, 0, 0, 0, 0},
    {"tie-output", MOE_OPT_FLAG, &args.tie_output, NULL,
     "no output.weight (llama, qwen3moe: logits reuse token_embd)", 0, 0, 0, 0, 0},
    {NULL, 0, NULL, NULL, NULL, 0, 0, 0, 0, 0},
};

static const moe_cli cli = {
    .prog = "moe-synth",
    .synopsis = "[options] OUT.gguf",
    .summary = "Writes a random-weight MoE model (deterministic for a given seed) with the "
               "keys and tensors llama.cpp expects for its architecture. Quantized weights "
               "are written directly as random blocks with sane scales.",
    .opts = options,
    .min_positional = 1,
    .max_positional = 1,
    .positional_name = "output file",
};

/* ---- shapes ---------------------------------------------------------------------------- */

static int64_t round_to(double v, int64_t q) {
    int64_t r = (int64_t)llround(v / (double)q) * q;
    return r < q ? q : r;
}

static int64_t gcd64(int64_t a, int64_t b) {
    while (b) {
        int64_t t = a % b;
        a = b;
        b = t;
    }
    return a;
}

/* Whether head size is n_embd / n_head for this arch (and so follows n_embd). */
static bool head_follows_embd(moe_arch a) {
    return a == MOE_ARCH_LLAMA || a == MOE_ARCH_QWEN2MOE || a == MOE_ARCH_OLMOE;
}

/* --scale: widths x sqrt(F) (parameters of the big matrices go as width^2),
 * rounded to the quantum q so every block type still fits. */
static void apply_scale(moe_hparams *hp, double f, int64_t q) {
    double s = sqrt(f);
    int64_t ratio = hp->n_head / hp->n_head_kv;
    if (head_follows_embd(hp->arch)) {
        /* n_embd a multiple of lcm(q, head size * GQA ratio): whole KV groups */
        int64_t g = hp->head_dim_k * ratio, qe = q / gcd64(q, g) * g;
        hp->n_embd = round_to((double)hp->n_embd * s, qe);
        hp->n_head = hp->n_embd / hp->head_dim_k;
        hp->n_head_kv = hp->n_head / ratio;
    } else {
        hp->n_embd = round_to((double)hp->n_embd * s, q);
        int64_t kv = (int64_t)llround((double)hp->n_head_kv * s);
        hp->n_head_kv = kv > 0 ? kv : 1;
        hp->n_head = hp->n_head_kv * ratio;
    }
    hp->n_ff = hp->n_ff ? round_to((double)hp->n_ff * s, q) : 0;
    hp->n_ff_exp = hp->n_ff_exp ? round_to((double)hp->n_ff_exp * s, q) : 0;
    if (hp->arch == MOE_ARCH_QWEN2MOE)
        hp->n_ff_shexp = round_to((double)hp->n_ff_shexp * s, q);
    if (hp->q_lora_rank)
        hp->q_lora_rank = round_to((double)hp->q_lora_rank * s, q);
    if (hp->kv_lora_rank)
        hp->kv_lora_rank = round_to((double)hp->kv_lora_rank * s, q);
}

static moe_status apply_head_flags(moe_hparams *hp, bool reshaped, moe_err *err) {
    const synth_args *a = &args;
    if (hp->arch == MOE_ARCH_DEEPSEEK2) {
        if (a->n_head != UNSET && a->n_head_kv == UNSET)
            hp->n_head_kv = hp->n_head; /* MLA: every head has its K/V */
        int64_t nope = a->qk_nope != UNSET ? a->qk_nope : moe_hp_qk_nope(hp);
        if (a->qk_rope != UNSET)
            hp->n_rot = a->qk_rope;
        hp->head_dim_k = nope + hp->n_rot;
        if (a->v_head != UNSET)
            hp->head_dim_v = a->v_head;
        MOE_FAIL_IF(a->head_dim != UNSET, err, MOE_ERR_USAGE,
                    "deepseek2 head sizes are --qk-nope, --qk-rope and --v-head");
        return MOE_OK;
    }
    MOE_FAIL_IF(a->qk_nope != UNSET || a->qk_rope != UNSET || a->v_head != UNSET, err,
                MOE_ERR_USAGE, "--qk-nope/--qk-rope/--v-head are deepseek2 options");
    if (hp->arch == MOE_ARCH_OLMOE && a->n_head != UNSET && a->n_head_kv == UNSET)
        hp->n_head_kv = hp->n_head;
    int64_t hd = hp->head_dim_k;
    if (a->head_dim != UNSET) {
        hd = a->head_dim;
    } else if (head_follows_embd(hp->arch) && reshaped) {
        MOE_FAIL_IF(hp->n_head < 1 || hp->n_embd % hp->n_head != 0, err, MOE_ERR_USAGE,
                    "n_head (%lld) must divide n_embd (%lld)", (long long)hp->n_head,
                    (long long)hp->n_embd);
        hd = hp->n_embd / hp->n_head;
    }
    hp->head_dim_k = hp->head_dim_v = hp->n_rot = hd;
    return MOE_OK;
}

static moe_status apply_ffn_flags(moe_hparams *hp, moe_err *err) {
    const synth_args *a = &args;
    bool one_width = hp->arch == MOE_ARCH_LLAMA || hp->arch == MOE_ARCH_OLMOE;
    if (a->n_ff != UNSET)
        hp->n_ff = a->n_ff;
    if (a->n_ff_exp != UNSET) {
        MOE_FAIL_IF(one_width && a->n_ff != UNSET && a->n_ff != a->n_ff_exp, err,
                    MOE_ERR_USAGE, "%s has one FFN width: --n-ff and --n-ff-exp differ",
                    moe_arch_name(hp->arch));
        hp->n_ff_exp = a->n_ff_exp;
        if (one_width)
            hp->n_ff = a->n_ff_exp;
    }
    if (a->n_expert != UNSET)
        hp->n_expert = a->n_expert;
    if (a->n_expert_used != UNSET)
        hp->n_expert_used = a->n_expert_used;
    if (one_width)
        hp->n_ff_exp = hp->n_expert > 0 ? hp->n_ff : 0;
    if (a->n_shared != UNSET)
        hp->n_expert_shared = a->n_shared;
    if (a->n_ff_shexp != UNSET)
        hp->n_ff_shexp = a->n_ff_shexp;
    else if (hp->arch == MOE_ARCH_DEEPSEEK2)
        hp->n_ff_shexp = hp->n_ff_exp * hp->n_expert_shared;
    if (a->n_dense_lead != UNSET)
        hp->n_leading_dense = a->n_dense_lead;
    if (a->q_lora != UNSET)
        hp->q_lora_rank = a->q_lora;
    if (a->kv_lora != UNSET)
        hp->kv_lora_rank = a->kv_lora;
    return MOE_OK;
}

static moe_status apply_choice_flags(moe_hparams *hp, moe_err *err) {
    const synth_args *a = &args;
    if (strcmp(a->layout, "stacked") == 0)
        hp->layout = MOE_LAYOUT_STACKED;
    else if (strcmp(a->layout, "split") == 0)
        hp->layout = MOE_LAYOUT_SPLIT;
    else
        return moe_fail(err, MOE_ERR_USAGE, "--layout must be stacked or split, not '%s'",
                        a->layout);
    if (a->gating) {
        MOE_FAIL_IF(hp->arch != MOE_ARCH_DEEPSEEK2, err, MOE_ERR_USAGE,
                    "--gating: only deepseek2 stores its gating function");
        if (strcmp(a->gating, "softmax") == 0)
            hp->gating = MOE_GATING_SOFTMAX;
        else if (strcmp(a->gating, "sigmoid") == 0)
            hp->gating = MOE_GATING_SIGMOID;
        else
            return moe_fail(err, MOE_ERR_USAGE, "--gating must be softmax or sigmoid");
        /* V3-style sigmoid routing comes with the selection bias */
        hp->exp_probs_b = hp->gating == MOE_GATING_SIGMOID;
    }
    if (a->weights_norm != UNSET || a->weights_scale > 0) {
        MOE_FAIL_IF(hp->arch != MOE_ARCH_DEEPSEEK2, err, MOE_ERR_USAGE,
                    "--expert-weights-norm/--expert-weights-scale: only deepseek2 stores them");
        if (a->weights_norm != UNSET)
            hp->expert_weights_norm = a->weights_norm != 0;
        if (a->weights_scale > 0)
            hp->expert_weights_scale = (float)a->weights_scale;
    }
    if (a->mla) {
        static const char *const names[] = {"kv_b", "ik", "ik-2d", "3d"};
        int m = -1;
        for (int i = 0; i < 4; i++)
            if (strcmp(a->mla, names[i]) == 0)
                m = i;
        MOE_FAIL_IF(m < 0, err, MOE_ERR_USAGE, "--mla must be kv_b, ik, ik-2d or 3d");
        MOE_FAIL_IF(hp->arch != MOE_ARCH_DEEPSEEK2, err, MOE_ERR_USAGE,
                    "--mla is a deepseek2 option");
        hp->mla = (moe_mla_layout)m;
    }
    hp->tied_output = a->tie_output;
    return MOE_OK;
}

/* The model's hyper-parameters from preset, --scale and the shape flags. */
static moe_status resolve_hparams(moe_type type, moe_hparams *hp, const char **preset_name,
                                  moe_err *err) {
    const synth_args *a = &args;
    moe_arch arch = MOE_ARCH_LLAMA;
    MOE_FAIL_IF(a->arch && !moe_arch_from_name(a->arch, &arch), err, MOE_ERR_USAGE,
                "unknown --arch '%s' (llama, qwen2moe, qwen3moe, olmoe, deepseek2)", a->arch);
    static char tiny[32];
    const char *pname = a->preset;
    if (strcmp(pname, "tiny") == 0) {
        snprintf(tiny, sizeof(tiny), "tiny-%s", moe_arch_name(arch));
        pname = tiny;
    }
    const preset *p = find_preset(pname);
    MOE_FAIL_IF(!p, err, MOE_ERR_USAGE, "unknown --preset '%s' (see --help)", a->preset);
    MOE_FAIL_IF(a->arch && p->hp.arch != arch, err, MOE_ERR_USAGE,
                "--preset %s is a %s model, not %s", p->name, moe_arch_name(p->hp.arch),
                a->arch);
    *hp = p->hp;
    *preset_name = p->name;
    const moe_type_traits *tr = moe_type_get(type);
    int64_t q = tr->block_size >= 256 ? 256 : 32;
    if (a->scale > 0)
        apply_scale(hp, a->scale, q);
    if (a->n_embd != UNSET)
        hp->n_embd = a->n_embd;
    if (a->n_layer != UNSET)
        hp->n_layer = a->n_layer;
    if (a->n_head != UNSET)
        hp->n_head = a->n_head;
    if (a->n_head_kv != UNSET)
        hp->n_head_kv = a->n_head_kv;
    if (a->n_ctx != UNSET)
        hp->n_ctx_train = a->n_ctx;
    if (a->n_vocab != UNSET)
        hp->n_vocab = a->n_vocab;
    MOE_TRY(apply_head_flags(hp, a->n_embd != UNSET || a->n_head != UNSET, err));
    MOE_TRY(apply_ffn_flags(hp, err));
    return apply_choice_flags(hp, err);
}

/* ---- types --------------------------------------------------------------------------- */

/* llama.cpp's fallback when a row is not a whole number of 256-blocks
 * (quant.md §4.5); 32-block types fall back to f16. */
static moe_type fallback_type(moe_type t) {
    switch (t) {
    case MOE_TYPE_Q2_K: case MOE_TYPE_Q3_K: case MOE_TYPE_IQ4_XS: return MOE_TYPE_IQ4_NL;
    case MOE_TYPE_Q4_K: return MOE_TYPE_Q5_0;
    case MOE_TYPE_Q5_K: return MOE_TYPE_Q5_1;
    case MOE_TYPE_Q6_K: return MOE_TYPE_Q8_0;
    default: return MOE_TYPE_F16;
    }
}

/* The stored type of one tensor for weight type `main`. */
static moe_type tensor_type(const moe_tensor_spec *s, moe_type main) {
    if (s->keep_f32)
        return MOE_TYPE_F32;
    moe_type t = main;
    const moe_type_traits *tr = moe_type_get(t);
    /* interleaving needs whole row groups and is never used for token_embd
     * (quant.md §2.0 rules 1 and 6); llama-quantize falls back to the twin */
    if (tr->interleave_rows &&
        (s->role == MOE_T_TOKEN_EMBD || s->ne[1] % tr->interleave_rows != 0 ||
         s->ne[0] % tr->block_size != 0))
        t = tr->base;
    while (s->ne[0] % moe_type_get(t)->block_size != 0)
        t = fallback_type(t);
    return t;
}

/* llama_ftype of a file whose weights are `t` (model.md §1.8; K types as _M). */
static uint32_t file_type_of(moe_type t) {
    static const struct { moe_type t; uint32_t ft; } map[] = {
        {MOE_TYPE_F32, 0}, {MOE_TYPE_F16, 1}, {MOE_TYPE_Q4_0, 2}, {MOE_TYPE_Q4_1, 3},
        {MOE_TYPE_Q8_0, 7}, {MOE_TYPE_Q5_0, 8}, {MOE_TYPE_Q5_1, 9}, {MOE_TYPE_Q2_K, 10},
        {MOE_TYPE_Q3_K, 12}, {MOE_TYPE_Q4_K, 15}, {MOE_TYPE_Q5_K, 17}, {MOE_TYPE_Q6_K, 18},
        {MOE_TYPE_IQ4_NL, 25}, {MOE_TYPE_IQ4_XS, 30}, {MOE_TYPE_BF16, 32},
        {MOE_TYPE_Q4_0_R8, 202}, {MOE_TYPE_Q8_0_R8, 207}, {MOE_TYPE_Q5_0_R4, 208},
        {MOE_TYPE_Q2_K_R4, 210}, {MOE_TYPE_Q3_K_R4, 211}, {MOE_TYPE_Q4_K_R4, 214},
        {MOE_TYPE_Q5_K_R4, 216}, {MOE_TYPE_Q6_K_R4, 218}, {MOE_TYPE_IQ4_NL_R4, 225},
        {MOE_TYPE_IQ4_XS_R8, 230},
    };
    for (size_t i = 0; i < sizeof(map) / sizeof(map[0]); i++)
        if (map[i].t == t)
            return map[i].ft;
    return 1024; /* "guessed" */
}

static moe_status parse_type(moe_type *t, moe_err *err) {
    MOE_FAIL_IF(!moe_type_from_name(args.type, t) || !synth_type_supported(*t), err,
                MOE_ERR_USAGE, "--type %s: not a type moe-synth can generate (see --help)",
                args.type);
    return MOE_OK;
}

/* Types and sizes of every tensor; notes fallbacks on stderr. */
static moe_status plan_tensors(const moe_hparams *hp, moe_type main, moe_tensor_spec **specs,
                               synth_tensor **ts, size_t *n, uint64_t *total, moe_err *err) {
    const moe_type_traits *tr = moe_type_get(main);
    MOE_FAIL_IF(hp->n_embd % tr->block_size != 0, err, MOE_ERR_USAGE,
                "--type %s needs n_embd (%lld) to be a multiple of its block size %lld",
                tr->name, (long long)hp->n_embd, (long long)tr->block_size);
    MOE_TRY(moe_arch_tensors(hp, specs, n, err));
    *ts = calloc(*n, sizeof(**ts));
    MOE_FAIL_IF(!*ts, err, MOE_ERR_NOMEM, "out of memory");
    *total = 0;
    size_t n_fallback = 0;
    moe_type last_fb = main;
    for (size_t i = 0; i < *n; i++) {
        synth_tensor *t = &(*ts)[i];
        t->spec = &(*specs)[i];
        t->type = tensor_type(t->spec, main);
        if (!t->spec->keep_f32 && t->type != main && t->spec->role != MOE_T_TOKEN_EMBD) {
            n_fallback++;
            last_fb = t->type;
        }
        MOE_TRY(moe_type_tensor_size(t->type, t->spec->ne, &t->nbytes, err));
        *total += t->nbytes;
    }
    if (n_fallback)
        fprintf(stderr,
                "moe-synth: note: %zu tensors do not fit %s rows and use a fallback type "
                "(e.g. %s), as llama-quantize does\n",
                n_fallback, tr->name, moe_type_name(last_fb));
    return MOE_OK;
}

/* ---- writing --------------------------------------------------------------------------- */

static moe_status write_header(moe_gguf_writer *w, const moe_hparams *hp, const char *preset_name,
                               moe_type main, const moe_gguf *vocab, const synth_tensor *ts,
                               size_t n, moe_err *err) {
    char name[96];
    snprintf(name, sizeof(name), "synth-%s", preset_name);
    MOE_TRY(moe_gguf_writer_set_str(w, "general.architecture", moe_arch_name(hp->arch), err));
    MOE_TRY(moe_gguf_writer_set_str(w, "general.name", args.name ? args.name : name, err));
    MOE_TRY(moe_gguf_writer_set_u32(w, "general.file_type", file_type_of(main), err));
    if (moe_type_get(main)->block_size > 1) /* GGML_QNT_VERSION, as llama-quantize writes */
        MOE_TRY(moe_gguf_writer_set_u32(w, "general.quantization_version", 2, err));
    MOE_TRY(moe_hparams_write(w, hp, err));
    if (vocab)
        MOE_TRY(synth_vocab_copy(w, vocab, err));
    else
        MOE_TRY(synth_vocab_builtin(w, hp->n_vocab, err));
    for (size_t i = 0; i < n; i++)
        MOE_TRY(moe_gguf_writer_add_tensor(w, ts[i].spec->name, ts[i].type, ts[i].spec->n_dims,
                                           ts[i].spec->ne, err));
    return moe_gguf_writer_begin_data(w, err);
}

static moe_status write_model(const char *path, const moe_hparams *hp, const char *preset_name,
                              moe_type main, const moe_gguf *vocab, const synth_tensor *ts,
                              size_t n, int threads, moe_err *err) {
    moe_gguf_writer *w = NULL;
    moe_gguf_writer_opts opts = {.overwrite = args.force};
    MOE_TRY(moe_gguf_writer_create(path, &opts, &w, err));
    moe_status st = write_header(w, hp, preset_name, main, vocab, ts, n, err);
    if (st == MOE_OK)
        st = synth_write_data(w, ts, n, (uint64_t)args.seed, threads, err);
    if (st != MOE_OK) {
        moe_gguf_writer_abort(w);
        return st;
    }
    return moe_gguf_writer_finish(w, err);
}

static void print_plan(const char *out, const moe_hparams *hp, const char *preset_name,
                       moe_type main, size_t n, uint64_t total) {
    printf("moe-synth: %s: %s (%s), %s, D=%lld L=%lld H=%lld/%lld E=%lld K=%lld Fe=%lld "
           "V=%lld, %s layout, %zu tensors, %.1f MiB of data\n",
           out, preset_name, moe_arch_name(hp->arch), moe_type_name(main),
           (long long)hp->n_embd, (long long)hp->n_layer, (long long)hp->n_head,
           (long long)hp->n_head_kv, (long long)hp->n_expert, (long long)hp->n_expert_used,
           (long long)hp->n_ff_exp, (long long)hp->n_vocab,
           hp->layout == MOE_LAYOUT_SPLIT ? "split" : "stacked", n,
           (double)total / (1 << 20));
}

static int thread_count(void) {
    if (args.threads > 0)
        return (int)args.threads;
#ifdef _OPENMP
    return omp_get_max_threads();
#else
    return 1;
#endif
}

static moe_status run(const char *out, moe_err *err) {
    moe_type main;
    MOE_TRY(parse_type(&main, err));
    moe_hparams hp;
    const char *preset_name = NULL;
    MOE_TRY(resolve_hparams(main, &hp, &preset_name, err));
    moe_gguf_file *vf = NULL;
    moe_tensor_spec *specs = NULL;
    synth_tensor *ts = NULL;
    size_t n = 0;
    uint64_t total = 0;
    moe_status st = MOE_OK;
    if (args.vocab) {
        int64_t nv = 0;
        st = moe_gguf_file_open(args.vocab, false, &vf, err);
        if (st == MOE_OK && (st = synth_vocab_count(vf->g, &nv, err)) != MOE_OK)
            moe_err_prefix(err, "%s", args.vocab);
        if (st == MOE_OK && args.n_vocab != UNSET && args.n_vocab != nv)
            st = moe_fail(err, MOE_ERR_USAGE, "--n-vocab %lld differs from the %lld tokens of %s",
                          (long long)args.n_vocab, (long long)nv, args.vocab);
        hp.n_vocab = nv;
    }
    if (st == MOE_OK)
        st = moe_hparams_validate(&hp, err);
    if (st == MOE_OK)
        st = plan_tensors(&hp, main, &specs, &ts, &n, &total, err);
    if (st == MOE_OK && args.dry_run) {
        print_plan(out, &hp, preset_name, main, n, total);
    } else if (st == MOE_OK) {
        int threads = thread_count();
        double t0 = moe_now_s();
        st = write_model(out, &hp, preset_name, main, vf ? vf->g : NULL, ts, n, threads, err);
        double dt = moe_now_s() - t0;
        if (st == MOE_OK) {
            print_plan(out, &hp, preset_name, main, n, total);
            printf("moe-synth: wrote %.1f MiB in %.2f s (%.0f MB/s, %d threads)\n",
                   (double)total / (1 << 20), dt, dt > 0 ? (double)total / 1e6 / dt : 0.0,
                   threads);
        }
    }
    free(ts);
    free(specs);
    moe_gguf_file_close(vf);
    return st;
}

int main(int argc, char **argv) {
    moe_err err = {0};
    int pos = 0, n_pos = 0;
    bool help = false;
    moe_status st = moe_cli_parse(&cli, argc, argv, &pos, &n_pos, &help, &err);
    if (st == MOE_OK && help)
        return 0;
    if (st == MOE_OK)
        st = run(argv[pos], &err);
    if (st != MOE_OK) {
        fprintf(stderr, "moe-synth: %s\n", err.msg);
        if (st == MOE_ERR_USAGE)
            fprintf(stderr, "moe-synth: try 'moe-synth --help'\n");
    }
    return moe_status_exit_code(st);
}
