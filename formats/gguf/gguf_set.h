/* gguf_set — one model as a set of GGUF files: a single file, or the shards
 * of a `PREFIX-00001-of-0000N.gguf` split written by gguf-split or by us.
 *
 * Owns: the open shard files and a name index over all their tensors, and the
 * split-file naming rules. Validates split.no / split.count /
 * split.tensors.count and rejects a tensor name that appears in two shards.
 * Does not own: what the tensors mean (arch.h). Metadata lives in the first
 * shard (files[0]).
 */
#ifndef MOE_FORMATS_GGUF_SET_H
#define MOE_FORMATS_GGUF_SET_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "formats/gguf/gguf.h"
#include "formats/base/strmap.h"

#define MOE_SPLIT_MAX 9999

typedef struct moe_gguf_set_ref {
    uint32_t file;  /* index into files */
    uint64_t index; /* tensor index within that file */
} moe_gguf_set_ref;

typedef struct moe_gguf_set {
    uint32_t n_files;
    moe_gguf_file **files;
    uint64_t n_tensors;
    moe_gguf_set_ref *tensors; /* shard by shard, file order inside each */
    moe_strmap names;          /* tensor name -> index into tensors */
} moe_gguf_set;

/* Opens path. If its name is a shard name (…-00001-of-00003.gguf) or the file
 * carries split.count > 1, opens every shard of the set; path must then be the
 * first shard (a later one is refused with the first one's name). Errors name
 * the file. Free with moe_gguf_set_close. */
moe_status moe_gguf_set_open(const char *path, bool use_mmap, moe_gguf_set **out, moe_err *err);

/* Closes every shard and frees the set. NULL is a no-op. */
void moe_gguf_set_close(moe_gguf_set *s);

/* Tensor i (< n_tensors) of the set, and the file that holds it. */
const moe_gguf_tensor *moe_gguf_set_tensor(const moe_gguf_set *s, uint64_t i,
                                           const moe_gguf_file **file);

/* Index of the tensor with this name in the set, or -1. */
int64_t moe_gguf_set_find(const moe_gguf_set *s, const char *name);

/* Splits "dir/model-00002-of-00005.gguf" into prefix "dir/model", no 2, count 5.
 * Returns false if path is not a shard name (or prefix does not fit cap). */
bool moe_split_path_parse(const char *path, char *prefix, size_t cap, int *no, int *count);

/* Writes "PREFIX-%05d-of-%05d.gguf" (llama.cpp's naming, no 1-based) into buf. */
moe_status moe_split_path(char *buf, size_t cap, const char *prefix, int no, int count,
                          moe_err *err);

#endif
