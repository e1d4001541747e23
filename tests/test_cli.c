/* test_cli — the shared option parser: every option kind and spelling, the
 * checked number parsers, each usage error and its message, --help output,
 * positional counts, and re-parsing in one process. */
#include "formats/base/cli.h"

#include <getopt.h>
#include <math.h>
#include <string.h>
#include <unistd.h>

#include "test_util.h"

/* Every destination the test table writes; reset before each parse. */
static struct {
    bool verbose, quiet;
    int64_t threads, ngl, zstd, seed;
    uint64_t max_size;
    double temp, top_p;
    const char *model, *ctk;
    moe_opt_list ot;
} fx;

static const moe_opt test_opts[] = {
    {.names = "m,model", .kind = MOE_OPT_STRING, .dest = &fx.model, .arg_name = "FILE",
     .help = "model file to read"},
    {.names = "t,threads", .kind = MOE_OPT_INT, .dest = &fx.threads, .arg_name = "N",
     .help = "worker threads", .min = 1, .max = 1024},
    {.names = "ngl,n-gpu-layers,gpu-layers", .kind = MOE_OPT_INT, .dest = &fx.ngl,
     .arg_name = "N", .help = "layers to offload"},
    {.names = "s,seed", .kind = MOE_OPT_INT, .dest = &fx.seed, .help = "random seed"},
    {.names = "ctk,cache-type-k", .kind = MOE_OPT_STRING, .dest = &fx.ctk,
     .arg_name = "TYPE", .help = "K cache type"},
    {.names = "ot,override-tensor", .kind = MOE_OPT_LIST, .dest = &fx.ot,
     .arg_name = "REGEX=BUF", .help = "tensor placement override"},
    {.names = "max-size", .kind = MOE_OPT_SIZE, .dest = &fx.max_size, .arg_name = "SIZE",
     .help = "largest shard"},
    {.names = "temp", .kind = MOE_OPT_FLOAT, .dest = &fx.temp, .arg_name = "T",
     .help = "sampling temperature", .fmin = 0, .fmax = 2},
    {.names = "top-p", .kind = MOE_OPT_FLOAT, .dest = &fx.top_p, .help = "nucleus mass"},
    {.names = "z,zstd", .kind = MOE_OPT_OPTIONAL_INT, .dest = &fx.zstd, .arg_name = "N",
     .help = "compress with zstd at level N", .min = 1, .max = 19, .def_int = 3},
    {.names = "v,verbose", .kind = MOE_OPT_FLAG, .dest = &fx.verbose, .help = "say more"},
    {.names = "q,quiet", .kind = MOE_OPT_FLAG, .dest = &fx.quiet, .help = "say less"},
    {.names = NULL},
};

static const moe_cli test_cli = {
    .prog = "moe-test",
    .synopsis = "[options] [FILE...]",
    .summary = "Exercises every option kind.",
    .opts = test_opts,
    .min_positional = 0,
    .max_positional = -1,
};

/* What one parse gave back; positionals are copied out because the argv
 * compound literal of a PARSE dies with its statement's block. */
static struct {
    moe_status st;
    moe_err err;
    int n_pos;
    const char *pos[8];
    bool help;
} r;

static void reset_fx(void) {
    memset(&fx, 0, sizeof fx);
    fx.threads = -7; /* a "default" that must survive when -t is absent */
}

static moe_status parse_args(const moe_cli *cli, char **argv, int argc) {
    int first = -1;
    memset(&r, 0, sizeof r);
    r.n_pos = -1;
    r.help = true; /* must be cleared by the parser */
    r.st = moe_cli_parse(cli, argc, argv, &first, &r.n_pos, &r.help, &r.err);
    for (int i = 0; r.st == MOE_OK && i < r.n_pos && i < 8; i++)
        r.pos[i] = argv[first + i];
    return r.st;
}

#define ARGV(...) ((char *[]){"prog", __VA_ARGS__, NULL})
#define ARGC(...) ((int)(sizeof ARGV(__VA_ARGS__) / sizeof(char *)) - 1)
#define PARSE(cli, ...) parse_args((cli), ARGV(__VA_ARGS__), ARGC(__VA_ARGS__))

/* Expects a usage error whose message is exactly `msg`. */
#define CHECK_USAGE(want)                                                                 \
    do {                                                                                  \
        CHECK(r.st == MOE_ERR_USAGE, "status %d (%s)", (int)r.st, r.err.msg);             \
        CHECK(strcmp(r.err.msg, (want)) == 0, "message '%s', wanted '%s'", r.err.msg, (want)); \
    } while (0)

static void test_every_kind(void) {
    reset_fx();
    PARSE(&test_cli, "-m", "x.gguf", "-t", "8", "-ngl", "99", "-ctk", "f16", "-ot", "exps=CPU",
          "--max-size", "4G", "--temp", "0.5", "--top-p=0.9", "--zstd=5", "-v", "in.gguf");
    CHECK(r.st == MOE_OK, "parse: %s", r.err.msg);
    CHECK(fx.model && !strcmp(fx.model, "x.gguf"), "model %s", fx.model);
    CHECK(fx.threads == 8, "threads %lld", (long long)fx.threads);
    CHECK(fx.ngl == 99, "ngl %lld", (long long)fx.ngl);
    CHECK(fx.ctk && !strcmp(fx.ctk, "f16"), "ctk %s", fx.ctk);
    CHECK(fx.ot.count == 1 && !strcmp(fx.ot.items[0], "exps=CPU"), "ot count %d", fx.ot.count);
    CHECK(fx.max_size == 4ull << 30, "max_size %llu", (unsigned long long)fx.max_size);
    CHECK(fx.temp == 0.5, "temp %g", fx.temp);
    CHECK(fx.top_p == 0.9, "top_p %g", fx.top_p);
    CHECK(fx.zstd == 5, "zstd %lld", (long long)fx.zstd);
    CHECK(fx.verbose && !fx.quiet, "flags %d %d", fx.verbose, fx.quiet);
    CHECK(!r.help, "help not shown");
    CHECK(r.n_pos == 1 && !strcmp(r.pos[0], "in.gguf"), "positionals %d", r.n_pos);

    /* Options not given leave their destinations alone. */
    reset_fx();
    PARSE(&test_cli, "-v");
    CHECK(r.st == MOE_OK && fx.threads == -7 && fx.model == NULL && fx.ot.count == 0,
          "untouched: %s threads %lld", r.err.msg, (long long)fx.threads);
    CHECK(r.n_pos == 0, "no positionals, got %d", r.n_pos);

    /* Negative values are values, not options. */
    reset_fx();
    PARSE(&test_cli, "-s", "-5", "--top-p", "-1e5");
    CHECK(r.st == MOE_OK && fx.seed == -5 && fx.top_p == -1e5, "negatives: %s", r.err.msg);
}

static void test_spellings(void) {
    /* Every alias, with one and two dashes, separate and attached values. */
    static const char *const ngl_forms[][2] = {
        {"-ngl", "5"}, {"--ngl", "5"}, {"--n-gpu-layers", "5"}, {"-n-gpu-layers", "5"},
        {"--gpu-layers", "5"}, {"-ngl=5", NULL}, {"--gpu-layers=5", NULL},
    };
    for (size_t i = 0; i < sizeof ngl_forms / sizeof ngl_forms[0]; i++) {
        reset_fx();
        char *a0 = (char *)ngl_forms[i][0], *a1 = (char *)ngl_forms[i][1];
        if (a1)
            PARSE(&test_cli, a0, a1);
        else
            PARSE(&test_cli, a0);
        CHECK(r.st == MOE_OK && fx.ngl == 5, "%s %s: %s", a0, a1 ? a1 : "", r.err.msg);
    }

    static const char *const thread_forms[] = {"-t8", "--threads=8", "-threads=8"};
    for (size_t i = 0; i < 3; i++) {
        reset_fx();
        PARSE(&test_cli, (char *)thread_forms[i]);
        CHECK(r.st == MOE_OK && fx.threads == 8, "%s: %s", thread_forms[i], r.err.msg);
    }
    reset_fx();
    PARSE(&test_cli, "-threads", "8");
    CHECK(r.st == MOE_OK && fx.threads == 8, "-threads 8: %s", r.err.msg);

    reset_fx();
    PARSE(&test_cli, "-ma.gguf");
    CHECK(r.st == MOE_OK && fx.model && !strcmp(fx.model, "a.gguf"), "-mFILE: %s", r.err.msg);
    reset_fx();
    PARSE(&test_cli, "--model=b.gguf", "--cache-type-k", "q8_0");
    CHECK(r.st == MOE_OK && !strcmp(fx.model, "b.gguf") && !strcmp(fx.ctk, "q8_0"),
          "--model=F: %s", r.err.msg);
    reset_fx();
    PARSE(&test_cli, "--model=");
    CHECK(r.st == MOE_OK && fx.model && fx.model[0] == '\0', "empty value: %s", r.err.msg);

    /* Clustered short flags. */
    reset_fx();
    PARSE(&test_cli, "-vq");
    CHECK(r.st == MOE_OK && fx.verbose && fx.quiet, "-vq: %s", r.err.msg);

    /* Optional values attach or are absent; a separate word is a positional. */
    reset_fx();
    PARSE(&test_cli, "--zstd");
    CHECK(r.st == MOE_OK && fx.zstd == 3, "--zstd: %s %lld", r.err.msg, (long long)fx.zstd);
    reset_fx();
    PARSE(&test_cli, "-z7");
    CHECK(r.st == MOE_OK && fx.zstd == 7, "-z7: %s", r.err.msg);
    reset_fx();
    PARSE(&test_cli, "--zstd", "5");
    CHECK(r.st == MOE_OK && fx.zstd == 3 && r.n_pos == 1 && !strcmp(r.pos[0], "5"),
          "--zstd 5: %s zstd %lld", r.err.msg, (long long)fx.zstd);
    reset_fx();
    PARSE(&test_cli, "--zstd=20");
    CHECK_USAGE("option --zstd: '20' is out of range [1, 19]");

    /* "--" ends the options. */
    reset_fx();
    PARSE(&test_cli, "--", "-v");
    CHECK(r.st == MOE_OK && !fx.verbose && r.n_pos == 1 && !strcmp(r.pos[0], "-v"),
          "after --: %s", r.err.msg);
}

static void test_duplicates_and_lists(void) {
    reset_fx();
    PARSE(&test_cli, "-m", "a", "-m", "b");
    CHECK_USAGE("option -m given twice");
    reset_fx();
    PARSE(&test_cli, "-m", "a", "--model", "b");
    CHECK_USAGE("option --model given twice");
    reset_fx();
    PARSE(&test_cli, "-v", "--verbose");
    CHECK_USAGE("option --verbose given twice");
    reset_fx();
    PARSE(&test_cli, "-ngl", "1", "--gpu-layers=2");
    CHECK_USAGE("option --gpu-layers given twice");

    reset_fx();
    PARSE(&test_cli, "-ot", "a", "--override-tensor", "b", "x.gguf", "-ot=c");
    CHECK(r.st == MOE_OK && fx.ot.count == 3, "list: %s count %d", r.err.msg, fx.ot.count);
    CHECK(fx.ot.count == 3 && !strcmp(fx.ot.items[0], "a") && !strcmp(fx.ot.items[1], "b") &&
              !strcmp(fx.ot.items[2], "c"),
          "list order");
    CHECK(r.n_pos == 1 && !strcmp(r.pos[0], "x.gguf"), "positional among lists");

    /* One more than the list holds. */
    char *argv[2 * MOE_OPT_LIST_MAX + 4];
    int argc = 0;
    argv[argc++] = "prog";
    for (int i = 0; i <= MOE_OPT_LIST_MAX; i++) {
        argv[argc++] = "-ot";
        argv[argc++] = "x";
    }
    argv[argc] = NULL;
    reset_fx();
    parse_args(&test_cli, argv, argc);
    char want[64];
    snprintf(want, sizeof want, "option -ot given more than %d times", MOE_OPT_LIST_MAX);
    CHECK_USAGE(want);
    CHECK(fx.ot.count == MOE_OPT_LIST_MAX, "list kept %d", fx.ot.count);
}

static void test_unknown_and_missing(void) {
    reset_fx();
    PARSE(&test_cli, "--foo");
    CHECK_USAGE("unknown option '--foo'");
    reset_fx();
    PARSE(&test_cli, "--foo=bar");
    CHECK_USAGE("unknown option '--foo'");
    reset_fx();
    PARSE(&test_cli, "-x");
    CHECK_USAGE("unknown option '-x'");
    reset_fx();
    PARSE(&test_cli, "-vx");
    CHECK_USAGE("unknown option '-x'");
    /* getopt would take unique prefixes; we do not. */
    reset_fx();
    PARSE(&test_cli, "--thr", "4");
    CHECK_USAGE("unknown option '--thr'");
    reset_fx();
    PARSE(&test_cli, "--verb");
    CHECK_USAGE("unknown option '--verb'");
    reset_fx();
    PARSE(&test_cli, "--mod");
    CHECK_USAGE("unknown option '--mod'");
    /* -m with a value that happens to abbreviate --model is refused, with a hint. */
    reset_fx();
    PARSE(&test_cli, "-mod");
    CHECK_USAGE("unknown option '-mod' (for -m with a value, write -m od)");
    reset_fx();
    PARSE(&test_cli, "-mo", "x");
    CHECK_USAGE("unknown option '-mo' (for -m with a value, write -m o)");
    /* Short names are not long names. */
    reset_fx();
    PARSE(&test_cli, "--m", "x");
    CHECK_USAGE("unknown option '--m'");

    reset_fx();
    PARSE(&test_cli, "--model");
    CHECK_USAGE("option --model needs a value");
    reset_fx();
    PARSE(&test_cli, "-m");
    CHECK_USAGE("option -m needs a value");
    reset_fx();
    PARSE(&test_cli, "-v", "-ngl");
    CHECK_USAGE("option -ngl needs a value");
    reset_fx();
    PARSE(&test_cli, "--verbose=1");
    CHECK_USAGE("option --verbose takes no value");
    reset_fx();
    PARSE(&test_cli, "--help=1");
    CHECK_USAGE("option --help takes no value");
}

static void test_numbers_via_options(void) {
    reset_fx();
    PARSE(&test_cli, "--threads", "0");
    CHECK_USAGE("option --threads: '0' is out of range [1, 1024]");
    reset_fx();
    PARSE(&test_cli, "-t", "1025");
    CHECK_USAGE("option -t: '1025' is out of range [1, 1024]");
    reset_fx();
    PARSE(&test_cli, "-t", "1024");
    CHECK(r.st == MOE_OK && fx.threads == 1024, "-t 1024: %s", r.err.msg);
    reset_fx();
    PARSE(&test_cli, "-t", "8x");
    CHECK_USAGE("option -t: '8x' is not an integer");
    /* An unranged int takes the whole int64 range. */
    reset_fx();
    PARSE(&test_cli, "-ngl", "-9223372036854775808");
    CHECK(r.st == MOE_OK && fx.ngl == INT64_MIN, "int64 min: %s", r.err.msg);

    reset_fx();
    PARSE(&test_cli, "--max-size=4Q");
    CHECK(r.st == MOE_ERR_USAGE && !strncmp(r.err.msg, "option --max-size: '4Q' is not a size", 37),
          "4Q: %s", r.err.msg);
    reset_fx();
    PARSE(&test_cli, "--max-size", "99999999999T");
    CHECK_USAGE("option --max-size: '99999999999T' is too large");
    reset_fx();
    PARSE(&test_cli, "--max-size", "-1");
    CHECK_USAGE("option --max-size: '-1' is negative");

    reset_fx();
    PARSE(&test_cli, "--temp", "3");
    CHECK_USAGE("option --temp: '3' is out of range [0, 2]");
    reset_fx();
    PARSE(&test_cli, "--temp", "nan");
    CHECK_USAGE("option --temp: 'nan' is not a finite number");
    reset_fx();
    PARSE(&test_cli, "--top-p", "inf");
    CHECK_USAGE("option --top-p: 'inf' is not a finite number");
    reset_fx();
    PARSE(&test_cli, "--temp", "2");
    CHECK(r.st == MOE_OK && fx.temp == 2.0, "temp at max: %s", r.err.msg);
}

static void test_parse_i64(void) {
    moe_err err;
    int64_t v = 0;
    static const struct { const char *s; int64_t v; } good[] = {
        {"0", 0}, {"42", 42}, {"+5", 5}, {"-17", -17},
        {"9223372036854775807", INT64_MAX}, {"-9223372036854775808", INT64_MIN},
    };
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
        moe_status st = moe_parse_i64(good[i].s, &v, "x", &err);
        CHECK(st == MOE_OK && v == good[i].v, "'%s' -> %lld (%s)", good[i].s, (long long)v,
              err.msg);
    }
    static const char *const bad[] = {"", "+", "-", " 5", "5 ", "12x", "0x10", "1.5", "1e3",
                                      "9223372036854775808", "-9223372036854775809"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        v = 123;
        moe_status st = moe_parse_i64(bad[i], &v, "what", &err);
        CHECK(st == MOE_ERR_USAGE && v == 123 && !strncmp(err.msg, "what: ", 6),
              "'%s' should fail: %s", bad[i], err.msg);
    }
    moe_parse_i64("9223372036854775808", &v, "n", &err);
    CHECK(strstr(err.msg, "out of range") != NULL, "overflow message: %s", err.msg);
}

static void test_parse_size(void) {
    moe_err err;
    uint64_t v = 0;
    static const struct { const char *s; uint64_t v; } good[] = {
        {"0", 0}, {"123", 123}, {"123B", 123}, {"100K", 100ull << 10}, {"100k", 100ull << 10},
        {"512M", 512ull << 20}, {"4G", 4ull << 30}, {"4g", 4ull << 30}, {"4GB", 4ull << 30},
        {"4GiB", 4ull << 30}, {"4gib", 4ull << 30}, {"4Gb", 4ull << 30}, {"1T", 1ull << 40},
        {"16777215T", 16777215ull << 40}, {"18446744073709551615", UINT64_MAX},
    };
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
        moe_status st = moe_parse_size(good[i].s, &v, "x", &err);
        CHECK(st == MOE_OK && v == good[i].v, "'%s' -> %llu (%s)", good[i].s,
              (unsigned long long)v, err.msg);
    }
    static const char *const bad[] = {
        "", "4Q", "G", "4iB", "4GBx", "4GG", " 4", "4 ", "+4", "1.5G", "0x10",
        "99999999999T", "16777216T", "18446744073709551616", "-1", "-4G",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        v = 7;
        moe_status st = moe_parse_size(bad[i], &v, "size", &err);
        CHECK(st == MOE_ERR_USAGE && v == 7 && !strncmp(err.msg, "size: ", 6),
              "'%s' should fail: %s", bad[i], err.msg);
    }
    moe_parse_size("16777216T", &v, "s", &err);
    CHECK(strstr(err.msg, "too large") != NULL, "overflow message: %s", err.msg);
    moe_parse_size("-4G", &v, "s", &err);
    CHECK(strstr(err.msg, "negative") != NULL, "negative message: %s", err.msg);
}

static void test_parse_f64(void) {
    moe_err err;
    double v = 0;
    static const struct { const char *s; double v; } good[] = {
        {"0", 0}, {"0.5", 0.5}, {"-2.25", -2.25}, {"1e3", 1000}, {"+7", 7},
    };
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
        moe_status st = moe_parse_f64(good[i].s, &v, "x", &err);
        CHECK(st == MOE_OK && v == good[i].v, "'%s' -> %g (%s)", good[i].s, v, err.msg);
    }
    static const char *const bad[] = {"", "nan", "NaN", "inf", "-inf", "infinity", "1e999",
                                      "-1e999", "abc", "1.5x", " 1", "1 "};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        v = 9;
        moe_status st = moe_parse_f64(bad[i], &v, "f", &err);
        CHECK(st == MOE_ERR_USAGE && v == 9 && !strncmp(err.msg, "f: ", 3),
              "'%s' should fail: %s", bad[i], err.msg);
    }
}

/* Reads a whole stream from the start into buf (NUL-terminated). */
static size_t slurp(FILE *f, char *buf, size_t cap) {
    fflush(f);
    rewind(f);
    size_t n = fread(buf, 1, cap - 1, f);
    buf[n] = '\0';
    return n;
}

/* Column at which `text` starts on its line in buf, or -1. */
static int column_of(const char *buf, const char *text) {
    const char *at = strstr(buf, text);
    if (!at)
        return -1;
    const char *line = at;
    while (line > buf && line[-1] != '\n')
        line--;
    return (int)(at - line);
}

static void test_help_text(void) {
    static char buf[8192];
    FILE *f = tmpfile();
    CHECK(f != NULL, "tmpfile");
    if (!f)
        return;
    moe_cli_print_help(&test_cli, f);
    slurp(f, buf, sizeof buf);
    fclose(f);

    CHECK(!strncmp(buf, "usage: moe-test [options] [FILE...]\n", 36), "usage line:\n%s", buf);
    CHECK(strstr(buf, "Exercises every option kind.") != NULL, "summary");
    static const char *const lefts[] = {
        "  -m, --model FILE", "  -t, --threads N", "  -ngl, --n-gpu-layers, --gpu-layers N",
        "  -s, --seed N", "  -ctk, --cache-type-k TYPE", "  -ot, --override-tensor REGEX=BUF",
        "  --max-size SIZE", "  --temp T", "  --top-p X", "  -z, --zstd[=N]",
        "  -v, --verbose ", "  -q, --quiet ", "  -h, --help ",
    };
    for (size_t i = 0; i < sizeof lefts / sizeof lefts[0]; i++)
        CHECK(strstr(buf, lefts[i]) != NULL, "help lacks '%s'", lefts[i]);
    for (const moe_opt *o = test_opts; o->names; o++)
        CHECK(strstr(buf, o->help) != NULL, "help lacks '%s'", o->help);

    /* Help texts line up in one column. */
    int col = column_of(buf, "model file to read");
    CHECK(col > 0, "model help column %d", col);
    CHECK(column_of(buf, "say more") == col, "verbose column %d vs %d",
          column_of(buf, "say more"), col);
    CHECK(column_of(buf, "compress with zstd") == col, "zstd column");
    CHECK(column_of(buf, "show this help") == col, "help column");
}

static void test_help_option(void) {
    moe_cli one_file = test_cli;
    one_file.min_positional = one_file.max_positional = 1;

    /* Capture stdout: parse prints the help there. */
    FILE *cap = tmpfile();
    CHECK(cap != NULL, "tmpfile");
    if (!cap)
        return;
    fflush(stdout);
    int saved = dup(STDOUT_FILENO);
    dup2(fileno(cap), STDOUT_FILENO);
    reset_fx();
    PARSE(&one_file, "-v", "--help", "--bogus");
    bool long_ok = r.st == MOE_OK && r.help && r.n_pos == 0;
    PARSE(&one_file, "-h");
    bool short_ok = r.st == MOE_OK && r.help;
    PARSE(&one_file, "-help");
    bool single_dash_ok = r.st == MOE_OK && r.help;
    fflush(stdout);
    dup2(saved, STDOUT_FILENO);
    close(saved);

    CHECK(long_ok, "--help: positional count skipped, later options ignored");
    CHECK(short_ok, "-h");
    CHECK(single_dash_ok, "-help");
    static char buf[16384];
    slurp(cap, buf, sizeof buf);
    fclose(cap);
    CHECK(!strncmp(buf, "usage: moe-test ", 16), "help went to stdout: '%.40s'", buf);
    CHECK(strstr(buf, "--n-gpu-layers") != NULL, "full table printed");

    /* An error before --help is still an error. */
    PARSE(&one_file, "--bogus", "--help");
    CHECK_USAGE("unknown option '--bogus'");
    CHECK(!r.help, "no help after an error");
}

static void test_positionals(void) {
    moe_cli one = test_cli;
    one.min_positional = one.max_positional = 1;
    one.positional_name = "input file";
    reset_fx();
    parse_args(&one, (char *[]){"prog", NULL}, 1);
    CHECK_USAGE("expected 1 input file, got 0");
    reset_fx();
    PARSE(&one, "a", "b");
    CHECK_USAGE("expected 1 input file, got 2");

    /* Positionals before options are moved to the end. */
    reset_fx();
    PARSE(&one, "in.gguf", "-v", "-t", "2");
    CHECK(r.st == MOE_OK && r.n_pos == 1 && !strcmp(r.pos[0], "in.gguf") && fx.verbose &&
              fx.threads == 2,
          "permuted: %s", r.err.msg);

    moe_cli none = test_cli;
    none.max_positional = 0;
    reset_fx();
    PARSE(&none, "-v", "stray");
    CHECK_USAGE("unexpected argument 'stray'");

    moe_cli some = test_cli;
    some.min_positional = 1;
    some.positional_name = "input file";
    reset_fx();
    PARSE(&some, "-v");
    CHECK_USAGE("expected at least 1 input file, got 0");
    some.max_positional = 2;
    reset_fx();
    PARSE(&some, "a", "b", "c");
    CHECK_USAGE("expected 1 to 2 input files, got 3");
    reset_fx();
    PARSE(&some, "a", "b");
    CHECK(r.st == MOE_OK && r.n_pos == 2 && !strcmp(r.pos[1], "b"), "two: %s", r.err.msg);
}

static void test_reparse(void) {
    /* Leave getopt mid-cluster ("-vx" fails at x), then parse afresh. */
    reset_fx();
    PARSE(&test_cli, "-vx", "a");
    CHECK(r.st == MOE_ERR_USAGE, "first parse fails");
    reset_fx();
    PARSE(&test_cli, "-q", "b", "-t", "3");
    CHECK(r.st == MOE_OK && fx.quiet && !fx.verbose && fx.threads == 3 && r.n_pos == 1 &&
              !strcmp(r.pos[0], "b"),
          "second parse: %s", r.err.msg);
    reset_fx();
    PARSE(&test_cli, "-q", "c");
    CHECK(r.st == MOE_OK && fx.quiet && r.n_pos == 1 && !strcmp(r.pos[0], "c"),
          "third parse: %s", r.err.msg);

    /* Our messages replace getopt's; its own setting is put back. */
    opterr = 1;
    PARSE(&test_cli, "--foo");
    CHECK(opterr == 1, "opterr restored");
}

static void test_bad_tables(void) {
    bool b;
    moe_opt help_name[] = {{.names = "h,hosts", .kind = MOE_OPT_FLAG, .dest = &b}, {.names = NULL}};
    moe_opt repeated[] = {{.names = "a,all", .kind = MOE_OPT_FLAG, .dest = &b},
                          {.names = "all", .kind = MOE_OPT_FLAG, .dest = &b},
                          {.names = NULL}};
    moe_opt repeated_short[] = {{.names = "a", .kind = MOE_OPT_FLAG, .dest = &b},
                                {.names = "a,b", .kind = MOE_OPT_FLAG, .dest = &b},
                                {.names = NULL}};
    moe_opt no_dest[] = {{.names = "x", .kind = MOE_OPT_FLAG}, {.names = NULL}};
    moe_opt bad_chars[] = {{.names = "a b", .kind = MOE_OPT_FLAG, .dest = &b}, {.names = NULL}};
    moe_opt empty_alias[] = {{.names = "a,,b", .kind = MOE_OPT_FLAG, .dest = &b},
                             {.names = NULL}};
    moe_opt trailing_comma[] = {{.names = "a,", .kind = MOE_OPT_FLAG, .dest = &b},
                                {.names = NULL}};
    moe_opt inverted[] = {{.names = "n", .kind = MOE_OPT_INT, .dest = &b, .min = 5, .max = 1},
                          {.names = NULL}};
    const moe_opt *tables[] = {help_name, repeated, repeated_short, no_dest, bad_chars,
                               empty_alias, trailing_comma, inverted};
    for (size_t i = 0; i < sizeof tables / sizeof tables[0]; i++) {
        moe_cli cli = {.prog = "p", .opts = tables[i], .max_positional = -1};
        PARSE(&cli, "x");
        CHECK(r.st == MOE_ERR_INTERNAL, "table %zu accepted: %d %s", i, (int)r.st, r.err.msg);
    }
}

int main(void) {
    test_every_kind();
    test_spellings();
    test_duplicates_and_lists();
    test_unknown_and_missing();
    test_numbers_via_options();
    test_parse_i64();
    test_parse_size();
    test_parse_f64();
    test_help_text();
    test_help_option();
    test_positionals();
    test_reparse();
    test_bad_tables();
    TEST_DONE();
}
