/* test_util — the tiny assertion layer of our C tests.
 *
 * CHECK(cond, fmt...) records a failure with file:line and the message and
 * keeps going; TEST_DONE() prints "N passed, N failed" and returns the exit
 * code. Tests that need the conformance pack call test_conformance_dir(),
 * which exits 77 (CTest "skipped") when it is absent.
 */
#ifndef MOE_TESTS_TEST_UTIL_H
#define MOE_TESTS_TEST_UTIL_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

static int test_passed, test_failed;

#define CHECK(cond, ...)                                           \
    do {                                                           \
        if (cond) {                                                \
            test_passed++;                                         \
        } else {                                                   \
            test_failed++;                                         \
            fprintf(stderr, "%s:%d: FAILED: %s: ", __FILE__, __LINE__, #cond); \
            fprintf(stderr, __VA_ARGS__);                          \
            fputc('\n', stderr);                                   \
        }                                                          \
    } while (0)

#define TEST_DONE()                                                        \
    do {                                                                   \
        printf("%d passed, %d failed\n", test_passed, test_failed);        \
        return test_failed ? 1 : (test_passed ? 0 : 1);                    \
    } while (0)

/* A reproducible xorshift32 stream for generated test data; seed it by
 * assigning test_rng_state (never 0). */
static uint32_t test_rng_state = 1;
static inline uint32_t test_rng_next(void) {
    test_rng_state ^= test_rng_state << 13;
    test_rng_state ^= test_rng_state >> 17;
    test_rng_state ^= test_rng_state << 5;
    return test_rng_state;
}

/* The whole file, NUL-terminated (the NUL is not counted in *len); NULL
 * if it cannot be read. The caller frees it. */
static inline void *test_read_file(const char *path, size_t *len) {
    *len = 0;
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    char *buf = NULL;
    long n = fseek(f, 0, SEEK_END) == 0 ? ftell(f) : -1;
    if (n >= 0 && fseek(f, 0, SEEK_SET) == 0 && (buf = (char *)malloc((size_t)n + 1)) &&
        fread(buf, 1, (size_t)n, f) == (size_t)n) {
        buf[n] = 0;
        *len = (size_t)n;
    } else {
        free(buf);
        buf = NULL;
    }
    fclose(f);
    return buf;
}

/* dir/name in one of 8 rotating buffers: a call may hold a few paths at once. */
static inline const char *test_path_in(const char *dir, const char *name) {
    static char buf[8][512];
    static int k;
    k = (k + 1) % 8;
    snprintf(buf[k], sizeof buf[k], "%s/%s", dir, name);
    return buf[k];
}

/* Removes a test's scratch directory and everything in it (best effort). */
static inline void test_remove_dir(const char *dir) {
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", dir);
}

static inline const char *test_conformance_dir(void) {
    const char *d = getenv("MOE_CONFORMANCE_DIR");
    if (!d || !*d) {
        fprintf(stderr, "MOE_CONFORMANCE_DIR not set: skipping\n");
        exit(77);
    }
    /* The pack is shipped beside the clone (../shared/conformance), not in it:
     * a clone without it must skip, not fail, every test that reads it. */
    char readme[4096];
    snprintf(readme, sizeof readme, "%s/README.md", d);
    FILE *f = fopen(readme, "r");
    if (!f) {
        fprintf(stderr, "conformance pack not found at %s: skipping\n", d);
        exit(77);
    }
    fclose(f);
    return d;
}

#endif
