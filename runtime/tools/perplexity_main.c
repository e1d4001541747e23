/* moe-perplexity: perplexity and KL-divergence of a GGUF model on a text
 * file, the way llama-perplexity measures them (same chunking, BOS handling,
 * scored half, error estimates and report lines), so the numbers compare
 * with llama.cpp's.
 *
 *   moe-perplexity -m M -f FILE [-c 512] [-b 2048]          perplexity
 *   ... --kl-divergence-base OUT                             also save M's log-probs
 *   moe-perplexity -m Q --kl-divergence-base OUT --kl-divergence   compare Q with them
 *
 * Everything goes through the public API and runtime/quality; this file owns
 * the options, the three modes and the report. */
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "formats/base/cli.h"
#include "formats/base/log.h"
#include "runtime/tools/placement_cli.h"
#include "runtime/include/moe.h"
#include "runtime/quality/chunks.h"
#include "runtime/quality/expert_stats.h"
#include "runtime/quality/kld.h"
#include "runtime/quality/progress.h"

#define PROG "moe-perplexity"

typedef struct ppl_opts {
    const char *model, *file, *kld_base;
    const char *expert_stats; /* --expert-stats FILE.json: every token counts as prompt */
    int64_t n_ctx, n_batch, threads, chunks;
    bool kld, json, no_mmap, verbose;
    moe_placement_opts place; /* -ngl, -ot, --cpu-moe... */
} ppl_opts;

/* State shared by the row callbacks of one run. */
typedef struct ppl_run {
    const ppl_opts *o;
    const moe_chunk_plan *plan;
    FILE *out;               /* human report: stdout, or stderr with --json */
    moe_ppl_acc acc;
    moe_logprob_row row, base_row;
    double *scratch;
    moe_kld_writer *writer;  /* saving a base */
    moe_kld_reader *reader;  /* comparing with one */
    moe_kld_stats stats;
    moe_progress prog;
} ppl_run;

/* ---- per row ------------------------------------------------------------------------------ */

static void print_kld_chunk(ppl_run *r, int32_t chunk) {
    moe_kld_summary s;
    moe_kld_summarize(&r->stats, false, &s);
    fprintf(r->out,
            "%4" PRId32 "    %10.4f ± %10.4f    %10.5f ± %10.5f    %10.5f ± %10.5f    %6.3f ± %6.3f %%"
            "    %6.3f ± %6.3f %%\n", chunk + 1, s.ppl_q.v, s.ppl_q.err, s.ln_ppl_ratio.v,
            s.ln_ppl_ratio.err, s.kld.v, s.kld.err, 100.0 * s.rms_dp.v, 100.0 * s.rms_dp.err,
            100.0 * s.same_top.v, 100.0 * s.same_top.err);
}

static moe_status on_row(void *user, int32_t chunk, int32_t j, const float *logits,
                         moe_token next, moe_err *err) {
    ppl_run *r = user;
    const int64_t n_vocab = r->plan->n_vocab;
    if (r->writer || r->reader) {
        moe_logprob_quantize(logits, n_vocab, next, &r->row);
        moe_ppl_add(&r->acc, r->row.nll);
    } else {
        moe_ppl_add(&r->acc, moe_nll(logits, n_vocab, next));
    }
    if (r->writer)
        MOE_TRY(moe_kld_writer_row(r->writer, &r->row, err));
    if (r->reader) {
        MOE_TRY(moe_kld_reader_row(r->reader, &r->base_row, err));
        MOE_FAIL_IF(r->base_row.next != next, err, MOE_ERR_FORMAT,
                    "%s: chunk %" PRId32 " position %" PRId32 " scores token %" PRId32
                    ", the text has %" PRId32, r->o->kld_base, chunk, j, r->base_row.next, next);
        double kld = moe_logprob_kld(&r->base_row, &r->row, n_vocab, r->scratch);
        MOE_TRY(moe_kld_stats_add(&r->stats, kld, r->row.nll, r->base_row.nll,
                                  r->row.top == r->base_row.top, err));
    }
    if (j == r->plan->n_ctx - 2) { /* the chunk's last scored row */
        if (r->reader) {
            print_kld_chunk(r, chunk);
        } else {
            fprintf(r->out, "[%" PRId32 "]%.4f,", chunk + 1, moe_ppl_value(&r->acc));
            fflush(r->out);
        }
    }
    return MOE_OK;
}

static void on_progress(void *user, int32_t chunks_done, double seconds) {
    ppl_run *r = user;
    moe_progress_update(&r->prog, chunks_done, seconds);
}

/* ---- reports ------------------------------------------------------------------------------ */

static void print_kld_report(FILE *f, const moe_kld_summary *s) {
    fprintf(f, "====== Perplexity statistics ======\n");
    fprintf(f, "Mean PPL(Q)                   : %10.6f ± %10.6f\n", s->ppl_q.v, s->ppl_q.err);
    fprintf(f, "Mean PPL(base)                : %10.6f ± %10.6f\n", s->ppl_base.v,
            s->ppl_base.err);
    fprintf(f, "Cor(ln(PPL(Q)), ln(PPL(base))): %6.2f%%\n", 100.0 * s->ln_ppl_cor);
    fprintf(f, "Mean ln(PPL(Q)/PPL(base))     : %10.6f ± %10.6f\n", s->ln_ppl_ratio.v,
            s->ln_ppl_ratio.err);
    fprintf(f, "Mean PPL(Q)/PPL(base)         : %10.6f ± %10.6f\n", s->ppl_ratio.v,
            s->ppl_ratio.err);
    fprintf(f, "Mean PPL(Q)-PPL(base)         : %10.6f ± %10.6f\n\n", s->ppl_diff.v,
            s->ppl_diff.err);
    static const char *const kl[11] = {"Maximum", "99.9%  ", "99.0%  ", "95.0%  ", "90.0%  ",
                                       "Median ", "10.0%  ", " 5.0%  ", " 1.0%  ", " 0.1%  ",
                                       "Minimum"};
    fprintf(f, "====== KL divergence statistics ======\n");
    fprintf(f, "Mean    KLD: %10.6f ± %10.6f\n", s->kld.v, s->kld.err);
    for (int i = 0; i < 11; i++)
        fprintf(f, "%s KLD: %10.6f\n", kl[i], s->kld_pct[i]);
    static const char *const dl[13] = {"Maximum", "99.9%  ", "99.0%  ", "95.0%  ", "90.0%  ",
                                       "75.0%  ", "Median ", "25.0%  ", "10.0%  ", " 5.0%  ",
                                       " 1.0%  ", " 0.1%  ", "Minimum"};
    fprintf(f, "\n====== Token probability statistics ======\n");
    fprintf(f, "Mean    Δp: %6.3f ± %5.3f %%\n", 100.0 * s->dp.v, 100.0 * s->dp.err);
    for (int i = 0; i < 13; i++)
        fprintf(f, "%s Δp: %6.3f%%\n", dl[i], 100.0 * s->dp_pct[i]);
    fprintf(f, "RMS Δp    : %6.3f ± %5.3f %%\n", 100.0 * s->rms_dp.v, 100.0 * s->rms_dp.err);
    fprintf(f, "Same top p: %6.3f ± %5.3f %%\n", 100.0 * s->same_top.v, 100.0 * s->same_top.err);
}

static void json_val(const char *key, moe_val v, bool comma) {
    printf("  \"%s\": %.17g,\n  \"%s_err\": %.17g%s\n", key, v.v, key, v.err, comma ? "," : "");
}

static void print_json(ppl_run *r, double seconds) {
    const moe_chunk_plan *p = r->plan;
    const char *mode = r->reader ? "kl-divergence" : r->writer ? "kl-divergence-base"
                                                               : "perplexity";
    printf("{\n  \"mode\": \"%s\",\n  \"n_ctx\": %" PRId32 ",\n  \"n_chunk\": %" PRId32
           ",\n  \"n_seq\": %" PRId32 ",\n  \"n_batch\": %" PRId32 ",\n  \"count\": %" PRId64
           ",\n  \"seconds\": %.6f,\n  \"tokens_per_second\": %.3f,\n",
           mode, p->n_ctx, p->n_chunk, p->n_seq, p->n_batch, r->acc.count, seconds,
           seconds > 0 ? (double)p->n_chunk * p->n_ctx / seconds : 0.0);
    json_val("ppl", (moe_val){moe_ppl_value(&r->acc), moe_ppl_error(&r->acc)}, r->reader);
    if (!r->reader) {
        printf("}\n");
        return;
    }
    moe_kld_summary s;
    moe_kld_summarize(&r->stats, true, &s);
    json_val("ppl_base", s.ppl_base, true);
    json_val("ln_ppl_ratio", s.ln_ppl_ratio, true);
    json_val("ppl_ratio", s.ppl_ratio, true);
    json_val("ppl_diff", s.ppl_diff, true);
    printf("  \"ln_ppl_cor\": %.17g,\n", s.ln_ppl_cor);
    json_val("kld", s.kld, true);
    printf("  \"kld_percentiles\": {");
    for (int i = 0; i < 11; i++)
        printf("%s\"%g\": %.17g", i ? ", " : "", 100.0 * moe_kld_pct_levels[i], s.kld_pct[i]);
    printf("},\n");
    json_val("dp", s.dp, true);
    printf("  \"dp_percentiles\": {");
    for (int i = 0; i < 13; i++)
        printf("%s\"%g\": %.17g", i ? ", " : "", 100.0 * moe_dp_pct_levels[i], s.dp_pct[i]);
    printf("},\n");
    json_val("rms_dp", s.rms_dp, true);
    json_val("same_top", s.same_top, false);
    printf("}\n");
}

/* ---- modes ------------------------------------------------------------------------------- */

/* KLD mode: the base file's header and tokens decide the run; -f, when
 * given, must tokenize to the same text. */
static moe_status open_base(const ppl_opts *o, moe_model *m, moe_kld_reader **rd,
                            moe_token **tokens, int32_t *n_tokens, moe_err *err) {
    MOE_TRY(moe_kld_reader_open(o->kld_base, rd, err));
    const moe_kld_header *h = moe_kld_reader_header(*rd);
    moe_status st = moe_kld_check_model(h, m, err);
    if (st != MOE_OK) {
        moe_err_prefix(err, "%s", o->kld_base);
        return st;
    }
    MOE_FAIL_IF(o->n_ctx > 0 && o->n_ctx != (int64_t)h->n_ctx, err, MOE_ERR_USAGE,
                "%s was computed with -c %" PRIu32 ", not %" PRId64 " (omit -c)", o->kld_base,
                h->n_ctx, o->n_ctx);
    const int64_t n_stored = (int64_t)h->n_chunk * h->n_ctx;
    if (o->file) {
        MOE_TRY(moe_quality_tokenize_file(m, o->file, tokens, n_tokens, err));
        MOE_FAIL_IF(*n_tokens < n_stored ||
                        memcmp(*tokens, moe_kld_reader_tokens(*rd), (size_t)n_stored * 4) != 0,
                    err, MOE_ERR_USAGE, "%s does not tokenize to the text %s was computed on",
                    o->file, o->kld_base);
        free(*tokens);
    }
    *tokens = malloc((size_t)n_stored * sizeof **tokens);
    MOE_FAIL_IF(!*tokens, err, MOE_ERR_NOMEM, "out of memory");
    memcpy(*tokens, moe_kld_reader_tokens(*rd), (size_t)n_stored * sizeof **tokens);
    *n_tokens = (int32_t)n_stored;
    MOE_INFO("%s: base %s (fingerprint %016" PRIx64 "%s), %" PRIu32 " chunks of %" PRIu32
             " tokens", o->kld_base, h->arch, h->model_fp,
             h->model_fp == moe_model_fingerprint(m) ? ", this very model" : "", h->n_chunk,
             h->n_ctx);
    return MOE_OK;
}

static moe_status prepare(const ppl_opts *o, moe_model *m, ppl_run *r, moe_chunk_plan *plan,
                          moe_token **tokens, moe_err *err) {
    int32_t n_tokens = 0;
    int32_t n_ctx = o->n_ctx > 0 ? (int32_t)o->n_ctx : 512, max_chunks = (int32_t)o->chunks;
    if (o->kld) {
        MOE_TRY(open_base(o, m, &r->reader, tokens, &n_tokens, err));
        const moe_kld_header *h = moe_kld_reader_header(r->reader);
        n_ctx = (int32_t)h->n_ctx;
        if (max_chunks < 0 || max_chunks > (int32_t)h->n_chunk)
            max_chunks = (int32_t)h->n_chunk;
        if (n_tokens < 2 * n_ctx) /* a one-chunk base is still a base */
            n_tokens = 2 * n_ctx;
    } else {
        MOE_TRY(moe_quality_tokenize_file(m, o->file, tokens, &n_tokens, err));
    }
    int32_t n_batch = o->n_batch > 0 ? (int32_t)o->n_batch : 2048;
    MOE_TRY(moe_chunk_plan_make(m, n_tokens, n_ctx, n_batch, true, max_chunks, plan, err));
    if (o->kld_base && !o->kld) {
        moe_kld_header h = moe_kld_header_make(m, plan);
        MOE_TRY(moe_kld_writer_create(o->kld_base, &h, *tokens, &r->writer, err));
    }
    r->row.codes = malloc((size_t)plan->n_vocab * sizeof *r->row.codes);
    r->base_row.codes = malloc((size_t)plan->n_vocab * sizeof *r->base_row.codes);
    r->scratch = malloc((size_t)plan->n_vocab * sizeof *r->scratch);
    MOE_FAIL_IF(!r->row.codes || !r->base_row.codes || !r->scratch, err, MOE_ERR_NOMEM,
                "out of memory");
    return MOE_OK;
}

static moe_status evaluate(const ppl_opts *o, moe_model *m, ppl_run *r, moe_err *err) {
    moe_chunk_plan plan;
    moe_token *tokens = NULL;
    moe_context *ctx = NULL;
    r->plan = &plan;
    moe_status st = prepare(o, m, r, &plan, &tokens, err);
    if (st == MOE_OK) {
        moe_context_params cp = moe_chunk_plan_context_params(&plan, (int)o->threads);
        moe_placement_cli_apply_ctx(&o->place, &cp);
        st = moe_context_create(m, &cp, &ctx, err);
    }
    moe_expert_stats *expert_stats = NULL;
    if (st == MOE_OK)
        st = moe_expert_stats_begin(ctx, m, o->model, o->expert_stats, &expert_stats, err);
    double seconds = 0;
    if (st == MOE_OK) {
        MOE_INFO("calculating perplexity over %" PRId32 " chunks, n_ctx=%" PRId32
                 ", batch_size=%" PRId32 ", n_seq=%" PRId32, plan.n_chunk, plan.n_ctx,
                 plan.n_batch, plan.n_seq);
        if (r->reader)
            fprintf(r->out, "chunk        PPL                ln(PPL(Q)/PPL(base))          KL "
                            "Divergence             Δp RMS            Same top p\n");
        moe_progress_start(&r->prog, PROG, plan.n_chunk, plan.n_ctx);
        const moe_chunk_callbacks cb = {.row = on_row, .progress = on_progress, .user = r};
        st = moe_chunk_run(ctx, &plan, tokens, &cb, err);
        seconds = r->prog.last_seconds;
        st = moe_expert_stats_end(expert_stats, o->expert_stats, st, err);
        if (!r->reader)
            fprintf(r->out, "\n");
    }
    if (st == MOE_OK && r->writer) {
        st = moe_kld_writer_finish(r->writer, err);
        r->writer = NULL;
        if (st == MOE_OK)
            MOE_INFO("saved the log-probabilities of %" PRId64 " rows to %s", r->acc.count,
                     o->kld_base);
    }
    if (st == MOE_OK) {
        fprintf(r->out, "Final estimate: PPL = %.4f +/- %.5f\n", moe_ppl_value(&r->acc),
                moe_ppl_error(&r->acc));
        if (r->reader) {
            moe_kld_summary s;
            moe_kld_summarize(&r->stats, true, &s);
            fprintf(r->out, "\n");
            print_kld_report(r->out, &s);
        }
        moe_progress_finish(&r->prog, seconds);
        if (o->json)
            print_json(r, seconds);
    }
    moe_context_free(ctx);
    free(tokens);
    return st;
}

/* The KV cells --fit counts: b / c chunks of c tokens share one cache, so
 * the larger of the two (the defaults of prepare). */
static int32_t kv_cells(const ppl_opts *o) {
    const int64_t n_ctx = o->n_ctx > 0 ? o->n_ctx : 512;
    const int64_t n_batch = o->n_batch > 0 ? o->n_batch : 2048;
    return (int32_t)(n_ctx > n_batch ? n_ctx : n_batch);
}

static moe_status run(const ppl_opts *o, moe_err *err) {
    moe_model_params mp = moe_model_default_params();
    mp.use_mmap = !o->no_mmap;
    mp.n_threads = (int)o->threads;
    moe_model *m = NULL;
    moe_expert_counts *hot = NULL;
    moe_status st = moe_placement_cli_apply(&o->place, kv_cells(o), &mp, &hot, err);
    if (st == MOE_OK)
        st = moe_model_load(o->model, &mp, &m, err);
    free(hot);
    if (st != MOE_OK) {
        if (!strstr(err->msg, o->model))
            moe_err_prefix(err, "%s", o->model);
        return st;
    }
    ppl_run r = {.o = o, .out = o->json ? stderr : stdout};
    st = evaluate(o, m, &r, err);
    moe_kld_writer_abort(r.writer);
    moe_kld_reader_close(r.reader);
    moe_kld_stats_free(&r.stats);
    free(r.row.codes);
    free(r.base_row.codes);
    free(r.scratch);
    moe_model_free(m);
    return st;
}

static moe_status check_opts(const ppl_opts *o, moe_err *err) {
    MOE_FAIL_IF(!o->model, err, MOE_ERR_USAGE, "no model given (-m FILE)");
    MOE_FAIL_IF(o->kld && !o->kld_base, err, MOE_ERR_USAGE,
                "--kl-divergence needs --kl-divergence-base FILE (the base's log-probabilities)");
    MOE_FAIL_IF(!o->kld && !o->file, err, MOE_ERR_USAGE, "no text given (-f FILE)");
    return MOE_OK;
}

int main(int argc, char **argv) {
    ppl_opts o = {.n_ctx = -1, .n_batch = -1, .chunks = -1, .place = MOE_PLACEMENT_OPTS_INIT};
    static const char summary[] =
        "Perplexity of a model on a text file, measured as llama-perplexity does: chunks of\n"
        "-c tokens (BOS first where the vocabulary asks), the second half of each chunk\n"
        "scored; prints [chunk]ppl as it goes and \"Final estimate: PPL = x +/- y\".\n"
        "--kl-divergence-base OUT also saves the model's log-probabilities (16-bit rows, see\n"
        "runtime/quality/kld.h); with --kl-divergence another model is compared with them:\n"
        "KL divergence, PPL ratio and difference, delta-p and same top token, as llama.cpp\n"
        "reports them (-f is then optional: the base file holds the tokens).";
    const moe_opt opts[] = {
        {.names = "m,model", .kind = MOE_OPT_STRING, .dest = &o.model, .arg_name = "FILE",
         .help = "model (.gguf, first shard of a split set, or .gguf.zst)"},
        {.names = "f,file", .kind = MOE_OPT_STRING, .dest = &o.file, .arg_name = "FILE",
         .help = "text to evaluate (one trailing newline dropped, as llama.cpp does)"},
        {.names = "c,ctx-size", .kind = MOE_OPT_INT, .dest = &o.n_ctx, .arg_name = "N",
         .help = "tokens per chunk (default 512; KLD: the base's)", .min = 4,
         .max = 1 << 20},
        {.names = "b,batch-size", .kind = MOE_OPT_INT, .dest = &o.n_batch, .arg_name = "N",
         .help = "tokens per decode (default 2048): N / n_ctx chunks are evaluated together "
                 "as separate sequences; below n_ctx a chunk takes several decodes",
         .min = 1, .max = 1 << 20},
        {.names = "t,threads", .kind = MOE_OPT_INT, .dest = &o.threads, .arg_name = "N",
         .help = "threads (default: all cores)", .min = 1, .max = 4096},
        {.names = "chunks", .kind = MOE_OPT_INT, .dest = &o.chunks, .arg_name = "N",
         .help = "evaluate at most N chunks (default: all)", .min = 1, .max = INT32_MAX},
        {.names = "kl-divergence-base", .kind = MOE_OPT_STRING, .dest = &o.kld_base,
         .arg_name = "FILE", .help = "save the log-probabilities here (or read them with "
                                     "--kl-divergence)"},
        {.names = "kl-divergence", .kind = MOE_OPT_FLAG, .dest = &o.kld,
         .help = "compare the model with the --kl-divergence-base file"},
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
    const moe_cli cli = {.prog = PROG, .synopsis = "-m MODEL -f FILE [options]",
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
