/* GGUF file sources: a read-only mapping of the whole file, or read() of just
 * the header with tensor data fetched by pread on demand. */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

#include "formats/gguf/cursor.h"
#include "formats/gguf/gguf.h"

enum { FIRST_HEADER_READ = 1 << 20, HASH_CHUNK = 8 << 20 };

static moe_status pread_full(int fd, uint64_t off, void *buf, size_t len, const char *path,
                             moe_err *err) {
    uint8_t *p = buf;
    while (len > 0) {
        ssize_t n = pread(fd, p, len, (off_t)off);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return moe_fail(err, MOE_ERR_IO, "%s: read at offset %llu failed: %s", path,
                            (unsigned long long)off, strerror(errno));
        if (n == 0)
            return moe_fail(err, MOE_ERR_FORMAT, "%s: unexpected end of file at offset %llu",
                            path, (unsigned long long)off);
        p += n;
        off += (uint64_t)n;
        len -= (size_t)n;
    }
    return MOE_OK;
}

moe_status moe_gguf_file_read(const moe_gguf_file *f, uint64_t off, void *buf, size_t len,
                              moe_err *err) {
    if (f->map) {
        if (off > f->size || len > f->size - off)
            return moe_fail(err, MOE_ERR_FORMAT, "%s: read of %zu bytes at %llu is past the end",
                            f->path, len, (unsigned long long)off);
        memcpy(buf, f->map + off, len);
        return MOE_OK;
    }
    return pread_full(f->fd, off, buf, len, f->path, err);
}

/* Reads growing prefixes until the header parses (the header of a model with a
 * 150k-token vocabulary is several MB; tensor data is never read here). */
static moe_status parse_by_reading(moe_gguf_file *f, moe_err *err) {
    size_t want = f->size < FIRST_HEADER_READ ? (size_t)f->size : FIRST_HEADER_READ;
    uint8_t *buf = NULL;
    size_t have = 0;
    for (;;) {
        uint8_t *nb = realloc(buf, want ? want : 1);
        if (!nb) {
            free(buf);
            return moe_fail(err, MOE_ERR_NOMEM, "out of memory reading the header");
        }
        buf = nb;
        moe_status st = pread_full(f->fd, have, buf + have, want - have, f->path, err);
        if (st == MOE_OK) {
            have = want;
            st = moe_gguf_parse(buf, have, f->size, &f->g, err);
        }
        if (st != MOE_ERR_NEED_MORE || have == f->size) {
            free(buf);
            return st;
        }
        want = have * 2 < f->size ? have * 2 : (size_t)f->size;
    }
}

moe_status moe_gguf_file_open(const char *path, bool use_mmap, moe_gguf_file **out,
                              moe_err *err) {
    *out = NULL;
    moe_gguf_file *f = calloc(1, sizeof *f);
    MOE_FAIL_IF(!f, err, MOE_ERR_NOMEM, "out of memory");
    f->fd = -1;
    f->path = strdup(path);
    moe_status st = MOE_OK;
    struct stat sb;
    if (!f->path) {
        st = moe_fail(err, MOE_ERR_NOMEM, "out of memory");
    } else if ((f->fd = open(path, O_RDONLY | O_CLOEXEC)) < 0) {
        st = moe_fail(err, MOE_ERR_IO, "cannot open: %s", strerror(errno));
    } else if (fstat(f->fd, &sb) != 0) {
        st = moe_fail(err, MOE_ERR_IO, "cannot stat: %s", strerror(errno));
    } else if (!S_ISREG(sb.st_mode)) {
        st = moe_fail(err, MOE_ERR_IO, "not a regular file");
    } else {
        f->size = (uint64_t)sb.st_size;
        if (use_mmap && f->size > 0) {
            void *m = mmap(NULL, (size_t)f->size, PROT_READ, MAP_SHARED, f->fd, 0);
            if (m == MAP_FAILED)
                st = moe_fail(err, MOE_ERR_IO, "mmap failed: %s", strerror(errno));
            else
                f->map = m;
        }
        if (st == MOE_OK)
            st = f->map ? moe_gguf_parse(f->map, (size_t)f->size, f->size, &f->g, err)
                        : parse_by_reading(f, err);
    }
    if (st != MOE_OK) {
        moe_err_prefix(err, "%s", path);
        moe_gguf_file_close(f);
        return st;
    }
    *out = f;
    return MOE_OK;
}

void moe_gguf_file_close(moe_gguf_file *f) {
    if (!f)
        return;
    if (f->map)
        munmap((void *)f->map, (size_t)f->size);
    if (f->fd >= 0)
        close(f->fd);
    moe_gguf_free(f->g);
    free(f->path);
    free(f);
}

const uint8_t *moe_gguf_file_tensor_data(const moe_gguf_file *f, uint64_t i) {
    if (!f->map || i >= f->g->n_tensors)
        return NULL;
    return f->map + f->g->data_offset + f->g->tensors[i].offset;
}

static moe_status hash_tensor(const moe_gguf_file *f, uint64_t i, uint8_t *chunk,
                              XXH3_state_t *state, uint64_t *hash, moe_err *err) {
    const moe_gguf_tensor *t = &f->g->tensors[i];
    if (f->map) {
        *hash = XXH3_64bits(moe_gguf_file_tensor_data(f, i), (size_t)t->nbytes);
        return MOE_OK;
    }
    XXH3_64bits_reset(state);
    uint64_t base = f->g->data_offset + t->offset;
    for (uint64_t done = 0; done < t->nbytes;) {
        size_t n = t->nbytes - done < HASH_CHUNK ? (size_t)(t->nbytes - done) : HASH_CHUNK;
        MOE_TRY(moe_gguf_file_read(f, base + done, chunk, n, err));
        XXH3_64bits_update(state, chunk, n);
        done += n;
    }
    *hash = XXH3_64bits_digest(state);
    return MOE_OK;
}

/* The stored checksum array, or NULL if absent; a malformed key is an error. */
static moe_status stored_checksums(const moe_gguf_file *f, const moe_gguf_kv **kv,
                                   moe_err *err) {
    *kv = NULL;
    int64_t k = moe_gguf_find_key(f->g, MOE_GGUF_XXH3_KEY);
    if (k < 0)
        return MOE_OK;
    const moe_gguf_kv *c = &f->g->kv[k];
    if (c->type != MOE_GGUF_ARRAY || c->elem_type != MOE_GGUF_U64 ||
        c->count != f->g->n_tensors)
        return moe_fail(err, MOE_ERR_FORMAT,
                        "%s: key '%s' must be a u64 array with one entry per tensor (%llu)",
                        f->path, MOE_GGUF_XXH3_KEY, (unsigned long long)f->g->n_tensors);
    *kv = c;
    return MOE_OK;
}

moe_status moe_gguf_file_verify(const moe_gguf_file *f, bool keep_hashes,
                                moe_gguf_verify_result *res, moe_err *err) {
    memset(res, 0, sizeof *res);
    res->first_bad = -1;
    const moe_gguf_kv *stored;
    MOE_TRY(stored_checksums(f, &stored, err));
    res->had_checksums = stored != NULL;
    uint64_t n = f->g->n_tensors;
    uint8_t *chunk = f->map ? NULL : malloc(HASH_CHUNK);
    XXH3_state_t *state = XXH3_createState();
    uint64_t *hashes = keep_hashes ? calloc(n ? n : 1, sizeof *hashes) : NULL;
    moe_status st = MOE_OK;
    if ((!f->map && !chunk) || !state || (keep_hashes && !hashes))
        st = moe_fail(err, MOE_ERR_NOMEM, "out of memory");
    for (uint64_t i = 0; st == MOE_OK && i < n; i++) {
        uint64_t h;
        st = hash_tensor(f, i, chunk, state, &h, err);
        if (st != MOE_OK)
            break;
        if (hashes)
            hashes[i] = h;
        res->n_checked++;
        if (stored && moe_load_le64(stored->raw + 12 + 8 * i) != h) {
            res->n_mismatch++;
            if (res->first_bad < 0)
                res->first_bad = (int64_t)i;
        }
    }
    free(chunk);
    XXH3_freeState(state);
    if (st != MOE_OK) {
        free(hashes);
        return st;
    }
    res->computed = hashes;
    if (res->n_mismatch)
        return moe_fail(err, MOE_ERR_INTEGRITY,
                        "%s: %llu tensor(s) fail their stored XXH3 checksum, first '%s'", f->path,
                        (unsigned long long)res->n_mismatch, f->g->tensors[res->first_bad].name);
    return MOE_OK;
}

moe_status moe_gguf_file_check_tensor(const moe_gguf_file *f, uint64_t i, const void *data,
                                      moe_err *err) {
    const moe_gguf_kv *stored;
    MOE_TRY(stored_checksums(f, &stored, err));
    if (!stored)
        return MOE_OK;
    const moe_gguf_tensor *t = &f->g->tensors[i];
    uint64_t want = moe_load_le64(stored->raw + 12 + 8 * i);
    uint64_t got = XXH3_64bits(data, (size_t)t->nbytes);
    MOE_FAIL_IF(want != got, err, MOE_ERR_INTEGRITY,
                "%s: tensor '%s' does not match its stored XXH3 checksum (stored %016llx, read "
                "%016llx): the input is corrupt",
                f->path, t->name, (unsigned long long)want, (unsigned long long)got);
    return MOE_OK;
}

#ifndef MADV_POPULATE_READ
#define MADV_POPULATE_READ 22 /* Linux 5.14 */
#endif

void moe_gguf_file_populate(const moe_gguf_file *f) {
    if (!f->map || f->size <= f->g->data_offset)
        return;
    const uint64_t page = (uint64_t)sysconf(_SC_PAGESIZE);
    const uint64_t a = f->g->data_offset / page * page;
    if (madvise((void *)(f->map + a), (size_t)(f->size - a), MADV_POPULATE_READ) != 0)
        madvise((void *)(f->map + a), (size_t)(f->size - a), MADV_WILLNEED);
}

void moe_gguf_file_release(const moe_gguf_file *f, uint64_t off, uint64_t len) {
    if (f->map) {
        uint64_t page = (uint64_t)sysconf(_SC_PAGESIZE);
        uint64_t a = (off + page - 1) / page * page, b = (off + len) / page * page;
        if (b > a)
            madvise((void *)(f->map + a), (size_t)(b - a), MADV_DONTNEED);
    }
    posix_fadvise(f->fd, (off_t)off, (off_t)len, POSIX_FADV_DONTNEED);
}
