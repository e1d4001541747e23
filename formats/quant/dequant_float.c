#include <string.h>

#include "formats/gguf/cursor.h"
#include "formats/quant/dequant.h"
#include "formats/quant/fp16.h"

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

void moe_quant_f32(const float *src, void *dst, int64_t n) {
    uint8_t *p = dst;
    for (int64_t i = 0; i < n; i++)
        moe_store_le32(p + 4 * i, moe_f32_to_bits(src[i]));
}

void moe_quant_f16(const float *src, void *dst, int64_t n) {
    uint8_t *p = dst;
    for (int64_t i = 0; i < n; i++)
        moe_store_le16(p + 2 * i, moe_f32_to_f16(src[i]));
}

void moe_quant_bf16(const float *src, void *dst, int64_t n) {
    uint8_t *p = dst;
    for (int64_t i = 0; i < n; i++)
        moe_store_le16(p + 2 * i, moe_f32_to_bf16(src[i]));
}
