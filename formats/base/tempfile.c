#include "formats/base/tempfile.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <signal.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "formats/base/log.h"

#define TEMP_PREFIX ".moe.tmp."
/* A dead writer's temp file is removed only once it is this old: in a directory
 * shared between machines, a pid that is gone here may be alive elsewhere, and
 * a live writer keeps its file's mtime fresh. */
#define STALE_SECONDS 60

/* Fixed storage: the handler may only touch memory that exists at any moment,
 * and may only call async-signal-safe functions (unlink, signal, raise). */
static char slot_path[MOE_TEMPFILE_SLOTS][PATH_MAX];
static volatile sig_atomic_t slot_used[MOE_TEMPFILE_SLOTS];
static volatile sig_atomic_t handlers_installed;

static void on_signal(int sig) {
    for (int i = 0; i < MOE_TEMPFILE_SLOTS; i++)
        if (slot_used[i])
            unlink(slot_path[i]);
    signal(sig, SIG_DFL);
    raise(sig);
}

void moe_tempfile_install_handlers(void) {
    if (handlers_installed)
        return;
    handlers_installed = 1;
    const int sigs[] = {SIGINT, SIGTERM, SIGHUP};
    for (size_t i = 0; i < sizeof sigs / sizeof sigs[0]; i++) {
        struct sigaction sa;
        memset(&sa, 0, sizeof sa);
        sa.sa_handler = on_signal;
        sigemptyset(&sa.sa_mask);
        sigaction(sigs[i], &sa, NULL);
    }
}

moe_status moe_tempfile_register(const char *path, moe_err *err) {
    moe_tempfile_install_handlers();
    size_t len = strlen(path);
    MOE_FAIL_IF(len >= PATH_MAX, err, MOE_ERR_USAGE, "path too long: %s", path);
    for (int i = 0; i < MOE_TEMPFILE_SLOTS; i++) {
        if (!slot_used[i]) {
            memcpy(slot_path[i], path, len + 1);
            slot_used[i] = 1;
            return MOE_OK;
        }
    }
    return moe_fail(err, MOE_ERR_INTERNAL, "more than %d temp files open at once",
                    MOE_TEMPFILE_SLOTS);
}

void moe_tempfile_unregister(const char *path) {
    for (int i = 0; i < MOE_TEMPFILE_SLOTS; i++) {
        if (slot_used[i] && strcmp(slot_path[i], path) == 0) {
            slot_used[i] = 0;
            return;
        }
    }
}

static moe_status sync_parent_dir(const char *path, moe_err *err) {
    char *copy = strdup(path);
    MOE_FAIL_IF(!copy, err, MOE_ERR_NOMEM, "out of memory");
    int dfd = open(dirname(copy), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    free(copy);
    if (dfd < 0)
        return MOE_OK; /* the rename happened; nothing to sync it through */
    int rc = fsync(dfd);
    int e = errno;
    close(dfd);
    MOE_FAIL_IF(rc != 0 && e != EINVAL, err, MOE_ERR_IO, "%s: fsync of its directory failed: %s",
                path, strerror(e));
    return MOE_OK;
}

moe_status moe_temp_commit(const char *tmp, const char *final, bool overwrite, moe_err *err) {
    if (!overwrite) {
        /* link() fails if final exists: no window where another file is replaced */
        if (link(tmp, final) != 0)
            return moe_fail(err, errno == EEXIST ? MOE_ERR_USAGE : MOE_ERR_IO,
                            "%s: cannot publish: %s", final,
                            errno == EEXIST ? "it already exists" : strerror(errno));
        unlink(tmp);
    } else if (rename(tmp, final) != 0) {
        return moe_fail(err, MOE_ERR_IO, "%s: rename failed: %s", final, strerror(errno));
    }
    moe_tempfile_unregister(tmp);
    return sync_parent_dir(final, err);
}

void moe_temp_discard(const char *tmp) {
    unlink(tmp);
    moe_tempfile_unregister(tmp);
}

bool moe_path_is_open_file(const char *path, int fd) {
    struct stat sp, sf;
    return stat(path, &sp) == 0 && fstat(fd, &sf) == 0 && sp.st_dev == sf.st_dev &&
           sp.st_ino == sf.st_ino;
}

/* ---- outputs ------------------------------------------------------------------ */

/* malloc'd directory part of path. */
static char *dir_of(const char *path) {
    char *copy = strdup(path);
    if (!copy)
        return NULL;
    char *dir = strdup(dirname(copy));
    free(copy);
    return dir;
}

char *moe_temp_name(const char *final, const char *tag) {
    char *dir = dir_of(final);
    if (!dir)
        return NULL;
    size_t len = strlen(dir) + strlen(tag) + 48;
    char *p = malloc(len);
    if (p)
        snprintf(p, len, "%s/" TEMP_PREFIX "%ld.%s", dir, (long)getpid(), tag);
    free(dir);
    return p;
}

static bool process_gone(long pid) {
    return pid > 0 && pid <= INT32_MAX && kill((pid_t)pid, 0) != 0 && errno == ESRCH;
}

/* Removes DIR/.moe.tmp.PID.* files whose process is gone (see STALE_SECONDS). */
static void clear_stale_temps(const char *dir) {
    DIR *d = opendir(dir);
    if (!d)
        return;
    time_t now = time(NULL);
    size_t np = strlen(TEMP_PREFIX);
    for (struct dirent *e; (e = readdir(d)) != NULL;) {
        if (strncmp(e->d_name, TEMP_PREFIX, np) != 0)
            continue;
        const char *digits = e->d_name + np;
        char *end;
        errno = 0;
        long pid = strtol(digits, &end, 10);
        if (end == digits || *end != '.' || errno != 0 || pid == (long)getpid() ||
            !process_gone(pid))
            continue;
        struct stat sb;
        if (fstatat(dirfd(d), e->d_name, &sb, AT_SYMLINK_NOFOLLOW) != 0 || !S_ISREG(sb.st_mode) ||
            now - sb.st_mtime < STALE_SECONDS)
            continue;
        if (unlinkat(dirfd(d), e->d_name, 0) == 0)
            MOE_INFO("removed %s/%s: a temp file left by process %ld, which is gone", dir,
                     e->d_name, pid);
    }
    closedir(d);
}

/* The descriptor that "-", /dev/stdout, /dev/stderr, /dev/fd/N or
 * /proc/self/fd/N names, else -1. */
static int named_fd(const char *path) {
    if (!strcmp(path, "-") || !strcmp(path, "/dev/stdout"))
        return 1;
    if (!strcmp(path, "/dev/stderr"))
        return 2;
    const char *num = !strncmp(path, "/dev/fd/", 8)         ? path + 8
                      : !strncmp(path, "/proc/self/fd/", 14) ? path + 14
                                                             : NULL;
    if (!num || *num < '0' || *num > '9')
        return -1;
    char *end;
    long n = strtol(num, &end, 10);
    return *end == '\0' && n <= INT32_MAX ? (int)n : -1;
}

/* Same for a symbolic link whose text is one of those forms. */
static int named_fd_through_link(const char *path) {
    char text[64];
    ssize_t n = readlink(path, text, sizeof text - 1);
    if (n <= 0)
        return -1;
    text[n] = '\0';
    return named_fd(text);
}

/* Position 0 and no O_APPEND: pwrite at an offset lands where the writer means. */
static bool positioned_at_start(int fd) {
    int fl = fcntl(fd, F_GETFL);
    return fl >= 0 && !(fl & O_APPEND) && lseek(fd, 0, SEEK_CUR) == 0;
}

static moe_status open_direct(moe_output *o, int fdn, moe_err *err) {
    o->kind = MOE_OUTPUT_DIRECT;
    if (fdn >= 0) {
        o->fd = fcntl(fdn, F_DUPFD_CLOEXEC, 3);
        MOE_FAIL_IF(o->fd < 0, err, MOE_ERR_IO, "%s: descriptor %d: %s", o->path, fdn,
                    strerror(errno));
    } else {
        o->fd = open(o->path, O_WRONLY | O_CLOEXEC | O_NOCTTY);
        MOE_FAIL_IF(o->fd < 0, err, MOE_ERR_IO, "%s: cannot open: %s", o->path, strerror(errno));
    }
    o->seekable = positioned_at_start(o->fd);
    return MOE_OK;
}

/* o->target: path, or the file a symbolic link at path leads to (a dangling
 * link's text, relative to the link's directory). */
static moe_status resolve_target(moe_output *o, moe_err *err) {
    struct stat lb;
    if (lstat(o->path, &lb) != 0 || !S_ISLNK(lb.st_mode)) {
        o->target = strdup(o->path);
    } else if (!(o->target = realpath(o->path, NULL))) {
        char text[PATH_MAX];
        ssize_t n = readlink(o->path, text, sizeof text - 1);
        MOE_FAIL_IF(n <= 0, err, MOE_ERR_IO, "%s: cannot read the link: %s", o->path,
                    strerror(errno));
        text[n] = '\0';
        char *dir = text[0] == '/' ? strdup("") : dir_of(o->path);
        size_t len = (dir ? strlen(dir) : 0) + (size_t)n + 2;
        o->target = dir ? malloc(len) : NULL;
        if (o->target)
            snprintf(o->target, len, "%s%s%s", dir, dir[0] ? "/" : "", text);
        free(dir);
    }
    MOE_FAIL_IF(!o->target, err, MOE_ERR_NOMEM, "out of memory");
    return MOE_OK;
}

static moe_status open_temp(moe_output *o, unsigned flags, moe_err *err) {
    MOE_TRY(resolve_target(o, err));
    char *dir = dir_of(o->target);
    MOE_FAIL_IF(!dir, err, MOE_ERR_NOMEM, "out of memory");
    clear_stale_temps(dir);
    o->seekable = true;
    const char *no_tmpfile = getenv("MOE_NO_O_TMPFILE");
    if (!(flags & MOE_OUTPUT_NAMED_TEMP) && !(no_tmpfile && *no_tmpfile && *no_tmpfile != '0')) {
        o->fd = open(dir, O_TMPFILE | O_WRONLY | O_CLOEXEC, 0644);
        snprintf(o->reopen, sizeof o->reopen, "/proc/self/fd/%d", o->fd);
        /* linking it in at commit goes through /proc: without /proc, name it */
        if (o->fd >= 0 && access(o->reopen, F_OK) == 0) {
            o->kind = MOE_OUTPUT_ANONYMOUS;
            free(dir);
            return MOE_OK;
        }
        if (o->fd >= 0)
            close(o->fd);
        o->fd = -1;
    }
    o->kind = MOE_OUTPUT_NAMED;
    size_t len = strlen(dir) + 48;
    o->tmp = malloc(len);
    if (o->tmp)
        snprintf(o->tmp, len, "%s/" TEMP_PREFIX "%ld.XXXXXX", dir, (long)getpid());
    free(dir);
    MOE_FAIL_IF(!o->tmp, err, MOE_ERR_NOMEM, "out of memory");
    o->fd = mkostemp(o->tmp, O_CLOEXEC);
    if (o->fd < 0) {
        o->tmp[0] = '\0';
        return moe_fail(err, MOE_ERR_IO, "%s: cannot create a temp file beside it: %s",
                        o->target, strerror(errno));
    }
    fchmod(o->fd, 0644); /* mkostemp makes 0600; outputs are ordinary shared files */
    return moe_tempfile_register(o->tmp, err);
}

static moe_status open_steps(moe_output *o, const char *path, unsigned flags, moe_err *err) {
    o->overwrite = (flags & MOE_OUTPUT_OVERWRITE) != 0;
    o->path = strdup(path);
    MOE_FAIL_IF(!o->path, err, MOE_ERR_NOMEM, "out of memory");
    int fdn = named_fd(path);
    if (fdn < 0)
        fdn = named_fd_through_link(path);
    if (fdn >= 0 && !(flags & MOE_OUTPUT_NAMED_TEMP))
        return open_direct(o, fdn, err);
    struct stat sb;
    bool exists = stat(path, &sb) == 0;
    MOE_FAIL_IF(exists && S_ISDIR(sb.st_mode), err, MOE_ERR_USAGE, "%s is a directory", path);
    MOE_FAIL_IF(exists && !o->overwrite, err, MOE_ERR_USAGE,
                "%s already exists (use --force to replace it)", path);
    MOE_FAIL_IF(exists && !S_ISREG(sb.st_mode) && (flags & MOE_OUTPUT_NAMED_TEMP), err,
                MOE_ERR_USAGE, "%s is not a regular file, which this output needs", path);
    if (exists && !S_ISREG(sb.st_mode))
        return open_direct(o, -1, err); /* a device or FIFO: never renamed over */
    return open_temp(o, flags, err);
}

moe_status moe_output_open(moe_output *o, const char *path, unsigned flags, moe_err *err) {
    memset(o, 0, sizeof *o);
    o->fd = -1;
    moe_status st = open_steps(o, path, flags, err);
    if (st != MOE_OK)
        moe_output_abort(o);
    return st;
}

moe_status moe_output_write(moe_output *o, const void *p, size_t n, moe_err *err) {
    const uint8_t *b = p;
    while (n > 0) {
        ssize_t k = write(o->fd, b, n);
        if (k < 0 && errno == EINTR)
            continue;
        MOE_FAIL_IF(k < 0, err, MOE_ERR_IO, "%s: write failed: %s", o->path, strerror(errno));
        b += k;
        n -= (size_t)k;
    }
    return MOE_OK;
}

FILE *moe_output_stream(moe_output *o, moe_err *err) {
    if (!o->f && o->fd >= 0 && !(o->f = fdopen(o->fd, "wb")))
        moe_fail(err, MOE_ERR_IO, "%s: %s", o->path, strerror(errno));
    return o->f;
}

const char *moe_output_reopen_path(const moe_output *o) {
    return o->kind == MOE_OUTPUT_NAMED      ? o->tmp
           : o->kind == MOE_OUTPUT_ANONYMOUS ? o->reopen
                                             : NULL;
}

/* Flushes the stream, fsyncs a temp file. */
static moe_status finish_bytes(moe_output *o, moe_err *err) {
    MOE_FAIL_IF(o->f && fflush(o->f) != 0, err, MOE_ERR_IO, "%s: write failed: %s", o->path,
                strerror(errno));
    MOE_FAIL_IF(o->kind != MOE_OUTPUT_DIRECT && fsync(o->fd) != 0, err, MOE_ERR_IO,
                "%s: fsync failed: %s", o->path, strerror(errno));
    return MOE_OK;
}

/* Closes the stream or descriptor; false if that reported an error. */
static bool close_output(moe_output *o) {
    if (!o->path) { /* zeroed, never opened: fd 0 is not ours */
        o->fd = -1;
        return true;
    }
    int rc = o->f ? fclose(o->f) : o->fd >= 0 ? close(o->fd) : 0;
    o->f = NULL;
    o->fd = -1;
    return rc == 0;
}

/* Gives the O_TMPFILE a name: the target itself (new file), or a temp name
 * renamed over the target (a link cannot replace a file). */
static moe_status link_anonymous(moe_output *o, moe_err *err) {
    if (!o->overwrite) {
        if (linkat(AT_FDCWD, o->reopen, AT_FDCWD, o->target, AT_SYMLINK_FOLLOW) != 0)
            return moe_fail(err, errno == EEXIST ? MOE_ERR_USAGE : MOE_ERR_IO,
                            "%s: cannot publish: %s", o->path,
                            errno == EEXIST ? "it already exists" : strerror(errno));
        return sync_parent_dir(o->target, err);
    }
    static unsigned counter;
    char tag[32];
    char *name = NULL;
    for (int tries = 0; tries < 100; tries++) {
        snprintf(tag, sizeof tag, "link%u", __atomic_fetch_add(&counter, 1, __ATOMIC_RELAXED));
        free(name);
        name = moe_temp_name(o->target, tag);
        MOE_FAIL_IF(!name, err, MOE_ERR_NOMEM, "out of memory");
        moe_status st = moe_tempfile_register(name, err);
        if (st != MOE_OK) {
            free(name);
            return st;
        }
        if (linkat(AT_FDCWD, o->reopen, AT_FDCWD, name, AT_SYMLINK_FOLLOW) == 0)
            break;
        int e = errno;
        moe_tempfile_unregister(name);
        if (e != EEXIST) {
            free(name);
            return moe_fail(err, MOE_ERR_IO, "%s: cannot publish: %s", o->path, strerror(e));
        }
    }
    moe_status st = moe_temp_commit(name, o->target, true, err);
    if (st != MOE_OK)
        moe_temp_discard(name);
    free(name);
    return st;
}

moe_status moe_output_commit(moe_output *o, moe_err *err) {
    moe_status st = finish_bytes(o, err);
    if (st == MOE_OK && o->kind == MOE_OUTPUT_ANONYMOUS)
        st = link_anonymous(o, err);
    if (!close_output(o) && st == MOE_OK)
        st = moe_fail(err, MOE_ERR_IO, "%s: close failed: %s", o->path, strerror(errno));
    if (st == MOE_OK && o->kind == MOE_OUTPUT_NAMED) {
        st = moe_temp_commit(o->tmp, o->target, o->overwrite, err);
        if (st == MOE_OK)
            o->tmp[0] = '\0';
    }
    moe_output_abort(o);
    return st;
}

char *moe_output_release_temp(moe_output *o, moe_err *err) {
    moe_status st = o->kind == MOE_OUTPUT_NAMED
                        ? finish_bytes(o, err)
                        : moe_fail(err, MOE_ERR_INTERNAL, "%s: no named temp file to hand over",
                                   o->path);
    if (!close_output(o) && st == MOE_OK)
        st = moe_fail(err, MOE_ERR_IO, "%s: close failed: %s", o->path, strerror(errno));
    char *tmp = NULL;
    if (st == MOE_OK) {
        tmp = o->tmp;
        o->tmp = NULL;
    }
    moe_output_abort(o);
    return tmp;
}

void moe_output_abort(moe_output *o) {
    close_output(o);
    if (o->tmp && o->tmp[0])
        moe_temp_discard(o->tmp);
    free(o->tmp);
    free(o->target);
    free(o->path);
    memset(o, 0, sizeof *o);
    o->fd = -1;
}
