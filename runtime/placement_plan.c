/* Placement plans: --hot-experts / --gpu-budget and --fit turned into the
 * flags -dev, -ngl and -ot (device.h; the policy is in moe.h and the README).
 *
 * Why flags: the plan is resolved by the same code as a user's flags, so the
 * arguments it prints give back exactly the placement it made.
 *
 * The policy, in short. Moving a routed expert to the device saves, per
 * token that chooses it, the time to read its bytes from host memory; its
 * cost is the same bytes of device memory. The benefit per byte is therefore
 * its count, whatever its size, and experts are taken greedily by count
 * (prompt and generation added: both are tokens the expert reads its weights
 * for), skipping any that no longer fit; ties go to the lower layer, then the
 * lower expert. Experts never chosen stay on the CPU. --fit puts the dense
 * parts first, since every token runs all of them but only K of E experts:
 * the dense part of the last layers (as -ngl counts them), the output head
 * when every layer fits, and only then experts.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "formats/base/log.h"
#include "runtime/device.h"
#include "runtime/kv_cache.h"
#include "runtime/model.h"

/* the three routed-expert tensors, in the names -ot matches */
#define EXPS_PATTERN "ffn_(gate|up|down)_exps"

typedef struct layer_sizes {
    uint64_t dense;  /* every weight but the routed experts, plus the KV cache --fit counts */
    uint64_t expert; /* one routed expert (gate + up + down); 0: no routed experts */
} layer_sizes;

typedef struct planner {
    const moe_model *m;
    const moe_model_params *p;
    moe_placement_plan *plan;
    moe_err *err;
    int target;                /* the device experts and layers go to */
    const uint64_t **counts;   /* [n_layer] the statistics' counts of each layer (NULL: none) */
    layer_sizes *ls;           /* [n_layer] */
    uint64_t head;             /* output head: output + output_norm */
    int32_t ngl;               /* -ngl the plan uses */
    uint8_t *hot;              /* [n_layer][E] 1: the expert goes to the target */
    int64_t first_exps;        /* --fit without statistics: layers from here keep their experts */
    uint64_t budget, used;     /* bytes the target may take, and takes */
    int64_t n_hot, n_routed;   /* experts moved; experts in routed layers */
} planner;

/* general.name, for messages that may not name the file */
static const char *model_label(const moe_model *m) {
    return m->general_name ? m->general_name : "the model";
}

static bool has_routed(const moe_model *m, int64_t il) {
    const moe_layer *L = &m->layers[il];
    return L->gate_exps.data && m->hp.n_expert > 1 && L->gate_exps.ne[2] == m->hp.n_expert;
}

/* ---- what the plan may do --------------------------------------------------------------- */

/* The options the plan takes over or needs, and the target device. */
static moe_status check_options(planner *pl) {
    const moe_model_params *p = pl->p;
    const moe_model *m = pl->m;
    const char *flag = p->fit ? "--fit" : "--hot-experts";
    MOE_FAIL_IF(p->gpu_budget && !p->hot_experts, pl->err, MOE_ERR_USAGE,
                "--gpu-budget needs --hot-experts FILE: the budget is for the most used experts");
    MOE_FAIL_IF(p->fit && p->gpu_budget, pl->err, MOE_ERR_USAGE,
                "--gpu-budget and --fit both size the device's share (--fit: its free memory "
                "minus --fit-margin): give one");
    MOE_FAIL_IF(!p->fit && !p->gpu_budget, pl->err, MOE_ERR_USAGE,
                "--hot-experts needs --gpu-budget SIZE (the bytes of experts to put on the "
                "device) or --fit (the device's free memory)");
    MOE_FAIL_IF(p->fit && (p->n_gpu_layers || p->n_tensor_overrides || p->cpu_moe ||
                           p->n_cpu_moe),
                pl->err, MOE_ERR_USAGE, "--fit chooses -ngl and -ot itself: drop %s",
                p->n_gpu_layers ? "-ngl" : p->n_tensor_overrides ? "-ot" :
                p->cpu_moe ? "--cpu-moe" : "--n-cpu-moe");
    MOE_FAIL_IF(p->cpu_moe || p->n_cpu_moe, pl->err, MOE_ERR_USAGE,
                "--hot-experts places every routed expert: drop %s",
                p->cpu_moe ? "--cpu-moe" : "--n-cpu-moe");
    pl->target = -1;
    if (p->devices && strcasecmp(p->devices, "none") != 0) {
        const size_t len = strcspn(p->devices, ",");
        pl->target = moe_device_find(m->dev, m->n_dev, p->devices, len);
        MOE_FAIL_IF(pl->target < 0, pl->err, MOE_ERR_USAGE,
                    "option -dev '%s': no device named '%.*s' (see --list-devices)", p->devices,
                    (int)len, p->devices);
        MOE_FAIL_IF(p->fit && p->devices[len], pl->err, MOE_ERR_USAGE,
                    "--fit fills one device, but -dev '%s' names several", p->devices);
    } else if (!p->devices) {
        for (int d = 0; d < m->n_dev && pl->target < 0; d++)
            if (m->dev[d].info.gpu)
                pl->target = d;
    }
    MOE_FAIL_IF(pl->target < 0, pl->err, MOE_ERR_USAGE,
                "%s: no device to place on: no GPU found and none named with -dev (-dev CPU1, "
                "the second CPU device, stands in for one)", flag);
    MOE_FAIL_IF(pl->target == 0, pl->err, MOE_ERR_USAGE,
                "%s: -dev %s is where everything else stays: name an offload device", flag,
                m->dev[0].info.name);
    const moe_device_info *info = &m->dev[pl->target].info;
    MOE_FAIL_IF(p->fit && !info->free_bytes, pl->err, MOE_ERR_UNSUPPORTED,
                "--fit: %s does not report its free memory%s", info->name,
                pl->target == 1 ? " (set MOE_CPU1_MEMORY=SIZE to give CPU1 some)" : "");
    return MOE_OK;
}

/* Matches the statistics to the model: the same experts, the same MoE layers. */
static moe_status bind_counts(planner *pl) {
    const moe_expert_counts *c = pl->p->hot_experts;
    const moe_model *m = pl->m;
    const char *src = c->source ? c->source : "--hot-experts";
    MOE_FAIL_IF(m->hp.n_expert < 2, pl->err, MOE_ERR_USAGE,
                "%s: %s has no routed experts to place", src, model_label(m));
    MOE_FAIL_IF(c->n_expert != m->hp.n_expert || c->n_expert_used != m->hp.n_expert_used,
                pl->err, MOE_ERR_USAGE, "%s: counted on a model with %d experts, %d used per "
                "token, but %s has %" PRId64 ", %" PRId64 ": statistics of another model", src,
                c->n_expert, c->n_expert_used, model_label(m), m->hp.n_expert,
                m->hp.n_expert_used);
    MOE_FAIL_IF(c->arch && strcmp(c->arch, m->arch->name) != 0, pl->err, MOE_ERR_USAGE,
                "%s: counted on a %s model, but %s is %s: statistics of another model", src,
                c->arch, model_label(m), m->arch->name);
    MOE_FAIL_IF(c->n_layers < 0 || (c->n_layers && (!c->layer || !c->count)), pl->err,
                MOE_ERR_USAGE, "%s: no counts", src);
    for (int32_t i = 0; i < c->n_layers; i++) {
        const int32_t il = c->layer[i];
        MOE_FAIL_IF(il < 0 || il >= m->hp.n_layer || !has_routed(m, il), pl->err,
                    MOE_ERR_USAGE, "%s: has counts for layer %d, which %s (%" PRId64 " layers) "
                    "has no routed experts in: statistics of another model", src, il,
                    model_label(m), m->hp.n_layer);
        pl->counts[il] = c->count + (size_t)i * (size_t)c->n_expert;
    }
    for (int64_t il = 0; il < m->hp.n_layer; il++)
        MOE_FAIL_IF(has_routed(m, il) && !pl->counts[il], pl->err, MOE_ERR_USAGE,
                    "%s: no counts for layer %" PRId64 " of %s: statistics of another model",
                    src, il, model_label(m));
    if (c->model && m->general_name && strcmp(c->model, m->general_name) != 0)
        MOE_WARN("%s: counted on model '%s', placing '%s' (the same shapes)", src, c->model,
                 m->general_name);
    return MOE_OK;
}

/* ---- sizes and choices ---------------------------------------------------------------------- */

static void measure(planner *pl, uint64_t kv_per_layer) {
    const moe_model *m = pl->m;
    for (int64_t il = 0; il < m->hp.n_layer; il++) {
        const moe_layer *L = &m->layers[il];
        layer_sizes *ls = &pl->ls[il];
        const bool routed = has_routed(m, il);
        *ls = (layer_sizes){.dense = kv_per_layer};
#define MEASURE(f)                                                                              \
    if (L->f.data) {                                                                            \
        if (routed && (&L->f == &L->gate_exps || &L->f == &L->up_exps || &L->f == &L->down_exps)) \
            ls->expert += L->f.expert_bytes;                                                    \
        else                                                                                    \
            ls->dense += moe_weight_nbytes(&L->f);                                              \
    }
        MOE_LAYER_WEIGHTS(MEASURE)
#undef MEASURE
        pl->n_routed += routed ? m->hp.n_expert : 0;
    }
    pl->head = (m->output.data ? moe_weight_nbytes(&m->output) : 0) +
               (m->output_norm.data ? moe_weight_nbytes(&m->output_norm) : 0);
}

/* --fit's dense part: the most last layers whose dense parts fit, as -ngl
 * counts them, and the output head when all do. */
static moe_status fit_dense(planner *pl) {
    const moe_model *m = pl->m;
    const moe_model_params *p = pl->p;
    const int64_t n_cells = p->fit_n_ctx > 0 ? p->fit_n_ctx : m->hp.n_ctx_train;
    const uint64_t cell = moe_kv_cell_bytes(&m->hp, p->fit_type_k, p->fit_type_v);
    MOE_FAIL_IF(!cell, pl->err, MOE_ERR_USAGE, "--fit: KV cache types %s/%s: the cache takes "
                "f32, f16 or q8_0",
                moe_type_name(p->fit_type_k), moe_type_name(p->fit_type_v));
    measure(pl, cell * (uint64_t)(n_cells > 0 ? n_cells : 0));
    const moe_device_info *info = &m->dev[pl->target].info;
    pl->budget = info->free_bytes > p->fit_margin ? info->free_bytes - p->fit_margin : 0;
    if (!pl->budget)
        MOE_WARN("--fit: %s has %.2f MiB free, not more than the margin (%.2f MiB): nothing "
                 "goes there", info->name, (double)info->free_bytes / 1048576.0,
                 (double)p->fit_margin / 1048576.0);
    const int64_t n_layer = m->hp.n_layer;
    pl->ngl = 0;
    for (int64_t k = 1; k <= n_layer; k++) {
        const uint64_t dense = pl->ls[n_layer - k].dense;
        if (pl->used + dense > pl->budget)
            break;
        pl->used += dense;
        pl->ngl = (int32_t)k;
    }
    if (pl->ngl == n_layer && pl->used + pl->head <= pl->budget) {
        pl->used += pl->head;
        pl->ngl = (int32_t)n_layer + 1;
    }
    return MOE_OK;
}

typedef struct candidate {
    int32_t layer, expert;
    uint64_t count;
} candidate;

static int by_count(const void *a, const void *b) {
    const candidate *x = a, *y = b;
    if (x->count != y->count)
        return x->count > y->count ? -1 : 1;
    if (x->layer != y->layer)
        return x->layer < y->layer ? -1 : 1;
    return (x->expert > y->expert) - (x->expert < y->expert);
}

/* The hottest experts of every layer, greedily by count, while they fit. */
static moe_status choose_hot(planner *pl) {
    const moe_model *m = pl->m;
    const int64_t E = m->hp.n_expert;
    candidate *c = malloc((size_t)(pl->n_routed > 0 ? pl->n_routed : 1) * sizeof *c);
    MOE_FAIL_IF(!c, pl->err, MOE_ERR_NOMEM, "out of memory");
    int64_t n = 0;
    uint64_t smallest = UINT64_MAX;
    for (int64_t il = 0; il < m->hp.n_layer; il++)
        for (int64_t e = 0; pl->counts[il] && e < E; e++) {
            c[n++] = (candidate){(int32_t)il, (int32_t)e, pl->counts[il][e]};
            smallest = pl->ls[il].expert < smallest ? pl->ls[il].expert : smallest;
        }
    qsort(c, (size_t)n, sizeof *c, by_count);
    for (int64_t i = 0; i < n && c[i].count; i++) {
        const uint64_t bytes = pl->ls[c[i].layer].expert;
        if (pl->used + bytes > pl->budget)
            continue;
        pl->used += bytes;
        pl->hot[c[i].layer * E + c[i].expert] = 1;
        pl->n_hot++;
    }
    free(c);
    if (!pl->n_hot && !pl->p->fit)
        MOE_WARN("--gpu-budget %.3f MiB: no expert fits (one takes %.3f MiB): every routed "
                 "expert stays on the CPU", (double)pl->budget / 1048576.0,
                 (double)smallest / 1048576.0);
    return MOE_OK;
}

/* --fit without statistics: the whole routed-expert tensors of the last MoE
 * layers, as many as fit. */
static void choose_last_layers(planner *pl) {
    const moe_model *m = pl->m;
    pl->first_exps = m->hp.n_layer;
    for (int64_t il = m->hp.n_layer - 1; il >= 0; il--) {
        if (!has_routed(m, il))
            continue;
        const uint64_t bytes = pl->ls[il].expert * (uint64_t)m->hp.n_expert;
        if (pl->used + bytes > pl->budget)
            break;
        pl->used += bytes;
        pl->n_hot += m->hp.n_expert;
        pl->first_exps = il;
    }
}

/* ---- the plan as flags ------------------------------------------------------------------ */

static moe_status add_ot(planner *pl, char *value) {
    moe_placement_plan *plan = pl->plan;
    if (!value)
        return moe_fail(pl->err, MOE_ERR_NOMEM, "out of memory");
    if (plan->n_ot == MOE_MAX_OVERRIDES) {
        free(value);
        return moe_fail(pl->err, MOE_ERR_USAGE, "the placement needs more than %d -ot rules",
                        MOE_MAX_OVERRIDES);
    }
    plan->ot[plan->n_ot++] = value;
    return MOE_OK;
}

/* "0-3,7" for the experts of layer il that go to the target. */
static void expert_list(const planner *pl, int64_t il, FILE *f) {
    const int64_t E = pl->m->hp.n_expert;
    const uint8_t *hot = pl->hot + il * E;
    const char *sep = "";
    for (int64_t e = 0; e < E; e++) {
        if (!hot[e])
            continue;
        int64_t last = e;
        while (last + 1 < E && hot[last + 1])
            last++;
        if (last == e)
            fprintf(f, "%s%" PRId64, sep, e);
        else
            fprintf(f, "%s%" PRId64 "-%" PRId64, sep, e, last);
        sep = ",";
        e = last;
    }
}

/* The -ot rules for the routed experts: the hot ones of each layer to the
 * target, then every other one to the CPU; or (--fit without statistics) the
 * layers below first_exps that -ngl puts on the target keep theirs on the CPU. */
static moe_status expert_rules(planner *pl) {
    const moe_model *m = pl->m;
    const char *cpu = m->dev[0].info.name, *dev = m->dev[pl->target].info.name;
    char *text = NULL;
    size_t len = 0;
    if (pl->p->hot_experts) {
        for (int64_t il = 0; il < m->hp.n_layer; il++) {
            if (!pl->counts[il] || !memchr(pl->hot + il * m->hp.n_expert, 1,
                                           (size_t)m->hp.n_expert))
                continue;
            FILE *f = open_memstream(&text, &len);
            MOE_FAIL_IF(!f, pl->err, MOE_ERR_NOMEM, "out of memory");
            fprintf(f, "blk\\.%" PRId64 "\\." EXPS_PATTERN "=%s:experts=", il, dev);
            expert_list(pl, il, f);
            fclose(f);
            MOE_TRY(add_ot(pl, text));
        }
        char *rest = NULL;
        if (asprintf(&rest, EXPS_PATTERN "=%s", cpu) < 0)
            rest = NULL;
        return add_ot(pl, rest);
    }
    const int64_t n_layer = m->hp.n_layer;
    const int64_t first_dev = n_layer - (pl->ngl < n_layer ? pl->ngl : n_layer);
    int64_t n_listed = 0, n_moe = 0;
    FILE *f = open_memstream(&text, &len);
    MOE_FAIL_IF(!f, pl->err, MOE_ERR_NOMEM, "out of memory");
    fprintf(f, "blk\\.(");
    for (int64_t il = 0; il < n_layer; il++) {
        n_moe += has_routed(m, il);
        if (has_routed(m, il) && il >= first_dev && il < pl->first_exps)
            fprintf(f, "%s%" PRId64, n_listed++ ? "|" : "", il);
    }
    fprintf(f, ")\\." EXPS_PATTERN "=%s", cpu);
    fclose(f);
    if (!n_listed) {
        free(text);
        return MOE_OK;
    }
    if (n_listed == n_moe) { /* every routed layer: the short rule */
        free(text);
        if (asprintf(&text, EXPS_PATTERN "=%s", cpu) < 0)
            text = NULL;
    }
    return add_ot(pl, text);
}

/* Writes value for a POSIX shell: in single quotes, a quote as '\''. */
static void shell_quote(FILE *f, const char *value) {
    fputc('\'', f);
    for (const char *c = value; *c; c++)
        if (*c == '\'')
            fputs("'\\''", f);
        else
            fputc(*c, f);
    fputc('\'', f);
}

/* The flags of the plan, the arguments that give them, and the summary. */
static moe_status emit(planner *pl) {
    const moe_model_params *p = pl->p;
    const moe_model *m = pl->m;
    moe_placement_plan *plan = pl->plan;
    const int32_t n_user = p->fit ? 0 : p->n_tensor_overrides;
    plan->ot = calloc(MOE_MAX_OVERRIDES, sizeof *plan->ot);
    MOE_FAIL_IF(!plan->ot, pl->err, MOE_ERR_NOMEM, "out of memory");
    MOE_FAIL_IF(n_user >= MOE_MAX_OVERRIDES, pl->err, MOE_ERR_USAGE,
                "more than %d -ot overrides", MOE_MAX_OVERRIDES - 1);
    for (int32_t i = 0; i < n_user; i++)
        MOE_TRY(add_ot(pl, strdup(p->tensor_overrides[i])));
    MOE_TRY(expert_rules(pl));
    /* --fit fills one device; --hot-experts keeps the user's -dev (default: every GPU) */
    const char *devices = p->fit ? m->dev[pl->target].info.name : p->devices;
    plan->devices = devices ? strdup(devices) : NULL;
    MOE_FAIL_IF(devices && !plan->devices, pl->err, MOE_ERR_NOMEM, "out of memory");
    plan->params.devices = plan->devices;
    plan->params.n_gpu_layers = pl->ngl;
    plan->params.tensor_overrides = (const char *const *)plan->ot;
    plan->params.n_tensor_overrides = plan->n_ot;
    size_t len = 0;
    FILE *f = open_memstream(&plan->args, &len);
    MOE_FAIL_IF(!f, pl->err, MOE_ERR_NOMEM, "out of memory");
    if (plan->devices)
        fprintf(f, "-dev %s ", plan->devices);
    fprintf(f, "-ngl %" PRId32, pl->ngl);
    for (int32_t i = 0; i < plan->n_ot; i++) {
        fputs(" -ot ", f);
        shell_quote(f, plan->ot[i]);
    }
    fclose(f);
    f = open_memstream(&plan->summary, &len);
    MOE_FAIL_IF(!f, pl->err, MOE_ERR_NOMEM, "out of memory");
    const moe_device_info *info = &m->dev[pl->target].info;
    fprintf(f, "%s takes %.2f of %.2f MiB", info->name, (double)pl->used / 1048576.0,
            (double)pl->budget / 1048576.0);
    if (p->fit)
        fprintf(f, " (%.2f MiB free, margin %.2f MiB): the dense part of %" PRId32 " of %" PRId64
                " layers%s, ", (double)info->free_bytes / 1048576.0,
                (double)p->fit_margin / 1048576.0,
                pl->ngl < m->hp.n_layer ? pl->ngl : (int32_t)m->hp.n_layer, m->hp.n_layer,
                pl->ngl > m->hp.n_layer ? " and the output head" : "");
    else
        fprintf(f, " of --gpu-budget: ");
    fprintf(f, "%" PRId64 " of %" PRId64 " routed experts%s", pl->n_hot, pl->n_routed,
            p->hot_experts ? ", the most used" : " (whole tensors of the last layers)");
    fclose(f);
    MOE_FAIL_IF(!plan->args || !plan->summary, pl->err, MOE_ERR_NOMEM, "out of memory");
    return MOE_OK;
}

moe_status moe_placement_plan_make(const moe_model *m, const moe_model_params *p,
                                   moe_placement_plan *plan, moe_err *err) {
    memset(plan, 0, sizeof *plan);
    plan->params = *p;
    if (!p->fit && !p->hot_experts) {
        MOE_FAIL_IF(p->gpu_budget, err, MOE_ERR_USAGE,
                    "--gpu-budget needs --hot-experts FILE: the budget is for the most used "
                    "experts");
        return MOE_OK;
    }
    const int64_t n_layer = m->hp.n_layer > 0 ? m->hp.n_layer : 1;
    const int64_t E = m->hp.n_expert > 0 ? m->hp.n_expert : 1;
    planner pl = {.m = m, .p = p, .plan = plan, .err = err, .budget = p->gpu_budget};
    pl.counts = calloc((size_t)n_layer, sizeof *pl.counts);
    pl.ls = calloc((size_t)n_layer, sizeof *pl.ls);
    pl.hot = calloc((size_t)(n_layer * E), 1);
    moe_status st = pl.counts && pl.ls && pl.hot ? check_options(&pl)
                                                 : moe_fail(err, MOE_ERR_NOMEM, "out of memory");
    if (st == MOE_OK && p->hot_experts)
        st = bind_counts(&pl);
    if (st == MOE_OK && p->fit) {
        st = fit_dense(&pl);
    } else if (st == MOE_OK) {
        measure(&pl, 0);
        pl.ngl = p->n_gpu_layers;
    }
    /* experts only once every dense part is there (--fit) */
    const bool experts = !p->fit || pl.ngl > m->hp.n_layer;
    pl.first_exps = m->hp.n_layer;
    if (st == MOE_OK && experts && p->hot_experts)
        st = choose_hot(&pl);
    else if (st == MOE_OK && experts)
        choose_last_layers(&pl);
    if (st == MOE_OK)
        st = emit(&pl);
    free(pl.counts);
    free(pl.ls);
    free(pl.hot);
    return st;
}

void moe_placement_plan_free(moe_placement_plan *plan) {
    for (int32_t i = 0; plan->ot && i < plan->n_ot; i++)
        free(plan->ot[i]);
    free(plan->ot);
    free(plan->devices);
    free(plan->args);
    free(plan->summary);
    memset(plan, 0, sizeof *plan);
}
