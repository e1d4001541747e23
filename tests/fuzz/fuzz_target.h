/* fuzz_target — what every fuzz target in tests/fuzz/ provides.
 *
 * A target is one .c file that defines LLVMFuzzerTestOneInput (the libFuzzer
 * entry point) and moe_fuzz_run, which does the same work and also returns the
 * status the input earned. The same file links either with libFuzzer
 * (-fsanitize=fuzzer) or with replay_main.c, a plain main() that runs a corpus
 * through moe_fuzz_run and checks each file's expected verdict, so CI replays
 * every checked-in input under ASan+UBSan without needing libFuzzer.
 *
 * A target aborts (a "crash" to libFuzzer, a failed test to the replay) when an
 * invariant of the code under test does not hold; bad input itself must only
 * ever produce an error status.
 */
#ifndef MOE_TESTS_FUZZ_TARGET_H
#define MOE_TESTS_FUZZ_TARGET_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

#include "formats/base/status.h"

/* Aborts naming the target and the broken invariant. */
#define MOE_FUZZ_REQUIRE(cond)                                                           \
    do {                                                                                 \
        if (!(cond)) {                                                                   \
            fprintf(stderr, "fuzz: invariant failed at %s:%d: %s\n", __FILE__, __LINE__, \
                    #cond);                                                              \
            abort();                                                                     \
        }                                                                                \
    } while (0)

/* A memory file holding data[0..size), for code that takes a path: its
 * descriptor (close it when done), path set to /proc/self/fd/N. -1 on failure. */
static inline int moe_fuzz_memfd(const uint8_t *data, size_t size, char *path, size_t cap) {
    int fd = memfd_create("fuzz-input", MFD_CLOEXEC);
    if (fd < 0)
        return -1;
    for (size_t done = 0; done < size;) {
        ssize_t k = write(fd, data + done, size - done);
        if (k <= 0) {
            close(fd);
            return -1;
        }
        done += (size_t)k;
    }
    snprintf(path, cap, "/proc/self/fd/%d", fd);
    return fd;
}

/* Reads every byte of p[0..n) so ASan sees the whole range; returns their
 * XOR (callers may ignore it). */
static inline uint8_t moe_fuzz_touch(const void *p, size_t n) {
    const volatile uint8_t *b = (const volatile uint8_t *)p;
    uint8_t acc = 0;
    for (size_t i = 0; i < n; i++)
        acc ^= b[i];
    return acc;
}

/* libFuzzer entry point: runs moe_fuzz_run and returns 0. */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Runs the target on (data, size). Returns MOE_OK if the input was accepted,
 * otherwise the error status with its message in *err (err must not be NULL).
 * Aborts with a message on stderr if the code under test breaks a contract. */
moe_status moe_fuzz_run(const uint8_t *data, size_t size, moe_err *err);

#endif
