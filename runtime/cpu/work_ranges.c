/* Contiguous per-thread ranges with stealing (work_ranges.h). A range is two
 * 32-bit unit numbers in one 64-bit word, changed only by compare-and-swap
 * (the owner moves lo up, a thief moves hi down) or, while it is empty, by
 * its owner's store of what it stole. A word can come back to a value it had
 * (a thread can steal back units of its own first range), but that is
 * harmless: the value a swap writes depends on nothing but the value it
 * compared, and the units it moves were in the range at that moment. No data
 * passes through the ranges (outputs are read after the region's barrier);
 * the acquire/release orders are more than the protocol needs. */
#include "runtime/cpu/work_ranges.h"

#include <assert.h>

static inline uint64_t pack(uint64_t lo, uint64_t hi) { return lo | hi << 32; }
static inline int64_t lo_of(uint64_t v) { return (int64_t)(v & 0xffffffffu); }
static inline int64_t hi_of(uint64_t v) { return (int64_t)(v >> 32); }

uint64_t moe_work_ranges_bytes(int nth) {
    return (uint64_t)(nth < 1 ? 1 : nth) * sizeof(moe_work_range);
}

void moe_work_deal(moe_work_range *r, int nth, int64_t n_units) {
    assert(n_units >= 0 && n_units < ((int64_t)1 << 31));
    for (int t = 0; t < nth; t++)
        atomic_store_explicit(&r[t].lo_hi,
                              pack((uint64_t)(n_units * t / nth), (uint64_t)(n_units * (t + 1) / nth)),
                              memory_order_relaxed);
}

int64_t moe_work_segment(const moe_work_segments *s, int64_t u, int64_t *first) {
    if (!s->seg_start) {
        *first = u / s->seg_units * s->seg_units;
        return u / s->seg_units;
    }
    int i = 0;
    while (i + 1 < s->n_seg && s->seg_start[i + 1] <= u)
        i++;
    *first = s->seg_start[i];
    return i;
}

static int64_t segment_end(const moe_work_segments *s, int64_t u) {
    int64_t first;
    const int64_t i = moe_work_segment(s, u, &first);
    return s->seg_start ? s->seg_start[i + 1] : first + s->seg_units;
}

/* Half of what is left from lo (at least min_units), within lo's segment. */
static int64_t chunk_end(int64_t lo, int64_t hi, int64_t min_units, const moe_work_segments *s) {
    int64_t len = (hi - lo) / 2;
    len = len < min_units ? min_units : len;
    int64_t end = lo + len < hi ? lo + len : hi;
    const int64_t seg = segment_end(s, lo);
    return end < seg ? end : seg;
}

bool moe_work_take(moe_work_range *r, int nth, int me, int64_t min_units,
                   const moe_work_segments *seg, int64_t *u0, int64_t *u1) {
    assert(min_units >= 1 && me >= 0 && me < nth && (seg->seg_start || seg->seg_units >= 1));
    for (;;) {
        uint64_t v = atomic_load_explicit(&r[me].lo_hi, memory_order_acquire);
        int64_t lo = lo_of(v), hi = hi_of(v);
        if (lo < hi) {
            const int64_t end = chunk_end(lo, hi, min_units, seg);
            if (atomic_compare_exchange_weak_explicit(&r[me].lo_hi, &v, pack((uint64_t)end, (uint64_t)hi),
                                                      memory_order_acq_rel, memory_order_acquire)) {
                *u0 = lo;
                *u1 = end;
                return true;
            }
            continue;
        }
        int victim = -1;
        int64_t most = 0;
        for (int t = 0; t < nth; t++) {
            const uint64_t w = atomic_load_explicit(&r[t].lo_hi, memory_order_acquire);
            if (t != me && hi_of(w) - lo_of(w) > most) {
                most = hi_of(w) - lo_of(w);
                victim = t;
            }
        }
        if (victim < 0)
            return false;
        v = atomic_load_explicit(&r[victim].lo_hi, memory_order_acquire);
        lo = lo_of(v);
        hi = hi_of(v);
        if (lo >= hi)
            continue;
        const int64_t mid = lo + (hi - lo) / 2; /* the victim keeps [lo, mid) */
        if (!atomic_compare_exchange_weak_explicit(&r[victim].lo_hi, &v, pack((uint64_t)lo, (uint64_t)mid),
                                                   memory_order_acq_rel, memory_order_acquire))
            continue;
        /* [mid, hi) is ours now; nobody else writes an empty range */
        const int64_t end = chunk_end(mid, hi, min_units, seg);
        atomic_store_explicit(&r[me].lo_hi, pack((uint64_t)end, (uint64_t)hi), memory_order_release);
        *u0 = mid;
        *u1 = end;
        return true;
    }
}
