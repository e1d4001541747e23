/* The GPU discovery of a build without a GPU backend: no GPU. A GPU backend
 * (runtime/cuda/) provides its own moe_devices_discover_gpus instead. */
#include "runtime/device.h"

int moe_devices_discover_gpus(moe_device_entry *out, int cap) {
    (void)out, (void)cap;
    return 0;
}
