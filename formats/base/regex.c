#include "formats/base/regex.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>
#include <stdlib.h>

struct moe_regex {
    pcre2_code *code;
};

moe_status moe_regex_compile(const char *pattern, const char *what, moe_regex **out,
                             moe_err *err) {
    *out = NULL;
    int code;
    PCRE2_SIZE at;
    pcre2_code *re = pcre2_compile((PCRE2_SPTR)pattern, PCRE2_ZERO_TERMINATED, 0, &code, &at, NULL);
    if (!re) {
        PCRE2_UCHAR msg[128];
        pcre2_get_error_message(code, msg, sizeof msg);
        return moe_fail(err, MOE_ERR_USAGE, "%s '%s': bad regex at offset %zu: %s", what, pattern,
                        (size_t)at, (const char *)msg);
    }
    moe_regex *r = malloc(sizeof *r);
    if (!r) {
        pcre2_code_free(re);
        return moe_fail(err, MOE_ERR_NOMEM, "out of memory");
    }
    r->code = re;
    *out = r;
    return MOE_OK;
}

bool moe_regex_search(const moe_regex *re, const char *s) {
    pcre2_match_data *md = pcre2_match_data_create_from_pattern(re->code, NULL);
    int rc = md ? pcre2_match(re->code, (PCRE2_SPTR)s, PCRE2_ZERO_TERMINATED, 0, 0, md, NULL) : -1;
    pcre2_match_data_free(md);
    return rc >= 0;
}

void moe_regex_free(moe_regex *re) {
    if (!re)
        return;
    pcre2_code_free(re->code);
    free(re);
}
