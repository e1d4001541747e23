/* cli — the one option parser every tool uses, on top of getopt_long.
 *
 * Owns: option tables, checked number parsing (K/M/G/T suffixes for sizes),
 * duplicate and unknown option detection, and --help text. Does not own: what
 * the options mean, or exiting (the tool's main() maps the status to an exit
 * code: --help -> 0 after printing to stdout, usage errors -> 2).
 *
 * Names follow llama.cpp: each option has a comma-separated list of names;
 * one-letter names are short options (-m), longer ones are long options
 * (--model). Multi-letter names also work with one dash (-ngl, -ctk), as
 * llama.cpp accepts them (getopt_long_only semantics).
 *
 * Accepted forms: `--model F`, `--model=F`, `-model F`, `-m F`, `-mF`; short
 * flags may be clustered (`-vq`). An optional value (MOE_OPT_OPTIONAL_INT)
 * only attaches: `--zstd=5` or `-z5`; `--zstd 5` leaves 5 as a positional.
 * Long names must be typed in full: getopt's unique-prefix abbreviations
 * (`--thr` for `--threads`) are rejected as unknown, so adding an option never
 * changes what an existing command line means. `--` ends the options.
 * `-h` and `--help` are built in; a table must not define them.
 */
#ifndef MOE_FORMATS_CLI_H
#define MOE_FORMATS_CLI_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "formats/base/status.h"

typedef enum moe_opt_kind {
    MOE_OPT_FLAG,     /* bool *dest = true; no argument */
    MOE_OPT_INT,      /* int64_t *dest; decimal, range [min, max] */
    MOE_OPT_SIZE,     /* uint64_t *dest; "4G", "512M", "100K", "123" (binary units) */
    MOE_OPT_FLOAT,    /* double *dest; finite, range [fmin, fmax] */
    MOE_OPT_STRING,   /* const char **dest = the argv string (borrowed) */
    MOE_OPT_LIST,     /* moe_opt_list *dest; repeatable, each value appended */
    MOE_OPT_OPTIONAL_INT, /* int64_t *dest; "--zstd" sets def_int, "--zstd=5" sets 5 */
} moe_opt_kind;

/* Most values one MOE_OPT_LIST collects; one more is a usage error. */
#define MOE_OPT_LIST_MAX 256 /* a --fit / --hot-experts placement has an -ot per MoE layer */

typedef struct moe_opt_list {
    const char *items[MOE_OPT_LIST_MAX]; /* borrowed argv strings, in command-line order */
    int count; /* values are appended at items[count]: zero it before parsing */
} moe_opt_list;

typedef struct moe_opt {
    const char *names;    /* "m,model" */
    moe_opt_kind kind;
    void *dest;
    const char *arg_name; /* "FILE", shown in --help; NULL for flags */
    const char *help;
    int64_t min, max;     /* MOE_OPT_INT / OPTIONAL_INT range; both 0 = any int64 */
    double fmin, fmax;    /* MOE_OPT_FLOAT range; both 0 = any finite */
    int64_t def_int;      /* MOE_OPT_OPTIONAL_INT value when given without =N */
} moe_opt;

typedef struct moe_cli {
    const char *prog;      /* "moe-inspect" */
    const char *synopsis;  /* "[options] FILE" */
    const char *summary;   /* one paragraph printed under the usage line */
    const moe_opt *opts;   /* terminated by an entry with names == NULL */
    int min_positional, max_positional; /* max -1 = unlimited */
    const char *positional_name; /* "input file" in count errors; NULL = "argument" */
} moe_cli;

/* Parses argv. On success fills the destinations, sets *positional to the
 * first positional argument index in argv (argv is permuted so positionals
 * come last) and *n_positional to their count, and returns MOE_OK.
 * `-h`/`--help` prints the help to stdout and returns MOE_OK at once with
 * *help_shown = true (the tool then exits 0); the rest of argv is not parsed
 * and positional counts are not checked. Any problem — unknown option, missing
 * or malformed argument, out-of-range number, an option given twice (other than
 * MOE_OPT_LIST), wrong number of positionals — returns MOE_ERR_USAGE with a
 * message naming the option as the user typed it ("option -t: ..."). A table
 * that breaks the rules above (bad or repeated name, NULL dest, min > max)
 * returns MOE_ERR_INTERNAL: it is a bug in the tool, not the user's fault.
 *
 * Destinations of options not given are untouched (so the tool sets defaults
 * before calling); after an error some destinations may have been written.
 * argv is permuted in place; string destinations borrow argv's strings.
 * positional, n_positional and help_shown may be NULL. Allocates only
 * temporaries, freed before returning. Safe to call again in the same process
 * (getopt is re-initialised each call) but not from two threads at once. */
moe_status moe_cli_parse(const moe_cli *cli, int argc, char **argv, int *positional,
                         int *n_positional, bool *help_shown, moe_err *err);

/* Writes the usage line ("usage: PROG SYNOPSIS"), the summary and one line per
 * option ("  -m, --model FILE   help", "--zstd[=N]" for optional values,
 * then -h, --help) to f, help texts aligned in one column. Names are shown in
 * table order with two dashes, except one-letter names and llama.cpp-style
 * abbreviations (up to 3 letters beside a longer name: -ngl, -ctk), shown
 * with one; every name works with either. Does not close f. */
void moe_cli_print_help(const moe_cli *cli, FILE *f);

/* Checked number parsing, exposed for tools and tests. Each fails with
 * MOE_ERR_USAGE, the message starting with `what` ("option --threads"), on an
 * empty string, leading space, junk, overflow or a trailing character; *out is
 * written only on success.
 *   moe_parse_i64:  decimal with an optional sign.
 *   moe_parse_size: decimal digits, then optionally K, M, G or T (any case,
 *                   powers of 1024), then optionally "B" or "iB" ("4G", "4GB",
 *                   "4GiB", "123", "123B"). No sign, no fraction.
 *   moe_parse_f64:  anything strtod reads, as long as it is finite. */
moe_status moe_parse_i64(const char *s, int64_t *out, const char *what, moe_err *err);
moe_status moe_parse_size(const char *s, uint64_t *out, const char *what, moe_err *err);
moe_status moe_parse_f64(const char *s, double *out, const char *what, moe_err *err);

/* The end of every tool's main(): prints a failure as "prog: message" on
 * stderr, then flushes stdout and checks that all of it arrived (a full disk,
 * /dev/full, a closed pipe); a lost write turns success into exit 1. Returns
 * the exit code (moe_status_exit_code). */
int moe_cli_finish(const char *prog, moe_status st, const moe_err *err);

/* The step after moe_cli_parse and the tool's own option checks. Returns
 * true when main() must return *exit_code at once: st is an error (printed as
 * "prog: message" and "(see prog --help)" on stderr, exit 2 for a usage
 * error) or the help was shown (exit 0). False: go on and run the tool. */
bool moe_cli_parse_done(const char *prog, moe_status st, bool help_shown, const moe_err *err,
                        int *exit_code);

#endif
