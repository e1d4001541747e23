/* moe-bench — llama-bench-style throughput of moe-run's engine.
 *
 * Prompt processing (ppN: one batch of N tokens into an empty cache), token
 * generation (tgN: N single-token decodes from an empty cache), both (pgP,N),
 * repeated -r times after one warm-up; mean ± standard deviation of tokens per
 * second. For generation it also reports the effective weight bandwidth
 * (bytes of weights one token reads × t/s) and that as a share of a read
 * bandwidth it measures itself around every timed run (a STREAM-like sum over
 * a buffer far larger than the last-level cache, with the same threads, see
 * bw_probe and run_test): the roofline a memory-bound decoder can reach. --sweep repeats tg and pp at growing KV
 * depth, as llama-sweep-bench does, so the cost of long contexts shows. */
#include <ctype.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "formats/base/cli.h"
#include "formats/base/cpu.h"
#include "formats/base/log.h"
#include "runtime/cpu/kernels.h"
#include "runtime/device.h"
#include "runtime/include/moe.h"
#include "runtime/model.h"
#include "runtime/quality/expert_stats.h"
#include "runtime/tools/placement_cli.h"
#include "formats/base/clock.h"

#ifdef _OPENMP
#include <omp.h>
#else /* MOE_OPENMP=OFF: one thread */
static inline int omp_get_num_threads(void) { return 1; }
static inline int omp_get_thread_num(void) { return 0; }
#endif

#define PROG "moe-bench"
#define MAX_VALUES 16

typedef struct bench_opts {
    moe_opt_list models;
    const char *prompts, *gens, *pg, *output;
    const char *expert_stats; /* --expert-stats FILE.json (one model only) */
    int64_t threads, reps, sweep_step, n_ctx;
    bool sweep, no_warmup, time_split;
    uint64_t bw_bytes;
    moe_placement_opts place;
} bench_opts;

typedef struct int_list {
    int64_t v[MAX_VALUES];
    int n;
} int_list;

/* "128,512" -> values; "" or NULL -> none. */
static moe_status parse_list(const char *what, const char *s, int_list *out, moe_err *err) {
    out->n = 0;
    if (!s || !*s)
        return MOE_OK;
    char buf[256];
    MOE_FAIL_IF(strlen(s) >= sizeof buf, err, MOE_ERR_USAGE, "option %s: list too long", what);
    strcpy(buf, s);
    for (char *save = NULL, *tok = strtok_r(buf, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        MOE_FAIL_IF(out->n == MAX_VALUES, err, MOE_ERR_USAGE, "option %s: more than %d values",
                    what, MAX_VALUES);
        int64_t v;
        MOE_TRY(moe_parse_i64(tok, &v, what, err));
        MOE_FAIL_IF(v < 1 || v > (1 << 20), err, MOE_ERR_USAGE, "option %s: %lld is outside 1..%d",
                    what, (long long)v, 1 << 20);
        out->v[out->n++] = v;
    }
    return MOE_OK;
}

/* ---- read bandwidth ------------------------------------------------------------------------ */

/* The read-bandwidth probe: a buffer far larger than the last-level cache,
 * allocated and touched (every page on the thread that will read it) for each
 * measurement and freed after it, so that it never competes with the mapped
 * model for memory during a test; measured around every generation run. Its
 * GB/s is the best of 3 passes of two readers: a plain sum (one linear stream
 * per thread, the hardware prefetcher alone) and the same sum over eight
 * streams per thread, each asking for its lines BW_AHEAD bytes on, as the
 * one-token kernels read. On the shared 2-vCPU host the plain sum alone
 * measured below what the kernels read (roofline shares above 100%), and one
 * figure for a whole run drifted from the tests it was set against (34 to 61
 * GB/s from run to run), as did one figure per test (run_test). */
typedef struct bw_probe {
    uint64_t bytes;
    int threads;
} bw_probe;

enum { BW_STREAMS = 8, BW_AHEAD = 1536 };

/* Sum of blocks [b0, b1) of 8 words, one linear stream. */
static uint64_t sum_blocks(const uint64_t *buf, size_t b0, size_t b1) {
    uint64_t total = 0;
    for (size_t blk = b0; blk < b1; blk++) {
        const uint64_t *p = buf + blk * 8;
        total += (p[0] + p[1]) + (p[2] + p[3]) + (p[4] + p[5]) + (p[6] + p[7]);
    }
    return total;
}

/* The same as BW_STREAMS streams side by side, the blocks left over after. */
static uint64_t sum_streams(const uint64_t *buf, size_t b0, size_t b1) {
    const size_t per = (b1 - b0) / BW_STREAMS;
    uint64_t total = 0;
    for (size_t k = 0; k < per; k++)
        for (int s = 0; s < BW_STREAMS; s++) {
            const uint64_t *p = buf + (b0 + (size_t)s * per + k) * 8;
            __builtin_prefetch((const char *)p + BW_AHEAD, 0, 3);
            total += (p[0] + p[1]) + (p[2] + p[3]) + (p[4] + p[5]) + (p[6] + p[7]);
        }
    return total + sum_blocks(buf, b0 + per * BW_STREAMS, b1);
}

/* The probe's read bandwidth now, in GB/s (0 if its buffer cannot be had). */
static double bw_measure(const bw_probe *pr) {
    const size_t words = (size_t)(pr->bytes / 64) * 8, blocks = words / 8;
    uint64_t *buf = blocks ? malloc(words * 8) : NULL;
    if (!buf)
        return 0.0;
#pragma omp parallel for num_threads(pr->threads) schedule(static)
    for (size_t i = 0; i < words; i++)
        buf[i] = i;
    double best = 0.0;
    volatile uint64_t sink = 0;
    for (int pass = 0; pass < 6; pass++) {
        const bool streams = pass % 2;
        uint64_t total = 0;
        const double t0 = moe_now_s();
#pragma omp parallel num_threads(pr->threads) reduction(+ : total)
        {
            const int nt = omp_get_num_threads(), it = omp_get_thread_num();
            const size_t b0 = blocks * (size_t)it / (size_t)nt, b1 = blocks * (size_t)(it + 1) / (size_t)nt;
            total += streams ? sum_streams(buf, b0, b1) : sum_blocks(buf, b0, b1);
        }
        const double dt = moe_now_s() - t0;
        sink += total;
        const double gbs = (double)(blocks * 64) / dt / 1e9;
        best = gbs > best ? gbs : best;
    }
    (void)sink;
    free(buf);
    return best;
}

/* ---- the tests ----------------------------------------------------------------------------- */

typedef struct bench_test {
    char name[48];
    int64_t n_prompt, n_gen, depth;
} bench_test;

typedef struct bench_result {
    bench_test test;
    double mean, sd;      /* tokens per second */
    double gbs;           /* tg: effective weight bandwidth */
    double bw, share;     /* tg: read bandwidth around the runs, and their mean share of it */
    double experts_ms, other_ms, copy_ms; /* per token, over the timed runs */
} bench_result;

static moe_token rand_token(uint32_t *state, int64_t n_vocab) {
    *state ^= *state << 13;
    *state ^= *state >> 17;
    *state ^= *state << 5;
    return (moe_token)(*state % (uint32_t)n_vocab);
}

/* Decodes n tokens at positions from..from+n-1 in batches of at most n_batch. */
static moe_status feed(moe_context *ctx, int64_t n_vocab, int32_t from, int64_t n, int32_t n_batch,
                       moe_token *tok, int32_t *pos, uint32_t *rng, moe_err *err) {
    for (int64_t done = 0; done < n;) {
        int32_t b = (int32_t)(n - done < n_batch ? n - done : n_batch);
        for (int32_t i = 0; i < b; i++) {
            tok[i] = rand_token(rng, n_vocab);
            pos[i] = from + (int32_t)(done + i);
        }
        const moe_batch batch = {.n_tokens = b, .token = tok, .pos = pos};
        MOE_TRY(moe_decode(ctx, &batch, err));
        done += b;
    }
    return MOE_OK;
}

/* --expert-stats: the collector of the model being benchmarked; prompt
 * tokens (and the KV depth filled before a test) count as prompt, tokens fed
 * one at a time as generation; warm-up and every repetition count. */
static moe_expert_stats *g_expert_stats;

static void expert_stats_phase(moe_stats_phase phase) {
    if (g_expert_stats)
        moe_expert_stats_set_phase(g_expert_stats, phase);
}

/* One timed run of t: the cache holds depth tokens before it starts. */
static moe_status run_once(moe_context *ctx, const bench_test *t, int64_t n_vocab, int32_t n_batch,
                           moe_token *tok, int32_t *pos, double *seconds, moe_err *err) {
    uint32_t rng = 12345u;
    moe_kv_seq_rm(ctx, 0, (int32_t)t->depth, -1);
    double t0 = moe_now_s();
    expert_stats_phase(MOE_STATS_PROMPT);
    if (t->n_prompt)
        MOE_TRY(feed(ctx, n_vocab, (int32_t)t->depth, t->n_prompt, n_batch, tok, pos, &rng, err));
    expert_stats_phase(MOE_STATS_GEN);
    for (int64_t i = 0; i < t->n_gen; i++)
        MOE_TRY(feed(ctx, n_vocab, (int32_t)(t->depth + t->n_prompt + i), 1, 1, tok, pos, &rng, err));
    *seconds = moe_now_s() - t0;
    return MOE_OK;
}

/* Runs t's repetitions. probe (generation tests): the read bandwidth is
 * measured before the first run and after each, and every run's weight
 * bandwidth (bytes_per_token x its t/s) is set against the mean of the two
 * measurements around it: on the shared host the bandwidth drifts by tens of
 * percent within seconds, and one figure for the whole test put the same t/s
 * anywhere from 59% to 91%. */
static moe_status run_test(moe_context *ctx, const bench_test *t, const bench_opts *o,
                           int64_t n_vocab, int32_t n_batch, moe_token *tok, int32_t *pos,
                           const bw_probe *probe, uint64_t bytes_per_token, bench_result *r,
                           moe_err *err) {
    uint32_t rng = 777u;
    moe_kv_clear(ctx);
    expert_stats_phase(MOE_STATS_PROMPT);
    if (t->depth)
        MOE_TRY(feed(ctx, n_vocab, 0, t->depth, n_batch, tok, pos, &rng, err));
    double s;
    if (!o->no_warmup)
        MOE_TRY(run_once(ctx, t, n_vocab, n_batch, tok, pos, &s, err));
    double sum = 0, sum2 = 0, bw_sum = 0, share_sum = 0;
    double bw_before = probe ? bw_measure(probe) : 0.0;
    int n_shares = 0;
    moe_context_perf_reset(ctx);
    for (int64_t i = 0; i < o->reps; i++) {
        MOE_TRY(run_once(ctx, t, n_vocab, n_batch, tok, pos, &s, err));
        const double tps = (double)(t->n_prompt + t->n_gen) / s;
        sum += tps;
        sum2 += tps * tps;
        if (probe) {
            const double bw_after = bw_measure(probe), bw = 0.5 * (bw_before + bw_after);
            if (bw_before > 0.0 && bw_after > 0.0) {
                bw_sum += bw;
                share_sum += tps * (double)bytes_per_token / 1e9 / bw;
                n_shares++;
            }
            bw_before = bw_after;
        }
    }
    r->bw = n_shares ? bw_sum / n_shares : 0.0;
    r->share = n_shares ? share_sum / n_shares : 0.0;
    r->test = *t;
    moe_perf perf;
    moe_context_perf(ctx, &perf);
    const double n_tok = (double)(perf.n_tokens > 0 ? perf.n_tokens : 1);
    r->experts_ms = perf.experts_ms / n_tok;
    r->other_ms = perf.other_ms / n_tok;
    r->copy_ms = perf.copy_ms / n_tok;
    r->mean = sum / (double)o->reps;
    r->gbs = r->mean * (double)bytes_per_token / 1e9;
    r->sd = o->reps > 1 ? sqrt(fmax(0.0, (sum2 - sum * sum / (double)o->reps) / (double)(o->reps - 1)))
                        : 0.0;
    return MOE_OK;
}

/* ---- output ------------------------------------------------------------------------------- */

typedef struct model_info {
    const char *path, *arch;
    char label[64]; /* the markdown table's model column: arch and main weight type */
    double gib, params_b;
    uint64_t bytes_per_token;
} model_info;

static double n_params(const moe_model *m) {
    double n = 0;
    const moe_weight *g[] = {&m->tok_embd, &m->output_norm, &m->output};
    for (int i = 0; i < 3; i++)
        if (g[i]->data && (i < 2 || m->output.data != m->tok_embd.data))
            n += (double)(g[i]->ne[0] * g[i]->ne[1] * g[i]->ne[2]);
    for (int64_t il = 0; il < m->hp.n_layer; il++) {
        const moe_layer *L = &m->layers[il];
#define COUNT(f) if (L->f.data) n += (double)(L->f.ne[0] * L->f.ne[1] * L->f.ne[2]);
        MOE_LAYER_WEIGHTS(COUNT)
#undef COUNT
    }
    return n;
}

/* "olmoe Q4_0_R8": the architecture and the type holding most layer weight
 * bytes (the experts'), as llama-bench's model column names the file type;
 * two files of one model in a table are then told apart. */
static void model_label(const moe_model *m, char *buf, size_t cap) {
    uint64_t bytes[MOE_TYPE_ID_LIMIT] = {0};
    for (int64_t il = 0; il < m->hp.n_layer; il++) {
        const moe_layer *L = &m->layers[il];
#define ADD(f) if (L->f.data && (int)L->f.type < MOE_TYPE_ID_LIMIT) \
            bytes[L->f.type] += L->f.expert_bytes * (uint64_t)(L->f.ne[2] ? L->f.ne[2] : 1);
        MOE_LAYER_WEIGHTS(ADD)
#undef ADD
    }
    int best = 0;
    for (int t = 1; t < MOE_TYPE_ID_LIMIT; t++)
        if (bytes[t] > bytes[best])
            best = t;
    int n = snprintf(buf, cap, "%s ", moe_model_arch_name(m));
    for (const char *p = moe_type_name(best); n >= 0 && (size_t)n + 1 < cap && *p; p++)
        buf[n++] = (char)toupper((unsigned char)*p);
    if (n >= 0 && (size_t)n < cap)
        buf[n] = 0;
}

static void print_row(FILE *f, const char *fmt, const model_info *mi, const char *backend,
                      int threads, const bench_result *r, bool first, bool split) {
    const bool tg = r->test.n_prompt == 0 && r->test.n_gen > 0;
    const double bw = r->bw, pct = tg ? 100.0 * r->share : 0.0;
    if (!strcmp(fmt, "json")) {
        fprintf(f, "%s  {\"model\": \"%s\", \"arch\": \"%s\", \"size_gib\": %.3f, \"params_b\": %.3f, "
                   "\"backend\": \"%s\", \"threads\": %d, \"test\": \"%s\", \"n_prompt\": %lld, "
                   "\"n_gen\": %lld, \"depth\": %lld, \"t_s\": %.3f, \"t_s_sd\": %.3f",
                first ? "" : ",\n", mi->path, mi->arch, mi->gib, mi->params_b, backend, threads,
                r->test.name, (long long)r->test.n_prompt, (long long)r->test.n_gen,
                (long long)r->test.depth, r->mean, r->sd);
        if (tg)
            fprintf(f, ", \"weight_gb_s\": %.3f, \"read_bw_gb_s\": %.3f, \"roofline_pct\": %.1f", r->gbs, bw, pct);
        fprintf(f, ", \"experts_ms_tok\": %.4f, \"other_ms_tok\": %.4f, \"copy_ms_tok\": %.4f",
                r->experts_ms, r->other_ms, r->copy_ms);
        fputc('}', f);
    } else if (!strcmp(fmt, "csv")) {
        fprintf(f, "%s,%s,%.3f,%.3f,%s,%d,%s,%.3f,%.3f,%.3f,%.1f\n", mi->path, mi->arch, mi->gib,
                mi->params_b, backend, threads, r->test.name, r->mean, r->sd, tg ? r->gbs : 0.0, pct);
    } else {
        char bwcol[48] = "";
        if (tg)
            snprintf(bwcol, sizeof bwcol, "%.2f (%.0f%% of %.1f)", r->gbs, pct, bw);
        fprintf(f, "| %s | %.2f GiB | %.2f B | %s | %d | %s | %.2f ± %.2f | %s |", mi->label, mi->gib,
                mi->params_b, backend, threads, r->test.name, r->mean, r->sd, bwcol);
        if (split) {
            const double all = r->experts_ms + r->other_ms + r->copy_ms;
            fprintf(f, " %.3f / %.3f / %.3f (%.1f%%) |", r->experts_ms, r->other_ms, r->copy_ms,
                    all > 0 ? 100.0 * r->copy_ms / all : 0.0);
        }
        fputc('\n', f);
    }
}

/* ---- main --------------------------------------------------------------------------------- */

static int add_tests(const bench_opts *o, const int_list *pp, const int_list *tg, const int_list *pg,
                     bench_test *tests) {
    int n = 0;
    int64_t depths[64] = {0};
    int n_depth = 1;
    if (o->sweep)
        for (int64_t d = o->sweep_step; d + 1 < o->n_ctx && n_depth < 64; d += o->sweep_step)
            depths[n_depth++] = d;
    for (int di = 0; di < n_depth; di++) {
        const int64_t d = depths[di];
        char at[24] = "";
        if (o->sweep)
            snprintf(at, sizeof at, " @ d%lld", (long long)d);
        for (int i = 0; i < pp->n; i++)
            if (d + pp->v[i] <= o->n_ctx) {
                tests[n] = (bench_test){.n_prompt = pp->v[i], .depth = d};
                snprintf(tests[n++].name, sizeof tests[0].name, "pp%lld%s", (long long)pp->v[i], at);
            }
        for (int i = 0; i < tg->n; i++)
            if (d + tg->v[i] <= o->n_ctx) {
                tests[n] = (bench_test){.n_gen = tg->v[i], .depth = d};
                snprintf(tests[n++].name, sizeof tests[0].name, "tg%lld%s", (long long)tg->v[i], at);
            }
        for (int i = 0; i + 1 < pg->n && !o->sweep; i += 2) {
            tests[n] = (bench_test){.n_prompt = pg->v[i], .n_gen = pg->v[i + 1]};
            snprintf(tests[n++].name, sizeof tests[0].name, "pp%lld+tg%lld", (long long)pg->v[i],
                     (long long)pg->v[i + 1]);
        }
    }
    return n;
}

static moe_status bench_model(const char *path, const bench_opts *o, const bench_test *tests,
                              int n_tests, const bw_probe *probe, bool *first, moe_err *err) {
    moe_model *m = NULL;
    moe_context *ctx = NULL;
    moe_model_params mp = moe_model_default_params();
    moe_expert_counts *hot = NULL;
    moe_status st = moe_placement_cli_apply(&o->place, (int32_t)o->n_ctx, &mp, &hot, err);
    if (st == MOE_OK)
        st = moe_model_load(path, &mp, &m, err);
    free(hot);
    int64_t max_batch = 1;
    for (int i = 0; i < n_tests; i++)
        max_batch = tests[i].n_prompt > max_batch ? tests[i].n_prompt : max_batch;
    if (o->sweep && o->sweep_step > max_batch)
        max_batch = o->sweep_step;
    if (max_batch > 4096)
        max_batch = 4096;
    moe_context_params cp = moe_context_default_params();
    cp.n_ctx = (int32_t)o->n_ctx;
    cp.n_batch = (int32_t)max_batch;
    cp.n_threads = (int)o->threads;
    moe_placement_cli_apply_ctx(&o->place, &cp);
    if (st == MOE_OK)
        st = moe_context_create(m, &cp, &ctx, err);
    moe_token *tok = malloc((size_t)max_batch * sizeof *tok);
    int32_t *pos = malloc((size_t)max_batch * sizeof *pos);
    if (st == MOE_OK && (!tok || !pos))
        st = moe_fail(err, MOE_ERR_NOMEM, "out of memory");
    char backend[96] = "", *at = backend;
    for (int d = 0; st == MOE_OK && d < m->n_dev; d++) /* the devices the placement uses */
        if (m->dev_used & (1u << d) || d == 0)
            at += snprintf(at, (size_t)(backend + sizeof backend - at), "%s%s", d ? "+" : "",
                           m->dev[d].info.name);
    snprintf(at, (size_t)(backend + sizeof backend - at), " (%s%s)",
             moe_cpu_level_name(moe_cpu_level_active()), o->place.run_time_repack ? ", rtr" : "");
    model_info mi = {.path = path};
    if (st == MOE_OK) {
        mi.arch = moe_model_arch_name(m);
        model_label(m, mi.label, sizeof mi.label);
        mi.gib = (double)moe_model_weight_bytes(m) / (1024.0 * 1024.0 * 1024.0);
        mi.params_b = n_params(m) / 1e9;
        mi.bytes_per_token = moe_model_bytes_per_token(m);
    }
    if (st == MOE_OK)
        st = moe_expert_stats_begin(ctx, m, path, o->expert_stats, &g_expert_stats, err);
    for (int i = 0; i < n_tests && st == MOE_OK; i++) {
        if (tests[i].depth + tests[i].n_prompt + tests[i].n_gen > moe_context_n_ctx(ctx))
            continue;
        bench_result r;
        const bool tg = tests[i].n_prompt == 0 && tests[i].n_gen > 0;
        st = run_test(ctx, &tests[i], o, moe_model_n_vocab(m), (int32_t)max_batch, tok, pos,
                      tg ? probe : NULL, mi.bytes_per_token, &r, err);
        if (st != MOE_OK)
            break;
        print_row(stdout, o->output, &mi, backend, (int)o->threads, &r, *first, o->time_split);
        *first = false;
        fflush(stdout);
    }
    st = moe_expert_stats_end(g_expert_stats, o->expert_stats, st, err);
    g_expert_stats = NULL;
    free(tok);
    free(pos);
    moe_context_free(ctx);
    moe_model_free(m);
    return st;
}

int main(int argc, char **argv) {
    bench_opts o = {.prompts = "128,512", .gens = "32,128", .output = "md", .threads = 0,
                    .reps = 3, .sweep_step = 512, .n_ctx = 0, .bw_bytes = 1ull << 30,
                    .place = MOE_PLACEMENT_OPTS_INIT};
    const moe_opt opts[] = {
        {.names = "m,model", .kind = MOE_OPT_LIST, .dest = &o.models, .arg_name = "FILE", .help = "model to test (repeatable)"},
        {.names = "p,n-prompt", .kind = MOE_OPT_STRING, .dest = &o.prompts, .arg_name = "N,...", .help = "prompt sizes (default 128,512; '' none)"},
        {.names = "n,n-gen", .kind = MOE_OPT_STRING, .dest = &o.gens, .arg_name = "N,...", .help = "generation lengths (default 32,128; '' none)"},
        {.names = "pg", .kind = MOE_OPT_STRING, .dest = &o.pg, .arg_name = "P,N,...", .help = "prompt then generation, pairs P,N"},
        {.names = "t,threads", .kind = MOE_OPT_INT, .dest = &o.threads, .arg_name = "N", .help = "threads (default: all cores)", .min = 0, .max = 4096},
        {.names = "r,repetitions", .kind = MOE_OPT_INT, .dest = &o.reps, .arg_name = "N", .help = "timed runs per test (default 3)", .min = 1, .max = 1000},
        {.names = "o,output", .kind = MOE_OPT_STRING, .dest = &o.output, .arg_name = "FMT", .help = "md (default), json or csv"},
        {.names = "c,ctx-size", .kind = MOE_OPT_INT, .dest = &o.n_ctx, .arg_name = "N", .help = "context cells (default: what the tests need)", .min = 0, .max = 1 << 24},
        {.names = "sweep", .kind = MOE_OPT_FLAG, .dest = &o.sweep, .arg_name = NULL, .help = "repeat the tests at KV depths 0, step, 2 step... < -c"},
        {.names = "sweep-step", .kind = MOE_OPT_INT, .dest = &o.sweep_step, .arg_name = "N", .help = "depth step of --sweep (default 512)", .min = 1, .max = 1 << 24},
        {.names = "bw-size", .kind = MOE_OPT_SIZE, .dest = &o.bw_bytes, .arg_name = "SIZE", .help = "buffer of the read-bandwidth test (default 1G)"},
        {.names = "no-warmup", .kind = MOE_OPT_FLAG, .dest = &o.no_warmup, .arg_name = NULL, .help = "skip the untimed warm-up run"},
        {.names = "expert-stats", .kind = MOE_OPT_STRING, .dest = &o.expert_stats, .arg_name = "FILE.json", .help = "write how often each expert was chosen per MoE layer: pp tokens as prompt, tg tokens as gen, warm-up and repetitions included (one -m only; replaces FILE)"},
        {.names = "time-split", .kind = MOE_OPT_FLAG, .dest = &o.time_split, .arg_name = NULL, .help = "add a column: ms per token in routed experts / other steps / copies between devices (and the copies' share)"},
        MOE_PLACEMENT_OPTS(&o.place),
        {.names = NULL},
    };
    const moe_cli cli = {.prog = PROG, .synopsis = "-m MODEL [-m MODEL...] [options]",
                         .summary = "Tokens per second of prompt processing (ppN) and generation "
                                    "(tgN) as llama-bench reports them, with generation's weight "
                                    "bandwidth against a measured read bandwidth.",
                         .opts = opts, .min_positional = 0, .max_positional = 0};
    moe_log_set_prog(PROG);
    moe_err err = {0};
    bool help = false;
    int_list pp, tg, pg;
    moe_status st = moe_cli_parse(&cli, argc, argv, NULL, NULL, &help, &err);
    if (st == MOE_OK && !help && o.place.list_devices) {
        moe_placement_cli_list(stdout);
        return 0;
    }
    if (st == MOE_OK && !help) {
        if (!o.models.count)
            st = moe_fail(&err, MOE_ERR_USAGE, "no model: give one with -m FILE");
        else if (strcmp(o.output, "md") && strcmp(o.output, "json") && strcmp(o.output, "csv"))
            st = moe_fail(&err, MOE_ERR_USAGE, "option -o: '%s' is not md, json or csv", o.output);
    }
    if (st == MOE_OK && !help)
        st = parse_list("-p", o.prompts, &pp, &err);
    if (st == MOE_OK && !help)
        st = parse_list("-n", o.gens, &tg, &err);
    if (st == MOE_OK && !help)
        st = parse_list("-pg", o.pg, &pg, &err);
    if (st == MOE_OK && !help && pg.n % 2)
        st = moe_fail(&err, MOE_ERR_USAGE, "option -pg: give pairs P,N");
    if (st == MOE_OK && o.expert_stats && o.models.count > 1)
        st = moe_fail(&err, MOE_ERR_USAGE, "--expert-stats takes one -m model (merge files with "
                                           "moe-stats merge)");
    int exit_code;
    if (moe_cli_parse_done(PROG, st, help, &err, &exit_code))
        return exit_code;
    if (!o.threads)
        o.threads = moe_online_cpus();
    if (!o.n_ctx) { /* room for the largest test */
        for (int i = 0; i < pp.n; i++)
            o.n_ctx = pp.v[i] > o.n_ctx ? pp.v[i] : o.n_ctx;
        for (int i = 0; i < tg.n; i++)
            o.n_ctx = tg.v[i] > o.n_ctx ? tg.v[i] : o.n_ctx;
        for (int i = 0; i + 1 < pg.n; i++)
            o.n_ctx = pg.v[i] + pg.v[i + 1] > o.n_ctx ? pg.v[i] + pg.v[i + 1] : o.n_ctx;
        if (o.sweep)
            o.n_ctx = o.n_ctx > 4096 ? o.n_ctx : 4096;
        o.n_ctx = o.n_ctx < 1 ? 1 : o.n_ctx;
    }
    static bench_test tests[64 * 3 * MAX_VALUES];
    const int n_tests = add_tests(&o, &pp, &tg, &pg, tests);
    const bw_probe probe = {.bytes = o.bw_bytes, .threads = (int)o.threads};
    const double bw0 = bw_measure(&probe);
    if (bw0 <= 0.0)
        MOE_WARN("no read bandwidth measured (a --bw-size of %llu bytes could not be had or "
                 "is under 64): the tg rows' shares read 0%%", (unsigned long long)o.bw_bytes);
    const bool md = !strcmp(o.output, "md");
    if (md) {
        printf("read bandwidth: %.2f GB/s now (%d threads, %.0f MiB buffer, best of 3 passes of a "
               "one-stream and an eight-stream read; measured again before and after every tg "
               "run: %% is the mean over the runs of each run's share of the two around it, "
               "'of' their mean GB/s)\n\n",
               bw0, (int)o.threads, (double)o.bw_bytes / 1048576.0);
        printf("| model | size | params | backend | threads | test | t/s | weights GB/s (%% of read GB/s) |%s\n",
               o.time_split ? " experts / other / copies ms/tok (copies) |" : "");
        printf("| --- | ---: | ---: | --- | ---: | --- | ---: | ---: |%s\n", o.time_split ? " ---: |" : "");
    } else if (!strcmp(o.output, "json")) {
        printf("[\n");
    } else {
        printf("model,arch,size_gib,params_b,backend,threads,test,t_s,t_s_sd,weight_gb_s,roofline_pct\n");
    }
    bool first = true;
    for (int i = 0; i < o.models.count && st == MOE_OK; i++)
        st = bench_model(o.models.items[i], &o, tests, n_tests, &probe, &first, &err);
    if (!strcmp(o.output, "json"))
        printf("\n]\n");
    return moe_cli_finish(PROG, st, &err);
}
