#include "runtime/quality/expert_stats.h"

#include <inttypes.h>
#include <jansson.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "runtime/quality/outfile.h"

static const char *const PHASE_KEY[MOE_STATS_N_PHASES] = {"prompt", "gen"};

moe_status moe_expert_stats_create(const char *model, const char *arch, int32_t n_expert,
                                   int32_t n_expert_used, moe_expert_stats **out, moe_err *err) {
    *out = NULL;
    MOE_FAIL_IF(n_expert < 1 || n_expert_used < 1 || n_expert_used > n_expert, err,
                MOE_ERR_USAGE, "expert statistics: %" PRId32 " experts, %" PRId32
                " used per token is not a routed MoE", n_expert, n_expert_used);
    moe_expert_stats *s = calloc(1, sizeof *s);
    if (s) {
        s->model = strdup(model ? model : "");
        s->arch = arch ? strdup(arch) : NULL;
    }
    if (!s || !s->model || (arch && !s->arch)) {
        moe_expert_stats_free(s);
        return moe_fail(err, MOE_ERR_NOMEM, "out of memory");
    }
    s->n_expert = n_expert;
    s->n_expert_used = n_expert_used;
    *out = s;
    return MOE_OK;
}

void moe_expert_stats_free(moe_expert_stats *s) {
    if (!s)
        return;
    for (int32_t i = 0; i < s->n_layers; i++)
        for (int p = 0; p < MOE_STATS_N_PHASES; p++) {
            free(s->layers[i].phase[p].count);
            free(s->layers[i].phase[p].weight);
        }
    free(s->layers);
    free(s->model);
    free(s->arch);
    free(s);
}

moe_status moe_expert_stats_for_model(const moe_model *m, const char *model_path,
                                      moe_expert_stats **out, moe_err *err) {
    *out = NULL;
    int64_t e = moe_model_n_expert(m), k = moe_model_n_expert_used(m);
    MOE_FAIL_IF(e <= 0 || k <= 0, err, MOE_ERR_USAGE, "%s: no routed experts", model_path);
    MOE_FAIL_IF(e > INT32_MAX || k > INT32_MAX, err, MOE_ERR_FORMAT,
                "%s: expert count out of range", model_path);
    const char *name = moe_model_name(m);
    if (!name) {
        const char *slash = strrchr(model_path, '/');
        name = slash ? slash + 1 : model_path;
    }
    return moe_expert_stats_create(name, moe_model_arch_name(m), (int32_t)e, (int32_t)k, out, err);
}

const moe_expert_layer_stats *moe_expert_stats_layer(const moe_expert_stats *s, int32_t layer) {
    for (int32_t i = 0; i < s->n_layers; i++)
        if (s->layers[i].layer == layer)
            return &s->layers[i];
    return NULL;
}

/* The slot for block `layer`, inserted (zeroed) in block order when new. */
static moe_expert_layer_stats *layer_slot(moe_expert_stats *s, int32_t layer, moe_err *err) {
    int32_t at = 0;
    while (at < s->n_layers && s->layers[at].layer < layer)
        at++;
    if (at < s->n_layers && s->layers[at].layer == layer)
        return &s->layers[at];
    moe_expert_layer_stats fresh = {.layer = layer};
    for (int p = 0; p < MOE_STATS_N_PHASES; p++) {
        fresh.phase[p].count = calloc((size_t)s->n_expert, sizeof(uint64_t));
        fresh.phase[p].weight = calloc((size_t)s->n_expert, sizeof(double));
    }
    moe_expert_layer_stats *grown =
        realloc(s->layers, (size_t)(s->n_layers + 1) * sizeof *s->layers);
    if (!grown || !fresh.phase[0].count || !fresh.phase[0].weight || !fresh.phase[1].count ||
        !fresh.phase[1].weight) {
        for (int p = 0; p < MOE_STATS_N_PHASES; p++) {
            free(fresh.phase[p].count);
            free(fresh.phase[p].weight);
        }
        if (grown)
            s->layers = grown;
        moe_fail(err, MOE_ERR_NOMEM, "out of memory");
        return NULL;
    }
    s->layers = grown;
    memmove(&s->layers[at + 1], &s->layers[at], (size_t)(s->n_layers - at) * sizeof *s->layers);
    s->layers[at] = fresh;
    s->n_layers++;
    return &s->layers[at];
}

void moe_expert_stats_set_phase(moe_expert_stats *s, moe_stats_phase phase) {
    s->phase = phase;
}

void moe_expert_stats_add(moe_expert_stats *s, int32_t layer, int32_t T, int32_t K,
                          const int32_t *ids, const float *weights) {
    if (s->observe_status != MOE_OK)
        return;
    if (K != s->n_expert_used || layer < 0 || T < 0) {
        s->observe_status = moe_fail(&s->observe_err, MOE_ERR_INTERNAL,
                                     "router of layer %" PRId32 " chose %" PRId32
                                     " experts per token, the model says %" PRId32,
                                     layer, K, s->n_expert_used);
        return;
    }
    for (int64_t i = 0; i < (int64_t)T * K; i++)
        if (ids[i] < 0 || ids[i] >= s->n_expert) {
            s->observe_status = moe_fail(&s->observe_err, MOE_ERR_INTERNAL,
                                         "router of layer %" PRId32 " chose expert %" PRId32
                                         " of %" PRId32, layer, ids[i], s->n_expert);
            return;
        }
    moe_expert_layer_stats *l = layer_slot(s, layer, &s->observe_err);
    if (!l) {
        s->observe_status = MOE_ERR_NOMEM;
        return;
    }
    moe_expert_phase_stats *ph = &l->phase[s->phase];
    ph->n_tokens += (uint64_t)T;
    for (int64_t i = 0; i < (int64_t)T * K; i++) {
        ph->count[ids[i]]++;
        ph->weight[ids[i]] += (double)weights[i];
    }
}

static void route_observer(void *user, int32_t layer, int32_t T, int32_t K, const int32_t *ids,
                           const float *weights) {
    moe_expert_stats_add(user, layer, T, K, ids, weights);
}

void moe_expert_stats_attach(moe_context *ctx, moe_expert_stats *s) {
    moe_context_set_route_observer(ctx, s ? route_observer : NULL, s);
}

moe_status moe_expert_stats_begin(moe_context *ctx, const moe_model *m, const char *model_path,
                                  const char *out_path, moe_expert_stats **out, moe_err *err) {
    *out = NULL;
    if (!out_path)
        return MOE_OK;
    MOE_TRY(moe_expert_stats_for_model(m, model_path, out, err));
    moe_expert_stats_attach(ctx, *out);
    return MOE_OK;
}

moe_status moe_expert_stats_end(moe_expert_stats *s, const char *out_path, moe_status st,
                                moe_err *err) {
    if (st == MOE_OK && s)
        st = moe_expert_stats_save(s, out_path, err);
    moe_expert_stats_free(s);
    return st;
}

/* ---- JSON ------------------------------------------------------------------------------ */

static json_t *phase_json(const moe_expert_phase_stats *ph, int32_t E) {
    json_t *o = json_object(), *c = json_array(), *w = json_array();
    if (!o || !c || !w) {
        json_decref(o), json_decref(c), json_decref(w);
        return NULL;
    }
    json_object_set_new(o, "n_tokens", json_integer((json_int_t)ph->n_tokens));
    for (int32_t e = 0; e < E; e++) {
        json_array_append_new(c, json_integer((json_int_t)ph->count[e]));
        json_array_append_new(w, json_real(ph->weight[e]));
    }
    json_object_set_new(o, "count", c);
    json_object_set_new(o, "weight", w);
    return o;
}

static json_t *stats_json(const moe_expert_stats *s) {
    json_t *root = json_object(), *layers = json_array();
    if (!root || !layers) {
        json_decref(root), json_decref(layers);
        return NULL;
    }
    json_object_set_new(root, "format", json_string("moe-expert-stats"));
    json_object_set_new(root, "version", json_integer(MOE_EXPERT_STATS_VERSION));
    json_object_set_new(root, "model", json_string(s->model));
    if (s->arch)
        json_object_set_new(root, "arch", json_string(s->arch));
    json_object_set_new(root, "n_expert", json_integer(s->n_expert));
    json_object_set_new(root, "n_expert_used", json_integer(s->n_expert_used));
    for (int32_t i = 0; i < s->n_layers; i++) {
        json_t *l = json_object();
        if (!l)
            break;
        json_object_set_new(l, "layer", json_integer(s->layers[i].layer));
        for (int p = 0; p < MOE_STATS_N_PHASES; p++)
            json_object_set_new(l, PHASE_KEY[p], phase_json(&s->layers[i].phase[p], s->n_expert));
        json_array_append_new(layers, l);
    }
    json_object_set_new(root, "layers", layers);
    return root;
}

moe_status moe_expert_stats_save(const moe_expert_stats *s, const char *path, moe_err *err) {
    if (s->observe_status != MOE_OK)
        return moe_fail(err, s->observe_status, "%s: not written: %s", path, s->observe_err.msg);
    json_t *root = stats_json(s);
    /* %.17g keeps every double exact, so a file read back merges to the same sums */
    char *text = root ? json_dumps(root, JSON_INDENT(1) | JSON_REAL_PRECISION(17)) : NULL;
    json_decref(root);
    if (!text)
        return moe_fail(err, MOE_ERR_NOMEM, "%s: out of memory building the JSON", path);
    moe_outfile o;
    moe_status st = moe_outfile_open(&o, path, err);
    if (st == MOE_OK)
        st = moe_outfile_write(&o, text, strlen(text), err);
    if (st == MOE_OK)
        st = moe_outfile_write(&o, "\n", 1, err);
    if (st == MOE_OK)
        st = moe_outfile_commit(&o, err);
    else
        moe_outfile_abort(&o);
    free(text);
    return st;
}

/* ---- reading ----------------------------------------------------------------------------- */

static moe_status get_int(const char *path, json_t *obj, const char *key, const char *where,
                          int64_t lo, int64_t hi, int64_t *out, moe_err *err) {
    json_t *v = json_object_get(obj, key);
    MOE_FAIL_IF(!v, err, MOE_ERR_FORMAT, "%s: %s%s: missing", path, where, key);
    MOE_FAIL_IF(!json_is_integer(v), err, MOE_ERR_FORMAT, "%s: %s%s: expected an integer", path,
                where, key);
    json_int_t x = json_integer_value(v);
    MOE_FAIL_IF(x < lo || x > hi, err, MOE_ERR_FORMAT,
                "%s: %s%s: %lld is out of range [%" PRId64 ", %" PRId64 "]", path, where, key,
                (long long)x, lo, hi);
    *out = x;
    return MOE_OK;
}

static moe_status read_phase(const char *path, json_t *l, int p, const char *where, int32_t E,
                             moe_expert_phase_stats *ph, moe_err *err) {
    char at[96];
    json_t *o = json_object_get(l, PHASE_KEY[p]);
    MOE_FAIL_IF(!json_is_object(o), err, MOE_ERR_FORMAT, "%s: %s%s: %s", path, where,
                PHASE_KEY[p], o ? "expected an object" : "missing");
    snprintf(at, sizeof at, "%s%s.", where, PHASE_KEY[p]);
    json_t *c = json_object_get(o, "count"), *w = json_object_get(o, "weight");
    MOE_FAIL_IF(!json_is_array(c) || json_array_size(c) != (size_t)E, err, MOE_ERR_FORMAT,
                "%s: %scount: %s", path, at,
                c ? "expected an array of n_expert integers" : "missing");
    MOE_FAIL_IF(!json_is_array(w) || json_array_size(w) != (size_t)E, err, MOE_ERR_FORMAT,
                "%s: %sweight: %s", path, at,
                w ? "expected an array of n_expert numbers" : "missing");
    for (int32_t e = 0; e < E; e++) {
        json_t *ce = json_array_get(c, (size_t)e), *we = json_array_get(w, (size_t)e);
        MOE_FAIL_IF(!json_is_integer(ce) || json_integer_value(ce) < 0, err, MOE_ERR_FORMAT,
                    "%s: %scount[%" PRId32 "]: expected a non-negative integer", path, at, e);
        MOE_FAIL_IF(!json_is_number(we) || !isfinite(json_number_value(we)) ||
                        json_number_value(we) < 0,
                    err, MOE_ERR_FORMAT,
                    "%s: %sweight[%" PRId32 "]: expected a finite non-negative number", path, at,
                    e);
        ph->count[e] = (uint64_t)json_integer_value(ce);
        ph->weight[e] = json_number_value(we);
    }
    if (json_object_get(o, "n_tokens")) {
        int64_t n = 0;
        MOE_TRY(get_int(path, o, "n_tokens", at, 0, INT64_MAX, &n, err));
        ph->n_tokens = (uint64_t)n;
    }
    return MOE_OK;
}

static moe_status read_layers(const char *path, json_t *root, moe_expert_stats *s,
                              moe_err *err) {
    json_t *layers = json_object_get(root, "layers");
    MOE_FAIL_IF(!json_is_array(layers), err, MOE_ERR_FORMAT, "%s: layers: %s", path,
                layers ? "expected an array" : "missing");
    for (size_t i = 0; i < json_array_size(layers); i++) {
        char where[48];
        snprintf(where, sizeof where, "layers[%zu].", i);
        json_t *l = json_array_get(layers, i);
        MOE_FAIL_IF(!json_is_object(l), err, MOE_ERR_FORMAT, "%s: layers[%zu]: expected an object",
                    path, i);
        int64_t idx = 0;
        MOE_TRY(get_int(path, l, "layer", where, 0, INT32_MAX, &idx, err));
        MOE_FAIL_IF(moe_expert_stats_layer(s, (int32_t)idx), err, MOE_ERR_FORMAT,
                    "%s: %slayer: block %" PRId64 " appears twice", path, where, idx);
        moe_expert_layer_stats *slot = layer_slot(s, (int32_t)idx, err);
        if (!slot)
            return MOE_ERR_NOMEM;
        for (int p = 0; p < MOE_STATS_N_PHASES; p++)
            MOE_TRY(read_phase(path, l, p, where, s->n_expert, &slot->phase[p], err));
    }
    return MOE_OK;
}

static moe_status read_root(const char *path, json_t *root, moe_expert_stats **out,
                            moe_err *err) {
    MOE_FAIL_IF(!json_is_object(root), err, MOE_ERR_FORMAT, "%s: expected a JSON object", path);
    json_t *fmt = json_object_get(root, "format");
    MOE_FAIL_IF(fmt && (!json_is_string(fmt) || strcmp(json_string_value(fmt), "moe-expert-stats")),
                err, MOE_ERR_FORMAT, "%s: format: not \"moe-expert-stats\"", path);
    if (json_object_get(root, "version")) {
        int64_t v = 0;
        MOE_TRY(get_int(path, root, "version", "", 1, MOE_EXPERT_STATS_VERSION, &v, err));
    }
    json_t *model = json_object_get(root, "model"), *arch = json_object_get(root, "arch");
    MOE_FAIL_IF(!json_is_string(model), err, MOE_ERR_FORMAT, "%s: model: %s", path,
                model ? "expected a string" : "missing");
    MOE_FAIL_IF(arch && !json_is_string(arch), err, MOE_ERR_FORMAT,
                "%s: arch: expected a string", path);
    int64_t e = 0, k = 0;
    MOE_TRY(get_int(path, root, "n_expert", "", 1, 1 << 20, &e, err));
    MOE_TRY(get_int(path, root, "n_expert_used", "", 1, e, &k, err));
    MOE_TRY(moe_expert_stats_create(json_string_value(model),
                                    arch ? json_string_value(arch) : NULL, (int32_t)e,
                                    (int32_t)k, out, err));
    moe_status st = read_layers(path, root, *out, err);
    if (st != MOE_OK) {
        moe_expert_stats_free(*out);
        *out = NULL;
    }
    return st;
}

moe_status moe_expert_stats_load(const char *path, moe_expert_stats **out, moe_err *err) {
    *out = NULL;
    json_error_t je;
    json_t *root = json_load_file(path, JSON_REJECT_DUPLICATES, &je);
    if (!root)
        return moe_fail(err, MOE_ERR_FORMAT, "%s: line %d: %s", path, je.line, je.text);
    moe_status st = read_root(path, root, out, err);
    json_decref(root);
    return st;
}

moe_status moe_expert_stats_merge(moe_expert_stats *dst, const moe_expert_stats *src,
                                  moe_err *err) {
    MOE_FAIL_IF(strcmp(dst->model, src->model), err, MOE_ERR_USAGE,
                "cannot merge statistics of model \"%s\" into \"%s\"", src->model, dst->model);
    MOE_FAIL_IF(dst->arch && src->arch && strcmp(dst->arch, src->arch), err, MOE_ERR_USAGE,
                "cannot merge statistics of arch %s into %s", src->arch, dst->arch);
    MOE_FAIL_IF(dst->n_expert != src->n_expert || dst->n_expert_used != src->n_expert_used, err,
                MOE_ERR_USAGE,
                "cannot merge statistics of %" PRId32 " experts (%" PRId32 " used) into %" PRId32
                " experts (%" PRId32 " used)",
                src->n_expert, src->n_expert_used, dst->n_expert, dst->n_expert_used);
    /* make every slot first, so a failure leaves dst's sums unchanged */
    for (int32_t i = 0; i < src->n_layers; i++)
        if (!layer_slot(dst, src->layers[i].layer, err))
            return MOE_ERR_NOMEM;
    for (int32_t i = 0; i < src->n_layers; i++) {
        moe_expert_layer_stats *d = layer_slot(dst, src->layers[i].layer, err);
        for (int p = 0; p < MOE_STATS_N_PHASES; p++) {
            const moe_expert_phase_stats *a = &src->layers[i].phase[p];
            d->phase[p].n_tokens += a->n_tokens;
            for (int32_t e = 0; e < dst->n_expert; e++) {
                d->phase[p].count[e] += a->count[e];
                d->phase[p].weight[e] += a->weight[e];
            }
        }
    }
    return MOE_OK;
}

/* ---- summary ----------------------------------------------------------------------------- */

static int cmp_desc(const void *a, const void *b) {
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return (x < y) - (x > y);
}

moe_expert_summary moe_expert_summarize(const uint64_t *count, int32_t n_expert) {
    moe_expert_summary r = {0};
    uint64_t *sorted = malloc((size_t)n_expert * sizeof *sorted);
    for (int32_t e = 0; e < n_expert; e++) {
        r.total += count[e];
        r.n_unused += count[e] == 0;
    }
    if (r.total == 0 || !sorted) {
        free(sorted);
        return r;
    }
    for (int32_t e = 0; e < n_expert; e++) {
        if (count[e]) {
            double p = (double)count[e] / (double)r.total;
            r.entropy_bits -= p * log2(p);
        }
        sorted[e] = count[e];
    }
    qsort(sorted, (size_t)n_expert, sizeof *sorted, cmp_desc);
    int32_t top = (n_expert + 9) / 10;
    uint64_t top_sum = 0;
    for (int32_t e = 0; e < top; e++)
        top_sum += sorted[e];
    r.top10_share = (double)top_sum / (double)r.total;
    free(sorted);
    return r;
}

moe_status moe_expert_stats_load_counts(const char *path, moe_expert_counts **out,
                                        moe_err *err) {
    *out = NULL;
    moe_expert_stats *s = NULL;
    MOE_TRY(moe_expert_stats_load(path, &s, err));
    const size_t n_layers = (size_t)s->n_layers, E = (size_t)s->n_expert;
    const size_t strings =
        strlen(path) + 1 + strlen(s->model) + 1 + (s->arch ? strlen(s->arch) + 1 : 0);
    /* the struct, the counts, the layer indices, then the strings */
    moe_expert_counts *c = malloc(sizeof *c + n_layers * E * sizeof(uint64_t) +
                                  n_layers * sizeof(int32_t) + strings);
    if (!c) {
        moe_expert_stats_free(s);
        return moe_fail(err, MOE_ERR_NOMEM, "%s: out of memory", path);
    }
    uint64_t *count = (uint64_t *)(c + 1);
    int32_t *layer = (int32_t *)(count + n_layers * E);
    char *text = (char *)(layer + n_layers);
    *c = (moe_expert_counts){.n_expert = s->n_expert, .n_expert_used = s->n_expert_used,
                             .n_layers = s->n_layers, .layer = layer, .count = count};
    for (size_t i = 0; i < n_layers; i++) {
        const moe_expert_layer_stats *l = &s->layers[i];
        layer[i] = l->layer;
        for (size_t e = 0; e < E; e++)
            count[i * E + e] =
                l->phase[MOE_STATS_PROMPT].count[e] + l->phase[MOE_STATS_GEN].count[e];
    }
    const char *from[3] = {path, s->model, s->arch};
    const char **to[3] = {&c->source, &c->model, &c->arch};
    for (int k = 0; k < 3 && from[k]; k++) {
        *to[k] = strcpy(text, from[k]);
        text += strlen(from[k]) + 1;
    }
    moe_expert_stats_free(s);
    *out = c;
    return MOE_OK;
}
