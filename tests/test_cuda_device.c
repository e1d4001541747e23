/* The CUDA target links and runs: device discovery, and a kernel round trip on
 * every device when a GPU is present. Skips (77) on machines without one. */
#include <stdio.h>

#include "runtime/cuda/device.h"
#include "test_util.h"

int main(void) {
    int n = moe_cuda_device_count();
    if (n == 0) {
        printf("no CUDA device: skipping\n");
        return 77;
    }
    for (int i = 0; i < n; i++) {
        moe_cuda_device_info info;
        CHECK(moe_cuda_device_get(i, &info) == 0, "device %d info", i);
        printf("device %d: %s, compute %d.%d, %.1f GiB\n", i, info.name, info.cc_major,
               info.cc_minor, (double)info.total_bytes / (1 << 30));
        CHECK(info.total_bytes > 0, "device %d reports memory", i);
        CHECK(moe_cuda_selftest(i) == 0, "kernel round trip on device %d", i);
    }
    CHECK(moe_cuda_device_get(n, &(moe_cuda_device_info){0}) == -1, "index past the end");
    TEST_DONE();
}
