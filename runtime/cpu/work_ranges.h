/* work_ranges — a parallel phase's work units dealt to the threads as
 * contiguous ranges, with stealing.
 *
 * Owns: the per-thread ranges of one phase (moe_work_range, one cache line
 * each, in memory the caller owns: moe_work_ranges_bytes). Does not own: what
 * a unit is (rows of a product or of an expert) or the threads (OpenMP).
 *
 * Why: reading one token's weights is a memory stream, and every call a
 * thread starts on a new row range starts its streams cold. Units taken from
 * one shared counter hand each thread every other piece of a product (a
 * product of 2 MB in units of 128 KB read 45 GB/s on the 2-vCPU host where
 * the same bytes in two contiguous halves read 50-59). Here each thread walks
 * its own range front to back, taking half of what is left at a time (at
 * least min_units, never across a segment end: a segment is one product or
 * one expert, one call), so it starts few streams; a thread whose range is
 * empty takes the back half of the fullest range left, so that the threads
 * still finish together when one is slowed (the master takes the host's
 * interrupts). Which thread computes a unit never changes a value: the
 * callers' units are whole strips of their kernels.
 */
#ifndef MOE_RUNTIME_CPU_WORK_RANGES_H
#define MOE_RUNTIME_CPU_WORK_RANGES_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

/* One thread's range: two 32-bit unit numbers in one word (work_ranges.c). */
typedef struct moe_work_range {
    _Alignas(64) _Atomic uint64_t lo_hi;
} moe_work_range;

/* Bytes for the ranges of nth threads (each on a cache line of its own). */
uint64_t moe_work_ranges_bytes(int nth);

/* Units [0, n_units) dealt to nth threads in equal contiguous ranges, thread
 * t's starting at n_units * t / nth, in r (moe_work_ranges_bytes(nth) bytes,
 * 64-byte aligned). Call before the parallel region that takes them (its
 * start publishes the ranges). n_units < 2^31. */
void moe_work_deal(moe_work_range *r, int nth, int64_t n_units);

/* Where the segment holding unit u ends: units [seg_start[i], seg_start[i+1])
 * form segment i (n_seg segments, seg_start[n_seg] = n_units), or, when
 * seg_start is NULL, every seg_units units form one. */
typedef struct moe_work_segments {
    const int64_t *seg_start;
    int n_seg;
    int64_t seg_units;
} moe_work_segments;

/* The segment holding unit u (0-based), and in *first its first unit. */
int64_t moe_work_segment(const moe_work_segments *s, int64_t u, int64_t *first);

/* The next chunk [*u0, *u1) for thread me of nth (the nth given to
 * moe_work_deal, not the team's size: a thread that never comes has its range
 * taken by the others): from the front of its own range, else the back half
 * of the fullest other range, the first chunk of it taken and the rest made
 * me's range. Returns false when no other range was seen holding units; some
 * may still be with other threads, which compute them, so read the outputs
 * after the region's barrier. min_units >= 1; seg_units >= 1 where seg_start
 * is NULL. Lock-free; safe to call from every thread of the region at once. */
bool moe_work_take(moe_work_range *r, int nth, int me, int64_t min_units,
                   const moe_work_segments *seg, int64_t *u0, int64_t *u1);

#endif
