/* tempfile — how outputs are written, and removal of half-written ones.
 *
 * Owns: moe_output, the one way every tool opens an output file; a fixed
 * table of temp-file paths and SIGINT/SIGTERM/SIGHUP handlers that unlink
 * every registered path and then re-raise the signal with its default action
 * (so the exit status still says "killed by SIGINT"); the naming of our temp
 * files, DIR/.moe.tmp.PID.SUFFIX, and the removal of stale ones.
 *
 * An output is published atomically (temp file, fsync, rename) when it is a
 * regular file or does not exist yet. The temp file is unnamed (O_TMPFILE,
 * linked in at commit) where the filesystem has it, so a SIGKILL leaves
 * nothing; elsewhere it is a hidden .moe.tmp.PID.XXXXXX beside the
 * destination (never matching a *.gguf* glob), and the next output opened in
 * that directory removes those whose process is gone (and that are a minute
 * old: a directory shared between machines). A symbolic link is written
 * through: its target is replaced and the link stays. Anything that is not a
 * regular file (a character device such as /dev/null, a FIFO, a socket) and
 * "-", /dev/stdout, /dev/fd/N, /proc/self/fd/N are written in place, never
 * renamed over. MOE_NO_O_TMPFILE=1 in the environment forces named temp files
 * (for tests of that path).
 */
#ifndef MOE_FORMATS_TEMPFILE_H
#define MOE_FORMATS_TEMPFILE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

#include "formats/base/status.h"

#define MOE_TEMPFILE_SLOTS 32

/* Installs the handlers once (idempotent). */
void moe_tempfile_install_handlers(void);

/* Records path for removal on a signal. Fails if the table is full or the
 * path is too long. Installs the handlers if not yet done. */
moe_status moe_tempfile_register(const char *path, moe_err *err);

/* Forgets path (no-op if it was not registered). */
void moe_tempfile_unregister(const char *path);

/* Publishes a finished, fsynced temp file: renames tmp to final (replacing it
 * only when overwrite; otherwise an existing final is a usage error), fsyncs
 * the directory and unregisters tmp. On failure tmp is left registered for the
 * caller to discard. */
moe_status moe_temp_commit(const char *tmp, const char *final, bool overwrite, moe_err *err);

/* Unlinks tmp and unregisters it. */
void moe_temp_discard(const char *tmp);

/* True when path names the file open as fd (same device and inode, links
 * followed): writers refuse an output that is one of their inputs, --force or
 * not, since replacing it would destroy the data being read. */
bool moe_path_is_open_file(const char *path, int fd);

/* ---- outputs ------------------------------------------------------------------ */

typedef enum moe_output_kind {
    MOE_OUTPUT_DIRECT,    /* written in place: stdout, a device, a FIFO, an open fd */
    MOE_OUTPUT_ANONYMOUS, /* an O_TMPFILE in the destination's directory */
    MOE_OUTPUT_NAMED,     /* a registered DIR/.moe.tmp.PID.XXXXXX */
} moe_output_kind;

typedef struct moe_output {
    int fd;               /* -1 once closed; owned by f when f is set */
    FILE *f;              /* made by moe_output_stream, else NULL */
    moe_output_kind kind;
    bool overwrite;
    bool seekable;        /* pwrite/lseek work on fd (false for a FIFO or pipe) */
    char *path;           /* as given, for messages */
    char *target;         /* the file replaced at commit (symbolic links followed) */
    char *tmp;            /* MOE_OUTPUT_NAMED: the temp file */
    char reopen[40];      /* ANONYMOUS: /proc/self/fd/N, which reopens the bytes */
} moe_output;

#define MOE_OUTPUT_OVERWRITE 1u   /* replace an existing file (else a usage error) */
#define MOE_OUTPUT_NAMED_TEMP 2u  /* a temp file with a name (see moe_output_release_temp) */

/* Opens path for writing as described above. Without MOE_OUTPUT_OVERWRITE an
 * existing path (other than "-" and the /dev/fd forms) is a usage error. A
 * directory is a usage error. On failure o holds nothing to release. */
moe_status moe_output_open(moe_output *o, const char *path, unsigned flags, moe_err *err);

/* Writes all of p (write loop; EINTR retried). Not for use after
 * moe_output_stream. */
moe_status moe_output_write(moe_output *o, const void *p, size_t n, moe_err *err);

/* A stdio stream on the output (made once; owned by o). NULL with err set if
 * fdopen fails. */
FILE *moe_output_stream(moe_output *o, moe_err *err);

/* A path that reads back what was written so far (the temp file), or NULL for a
 * direct output. Valid until commit/abort. */
const char *moe_output_reopen_path(const moe_output *o);

/* Finishes o: flushes, fsyncs and publishes a temp file (a link replaces the
 * target, or creates it without MOE_OUTPUT_OVERWRITE and fails if it exists),
 * fsyncs the directory; closes a direct output, reporting its write errors.
 * Releases o either way; on failure no temp file is left. */
moe_status moe_output_commit(moe_output *o, moe_err *err);

/* Drops o: closes it, removes its temp file. Safe on a zeroed, failed or
 * released o. */
void moe_output_abort(moe_output *o);

/* For MOE_OUTPUT_NAMED_TEMP outputs: flushes and fsyncs, closes, and hands the
 * temp file's path to the caller (malloc'd; still registered for signal
 * cleanup: drop it with moe_temp_discard or publish it with moe_temp_commit).
 * NULL with err set on failure (then nothing is left). Releases o. */
char *moe_output_release_temp(moe_output *o, moe_err *err);

/* A malloc'd path DIR/.moe.tmp.PID.TAG in final's directory, for a temp file
 * that another writer fills (cleared like the others when stale). NULL if out
 * of memory. */
char *moe_temp_name(const char *final, const char *tag);

#endif
