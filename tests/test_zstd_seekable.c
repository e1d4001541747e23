/* test_zstd_seekable — seekable .gguf.zst writer and reader.
 *
 *   test_zstd_seekable            unit: round trips, layout, random access,
 *                                 thread-count independence, corrupt inputs
 *   test_zstd_seekable cli        interop with the stock `zstd` CLI (77 if absent)
 *   test_zstd_seekable bench [MB] throughput at level 3, 1 and 2 threads
 *                                 (not run by CTest)
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <xxhash.h>
#include <zstd.h>

#include "formats/gguf/cursor.h"
#include "formats/gguf/zstd_seekable.h"
#include "test_util.h"
#include "formats/base/clock.h"

#define SEED 0x5EEDC0DEu
#define FS ((size_t)64 << 10) /* frame size used by the unit tests */

static char tmpdir[256];

/* ---- helpers ------------------------------------------------------------------ */

static uint64_t rng_state;
static uint64_t rng(void) { /* splitmix64 */
    uint64_t z = (rng_state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static void fill_random(uint8_t *p, size_t n) {
    for (size_t i = 0; i < n; i++)
        p[i] = (uint8_t)rng();
}

/* Text-like bytes: words from a small alphabet with repeats (ratio ~3-5). */
static void fill_compressible(uint8_t *p, size_t n) {
    static const char *words[] = {"expert", "gate", "up", "down", "blk", "ffn", "attn",
                                  "norm", "weight", "bias", "0", "17", "moe", " ", "\n"};
    size_t i = 0;
    while (i < n) {
        const char *w = words[rng() % (sizeof words / sizeof words[0])];
        for (size_t k = 0; w[k] && i < n; k++)
            p[i++] = (uint8_t)w[k];
    }
}

/* Moderately compressible, like quantized weights: bytes from a peaked
 * distribution (sum of 4 uniform nibbles, ~5.5 bits of entropy) with short runs
 * of zeros. */
static void fill_weights(uint8_t *p, size_t n) {
    size_t i = 0;
    while (i < n) {
        uint64_t r = rng();
        if ((r & 63) == 0) {
            size_t run = 16 + (r >> 8) % 64;
            for (size_t k = 0; k < run && i < n; k++)
                p[i++] = 0;
            continue;
        }
        for (int k = 0; k < 4 && i < n; k++, r >>= 16)
            p[i++] = (uint8_t)((r & 15) + ((r >> 4) & 15) + ((r >> 8) & 15) + ((r >> 12) & 15));
    }
}

static void path_in(char *out, size_t cap, const char *name) {
    snprintf(out, cap, "%s/%s", tmpdir, name);
}

static bool write_bytes(const char *path, const void *p, size_t n) {
    FILE *fp = fopen(path, "wb");
    if (!fp)
        return false;
    bool ok = fwrite(p, 1, n, fp) == n;
    return fclose(fp) == 0 && ok;
}

static bool file_equals(const char *path, const uint8_t *want, size_t n) {
    size_t got_n;
    uint8_t *got = test_read_file(path, &got_n);
    bool eq = got && got_n == n && (n == 0 || memcmp(got, want, n) == 0);
    free(got);
    return eq;
}

/* Whether any "*.tmp.*" file was left in the temp dir. */
static bool temp_files_left(void) {
    DIR *d = opendir(tmpdir);
    bool found = false;
    for (struct dirent *e; d && (e = readdir(d));)
        found |= strstr(e->d_name, ".tmp.") != NULL;
    if (d)
        closedir(d);
    return found;
}

static void remove_tmpdir(void) {
    DIR *d = opendir(tmpdir);
    char p[512];
    for (struct dirent *e; d && (e = readdir(d));) {
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) {
            snprintf(p, sizeof p, "%s/%s", tmpdir, e->d_name);
            unlink(p);
        }
    }
    if (d)
        closedir(d);
    rmdir(tmpdir);
}

static void make_tmpdir(void) {
    const char *base = getenv("TMPDIR");
    snprintf(tmpdir, sizeof tmpdir, "%s/moe-zstd-XXXXXX", base && *base ? base : "/tmp");
    if (!mkdtemp(tmpdir)) {
        fprintf(stderr, "mkdtemp: %s\n", strerror(errno));
        exit(1);
    }
}

/* ---- layout, checked independently of the reader -------------------------------- */

/* Walks the seek table at the end of z the way the published format describes it
 * and checks it against the plain bytes and the frames themselves. */
static void check_layout(const uint8_t *z, size_t zn, const uint8_t *plain, size_t n,
                         size_t fs, const char *what) {
    size_t want_frames = n ? (n + fs - 1) / fs : 1;
    CHECK(zn >= 17 + 12 * want_frames, "%s: %zu bytes too short", what, zn);
    if (zn < 17 + 12 * want_frames)
        return;
    CHECK(moe_load_le32(z) == MOE_ZSTD_FRAME_MAGIC, "%s: starts with a zstd frame", what);
    CHECK(moe_load_le32(z + zn - 4) == 0x8F92EAB1u, "%s: seekable magic", what);
    CHECK(z[zn - 5] == 0x80, "%s: descriptor 0x%02x", what, z[zn - 5]);
    uint32_t nf = moe_load_le32(z + zn - 9);
    CHECK(nf == want_frames, "%s: %u frames, want %zu", what, nf, want_frames);
    if (nf != want_frames)
        return;
    size_t table = 8 + 12 * (size_t)nf + 9;
    const uint8_t *t = z + zn - table;
    CHECK(moe_load_le32(t) == 0x184D2A5Eu, "%s: skippable magic", what);
    CHECK(moe_load_le32(t + 4) == 12 * nf + 9, "%s: skippable frame size", what);
    size_t coff = 0, doff = 0;
    for (uint32_t i = 0; i < nf; i++) {
        const uint8_t *e = t + 8 + 12 * (size_t)i;
        uint32_t cs = moe_load_le32(e), ds = moe_load_le32(e + 4), sum = moe_load_le32(e + 8);
        size_t want_ds = n - doff < fs ? n - doff : fs;
        CHECK(ds == want_ds, "%s: frame %u plain size %u want %zu", what, i, ds, want_ds);
        CHECK(coff + cs <= zn - table, "%s: frame %u overruns", what, i);
        if (coff + cs > zn - table || ds != want_ds)
            return;
        CHECK(sum == (uint32_t)XXH64(plain + doff, ds, 0), "%s: frame %u checksum", what, i);
        /* each frame stands alone: one zstd frame declaring its content size */
        CHECK(ZSTD_findFrameCompressedSize(z + coff, cs) == cs, "%s: frame %u size", what, i);
        CHECK(ZSTD_getFrameContentSize(z + coff, cs) == ds, "%s: frame %u content size", what, i);
        coff += cs;
        doff += ds;
    }
    CHECK(coff == zn - table && doff == n, "%s: frames cover the file", what);
}

/* ---- round trips ------------------------------------------------------------------- */

static void check_random_reads(moe_zstd_file *f, const uint8_t *plain, size_t n,
                               const char *what) {
    uint8_t *buf = malloc(n + 1);
    moe_err err;
    int bad = 0;
    for (int k = 0; k < 150 && n > 0; k++) {
        uint64_t off = rng() % n;
        /* mostly short reads (cache), sometimes spanning several frames */
        size_t len = (size_t)(rng() % ((k % 4 == 0 ? 3 * FS : 4096) + 1));
        if (len > n - off)
            len = (size_t)(n - off);
        if (moe_zstd_read(f, off, buf, len, &err) != MOE_OK || memcmp(buf, plain + off, len))
            bad++;
    }
    CHECK(bad == 0, "%s: %d random reads differ", what, bad);
    CHECK(moe_zstd_read(f, n, buf, 0, &err) == MOE_OK, "%s: empty read at the end", what);
    CHECK(moe_zstd_read(f, n, buf, 1, &err) == MOE_ERR_USAGE, "%s: read past the end", what);
    CHECK(moe_zstd_read(f, UINT64_MAX, buf, 2, &err) == MOE_ERR_USAGE, "%s: offset overflow",
          what);
    if (n > 0) {
        CHECK(moe_zstd_read(f, 0, buf, n, &err) == MOE_OK && memcmp(buf, plain, n) == 0,
              "%s: whole-file read", what);
    }
    free(buf);
}

static void check_reader(moe_zstd_file *f, const uint8_t *plain, size_t n, const char *what) {
    moe_err err;
    CHECK(moe_zstd_has_seek_table(f), "%s: seek table", what);
    CHECK(moe_zstd_size(f) == n, "%s: size %" PRIu64 " want %zu", what, moe_zstd_size(f), n);
    CHECK(moe_zstd_n_frames(f) == (n ? (n + FS - 1) / FS : 1), "%s: frame count", what);
    uint8_t *all = malloc(n + 1);
    for (int t = 1; t <= 2; t++) {
        memset(all, 0xAB, n + 1);
        moe_status st = moe_zstd_decompress_all(f, all, n, t, &err);
        CHECK(st == MOE_OK && memcmp(all, plain, n) == 0, "%s: decompress_all threads=%d: %s",
              what, t, err.msg);
    }
    CHECK(moe_zstd_decompress_all(f, all, n + 1, 1, &err) == MOE_ERR_USAGE,
          "%s: wrong buffer size", what);
    free(all);
    check_random_reads(f, plain, n, what);
}

static void round_trip(size_t n, int kind) {
    char what[64], plain_p[300], z1[300], z2[300], z3[300], back[300];
    snprintf(what, sizeof what, "%s n=%zu", kind ? "compressible" : "random", n);
    uint8_t *plain = malloc(n + 1);
    (kind ? fill_compressible : fill_random)(plain, n);
    path_in(plain_p, sizeof plain_p, "plain");
    path_in(z1, sizeof z1, "t1.zst");
    path_in(z2, sizeof z2, "t2.zst");
    path_in(z3, sizeof z3, "t3.zst");
    path_in(back, sizeof back, "back");
    CHECK(write_bytes(plain_p, plain, n), "write plain");
    moe_err err;
    moe_status st = moe_zstd_compress_file(plain_p, z1, 3, FS, 1, true, &err);
    CHECK(st == MOE_OK, "%s: compress threads=1: %s", what, err.msg);
    st = moe_zstd_compress_file(plain_p, z2, 3, FS, 2, true, &err);
    CHECK(st == MOE_OK, "%s: compress threads=2: %s", what, err.msg);
    st = moe_zstd_compress_file(plain_p, z3, 3, FS, 3, true, &err);
    CHECK(st == MOE_OK, "%s: compress threads=3: %s", what, err.msg);
    size_t n1, n2, n3;
    uint8_t *b1 = test_read_file(z1, &n1), *b2 = test_read_file(z2, &n2),
            *b3 = test_read_file(z3, &n3);
    CHECK(b1 && b2 && b3 && n1 == n2 && n1 == n3 && !memcmp(b1, b2, n1) && !memcmp(b1, b3, n1),
          "%s: output independent of thread count", what);
    if (b1)
        check_layout(b1, n1, plain, n, FS, what);

    moe_zstd_file *f = NULL;
    st = moe_zstd_open(z2, &f, &err);
    CHECK(st == MOE_OK, "%s: open: %s", what, err.msg);
    if (f) {
        check_reader(f, plain, n, what);
        st = moe_zstd_decompress_to_file(f, back, 2, true, &err);
        CHECK(st == MOE_OK && file_equals(back, plain, n), "%s: decompress_to_file: %s", what,
              err.msg);
    }
    moe_zstd_close(f);
    f = NULL;
    st = moe_zstd_open_mem(b1, n1, "mem", &f, &err);
    CHECK(st == MOE_OK, "%s: open_mem: %s", what, err.msg);
    if (f)
        check_reader(f, plain, n, what);
    moe_zstd_close(f);
    CHECK(!temp_files_left(), "%s: temp files left behind", what);
    free(b1);
    free(b2);
    free(b3);
    free(plain);
}

static void test_round_trips(void) {
    const size_t sizes[] = {0, 1, FS - 1, FS, FS + 1, 3 * FS + FS / 2};
    for (int kind = 0; kind < 2; kind++)
        for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++)
            round_trip(sizes[i], kind);
}

/* A plain temp written through an fd, compressed without reopening it. */
static void test_compress_fd(void) {
    char plain_p[300], a[300], b[300];
    path_in(plain_p, sizeof plain_p, "fd_plain");
    path_in(a, sizeof a, "fd_a.zst");
    path_in(b, sizeof b, "fd_b.zst");
    size_t n = 2 * FS + 123;
    uint8_t *plain = malloc(n);
    fill_compressible(plain, n);
    int fd = open(plain_p, O_RDWR | O_CREAT | O_TRUNC, 0644);
    CHECK(fd >= 0 && write(fd, plain, n) == (ssize_t)n, "write through fd");
    moe_err err;
    off_t pos_before = lseek(fd, 0, SEEK_CUR);
    CHECK(moe_zstd_compress_fd(fd, "fd_plain", a, 5, FS, 2, false, &err) == MOE_OK,
          "compress_fd: %s", err.msg);
    CHECK(lseek(fd, 0, SEEK_CUR) == pos_before, "compress_fd leaves the file position alone");
    close(fd);
    CHECK(moe_zstd_compress_file(plain_p, b, 5, FS, 1, false, &err) == MOE_OK,
          "compress_file: %s", err.msg);
    size_t na, nb;
    uint8_t *za = test_read_file(a, &na), *zb = test_read_file(b, &nb);
    CHECK(za && zb && na == nb && !memcmp(za, zb, na), "fd and path variants agree");
    free(za);
    free(zb);
    free(plain);
}

/* ---- usage errors -------------------------------------------------------------------- */

static void test_usage_errors(void) {
    char plain_p[300], out[300], missing[300];
    path_in(plain_p, sizeof plain_p, "u_plain");
    path_in(out, sizeof out, "u_out.zst");
    path_in(missing, sizeof missing, "does_not_exist");
    uint8_t data[1000];
    fill_random(data, sizeof data);
    write_bytes(plain_p, data, sizeof data);
    write_bytes(out, "keep", 4);
    moe_err err;
    CHECK(moe_zstd_compress_file(plain_p, out, 3, FS, 1, false, &err) == MOE_ERR_USAGE,
          "existing output without overwrite");
    CHECK(file_equals(out, (const uint8_t *)"keep", 4), "existing output untouched");
    CHECK(moe_zstd_compress_file(plain_p, out, 99, FS, 1, true, &err) == MOE_ERR_USAGE,
          "level 99 rejected");
    CHECK(moe_zstd_compress_file(plain_p, out, 3, MOE_ZSTD_MAX_FRAME_SIZE + 1, 1, true, &err) ==
              MOE_ERR_USAGE,
          "oversized frame rejected");
    CHECK(moe_zstd_compress_file(missing, out, 3, FS, 1, true, &err) == MOE_ERR_IO &&
              strstr(err.msg, missing),
          "missing input: %s", err.msg);
    CHECK(file_equals(out, (const uint8_t *)"keep", 4), "failed runs leave the output alone");
    /* default frame size and level 0 (zstd's default) */
    CHECK(moe_zstd_compress_file(plain_p, out, 0, 0, 0, true, &err) == MOE_OK,
          "defaults: %s", err.msg);
    moe_zstd_file *f = NULL;
    CHECK(moe_zstd_open(missing, &f, &err) == MOE_ERR_IO && !f, "open of a missing file");
    CHECK(moe_zstd_open(tmpdir, &f, &err) != MOE_OK && !f, "open of a directory");
    CHECK(moe_zstd_open(out, &f, &err) == MOE_OK, "open defaults: %s", err.msg);
    if (f) {
        char back[300];
        path_in(back, sizeof back, "u_back");
        write_bytes(back, "keep", 4);
        CHECK(moe_zstd_decompress_to_file(f, back, 1, false, &err) == MOE_ERR_USAGE,
              "decompress onto an existing file");
        CHECK(moe_zstd_decompress_to_file(f, back, 1, true, &err) == MOE_OK &&
                  file_equals(back, data, sizeof data),
              "decompress with overwrite");
    }
    moe_zstd_close(f);
    moe_zstd_close(NULL);
    CHECK(!temp_files_left(), "no temp files after errors");
}

static void test_sniff(void) {
    const uint8_t zs[] = {0x28, 0xB5, 0x2F, 0xFD}, skip[] = {0x5E, 0x2A, 0x4D, 0x18};
    const uint8_t skip0[] = {0x50, 0x2A, 0x4D, 0x18}, gguf[] = {'G', 'G', 'U', 'F'};
    CHECK(moe_zstd_sniff(zs, 4) && moe_zstd_sniff(skip, 4) && moe_zstd_sniff(skip0, 4),
          "zstd and skippable magics");
    CHECK(!moe_zstd_sniff(gguf, 4) && !moe_zstd_sniff(zs, 3), "GGUF and short prefixes");
    char p[300];
    path_in(p, sizeof p, "sniff");
    write_bytes(p, gguf, 4);
    CHECK(!moe_zstd_path_is_zstd(p), "GGUF file is not zstd");
    write_bytes(p, zs, 4);
    CHECK(moe_zstd_path_is_zstd(p), "zstd file sniffed");
}

/* ---- hand-built files ----------------------------------------------------------------- */

/* Builds a seekable file with libzstd directly: frames with or without their
 * own checksum, table with or without checksums. Caller frees. */
static uint8_t *build_seekable(const uint8_t *plain, size_t n, size_t fs, bool frame_sums,
                               bool table_sums, size_t *out_len) {
    size_t nf = n ? (n + fs - 1) / fs : 1, entry = table_sums ? 12 : 8;
    size_t cap = nf * ZSTD_compressBound(fs) + 17 + nf * entry;
    uint8_t *z = malloc(cap), *table = malloc(nf * entry);
    ZSTD_CCtx *c = ZSTD_createCCtx();
    ZSTD_CCtx_setParameter(c, ZSTD_c_checksumFlag, frame_sums);
    size_t len = 0;
    for (size_t i = 0; i < nf; i++) {
        size_t off = i * fs, ds = n - off < fs ? n - off : fs;
        size_t cs = ZSTD_compress2(c, z + len, cap - len, plain + off, ds);
        moe_store_le32(table + i * entry, (uint32_t)cs);
        moe_store_le32(table + i * entry + 4, (uint32_t)ds);
        if (table_sums)
            moe_store_le32(table + i * entry + 8, (uint32_t)XXH64(plain + off, ds, 0));
        len += cs;
    }
    moe_store_le32(z + len, 0x184D2A5Eu);
    moe_store_le32(z + len + 4, (uint32_t)(nf * entry + 9));
    memcpy(z + len + 8, table, nf * entry);
    len += 8 + nf * entry;
    moe_store_le32(z + len, (uint32_t)nf);
    z[len + 4] = table_sums ? 0x80 : 0;
    moe_store_le32(z + len + 5, 0x8F92EAB1u);
    *out_len = len + 9;
    ZSTD_freeCCtx(c);
    free(table);
    return z;
}

/* Other producers' choices: frames without checksums (our reader then hashes
 * the plain bytes itself) and tables without checksums. */
static void test_foreign_layouts(void) {
    size_t n = 2 * FS + 77;
    uint8_t *plain = malloc(n), *out = malloc(n);
    fill_compressible(plain, n);
    for (int v = 0; v < 4; v++) {
        bool frame_sums = v & 1, table_sums = v & 2;
        size_t zn;
        uint8_t *z = build_seekable(plain, n, FS, frame_sums, table_sums, &zn);
        moe_zstd_file *f = NULL;
        moe_err err;
        moe_status st = moe_zstd_open_mem(z, zn, "foreign", &f, &err);
        CHECK(st == MOE_OK, "foreign v%d open: %s", v, err.msg);
        if (f) {
            CHECK(moe_zstd_decompress_all(f, out, n, 2, &err) == MOE_OK && !memcmp(out, plain, n),
                  "foreign v%d decompress: %s", v, err.msg);
        }
        moe_zstd_close(f);
        if (table_sums && !frame_sums) {
            /* a wrong table checksum must be caught by hashing */
            z[zn - 9 - 8 - 12 * 3 + 8 + 12 + 8] ^= 1; /* frame 1's checksum */
            CHECK(moe_zstd_open_mem(z, zn, "foreign", &f, &err) == MOE_OK, "reopen");
            st = f ? moe_zstd_decompress_all(f, out, n, 1, &err) : MOE_ERR_INTERNAL;
            CHECK(st == MOE_ERR_INTEGRITY && strstr(err.msg, "frame 1"),
                  "hashed checksum mismatch: %s", err.msg);
            moe_zstd_close(f);
        }
        free(z);
    }
    free(plain);
    free(out);
}

/* A seek table alone (zero frames) is a valid, empty seekable file. */
static void test_zero_frames(void) {
    uint8_t z[17];
    moe_store_le32(z, 0x184D2A5Eu);
    moe_store_le32(z + 4, 9);
    moe_store_le32(z + 8, 0);
    z[12] = 0x80;
    moe_store_le32(z + 13, 0x8F92EAB1u);
    moe_zstd_file *f = NULL;
    moe_err err;
    CHECK(moe_zstd_open_mem(z, sizeof z, "zero", &f, &err) == MOE_OK, "zero frames: %s", err.msg);
    if (f) {
        uint8_t b;
        CHECK(moe_zstd_size(f) == 0 && moe_zstd_decompress_all(f, &b, 0, 1, &err) == MOE_OK,
              "zero frames decompress");
        CHECK(moe_zstd_read(f, 0, &b, 1, &err) == MOE_ERR_USAGE, "zero frames read past end");
    }
    moe_zstd_close(f);
}

/* Plain zstd streams (no seek table) built with libzstd: one frame whose plain
 * size is a multiple of zstd's stream output buffer (the decoder's end-of-input
 * edge), and several frames around a skippable frame. */
static void test_stream_only(void) {
    size_t n = 4 * ZSTD_DStreamOutSize();
    uint8_t *plain = malloc(2 * n), *z = malloc(3 * ZSTD_compressBound(n) + 16);
    fill_compressible(plain, 2 * n);
    size_t z1 = ZSTD_compress(z, ZSTD_compressBound(n), plain, n, 3);
    CHECK(!ZSTD_isError(z1), "libzstd compress");
    char back[300];
    path_in(back, sizeof back, "stream_back");
    moe_zstd_file *f = NULL;
    moe_err err;
    CHECK(moe_zstd_open_mem(z, z1, "stream", &f, &err) == MOE_OK && !moe_zstd_has_seek_table(f),
          "plain stream opens stream-only: %s", err.msg);
    CHECK(f && moe_zstd_decompress_to_file(f, back, 2, true, &err) == MOE_OK &&
              file_equals(back, plain, n),
          "one frame, output a multiple of the stream buffer: %s", err.msg);
    moe_zstd_close(f);
    f = NULL;
    /* frame | skippable frame | frame: the second half of plain */
    const uint8_t skip[11] = {0x53, 0x2A, 0x4D, 0x18, 3, 0, 0, 0, 7, 7, 7};
    memcpy(z + z1, skip, sizeof skip);
    size_t z2 = ZSTD_compress(z + z1 + sizeof skip, 2 * ZSTD_compressBound(n), plain + n, n, 1);
    size_t zn = z1 + sizeof skip + z2;
    CHECK(moe_zstd_open_mem(z, zn, "stream", &f, &err) == MOE_OK, "concatenated: %s", err.msg);
    CHECK(f && moe_zstd_decompress_to_file(f, back, 1, true, &err) == MOE_OK &&
              file_equals(back, plain, 2 * n),
          "frames around a skippable frame: %s", err.msg);
    moe_zstd_close(f);
    f = NULL;
    z[zn] = 0x28; /* one byte of a next frame's magic: trailing garbage */
    /* the walk over the frame headers at open sees a frame cut short */
    CHECK(moe_zstd_open_mem(z, zn + 1, "stream", &f, &err) == MOE_ERR_FORMAT && !f &&
              strstr(err.msg, "stream: truncated"),
          "trailing partial magic rejected at open: %s", err.msg);
    moe_zstd_close(f);
    free(plain);
    free(z);
}

/* ---- corrupt inputs -------------------------------------------------------------------- */

/* Everything a corrupt variant may do: fail to open with a format error, open
 * as stream-only (then random access is unsupported and full decompression
 * fails as truncated or malformed), or open and then fail decoding with a
 * format/integrity error naming the frame. Returns whether it was rejected;
 * never accepts wrong bytes. */
static bool probe_corrupt(const uint8_t *z, size_t zn, const uint8_t *plain, size_t n,
                          const char *what) {
    moe_zstd_file *f = NULL;
    moe_err err = {MOE_OK, ""};
    moe_status st = moe_zstd_open_mem(z, zn, "corrupt.gguf.zst", &f, &err);
    if (st != MOE_OK) {
        CHECK(st == MOE_ERR_FORMAT && strstr(err.msg, "corrupt.gguf.zst") && !f,
              "%s: open fails as a format error naming the file: %s", what, err.msg);
        return true;
    }
    bool rejected = true;
    uint8_t *out = malloc(n + 1);
    if (!moe_zstd_has_seek_table(f)) {
        st = moe_zstd_decompress_all(f, out, n, 1, &err);
        CHECK(st == MOE_ERR_UNSUPPORTED && strstr(err.msg, "seek table"),
              "%s: stream-only says it lacks a seek table: %s", what, err.msg);
    } else if (moe_zstd_size(f) != n) {
        /* a changed plain size cannot pass: the frame headers disagree (decoded
         * to a file, which visits every frame, even one now listed as empty) */
        char sink[300];
        path_in(sink, sizeof sink, "probe_out");
        st = moe_zstd_decompress_to_file(f, sink, 2, true, &err);
        CHECK(st == MOE_ERR_FORMAT && strstr(err.msg, "frame") && access(sink, F_OK) != 0,
              "%s: size change caught at decode: %s", what, err.msg);
    } else {
        st = moe_zstd_decompress_all(f, out, n, 2, &err);
        if (st == MOE_OK) {
            CHECK(memcmp(out, plain, n) == 0, "%s: accepted with wrong bytes", what);
            rejected = false;
        } else {
            CHECK((st == MOE_ERR_FORMAT || st == MOE_ERR_INTEGRITY) &&
                      strstr(err.msg, "corrupt.gguf.zst") && strstr(err.msg, "frame"),
                  "%s: decode error names file and frame: %s", what, err.msg);
            /* the random-access path must reject it as well */
            uint8_t *again = malloc(n + 1);
            st = moe_zstd_read(f, 0, again, n, &err);
            CHECK(st == MOE_ERR_FORMAT || st == MOE_ERR_INTEGRITY, "%s: read rejects too", what);
            free(again);
        }
    }
    free(out);
    moe_zstd_close(f);
    return rejected;
}

static void test_corrupt_table(const uint8_t *z, size_t zn, const uint8_t *plain, size_t n) {
    uint8_t *c = malloc(zn);
    size_t nf = (n + FS - 1) / FS, table = 17 + 12 * nf;
    int rejected = 0, total = 0;
    for (size_t pos = zn - table; pos < zn; pos++) {
        for (int bit = 0; bit < 8; bit++) {
            memcpy(c, z, zn);
            c[pos] ^= (uint8_t)(1u << bit);
            char what[64];
            snprintf(what, sizeof what, "table byte %zu bit %d", pos - (zn - table), bit);
            rejected += probe_corrupt(c, zn, plain, n, what);
            total++;
        }
    }
    /* only the two unused descriptor bits may be ignored */
    CHECK(rejected == total - 2, "seek table flips: %d of %d rejected", rejected, total);
    /* named cases */
    moe_err err;
    moe_zstd_file *f = NULL;
    memcpy(c, z, zn);
    c[zn - 5] |= 0x40; /* reserved descriptor bit */
    CHECK(moe_zstd_open_mem(c, zn, "x", &f, &err) == MOE_ERR_FORMAT && strstr(err.msg, "reserved"),
          "reserved bit: %s", err.msg);
    memcpy(c, z, zn);
    moe_store_le32(c + zn - 9, 0xFFFFFFFFu); /* frame count */
    CHECK(moe_zstd_open_mem(c, zn, "x", &f, &err) == MOE_ERR_FORMAT, "huge frame count: %s",
          err.msg);
    memcpy(c, z, zn);
    moe_store_le32(c + zn - table + 8 + 4, 1u << 30); /* frame 0 claims 1 GiB */
    CHECK(moe_zstd_open_mem(c, zn, "x", &f, &err) == MOE_ERR_FORMAT &&
              strstr(err.msg, "not possible"),
          "impossible ratio: %s", err.msg);
    memcpy(c, z, zn);
    moe_store_le32(c + zn - table + 8 + 8, 0); /* frame 0 checksum */
    CHECK(moe_zstd_open_mem(c, zn, "x", &f, &err) == MOE_OK, "checksum-only change opens");
    uint8_t *out = malloc(n);
    CHECK(f && moe_zstd_decompress_all(f, out, n, 1, &err) == MOE_ERR_INTEGRITY &&
              strstr(err.msg, "frame 0"),
          "checksum mismatch is an integrity error: %s", err.msg);
    moe_zstd_close(f);
    free(out);
    free(c);
}

static void test_corrupt_frames(const uint8_t *z, size_t zn, const uint8_t *plain, size_t n) {
    size_t nf = (n + FS - 1) / FS, data = zn - (17 + 12 * nf);
    uint8_t *c = malloc(zn);
    int rejected = 0, trials = 300;
    for (int k = 0; k < trials; k++) {
        memcpy(c, z, zn);
        size_t pos = (size_t)(rng() % data);
        c[pos] ^= (uint8_t)(1 + rng() % 255);
        char what[64];
        snprintf(what, sizeof what, "frame byte %zu", pos);
        rejected += probe_corrupt(c, zn, plain, n, what);
    }
    CHECK(rejected >= trials * 95 / 100, "frame flips: %d of %d rejected", rejected, trials);
    free(c);
}

static void test_truncations(const uint8_t *z, size_t zn, const uint8_t *plain, size_t n) {
    size_t nf = (n + FS - 1) / FS, table = 17 + 12 * nf;
    /* every cut except at a frame boundary (which is a valid shorter stream) */
    const size_t cuts[] = {0, 1, 3, 4, 8, 100, (zn - table) / 2, zn - table - 1,
                           zn - table + 4, zn - 10, zn - 9, zn - 5, zn - 1};
    for (size_t i = 0; i < sizeof cuts / sizeof cuts[0]; i++) {
        char what[64];
        snprintf(what, sizeof what, "truncated to %zu", cuts[i]);
        probe_corrupt(z, cuts[i], plain, n, what);
        /* and the stream decoder rejects what opened as stream-only */
        moe_zstd_file *f = NULL;
        moe_err err;
        char out[300];
        path_in(out, sizeof out, "trunc_out");
        if (moe_zstd_open_mem(z, cuts[i], "cut", &f, &err) == MOE_OK) {
            moe_status st = moe_zstd_decompress_to_file(f, out, 1, true, &err);
            CHECK(st == MOE_ERR_FORMAT && strstr(err.msg, "cut"), "%s: streaming rejects: %s",
                  what, err.msg);
            CHECK(access(out, F_OK) != 0 && !temp_files_left(), "%s: no output left", what);
        }
        moe_zstd_close(f);
    }
    /* bytes removed from the middle: the table no longer matches the file */
    uint8_t *c = malloc(zn);
    memcpy(c, z, 1000);
    memcpy(c + 1000, z + 1010, zn - 1010);
    moe_zstd_file *f = NULL;
    moe_err err;
    CHECK(moe_zstd_open_mem(c, zn - 10, "gap", &f, &err) == MOE_ERR_FORMAT &&
              strstr(err.msg, "precede"),
          "bytes removed mid-file: %s", err.msg);
    free(c);
}

static void test_not_zstd(void) {
    uint8_t junk[1000];
    fill_random(junk, sizeof junk);
    junk[0] = 'G';
    moe_zstd_file *f = NULL;
    moe_err err;
    CHECK(moe_zstd_open_mem(junk, sizeof junk, "junk", &f, &err) == MOE_ERR_FORMAT &&
              strstr(err.msg, "not a zstd file"),
          "random bytes: %s", err.msg);
    CHECK(moe_zstd_open_mem(NULL, 0, "empty", &f, &err) == MOE_ERR_FORMAT, "empty input");
    char p[300];
    path_in(p, sizeof p, "junk.zst");
    write_bytes(p, junk, sizeof junk);
    CHECK(moe_zstd_open(p, &f, &err) == MOE_ERR_FORMAT && strstr(err.msg, p), "junk file: %s",
          err.msg);
}

/* Corruption on the file path (pread source) rather than in memory. */
static void test_corrupt_file(const uint8_t *z, size_t zn, const uint8_t *plain, size_t n) {
    char p[300], back[300];
    path_in(p, sizeof p, "bad.gguf.zst");
    path_in(back, sizeof back, "bad_back");
    uint8_t *c = malloc(zn), *out = malloc(n);
    memcpy(c, z, zn);
    size_t table = 17 + 12 * ((n + FS - 1) / FS);
    c[moe_load_le32(z + zn - table + 8) / 2] ^= 0x55; /* inside frame 0's compressed bytes */
    write_bytes(p, c, zn);
    moe_zstd_file *f = NULL;
    moe_err err;
    CHECK(moe_zstd_open(p, &f, &err) == MOE_OK, "bad frame still opens: %s", err.msg);
    if (f) {
        moe_status st = moe_zstd_read(f, 10, out, 10, &err);
        CHECK((st == MOE_ERR_FORMAT || st == MOE_ERR_INTEGRITY) && strstr(err.msg, p) &&
                  strstr(err.msg, "frame 0"),
              "file read of a bad frame: %s", err.msg);
        CHECK(moe_zstd_read(f, FS, out, 10, &err) == MOE_OK && !memcmp(out, plain + FS, 10),
              "other frames still readable");
        st = moe_zstd_decompress_to_file(f, back, 2, true, &err);
        CHECK(st != MOE_OK && access(back, F_OK) != 0 && !temp_files_left(),
              "bad frame: no output file: %s", err.msg);
    }
    moe_zstd_close(f);
    free(c);
    free(out);
}

static void test_corruption(void) {
    size_t n = 3 * FS + FS / 2;
    uint8_t *plain = malloc(n);
    fill_compressible(plain, n);
    char pp[300], zp[300];
    path_in(pp, sizeof pp, "c_plain");
    path_in(zp, sizeof zp, "c.zst");
    write_bytes(pp, plain, n);
    moe_err err;
    CHECK(moe_zstd_compress_file(pp, zp, 3, FS, 2, true, &err) == MOE_OK, "compress: %s",
          err.msg);
    size_t zn;
    uint8_t *z = test_read_file(zp, &zn);
    if (z) {
        test_corrupt_table(z, zn, plain, n);
        test_corrupt_frames(z, zn, plain, n);
        test_truncations(z, zn, plain, n);
        test_corrupt_file(z, zn, plain, n);
    }
    test_not_zstd();
    free(z);
    free(plain);
}

/* ---- stock zstd CLI ------------------------------------------------------------------ */

static int sh(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int sh(const char *fmt, ...) {
    char cmd[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cmd, sizeof cmd, fmt, ap);
    va_end(ap);
    return system(cmd);
}

/* Our output through `zstd -d`, and stock zstd output through our decoder. */
static void cli_case(size_t n, int kind) {
    char what[64], plain_p[300], ours[300], dec[300], stock[300], back[300];
    snprintf(what, sizeof what, "%s n=%zu", kind ? "compressible" : "random", n);
    path_in(plain_p, sizeof plain_p, "cli_plain");
    path_in(ours, sizeof ours, "cli_ours.gguf.zst");
    path_in(dec, sizeof dec, "cli_dec");
    path_in(stock, sizeof stock, "cli_stock.zst");
    path_in(back, sizeof back, "cli_back");
    uint8_t *plain = malloc(n + 1);
    (kind ? fill_compressible : fill_random)(plain, n);
    write_bytes(plain_p, plain, n);
    moe_err err;
    CHECK(moe_zstd_compress_file(plain_p, ours, 3, FS, 2, true, &err) == MOE_OK, "%s: %s", what,
          err.msg);
    CHECK(sh("zstd -q -t '%s'", ours) == 0, "%s: zstd -t accepts ours", what);
    CHECK(sh("zstd -q -d -f '%s' -o '%s'", ours, dec) == 0 && file_equals(dec, plain, n),
          "%s: zstd -d restores the input", what);

    CHECK(sh("zstd -q -f -3 '%s' -o '%s'", plain_p, stock) == 0, "%s: stock compress", what);
    moe_zstd_file *f = NULL;
    CHECK(moe_zstd_open(stock, &f, &err) == MOE_OK, "%s: open stock: %s", what, err.msg);
    if (f) {
        uint8_t b[4];
        CHECK(!moe_zstd_has_seek_table(f) && moe_zstd_size(f) == 0, "%s: stock is stream-only",
              what);
        CHECK(moe_zstd_read(f, 0, b, 1, &err) == MOE_ERR_UNSUPPORTED &&
                  strstr(err.msg, "seek table"),
              "%s: random access explains: %s", what, err.msg);
        CHECK(moe_zstd_decompress_to_file(f, back, 2, true, &err) == MOE_OK &&
                  file_equals(back, plain, n),
              "%s: stock decompressed by us: %s", what, err.msg);
    }
    moe_zstd_close(f);
    free(plain);
}

static int run_cli(void) {
    if (system("command -v zstd >/dev/null 2>&1") != 0) {
        fprintf(stderr, "zstd CLI not on PATH: skipping\n");
        return 77;
    }
    const size_t sizes[] = {0, 1, FS, 3 * FS + FS / 2, 5u << 20};
    for (int kind = 0; kind < 2; kind++)
        for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++)
            cli_case(sizes[i], kind);

    /* several stock frames and a skippable frame, concatenated; no checksums */
    char a[300], b[300], cat[300], back[300], want[300], pa[300];
    path_in(pa, sizeof pa, "cat_plain");
    path_in(a, sizeof a, "cat_a.zst");
    path_in(b, sizeof b, "cat_b.zst");
    path_in(cat, sizeof cat, "cat.zst");
    path_in(back, sizeof back, "cat_back");
    path_in(want, sizeof want, "cat_want");
    uint8_t *plain = malloc(300000);
    fill_compressible(plain, 300000);
    write_bytes(pa, plain, 300000);
    const uint8_t skip[12] = {0x50, 0x2A, 0x4D, 0x18, 4, 0, 0, 0, 1, 2, 3, 4};
    char skp[300];
    path_in(skp, sizeof skp, "skip.bin");
    write_bytes(skp, skip, sizeof skip);
    CHECK(sh("zstd -q -f --no-check '%s' -o '%s' && zstd -q -f -19 '%s' -o '%s' && "
             "cat '%s' '%s' '%s' > '%s' && cat '%s' '%s' > '%s'",
             pa, a, pa, b, a, skp, b, cat, pa, pa, want) == 0,
          "build concatenated stream");
    moe_zstd_file *f = NULL;
    moe_err err;
    CHECK(moe_zstd_open(cat, &f, &err) == MOE_OK, "open concatenated: %s", err.msg);
    size_t wn;
    uint8_t *w = test_read_file(want, &wn);
    CHECK(f && w && moe_zstd_decompress_to_file(f, back, 1, true, &err) == MOE_OK &&
              file_equals(back, w, wn),
          "concatenated frames: %s", err.msg);
    moe_zstd_close(f);
    free(w);
    free(plain);
    /* the same through zstd's own decoder: ours concatenated with stock */
    char ours[300];
    path_in(ours, sizeof ours, "cli_ours.gguf.zst");
    CHECK(sh("cat '%s' '%s' | zstd -q -d -c > /dev/null", ours, a) == 0,
          "zstd -d takes ours followed by more frames");
    return 0;
}

/* ---- benchmark ----------------------------------------------------------------------- */

/* Best of 3 for each step; plain and output buffers are touched before timing.
 * Compression and decompress_to_file include writing and fsyncing the output. */
static int run_bench(size_t mb) {
    size_t n = mb << 20;
    uint8_t *plain = malloc(n), *out = malloc(n);
    fill_weights(plain, n);
    memset(out, 0, n);
    char pp[300], zp[300], back[300];
    path_in(pp, sizeof pp, "bench_plain");
    path_in(zp, sizeof zp, "bench.gguf.zst");
    path_in(back, sizeof back, "bench_back");
    write_bytes(pp, plain, n);
    moe_err err;
    for (int t = 1; t <= 2; t++) {
        double best[3] = {1e9, 1e9, 1e9};
        moe_status st = MOE_OK;
        for (int rep = 0; rep < 3 && st == MOE_OK; rep++) {
            double t0 = moe_now_s();
            st = moe_zstd_compress_file(pp, zp, 3, 0, t, true, &err);
            double t1 = moe_now_s();
            moe_zstd_file *f = NULL;
            if (st == MOE_OK)
                st = moe_zstd_open(zp, &f, &err);
            double t2 = moe_now_s();
            if (st == MOE_OK)
                st = moe_zstd_decompress_all(f, out, n, t, &err);
            double t3 = moe_now_s();
            if (st == MOE_OK)
                st = moe_zstd_decompress_to_file(f, back, t, true, &err);
            double t4 = moe_now_s();
            moe_zstd_close(f);
            double d[3] = {t1 - t0, t3 - t2, t4 - t3};
            for (int k = 0; k < 3; k++)
                best[k] = d[k] < best[k] ? d[k] : best[k];
        }
        struct stat sb;
        if (st != MOE_OK || memcmp(out, plain, n) || stat(zp, &sb) != 0) {
            fprintf(stderr, "bench failed: %s\n", err.msg);
            return 1;
        }
        printf("threads=%d  %zu MiB -> %.1f MiB (ratio %.2f)  compress %.0f MB/s  "
               "decompress_all %.0f MB/s  decompress_to_file %.0f MB/s\n",
               t, mb, (double)sb.st_size / 1048576.0, (double)n / (double)sb.st_size,
               (double)n / 1e6 / best[0], (double)n / 1e6 / best[1], (double)n / 1e6 / best[2]);
    }
    free(plain);
    free(out);
    return 0;
}

int main(int argc, char **argv) {
    rng_state = SEED;
    printf("seed 0x%08X\n", SEED);
    make_tmpdir();
    int rc;
    if (argc > 1 && strcmp(argv[1], "cli") == 0) {
        rc = run_cli();
        if (rc == 0) {
            remove_tmpdir();
            TEST_DONE();
        }
    } else if (argc > 1 && strcmp(argv[1], "bench") == 0) {
        rc = run_bench(argc > 2 ? (size_t)strtoul(argv[2], NULL, 10) : 200);
    } else {
        test_sniff();
        test_round_trips();
        test_compress_fd();
        test_usage_errors();
        test_foreign_layouts();
        test_zero_frames();
        test_stream_only();
        test_corruption();
        remove_tmpdir();
        TEST_DONE();
    }
    remove_tmpdir();
    return rc;
}
