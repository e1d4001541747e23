/* tempfile — removal of half-written outputs when the process is interrupted.
 *
 * Owns: a fixed table of temp-file paths and SIGINT/SIGTERM/SIGHUP handlers
 * that unlink every registered path and then re-raise the signal with its
 * default action (so the exit status still says "killed by SIGINT"). Writers
 * register their temp file when they create it and unregister it after the
 * final rename or after removing it themselves.
 */
#ifndef MOE_FORMATS_TEMPFILE_H
#define MOE_FORMATS_TEMPFILE_H

#include <stdbool.h>

#include "formats/status.h"

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

#endif
