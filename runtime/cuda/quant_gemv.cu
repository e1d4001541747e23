/* cuda/quant_gemv — one-token matrix-vector product that dequantizes weight
 * parts on the fly (never materialises the f32 matrix). One warp per row:
 * lanes stride over the row's parts (dequant.cuh), then a shuffle tree sums
 * the partials. */
#include <cuda_runtime.h>

#include "runtime/cuda/dequant.cuh"
#include "runtime/cuda/kernels.h"

namespace {

constexpr int kWarp = 32;
constexpr int kRowsPerBlock = 4;

__device__ float warp_sum(float v) {
    for (int off = kWarp / 2; off > 0; off /= 2) v += __shfl_down_sync(0xffffffffu, v, off);
    return v;
}

template <typename Dec>
__global__ void gemv_kernel(const uint8_t *w, int64_t ne0, int64_t nrows, const float *x,
                            float *y) {
    const int64_t row = (int64_t)blockIdx.x * kRowsPerBlock + threadIdx.y;
    if (row >= nrows) return;  // whole warp leaves together: shuffles stay full
    const int64_t nparts = ne0 / Dec::kPart;
    const uint8_t *wrow = w + row * (ne0 / (Dec::kPart * Dec::kParts)) * (int64_t)Dec::kBytes;
    float s = 0.0f;
    for (int64_t u = threadIdx.x; u < nparts; u += kWarp) {
        float v[Dec::kPart];
        moe_cuda::decode_part<Dec>(wrow, u, v);
        const float *xp = x + u * Dec::kPart;
#pragma unroll
        for (int j = 0; j < Dec::kPart; j++) s += v[j] * xp[j];
    }
    s = warp_sum(s);
    if (threadIdx.x == 0) y[row] = s;
}

}  // namespace

extern "C" int moe_cuda_gemv(int64_t type, const void *w, int64_t ne0, int64_t nrows,
                             const float *x, float *y, void *stream_ptr) {
    if (ne0 <= 0 || nrows <= 0) return nrows == 0 ? 0 : -1;
    cudaStream_t stream = static_cast<cudaStream_t>(stream_ptr);
    return moe_cuda::with_decoder(type, [&](auto dec) {
        using Dec = decltype(dec);
        if (ne0 % (Dec::kPart * Dec::kParts) != 0) return -1;
        const dim3 block(kWarp, kRowsPerBlock);
        const dim3 grid((unsigned)((nrows + kRowsPerBlock - 1) / kRowsPerBlock));
        gemv_kernel<Dec><<<grid, block, 0, stream>>>(static_cast<const uint8_t *>(w), ne0,
                                                      nrows, x, y);
        return cudaGetLastError() == cudaSuccess ? 0 : -1;
    });
}
