/* moe-run: generate text with a GGUF MoE model the way llama-cli does (same
 * flag names, prompt echoed on stdout, timing lines on stderr), plus the
 * conformance interface: --prompt-tokens / --feed-tokens / --logits-out write
 * raw logits rows laid out like the conformance pack's expected/NAME.logits, so
 * our numbers can be compared with other implementations'.
 *
 * Everything goes through the public API in runtime/include/moe.h; this file
 * owns only option handling, the generation loop, timing and the output file. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "formats/base/cli.h"
#include "formats/base/log.h"
#include "formats/base/tempfile.h"
#include "runtime/include/moe.h"
#include "runtime/quality/expert_stats.h"
#include "runtime/tools/model_cli.h"
#include "runtime/tools/run_kv.h"
#include "formats/base/clock.h"

#define PROG "moe-run"
#define DEFAULT_N_BATCH 512

typedef struct run_opts {
    const char *prompt, *file, *chat_template;
    const char *prompt_tokens, *feed_tokens, *logits_out, *prompt_cache;
    const char *expert_stats; /* --expert-stats FILE.json */
    int64_t n_predict, seq, keep;
    bool chat, no_context_shift, ignore_eos;
    moe_opt_list kv;                      /* --kv, as typed */
    run_kv_op kv_ops[MOE_OPT_LIST_MAX];  /* --kv, parsed */
    int n_kv_ops;
    moe_model_cli mc;                     /* -m, -t, -c, -ctk, --lora, placement... */
    moe_sampling_cli sc;                  /* --temp, --top-k, -s... */
} run_opts;

typedef struct run_timings {
    double load_ms, prompt_ms, eval_ms, sample_ms;
    int64_t n_prompt, n_eval, n_sample;
} run_timings;

static volatile sig_atomic_t g_interrupted;
/* --expert-stats: the collector the context reports to; switched from prompt
 * to gen once the prompt is in the cache (or, with --prompt-tokens, after the
 * prompt batch: fed tokens count as generation) */
static moe_expert_stats *g_expert_stats;

static void expert_stats_to_gen(void) {
    if (g_expert_stats)
        moe_expert_stats_set_phase(g_expert_stats, MOE_STATS_GEN);
}

static void on_sigint(int sig) {
    (void)sig;
    g_interrupted = 1;
}

/* ---- options ------------------------------------------------------------------------ */

/* Relations between options that the table cannot express. */
static moe_status check_opts(run_opts *o, moe_err *err) {
    MOE_FAIL_IF(!o->mc.model, err, MOE_ERR_USAGE, "no model given (-m FILE)");
    MOE_FAIL_IF(o->prompt && o->file, err, MOE_ERR_USAGE,
                "-p and -f both give the prompt: use one");
    MOE_TRY(moe_sampling_cli_check(&o->sc, err));
    if (o->chat_template)
        o->chat = true;
    if (o->prompt_tokens || o->feed_tokens || o->logits_out) {
        MOE_FAIL_IF(!o->prompt_tokens || !o->logits_out, err, MOE_ERR_USAGE,
                    "--prompt-tokens and --logits-out go together (--feed-tokens optional)");
        MOE_FAIL_IF(o->prompt || o->file || o->chat, err, MOE_ERR_USAGE,
                    "--prompt-tokens replaces -p/-f/--chat: give one or the other");
    }
    MOE_FAIL_IF((o->kv.count || o->seq) && !o->prompt_tokens, err, MOE_ERR_USAGE,
                "--kv and --seq belong to the conformance interface (--prompt-tokens)");
    MOE_FAIL_IF(o->prompt_cache && o->prompt_tokens, err, MOE_ERR_USAGE,
                "--prompt-cache is for generation (-p/-f), not --prompt-tokens");
    for (int i = 0; i < o->kv.count; i++)
        MOE_TRY(run_kv_parse(o->kv.items[i], &o->kv_ops[i], err));
    o->n_kv_ops = o->kv.count;
    return moe_model_cli_check(&o->mc, err);
}

/* Token ids separated by spaces, commas or newlines ("1 450 306"). An empty
 * list is fine for --feed-tokens, not for --prompt-tokens (checked by the
 * caller). *out is malloc'd. */
static moe_status parse_token_list(const char *s, const char *what, moe_token **out,
                                   int32_t *n_out, moe_err *err) {
    size_t cap = strlen(s) / 2 + 1;
    moe_token *toks = malloc(cap * sizeof *toks);
    MOE_FAIL_IF(!toks, err, MOE_ERR_NOMEM, "out of memory");
    int32_t n = 0;
    while (*s) {
        if (*s == ' ' || *s == ',' || *s == '\n' || *s == '\t' || *s == '\r') {
            s++;
            continue;
        }
        const char *end = s;
        while (*end >= '0' && *end <= '9')
            end++;
        char *tok_end;
        errno = 0;
        long long v = strtoll(s, &tok_end, 10);
        if (end == s || tok_end != end || errno || v > INT32_MAX ||
            (*end && !strchr(" ,\n\t\r", *end))) {
            free(toks);
            return moe_fail(err, MOE_ERR_USAGE, "%s: '%.20s' is not a token id", what, s);
        }
        toks[n++] = (moe_token)v; /* at most one id per two characters: fits in cap */
        s = end;
    }
    *out = toks;
    *n_out = n;
    return MOE_OK;
}

static moe_status check_token_ids(const moe_model *m, const moe_token *t, int32_t n,
                                  const char *what, moe_err *err) {
    int64_t n_vocab = moe_model_n_vocab(m);
    for (int32_t i = 0; i < n; i++)
        MOE_FAIL_IF(t[i] < 0 || t[i] >= n_vocab, err, MOE_ERR_USAGE,
                    "%s: token id %" PRId32 " is outside the vocabulary (0..%" PRId64 ")", what,
                    t[i], n_vocab - 1);
    return MOE_OK;
}

/* ---- loading -------------------------------------------------------------------------- */

/* The model and a context with a sequence for every --kv operation and --seq. */
static moe_status load(const run_opts *o, int32_t n_batch, moe_model **model, moe_context **ctx,
                       moe_err *err) {
    int32_t max_seq = run_kv_max_seq(o->kv_ops, o->n_kv_ops);
    int32_t n_seq = (o->seq > max_seq ? (int32_t)o->seq : max_seq) + 1;
    return moe_model_cli_load(&o->mc, n_seq, n_batch, model, ctx, err);
}

/* ---- logits file ---------------------------------------------------------------------- */

/* Rows of little-endian float32, written through moe_output (a temp file
 * published when complete, so a failed run never leaves a short file; a
 * device, FIFO or "-" in place). */
typedef struct logits_file {
    moe_output out;
    FILE *f;    /* owned by out */
    FILE *text; /* the arg-max lines: stdout, or stderr when the rows go there */
    uint8_t *buf;
    int64_t n_vocab, n_rows;
} logits_file;

static moe_status logits_open(logits_file *lf, const char *path, int64_t n_vocab, moe_err *err) {
    memset(lf, 0, sizeof *lf);
    lf->out.fd = -1;
    lf->n_vocab = n_vocab;
    lf->buf = malloc((size_t)n_vocab * 4);
    MOE_FAIL_IF(!lf->buf, err, MOE_ERR_NOMEM, "out of memory");
    MOE_TRY(moe_output_open(&lf->out, path, MOE_OUTPUT_OVERWRITE, err));
    lf->f = moe_output_stream(&lf->out, err);
    struct stat a, b;
    bool to_stdout = fstat(lf->out.fd, &a) == 0 && fstat(STDOUT_FILENO, &b) == 0 &&
                     a.st_dev == b.st_dev && a.st_ino == b.st_ino;
    lf->text = to_stdout ? stderr : stdout;
    return lf->f ? MOE_OK : MOE_ERR_IO;
}

static moe_status logits_row(logits_file *lf, const float *row, moe_err *err) {
    MOE_FAIL_IF(!row, err, MOE_ERR_INTERNAL, "the runtime returned no logits for a row that "
                                             "asked for them");
    for (int64_t i = 0; i < lf->n_vocab; i++) {
        uint32_t u;
        memcpy(&u, &row[i], 4);
        uint8_t *p = lf->buf + 4 * i;
        p[0] = (uint8_t)u, p[1] = (uint8_t)(u >> 8), p[2] = (uint8_t)(u >> 16),
        p[3] = (uint8_t)(u >> 24);
    }
    MOE_FAIL_IF(fwrite(lf->buf, 4, (size_t)lf->n_vocab, lf->f) != (size_t)lf->n_vocab, err,
                MOE_ERR_IO, "%s: write failed: %s", lf->out.path, strerror(errno));
    lf->n_rows++;
    return MOE_OK;
}

static moe_status logits_commit(logits_file *lf, moe_err *err) {
    lf->f = NULL;
    return moe_output_commit(&lf->out, err);
}

/* Frees everything; removes the temp file unless it was committed. */
static void logits_close(logits_file *lf) {
    moe_output_abort(&lf->out);
    free(lf->buf);
    memset(lf, 0, sizeof *lf);
    lf->out.fd = -1;
}

static int32_t argmax(const float *row, int64_t n) {
    int64_t best = 0;
    for (int64_t i = 1; i < n; i++)
        if (row[i] > row[best])
            best = i;
    return (int32_t)best;
}

/* --prompt-tokens: the prompt as one batch of sequence 0 from position 0
 * with logits for every token, then the --kv operations in order, then each
 * --feed-tokens id alone at seq_pos_max(--seq) + 1. Each row's arg-max goes
 * to stdout on one line (row order), for quick checks. */
static moe_status run_conformance(const run_opts *o, moe_model *m, moe_context *ctx,
                                  const moe_token *prompt, int32_t n_prompt,
                                  const moe_token *feed, int32_t n_feed, logits_file *lf,
                                  run_timings *tm, moe_err *err) {
    int64_t n_vocab = moe_model_n_vocab(m);
    int32_t n_ctx = moe_context_n_ctx(ctx);
    MOE_FAIL_IF((int64_t)n_prompt + (o->n_kv_ops ? 0 : n_feed) > n_ctx, err, MOE_ERR_USAGE,
                "%" PRId32 " prompt + %" PRId32 " fed tokens do not fit in a context of %" PRId32
                " (-c)", n_prompt, n_feed, n_ctx);
    int32_t *pos = malloc((size_t)n_prompt * sizeof *pos);
    int8_t *want = malloc((size_t)n_prompt);
    if (!pos || !want) {
        free(pos);
        free(want);
        return moe_fail(err, MOE_ERR_NOMEM, "out of memory");
    }
    for (int32_t i = 0; i < n_prompt; i++)
        pos[i] = i, want[i] = 1;
    moe_batch b = {.n_tokens = n_prompt, .token = prompt, .pos = pos, .logits = want};
    double t0 = moe_now_ms();
    moe_status st = moe_decode(ctx, &b, err);
    tm->prompt_ms = moe_now_ms() - t0;
    tm->n_prompt = n_prompt;
    expert_stats_to_gen();
    free(pos);
    free(want);
    MOE_TRY(st);
    for (int32_t i = 0; i < n_prompt; i++) {
        const float *row = moe_get_logits_ith(ctx, i);
        MOE_TRY(logits_row(lf, row, err));
        fprintf(lf->text, "%s%" PRId32, i ? " " : "", argmax(row, n_vocab));
    }
    for (int i = 0; i < o->n_kv_ops; i++)
        run_kv_apply(ctx, &o->kv_ops[i]);
    const int32_t seq = (int32_t)o->seq;
    MOE_FAIL_IF((int64_t)moe_kv_n_used(ctx) + n_feed > n_ctx, err, MOE_ERR_USAGE,
                "%" PRId32 " cached + %" PRId32 " fed tokens do not fit in a context of %" PRId32
                " (-c)", moe_kv_n_used(ctx), n_feed, n_ctx);
    for (int32_t j = 0; j < n_feed; j++) {
        int32_t p = moe_kv_seq_pos_max(ctx, seq) + 1;
        int8_t one = 1;
        moe_batch fb = {.n_tokens = 1, .token = &feed[j], .pos = &p, .seq_id = &seq,
                        .logits = &one};
        t0 = moe_now_ms();
        MOE_TRY(moe_decode(ctx, &fb, err));
        tm->eval_ms += moe_now_ms() - t0;
        tm->n_eval++;
        const float *row = moe_get_logits_ith(ctx, 0);
        MOE_TRY(logits_row(lf, row, err));
        fprintf(lf->text, " %" PRId32, argmax(row, n_vocab));
    }
    fprintf(lf->text, "\n");
    MOE_TRY(logits_commit(lf, err));
    MOE_INFO("wrote %" PRId64 " rows of %" PRId64 " logits to %s", lf->n_rows, n_vocab, lf->out.path);
    return MOE_OK;
}

/* ---- generation ----------------------------------------------------------------------- */

static moe_status read_file(const char *path, char **out, size_t *len, moe_err *err) {
    FILE *f = fopen(path, "rb");
    MOE_FAIL_IF(!f, err, MOE_ERR_IO, "%s: %s", path, strerror(errno));
    char *buf = NULL;
    size_t n = 0, cap = 0;
    for (;;) {
        if (n + 4096 + 1 > cap) {
            cap = cap ? cap * 2 : 8192;
            char *nb = realloc(buf, cap);
            if (!nb) {
                free(buf);
                fclose(f);
                return moe_fail(err, MOE_ERR_NOMEM, "%s: out of memory", path);
            }
            buf = nb;
        }
        size_t got = fread(buf + n, 1, 4096, f);
        n += got;
        if (got < 4096)
            break;
    }
    bool bad = ferror(f);
    fclose(f);
    if (bad) {
        free(buf);
        return moe_fail(err, MOE_ERR_IO, "%s: read failed", path);
    }
    buf[n] = '\0';
    *out = buf;
    *len = n;
    return MOE_OK;
}

/* The prompt's tokens: -p or -f text (through the chat template with --chat),
 * with BOS as the vocabulary asks. *out is malloc'd. */
static moe_status build_prompt(const run_opts *o, const moe_model *m, moe_token **out,
                               int32_t *n_out, moe_err *err) {
    char *text = NULL;
    size_t len = 0;
    if (o->file) {
        MOE_TRY(read_file(o->file, &text, &len, err));
        /* editors end files with a newline the user does not mean as prompt
         * text; llama-cli drops it too */
        if (len && text[len - 1] == '\n')
            text[--len] = '\0';
    } else {
        text = strdup(o->prompt ? o->prompt : "");
        MOE_FAIL_IF(!text, err, MOE_ERR_NOMEM, "out of memory");
        len = strlen(text);
    }
    if (o->chat) {
        moe_chat_message msg = {.role = "user", .content = text};
        char *formatted = NULL;
        moe_status st = moe_chat_apply(m, o->chat_template, &msg, 1, true, &formatted, err);
        free(text);
        if (st != MOE_OK) {
            moe_err_prefix(err, "--chat");
            size_t n = strlen(err->msg);
            if (!o->chat_template && n < sizeof err->msg)
                snprintf(err->msg + n, sizeof err->msg - n, " (--chat-template NAME)");
            return st;
        }
        text = formatted;
        len = strlen(text);
        MOE_DEBUG("chat prompt: %s", text);
    }
    moe_status st = moe_tokenize_prompt(m, text, len, out, n_out, err);
    free(text);
    MOE_TRY(st);
    MOE_FAIL_IF(*n_out == 0, err, MOE_ERR_USAGE,
                "the prompt is empty and the vocabulary adds no BOS: give -p TEXT");
    return MOE_OK;
}

/* Writes the text of t to stdout (control tokens are not shown). */
static moe_status print_piece(const moe_model *m, moe_token t, char **buf, int32_t *cap,
                              moe_err *err) {
    int32_t n = moe_token_to_piece(m, t, *buf, *cap, false);
    if (n < 0) {
        char *nb = realloc(*buf, (size_t)-n);
        MOE_FAIL_IF(!nb, err, MOE_ERR_NOMEM, "out of memory");
        *buf = nb;
        *cap = -n;
        n = moe_token_to_piece(m, t, *buf, *cap, false);
        MOE_FAIL_IF(n < 0, err, MOE_ERR_INTERNAL, "token %" PRId32 " has no stable text", t);
    }
    fwrite(*buf, 1, (size_t)n, stdout);
    return MOE_OK;
}

/* Decodes prompt tokens [from, n) at their positions in n_batch chunks;
 * logits only for the last one. */
static moe_status eval_prompt(moe_context *ctx, const moe_token *toks, int32_t from, int32_t n,
                              int32_t n_batch, moe_err *err) {
    for (int32_t i = from; i < n; i += n_batch) {
        int32_t k = n - i < n_batch ? n - i : n_batch;
        int32_t pos[DEFAULT_N_BATCH];
        int8_t want[DEFAULT_N_BATCH];
        for (int32_t j = 0; j < k; j++)
            pos[j] = i + j, want[j] = (i + j == n - 1);
        moe_batch b = {.n_tokens = k, .token = toks + i, .pos = pos, .logits = want};
        MOE_TRY(moe_decode(ctx, &b, err));
    }
    return MOE_OK;
}

/* The prompt into the cache: the part a --prompt-cache file does not already
 * hold is evaluated (and the file rewritten); timed as the prompt. */
static moe_status prompt_into_cache(const run_opts *o, moe_context *ctx, const moe_token *prompt,
                                    int32_t n_prompt, run_timings *tm, moe_err *err) {
    int32_t n_reuse = 0;
    if (o->prompt_cache)
        MOE_TRY(run_prompt_cache_load(ctx, o->prompt_cache, prompt, n_prompt, &n_reuse, err));
    double t0 = moe_now_ms();
    if (n_reuse < n_prompt)
        MOE_TRY(eval_prompt(ctx, prompt, n_reuse, n_prompt, DEFAULT_N_BATCH, err));
    tm->prompt_ms = moe_now_ms() - t0;
    tm->n_prompt = n_prompt - n_reuse;
    if (o->prompt_cache && n_reuse < n_prompt) {
        MOE_TRY(moe_state_save_file(ctx, o->prompt_cache, prompt, n_prompt, err));
        MOE_INFO("prompt cache: saved %" PRId32 " tokens to %s", n_prompt, o->prompt_cache);
    }
    return MOE_OK;
}

/* Tokens a context shift never discards: --keep N prompt tokens (-1 or more
 * than the prompt: all of it) plus the BOS, as llama-cli counts them. */
static int32_t keep_count(const run_opts *o, const moe_model *m, const moe_token *prompt,
                          int32_t n_prompt) {
    if (o->keep < 0 || o->keep >= n_prompt)
        return n_prompt;
    bool bos = moe_token_bos(m) >= 0 && prompt[0] == moe_token_bos(m);
    int32_t n = (int32_t)o->keep + (bos ? 1 : 0);
    return n < n_prompt ? n : n_prompt;
}

/* The logits the sampler sees: --ignore-eos copies them into buf with every
 * end-of-generation token at -inf (eog lists those, n_eog of them). */
static const float *sampler_logits(const float *logits, float *buf, const moe_token *eog,
                                   int32_t n_eog, int64_t n_vocab) {
    if (!buf)
        return logits;
    memcpy(buf, logits, (size_t)n_vocab * sizeof *buf);
    for (int32_t i = 0; i < n_eog; i++)
        buf[eog[i]] = -INFINITY;
    return buf;
}

/* Samples, prints and feeds back up to -n tokens after the prompt. Stops at
 * an end-of-generation token (unless --ignore-eos) or Ctrl-C; a full context
 * is shifted (keep --keep tokens, discard half of the rest) unless
 * --no-context-shift or -n -2, which stop there. */
static moe_status generate(const run_opts *o, moe_model *m, moe_context *ctx,
                           const moe_token *prompt, int32_t n_prompt, run_timings *tm,
                           moe_err *err) {
    int64_t n_vocab = moe_model_n_vocab(m);
    int32_t n_ctx = moe_context_n_ctx(ctx);
    MOE_FAIL_IF(n_prompt > n_ctx, err, MOE_ERR_USAGE,
                "the prompt is %" PRId32 " tokens, more than the context of %" PRId32 " (-c)",
                n_prompt, n_ctx);
    int32_t cap = 256, n_eog = 0;
    char *piece = malloc((size_t)cap);
    float *masked = o->ignore_eos ? malloc((size_t)n_vocab * sizeof *masked) : NULL;
    moe_token *eog = o->ignore_eos ? malloc((size_t)n_vocab * sizeof *eog) : NULL;
    moe_status st = MOE_OK;
    if (!piece || (o->ignore_eos && (!masked || !eog)))
        st = moe_fail(err, MOE_ERR_NOMEM, "out of memory");
    for (moe_token t = 0; eog && t < n_vocab; t++)
        if (moe_token_is_eog(m, t))
            eog[n_eog++] = t;
    for (int32_t i = 0; i < n_prompt && st == MOE_OK; i++) /* echo, as llama-cli does */
        st = print_piece(m, prompt[i], &piece, &cap, err);
    fflush(stdout);
    moe_sampler_params sp = moe_sampling_cli_params(&o->sc, n_ctx);
    MOE_INFO("sampling: seed %" PRIu64 ", temp %.2f, top_k %" PRId32 ", top_p %.2f, min_p %.2f, "
             "repeat_penalty %.2f (last %" PRId32 ")", sp.seed, sp.temp, sp.top_k, sp.top_p,
             sp.min_p, sp.repeat_penalty, sp.repeat_last_n);
    moe_sampler *smp = moe_sampler_create(&sp);
    if (st == MOE_OK && !smp)
        st = moe_fail(err, MOE_ERR_NOMEM, "cannot create the sampler");
    if (st == MOE_OK)
        st = prompt_into_cache(o, ctx, prompt, n_prompt, tm, err);
    expert_stats_to_gen();
    for (int32_t i = 0; st == MOE_OK && i < n_prompt; i++)
        moe_sampler_accept(smp, prompt[i]); /* the repeat penalty sees the prompt */
    const float *logits = st == MOE_OK ? moe_get_logits_ith(ctx, -1) : NULL;
    if (st == MOE_OK && !logits)
        st = moe_fail(err, MOE_ERR_INTERNAL, "no logits for the last prompt token");
    const int32_t n_keep = keep_count(o, m, prompt, n_prompt);
    int32_t n_past = n_prompt, n_shifts = 0;
    const char *why = "-n reached";
    for (int64_t n_gen = 0; st == MOE_OK && (o->n_predict < 0 || n_gen < o->n_predict);) {
        if (g_interrupted) {
            why = "interrupted";
            break;
        }
        double t0 = moe_now_ms();
        moe_token t = moe_sampler_sample(smp, sampler_logits(logits, masked, eog, n_eog, n_vocab),
                                         n_vocab);
        moe_sampler_accept(smp, t);
        tm->sample_ms += moe_now_ms() - t0;
        tm->n_sample++;
        if (moe_token_is_eog(m, t)) {
            why = "end of text";
            break;
        }
        st = print_piece(m, t, &piece, &cap, err);
        fflush(stdout);
        n_gen++;
        if (st != MOE_OK || (o->n_predict >= 0 && n_gen >= o->n_predict))
            break;
        if (n_past >= n_ctx) {
            /* -n -2 means "until the context is full", as in llama-cli */
            bool stop = o->no_context_shift || o->n_predict == -2;
            int32_t d = stop ? 0 : run_context_shift(ctx, n_keep, n_past);
            if (d == 0) {
                why = stop ? "context full" : "context full (--keep leaves nothing to discard)";
                break;
            }
            MOE_DEBUG("context shift: kept %" PRId32 ", discarded %" PRId32, n_keep, d);
            n_past -= d;
            n_shifts++;
        }
        int8_t one = 1;
        moe_batch b = {.n_tokens = 1, .token = &t, .pos = &n_past, .logits = &one};
        t0 = moe_now_ms();
        st = moe_decode(ctx, &b, err);
        tm->eval_ms += moe_now_ms() - t0;
        tm->n_eval++;
        n_past++;
        logits = moe_get_logits_ith(ctx, 0);
        if (st == MOE_OK && !logits)
            st = moe_fail(err, MOE_ERR_INTERNAL, "no logits for a generated token");
    }
    printf("\n");
    fflush(stdout);
    if (st == MOE_OK && n_shifts)
        MOE_INFO("context shifts: %" PRId32 " (first %" PRId32 " tokens kept)", n_shifts, n_keep);
    if (st == MOE_OK)
        MOE_INFO("stopped: %s", why);
    moe_sampler_free(smp);
    free(piece);
    free(masked);
    free(eog);
    return st;
}

/* ---- report --------------------------------------------------------------------------- */

static void print_rate(const char *what, double ms, int64_t n, const char *unit) {
    fprintf(stderr,
            PROG ": %16s = %10.2f ms / %5" PRId64 " %-6s (%8.2f ms per token, %8.2f tokens per "
                 "second)\n",
            what, ms, n, unit, n ? ms / (double)n : 0.0, ms > 0 ? 1e3 * (double)n / ms : 0.0);
}

/* llama.cpp's perf lines (users grep "prompt eval time" and "eval time"),
 * then the weight bandwidth generation achieved: bytes of weights one token
 * reads times tokens evaluated, over the eval time. */
static void print_timings(const run_timings *t, const moe_model *m, double total_ms) {
    fprintf(stderr, PROG ": %16s = %10.2f ms\n", "load time", t->load_ms);
    print_rate("sampling time", t->sample_ms, t->n_sample, "runs");
    print_rate("prompt eval time", t->prompt_ms, t->n_prompt, "tokens");
    print_rate("eval time", t->eval_ms, t->n_eval, "runs");
    fprintf(stderr, PROG ": %16s = %10.2f ms / %5" PRId64 " tokens\n", "total time", total_ms,
            t->n_prompt + t->n_eval);
    double bytes = (double)moe_model_bytes_per_token(m);
    if (t->n_eval > 0 && t->eval_ms > 0)
        fprintf(stderr,
                PROG ": %16s = %10.2f GB/s (%.2f MB of weights per token x %" PRId64
                     " tokens / %.3f s)\n",
                "weight bandwidth", bytes * (double)t->n_eval / (t->eval_ms / 1e3) / 1e9,
                bytes / 1e6, t->n_eval, t->eval_ms / 1e3);
    else
        fprintf(stderr, PROG ": %16s = n/a (no tokens evaluated one at a time)\n",
                "weight bandwidth");
}

/* ---- main ----------------------------------------------------------------------------- */

static moe_status run(const run_opts *o, double t_start, moe_err *err) {
    moe_token *prompt = NULL, *feed = NULL;
    int32_t n_prompt = 0, n_feed = 0, n_batch = DEFAULT_N_BATCH;
    moe_model *m = NULL;
    moe_context *ctx = NULL;
    logits_file lf = {0};
    run_timings tm = {0};
    moe_status st = MOE_OK;
    if (o->prompt_tokens) {
        /* syntax errors are the user's: report them before a slow load */
        st = parse_token_list(o->prompt_tokens, "option --prompt-tokens", &prompt, &n_prompt,
                              err);
        if (st == MOE_OK && n_prompt == 0)
            st = moe_fail(err, MOE_ERR_USAGE, "option --prompt-tokens: no token ids");
        if (st == MOE_OK && o->feed_tokens)
            st = parse_token_list(o->feed_tokens, "option --feed-tokens", &feed, &n_feed, err);
        if (n_prompt > n_batch)
            n_batch = n_prompt; /* the interface promises ONE batch */
    }
    double t0 = moe_now_ms();
    if (st == MOE_OK)
        st = load(o, n_batch, &m, &ctx, err);
    tm.load_ms = moe_now_ms() - t0;
    if (st == MOE_OK && o->expert_stats) {
        st = moe_expert_stats_for_model(m, o->mc.model, &g_expert_stats, err);
        if (st == MOE_OK)
            moe_expert_stats_attach(ctx, g_expert_stats);
    }
    if (st == MOE_OK && o->prompt_tokens) {
        st = check_token_ids(m, prompt, n_prompt, "option --prompt-tokens", err);
        if (st == MOE_OK)
            st = check_token_ids(m, feed, n_feed, "option --feed-tokens", err);
        if (st == MOE_OK)
            st = logits_open(&lf, o->logits_out, moe_model_n_vocab(m), err);
        if (st == MOE_OK)
            st = run_conformance(o, m, ctx, prompt, n_prompt, feed, n_feed, &lf, &tm, err);
        logits_close(&lf);
    } else if (st == MOE_OK) {
        st = build_prompt(o, m, &prompt, &n_prompt, err);
        if (st == MOE_OK)
            st = generate(o, m, ctx, prompt, n_prompt, &tm, err);
    }
    if (st == MOE_OK && g_expert_stats) {
        st = moe_expert_stats_save(g_expert_stats, o->expert_stats, err);
        if (st == MOE_OK)
            MOE_INFO("expert statistics written to %s", o->expert_stats);
    }
    moe_expert_stats_free(g_expert_stats);
    g_expert_stats = NULL;
    if (st == MOE_OK)
        print_timings(&tm, m, moe_now_ms() - t_start);
    moe_context_free(ctx);
    moe_model_free(m);
    free(prompt);
    free(feed);
    return st;
}

int main(int argc, char **argv) {
    double t_start = moe_now_ms();
    run_opts o = {.n_predict = -1, .mc = MOE_MODEL_CLI_INIT, .sc = moe_sampling_cli_init()};
    static const char summary[] =
        "Generates text with a GGUF MoE model, like llama-cli: the prompt is echoed and the\n"
        "continuation written to stdout; timings and the weight bandwidth go to stderr.\n"
        "Conformance interface: --prompt-tokens IDS evaluates the ids as one batch from\n"
        "position 0, --feed-tokens IDS then feeds each id alone; --logits-out FILE gets one\n"
        "row of n_vocab little-endian float32 logits per token (prompt rows, then fed rows)\n"
        "and stdout one line with each row's arg-max id. The prompt goes to sequence 0;\n"
        "--kv operations (llama.cpp's KV API) run in order after it, and the fed ids go to\n"
        "--seq N at its largest position + 1. A full context is shifted during generation\n"
        "(the first --keep tokens stay, half of the rest is dropped) unless --no-context-shift.";
    const moe_opt opts[] = {
        MOE_MODEL_CLI_OPTS(&o.mc),
        {.names = "p,prompt", .kind = MOE_OPT_STRING, .dest = &o.prompt, .arg_name = "TEXT",
         .help = "prompt (default: empty, i.e. BOS only)"},
        {.names = "f,file", .kind = MOE_OPT_STRING, .dest = &o.file, .arg_name = "FILE",
         .help = "read the prompt from FILE (one trailing newline dropped)"},
        {.names = "n,predict,n-predict", .kind = MOE_OPT_INT, .dest = &o.n_predict,
         .arg_name = "N", .help = "tokens to generate; -1 (default): until end of text (a full "
                                  "context is shifted); -2: until the context is full",
         .min = -2, .max = INT32_MAX},
        {.names = "c,ctx-size", .kind = MOE_OPT_INT, .dest = &o.mc.n_ctx, .arg_name = "N",
         .help = "context size in tokens (default: 4096, or the model's if smaller; 0: the "
                 "model's training context)",
         .min = 0, .max = INT32_MAX},
        MOE_SAMPLING_CLI_OPTS(&o.sc),
        {.names = "chat", .kind = MOE_OPT_FLAG, .dest = &o.chat,
         .help = "wrap the prompt as a user message in the model's chat template"},
        {.names = "chat-template", .kind = MOE_OPT_STRING, .dest = &o.chat_template,
         .arg_name = "TMPL", .help = "template for --chat instead of the model's: a name "
                                     "(chatml, llama3, phi3...) or its text; implies --chat"},
        {.names = "prompt-tokens", .kind = MOE_OPT_STRING, .dest = &o.prompt_tokens,
         .arg_name = "IDS",
         .help = "conformance: token ids evaluated as one batch (\"1 450 306\")"},
        {.names = "feed-tokens", .kind = MOE_OPT_STRING, .dest = &o.feed_tokens,
         .arg_name = "IDS", .help = "conformance: ids then fed one at a time"},
        {.names = "logits-out", .kind = MOE_OPT_STRING, .dest = &o.logits_out,
         .arg_name = "FILE", .help = "conformance: write the logits rows here"},
        {.names = "kv", .kind = MOE_OPT_LIST, .dest = &o.kv, .arg_name = "OP",
         .help = "conformance, repeatable: after the prompt batch, in order: \"rm SEQ P0 P1\", "
                 "\"add SEQ P0 P1 DELTA\", \"cp SRC DST P0 P1\", \"keep SEQ\", \"div SEQ P0 P1 "
                 "D\" or \"defrag\" (P1 -1: to the end; SEQ -1: all)"},
        {.names = "seq", .kind = MOE_OPT_INT, .dest = &o.seq, .arg_name = "N",
         .help = "conformance: the sequence --feed-tokens continue (default 0)", .min = 0,
         .max = 63},
        {.names = "keep", .kind = MOE_OPT_INT, .dest = &o.keep, .arg_name = "N",
         .help = "prompt tokens a context shift keeps, BOS not counted; -1 = the whole prompt "
                 "(default 0)", .min = -1, .max = INT32_MAX},
        {.names = "no-context-shift", .kind = MOE_OPT_FLAG, .dest = &o.no_context_shift,
         .help = "stop generating when the context is full instead of shifting it"},
        {.names = "ignore-eos", .kind = MOE_OPT_FLAG, .dest = &o.ignore_eos,
         .help = "never sample end-of-generation tokens"},
        {.names = "prompt-cache", .kind = MOE_OPT_STRING, .dest = &o.prompt_cache,
         .arg_name = "FILE", .help = "reuse the KV state of the prompt's longest prefix saved in "
                                     "FILE, and save the prompt's state there"},
        {.names = "expert-stats", .kind = MOE_OPT_STRING, .dest = &o.expert_stats,
         .arg_name = "FILE.json", .help = "write how often each expert was chosen, per MoE layer, "
                                          "prompt and generation apart (replaces FILE; add "
                                          "files with moe-stats merge)"},
        {0},
    };
    const moe_cli cli = {.prog = PROG, .synopsis = "-m MODEL [-p PROMPT | -f FILE] [options]",
                         .summary = summary, .opts = opts, .min_positional = 0,
                         .max_positional = 0};
    moe_log_set_prog(PROG);
    moe_err err = {0};
    bool help = false;
    moe_status st = moe_model_cli_take_lora_scales(&argc, argv, &o.mc, &err);
    if (st == MOE_OK)
        st = moe_cli_parse(&cli, argc, argv, NULL, NULL, &help, &err);
    if (st == MOE_OK && !help && o.mc.place.list_devices) {
        moe_placement_cli_list(stdout);
        return 0;
    }
    if (st == MOE_OK && !help)
        st = check_opts(&o, &err);
    int exit_code;
    if (moe_cli_parse_done(PROG, st, help, &err, &exit_code))
        return exit_code;
    if (o.mc.verbose)
        moe_log_set_level(MOE_LOG_DEBUG);
    if (!o.prompt_tokens) {
        /* Ctrl-C ends generation early but still prints the timings; a
         * second one kills as usual */
        struct sigaction sa = {.sa_handler = on_sigint, .sa_flags = (int)SA_RESETHAND};
        sigemptyset(&sa.sa_mask);
        sigaction(SIGINT, &sa, NULL);
    }
    st = run(&o, t_start, &err);
    return moe_cli_finish(PROG, st, &err);
}
