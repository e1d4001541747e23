#include "formats/quant/quant.h"

#include <stdlib.h>

#include "formats/quant/interleave.h"

/* The plain type whose quantizer writes t: t itself, or the base of an
 * interleaved type our interleaver handles. NULL when we cannot write t. */
static const moe_type_traits *writer_of(moe_type t) {
    const moe_type_traits *tr = moe_type_get(t);
    if (!tr)
        return NULL;
    if (tr->interleave_rows && !moe_interleave_supported(t))
        return NULL;
    const moe_type_traits *base = moe_type_get(tr->base);
    return base && base->from_f32 ? base : NULL;
}

bool moe_quant_supported(moe_type t) { return writer_of(t) != NULL; }

bool moe_quant_uses_imatrix(moe_type t) {
    const moe_type_traits *w = writer_of(t);
    return w && w->from_f32_imatrix;
}

moe_status moe_quantize_rows(moe_type t, const float *src, void *dst, int64_t nrows,
                             int64_t n_per_row, const float *imatrix, moe_err *err) {
    const moe_type_traits *tr = moe_type_get(t);
    MOE_FAIL_IF(!tr || !moe_quant_supported(t), err, MOE_ERR_USAGE,
                "cannot quantize to type %s", moe_type_name(t));
    uint64_t row;
    MOE_TRY(moe_type_row_size(t, n_per_row, &row, err));
    const moe_type_traits *w = writer_of(t);
    if (!tr->interleave_rows) {
        w->from_f32(src, dst, nrows, n_per_row, imatrix);
        return MOE_OK;
    }
    /* interleaved: quantize one group of R rows plainly, then re-lay it out */
    int64_t R = tr->interleave_rows;
    MOE_FAIL_IF(nrows % R != 0, err, MOE_ERR_USAGE, "%lld rows are not a multiple of %s's %lld",
                (long long)nrows, tr->name, (long long)R);
    uint8_t *group = malloc((size_t)(row * (uint64_t)R));
    MOE_FAIL_IF(!group, err, MOE_ERR_NOMEM, "out of memory");
    moe_status st = MOE_OK;
    for (int64_t r = 0; r < nrows && st == MOE_OK; r += R) {
        w->from_f32(src + r * n_per_row, group, R, n_per_row, imatrix);
        st = moe_interleave_rows(t, group, (uint8_t *)dst + (uint64_t)r * row, n_per_row, R, err);
    }
    free(group);
    return st;
}
