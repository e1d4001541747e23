#include "runtime/quality/outfile.h"

#include <errno.h>
#include <string.h>

moe_status moe_outfile_open(moe_outfile *o, const char *path, moe_err *err) {
    memset(o, 0, sizeof *o);
    MOE_TRY(moe_output_open(&o->out, path, MOE_OUTPUT_OVERWRITE, err));
    o->f = moe_output_stream(&o->out, err);
    if (!o->f) {
        moe_output_abort(&o->out);
        return err ? err->code : MOE_ERR_IO;
    }
    return MOE_OK;
}

moe_status moe_outfile_write(moe_outfile *o, const void *p, size_t n, moe_err *err) {
    MOE_FAIL_IF(fwrite(p, 1, n, o->f) != n, err, MOE_ERR_IO, "%s: write failed: %s",
                o->out.path, strerror(errno));
    return MOE_OK;
}

moe_status moe_outfile_commit(moe_outfile *o, moe_err *err) {
    moe_status st = moe_output_commit(&o->out, err);
    o->f = NULL;
    return st;
}

void moe_outfile_abort(moe_outfile *o) {
    moe_output_abort(&o->out);
    o->f = NULL;
}
