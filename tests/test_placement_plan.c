/* Placement plans (runtime/placement_plan.c): --fit and --hot-experts on CPU1
 * with a fake memory size (MOE_CPU1_MEMORY).
 *
 *   test_placement_plan fit NAME   the table: at budgets made from the model's
 *                                  own sizes (nothing fits, some layers' dense
 *                                  parts, every dense part, + the last layers'
 *                                  experts, everything, a margin), --fit picks
 *                                  the documented placement, and its printed
 *                                  arguments give the same placement back
 *   test_placement_plan hot NAME   --hot-experts with --gpu-budget or --fit:
 *                                  exactly the hottest experts that fit are on
 *                                  CPU1, from counts and from a statistics
 *                                  file, and the printed arguments give the
 *                                  same placement back
 *   test_placement_plan bad        refusals: statistics of another model,
 *                                  options that conflict, no device, no memory
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "hot_counts.h"
#include "runtime/device.h"
#include "runtime/include/moe.h"
#include "runtime/kv_cache.h"
#include "runtime/model.h"
#include "runtime/quality/expert_stats.h"
#include "test_util.h"

#define FIT_N_CTX 64

static char *model_path(const char *name) {
    static char path[1024];
    snprintf(path, sizeof path, "%s/models/%s.gguf", test_conformance_dir(), name);
    return path;
}

static void set_cpu1_memory(uint64_t bytes) {
    char v[32];
    snprintf(v, sizeof v, "%" PRIu64, bytes);
    setenv("MOE_CPU1_MEMORY", v, 1);
}

/* ---- the model's sizes, summed here from its weights -------------------------------------- */

typedef struct sizes {
    int64_t n_layer, E;
    uint64_t dense[HOT_MAX_LAYERS]; /* all but the routed experts, + KV of FIT_N_CTX F16 cells */
    uint64_t exps[HOT_MAX_LAYERS];  /* the three routed-expert tensors; 0: none */
    uint64_t head;                  /* output + output_norm */
} sizes;

static bool model_sizes(const char *name, sizes *s) {
    moe_model *m = NULL;
    moe_err err = {0};
    moe_model_params mp = moe_model_default_params();
    if (moe_model_load(model_path(name), &mp, &m, &err) != MOE_OK) {
        CHECK(false, "%s: %s", name, err.msg);
        return false;
    }
    memset(s, 0, sizeof *s);
    s->n_layer = m->hp.n_layer;
    s->E = m->hp.n_expert;
    const uint64_t kv = moe_kv_cell_bytes(&m->hp, MOE_TYPE_F16, MOE_TYPE_F16) * FIT_N_CTX;
    for (int64_t il = 0; il < s->n_layer && il < HOT_MAX_LAYERS; il++) {
        const moe_layer *L = &m->layers[il];
        uint64_t all = kv;
#define SUM(f) all += L->f.data ? moe_weight_nbytes(&L->f) : 0;
        MOE_LAYER_WEIGHTS(SUM)
#undef SUM
        if (L->gate_exps.data)
            s->exps[il] = moe_weight_nbytes(&L->gate_exps) + moe_weight_nbytes(&L->up_exps) +
                          moe_weight_nbytes(&L->down_exps);
        s->dense[il] = all - s->exps[il];
    }
    s->head = moe_weight_nbytes(&m->output) + moe_weight_nbytes(&m->output_norm);
    moe_model_free(m);
    return s->n_layer <= HOT_MAX_LAYERS;
}

/* ---- the printed arguments, read back --------------------------------------------------------- */

typedef struct parsed_args {
    char *words[2 * MOE_MAX_OVERRIDES + 8];
    int n;
    const char *ot[MOE_MAX_OVERRIDES];
    moe_model_params mp;
} parsed_args;

/* Splits args as a POSIX shell would ('...' and '\'' only), then reads
 * -dev, -ngl and -ot into a->mp. False on anything else. */
static bool parse_args(const char *args, parsed_args *a) {
    memset(a, 0, sizeof *a);
    a->mp = moe_model_default_params();
    for (const char *s = args; *s;) {
        while (*s == ' ')
            s++;
        if (!*s)
            break;
        char *w = malloc(strlen(s) + 1), *o = w;
        while (*s && *s != ' ') {
            if (*s == '\'') {
                for (s++; *s && *s != '\''; s++)
                    *o++ = *s;
                s += *s == '\'';
            } else if (*s == '\\' && s[1]) {
                *o++ = s[1], s += 2;
            } else {
                *o++ = *s++;
            }
        }
        *o = 0;
        a->words[a->n++] = w;
    }
    int n_ot = 0;
    for (int i = 0; i + 1 < a->n; i += 2) {
        if (!strcmp(a->words[i], "-dev"))
            a->mp.devices = a->words[i + 1];
        else if (!strcmp(a->words[i], "-ngl"))
            a->mp.n_gpu_layers = atoi(a->words[i + 1]);
        else if (!strcmp(a->words[i], "-ot"))
            a->ot[n_ot++] = a->words[i + 1];
        else
            return false;
    }
    a->mp.tensor_overrides = a->ot;
    a->mp.n_tensor_overrides = n_ot;
    return a->n % 2 == 0;
}

static void free_args(parsed_args *a) {
    for (int i = 0; i < a->n; i++)
        free(a->words[i]);
}

static char *placement_report(const moe_model *m) {
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    moe_model_print_placement(m, f);
    fclose(f);
    return text;
}

/* Loads with the printed arguments of m: the same device for every tensor
 * (the -v report) and for every expert. */
static void check_round_trip(const char *name, const char *label, const moe_model *m) {
    const char *args = moe_model_placement_args(m);
    parsed_args a;
    CHECK(args && parse_args(args, &a), "%s [%s]: printed '%s'", name, label, args ? args : "");
    if (!args)
        return;
    moe_model *back = NULL;
    moe_err err = {0};
    moe_status st = moe_model_load(model_path(name), &a.mp, &back, &err);
    CHECK(st == MOE_OK, "%s [%s]: '%s' passed back: %s", name, label, args, err.msg);
    if (st == MOE_OK) {
        char *want = placement_report(m), *got = placement_report(back);
        CHECK(!strcmp(want, got), "%s [%s]: '%s' placed otherwise:\n%s\nvs\n%s", name, label,
              args, got, want);
        free(want);
        free(got);
        int64_t differ = 0;
        for (int64_t il = 0; il < moe_model_n_layer(m); il++)
            for (int64_t e = 0; e < moe_model_n_expert(m); e++)
                differ += moe_model_expert_device(m, il, e) != moe_model_expert_device(back, il, e);
        CHECK(differ == 0, "%s [%s]: %" PRId64 " experts placed otherwise by '%s'", name, label,
              differ, args);
        CHECK(moe_model_placement_args(back) == NULL, "%s: no plan when passed back", name);
    }
    moe_model_free(back);
    free_args(&a);
}

/* ---- fit ------------------------------------------------------------------------------------ */

typedef struct fit_row {
    const char *label;
    uint64_t free, margin;
    int32_t ngl;       /* what the documented policy gives */
    int64_t n_exps;    /* the last n_exps MoE layers keep their experts on CPU1 */
} fit_row;

static moe_status load_fit(const char *name, uint64_t free_bytes, uint64_t margin,
                           const moe_expert_counts *hot, moe_model **m, moe_err *err) {
    set_cpu1_memory(free_bytes);
    moe_model_params mp = moe_model_default_params();
    mp.fit = true;
    mp.fit_margin = margin;
    mp.fit_n_ctx = FIT_N_CTX;
    mp.devices = "CPU1";
    mp.hot_experts = hot;
    return moe_model_load(model_path(name), &mp, m, err);
}

static void check_fit_row(const char *name, const sizes *s, const fit_row *r) {
    moe_model *m = NULL;
    moe_err err = {0};
    moe_status st = load_fit(name, r->free, r->margin, NULL, &m, &err);
    CHECK(st == MOE_OK, "%s [%s]: %s", name, r->label, err.msg);
    if (st != MOE_OK)
        return;
    const int64_t L = s->n_layer, on = r->ngl < L ? r->ngl : L;
    int64_t moe_from_end = 0;
    for (int64_t il = L - 1; il >= 0; il--) {
        char t[64];
        snprintf(t, sizeof t, "blk.%" PRId64 ".attn_norm.weight", il);
        CHECK(moe_model_tensor_device(m, t) == (il >= L - on), "%s [%s]: %s on %d", name,
              r->label, t, moe_model_tensor_device(m, t));
        if (!s->exps[il])
            continue;
        const int want = ++moe_from_end <= r->n_exps;
        for (int64_t e = 0; e < s->E; e++)
            CHECK(moe_model_expert_device(m, il, e) == want, "%s [%s]: expert %" PRId64
                  " of layer %" PRId64 " on %d, expected %d", name, r->label, e, il,
                  moe_model_expert_device(m, il, e), want);
    }
    CHECK(moe_model_tensor_device(m, "output.weight") == (r->ngl > L), "%s [%s]: output on %d",
          name, r->label, moe_model_tensor_device(m, "output.weight"));
    CHECK(moe_model_tensor_device(m, "token_embd.weight") == 0, "%s [%s]: embeddings", name,
          r->label);
    const char *args = moe_model_placement_args(m);
    char ngl[32];
    snprintf(ngl, sizeof ngl, "-ngl %" PRId32, r->ngl);
    CHECK(args && strstr(args, ngl), "%s [%s]: printed '%s', expected %s", name, r->label,
          args ? args : "", ngl);
    check_round_trip(name, r->label, m);
    moe_model_free(m);
}

static int cmd_fit(const char *name) {
    sizes s;
    if (!model_sizes(name, &s))
        TEST_DONE();
    const int64_t L = s.n_layer;
    uint64_t dense = 0, exps = 0;
    int64_t n_moe = 0;
    for (int64_t il = 0; il < L; il++)
        dense += s.dense[il], exps += s.exps[il], n_moe += s.exps[il] > 0;
    int64_t moe_last[2] = {-1, -1}; /* the last two MoE layers */
    for (int64_t il = L - 1; il >= 0; il--)
        if (s.exps[il] && moe_last[1] < 0)
            moe_last[moe_last[0] < 0 ? 0 : 1] = il;
    CHECK(moe_last[1] >= 0, "%s: the fit table needs two MoE layers", name);
    if (moe_last[1] < 0)
        TEST_DONE();
    const uint64_t all_dense = dense + s.head, last = s.exps[moe_last[0]],
                   prev = s.exps[moe_last[1]];
    const uint64_t MiB = 1 << 20;
    const fit_row rows[] = {
        {"nothing fits", s.dense[L - 1] - 1, 0, 0, 0},
        {"the last layer's dense part", s.dense[L - 1], 0, 1, 0},
        {"every layer's dense part, not the head", dense + s.head - 1, 0, (int32_t)L, 0},
        {"the dense parts and the head", all_dense, 0, (int32_t)L + 1, 0},
        {"+ the last layer's experts", all_dense + last, 0, (int32_t)L + 1, 1},
        {"+ the last layer's experts and some", all_dense + last + prev - 1, 0, (int32_t)L + 1, 1},
        {"+ the last two layers' experts", all_dense + last + prev, 0, (int32_t)L + 1, 2},
        {"everything", all_dense + exps, 0, (int32_t)L + 1, n_moe},
        {"everything, much to spare", 4 * (all_dense + exps), 0, (int32_t)L + 1, n_moe},
        {"the last layer's experts within a margin", all_dense + last + 3 * MiB, 3 * MiB,
         (int32_t)L + 1, 1},
        {"free memory below the margin", all_dense, all_dense + 1, 0, 0},
    };
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++)
        check_fit_row(name, &s, &rows[i]);
    TEST_DONE();
}

/* ---- hot experts ---------------------------------------------------------------------------- */

typedef struct ranked {
    int64_t layer, expert;
    uint64_t count;
} ranked;

static int by_count_desc(const void *a, const void *b) {
    const ranked *x = a, *y = b;
    return (x->count < y->count) - (x->count > y->count);
}

/* Loads with the plan and checks that the experts on CPU1 are exactly the
 * n_want hottest (counts are distinct: one answer). */
static void check_hot(const char *name, const char *label, moe_model_params *mp,
                      const ranked *rank, int64_t n_rank, int64_t n_want) {
    moe_model *m = NULL;
    moe_err err = {0};
    moe_status st = moe_model_load(model_path(name), mp, &m, &err);
    CHECK(st == MOE_OK, "%s [%s]: %s", name, label, err.msg);
    if (st != MOE_OK)
        return;
    int64_t wrong = 0, on = 0;
    for (int64_t i = 0; i < n_rank; i++) {
        const int dev = moe_model_expert_device(m, rank[i].layer, rank[i].expert);
        on += dev == 1;
        if (dev != (i < n_want)) {
            if (!wrong++)
                fprintf(stderr, "%s [%s]: expert %" PRId64 " of layer %" PRId64 " (count %" PRIu64
                        ", rank %" PRId64 ") on %d\n", name, label, rank[i].expert, rank[i].layer,
                        rank[i].count, i, dev);
        }
    }
    CHECK(wrong == 0, "%s [%s]: %" PRId64 " experts on CPU1, the %" PRId64 " hottest expected "
          "(%" PRId64 " misplaced)", name, label, on, n_want, wrong);
    check_round_trip(name, label, m);
    moe_model_free(m);
}

static int cmd_hot(const char *name) {
    sizes s;
    if (!model_sizes(name, &s))
        TEST_DONE();
    moe_model *m = NULL;
    moe_err err = {0};
    moe_model_params dp = moe_model_default_params();
    if (moe_model_load(model_path(name), &dp, &m, &err) != MOE_OK)
        return 1;
    hot_counts h;
    hot_counts_make(m, &h);
    const int64_t E = s.E;
    ranked *rank = malloc((size_t)(h.c.n_layers * E) * sizeof *rank);
    int64_t n = 0;
    uint64_t one = 0, dense = s.head;
    for (int32_t i = 0; i < h.c.n_layers; i++)
        for (int64_t e = 0; e < E; e++)
            rank[n++] = (ranked){h.layer[i], e, h.count[i * E + e]};
    for (int64_t il = 0; il < s.n_layer; il++)
        one = s.exps[il] ? s.exps[il] / (uint64_t)E : one, dense += s.dense[il];
    qsort(rank, (size_t)n, sizeof *rank, by_count_desc);
    const int64_t wants[] = {1, n / 2 + 1, n}; /* the fewest, a majority of some layers, all */
    for (size_t k = 0; k < sizeof wants / sizeof wants[0]; k++) {
        char label[96];
        moe_model_params mp = moe_model_default_params();
        mp.hot_experts = &h.c;
        mp.devices = "CPU1";
        mp.n_gpu_layers = k % 2 ? 99 : 0; /* layers on CPU1 or not: the experts go either way */
        mp.gpu_budget = (uint64_t)wants[k] * one + one / 2;
        snprintf(label, sizeof label, "--gpu-budget for %" PRId64 " experts, -ngl %d", wants[k],
                 mp.n_gpu_layers);
        check_hot(name, label, &mp, rank, n, wants[k]);
        /* --fit: the dense parts, then the same experts */
        set_cpu1_memory(dense + (uint64_t)wants[k] * one + one / 2);
        mp = moe_model_default_params();
        mp.hot_experts = &h.c;
        mp.devices = "CPU1";
        mp.fit = true;
        mp.fit_margin = 0;
        mp.fit_n_ctx = FIT_N_CTX;
        snprintf(label, sizeof label, "--fit with room for %" PRId64 " experts", wants[k]);
        check_hot(name, label, &mp, rank, n, wants[k]);
    }
    /* the same through a statistics file */
    char path[256];
    snprintf(path, sizeof path, "/tmp/test_placement_plan_%d.json", (int)getpid());
    CHECK(hot_counts_write(path, m, &h), "writing %s", path);
    moe_expert_counts *fc = NULL;
    moe_status st = moe_expert_stats_load_counts(path, &fc, &err);
    CHECK(st == MOE_OK && fc->n_layers == h.c.n_layers && !strcmp(fc->source, path) &&
              !memcmp(fc->count, h.count, (size_t)(n * (int64_t)sizeof *h.count)),
          "%s read back: %s", path, err.msg);
    if (st == MOE_OK) {
        moe_model_params mp = moe_model_default_params();
        mp.hot_experts = fc;
        mp.devices = "CPU1";
        mp.gpu_budget = 5 * one;
        check_hot(name, "--hot-experts FILE --gpu-budget", &mp, rank, n, 5);
    }
    free(fc);
    remove(path);
    free(rank);
    hot_counts_free(&h);
    moe_model_free(m);
    TEST_DONE();
}

/* ---- refusals ----------------------------------------------------------------------------- */

typedef struct bad_case {
    const char *label;
    moe_model_params mp;
    const char *memory; /* MOE_CPU1_MEMORY; NULL: unset */
    const char *msg;    /* in the error; NULL: loads (with a warning) */
    bool nothing_on_cpu1;
} bad_case;

static void check_bad(const char *name, const bad_case *b) {
    if (b->memory)
        setenv("MOE_CPU1_MEMORY", b->memory, 1);
    else
        unsetenv("MOE_CPU1_MEMORY");
    moe_model *m = NULL;
    moe_err err = {0};
    moe_status st = moe_model_load(model_path(name), &b->mp, &m, &err);
    if (b->msg) {
        CHECK(st == MOE_ERR_USAGE || st == MOE_ERR_UNSUPPORTED, "[%s]: status %d", b->label, st);
        CHECK(strstr(err.msg, b->msg) != NULL, "[%s]: message '%s', wanted '%s'", b->label,
              err.msg, b->msg);
    } else {
        CHECK(st == MOE_OK, "[%s]: %s", b->label, err.msg);
        int64_t on = 0;
        for (int64_t il = 0; st == MOE_OK && il < moe_model_n_layer(m); il++)
            for (int64_t e = 0; e < moe_model_n_expert(m); e++)
                on += moe_model_expert_device(m, il, e) == 1;
        CHECK(!b->nothing_on_cpu1 || on == 0, "[%s]: %" PRId64 " experts on CPU1", b->label, on);
    }
    moe_model_free(m);
}

static int cmd_bad(void) {
    const char *name = "tiny-qwen2moe"; /* 2 layers of 8 experts, 2 used */
    moe_model *m = NULL;
    moe_err err = {0};
    moe_model_params dp = moe_model_default_params();
    if (moe_model_load(model_path(name), &dp, &m, &err) != MOE_OK)
        return 1;
    hot_counts h;
    hot_counts_make(m, &h);
    moe_model_free(m);
    moe_expert_counts wide = h.c, layer5 = h.c, short_ = h.c, arch = h.c, used = h.c;
    wide.n_expert = 16; /* refused before a count is read */
    const int32_t layers5[2] = {0, 5}, layers0[1] = {0};
    layer5.layer = layers5;
    short_.layer = layers0;
    short_.n_layers = 1;
    arch.arch = "llama";
    used.n_expert_used = 4;
    /* params not named are zero: margin 0, F32 KV cache, no mapping */
    const bad_case cases[] = {
        {"another E", {.hot_experts = &wide, .gpu_budget = 1 << 20, .devices = "CPU1", false},
         NULL, "skewed test counts: counted on a model with 16 experts, 2 used per token, but "
               "the model has 8, 2", false},
        {"another K", {.hot_experts = &used, .gpu_budget = 1 << 20, .devices = "CPU1", false},
         NULL, "4 used per token", false},
        {"a layer the model lacks", {.hot_experts = &layer5, .gpu_budget = 1 << 20,
                                      .devices = "CPU1", false},
         NULL, "skewed test counts: has counts for layer 5, which the model (2 layers)", false},
        {"a layer missing", {.hot_experts = &short_, .gpu_budget = 1 << 20,
                              .devices = "CPU1", false},
         NULL, "skewed test counts: no counts for layer 1 of the model", false},
        {"another arch", {.hot_experts = &arch, .gpu_budget = 1 << 20, .devices = "CPU1", false},
         NULL, "counted on a llama model, but the model is qwen2moe", false},
        {"--gpu-budget alone", {.gpu_budget = 1 << 20, .devices = "CPU1"}, NULL,
         "--gpu-budget needs --hot-experts", false},
        {"--hot-experts alone", {.hot_experts = &h.c, .devices = "CPU1"}, NULL,
         "--hot-experts needs --gpu-budget SIZE", false},
        {"--fit and --gpu-budget", {.fit = true, .hot_experts = &h.c, .gpu_budget = 1,
                                     .devices = "CPU1", false},
         "64M", "--gpu-budget and --fit both", false},
        {"--fit with -ngl", {.fit = true, .n_gpu_layers = 2, .devices = "CPU1"}, "64M",
         "--fit chooses -ngl and -ot itself: drop -ngl", false},
        {"--fit with --cpu-moe", {.fit = true, .cpu_moe = true, .devices = "CPU1"}, "64M",
         "drop --cpu-moe", false},
        {"--hot-experts with --n-cpu-moe", {.hot_experts = &h.c, .gpu_budget = 1 << 20,
                                             .n_cpu_moe = 1, .devices = "CPU1", false},
         NULL, "--hot-experts places every routed expert: drop --n-cpu-moe", false},
        {"-dev none", {.fit = true, .devices = "none"}, "64M", "no device to place on", false},
        {"-dev CPU", {.fit = true, .devices = "CPU"}, "64M", "-dev CPU is where", false},
        {"-dev unknown", {.fit = true, .devices = "CUDA9"}, "64M", "no device named 'CUDA9'", false},
        {"--fit on two devices", {.fit = true, .devices = "CPU1,CPU"}, "64M",
         "--fit fills one device", false},
        {"--fit, CPU1 without memory", {.fit = true, .devices = "CPU1"}, NULL,
         "--fit: CPU1 does not report its free memory (set MOE_CPU1_MEMORY", false},
        {"--fit, MOE_CPU1_MEMORY malformed", {.fit = true, .devices = "CPU1"}, "12Q",
         "does not report its free memory", false},
        {"--fit, KV type the cache does not take", {.fit = true, .devices = "CPU1",
                                                      .fit_type_k = MOE_TYPE_Q4_0},
         "64M", "--fit: KV cache types q4_0/f32", false},
        /* warnings, not refusals */
        {"a budget no expert fits", {.hot_experts = &h.c, .gpu_budget = 1000,
                                      .devices = "CPU1", .n_gpu_layers = 99},
         NULL, NULL, true},
        {"free memory under the margin", {.fit = true, .fit_margin = 1 << 30, .devices = "CPU1"}, "512M", NULL,
         true},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        check_bad(name, &cases[i]);
    moe_device_info info;
    bool gpu = false;
    for (int i = 0; moe_device_get(i, &info); i++)
        gpu |= info.gpu;
    if (!gpu) { /* no -dev and no GPU */
        const bad_case none = {"no GPU, no -dev", {.fit = true, .fit_margin = 0}, "64M",
                               "no GPU found and none named with -dev", false};
        check_bad(name, &none);
    }
    hot_counts_free(&h);
    TEST_DONE();
}

int main(int argc, char **argv) {
    if (argc >= 3 && !strcmp(argv[1], "fit"))
        return cmd_fit(argv[2]);
    if (argc >= 3 && !strcmp(argv[1], "hot"))
        return cmd_hot(argv[2]);
    if (argc >= 2 && !strcmp(argv[1], "bad"))
        return cmd_bad();
    fprintf(stderr, "usage: test_placement_plan fit NAME | hot NAME | bad\n");
    return 2;
}
