/* moe-server's text helpers (runtime/server/text.c): UTF-8 cleaning as
 * Python's "replace" decodes, holding back incomplete characters and
 * possible stop-string starts while streaming, finding stop strings, and the
 * API key comparison. */
#include <string.h>
#include <stdlib.h>

#include "runtime/server/server.h"
#include "test_util.h"

static void check_clean(const char *in, size_t n, const char *want) {
    size_t len = 0;
    char *out = srv_utf8_clean(in, n, &len);
    CHECK(out && len == strlen(want) && !memcmp(out, want, len), "clean %zu bytes: got '%s', "
          "want '%s'", n, out ? out : "(null)", want);
    free(out);
}

#define FFFD "\xEF\xBF\xBD"

int main(void) {
    check_clean("abc", 3, "abc");
    check_clean("h\xC3\xA9!", 4, "h\xC3\xA9!");
    check_clean("\xE2\x82\xAC", 3, "\xE2\x82\xAC");
    check_clean("a\x80" "b", 3, "a" FFFD "b");                  /* lone continuation */
    check_clean("\xE2\x82" "x", 3, FFFD "x");                   /* truncated: one U+FFFD */
    check_clean("\xE2\x82", 2, FFFD);                           /* truncated at the end */
    check_clean("\xC0\xAF", 2, FFFD FFFD);                      /* overlong: per byte */
    check_clean("\xED\xA0\x80", 3, FFFD FFFD FFFD);             /* surrogate */
    check_clean("\xF4\x90\x80\x80", 4, FFFD FFFD FFFD FFFD);    /* above U+10FFFF */
    check_clean("\xF0\x9F\x98\x80", 4, "\xF0\x9F\x98\x80");
    size_t len = 0;
    char *nul = srv_utf8_clean("a\0b", 3, &len);
    CHECK(nul && len == 3 && nul[1] == '\0' && nul[2] == 'b', "NUL bytes are kept");
    free(nul);

    CHECK(srv_utf8_complete("ab\xE2\x82", 4) == 2, "incomplete 3-byte character held back");
    CHECK(srv_utf8_complete("ab\xF0", 3) == 2, "a lone 4-byte lead held back");
    CHECK(srv_utf8_complete("ab\xE2\x82\xAC", 5) == 5, "complete character sent");
    CHECK(srv_utf8_complete("ab\x80", 3) == 3, "invalid byte is not waited for");
    CHECK(srv_utf8_complete("ab\xE0\x80", 4) == 4, "a sequence already invalid is not waited for");

    char *stops[] = {"STOP", "\n\n"};
    CHECK(srv_stop_partial("hello ST", 8, stops, 2) == 2, "'ST' may start STOP");
    CHECK(srv_stop_partial("hello S", 7, stops, 2) == 1, "'S' may start STOP");
    CHECK(srv_stop_partial("hello\n", 6, stops, 2) == 1, "newline may start the blank line");
    CHECK(srv_stop_partial("hello", 5, stops, 2) == 0, "nothing held back");
    CHECK(srv_stop_find("a\n\nb STOP", 9, 0, stops, 2) == 1, "the earliest stop wins");
    CHECK(srv_stop_find("a STOP b", 8, 3, stops, 2) == -1, "search starts at from");
    CHECK(srv_stop_find("STO", 3, 0, stops, 2) == -1, "a partial stop is no stop");

    CHECK(srv_secret_equal("s3cret", "s3cret"), "same key");
    CHECK(!srv_secret_equal("s3cre", "s3cret"), "prefix of the key");
    CHECK(!srv_secret_equal("s3cret!", "s3cret"), "key plus more");
    CHECK(!srv_secret_equal("", "s3cret"), "empty key");
    CHECK(!srv_secret_equal("S3cret", "s3cret"), "case matters");
    TEST_DONE();
}
