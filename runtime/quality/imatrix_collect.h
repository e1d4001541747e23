/* imatrix_collect — importance matrices collected from a running model, as
 * llama-imatrix collects and writes them.
 *
 * Owns: the accumulation (per weight tensor and per column: the sum of x^2
 * over every activation row the weight multiplies, and how many rows were
 * added; a stacked expert tensor keeps one slice per expert, fed only the
 * rows routed to that expert), llama-imatrix's selection rules, its call
 * counts, and writing the result in llama.cpp's legacy binary .dat form and
 * in its GGUF form. Does not own: running the model (the tool installs
 * moe_imatrix_observe as the context's matmul observer) or reading the files
 * back (convert/imatrix.h, used by moe-quantize --imatrix).
 *
 * Rules (llama-imatrix, Feb 2025): products of tensors named "blk.*" are
 * collected (output.weight too when process_output); a dense product of fewer
 * than 16 rows is skipped; each accepted dense product counts one call
 * (ncall); a stacked expert tensor counts one call per decode, whichever
 * experts it used. Sums are float, accumulated x*x in arrival order.
 *
 * .dat layout (little-endian): i32 n_entries; per entry: i32 name length,
 * name bytes, i32 ncall, i32 nval, f32 values[nval] with value =
 * (sum / count) * ncall per column (nval = n_in * n_expert, expert-major);
 * then i32 chunk count (the largest ncall) and i32 length + dataset name.
 * Entries in which some expert got no row are left out of the .dat, as
 * llama-imatrix does (a warning names them).
 *
 * GGUF layout: general.type = "imatrix", imatrix.chunk_count (u32),
 * imatrix.chunk_size (u32), imatrix.datasets (array of one string); per entry
 * "<name>.in_sum2" f32 [n_in, n_mat] (the raw sums) and "<name>.counts" f32
 * [1, n_mat] (rows per matrix). Partial entries are kept (their counts say
 * which experts lack data).
 */
#ifndef MOE_RUNTIME_QUALITY_IMATRIX_COLLECT_H
#define MOE_RUNTIME_QUALITY_IMATRIX_COLLECT_H

#include <stdbool.h>
#include <stdint.h>

#include "formats/base/status.h"

#define MOE_IMATRIX_MIN_ROWS 16

typedef struct moe_imatrix_collector moe_imatrix_collector;

/* process_output: also collect output.weight (llama-imatrix --process-output).
 * n_expert: slices of stacked expert tensors (the model's expert count); 0 =
 * grow to the largest expert index seen. */
moe_status moe_imatrix_collector_create(bool process_output, int32_t n_expert,
                                        moe_imatrix_collector **out, moe_err *err);
void moe_imatrix_collector_free(moe_imatrix_collector *c);

/* The observer (moe_matmul_observer) to install with user = the collector.
 * Errors it meets (sizes that change, non-finite sums, memory) are kept and
 * reported by moe_imatrix_collector_status; collecting stops at the first. */
void moe_imatrix_observe(void *user, const char *tensor, int32_t expert, const float *x,
                         int64_t n_in, int64_t n_rows);

/* Marks the start of a decode (stacked tensors count one call per decode). */
void moe_imatrix_collector_begin_call(moe_imatrix_collector *c);

/* MOE_OK, or the first error the observer met (copied into err). */
moe_status moe_imatrix_collector_status(const moe_imatrix_collector *c, moe_err *err);

int64_t moe_imatrix_collector_n_entries(const moe_imatrix_collector *c);
/* Largest call count of any entry (llama-imatrix's chunk count). */
int32_t moe_imatrix_collector_n_calls(const moe_imatrix_collector *c);

/* Writes the legacy .dat (atomically: temp file, fsync, rename); dataset is
 * stored as the trailer's name (llama-imatrix stores its -f argument).
 * *n_written (may be NULL) gets the entries stored. */
moe_status moe_imatrix_save_dat(const moe_imatrix_collector *c, const char *path,
                                const char *dataset, int64_t *n_written, moe_err *err);

/* Writes the GGUF form (atomically), chunk_size = tokens per chunk. */
moe_status moe_imatrix_save_gguf(const moe_imatrix_collector *c, const char *path,
                                 const char *dataset, int32_t chunk_size, moe_err *err);

#endif
