#include "formats/base/cli.h"
#include "formats/base/log.h"

#include <ctype.h>
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

/* getopt returns a short option as its character (< 256) and ':'/'?' for
 * errors, so long options report LONG_BASE + their index in the table; the
 * built-in --help is index n_opts. */
enum { LONG_BASE = 256, NAME_MAX_LEN = 48, TYPED_CAP = 64, HELP_COL_MAX = 30 };

typedef struct cli_parser {
    const moe_cli *cli;
    int n_opts;
    char *names;          /* every long name, NUL-terminated, pointed into by longs */
    struct option *longs; /* one per long name, then --help, then the zero entry */
    char *shorts;         /* ":" then "c", "c:" or "c::" per short name, then "h" */
    bool *seen;           /* per table entry: given already in this parse */
    int short_opt[256];   /* short character -> table index (n_opts = help), -1 none */
} cli_parser;

/* ---- numbers ------------------------------------------------------------ */

moe_status moe_parse_i64(const char *s, int64_t *out, const char *what, moe_err *err) {
    /* strtoll would skip leading space and accept an empty digit run. */
    const char *d = (s[0] == '+' || s[0] == '-') ? s + 1 : s;
    MOE_FAIL_IF(!isdigit((unsigned char)d[0]), err, MOE_ERR_USAGE, "%s: '%s' is not an integer",
                what, s);
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    MOE_FAIL_IF(errno == ERANGE, err, MOE_ERR_USAGE,
                "%s: '%s' is out of range for a 64-bit integer", what, s);
    MOE_FAIL_IF(*end != '\0', err, MOE_ERR_USAGE, "%s: '%s' is not an integer", what, s);
    *out = (int64_t)v;
    return MOE_OK;
}

/* Returns the power-of-1024 shift of a unit letter, or -1. */
static int unit_shift(char c) {
    switch (tolower((unsigned char)c)) {
    case 'k': return 10;
    case 'm': return 20;
    case 'g': return 30;
    case 't': return 40;
    }
    return -1;
}

moe_status moe_parse_size(const char *s, uint64_t *out, const char *what, moe_err *err) {
    MOE_FAIL_IF(s[0] == '-', err, MOE_ERR_USAGE, "%s: '%s' is negative", what, s);
    MOE_FAIL_IF(!isdigit((unsigned char)s[0]), err, MOE_ERR_USAGE,
                "%s: '%s' is not a size (expected digits with an optional K, M, G or T)",
                what, s);
    uint64_t v = 0;
    const char *p = s;
    for (; isdigit((unsigned char)*p); p++) {
        unsigned digit = (unsigned)(*p - '0');
        MOE_FAIL_IF(v > (UINT64_MAX - digit) / 10, err, MOE_ERR_USAGE, "%s: '%s' is too large",
                    what, s);
        v = v * 10 + digit;
    }
    int shift = 0;
    if (*p && unit_shift(*p) >= 0)
        shift = unit_shift(*p++);
    /* "B" may follow anything; "iB" only a unit ("4GiB", not "4iB"). */
    if (shift && (p[0] == 'i' || p[0] == 'I') && (p[1] == 'b' || p[1] == 'B'))
        p += 2;
    else if (*p == 'b' || *p == 'B')
        p++;
    MOE_FAIL_IF(*p != '\0', err, MOE_ERR_USAGE,
                "%s: '%s' is not a size (expected digits with an optional K, M, G or T)",
                what, s);
    MOE_FAIL_IF(v > (UINT64_MAX >> shift), err, MOE_ERR_USAGE, "%s: '%s' is too large", what,
                s);
    *out = v << shift;
    return MOE_OK;
}

moe_status moe_parse_f64(const char *s, double *out, const char *what, moe_err *err) {
    MOE_FAIL_IF(s[0] == '\0' || isspace((unsigned char)s[0]), err, MOE_ERR_USAGE,
                "%s: '%s' is not a number", what, s);
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    MOE_FAIL_IF(*end != '\0', err, MOE_ERR_USAGE, "%s: '%s' is not a number", what, s);
    /* Overflow gives HUGE_VAL, which fails here too; underflow to a tiny or
     * zero value is accepted, as the user asked for something that small. */
    MOE_FAIL_IF(!isfinite(v), err, MOE_ERR_USAGE, "%s: '%s' is not a finite number", what, s);
    *out = v;
    return MOE_OK;
}

/* ---- the table ---------------------------------------------------------- */

/* Walks a comma-separated name list: returns the next name and its length,
 * or NULL at the end. *s is advanced past the name and its comma. */
static const char *next_name(const char **s, size_t *len) {
    if (**s == '\0')
        return NULL;
    const char *name = *s;
    *len = strcspn(name, ",");
    *s = name + *len + (name[*len] == ',');
    return name;
}

static bool valid_name(const char *name, size_t len) {
    if (len == 0 || len > NAME_MAX_LEN || !isalnum((unsigned char)name[0]))
        return false;
    for (size_t i = 1; i < len; i++)
        if (!isalnum((unsigned char)name[i]) && name[i] != '-' && name[i] != '_')
            return false;
    bool help = (len == 1 && name[0] == 'h') || (len == 4 && !memcmp(name, "help", 4));
    return !help;
}

/* Checks one table entry (programmer errors -> MOE_ERR_INTERNAL) and adds its
 * name counts and long-name bytes to the totals. */
static moe_status check_opt(const moe_opt *o, int *n_short, int *n_long, size_t *long_bytes,
                            moe_err *err) {
    const char *s = o->names, *name;
    size_t len;
    size_t total = strlen(o->names);
    MOE_FAIL_IF(total == 0 || o->names[total - 1] == ',', err, MOE_ERR_INTERNAL,
                "cli: bad option names '%s'", o->names);
    while ((name = next_name(&s, &len))) {
        MOE_FAIL_IF(!valid_name(name, len), err, MOE_ERR_INTERNAL,
                    "cli: bad option name in '%s'", o->names);
        if (len == 1) {
            (*n_short)++;
        } else {
            (*n_long)++;
            *long_bytes += len + 1;
        }
    }
    MOE_FAIL_IF(!o->dest, err, MOE_ERR_INTERNAL, "cli: option '%s' has no destination",
                o->names);
    MOE_FAIL_IF((unsigned)o->kind > MOE_OPT_OPTIONAL_INT, err, MOE_ERR_INTERNAL,
                "cli: option '%s' has unknown kind %d", o->names, (int)o->kind);
    MOE_FAIL_IF(o->min > o->max || o->fmin > o->fmax, err, MOE_ERR_INTERNAL,
                "cli: option '%s' has min > max", o->names);
    bool ranged = o->min != 0 || o->max != 0;
    MOE_FAIL_IF(o->kind == MOE_OPT_OPTIONAL_INT && ranged &&
                    (o->def_int < o->min || o->def_int > o->max),
                err, MOE_ERR_INTERNAL, "cli: option '%s' default is outside its range",
                o->names);
    return MOE_OK;
}

static void parser_free(cli_parser *p) {
    free(p->names);
    free(p->longs);
    free(p->shorts);
    free(p->seen);
}

/* Adds one option's names to the getopt tables; rejects repeated names. */
static moe_status add_names(cli_parser *p, int idx, int *n_long, char **name_at,
                            size_t *short_at, moe_err *err) {
    const moe_opt *o = &p->cli->opts[idx];
    static const char *const arg_suffix[] = {"", ":", "::"};
    int has_arg = o->kind == MOE_OPT_FLAG           ? no_argument
                  : o->kind == MOE_OPT_OPTIONAL_INT ? optional_argument
                                                    : required_argument;
    const char *s = o->names, *name;
    size_t len;
    while ((name = next_name(&s, &len))) {
        if (len == 1) {
            unsigned char c = (unsigned char)name[0];
            MOE_FAIL_IF(p->short_opt[c] >= 0, err, MOE_ERR_INTERNAL,
                        "cli: option name '%c' is used twice", c);
            p->short_opt[c] = idx;
            p->shorts[(*short_at)++] = (char)c;
            for (const char *a = arg_suffix[has_arg]; *a; a++)
                p->shorts[(*short_at)++] = *a;
            continue;
        }
        memcpy(*name_at, name, len);
        (*name_at)[len] = '\0';
        for (int j = 0; j < *n_long; j++)
            MOE_FAIL_IF(!strcmp(p->longs[j].name, *name_at), err, MOE_ERR_INTERNAL,
                        "cli: option name '%s' is used twice", *name_at);
        p->longs[(*n_long)++] = (struct option){*name_at, has_arg, NULL, LONG_BASE + idx};
        *name_at += len + 1;
    }
    return MOE_OK;
}

/* Builds getopt's long-option array and short-option string from the table.
 * On failure the caller still calls parser_free. */
static moe_status parser_build(cli_parser *p, const moe_cli *cli, moe_err *err) {
    memset(p, 0, sizeof *p);
    p->cli = cli;
    MOE_FAIL_IF(!cli->opts, err, MOE_ERR_INTERNAL, "cli: no option table");
    MOE_FAIL_IF(cli->min_positional < 0 || cli->max_positional < -1 ||
                    (cli->max_positional >= 0 && cli->max_positional < cli->min_positional),
                err, MOE_ERR_INTERNAL, "cli: bad positional limits");
    int n_short = 0, n_long = 0;
    size_t long_bytes = 0;
    for (; cli->opts[p->n_opts].names; p->n_opts++)
        MOE_TRY(check_opt(&cli->opts[p->n_opts], &n_short, &n_long, &long_bytes, err));

    p->names = malloc(long_bytes + 1);
    p->longs = calloc((size_t)n_long + 2, sizeof *p->longs);
    /* ':', up to 3 characters per short name ("c::"), 'h', NUL. */
    p->shorts = malloc(1 + 3 * (size_t)n_short + 2);
    p->seen = calloc((size_t)p->n_opts + 1, sizeof *p->seen);
    MOE_FAIL_IF(!p->names || !p->longs || !p->shorts || !p->seen, err, MOE_ERR_NOMEM,
                "cli: out of memory building the option table");

    for (int c = 0; c < 256; c++)
        p->short_opt[c] = -1;
    p->short_opt['h'] = p->n_opts;
    char *name_at = p->names;
    size_t short_at = 0;
    /* ':' first: a missing value returns ':' rather than '?', so it can be
     * told apart from an unknown option. */
    p->shorts[short_at++] = ':';
    int n_added = 0;
    for (int i = 0; i < p->n_opts; i++)
        MOE_TRY(add_names(p, i, &n_added, &name_at, &short_at, err));
    p->shorts[short_at++] = 'h';
    p->shorts[short_at] = '\0';
    p->longs[n_added] = (struct option){"help", no_argument, NULL, LONG_BASE + p->n_opts};
    return MOE_OK;
}

/* ---- parsing ------------------------------------------------------------ */

/* The option part of an argv token ("--model" of "--model=x"), as typed. */
static void typed_name(const char *tok, char *buf, size_t cap) {
    snprintf(buf, cap, "%.*s", (int)strcspn(tok, "="), tok);
}

/* True when tok spells one of the long names of getopt value `val` in full.
 * getopt also accepts unique prefixes; we do not (see cli.h). */
static bool spelled_in_full(const cli_parser *p, const char *tok, int val) {
    if (tok[0] != '-')
        return false;
    const char *n = tok + (tok[1] == '-' ? 2 : 1);
    size_t len = strcspn(n, "=");
    for (const struct option *lo = p->longs; lo->name; lo++)
        if (lo->val == val && strlen(lo->name) == len && !memcmp(lo->name, n, len))
            return true;
    return false;
}

/* "unknown option '-mod'", with a hint when the user probably meant a short
 * option with its value attached (-m od): getopt_long_only read the token as
 * an abbreviation of a long name, which we refuse. */
static moe_status unknown_option(const cli_parser *p, const char *tok, moe_err *err) {
    char name[TYPED_CAP];
    typed_name(tok, name, sizeof name);
    unsigned char c = (unsigned char)tok[0] == '-' ? (unsigned char)tok[1] : 0;
    int idx = c && c != '-' && tok[2] ? p->short_opt[c] : -1;
    if (idx >= 0 && idx < p->n_opts && p->cli->opts[idx].kind != MOE_OPT_FLAG)
        return moe_fail(err, MOE_ERR_USAGE,
                        "unknown option '%s' (for -%c with a value, write -%c %s)", name, c, c,
                        tok + 2);
    return moe_fail(err, MOE_ERR_USAGE, "unknown option '%s'", name);
}

/* The argv element getopt just finished with (it has advanced optind past it). */
static const char *last_token(int argc, char **argv) {
    return optind >= 1 && optind <= argc ? argv[optind - 1] : "";
}

/* Turns getopt's ':' (missing value) or '?' (unknown option, or a value given
 * to an option that takes none) into our message. */
static moe_status getopt_error(const cli_parser *p, int c, int argc, char **argv, moe_err *err) {
    char name[TYPED_CAP];
    if (optopt > 0 && optopt < LONG_BASE) {
        snprintf(name, sizeof name, "-%c", optopt);
        if (c == ':')
            return moe_fail(err, MOE_ERR_USAGE, "option %s needs a value", name);
        return moe_fail(err, MOE_ERR_USAGE, "unknown option '%s'", name);
    }
    const char *tok = last_token(argc, argv);
    if (optopt == 0 || !spelled_in_full(p, tok, optopt))
        return unknown_option(p, tok, err);
    typed_name(tok, name, sizeof name);
    if (c == ':')
        return moe_fail(err, MOE_ERR_USAGE, "option %s needs a value", name);
    return moe_fail(err, MOE_ERR_USAGE, "option %s takes no value", name);
}

static moe_status check_range(const moe_opt *o, const char *what, const char *arg, int64_t v,
                              moe_err *err) {
    if (o->min == 0 && o->max == 0)
        return MOE_OK;
    MOE_FAIL_IF(v < o->min || v > o->max, err, MOE_ERR_USAGE,
                "%s: '%s' is out of range [%" PRId64 ", %" PRId64 "]", what, arg, o->min,
                o->max);
    return MOE_OK;
}

/* Every parallel loop is an OpenMP pragma, which a build without OpenMP
 * (-DMOE_OPENMP=OFF) compiles as serial code; --threads then cannot do what it
 * says, so the parser warns instead of ignoring it. */
#ifdef _OPENMP
static const bool built_with_openmp = true;
#else
static const bool built_with_openmp = false;
#endif

static void warn_if_threads_ignored(const moe_opt *o, int64_t v) {
    const char *s = o->names, *name;
    size_t len;
    while (!built_with_openmp && v > 1 && (name = next_name(&s, &len)))
        if (len == 7 && !memcmp(name, "threads", 7)) {
            MOE_WARN("--threads %" PRId64 " ignored: built without OpenMP (MOE_OPENMP=OFF), "
                     "running on one thread", v);
            return;
        }
}

/* Stores one occurrence of option o, typed as `name`, with value arg (NULL
 * when none was given). */
static moe_status apply(const moe_opt *o, const char *name, const char *arg, moe_err *err) {
    char what[TYPED_CAP + 8];
    snprintf(what, sizeof what, "option %s", name);
    switch (o->kind) {
    case MOE_OPT_FLAG:
        *(bool *)o->dest = true;
        return MOE_OK;
    case MOE_OPT_STRING:
        *(const char **)o->dest = arg;
        return MOE_OK;
    case MOE_OPT_LIST: {
        moe_opt_list *l = o->dest;
        MOE_FAIL_IF(l->count < 0 || l->count >= MOE_OPT_LIST_MAX, err, MOE_ERR_USAGE,
                    "%s given more than %d times", what, MOE_OPT_LIST_MAX);
        l->items[l->count++] = arg;
        return MOE_OK;
    }
    case MOE_OPT_INT:
    case MOE_OPT_OPTIONAL_INT: {
        int64_t v = o->def_int;
        if (arg) {
            MOE_TRY(moe_parse_i64(arg, &v, what, err));
            MOE_TRY(check_range(o, what, arg, v, err));
        }
        *(int64_t *)o->dest = v;
        warn_if_threads_ignored(o, v);
        return MOE_OK;
    }
    case MOE_OPT_SIZE:
        return moe_parse_size(arg, (uint64_t *)o->dest, what, err);
    case MOE_OPT_FLOAT: {
        double v;
        MOE_TRY(moe_parse_f64(arg, &v, what, err));
        MOE_FAIL_IF((o->fmin != 0 || o->fmax != 0) && (v < o->fmin || v > o->fmax), err,
                    MOE_ERR_USAGE, "%s: '%s' is out of range [%g, %g]", what, arg, o->fmin,
                    o->fmax);
        *(double *)o->dest = v;
        return MOE_OK;
    }
    }
    return moe_fail(err, MOE_ERR_INTERNAL, "%s: unknown kind %d", what, (int)o->kind);
}

/* Runs getopt over argv until the options end, --help, or an error. */
static moe_status parse_options(cli_parser *p, int argc, char **argv, bool *help,
                                moe_err *err) {
    for (;;) {
        int c = getopt_long_only(argc, argv, p->shorts, p->longs, NULL);
        if (c == -1)
            return MOE_OK;
        if (c == ':' || c == '?')
            return getopt_error(p, c, argc, argv, err);
        char name[TYPED_CAP];
        int idx;
        if (c >= LONG_BASE) {
            /* A separate value has been consumed too: the option is one back. */
            const char *tok = last_token(argc, argv);
            if (optarg && optarg == tok && optind >= 2)
                tok = argv[optind - 2];
            if (!spelled_in_full(p, tok, c))
                return unknown_option(p, tok, err);
            typed_name(tok, name, sizeof name);
            idx = c - LONG_BASE;
        } else {
            snprintf(name, sizeof name, "-%c", c);
            idx = p->short_opt[(unsigned char)c];
        }
        MOE_FAIL_IF(idx < 0 || idx > p->n_opts, err, MOE_ERR_INTERNAL,
                    "cli: getopt returned unexpected option %d", c);
        if (idx == p->n_opts) {
            *help = true;
            return MOE_OK;
        }
        const moe_opt *o = &p->cli->opts[idx];
        MOE_FAIL_IF(p->seen[idx] && o->kind != MOE_OPT_LIST, err, MOE_ERR_USAGE,
                    "option %s given twice", name);
        p->seen[idx] = true;
        MOE_TRY(apply(o, name, optarg, err));
    }
}

static moe_status check_positionals(const moe_cli *cli, int n, char **first, moe_err *err) {
    int lo = cli->min_positional, hi = cli->max_positional;
    if (n >= lo && (hi < 0 || n <= hi))
        return MOE_OK;
    const char *what = cli->positional_name ? cli->positional_name : "argument";
    if (hi == 0)
        return moe_fail(err, MOE_ERR_USAGE, "unexpected %s '%s'", what, first[0]);
    const char *plural = (hi < 0 ? lo : hi) == 1 ? "" : "s";
    if (lo == hi)
        return moe_fail(err, MOE_ERR_USAGE, "expected %d %s%s, got %d", lo, what, plural, n);
    if (hi < 0)
        return moe_fail(err, MOE_ERR_USAGE, "expected at least %d %s%s, got %d", lo, what,
                        plural, n);
    return moe_fail(err, MOE_ERR_USAGE, "expected %d to %d %ss, got %d", lo, hi, what, n);
}

moe_status moe_cli_parse(const moe_cli *cli, int argc, char **argv, int *positional,
                         int *n_positional, bool *help_shown, moe_err *err) {
    bool help = false;
    if (help_shown)
        *help_shown = false;
    cli_parser p;
    moe_status st = parser_build(&p, cli, err);
    int first = argc;
    if (st == MOE_OK && argc > 0) {
        int saved_opterr = opterr;
        opterr = 0; /* our messages, not getopt's */
        optind = 0; /* GNU: 0 re-initialises everything, including the permutation */
        st = parse_options(&p, argc, argv, &help, err);
        first = optind < argc ? optind : argc;
        opterr = saved_opterr;
    }
    parser_free(&p);
    if (st != MOE_OK)
        return st;
    if (help) {
        moe_cli_print_help(cli, stdout);
        if (help_shown)
            *help_shown = true;
        first = argc; /* nothing was checked, so report no positionals */
    } else {
        MOE_TRY(check_positionals(cli, argc - first, argv + first, err));
    }
    if (positional)
        *positional = first;
    if (n_positional)
        *n_positional = argc - first;
    return MOE_OK;
}

/* ---- help --------------------------------------------------------------- */

static const char *default_arg_name(moe_opt_kind kind) {
    switch (kind) {
    case MOE_OPT_INT:
    case MOE_OPT_OPTIONAL_INT: return "N";
    case MOE_OPT_SIZE: return "SIZE";
    case MOE_OPT_FLOAT: return "X";
    default: return "VALUE";
    }
}

/* Writes "-m, --model FILE" (or "--zstd[=N]") into buf, cut at cap. */
static void left_column(const moe_opt *o, char *buf, size_t cap) {
    size_t longest = 0, at = 0, len;
    const char *s = o->names, *name;
    while ((name = next_name(&s, &len)))
        longest = len > longest ? len : longest;
    bool last_long = false;
    buf[0] = '\0';
    for (s = o->names; (name = next_name(&s, &len)) && at < cap;) {
        last_long = len > 1;
        /* llama.cpp's abbreviations read as short options: -ngl, -ctk, -ot. */
        bool one_dash = len == 1 || (len <= 3 && longest > 3);
        at += (size_t)snprintf(buf + at, cap - at, "%s%s%.*s", at ? ", " : "",
                               one_dash ? "-" : "--", (int)len, name);
    }
    if (o->kind == MOE_OPT_FLAG || at >= cap)
        return;
    const char *arg = o->arg_name ? o->arg_name : default_arg_name(o->kind);
    if (o->kind == MOE_OPT_OPTIONAL_INT)
        snprintf(buf + at, cap - at, last_long ? "[=%s]" : "[%s]", arg);
    else
        snprintf(buf + at, cap - at, " %s", arg);
}

static void print_row(FILE *f, const char *left, const char *help, int col) {
    int n = fprintf(f, "  %s", left) - 2;
    if (!help || !*help) {
        fputc('\n', f);
        return;
    }
    if (n > col) {
        fputc('\n', f);
        n = -2; /* start the help on its own line, at the column */
    }
    /* A help text with newlines keeps every line at the column. */
    for (const char *line = help; *line;) {
        size_t len = strcspn(line, "\n");
        fprintf(f, "%*s%.*s\n", col - n + 2, "", (int)len, line);
        line += len + (line[len] == '\n');
        n = -2;
    }
}

void moe_cli_print_help(const moe_cli *cli, FILE *f) {
    char left[128];
    fprintf(f, "usage: %s %s\n", cli->prog ? cli->prog : "",
            cli->synopsis ? cli->synopsis : "[options]");
    if (cli->summary && *cli->summary)
        fprintf(f, "\n%s\n", cli->summary);
    fputs("\noptions:\n", f);

    int col = (int)strlen("-h, --help");
    for (const moe_opt *o = cli->opts; o && o->names; o++) {
        left_column(o, left, sizeof left);
        int w = (int)strlen(left);
        if (w > col && w <= HELP_COL_MAX)
            col = w;
    }
    for (const moe_opt *o = cli->opts; o && o->names; o++) {
        left_column(o, left, sizeof left);
        print_row(f, left, o->help, col);
    }
    print_row(f, "-h, --help", "show this help and exit", col);
}

int moe_cli_finish(const char *prog, moe_status st, const moe_err *err) {
    if (st != MOE_OK)
        fprintf(stderr, "%s: %s\n", prog, err->msg);
    bool flushed = fflush(stdout) == 0;
    if ((!flushed || ferror(stdout)) && st == MOE_OK) {
        /* errno is only about this flush; an earlier failed write left ferror */
        fprintf(stderr, "%s: writing to standard output failed: %s\n", prog,
                flushed ? "an earlier write was lost" : strerror(errno));
        return 1;
    }
    return moe_status_exit_code(st);
}

bool moe_cli_parse_done(const char *prog, moe_status st, bool help_shown, const moe_err *err,
                        int *exit_code) {
    if (st != MOE_OK) {
        fprintf(stderr, "%s: %s\n(see %s --help)\n", prog, err->msg, prog);
        *exit_code = moe_status_exit_code(st);
        return true;
    }
    *exit_code = 0;
    return help_shown;
}
