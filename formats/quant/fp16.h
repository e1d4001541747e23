/* fp16 — IEEE half and bfloat16 conversions (scalar, exact).
 *
 * f16→f32 is exact; f32→f16 rounds to nearest even with overflow to inf and
 * NaN kept quiet (matches the F16C instruction and ggml). f32→bf16 rounds to
 * nearest even with NaN made quiet, as llama.cpp's converter does.
 */
#ifndef MOE_FORMATS_FP16_H
#define MOE_FORMATS_FP16_H

#include <stdint.h>
#include <string.h>

static inline float moe_bits_to_f32(uint32_t u) {
    float f;
    memcpy(&f, &u, 4);
    return f;
}
static inline uint32_t moe_f32_to_bits(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}

static inline float moe_f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000) << 16;
    uint32_t exp = (h >> 10) & 0x1f;
    uint32_t man = h & 0x3ff;
    if (exp == 0x1f)
        return moe_bits_to_f32(sign | 0x7f800000u | (man << 13));
    if (exp == 0) {
        if (man == 0)
            return moe_bits_to_f32(sign);
        /* subnormal: value = man * 2^-24 */
        float v = (float)man * 5.9604644775390625e-8f;
        return sign ? -v : v;
    }
    return moe_bits_to_f32(sign | ((exp + 112) << 23) | (man << 13));
}

static inline uint16_t moe_f32_to_f16(float f) {
    uint32_t u = moe_f32_to_bits(f);
    uint32_t sign = (u >> 16) & 0x8000;
    uint32_t abs = u & 0x7fffffffu;
    if (abs > 0x7f800000u) /* NaN */
        return (uint16_t)(sign | 0x7e00 | ((abs >> 13) & 0x3ff));
    if (abs >= 0x477ff000u) /* rounds to >= 65520: inf */
        return (uint16_t)(sign | 0x7c00);
    if (abs < 0x38800000u) { /* below the smallest normal half: subnormal or zero */
        float a = moe_bits_to_f32(abs);
        /* adding 0.5 (2^-1) aligns the half-subnormal grid to float's last bits and
         * lets the FPU do round-to-nearest-even */
        uint32_t r = moe_f32_to_bits(a + 0.5f) - 0x3f000000u;
        return (uint16_t)(sign | r);
    }
    uint32_t mant_odd = (abs >> 13) & 1;
    abs += 0xfff + mant_odd; /* round to nearest even on the 13 dropped bits */
    return (uint16_t)(sign | (((abs >> 13) - (112u << 10)) & 0x7fff));
}

static inline float moe_bf16_to_f32(uint16_t h) { return moe_bits_to_f32((uint32_t)h << 16); }

static inline uint16_t moe_f32_to_bf16(float f) {
    uint32_t u = moe_f32_to_bits(f);
    if ((u & 0x7fffffffu) > 0x7f800000u)
        return (uint16_t)((u >> 16) | 64);
    return (uint16_t)((u + 0x7fff + ((u >> 16) & 1)) >> 16);
}

#endif
