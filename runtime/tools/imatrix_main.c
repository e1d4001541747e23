/* moe-imatrix: an importance matrix for a GGUF model from a calibration
 * text, as llama-imatrix computes it (chunks of -c tokens, BOS first where the
 * vocabulary asks, per-column mean squares of every weight's input, one slice
 * per expert for stacked expert tensors fed only the tokens routed to it),
 * written in llama.cpp's binary .dat format or its GGUF form, for
 * moe-quantize --imatrix (and llama-quantize).
 *
 * Everything goes through the public API (the matmul observer) and
 * runtime/quality; this file owns the options, the run and the report. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "formats/base/cli.h"
#include "formats/gguf/gguf.h"
#include "formats/base/log.h"
#include "runtime/tools/placement_cli.h"
#include "runtime/include/moe.h"
#include "runtime/quality/chunks.h"
#include "runtime/quality/expert_stats.h"
#include "runtime/quality/imatrix_collect.h"
#include "runtime/quality/progress.h"

#define PROG "moe-imatrix"

typedef struct im_opts {
    const char *model, *file, *out, *format;
    const char *expert_stats; /* --expert-stats FILE.json: every token counts as prompt */
    int64_t n_ctx, n_batch, threads, chunks;
    bool process_output, no_ppl, json, no_mmap, verbose;
    moe_placement_opts place; /* -ngl, -ot, --cpu-moe... */
} im_opts;

typedef struct im_run {
    const moe_chunk_plan *plan;
    moe_imatrix_collector *coll;
    moe_ppl_acc acc;
    moe_progress prog;
    FILE *out;
} im_run;

static moe_status on_row(void *user, int32_t chunk, int32_t j, const float *logits,
                         moe_token next, moe_err *err) {
    im_run *r = user;
    moe_ppl_add(&r->acc, moe_nll(logits, r->plan->n_vocab, next));
    if (j == r->plan->n_ctx - 2) {
        fprintf(r->out, "[%" PRId32 "]%.4f,", chunk + 1, moe_ppl_value(&r->acc));
        fflush(r->out);
    }
    /* the observer cannot fail a decode: stop at the first row after its error */
    return moe_imatrix_collector_status(r->coll, err);
}

static void on_progress(void *user, int32_t chunks_done, double seconds) {
    im_run *r = user;
    moe_progress_update(&r->prog, chunks_done, seconds);
}

static void before_decode(void *user) {
    im_run *r = user;
    moe_imatrix_collector_begin_call(r->coll);
}

/* The model's expert count from its GGUF header ("<arch>.expert_count"), so
 * that every expert gets its slice even if the text never routes to it; 0
 * when the header cannot be read here (compressed files): slices then grow
 * to the largest expert seen. */
static int32_t expert_count(const char *path, const moe_model *m) {
    moe_gguf_file *f = NULL;
    moe_err err = {0};
    int64_t n = 0;
    char key[96];
    snprintf(key, sizeof key, "%s.expert_count", moe_model_arch_name(m));
    if (moe_gguf_file_open(path, true, &f, &err) == MOE_OK &&
        moe_gguf_get_int(f->g, key, &n, &err) == MOE_OK && n > 0 && n <= INT32_MAX) {
        moe_gguf_file_close(f);
        return (int32_t)n;
    }
    moe_gguf_file_close(f);
    MOE_DEBUG("%s: no %s (%s): expert slices follow the experts seen", path, key, err.msg);
    return 0;
}

/* s as a JSON string literal */
static void json_str(const char *s) {
    putchar('"');
    for (; *s; s++) {
        unsigned char ch = (unsigned char)*s;
        if (ch == '"' || ch == '\\')
            printf("\\%c", ch);
        else if (ch < 0x20)
            printf("\\u%04x", ch);
        else
            putchar(ch);
    }
    putchar('"');
}

static bool want_gguf(const im_opts *o) {
    if (o->format)
        return !strcmp(o->format, "gguf");
    size_t n = strlen(o->out);
    return n >= 5 && !strcmp(o->out + n - 5, ".gguf");
}

static moe_status save(const im_opts *o, const im_run *r, moe_err *err) {
    int64_t n = moe_imatrix_collector_n_entries(r->coll);
    if (want_gguf(o)) {
        MOE_TRY(moe_imatrix_save_gguf(r->coll, o->out, o->file, r->plan->n_ctx, err));
    } else {
        MOE_TRY(moe_imatrix_save_dat(r->coll, o->out, o->file, &n, err));
    }
    MOE_INFO("stored %" PRId64 " entries (%" PRId32 " calls) in %s", n,
             moe_imatrix_collector_n_calls(r->coll), o->out);
    return MOE_OK;
}

static moe_status collect(const im_opts *o, moe_model *m, im_run *r, moe_err *err) {
    moe_token *tokens = NULL;
    int32_t n_tokens = 0;
    moe_chunk_plan plan;
    moe_context *ctx = NULL;
    r->plan = &plan;
    moe_status st = moe_quality_tokenize_file(m, o->file, &tokens, &n_tokens, err);
    int32_t n_ctx = (int32_t)o->n_ctx, n_batch = (int32_t)o->n_batch;
    if (st == MOE_OK) /* llama-imatrix: one chunk per decode at most */
        st = moe_chunk_plan_make(m, n_tokens, n_ctx, n_batch < n_ctx ? n_batch : n_ctx, false,
                                 (int32_t)o->chunks, &plan, err);
    if (st == MOE_OK)
        st = moe_imatrix_collector_create(o->process_output, expert_count(o->model, m), &r->coll,
                                          err);
    if (st == MOE_OK) {
        moe_context_params cp = moe_chunk_plan_context_params(&plan, (int)o->threads);
        moe_placement_cli_apply_ctx(&o->place, &cp);
        st = moe_context_create(m, &cp, &ctx, err);
    }
    moe_expert_stats *expert_stats = NULL;
    if (st == MOE_OK)
        st = moe_expert_stats_begin(ctx, m, o->model, o->expert_stats, &expert_stats, err);
    if (st == MOE_OK) {
        moe_context_set_matmul_observer(ctx, moe_imatrix_observe, r->coll);
        MOE_INFO("computing over %" PRId32 " chunks with batch_size %" PRId32, plan.n_chunk,
                 plan.n_batch);
        moe_progress_start(&r->prog, PROG, plan.n_chunk, plan.n_ctx);
        const moe_chunk_callbacks cb = {.row = o->no_ppl ? NULL : on_row,
                                        .progress = on_progress, .before_decode = before_decode,
                                        .user = r};
        st = moe_chunk_run(ctx, &plan, tokens, &cb, err);
        st = moe_expert_stats_end(expert_stats, o->expert_stats, st, err);
    }
    if (st == MOE_OK)
        st = moe_imatrix_collector_status(r->coll, err);
    if (st == MOE_OK && !o->no_ppl)
        fprintf(r->out, "\nFinal estimate: PPL = %.4f +/- %.5f\n", moe_ppl_value(&r->acc),
                moe_ppl_error(&r->acc));
    if (st == MOE_OK)
        moe_progress_finish(&r->prog, r->prog.last_seconds);
    if (st == MOE_OK)
        st = save(o, r, err);
    if (st == MOE_OK && o->json) {
        double s = r->prog.last_seconds;
        printf("{\n  \"output\": ");
        json_str(o->out);
        printf(",\n  \"format\": \"%s\",\n  \"entries\": %" PRId64
               ",\n  \"chunks\": %" PRId32 ",\n  \"calls\": %" PRId32 ",\n  \"n_ctx\": %" PRId32
               ",\n  \"seconds\": %.6f,\n"
               "  \"tokens_per_second\": %.3f,\n  \"ppl\": %.17g,\n  \"ppl_err\": %.17g\n}\n",
               want_gguf(o) ? "gguf" : "dat", moe_imatrix_collector_n_entries(r->coll),
               plan.n_chunk, moe_imatrix_collector_n_calls(r->coll), plan.n_ctx, s,
               s > 0 ? (double)plan.n_chunk * plan.n_ctx / s : 0.0, moe_ppl_value(&r->acc),
               moe_ppl_error(&r->acc));
    }
    moe_context_free(ctx);
    free(tokens);
    return st;
}

static moe_status run(const im_opts *o, moe_err *err) {
    moe_model_params mp = moe_model_default_params();
    mp.use_mmap = !o->no_mmap;
    mp.n_threads = (int)o->threads;
    moe_model *m = NULL;
    moe_expert_counts *hot = NULL;
    moe_status st = moe_placement_cli_apply(&o->place, (int32_t)o->n_ctx, &mp, &hot, err);
    if (st == MOE_OK)
        st = moe_model_load(o->model, &mp, &m, err);
    free(hot);
    if (st != MOE_OK) {
        if (!strstr(err->msg, o->model))
            moe_err_prefix(err, "%s", o->model);
        return st;
    }
    im_run r = {.out = o->json ? stderr : stdout};
    st = collect(o, m, &r, err);
    moe_imatrix_collector_free(r.coll);
    moe_model_free(m);
    return st;
}

static moe_status check_opts(const im_opts *o, moe_err *err) {
    MOE_FAIL_IF(!o->model, err, MOE_ERR_USAGE, "no model given (-m FILE)");
    MOE_FAIL_IF(!o->file, err, MOE_ERR_USAGE, "no calibration text given (-f FILE)");
    MOE_FAIL_IF(o->format && strcmp(o->format, "dat") && strcmp(o->format, "gguf"), err,
                MOE_ERR_USAGE, "option --output-format: '%s' is neither dat nor gguf",
                o->format);
    return MOE_OK;
}

int main(int argc, char **argv) {
    im_opts o = {.out = "imatrix.dat", .n_ctx = 512, .n_batch = 2048, .chunks = -1,
                 .place = MOE_PLACEMENT_OPTS_INIT};
    static const char summary[] =
        "Computes an importance matrix from a calibration text as llama-imatrix does: for\n"
        "every weight of the blk.* tensors, the mean square of each input column over the\n"
        "text's tokens (chunks of -c tokens); stacked expert tensors get one slice per\n"
        "expert from the tokens routed to it. Writes llama.cpp's .dat format, or its GGUF\n"
        "form when OUT ends in .gguf (or --output-format gguf). Also prints the text's\n"
        "perplexity as llama-imatrix does (--no-ppl: not).";
    const moe_opt opts[] = {
        {.names = "m,model", .kind = MOE_OPT_STRING, .dest = &o.model, .arg_name = "FILE",
         .help = "model (.gguf, first shard of a split set, or .gguf.zst)"},
        {.names = "f,file", .kind = MOE_OPT_STRING, .dest = &o.file, .arg_name = "FILE",
         .help = "calibration text (one trailing newline dropped, as llama.cpp does)"},
        {.names = "o,output-file", .kind = MOE_OPT_STRING, .dest = &o.out, .arg_name = "OUT",
         .help = "output file (default imatrix.dat)"},
        {.names = "output-format", .kind = MOE_OPT_STRING, .dest = &o.format,
         .arg_name = "FMT", .help = "dat or gguf (default: gguf for OUT ending in .gguf)"},
        {.names = "c,ctx-size", .kind = MOE_OPT_INT, .dest = &o.n_ctx, .arg_name = "N",
         .help = "tokens per chunk (default 512)", .min = 4, .max = 1 << 20},
        {.names = "b,batch-size", .kind = MOE_OPT_INT, .dest = &o.n_batch, .arg_name = "N",
         .help = "tokens per decode, at most n_ctx (default 2048); each decode counts one "
                 "call", .min = 1, .max = 1 << 20},
        {.names = "chunks", .kind = MOE_OPT_INT, .dest = &o.chunks, .arg_name = "N",
         .help = "use at most N chunks (default: all)", .min = 1, .max = INT32_MAX},
        {.names = "t,threads", .kind = MOE_OPT_INT, .dest = &o.threads, .arg_name = "N",
         .help = "threads (default: all cores)", .min = 1, .max = 4096},
        {.names = "process-output", .kind = MOE_OPT_FLAG, .dest = &o.process_output,
         .help = "also collect output.weight"},
        {.names = "no-ppl", .kind = MOE_OPT_FLAG, .dest = &o.no_ppl,
         .help = "do not compute the perplexity"},
        {.names = "json", .kind = MOE_OPT_FLAG, .dest = &o.json,
         .help = "a JSON summary on stdout (the report lines go to stderr)"},
        {.names = "no-mmap", .kind = MOE_OPT_FLAG, .dest = &o.no_mmap,
         .help = "read the weights into memory instead of mapping the file"},
        {.names = "expert-stats", .kind = MOE_OPT_STRING, .dest = &o.expert_stats,
         .arg_name = "FILE.json", .help = "write how often each expert was chosen per MoE layer "
                                          "(all tokens count as prompt; replaces FILE)"},
        {.names = "v,verbose", .kind = MOE_OPT_FLAG, .dest = &o.verbose, .help = "debug logging"},
        MOE_PLACEMENT_OPTS(&o.place),
        {0},
    };
    const moe_cli cli = {.prog = PROG, .synopsis = "-m MODEL -f FILE [-o imatrix.dat] [options]",
                         .summary = summary, .opts = opts};
    moe_log_set_prog(PROG);
    moe_err err = {0};
    bool help = false;
    moe_status st = moe_cli_parse(&cli, argc, argv, NULL, NULL, &help, &err);
    if (st == MOE_OK && !help && o.place.list_devices) {
        moe_placement_cli_list(stdout);
        return 0;
    }
    if (st == MOE_OK && !help)
        st = check_opts(&o, &err);
    int exit_code;
    if (moe_cli_parse_done(PROG, st, help, &err, &exit_code))
        return exit_code;
    if (o.verbose)
        moe_log_set_level(MOE_LOG_DEBUG);
    st = run(&o, &err);
    return moe_cli_finish(PROG, st, &err);
}
