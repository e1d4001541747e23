/* fuzz_chat — fuzz target for chat templates (runtime/chat.h). Input: one
 * flags byte (bit 0: add the assistant prefix; bit 1: no template, i.e. the
 * chatml default), the template text up to a NUL, then messages as
 * role NUL content NUL pairs (at most 16). Invariants: rendering succeeds with
 * a NUL-terminated string or fails with a message; a recognised template name
 * is a static string. Corpus: tests/corpus/chat (replayed with --expect any). */
#include <string.h>

#include "fuzz/fuzz_target.h"
#include "runtime/chat.h"

enum { MAX_MESSAGES = 16 };

moe_status moe_fuzz_run(const uint8_t *data, size_t size, moe_err *err) {
    if (size == 0)
        return moe_fail(err, MOE_ERR_FORMAT, "empty input");
    uint8_t flags = data[0];
    /* a NUL-terminated copy: every field ends at a NUL, the last at the end */
    char *text = malloc(size);
    MOE_FUZZ_REQUIRE(text != NULL);
    memcpy(text, data + 1, size - 1);
    text[size - 1] = '\0';
    const char *end = text + size - 1, *p = text;
    const char *tmpl = (flags & 2) ? NULL : p;
    p += strlen(p) + 1;
    moe_chat_message msgs[MAX_MESSAGES];
    int n = 0;
    while (p < end && n < MAX_MESSAGES) {
        msgs[n].role = p;
        p += strlen(p) + 1;
        msgs[n].content = p < end ? p : "";
        p += p < end ? strlen(p) + 1 : 0;
        n++;
    }
    const char *name = tmpl ? moe_chat_template_name(tmpl) : NULL;
    if (name)
        moe_fuzz_touch(name, strlen(name));
    char *out = NULL;
    moe_status st = moe_chat_format(tmpl, msgs, n, flags & 1, &out, err);
    if (st == MOE_OK) {
        MOE_FUZZ_REQUIRE(out != NULL);
        moe_fuzz_touch(out, strlen(out) + 1);
    } else {
        MOE_FUZZ_REQUIRE(out == NULL && err->msg[0] != '\0');
    }
    free(out);
    free(text);
    return st;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    moe_err err;
    moe_fuzz_run(data, size, &err);
    return 0;
}
