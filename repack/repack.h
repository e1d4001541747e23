/* repack — lossless layout passes over GGUF models.
 *
 * Owns: planning and executing byte-exact re-layouts of a model: stacking
 * legacy per-expert tensors (blk.N.ffn_gate.E.weight) into 3-D *_exps
 * tensors, splitting or producing merged ffn_gate_up_exps tensors, reordering
 * tensors into llama.cpp's order, and writing one file or llama.cpp-style
 * shards. Every output tensor is a concatenation of byte ranges of input
 * tensors, so no value is ever decoded. Does not own: GGUF parsing/writing
 * (formats/gguf*.h), compression (formats/gguf/zstd_seekable.h), quantization
 * (convert/).
 *
 * Lifetime: a plan borrows the input set it was built from; keep the set open
 * until the plan is freed.
 */
#ifndef MOE_REPACK_REPACK_H
#define MOE_REPACK_REPACK_H

#include <stdbool.h>
#include <stdint.h>

#include "formats/gguf/gguf.h"
#include "formats/gguf/gguf_set.h"

typedef enum moe_gate_up_mode {
    MOE_GATE_UP_KEEP = 0, /* keep the input's choice (merged stays merged) */
    MOE_GATE_UP_MERGE,    /* write ffn_gate_up_exps (gate rows first per expert) */
    MOE_GATE_UP_SPLIT,    /* write ffn_gate_exps + ffn_up_exps */
} moe_gate_up_mode;

typedef struct moe_repack_opts {
    moe_gate_up_mode gate_up;
    bool input_up_first;      /* merged inputs store up rows before gate rows
                                 (early ik_llama.cpp files); outputs are always
                                 gate-first, as mainline llama.cpp expects */
    int interleave;           /* +1: write eligible tensors in their row-interleaved
                                 type (ik_llama.cpp _Rn); -1: write interleaved
                                 tensors plain; 0: keep types */
    const char *interleave_pattern; /* PCRE2 regex of tensors to interleave; NULL:
                                 routed experts ("_exps\\.") */
} moe_repack_opts;

/* One contiguous byte range of an input tensor. */
typedef struct moe_repack_piece {
    uint64_t src;        /* tensor index in the input set */
    uint64_t src_offset; /* byte offset inside that tensor */
    uint64_t len;
} moe_repack_piece;

typedef enum moe_repack_kind {
    MOE_REPACK_COPY = 0,  /* one whole input tensor */
    MOE_REPACK_STACK,     /* E per-expert tensors -> one 3-D tensor */
    MOE_REPACK_SPLIT,     /* half of each expert of a merged gate/up tensor */
    MOE_REPACK_MERGE,     /* gate + up experts interleaved per expert */
    MOE_REPACK_REORDER,   /* merged gate/up with the halves swapped (up-first in) */
} moe_repack_kind;

typedef struct moe_repack_tensor {
    char name[MOE_GGUF_MAX_NAME];
    moe_type type;            /* as written */
    moe_type src_type;        /* of the input bytes; differs only when (de)interleaving */
    const char *note;         /* why an eligible tensor was left alone, or NULL */
    uint32_t n_dims;
    int64_t ne[MOE_GGUF_MAX_DIMS];
    uint64_t nbytes;
    moe_repack_kind kind;
    uint64_t n_pieces;
    moe_repack_piece *pieces; /* concatenated in order give the tensor's bytes */
} moe_repack_tensor;

typedef struct moe_repack_plan {
    uint64_t n_tensors;
    moe_repack_tensor *tensors; /* output order */
    uint64_t bytes;             /* total tensor bytes */
    uint64_t n_stacked;         /* output tensors built by stacking */
    uint64_t n_expert_inputs;   /* input tensors consumed by stacking */
    uint64_t n_gate_up;         /* tensors split, merged or reordered */
    int64_t n_expert;           /* ARCH.expert_count, or -1 when absent */
    uint64_t n_relayout;        /* tensors interleaved or de-interleaved */
} moe_repack_plan;

/* Builds the plan for the input set. Checks, before anything is written, that
 * every legacy family of a block has experts 0..E-1 exactly once, all of one
 * type and shape, with E equal to ARCH.expert_count; otherwise fails with a
 * format error naming the first offending tensor. On success fills *plan
 * (free with moe_repack_plan_free). */
moe_status moe_repack_plan_build(const moe_gguf_set *in, const moe_repack_opts *opts,
                                 moe_repack_plan *plan, moe_err *err);

/* Frees what the plan owns. NULL-safe; the plan is zeroed. */
void moe_repack_plan_free(moe_repack_plan *plan);

typedef struct moe_repack_write_opts {
    bool overwrite;            /* replace existing outputs */
    uint64_t split_max_bytes;  /* 0: no limit; else start a new shard before exceeding it */
    uint64_t split_max_tensors;/* 0: no limit */
    bool verify;               /* re-read every output tensor and compare its hash with the
                                  hash of the input bytes it was made from */
    bool progress;             /* progress on stderr (formats/base/progress.h) */
    bool keep_temp;            /* leave outputs as named temp files for the caller */
} moe_repack_write_opts;

typedef struct moe_repack_result {
    uint32_t n_outputs;
    char **outputs;            /* final paths, or temp paths with keep_temp (owned) */
    char **final_paths;        /* final paths (owned) */
    uint64_t *tensor_xxh3;     /* per output tensor, plan order (owned) */
    uint64_t bytes_written;    /* file bytes, headers included */
    uint64_t n_inputs_verified;/* input tensors checked against stored checksums */
    uint64_t n_outputs_verified;
    double seconds;
} moe_repack_result;

/* Writes the plan's tensors to out_path (a single file, or shards named
 * PREFIX-0000k-of-0000N.gguf where PREFIX is out_path without ".gguf" when a
 * split limit applies). Metadata: every input key byte for byte (shard keys
 * and the checksum key excepted) in the first output; split.no / split.count
 * / split.tensors.count in every shard when sharding. Streams in large chunks
 * with bounded memory; input tensors that carry stored XXH3 checksums are
 * verified as they are read (an input mismatch aborts with an integrity
 * error). All outputs are temp files until every one is complete; on any
 * failure nothing is left at the output paths. Fills *res (free with
 * moe_repack_result_free). */
moe_status moe_repack_write(const moe_gguf_set *in, const moe_repack_plan *plan,
                            const char *out_path, const moe_repack_write_opts *opts,
                            moe_repack_result *res, moe_err *err);

void moe_repack_result_free(moe_repack_result *res);

#endif
