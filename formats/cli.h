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
 */
#ifndef MOE_FORMATS_CLI_H
#define MOE_FORMATS_CLI_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "formats/status.h"

typedef enum moe_opt_kind {
    MOE_OPT_FLAG,     /* bool *dest = true; no argument */
    MOE_OPT_INT,      /* int64_t *dest; decimal, range [min, max] */
    MOE_OPT_SIZE,     /* uint64_t *dest; "4G", "512M", "100K", "123" (binary units) */
    MOE_OPT_FLOAT,    /* double *dest; finite, range [fmin, fmax] */
    MOE_OPT_STRING,   /* const char **dest = the argv string (borrowed) */
    MOE_OPT_LIST,     /* moe_opt_list *dest; repeatable, each value appended */
    MOE_OPT_OPTIONAL_INT, /* int64_t *dest; "--zstd" sets def_int, "--zstd=5" sets 5 */
} moe_opt_kind;

typedef struct moe_opt_list {
    const char *items[64]; /* borrowed argv strings */
    int count;
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
} moe_cli;

/* Parses argv. On success fills the destinations, sets *positional to the
 * first positional argument index in argv (argv is permuted so positionals
 * come last) and *n_positional to their count, and returns MOE_OK.
 * `-h`/`--help` prints the help to stdout and returns MOE_OK with *help_shown
 * = true (the tool then exits 0). Any problem — unknown option, missing or
 * malformed argument, out-of-range number, an option given twice (other than
 * MOE_OPT_LIST), wrong number of positionals — returns MOE_ERR_USAGE with a
 * message naming the option. Destinations of options not given are untouched
 * (so the tool sets defaults before calling). Not reentrant (getopt state). */
moe_status moe_cli_parse(const moe_cli *cli, int argc, char **argv, int *positional,
                         int *n_positional, bool *help_shown, moe_err *err);

/* Writes the usage line, summary and option table to f. */
void moe_cli_print_help(const moe_cli *cli, FILE *f);

/* Checked number parsing, exposed for tools and tests. Each fails with
 * MOE_ERR_USAGE naming `what` on junk, overflow or a trailing character. */
moe_status moe_parse_i64(const char *s, int64_t *out, const char *what, moe_err *err);
moe_status moe_parse_size(const char *s, uint64_t *out, const char *what, moe_err *err);
moe_status moe_parse_f64(const char *s, double *out, const char *what, moe_err *err);

#endif
