#include "formats/base/progress.h"

#include <stdio.h>
#include <unistd.h>

#include "formats/base/clock.h"

void moe_progress_init(moe_progress *p, const char *tool, uint64_t total_bytes, bool enabled) {
    *p = (moe_progress){.tool = tool, .total = total_bytes, .enabled = enabled,
                        .tty = enabled && isatty(STDERR_FILENO)};
    p->start = p->last = moe_now_s();
}

/* "1:02:03", "2:03" or "7 s": what a person reads at a glance. */
static void format_duration(double s, char *buf, size_t size) {
    const long t = s < 0 ? 0 : (long)(s + 0.5);
    if (t >= 3600)
        snprintf(buf, size, "%ld:%02ld:%02ld", t / 3600, t / 60 % 60, t % 60);
    else if (t >= 60)
        snprintf(buf, size, "%ld:%02ld", t / 60, t % 60);
    else
        snprintf(buf, size, "%ld s", t);
}

static void draw(moe_progress *p, uint64_t done, double now, bool final) {
    enum { BAR = 24 };
    const double frac = p->total ? (double)done / (double)p->total : 1.0;
    const double elapsed = now - p->start, rate = elapsed > 0 ? (double)done / elapsed : 0.0;
    char eta[32];
    format_duration(final ? elapsed : rate > 0 ? (double)(p->total - done) / rate : 0.0, eta,
                    sizeof eta);
    const char *eta_label = final ? "in" : "ETA";
    if (p->tty) {
        char bar[BAR + 1];
        const int filled = (int)(frac * BAR + 0.5);
        for (int k = 0; k < BAR; k++)
            bar[k] = k < filled ? '#' : '.';
        bar[BAR] = 0;
        fprintf(stderr, "\r%s: [%s] %5.1f%%  %.2f / %.2f GB  %.0f MB/s  %s %s \033[K", p->tool,
                bar, 100.0 * frac, (double)done / 1e9, (double)p->total / 1e9, rate / 1e6,
                eta_label, eta);
        if (final)
            fputc('\n', stderr);
    } else {
        fprintf(stderr, "%s: %5.1f%%  %.2f / %.2f GB  %.0f MB/s  %s %s\n", p->tool, 100.0 * frac,
                (double)done / 1e9, (double)p->total / 1e9, rate / 1e6, eta_label, eta);
    }
    fflush(stderr);
}

void moe_progress_update(moe_progress *p, uint64_t done) {
    if (!p->enabled)
        return;
    const double now = moe_now_s();
    if (now - p->last < (p->tty ? 0.25 : MOE_PROGRESS_LOG_SECONDS))
        return;
    p->last = now;
    draw(p, done, now, false);
}

void moe_progress_finish(moe_progress *p, uint64_t done) {
    if (!p->enabled)
        return;
    const double now = moe_now_s();
    if (p->tty || now - p->start >= MOE_PROGRESS_LOG_SECONDS)
        draw(p, done, now, true);
}
