#include "formats/quant/quant.h"

#include <stdlib.h>

#include "formats/quant/dequant.h"
#include "formats/quant/interleave.h"
#include "formats/quant/quant_impl.h"

typedef void (*quantize_fn)(const float *, void *, int64_t, int64_t, const float *);

typedef struct quant_entry {
    moe_type type;
    quantize_fn fn;
    bool uses_imatrix;
} quant_entry;

static const quant_entry quantizers[] = {
    {MOE_TYPE_Q4_0, moe_quantize_q4_0, true},     {MOE_TYPE_Q4_1, moe_quantize_q4_1, true},
    {MOE_TYPE_Q5_0, moe_quantize_q5_0, true},     {MOE_TYPE_Q5_1, moe_quantize_q5_1, true},
    {MOE_TYPE_Q8_0, moe_quantize_q8_0, false},    {MOE_TYPE_IQ4_NL, moe_quantize_iq4_nl, true},
    {MOE_TYPE_IQ4_XS, moe_quantize_iq4_xs, true}, {MOE_TYPE_Q2_K, moe_quantize_q2_K, true},
    {MOE_TYPE_Q3_K, moe_quantize_q3_K, true},     {MOE_TYPE_Q4_K, moe_quantize_q4_K, true},
    {MOE_TYPE_Q5_K, moe_quantize_q5_K, true},     {MOE_TYPE_Q6_K, moe_quantize_q6_K, true},
};

static const quant_entry *find_plain(moe_type t) {
    for (size_t i = 0; i < sizeof quantizers / sizeof quantizers[0]; i++)
        if (quantizers[i].type == t)
            return &quantizers[i];
    return NULL;
}

static bool is_float(moe_type t) {
    return t == MOE_TYPE_F32 || t == MOE_TYPE_F16 || t == MOE_TYPE_BF16;
}

bool moe_quant_supported(moe_type t) {
    if (is_float(t) || find_plain(t))
        return true;
    const moe_type_traits *tr = moe_type_get(t);
    return tr && tr->interleave_rows && moe_interleave_supported(t) && find_plain(tr->base);
}

bool moe_quant_uses_imatrix(moe_type t) {
    const moe_type_traits *tr = moe_type_get(t);
    const quant_entry *q = tr ? find_plain(tr->base) : NULL;
    return q && q->uses_imatrix;
}

moe_status moe_quantize_rows(moe_type t, const float *src, void *dst, int64_t nrows,
                             int64_t n_per_row, const float *imatrix, moe_err *err) {
    const moe_type_traits *tr = moe_type_get(t);
    MOE_FAIL_IF(!tr || !moe_quant_supported(t), err, MOE_ERR_USAGE,
                "cannot quantize to type %s", moe_type_name(t));
    uint64_t row;
    MOE_TRY(moe_type_row_size(t, n_per_row, &row, err));
    if (is_float(t)) {
        for (int64_t r = 0; r < nrows; r++)
            tr->from_f32_ref(src + r * n_per_row, (uint8_t *)dst + r * row, n_per_row);
        return MOE_OK;
    }
    const quant_entry *q = find_plain(tr->base);
    if (!tr->interleave_rows) {
        q->fn(src, dst, nrows, n_per_row, imatrix);
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
        q->fn(src + r * n_per_row, group, R, n_per_row, imatrix);
        st = moe_interleave_rows(t, group, (uint8_t *)dst + (uint64_t)r * row, n_per_row, R, err);
    }
    free(group);
    return st;
}
