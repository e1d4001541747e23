/* moe-quantize: requantize a GGUF model (bit-exact with llama-quantize) and
 * optionally row-interleave tensors for the fast CPU kernels, offline. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "convert/lora_merge.h"
#include "convert/quantize.h"
#include "formats/base/cli.h"
#include "formats/base/cpu.h"
#include "formats/base/log.h"
#include "formats/base/tempfile.h"

typedef struct quantize_cli {
    const char *type, *imatrix, *output_type, *token_embd_type, *interleave_pattern;
    moe_opt_list tensor_types;
    moe_opt_list merge_lora; /* --merge-lora FILE[:SCALE] */
    bool pure, interleave, dry_run, json, stats, force, quiet, allow_requantize;
    int64_t threads;
} quantize_cli;

static void json_str(const char *s) {
    putchar('"');
    for (; *s; s++) {
        if (*s == '"' || *s == '\\')
            putchar('\\');
        putchar(*s);
    }
    putchar('"');
}

static void print_json(const moe_quantize_report *r, const quantize_cli *o, bool dry) {
    printf("{\n  \"type\": ");
    json_str(o->type);
    printf(",\n  \"dry_run\": %s,\n  \"tensors\": [", dry ? "true" : "false");
    for (uint64_t i = 0; i < r->n_tensors; i++) {
        const moe_quantize_tensor *t = &r->tensors[i];
        printf("%s\n    {\"name\": ", i ? "," : "");
        json_str(t->name);
        printf(", \"from\": \"%s\", \"to\": \"%s\", \"reason\": \"%s\", \"interleaved\": %s, "
               "\"imatrix\": %s, \"bytes_in\": %" PRIu64 ", \"bytes_out\": %" PRIu64,
               moe_type_name(t->src_type), moe_type_name(t->choice.type),
               moe_type_reason_name(t->choice.reason), t->choice.interleaved ? "true" : "false",
               t->used_imatrix ? "true" : "false", t->bytes_in, t->bytes_out);
        if (t->choice.note) {
            printf(", \"note\": ");
            json_str(t->choice.note);
        }
        if (!dry)
            printf(", \"xxh3\": \"%016" PRIx64 "\"", t->xxh3);
        if (o->stats && t->converted && !dry)
            printf(", \"rms_error\": %.6g, \"rms_source\": %.6g", t->rms_error, t->rms_ref);
        putchar('}');
    }
    printf("\n  ],\n  \"bytes_in\": %" PRIu64 ",\n  \"bytes_out\": %" PRIu64
           ",\n  \"converted\": %" PRIu64 ",\n  \"fallbacks\": %" PRIu64
           ",\n  \"interleaved\": %" PRIu64 ",\n  \"seconds\": %.3f\n}\n",
           r->bytes_in, r->bytes_out, r->n_converted, r->n_fallback, r->n_interleaved, r->seconds);
}

static void print_table(const moe_quantize_report *r, bool stats, bool dry) {
    for (uint64_t i = 0; i < r->n_tensors; i++) {
        const moe_quantize_tensor *t = &r->tensors[i];
        fprintf(dry ? stdout : stderr, "[%4" PRIu64 "/%4" PRIu64 "] %-36s %-9s -> %-9s %-9s %10.2f MB",
                i + 1, r->n_tensors, t->name, moe_type_name(t->src_type),
                moe_type_name(t->choice.type), moe_type_reason_name(t->choice.reason),
                (double)t->bytes_out / 1e6);
        if (stats && t->converted && !dry)
            fprintf(stderr, "  rms %.3g (%.2f%%)", t->rms_error,
                    t->rms_ref > 0 ? 100.0 * t->rms_error / t->rms_ref : 0.0);
        if (t->choice.note)
            fprintf(dry ? stdout : stderr, "  (%s)", t->choice.note);
        fputc('\n', dry ? stdout : stderr);
    }
}

static moe_status parse_type_opt(const char *name, const char *what, moe_type *out, moe_err *err) {
    *out = (moe_type)MOE_TYPE_ID_LIMIT;
    if (!name)
        return MOE_OK;
    MOE_FAIL_IF(!moe_type_from_name(name, out) || moe_type_get(*out)->interleave_rows, err,
                MOE_ERR_USAGE, "%s: '%s' is not a plain tensor type", what, name);
    return MOE_OK;
}

/* --merge-lora: writes in with every adapter merged (touched tensors as F32)
 * to a temp file beside out, whose path goes to merged; the caller removes it. */
static moe_status merge_loras(const quantize_cli *o, const char *in, const char *out,
                              char *merged, size_t cap, moe_err *err) {
    static char bufs[MOE_OPT_LIST_MAX][4096];
    moe_lora_merge_spec specs[MOE_OPT_LIST_MAX];
    for (int i = 0; i < o->merge_lora.count; i++)
        MOE_TRY(moe_lora_merge_parse(o->merge_lora.items[i], bufs[i], sizeof bufs[i], &specs[i],
                                     err));
    char *name = moe_temp_name(out, "lora-merged"); /* hidden, pid-named: see tempfile.h */
    MOE_FAIL_IF(!name, err, MOE_ERR_NOMEM, "out of memory");
    bool fits = strlen(name) < cap;
    if (fits)
        memcpy(merged, name, strlen(name) + 1);
    free(name);
    MOE_FAIL_IF(!fits, err, MOE_ERR_USAGE, "output path too long");
    MOE_TRY(moe_lora_merge_file(in, specs, o->merge_lora.count, merged, true, false, err));
    moe_status st = moe_tempfile_register(merged, err);
    if (st != MOE_OK)
        unlink(merged);
    return st;
}

static moe_status run(const quantize_cli *o, const char *in, const char *out, moe_err *err) {
    moe_quantize_opts q = {.pure = o->pure, .imatrix_path = o->imatrix,
                           .interleave = o->interleave, .interleave_pattern = o->interleave_pattern,
                           .threads = (int)o->threads, .dry_run = o->dry_run, .stats = o->stats,
                           .overwrite = o->force,
                           .progress = !o->quiet && !o->json,
                           .tensor_rules = o->tensor_types.items,
                           .n_tensor_rules = o->tensor_types.count};
    MOE_TRY(moe_qtype_parse(o->type, &q.choice, err));
    MOE_TRY(parse_type_opt(o->output_type, "--output-tensor-type", &q.output_type, err));
    MOE_TRY(parse_type_opt(o->token_embd_type, "--token-embedding-type", &q.token_embd_type, err));
    moe_quantize_report rep;
    char merged[4200];
    if (o->merge_lora.count) { /* adapters baked in first (float), then quantized */
        MOE_TRY(merge_loras(o, in, out, merged, sizeof merged, err));
        moe_status st = moe_quantize_file(merged, out, &q, &rep, err);
        unlink(merged);
        moe_tempfile_unregister(merged);
        MOE_TRY(st);
    } else {
        MOE_TRY(moe_quantize_file(in, out, &q, &rep, err));
    }
    if (o->json)
        print_json(&rep, o, o->dry_run);
    else if (o->dry_run || moe_log_get_level() >= MOE_LOG_INFO)
        print_table(&rep, o->stats, o->dry_run);
    if (!o->dry_run)
        MOE_INFO("wrote %s as %s: %" PRIu64 " of %" PRIu64 " tensors converted (%" PRIu64
                 " interleaved, %" PRIu64 " fallbacks), %.1f MB -> %.1f MB in %.2f s (%.1f MB/s in)",
                 out, q.choice.name, rep.n_converted, rep.n_tensors, rep.n_interleaved,
                 rep.n_fallback, (double)rep.bytes_in / 1e6, (double)rep.bytes_out / 1e6,
                 rep.seconds, (double)rep.bytes_in / 1e6 / (rep.seconds + 1e-9));
    moe_quantize_report_free(&rep);
    return MOE_OK;
}

int main(int argc, char **argv) {
    quantize_cli o = {0};
    static const char summary[] =
        "Requantizes a GGUF model the way llama-quantize does (same per-tensor rules, same\n"
        "bytes), and can write ik_llama.cpp's row-interleaved layouts for fast CPU kernels.\n"
        "TYPE: Q4_0 Q4_1 Q5_0 Q5_1 Q8_0 Q2_K Q2_K_S Q3_K_S Q3_K_M Q3_K_L Q4_K_S Q4_K_M\n"
        "Q5_K_S Q5_K_M Q6_K IQ4_NL IQ4_XS F16 BF16 F32 (Q3_K/Q4_K/Q5_K mean the _M mixes),\n"
        "or an interleaved q4_0_r8 q8_0_r8 iq4_nl_r4 q5_0_r4 q2_k_r4..q6_k_r4 iq4_xs_r8\n"
        "(every eligible tensor interleaved). The type may also be given as a third\n"
        "positional argument, as with llama-quantize.\n"
        "A legacy split-expert IN (blk.N.ffn_up.E.weight) is stacked on the way: the\n"
        "output is byte for byte what moe-repack then moe-quantize give.";
    const moe_opt opts[] = {
        {.names = "type", .kind = MOE_OPT_STRING, .dest = &o.type, .arg_name = "TYPE",
         .help = "target type or mix (see above)"},
        {.names = "pure", .kind = MOE_OPT_FLAG, .dest = &o.pure,
         .help = "one type for every quantizable tensor (no mix rules)"},
        {.names = "tensor-type", .kind = MOE_OPT_LIST, .dest = &o.tensor_types,
         .arg_name = "REGEX=TYPE", .help = "type for tensors matching REGEX (repeatable; first match wins)"},
        {.names = "output-tensor-type", .kind = MOE_OPT_STRING, .dest = &o.output_type,
         .arg_name = "TYPE", .help = "type of output.weight"},
        {.names = "token-embedding-type", .kind = MOE_OPT_STRING, .dest = &o.token_embd_type,
         .arg_name = "TYPE", .help = "type of token_embd.weight"},
        {.names = "imatrix", .kind = MOE_OPT_STRING, .dest = &o.imatrix, .arg_name = "FILE",
         .help = "importance matrix from llama-imatrix (.dat or GGUF)"},
        {.names = "interleave", .kind = MOE_OPT_FLAG, .dest = &o.interleave,
         .help = "write the row-interleaved variant of each tensor's type (routed experts only "
                 "unless --interleave-pattern)"},
        {.names = "interleave-pattern", .kind = MOE_OPT_STRING, .dest = &o.interleave_pattern,
         .arg_name = "REGEX", .help = "interleave only tensors matching REGEX ('.' = all eligible)"},
        {.names = "allow-requantize", .kind = MOE_OPT_FLAG, .dest = &o.allow_requantize,
         .help = "accepted for llama-quantize compatibility (requantizing only warns)"},
        {.names = "merge-lora", .kind = MOE_OPT_LIST, .dest = &o.merge_lora,
         .arg_name = "FILE[:SCALE]", .help = "bake this LoRA adapter into the weights first "
                                            "(float math, then TYPE); repeatable, scale 1 default"},
        {.names = "dry-run", .kind = MOE_OPT_FLAG, .dest = &o.dry_run,
         .help = "print each tensor's type choice and write nothing"},
        {.names = "json", .kind = MOE_OPT_FLAG, .dest = &o.json, .help = "machine-readable report"},
        {.names = "stats", .kind = MOE_OPT_FLAG, .dest = &o.stats,
         .help = "report each converted tensor's rms error against its source"},
        {.names = "t,threads", .kind = MOE_OPT_INT, .dest = &o.threads, .arg_name = "N",
         .help = "threads (default: all cores); output does not depend on it", .min = 1,
         .max = 256},
        {.names = "f,force", .kind = MOE_OPT_FLAG, .dest = &o.force, .help = "replace OUT"},
        {.names = "q,quiet", .kind = MOE_OPT_FLAG, .dest = &o.quiet, .help = "only errors"},
        {0},
    };
    const moe_cli cli = {.prog = "moe-quantize", .synopsis = "[options] IN.gguf OUT.gguf [TYPE]",
                         .summary = summary, .opts = opts, .min_positional = 2,
                         .max_positional = 3, .positional_name = "argument"};
    moe_log_set_prog("moe-quantize");
    moe_err err = {0};
    int first = 0, n_pos = 0;
    bool help = false;
    moe_status st = moe_cli_parse(&cli, argc, argv, &first, &n_pos, &help, &err);
    if (st == MOE_OK && !help && n_pos == 3) {
        if (o.type)
            st = moe_fail(&err, MOE_ERR_USAGE, "type given twice (--type and a third argument)");
        o.type = argv[first + 2];
    }
    if (st == MOE_OK && !help && !o.type)
        st = moe_fail(&err, MOE_ERR_USAGE, "no type given (--type TYPE)");
    int exit_code;
    if (moe_cli_parse_done("moe-quantize", st, help, &err, &exit_code))
        return exit_code;
    if (o.quiet || o.json)
        moe_log_set_level(MOE_LOG_WARN);
    if (o.threads == 0)
        o.threads = moe_online_cpus();
    moe_tempfile_install_handlers();
    st = run(&o, argv[first], argv[first + 1], &err);
    return moe_cli_finish("moe-quantize", st, &err);
}
