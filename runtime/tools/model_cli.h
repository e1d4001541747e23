/* model_cli — the options and loading code moe-run and moe-server share: the
 * model file, threads, KV cache types, mapping, checksums, LoRA adapters,
 * defragmentation and placement (MOE_MODEL_CLI_OPTS), and the sampling
 * options (MOE_SAMPLING_CLI_OPTS), with llama.cpp's names and defaults.
 *
 * A tool embeds a moe_model_cli and a moe_sampling_cli in its options,
 * initialises them with MOE_MODEL_CLI_INIT / moe_sampling_cli_init, puts the
 * two macros in its option table (plus its own -c, whose meaning differs per
 * tool), calls moe_model_cli_take_lora_scales before moe_cli_parse and
 * moe_model_cli_check after it, then moe_model_cli_load. Everything goes
 * through runtime/include/moe.h.
 */
#ifndef MOE_RUNTIME_TOOLS_MODEL_CLI_H
#define MOE_RUNTIME_TOOLS_MODEL_CLI_H

#include <stdbool.h>
#include <stdint.h>

#include "formats/base/cli.h"
#include "runtime/include/moe.h"
#include "runtime/tools/placement_cli.h"

/* llama-cli's default context; the model's own is used when it is smaller,
 * since a cache beyond the training context only wastes memory. */
#define MOE_MODEL_CLI_DEFAULT_N_CTX 4096

typedef struct moe_model_cli {
    const char *model, *cache_k, *cache_v;
    int64_t threads, n_ctx;               /* n_ctx < 0: the default above */
    double defrag_thold;
    bool no_mmap, verify, verbose;
    moe_opt_list lora, lora_scaled;       /* --lora FILE, --lora-scaled FILE (SCALE below) */
    double lora_scale[MOE_OPT_LIST_MAX];  /* the SCALE of each --lora-scaled, in order */
    int n_lora_scale;
    moe_placement_opts place;             /* -ngl, -ot, --cpu-moe... */
} moe_model_cli;

#define MOE_MODEL_CLI_INIT                                                                     \
    {.threads = 0, .n_ctx = -1, .defrag_thold = 0.1 /* llama-cli's */,                         \
     .place = MOE_PLACEMENT_OPTS_INIT}

typedef struct moe_sampling_cli {
    int64_t seed, top_k, repeat_last_n;
    double temp, top_p, min_p, repeat_penalty;
} moe_sampling_cli;

/* moe_sampler_default_params' values, seed -1 (random). */
moe_sampling_cli moe_sampling_cli_init(void);

#define MOE_MODEL_CLI_OPTS(mc)                                                                  \
    {.names = "m,model", .kind = MOE_OPT_STRING, .dest = &(mc)->model, .arg_name = "FILE",      \
     .help = "model (.gguf, first shard of a split set, or .gguf.zst)"},                        \
    {.names = "t,threads", .kind = MOE_OPT_INT, .dest = &(mc)->threads, .arg_name = "N",        \
     .help = "threads (default: all cores)", .min = 1, .max = 4096},                            \
    {.names = "ctk,cache-type-k", .kind = MOE_OPT_STRING, .dest = &(mc)->cache_k,               \
     .arg_name = "TYPE", .help = "KV cache type for K: f32, f16 (default), q8_0"},              \
    {.names = "ctv,cache-type-v", .kind = MOE_OPT_STRING, .dest = &(mc)->cache_v,               \
     .arg_name = "TYPE", .help = "KV cache type for V: f32, f16 (default), q8_0"},              \
    {.names = "no-mmap", .kind = MOE_OPT_FLAG, .dest = &(mc)->no_mmap,                          \
     .help = "read the weights into memory instead of mapping the file"},                       \
    {.names = "verify", .kind = MOE_OPT_FLAG, .dest = &(mc)->verify,                            \
     .help = "check the tensors' stored checksums before use"},                                 \
    {.names = "lora", .kind = MOE_OPT_LIST, .dest = &(mc)->lora, .arg_name = "FILE",            \
     .help = "repeatable: apply the LoRA adapter in FILE (llama.cpp's GGUF format) at "         \
             "scale 1, unmerged"},                                                              \
    {.names = "lora-scaled", .kind = MOE_OPT_LIST, .dest = &(mc)->lora_scaled,                  \
     .arg_name = "FILE SCALE", .help = "repeatable: apply the LoRA adapter in FILE at SCALE"},  \
    {.names = "dt,defrag-thold", .kind = MOE_OPT_FLOAT, .dest = &(mc)->defrag_thold,            \
     .arg_name = "F", .help = "defragment the KV cache when more than F of the attended "       \
                              "cells are holes (default 0.1, < 0: never)", .fmin = -1,         \
     .fmax = 1},                                                                                \
    {.names = "v,verbose", .kind = MOE_OPT_FLAG, .dest = &(mc)->verbose,                        \
     .help = "debug logging, and where every tensor was placed"},                               \
    MOE_PLACEMENT_OPTS(&(mc)->place)

#define MOE_SAMPLING_CLI_OPTS(sc)                                                               \
    {.names = "s,seed", .kind = MOE_OPT_INT, .dest = &(sc)->seed, .arg_name = "SEED",           \
     .help = "sampling seed; -1 (default) = random, printed so it can be reused",              \
     .min = -1, .max = INT64_MAX},                                                              \
    {.names = "temp", .kind = MOE_OPT_FLOAT, .dest = &(sc)->temp, .arg_name = "T",              \
     .help = "temperature; 0 = greedy (default 0.8)", .fmin = 0, .fmax = 1e9},                  \
    {.names = "top-k", .kind = MOE_OPT_INT, .dest = &(sc)->top_k, .arg_name = "N",              \
     .help = "top-k sampling; 0 = off (default 40)", .min = 0, .max = INT32_MAX},               \
    {.names = "top-p", .kind = MOE_OPT_FLOAT, .dest = &(sc)->top_p, .arg_name = "P",            \
     .help = "top-p sampling in (0, 1]; 1 = off (default 0.95)", .fmin = 0, .fmax = 1},         \
    {.names = "min-p", .kind = MOE_OPT_FLOAT, .dest = &(sc)->min_p, .arg_name = "P",            \
     .help = "min-p sampling in [0, 1]; 0 = off (default 0.05)", .fmin = 0, .fmax = 1},         \
    {.names = "repeat-penalty", .kind = MOE_OPT_FLOAT, .dest = &(sc)->repeat_penalty,           \
     .arg_name = "F", .help = "repetition penalty; 1 = off (default)", .fmin = 0,               \
     .fmax = 1e9},                                                                              \
    {.names = "repeat-last-n", .kind = MOE_OPT_INT, .dest = &(sc)->repeat_last_n,               \
     .arg_name = "N", .help = "tokens the penalty looks back at; -1 = the context "             \
                              "(default 64)", .min = -1, .max = INT32_MAX}

/* --lora-scaled takes two values, which the option table cannot express:
 * each "--lora-scaled FILE SCALE" (or "--lora-scaled=FILE SCALE") loses its
 * SCALE here, kept in order in mc->lora_scale, before the table parses the
 * rest. Stops at "--". Changes argc and argv. */
moe_status moe_model_cli_take_lora_scales(int *argc, char **argv, moe_model_cli *mc,
                                          moe_err *err);

/* Relations the table cannot express: a model is given, the cache types are
 * known. */
moe_status moe_model_cli_check(const moe_model_cli *mc, moe_err *err);
/* Sampling values the table's ranges cannot express (top-p > 0, penalty > 0). */
moe_status moe_sampling_cli_check(const moe_sampling_cli *sc, moe_err *err);

/* The sampler's parameters; a seed of -1 becomes a random 32-bit one. */
moe_sampler_params moe_sampling_cli_params(const moe_sampling_cli *sc, int32_t n_ctx);

/* Loads mc->model and makes a context of mc->n_ctx cells (the default when
 * < 0) for n_seq sequences and batches of n_batch tokens, with mc's adapters
 * applied; logs one line describing both. On failure *model and *ctx hold
 * what was made so far (the caller frees both). The message names the file. */
moe_status moe_model_cli_load(const moe_model_cli *mc, int32_t n_seq, int32_t n_batch,
                              moe_model **model, moe_context **ctx, moe_err *err);

/* Tokenizes a prompt as llama-cli does: BOS as the vocabulary asks,
 * control-token text recognised ("<s>" is BOS), and a doubled BOS (a template
 * writing its own plus the automatic one) made single. *out is malloc'd. */
moe_status moe_tokenize_prompt(const moe_model *m, const char *text, size_t len,
                               moe_token **out, int32_t *n_out, moe_err *err);

#endif
