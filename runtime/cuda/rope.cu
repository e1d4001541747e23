/* cuda/rope — rotary position embedding (NORM, NEOX, YaRN), one thread per
 * rotated pair of one head of one token. */
#include <cuda_runtime.h>
#include <math.h>

extern "C" {  // runtime/ is C without C++ guards
#include "runtime/model.h"
}
#include "runtime/cuda/kernels.h"

namespace {

constexpr int kThreads = 256;

/* The constants of moe_cpu_rope, formed on the host with the host's powf and
 * logf so that the device starts from the same f32 values. */
struct RopeConsts {
    int n_dims;
    bool neox, yarn, fused;
    float theta_scale, freq_scale, ext_factor, mscale, corr_lo, corr_hi;
};

/* The pair's angle and magnitude exactly as moe_cpu_rope's rope_yarn forms
 * them: theta is pos times theta_scale p times over (the CPU's running
 * product), and the explicit _rn operations keep nvcc from fusing
 * multiply-adds the CPU does not fuse. */
__device__ void pair_angle(const RopeConsts &c, int32_t pos, int p, float *cos_t, float *sin_t) {
    float theta_extrap = (float)pos;
    for (int i = 0; i < p; i++) theta_extrap = __fmul_rn(theta_extrap, c.theta_scale);
    const float theta_interp = __fmul_rn(c.freq_scale, theta_extrap);
    float theta = theta_interp;
    if (c.yarn) {
        const float y = __fdiv_rn(__fsub_rn((float)p, c.corr_lo),
                                  fmaxf(0.001f, __fsub_rn(c.corr_hi, c.corr_lo)));
        const float ramp = __fsub_rn(1.0f, fminf(1.0f, fmaxf(0.0f, y)));
        const float mix = __fmul_rn(ramp, c.ext_factor);
        theta = __fadd_rn(__fmul_rn(theta_interp, __fsub_rn(1.0f, mix)),
                          __fmul_rn(theta_extrap, mix));
    }
    *cos_t = __fmul_rn(cosf(theta), c.mscale);
    *sin_t = __fmul_rn(sinf(theta), c.mscale);
}

__global__ void rope_kernel(float *v, int64_t T, int64_t token_stride, int64_t n_heads,
                            int64_t head_stride, const int32_t *pos, RopeConsts c) {
    const int64_t half = c.n_dims / 2;
    const int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= T * n_heads * half) return;
    const int p = (int)(i % half);
    const int64_t h = i / half % n_heads, t = i / half / n_heads;
    float cs, sn;
    pair_angle(c, pos[t], p, &cs, &sn);
    float *x = v + t * token_stride + h * head_stride;
    const int64_t i0 = c.neox ? p : 2 * p, i1 = c.neox ? p + half : 2 * p + 1;
    const float x0 = x[i0], x1 = x[i1];
    if (c.fused) { /* moe_rope_params.fused: the CPU's fmaf, rounded once */
        x[i0] = __fmaf_rn(x0, cs, -__fmul_rn(x1, sn));
        x[i1] = __fmaf_rn(x0, sn, __fmul_rn(x1, cs));
    } else {
        x[i0] = __fsub_rn(__fmul_rn(x0, cs), __fmul_rn(x1, sn));
        x[i1] = __fadd_rn(__fmul_rn(x0, sn), __fmul_rn(x1, cs));
    }
}

}  // namespace

extern "C" int moe_cuda_rope(float *v, int64_t T, int64_t token_stride, int64_t n_heads,
                             int64_t head_stride, const int32_t *pos,
                             const struct moe_rope_params *r, void *stream) {
    if (r->n_dims <= 0 || r->n_dims % 2 != 0 || T < 0 || n_heads < 0) return -1;
    const int64_t n = T * n_heads * (r->n_dims / 2);
    if (n == 0) return 0;
    RopeConsts c;
    c.n_dims = r->n_dims;
    c.neox = r->neox;
    c.fused = r->fused;
    c.yarn = r->ext_factor != 0.0f;
    c.theta_scale = powf(r->freq_base, -2.0f / (float)r->n_dims);
    c.freq_scale = r->freq_scale;
    c.ext_factor = r->ext_factor;
    c.mscale = r->attn_factor;
    if (c.yarn) c.mscale *= 1.0f + 0.1f * logf(1.0f / r->freq_scale);
    c.corr_lo = r->corr_lo;
    c.corr_hi = r->corr_hi;
    rope_kernel<<<(unsigned)((n + kThreads - 1) / kThreads), kThreads, 0,
                  static_cast<cudaStream_t>(stream)>>>(v, T, token_stride, n_heads, head_stride,
                                                       pos, c);
    return cudaGetLastError() == cudaSuccess ? 0 : -1;
}
