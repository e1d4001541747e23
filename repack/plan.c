/* Planning: every output tensor as a list of byte ranges of input tensors.
 *
 * Pass 1 turns the input set into "logical" tensors: whole-tensor copies, and
 * one stacked tensor per complete legacy expert family (blk.N.ffn_up.E.*).
 * Pass 2 applies the gate/up choice (merge, split, reorder halves) by slicing
 * piece lists. Pass 3 orders the result the way llama.cpp writes models when
 * anything changed, and keeps the input order otherwise. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "formats/model/arch.h"
#include "formats/base/checked.h"
#include "formats/quant/interleave.h"
#include "formats/base/regex.h"
#include "repack/repack.h"

typedef struct piece_list {
    moe_repack_piece *p;
    uint64_t n;
    size_t cap;
} piece_list;

typedef struct logical {
    moe_repack_tensor t;  /* pieces owned via list */
    piece_list list;
    int group;            /* 0 top, 1 blocks, 2 output_norm, 3 output */
    int32_t layer;
    uint64_t first_pos;   /* input position of the first constituent */
    bool dropped;         /* consumed by a merge */
} logical;

typedef struct planner {
    const moe_gguf_set *in;
    const moe_repack_opts *opts;
    logical *l;
    uint64_t n;
    size_t cap;
    moe_repack_plan *plan;
    moe_err *err;
} planner;

/* ---- piece lists ---------------------------------------------------------------- */

static moe_status push_piece(piece_list *pl, moe_repack_piece pc, moe_err *err) {
    if (pc.len == 0)
        return MOE_OK;
    if (pl->n > 0) { /* coalesce contiguous ranges of one tensor */
        moe_repack_piece *last = &pl->p[pl->n - 1];
        if (last->src == pc.src && last->src_offset + last->len == pc.src_offset) {
            last->len += pc.len;
            return MOE_OK;
        }
    }
    moe_repack_piece *np = moe_grow(pl->p, &pl->cap, pl->n + 1, 8, sizeof *np);
    MOE_FAIL_IF(!np, err, MOE_ERR_NOMEM, "out of memory");
    pl->p = np;
    pl->p[pl->n++] = pc;
    return MOE_OK;
}

/* Appends the bytes [off, off+len) of the concatenation of src's pieces. */
static moe_status push_slice(piece_list *dst, const piece_list *src, uint64_t off, uint64_t len,
                             moe_err *err) {
    for (uint64_t i = 0, pos = 0; i < src->n && len > 0; pos += src->p[i].len, i++) {
        const moe_repack_piece *pc = &src->p[i];
        if (off >= pos + pc->len)
            continue;
        uint64_t skip = off > pos ? off - pos : 0;
        uint64_t take = pc->len - skip < len ? pc->len - skip : len;
        MOE_TRY(push_piece(dst, (moe_repack_piece){pc->src, pc->src_offset + skip, take}, err));
        off += take;
        len -= take;
    }
    MOE_FAIL_IF(len > 0, err, MOE_ERR_INTERNAL, "slice past the end of a piece list");
    return MOE_OK;
}

/* ---- names -------------------------------------------------------------------------- */

/* "blk.N.BASE.SUFFIX" with BASE and SUFFIX free of dots. */
static bool parse_block_name(const char *name, int32_t *layer, char *base, size_t bcap,
                             char *suffix, size_t scap) {
    int32_t l = moe_tensor_name_layer(name);
    if (l < 0)
        return false;
    const char *b = strchr(name + 4, '.');
    const char *s = b ? strchr(b + 1, '.') : NULL;
    if (!b || !s || strchr(s + 1, '.') || (size_t)(s - b - 1) >= bcap || strlen(s + 1) >= scap)
        return false;
    memcpy(base, b + 1, (size_t)(s - b - 1));
    base[s - b - 1] = '\0';
    strcpy(suffix, s + 1);
    *layer = l;
    return true;
}

static int name_group(const char *name) {
    if (moe_tensor_name_layer(name) >= 0)
        return 1;
    if (!strncmp(name, "output_norm.", 12))
        return 2;
    if (!strncmp(name, "output.", 7))
        return 3;
    return 0;
}

/* ---- logical tensors ---------------------------------------------------------------- */

/* A new zeroed logical tensor, or NULL (error set) when out of memory. May
 * move p->l: re-take pointers into it afterwards. */
static logical *add_logical(planner *p) {
    logical *nl = moe_grow(p->l, &p->cap, p->n + 1, 64, sizeof *nl);
    if (!nl) {
        moe_fail(p->err, MOE_ERR_NOMEM, "out of memory");
        return NULL;
    }
    p->l = nl;
    logical *l = &p->l[p->n++];
    memset(l, 0, sizeof *l);
    return l;
}

static moe_status add_copy(planner *p, uint64_t i) {
    const moe_gguf_tensor *src = moe_gguf_set_tensor(p->in, i, NULL);
    logical *l = add_logical(p);
    if (!l)
        return MOE_ERR_NOMEM;
    snprintf(l->t.name, sizeof l->t.name, "%s", src->name);
    l->t.type = src->type;
    l->t.n_dims = src->n_dims;
    memcpy(l->t.ne, src->ne, sizeof l->t.ne);
    l->t.nbytes = src->nbytes;
    l->t.kind = MOE_REPACK_COPY;
    l->group = name_group(src->name);
    l->layer = moe_tensor_name_layer(src->name);
    l->first_pos = i;
    return push_piece(&l->list, (moe_repack_piece){i, 0, src->nbytes}, p->err);
}

/* Experts 0..E-1 of one family, all present once, one type and shape. */
static moe_status add_stack(planner *p, const moe_split_name *key, const uint64_t *members,
                            uint64_t n_members) {
    int64_t n_expert = p->plan->n_expert;
    const moe_gguf_tensor *t0 = moe_gguf_set_tensor(p->in, members[0], NULL);
    MOE_FAIL_IF(n_expert <= 0, p->err, MOE_ERR_FORMAT,
                "'%s' is a per-expert tensor but the model has no %s.expert_count", t0->name,
                "ARCH");
    uint64_t *by_expert = calloc((size_t)n_expert, sizeof *by_expert);
    MOE_FAIL_IF(!by_expert, p->err, MOE_ERR_NOMEM, "out of memory");
    moe_status st = MOE_OK;
    for (uint64_t k = 0; k < n_members && st == MOE_OK; k++) {
        const moe_gguf_tensor *t = moe_gguf_set_tensor(p->in, members[k], NULL);
        moe_split_name sn;
        moe_tensor_name_parse_split(t->name, &sn);
        if (sn.expert >= n_expert)
            st = moe_fail(p->err, MOE_ERR_FORMAT,
                          "tensor '%s': expert %d is out of range (expert_count = %lld)", t->name,
                          sn.expert, (long long)n_expert);
        else if (t->type != t0->type || t->n_dims != t0->n_dims ||
                 memcmp(t->ne, t0->ne, sizeof t->ne) != 0)
            st = moe_fail(p->err, MOE_ERR_FORMAT,
                          "tensor '%s' (%s [%lld, %lld]) differs in type or shape from '%s' (%s "
                          "[%lld, %lld])",
                          t->name, moe_type_name(t->type), (long long)t->ne[0],
                          (long long)t->ne[1], t0->name, moe_type_name(t0->type),
                          (long long)t0->ne[0], (long long)t0->ne[1]);
        else if (t0->n_dims > 2)
            st = moe_fail(p->err, MOE_ERR_FORMAT, "per-expert tensor '%s' has %u dims (max 2)",
                          t->name, t->n_dims);
        else
            by_expert[sn.expert] = members[k] + 1; /* 0 = missing */
    }
    for (int64_t e = 0; e < n_expert && st == MOE_OK; e++) {
        if (!by_expert[e]) {
            char missing[MOE_GGUF_MAX_NAME];
            moe_tensor_name_split(missing, sizeof missing, key->layer,
                                  moe_expert_family[key->family], (int32_t)e, key->suffix, NULL);
            st = moe_fail(p->err, MOE_ERR_FORMAT,
                          "missing tensor '%s': the model has %lld experts but only %llu '%s' "
                          "tensors of block %d",
                          missing, (long long)n_expert, (unsigned long long)n_members,
                          moe_expert_family[key->family], key->layer);
        }
    }
    logical *l = st == MOE_OK ? add_logical(p) : NULL;
    if (st == MOE_OK && !l)
        st = MOE_ERR_NOMEM;
    if (st == MOE_OK)
        st = moe_tensor_name_stacked(l->t.name, sizeof l->t.name, key->layer,
                                     moe_expert_family[key->family], key->suffix, p->err);
    if (st == MOE_OK && moe_gguf_set_find(p->in, l->t.name) >= 0)
        st = moe_fail(p->err, MOE_ERR_FORMAT, "'%s' exists next to per-expert tensors like '%s'",
                      l->t.name, t0->name);
    for (int64_t e = 0; e < n_expert && st == MOE_OK; e++)
        st = push_piece(&l->list, (moe_repack_piece){by_expert[e] - 1, 0, t0->nbytes}, p->err);
    if (st == MOE_OK) {
        l->t.type = t0->type;
        l->t.n_dims = t0->n_dims + 1;
        for (int d = 0; d < MOE_GGUF_MAX_DIMS; d++)
            l->t.ne[d] = d < (int)t0->n_dims ? t0->ne[d] : 1;
        l->t.ne[t0->n_dims] = n_expert;
        l->t.nbytes = t0->nbytes * (uint64_t)n_expert;
        l->t.kind = MOE_REPACK_STACK;
        l->group = 1;
        l->layer = key->layer;
        l->first_pos = by_expert[0] - 1;
        for (int64_t e = 1; e < n_expert; e++)
            if (by_expert[e] - 1 < l->first_pos)
                l->first_pos = by_expert[e] - 1;
        p->plan->n_stacked++;
        p->plan->n_expert_inputs += (uint64_t)n_expert;
    }
    free(by_expert);
    return st;
}

/* ---- pass 1: copies and stacks ---------------------------------------------------- */

typedef struct split_group {
    moe_split_name key;
    uint64_t *members;
    uint64_t n;
    size_t cap;
} split_group;

static moe_status collect(planner *p) {
    moe_strmap index = {0};
    split_group *groups = NULL;
    uint64_t n_groups = 0, cap_groups = 0;
    char (*keys)[48] = NULL;
    moe_status st = MOE_OK;
    for (uint64_t i = 0; i < p->in->n_tensors && st == MOE_OK; i++) {
        const moe_gguf_tensor *t = moe_gguf_set_tensor(p->in, i, NULL);
        moe_split_name sn;
        if (!moe_tensor_name_parse_split(t->name, &sn)) {
            st = add_copy(p, i);
            continue;
        }
        char key[48];
        snprintf(key, sizeof key, "%d|%d|%s", sn.layer, sn.family, sn.suffix);
        int64_t g = moe_strmap_get(&index, key);
        if (g < 0) {
            if (n_groups == cap_groups) {
                uint64_t cap = cap_groups ? 2 * cap_groups : 64;
                split_group *ng = realloc(groups, cap * sizeof *ng);
                char(*nk)[48] = ng ? realloc(keys, cap * sizeof *nk) : NULL;
                if (ng)
                    groups = ng;
                if (!ng || !nk) {
                    st = moe_fail(p->err, MOE_ERR_NOMEM, "out of memory");
                    break;
                }
                /* the map points into keys: rebuild it after the move */
                keys = nk;
                moe_strmap_free(&index);
                int64_t dummy;
                for (uint64_t k = 0; k < n_groups && st == MOE_OK; k++)
                    st = moe_strmap_put(&index, keys[k], (int64_t)k, &dummy, p->err);
                cap_groups = cap;
            }
            g = (int64_t)n_groups++;
            memset(&groups[g], 0, sizeof groups[g]);
            groups[g].key = sn;
            memcpy(keys[g], key, sizeof key);
            int64_t dummy;
            if (st == MOE_OK)
                st = moe_strmap_put(&index, keys[g], g, &dummy, p->err);
        }
        split_group *sg = &groups[g];
        if (st == MOE_OK) {
            uint64_t *nm = moe_grow(sg->members, &sg->cap, sg->n + 1, 16, sizeof *nm);
            if (!nm)
                st = moe_fail(p->err, MOE_ERR_NOMEM, "out of memory");
            else
                sg->members = nm;
        }
        if (st == MOE_OK)
            sg->members[sg->n++] = i;
    }
    for (uint64_t g = 0; g < n_groups && st == MOE_OK; g++)
        st = add_stack(p, &groups[g].key, groups[g].members, groups[g].n);
    for (uint64_t g = 0; g < n_groups; g++)
        free(groups[g].members);
    free(groups);
    free(keys);
    moe_strmap_free(&index);
    return st;
}

/* ---- pass 2: gate/up ---------------------------------------------------------------- */

/* Bytes of one expert's slice and of half of it (the gate or up rows). */
static moe_status expert_halves(planner *p, const logical *l, uint64_t *slice, uint64_t *half,
                                int64_t *n_expert) {
    const moe_repack_tensor *t = &l->t;
    int rows_dim = t->n_dims == 3 ? 1 : 0; /* weights [D, 2F, E]; biases [2F, E] */
    *n_expert = t->ne[t->n_dims - 1];
    MOE_FAIL_IF(t->n_dims < 2 || *n_expert <= 0 || t->ne[rows_dim] % 2 != 0, p->err,
                MOE_ERR_FORMAT, "'%s' [%lld, %lld, %lld] cannot be split into gate and up halves",
                t->name, (long long)t->ne[0], (long long)t->ne[1], (long long)t->ne[2]);
    *slice = t->nbytes / (uint64_t)*n_expert;
    int64_t half_ne[4] = {t->ne[0], 1, 1, 1};
    if (rows_dim == 1)
        half_ne[1] = t->ne[1] / 2;
    else
        half_ne[0] = t->ne[0] / 2;
    moe_err sub;
    if (moe_type_tensor_size(t->type, half_ne, half, &sub) != MOE_OK || 2 * *half != *slice)
        return moe_fail(p->err, MOE_ERR_FORMAT, "'%s': half an expert is not whole %s blocks",
                        t->name, moe_type_name(t->type));
    return MOE_OK;
}

/* Builds a tensor named like l but with `base`, made of one half of each
 * expert (first_half: the first ne/2 rows of each expert's slice). */
static moe_status add_half(planner *p, uint64_t li, const char *base, bool first_half) {
    uint64_t slice, half;
    int64_t n_expert;
    MOE_TRY(expert_halves(p, &p->l[li], &slice, &half, &n_expert));
    logical *h = add_logical(p);
    if (!h)
        return MOE_ERR_NOMEM;
    const logical *l = &p->l[li]; /* add_logical may have moved the array */
    int32_t layer;
    char old_base[32], suffix[16];
    parse_block_name(l->t.name, &layer, old_base, sizeof old_base, suffix, sizeof suffix);
    snprintf(h->t.name, sizeof h->t.name, "blk.%d.%s.%s", layer, base, suffix);
    h->t.type = l->t.type;
    h->t.n_dims = l->t.n_dims;
    memcpy(h->t.ne, l->t.ne, sizeof h->t.ne);
    h->t.ne[l->t.n_dims == 3 ? 1 : 0] /= 2;
    h->t.nbytes = l->t.nbytes / 2;
    h->t.kind = MOE_REPACK_SPLIT;
    h->group = l->group;
    h->layer = l->layer;
    h->first_pos = l->first_pos;
    for (int64_t e = 0; e < n_expert; e++)
        MOE_TRY(push_slice(&h->list, &l->list, (uint64_t)e * slice + (first_half ? 0 : half), half,
                           p->err));
    return MOE_OK;
}

/* Swaps the halves of each expert in place (up-first input -> gate-first). */
static moe_status reorder_halves(planner *p, logical *l) {
    uint64_t slice, half;
    int64_t n_expert;
    MOE_TRY(expert_halves(p, l, &slice, &half, &n_expert));
    piece_list out = {0};
    moe_status st = MOE_OK;
    for (int64_t e = 0; e < n_expert && st == MOE_OK; e++) {
        st = push_slice(&out, &l->list, (uint64_t)e * slice + half, half, p->err);
        if (st == MOE_OK)
            st = push_slice(&out, &l->list, (uint64_t)e * slice, half, p->err);
    }
    if (st != MOE_OK) {
        free(out.p);
        return st;
    }
    free(l->list.p);
    l->list = out;
    l->t.kind = MOE_REPACK_REORDER;
    return MOE_OK;
}

static int64_t find_logical(const planner *p, const char *name) {
    for (uint64_t i = 0; i < p->n; i++)
        if (!p->l[i].dropped && !strcmp(p->l[i].t.name, name))
            return (int64_t)i;
    return -1;
}

static moe_status merge_pair(planner *p, uint64_t gi, uint64_t ui) {
    const moe_repack_tensor *g = &p->l[gi].t, *u = &p->l[ui].t;
    MOE_FAIL_IF(g->type != u->type || g->n_dims != u->n_dims ||
                    memcmp(g->ne, u->ne, sizeof g->ne) != 0,
                p->err, MOE_ERR_FORMAT, "cannot merge '%s' and '%s': types or shapes differ",
                g->name, u->name);
    int64_t n_expert = g->ne[g->n_dims - 1];
    uint64_t slice = g->nbytes / (uint64_t)n_expert;
    logical *m = add_logical(p);
    if (!m)
        return MOE_ERR_NOMEM;
    logical *lg = &p->l[gi], *lu = &p->l[ui];
    int32_t layer;
    char base[32], suffix[16];
    parse_block_name(lg->t.name, &layer, base, sizeof base, suffix, sizeof suffix);
    snprintf(m->t.name, sizeof m->t.name, "blk.%d.ffn_gate_up_exps.%s", layer, suffix);
    m->t.type = lg->t.type;
    m->t.n_dims = lg->t.n_dims;
    memcpy(m->t.ne, lg->t.ne, sizeof m->t.ne);
    m->t.ne[lg->t.n_dims == 3 ? 1 : 0] *= 2;
    m->t.nbytes = 2 * lg->t.nbytes;
    m->t.kind = MOE_REPACK_MERGE;
    m->group = lg->group;
    m->layer = lg->layer;
    m->first_pos = lg->first_pos < lu->first_pos ? lg->first_pos : lu->first_pos;
    for (int64_t e = 0; e < n_expert; e++) {
        MOE_TRY(push_slice(&m->list, &lg->list, (uint64_t)e * slice, slice, p->err));
        MOE_TRY(push_slice(&m->list, &lu->list, (uint64_t)e * slice, slice, p->err));
    }
    lg->dropped = lu->dropped = true;
    return MOE_OK;
}

static moe_status apply_gate_up(planner *p) {
    uint64_t n = p->n; /* tensors added below are not revisited */
    for (uint64_t i = 0; i < n; i++) {
        int32_t layer;
        char base[32], suffix[16];
        if (p->l[i].dropped || !parse_block_name(p->l[i].t.name, &layer, base, sizeof base, suffix,
                                                 sizeof suffix))
            continue;
        if (!strcmp(base, "ffn_gate_up_exps")) {
            if (p->opts->gate_up == MOE_GATE_UP_SPLIT) {
                bool gate_first = !p->opts->input_up_first;
                MOE_TRY(add_half(p, i, "ffn_gate_exps", gate_first));
                MOE_TRY(add_half(p, i, "ffn_up_exps", !gate_first));
                p->l[i].dropped = true;
                p->plan->n_gate_up++;
            } else if (p->opts->input_up_first) {
                MOE_TRY(reorder_halves(p, &p->l[i]));
                p->plan->n_gate_up++;
            }
        } else if (!strcmp(base, "ffn_gate_exps") && p->opts->gate_up == MOE_GATE_UP_MERGE) {
            char up[MOE_GGUF_MAX_NAME];
            snprintf(up, sizeof up, "blk.%d.ffn_up_exps.%s", layer, suffix);
            int64_t ui = find_logical(p, up);
            MOE_FAIL_IF(ui < 0, p->err, MOE_ERR_FORMAT, "cannot merge '%s': '%s' is missing",
                        p->l[i].t.name, up);
            MOE_TRY(merge_pair(p, i, (uint64_t)ui));
            p->plan->n_gate_up++;
        }
    }
    return MOE_OK;
}

/* ---- pass 3: order and emit ------------------------------------------------------ */

static int cmp_llama_order(const void *a, const void *b) {
    const logical *x = a, *y = b;
    if (x->group != y->group)
        return x->group < y->group ? -1 : 1;
    if (x->layer != y->layer)
        return x->layer < y->layer ? -1 : 1;
    if (x->first_pos != y->first_pos)
        return x->first_pos < y->first_pos ? -1 : 1;
    return strcmp(x->t.name, y->t.name); /* halves of one split: gate before up */
}

static moe_status emit(planner *p) {
    bool changed = false;
    uint64_t kept = 0;
    for (uint64_t i = 0; i < p->n; i++) {
        changed |= p->l[i].dropped || p->l[i].t.kind != MOE_REPACK_COPY;
        kept += !p->l[i].dropped;
    }
    /* An unchanged model keeps its order (quantized files are sorted by name);
     * a re-laid-out one gets llama.cpp's: top-level tensors, blocks in order,
     * output_norm, output. */
    if (changed)
        qsort(p->l, p->n, sizeof *p->l, cmp_llama_order);
    moe_repack_plan *plan = p->plan;
    plan->tensors = calloc(kept ? kept : 1, sizeof *plan->tensors);
    MOE_FAIL_IF(!plan->tensors, p->err, MOE_ERR_NOMEM, "out of memory");
    for (uint64_t i = 0; i < p->n; i++) {
        logical *l = &p->l[i];
        if (l->dropped)
            continue;
        moe_repack_tensor *t = &plan->tensors[plan->n_tensors++];
        *t = l->t;
        t->pieces = l->list.p;
        t->n_pieces = l->list.n;
        l->list.p = NULL; /* moved */
        plan->bytes += t->nbytes;
    }
    return MOE_OK;
}

static int64_t expert_count(const moe_gguf_set *in) {
    const moe_gguf *g = in->files[0]->g;
    const char *arch;
    if (moe_gguf_get_str(g, "general.architecture", &arch, NULL) != MOE_OK)
        return -1;
    char key[96];
    snprintf(key, sizeof key, "%s.expert_count", arch);
    int64_t n;
    return moe_gguf_get_int(g, key, &n, NULL) == MOE_OK ? n : -1;
}

/* ---- pass 4: row interleaving (lossless re-layout of each row group) ------------------ */

static void relayout_one(moe_repack_tensor *t, const moe_repack_opts *o, const moe_regex *re,
                         moe_repack_plan *plan) {
    const moe_type_traits *tr = moe_type_get(t->type);
    if (o->interleave < 0) {
        if (tr->interleave_rows && moe_interleave_supported(t->type)) {
            t->type = tr->base;
            plan->n_relayout++;
        } else if (tr->interleave_rows) {
            t->note = "this interleaved type cannot be converted back yet: kept";
        }
        return;
    }
    moe_type v = moe_interleaved_variant(t->type);
    if (v == t->type || !moe_regex_search(re, t->name))
        return;
    if (!strcmp(t->name, "token_embd.weight")) {
        t->note = "token embeddings are never interleaved (rows are looked up one by one)";
        return;
    }
    if (t->n_dims < 2 || t->ne[1] % moe_type_get(v)->interleave_rows != 0) {
        t->note = "rows are not a multiple of the interleave factor: kept plain";
        return;
    }
    t->type = v;
    plan->n_relayout++;
}

static moe_status apply_relayout(moe_repack_plan *plan, const moe_repack_opts *o, moe_err *err) {
    for (uint64_t i = 0; i < plan->n_tensors; i++)
        plan->tensors[i].src_type = plan->tensors[i].type;
    if (!o->interleave)
        return MOE_OK;
    const char *pat = o->interleave_pattern ? o->interleave_pattern : "_exps\\.";
    moe_regex *re;
    MOE_TRY(moe_regex_compile(pat, "--interleave-pattern", &re, err));
    for (uint64_t i = 0; i < plan->n_tensors; i++)
        relayout_one(&plan->tensors[i], o, re, plan);
    moe_regex_free(re);
    return MOE_OK;
}

moe_status moe_repack_plan_build(const moe_gguf_set *in, const moe_repack_opts *opts,
                                 moe_repack_plan *plan, moe_err *err) {
    static const moe_repack_opts defaults = {0};
    memset(plan, 0, sizeof *plan);
    plan->n_expert = expert_count(in);
    planner p = {.in = in, .opts = opts ? opts : &defaults, .plan = plan, .err = err};
    moe_status st = collect(&p);
    if (st == MOE_OK)
        st = apply_gate_up(&p);
    if (st == MOE_OK)
        st = emit(&p);
    if (st == MOE_OK)
        st = apply_relayout(plan, p.opts, err);
    for (uint64_t i = 0; i < p.n; i++)
        free(p.l[i].list.p);
    free(p.l);
    if (st != MOE_OK)
        moe_repack_plan_free(plan);
    return st;
}

void moe_repack_plan_free(moe_repack_plan *plan) {
    if (!plan)
        return;
    for (uint64_t i = 0; i < plan->n_tensors; i++)
        free(plan->tensors[i].pieces);
    free(plan->tensors);
    memset(plan, 0, sizeof *plan);
}
