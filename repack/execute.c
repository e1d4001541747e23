/* Executing a repack plan: stream byte ranges from the inputs into one or more
 * GGUF outputs, checking stored input checksums on the way and (optionally)
 * re-reading the outputs, then publish all outputs together. */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <xxhash.h>

#include "formats/base/progress.h"
#include "formats/gguf/cursor.h"
#include "formats/quant/interleave.h"
#include "formats/base/log.h"
#include "formats/base/tempfile.h"
#include "repack/repack.h"
#include "formats/base/clock.h"

enum { COPY_CHUNK = 16 << 20 };

typedef struct job {
    const moe_gguf_set *in;
    const moe_repack_plan *plan;
    const moe_repack_write_opts *opts;
    moe_repack_result *res;
    moe_err *err;
    uint8_t *buf;
    uint8_t *relayout_buf;  /* second buffer for (de)interleaving, allocated on demand */
    size_t relayout_cap;
    XXH3_state_t *in_state; /* hash of the input tensor being copied whole */
    uint64_t done_bytes;
    double start;
    moe_progress progress;
    uint32_t *shard_of;     /* output tensor -> shard */
    uint32_t n_shards;
    moe_output *out;        /* per shard: written, not yet published (fd < 0: none) */
    bool *replaced;         /* shard s replaced an existing file when published */
} job;

/* ---- inputs ------------------------------------------------------------------------- */

/* The stored XXH3 of input tensor i, if its file records checksums. */
static bool stored_hash(const moe_gguf_set *in, uint64_t i, uint64_t *h) {
    const moe_gguf_file *f;
    moe_gguf_set_tensor(in, i, &f);
    int64_t k = moe_gguf_find_key(f->g, MOE_GGUF_XXH3_KEY);
    if (k < 0)
        return false;
    const moe_gguf_kv *kv = &f->g->kv[k];
    if (kv->type != MOE_GGUF_ARRAY || kv->elem_type != MOE_GGUF_U64 ||
        kv->count != f->g->n_tensors)
        return false;
    *h = moe_load_le64(kv->raw + 12 + 8 * in->tensors[i].index);
    return true;
}

static moe_status check_input_hash(job *j, uint64_t src, uint64_t got) {
    uint64_t want;
    if (!stored_hash(j->in, src, &want))
        return MOE_OK;
    const moe_gguf_file *f;
    const moe_gguf_tensor *t = moe_gguf_set_tensor(j->in, src, &f);
    MOE_FAIL_IF(want != got, j->err, MOE_ERR_INTEGRITY,
                "%s: tensor '%s' does not match its stored XXH3 checksum (stored %016llx, read "
                "%016llx): the input is corrupt",
                f->path, t->name, (unsigned long long)want, (unsigned long long)got);
    j->res->n_inputs_verified++;
    return MOE_OK;
}

/* Input tensors that reach the output only in parts (gate/up halves) cannot be
 * hashed while copying; hash those first. */
static moe_status verify_partial_inputs(job *j) {
    uint8_t *whole = calloc(j->in->n_tensors ? j->in->n_tensors : 1, 1);
    MOE_FAIL_IF(!whole, j->err, MOE_ERR_NOMEM, "out of memory");
    for (uint64_t t = 0; t < j->plan->n_tensors; t++) {
        const moe_repack_tensor *rt = &j->plan->tensors[t];
        for (uint64_t k = 0; k < rt->n_pieces; k++) {
            const moe_repack_piece *pc = &rt->pieces[k];
            /* re-laid-out tensors are read in row groups, not piece by piece */
            bool full = pc->src_offset == 0 && rt->type == rt->src_type &&
                        pc->len == moe_gguf_set_tensor(j->in, pc->src, NULL)->nbytes;
            whole[pc->src] |= full ? 1 : 2;
        }
    }
    moe_status st = MOE_OK;
    uint64_t h;
    for (uint64_t i = 0; i < j->in->n_tensors && st == MOE_OK; i++) {
        if (whole[i] != 2 || !stored_hash(j->in, i, &h))
            continue;
        const moe_gguf_file *f;
        const moe_gguf_tensor *t = moe_gguf_set_tensor(j->in, i, &f);
        XXH3_64bits_reset(j->in_state);
        uint64_t base = f->g->data_offset + t->offset;
        for (uint64_t off = 0; off < t->nbytes && st == MOE_OK; off += COPY_CHUNK) {
            size_t n = t->nbytes - off < COPY_CHUNK ? (size_t)(t->nbytes - off) : COPY_CHUNK;
            st = moe_gguf_file_read(f, base + off, j->buf, n, j->err);
            if (st == MOE_OK)
                XXH3_64bits_update(j->in_state, j->buf, n);
        }
        if (st == MOE_OK)
            st = check_input_hash(j, i, XXH3_64bits_digest(j->in_state));
    }
    free(whole);
    return st;
}

/* ---- copying ------------------------------------------------------------------------- */

static moe_status copy_piece(job *j, moe_gguf_writer *w, const moe_repack_piece *pc) {
    const moe_gguf_file *f;
    const moe_gguf_tensor *t = moe_gguf_set_tensor(j->in, pc->src, &f);
    uint64_t stored;
    bool whole = pc->src_offset == 0 && pc->len == t->nbytes && stored_hash(j->in, pc->src, &stored);
    if (whole)
        XXH3_64bits_reset(j->in_state);
    uint64_t base = f->g->data_offset + t->offset + pc->src_offset;
    for (uint64_t off = 0; off < pc->len; off += COPY_CHUNK) {
        size_t n = pc->len - off < COPY_CHUNK ? (size_t)(pc->len - off) : COPY_CHUNK;
        /* from a mapping the bytes go straight to write(): one copy, not three */
        const uint8_t *src = f->map ? f->map + base + off : j->buf;
        if (!f->map)
            MOE_TRY(moe_gguf_file_read(f, base + off, j->buf, n, j->err));
        if (whole)
            XXH3_64bits_update(j->in_state, src, n);
        MOE_TRY(moe_gguf_writer_write(w, src, n, j->err));
        moe_gguf_file_release(f, base + off, n);
        j->done_bytes += n;
        moe_progress_update(&j->progress, j->done_bytes);
    }
    return whole ? check_input_hash(j, pc->src, XXH3_64bits_digest(j->in_state)) : MOE_OK;
}

/* Copies bytes [off, off+len) of the concatenation of t's pieces into buf. */
static moe_status gather(job *j, const moe_repack_tensor *t, uint64_t off, uint64_t len,
                         uint8_t *buf) {
    for (uint64_t k = 0, pos = 0; k < t->n_pieces && len > 0; pos += t->pieces[k].len, k++) {
        const moe_repack_piece *pc = &t->pieces[k];
        if (off >= pos + pc->len)
            continue;
        uint64_t skip = off - pos, take = pc->len - skip < len ? pc->len - skip : len;
        const moe_gguf_file *f;
        const moe_gguf_tensor *src = moe_gguf_set_tensor(j->in, pc->src, &f);
        uint64_t at = f->g->data_offset + src->offset + pc->src_offset + skip;
        MOE_TRY(moe_gguf_file_read(f, at, buf, (size_t)take, j->err));
        moe_gguf_file_release(f, at, take);
        buf += take;
        off += take;
        len -= take;
    }
    return MOE_OK;
}

/* Writes t in its new row layout: groups of R rows are (de)interleaved, which
 * changes byte order inside each group and nothing else. */
static moe_status relayout_tensor(job *j, moe_gguf_writer *w, const moe_repack_tensor *t) {
    bool to_ilv = moe_type_get(t->type)->interleave_rows != 0;
    moe_type ilv = to_ilv ? t->type : t->src_type;
    int64_t R = moe_type_get(ilv)->interleave_rows;
    uint64_t row;
    MOE_TRY(moe_type_row_size(t->src_type, t->ne[0], &row, j->err));
    int64_t rows = (int64_t)(t->nbytes / row);
    int64_t step = (int64_t)(COPY_CHUNK / (row * (uint64_t)R)) * R;
    step = step < R ? R : step;
    size_t need = (size_t)((uint64_t)step * row);
    if (j->relayout_cap < need) {
        uint8_t *nb = realloc(j->relayout_buf, 2 * need);
        MOE_FAIL_IF(!nb, j->err, MOE_ERR_NOMEM, "out of memory");
        j->relayout_buf = nb;
        j->relayout_cap = need;
    }
    uint8_t *in = j->relayout_buf, *out = j->relayout_buf + need;
    for (int64_t r = 0; r < rows; r += step) {
        int64_t nr = rows - r < step ? rows - r : step;
        size_t n = (size_t)((uint64_t)nr * row);
        MOE_TRY(gather(j, t, (uint64_t)r * row, n, in));
        if (to_ilv)
            MOE_TRY(moe_interleave_rows(ilv, in, out, t->ne[0], nr, j->err));
        else
            MOE_TRY(moe_deinterleave_rows(ilv, in, out, t->ne[0], nr, j->err));
        MOE_TRY(moe_gguf_writer_write(w, out, n, j->err));
        j->done_bytes += n;
        moe_progress_update(&j->progress, j->done_bytes);
    }
    return MOE_OK;
}

/* ---- shards ---------------------------------------------------------------------- */

static moe_status assign_shards(job *j) {
    const moe_repack_write_opts *o = j->opts;
    j->shard_of = calloc(j->plan->n_tensors ? j->plan->n_tensors : 1, sizeof *j->shard_of);
    MOE_FAIL_IF(!j->shard_of, j->err, MOE_ERR_NOMEM, "out of memory");
    uint32_t shard = 0;
    uint64_t bytes = 0, count = 0;
    for (uint64_t i = 0; i < j->plan->n_tensors; i++) {
        uint64_t nb = j->plan->tensors[i].nbytes;
        bool over = (o->split_max_bytes && bytes + nb > o->split_max_bytes) ||
                    (o->split_max_tensors && count + 1 > o->split_max_tensors);
        if (over && count > 0) {
            shard++;
            bytes = count = 0;
        }
        j->shard_of[i] = shard;
        bytes += nb;
        count++;
    }
    j->n_shards = shard + 1;
    MOE_FAIL_IF(j->n_shards > MOE_SPLIT_MAX, j->err, MOE_ERR_USAGE,
                "the split limits give %u shards (at most %d)", j->n_shards, MOE_SPLIT_MAX);
    return MOE_OK;
}

static moe_status output_paths(job *j, const char *out_path) {
    moe_repack_result *r = j->res;
    r->n_outputs = j->n_shards;
    r->final_paths = calloc(j->n_shards, sizeof *r->final_paths);
    r->outputs = calloc(j->n_shards, sizeof *r->outputs);
    j->out = calloc(j->n_shards, sizeof *j->out);
    j->replaced = calloc(j->n_shards, sizeof *j->replaced);
    MOE_FAIL_IF(!r->final_paths || !r->outputs || !j->out || !j->replaced, j->err, MOE_ERR_NOMEM,
                "out of memory");
    for (uint32_t s = 0; s < j->n_shards; s++)
        j->out[s].fd = -1;
    bool sharded = j->opts->split_max_bytes || j->opts->split_max_tensors;
    size_t len = strlen(out_path);
    for (uint32_t s = 0; s < j->n_shards; s++) {
        size_t cap = len + 32;
        r->final_paths[s] = malloc(cap);
        MOE_FAIL_IF(!r->final_paths[s], j->err, MOE_ERR_NOMEM, "out of memory");
        if (!sharded) {
            memcpy(r->final_paths[s], out_path, len + 1);
            continue;
        }
        char prefix[4096];
        size_t plen = len > 5 && !strcmp(out_path + len - 5, ".gguf") ? len - 5 : len;
        MOE_FAIL_IF(plen >= sizeof prefix, j->err, MOE_ERR_USAGE, "output path too long");
        memcpy(prefix, out_path, plen);
        prefix[plen] = '\0';
        MOE_TRY(moe_split_path(r->final_paths[s], cap, prefix, (int)s + 1, (int)j->n_shards,
                               j->err));
    }
    return MOE_OK;
}

/* An output may not be one of the inputs, and may only replace a file with
 * --force. */
static moe_status check_outputs(job *j) {
    for (uint32_t s = 0; s < j->n_shards; s++) {
        const char *path = j->res->final_paths[s];
        struct stat so;
        if (stat(path, &so) != 0)
            continue;
        for (uint32_t k = 0; k < j->in->n_files; k++) {
            if (moe_path_is_open_file(path, j->in->files[k]->fd))
                return moe_fail(j->err, MOE_ERR_USAGE, "%s is the input %s: refusing to write "
                                "over it", path, j->in->files[k]->path);
        }
        MOE_FAIL_IF(!j->opts->overwrite, j->err, MOE_ERR_USAGE,
                    "%s already exists (use --force to replace it)", path);
    }
    return MOE_OK;
}

static moe_status write_metadata(job *j, moe_gguf_writer *w, uint32_t shard) {
    const moe_gguf *g = j->in->files[0]->g;
    if (shard == 0) {
        for (uint64_t k = 0; k < g->n_kv; k++)
            if (strncmp(g->kv[k].key, "split.", 6) != 0)
                MOE_TRY(moe_gguf_writer_copy_kv(w, &g->kv[k], j->err));
    } else {
        int64_t a = moe_gguf_find_key(g, "general.alignment");
        if (a >= 0) /* every shard keeps the model's data alignment */
            MOE_TRY(moe_gguf_writer_copy_kv(w, &g->kv[a], j->err));
    }
    if (j->opts->split_max_bytes || j->opts->split_max_tensors) {
        MOE_TRY(moe_gguf_writer_set_u16(w, "split.no", (uint16_t)shard, j->err));
        MOE_TRY(moe_gguf_writer_set_u16(w, "split.count", (uint16_t)j->n_shards, j->err));
        MOE_TRY(moe_gguf_writer_set_i32(w, "split.tensors.count", (int32_t)j->plan->n_tensors,
                                        j->err));
    }
    return MOE_OK;
}

static moe_status write_shard(job *j, uint32_t shard) {
    moe_gguf_writer_opts wo = {.overwrite = true, .named_temp = j->opts->keep_temp};
    moe_gguf_writer *w;
    /* check_outputs() already enforced --force, so the writer itself may replace */
    MOE_TRY(moe_gguf_writer_create(j->res->final_paths[shard], &wo, &w, j->err));
    moe_status st = write_metadata(j, w, shard);
    uint64_t first = UINT64_MAX;
    for (uint64_t i = 0; i < j->plan->n_tensors && st == MOE_OK; i++) {
        if (j->shard_of[i] != shard)
            continue;
        if (first == UINT64_MAX)
            first = i;
        const moe_repack_tensor *t = &j->plan->tensors[i];
        st = moe_gguf_writer_add_tensor(w, t->name, t->type, t->n_dims, t->ne, j->err);
    }
    if (st == MOE_OK)
        st = moe_gguf_writer_begin_data(w, j->err);
    for (uint64_t i = first; i < j->plan->n_tensors && st == MOE_OK; i++) {
        if (j->shard_of[i] != shard)
            continue;
        const moe_repack_tensor *t = &j->plan->tensors[i];
        if (t->type != t->src_type)
            st = relayout_tensor(j, w, t);
        for (uint64_t k = 0; k < t->n_pieces && st == MOE_OK && t->type == t->src_type; k++)
            st = copy_piece(j, w, &t->pieces[k]);
    }
    if (st == MOE_OK) { /* keep the hashes of what we wrote, in plan order */
        const uint64_t *h = moe_gguf_writer_checksums(w);
        for (uint64_t i = 0, n = 0; i < j->plan->n_tensors; i++)
            if (j->shard_of[i] == shard)
                j->res->tensor_xxh3[i] = h[n++];
    }
    if (st != MOE_OK) {
        moe_gguf_writer_abort(w);
        return st;
    }
    return moe_gguf_writer_finish_deferred(w, &j->out[shard], j->err);
}

/* ---- verification and publishing -------------------------------------------------- */

/* Re-reads every output tensor from disk and compares it with the hash of the
 * input bytes it was made of. */
static moe_status verify_outputs(job *j) {
    for (uint32_t s = 0; s < j->n_shards; s++) {
        const char *written = moe_output_reopen_path(&j->out[s]);
        if (!written) { /* a device or FIFO: nothing to read back */
            MOE_WARN("%s: not a regular file: --verify skipped", j->res->final_paths[s]);
            continue;
        }
        moe_gguf_file *f;
        MOE_TRY(moe_gguf_file_open(written, false, &f, j->err));
        moe_gguf_verify_result vr;
        moe_status st = moe_gguf_file_verify(f, true, &vr, j->err);
        uint64_t n = 0;
        for (uint64_t i = 0; i < j->plan->n_tensors && st == MOE_OK; i++) {
            if (j->shard_of[i] != s)
                continue;
            if (n >= f->g->n_tensors || strcmp(f->g->tensors[n].name, j->plan->tensors[i].name) ||
                vr.computed[n] != j->res->tensor_xxh3[i])
                st = moe_fail(j->err, MOE_ERR_INTEGRITY,
                              "%s: tensor '%s' read back differs from the input bytes",
                              j->res->final_paths[s], j->plan->tensors[i].name);
            n++;
            j->res->n_outputs_verified++;
        }
        free(vr.computed);
        moe_gguf_file_close(f);
        MOE_TRY(st);
    }
    return MOE_OK;
}

static moe_status publish(job *j) {
    for (uint32_t s = 0; s < j->n_shards; s++) {
        moe_repack_result *r = j->res;
        if (j->opts->keep_temp) {
            r->outputs[s] = moe_output_release_temp(&j->out[s], j->err); /* now the caller's */
            if (!r->outputs[s])
                return j->err->code;
            continue;
        }
        struct stat sb;
        j->replaced[s] = stat(r->final_paths[s], &sb) == 0;
        moe_status st = moe_output_commit(&j->out[s], j->err);
        if (st != MOE_OK) {
            /* take back the shards this run created; a file that replaced an
             * older one (--force) stays, since the older one is gone */
            for (uint32_t k = 0; k < s; k++)
                if (!j->replaced[k])
                    unlink(r->final_paths[k]);
            return st;
        }
        r->outputs[s] = strdup(r->final_paths[s]);
        MOE_FAIL_IF(!r->outputs[s], j->err, MOE_ERR_NOMEM, "out of memory");
    }
    return MOE_OK;
}

static uint64_t file_bytes(const char *path) {
    struct stat sb;
    return path && stat(path, &sb) == 0 ? (uint64_t)sb.st_size : 0;
}

moe_status moe_repack_write(const moe_gguf_set *in, const moe_repack_plan *plan,
                            const char *out_path, const moe_repack_write_opts *opts,
                            moe_repack_result *res, moe_err *err) {
    static const moe_repack_write_opts defaults = {0};
    memset(res, 0, sizeof *res);
    job j = {.in = in, .plan = plan, .opts = opts ? opts : &defaults, .res = res, .err = err};
    j.start = moe_now_s();
    moe_progress_init(&j.progress, "moe-repack", plan->bytes, j.opts->progress);
    j.buf = malloc(COPY_CHUNK);
    j.in_state = XXH3_createState();
    res->tensor_xxh3 = calloc(plan->n_tensors ? plan->n_tensors : 1, sizeof *res->tensor_xxh3);
    moe_status st = j.buf && j.in_state && res->tensor_xxh3
                        ? MOE_OK
                        : moe_fail(err, MOE_ERR_NOMEM, "out of memory");
    if (st == MOE_OK)
        st = assign_shards(&j);
    if (st == MOE_OK)
        st = output_paths(&j, out_path);
    if (st == MOE_OK)
        st = check_outputs(&j);
    if (st == MOE_OK)
        st = verify_partial_inputs(&j);
    for (uint32_t s = 0; s < j.n_shards && st == MOE_OK; s++)
        st = write_shard(&j, s);
    moe_progress_finish(&j.progress, j.done_bytes);
    if (st == MOE_OK && j.opts->verify)
        st = verify_outputs(&j);
    if (st == MOE_OK)
        st = publish(&j);
    for (uint32_t s = 0; j.out && s < j.n_shards; s++)
        moe_output_abort(&j.out[s]); /* not published: nothing may stay behind */
    for (uint32_t s = 0; st == MOE_OK && s < res->n_outputs; s++)
        res->bytes_written += file_bytes(res->outputs[s]);
    free(j.out);
    free(j.replaced);
    free(j.shard_of);
    free(j.buf);
    free(j.relayout_buf);
    XXH3_freeState(j.in_state);
    res->seconds = moe_now_s() - j.start;
    if (st != MOE_OK)
        moe_repack_result_free(res);
    return st;
}

void moe_repack_result_free(moe_repack_result *res) {
    if (!res)
        return;
    for (uint32_t s = 0; s < res->n_outputs; s++) {
        if (res->outputs)
            free(res->outputs[s]);
        if (res->final_paths)
            free(res->final_paths[s]);
    }
    free(res->outputs);
    free(res->final_paths);
    free(res->tensor_xxh3);
    memset(res, 0, sizeof *res);
}
