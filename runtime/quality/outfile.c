#include "runtime/quality/outfile.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "formats/tempfile.h"

moe_status moe_outfile_open(moe_outfile *o, const char *path, moe_err *err) {
    memset(o, 0, sizeof *o);
    size_t len = strlen(path) + 16;
    o->path = strdup(path);
    o->tmp = malloc(len);
    if (!o->path || !o->tmp) {
        moe_outfile_abort(o);
        return moe_fail(err, MOE_ERR_NOMEM, "out of memory");
    }
    snprintf(o->tmp, len, "%s.tmp.XXXXXX", path);
    int fd = mkostemp(o->tmp, O_CLOEXEC);
    if (fd < 0) {
        moe_status st = moe_fail(err, MOE_ERR_IO, "%s: cannot create: %s", path, strerror(errno));
        o->tmp[0] = '\0';
        moe_outfile_abort(o);
        return st;
    }
    fchmod(fd, 0644); /* mkostemp makes 0600; this is an ordinary shared output */
    o->f = fdopen(fd, "wb");
    moe_status st = o->f ? moe_tempfile_register(o->tmp, err)
                         : moe_fail(err, MOE_ERR_IO, "%s: %s", path, strerror(errno));
    if (!o->f)
        close(fd);
    if (st != MOE_OK)
        moe_outfile_abort(o);
    return st;
}

moe_status moe_outfile_write(moe_outfile *o, const void *p, size_t n, moe_err *err) {
    MOE_FAIL_IF(fwrite(p, 1, n, o->f) != n, err, MOE_ERR_IO, "%s: write failed: %s", o->path,
                strerror(errno));
    return MOE_OK;
}

moe_status moe_outfile_commit(moe_outfile *o, moe_err *err) {
    moe_status st = MOE_OK;
    if (fflush(o->f) != 0 || fsync(fileno(o->f)) != 0)
        st = moe_fail(err, MOE_ERR_IO, "%s: write failed: %s", o->path, strerror(errno));
    if (fclose(o->f) != 0 && st == MOE_OK)
        st = moe_fail(err, MOE_ERR_IO, "%s: write failed: %s", o->path, strerror(errno));
    o->f = NULL;
    if (st == MOE_OK)
        st = moe_temp_commit(o->tmp, o->path, true, err);
    if (st == MOE_OK)
        o->tmp[0] = '\0';
    moe_outfile_abort(o);
    return st;
}

void moe_outfile_abort(moe_outfile *o) {
    if (o->f)
        fclose(o->f);
    if (o->tmp && o->tmp[0])
        moe_temp_discard(o->tmp);
    free(o->tmp);
    free(o->path);
    memset(o, 0, sizeof *o);
}
