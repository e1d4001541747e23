/* imatrix — importance matrices for quantization, as llama-imatrix writes them.
 *
 * Owns: reading the legacy binary .dat format (int32 count; per entry: name,
 * ncall, nval, f32 values) and the newer GGUF form (general.type = imatrix;
 * <name>.in_sum2 and <name>.counts tensors), and turning either into one
 * table of per-column mean-square activations per weight tensor. A stacked
 * expert tensor [ne0, ne1, E] has ne0 * E values, expert-major. Does not own:
 * how a quantizer weights them (formats/quant/quant.h).
 */
#ifndef MOE_CONVERT_IMATRIX_H
#define MOE_CONVERT_IMATRIX_H

#include <stdint.h>

#include "formats/base/status.h"

typedef struct moe_imatrix_entry {
    char *name;     /* weight tensor name, e.g. "blk.0.ffn_up_exps.weight" */
    int64_t n;      /* number of values: ne0 * n_matrices */
    float *values;  /* mean of x^2 per column (per expert slice) */
} moe_imatrix_entry;

typedef struct moe_imatrix {
    int64_t n_entries;
    moe_imatrix_entry *entries;
    int64_t chunks;     /* chunks the file was computed on (-1 unknown) */
    char *dataset;      /* calibration data name, or NULL */
    char *path;
} moe_imatrix;

/* Loads path (legacy .dat or GGUF, told apart by the magic). Every count and
 * length is checked against the file size; errors name the file and entry.
 * Free with moe_imatrix_free. */
moe_status moe_imatrix_load(const char *path, moe_imatrix **out, moe_err *err);

void moe_imatrix_free(moe_imatrix *im);

/* The entry for a tensor name, or NULL. */
const moe_imatrix_entry *moe_imatrix_find(const moe_imatrix *im, const char *name);

#endif
