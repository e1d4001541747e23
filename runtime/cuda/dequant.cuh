/* cuda/dequant — device-side decoders of the weight types the CUDA matrix
 * kernels take (F16, BF16, Q8_0, Q4_0, IQ4_NL, Q4_K, Q5_K, Q6_K, IQ4_XS).
 * Internal to runtime/cuda: included by quant_gemv.cu and gemm.cu only.
 *
 * Every type is cut into "parts" of kPart consecutive values of a row (32 for
 * the quantized types, 8 for F16/BF16 so that a lane reads 16 bytes), so that
 * a row of ne0 values is ne0 / kPart parts whatever the block size: the
 * 256-value super-blocks of the k-quants hold kParts = 8 parts each, and
 * lanes (GEMV) or threads (GEMM tiles) spread over parts rather than whole
 * super-blocks. Part u of a row lies in block u / kParts, as part u % kParts.
 *
 * decode(blk, part, out) writes that part's kPart values as f32, each value
 * computed as the CPU reference decoders (formats/dequant_*.c) compute it,
 * bit for bit on the host and the device (no fused multiply-adds); the bit
 * layouts are drawn there. Blocks are read through the structs of
 * formats/quant/quant_blocks.h; rows start at multiples of the block size, and every
 * block size is even, so the 2-byte fields are aligned.
 */
#ifndef MOE_RUNTIME_CUDA_DEQUANT_CUH
#define MOE_RUNTIME_CUDA_DEQUANT_CUH

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <stdint.h>

#include "formats/quant/quant_blocks.h"
#include "formats/quant/types.h"

namespace moe_cuda {

/* Decoders run on the device and, for the host-side test against the CPU
 * reference (tests/test_cuda_decode.cu), on the host. */
#define MOE_HD __host__ __device__ __forceinline__
#ifdef __CUDA_ARCH__
#define MOE_UNROLL _Pragma("unroll")
#else
#define MOE_UNROLL
#endif

/* IQ4_NL / IQ4_XS level i (0..15) of formats/quant/quant_blocks.h's
 * moe_iq4nl_values, packed as bytes of two words: a shift instead of a table,
 * since device code cannot read the host table (the host test compares all
 * 16). */
MOE_HD int iq4_level(int i) {
    const uint64_t lo = 0xF6EADDCFBFAD9881ull, hi = 0x7159453526190D01ull;
    return (int8_t)(uint8_t)((i < 8 ? lo : hi) >> (8 * (i & 7)));
}

/* a*b - c rounded twice, as the CPU reference computes it: nvcc would
 * otherwise fuse it into one fma on the device (one rounding). */
MOE_HD float mul_sub(float a, float b, float c) {
#ifdef __CUDA_ARCH__
    return __fsub_rn(__fmul_rn(a, b), c);
#else
    return a * b - c;
#endif
}

MOE_HD float f16_bits(uint16_t h) {
    __half_raw raw;
    raw.x = h;
    return __half2float(__half(raw));
}

struct DecodeF16 {
    static constexpr int kPart = 8, kParts = 1;
    static constexpr size_t kBytes = kPart * sizeof(__half);
    MOE_HD static void decode(const uint8_t *blk, int, float *out) {
        const __half *w = reinterpret_cast<const __half *>(blk);
        MOE_UNROLL
        for (int j = 0; j < kPart; j++) out[j] = __half2float(w[j]);
    }
};

struct DecodeBF16 {
    static constexpr int kPart = 8, kParts = 1;
    static constexpr size_t kBytes = kPart * sizeof(__nv_bfloat16);
    MOE_HD static void decode(const uint8_t *blk, int, float *out) {
        const __nv_bfloat16 *w = reinterpret_cast<const __nv_bfloat16 *>(blk);
        MOE_UNROLL
        for (int j = 0; j < kPart; j++) out[j] = __bfloat162float(w[j]);
    }
};

/* y = d * q, q int8. */
struct DecodeQ8_0 {
    static constexpr int kPart = 32, kParts = 1;
    static constexpr size_t kBytes = sizeof(block_q8_0);
    MOE_HD static void decode(const uint8_t *blk, int, float *out) {
        const block_q8_0 *b = reinterpret_cast<const block_q8_0 *>(blk);
        const float d = f16_bits(b->d);
        MOE_UNROLL
        for (int j = 0; j < kPart; j++) out[j] = d * (float)b->qs[j];
    }
};

/* y = d * (q - 8); split-half nibbles (value j low nibble of qs[j], j+16 high). */
struct DecodeQ4_0 {
    static constexpr int kPart = 32, kParts = 1;
    static constexpr size_t kBytes = sizeof(block_q4_0);
    MOE_HD static void decode(const uint8_t *blk, int, float *out) {
        const block_q4_0 *b = reinterpret_cast<const block_q4_0 *>(blk);
        const float d = f16_bits(b->d);
        MOE_UNROLL
        for (int j = 0; j < kPart / 2; j++) {
            out[j] = d * (float)((b->qs[j] & 0x0F) - 8);
            out[j + kPart / 2] = d * (float)((b->qs[j] >> 4) - 8);
        }
    }
};

/* y = d * level[q]; nibbles as Q4_0. */
struct DecodeIQ4_NL {
    static constexpr int kPart = 32, kParts = 1;
    static constexpr size_t kBytes = sizeof(block_iq4_nl);
    MOE_HD static void decode(const uint8_t *blk, int, float *out) {
        const block_iq4_nl *b = reinterpret_cast<const block_iq4_nl *>(blk);
        const float d = f16_bits(b->d);
        MOE_UNROLL
        for (int j = 0; j < kPart / 2; j++) {
            out[j] = d * (float)iq4_level(b->qs[j] & 0x0F);
            out[j + kPart / 2] = d * (float)iq4_level(b->qs[j] >> 4);
        }
    }
};

/* Sub-block s's 6-bit scale and min of Q4_K/Q5_K (12 packed bytes; layout in
 * formats/quant/dequant_kquants.c). */
MOE_HD void k4_scale_min(const uint8_t *q, int s, int *sc, int *m) {
    if (s < 4) {
        *sc = q[s] & 63;
        *m = q[s + 4] & 63;
    } else {
        *sc = (q[s + 4] & 0x0F) | ((q[s - 4] >> 6) << 4);
        *m = (q[s + 4] >> 4) | ((q[s] >> 6) << 4);
    }
}

/* Part s = sub-block s: y = d*sc_s * q - dmin*m_s, q the nibble of qs[32*(s/2)
 * + l] selected by s's parity. */
struct DecodeQ4_K {
    static constexpr int kPart = 32, kParts = 8;
    static constexpr size_t kBytes = sizeof(block_q4_K);
    MOE_HD static void decode(const uint8_t *blk, int s, float *out) {
        const block_q4_K *b = reinterpret_cast<const block_q4_K *>(blk);
        int sc, m;
        k4_scale_min(b->scales, s, &sc, &m);
        const float d1 = f16_bits(b->d) * (float)sc, m1 = f16_bits(b->dmin) * (float)m;
        const uint8_t *chunk = b->qs + 32 * (s / 2);
        const int shift = 4 * (s % 2);
        MOE_UNROLL
        for (int l = 0; l < kPart; l++)
            out[l] = mul_sub(d1, (float)((chunk[l] >> shift) & 0x0F), m1);
    }
};

/* Q4_K plus bit s of qh[l] as the fifth bit of value l of sub-block s. */
struct DecodeQ5_K {
    static constexpr int kPart = 32, kParts = 8;
    static constexpr size_t kBytes = sizeof(block_q5_K);
    MOE_HD static void decode(const uint8_t *blk, int s, float *out) {
        const block_q5_K *b = reinterpret_cast<const block_q5_K *>(blk);
        int sc, m;
        k4_scale_min(b->scales, s, &sc, &m);
        const float d1 = f16_bits(b->d) * (float)sc, m1 = f16_bits(b->dmin) * (float)m;
        const uint8_t *chunk = b->qs + 32 * (s / 2);
        const int shift = 4 * (s % 2);
        MOE_UNROLL
        for (int l = 0; l < kPart; l++) {
            const int q = ((chunk[l] >> shift) & 0x0F) | ((b->qh[l] >> s) & 1) << 4;
            out[l] = mul_sub(d1, (float)q, m1);
        }
    }
};

/* Part k = values 32k..32k+31 = half n = k/4, quarter j = k%4: low 4 bits in
 * ql[64n + 32*(j%2) + l] (low nibble for j < 2, high for j >= 2), high 2 bits
 * at bit 2j of qh[32n + l]; scale scales[2k + l/16]; y = d*sc*(q - 32). */
struct DecodeQ6_K {
    static constexpr int kPart = 32, kParts = 8;
    static constexpr size_t kBytes = sizeof(block_q6_K);
    MOE_HD static void decode(const uint8_t *blk, int k, float *out) {
        const block_q6_K *b = reinterpret_cast<const block_q6_K *>(blk);
        const int n = k / 4, j = k % 4;
        const uint8_t *lo = b->ql + 64 * n + 32 * (j % 2), *hi = b->qh + 32 * n;
        const int lo_shift = 4 * (j / 2), hi_shift = 2 * j;
        const float d = f16_bits(b->d);
        MOE_UNROLL
        for (int l = 0; l < kPart; l++) {
            const int q = ((lo[l] >> lo_shift) & 0x0F) | ((hi[l] >> hi_shift) & 3) << 4;
            out[l] = d * (float)b->scales[2 * k + l / 16] * (float)(q - 32);
        }
    }
};

/* Part s = sub-block s: 6-bit scale ls (low 4 bits in scales_l, high 2 in
 * scales_h), y = d*(ls - 32) * level[q], nibbles split-half as IQ4_NL. */
struct DecodeIQ4_XS {
    static constexpr int kPart = 32, kParts = 8;
    static constexpr size_t kBytes = sizeof(block_iq4_xs);
    MOE_HD static void decode(const uint8_t *blk, int s, float *out) {
        const block_iq4_xs *b = reinterpret_cast<const block_iq4_xs *>(blk);
        const int ls = ((b->scales_l[s / 2] >> (4 * (s % 2))) & 0x0F) |
                       (int)((b->scales_h >> (2 * s)) & 3) << 4;
        const float dl = f16_bits(b->d) * (float)(ls - 32);
        const uint8_t *q = b->qs + 16 * s;
        MOE_UNROLL
        for (int j = 0; j < kPart / 2; j++) {
            out[j] = dl * (float)iq4_level(q[j] & 0x0F);
            out[j + kPart / 2] = dl * (float)iq4_level(q[j] >> 4);
        }
    }
};

/* The part u of a row starting at `row`. */
template <typename Dec>
MOE_HD void decode_part(const uint8_t *row, int64_t u, float *out) {
    Dec::decode(row + (u / Dec::kParts) * (int64_t)Dec::kBytes, (int)(u % Dec::kParts), out);
}

/* Returns fn(Dec{}) for the decoder Dec of `type` (fn a generic lambda), or
 * -1 for a type without one: the one type switch of the matrix kernels. The
 * list must match cuda_weight_types in caps.c. */
template <typename Fn>
int with_decoder(int64_t type, Fn &&fn) {
    switch (type) {
    case MOE_TYPE_F16: return fn(DecodeF16{});
    case MOE_TYPE_BF16: return fn(DecodeBF16{});
    case MOE_TYPE_Q8_0: return fn(DecodeQ8_0{});
    case MOE_TYPE_Q4_0: return fn(DecodeQ4_0{});
    case MOE_TYPE_IQ4_NL: return fn(DecodeIQ4_NL{});
    case MOE_TYPE_Q4_K: return fn(DecodeQ4_K{});
    case MOE_TYPE_Q5_K: return fn(DecodeQ5_K{});
    case MOE_TYPE_Q6_K: return fn(DecodeQ6_K{});
    case MOE_TYPE_IQ4_XS: return fn(DecodeIQ4_XS{});
    default: return -1;
    }
}

}  // namespace moe_cuda

#endif
