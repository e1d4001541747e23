/* Split execution over the CPU and CPU1 devices (runtime/device.h).
 *
 *   test_split rules          placement flags: matching, precedence, errors
 *                             (no model needed for the parser and the checks;
 *                             the table on a pack model skips without it)
 *   test_split logits NAME    the pack model NAME with its layers split between
 *                             CPU and CPU1 at every layer boundary, with
 *                             --cpu-moe semantics, and with single tensors
 *                             moved by -ot, with experts split by -ot
 *                             experts= and by --hot-experts (a statistics
 *                             file of skewed counts, budgets for a quarter and
 *                             for three quarters of the experts): logits bit-identical to the
 *                             single-device run, and copies made exactly when
 *                             the placement spans both devices.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "formats/quant/types.h"
#include "hot_counts.h"
#include "runtime/device.h"
#include "runtime/include/moe.h"
#include "runtime/model.h"
#include "runtime/quality/expert_stats.h"
#include "test_util.h"

#define N_PROMPT 16
#define N_FED 4

typedef struct placement {
    const char *label;
    int32_t ngl;
    const char *devices;
    const char *ot[4];
    bool cpu_moe;
    int32_t n_cpu_moe;
    int32_t op_offload_min; /* 0: the default */
    const moe_expert_counts *hot; /* --hot-experts with gpu_budget */
    uint64_t gpu_budget;
} placement;

static moe_model_params params_of(const placement *p) {
    moe_model_params mp = moe_model_default_params();
    mp.n_gpu_layers = p->ngl;
    mp.devices = p->devices;
    mp.cpu_moe = p->cpu_moe;
    mp.n_cpu_moe = p->n_cpu_moe;
    mp.tensor_overrides = p->ot;
    while (mp.n_tensor_overrides < 4 && p->ot[mp.n_tensor_overrides])
        mp.n_tensor_overrides++;
    mp.hot_experts = p->hot;
    mp.gpu_budget = p->gpu_budget;
    return mp;
}

static char *model_path(const char *name) {
    static char path[1024];
    snprintf(path, sizeof path, "%s/models/%s.gguf", test_conformance_dir(), name);
    return path;
}

/* Logits of the 16-token prompt batch and 4 single tokens after it
 * ((N_PROMPT + N_FED) rows), and how many copies the decodes made. */
static float *run(const char *name, const placement *p, int64_t *n_copies, int64_t *n_offloads,
                  moe_err *err) {
    moe_model_params mp = params_of(p);
    moe_model *m = NULL;
    moe_context *ctx = NULL;
    float *rows = NULL;
    if (moe_model_load(model_path(name), &mp, &m, err) != MOE_OK)
        return NULL;
    moe_context_params cp = moe_context_default_params();
    cp.n_ctx = 64;
    cp.n_threads = 2;
    if (p->op_offload_min)
        cp.op_offload_min = p->op_offload_min;
    const int64_t V = moe_model_n_vocab(m);
    if (moe_context_create(m, &cp, &ctx, err) != MOE_OK)
        goto done;
    rows = malloc((size_t)((N_PROMPT + N_FED) * V) * sizeof *rows);
    moe_token toks[N_PROMPT];
    int8_t want[N_PROMPT];
    for (int i = 0; i < N_PROMPT; i++)
        toks[i] = (moe_token)(1 + (i * 37) % (V - 1)), want[i] = 1;
    moe_batch b = {.n_tokens = N_PROMPT, .token = toks, .logits = want};
    if (moe_decode(ctx, &b, err) != MOE_OK)
        goto fail;
    for (int i = 0; i < N_PROMPT; i++)
        memcpy(rows + i * V, moe_get_logits_ith(ctx, i), (size_t)V * sizeof *rows);
    for (int i = 0; i < N_FED; i++) {
        moe_token t = (moe_token)(3 + i * 101 % (V - 3));
        moe_batch one = {.n_tokens = 1, .token = &t};
        if (moe_decode(ctx, &one, err) != MOE_OK)
            goto fail;
        memcpy(rows + (N_PROMPT + i) * V, moe_get_logits_ith(ctx, -1), (size_t)V * sizeof *rows);
    }
    moe_perf perf;
    moe_context_perf(ctx, &perf);
    *n_copies = perf.n_copies;
    *n_offloads = perf.expert_offloads;
    goto done;
fail:
    free(rows);
    rows = NULL;
done:
    moe_context_free(ctx);
    moe_model_free(m);
    return rows;
}

/* Whether the placement puts anything on CPU1 (from the -v report). */
static bool spans_cpu1(const char *name, const placement *p) {
    moe_model_params mp = params_of(p);
    moe_model *m = NULL;
    moe_err err = {0};
    if (moe_model_load(model_path(name), &mp, &m, &err) != MOE_OK)
        return false;
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    moe_model_print_placement(m, f);
    fclose(f);
    const bool any = strstr(text, "-> CPU1\n") != NULL || strstr(text, " on CPU1\n") != NULL;
    free(text);
    moe_model_free(m);
    return any;
}

static int cmd_logits(const char *name) {
    moe_err err = {0};
    int64_t copies = 0, offloads = 0;
    const placement single = {.label = "single device"};
    float *want = run(name, &single, &copies, &offloads, &err);
    CHECK(want != NULL, "%s: %s", name, err.msg);
    if (!want)
        TEST_DONE();
    CHECK(copies == 0, "%s: the single-device run made %lld copies", name, (long long)copies);
    moe_model *m = NULL;
    moe_model_params mp = moe_model_default_params();
    if (moe_model_load(model_path(name), &mp, &m, &err) != MOE_OK)
        return 1;
    const int64_t V = moe_model_n_vocab(m);
    int32_t n_layer = 0;
    char t[64];
    for (;; n_layer++) {
        snprintf(t, sizeof t, "blk.%d.attn_norm.weight", n_layer);
        if (moe_model_tensor_device(m, t) < 0)
            break;
    }
    const bool layer0_experts = moe_model_tensor_device(m, "blk.0.ffn_gate_exps.weight") >= 0;
    hot_counts hot;
    hot_counts_make(m, &hot);
    uint64_t expert_bytes = 0; /* one routed expert's gate, up and down */
    for (int64_t il = 0; il < moe_model_n_layer(m) && !expert_bytes; il++)
        if (m->layers[il].gate_exps.data)
            expert_bytes = 3 * m->layers[il].gate_exps.expert_bytes;
    const uint64_t n_experts = (uint64_t)hot.c.n_layers * (uint64_t)hot.c.n_expert;
    /* through a statistics file, as --hot-experts reads it */
    char stats_path[256];
    snprintf(stats_path, sizeof stats_path, "/tmp/test_split_%d.json", (int)getpid());
    moe_expert_counts *from_file = NULL;
    CHECK(!hot.c.n_layers || (hot_counts_write(stats_path, m, &hot) &&
                              moe_expert_stats_load_counts(stats_path, &from_file, &err) == MOE_OK),
          "%s: %s", stats_path, err.msg);
    remove(stats_path);
    moe_model_free(m);
    placement cases[64 + 24];
    int n = 0;
    for (int32_t ngl = 1; ngl <= n_layer + 1 && n < 64; ngl++) /* every layer boundary, then the head */
        cases[n++] = (placement){.label = "-dev CPU1 -ngl", .ngl = ngl, .devices = "CPU1"};
    cases[n++] = (placement){.label = "--cpu-moe -dev CPU1 -ngl 99", .ngl = 99,
                             .devices = "CPU1", .cpu_moe = true};
    cases[n++] = (placement){.label = "--n-cpu-moe 1 -dev CPU1 -ngl 99", .ngl = 99,
                             .devices = "CPU1", .n_cpu_moe = 1};
    /* the prompt batch's experts uploaded to the layer's device */
    const int first_offload = n;
    cases[n++] = (placement){.label = "--cpu-moe -dev CPU1 -ngl 99, op offload from 1 row",
                             .ngl = 99, .devices = "CPU1", .cpu_moe = true, .op_offload_min = 1};
    cases[n++] = (placement){.label = "--n-cpu-moe 1 -dev CPU1 -ngl 99, op offload from 1 row",
                             .ngl = 99, .devices = "CPU1", .n_cpu_moe = 1, .op_offload_min = 1};
    const int end_offload = n;
    const char *single_tensors[] = {
        "^token_embd\\.weight=CPU1", "^output\\.weight=CPU1", "^output_norm=CPU1",
        "blk\\.0\\.attn_q\\.weight=CPU1", "blk\\.1\\.attn_k\\.=CPU1", "blk\\.0\\.attn_v\\.=CPU1",
        "blk\\.1\\.attn_output=CPU1", "blk\\.0\\.attn_norm=CPU1", "blk\\.1\\.ffn_norm=CPU1",
        "blk\\.1\\.ffn_gate_inp\\.=CPU1", "blk\\.1\\.ffn_.*_exps=CPU1", "blk\\.1\\.ffn_.*_shexp=CPU1",
        "blk\\.0\\.attn_q_a=CPU1", "blk\\.1\\.attn_kv_a_mqa=CPU1", "blk\\.0\\.attn_kv_b=CPU1",
        "blk\\.1\\.attn_kv_a_norm=CPU1", "blk\\.0\\.attn_q_norm=CPU1", "blk\\.0\\.ffn_(gate|up|down)\\.=CPU1",
        /* routed experts split by expert between CPU and CPU1 */
        "ffn_.*_exps=CPU1:experts=1,3", "blk\\.1\\.ffn_.*_exps=CPU1:experts=0-2",
    };
    for (size_t i = 0; i < sizeof single_tensors / sizeof single_tensors[0]; i++)
        cases[n++] = (placement){.label = single_tensors[i], .ot = {single_tensors[i]}};
    if (from_file) { /* the hottest experts on CPU1, the layers there or not */
        cases[n++] = (placement){.label = "--hot-experts, a quarter of the experts, -ngl 99",
                                 .ngl = 99, .devices = "CPU1", .hot = from_file,
                                 .gpu_budget = expert_bytes * (n_experts / 4 + 1) - 1};
        cases[n++] = (placement){.label = "--hot-experts, three quarters of the experts",
                                 .devices = "CPU1", .hot = from_file,
                                 .gpu_budget = expert_bytes * (3 * n_experts / 4)};
    }
    for (int c = 0; c < n; c++) {
        const placement *p = &cases[c];
        float *got = run(name, p, &copies, &offloads, &err);
        CHECK(got != NULL, "%s [%s %d]: %s", name, p->label, p->ngl, err.msg);
        if (!got)
            continue;
        int64_t first = -1;
        for (int64_t i = 0; i < (N_PROMPT + N_FED) * V && first < 0; i++)
            if (memcmp(&got[i], &want[i], sizeof *got))
                first = i;
        CHECK(first < 0, "%s [%s %d]: logits differ first at row %lld col %lld (%g vs %g)", name,
              p->label, p->ngl, (long long)(first / V), (long long)(first % V),
              first < 0 ? 0.0 : (double)got[first], first < 0 ? 0.0 : (double)want[first]);
        /* --n-cpu-moe 1 offloads only where layer 0 has experts (not deepseek2's dense lead) */
        const bool offload = c >= first_offload && c < end_offload &&
                             (p->cpu_moe || layer0_experts);
        CHECK(offload == (offloads > 0), "%s [%s]: %lld expert offloads", name, p->label,
              (long long)offloads);
        const bool split = spans_cpu1(name, p);
        CHECK(split == (copies > 0), "%s [%s %d]: %s CPU1 but %lld copies", name, p->label,
              p->ngl, split ? "uses" : "does not use", (long long)copies);
        free(got);
    }
    free(want);
    hot_counts_free(&hot);
    free(from_file);
    TEST_DONE();
}

/* ---- rules ------------------------------------------------------------------------------ */

static const moe_backend_ops *gpu_like_ops(void) {
    static moe_backend_ops ops; /* a device that does not compute interleaved types */
    ops = *moe_backend_cpu();
    ops.name = "GPU-like";
    ops.interleaved = false;
    return &ops;
}

static void rules_without_model(void) {
    moe_device_entry devs[MOE_MAX_DEVICES];
    const int n = moe_devices_discover(devs, MOE_MAX_DEVICES);
    CHECK(n >= 2 && !strcmp(devs[0].info.name, "CPU") && !strcmp(devs[1].info.name, "CPU1"),
          "devices start CPU, CPU1 (got %d)", n);
    CHECK(moe_device_count() == n, "moe_device_count %d", moe_device_count());
    struct { const char *value; bool ok; int dev; const char *pattern, *msg; } cases[] = {
        {"ffn_.*_exps=CPU1", true, 1, "ffn_.*_exps", NULL},
        {"blk\\.1\\.=cpu", true, 0, "blk\\.1\\.", NULL},  /* device names without case */
        {"a=b=CPU1", true, 1, "a=b", NULL},               /* the last '=' splits */
        {"ffn_.*_exps", false, 0, NULL, "expected PATTERN=DEVICE"},
        {"=CPU1", false, 0, NULL, "expected PATTERN=DEVICE"},
        {"exps=", false, 0, NULL, "expected PATTERN=DEVICE"},
        {"exps=CUDA7", false, 0, NULL, "no device named 'CUDA7' (devices: CPU, CPU1"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char *pattern = NULL;
        int dev = -1;
        moe_err err = {0};
        moe_expert_set experts;
        bool ranged = false;
        moe_status st = moe_placement_parse_override(cases[i].value, devs, n, &pattern, &dev,
                                                     &experts, &ranged, &err);
        if (cases[i].ok) {
            CHECK(st == MOE_OK && dev == cases[i].dev && pattern &&
                      !strcmp(pattern, cases[i].pattern),
                  "'%s': st %d dev %d pattern '%s' (%s)", cases[i].value, st, dev,
                  pattern ? pattern : "", err.msg);
        } else {
            CHECK(st == MOE_ERR_USAGE && strstr(err.msg, cases[i].msg) &&
                      strstr(err.msg, cases[i].value),
                  "'%s': st %d, message '%s'", cases[i].value, st, err.msg);
        }
        free(pattern);
    }
    /* interleaved types stay on devices that compute them */
    moe_weight w = {.type = MOE_TYPE_Q4_0_R8, .ne = {256, 64, 8, 1}, .name = "blk.3.ffn_up_exps.weight"};
    moe_device_entry gpu = {.ops = gpu_like_ops()};
    char why[512] = "";
    CHECK(!moe_placement_check_weight(&w, &gpu, why, sizeof why) &&
              strstr(why, "blk.3.ffn_up_exps.weight") && strstr(why, "moe-repack --deinterleave"),
          "interleaved on a GPU-like device: '%s'", why);
    CHECK(moe_placement_check_weight(&w, &devs[1], why, sizeof why), "interleaved on CPU1: %s",
          why);
    w.type = MOE_TYPE_Q4_0;
    CHECK(moe_placement_check_weight(&w, &gpu, why, sizeof why), "q4_0 on a GPU-like device: %s",
          why);
}

typedef struct expect {
    const char *tensor;
    int dev;
} expect;

static void rules_table(void) {
    const char *name = "tiny-qwen2moe"; /* 2 layers, shared experts */
    struct { placement p; expect e[6]; } table[] = {
        {{.ot = {"attn_q=CPU1", "blk\\.0=CPU"}}, /* first match wins */
         {{"blk.0.attn_q.weight", 1}, {"blk.1.attn_q.weight", 1}, {"blk.0.attn_k.weight", 0}}},
        {{.ot = {"blk\\.0=CPU", "attn_q=CPU1"}},
         {{"blk.0.attn_q.weight", 0}, {"blk.1.attn_q.weight", 1}}},
        {{.ngl = 99, .devices = "CPU1", .cpu_moe = true},
         {{"blk.0.ffn_up_exps.weight", 0}, {"blk.1.ffn_down_exps.weight", 0},
          {"blk.1.attn_q.weight", 1}, {"blk.0.ffn_up_shexp.weight", 1},
          {"output.weight", 1}, {"token_embd.weight", 0}}},
        {{.ot = {"ffn_.*_exps=CPU1"}, .cpu_moe = true}, /* -ot before --cpu-moe */
         {{"blk.0.ffn_up_exps.weight", 1}, {"blk.1.ffn_gate_exps.weight", 1}}},
        {{.ngl = 99, .devices = "CPU1", .n_cpu_moe = 1},
         {{"blk.0.ffn_up_exps.weight", 0}, {"blk.1.ffn_up_exps.weight", 1},
          {"blk.0.attn_v.weight", 1}}},
        {{.ngl = 1, .devices = "CPU1"},
         {{"blk.0.attn_q.weight", 0}, {"blk.1.attn_q.weight", 1}, {"output.weight", 0},
          {"output_norm.weight", 0}}},
        {{.ngl = 2, .devices = "CPU1"}, {{"blk.0.attn_q.weight", 1}, {"output.weight", 0}}},
        {{.ngl = 3, .devices = "CPU1"},
         {{"output.weight", 1}, {"output_norm.weight", 1}, {"token_embd.weight", 0}}},
        {{.ngl = -1, .devices = "CPU1"}, {{"output.weight", 1}, {"blk.0.attn_q.weight", 1}}},
        {{.ngl = 99}, /* no GPU and no -dev: nothing to offload to */
         {{"blk.1.attn_q.weight", 0}, {"output.weight", 0}}},
        {{.ngl = 99, .devices = "none"}, {{"blk.1.attn_q.weight", 0}}},
    };
    for (size_t i = 0; i < sizeof table / sizeof table[0]; i++) {
        moe_model_params mp = params_of(&table[i].p);
        moe_model *m = NULL;
        moe_err err = {0};
        moe_status st = moe_model_load(model_path(name), &mp, &m, &err);
        CHECK(st == MOE_OK, "table row %zu: %s", i, err.msg);
        for (int k = 0; st == MOE_OK && k < 6 && table[i].e[k].tensor; k++) {
            int got = moe_model_tensor_device(m, table[i].e[k].tensor);
            CHECK(got == table[i].e[k].dev, "table row %zu: %s on device %d, expected %d", i,
                  table[i].e[k].tensor, got, table[i].e[k].dev);
        }
        moe_model_free(m);
    }
    struct { placement p; moe_status st; const char *msg; } bad[] = {
        {{.ot = {"blk\\.(0=CPU1"}}, MOE_ERR_USAGE, "-ot 'blk\\.(0': bad regex"},
        {{.ot = {"blk=CUDA0"}}, MOE_ERR_USAGE, "no device named 'CUDA0'"},
        {{.ngl = 2, .devices = "CPU1,CUDA3"}, MOE_ERR_USAGE, "option -dev 'CPU1,CUDA3': no device "
                                                           "named 'CUDA3'"},
        {{.ot = {"blk\\.0\\.ffn_up_exps=CPU1"}}, MOE_ERR_USAGE,
         "routed expert tensors of layer 0 must be on one device"},
        {{.ot = {"blk\\.1\\.ffn_down_shexp=CPU1"}}, MOE_ERR_USAGE,
         "shared expert tensors of layer 1 must be on one device"},
        {{.n_cpu_moe = -1}, MOE_ERR_USAGE, "--n-cpu-moe"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        moe_model_params mp = params_of(&bad[i].p);
        moe_model *m = NULL;
        moe_err err = {0};
        moe_status st = moe_model_load(model_path(name), &mp, &m, &err);
        CHECK(st == bad[i].st && strstr(err.msg, bad[i].msg), "bad row %zu: st %d, '%s'", i, st,
              err.msg);
        moe_model_free(m);
    }
}

int main(int argc, char **argv) {
    if (argc >= 2 && !strcmp(argv[1], "rules")) {
        rules_without_model();
        if (getenv("MOE_CONFORMANCE_DIR") && *getenv("MOE_CONFORMANCE_DIR"))
            rules_table();
        TEST_DONE();
    }
    if (argc >= 3 && !strcmp(argv[1], "logits"))
        return cmd_logits(argv[2]);
    fprintf(stderr, "usage: test_split rules | logits NAME\n");
    return 2;
}
