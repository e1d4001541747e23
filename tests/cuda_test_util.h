/* Host <-> device copies for the CUDA tests; a failed call fails the test
 * (test_util.h's CHECK). */
#ifndef MOE_TESTS_CUDA_TEST_UTIL_H
#define MOE_TESTS_CUDA_TEST_UTIL_H

#include <cuda_runtime.h>
#include <stddef.h>

#include "test_util.h"

/* A device copy of bytes from src (one byte allocated for an empty copy, so
 * the pointer is still a valid allocation). */
static inline void *to_device(const void *src, size_t bytes) {
    void *d = NULL;
    CHECK(cudaMalloc(&d, bytes ? bytes : 1) == cudaSuccess, "cudaMalloc %zu", bytes);
    if (bytes)
        CHECK(cudaMemcpy(d, src, bytes, cudaMemcpyHostToDevice) == cudaSuccess, "upload");
    return d;
}

/* Waits for the queued kernels, then copies bytes back from the device. */
static inline void from_device(void *dst, const void *src, size_t bytes) {
    CHECK(cudaDeviceSynchronize() == cudaSuccess, "kernel ran");
    CHECK(cudaMemcpy(dst, src, bytes, cudaMemcpyDeviceToHost) == cudaSuccess, "download");
}

#endif
