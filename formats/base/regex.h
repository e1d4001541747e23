/* regex — tensor-name patterns (llama.cpp users write ECMAScript-style
 * regexes such as `blk\.\d+\.ffn_.*_exps\.`), on top of PCRE2.
 *
 * Owns: compiling a pattern with a clear error naming the option it came from,
 * and unanchored searching (std::regex_search semantics). Safe to share
 * between threads once compiled.
 */
#ifndef MOE_FORMATS_REGEX_H
#define MOE_FORMATS_REGEX_H

#include <stdbool.h>

#include "formats/base/status.h"

typedef struct moe_regex moe_regex;

/* Compiles pattern; `what` names its origin in errors ("--tensor-type").
 * Usage error with PCRE2's message and offset on a bad pattern. */
moe_status moe_regex_compile(const char *pattern, const char *what, moe_regex **out, moe_err *err);

/* Whether the pattern matches anywhere in s. */
bool moe_regex_search(const moe_regex *re, const char *s);

/* NULL is a no-op. */
void moe_regex_free(moe_regex *re);

#endif
