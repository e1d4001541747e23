/* gguf — GGUF v3 container: strict reader over bytes, file sources, streaming
 * atomic writer, per-tensor XXH3-64 integrity.
 *
 * Owns: parsing and validating the header (metadata + tensor infos) of a GGUF
 * byte range, the two file sources (mmap and read()), and writing GGUF files
 * (temp file, fsync, rename). Does not own: what keys or tensors mean
 * (arch.h), quantization (types.h), or tensor data beyond checksumming it.
 *
 * Shapes are in ggml order: ne[0] is the innermost (contiguous) dimension,
 * missing dimensions are 1. Offsets in moe_gguf_tensor are relative to the data
 * section; data_offset is absolute.
 *
 * Integrity: writers record one UINT64 array key MOE_GGUF_XXH3_KEY holding the
 * XXH3-64 (seed 0) of each tensor's bytes (nbytes, no padding), in tensor order.
 */
#ifndef MOE_FORMATS_GGUF_H
#define MOE_FORMATS_GGUF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "formats/base/status.h"
#include "formats/base/tempfile.h"
#include "formats/quant/types.h"

#define MOE_GGUF_MAGIC "GGUF"
#define MOE_GGUF_VERSION 3
#define MOE_GGUF_DEFAULT_ALIGNMENT 32
#define MOE_GGUF_MAX_DIMS 4
#define MOE_GGUF_MAX_NAME 64 /* llama.cpp rejects tensor names of 64+ bytes */
#define MOE_GGUF_XXH3_KEY "moe.xxh3"

typedef enum moe_gguf_vtype {
    MOE_GGUF_U8 = 0, MOE_GGUF_I8 = 1, MOE_GGUF_U16 = 2, MOE_GGUF_I16 = 3,
    MOE_GGUF_U32 = 4, MOE_GGUF_I32 = 5, MOE_GGUF_F32 = 6, MOE_GGUF_BOOL = 7,
    MOE_GGUF_STRING = 8, MOE_GGUF_ARRAY = 9, MOE_GGUF_U64 = 10, MOE_GGUF_I64 = 11,
    MOE_GGUF_F64 = 12,
    MOE_GGUF_VTYPE_COUNT = 13,
} moe_gguf_vtype;

/* One metadata pair. All pointers are owned by the moe_gguf (or writer) that
 * holds it and live until it is freed. */
typedef struct moe_gguf_kv {
    char *key;               /* NUL-terminated */
    moe_gguf_vtype type;
    moe_gguf_vtype elem_type; /* arrays only */
    uint64_t count;          /* arrays: element count; scalars: 1 */
    uint8_t *raw;            /* the value exactly as encoded after the type field
                                (arrays: from the element type on) */
    uint64_t raw_len;
    char *str;               /* STRING values: NUL-terminated copy; else NULL */
    uint64_t *str_offsets;   /* string arrays: offset in raw of each element's
                                u64 length prefix; else NULL */
} moe_gguf_kv;

typedef struct moe_gguf_tensor {
    char *name;      /* NUL-terminated, < MOE_GGUF_MAX_NAME bytes */
    uint32_t n_dims; /* as stored (1..4) */
    int64_t ne[MOE_GGUF_MAX_DIMS];
    moe_type type;
    uint64_t offset; /* relative to the data section */
    uint64_t nbytes;
} moe_gguf_tensor;

typedef struct moe_gguf {
    uint32_t version;
    uint64_t n_kv;
    moe_gguf_kv *kv;
    uint64_t n_tensors;
    moe_gguf_tensor *tensors;
    uint32_t alignment;   /* general.alignment or 32 */
    uint64_t header_size; /* bytes up to the end of the tensor infos */
    uint64_t data_offset; /* absolute start of the data section */
    uint64_t file_size;
    struct moe_gguf_index *index; /* name lookup (private) */
} moe_gguf;

/* Parses and validates a GGUF header. `data` holds the first `avail` bytes of a
 * file of `file_size` bytes (avail <= file_size). Everything is checked: magic,
 * version (2 or 3), counts against the bytes left, string lengths, value and
 * tensor types, n_dims, dims, block-size multiples, alignment, offsets (aligned,
 * in order, not overlapping, inside the file), duplicate keys and tensor names.
 * Returns MOE_OK and a new moe_gguf in *out (free with moe_gguf_free), or a
 * format/unsupported error naming the field. Returns MOE_ERR_NEED_MORE if the
 * header continues past avail while file_size says more bytes exist (read a
 * longer prefix and call again). Never reads data[avail..]. */
moe_status moe_gguf_parse(const void *data, size_t avail, uint64_t file_size, moe_gguf **out,
                          moe_err *err);

/* Frees g and everything it owns. NULL is a no-op. */
void moe_gguf_free(moe_gguf *g);

/* Index of the key / tensor with this name, or -1. */
int64_t moe_gguf_find_key(const moe_gguf *g, const char *key);
int64_t moe_gguf_find_tensor(const moe_gguf *g, const char *name);

/* Byte size of one element of a scalar value type (0 for STRING/ARRAY). */
size_t moe_gguf_vtype_size(moe_gguf_vtype t);
/* "u32", "str", "arr"... or "unknown". */
const char *moe_gguf_vtype_name(int64_t t);

/* Value accessors. Each fails with a format error naming the key if the type
 * does not fit. Integers: any integer type whose value fits; _strict variants
 * demand the exact GGUF type as llama.cpp's loader does. */
moe_status moe_gguf_kv_int(const moe_gguf_kv *kv, int64_t *out, moe_err *err);
moe_status moe_gguf_kv_float(const moe_gguf_kv *kv, double *out, moe_err *err);
moe_status moe_gguf_kv_bool(const moe_gguf_kv *kv, bool *out, moe_err *err);
/* Element i (< count) of an array, as int / float / string (borrowed, not
 * NUL-terminated: use *len). */
moe_status moe_gguf_arr_int(const moe_gguf_kv *kv, uint64_t i, int64_t *out, moe_err *err);
moe_status moe_gguf_arr_float(const moe_gguf_kv *kv, uint64_t i, double *out, moe_err *err);
moe_status moe_gguf_arr_str(const moe_gguf_kv *kv, uint64_t i, const char **s, uint64_t *len,
                            moe_err *err);

/* Convenience lookups by key. Missing key: MOE_ERR_FORMAT "missing key 'k'". */
moe_status moe_gguf_get_int(const moe_gguf *g, const char *key, int64_t *out, moe_err *err);
moe_status moe_gguf_get_float(const moe_gguf *g, const char *key, double *out, moe_err *err);
moe_status moe_gguf_get_str(const moe_gguf *g, const char *key, const char **out, moe_err *err);

/* ---- file sources ---------------------------------------------------------- */

typedef struct moe_gguf_file {
    char *path;
    int fd;
    uint64_t size;
    const uint8_t *map; /* whole file, read-only, when opened with mmap; else NULL */
    moe_gguf *g;
} moe_gguf_file;

/* Opens and parses path. use_mmap: map the whole file read-only; otherwise read
 * only the header with read() (tensor data then comes from moe_gguf_file_read).
 * Errors are prefixed with the path. Free with moe_gguf_file_close. */
moe_status moe_gguf_file_open(const char *path, bool use_mmap, moe_gguf_file **out,
                              moe_err *err);
/* Unmaps, closes and frees. NULL is a no-op. Invalidates every pointer into the
 * mapping and into f->g. */
void moe_gguf_file_close(moe_gguf_file *f);
/* Pointer to tensor i's bytes inside the mapping, or NULL without mmap. */
const uint8_t *moe_gguf_file_tensor_data(const moe_gguf_file *f, uint64_t i);
/* Tells the kernel a range already processed will not be read again: unmaps
 * its pages from this process (mmap) and drops them from the page cache, so
 * streaming through a model larger than RAM keeps RSS and cache pressure flat.
 * Contents stay readable (they are read again from disk if needed). */
void moe_gguf_file_release(const moe_gguf_file *f, uint64_t off, uint64_t len);

/* Maps every page of the tensor data into this process now (reading from disk
 * what the page cache lacks), as llama.cpp's MAP_POPULATE does: a mapped
 * model then takes no page faults while it computes. On a kernel without
 * MADV_POPULATE_READ (Linux < 5.14) it asks for read-ahead instead; without
 * mmap it does nothing. Advisory: failures are ignored. */
void moe_gguf_file_populate(const moe_gguf_file *f);

/* Reads len bytes at absolute file offset off into buf (pread loop; short file
 * is an error naming the path). */
moe_status moe_gguf_file_read(const moe_gguf_file *f, uint64_t off, void *buf, size_t len,
                              moe_err *err);

/* Checksum verification. */
typedef struct moe_gguf_verify_result {
    bool had_checksums;   /* the file stores MOE_GGUF_XXH3_KEY */
    uint64_t n_checked;
    uint64_t n_mismatch;
    int64_t first_bad;    /* index of the first mismatching tensor or -1 */
    uint64_t *computed;   /* n_tensors hashes (owned by caller: free()) or NULL */
} moe_gguf_verify_result;

/* Hashes every tensor's bytes (streaming in bounded chunks without mmap). If the
 * file stores checksums, compares them: a mismatch returns MOE_ERR_INTEGRITY
 * naming the first bad tensor (res still filled). A malformed checksum key
 * (wrong type or count) is a format error. If keep_hashes, res->computed gets
 * the hashes. */
moe_status moe_gguf_file_verify(const moe_gguf_file *f, bool keep_hashes,
                                moe_gguf_verify_result *res, moe_err *err);

/* Checks the bytes of tensor i (data, its nbytes long, e.g. from the mapping)
 * against the checksum f stores for it: MOE_ERR_INTEGRITY naming the file and
 * the tensor on a mismatch, a format error for a malformed key, MOE_OK when
 * they match or f stores no checksums. For tools that read each tensor once
 * and would otherwise carry corrupt bytes into a fresh, valid-looking output. */
moe_status moe_gguf_file_check_tensor(const moe_gguf_file *f, uint64_t i, const void *data,
                                      moe_err *err);

/* XXH3-64 of a buffer (seed 0), the hash used in MOE_GGUF_XXH3_KEY. */
uint64_t moe_xxh3(const void *p, size_t len);

/* ---- writer ------------------------------------------------------------------ */

typedef struct moe_gguf_writer moe_gguf_writer;

typedef struct moe_gguf_writer_opts {
    bool overwrite;       /* replace an existing file at path (else refuse) */
    bool no_checksums;    /* do not record MOE_GGUF_XXH3_KEY */
    bool named_temp;      /* write through a named temp file (MOE_OUTPUT_NAMED_TEMP),
                             for a caller of finish_deferred that hands the temp
                             file on by path (moe_output_release_temp) */
} moe_gguf_writer_opts;

/* Starts writing `path` through moe_output_open (see tempfile.h: a temp file
 * beside it that a SIGKILL does not leave behind; a device is written in
 * place; a pipe is refused, since the header is completed after the data).
 * Nothing appears at path until moe_gguf_writer_finish succeeds. opts may be
 * NULL. */
moe_status moe_gguf_writer_create(const char *path, const moe_gguf_writer_opts *opts,
                                  moe_gguf_writer **out, moe_err *err);

/* Metadata, before moe_gguf_writer_begin_data. Setting an existing key
 * replaces its value in place (order kept). A MOE_GGUF_XXH3_KEY given here is
 * ignored: the writer owns it. general.alignment (u32 power of two) sets the
 * alignment used for the data section. */
moe_status moe_gguf_writer_copy_kv(moe_gguf_writer *w, const moe_gguf_kv *kv, moe_err *err);
moe_status moe_gguf_writer_set_str(moe_gguf_writer *w, const char *key, const char *val,
                                   moe_err *err);
moe_status moe_gguf_writer_set_u32(moe_gguf_writer *w, const char *key, uint32_t val,
                                   moe_err *err);
moe_status moe_gguf_writer_set_i32(moe_gguf_writer *w, const char *key, int32_t val,
                                   moe_err *err);
moe_status moe_gguf_writer_set_u16(moe_gguf_writer *w, const char *key, uint16_t val,
                                   moe_err *err);
moe_status moe_gguf_writer_set_f32(moe_gguf_writer *w, const char *key, float val,
                                   moe_err *err);
moe_status moe_gguf_writer_set_bool(moe_gguf_writer *w, const char *key, bool val,
                                    moe_err *err);
/* Numeric array: count elements of elem_type, given as little-endian bytes. */
moe_status moe_gguf_writer_set_arr(moe_gguf_writer *w, const char *key, moe_gguf_vtype elem_type,
                                   uint64_t count, const void *le_data, moe_err *err);
moe_status moe_gguf_writer_set_arr_str(moe_gguf_writer *w, const char *key,
                                       const char *const *vals, uint64_t count, moe_err *err);
/* Removes key if present. */
void moe_gguf_writer_remove_kv(moe_gguf_writer *w, const char *key);

/* Declares the next tensor (data is written in declaration order). Checks the
 * name (non-empty, < 64 bytes, unique), dims and the block-size multiple. */
moe_status moe_gguf_writer_add_tensor(moe_gguf_writer *w, const char *name, moe_type type,
                                      uint32_t n_dims, const int64_t ne[4], moe_err *err);

/* Writes the header; after this only tensor data may follow. */
moe_status moe_gguf_writer_begin_data(moe_gguf_writer *w, moe_err *err);

/* Appends bytes of tensor data. Calls may split tensors anywhere and span tensor
 * boundaries; padding is inserted between tensors. Writing more bytes than the
 * declared tensors hold is an error. */
moe_status moe_gguf_writer_write(moe_gguf_writer *w, const void *p, size_t n, moe_err *err);

/* Checks every declared byte was written, patches the checksums into the
 * header, fsyncs, renames the temp file to path and fsyncs the directory.
 * Frees w in every case; on failure the temp file is removed. */
moe_status moe_gguf_writer_finish(moe_gguf_writer *w, moe_err *err);

/* Like finish, but publishes nothing: on success *out receives the written
 * output (not yet fsynced; read it back through moe_output_reopen_path) for
 * the caller to publish with moe_output_commit or drop with moe_output_abort —
 * for outputs made of several files (shards) or post-processed (compressed).
 * Frees w in every case. */
moe_status moe_gguf_writer_finish_deferred(moe_gguf_writer *w, moe_output *out, moe_err *err);

/* Removes the temp file and frees w. NULL is a no-op. */
void moe_gguf_writer_abort(moe_gguf_writer *w);

/* The checksums computed so far (one per declared tensor, valid after the
 * tensor's bytes were written). Borrowed; valid until finish/abort. */
const uint64_t *moe_gguf_writer_checksums(const moe_gguf_writer *w);

#endif
