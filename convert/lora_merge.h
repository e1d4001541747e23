/* lora_merge — baking LoRA adapters into a model's weights, offline.
 *
 * Owns: reading llama.cpp GGUF LoRA adapters (the format runtime/lora.h
 * applies unmerged) against a base GGUF and writing the base with
 * W' = W + sum_i s_i * B_i A_i (s_i = scale_i * alpha_i / r) in F32 for every
 * tensor an adapter touches; other tensors are copied byte for byte. The
 * result is a float model that moe-quantize then quantizes to the chosen type
 * (moe-quantize --merge-lora). A legacy split-expert base is read as the
 * stacked model moe-repack would write (source.h), whose tensors adapters
 * name. Does not own: quantization (quantize.h).
 */
#ifndef MOE_CONVERT_LORA_MERGE_H
#define MOE_CONVERT_LORA_MERGE_H

#include <stdbool.h>

#include "formats/base/status.h"

typedef struct moe_lora_merge_spec {
    const char *path;
    float scale;
} moe_lora_merge_spec;

/* Parses "FILE" or "FILE:SCALE" (scale 1 by default); spec->path borrows a
 * copy held in buf (cap bytes). */
moe_status moe_lora_merge_parse(const char *arg, char *buf, size_t cap, moe_lora_merge_spec *spec,
                                moe_err *err);

/* Writes out_path (atomically; overwrite: replace an existing file) from
 * base_path with the n adapters merged (n may be 0; all_f32: every matrix,
 * touched or not, is written as F32, 1-D tensors as they are). Every adapter is
 * checked first, as the runtime checks it (type and architecture keys, alpha,
 * names, pairs, shapes, ranks), with an error naming the file and tensor;
 * nothing is written then. Merged tensors become F32 (the base decoded to
 * float). */
moe_status moe_lora_merge_file(const char *base_path, const moe_lora_merge_spec *loras, int n,
                               const char *out_path, bool overwrite, bool all_f32, moe_err *err);

#endif
