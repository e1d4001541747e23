#include "formats/tempfile.h"

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <signal.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

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
