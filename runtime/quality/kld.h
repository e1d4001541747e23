/* kld — 16-bit log-probability files and KL-divergence statistics.
 *
 * Owns: quantizing one logits row into 16-bit log-probabilities with a
 * per-row scale and offset, the base-logits file that moe-perplexity
 * --kl-divergence-base writes and --kl-divergence reads, the KL divergence
 * between two such rows, and the statistics llama-perplexity reports for a
 * KLD run (PPL ratio and difference with their uncertainties, mean KLD and
 * its percentiles, delta-p, same top token). Does not own: evaluating a model
 * (chunks.h) or printing.
 *
 * The comparison is made between the two models' 16-bit rows, both quantized
 * by moe_logprob_quantize and renormalised: a model compared with itself gives
 * identical rows, so a KLD of exactly 0 and 100% same top token. The NLL of
 * the scored token and the arg-max are kept exactly beside each row.
 *
 * File layout (little-endian; "base file"):
 *
 *   offset  size  field
 *        0     8  magic "MOEKLDB\0"
 *        8     4  u32 version (1)
 *       12     4  u32 n_vocab
 *       16     4  u32 n_ctx (tokens per chunk)
 *       20     4  u32 n_chunk
 *       24     4  u32 first (first scored position, n_ctx / 2)
 *       28     4  u32 flags (bit 0: chunk starts were replaced by BOS)
 *       32     4  i32 BOS id (-1: none)
 *       36     4  f32 range: log-probability span the 16-bit codes cover
 *       40     8  u64 vocabulary fingerprint (XXH3 of every token's text)
 *       48     8  u64 base model fingerprint (moe_model_fingerprint)
 *       56    32  base model architecture, NUL padded
 *       88     8  reserved, zero
 *       96        i32 tokens[n_chunk * n_ctx] (the text, as tokenized)
 *          then n_chunk * (n_ctx - 1 - first) rows, chunk by chunk, position
 *          first .. n_ctx - 2, each predicting the token after it:
 *             f64 nll      -log p(next), exact
 *             f32 scale    log-prob step per code
 *             f32 offset   log-prob of code 0
 *             i32 top      arg-max of the logits (lowest id on ties)
 *             i32 next     the token scored
 *             u16 codes[n_vocab]: log p_i ~= offset + scale * code_i
 *
 * Row quantization: lo = max(min logit, max logit - range); scale =
 * (max - lo) / 65535; code_i = round((l_i - lo) / scale) for l_i > lo, else 0
 * (so everything below range is pinned at the offset); offset = lo - max -
 * log(sum exp(l - max)). The file size is checked exactly on open.
 */
#ifndef MOE_RUNTIME_QUALITY_KLD_H
#define MOE_RUNTIME_QUALITY_KLD_H

#include <stdbool.h>
#include <stdint.h>

#include "runtime/include/moe.h"
#include "runtime/quality/chunks.h"

#define MOE_LOGPROB_RANGE 32.0f
#define MOE_KLD_MAGIC "MOEKLDB"
#define MOE_KLD_VERSION 1u
#define MOE_KLD_HEADER_BYTES 96

typedef struct moe_logprob_row {
    double nll;
    float scale, offset;
    int32_t top, next;
    uint16_t *codes; /* n_vocab; owned by whoever allocated the row */
} moe_logprob_row;

/* Quantizes logits (n_vocab floats) into row (row->codes must hold n_vocab)
 * with the scored token next. Deterministic. */
void moe_logprob_quantize(const float *logits, int64_t n_vocab, moe_token next,
                          moe_logprob_row *row);

/* KL(base || q) between the two rows' renormalised distributions, in double.
 * scratch holds n_vocab doubles. Rows with identical codes give exactly 0. */
double moe_logprob_kld(const moe_logprob_row *base, const moe_logprob_row *q, int64_t n_vocab,
                       double *scratch);

/* XXH3 over every token's text (length-prefixed, control tokens rendered). */
uint64_t moe_vocab_fingerprint(const moe_model *model);

typedef struct moe_kld_header {
    uint32_t n_vocab, n_ctx, n_chunk, first;
    bool add_bos;
    int32_t bos;
    float range;
    uint64_t vocab_fp, model_fp;
    char arch[32];
} moe_kld_header;

/* The header a run of plan over model writes. */
moe_kld_header moe_kld_header_make(const moe_model *model, const moe_chunk_plan *plan);

/* ---- writing ---- */
typedef struct moe_kld_writer moe_kld_writer;

/* Starts path: a temp file beside it (removed on signals) receives the
 * header and tokens (n_chunk * n_ctx ids); nothing appears at path before
 * moe_kld_writer_finish. */
moe_status moe_kld_writer_create(const char *path, const moe_kld_header *h,
                                 const moe_token *tokens, moe_kld_writer **out, moe_err *err);
/* Appends the next row (chunk order, then position). */
moe_status moe_kld_writer_row(moe_kld_writer *w, const moe_logprob_row *row, moe_err *err);
/* Checks the row count, fsyncs and renames over path; frees w in any case
 * (the temp file is removed on failure). */
moe_status moe_kld_writer_finish(moe_kld_writer *w, moe_err *err);
/* Removes the temp file and frees w; NULL is a no-op. */
void moe_kld_writer_abort(moe_kld_writer *w);

/* ---- reading ---- */
typedef struct moe_kld_reader moe_kld_reader;

/* Opens path, validating magic, version, counts and the exact file size;
 * reads the header and tokens. */
moe_status moe_kld_reader_open(const char *path, moe_kld_reader **out, moe_err *err);
const moe_kld_header *moe_kld_reader_header(const moe_kld_reader *r);
/* n_chunk * n_ctx ids; borrowed until close. */
const moe_token *moe_kld_reader_tokens(const moe_kld_reader *r);
/* Reads the next row into row (row->codes must hold n_vocab). */
moe_status moe_kld_reader_row(moe_kld_reader *r, moe_logprob_row *row, moe_err *err);
void moe_kld_reader_close(moe_kld_reader *r);

/* Checks that a model and plan can be compared with a base file: same
 * vocabulary size and fingerprint, same BOS handling. */
moe_status moe_kld_check_model(const moe_kld_header *h, const moe_model *model, moe_err *err);

/* ---- statistics ---- */

typedef struct moe_kld_stats {
    moe_ppl_acc q, base;
    double sum_nll_cross; /* sum of nll_q * nll_base */
    double sum_kld, sum_kld2;
    double sum_dp, sum_dp2, sum_dp4; /* dp = p_q(next) - p_base(next) */
    double max_abs_dp;
    int64_t n_same_top, count;
    double *kld, *dp; /* every row's value, for percentiles */
    int64_t cap;
} moe_kld_stats;

/* Adds one row: its KLD, both NLLs (dp from exp(-nll)) and whether the top
 * tokens agree. Grows the value arrays. */
moe_status moe_kld_stats_add(moe_kld_stats *s, double kld, double nll_q, double nll_base,
                             bool same_top, moe_err *err);
void moe_kld_stats_free(moe_kld_stats *s);

/* A value and its uncertainty. */
typedef struct moe_val {
    double v, err;
} moe_val;

typedef struct moe_kld_summary {
    int64_t count;
    moe_val ppl_q, ppl_base, ln_ppl_ratio, ppl_ratio, ppl_diff;
    double ln_ppl_cor; /* correlation of the two NLL series */
    moe_val kld;       /* mean */
    /* max, 99.9, 99, 95, 90, median, 10, 5, 1, 0.1 %, min */
    double kld_pct[11];
    moe_val dp, rms_dp, same_top; /* dp mean; fractions, not percent */
    /* max, 99.9, 99, 95, 90, 75, median, 25, 10, 5, 1, 0.1 %, min */
    double dp_pct[13];
} moe_kld_summary;

extern const double moe_kld_pct_levels[11]; /* 1.0, 0.999, ... 0.0 (1 = max) */
extern const double moe_dp_pct_levels[13];

/* The figures llama-perplexity prints, from the sums (mean and uncertainty:
 * sqrt((mean of squares - square of mean) / (count - 1)), 0 for 10 rows or
 * fewer; percentiles interpolated linearly at fraction * (count - 1); the
 * median is the middle value or the mean of the two middle ones). Sorts the
 * value arrays. Incremental use (per chunk) is fine: only the percentiles
 * need the sort. */
void moe_kld_summarize(moe_kld_stats *s, bool percentiles, moe_kld_summary *out);

#endif
