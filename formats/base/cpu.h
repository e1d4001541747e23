/* cpu — how many processors this machine has online, the default thread
 * count of every tool and of the runtime when the user gives none. */
#ifndef MOE_FORMATS_CPU_H
#define MOE_FORMATS_CPU_H

#include <limits.h>
#include <unistd.h>

/* At least 1, also when the system cannot tell. */
static inline int moe_online_cpus(void) {
    const long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n < 1 ? 1 : n > INT_MAX ? INT_MAX : (int)n;
}

#endif
