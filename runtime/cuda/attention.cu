/* cuda/attention — attention of a few tokens over an F16 KV cache (GQA), one
 * block per (head, token): warps score cells (q.k, a warp per cell), the block
 * turns the scores into softmax weights in place, then each thread sums the
 * weighted V values of some of the head's output dimensions over the cells.
 * The numerics follow the CPU reference (runtime/cpu/attention_ref.c): q
 * rounded to f16 before the dot products, weights rounded to f16 before the
 * weighted sum. */
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <math.h>

#include "runtime/cuda/caps.h"
#include "runtime/cuda/kernels.h"
#include "runtime/cuda/reduce.cuh"

namespace {

using moe_cuda::kWarp;

constexpr int kThreads = 256;

__device__ __forceinline__ float f16_round(float v) { return __half2float(__float2half_rn(v)); }

__device__ __forceinline__ float f16_at(const uint16_t *p) {
    __half_raw raw;
    raw.x = *p;
    return __half2float(__half(raw));
}

__global__ void attention_kernel(moe_cuda_attn_args a) {
    __shared__ float qs[MOE_CUDA_MAX_HEAD_DIM];
    __shared__ float scratch[kWarp];
    const int64_t h = blockIdx.x, t = blockIdx.y;
    const int64_t hk = h / (a.H / a.Hkv);
    const float *q = a.q + t * a.H * a.dk + h * a.dk;
    const float *mask = a.mask + t * a.n_kv;
    float *sc = a.scores + (t * a.H + h) * a.n_kv;
    for (int64_t d = threadIdx.x; d < a.dk; d += blockDim.x) qs[d] = f16_round(q[d]);
    __syncthreads();

    const int lane = threadIdx.x % kWarp, warp = threadIdx.x / kWarp;
    const int nwarps = (int)(blockDim.x / kWarp);
    for (int32_t c = warp; c < a.n_kv; c += nwarps) {
        if (mask[c] == -INFINITY) {  // hidden: no dot product, weight 0
            if (lane == 0) sc[c] = -INFINITY;
            continue;
        }
        const uint16_t *k = a.k + c * a.row_k + hk * a.dk;
        float s = 0.0f;
        for (int64_t d = lane; d < a.dk; d += kWarp) s += qs[d] * f16_at(k + d);
        s = moe_cuda::warp_sum(s);
        if (lane == 0) sc[c] = s * a.kq_scale + mask[c];
    }
    __syncthreads();  // scores of every warp are written

    float m = -INFINITY;
    for (int32_t c = threadIdx.x; c < a.n_kv; c += blockDim.x) m = fmaxf(m, sc[c]);
    m = moe_cuda::block_max(m, scratch);
    float sum = 0.0f;
    for (int32_t c = threadIdx.x; c < a.n_kv; c += blockDim.x) {
        const float e = expf(sc[c] - m);
        sc[c] = e;
        sum += e;
    }
    const float inv = 1.0f / moe_cuda::block_sum(sum, scratch);  // synchronises: sc complete
    for (int32_t c = threadIdx.x; c < a.n_kv; c += blockDim.x) sc[c] = f16_round(sc[c] * inv);
    __syncthreads();

    float *out = a.out + t * a.H * a.dv + h * a.dv;
    for (int64_t d = threadIdx.x; d < a.dv; d += blockDim.x) {
        const uint16_t *v = a.v + hk * a.dv + d;
        float acc = 0.0f;
        for (int32_t c = 0; c < a.n_kv; c++)
            if (sc[c] != 0.0f) acc += sc[c] * f16_at(v + c * a.row_v);
        out[d] = acc;
    }
}

}  // namespace

extern "C" int64_t moe_cuda_attention_ws_floats(int32_t T, int64_t H, int32_t n_kv) {
    return (int64_t)T * H * n_kv;
}

extern "C" int moe_cuda_attention_f16(const moe_cuda_attn_args *a, void *stream) {
    if (a->T == 0) return 0;
    if (a->T < 0 || a->n_kv <= 0 || a->H <= 0 || a->Hkv <= 0 || a->H % a->Hkv != 0 ||
        a->dk <= 0 || a->dv <= 0 || a->dk > MOE_CUDA_MAX_HEAD_DIM ||
        a->dv > MOE_CUDA_MAX_HEAD_DIM || a->row_k < a->Hkv * a->dk || a->row_v < a->Hkv * a->dv ||
        a->H > 65535 || a->T > 65535)
        return -1;
    const dim3 grid((unsigned)a->H, (unsigned)a->T);
    attention_kernel<<<grid, kThreads, 0, static_cast<cudaStream_t>(stream)>>>(*a);
    return cudaGetLastError() == cudaSuccess ? 0 : -1;
}
