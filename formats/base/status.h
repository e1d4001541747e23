/* status — error values for every moe-toolkit library.
 *
 * Owns: the pinned status enum, the error record (code + message), and the
 * helper macros that library code uses to fail with a message and to propagate.
 * Does not own: printing or exiting. Only a tool's main() turns a status into a
 * message on stderr and an exit code (see moe_status_exit_code).
 */
#ifndef MOE_FORMATS_STATUS_H
#define MOE_FORMATS_STATUS_H

#include <stdarg.h>

/* Numbers are pinned: they appear in JSON reports and tests. Append only. */
typedef enum moe_status {
    MOE_OK = 0,
    MOE_ERR_IO = 1,          /* open/read/write/fsync/rename failed */
    MOE_ERR_FORMAT = 2,      /* malformed input bytes */
    MOE_ERR_UNSUPPORTED = 3, /* well-formed but not something we can handle */
    MOE_ERR_NOMEM = 4,
    MOE_ERR_USAGE = 5,       /* bad arguments from the caller/user */
    MOE_ERR_INTEGRITY = 6,   /* checksum mismatch */
    MOE_ERR_INTERNAL = 7,    /* a bug: an invariant did not hold */
    MOE_ERR_NEED_MORE = 8,   /* a parser needs a longer prefix of the input */
    MOE_ERR_INTERRUPTED = 9, /* SIGINT/SIGTERM while working */
} moe_status;

typedef struct moe_err {
    moe_status code;
    char msg[256];
} moe_err;

/* Records code and a printf-style message in err (err may be NULL) and returns
 * code, so library code can write `return moe_fail(err, MOE_ERR_FORMAT, ...)`. */
moe_status moe_fail(moe_err *err, moe_status code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Prepends "prefix: " to err->msg (e.g. a file name) keeping the code. */
void moe_err_prefix(moe_err *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Resets err to MOE_OK with an empty message. err may be NULL. */
void moe_err_clear(moe_err *err);

/* Short stable name of a status, e.g. "format error". Never NULL. */
const char *moe_status_name(moe_status code);

/* The exit code a tool uses for a status: 0 ok, 2 usage, 1 everything else. */
int moe_status_exit_code(moe_status code);

#define MOE_TRY(expr)                        \
    do {                                     \
        moe_status moe_try_st_ = (expr);     \
        if (moe_try_st_ != MOE_OK)           \
            return moe_try_st_;              \
    } while (0)

#define MOE_FAIL_IF(cond, err, code, ...)             \
    do {                                              \
        if (cond)                                     \
            return moe_fail((err), (code), __VA_ARGS__); \
    } while (0)

#endif
