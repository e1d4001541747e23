/* test_golden — the runtime's logits against the conformance pack's, through
 * the C API (moe.h), not the CLI.
 *
 *   test_golden                      every case below (missing files skipped)
 *   test_golden logits NAME          prompt batch + 16 fed greedy ids vs expected/NAME.logits
 *   test_golden kvshift NAME         K-shift golden (expected/NAME.kvshift.logits)
 *   test_golden kshift-fresh NAME    K-shift of the whole sequence vs a fresh evaluation
 *   test_golden compare GOT EXP N_VOCAB [quant]   two logits files, the same tolerances
 *   test_golden dump NAME OUT        the rows of `logits NAME`, written as the CLI writes them
 *
 * Tolerances (conformance/README.md): float weights max|d| <= 0.01; quantized
 * tiny-llama-TYPE rms <= 0.1 and the same arg-max wherever the expected top-2
 * margin exceeds 0.25. F16 KV cache, n_ctx 512, one sequence, as the goldens
 * were made. A case whose files are missing exits 77 (skipped).
 */
#include <inttypes.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "runtime/include/moe.h"
#include "test_util.h"

#define N_PROMPT 16
#define N_GREEDY 16
#define N_KV_FEED 8
#define GOLDEN_N_CTX 512
#define FLOAT_MAX_ABS 0.01
#define QUANT_RMS 0.1
#define QUANT_MARGIN 0.25
/* The kvshift goldens: seq_rm(0, 1, 5) then seq_add(0, 5, -1, -4). */
#define SHIFT_RM_P0 1
#define SHIFT_RM_P1 5
#define SHIFT_DELTA (-4)
#define SHIFT_KEPT (N_PROMPT - (SHIFT_RM_P1 - SHIFT_RM_P0))

typedef struct golden_case {
    const char *name;   /* model file models/NAME.gguf */
    const char *golden; /* expected/GOLDEN.logits and .greedy */
    bool quant;
    bool kvshift;       /* has expected/NAME.kvshift.logits */
} golden_case;

static const golden_case CASES[] = {
    {"tiny-llama", "tiny-llama", false, true},
    {"tiny-llama-split", "tiny-llama", false, false},
    {"tiny-llama-q8_0", "tiny-llama-q8_0", true, false},
    {"tiny-llama-q4_0", "tiny-llama-q4_0", true, false},
    {"tiny-llama-q4_1", "tiny-llama-q4_1", true, false},
    {"tiny-llama-q5_0", "tiny-llama-q5_0", true, false},
    {"tiny-llama-q5_1", "tiny-llama-q5_1", true, false},
    {"tiny-llama-q2_K", "tiny-llama-q2_K", true, false},
    {"tiny-llama-q3_K", "tiny-llama-q3_K", true, false},
    {"tiny-llama-q4_K", "tiny-llama-q4_K", true, false},
    {"tiny-llama-q5_K", "tiny-llama-q5_K", true, false},
    {"tiny-llama-q6_K", "tiny-llama-q6_K", true, false},
    {"tiny-llama-iq4_nl", "tiny-llama-iq4_nl", true, false},
    {"tiny-llama-iq4_xs", "tiny-llama-iq4_xs", true, false},
    {"tiny-qwen2moe", "tiny-qwen2moe", false, true},
    {"tiny-olmoe", "tiny-olmoe", false, true},
    {"tiny-deepseek2", "tiny-deepseek2", false, false},
    {"tiny-deepseek2-lite", "tiny-deepseek2-lite", false, false},
    {"tiny-qwen3moe", "tiny-qwen3moe", false, false},
};
#define N_CASES (sizeof CASES / sizeof CASES[0])

/* ---- files ------------------------------------------------------------------------------ */

#define PATH_CAP 4096

/* out = CONFORMANCE_DIR/dir + name + suffix ("models/", "tiny-llama", ".gguf"). */
static void pack_path(char *out, const char *dir, const char *name, const char *suffix) {
    snprintf(out, PATH_CAP, "%s/%s%s%s", test_conformance_dir(), dir, name, suffix);
}

static bool file_exists(const char *path) {
    FILE *f = fopen(path, "rb");
    if (f)
        fclose(f);
    return f != NULL;
}

/* Whole file into a malloc'd buffer; NULL if it cannot be read. */
static uint8_t *slurp(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    uint8_t *buf = NULL;
    size_t n = 0, cap = 0, got;
    do {
        if (cap - n < 65536) {
            cap = cap ? 2 * cap : 1 << 20;
            uint8_t *nb = realloc(buf, cap);
            if (!nb) {
                free(buf);
                fclose(f);
                return NULL;
            }
            buf = nb;
        }
        got = fread(buf + n, 1, cap - n, f);
        n += got;
    } while (got > 0);
    fclose(f);
    *len = n;
    return buf;
}

/* Little-endian float32 rows; NULL (with a message) unless the file holds
 * exactly n_rows * n_vocab of them. */
static float *read_logits(const char *path, int64_t n_rows, int64_t n_vocab) {
    size_t len = 0;
    uint8_t *b = slurp(path, &len);
    if (!b || len != (size_t)(n_rows * n_vocab * 4)) {
        fprintf(stderr, "%s: expected %" PRId64 " x %" PRId64 " float32, got %zu bytes\n", path,
                n_rows, n_vocab, b ? len : 0);
        free(b);
        return NULL;
    }
    float *rows = malloc(len);
    for (size_t i = 0; rows && i < len / 4; i++) {
        uint32_t u = (uint32_t)b[4 * i] | (uint32_t)b[4 * i + 1] << 8 |
                     (uint32_t)b[4 * i + 2] << 16 | (uint32_t)b[4 * i + 3] << 24;
        memcpy(&rows[i], &u, 4);
    }
    free(b);
    return rows;
}

static bool write_logits(const char *path, const float *rows, int64_t n) {
    FILE *f = fopen(path, "wb");
    if (!f)
        return false;
    bool ok = true;
    for (int64_t i = 0; i < n && ok; i++) {
        uint32_t u;
        memcpy(&u, &rows[i], 4);
        uint8_t b[4] = {(uint8_t)u, (uint8_t)(u >> 8), (uint8_t)(u >> 16), (uint8_t)(u >> 24)};
        ok = fwrite(b, 1, 4, f) == 4;
    }
    return fclose(f) == 0 && ok;
}

/* Whitespace-separated ids; returns how many were read (at most max), -1 if
 * the file cannot be opened. */
static int read_ids(const char *path, moe_token *ids, int max) {
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    int n = 0;
    long v;
    while (n < max && fscanf(f, "%ld", &v) == 1)
        ids[n++] = (moe_token)v;
    fclose(f);
    return n;
}

/* ---- comparison --------------------------------------------------------------------------- */

typedef struct cmp_stats {
    double max_abs, rms;
    int64_t worst_row;
    int argmax_agree, n_rows, n_margin, n_margin_bad;
} cmp_stats;

static int64_t row_argmax(const float *r, int64_t n, float *second) {
    int64_t best = 0;
    float s = -INFINITY;
    for (int64_t i = 1; i < n; i++) {
        if (r[i] > r[best]) {
            s = r[best];
            best = i;
        } else if (r[i] > s) {
            s = r[i];
        }
    }
    if (second)
        *second = s;
    return best;
}

static cmp_stats compare_rows(const float *got, const float *exp, int64_t n_rows,
                              int64_t n_vocab) {
    cmp_stats s = {.n_rows = (int)n_rows};
    double sum2 = 0;
    for (int64_t r = 0; r < n_rows; r++) {
        const float *g = got + r * n_vocab, *e = exp + r * n_vocab;
        for (int64_t i = 0; i < n_vocab; i++) {
            double d = fabs((double)g[i] - (double)e[i]);
            if (!isfinite(d))
                d = INFINITY; /* a NaN must not hide behind a comparison */
            if (d > s.max_abs || (isinf(d) && !isinf(s.max_abs))) {
                s.max_abs = d;
                s.worst_row = r;
            }
            sum2 += d * d;
        }
        float second;
        int64_t ae = row_argmax(e, n_vocab, &second);
        bool same = row_argmax(g, n_vocab, NULL) == ae;
        s.argmax_agree += same;
        if (e[ae] - second > QUANT_MARGIN) {
            s.n_margin++;
            s.n_margin_bad += !same;
        }
    }
    s.rms = sqrt(sum2 / (double)(n_rows * n_vocab));
    return s;
}

/* Prints the stats and records the verdict under the tolerances of kind. */
static void check_rows(const char *label, const float *got, const float *exp, int64_t n_rows,
                       int64_t n_vocab, bool quant) {
    cmp_stats s = compare_rows(got, exp, n_rows, n_vocab);
    printf("%-34s max|d| %.6f (row %" PRId64 ")  rms %.6f  argmax %d/%d", label, s.max_abs,
           s.worst_row, s.rms, s.argmax_agree, s.n_rows);
    if (quant)
        printf("  (margin > %.2f: %d rows, %d differ)", QUANT_MARGIN, s.n_margin,
               s.n_margin_bad);
    printf("\n");
    if (quant) {
        CHECK(s.rms <= QUANT_RMS, "%s: rms %.6f > %.2f", label, s.rms, QUANT_RMS);
        CHECK(s.n_margin_bad == 0, "%s: %d rows with a clear expected winner pick another",
              label, s.n_margin_bad);
    } else {
        CHECK(s.max_abs <= FLOAT_MAX_ABS, "%s: max|d| %.6f > %.2f (row %" PRId64 ")", label,
              s.max_abs, FLOAT_MAX_ABS, s.worst_row);
    }
}

/* ---- evaluation ----------------------------------------------------------------------------- */

typedef struct golden_run {
    moe_model *model;
    moe_context *ctx;
    int64_t n_vocab;
} golden_run;

static bool open_run(const char *model_path, moe_type kv_type, golden_run *g) {
    memset(g, 0, sizeof *g);
    moe_err err = {0};
    moe_model_params mp = moe_model_default_params();
    moe_status st = moe_model_load(model_path, &mp, &g->model, &err);
    CHECK(st == MOE_OK, "load %s: %s", model_path, err.msg);
    if (st != MOE_OK)
        return false;
    g->n_vocab = moe_model_n_vocab(g->model);
    moe_context_params cp = moe_context_default_params();
    CHECK(cp.type_k == MOE_TYPE_F16 && cp.type_v == MOE_TYPE_F16, "default KV cache is not F16");
    cp.n_ctx = GOLDEN_N_CTX;
    cp.type_k = cp.type_v = kv_type;
    st = moe_context_create(g->model, &cp, &g->ctx, &err);
    CHECK(st == MOE_OK, "context for %s: %s", model_path, err.msg);
    return st == MOE_OK;
}

static void close_run(golden_run *g) {
    moe_context_free(g->ctx);
    moe_model_free(g->model);
    memset(g, 0, sizeof *g);
}

/* Decodes n tokens at positions pos0.. into rows (n x n_vocab): as one batch
 * asking for every token's logits, or one token per moe_decode. */
static bool decode_rows(golden_run *g, const moe_token *t, int32_t n, int32_t pos0,
                        bool one_batch, float *rows) {
    int32_t pos[N_PROMPT + N_GREEDY];
    int8_t want[N_PROMPT + N_GREEDY];
    for (int32_t i = 0; i < n; i++)
        pos[i] = pos0 + i, want[i] = 1;
    int32_t step = one_batch ? n : 1;
    for (int32_t i = 0; i < n; i += step) {
        moe_err err = {0};
        moe_batch b = {.n_tokens = step, .token = t + i, .pos = pos + i, .logits = want + i};
        moe_status st = moe_decode(g->ctx, &b, &err);
        CHECK(st == MOE_OK, "decode at position %" PRId32 ": %s", pos[i], err.msg);
        if (st != MOE_OK)
            return false;
        for (int32_t j = 0; j < step; j++) {
            const float *row = moe_get_logits_ith(g->ctx, j);
            CHECK(row != NULL, "no logits for batch token %" PRId32, j);
            if (!row)
                return false;
            memcpy(rows + (int64_t)(i + j) * g->n_vocab, row, (size_t)g->n_vocab * 4);
        }
    }
    return true;
}

/* ---- cases ---------------------------------------------------------------------------- */

static const golden_case *find_case(const char *name) {
    for (size_t i = 0; i < N_CASES; i++)
        if (!strcmp(CASES[i].name, name))
            return &CASES[i];
    fprintf(stderr, "unknown case '%s'\n", name);
    exit(2);
}

/* Skips (77) a single case whose files are missing; in the run-everything
 * mode the caller just moves on. */
static bool have_files(const char *const *paths, int n, bool exit_if_missing) {
    for (int i = 0; i < n; i++) {
        if (!file_exists(paths[i])) {
            printf("skip: %s missing\n", paths[i]);
            if (exit_if_missing)
                exit(77);
            return false;
        }
    }
    return true;
}

/* The 32 rows of the logits golden: prompt batch, then the expected greedy
 * ids fed one at a time (not our own picks, which may differ on near-ties). */
static float *golden_rows(const golden_case *c, golden_run *g, bool must) {
    char model[PATH_CAP], greedy[PATH_CAP], prompt_path[PATH_CAP];
    pack_path(model, "models/", c->name, ".gguf");
    pack_path(greedy, "expected/", c->golden, ".greedy");
    pack_path(prompt_path, "", "prompt.tokens", "");
    const char *need[] = {model, greedy, prompt_path};
    if (!have_files(need, 3, must))
        return NULL;
    moe_token ids[N_PROMPT + N_GREEDY];
    CHECK(read_ids(prompt_path, ids, N_PROMPT) == N_PROMPT, "prompt.tokens: not %d ids", N_PROMPT);
    CHECK(read_ids(greedy, ids + N_PROMPT, N_GREEDY) == N_GREEDY, "%s: not %d ids", greedy,
          N_GREEDY);
    if (!open_run(model, MOE_TYPE_F16, g))
        return NULL;
    float *rows = malloc((size_t)((N_PROMPT + N_GREEDY) * g->n_vocab) * 4);
    if (!rows || !decode_rows(g, ids, N_PROMPT, 0, true, rows) ||
        !decode_rows(g, ids + N_PROMPT, N_GREEDY, N_PROMPT, false, rows + N_PROMPT * g->n_vocab)) {
        free(rows);
        close_run(g);
        return NULL;
    }
    int greedy_same = 0; /* informative: on random weights near-ties are common */
    for (int i = 0; i < N_GREEDY; i++)
        greedy_same += row_argmax(rows + (N_PROMPT - 1 + i) * g->n_vocab, g->n_vocab, NULL) ==
                       ids[N_PROMPT + i];
    printf("%-34s our greedy pick matches %d/%d\n", c->name, greedy_same, N_GREEDY);
    return rows;
}

static void case_logits(const golden_case *c, bool must) {
    golden_run g;
    float *rows = golden_rows(c, &g, must);
    if (!rows)
        return;
    char exp_path[PATH_CAP];
    pack_path(exp_path, "expected/", c->golden, ".logits");
    float *exp = read_logits(exp_path, N_PROMPT + N_GREEDY, g.n_vocab);
    CHECK(exp != NULL, "%s: unreadable golden", exp_path);
    if (exp)
        check_rows(c->name, rows, exp, N_PROMPT + N_GREEDY, g.n_vocab, c->quant);
    free(exp);
    free(rows);
    close_run(&g);
}

/* Prompt batch, drop positions 1-4, shift 5.. down by 4, then feed 8 ids at
 * 12..19. rows gets 16 + 8 rows. */
static bool shifted_rows(golden_run *g, const moe_token *prompt, const moe_token *feed,
                         float *rows) {
    if (!decode_rows(g, prompt, N_PROMPT, 0, true, rows))
        return false;
    moe_kv_seq_rm(g->ctx, 0, SHIFT_RM_P0, SHIFT_RM_P1);
    moe_kv_seq_add(g->ctx, 0, SHIFT_RM_P1, -1, SHIFT_DELTA);
    int32_t pmax = moe_kv_seq_pos_max(g->ctx, 0);
    CHECK(pmax == SHIFT_KEPT - 1, "after the shift seq_pos_max is %" PRId32 ", want %d", pmax,
          SHIFT_KEPT - 1);
    return decode_rows(g, feed, N_KV_FEED, SHIFT_KEPT, false, rows + N_PROMPT * g->n_vocab);
}

static bool read_shift_inputs(const char *model, moe_token *prompt, moe_token *feed, bool must) {
    char prompt_path[PATH_CAP], feed_path[PATH_CAP];
    pack_path(prompt_path, "", "prompt.tokens", "");
    pack_path(feed_path, "", "kvshift.feed", "");
    const char *need[] = {model, prompt_path, feed_path};
    if (!have_files(need, 3, must))
        return false;
    CHECK(read_ids(prompt_path, prompt, N_PROMPT) == N_PROMPT, "prompt.tokens: not %d ids",
          N_PROMPT);
    CHECK(read_ids(feed_path, feed, N_KV_FEED) == N_KV_FEED, "kvshift.feed: not %d ids",
          N_KV_FEED);
    return true;
}

static void case_kvshift(const golden_case *c, bool must) {
    char model[PATH_CAP], exp_path[PATH_CAP], label[128];
    pack_path(model, "models/", c->name, ".gguf");
    pack_path(exp_path, "expected/", c->name, ".kvshift.logits");
    moe_token prompt[N_PROMPT], feed[N_KV_FEED];
    const char *need[] = {exp_path};
    if (!read_shift_inputs(model, prompt, feed, must) || !have_files(need, 1, must))
        return;
    golden_run g;
    if (!open_run(model, MOE_TYPE_F16, &g))
        return;
    float *rows = malloc((size_t)((N_PROMPT + N_KV_FEED) * g.n_vocab) * 4);
    float *exp = read_logits(exp_path, N_PROMPT + N_KV_FEED, g.n_vocab);
    CHECK(exp != NULL, "%s: unreadable golden", exp_path);
    if (rows && exp && shifted_rows(&g, prompt, feed, rows)) {
        snprintf(label, sizeof label, "%s kvshift", c->name);
        check_rows(label, rows, exp, N_PROMPT + N_KV_FEED, g.n_vocab, false);
    }
    free(exp);
    free(rows);
    close_run(&g);
}

/* No golden exists for deepseek2 (llama.cpp refuses the K-shift there), so
 * the shift is checked against a fresh evaluation that is equivalent in exact
 * arithmetic. That rules out the obvious comparison, "drop 1-4, shift 5-15
 * down, vs. a fresh run of the 12 kept tokens": from layer 1 on, the cached
 * K/V of tokens 5-15 were computed attending to tokens 1-4, so the two differ
 * by whole logits (measured: max|d| 2-14 on every architecture, including
 * llama, whose shifted rows match llama.cpp's golden to 2e-6). Instead:
 *   shifted: the prompt at positions 4..19, seq_add(all, -4) -> 0..15, then
 *            the 8 kvshift.feed ids at 16..23;
 *   fresh:   the prompt at 0..15, the same feed at 16..23.
 * RoPE scores depend only on relative positions, so the rows agree when the
 * keys were re-rotated by exactly -4; a missing or wrong shift leaves every
 * query 4 positions off its keys. Both use the F16 cache: the shifted keys are
 * rounded to F16 twice (before and after re-rotation), the fresh ones once.
 *
 * The bound is 0.01 (measured 0.003-0.007) except for tiny-deepseek2-lite:
 * its 27 layers carry the F16 cache's rounding much further, so that the same
 * prompt evaluated at +4 instead of 0, with no shift at all, already differs
 * by 0.03-0.4 (the larger figure at a single row, likely a near-tie that the
 * rounding tips over), and the shifted rows by 0.03-0.04; it gets 0.1. A
 * broken shift moves logits by whole units (13.6 in the invalid comparison
 * above), so 0.1 still tells the two apart. */
#define FRESH_OFFSET 4
#define FRESH_MAX_ABS 0.01
#define FRESH_MAX_ABS_DEEP 0.1

static void case_kshift_fresh(const golden_case *c, bool must) {
    char model[PATH_CAP], label[128];
    pack_path(model, "models/", c->name, ".gguf");
    moe_token prompt[N_PROMPT], feed[N_KV_FEED];
    if (!read_shift_inputs(model, prompt, feed, must))
        return;
    golden_run a, b;
    if (!open_run(model, MOE_TYPE_F16, &a))
        return;
    if (!open_run(model, MOE_TYPE_F16, &b)) {
        close_run(&a);
        return;
    }
    int64_t nv = a.n_vocab, n_rows = N_PROMPT + N_KV_FEED;
    float *sh = malloc((size_t)(n_rows * nv) * 4), *fr = malloc((size_t)(n_rows * nv) * 4);
    bool ok = sh && fr && decode_rows(&a, prompt, N_PROMPT, FRESH_OFFSET, true, sh) &&
              decode_rows(&b, prompt, N_PROMPT, 0, true, fr);
    if (ok) {
        moe_kv_seq_add(a.ctx, 0, 0, -1, -FRESH_OFFSET);
        int32_t pmax = moe_kv_seq_pos_max(a.ctx, 0);
        CHECK(pmax == N_PROMPT - 1, "%s: after the shift seq_pos_max is %" PRId32 ", want %d",
              c->name, pmax, N_PROMPT - 1);
        ok = decode_rows(&a, feed, N_KV_FEED, N_PROMPT, false, sh + N_PROMPT * nv) &&
             decode_rows(&b, feed, N_KV_FEED, N_PROMPT, false, fr + N_PROMPT * nv);
    }
    if (ok) {
        /* the prompt rows differ only in absolute position (no shift yet):
         * the noise floor of this comparison, printed for reference */
        cmp_stats base = compare_rows(sh, fr, N_PROMPT, nv);
        cmp_stats s = compare_rows(sh + N_PROMPT * nv, fr + N_PROMPT * nv, N_KV_FEED, nv);
        double bound = strcmp(c->name, "tiny-deepseek2-lite") ? FRESH_MAX_ABS : FRESH_MAX_ABS_DEEP;
        snprintf(label, sizeof label, "%s kshift vs fresh", c->name);
        printf("%-34s max|d| %.6f (row %" PRId64 ")  rms %.6f  argmax %d/%d  (bound %.2f; "
               "unshifted at +%d vs 0: max|d| %.6f)\n", label, s.max_abs, s.worst_row, s.rms,
               s.argmax_agree, s.n_rows, bound, FRESH_OFFSET, base.max_abs);
        CHECK(s.max_abs <= bound, "%s: max|d| %.6f > %.2f", label, s.max_abs, bound);
    }
    free(sh);
    free(fr);
    close_run(&a);
    close_run(&b);
}

/* ---- helpers for the CLI test ---------------------------------------------------------- */

static int cmd_compare(int argc, char **argv) {
    if (argc < 5) {
        fprintf(stderr, "usage: test_golden compare GOT EXPECTED N_VOCAB [quant]\n");
        return 2;
    }
    int64_t nv = strtoll(argv[4], NULL, 10);
    size_t len = 0;
    uint8_t *b = slurp(argv[3], &len);
    bool readable = b != NULL;
    free(b);
    bool whole = readable && nv > 0 && len % (size_t)(nv * 4) == 0;
    CHECK(whole, "%s: not rows of %s floats", argv[3], argv[4]);
    if (!whole)
        TEST_DONE();
    int64_t n_rows = (int64_t)(len / (size_t)(nv * 4));
    float *got = read_logits(argv[2], n_rows, nv), *exp = read_logits(argv[3], n_rows, nv);
    CHECK(got && exp, "cannot read both files as %" PRId64 " rows", n_rows);
    if (got && exp)
        check_rows(argv[2], got, exp, n_rows, nv, argc > 5 && !strcmp(argv[5], "quant"));
    free(got);
    free(exp);
    TEST_DONE();
}

static int cmd_dump(const char *name, const char *out) {
    golden_run g;
    float *rows = golden_rows(find_case(name), &g, true);
    if (!rows)
        return 1;
    bool ok = write_logits(out, rows, (N_PROMPT + N_GREEDY) * g.n_vocab);
    free(rows);
    close_run(&g);
    return ok ? 0 : 1;
}

static bool is_kshift_fresh_case(const golden_case *c) {
    return !c->quant && strcmp(c->name, "tiny-llama-split") != 0;
}

int main(int argc, char **argv) {
    /* compare reads only the two files it is given: scripts use it on
     * synthesised models, which must run without the pack */
    if (argc >= 2 && !strcmp(argv[1], "compare"))
        return cmd_compare(argc, argv);
    test_conformance_dir();
    if (argc == 4 && !strcmp(argv[1], "dump"))
        return cmd_dump(argv[2], argv[3]);
    if (argc == 3) {
        const golden_case *c = find_case(argv[2]);
        if (!strcmp(argv[1], "logits"))
            case_logits(c, true);
        else if (!strcmp(argv[1], "kvshift"))
            case_kvshift(c, true);
        else if (!strcmp(argv[1], "kshift-fresh"))
            case_kshift_fresh(c, true);
        else
            return fprintf(stderr, "unknown mode '%s'\n", argv[1]), 2;
        TEST_DONE();
    }
    if (argc != 1) {
        fprintf(stderr, "usage: test_golden [logits|kvshift|kshift-fresh NAME]\n");
        return 2;
    }
    for (size_t i = 0; i < N_CASES; i++) {
        case_logits(&CASES[i], false);
        if (CASES[i].kvshift)
            case_kvshift(&CASES[i], false);
        if (is_kshift_fresh_case(&CASES[i]))
            case_kshift_fresh(&CASES[i], false);
    }
    if (test_passed + test_failed == 0)
        return 77;
    TEST_DONE();
}
