#include "formats/gguf/gguf_set.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

bool moe_split_path_parse(const char *path, char *prefix, size_t cap, int *no, int *count) {
    /* suffix is exactly "-NNNNN-of-NNNNN.gguf" (20 bytes) */
    size_t len = strlen(path);
    if (len < 21)
        return false;
    const char *s = path + len - 20;
    int a = 0, b = 0;
    for (int i = 0; i < 20; i++) {
        char c = s[i];
        bool digit = (i >= 1 && i <= 5) || (i >= 10 && i <= 14);
        if (digit ? (c < '0' || c > '9') : c != "-00000-of-00000.gguf"[i])
            return false;
        if (digit && i <= 5)
            a = a * 10 + (c - '0');
        else if (digit)
            b = b * 10 + (c - '0');
    }
    if (a < 1 || b < 1 || a > b || len - 20 >= cap)
        return false;
    memcpy(prefix, path, len - 20);
    prefix[len - 20] = '\0';
    *no = a;
    *count = b;
    return true;
}

moe_status moe_split_path(char *buf, size_t cap, const char *prefix, int no, int count,
                          moe_err *err) {
    MOE_FAIL_IF(count < 1 || count > MOE_SPLIT_MAX || no < 1 || no > count, err, MOE_ERR_USAGE,
                "shard %d of %d is out of range (1..%d)", no, count, MOE_SPLIT_MAX);
    int n = snprintf(buf, cap, "%s-%05d-of-%05d.gguf", prefix, no, count);
    MOE_FAIL_IF(n < 0 || (size_t)n >= cap, err, MOE_ERR_USAGE, "shard path too long: %s", prefix);
    return MOE_OK;
}

/* split.* values of a file, or zeros when the keys are absent. */
static moe_status split_keys(const moe_gguf_file *f, int64_t *no, int64_t *count,
                             int64_t *tensors, moe_err *err) {
    *no = 0, *count = 0, *tensors = -1;
    const moe_gguf *g = f->g;
    moe_status st = MOE_OK;
    if (moe_gguf_find_key(g, "split.count") >= 0) {
        st = moe_gguf_get_int(g, "split.count", count, err);
        if (st == MOE_OK)
            st = moe_gguf_get_int(g, "split.no", no, err);
        if (st == MOE_OK && moe_gguf_find_key(g, "split.tensors.count") >= 0)
            st = moe_gguf_get_int(g, "split.tensors.count", tensors, err);
    }
    if (st != MOE_OK)
        moe_err_prefix(err, "%s", f->path);
    return st;
}

static moe_status add_file(moe_gguf_set *s, moe_gguf_file *f, moe_err *err) {
    uint64_t n = s->n_tensors + f->g->n_tensors;
    moe_gguf_set_ref *refs = realloc(s->tensors, (n ? n : 1) * sizeof *refs);
    MOE_FAIL_IF(!refs, err, MOE_ERR_NOMEM, "out of memory");
    s->tensors = refs;
    uint32_t fi = s->n_files;
    s->files[s->n_files++] = f;
    for (uint64_t i = 0; i < f->g->n_tensors; i++) {
        int64_t dup;
        MOE_TRY(moe_strmap_put(&s->names, f->g->tensors[i].name, (int64_t)s->n_tensors, &dup, err));
        if (dup >= 0) {
            const moe_gguf_set_ref *o = &s->tensors[dup];
            return moe_fail(err, MOE_ERR_FORMAT, "tensor '%s' is in both %s and %s",
                            f->g->tensors[i].name, s->files[o->file]->path, f->path);
        }
        s->tensors[s->n_tensors++] = (moe_gguf_set_ref){fi, i};
    }
    return MOE_OK;
}

static moe_status open_shards(moe_gguf_set *s, const char *path, bool use_mmap, moe_err *err) {
    moe_gguf_file *first;
    MOE_TRY(moe_gguf_file_open(path, use_mmap, &first, err));
    int64_t no, count, total;
    moe_status st = split_keys(first, &no, &count, &total, err);
    char prefix[4096];
    int name_no = 0, name_count = 0;
    bool named = moe_split_path_parse(path, prefix, sizeof prefix, &name_no, &name_count);
    if (st == MOE_OK && count > 1 && !named)
        st = moe_fail(err, MOE_ERR_FORMAT,
                      "%s: split.count = %lld but the name is not PREFIX-NNNNN-of-NNNNN.gguf",
                      path, (long long)count);
    if (st == MOE_OK && count == 0 && named)
        count = name_count, no = name_no - 1;
    if (st == MOE_OK && count > 1 && no != 0) {
        char want[4200];
        moe_split_path(want, sizeof want, prefix, 1, (int)count, NULL);
        st = moe_fail(err, MOE_ERR_USAGE, "%s is shard %lld of %lld: open the first shard, %s",
                      path, (long long)no + 1, (long long)count, want);
    }
    if (st == MOE_OK && (count < 0 || count > MOE_SPLIT_MAX || (named && count != name_count)))
        st = moe_fail(err, MOE_ERR_FORMAT, "%s: split.count = %lld does not match its name",
                      path, (long long)count);
    if (count < 1)
        count = 1;
    if (st == MOE_OK) {
        s->files = calloc((size_t)count, sizeof *s->files);
        st = s->files ? add_file(s, first, err) : moe_fail(err, MOE_ERR_NOMEM, "out of memory");
    }
    if (st != MOE_OK || !s->files || s->n_files == 0) {
        if (!s->files || s->n_files == 0)
            moe_gguf_file_close(first);
        return st;
    }
    for (int k = 2; k <= count && st == MOE_OK; k++) {
        char shard[4200];
        moe_gguf_file *f = NULL;
        int64_t kno, kcount, kt;
        st = moe_split_path(shard, sizeof shard, prefix, k, (int)count, err);
        if (st == MOE_OK)
            st = moe_gguf_file_open(shard, use_mmap, &f, err);
        if (st == MOE_OK)
            st = split_keys(f, &kno, &kcount, &kt, err);
        if (st == MOE_OK && (kcount != count || kno != k - 1))
            st = moe_fail(err, MOE_ERR_FORMAT,
                          "%s: split.no/split.count = %lld/%lld, expected %d/%lld", shard,
                          (long long)kno, (long long)kcount, k - 1, (long long)count);
        if (st == MOE_OK)
            st = add_file(s, f, err);
        else
            moe_gguf_file_close(f);
    }
    if (st == MOE_OK && total >= 0 && (uint64_t)total != s->n_tensors)
        st = moe_fail(err, MOE_ERR_FORMAT,
                      "%s: split.tensors.count = %lld but the %lld shards hold %llu tensors", path,
                      (long long)total, (long long)count, (unsigned long long)s->n_tensors);
    return st;
}

moe_status moe_gguf_set_open(const char *path, bool use_mmap, moe_gguf_set **out, moe_err *err) {
    *out = NULL;
    moe_gguf_set *s = calloc(1, sizeof *s);
    MOE_FAIL_IF(!s, err, MOE_ERR_NOMEM, "out of memory");
    moe_status st = open_shards(s, path, use_mmap, err);
    if (st != MOE_OK) {
        moe_gguf_set_close(s);
        return st;
    }
    *out = s;
    return MOE_OK;
}

void moe_gguf_set_close(moe_gguf_set *s) {
    if (!s)
        return;
    for (uint32_t i = 0; i < s->n_files; i++)
        moe_gguf_file_close(s->files[i]);
    moe_strmap_free(&s->names);
    free(s->files);
    free(s->tensors);
    free(s);
}

const moe_gguf_tensor *moe_gguf_set_tensor(const moe_gguf_set *s, uint64_t i,
                                           const moe_gguf_file **file) {
    const moe_gguf_set_ref *r = &s->tensors[i];
    if (file)
        *file = s->files[r->file];
    return &s->files[r->file]->g->tensors[r->index];
}

int64_t moe_gguf_set_find(const moe_gguf_set *s, const char *name) {
    return moe_strmap_get(&s->names, name);
}
