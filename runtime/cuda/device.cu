#include "runtime/cuda/device.h"

#include <cuda_runtime.h>
#include <string.h>
#include <stdio.h>

extern "C" int moe_cuda_device_count(void) {
    int n = 0;
    if (cudaGetDeviceCount(&n) != cudaSuccess) {
        cudaGetLastError(); /* clear the sticky "no driver" error */
        return 0;
    }
    return n;
}

extern "C" int moe_cuda_device_get(int i, moe_cuda_device_info *info) {
    cudaDeviceProp prop;
    if (i < 0 || i >= moe_cuda_device_count() || cudaGetDeviceProperties(&prop, i) != cudaSuccess)
        return -1;
    memset(info, 0, sizeof *info);
    snprintf(info->name, sizeof info->name, "%s", prop.name);
    info->cc_major = prop.major;
    info->cc_minor = prop.minor;
    size_t free_b = 0, total_b = 0;
    if (cudaSetDevice(i) == cudaSuccess && cudaMemGetInfo(&free_b, &total_b) == cudaSuccess) {
        info->free_bytes = free_b;
        info->total_bytes = total_b;
    }
    return 0;
}

static __global__ void affine_kernel(float *x, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n)
        x[i] = x[i] * 2.0f + 1.0f;
}

extern "C" int moe_cuda_selftest(int i) {
    enum { N = 1000 };
    float host[N];
    for (int k = 0; k < N; k++)
        host[k] = (float)k;
    float *dev = NULL;
    if (cudaSetDevice(i) != cudaSuccess || cudaMalloc(&dev, sizeof host) != cudaSuccess)
        return -1;
    int ok = cudaMemcpy(dev, host, sizeof host, cudaMemcpyHostToDevice) == cudaSuccess;
    if (ok) {
        affine_kernel<<<(N + 255) / 256, 256>>>(dev, N);
        ok = cudaGetLastError() == cudaSuccess &&
             cudaMemcpy(host, dev, sizeof host, cudaMemcpyDeviceToHost) == cudaSuccess;
    }
    cudaFree(dev);
    for (int k = 0; ok && k < N; k++)
        ok = host[k] == (float)k * 2.0f + 1.0f;
    return ok ? 0 : -1;
}
