/* clock — the one monotonic clock every tool and progress line reads.
 *
 * Header-only: a timing helper is too small to be worth a call across
 * translation units, and progress code calls it often. Monotonic, so a
 * wall-clock step (NTP, suspend) never makes a rate negative or an ETA jump.
 */
#ifndef MOE_FORMATS_BASE_CLOCK_H
#define MOE_FORMATS_BASE_CLOCK_H

#include <time.h>

/* Seconds since an arbitrary fixed point. */
static inline double moe_now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* Milliseconds since the same point. */
static inline double moe_now_ms(void) { return 1e3 * moe_now_s(); }

#endif
