#include <string.h>

#include "formats/gguf/cursor.h"
#include "formats/quant/dequant.h"
#include "formats/quant/fp16.h"
#include "formats/quant/quant_impl.h"

void moe_dequant_f32(const void *src, float *dst, int64_t ne0, int64_t nrows) {
    const uint8_t *p = src;
    for (int64_t i = 0; i < ne0 * nrows; i++)
        dst[i] = moe_bits_to_f32(moe_load_le32(p + 4 * i));
}

void moe_dequant_f16(const void *src, float *dst, int64_t ne0, int64_t nrows) {
    const uint8_t *p = src;
    for (int64_t i = 0; i < ne0 * nrows; i++)
        dst[i] = moe_f16_to_f32(moe_load_le16(p + 2 * i));
}

void moe_dequant_bf16(const void *src, float *dst, int64_t ne0, int64_t nrows) {
    const uint8_t *p = src;
    for (int64_t i = 0; i < ne0 * nrows; i++)
        dst[i] = moe_bf16_to_f32(moe_load_le16(p + 2 * i));
}

MOE_QUANT_FN(f32) {
    (void)imatrix;
    uint8_t *p = dst;
    for (int64_t i = 0; i < nrow * n_per_row; i++)
        moe_store_le32(p + 4 * i, moe_f32_to_bits(src[i]));
}

MOE_QUANT_FN(f16) {
    (void)imatrix;
    uint8_t *p = dst;
    for (int64_t i = 0; i < nrow * n_per_row; i++)
        moe_store_le16(p + 2 * i, moe_f32_to_f16(src[i]));
}

MOE_QUANT_FN(bf16) {
    (void)imatrix;
    uint8_t *p = dst;
    for (int64_t i = 0; i < nrow * n_per_row; i++)
        moe_store_le16(p + 2 * i, moe_f32_to_bf16(src[i]));
}
