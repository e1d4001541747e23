/* cuda/softmax — row softmax, and the router (gating + top-k for any expert
 * count up to MOE_CUDA_MAX_EXPERTS); one block per row / token. */
#include <cuda_runtime.h>
#include <limits.h>
#include <math.h>

#include "runtime/cuda/caps.h"
#include "runtime/cuda/kernels.h"
#include "runtime/cuda/reduce.cuh"

namespace {

using moe_cuda::kWarp;

constexpr int kThreads = 256;

/* In-place softmax of one row of n values by the whole block. */
__device__ void softmax_row(float *x, int64_t n, float *scratch) {
    float m = -INFINITY;
    for (int64_t i = threadIdx.x; i < n; i += blockDim.x) m = fmaxf(m, x[i]);
    m = moe_cuda::block_max(m, scratch);
    float s = 0.0f;
    for (int64_t i = threadIdx.x; i < n; i += blockDim.x) {
        const float e = expf(x[i] - m);
        x[i] = e;
        s += e;
    }
    const float inv = 1.0f / moe_cuda::block_sum(s, scratch);
    for (int64_t i = threadIdx.x; i < n; i += blockDim.x) x[i] *= inv;
}

__global__ void softmax_kernel(float *x, int64_t n, int64_t stride) {
    __shared__ float scratch[kWarp];
    softmax_row(x + (int64_t)blockIdx.x * stride, n, scratch);
}

/* A candidate of the top-k search: selection value and expert. `better`
 * orders by value, then by the lower expert index (the CPU's exchange sort may
 * order exact ties differently; kernels.h). idx INT_MAX: no candidate. */
struct Cand {
    float v;
    int idx;
};

__device__ __forceinline__ bool better(Cand a, Cand b) {
    return a.v > b.v || (a.v == b.v && a.idx < b.idx);
}

__device__ Cand warp_best(Cand c) {
    for (int off = kWarp / 2; off > 0; off /= 2) {
        Cand o;
        o.v = __shfl_xor_sync(0xffffffffu, c.v, off);
        o.idx = __shfl_xor_sync(0xffffffffu, c.idx, off);
        if (better(o, c)) c = o;
    }
    return c;
}

/* The best candidate of the block, to every thread. */
__device__ Cand block_best(Cand c, Cand *scratch) {
    const int lane = threadIdx.x % kWarp, warp = threadIdx.x / kWarp;
    c = warp_best(c);
    __syncthreads();
    if (lane == 0) scratch[warp] = c;
    __syncthreads();
    Cand none;
    none.v = -INFINITY;
    none.idx = INT_MAX;
    return warp_best(lane < (int)(blockDim.x / kWarp) ? scratch[lane] : none);
}

struct RouteArgs {
    float *probs;
    int E, K;
    bool sigmoid, norm;
    const float *bias;
    float scale;
    int32_t *ids;
    float *w;
};

__global__ void route_kernel(RouteArgs a) {
    __shared__ float scratch[kWarp];
    __shared__ Cand cand_scratch[kWarp];
    __shared__ float sel[MOE_CUDA_MAX_EXPERTS];
    __shared__ bool taken[MOE_CUDA_MAX_EXPERTS];
    __shared__ int chosen[MOE_CUDA_MAX_EXPERTS_USED];
    float *p = a.probs + (int64_t)blockIdx.x * a.E;
    if (a.sigmoid) {
        for (int e = threadIdx.x; e < a.E; e += blockDim.x) p[e] = 1.0f / (1.0f + expf(-p[e]));
    } else {
        softmax_row(p, a.E, scratch);
    }
    __syncthreads();  // each thread reads probabilities other threads wrote
    for (int e = threadIdx.x; e < a.E; e += blockDim.x) {
        sel[e] = a.bias ? p[e] + a.bias[e] : p[e];
        taken[e] = false;
    }
    __syncthreads();
    for (int k = 0; k < a.K; k++) {
        Cand c;
        c.v = -INFINITY;
        c.idx = INT_MAX;
        for (int e = threadIdx.x; e < a.E; e += blockDim.x) {
            Cand o;
            o.v = sel[e];
            o.idx = e;
            if (!taken[e] && better(o, c)) c = o;
        }
        c = block_best(c, cand_scratch);
        if (threadIdx.x == 0) {
            chosen[k] = c.idx;
            taken[c.idx] = true;
        }
        __syncthreads();
    }
    if (threadIdx.x == 0) {
        int32_t *ids = a.ids + (int64_t)blockIdx.x * a.K;
        float *w = a.w + (int64_t)blockIdx.x * a.K;
        float sum = 0.0f;
        for (int k = 0; k < a.K; k++) {
            ids[k] = chosen[k];
            w[k] = p[chosen[k]];
            sum += w[k];
        }
        for (int k = 0; k < a.K; k++) {
            if (a.norm) w[k] /= sum;
            if (a.scale != 1.0f) w[k] *= a.scale;
        }
    }
}

}  // namespace

extern "C" int moe_cuda_softmax(float *x, int64_t n, int64_t nrows, int64_t stride,
                                void *stream) {
    if (nrows == 0) return 0;
    if (n <= 0 || nrows < 0 || stride < n) return -1;
    softmax_kernel<<<(unsigned)nrows, kThreads, 0, static_cast<cudaStream_t>(stream)>>>(
        x, n, stride);
    return cudaGetLastError() == cudaSuccess ? 0 : -1;
}

extern "C" int moe_cuda_route(float *probs, int32_t T, int32_t E, int32_t K, bool sigmoid,
                              const float *bias, bool norm, float scale, int32_t *ids, float *w,
                              void *stream) {
    if (T == 0) return 0;
    if (T < 0 || E <= 0 || E > MOE_CUDA_MAX_EXPERTS || K <= 0 || K > E ||
        K > MOE_CUDA_MAX_EXPERTS_USED)
        return -1;
    RouteArgs a;
    a.probs = probs;
    a.E = E;
    a.K = K;
    a.sigmoid = sigmoid;
    a.norm = norm;
    a.bias = bias;
    a.scale = scale;
    a.ids = ids;
    a.w = w;
    route_kernel<<<(unsigned)T, kThreads, 0, static_cast<cudaStream_t>(stream)>>>(a);
    return cudaGetLastError() == cudaSuccess ? 0 : -1;
}
