/* cuda/device — discovery of CUDA devices for placement decisions.
 *
 * Owns: querying the CUDA runtime for devices and their memory. Does not own:
 * kernels or placement policy. Safe to call on machines without a GPU or
 * driver: it then reports zero devices.
 */
#ifndef MOE_RUNTIME_CUDA_DEVICE_H
#define MOE_RUNTIME_CUDA_DEVICE_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct moe_cuda_device_info {
    char name[256];
    size_t total_bytes;
    size_t free_bytes;
    int cc_major, cc_minor;
} moe_cuda_device_info;

/* Number of usable CUDA devices; 0 when there is no driver or no GPU. */
int moe_cuda_device_count(void);

/* Fills *info for device index i. Returns 0 on success, -1 if i is not a
 * usable device. */
int moe_cuda_device_get(int i, moe_cuda_device_info *info);

/* Runs a trivial kernel on device i that writes x*2+1 into n elements and
 * checks the result on the host: proves the toolchain, driver and device work
 * together. Returns 0 on success, -1 on any failure. */
int moe_cuda_selftest(int i);

#ifdef __cplusplus
}
#endif

#endif
