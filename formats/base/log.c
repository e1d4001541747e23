#include "formats/base/log.h"

#include <stdarg.h>
#include <stdio.h>

static const char *log_prog = "moe";
static moe_log_level log_level = MOE_LOG_INFO;
static const char *const level_names[] = {"error", "warning", "info", "debug"};

void moe_log_set_prog(const char *prog) { log_prog = prog; }
void moe_log_set_level(moe_log_level level) { log_level = level; }
moe_log_level moe_log_get_level(void) { return log_level; }

void moe_log(moe_log_level level, const char *fmt, ...) {
    if (level > log_level)
        return;
    /* one fprintf per line so concurrent threads do not interleave mid-line */
    char line[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    fprintf(stderr, "%s: %s: %s\n", log_prog, level_names[level], line);
}
