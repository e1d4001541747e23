/* device — the devices a model can be placed on, and placing it.
 *
 * Owns: discovering devices (CPU, CPU1, and the GPUs of a GPU backend when one
 * is built), resolving llama.cpp's placement flags (-ot, --cpu-moe,
 * --n-cpu-moe, -ngl, -dev) into a device per weight and per layer, checking
 * each device can compute with what it was given (refused at load with a
 * message naming the tensor and the fix, never computed wrong), binding every
 * weight to its device's backend, and the report -v prints; placement plans
 * (--hot-experts, --fit: placement_plan.c) that compute those flags from the
 * model's sizes, the device's free memory and expert statistics.
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

/* Most -ot rules one placement takes (a plan writes one per MoE layer). */
#define MOE_MAX_OVERRIDES 256

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

/* The index of the device called name (len bytes, compared without case)
 * among devs, or -1. */
int moe_device_find(const moe_device_entry *devs, int n, const char *name, size_t len);

/* A placement plan (moe.h: hot_experts, gpu_budget, fit): the flags it
 * stands for. */
typedef struct moe_placement_plan {
    moe_model_params params; /* the caller's, with devices, n_gpu_layers and the
                                overrides the plan chose; points into the plan */
    char **ot;               /* [n_ot] the -ot values params uses; owned */
    int32_t n_ot;
    char *devices;           /* owned */
    char *args;              /* the plan as arguments (moe_model_placement_args); owned */
    char *summary;           /* one line on what went where; owned */
} moe_placement_plan;

/* Computes the plan p asks for on m (devices discovered, weights bound to
 * their bytes, nothing placed yet) into *plan; when p asks for none,
 * plan->params is *p and args NULL. Usage errors name the option, a
 * statistics file of another model is refused naming the file and the
 * mismatch. Free with moe_placement_plan_free, also after a failure. */
moe_status moe_placement_plan_make(const moe_model *m, const moe_model_params *p,
                                   moe_placement_plan *plan, moe_err *err);
void moe_placement_plan_free(moe_placement_plan *plan);

#endif
