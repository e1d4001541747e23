#include "convert/source.h"

#include <stdlib.h>
#include <string.h>

#include "formats/base/log.h"
#include "formats/base/tempfile.h"
#include "formats/model/arch.h"

static bool has_split_experts(const moe_gguf *g) {
    moe_split_name sn;
    for (uint64_t i = 0; i < g->n_tensors; i++)
        if (moe_tensor_name_parse_split(g->tensors[i].name, &sn))
            return true;
    return false;
}

/* The legacy path: the input as a set (repack's planner takes one) and the
 * stacked model repack would write, as a tensor table for the policy and the
 * writer. */
static moe_status open_legacy(moe_qsource *s, moe_err *err) {
    MOE_TRY(moe_gguf_set_open(s->path, true, &s->set, err));
    if (moe_repack_plan_build(s->set, NULL, &s->plan, err) != MOE_OK) {
        /* the planner names the tensor; the user also needs the file */
        moe_err_prefix(err, "%s", s->path);
        return err->code;
    }
    const moe_repack_plan *pl = &s->plan;
    s->view = calloc(pl->n_tensors ? pl->n_tensors : 1, sizeof *s->view);
    MOE_FAIL_IF(!s->view, err, MOE_ERR_NOMEM, "out of memory");
    for (uint64_t i = 0; i < pl->n_tensors; i++) {
        moe_repack_tensor *rt = &s->plan.tensors[i];
        s->view[i] = (moe_gguf_tensor){.name = rt->name, .n_dims = rt->n_dims, .type = rt->type,
                                       .nbytes = rt->nbytes};
        memcpy(s->view[i].ne, rt->ne, sizeof rt->ne);
    }
    s->meta = s->set->files[0]->g;
    s->tensors = s->view;
    s->n_tensors = pl->n_tensors;
    s->legacy = true;
    s->n_stacked = pl->n_stacked;
    s->n_expert_inputs = pl->n_expert_inputs;
    MOE_INFO("%s is a legacy split-expert file: stacking its %llu per-expert tensors into %llu "
             "on the fly, as moe-repack would",
             s->path, (unsigned long long)s->n_expert_inputs, (unsigned long long)s->n_stacked);
    return MOE_OK;
}

moe_status moe_qsource_open(const char *path, moe_qsource *s, moe_err *err) {
    memset(s, 0, sizeof *s);
    s->path = path;
    moe_status st = moe_gguf_file_open(path, true, &s->file, err);
    if (st == MOE_OK && !has_split_experts(s->file->g)) {
        s->meta = s->file->g;
        s->tensors = s->file->g->tensors;
        s->n_tensors = s->file->g->n_tensors;
        return MOE_OK;
    }
    moe_gguf_file_close(s->file);
    s->file = NULL;
    if (st == MOE_OK)
        st = open_legacy(s, err);
    if (st != MOE_OK)
        moe_qsource_close(s);
    return st;
}

void moe_qsource_close(moe_qsource *s) {
    if (!s)
        return;
    moe_gguf_file_close(s->file);
    moe_repack_plan_free(&s->plan);
    moe_gguf_set_close(s->set);
    free(s->view);
    free(s->scratch);
    memset(s, 0, sizeof *s);
}

int64_t moe_qsource_find(const moe_qsource *s, const char *name) {
    if (!s->legacy)
        return moe_gguf_find_tensor(s->file->g, name);
    /* a few thousand tensors at most, looked up once per adapter tensor */
    for (uint64_t i = 0; i < s->n_tensors; i++)
        if (!strcmp(s->tensors[i].name, name))
            return (int64_t)i;
    return -1;
}

bool moe_qsource_drops_key(const moe_qsource *s, const char *key) {
    return s->legacy && !strncmp(key, "split.", 6);
}

/* The file holding input tensor src of a legacy source, its index there and
 * the absolute offset of its bytes. */
static const moe_gguf_tensor *input_tensor(const moe_qsource *s, uint64_t src,
                                           const moe_gguf_file **f, uint64_t *at) {
    const moe_gguf_tensor *t = moe_gguf_set_tensor(s->set, src, f);
    *at = (*f)->g->data_offset + t->offset;
    return t;
}

moe_status moe_qsource_check(moe_qsource *s, uint64_t i, moe_err *err) {
    if (!s->legacy)
        return moe_gguf_file_check_tensor(s->file, i, moe_gguf_file_tensor_data(s->file, i), err);
    /* with the planner's default options every piece is one whole input
     * tensor, so each is hashed exactly once */
    const moe_repack_tensor *rt = &s->plan.tensors[i];
    for (uint64_t k = 0; k < rt->n_pieces; k++) {
        const moe_gguf_file *f;
        uint64_t at;
        input_tensor(s, rt->pieces[k].src, &f, &at);
        uint64_t idx = s->set->tensors[rt->pieces[k].src].index;
        MOE_TRY(moe_gguf_file_check_tensor(f, idx, f->map + at, err));
    }
    return MOE_OK;
}

moe_status moe_qsource_bytes(moe_qsource *s, uint64_t i, uint64_t off, uint64_t len,
                             const uint8_t **p, moe_err *err) {
    if (!s->legacy) {
        *p = moe_gguf_file_tensor_data(s->file, i) + off;
        return MOE_OK;
    }
    const moe_repack_tensor *rt = &s->plan.tensors[i];
    uint8_t *dst = NULL;
    for (uint64_t k = 0, pos = 0; k < rt->n_pieces && len > 0; pos += rt->pieces[k].len, k++) {
        const moe_repack_piece *pc = &rt->pieces[k];
        if (off >= pos + pc->len)
            continue;
        const moe_gguf_file *f;
        uint64_t at, skip = off - pos, take = pc->len - skip < len ? pc->len - skip : len;
        input_tensor(s, pc->src, &f, &at);
        const uint8_t *from = f->map + at + pc->src_offset + skip;
        if (!dst && take == len) { /* one piece: straight from the mapping */
            *p = from;
            return MOE_OK;
        }
        if (!dst) { /* rows of several experts, e.g. a stacked bias [F, E] */
            if (s->scratch_cap < len) {
                uint8_t *nb = realloc(s->scratch, (size_t)len);
                MOE_FAIL_IF(!nb, err, MOE_ERR_NOMEM, "out of memory");
                s->scratch = nb;
                s->scratch_cap = len;
            }
            dst = s->scratch;
            *p = dst;
        }
        memcpy(dst, from, (size_t)take);
        dst += take;
        off += take;
        len -= take;
    }
    MOE_FAIL_IF(len > 0, err, MOE_ERR_INTERNAL, "tensor '%s': read past its pieces", rt->name);
    return MOE_OK;
}

moe_status moe_qsource_copy(moe_qsource *s, uint64_t i, moe_gguf_writer *w, moe_err *err) {
    if (!s->legacy)
        return moe_gguf_writer_write(w, moe_gguf_file_tensor_data(s->file, i),
                                     (size_t)s->tensors[i].nbytes, err);
    const moe_repack_tensor *rt = &s->plan.tensors[i];
    for (uint64_t k = 0; k < rt->n_pieces; k++) {
        const moe_gguf_file *f;
        uint64_t at;
        input_tensor(s, rt->pieces[k].src, &f, &at);
        MOE_TRY(moe_gguf_writer_write(w, f->map + at + rt->pieces[k].src_offset,
                                      (size_t)rt->pieces[k].len, err));
    }
    return MOE_OK;
}

void moe_qsource_release(const moe_qsource *s, uint64_t i) {
    if (!s->legacy) {
        const moe_gguf_tensor *t = &s->tensors[i];
        moe_gguf_file_release(s->file, s->file->g->data_offset + t->offset, t->nbytes);
        return;
    }
    const moe_repack_tensor *rt = &s->plan.tensors[i];
    for (uint64_t k = 0; k < rt->n_pieces; k++) {
        const moe_gguf_file *f;
        uint64_t at;
        input_tensor(s, rt->pieces[k].src, &f, &at);
        moe_gguf_file_release(f, at + rt->pieces[k].src_offset, rt->pieces[k].len);
    }
}

const char *moe_qsource_input_at(const moe_qsource *s, const char *path) {
    if (!s->legacy)
        return moe_path_is_open_file(path, s->file->fd) ? s->file->path : NULL;
    for (uint32_t k = 0; k < s->set->n_files; k++)
        if (moe_path_is_open_file(path, s->set->files[k]->fd))
            return s->set->files[k]->path;
    return NULL;
}
