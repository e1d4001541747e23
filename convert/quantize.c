#include "convert/quantize.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "convert/imatrix.h"
#include "convert/source.h"
#include "formats/gguf/gguf.h"
#include "formats/base/log.h"
#include "formats/quant/quant.h"
#include "formats/base/tempfile.h"
#include "formats/base/clock.h"
#include "formats/base/progress.h"

/* f32 values converted per step: bounds memory to ~4 x 64 MB whatever the model */
enum { CHUNK_VALUES = 16 << 20 };

typedef struct qjob {
    const moe_quantize_opts *o;
    moe_qsource in;
    moe_imatrix *im;
    moe_policy policy;
    moe_quantize_report *rep;
    moe_err *err;
    float *f32, *check;
    /* Converted bytes, double-buffered: while one chunk is converted into
     * out[out_cur], the previous chunk's bytes (pending, pending_bytes) are
     * written by one of the converting threads. */
    uint8_t *out[2];
    int out_cur;
    const uint8_t *pending;
    size_t pending_bytes;
    double start;
    moe_progress progress;
    uint64_t done;
} qjob;

static bool is_float_type(moe_type t) {
    return t == MOE_TYPE_F32 || t == MOE_TYPE_F16 || t == MOE_TYPE_BF16;
}

/* ---- planning ----------------------------------------------------------------------- */

static moe_status check_imatrix(qjob *j, const moe_gguf_tensor *t, moe_quantize_tensor *qt) {
    const moe_imatrix_entry *e = j->im ? moe_imatrix_find(j->im, t->name) : NULL;
    if (!e || !moe_quant_uses_imatrix(qt->choice.plain))
        return MOE_OK;
    int64_t want = t->ne[0] * t->ne[2];
    if (e->n != want) {
        /* llama-quantize exempts token_embd (computed on a different path) */
        MOE_FAIL_IF(strcmp(t->name, "token_embd.weight") != 0, j->err, MOE_ERR_FORMAT,
                    "%s: imatrix entry '%s' has %lld values, expected %lld (ne0 x experts): was "
                    "it computed for another model or layout?",
                    j->im->path, t->name, (long long)e->n, (long long)want);
        return MOE_OK;
    }
    qt->used_imatrix = true;
    return MOE_OK;
}

static moe_status plan(qjob *j) {
    moe_quantize_report *rep = j->rep;
    uint64_t n_tensors = j->in.n_tensors;
    rep->tensors = calloc(n_tensors ? n_tensors : 1, sizeof *rep->tensors);
    MOE_FAIL_IF(!rep->tensors, j->err, MOE_ERR_NOMEM, "out of memory");
    rep->n_tensors = n_tensors;
    for (uint64_t i = 0; i < n_tensors; i++) {
        const moe_gguf_tensor *t = &j->in.tensors[i];
        moe_quantize_tensor *qt = &rep->tensors[i];
        snprintf(qt->name, sizeof qt->name, "%s", t->name);
        qt->src_type = t->type;
        MOE_TRY(moe_policy_choose(&j->policy, t, &qt->choice, j->err));
        if (t->nbytes == 0) /* no elements (a zero dimension): nothing to convert, it stays as
                               the reader and moe-repack take it */
            qt->choice = (moe_tensor_choice){.type = t->type, .plain = t->type,
                                             .reason = MOE_REASON_KEEP,
                                             .note = "no elements: kept as it is"};
        qt->converted = qt->choice.type != t->type;
        qt->bytes_in = t->nbytes;
        MOE_TRY(moe_type_tensor_size(qt->choice.type, t->ne, &qt->bytes_out, j->err));
        rep->bytes_in += t->nbytes;
        rep->bytes_out += qt->bytes_out;
        rep->n_fallback += qt->choice.fallback;
        rep->n_interleaved += qt->choice.interleaved;
        if (qt->choice.fallback)
            MOE_WARN("%s: %lld columns do not fit the chosen type's blocks: falling back to %s",
                     t->name, (long long)t->ne[0], moe_type_name(qt->choice.type));
        if (qt->choice.note)
            MOE_WARN("%s: %s", t->name, qt->choice.note);
        if (!qt->converted)
            continue;
        rep->n_converted++;
        const moe_type_traits *src = moe_type_get(t->type);
        MOE_FAIL_IF(!src->to_f32, j->err, MOE_ERR_UNSUPPORTED,
                    "tensor '%s' is %s, which this build cannot dequantize", t->name, src->name);
        MOE_FAIL_IF(!moe_quant_supported(qt->choice.type), j->err, MOE_ERR_UNSUPPORTED,
                    "tensor '%s': cannot quantize to %s", t->name,
                    moe_type_name(qt->choice.type));
        rep->n_requantized += !is_float_type(t->type);
        MOE_TRY(check_imatrix(j, t, qt));
    }
    return MOE_OK;
}

/* ---- metadata ------------------------------------------------------------------------ */

static moe_status write_metadata(qjob *j, moe_gguf_writer *w) {
    const moe_gguf *g = j->in.meta;
    for (uint64_t k = 0; k < g->n_kv; k++) {
        const char *key = g->kv[k].key;
        if (strcmp(key, "general.file_type") && strcmp(key, "general.quantization_version") &&
            strncmp(key, "quantize.imatrix.", 17) && !moe_qsource_drops_key(&j->in, key))
            MOE_TRY(moe_gguf_writer_copy_kv(w, &g->kv[k], j->err));
    }
    MOE_TRY(moe_gguf_writer_set_u32(w, "general.quantization_version", 2, j->err));
    MOE_TRY(moe_gguf_writer_set_u32(w, "general.file_type", (uint32_t)j->o->choice.ftype, j->err));
    if (j->im) {
        MOE_TRY(moe_gguf_writer_set_str(w, "quantize.imatrix.file", j->im->path, j->err));
        if (j->im->dataset)
            MOE_TRY(moe_gguf_writer_set_str(w, "quantize.imatrix.dataset", j->im->dataset, j->err));
        MOE_TRY(moe_gguf_writer_set_i32(w, "quantize.imatrix.entries_count",
                                        (int32_t)j->im->n_entries, j->err));
        if (j->im->chunks >= 0)
            MOE_TRY(moe_gguf_writer_set_i32(w, "quantize.imatrix.chunks_count",
                                            (int32_t)j->im->chunks, j->err));
    }
    for (uint64_t i = 0; i < j->in.n_tensors; i++) {
        const moe_gguf_tensor *t = &j->in.tensors[i];
        MOE_TRY(moe_gguf_writer_add_tensor(w, t->name, j->rep->tensors[i].choice.type, t->n_dims,
                                           t->ne, j->err));
    }
    return MOE_OK;
}

/* ---- conversion ----------------------------------------------------------------------- */

enum { MAX_THREADS = 256, MAX_PIECES = 64 };

typedef struct chunk_work {
    moe_type src_type, dst_type;
    const uint8_t *src;
    uint8_t *dst;
    float *f32, *check;
    int64_t ne0, rows, step;
    uint64_t src_row, dst_row;
    const float *imatrix;
    bool stats;
} chunk_work;

/* Rows [g0*step, g1*step) of a chunk: dequantize, quantize, optionally measure. */
static moe_status convert_rows(const chunk_work *cw, int64_t g0, int64_t g1, double *err2,
                               double *ref2, moe_err *err) {
    int64_t r0 = g0 * cw->step, nr = (g1 - g0) * cw->step;
    if (nr <= 0)
        return MOE_OK;
    float *x = cw->f32 + r0 * cw->ne0;
    uint8_t *q = cw->dst + (uint64_t)r0 * cw->dst_row;
    MOE_TRY(moe_dequantize_rows(cw->src_type, cw->src + (uint64_t)r0 * cw->src_row, x, cw->ne0, nr,
                                err));
    MOE_TRY(moe_quantize_rows(cw->dst_type, x, q, nr, cw->ne0, cw->imatrix, err));
    if (cw->stats) {
        float *y = cw->check + r0 * cw->ne0;
        MOE_TRY(moe_dequantize_rows(cw->dst_type, q, y, cw->ne0, nr, err));
        for (int64_t k = 0; k < nr * cw->ne0; k++) {
            double d = (double)y[k] - (double)x[k];
            *err2 += d * d;
            *ref2 += (double)x[k] * (double)x[k];
        }
    }
    return MOE_OK;
}

/* One chunk of rows on up to o->threads threads, while the first free thread
 * writes the previous chunk's bytes. The rows go out in up to MAX_PIECES
 * pieces, taken by whichever thread is free, so a slow stretch of rows or the
 * write does not leave the other threads waiting. Every row is quantized on
 * its own and the error sums are added piece by piece in order, so neither
 * the bytes nor the --stats figures depend on the thread count. */
static moe_status convert_chunk(qjob *j, moe_gguf_writer *w, const chunk_work *cw, double *err2,
                                double *ref2) {
    const int64_t groups = cw->rows / cw->step;
    const int np = groups < MAX_PIECES ? (int)groups : MAX_PIECES;
    int nth = j->o->threads < 1 ? 1 : j->o->threads > MAX_THREADS ? MAX_THREADS : j->o->threads;
    if (nth > np)
        nth = np;
    moe_status st[MAX_PIECES], wst = MOE_OK;
    moe_err errs[MAX_PIECES], werr = {0};
    double e2[MAX_PIECES] = {0}, r2[MAX_PIECES] = {0};
#pragma omp parallel num_threads(nth)
    {
#pragma omp single nowait
        if (j->pending_bytes)
            wst = moe_gguf_writer_write(w, j->pending, j->pending_bytes, &werr);
#pragma omp for schedule(dynamic, 1)
        for (int k = 0; k < np; k++)
            st[k] = convert_rows(cw, groups * k / np, groups * (k + 1) / np, &e2[k], &r2[k],
                                 &errs[k]);
    }
    if (wst != MOE_OK) {
        *j->err = werr;
        return wst;
    }
    j->pending_bytes = 0;
    for (int k = 0; k < np; k++) {
        if (st[k] != MOE_OK) {
            *j->err = errs[k];
            return st[k];
        }
        *err2 += e2[k];
        *ref2 += r2[k];
    }
    return MOE_OK;
}

/* Writes the last converted chunk, if one is waiting. */
static moe_status flush_pending(qjob *j, moe_gguf_writer *w) {
    if (!j->pending_bytes)
        return MOE_OK;
    MOE_TRY(moe_gguf_writer_write(w, j->pending, j->pending_bytes, j->err));
    j->pending_bytes = 0;
    return MOE_OK;
}

static int64_t rows_step(moe_type a, moe_type b) {
    int ra = moe_type_get(a)->interleave_rows, rb = moe_type_get(b)->interleave_rows;
    ra = ra ? ra : 1;
    rb = rb ? rb : 1;
    return ra > rb ? ra : rb; /* powers of two: the larger is a multiple of the other */
}

static bool slice_is_zero(const float *v, int64_t n) {
    for (int64_t k = 0; k < n; k++)
        if (v[k] != 0.0f)
            return false;
    return true;
}

static moe_status convert_tensor(qjob *j, moe_gguf_writer *w, uint64_t ti) {
    const moe_gguf_tensor *t = &j->in.tensors[ti];
    moe_quantize_tensor *qt = &j->rep->tensors[ti];
    const moe_imatrix_entry *ie = qt->used_imatrix ? moe_imatrix_find(j->im, t->name) : NULL;
    chunk_work cw = {.src_type = t->type, .dst_type = qt->choice.type, .ne0 = t->ne[0],
                     .f32 = j->f32, .check = j->check, .stats = j->o->stats,
                     .step = rows_step(t->type, qt->choice.type)};
    MOE_TRY(moe_type_row_size(t->type, t->ne[0], &cw.src_row, j->err));
    MOE_TRY(moe_type_row_size(cw.dst_type, t->ne[0], &cw.dst_row, j->err));
    int64_t per_mat = t->ne[1], n_mat = t->ne[2] * t->ne[3];
    MOE_FAIL_IF(per_mat % cw.step != 0, j->err, MOE_ERR_FORMAT,
                "tensor '%s': %lld rows are not a multiple of %lld interleaved rows", t->name,
                (long long)per_mat, (long long)cw.step);
    int64_t chunk = (CHUNK_VALUES / t->ne[0]) / cw.step * cw.step;
    if (chunk < cw.step)
        chunk = cw.step;
    double err2 = 0, ref2 = 0;
    for (int64_t m = 0; m < n_mat; m++) {
        /* an expert's rows share its slice of the importance matrix; an expert
         * the calibration never routed to has an all-zero slice, which would
         * give the searches no weight at all (NaN scales): quantize it plainly */
        cw.imatrix = ie ? ie->values + (m % t->ne[2]) * t->ne[0] : NULL;
        if (cw.imatrix && slice_is_zero(cw.imatrix, t->ne[0])) {
            MOE_WARN("%s: expert %lld has no importance data: quantized without it", t->name,
                     (long long)(m % t->ne[2]));
            cw.imatrix = NULL;
        }
        for (int64_t r = 0; r < per_mat; r += chunk) {
            cw.rows = per_mat - r < chunk ? per_mat - r : chunk;
            uint64_t first = (uint64_t)(m * per_mat + r);
            MOE_TRY(moe_qsource_bytes(&j->in, ti, first * cw.src_row,
                                      (uint64_t)cw.rows * cw.src_row, &cw.src, j->err));
            cw.dst = j->out[j->out_cur];
            MOE_TRY(convert_chunk(j, w, &cw, &err2, &ref2));
            j->pending = cw.dst;
            j->pending_bytes = (size_t)((uint64_t)cw.rows * cw.dst_row);
            j->out_cur ^= 1;
            j->done += (uint64_t)cw.rows * cw.src_row;
            moe_progress_update(&j->progress, j->done);
        }
    }
    uint64_t n = (uint64_t)(t->ne[0] * t->ne[1] * t->ne[2] * t->ne[3]);
    qt->rms_error = n ? sqrt(err2 / (double)n) : 0.0;
    qt->rms_ref = n ? sqrt(ref2 / (double)n) : 0.0;
    return MOE_OK;
}

/* ---- driver ----------------------------------------------------------------------------- */

static moe_status alloc_buffers(qjob *j) {
    uint64_t values = 0, out_bytes = 0;
    for (uint64_t i = 0; i < j->rep->n_tensors; i++) {
        const moe_quantize_tensor *qt = &j->rep->tensors[i];
        if (!qt->converted)
            continue;
        const moe_gguf_tensor *t = &j->in.tensors[i];
        int64_t step = rows_step(t->type, qt->choice.type);
        int64_t chunk = (CHUNK_VALUES / t->ne[0]) / step * step;
        chunk = chunk < step ? step : chunk;
        if (chunk > t->ne[1])
            chunk = t->ne[1];
        uint64_t row = 0;
        MOE_TRY(moe_type_row_size(qt->choice.type, t->ne[0], &row, j->err));
        if ((uint64_t)(chunk * t->ne[0]) > values)
            values = (uint64_t)(chunk * t->ne[0]);
        if ((uint64_t)chunk * row > out_bytes)
            out_bytes = (uint64_t)chunk * row;
    }
    j->f32 = malloc((values ? values : 1) * sizeof(float));
    j->check = j->o->stats ? malloc((values ? values : 1) * sizeof(float)) : NULL;
    j->out[0] = malloc(out_bytes ? out_bytes : 1);
    j->out[1] = malloc(out_bytes ? out_bytes : 1);
    MOE_FAIL_IF(!j->f32 || !j->out[0] || !j->out[1] || (j->o->stats && !j->check), j->err,
                MOE_ERR_NOMEM,
                "out of memory for %llu-value conversion buffers", (unsigned long long)values);
    return MOE_OK;
}

static moe_status write_output(qjob *j, const char *out_path) {
    moe_gguf_writer_opts wo = {.overwrite = j->o->overwrite};
    moe_gguf_writer *w;
    const char *input = moe_qsource_input_at(&j->in, out_path);
    MOE_FAIL_IF(input, j->err, MOE_ERR_USAGE, "%s is the input %s: refusing to write over it",
                out_path, input);
    MOE_TRY(moe_gguf_writer_create(out_path, &wo, &w, j->err));
    moe_progress_init(&j->progress, "moe-quantize", j->rep->bytes_in, j->o->progress);
    moe_status st = write_metadata(j, w);
    if (st == MOE_OK)
        st = moe_gguf_writer_begin_data(w, j->err);
    for (uint64_t i = 0; i < j->in.n_tensors && st == MOE_OK; i++) {
        st = moe_qsource_check(&j->in, i, j->err);
        if (st != MOE_OK)
            break;
        if (j->rep->tensors[i].converted) {
            st = convert_tensor(j, w, i);
        } else {
            st = flush_pending(j, w);
            if (st == MOE_OK)
                st = moe_qsource_copy(&j->in, i, w, j->err);
            j->done += j->in.tensors[i].nbytes;
            moe_progress_update(&j->progress, j->done);
        }
        moe_qsource_release(&j->in, i);
    }
    if (st == MOE_OK)
        st = flush_pending(j, w);
    if (st == MOE_OK) {
        const uint64_t *h = moe_gguf_writer_checksums(w);
        for (uint64_t i = 0; i < j->in.n_tensors; i++)
            j->rep->tensors[i].xxh3 = h[i];
        moe_progress_finish(&j->progress, j->done);
        return moe_gguf_writer_finish(w, j->err);
    }
    moe_gguf_writer_abort(w);
    return st;
}

moe_status moe_quantize_file(const char *in_path, const char *out_path,
                             const moe_quantize_opts *opts, moe_quantize_report *rep,
                             moe_err *err) {
    memset(rep, 0, sizeof *rep);
    qjob j = {.o = opts, .rep = rep, .err = err};
    j.start = moe_now_s();
    moe_status st = moe_qsource_open(in_path, &j.in, err);
    if (st == MOE_OK && opts->imatrix_path)
        st = moe_imatrix_load(opts->imatrix_path, &j.im, err);
    if (st == MOE_OK)
        st = moe_policy_init(&j.policy, j.in.meta, j.in.tensors, j.in.n_tensors, &opts->choice,
                             opts->pure, j.im != NULL, opts->tensor_rules, opts->n_tensor_rules,
                             opts->interleave, opts->interleave_pattern, err);
    if (st == MOE_OK) {
        j.policy.output_type = opts->output_type;
        j.policy.token_embd_type = opts->token_embd_type;
        st = plan(&j);
    }
    if (st == MOE_OK && rep->n_requantized)
        MOE_WARN("%llu tensors are already quantized and will be requantized: expect more error "
                 "than quantizing from F32/F16/BF16",
                 (unsigned long long)rep->n_requantized);
    if (st == MOE_OK && !opts->dry_run)
        st = alloc_buffers(&j);
    if (st == MOE_OK && !opts->dry_run)
        st = write_output(&j, out_path);
    free(j.f32);
    free(j.check);
    free(j.out[0]);
    free(j.out[1]);
    moe_policy_free(&j.policy);
    moe_imatrix_free(j.im);
    moe_qsource_close(&j.in);
    rep->seconds = moe_now_s() - j.start;
    if (st != MOE_OK)
        moe_quantize_report_free(rep);
    return st;
}

void moe_quantize_report_free(moe_quantize_report *rep) {
    if (!rep)
        return;
    free(rep->tensors);
    memset(rep, 0, sizeof *rep);
}
