/* cuda/norm — RMS norm over rows with a stride; one block per row. */
#include <cuda_runtime.h>

#include "runtime/cuda/kernels.h"

namespace {

constexpr int kThreads = 256;

__global__ void rms_norm_kernel(const float *x, int64_t stride_x, const float *weight, float *y,
                                int64_t stride_y, int64_t n, float eps) {
    __shared__ float partial[kThreads];
    const float *xr = x + (int64_t)blockIdx.x * stride_x;
    float *yr = y + (int64_t)blockIdx.x * stride_y;
    float s = 0.0f;
    for (int64_t i = threadIdx.x; i < n; i += kThreads) s += xr[i] * xr[i];
    partial[threadIdx.x] = s;
    __syncthreads();
    for (int half = kThreads / 2; half > 0; half /= 2) {
        if (threadIdx.x < half) partial[threadIdx.x] += partial[threadIdx.x + half];
        __syncthreads();
    }
    // Every thread has read its x values before the barrier above, so the
    // writes below are safe in place.
    const float scale = rsqrtf(partial[0] / (float)n + eps);
    for (int64_t i = threadIdx.x; i < n; i += kThreads)
        yr[i] = xr[i] * scale * (weight ? weight[i] : 1.0f);
}

}  // namespace

extern "C" int moe_cuda_rms_norm(const float *x, int64_t stride_x, const float *weight, float *y,
                                 int64_t stride_y, int64_t n, int64_t nrows, float eps,
                                 void *stream) {
    if (nrows == 0) return 0;
    if (n <= 0 || nrows < 0 || stride_x < n || stride_y < n) return -1;
    rms_norm_kernel<<<(unsigned)nrows, kThreads, 0, static_cast<cudaStream_t>(stream)>>>(
        x, stride_x, weight, y, stride_y, n, eps);
    return cudaGetLastError() == cudaSuccess ? 0 : -1;
}
