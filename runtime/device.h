/* device — the devices a model can be placed on, and placing it.
 *
 * Owns: discovering devices (CPU, CPU1, and the GPUs of a GPU backend when one
 * is built), resolving llama.cpp's placement flags (-ot, --cpu-moe,
 * --n-cpu-moe, -ngl, -dev) into a device per weight and per layer, checking
 * each device can compute with what it was given (refused at load with a
 * message naming the tensor and the fix, never computed wrong), binding every
 * weight to its device's backend, and the report -v prints.
 * Does not own: moving activations between devices during a decode
 * (forward.c), the kernels (the backends).
 */
#ifndef MOE_RUNTIME_DEVICE_H
#define MOE_RUNTIME_DEVICE_H

#include <stddef.h>
#include <stdint.h>

#include "runtime/backend.h"
#include "runtime/include/moe.h"

/* One device: what moe_device_get reports, and its backend. */
typedef struct moe_device_entry {
    moe_device_info info;
    const moe_backend_ops *ops;
} moe_device_entry;

/* Fills out with every device (CPU first, then CPU1, then GPUs); returns the
 * count. */
int moe_devices_discover(moe_device_entry *out, int cap);

/* The GPUs of the GPU backend built in, appended after the CPU devices
 * (none.c when no GPU backend is built: none). */
int moe_devices_discover_gpus(moe_device_entry *out, int cap);

/* Resolves params' placement for every weight and layer of m (the weights
 * bound to their bytes), checks it, and binds every weight to its device's
 * backend (kernel choice, upload). Usage errors name the option and value;
 * refusals name the tensor, the device and the way out. */
moe_status moe_placement_apply(moe_model *m, const moe_model_params *params, moe_err *err);

/* Releases what binding made on the devices (uploaded copies). */
void moe_placement_release(moe_model *m);

/* Whether device dev may hold weight w; otherwise false with the reason in
 * why (cap bytes), naming the tensor and the fix. */
bool moe_placement_check_weight(const moe_weight *w, const moe_device_entry *dev, char *why,
                                size_t cap);

/* A set of expert indices (bit e). */
typedef struct moe_expert_set {
    uint8_t bits[MOE_MAX_EXPERTS / 8];
    int32_t max;   /* the largest index in the set, -1 when empty */
} moe_expert_set;

/* One -ot value, "PATTERN=DEVICE" or "PATTERN=DEVICE:experts=A-B,C,...": the
 * pattern, the device's index among devs (names compared without case) and,
 * when experts= is given, the experts it moves (*ranged true; otherwise the
 * whole tensor). Errors name the option and value. */
moe_status moe_placement_parse_override(const char *value, const moe_device_entry *devs,
                                        int n_devs, char **pattern, int *dev,
                                        moe_expert_set *experts, bool *ranged, moe_err *err);

#endif
