/* zstd_seekable — `.gguf.zst`: compressed files that stock `zstd -d` restores
 * byte for byte and that we can read at random offsets on several threads.
 *
 * Owns: writing such files (plain bytes cut into fixed-size chunks, each an
 * independent zstd frame with content size and checksum, then a seek table),
 * validating and reading them (random access, parallel whole-file
 * decompression), plain streaming decompression of any other zstd file, and the
 * atomic outputs (temp file beside the destination, fsync, rename) of both
 * directions. Does not own: what the plain bytes mean (gguf.h), or memory
 * mapping of the compressed input (callers may hand us a mapping via
 * moe_zstd_open_mem).
 *
 * On-disk layout (the published "zstd seekable format", little-endian):
 *
 *   frame 0 | frame 1 | ... | frame N-1 | seek table
 *
 *   seek table = one zstd skippable frame:
 *     u32 0x184D2A5E              skippable magic (stock zstd skips the frame)
 *     u32 frame_size              bytes that follow = N * entry + 9
 *     N entries: u32 compressed size, u32 decompressed size,
 *                [u32 XXH64(plain chunk) low 32 bits, if checksum flag]
 *     footer: u32 N, u8 descriptor (bit 7 checksum flag, bits 6..2 reserved
 *             zero, bits 1..0 unused), u32 0x8F92EAB1 seekable magic
 *
 * We always write the checksum flag, frames with their own content checksum
 * and content size, and at least one frame (an empty input is one empty
 * frame), so `zstd -d` output is exactly the input. Output bytes depend only on
 * the input, level and frame size: never on the thread count.
 *
 * Threads: every `threads` argument means "up to this many OpenMP threads";
 * <= 0 means all that OpenMP offers; builds without OpenMP run serially.
 */
#ifndef MOE_FORMATS_ZSTD_SEEKABLE_H
#define MOE_FORMATS_ZSTD_SEEKABLE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "formats/base/status.h"

#define MOE_ZSTD_DEFAULT_LEVEL 3
#define MOE_ZSTD_DEFAULT_FRAME_SIZE ((size_t)8 << 20)
/* Upper bound on one frame's plain size, written or accepted (the reference
 * seekable implementation uses the same 1 GiB limit). */
#define MOE_ZSTD_MAX_FRAME_SIZE ((size_t)1 << 30)
/* Upper bound on the number of frames in a seek table (same as the reference). */
#define MOE_ZSTD_MAX_FRAMES 0x8000000u

#define MOE_ZSTD_FRAME_MAGIC 0xFD2FB528u
#define MOE_ZSTD_SEEK_TABLE_MAGIC 0x184D2A5Eu
#define MOE_ZSTD_SEEKABLE_MAGIC 0x8F92EAB1u

/* ---- writing ----------------------------------------------------------------- */

/* Compresses the file plain_path into out_path in the layout above.
 * level: a zstd level (ZSTD_minCLevel()..ZSTD_maxCLevel(); 0 = zstd's default);
 * frame_size: plain bytes per frame, 1..MOE_ZSTD_MAX_FRAME_SIZE, 0 = default.
 * Memory: about threads * (frame_size + ZSTD_compressBound(frame_size)) plus
 * 12 bytes per frame. Fails with MOE_ERR_USAGE if out_path exists and
 * !overwrite, or on bad level/frame_size; on any failure out_path is untouched
 * and the temp file is removed. */
moe_status moe_zstd_compress_file(const char *plain_path, const char *out_path, int level,
                                  size_t frame_size, int threads, bool overwrite, moe_err *err);

/* As moe_zstd_compress_file, from an open readable fd (borrowed; not closed).
 * Reads from offset 0 to end of file with pread, so the fd must be seekable and
 * its file position is neither used nor changed (handy for a plain temp file
 * just written through the same fd). plain_name names it in messages. */
moe_status moe_zstd_compress_fd(int plain_fd, const char *plain_name, const char *out_path,
                                int level, size_t frame_size, int threads, bool overwrite,
                                moe_err *err);

/* ---- reading ----------------------------------------------------------------- */

typedef struct moe_zstd_file moe_zstd_file;

/* Opens path. A file ending in a seekable footer gets its seek table validated
 * strictly (entry sizes consistent with the file size, sums without overflow,
 * per-frame plain sizes <= MOE_ZSTD_MAX_FRAME_SIZE and within zstd's maximum
 * ratio); any inconsistency is MOE_ERR_FORMAT naming the file. A file that
 * starts like zstd but has no footer (e.g. made by stock zstd) opens in
 * stream-only mode: moe_zstd_decompress_to_file works, random access fails
 * with MOE_ERR_UNSUPPORTED saying the seek table is missing. Anything else is
 * MOE_ERR_FORMAT. On success *out is owned by the caller (moe_zstd_close);
 * on failure *out is NULL. */
moe_status moe_zstd_open(const char *path, moe_zstd_file **out, moe_err *err);

/* As moe_zstd_open over (data, len) in memory, e.g. a read-only mapping. data is
 * borrowed and must stay valid and unchanged until moe_zstd_close; name
 * (copied) is used in messages. This is also the entry point for fuzzing. */
moe_status moe_zstd_open_mem(const void *data, size_t len, const char *name,
                             moe_zstd_file **out, moe_err *err);

/* Frees f and closes its fd. NULL is a no-op. */
void moe_zstd_close(moe_zstd_file *f);

/* Whether f has a seek table (random access and parallel decompression). */
bool moe_zstd_has_seek_table(const moe_zstd_file *f);

/* Total plain size, and number of frames, from the seek table; 0 in
 * stream-only mode. */
uint64_t moe_zstd_size(const moe_zstd_file *f);
uint32_t moe_zstd_n_frames(const moe_zstd_file *f);

/* Copies plain bytes [offset, offset + len) into buf, decompressing only the
 * frames they touch; the last partially read frame is cached, so sequential
 * small reads decompress each frame once. Every decompressed frame is checked
 * against its zstd checksum and seek-table checksum. A range past the end is
 * MOE_ERR_USAGE; corrupt frames are MOE_ERR_FORMAT or MOE_ERR_INTEGRITY naming
 * file and frame. Not thread-safe on one f (the cache and scratch are f's);
 * use one moe_zstd_file per thread, or moe_zstd_decompress_all. */
moe_status moe_zstd_read(moe_zstd_file *f, uint64_t offset, void *buf, size_t len,
                         moe_err *err);

/* Decompresses every frame into dst (caller-owned, len must equal
 * moe_zstd_size(f)) on up to `threads` threads, each frame straight into its
 * place; empty frames are checked too. On failure dst holds unspecified bytes.
 * Only reads f (its own scratch is per call), so it may run concurrently with
 * other calls on the same f, except moe_zstd_close. */
moe_status moe_zstd_decompress_all(moe_zstd_file *f, void *dst, size_t len, int threads,
                                   moe_err *err);

/* Writes the plain bytes of f to out_path atomically (temp file beside it,
 * fsync, rename; nothing left behind on failure or SIGINT). With a seek table,
 * batches of frames are decompressed in parallel (memory about threads times
 * the largest frame); in stream-only mode a single-threaded streaming decoder
 * handles any sequence of zstd and skippable frames and rejects a truncated
 * last frame. MOE_ERR_USAGE if out_path exists and !overwrite. */
moe_status moe_zstd_decompress_to_file(moe_zstd_file *f, const char *out_path, int threads,
                                       bool overwrite, moe_err *err);

/* ---- sniffing ---------------------------------------------------------------- */

/* True if the first bytes (len >= 4 needed) begin a zstd frame or a skippable
 * frame, i.e. the input is worth opening as zstd rather than as GGUF. */
bool moe_zstd_sniff(const void *prefix, size_t len);

/* moe_zstd_sniff on the first 4 bytes of path; false if it cannot be read. */
bool moe_zstd_path_is_zstd(const char *path);

#endif
