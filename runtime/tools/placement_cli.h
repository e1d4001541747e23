/* placement_cli — llama.cpp's placement flags, the same in every tool that
 * loads a model (moe-run, moe-bench, moe-perplexity, moe-imatrix):
 *   -ngl N, -dev A,B, --list-devices, -ot PATTERN=DEVICE (repeatable,
 *   first match wins; --override-tensor too), --cpu-moe, --n-cpu-moe N,
 *   and the plans: --hot-experts FILE.json with --gpu-budget SIZE or --fit,
 *   --fit, --fit-margin SIZE; and -rtr (--run-time-repack), which binds
 *   kernels rather than places.
 * A tool puts MOE_PLACEMENT_OPTS(&its_placement_opts) in its option table,
 * answers --list-devices with moe_placement_cli_list, and copies the values
 * into its moe_model_params with moe_placement_cli_apply (which reads the
 * --hot-experts file into counts the tool frees after moe_model_load). */
#ifndef MOE_RUNTIME_TOOLS_PLACEMENT_CLI_H
#define MOE_RUNTIME_TOOLS_PLACEMENT_CLI_H

#include <inttypes.h>
#include <stdio.h>

#include <stdlib.h>

#include "formats/base/cli.h"
#include "runtime/include/moe.h"
#include "runtime/quality/expert_stats.h"

typedef struct moe_placement_opts {
    int64_t n_gpu_layers;
    const char *devices;
    moe_opt_list overrides;
    bool cpu_moe, list_devices, no_op_offload, run_time_repack;
    int64_t n_cpu_moe;
    int64_t op_offload_min; /* -1: the library's default */
    const char *hot_experts; /* --hot-experts FILE.json */
    uint64_t gpu_budget;
    bool fit;
    uint64_t fit_margin;     /* UINT64_MAX: not given */
} moe_placement_opts;

/* The defaults a tool sets before parsing. */
#define MOE_PLACEMENT_OPTS_INIT {.op_offload_min = -1, .fit_margin = UINT64_MAX}

#define MOE_PLACEMENT_OPTS(po)                                                                  \
    {.names = "ngl,gpu-layers,n-gpu-layers", .kind = MOE_OPT_INT, .dest = &(po)->n_gpu_layers,  \
     .arg_name = "N", .help = "layers on the offload devices (-dev), counted from the last; "   \
                              "more than the model has: the output head too; -1 = all",       \
     .min = -1, .max = INT32_MAX},                                                              \
    {.names = "dev,device", .kind = MOE_OPT_STRING, .dest = &(po)->devices,                     \
     .arg_name = "LIST", .help = "offload devices for -ngl, comma-separated (default: every "   \
                                 "GPU; CPU1 splits between CPU devices; none: no offload)"},  \
    {.names = "list-devices", .kind = MOE_OPT_FLAG, .dest = &(po)->list_devices,                \
     .help = "print the devices and exit"},                                                     \
    {.names = "ot,override-tensor", .kind = MOE_OPT_LIST, .dest = &(po)->overrides,             \
     .arg_name = "PATTERN=DEVICE", .help = "repeatable: tensors whose name the regex matches "   \
                                           "go to DEVICE; the first matching one wins"},       \
    {.names = "cpu-moe", .kind = MOE_OPT_FLAG, .dest = &(po)->cpu_moe,                          \
     .help = "keep every routed-expert tensor on the CPU"},                                     \
    {.names = "n-cpu-moe", .kind = MOE_OPT_INT, .dest = &(po)->n_cpu_moe, .arg_name = "N",      \
     .help = "keep the routed-expert tensors of the first N layers on the CPU", .min = 0,       \
     .max = INT32_MAX},                                                                         \
    {.names = "op-offload-min", .kind = MOE_OPT_INT, .dest = &(po)->op_offload_min,             \
     .arg_name = "N", .help = "batches routing at least N rows per expert (tokens*K/E) compute " \
                              "experts kept on the CPU on the layer's device, uploading the "  \
                              "ones used (default 32)", .min = 1, .max = INT32_MAX},            \
    {.names = "no-op-offload", .kind = MOE_OPT_FLAG, .dest = &(po)->no_op_offload,              \
     .help = "never upload experts for a batch (see --op-offload-min)"},                        \
    {.names = "hot-experts", .kind = MOE_OPT_STRING, .dest = &(po)->hot_experts,                \
     .arg_name = "FILE", .help = "expert statistics (--expert-stats): the most used experts go " \
                                 "to the first offload device within --gpu-budget or --fit, "  \
                                 "the rest to the CPU"},                                        \
    {.names = "gpu-budget", .kind = MOE_OPT_SIZE, .dest = &(po)->gpu_budget, .arg_name = "SIZE",\
     .help = "device memory for --hot-experts' experts (e.g. 20G, 512M)"},                     \
    {.names = "fit", .kind = MOE_OPT_FLAG, .dest = &(po)->fit,                                  \
     .help = "fill the offload device's free memory: dense parts of the last layers first, "   \
             "then experts; prints the placement as -ngl/-ot arguments"},                      \
    {.names = "fit-margin", .kind = MOE_OPT_SIZE, .dest = &(po)->fit_margin, .arg_name = "SIZE",\
     .help = "free memory --fit leaves on the device (default 1G)"},                          \
    {.names = "rtr,run-time-repack", .kind = MOE_OPT_FLAG, .dest = &(po)->run_time_repack,      \
     .help = "batches multiply plain Q4_0 / IQ4_NL / Q4_K weights as their interleaved twins "  \
             "(Q4_0_R8, IQ4_NL_R4, Q4_K_R4) would: their prompt speed, read in place (no "       \
             "load-time repack, mmap kept)"}

/* Copies po into mp. kv_cells: the KV cells the tool's contexts will hold,
 * which --fit counts (0: the model's training context). With --hot-experts
 * the file is read into *counts, which mp points to: free() it after
 * moe_model_load. Errors name the option or the file. */
static inline moe_status moe_placement_cli_apply(const moe_placement_opts *po, int32_t kv_cells,
                                                 moe_model_params *mp, moe_expert_counts **counts,
                                                 moe_err *err) {
    *counts = NULL;
    mp->n_gpu_layers = (int32_t)po->n_gpu_layers;
    mp->devices = po->devices;
    mp->tensor_overrides = po->overrides.items;
    mp->n_tensor_overrides = po->overrides.count;
    mp->cpu_moe = po->cpu_moe;
    mp->n_cpu_moe = (int32_t)po->n_cpu_moe;
    mp->run_time_repack = po->run_time_repack;
    MOE_FAIL_IF(po->fit_margin != UINT64_MAX && !po->fit, err, MOE_ERR_USAGE,
                "option --fit-margin: only with --fit");
    MOE_FAIL_IF(po->gpu_budget && !po->hot_experts, err, MOE_ERR_USAGE,
                "option --gpu-budget: only with --hot-experts FILE (the budget is for the most "
                "used experts)");
    MOE_FAIL_IF(po->hot_experts && !po->gpu_budget && !po->fit, err, MOE_ERR_USAGE,
                "option --hot-experts: give --gpu-budget SIZE or --fit (how much goes to the "
                "device)");
    mp->gpu_budget = po->gpu_budget;
    mp->fit = po->fit;
    if (po->fit_margin != UINT64_MAX)
        mp->fit_margin = po->fit_margin;
    mp->fit_n_ctx = kv_cells;
    if (po->hot_experts) {
        MOE_TRY(moe_expert_stats_load_counts(po->hot_experts, counts, err));
        mp->hot_experts = *counts;
    }
    return MOE_OK;
}

/* The per-context part: expert offload for large batches. */
static inline void moe_placement_cli_apply_ctx(const moe_placement_opts *po,
                                               moe_context_params *cp) {
    if (po->op_offload_min > 0)
        cp->op_offload_min = (int32_t)po->op_offload_min;
    if (po->no_op_offload)
        cp->op_offload_min = 0;
}

/* --list-devices: one line per device, as llama.cpp prints them. */
static inline void moe_placement_cli_list(FILE *f) {
    fprintf(f, "Available devices:\n");
    moe_device_info d;
    for (int i = 0; moe_device_get(i, &d); i++) {
        fprintf(f, "  %s: %s", d.name, d.description);
        if (d.total_bytes)
            fprintf(f, " (%" PRIu64 " MiB, %" PRIu64 " MiB free)", d.total_bytes >> 20,
                    d.free_bytes >> 20);
        fprintf(f, "\n");
    }
}

#endif
