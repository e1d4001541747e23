/* Placement: which device holds each weight and runs each layer's attention,
 * from llama.cpp's flags, checked and bound at load (device.h). */
#include <ctype.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "formats/base/cli.h"
#include "formats/base/log.h"
#include "formats/base/regex.h"
#include "runtime/device.h"
#include "runtime/model.h"

/* ---- devices ------------------------------------------------------------------------------- */

/* CPU1 stands in for a GPU in tests of --fit: MOE_CPU1_MEMORY gives it the
 * memory size (total and free) a GPU backend would report. */
static void cpu1_memory(moe_device_info *info) {
    static bool warned;
    const char *size = getenv("MOE_CPU1_MEMORY");
    if (!size || !*size)
        return;
    moe_err err = {0};
    uint64_t bytes;
    if (moe_parse_size(size, &bytes, "environment variable MOE_CPU1_MEMORY", &err) == MOE_OK) {
        info->free_bytes = info->total_bytes = bytes;
    } else if (!warned) {
        warned = true;
        MOE_WARN("%s (ignored)", err.msg);
    }
}

int moe_devices_discover(moe_device_entry *out, int cap) {
    if (cap < 2)
        return 0;
    out[0] = (moe_device_entry){.ops = moe_backend_cpu()};
    snprintf(out[0].info.name, sizeof out[0].info.name, "CPU");
    snprintf(out[0].info.description, sizeof out[0].info.description, "host CPU");
    out[1] = (moe_device_entry){.ops = moe_backend_cpu1()};
    snprintf(out[1].info.name, sizeof out[1].info.name, "CPU1");
    snprintf(out[1].info.description, sizeof out[1].info.description,
             "second CPU device: own memory, explicit copies (for split-execution tests)");
    cpu1_memory(&out[1].info);
    return 2 + moe_devices_discover_gpus(out + 2, cap - 2);
}

int moe_device_count(void) {
    moe_device_entry devs[MOE_MAX_DEVICES];
    return moe_devices_discover(devs, MOE_MAX_DEVICES);
}

bool moe_device_get(int i, moe_device_info *out) {
    moe_device_entry devs[MOE_MAX_DEVICES];
    int n = moe_devices_discover(devs, MOE_MAX_DEVICES);
    if (i < 0 || i >= n)
        return false;
    *out = devs[i].info;
    return true;
}

int moe_device_find(const moe_device_entry *devs, int n, const char *name, size_t len) {
    for (int d = 0; d < n; d++)
        if (strlen(devs[d].info.name) == len && !strncasecmp(devs[d].info.name, name, len))
            return d;
    return -1;
}

/* "CPU, CPU1" for error messages. */
static void device_names(const moe_device_entry *devs, int n, char *buf, size_t cap) {
    size_t at = 0;
    buf[0] = '\0';
    for (int d = 0; d < n && at < cap; d++)
        at += (size_t)snprintf(buf + at, cap - at, "%s%s", d ? ", " : "", devs[d].info.name);
}

/* "0-15,32,40-47" into set; false on anything else. */
static bool parse_expert_ranges(const char *s, moe_expert_set *set) {
    memset(set, 0, sizeof *set);
    set->max = -1;
    while (*s) {
        char *end;
        long a = strtol(s, &end, 10), b = a;
        if (end == s || !isdigit((unsigned char)*s))
            return false;
        s = end;
        if (*s == '-') {
            const char *from = ++s;
            b = strtol(from, &end, 10);
            if (end == from || !isdigit((unsigned char)*from))
                return false;
            s = end;
        }
        if (a < 0 || b < a || b >= MOE_MAX_EXPERTS || (*s && *s != ','))
            return false;
        for (long e = a; e <= b; e++)
            set->bits[e / 8] |= (uint8_t)(1u << (e % 8));
        set->max = (int32_t)(b > set->max ? b : set->max);
        s += *s == ',';
    }
    return set->max >= 0;
}

static bool in_set(const moe_expert_set *set, int64_t e) {
    return set->bits[e / 8] & (1u << (e % 8));
}

moe_status moe_placement_parse_override(const char *value, const moe_device_entry *devs,
                                        int n_devs, char **pattern, int *dev,
                                        moe_expert_set *experts, bool *ranged, moe_err *err) {
    *pattern = NULL;
    *ranged = false;
    const char *tail = strstr(value, ":experts=");
    while (tail && strstr(tail + 1, ":experts=")) /* the last one: patterns may hold anything */
        tail = strstr(tail + 1, ":experts=");
    size_t head_len = tail ? (size_t)(tail - value) : strlen(value);
    const char *eq = NULL; /* the last '=' before the tail: device names hold no '=' */
    for (size_t k = 0; k < head_len; k++)
        if (value[k] == '=')
            eq = value + k;
    MOE_FAIL_IF(!eq || eq == value || eq + 1 == value + head_len, err, MOE_ERR_USAGE,
                "option -ot '%s': expected PATTERN=DEVICE[:experts=A-B,...] (e.g. "
                "'ffn_.*_exps=CPU')", value);
    const size_t dev_len = (size_t)(value + head_len - eq - 1);
    *dev = moe_device_find(devs, n_devs, eq + 1, dev_len);
    if (*dev < 0) {
        char names[160];
        device_names(devs, n_devs, names, sizeof names);
        return moe_fail(err, MOE_ERR_USAGE, "option -ot '%s': no device named '%.*s' "
                        "(devices: %s)", value, (int)dev_len, eq + 1, names);
    }
    if (tail) {
        MOE_FAIL_IF(!parse_expert_ranges(tail + 9, experts), err, MOE_ERR_USAGE,
                    "option -ot '%s': experts= wants expert indices and ranges below %d, "
                    "e.g. experts=0-15,32", value, MOE_MAX_EXPERTS);
        *ranged = true;
    }
    *pattern = strndup(value, (size_t)(eq - value));
    MOE_FAIL_IF(!*pattern, err, MOE_ERR_NOMEM, "out of memory");
    return MOE_OK;
}

/* ---- the weights, with the names placement matches ------------------------------------------ */

/* Calls fn for every present weight with its layer (-1 for the others) and the
 * name users write patterns for: stacked expert names even for a legacy
 * split-expert file, "output.weight" for an output tied to the embeddings. */
typedef moe_status (*weight_fn)(void *user, moe_weight *w, int64_t il, const char *name);

static moe_status visit(moe_model *m, weight_fn fn, void *user) {
    if (m->tok_embd.data)
        MOE_TRY(fn(user, &m->tok_embd, -1, "token_embd.weight"));
    if (m->output_norm.data)
        MOE_TRY(fn(user, &m->output_norm, -1, "output_norm.weight"));
    if (m->output.data)
        MOE_TRY(fn(user, &m->output, -1, "output.weight"));
    for (int64_t il = 0; il < m->hp.n_layer; il++) {
        moe_layer *L = &m->layers[il];
        char name[96];
#define VISIT(f)                                                                                \
    if (L->f.data) {                                                                            \
        const char *nm = L->f.name;                                                             \
        if (&L->f == &L->gate_exps || &L->f == &L->up_exps || &L->f == &L->down_exps) {         \
            snprintf(name, sizeof name, "blk.%" PRId64 ".ffn_%s_exps.weight", il,              \
                     &L->f == &L->gate_exps ? "gate" : &L->f == &L->up_exps ? "up" : "down");   \
            nm = name;                                                                          \
        }                                                                                       \
        MOE_TRY(fn(user, &L->f, il, nm));                                                       \
    }
        MOE_LAYER_WEIGHTS(VISIT)
#undef VISIT
    }
    return MOE_OK;
}

/* ---- resolving ----------------------------------------------------------------------------- */

typedef struct override {
    moe_regex *re;
    const char *text;     /* the -ot value, for messages */
    int dev;
    bool ranged;          /* experts= given: only those experts of stacked expert tensors */
    moe_expert_set experts;
} override;

typedef struct resolver {
    moe_model *m;
    const moe_model_params *p;
    override ov[MOE_MAX_OVERRIDES];
    int n_ov;
    int offload[MOE_MAX_DEVICES]; /* -dev list (or every GPU), in order */
    int n_offload;
    int out_dev;                  /* the output head's device */
    int8_t *assign;               /* [n_layer][3][E] device of each expert of gate/up/down */
    int64_t rtr_weights;          /* bound with -rtr kernels, their bytes and level */
    uint64_t rtr_bytes;
    const char *rtr_level;
    moe_err *err;
} resolver;

static bool is_expert_name(const char *name) {
    return strstr(name, "_exps.") != NULL;
}

/* Where the experts that no rule with experts= took go: --cpu-moe /
 * --n-cpu-moe, else the layer's device. */
static int expert_fallback(const resolver *r, int64_t il) {
    const moe_model_params *p = r->p;
    return p->cpu_moe || il < p->n_cpu_moe ? 0 : r->m->layer_dev[il];
}

/* 0, 1, 2 for the gate, up, down expert tensors of layer il. */
static int expert_role(const moe_model *m, int64_t il, const moe_weight *w) {
    const moe_layer *L = &m->layers[il];
    return w == &L->gate_exps ? 0 : w == &L->up_exps ? 1 : 2;
}

/* The device of every expert of a stacked expert tensor: a rule with
 * experts= takes the experts it names that no earlier rule took, a rule
 * without takes the rest, then the fallback; the tensor itself stays on the
 * device holding most of them (its home). */
static moe_status place_experts(resolver *r, moe_weight *w, int64_t il, const char *name) {
    const int64_t E = r->m->hp.n_expert;
    int8_t *a = r->assign + (il * 3 + expert_role(r->m, il, w)) * E;
    memset(a, -1, (size_t)E);
    int64_t left = E;
    for (int i = 0; i < r->n_ov && left; i++) {
        const override *o = &r->ov[i];
        if (!moe_regex_search(o->re, name))
            continue;
        MOE_FAIL_IF(o->ranged && o->experts.max >= E, r->err, MOE_ERR_USAGE,
                    "option -ot '%s': expert %d of tensor '%s', which has %lld experts", o->text,
                    o->experts.max, name, (long long)E);
        for (int64_t e = 0; e < E; e++)
            if (a[e] < 0 && (!o->ranged || in_set(&o->experts, e)))
                a[e] = (int8_t)o->dev, left--;
    }
    int count[MOE_MAX_DEVICES] = {0}, home = 0;
    for (int64_t e = 0; e < E; e++) {
        if (a[e] < 0)
            a[e] = (int8_t)expert_fallback(r, il);
        count[a[e]]++;
    }
    for (int d = 1; d < MOE_MAX_DEVICES; d++)
        home = count[d] > count[home] ? d : home;
    /* a split layer sums the devices' results in host memory: a home there */
    for (int d = 0; count[home] < E && !r->m->dev[home].ops->host_memory && d < r->m->n_dev; d++)
        if (count[d] && r->m->dev[d].ops->host_memory)
            home = d;
    w->device = (int8_t)home;
    return MOE_OK;
}

static moe_status place_one(void *user, moe_weight *w, int64_t il, const char *name) {
    resolver *r = user;
    if (il >= 0 && is_expert_name(name) && w->ne[2] > 1 && w->ne[2] == r->m->hp.n_expert)
        return place_experts(r, w, il, name);
    for (int i = 0; i < r->n_ov; i++)
        if (moe_regex_search(r->ov[i].re, name)) {
            MOE_FAIL_IF(r->ov[i].ranged, r->err, MOE_ERR_USAGE,
                        "option -ot '%s': experts= applies to stacked expert tensors, but it "
                        "matches '%s'", r->ov[i].text, name);
            w->device = (int8_t)r->ov[i].dev;
            return MOE_OK;
        }
    if (il >= 0 && is_expert_name(name) && (r->p->cpu_moe || il < r->p->n_cpu_moe))
        w->device = 0;
    else if (il >= 0)
        w->device = r->m->layer_dev[il];
    else if (w == &r->m->tok_embd) /* the input rows stay on the host, as in llama.cpp */
        w->device = 0;
    else
        w->device = (int8_t)r->out_dev;
    return MOE_OK;
}

/* The offload devices: -dev's list ("none" for none), or every GPU. */
static moe_status offload_devices(resolver *r) {
    const moe_model *m = r->m;
    const char *list = r->p->devices;
    r->n_offload = 0;
    if (!list) {
        for (int d = 0; d < m->n_dev; d++)
            if (m->dev[d].info.gpu)
                r->offload[r->n_offload++] = d;
        return MOE_OK;
    }
    if (!strcasecmp(list, "none"))
        return MOE_OK;
    for (const char *s = list; *s;) {
        size_t len = strcspn(s, ",");
        int d = moe_device_find(m->dev, m->n_dev, s, len);
        if (d < 0) {
            char names[160];
            device_names(m->dev, m->n_dev, names, sizeof names);
            return moe_fail(r->err, MOE_ERR_USAGE, "option -dev '%s': no device named '%.*s' "
                            "(devices: %s)", list, (int)len, s, names);
        }
        MOE_FAIL_IF(r->n_offload == MOE_MAX_DEVICES, r->err, MOE_ERR_USAGE,
                    "option -dev '%s': too many devices", list);
        r->offload[r->n_offload++] = d;
        s += len + (s[len] == ',');
    }
    return MOE_OK;
}

/* llama.cpp's -ngl: the last N layers go to the offload devices (split evenly,
 * in order), N beyond the layer count also takes the output head. */
static void place_layers(resolver *r) {
    moe_model *m = r->m;
    const int64_t n_layer = m->hp.n_layer;
    int64_t ngl = r->p->n_gpu_layers < 0 ? n_layer + 1 : r->p->n_gpu_layers;
    if (!r->n_offload)
        ngl = 0;
    const int64_t on = ngl < n_layer ? ngl : n_layer, first = n_layer - on;
    for (int64_t il = 0; il < n_layer; il++)
        m->layer_dev[il] = (int8_t)(il < first ? 0 : r->offload[(il - first) * r->n_offload / on]);
    r->out_dev = ngl > n_layer ? r->offload[r->n_offload - 1] : 0;
}

bool moe_placement_check_weight(const moe_weight *w, const moe_device_entry *dev, char *why,
                                size_t cap) {
    const moe_type_traits *tr = moe_type_get(w->type);
    if (tr && tr->interleave_rows > 0 && !dev->ops->interleaved) {
        snprintf(why, cap,
                 "tensor '%s' has the row-interleaved type %s, which only the CPU computes "
                 "with: keep it on the CPU (e.g. -ot '%s=CPU') or convert the file with "
                 "moe-repack --deinterleave",
                 w->name, tr->name, w->name);
        return false;
    }
    if (w->ne[1] == 1) /* 1-D weights are F32 values every device takes */
        return true;
    moe_backend probe = {.ops = dev->ops, .n_threads = 1};
    if (!dev->ops->supports_weight(&probe, w, why, cap))
        return false;
    return true;
}

/* Steps that multiply with three weights at once run on one device. */
static moe_status check_together(const moe_model *m, int64_t il, const moe_weight *a,
                                 const moe_weight *b, const moe_weight *c, const char *what,
                                 const char *pattern, moe_err *err) {
    if (!a->data || (a->device == b->device && a->device == c->device))
        return MOE_OK;
    /* the device the user asked for is the one that is not the CPU */
    const int want = a->device ? a->device : b->device ? b->device : c->device;
    return moe_fail(err, MOE_ERR_USAGE,
                    "the %s tensors of layer %" PRId64 " must be on one device, but gate is on "
                    "%s, up on %s, down on %s: make the pattern cover all three (e.g. "
                    "-ot 'blk\\.%" PRId64 "\\.%s=%s')",
                    what, il, m->dev[a->device].info.name, m->dev[b->device].info.name,
                    m->dev[c->device].info.name, il, pattern, m->dev[want].info.name);
}

static moe_status check_one(void *user, moe_weight *w, int64_t il, const char *name) {
    resolver *r = user;
    (void)il, (void)name;
    char why[400];
    MOE_FAIL_IF(!moe_placement_check_weight(w, &r->m->dev[w->device], why, sizeof why), r->err,
                MOE_ERR_UNSUPPORTED, "%s: %s", r->m->dev[w->device].info.name, why);
    r->m->dev_used |= 1u << w->device;
    return MOE_OK;
}

/* Binds w on a backend of ops (a probe instance: binding needs no context),
 * adding what it bound with -rtr kernels to r's counts. */
static moe_status bind_on(resolver *r, const moe_backend_ops *ops, moe_weight *w) {
    moe_backend probe = {.ops = ops, .n_threads = 1, .run_time_repack = r->p->run_time_repack};
    const moe_status st = ops->bind_weight(&probe, w, r->err);
    r->rtr_weights += probe.rtr_weights;
    r->rtr_bytes += probe.rtr_bytes;
    r->rtr_level = probe.rtr_level ? probe.rtr_level : r->rtr_level;
    return st;
}

static moe_status bind_one(void *user, moe_weight *w, int64_t il, const char *name) {
    resolver *r = user;
    (void)il, (void)name;
    const moe_backend_ops *ops = r->m->dev[w->device].ops;
    if (w->ne[1] == 1 && w->device == 0) /* 1-D on the host: read by the graph as is */
        return MOE_OK;
    return bind_on(r, ops, w);
}

static void free_overrides(resolver *r) {
    for (int i = 0; i < r->n_ov; i++)
        moe_regex_free(r->ov[i].re);
}

static moe_status compile_overrides(resolver *r) {
    const moe_model_params *p = r->p;
    MOE_FAIL_IF(p->n_tensor_overrides > MOE_MAX_OVERRIDES, r->err, MOE_ERR_USAGE,
                "more than %d -ot overrides", MOE_MAX_OVERRIDES);
    for (int32_t i = 0; i < p->n_tensor_overrides; i++) {
        char *pattern;
        override *o = &r->ov[r->n_ov];
        MOE_TRY(moe_placement_parse_override(p->tensor_overrides[i], r->m->dev, r->m->n_dev,
                                             &pattern, &o->dev, &o->experts, &o->ranged,
                                             r->err));
        moe_status st = moe_regex_compile(pattern, "-ot", &o->re, r->err);
        free(pattern);
        MOE_TRY(st);
        o->text = p->tensor_overrides[i];
        r->n_ov++;
    }
    return MOE_OK;
}

/* ---- experts split between devices ------------------------------------------------------- */

/* Records layer il's split when its experts are not all at home; the three
 * expert tensors must split the same way, and the home must be host memory
 * (the slots of every device are summed there). */
static moe_status make_split(resolver *r, int64_t il) {
    moe_model *m = r->m;
    moe_layer *L = &m->layers[il];
    const int64_t E = m->hp.n_expert;
    if (!L->gate_exps.data || E <= 1)
        return MOE_OK;
    const int8_t *a = r->assign + il * 3 * E;
    const int home = L->gate_exps.device;
    bool split = false;
    for (int64_t e = 0; e < E; e++) {
        MOE_FAIL_IF(a[e] != a[E + e] || a[e] != a[2 * E + e], r->err, MOE_ERR_USAGE,
                    "expert %lld of layer %lld is placed on %s (gate), %s (up), %s (down): the "
                    "three expert tensors must split the same way (one -ot pattern for "
                    "ffn_.*_exps)", (long long)e, (long long)il, m->dev[a[e]].info.name,
                    m->dev[a[E + e]].info.name, m->dev[a[2 * E + e]].info.name);
        split |= a[e] != home;
    }
    if (!split)
        return MOE_OK;
    MOE_FAIL_IF(!m->dev[home].ops->host_memory, r->err, MOE_ERR_UNSUPPORTED,
                "layer %lld: the experts left on %s would have to sum the other devices' "
                "results there; keep the experts not moved by experts= on the CPU (e.g. "
                "--cpu-moe)", (long long)il, m->dev[home].info.name);
    moe_expert_split *sp = calloc(1, sizeof *sp);
    MOE_FAIL_IF(!sp, r->err, MOE_ERR_NOMEM, "out of memory");
    L->split = sp;
    m->expert_split = true;
    int32_t n_on[MOE_MAX_DEVICES] = {0};
    for (int64_t e = 0; e < E; e++) {
        sp->dev[e] = a[e];
        sp->local[e] = a[e] == home ? (int32_t)e : n_on[a[e]]++;
        sp->devs |= 1u << a[e];
        m->dev_used |= 1u << a[e];
    }
    for (int d = 0; d < m->n_dev; d++)
        for (int k = 0; k < 3 && d != home && (sp->devs & (1u << d)); k++) {
            const moe_weight *src = k == 0 ? &L->gate_exps : k == 1 ? &L->up_exps : &L->down_exps;
            moe_weight *part = &sp->part[d][k];
            *part = *src;
            part->ne[2] = n_on[d];
            part->device = (int8_t)d;
            part->kern = NULL;
            part->dev = NULL;
            char why[400];
            MOE_FAIL_IF(!moe_placement_check_weight(part, &m->dev[d], why, sizeof why), r->err,
                        MOE_ERR_UNSUPPORTED, "%s: %s", m->dev[d].info.name, why);
        }
    return MOE_OK;
}

/* Uploads each other device's experts of layer il as its parts. */
static moe_status bind_split(resolver *r, int64_t il) {
    moe_model *m = r->m;
    moe_layer *L = &m->layers[il];
    moe_expert_split *sp = L->split;
    if (!sp)
        return MOE_OK;
    const int64_t E = m->hp.n_expert;
    for (int d = 0; d < m->n_dev; d++)
        for (int k = 0; k < 3 && (sp->devs & (1u << d)) && d != L->gate_exps.device; k++) {
            const moe_weight *src = k == 0 ? &L->gate_exps : k == 1 ? &L->up_exps : &L->down_exps;
            moe_weight *part = &sp->part[d][k];
            uint8_t *gathered = malloc(part->expert_bytes * (uint64_t)part->ne[2] + 1);
            MOE_FAIL_IF(!gathered, r->err, MOE_ERR_NOMEM, "out of memory gathering experts of "
                        "'%s' for %s", src->name, m->dev[d].info.name);
            for (int64_t e = 0; e < E; e++)
                if (sp->dev[e] == d)
                    memcpy(gathered + (uint64_t)sp->local[e] * src->expert_bytes,
                           src->data + (uint64_t)e * src->expert_bytes, src->expert_bytes);
            part->data = gathered;
            const moe_backend_ops *ops = m->dev[d].ops;
            moe_status st = bind_on(r, ops, part);
            if (ops->host_memory && part->data == gathered) { /* computes from the host copy */
                sp->gathered[d][k] = gathered;
            } else { /* the device made its own copy */
                if (part->data == gathered)
                    part->data = NULL;
                free(gathered);
            }
            MOE_TRY(st);
        }
    return MOE_OK;
}

static void release_split(moe_model *m, moe_layer *L) {
    moe_expert_split *sp = L->split;
    for (int d = 0; sp && d < m->n_dev; d++)
        for (int k = 0; k < 3; k++) {
            moe_weight *part = &sp->part[d][k];
            if (part->dev && m->dev[d].ops->unbind_weight)
                m->dev[d].ops->unbind_weight(part);
            free(sp->gathered[d][k]);
        }
    free(sp);
    L->split = NULL;
}

static moe_status resolve(resolver *r) {
    moe_model *m = r->m;
    MOE_FAIL_IF(r->p->n_cpu_moe < 0, r->err, MOE_ERR_USAGE,
                "option --n-cpu-moe: %d is negative", r->p->n_cpu_moe);
    MOE_TRY(compile_overrides(r));
    MOE_TRY(offload_devices(r));
    if (r->p->n_gpu_layers != 0 && !r->n_offload)
        MOE_WARN("-ngl %d: no offload device (no GPU found, none named with -dev): every layer "
                 "stays on the CPU; -dev CPU1 splits between the CPU devices",
                 r->p->n_gpu_layers);
    place_layers(r);
    MOE_TRY(visit(m, place_one, r));
    for (int64_t il = 0; il < m->hp.n_layer; il++) {
        const moe_layer *L = &m->layers[il];
        m->dev_used |= 1u << m->layer_dev[il];
        MOE_TRY(check_together(m, il, &L->gate_exps, &L->up_exps, &L->down_exps, "routed expert",
                               "ffn_.*_exps", r->err));
        MOE_TRY(check_together(m, il, &L->ffn_gate, &L->ffn_up, &L->ffn_down, "dense FFN",
                               "ffn_(gate|up|down)\\.", r->err));
        MOE_TRY(check_together(m, il, &L->gate_shexp, &L->up_shexp, &L->down_shexp,
                               "shared expert", "ffn_.*_shexp", r->err));
    }
    for (int64_t il = 0; il < m->hp.n_layer; il++)
        MOE_TRY(make_split(r, il));
    MOE_TRY(visit(m, check_one, r));
    m->bound = true;
    MOE_TRY(visit(m, bind_one, r));
    for (int64_t il = 0; il < m->hp.n_layer; il++)
        MOE_TRY(bind_split(r, il));
    return MOE_OK;
}

moe_status moe_placement_apply(moe_model *m, const moe_model_params *params, moe_err *err) {
    m->dev = calloc(MOE_MAX_DEVICES, sizeof *m->dev);
    m->layer_dev = calloc((size_t)(m->hp.n_layer > 0 ? m->hp.n_layer : 1), sizeof *m->layer_dev);
    MOE_FAIL_IF(!m->dev || !m->layer_dev, err, MOE_ERR_NOMEM, "out of memory");
    m->n_dev = moe_devices_discover(m->dev, MOE_MAX_DEVICES);
    moe_placement_plan plan;
    moe_status st = moe_placement_plan_make(m, params, &plan, err);
    if (st != MOE_OK) {
        moe_placement_plan_free(&plan);
        return st;
    }
    resolver r = {.m = m, .p = &plan.params, .err = err};
    const int64_t E = m->hp.n_expert > 0 ? m->hp.n_expert : 1;
    r.assign = calloc((size_t)((m->hp.n_layer > 0 ? m->hp.n_layer : 1) * 3 * E), 1);
    st = r.assign ? resolve(&r) : moe_fail(err, MOE_ERR_NOMEM, "out of memory");
    if (st == MOE_OK && params->run_time_repack)
        MOE_INFO("-rtr: %" PRId64 " weight tensors (%.2f MiB) multiplied as their interleaved "
                 "twins in batches, kernel level %s%s", r.rtr_weights,
                 (double)r.rtr_bytes / (1024.0 * 1024.0), r.rtr_level ? r.rtr_level : "none",
                 r.rtr_weights ? "" : " (-rtr has kernels for Q4_0 and IQ4_NL weights at the "
                                      "avx2, avx512 and amx levels, Q4_K at avx512 and amx)");
    free_overrides(&r);
    free(r.assign);
    if (st == MOE_OK && plan.args) {
        const char *flag = params->fit ? "--fit" : "--hot-experts";
        MOE_INFO("%s: %s", flag, plan.summary);
        MOE_INFO("%s: the placement as arguments: %s", flag, plan.args);
        m->placement_args = plan.args;
        plan.args = NULL;
    }
    moe_placement_plan_free(&plan);
    return st;
}

static moe_status unbind_one(void *user, moe_weight *w, int64_t il, const char *name) {
    moe_model *m = user;
    (void)il, (void)name;
    const moe_backend_ops *ops = m->dev[w->device].ops;
    if (ops->unbind_weight && w->dev)
        ops->unbind_weight(w);
    return MOE_OK;
}

void moe_placement_release(moe_model *m) {
    for (int64_t il = 0; m->layers && il < m->hp.n_layer; il++)
        release_split(m, &m->layers[il]);
    if (m->bound)
        visit(m, unbind_one, m);
    m->bound = false;
    free(m->dev);
    free(m->layer_dev);
    free(m->placement_args);
    m->dev = NULL;
    m->layer_dev = NULL;
    m->placement_args = NULL;
}

/* ---- reporting ------------------------------------------------------------------------------ */

typedef struct report {
    const moe_model *m;
    FILE *f;
    uint64_t bytes[MOE_MAX_DEVICES];
    const char *find;
    int found;
} report;

static moe_status report_one(void *user, moe_weight *w, int64_t il, const char *name) {
    report *rp = user;
    (void)il;
    const uint64_t b = moe_weight_nbytes(w);
    rp->bytes[w->device] += b;
    fprintf(rp->f, "placement: %-34s %-9s %10.3f MiB -> %s\n", name, moe_type_name(w->type),
            (double)b / 1048576.0, rp->m->dev[w->device].info.name);
    const moe_expert_split *sp = il >= 0 && is_expert_name(name) ? rp->m->layers[il].split : NULL;
    for (int d = 0; sp && d < rp->m->n_dev; d++) {
        const moe_weight *part = &sp->part[d][expert_role(rp->m, il, w)];
        if (d == w->device || !(sp->devs & (1u << d)))
            continue;
        const uint64_t pb = moe_weight_nbytes(part);
        rp->bytes[d] += pb;
        fprintf(rp->f, "placement:   and a copy of %lld of its %lld experts (%.3f MiB) on %s\n",
                (long long)part->ne[2], (long long)w->ne[2], (double)pb / 1048576.0,
                rp->m->dev[d].info.name);
    }
    return MOE_OK;
}

void moe_model_print_placement(const moe_model *m, FILE *f) {
    report rp = {.m = m, .f = f};
    visit((moe_model *)m, report_one, &rp);
    for (int d = 0; d < m->n_dev; d++) {
        if (!(m->dev_used & (1u << d)))
            continue;
        int64_t layers = 0;
        for (int64_t il = 0; il < m->hp.n_layer; il++)
            layers += m->layer_dev[il] == d;
        fprintf(f, "placement: %s: %.2f MiB of weights, %" PRId64 " layer%s' attention and KV "
                "cache\n", m->dev[d].info.name, (double)rp.bytes[d] / 1048576.0, layers,
                layers == 1 ? "" : "s");
    }
}

static moe_status find_one(void *user, moe_weight *w, int64_t il, const char *name) {
    report *rp = user;
    (void)il;
    if (rp->found < 0 && !strcmp(name, rp->find))
        rp->found = w->device;
    return MOE_OK;
}

int moe_model_tensor_device(const moe_model *m, const char *name) {
    report rp = {.m = m, .find = name, .found = -1};
    visit((moe_model *)m, find_one, &rp);
    return rp.found;
}

int moe_model_expert_device(const moe_model *m, int64_t layer, int64_t expert) {
    if (layer < 0 || layer >= m->hp.n_layer || expert < 0 || expert >= m->hp.n_expert)
        return -1;
    const moe_layer *L = &m->layers[layer];
    if (!L->gate_exps.data)
        return -1;
    return L->split ? L->split->dev[expert] : L->gate_exps.device;
}
