#include "runtime/quality/progress.h"

#include <inttypes.h>
#include <stdio.h>

void moe_progress_start(moe_progress *p, const char *prog, int32_t n_chunk, int32_t n_ctx) {
    *p = (moe_progress){.prog = prog, .n_chunk = n_chunk, .n_ctx = n_ctx};
}

void moe_progress_update(moe_progress *p, int32_t done, double seconds) {
    p->last_seconds = seconds;
    if (p->printed && seconds - p->last_print < 2.0 && done < p->n_chunk)
        return;
    p->printed++;
    p->last_print = seconds;
    double tps = seconds > 0 ? (double)done * p->n_ctx / seconds : 0.0;
    double eta = done > 0 ? seconds / done * (p->n_chunk - done) : 0.0;
    fprintf(stderr, "%s: chunk %" PRId32 "/%" PRId32 ", %.1f tokens/s, ETA %dm%02ds\n", p->prog,
            done, p->n_chunk, tps, (int)(eta / 60), (int)eta % 60);
}

void moe_progress_finish(const moe_progress *p, double seconds) {
    double tokens = (double)p->n_chunk * p->n_ctx;
    fprintf(stderr, "%s: %" PRId32 " chunks (%.0f tokens) in %.2f s, %.1f tokens/s\n", p->prog,
            p->n_chunk, tokens, seconds, seconds > 0 ? tokens / seconds : 0.0);
}
