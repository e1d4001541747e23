/* The progress report of long conversions (formats/base/progress.h) as a log
 * reads it: stderr redirected to a file is not a terminal, so a run shorter
 * than the logging interval prints nothing and a longer one plain lines with
 * percent, bytes, rate and time left, ending with the elapsed time. */
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "formats/base/progress.h"
#include "test_util.h"

/* Everything written to stderr while fn runs. */
static void capture(void (*fn)(void), char *out, size_t size) {
    char path[] = "/tmp/moe-progress-XXXXXX";
    const int fd = mkstemp(path);
    CHECK(fd >= 0, "mkstemp");
    fflush(stderr);
    const int saved = dup(STDERR_FILENO);
    dup2(fd, STDERR_FILENO);
    fn();
    fflush(stderr);
    dup2(saved, STDERR_FILENO);
    close(saved);
    const ssize_t n = pread(fd, out, size - 1, 0);
    out[n > 0 ? n : 0] = 0;
    close(fd);
    unlink(path);
}

static void short_run(void) {
    moe_progress p;
    moe_progress_init(&p, "moe-test", 4000000000u, true);
    moe_progress_update(&p, 1000000000u);
    moe_progress_finish(&p, 4000000000u);
}

static void long_run(void) {
    moe_progress p;
    moe_progress_init(&p, "moe-test", 4000000000u, true);
    /* as if the run had started 20 s ago and done a quarter: 50 MB/s, 60 s left */
    p.start -= 20.0;
    p.last -= 20.0;
    moe_progress_update(&p, 1000000000u);
    moe_progress_update(&p, 1100000000u); /* within the interval: no line */
    moe_progress_finish(&p, 4000000000u);
}

static void disabled_run(void) {
    moe_progress p;
    moe_progress_init(&p, "moe-test", 100, false);
    p.start -= 20.0;
    p.last -= 20.0;
    moe_progress_update(&p, 50);
    moe_progress_finish(&p, 100);
}

int main(void) {
    char out[1024];
    capture(short_run, out, sizeof out);
    CHECK(out[0] == 0, "a short run logged: '%s'", out);
    capture(disabled_run, out, sizeof out);
    CHECK(out[0] == 0, "a disabled report logged: '%s'", out);
    capture(long_run, out, sizeof out);
    /* exact but for the clock's drift between the calls */
    float pct, done, total, rate, pct2, done2, total2, rate2;
    int eta_m, eta_s, took;
    const int n = sscanf(out,
                         "moe-test: %f%% %f / %f GB %f MB/s ETA %d:%d\n"
                         "moe-test: %f%% %f / %f GB %f MB/s in %d s\n",
                         &pct, &done, &total, &rate, &eta_m, &eta_s, &pct2, &done2, &total2,
                         &rate2, &took);
    CHECK(n == 11, "log lines not as expected (%d fields):\n%s", n, out);
    if (n == 11) {
        CHECK(pct == 25.0f && done == 1.0f && total == 4.0f && rate >= 49 && rate <= 50,
              "first line: %s", out);
        CHECK(eta_m * 60 + eta_s >= 59 && eta_m * 60 + eta_s <= 61, "ETA %d:%02d", eta_m, eta_s);
        CHECK(pct2 == 100.0f && done2 == 4.0f && rate2 >= 195 && rate2 <= 200 && took >= 20 &&
                  took <= 21,
              "last line: %s", out);
    }
    CHECK(!strstr(out, "1.10 /"), "a second line within the interval:\n%s", out);
    CHECK(!strchr(out, '\r') && !strchr(out, '\033'), "terminal controls in a log");
    TEST_DONE();
}
