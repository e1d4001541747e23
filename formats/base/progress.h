/* progress — the progress report of long conversions (moe-quantize,
 * moe-repack) on stderr: on a terminal one line redrawn in place with a bar,
 * bytes done of the total, MB/s and the time left; otherwise (a log, CI) a
 * plain line at most every MOE_PROGRESS_LOG_SECONDS, so short runs print
 * none and long ones leave a readable trail. Rates are of input bytes. */
#ifndef MOE_FORMATS_BASE_PROGRESS_H
#define MOE_FORMATS_BASE_PROGRESS_H

#include <stdbool.h>
#include <stdint.h>

#define MOE_PROGRESS_LOG_SECONDS 10.0

typedef struct {
    const char *tool;
    uint64_t total;
    bool enabled, tty;
    double start, last;
} moe_progress;

/* enabled false: every call does nothing (--quiet, --json). */
void moe_progress_init(moe_progress *p, const char *tool, uint64_t total_bytes, bool enabled);
/* done bytes so far; redraws at most four times a second on a terminal. */
void moe_progress_update(moe_progress *p, uint64_t done);
/* The last state, ending the terminal line; nothing in a log for a run
 * shorter than one logging interval (the tool's summary line says it all). */
void moe_progress_finish(moe_progress *p, uint64_t done);

#endif
