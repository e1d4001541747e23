/* source — the model a quantize run reads, as the tensor table it will write.
 *
 * Owns: opening moe-quantize's input and presenting it as one list of tensors
 * in output order, with their bytes. A current (stacked) file is presented as
 * it is. A legacy split-expert file (blk.N.ffn_up.E.weight, one tensor per
 * expert) is presented as the model moe-repack would write from it: repack's
 * planner (repack/repack.h) decides the stacked tensors, their order and the
 * pieces each is made of, and the bytes of a stacked tensor are read from the
 * per-expert tensors of the input on demand, so nothing is ever stacked in
 * memory or on disk. Stored input checksums (moe.xxh3) are checked per input
 * tensor. Does not own: type choice (policy.h), quantization (quantize.h).
 *
 * Lifetime: every pointer a source hands out (tensors, names, metadata, the
 * bytes from moe_qsource_bytes) lives until moe_qsource_close; bytes from
 * moe_qsource_bytes may also be invalidated by its next call.
 */
#ifndef MOE_CONVERT_SOURCE_H
#define MOE_CONVERT_SOURCE_H

#include <stdbool.h>
#include <stdint.h>

#include "formats/base/status.h"
#include "formats/gguf/gguf.h"
#include "formats/gguf/gguf_set.h"
#include "repack/repack.h"

typedef struct moe_qsource {
    /* read-only for callers */
    const char *path;                /* as given to open (borrowed) */
    const moe_gguf *meta;            /* the metadata keys (of the first file) */
    uint64_t n_tensors;
    const moe_gguf_tensor *tensors;  /* output order; offsets are meaningless when legacy */
    bool legacy;                     /* split experts, stacked on the fly */
    uint64_t n_stacked;              /* legacy: stacked tensors, and the */
    uint64_t n_expert_inputs;        /*   per-expert tensors they are made of */
    /* private */
    moe_gguf_file *file;             /* current layout */
    moe_gguf_set *set;               /* legacy layout: the input and its plan */
    moe_repack_plan plan;
    moe_gguf_tensor *view;           /* legacy: the plan as a tensor table */
    uint8_t *scratch;                /* legacy: ranges spanning two pieces */
    uint64_t scratch_cap;
} moe_qsource;

/* Opens path (mapped). A file with legacy per-expert tensors is planned with
 * moe_repack_plan_build (default options: gate/up kept, no interleaving), said
 * in one info line, and refused, before anything is written, when its experts are inconsistent
 * (missing, duplicated, of different types or shapes), with the file and
 * tensor named. On success fills *s (close with moe_qsource_close). */
moe_status moe_qsource_open(const char *path, moe_qsource *s, moe_err *err);

/* Unmaps and frees. NULL-safe and safe on a zeroed or failed source. */
void moe_qsource_close(moe_qsource *s);

/* Index of the tensor named name in tensors, or -1. */
int64_t moe_qsource_find(const moe_qsource *s, const char *name);

/* True when metadata key `key` of meta is not part of the model as written:
 * the split.* keys of a legacy input, which moe-repack drops. */
bool moe_qsource_drops_key(const moe_qsource *s, const char *key);

/* Checks every input tensor tensor i is made of against the checksum its
 * file stores (MOE_ERR_INTEGRITY naming file and tensor; MOE_OK without
 * stored checksums). */
moe_status moe_qsource_check(moe_qsource *s, uint64_t i, moe_err *err);

/* Bytes [off, off + len) of tensor i in *p: a pointer into the mapping, or
 * into a scratch buffer the source owns when the range spans two input
 * tensors (valid until the next call). */
moe_status moe_qsource_bytes(moe_qsource *s, uint64_t i, uint64_t off, uint64_t len,
                             const uint8_t **p, moe_err *err);

/* Writes tensor i's bytes, whole and unchanged, to w. */
moe_status moe_qsource_copy(moe_qsource *s, uint64_t i, moe_gguf_writer *w, moe_err *err);

/* Drops tensor i's pages (moe_gguf_file_release) once it has been written. */
void moe_qsource_release(const moe_qsource *s, uint64_t i);

/* The input file that path names (same inode), or NULL when it names none. */
const char *moe_qsource_input_at(const moe_qsource *s, const char *path);

#endif
