/* quantize — requantizing a GGUF model: the driver behind moe-quantize.
 *
 * Owns: streaming a model through the type policy (policy.h) and the scalar
 * quantizers (formats/quant/quant.h): per tensor, rows are dequantized to f32 in
 * bounded chunks, quantized on several threads (row-parallel, so the output
 * does not depend on the thread count) and written with the atomic GGUF
 * writer. Tensors whose type does not change are copied byte for byte.
 * Importance matrices are applied per expert slice for stacked tensors.
 * Does not own: type choice rules (policy.h), the quantizers, GGUF I/O.
 */
#ifndef MOE_CONVERT_QUANTIZE_H
#define MOE_CONVERT_QUANTIZE_H

#include <stdbool.h>
#include <stdint.h>

#include "convert/policy.h"
#include "formats/base/status.h"

typedef struct moe_quantize_opts {
    moe_qtype_choice choice;
    bool pure;
    const char *const *tensor_rules; /* "REGEX=TYPE", first match wins */
    int n_tensor_rules;
    moe_type output_type;            /* MOE_TYPE_ID_LIMIT: not set */
    moe_type token_embd_type;        /* likewise */
    const char *imatrix_path;        /* NULL: none */
    bool interleave;
    const char *interleave_pattern;  /* NULL: the default */
    int threads;
    bool dry_run, stats, overwrite, progress;
} moe_quantize_opts;

typedef struct moe_quantize_tensor {
    char name[64];
    moe_type src_type;
    moe_tensor_choice choice;
    bool converted;          /* quantized (else copied byte for byte) */
    bool used_imatrix;
    uint64_t bytes_in, bytes_out;
    double rms_error, rms_ref; /* with stats: rms of (dequantized - source) and of source */
    uint64_t xxh3;
} moe_quantize_tensor;

typedef struct moe_quantize_report {
    uint64_t n_tensors;
    moe_quantize_tensor *tensors;
    uint64_t bytes_in, bytes_out; /* tensor data */
    uint64_t n_converted, n_fallback, n_interleaved, n_requantized;
    double seconds;
} moe_quantize_report;

/* Quantizes in_path into out_path (or, with dry_run, only fills the report).
 * Fails before writing anything when a tensor cannot be converted (its source
 * type has no dequantizer, an imatrix entry has the wrong size), naming it.
 * Fills *rep (free with moe_quantize_report_free) on success. */
moe_status moe_quantize_file(const char *in_path, const char *out_path,
                             const moe_quantize_opts *opts, moe_quantize_report *rep,
                             moe_err *err);

void moe_quantize_report_free(moe_quantize_report *rep);

#endif
