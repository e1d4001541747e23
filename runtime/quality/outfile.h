/* outfile — a buffered (stdio) output written through moe_output
 * (formats/base/tempfile.h): a temp file fsynced and published over the
 * destination only when complete, so a failed or interrupted run never leaves
 * a short file; a device, FIFO or "-" is written in place. Used by the
 * quality tools' writers (base log-probabilities, importance matrices). */
#ifndef MOE_RUNTIME_QUALITY_OUTFILE_H
#define MOE_RUNTIME_QUALITY_OUTFILE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

#include "formats/base/status.h"
#include "formats/base/tempfile.h"

typedef struct moe_outfile {
    moe_output out;
    FILE *f; /* owned by out */
} moe_outfile;

/* Creates the temp file for path. On failure o holds nothing to free
 * (moe_outfile_abort is still safe). */
moe_status moe_outfile_open(moe_outfile *o, const char *path, moe_err *err);
moe_status moe_outfile_write(moe_outfile *o, const void *p, size_t n, moe_err *err);
/* Flushes, fsyncs and publishes over path (replacing it); frees o's members
 * whatever happens (the temp file is removed on failure). */
moe_status moe_outfile_commit(moe_outfile *o, moe_err *err);
/* Removes the temp file and frees o's members; safe on a zeroed or
 * committed o. */
void moe_outfile_abort(moe_outfile *o);

#endif
