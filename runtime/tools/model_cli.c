/* model_cli — see model_cli.h. */
#include "runtime/tools/model_cli.h"

#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

#include "formats/base/log.h"

moe_sampling_cli moe_sampling_cli_init(void) {
    moe_sampler_params sd = moe_sampler_default_params();
    return (moe_sampling_cli){.seed = -1, .top_k = sd.top_k, .repeat_last_n = sd.repeat_last_n,
                              .temp = sd.temp, .top_p = sd.top_p, .min_p = sd.min_p,
                              .repeat_penalty = sd.repeat_penalty};
}

static moe_status parse_cache_type(const char *s, const char *what, moe_type *out,
                                   moe_err *err) {
    *out = MOE_TYPE_F16;
    if (!s)
        return MOE_OK;
    moe_type t;
    MOE_FAIL_IF(!moe_type_from_name(s, &t) ||
                    (t != MOE_TYPE_F32 && t != MOE_TYPE_F16 && t != MOE_TYPE_Q8_0),
                err, MOE_ERR_USAGE, "%s: '%s' is not a KV cache type (f32, f16 or q8_0)", what, s);
    *out = t;
    return MOE_OK;
}

moe_status moe_model_cli_check(const moe_model_cli *mc, moe_err *err) {
    MOE_FAIL_IF(!mc->model, err, MOE_ERR_USAGE, "no model given (-m FILE)");
    moe_type t;
    MOE_TRY(parse_cache_type(mc->cache_k, "option --cache-type-k", &t, err));
    MOE_TRY(parse_cache_type(mc->cache_v, "option --cache-type-v", &t, err));
    return MOE_OK;
}

moe_status moe_sampling_cli_check(const moe_sampling_cli *sc, moe_err *err) {
    MOE_FAIL_IF(sc->top_p <= 0.0, err, MOE_ERR_USAGE,
                "option --top-p: must be in (0, 1], got %g", sc->top_p);
    MOE_FAIL_IF(sc->repeat_penalty <= 0.0, err, MOE_ERR_USAGE,
                "option --repeat-penalty: must be > 0 (1 = off), got %g", sc->repeat_penalty);
    return MOE_OK;
}

moe_sampler_params moe_sampling_cli_params(const moe_sampling_cli *sc, int32_t n_ctx) {
    moe_sampler_params sp = moe_sampler_default_params();
    sp.temp = (float)sc->temp;
    sp.top_k = (int32_t)sc->top_k;
    sp.top_p = (float)sc->top_p;
    sp.min_p = (float)sc->min_p;
    sp.repeat_penalty = (float)sc->repeat_penalty;
    sp.repeat_last_n = sc->repeat_last_n < 0 ? n_ctx : (int32_t)sc->repeat_last_n;
    if (sc->seed >= 0) {
        sp.seed = (uint64_t)sc->seed;
    } else {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        sp.seed = ((uint64_t)ts.tv_sec * 1000003u) ^ (uint64_t)ts.tv_nsec ^
                  ((uint64_t)getpid() << 32);
        sp.seed &= 0xffffffffu; /* printable and reusable as -s */
    }
    return sp;
}

moe_status moe_model_cli_take_lora_scales(int *argc, char **argv, moe_model_cli *mc,
                                          moe_err *err) {
    for (int i = 1; i < *argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--"))
            break;
        const char *name = a[0] == '-' ? a + 1 + (a[1] == '-') : "";
        const bool eq = !strncmp(name, "lora-scaled=", 12);
        if (strcmp(name, "lora-scaled") != 0 && !eq)
            continue;
        const int at = eq ? i + 1 : i + 2;
        MOE_FAIL_IF(at >= *argc, err, MOE_ERR_USAGE, "option %s: needs FILE and SCALE", a);
        MOE_FAIL_IF(mc->n_lora_scale >= MOE_OPT_LIST_MAX, err, MOE_ERR_USAGE,
                    "option --lora-scaled: more than %d given", MOE_OPT_LIST_MAX);
        MOE_TRY(moe_parse_f64(argv[at], &mc->lora_scale[mc->n_lora_scale++],
                              "option --lora-scaled SCALE", err));
        memmove(&argv[at], &argv[at + 1], (size_t)(*argc - at) * sizeof *argv); /* keeps NULL */
        (*argc)--;
        i = at - 1;
    }
    return MOE_OK;
}

/* --lora FILE (scale 1) and --lora-scaled FILE SCALE: each adapter read once
 * into the model's cache and applied to the context. */
static moe_status apply_loras(const moe_model_cli *mc, moe_model *m, moe_context *ctx,
                              moe_err *err) {
    for (int i = 0; i < mc->lora.count + mc->lora_scaled.count; i++) {
        const bool scaled = i >= mc->lora.count;
        const char *path = scaled ? mc->lora_scaled.items[i - mc->lora.count] : mc->lora.items[i];
        const float scale = scaled ? (float)mc->lora_scale[i - mc->lora.count] : 1.0f;
        moe_lora_adapter *ad;
        MOE_TRY(moe_lora_load(m, path, &ad, err));
        MOE_TRY(moe_lora_apply(ctx, ad, scale, err));
        MOE_INFO("%s: LoRA adapter applied at scale %g", path, (double)scale);
    }
    return MOE_OK;
}

moe_status moe_model_cli_load(const moe_model_cli *mc, int32_t n_seq, int32_t n_batch,
                              moe_model **model, moe_context **ctx, moe_err *err) {
    moe_model_params mp = moe_model_default_params();
    mp.use_mmap = !mc->no_mmap;
    mp.verify = mc->verify;
    mp.n_threads = (int)mc->threads;
    MOE_TRY(parse_cache_type(mc->cache_k, "option --cache-type-k", &mp.fit_type_k, err));
    MOE_TRY(parse_cache_type(mc->cache_v, "option --cache-type-v", &mp.fit_type_v, err));
    /* --fit counts the cache of the default context, which may be the smaller training one */
    const int32_t kv_cells = mc->n_ctx < 0 ? MOE_MODEL_CLI_DEFAULT_N_CTX : (int32_t)mc->n_ctx;
    moe_expert_counts *hot = NULL;
    MOE_TRY(moe_placement_cli_apply(&mc->place, kv_cells, &mp, &hot, err));
    moe_status st = moe_model_load(mc->model, &mp, model, err);
    free(hot);
    if (st != MOE_OK) {
        if (!strstr(err->msg, mc->model)) /* the user must see which file failed */
            moe_err_prefix(err, "%s", mc->model);
        return st;
    }
    if (mc->verbose)
        moe_model_print_placement(*model, stderr);
    int64_t n_train = moe_model_n_ctx_train(*model);
    moe_context_params cp = moe_context_default_params();
    if (mc->n_ctx < 0)
        cp.n_ctx = n_train > 0 && n_train < MOE_MODEL_CLI_DEFAULT_N_CTX
                       ? (int32_t)n_train
                       : MOE_MODEL_CLI_DEFAULT_N_CTX;
    else if (mc->n_ctx == 0) /* as llama.cpp: the context the model was trained for */
        cp.n_ctx = n_train > 0 && n_train <= INT32_MAX ? (int32_t)n_train : 0;
    else
        cp.n_ctx = (int32_t)mc->n_ctx;
    MOE_FAIL_IF(cp.n_ctx == 0, err, MOE_ERR_USAGE, "-c 0 asks for the training context, but %s "
                "stores %" PRId64 " as its context length: give -c N", mc->model, n_train);
    if (cp.n_ctx > n_train && n_train > 0)
        MOE_WARN("context %" PRId32 " is larger than the model was trained for (%" PRId64 ")",
                 cp.n_ctx, n_train);
    cp.n_batch = n_batch;
    cp.n_threads = (int)mc->threads;
    moe_placement_cli_apply_ctx(&mc->place, &cp);
    cp.defrag_thold = (float)mc->defrag_thold;
    cp.n_seq_max = n_seq;
    MOE_TRY(parse_cache_type(mc->cache_k, "option --cache-type-k", &cp.type_k, err));
    MOE_TRY(parse_cache_type(mc->cache_v, "option --cache-type-v", &cp.type_v, err));
    MOE_TRY(moe_context_create(*model, &cp, ctx, err));
    MOE_TRY(apply_loras(mc, *model, *ctx, err));
    MOE_INFO("%s: %s, n_vocab %" PRId64 ", n_embd %" PRId64 ", %.2f MiB of weights, %.2f MiB "
             "read per token; context %" PRId32 " (trained %" PRId64 "), KV cache %s/%s",
             mc->model, moe_model_arch_name(*model), moe_model_n_vocab(*model),
             moe_model_n_embd(*model), (double)moe_model_weight_bytes(*model) / 1048576.0,
             (double)moe_model_bytes_per_token(*model) / 1048576.0, moe_context_n_ctx(*ctx),
             n_train, moe_type_name(cp.type_k), moe_type_name(cp.type_v));
    return MOE_OK;
}

moe_status moe_tokenize_prompt(const moe_model *m, const char *text, size_t len,
                               moe_token **out, int32_t *n_out, moe_err *err) {
    MOE_FAIL_IF(len > INT32_MAX / 2, err, MOE_ERR_USAGE, "the prompt is too long (%zu bytes)",
                len);
    int32_t cap = (int32_t)len + 8, n = -1;
    moe_token *toks = NULL;
    for (int attempt = 0; attempt < 2 && n < 0; attempt++) {
        moe_token *nt = realloc(toks, (size_t)cap * sizeof *toks);
        if (!nt) {
            free(toks);
            return moe_fail(err, MOE_ERR_NOMEM, "out of memory");
        }
        toks = nt;
        n = moe_tokenize(m, text, (int32_t)len, toks, cap, true, true);
        if (n < 0)
            cap = -n;
    }
    if (n < 0) {
        free(toks);
        return moe_fail(err, MOE_ERR_INTERNAL, "tokenizer asked for more room twice");
    }
    moe_token bos = moe_token_bos(m);
    if (n >= 2 && bos >= 0 && toks[0] == bos && toks[1] == bos) {
        memmove(toks, toks + 1, (size_t)(n - 1) * sizeof *toks);
        n--;
    }
    *out = toks;
    *n_out = n;
    return MOE_OK;
}
