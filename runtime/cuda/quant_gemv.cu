/* cuda/quant_gemv — one-token matrix-vector product that dequantizes weight
 * blocks on the fly (never materialises the f32 matrix). One warp per row:
 * lanes stride over the row's blocks, then a shuffle tree sums the partials. */
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include "formats/quant_blocks.h"
#include "formats/types.h"
#include "runtime/cuda/kernels.h"

namespace {

constexpr int kWarp = 32;
constexpr int kRowsPerBlock = 4;

__device__ const int8_t iq4nl_values[16] = {-127, -104, -83, -65, -49, -35, -22, -10,
                                            1,    13,   25,  38,  53,  69,  89,  113};

__device__ float half_bits_to_float(uint16_t h) {
    return __half2float(__ushort_as_half(h));
}

/* Dot of one block (32 values at xb) with its dequantized weights. */
struct DotQ8_0 {
    static constexpr int kBlock = 32;
    __device__ static float dot(const void *blk, const float *xb) {
        const block_q8_0 *b = static_cast<const block_q8_0 *>(blk);
        float s = 0.0f;
        for (int j = 0; j < kBlock; j++) s += (float)b->qs[j] * xb[j];
        return s * half_bits_to_float(b->d);
    }
    static constexpr size_t kBytes = sizeof(block_q8_0);
};

/* Q4_0 and IQ4_NL share the layout: low nibbles are values 0..15, high 16..31. */
struct DotQ4_0 {
    static constexpr int kBlock = 32;
    __device__ static float dot(const void *blk, const float *xb) {
        const block_q4_0 *b = static_cast<const block_q4_0 *>(blk);
        float s = 0.0f;
        for (int j = 0; j < kBlock / 2; j++) {
            s += (float)((b->qs[j] & 0x0F) - 8) * xb[j];
            s += (float)((b->qs[j] >> 4) - 8) * xb[j + kBlock / 2];
        }
        return s * half_bits_to_float(b->d);
    }
    static constexpr size_t kBytes = sizeof(block_q4_0);
};

struct DotIQ4_NL {
    static constexpr int kBlock = 32;
    __device__ static float dot(const void *blk, const float *xb) {
        const block_iq4_nl *b = static_cast<const block_iq4_nl *>(blk);
        float s = 0.0f;
        for (int j = 0; j < kBlock / 2; j++) {
            s += (float)iq4nl_values[b->qs[j] & 0x0F] * xb[j];
            s += (float)iq4nl_values[b->qs[j] >> 4] * xb[j + kBlock / 2];
        }
        return s * half_bits_to_float(b->d);
    }
    static constexpr size_t kBytes = sizeof(block_iq4_nl);
};

/* F16 / BF16 as "blocks" of 8 values so that lanes read 16-byte runs. */
struct DotF16 {
    static constexpr int kBlock = 8;
    __device__ static float dot(const void *blk, const float *xb) {
        const __half *w = static_cast<const __half *>(blk);
        float s = 0.0f;
        for (int j = 0; j < kBlock; j++) s += __half2float(w[j]) * xb[j];
        return s;
    }
    static constexpr size_t kBytes = kBlock * sizeof(__half);
};

struct DotBF16 {
    static constexpr int kBlock = 8;
    __device__ static float dot(const void *blk, const float *xb) {
        const __nv_bfloat16 *w = static_cast<const __nv_bfloat16 *>(blk);
        float s = 0.0f;
        for (int j = 0; j < kBlock; j++) s += __bfloat162float(w[j]) * xb[j];
        return s;
    }
    static constexpr size_t kBytes = kBlock * sizeof(__nv_bfloat16);
};

__device__ float warp_sum(float v) {
    for (int off = kWarp / 2; off > 0; off /= 2) v += __shfl_down_sync(0xffffffffu, v, off);
    return v;
}

template <typename Dot>
__global__ void gemv_kernel(const uint8_t *w, int64_t ne0, int64_t nrows, const float *x,
                            float *y) {
    const int64_t row = (int64_t)blockIdx.x * kRowsPerBlock + threadIdx.y;
    if (row >= nrows) return;  // whole warp leaves together: shuffles stay full
    const int64_t nblocks = ne0 / Dot::kBlock;
    const uint8_t *wrow = w + row * nblocks * Dot::kBytes;
    float s = 0.0f;
    for (int64_t b = threadIdx.x; b < nblocks; b += kWarp)
        s += Dot::dot(wrow + b * Dot::kBytes, x + b * Dot::kBlock);
    s = warp_sum(s);
    if (threadIdx.x == 0) y[row] = s;
}

template <typename Dot>
int launch_gemv(const void *w, int64_t ne0, int64_t nrows, const float *x, float *y,
                cudaStream_t stream) {
    if (ne0 % Dot::kBlock != 0) return -1;
    const dim3 block(kWarp, kRowsPerBlock);
    const dim3 grid((unsigned)((nrows + kRowsPerBlock - 1) / kRowsPerBlock));
    gemv_kernel<Dot><<<grid, block, 0, stream>>>(static_cast<const uint8_t *>(w), ne0, nrows,
                                                  x, y);
    return cudaGetLastError() == cudaSuccess ? 0 : -1;
}

}  // namespace

extern "C" int moe_cuda_gemv(int64_t type, const void *w, int64_t ne0, int64_t nrows,
                             const float *x, float *y, void *stream_ptr) {
    if (ne0 <= 0 || nrows <= 0) return nrows == 0 ? 0 : -1;
    cudaStream_t stream = static_cast<cudaStream_t>(stream_ptr);
    switch (type) {
    case MOE_TYPE_F16: return launch_gemv<DotF16>(w, ne0, nrows, x, y, stream);
    case MOE_TYPE_BF16: return launch_gemv<DotBF16>(w, ne0, nrows, x, y, stream);
    case MOE_TYPE_Q8_0: return launch_gemv<DotQ8_0>(w, ne0, nrows, x, y, stream);
    case MOE_TYPE_Q4_0: return launch_gemv<DotQ4_0>(w, ne0, nrows, x, y, stream);
    case MOE_TYPE_IQ4_NL: return launch_gemv<DotIQ4_NL>(w, ne0, nrows, x, y, stream);
    default: return -1;
    }
}
