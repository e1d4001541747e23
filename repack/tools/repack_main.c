/* moe-repack: lossless re-layout of GGUF models — legacy split experts to
 * stacked, merged gate/up tensors, shards, zstd — with checksums throughout. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "formats/base/cli.h"
#include "formats/base/cpu.h"
#include "formats/base/log.h"
#include "formats/base/tempfile.h"
#include "formats/gguf/zstd_seekable.h"
#include "repack/repack.h"

typedef struct repack_cli {
    bool force, dry_run, json, verify, merge, split, quiet, interleave, deinterleave;
    const char *gate_up_order, *interleave_pattern;
    uint64_t split_max_size;
    int64_t split_max_tensors, zstd_level, threads;
} repack_cli;

static const char *kind_name(moe_repack_kind k) {
    static const char *const names[] = {"copy", "stack", "split", "merge", "reorder"};
    return names[k];
}

static void print_json_string(const char *s) {
    putchar('"');
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\')
            printf("\\%c", c);
        else if (c < 0x20)
            printf("\\u%04x", c);
        else
            putchar(c);
    }
    putchar('"');
}

static void print_json(const char *in_path, const moe_repack_plan *plan,
                       const moe_repack_result *res, const char *const *outputs, bool dry_run) {
    printf("{\n  \"input\": ");
    print_json_string(in_path);
    printf(",\n  \"dry_run\": %s,\n  \"outputs\": [", dry_run ? "true" : "false");
    for (uint32_t s = 0; res && s < res->n_outputs; s++) {
        struct stat sb;
        printf("%s\n    {\"path\": ", s ? "," : "");
        print_json_string(outputs[s]);
        printf(", \"bytes\": %" PRIu64 "}", stat(outputs[s], &sb) == 0 ? (uint64_t)sb.st_size : 0);
    }
    printf("\n  ],\n  \"tensors\": [");
    for (uint64_t i = 0; i < plan->n_tensors; i++) {
        const moe_repack_tensor *t = &plan->tensors[i];
        printf("%s\n    {\"name\": ", i ? "," : "");
        print_json_string(t->name);
        printf(", \"type\": \"%s\", \"shape\": [", moe_type_name(t->type));
        for (uint32_t d = 0; d < t->n_dims; d++)
            printf("%s%" PRId64, d ? ", " : "", t->ne[d]);
        printf("], \"bytes\": %" PRIu64 ", \"kind\": \"%s\", \"pieces\": %" PRIu64
               ", \"source_type\": \"%s\"",
               t->nbytes, kind_name(t->kind), t->n_pieces, moe_type_name(t->src_type));
        if (res)
            printf(", \"xxh3\": \"%016" PRIx64 "\"", res->tensor_xxh3[i]);
        putchar('}');
    }
    printf("\n  ],\n  \"stacked\": %" PRIu64 ",\n  \"expert_inputs\": %" PRIu64
           ",\n  \"gate_up\": %" PRIu64 ",\n  \"tensor_bytes\": %" PRIu64,
           plan->n_stacked, plan->n_expert_inputs, plan->n_gate_up, plan->bytes);
    if (res)
        printf(",\n  \"bytes_written\": %" PRIu64 ",\n  \"seconds\": %.3f,\n"
               "  \"inputs_verified\": %" PRIu64 ",\n  \"outputs_verified\": %" PRIu64,
               res->bytes_written, res->seconds, res->n_inputs_verified, res->n_outputs_verified);
    printf("\n}\n");
}

static void print_plan(const moe_repack_plan *plan) {
    for (uint64_t i = 0; i < plan->n_tensors; i++) {
        const moe_repack_tensor *t = &plan->tensors[i];
        char shape[80];
        int k = snprintf(shape, sizeof shape, "[");
        for (uint32_t d = 0; d < t->n_dims; d++)
            k += snprintf(shape + k, sizeof shape - (size_t)k, "%s%" PRId64, d ? ", " : "",
                          t->ne[d]);
        snprintf(shape + k, sizeof shape - (size_t)k, "]");
        char type[40];
        if (t->type != t->src_type)
            snprintf(type, sizeof type, "%s->%s", moe_type_name(t->src_type), moe_type_name(t->type));
        else
            snprintf(type, sizeof type, "%s", moe_type_name(t->type));
        printf("%-8s %-40s %-18s %-20s %12" PRIu64 " bytes  from %" PRIu64 " range%s%s%s\n",
               kind_name(t->kind), t->name, type, shape, t->nbytes, t->n_pieces,
               t->n_pieces == 1 ? "" : "s", t->note ? "  # " : "", t->note ? t->note : "");
    }
    printf("%" PRIu64 " tensors, %" PRIu64 " bytes of tensor data; %" PRIu64
           " stacked from %" PRIu64 " per-expert tensors; %" PRIu64 " gate/up changes; %" PRIu64
           " re-laid out\n",
           plan->n_tensors, plan->bytes, plan->n_stacked, plan->n_expert_inputs, plan->n_gate_up,
           plan->n_relayout);
}

/* A .gguf.zst input is decompressed to a temp file beside the output first. */
static moe_status unpack_zstd_input(const char *in_path, const char *out_path, int threads,
                                    char **plain_tmp, moe_err *err) {
    *plain_tmp = NULL;
    if (!moe_zstd_path_is_zstd(in_path))
        return MOE_OK;
    char *tmp = moe_temp_name(out_path, "input"); /* hidden, pid-named: see tempfile.h */
    MOE_FAIL_IF(!tmp, err, MOE_ERR_NOMEM, "out of memory");
    moe_zstd_file *z;
    moe_status st = moe_zstd_open(in_path, &z, err);
    if (st == MOE_OK)
        st = moe_tempfile_register(tmp, err);
    if (st == MOE_OK) {
        MOE_INFO("decompressing %s", in_path);
        st = moe_zstd_decompress_to_file(z, tmp, threads, false, err);
        if (st != MOE_OK)
            moe_temp_discard(tmp);
    }
    moe_zstd_close(z);
    if (st != MOE_OK) {
        free(tmp);
        return st;
    }
    *plain_tmp = tmp;
    return MOE_OK;
}

static char *zstd_name(const char *path) {
    size_t n = strlen(path);
    char *z = malloc(n + 5);
    if (z)
        snprintf(z, n + 5, "%s%s", path, n > 4 && !strcmp(path + n - 4, ".zst") ? "" : ".zst");
    return z;
}

/* Compresses each finished temp output to FINAL.zst and drops the temp. */
static moe_status compress_outputs(moe_repack_result *res, const repack_cli *o, moe_err *err) {
    moe_status st = MOE_OK;
    for (uint32_t s = 0; s < res->n_outputs; s++) {
        char *z = zstd_name(res->final_paths[s]);
        if (!z)
            st = moe_fail(err, MOE_ERR_NOMEM, "out of memory");
        if (st == MOE_OK) {
            MOE_INFO("compressing %s (level %lld)", z, (long long)o->zstd_level);
            st = moe_zstd_compress_file(res->outputs[s], z, (int)o->zstd_level, 0,
                                        (int)o->threads, o->force, err);
        }
        moe_temp_discard(res->outputs[s]);
        free(res->outputs[s]);
        res->outputs[s] = z;
    }
    return st;
}

static moe_status run(const repack_cli *o, const char *in_path, const char *out_path,
                      moe_err *err) {
    char *plain_tmp = NULL;
    MOE_TRY(unpack_zstd_input(in_path, out_path, (int)o->threads, &plain_tmp, err));
    moe_gguf_set *in = NULL;
    /* mapped: tensor bytes go from the page cache to write() without copies */
    moe_status st = moe_gguf_set_open(plain_tmp ? plain_tmp : in_path, true, &in, err);
    moe_repack_opts ro = {
        .gate_up = o->merge ? MOE_GATE_UP_MERGE : o->split ? MOE_GATE_UP_SPLIT : MOE_GATE_UP_KEEP,
        .input_up_first = o->gate_up_order && !strcmp(o->gate_up_order, "up-first"),
        .interleave = o->interleave ? 1 : o->deinterleave ? -1 : 0,
        .interleave_pattern = o->interleave_pattern,
    };
    moe_repack_plan plan = {0};
    if (st == MOE_OK)
        st = moe_repack_plan_build(in, &ro, &plan, err);
    if (st == MOE_OK && o->dry_run) {
        if (o->json)
            print_json(in_path, &plan, NULL, NULL, true);
        else
            print_plan(&plan);
    } else if (st == MOE_OK) {
        moe_repack_write_opts wo = {
            .overwrite = o->force || o->zstd_level >= 0, /* zstd outputs are checked below */
            .split_max_bytes = o->split_max_size,
            .split_max_tensors = (uint64_t)o->split_max_tensors,
            .verify = o->verify,
            .progress = !o->quiet && !o->json,
            .keep_temp = o->zstd_level >= 0,
        };
        moe_repack_result res;
        st = moe_repack_write(in, &plan, out_path, &wo, &res, err);
        if (st == MOE_OK && o->zstd_level >= 0)
            st = compress_outputs(&res, o, err);
        if (st == MOE_OK && o->json)
            print_json(in_path, &plan, &res, (const char *const *)res.outputs, false);
        else if (st == MOE_OK)
            MOE_INFO("wrote %u file%s, %" PRIu64 " tensors (%" PRIu64 " stacked from %" PRIu64
                     " per-expert tensors), %.1f MB in %.2f s (%.0f MB/s)%s",
                     res.n_outputs, res.n_outputs == 1 ? "" : "s", plan.n_tensors,
                     plan.n_stacked, plan.n_expert_inputs, (double)res.bytes_written / 1e6,
                     res.seconds, (double)res.bytes_written / 1e6 / (res.seconds + 1e-9),
                     o->verify ? "; verified" : "");
        if (res.n_outputs)
            moe_repack_result_free(&res);
    }
    moe_repack_plan_free(&plan);
    moe_gguf_set_close(in);
    if (plain_tmp) {
        moe_temp_discard(plain_tmp);
        free(plain_tmp);
    }
    return st;
}

int main(int argc, char **argv) {
    repack_cli o = {.zstd_level = -1, .threads = 0};
    static const char summary[] =
        "Rewrites a GGUF model losslessly: legacy per-expert tensors (blk.N.ffn_up.E.weight)\n"
        "are stacked into blk.N.ffn_up_exps.weight as current llama.cpp expects; merged\n"
        "ffn_gate_up_exps tensors can be split or produced; output can be sharded or zstd-\n"
        "compressed. Every other tensor and every metadata key is copied byte for byte.\n"
        "Writes to a temp file and renames it; on any failure nothing is left at OUT.";
    const moe_opt opts[] = {
        {.names = "f,force", .kind = MOE_OPT_FLAG, .dest = &o.force,
         .help = "replace an existing output"},
        {.names = "dry-run", .kind = MOE_OPT_FLAG, .dest = &o.dry_run,
         .help = "print the plan (tensors to stack, bytes to write) and write nothing"},
        {.names = "json", .kind = MOE_OPT_FLAG, .dest = &o.json,
         .help = "print a machine-readable report on stdout"},
        {.names = "verify", .kind = MOE_OPT_FLAG, .dest = &o.verify,
         .help = "re-read the output and check every tensor against the input bytes"},
        {.names = "merge-gate-up", .kind = MOE_OPT_FLAG, .dest = &o.merge,
         .help = "write ffn_gate_up_exps (gate rows first) instead of gate + up"},
        {.names = "split-gate-up", .kind = MOE_OPT_FLAG, .dest = &o.split,
         .help = "write ffn_gate_exps + ffn_up_exps instead of ffn_gate_up_exps"},
        {.names = "gate-up-order", .kind = MOE_OPT_STRING, .dest = &o.gate_up_order,
         .arg_name = "ORDER",
         .help = "row order of merged inputs: gate-first (llama.cpp) or up-first (early "
                 "ik_llama.cpp); outputs are always gate-first"},
        {.names = "interleave", .kind = MOE_OPT_FLAG, .dest = &o.interleave,
         .help = "re-lay quantized rows in ik_llama.cpp's interleaved types (q4_0 -> q4_0_r8, "
                 "q4_K -> q4_k_r4, ...) for the fast CPU kernels; lossless"},
        {.names = "interleave-pattern", .kind = MOE_OPT_STRING, .dest = &o.interleave_pattern,
         .arg_name = "REGEX",
         .help = "tensors to interleave (default: routed experts, '_exps\\.'; '.' = all)"},
        {.names = "deinterleave", .kind = MOE_OPT_FLAG, .dest = &o.deinterleave,
         .help = "write interleaved tensors in their plain type again; lossless"},
        {.names = "split-max-size", .kind = MOE_OPT_SIZE, .dest = &o.split_max_size,
         .arg_name = "SIZE", .help = "write shards of at most SIZE tensor bytes (e.g. 4G)"},
        {.names = "split-max-tensors", .kind = MOE_OPT_INT, .dest = &o.split_max_tensors,
         .arg_name = "N", .help = "write shards of at most N tensors", .min = 1,
         .max = INT32_MAX},
        {.names = "zstd", .kind = MOE_OPT_OPTIONAL_INT, .dest = &o.zstd_level, .def_int = 3,
         .min = -7, .max = 22,
         .help = "write OUT.zst: seekable zstd frames that stock `zstd -d` restores"},
        {.names = "t,threads", .kind = MOE_OPT_INT, .dest = &o.threads, .arg_name = "N",
         .help = "threads for compression (default: all cores)", .min = 1, .max = 1024},
        {.names = "q,quiet", .kind = MOE_OPT_FLAG, .dest = &o.quiet, .help = "only errors"},
        {0},
    };
    const moe_cli cli = {.prog = "moe-repack", .synopsis = "[options] IN.gguf OUT.gguf",
                         .summary = summary, .opts = opts, .min_positional = 2,
                         .max_positional = 2, .positional_name = "file"};
    moe_log_set_prog("moe-repack");
    moe_err err = {0};
    int first = 0, n_pos = 0;
    bool help = false;
    moe_status st = moe_cli_parse(&cli, argc, argv, &first, &n_pos, &help, &err);
    if (st == MOE_OK && !help && o.merge && o.split)
        st = moe_fail(&err, MOE_ERR_USAGE, "--merge-gate-up and --split-gate-up exclude each other");
    if (st == MOE_OK && !help && o.interleave && o.deinterleave)
        st = moe_fail(&err, MOE_ERR_USAGE, "--interleave and --deinterleave exclude each other");
    if (st == MOE_OK && !help && o.gate_up_order && strcmp(o.gate_up_order, "gate-first") &&
        strcmp(o.gate_up_order, "up-first"))
        st = moe_fail(&err, MOE_ERR_USAGE, "--gate-up-order must be gate-first or up-first, not '%s'",
                      o.gate_up_order);
    int exit_code;
    if (moe_cli_parse_done("moe-repack", st, help, &err, &exit_code))
        return exit_code;
    if (o.quiet || o.json)
        moe_log_set_level(MOE_LOG_WARN);
    if (o.threads == 0)
        o.threads = moe_online_cpus();
    moe_tempfile_install_handlers();
    st = run(&o, argv[first], argv[first + 1], &err);
    return moe_cli_finish("moe-repack", st, &err);
}
