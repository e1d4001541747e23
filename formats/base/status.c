#include "formats/base/status.h"

#include <stdio.h>
#include <string.h>

moe_status moe_fail(moe_err *err, moe_status code, const char *fmt, ...) {
    if (err) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err->msg, sizeof err->msg, fmt, ap);
        va_end(ap);
        err->code = code;
    }
    return code;
}

void moe_err_prefix(moe_err *err, const char *fmt, ...) {
    if (!err)
        return;
    char prefix[sizeof err->msg];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(prefix, sizeof prefix, fmt, ap);
    va_end(ap);
    /* prefix + ": " + old message, cut at the buffer end */
    char joined[2 * sizeof err->msg + 2];
    snprintf(joined, sizeof joined, "%s: %s", prefix, err->msg);
    memcpy(err->msg, joined, sizeof err->msg - 1);
    err->msg[sizeof err->msg - 1] = '\0';
}

void moe_err_clear(moe_err *err) {
    if (err) {
        err->code = MOE_OK;
        err->msg[0] = '\0';
    }
}

const char *moe_status_name(moe_status code) {
    switch (code) {
    case MOE_OK: return "ok";
    case MOE_ERR_IO: return "i/o error";
    case MOE_ERR_FORMAT: return "format error";
    case MOE_ERR_UNSUPPORTED: return "unsupported";
    case MOE_ERR_NOMEM: return "out of memory";
    case MOE_ERR_USAGE: return "usage error";
    case MOE_ERR_INTEGRITY: return "integrity error";
    case MOE_ERR_INTERNAL: return "internal error";
    case MOE_ERR_NEED_MORE: return "truncated input";
    case MOE_ERR_INTERRUPTED: return "interrupted";
    }
    return "unknown error";
}

int moe_status_exit_code(moe_status code) {
    if (code == MOE_OK)
        return 0;
    return code == MOE_ERR_USAGE ? 2 : 1;
}
