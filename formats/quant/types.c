#include "formats/quant/types.h"

#include <strings.h>

#include "formats/base/checked.h"
#include "formats/quant/dequant.h"
#include "formats/quant/quant_blocks.h"
#include "formats/quant/quant_impl.h"

/* Plain types with a block struct take sizeof(); types we only recognise and
 * size carry their byte counts here (../shared/spec/model.md §1.9) — the only
 * other place block sizes are written down. */
#define PLAIN(id_, name_, blck_, bytes_) \
    [id_] = {.name = name_, .block_size = blck_, .type_size = bytes_, .base = id_}
#define META(id_, name_, blck_, bytes_, meta_) \
    [id_] = {.name = name_, .block_size = blck_, .type_size = bytes_, .row_meta = meta_, .base = id_}
#define ACT(id_, name_, blck_, bytes_, meta_)                                            \
    [id_] = {.name = name_, .block_size = blck_, .type_size = bytes_, .row_meta = meta_, \
             .base = id_, .activation_only = true}
#define ILV(id_, name_, blck_, bytes_, meta_, rows_, base_)                               \
    [id_] = {.name = name_, .block_size = blck_, .type_size = bytes_, .row_meta = meta_, \
             .interleave_rows = rows_, .base = base_}

static const moe_type_traits type_table[MOE_TYPE_ID_LIMIT] = {
    [MOE_TYPE_F32] = {.name = "f32", .block_size = 1, .type_size = sizeof(float),
                      .base = MOE_TYPE_F32, .to_f32 = moe_dequant_f32,
                      .from_f32 = moe_quantize_f32},
    [MOE_TYPE_F16] = {.name = "f16", .block_size = 1, .type_size = sizeof(uint16_t),
                      .base = MOE_TYPE_F16, .to_f32 = moe_dequant_f16,
                      .from_f32 = moe_quantize_f16},
    [MOE_TYPE_BF16] = {.name = "bf16", .block_size = 1, .type_size = sizeof(uint16_t),
                       .base = MOE_TYPE_BF16, .to_f32 = moe_dequant_bf16,
                       .from_f32 = moe_quantize_bf16},
    [MOE_TYPE_Q4_0] = {.name = "q4_0", .block_size = MOE_QK, .type_size = sizeof(block_q4_0),
                       .base = MOE_TYPE_Q4_0, .to_f32 = moe_dequant_q4_0,
        .from_f32 = moe_quantize_q4_0, .from_f32_imatrix = true},
    [MOE_TYPE_Q4_1] = {.name = "q4_1", .block_size = MOE_QK, .type_size = sizeof(block_q4_1),
                       .base = MOE_TYPE_Q4_1, .to_f32 = moe_dequant_q4_1,
        .from_f32 = moe_quantize_q4_1, .from_f32_imatrix = true},
    [MOE_TYPE_Q5_0] = {.name = "q5_0", .block_size = MOE_QK, .type_size = sizeof(block_q5_0),
                       .base = MOE_TYPE_Q5_0, .to_f32 = moe_dequant_q5_0,
        .from_f32 = moe_quantize_q5_0, .from_f32_imatrix = true},
    [MOE_TYPE_Q5_1] = {.name = "q5_1", .block_size = MOE_QK, .type_size = sizeof(block_q5_1),
                       .base = MOE_TYPE_Q5_1, .to_f32 = moe_dequant_q5_1,
        .from_f32 = moe_quantize_q5_1, .from_f32_imatrix = true},
    [MOE_TYPE_Q8_0] = {.name = "q8_0", .block_size = MOE_QK, .type_size = sizeof(block_q8_0),
                       .base = MOE_TYPE_Q8_0, .to_f32 = moe_dequant_q8_0,
        .from_f32 = moe_quantize_q8_0},
    [MOE_TYPE_Q8_1] = {.name = "q8_1", .block_size = MOE_QK, .type_size = sizeof(block_q8_1),
                       .base = MOE_TYPE_Q8_1, .activation_only = true},
    [MOE_TYPE_Q2_K] = {.name = "q2_K", .block_size = MOE_QK_K, .type_size = sizeof(block_q2_K),
                       .base = MOE_TYPE_Q2_K, .to_f32 = moe_dequant_q2_K,
        .from_f32 = moe_quantize_q2_K, .from_f32_imatrix = true},
    [MOE_TYPE_Q3_K] = {.name = "q3_K", .block_size = MOE_QK_K, .type_size = sizeof(block_q3_K),
                       .base = MOE_TYPE_Q3_K, .to_f32 = moe_dequant_q3_K,
        .from_f32 = moe_quantize_q3_K, .from_f32_imatrix = true},
    [MOE_TYPE_Q4_K] = {.name = "q4_K", .block_size = MOE_QK_K, .type_size = sizeof(block_q4_K),
                       .base = MOE_TYPE_Q4_K, .to_f32 = moe_dequant_q4_K,
        .from_f32 = moe_quantize_q4_K, .from_f32_imatrix = true},
    [MOE_TYPE_Q5_K] = {.name = "q5_K", .block_size = MOE_QK_K, .type_size = sizeof(block_q5_K),
                       .base = MOE_TYPE_Q5_K, .to_f32 = moe_dequant_q5_K,
        .from_f32 = moe_quantize_q5_K, .from_f32_imatrix = true},
    [MOE_TYPE_Q6_K] = {.name = "q6_K", .block_size = MOE_QK_K, .type_size = sizeof(block_q6_K),
                       .base = MOE_TYPE_Q6_K, .to_f32 = moe_dequant_q6_K,
        .from_f32 = moe_quantize_q6_K, .from_f32_imatrix = true},
    [MOE_TYPE_Q8_K] = {.name = "q8_K", .block_size = MOE_QK_K, .type_size = sizeof(block_q8_K),
                       .base = MOE_TYPE_Q8_K, .activation_only = true},
    [MOE_TYPE_IQ4_NL] = {.name = "iq4_nl", .block_size = MOE_QK,
                         .type_size = sizeof(block_iq4_nl), .base = MOE_TYPE_IQ4_NL, .to_f32 = moe_dequant_iq4_nl,
        .from_f32 = moe_quantize_iq4_nl, .from_f32_imatrix = true},
    [MOE_TYPE_IQ4_XS] = {.name = "iq4_xs", .block_size = MOE_QK_K,
                         .type_size = sizeof(block_iq4_xs), .base = MOE_TYPE_IQ4_XS, .to_f32 = moe_dequant_iq4_xs,
        .from_f32 = moe_quantize_iq4_xs, .from_f32_imatrix = true},
    PLAIN(MOE_TYPE_IQ2_XXS, "iq2_xxs", 256, 66),
    PLAIN(MOE_TYPE_IQ2_XS, "iq2_xs", 256, 74),
    PLAIN(MOE_TYPE_IQ3_XXS, "iq3_xxs", 256, 98),
    PLAIN(MOE_TYPE_IQ1_S, "iq1_s", 256, 50),
    PLAIN(MOE_TYPE_IQ3_S, "iq3_s", 256, 110),
    PLAIN(MOE_TYPE_IQ2_S, "iq2_s", 256, 82),
    PLAIN(MOE_TYPE_I8, "i8", 1, 1),
    PLAIN(MOE_TYPE_I16, "i16", 1, 2),
    PLAIN(MOE_TYPE_I32, "i32", 1, 4),
    PLAIN(MOE_TYPE_I64, "i64", 1, 8),
    PLAIN(MOE_TYPE_F64, "f64", 1, 8),
    PLAIN(MOE_TYPE_IQ1_M, "iq1_m", 256, 56),
    ILV(MOE_TYPE_Q4_0_4_4, "q4_0_4x4", 32, 18, 0, 4, MOE_TYPE_Q4_0),
    ILV(MOE_TYPE_Q4_0_4_8, "q4_0_4x8", 32, 18, 0, 4, MOE_TYPE_Q4_0),
    ILV(MOE_TYPE_Q4_0_8_8, "q4_0_8x8", 32, 18, 0, 8, MOE_TYPE_Q4_0),
    PLAIN(MOE_TYPE_TQ1_0, "tq1_0", 256, 54),
    PLAIN(MOE_TYPE_TQ2_0, "tq2_0", 256, 66),
    PLAIN(MOE_TYPE_MXFP4, "mxfp4", 32, 17),
    PLAIN(MOE_TYPE_Q1_0_G128, "q1_0_g128", 128, 18),
    ACT(MOE_TYPE_Q8_0_X4, "q8_0_x4", 32, 34, 0),
    ACT(MOE_TYPE_Q8_1_X4, "q8_1_x4", 32, 36, 0),
    ACT(MOE_TYPE_Q8_2_X4, "q8_2_x4", 32, 36, 0),
    PLAIN(MOE_TYPE_Q6_0, "q6_0", 32, 26),
    META(MOE_TYPE_IQ1_BN, "iq1_bn", 64, 13, 2),
    META(MOE_TYPE_IQ2_BN, "iq2_bn", 64, 16, 4),
    ACT(MOE_TYPE_Q8_K64, "q8_K64", 64, 68, 0),
    PLAIN(MOE_TYPE_IQ2_K, "iq2_k", 256, 76),
    PLAIN(MOE_TYPE_IQ3_K, "iq3_k", 256, 110),
    PLAIN(MOE_TYPE_IQ4_K, "iq4_k", 256, 144),
    PLAIN(MOE_TYPE_IQ5_K, "iq5_k", 256, 176),
    PLAIN(MOE_TYPE_IQ6_K, "iq6_k", 256, 212),
    META(MOE_TYPE_IQ4_KS, "iq4_ks", 256, 136, 4),
    META(MOE_TYPE_IQ2_KS, "iq2_ks", 256, 70, 2),
    META(MOE_TYPE_IQ4_KSS, "iq4_kss", 256, 128, 4),
    ACT(MOE_TYPE_Q8_K16, "q8_K16", 64, 64, 20),
    ACT(MOE_TYPE_Q8_K32, "q8_K32", 256, 296, 0),
    ACT(MOE_TYPE_Q8_KR8, "q8_KR8", 256, 296, 0),
    ACT(MOE_TYPE_Q8_K128, "q8_K128", 128, 140, 0),
    META(MOE_TYPE_Q8_KV, "q8_KV", 32, 32, 8),
    META(MOE_TYPE_IQ5_KS, "iq5_ks", 256, 168, 4),
    META(MOE_TYPE_IQ2_KT, "iq2_kt", 256, 68, 4),
    META(MOE_TYPE_IQ3_KT, "iq3_kt", 256, 100, 4),
    META(MOE_TYPE_IQ4_KT, "iq4_kt", 256, 128, 4),
    META(MOE_TYPE_IQ3_KS, "iq3_ks", 256, 102, 2),
    META(MOE_TYPE_IQ2_KL, "iq2_kl", 256, 86, 2),
    META(MOE_TYPE_IQ1_KT, "iq1_kt", 256, 56, 4),
    [MOE_TYPE_Q4_0_R8] = {.name = "q4_0_r8", .block_size = MOE_QK,
                          .type_size = sizeof(block_q4_0_r8) / 8, .interleave_rows = 8,
                          .base = MOE_TYPE_Q4_0, .to_f32 = moe_dequant_q4_0_r8},
    [MOE_TYPE_Q5_0_R4] = {.name = "q5_0_r4", .block_size = MOE_QK,
                          .type_size = sizeof(block_q5_0_r4) / 4, .interleave_rows = 4,
                          .base = MOE_TYPE_Q5_0, .to_f32 = moe_dequant_q5_0_r4},
    [MOE_TYPE_Q8_0_R8] = {.name = "q8_0_r8", .block_size = MOE_QK,
                          .type_size = sizeof(block_q8_0_r8) / 8, .interleave_rows = 8,
                          .base = MOE_TYPE_Q8_0, .to_f32 = moe_dequant_q8_0_r8},
    [MOE_TYPE_Q2_K_R4] = {.name = "q2_k_r4", .block_size = MOE_QK_K,
                          .type_size = sizeof(block_q2_K_r4) / 4, .interleave_rows = 4,
                          .base = MOE_TYPE_Q2_K, .to_f32 = moe_dequant_q2_K_r4},
    [MOE_TYPE_Q3_K_R4] = {.name = "q3_k_r4", .block_size = MOE_QK_K,
                          .type_size = sizeof(block_q3_K_r4) / 4, .interleave_rows = 4,
                          .base = MOE_TYPE_Q3_K, .to_f32 = moe_dequant_q3_K_r4},
    [MOE_TYPE_Q4_K_R4] = {.name = "q4_k_r4", .block_size = MOE_QK_K,
                          .type_size = sizeof(block_q4_K_r4) / 4, .interleave_rows = 4,
                          .base = MOE_TYPE_Q4_K, .to_f32 = moe_dequant_q4_K_r4},
    [MOE_TYPE_Q5_K_R4] = {.name = "q5_k_r4", .block_size = MOE_QK_K,
                          .type_size = sizeof(block_q5_K_r4) / 4, .interleave_rows = 4,
                          .base = MOE_TYPE_Q5_K, .to_f32 = moe_dequant_q5_K_r4},
    [MOE_TYPE_Q6_K_R4] = {.name = "q6_k_r4", .block_size = MOE_QK_K,
                          .type_size = sizeof(block_q6_K_r4) / 4, .interleave_rows = 4,
                          .base = MOE_TYPE_Q6_K, .to_f32 = moe_dequant_q6_K_r4},
    [MOE_TYPE_IQ4_NL_R4] = {.name = "iq4_nl_r4", .block_size = MOE_QK,
                            .type_size = sizeof(block_iq4_nl_r4) / 4, .interleave_rows = 4,
                            .base = MOE_TYPE_IQ4_NL, .to_f32 = moe_dequant_iq4_nl_r4},
    [MOE_TYPE_IQ4_XS_R8] = {.name = "iq4_xs_r8", .block_size = MOE_QK_K,
                            .type_size = sizeof(block_iq4_xs_r8) / 8, .interleave_rows = 8,
                            .base = MOE_TYPE_IQ4_XS, .to_f32 = moe_dequant_iq4_xs_r8},
    ILV(MOE_TYPE_IQ2_XXS_R4, "iq2_xxs_r4", 256, 66, 0, 4, MOE_TYPE_IQ2_XXS),
    ILV(MOE_TYPE_IQ2_XS_R4, "iq2_xs_r4", 256, 74, 0, 4, MOE_TYPE_IQ2_XS),
    ILV(MOE_TYPE_IQ3_XXS_R4, "iq3_xxs_r4", 256, 98, 0, 4, MOE_TYPE_IQ3_XXS),
    /* IQ1_S_R4/IQ1_M_R4 have their own quantizers: no plain twin */
    ILV(MOE_TYPE_IQ1_S_R4, "iq1_s_r4", 32, 6, 2, 4, MOE_TYPE_IQ1_S_R4),
    ILV(MOE_TYPE_IQ3_S_R4, "iq3_s_r4", 256, 110, 0, 4, MOE_TYPE_IQ3_S),
    ILV(MOE_TYPE_IQ2_S_R4, "iq2_s_r4", 256, 82, 0, 4, MOE_TYPE_IQ2_S),
    ILV(MOE_TYPE_IQ1_M_R4, "iq1_m_r4", 32, 7, 2, 4, MOE_TYPE_IQ1_M_R4),
    ILV(MOE_TYPE_BF16_R16, "bf16_r16", 1, 2, 0, 16, MOE_TYPE_BF16),
    ILV(MOE_TYPE_Q6_0_R4, "q6_0_r4", 32, 26, 0, 4, MOE_TYPE_Q6_0),
    ILV(MOE_TYPE_IQ2_BN_R4, "iq2_bn_r4", 64, 16, 4, 4, MOE_TYPE_IQ2_BN),
    ILV(MOE_TYPE_IQ2_K_R4, "iq2_k_r4", 256, 76, 0, 4, MOE_TYPE_IQ2_K),
    ILV(MOE_TYPE_IQ3_K_R4, "iq3_k_r4", 256, 110, 0, 4, MOE_TYPE_IQ3_K),
    ILV(MOE_TYPE_IQ4_K_R4, "iq4_k_r4", 256, 144, 0, 4, MOE_TYPE_IQ4_K),
    ILV(MOE_TYPE_IQ5_K_R4, "iq5_k_r4", 256, 176, 0, 4, MOE_TYPE_IQ5_K),
    ILV(MOE_TYPE_IQ4_KS_R4, "iq4_ks_r4", 256, 136, 4, 4, MOE_TYPE_IQ4_KS),
    ILV(MOE_TYPE_IQ5_KS_R4, "iq5_ks_r4", 256, 168, 4, 4, MOE_TYPE_IQ5_KS),
    ILV(MOE_TYPE_MXFP4_R8, "mxfp4_r8", 32, 17, 0, 8, MOE_TYPE_MXFP4),
    /* Q8_K_R8/R16 are 258 bytes per 256 per row: not the size of any base type */
    ILV(MOE_TYPE_Q8_K_R16, "q8_k_r16", 256, 258, 0, 16, MOE_TYPE_Q8_K_R16),
    ILV(MOE_TYPE_Q8_KV_R8, "q8_KV_r8", 32, 32, 4, 8, MOE_TYPE_Q8_KV),
    ILV(MOE_TYPE_Q8_K_R8, "q8_k_r8", 256, 258, 0, 8, MOE_TYPE_Q8_K_R8),
};

const moe_type_traits *moe_type_get(int64_t t) {
    if (t < 0 || t >= MOE_TYPE_ID_LIMIT || type_table[t].name == NULL)
        return NULL;
    return &type_table[t];
}

const char *moe_type_name(int64_t t) {
    const moe_type_traits *tr = moe_type_get(t);
    return tr ? tr->name : "unknown";
}

bool moe_type_from_name(const char *name, moe_type *t) {
    for (int i = 0; i < MOE_TYPE_ID_LIMIT; i++) {
        if (type_table[i].name && strcasecmp(type_table[i].name, name) == 0) {
            *t = (moe_type)i;
            return true;
        }
    }
    return false;
}

const moe_type_traits *moe_type_at(size_t index, moe_type *id) {
    for (int i = 0; i < MOE_TYPE_ID_LIMIT; i++) {
        if (!type_table[i].name)
            continue;
        if (index-- == 0) {
            if (id)
                *id = (moe_type)i;
            return &type_table[i];
        }
    }
    return NULL;
}

moe_status moe_type_row_size(int64_t t, int64_t ne0, uint64_t *bytes, moe_err *err) {
    const moe_type_traits *tr = moe_type_get(t);
    MOE_FAIL_IF(!tr, err, MOE_ERR_FORMAT, "unknown tensor type %lld", (long long)t);
    MOE_FAIL_IF(ne0 < 0, err, MOE_ERR_FORMAT, "negative row length %lld", (long long)ne0);
    MOE_FAIL_IF(ne0 % tr->block_size != 0, err, MOE_ERR_FORMAT,
                "row length %lld is not a multiple of the %s block size %lld", (long long)ne0,
                tr->name, (long long)tr->block_size);
    uint64_t data = 0;
    MOE_FAIL_IF(!moe_mul_u64((uint64_t)(ne0 / tr->block_size), tr->type_size, &data) ||
                    !moe_add_u64(data, tr->row_meta, bytes),
                err, MOE_ERR_FORMAT, "row of %lld %s values overflows", (long long)ne0, tr->name);
    return MOE_OK;
}

moe_status moe_type_tensor_size(int64_t t, const int64_t ne[4], uint64_t *bytes, moe_err *err) {
    uint64_t row = 0;
    MOE_TRY(moe_type_row_size(t, ne[0], &row, err));
    uint64_t total = row;
    for (int i = 1; i < 4; i++) {
        MOE_FAIL_IF(ne[i] < 0, err, MOE_ERR_FORMAT, "negative dimension ne[%d] = %lld", i,
                    (long long)ne[i]);
        MOE_FAIL_IF(!moe_mul_u64(total, (uint64_t)ne[i], &total), err, MOE_ERR_FORMAT,
                    "tensor size overflows");
    }
    *bytes = total;
    return MOE_OK;
}

moe_status moe_dequantize_rows(int64_t t, const void *src, float *dst, int64_t ne0,
                               int64_t nrows, moe_err *err) {
    const moe_type_traits *tr = moe_type_get(t);
    MOE_FAIL_IF(!tr, err, MOE_ERR_UNSUPPORTED, "unknown tensor type %lld", (long long)t);
    MOE_FAIL_IF(!tr->to_f32, err, MOE_ERR_UNSUPPORTED,
                "type %s is recognised but cannot be dequantized by this build", tr->name);
    MOE_FAIL_IF(ne0 % tr->block_size != 0, err, MOE_ERR_FORMAT,
                "row length %lld is not a multiple of the %s block size %lld", (long long)ne0,
                tr->name, (long long)tr->block_size);
    MOE_FAIL_IF(tr->interleave_rows && nrows % tr->interleave_rows != 0, err, MOE_ERR_FORMAT,
                "%lld rows of %s are not a multiple of its %d interleaved rows",
                (long long)nrows, tr->name, tr->interleave_rows);
    tr->to_f32(src, dst, ne0, nrows);
    return MOE_OK;
}
