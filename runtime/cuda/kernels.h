/* cuda/kernels — C-callable CUDA kernels on device memory.
 *
 * Owns: launching the kernels. Pointers are device pointers; `stream` is a
 * cudaStream_t passed as void* (NULL: the default stream). Launches are
 * asynchronous; each function returns 0, or -1 when the launch failed or the
 * arguments are outside what caps.h reports as supported.
 *
 * Tolerance against the CPU reference (formats/dequant_*.c + f32 dot): the
 * GEMV sums in f32 in a different order (per-thread partial sums, then a warp
 * tree), so results match to |err| <= 1e-5 * sum_i |w_i x_i| + 1e-6; RMS norm
 * to a relative 1e-5.
 */
#ifndef MOE_RUNTIME_CUDA_KERNELS_H
#define MOE_RUNTIME_CUDA_KERNELS_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* y[r] = dot(dequant(W row r), x) for r < nrows; W rows of ne0 values of type
 * `type` (row stride = moe_type_row_size), x and y f32. Types: F16, BF16,
 * Q8_0, Q4_0, IQ4_NL. */
int moe_cuda_gemv(int64_t type, const void *w, int64_t ne0, int64_t nrows, const float *x,
                  float *y, void *stream);

/* y[t][i] = x[t][i] / sqrt(mean(x[t]^2) + eps) * (weight ? weight[i] : 1) for
 * t < nrows rows of n values; rows start stride_x / stride_y floats apart.
 * Safe in place (x == y, same stride). */
int moe_cuda_rms_norm(const float *x, int64_t stride_x, const float *weight, float *y,
                      int64_t stride_y, int64_t n, int64_t nrows, float eps, void *stream);

#ifdef __cplusplus
}
#endif

#endif
