/* zstd_seekable — independent zstd frames plus a seek table; see the header for
 * the layout. Writers are batch-parallel: read `workers` chunks, compress them
 * concurrently into per-slot buffers, write them in order, so the bytes never
 * depend on scheduling. Readers validate the whole seek table at open and then
 * trust only the offsets it produced. */
#include "formats/gguf/zstd_seekable.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <xxhash.h>
#include <zstd.h>
#include <zstd_errors.h>

#ifdef _OPENMP
#include <omp.h>
#endif

#include "formats/base/checked.h"
#include "formats/gguf/cursor.h"
#include "formats/base/tempfile.h"

#define SKIPPABLE_HEADER 8 /* u32 magic + u32 frame size */
#define FOOTER_SIZE 9      /* u32 n_frames + u8 descriptor + u32 seekable magic */
#define DESC_CHECKSUM 0x80u
#define DESC_RESERVED 0x7Cu
#define FHD_CHECKSUM 0x04u /* zstd frame header descriptor: content checksum present */
#define MAX_THREADS 256
/* The most plain bytes one compressed byte can stand for: a zstd block holds at
 * most 128 KiB and costs at least 4 bytes (3-byte header + 1 RLE byte). Bounds
 * what a tiny hostile file can make us allocate per frame. */
#define MAX_RATIO 32768u

/* ---- threads ------------------------------------------------------------------ */

static int resolve_threads(int requested) {
#ifdef _OPENMP
    if (requested <= 0)
        return omp_get_max_threads();
    return requested < MAX_THREADS ? requested : MAX_THREADS;
#else
    return 1;
#endif
}

/* One unit of parallel work: item index, the worker running it (< workers, for
 * per-worker scratch), and its own error record. */
typedef moe_status (*item_fn)(void *ctx, size_t item, int worker_id, moe_err *err);

#ifdef _OPENMP
static moe_status par_for_omp(size_t n, int workers, item_fn fn, void *ctx, moe_err *err) {
    size_t fail_item = SIZE_MAX;
    moe_err first = {MOE_OK, ""};
    int stop = 0;
#pragma omp parallel for num_threads(workers) schedule(dynamic, 1)
    for (size_t i = 0; i < n; i++) {
        int halt;
#pragma omp atomic read
        halt = stop;
        if (halt)
            continue;
        moe_err e = {MOE_OK, ""};
        moe_status st = fn(ctx, i, omp_get_thread_num(), &e);
        if (st != MOE_OK) {
            e.code = st;
#pragma omp critical(moe_zstd_par_fail)
            {
                if (i < fail_item) {
                    fail_item = i;
                    first = e;
                }
            }
#pragma omp atomic write
            stop = 1;
        }
    }
    if (fail_item == SIZE_MAX)
        return MOE_OK;
    if (err)
        *err = first;
    return first.code;
}
#endif

/* Runs fn on items [0, n) with up to `workers` threads. Once one fails no new
 * items start, and the error of the lowest failing item is returned. */
static moe_status par_for(size_t n, int workers, item_fn fn, void *ctx, moe_err *err) {
#ifdef _OPENMP
    if (workers > 1 && n > 1)
        return par_for_omp(n, workers, fn, ctx, err);
#endif
    for (size_t i = 0; i < n; i++)
        MOE_TRY(fn(ctx, i, 0, err));
    return MOE_OK;
}

/* ---- plain I/O ------------------------------------------------------------------ */

/* Reads up to len bytes at off; *got < len only at end of file. */
static moe_status pread_full(int fd, void *buf, size_t len, uint64_t off, size_t *got,
                             const char *name, moe_err *err) {
    size_t done = 0;
    while (done < len) {
        ssize_t k = pread(fd, (uint8_t *)buf + done, len - done, (off_t)(off + done));
        if (k < 0 && errno == EINTR)
            continue;
        if (k < 0)
            return moe_fail(err, MOE_ERR_IO, "%s: read failed: %s", name, strerror(errno));
        if (k == 0)
            break;
        done += (size_t)k;
    }
    *got = done;
    return MOE_OK;
}

/* Outputs go through moe_output (tempfile.h): a temp file published once
 * complete and fsynced, or a device/FIFO/stdout written in place. */
typedef moe_output out_file;

static moe_status out_open(out_file *o, const char *path, bool overwrite, moe_err *err) {
    return moe_output_open(o, path, overwrite ? MOE_OUTPUT_OVERWRITE : 0, err);
}

static moe_status out_write(out_file *o, const void *buf, size_t len, moe_err *err) {
    return moe_output_write(o, buf, len, err);
}

/* Finishes o: on success the destination holds the bytes; on failure the temp
 * file is gone. Either way o is released. */
static moe_status out_finish(out_file *o, moe_status st, moe_err *err) {
    if (st == MOE_OK)
        return moe_output_commit(o, err);
    moe_output_abort(o);
    return st;
}

/* ---- writing -------------------------------------------------------------------- */

typedef struct compressor {
    int in_fd;
    const char *in_name;
    size_t frame_size;
    int workers;
    size_t bound;         /* ZSTD_compressBound(frame_size) */
    uint8_t *in;          /* workers chunks of plain bytes: the current batch */
    size_t in_len;        /* plain bytes in the batch */
    uint8_t *out;         /* workers slots of `bound` bytes */
    size_t *csize;        /* per slot */
    uint32_t *sum;        /* per slot: XXH64 low 32 bits of the plain chunk */
    ZSTD_CCtx **cctx;     /* per worker; parameters are sticky across frames */
    uint8_t *table;       /* seek table entries so far */
    size_t table_len, table_cap;
    uint32_t n_frames;    /* frames written so far */
} compressor;

static void compressor_free(compressor *c) {
    for (int w = 0; c->cctx && w < c->workers; w++)
        ZSTD_freeCCtx(c->cctx[w]);
    free(c->cctx);
    free(c->in);
    free(c->out);
    free(c->csize);
    free(c->sum);
    free(c->table);
}

/* Fewer workers than threads when the input has fewer chunks: same bytes out,
 * less memory. */
static int useful_workers(int fd, size_t frame_size, int threads) {
    struct stat sb;
    if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode))
        return threads;
    uint64_t chunks = ((uint64_t)sb.st_size + frame_size - 1) / frame_size;
    if (chunks < 1)
        chunks = 1;
    return chunks < (uint64_t)threads ? (int)chunks : threads;
}

static moe_status compressor_init(compressor *c, int level, int threads, moe_err *err) {
    c->workers = useful_workers(c->in_fd, c->frame_size, resolve_threads(threads));
    c->bound = ZSTD_compressBound(c->frame_size);
    uint64_t in_bytes, out_bytes;
    MOE_FAIL_IF(!moe_mul_u64((uint64_t)c->workers, c->frame_size, &in_bytes) ||
                    !moe_mul_u64((uint64_t)c->workers, c->bound, &out_bytes) ||
                    in_bytes > SIZE_MAX || out_bytes > SIZE_MAX,
                err, MOE_ERR_NOMEM, "%d threads of %zu-byte frames do not fit in memory",
                c->workers, c->frame_size);
    c->in = malloc((size_t)in_bytes);
    c->out = malloc((size_t)out_bytes);
    c->csize = calloc((size_t)c->workers, sizeof *c->csize);
    c->sum = calloc((size_t)c->workers, sizeof *c->sum);
    c->cctx = calloc((size_t)c->workers, sizeof *c->cctx);
    MOE_FAIL_IF(!c->in || !c->out || !c->csize || !c->sum || !c->cctx, err, MOE_ERR_NOMEM,
                "out of memory for %d compression buffers of %zu bytes", c->workers,
                c->frame_size);
    for (int w = 0; w < c->workers; w++) {
        ZSTD_CCtx *z = c->cctx[w] = ZSTD_createCCtx();
        MOE_FAIL_IF(!z, err, MOE_ERR_NOMEM, "out of memory for a zstd context");
        size_t r = ZSTD_CCtx_setParameter(z, ZSTD_c_compressionLevel, level);
        if (!ZSTD_isError(r))
            r = ZSTD_CCtx_setParameter(z, ZSTD_c_checksumFlag, 1);
        if (!ZSTD_isError(r))
            r = ZSTD_CCtx_setParameter(z, ZSTD_c_contentSizeFlag, 1);
        MOE_FAIL_IF(ZSTD_isError(r), err, MOE_ERR_USAGE, "zstd level %d: %s", level,
                    ZSTD_getErrorName(r));
    }
    return MOE_OK;
}

static moe_status compress_item(void *ctx, size_t slot, int worker_id, moe_err *err) {
    compressor *c = ctx;
    size_t off = slot * c->frame_size;
    size_t n = c->in_len - off < c->frame_size ? c->in_len - off : c->frame_size;
    const uint8_t *src = c->in + off;
    size_t r = ZSTD_compress2(c->cctx[worker_id], c->out + slot * c->bound, c->bound, src, n);
    if (ZSTD_isError(r)) {
        moe_status code =
            ZSTD_getErrorCode(r) == ZSTD_error_memory_allocation ? MOE_ERR_NOMEM : MOE_ERR_INTERNAL;
        return moe_fail(err, code, "%s: frame %zu: zstd compression failed: %s", c->in_name,
                        (size_t)c->n_frames + slot, ZSTD_getErrorName(r));
    }
    c->csize[slot] = r;
    c->sum[slot] = (uint32_t)XXH64(src, n, 0);
    return MOE_OK;
}

static moe_status append_entry(compressor *c, uint32_t csize, uint32_t dsize, uint32_t sum,
                               moe_err *err) {
    uint8_t *t = moe_grow(c->table, &c->table_cap, c->table_len + 12, 12 * 1024, 1);
    MOE_FAIL_IF(!t, err, MOE_ERR_NOMEM, "out of memory for the seek table");
    c->table = t;
    uint8_t *e = c->table + c->table_len;
    moe_store_le32(e, csize);
    moe_store_le32(e + 4, dsize);
    moe_store_le32(e + 8, sum);
    c->table_len += 12;
    return MOE_OK;
}

/* Compresses the batch in c->in (items chunks) and appends it to o in order. */
static moe_status flush_batch(compressor *c, size_t items, out_file *o, moe_err *err) {
    MOE_FAIL_IF((uint64_t)c->n_frames + items > MOE_ZSTD_MAX_FRAMES, err, MOE_ERR_UNSUPPORTED,
                "%s: more than %u frames of %zu bytes; use a larger frame size", c->in_name,
                MOE_ZSTD_MAX_FRAMES, c->frame_size);
    MOE_TRY(par_for(items, c->workers, compress_item, c, err));
    for (size_t s = 0; s < items; s++) {
        size_t off = s * c->frame_size;
        size_t n = c->in_len - off < c->frame_size ? c->in_len - off : c->frame_size;
        /* frame_size <= 1 GiB, so both sizes fit the table's u32 fields */
        MOE_TRY(out_write(o, c->out + s * c->bound, c->csize[s], err));
        MOE_TRY(append_entry(c, (uint32_t)c->csize[s], (uint32_t)n, c->sum[s], err));
    }
    c->n_frames += (uint32_t)items;
    return MOE_OK;
}

static moe_status write_seek_table(compressor *c, out_file *o, moe_err *err) {
    uint64_t body = (uint64_t)c->table_len + FOOTER_SIZE;
    MOE_FAIL_IF(body > UINT32_MAX, err, MOE_ERR_INTERNAL, "seek table too large");
    uint8_t head[SKIPPABLE_HEADER], foot[FOOTER_SIZE];
    moe_store_le32(head, MOE_ZSTD_SEEK_TABLE_MAGIC);
    moe_store_le32(head + 4, (uint32_t)body);
    moe_store_le32(foot, c->n_frames);
    foot[4] = DESC_CHECKSUM;
    moe_store_le32(foot + 5, MOE_ZSTD_SEEKABLE_MAGIC);
    MOE_TRY(out_write(o, head, sizeof head, err));
    MOE_TRY(out_write(o, c->table, c->table_len, err));
    return out_write(o, foot, sizeof foot, err);
}

static moe_status compress_stream(compressor *c, out_file *o, moe_err *err) {
    size_t batch = (size_t)c->workers * c->frame_size; /* checked in compressor_init */
    uint64_t pos = 0;
    for (;;) {
        MOE_TRY(pread_full(c->in_fd, c->in, batch, pos, &c->in_len, c->in_name, err));
        pos += c->in_len;
        size_t items = (c->in_len + c->frame_size - 1) / c->frame_size;
        /* an empty input still becomes one (empty) zstd frame: a file holding
         * only a skippable frame is not a zstd stream to every decoder */
        if (items == 0 && c->n_frames == 0)
            items = 1;
        if (items > 0)
            MOE_TRY(flush_batch(c, items, o, err));
        if (c->in_len < batch)
            break;
    }
    return write_seek_table(c, o, err);
}

moe_status moe_zstd_compress_fd(int plain_fd, const char *plain_name, const char *out_path,
                                int level, size_t frame_size, int threads, bool overwrite,
                                moe_err *err) {
    if (frame_size == 0)
        frame_size = MOE_ZSTD_DEFAULT_FRAME_SIZE;
    MOE_FAIL_IF(frame_size > MOE_ZSTD_MAX_FRAME_SIZE, err, MOE_ERR_USAGE,
                "frame size %zu is above the maximum %zu", frame_size, MOE_ZSTD_MAX_FRAME_SIZE);
    MOE_FAIL_IF(level < ZSTD_minCLevel() || level > ZSTD_maxCLevel(), err, MOE_ERR_USAGE,
                "zstd level %d is outside %d..%d", level, ZSTD_minCLevel(), ZSTD_maxCLevel());
    compressor c = {.in_fd = plain_fd, .in_name = plain_name, .frame_size = frame_size};
    out_file o;
    moe_status st = compressor_init(&c, level, threads, err);
    if (st == MOE_OK) {
        st = out_open(&o, out_path, overwrite, err);
        if (st == MOE_OK)
            st = out_finish(&o, compress_stream(&c, &o, err), err);
    }
    compressor_free(&c);
    return st;
}

moe_status moe_zstd_compress_file(const char *plain_path, const char *out_path, int level,
                                  size_t frame_size, int threads, bool overwrite, moe_err *err) {
    int fd = open(plain_path, O_RDONLY | O_CLOEXEC);
    MOE_FAIL_IF(fd < 0, err, MOE_ERR_IO, "%s: cannot open: %s", plain_path, strerror(errno));
    moe_status st = moe_zstd_compress_fd(fd, plain_path, out_path, level, frame_size, threads,
                                         overwrite, err);
    close(fd);
    return st;
}

/* ---- opening and validating ----------------------------------------------------- */

/* Per-thread decompression scratch. */
typedef struct worker {
    ZSTD_DCtx *dctx;
    uint8_t *cbuf; /* one frame's compressed bytes (fd sources only) */
} worker;

struct moe_zstd_file {
    char *name;
    int fd;               /* -1 for memory sources */
    const uint8_t *mem;   /* borrowed; NULL for fd sources */
    uint64_t file_size;
    bool seekable;
    uint32_t n_frames;
    uint64_t *coff;       /* n_frames + 1: frame i is compressed bytes [coff[i], coff[i+1]) */
    uint64_t *doff;       /* n_frames + 1: frame i is plain bytes [doff[i], doff[i+1]) */
    uint32_t *sums;       /* n_frames seek-table checksums, or NULL without the flag */
    size_t max_csize, max_dsize;
    worker rd;            /* moe_zstd_read's scratch, made on first use */
    uint8_t *cache;       /* max_dsize plain bytes of frame cache_frame */
    int64_t cache_frame;  /* -1: the cache holds nothing */
};

/* Points *p at n compressed bytes at off: into the mapping, or read into scratch. */
static moe_status src_bytes(const moe_zstd_file *f, uint64_t off, size_t n, uint8_t *scratch,
                            const uint8_t **p, moe_err *err) {
    uint64_t end;
    MOE_FAIL_IF(!moe_add_u64(off, n, &end) || end > f->file_size, err, MOE_ERR_INTERNAL,
                "%s: read of %zu bytes at %llu past the end", f->name, n, (unsigned long long)off);
    if (f->mem) {
        *p = f->mem + off;
        return MOE_OK;
    }
    size_t got = 0;
    MOE_TRY(pread_full(f->fd, scratch, n, off, &got, f->name, err));
    MOE_FAIL_IF(got != n, err, MOE_ERR_FORMAT,
                "%s: truncated at byte %llu (did the file change while open?)", f->name,
                (unsigned long long)(off + got));
    *p = scratch;
    return MOE_OK;
}

/* Entries of a skippable frame p[0..len) that ends in a seekable footer, checked
 * against data_size, the bytes before it. Fills f's tables. Errors are unprefixed. */
static moe_status parse_seek_table(moe_zstd_file *f, const uint8_t *p, size_t len,
                                   uint64_t data_size, moe_err *err) {
    MOE_FAIL_IF(len < SKIPPABLE_HEADER + FOOTER_SIZE, err, MOE_ERR_FORMAT, "seek table too short");
    moe_cursor foot = moe_cursor_make(p + len - FOOTER_SIZE, FOOTER_SIZE);
    uint32_t n, magic, body, skip_magic;
    uint8_t desc;
    MOE_TRY(moe_cursor_u32(&foot, &n, "frame count", err));
    MOE_TRY(moe_cursor_u8(&foot, &desc, "descriptor", err));
    MOE_TRY(moe_cursor_u32(&foot, &magic, "seekable magic", err));
    MOE_FAIL_IF(magic != MOE_ZSTD_SEEKABLE_MAGIC, err, MOE_ERR_FORMAT, "no seekable footer magic");
    MOE_FAIL_IF(desc & DESC_RESERVED, err, MOE_ERR_FORMAT,
                "seek table descriptor 0x%02x has reserved bits set", desc);
    MOE_FAIL_IF(n > MOE_ZSTD_MAX_FRAMES, err, MOE_ERR_FORMAT,
                "seek table lists %u frames, more than the maximum %u", n, MOE_ZSTD_MAX_FRAMES);
    size_t entry = desc & DESC_CHECKSUM ? 12 : 8;
    moe_cursor c = moe_cursor_make(p, len - FOOTER_SIZE);
    MOE_TRY(moe_cursor_u32(&c, &skip_magic, "seek table magic", err));
    MOE_TRY(moe_cursor_u32(&c, &body, "seek table size", err));
    MOE_FAIL_IF(skip_magic != MOE_ZSTD_SEEK_TABLE_MAGIC, err, MOE_ERR_FORMAT,
                "seek table does not start with the skippable magic 0x%08X", skip_magic);
    MOE_FAIL_IF((uint64_t)body != (uint64_t)n * entry + FOOTER_SIZE ||
                    moe_cursor_left(&c) != (uint64_t)n * entry,
                err, MOE_ERR_FORMAT, "seek table size %u does not match %u frames", body, n);
    f->n_frames = n;
    f->coff = calloc((size_t)n + 1, sizeof *f->coff);
    f->doff = calloc((size_t)n + 1, sizeof *f->doff);
    f->sums = entry == 12 ? calloc((size_t)n + 1, sizeof *f->sums) : NULL;
    MOE_FAIL_IF(!f->coff || !f->doff || (entry == 12 && !f->sums), err, MOE_ERR_NOMEM,
                "out of memory for a seek table of %u frames", n);
    for (uint32_t i = 0; i < n; i++) {
        uint32_t cs, ds;
        MOE_TRY(moe_cursor_u32(&c, &cs, "compressed size", err));
        MOE_TRY(moe_cursor_u32(&c, &ds, "decompressed size", err));
        if (f->sums)
            MOE_TRY(moe_cursor_u32(&c, &f->sums[i], "checksum", err));
        MOE_FAIL_IF(cs == 0, err, MOE_ERR_FORMAT, "frame %u: compressed size 0", i);
        MOE_FAIL_IF(ds > MOE_ZSTD_MAX_FRAME_SIZE || (uint64_t)ds > (uint64_t)cs * MAX_RATIO, err,
                    MOE_ERR_FORMAT, "frame %u: %u plain bytes from %u compressed is not possible",
                    i, ds, cs);
        MOE_FAIL_IF(!moe_add_u64(f->coff[i], cs, &f->coff[i + 1]) ||
                        !moe_add_u64(f->doff[i], ds, &f->doff[i + 1]),
                    err, MOE_ERR_FORMAT, "frame %u: offsets overflow", i);
        f->max_csize = cs > f->max_csize ? cs : f->max_csize;
        f->max_dsize = ds > f->max_dsize ? ds : f->max_dsize;
    }
    MOE_FAIL_IF(f->coff[n] != data_size, err, MOE_ERR_FORMAT,
                "seek table frames add up to %llu bytes but %llu bytes precede it",
                (unsigned long long)f->coff[n], (unsigned long long)data_size);
    f->seekable = true;
    return MOE_OK;
}

/* Size of the zstd frame header (magic included) whose descriptor byte is fhd. */
static uint64_t frame_header_size(uint8_t fhd) {
    static const uint8_t did_size[4] = {0, 1, 2, 4};
    static const uint8_t fcs_size[4] = {0, 2, 4, 8};
    bool single_segment = (fhd >> 5) & 1;
    uint64_t fcs = fcs_size[fhd >> 6];
    if (fhd >> 6 == 0 && single_segment)
        fcs = 1;
    return 4 + 1 + (single_segment ? 0 : 1) + did_size[fhd & 3] + fcs;
}

/* Offset just past the zstd or skippable frame starting at off, from its headers
 * only (block headers are walked, no decoding). Sets *end past file_size when
 * the file stops inside the frame. */
static moe_status frame_end(const moe_zstd_file *f, uint64_t off, uint64_t *end, moe_err *err) {
    uint8_t scratch[8];
    const uint8_t *p;
    *end = off + SKIPPABLE_HEADER;
    if (off + SKIPPABLE_HEADER > f->file_size)
        return MOE_OK;
    MOE_TRY(src_bytes(f, off, SKIPPABLE_HEADER, scratch, &p, err));
    uint32_t magic = moe_load_le32(p);
    if ((magic & 0xFFFFFFF0u) == 0x184D2A50u) { /* skippable: magic, u32 size, body */
        *end = off + SKIPPABLE_HEADER + moe_load_le32(p + 4);
        return MOE_OK;
    }
    MOE_FAIL_IF(magic != ZSTD_MAGICNUMBER, err, MOE_ERR_FORMAT,
                "%s: byte %llu: neither a zstd nor a skippable frame", f->name,
                (unsigned long long)off);
    uint8_t fhd = p[4];
    uint64_t pos = off + frame_header_size(fhd);
    for (;;) {
        if (pos + 3 > f->file_size) {
            *end = pos + 3;
            return MOE_OK;
        }
        MOE_TRY(src_bytes(f, pos, 3, scratch, &p, err));
        uint32_t h = (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16;
        uint32_t type = (h >> 1) & 3;
        MOE_FAIL_IF(type == 3, err, MOE_ERR_FORMAT, "%s: byte %llu: reserved zstd block type",
                    f->name, (unsigned long long)pos);
        pos += 3 + (type == 1 ? 1 : h >> 3); /* an RLE block stores its one byte */
        if (h & 1)
            break;
    }
    *end = pos + (fhd & FHD_CHECKSUM ? 4 : 0);
    return MOE_OK;
}

/* A file without a seekable footer is either a plain zstd stream or a cut-off
 * copy of one of ours (the footer is the last thing written). Walks the frame
 * headers to tell the two apart, so a truncated download is called that and
 * not "no seek table". */
static moe_status check_not_truncated(const moe_zstd_file *f, moe_err *err) {
    uint64_t off = 0;
    while (off < f->file_size) {
        uint64_t end;
        MOE_TRY(frame_end(f, off, &end, err));
        MOE_FAIL_IF(end > f->file_size, err, MOE_ERR_FORMAT,
                    "%s: truncated: the zstd frame at byte %llu needs %llu bytes but the file "
                    "ends at %llu (an interrupted copy or download?)",
                    f->name, (unsigned long long)off, (unsigned long long)(end - off),
                    (unsigned long long)f->file_size);
        off = end;
    }
    return MOE_OK;
}

/* Decides between seekable and stream-only, and loads the seek table. */
static moe_status open_common(moe_zstd_file *f, moe_err *err) {
    uint8_t head[4], foot[FOOTER_SIZE];
    size_t nh = f->file_size < 4 ? (size_t)f->file_size : 4;
    const uint8_t *p = NULL;
    MOE_TRY(src_bytes(f, 0, nh, head, &p, err));
    MOE_FAIL_IF(!moe_zstd_sniff(p, nh), err, MOE_ERR_FORMAT,
                "%s: not a zstd file (no zstd or skippable frame magic at the start)", f->name);
    if (f->file_size < SKIPPABLE_HEADER + FOOTER_SIZE)
        return check_not_truncated(f, err);
    MOE_TRY(src_bytes(f, f->file_size - FOOTER_SIZE, FOOTER_SIZE, foot, &p, err));
    if (moe_load_le32(p + 5) != MOE_ZSTD_SEEKABLE_MAGIC)
        return check_not_truncated(f, err); /* plain zstd stream: no random access */
    uint32_t n = moe_load_le32(p);
    uint64_t entry = p[4] & DESC_CHECKSUM ? 12 : 8;
    uint64_t len = (uint64_t)n * entry + SKIPPABLE_HEADER + FOOTER_SIZE; /* no overflow: n < 2^32 */
    MOE_FAIL_IF(len > f->file_size, err, MOE_ERR_FORMAT,
                "%s: seek table of %u frames needs %llu bytes but the file has %llu", f->name, n,
                (unsigned long long)len, (unsigned long long)f->file_size);
    uint8_t *buf = f->mem ? NULL : malloc((size_t)len);
    MOE_FAIL_IF(!f->mem && !buf, err, MOE_ERR_NOMEM, "out of memory");
    moe_status st = src_bytes(f, f->file_size - len, (size_t)len, buf, &p, err);
    if (st == MOE_OK) {
        st = parse_seek_table(f, p, (size_t)len, f->file_size - len, err);
        if (st == MOE_ERR_NEED_MORE) { /* the table is all there: short means malformed */
            st = MOE_ERR_FORMAT;
            if (err)
                err->code = st;
        }
        if (st != MOE_OK)
            moe_err_prefix(err, "%s: bad seek table", f->name);
    }
    free(buf);
    return st;
}

static moe_zstd_file *file_new(const char *name) {
    moe_zstd_file *f = calloc(1, sizeof *f);
    if (!f)
        return NULL;
    f->fd = -1;
    f->cache_frame = -1;
    f->name = strdup(name);
    if (!f->name) {
        free(f);
        return NULL;
    }
    return f;
}

void moe_zstd_close(moe_zstd_file *f) {
    if (!f)
        return;
    if (f->fd >= 0)
        close(f->fd);
    ZSTD_freeDCtx(f->rd.dctx);
    free(f->rd.cbuf);
    free(f->cache);
    free(f->coff);
    free(f->doff);
    free(f->sums);
    free(f->name);
    free(f);
}

static moe_status open_finish(moe_zstd_file *f, moe_zstd_file **out, moe_err *err) {
    moe_status st = open_common(f, err);
    if (st != MOE_OK) {
        moe_zstd_close(f);
        return st;
    }
    *out = f;
    return MOE_OK;
}

moe_status moe_zstd_open(const char *path, moe_zstd_file **out, moe_err *err) {
    *out = NULL;
    moe_zstd_file *f = file_new(path);
    MOE_FAIL_IF(!f, err, MOE_ERR_NOMEM, "out of memory");
    f->fd = open(path, O_RDONLY | O_CLOEXEC);
    struct stat sb;
    moe_status st = MOE_OK;
    if (f->fd < 0)
        st = moe_fail(err, MOE_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    else if (fstat(f->fd, &sb) != 0)
        st = moe_fail(err, MOE_ERR_IO, "%s: cannot stat: %s", path, strerror(errno));
    else if (!S_ISREG(sb.st_mode))
        st = moe_fail(err, MOE_ERR_UNSUPPORTED, "%s: not a regular file", path);
    if (st != MOE_OK) {
        moe_zstd_close(f);
        return st;
    }
    f->file_size = (uint64_t)sb.st_size;
    return open_finish(f, out, err);
}

moe_status moe_zstd_open_mem(const void *data, size_t len, const char *name,
                             moe_zstd_file **out, moe_err *err) {
    *out = NULL;
    moe_zstd_file *f = file_new(name);
    MOE_FAIL_IF(!f, err, MOE_ERR_NOMEM, "out of memory");
    /* a non-NULL base even for len 0, so offsets into it are always defined */
    static const uint8_t empty[1];
    f->mem = data ? data : empty;
    f->file_size = data ? len : 0;
    return open_finish(f, out, err);
}

bool moe_zstd_has_seek_table(const moe_zstd_file *f) { return f->seekable; }
uint64_t moe_zstd_size(const moe_zstd_file *f) { return f->seekable ? f->doff[f->n_frames] : 0; }
uint32_t moe_zstd_n_frames(const moe_zstd_file *f) { return f->seekable ? f->n_frames : 0; }

static moe_status need_seek_table(const moe_zstd_file *f, moe_err *err) {
    MOE_FAIL_IF(!f->seekable, err, MOE_ERR_UNSUPPORTED,
                "%s: zstd stream without a seek table (e.g. made by stock zstd): random access "
                "needs a .gguf.zst written by moe-toolkit; decompress it fully instead",
                f->name);
    return MOE_OK;
}

/* ---- decoding one frame ----------------------------------------------------------- */

static moe_status worker_init(const moe_zstd_file *f, worker *w, moe_err *err) {
    if (!w->dctx)
        w->dctx = ZSTD_createDCtx();
    if (!f->mem && !w->cbuf)
        w->cbuf = malloc(f->max_csize ? f->max_csize : 1);
    MOE_FAIL_IF(!w->dctx || (!f->mem && !w->cbuf), err, MOE_ERR_NOMEM,
                "out of memory for zstd decompression");
    return MOE_OK;
}

static void workers_free(worker *ws, int n) {
    for (int i = 0; ws && i < n; i++) {
        ZSTD_freeDCtx(ws[i].dctx);
        free(ws[i].cbuf);
    }
    free(ws);
}

static moe_status workers_new(const moe_zstd_file *f, int n, worker **out, moe_err *err) {
    worker *ws = calloc((size_t)n, sizeof *ws);
    MOE_FAIL_IF(!ws, err, MOE_ERR_NOMEM, "out of memory");
    for (int i = 0; i < n; i++) {
        moe_status st = worker_init(f, &ws[i], err);
        if (st != MOE_OK) {
            workers_free(ws, n);
            return st;
        }
    }
    *out = ws;
    return MOE_OK;
}

/* dst holds the frame's plain bytes, which zstd already checked against the
 * frame's own checksum if it has one; compare the seek table's copy. */
static moe_status check_sum(const moe_zstd_file *f, uint32_t i, const uint8_t *src, size_t csize,
                            const uint8_t *dst, size_t dsize, moe_err *err) {
    uint32_t got;
    /* A zstd content checksum is the same XXH64 low 32 bits, stored as the last
     * 4 bytes: reading it saves hashing the plain bytes again. */
    if (csize >= 9 && moe_load_le32(src) == MOE_ZSTD_FRAME_MAGIC && (src[4] & FHD_CHECKSUM))
        got = moe_load_le32(src + csize - 4);
    else
        got = (uint32_t)XXH64(dst, dsize, 0);
    MOE_FAIL_IF(got != f->sums[i], err, MOE_ERR_INTEGRITY,
                "%s: frame %u: checksum %08x does not match the seek table's %08x", f->name, i,
                got, f->sums[i]);
    return MOE_OK;
}

/* Decompresses frame i into dst (its full plain size), checking that the frame
 * is exactly one zstd frame of the listed sizes and both checksums agree. */
static moe_status decode_frame(const moe_zstd_file *f, uint32_t i, worker *w, uint8_t *dst,
                               moe_err *err) {
    size_t csize = (size_t)(f->coff[i + 1] - f->coff[i]);
    size_t dsize = (size_t)(f->doff[i + 1] - f->doff[i]);
    const uint8_t *src = NULL;
    MOE_TRY(src_bytes(f, f->coff[i], csize, w->cbuf, &src, err));
    size_t fcs = ZSTD_findFrameCompressedSize(src, csize);
    MOE_FAIL_IF(ZSTD_isError(fcs) || fcs != csize, err, MOE_ERR_FORMAT,
                "%s: frame %u: not one zstd frame of %zu bytes as the seek table says (%s)",
                f->name, i, csize, ZSTD_isError(fcs) ? ZSTD_getErrorName(fcs) : "size differs");
    unsigned long long content = ZSTD_getFrameContentSize(src, csize);
    MOE_FAIL_IF(content == ZSTD_CONTENTSIZE_ERROR ||
                    (content != ZSTD_CONTENTSIZE_UNKNOWN && content != dsize),
                err, MOE_ERR_FORMAT, "%s: frame %u: header disagrees with the seek table's %zu "
                "plain bytes", f->name, i, dsize);
    size_t r = ZSTD_decompressDCtx(w->dctx, dst, dsize, src, csize);
    if (ZSTD_isError(r)) {
        moe_status code = ZSTD_getErrorCode(r) == ZSTD_error_checksum_wrong ? MOE_ERR_INTEGRITY
                                                                            : MOE_ERR_FORMAT;
        return moe_fail(err, code, "%s: frame %u: %s", f->name, i, ZSTD_getErrorName(r));
    }
    MOE_FAIL_IF(r != dsize, err, MOE_ERR_FORMAT,
                "%s: frame %u: decoded %zu bytes, the seek table says %zu", f->name, i, r, dsize);
    if (f->sums)
        MOE_TRY(check_sum(f, i, src, csize, dst, dsize, err));
    return MOE_OK;
}

/* ---- random access ---------------------------------------------------------------- */

/* The non-empty frame holding plain byte off (off < total size). */
static uint32_t frame_at(const moe_zstd_file *f, uint64_t off) {
    uint32_t lo = 0, hi = f->n_frames; /* doff[lo] <= off < doff[hi] */
    while (hi - lo > 1) {
        uint32_t mid = lo + (hi - lo) / 2;
        if (f->doff[mid] <= off)
            lo = mid;
        else
            hi = mid;
    }
    return lo;
}

static moe_status load_cache(moe_zstd_file *f, uint32_t i, moe_err *err) {
    if (f->cache_frame == (int64_t)i)
        return MOE_OK;
    MOE_TRY(worker_init(f, &f->rd, err));
    if (!f->cache)
        f->cache = malloc(f->max_dsize ? f->max_dsize : 1);
    MOE_FAIL_IF(!f->cache, err, MOE_ERR_NOMEM, "out of memory for a %zu-byte frame",
                f->max_dsize);
    f->cache_frame = -1; /* a failed decode leaves partial bytes */
    MOE_TRY(decode_frame(f, i, &f->rd, f->cache, err));
    f->cache_frame = i;
    return MOE_OK;
}

moe_status moe_zstd_read(moe_zstd_file *f, uint64_t offset, void *buf, size_t len,
                         moe_err *err) {
    MOE_TRY(need_seek_table(f, err));
    uint64_t end, total = f->doff[f->n_frames];
    MOE_FAIL_IF(!moe_add_u64(offset, len, &end) || end > total, err, MOE_ERR_USAGE,
                "%s: read of %zu bytes at %llu is past the end (%llu bytes)", f->name, len,
                (unsigned long long)offset, (unsigned long long)total);
    uint8_t *out = buf;
    while (len > 0) {
        uint32_t i = frame_at(f, offset);
        size_t in_frame = (size_t)(offset - f->doff[i]);
        size_t avail = (size_t)(f->doff[i + 1] - offset);
        size_t take = avail < len ? avail : len;
        if (in_frame == 0 && take == avail && f->cache_frame != (int64_t)i) {
            /* the whole frame is wanted: decode straight into the caller's buffer */
            MOE_TRY(worker_init(f, &f->rd, err));
            MOE_TRY(decode_frame(f, i, &f->rd, out, err));
        } else {
            MOE_TRY(load_cache(f, i, err));
            memcpy(out, f->cache + in_frame, take);
        }
        out += take;
        offset += take;
        len -= take;
    }
    return MOE_OK;
}

/* ---- whole-file decompression ---------------------------------------------------- */

typedef struct frames_job {
    const moe_zstd_file *f;
    worker *ws;
    uint32_t first;   /* item k is frame first + k */
    uint8_t *dst;     /* decompress_all: the whole output; else per-slot buffers */
    size_t slot_size; /* 0: frames go to dst + their plain offset */
} frames_job;

static moe_status frames_item(void *ctx, size_t k, int worker_id, moe_err *err) {
    const frames_job *j = ctx;
    uint32_t i = j->first + (uint32_t)k;
    uint8_t *dst = j->slot_size ? j->dst + k * j->slot_size : j->dst + j->f->doff[i];
    return decode_frame(j->f, i, &j->ws[worker_id], dst, err);
}

static int frame_workers(const moe_zstd_file *f, int threads) {
    int n = resolve_threads(threads);
    if ((uint32_t)n > f->n_frames)
        n = f->n_frames > 0 ? (int)f->n_frames : 1;
    return n;
}

moe_status moe_zstd_decompress_all(moe_zstd_file *f, void *dst, size_t len, int threads,
                                   moe_err *err) {
    MOE_TRY(need_seek_table(f, err));
    uint64_t total = f->doff[f->n_frames];
    MOE_FAIL_IF(len != total, err, MOE_ERR_USAGE,
                "%s: output buffer of %zu bytes for %llu plain bytes", f->name, len,
                (unsigned long long)total);
    uint8_t empty[1]; /* empty frames still get decoded and checked */
    frames_job j = {.f = f, .dst = len ? dst : empty};
    int workers = frame_workers(f, threads);
    MOE_TRY(workers_new(f, workers, &j.ws, err));
    moe_status st = par_for(f->n_frames, workers, frames_item, &j, err);
    workers_free(j.ws, workers);
    return st;
}

/* Seekable files: batches of `workers` frames decoded in parallel, written in order. */
static moe_status write_frames(const moe_zstd_file *f, out_file *o, int threads, moe_err *err) {
    int workers = frame_workers(f, threads);
    frames_job j = {.f = f, .slot_size = f->max_dsize ? f->max_dsize : 1};
    uint64_t bytes;
    MOE_FAIL_IF(!moe_mul_u64((uint64_t)workers, j.slot_size, &bytes) || bytes > SIZE_MAX, err,
                MOE_ERR_NOMEM, "%s: %d frames of %zu bytes do not fit in memory", f->name,
                workers, j.slot_size);
    j.dst = malloc((size_t)bytes);
    MOE_FAIL_IF(!j.dst, err, MOE_ERR_NOMEM, "%s: out of memory for %d frames of %zu bytes",
                f->name, workers, j.slot_size);
    moe_status st = workers_new(f, workers, &j.ws, err);
    for (uint32_t i = 0; st == MOE_OK && i < f->n_frames; i += (uint32_t)workers) {
        uint32_t items = f->n_frames - i < (uint32_t)workers ? f->n_frames - i : (uint32_t)workers;
        j.first = i;
        st = par_for(items, workers, frames_item, &j, err);
        for (uint32_t k = 0; st == MOE_OK && k < items; k++)
            st = out_write(o, j.dst + k * j.slot_size,
                           (size_t)(f->doff[i + k + 1] - f->doff[i + k]), err);
    }
    workers_free(j.ws, workers);
    free(j.dst);
    return st;
}

/* Stream-only files: zstd's streaming decoder over the whole file, which walks
 * any mix of zstd and skippable frames. */
static moe_status stream_loop(const moe_zstd_file *f, ZSTD_DCtx *d, uint8_t *ibuf, size_t in_cap,
                              uint8_t *obuf, size_t out_cap, out_file *o, moe_err *err) {
    uint64_t pos = 0; /* compressed bytes handed to zstd so far */
    ZSTD_inBuffer in = {NULL, 0, 0};
    size_t hint = 0;  /* zstd's return: 0 exactly when the last frame is complete */
    for (;;) {
        if (in.pos == in.size && pos < f->file_size) {
            uint64_t left = f->file_size - pos;
            size_t n = f->mem ? (size_t)left : (left < in_cap ? (size_t)left : in_cap);
            const uint8_t *p = NULL;
            MOE_TRY(src_bytes(f, pos, n, ibuf, &p, err));
            in = (ZSTD_inBuffer){p, n, 0};
            pos += n;
        }
        ZSTD_outBuffer out = {obuf, out_cap, 0};
        size_t r = ZSTD_decompressStream(d, &out, &in);
        if (ZSTD_isError(r)) {
            moe_status code = ZSTD_getErrorCode(r) == ZSTD_error_checksum_wrong
                                  ? MOE_ERR_INTEGRITY
                                  : MOE_ERR_FORMAT;
            return moe_fail(err, code, "%s: near compressed byte %llu: %s", f->name,
                            (unsigned long long)(pos - in.size + in.pos), ZSTD_getErrorName(r));
        }
        hint = r;
        if (out.pos > 0)
            MOE_TRY(out_write(o, obuf, out.pos, err));
        /* Done once all input is in and zstd either finished a frame (0: fully
         * flushed, even if out is exactly full; calling again would return the
         * next frame's header size) or stopped filling the output. */
        if (pos == f->file_size && in.pos == in.size && (r == 0 || out.pos < out.size))
            break;
    }
    MOE_FAIL_IF(hint != 0, err, MOE_ERR_FORMAT, "%s: truncated: the last zstd frame is incomplete",
                f->name);
    return MOE_OK;
}

static moe_status write_stream(const moe_zstd_file *f, out_file *o, moe_err *err) {
    size_t in_cap = ZSTD_DStreamInSize(), out_cap = ZSTD_DStreamOutSize();
    ZSTD_DCtx *d = ZSTD_createDCtx();
    uint8_t *ibuf = f->mem ? NULL : malloc(in_cap);
    uint8_t *obuf = malloc(out_cap);
    moe_status st;
    if (!d || !obuf || (!f->mem && !ibuf))
        st = moe_fail(err, MOE_ERR_NOMEM, "out of memory for zstd decompression");
    else
        st = stream_loop(f, d, ibuf, in_cap, obuf, out_cap, o, err);
    ZSTD_freeDCtx(d);
    free(ibuf);
    free(obuf);
    return st;
}

moe_status moe_zstd_decompress_to_file(moe_zstd_file *f, const char *out_path, int threads,
                                       bool overwrite, moe_err *err) {
    out_file o;
    MOE_TRY(out_open(&o, out_path, overwrite, err));
    moe_status st = f->seekable ? write_frames(f, &o, threads, err) : write_stream(f, &o, err);
    return out_finish(&o, st, err);
}

/* ---- sniffing ------------------------------------------------------------------- */

bool moe_zstd_sniff(const void *prefix, size_t len) {
    if (len < 4)
        return false;
    uint32_t m = moe_load_le32(prefix);
    /* skippable frames use the 16 magics 0x184D2A50..0x184D2A5F */
    return m == MOE_ZSTD_FRAME_MAGIC || (m & 0xFFFFFFF0u) == 0x184D2A50u;
}

bool moe_zstd_path_is_zstd(const char *path) {
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return false;
    uint8_t head[4];
    size_t got = 0;
    bool ok = pread_full(fd, head, sizeof head, 0, &got, path, NULL) == MOE_OK &&
              moe_zstd_sniff(head, got);
    close(fd);
    return ok;
}
