/* work_ranges: a phase's units dealt to threads as contiguous ranges, with
 * stealing. Simulated schedules (one process plays every thread, whole calls
 * one at a time, in an order drawn from a printed seed, some threads slower
 * or stalled) and a real OpenMP run (the only part where calls overlap: failed
 * swaps, a thief between its swap and its store) check that every unit is
 * taken exactly once, that a chunk never crosses a segment (one product, one
 * expert: one kernel call), that a thread starts at the front of its own
 * range and walks it in halves, and that threads left with nothing take the
 * back half of another's. */
#include <stdlib.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#include "runtime/cpu/work_ranges.h"
#include "test_util.h"

enum { MAX_T = 9, MAX_U = 5000 };

static moe_work_range *ranges_new(int nth) {
    moe_work_range *r = aligned_alloc(64, (size_t)moe_work_ranges_bytes(nth));
    if (!r) {
        fprintf(stderr, "out of memory\n");
        exit(1);
    }
    return r;
}

/* Segment index of unit u. */
static int64_t seg_of(const moe_work_segments *s, int64_t u) {
    if (!s->seg_start)
        return u / s->seg_units;
    int64_t i = 0;
    while (s->seg_start[i + 1] <= u)
        i++;
    return i;
}

/* One simulated phase: threads called in a random order weighted by speed
 * (speed 0: stalled, never calls). Returns the number of failures found. */
static int simulate(int nth, int64_t n, int64_t min_units, const moe_work_segments *seg,
                    const int *speed, uint32_t seed) {
    static int taken[MAX_U];
    moe_work_range *r = ranges_new(nth);
    memset(taken, 0, sizeof taken);
    moe_work_deal(r, nth, n);
    test_rng_state = seed;
    int64_t own_lo[MAX_T], own_hi[MAX_T];
    bool done[MAX_T] = {false}, first[MAX_T];
    int total_speed = 0, fails = 0;
    for (int t = 0; t < nth; t++) {
        first[t] = true;
        own_lo[t] = n * t / nth;
        own_hi[t] = n * (t + 1) / nth;
        total_speed += speed[t];
        done[t] = speed[t] == 0;
    }
    for (int steps = 0; steps < 100000; steps++) {
        bool all = true;
        for (int t = 0; t < nth; t++)
            all &= done[t];
        if (all)
            break;
        int pick = (int)(test_rng_next() % (uint32_t)total_speed), t = 0;
        while (pick >= speed[t])
            pick -= speed[t++];
        if (done[t])
            continue;
        int64_t u0, u1;
        if (!moe_work_take(r, nth, t, min_units, seg, &u0, &u1)) {
            done[t] = true;
            continue;
        }
        if (!(u0 >= 0 && u0 < u1 && u1 <= n)) {
            fails++;
            CHECK(false, "seed %u: chunk [%lld, %lld) outside [0, %lld)", seed, (long long)u0,
                  (long long)u1, (long long)n);
            continue;
        }
        if (seg_of(seg, u0) != seg_of(seg, u1 - 1)) {
            fails++;
            CHECK(false, "seed %u: chunk [%lld, %lld) crosses a segment end", seed,
                  (long long)u0, (long long)u1);
        }
        /* a thread starts at the front of its own range while that is untouched */
        if (first[t] && own_lo[t] < own_hi[t] && taken[own_lo[t]] == 0 && u0 != own_lo[t]) {
            fails++;
            CHECK(false, "seed %u: thread %d began at %lld, not at its range's start %lld", seed, t,
                  (long long)u0, (long long)own_lo[t]);
        }
        first[t] = false;
        for (int64_t u = u0; u < u1; u++)
            taken[u]++;
    }
    for (int64_t u = 0; u < n; u++)
        if (taken[u] != 1) {
            fails++;
            CHECK(false, "seed %u: nth %d n %lld: unit %lld taken %d times", seed, nth,
                  (long long)n, (long long)u, taken[u]);
            break;
        }
    free(r);
    return fails;
}

static void simulated_schedules(void) {
    const uint32_t seed0 = 20261207u;
    printf("simulated schedules: seeds %u..%u\n", seed0, seed0 + 599);
    int fails = 0;
    for (uint32_t k = 0; k < 600; k++) {
        test_rng_state = seed0 + k;
        const int nth = 1 + (int)(test_rng_next() % MAX_T);
        const int64_t n = (int64_t)(test_rng_next() % 700);
        const int64_t min_units = 1 + (int64_t)(test_rng_next() % 5);
        int64_t starts[6];
        moe_work_segments seg = {.seg_units = 1 + (int64_t)(test_rng_next() % 130)};
        if (test_rng_next() % 2) { /* uneven products, one of them empty */
            starts[0] = 0;
            for (int i = 1; i < 5; i++)
                starts[i] = starts[i - 1] + (i == 2 ? 0 : (int64_t)(test_rng_next() % 200));
            starts[5] = n > starts[4] ? n : starts[4];
            seg = (moe_work_segments){.seg_start = starts, .n_seg = 5};
        }
        const int64_t units = seg.seg_start ? starts[5] : n;
        int speed[MAX_T];
        for (int t = 0; t < nth; t++)
            speed[t] = 1 + (int)(test_rng_next() % 8);
        if (nth > 1 && k % 3 == 0)
            speed[test_rng_next() % (uint32_t)nth] = 0; /* one thread never shows up */
        fails += simulate(nth, units, min_units, &seg, speed, seed0 + k);
    }
    CHECK(fails == 0, "%d failures in simulated schedules", fails);
}

/* Equal speeds, one segment: each thread's first chunk is half its range,
 * and a thread that never comes has its whole range taken by the others. */
static void chunk_sizes_and_steals(void) {
    moe_work_range *r = ranges_new(2);
    const moe_work_segments seg = {.seg_units = 1000};
    moe_work_deal(r, 2, 64);
    int64_t u0, u1;
    CHECK(moe_work_take(r, 2, 0, 4, &seg, &u0, &u1) && u0 == 0 && u1 == 16,
          "thread 0's first chunk [%lld, %lld), want [0, 16)", (long long)u0, (long long)u1);
    CHECK(moe_work_take(r, 2, 1, 4, &seg, &u0, &u1) && u0 == 32 && u1 == 48,
          "thread 1's first chunk [%lld, %lld), want [32, 48)", (long long)u0, (long long)u1);
    CHECK(moe_work_take(r, 2, 0, 4, &seg, &u0, &u1) && u0 == 16 && u1 == 24,
          "thread 0's second chunk [%lld, %lld), want [16, 24)", (long long)u0, (long long)u1);
    /* thread 0 runs dry while thread 1 stalls: it takes the back half of 1's rest */
    int64_t got = 0;
    while (moe_work_take(r, 2, 0, 4, &seg, &u0, &u1) && u1 <= 32)
        got += u1 - u0;
    CHECK(got == 8 && u0 == 56 && u1 == 60,
          "after its range, thread 0 took [%lld, %lld), want [56, 60): half of the back half of [48, 64)",
          (long long)u0, (long long)u1);
    CHECK(moe_work_take(r, 2, 1, 4, &seg, &u0, &u1) && u0 == 48 && u1 == 52,
          "thread 1 went on at [%lld, %lld), want [48, 52)", (long long)u0, (long long)u1);
    /* segments cut chunks: 3 products of 5, 0 and 9 units */
    const int64_t starts[] = {0, 5, 5, 14};
    const moe_work_segments s3 = {.seg_start = starts, .n_seg = 3};
    moe_work_deal(r, 1, 14);
    CHECK(moe_work_take(r, 1, 0, 1, &s3, &u0, &u1) && u0 == 0 && u1 == 5,
          "first chunk [%lld, %lld), want product 0 whole [0, 5)", (long long)u0, (long long)u1);
    CHECK(moe_work_take(r, 1, 0, 1, &s3, &u0, &u1) && u0 == 5 && u1 == 9,
          "second chunk [%lld, %lld), want half of the rest [5, 9)", (long long)u0, (long long)u1);
    moe_work_deal(r, 2, 0);
    CHECK(!moe_work_take(r, 2, 0, 1, &s3, &u0, &u1) && !moe_work_take(r, 2, 1, 1, &s3, &u0, &u1),
          "no units: nothing to take");
    free(r);
}

/* Real threads, more than the machine has cores (so that they are preempted
 * mid-phase and steal): every unit once. */
static void openmp_run(void) {
#ifdef _OPENMP
    enum { N = 20000, NTH = 7 };
    static int taken[N];
    moe_work_range *r = ranges_new(NTH);
    const moe_work_segments seg = {.seg_units = 96};
    for (int rep = 0; rep < 50; rep++) {
        memset(taken, 0, sizeof taken);
        moe_work_deal(r, NTH, N);
#pragma omp parallel num_threads(NTH)
        {
            int64_t u0, u1;
            while (moe_work_take(r, NTH, omp_get_thread_num(), 2, &seg, &u0, &u1))
                for (int64_t u = u0; u < u1; u++) {
#pragma omp atomic
                    taken[u]++;
                }
        }
        int bad = 0;
        for (int u = 0; u < N; u++)
            bad += taken[u] != 1;
        CHECK(bad == 0, "OpenMP run %d: %d units not taken exactly once", rep, bad);
    }
    free(r);
#else
    printf("built without OpenMP: the threaded run is skipped\n");
#endif
}

int main(void) {
    simulated_schedules();
    chunk_sizes_and_steals();
    openmp_run();
    TEST_DONE();
}
