/* cuda/elementwise — the small steps between the products: SwiGLU's
 * silu(g) * u, bias and gated residual adds, the weighted sum of the routed
 * experts' outputs, deepseek2's MLA K/V assembly, and embedding rows. One
 * thread per output value; the arithmetic of each is spelled with _rn
 * operations where the CPU reference's order must be kept (no fused
 * multiply-adds), so those steps give the CPU's bits. */
#include <cuda_runtime.h>
#include <math.h>

#include "runtime/cuda/dequant.cuh"
#include "runtime/cuda/kernels.h"

namespace {

constexpr int kThreads = 256;

unsigned blocks_for(int64_t n) { return (unsigned)((n + kThreads - 1) / kThreads); }

int launched() { return cudaGetLastError() == cudaSuccess ? 0 : -1; }

__global__ void silu_mul_kernel(float *g, const float *u, int64_t n) {
    const int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) g[i] = __fmul_rn(__fdiv_rn(g[i], __fadd_rn(1.0f, expf(-g[i]))), u[i]);
}

__global__ void add_bias_kernel(float *x, const float *b, int64_t n, int64_t total) {
    const int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < total) x[i] = __fadd_rn(x[i], b[i % n]);
}

/* g_t = sigmoid(gate[t]) computed as silu(v) / v, as the CPU step does. */
__global__ void add_gated_kernel(float *x, const float *y, const float *gate, int64_t n,
                                 int64_t total) {
    const int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= total) return;
    float g = 1.0f;
    if (gate) {
        const float v = gate[i / n];
        g = __fdiv_rn(__fdiv_rn(v, __fadd_rn(1.0f, expf(-v))), v);
    }
    x[i] = __fadd_rn(x[i], __fmul_rn(g, y[i]));
}

/* out[t][d] = slots[t][0][d] * w[t][0], then += slots[t][k][d] * w[t][k] in
 * order k: the CPU's order and roundings. */
__global__ void experts_combine_kernel(const float *slots, const float *w, int64_t K, int64_t D,
                                       float *out, int64_t total) {
    const int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= total) return;
    const int64_t t = i / D, d = i % D;
    const float *wt = w + t * K;
    float o = __fmul_rn(slots[(t * K) * D + d], wt[0]);
    for (int64_t k = 1; k < K; k++) o = __fadd_rn(o, __fmul_rn(slots[(t * K + k) * D + d], wt[k]));
    out[i] = o;
}

struct MlaShape {
    int64_t kpe_stride, H, nope, n_rope, dv;
};

/* One thread per value of k [T][H][nope + n_rope] and then of v [T][H][dv]. */
__global__ void mla_kv_kernel(const float *kv, const float *kpe, MlaShape s, float *k, float *v,
                              int64_t nk, int64_t nv) {
    const int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    const int64_t dk = s.nope + s.n_rope, row = s.nope + s.dv;
    if (i < nk) {
        const int64_t t = i / (s.H * dk), h = i / dk % s.H, d = i % dk;
        k[i] = d < s.nope ? kv[(t * s.H + h) * row + d] : kpe[t * s.kpe_stride + d - s.nope];
    } else if (i < nk + nv) {
        const int64_t j = i - nk;
        const int64_t t = j / (s.H * s.dv), h = j / s.dv % s.H, d = j % s.dv;
        v[j] = kv[(t * s.H + h) * row + s.nope + d];
    }
}

/* One thread per part of each requested row. */
template <typename Dec>
__global__ void get_rows_kernel(const uint8_t *w, int64_t ne0, const int32_t *ids, int64_t total,
                                float *out) {
    const int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    const int64_t nparts = ne0 / Dec::kPart;
    if (i >= total) return;
    const int64_t t = i / nparts, u = i % nparts;
    const int64_t row_bytes = ne0 / (Dec::kPart * Dec::kParts) * (int64_t)Dec::kBytes;
    float v[Dec::kPart];
    moe_cuda::decode_part<Dec>(w + ids[t] * row_bytes, u, v);
    for (int j = 0; j < Dec::kPart; j++) out[t * ne0 + u * Dec::kPart + j] = v[j];
}

}  // namespace

extern "C" int moe_cuda_silu_mul(float *g, const float *u, int64_t n, void *stream) {
    if (n <= 0) return n == 0 ? 0 : -1;
    silu_mul_kernel<<<blocks_for(n), kThreads, 0, static_cast<cudaStream_t>(stream)>>>(g, u, n);
    return launched();
}

extern "C" int moe_cuda_add_bias(float *x, const float *b, int64_t T, int64_t n, void *stream) {
    if (T == 0) return 0;
    if (T < 0 || n <= 0) return -1;
    add_bias_kernel<<<blocks_for(T * n), kThreads, 0, static_cast<cudaStream_t>(stream)>>>(
        x, b, n, T * n);
    return launched();
}

extern "C" int moe_cuda_add_gated(float *x, const float *y, const float *gate, int64_t T,
                                  int64_t n, void *stream) {
    if (T == 0) return 0;
    if (T < 0 || n <= 0) return -1;
    add_gated_kernel<<<blocks_for(T * n), kThreads, 0, static_cast<cudaStream_t>(stream)>>>(
        x, y, gate, n, T * n);
    return launched();
}

extern "C" int moe_cuda_experts_combine(const float *slots, const float *w, int64_t T, int64_t K,
                                        int64_t D, float *out, void *stream) {
    if (T == 0) return 0;
    if (T < 0 || K <= 0 || D <= 0) return -1;
    experts_combine_kernel<<<blocks_for(T * D), kThreads, 0,
                             static_cast<cudaStream_t>(stream)>>>(slots, w, K, D, out, T * D);
    return launched();
}

extern "C" int moe_cuda_mla_kv(const float *kv, const float *kpe, int64_t kpe_stride, int64_t T,
                               int64_t H, int64_t nope, int64_t n_rope, int64_t dv, float *k,
                               float *v, void *stream) {
    if (T == 0) return 0;
    if (T < 0 || H <= 0 || nope < 0 || n_rope < 0 || dv <= 0) return -1;
    const int64_t nk = T * H * (nope + n_rope), nv = T * H * dv;
    const MlaShape s = {kpe_stride, H, nope, n_rope, dv};
    mla_kv_kernel<<<blocks_for(nk + nv), kThreads, 0, static_cast<cudaStream_t>(stream)>>>(
        kv, kpe, s, k, v, nk, nv);
    return launched();
}

extern "C" int moe_cuda_get_rows(int64_t type, const void *w, int64_t ne0, const int32_t *ids,
                                 int32_t T, float *out, void *stream_ptr) {
    if (T == 0) return 0;
    if (T < 0 || ne0 <= 0) return -1;
    cudaStream_t stream = static_cast<cudaStream_t>(stream_ptr);
    return moe_cuda::with_decoder(type, [&](auto dec) {
        using Dec = decltype(dec);
        if (ne0 % (Dec::kPart * Dec::kParts) != 0) return -1;
        const int64_t total = (int64_t)T * (ne0 / Dec::kPart);
        get_rows_kernel<Dec><<<blocks_for(total), kThreads, 0, stream>>>(
            static_cast<const uint8_t *>(w), ne0, ids, total, out);
        return launched();
    });
}
