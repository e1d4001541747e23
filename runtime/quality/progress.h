/* progress — the progress line of long quality runs (moe-perplexity,
 * moe-imatrix): "chunk i/N, tokens per second, ETA" on stderr, at the first
 * update and then at most every two seconds, plus a closing total. */
#ifndef MOE_RUNTIME_QUALITY_PROGRESS_H
#define MOE_RUNTIME_QUALITY_PROGRESS_H

#include <stdint.h>

typedef struct moe_progress {
    const char *prog;  /* borrowed: the tool's name, the line's prefix */
    int32_t n_chunk, n_ctx;
    double last_print, last_seconds;
    int32_t printed;
} moe_progress;

void moe_progress_start(moe_progress *p, const char *prog, int32_t n_chunk, int32_t n_ctx);
/* done chunks of n_chunk after seconds. */
void moe_progress_update(moe_progress *p, int32_t done, double seconds);
/* "N chunks (T tokens) in S s, X tokens/s". */
void moe_progress_finish(const moe_progress *p, double seconds);

#endif
