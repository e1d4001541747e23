/* cuda/reduce — warp and block reductions shared by the row kernels
 * (softmax, router, attention). Internal to runtime/cuda.
 *
 * Block reductions need blockDim.x a multiple of 32 (at most 1024) and every
 * thread of the block to call them (they synchronise); each returns the
 * result to every thread. `scratch` is 32 floats of shared memory, free
 * again when the call returns.
 */
#ifndef MOE_RUNTIME_CUDA_REDUCE_CUH
#define MOE_RUNTIME_CUDA_REDUCE_CUH

#include <cuda_runtime.h>

namespace moe_cuda {

constexpr int kWarp = 32;

__device__ __forceinline__ float warp_sum(float v) {
    for (int off = kWarp / 2; off > 0; off /= 2) v += __shfl_xor_sync(0xffffffffu, v, off);
    return v;
}

__device__ __forceinline__ float warp_max(float v) {
    for (int off = kWarp / 2; off > 0; off /= 2)
        v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, off));
    return v;
}

template <bool kMax>
__device__ float block_reduce(float v, float *scratch) {
    const int lane = threadIdx.x % kWarp, warp = threadIdx.x / kWarp;
    const int nwarps = (int)(blockDim.x / kWarp);
    v = kMax ? warp_max(v) : warp_sum(v);
    __syncthreads();  // scratch may still be read by a previous reduction
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    v = lane < nwarps ? scratch[lane] : (kMax ? -INFINITY : 0.0f);
    return kMax ? warp_max(v) : warp_sum(v);
}

__device__ __forceinline__ float block_sum(float v, float *scratch) {
    return block_reduce<false>(v, scratch);
}

__device__ __forceinline__ float block_max(float v, float *scratch) {
    return block_reduce<true>(v, scratch);
}

}  // namespace moe_cuda

#endif
