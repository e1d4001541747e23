/* chunks — the chunked evaluation llama-perplexity and llama-imatrix share.
 *
 * Owns: reading and tokenizing a text file the way those tools do (BOS as the
 * vocabulary asks, control-token text not parsed), cutting the tokens into
 * chunks of n_ctx, decoding chunks in batches (several chunks per decode as
 * separate sequences when the batch holds them, as llama-perplexity does),
 * the first token of each chunk replaced by BOS when the vocabulary adds one,
 * and handing every scored row (positions n_ctx/2 .. n_ctx-2, each predicting
 * the next token) to a callback in chunk order. Also the negative
 * log-likelihood of one logits row and the running perplexity with
 * llama.cpp's error estimate. Does not own: what is done with the rows (KLD,
 * files) or printing, beyond an optional progress callback.
 *
 * Everything goes through the public API (runtime/include/moe.h).
 */
#ifndef MOE_RUNTIME_QUALITY_CHUNKS_H
#define MOE_RUNTIME_QUALITY_CHUNKS_H

#include <stdbool.h>
#include <stdint.h>

#include "runtime/include/moe.h"

/* Reads a whole file and tokenizes it with add_special = true (BOS when the
 * vocabulary asks) and parse_special = false, as common_tokenize does for
 * llama-perplexity and llama-imatrix; like llama.cpp's -f, one trailing
 * newline is dropped first. *tokens is malloc'd (caller frees). */
moe_status moe_quality_tokenize_file(const moe_model *model, const char *path,
                                     moe_token **tokens, int32_t *n_tokens, moe_err *err);

/* How a run is cut: chunks of n_ctx tokens from the start of the text
 * (leftover tokens unused), n_seq chunks per group, each group evaluated in
 * ceil(n_ctx * n_seq / n_batch) decodes. Filled by moe_chunk_plan_make. */
typedef struct moe_chunk_plan {
    int64_t n_vocab;
    int32_t n_ctx;    /* tokens per chunk */
    int32_t n_chunk;  /* chunks evaluated */
    int32_t first;    /* first scored position: n_ctx / 2 */
    int32_t n_seq;    /* chunks per decode group (sequences) */
    int32_t n_batch;  /* tokens per decode */
    bool add_bos;     /* chunk starts are replaced by bos */
    moe_token bos;
} moe_chunk_plan;

/* Most chunks packed into one decode (the runtime's sequence limit). */
#define MOE_CHUNK_MAX_SEQ 64

/* Plans n_ctx-token chunks over n_tokens tokens with a batch of n_batch
 * tokens (llama-perplexity's -b): n_batch >= n_ctx packs n_batch / n_ctx
 * chunks per decode (at most MOE_CHUNK_MAX_SEQ, at most the chunk count) when
 * pack is true, one otherwise; a smaller n_batch evaluates a chunk in
 * ceil(n_ctx / n_batch) decodes. max_chunks < 0: all whole chunks. Fails
 * (MOE_ERR_USAGE) when n_ctx < 4 or the text has fewer than 2 * n_ctx tokens,
 * as the llama.cpp tools do. */
moe_status moe_chunk_plan_make(const moe_model *model, int32_t n_tokens, int32_t n_ctx,
                               int32_t n_batch, bool pack, int32_t max_chunks,
                               moe_chunk_plan *plan, moe_err *err);

/* Context parameters that fit the plan: n_ctx * n_seq cells, n_seq
 * sequences, n_batch; F16 KV cache as llama.cpp's default. */
moe_context_params moe_chunk_plan_context_params(const moe_chunk_plan *plan, int n_threads);

/* One scored row: chunk c, position j (plan.first <= j <= n_ctx - 2), its
 * logits (n_vocab floats, valid only during the call) and the token that
 * follows at j + 1. A non-OK return stops the run with that status. */
typedef moe_status (*moe_chunk_row_fn)(void *user, int32_t chunk, int32_t j,
                                       const float *logits, moe_token next, moe_err *err);

/* Called after each decode group with the chunks done so far and the
 * seconds since the run started. */
typedef void (*moe_chunk_progress_fn)(void *user, int32_t chunks_done, double seconds);

/* Called just before each moe_decode (importance-matrix collectors count
 * calls with it). */
typedef void (*moe_chunk_decode_fn)(void *user);

typedef struct moe_chunk_callbacks {
    moe_chunk_row_fn row;           /* NULL: no logits are requested */
    moe_chunk_progress_fn progress; /* may be NULL */
    moe_chunk_decode_fn before_decode; /* may be NULL */
    void *user;
} moe_chunk_callbacks;

/* Evaluates every chunk of the plan over tokens (the whole text) in ctx,
 * clearing the KV cache before each group, and calls cb->row for each scored
 * row in chunk order, then position order. ctx must have been created with
 * moe_chunk_plan_context_params (or larger). tokens is not modified. */
moe_status moe_chunk_run(moe_context *ctx, const moe_chunk_plan *plan, const moe_token *tokens,
                         const moe_chunk_callbacks *cb, moe_err *err);

/* Negative log-likelihood of token tok under logits (n_vocab floats), as
 * llama-perplexity computes it: max in float, the sum of expf(l - max) in
 * double, nll = log(sum) - (l[tok] - max). */
double moe_nll(const float *logits, int64_t n_vocab, moe_token tok);

/* Running perplexity: sums of nll and nll^2 over count rows. */
typedef struct moe_ppl_acc {
    double sum, sum2;
    int64_t count;
} moe_ppl_acc;

static inline void moe_ppl_add(moe_ppl_acc *a, double nll) {
    a->sum += nll;
    a->sum2 += nll * nll;
    a->count++;
}

/* exp(mean nll); 0 when empty. */
double moe_ppl_value(const moe_ppl_acc *a);
/* llama-perplexity's "+/-": ppl * sqrt((mean(nll^2) - mean(nll)^2) / (count - 1)),
 * 0 when that variance is not positive or count < 2. */
double moe_ppl_error(const moe_ppl_acc *a);

#endif
