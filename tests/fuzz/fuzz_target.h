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

#include "formats/status.h"

/* libFuzzer entry point: runs moe_fuzz_run and returns 0. */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Runs the target on (data, size). Returns MOE_OK if the input was accepted,
 * otherwise the error status with its message in *err (err must not be NULL).
 * Aborts with a message on stderr if the code under test breaks a contract. */
moe_status moe_fuzz_run(const uint8_t *data, size_t size, moe_err *err);

#endif
