/* replay_main — runs a fuzz target over files without libFuzzer.
 *
 *   moe_fuzz_replay [--expect ok|fail|any] PATH...
 *
 * Each PATH is a file or a directory (its regular files, sorted by name, no
 * recursion, dot files skipped). Every file is fed to moe_fuzz_run, which
 * aborts on a broken invariant (so sanitizer builds turn memory errors into a
 * failed test). Then the verdict is checked:
 *   ok   — the input must be accepted (MOE_OK);
 *   fail — it must be rejected with MOE_ERR_FORMAT or MOE_ERR_UNSUPPORTED;
 *   any  — only "no crash".
 * Without --expect, a directory named "good" expects ok, one named "bad"
 * expects fail, anything else any. One line per file, "PATH: ok|FAIL verdict"
 * with the error message for rejected ones (the path is printed before the run,
 * so a crash report follows the file that caused it), then "N passed, N failed". Exit 0 if all passed, 1 if
 * any failed, 2 on a usage error.
 */
#include <dirent.h>
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "fuzz/fuzz_target.h"

typedef enum expect { EXPECT_DEFAULT, EXPECT_ANY, EXPECT_OK, EXPECT_FAIL } expect;

typedef struct tally {
    int passed, failed;
} tally;

/* Reads a whole file into an exact-size heap buffer (1 byte for an empty file,
 * size 0), so ASan catches any read past its end. NULL on error (errno set). */
static uint8_t *read_file(const char *path, size_t *size) {
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    uint8_t *data = NULL;
    struct stat sb;
    if (fstat(fileno(f), &sb) == 0 && sb.st_size >= 0) {
        size_t n = (size_t)sb.st_size;
        data = malloc(n ? n : 1);
        if (data && fread(data, 1, n, f) != n) {
            free(data);
            data = NULL;
            errno = EIO;
        }
        *size = n;
    }
    fclose(f);
    return data;
}

static void replay_file(const char *path, expect want, tally *t) {
    size_t size = 0;
    uint8_t *data = read_file(path, &size);
    if (!data) {
        printf("%s: FAIL cannot read: %s\n", path, strerror(errno));
        t->failed++;
        return;
    }
    /* The path goes out first, so a crash inside the target shows which file. */
    printf("%s: ", path);
    fflush(stdout);
    moe_err err;
    moe_status st = moe_fuzz_run(data, size, &err);
    free(data);
    const char *verdict = st == MOE_OK ? "accepted" : moe_status_name(st);
    bool ok = true;
    if (want == EXPECT_OK)
        ok = st == MOE_OK;
    else if (want == EXPECT_FAIL)
        ok = st == MOE_ERR_FORMAT || st == MOE_ERR_UNSUPPORTED;
    if (st == MOE_OK)
        printf("%s %s\n", ok ? "ok" : "FAIL", verdict);
    else
        printf("%s %s: %s\n", ok ? "ok" : "FAIL", verdict, err.msg);
    if (ok)
        t->passed++;
    else
        t->failed++;
}

static int cmp_names(const void *a, const void *b) {
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

static expect expect_for_dir(const char *dir) {
    size_t n = strlen(dir);
    while (n > 1 && dir[n - 1] == '/')
        n--;
    size_t start = n;
    while (start > 0 && dir[start - 1] != '/')
        start--;
    if (n - start == 4 && strncmp(dir + start, "good", 4) == 0)
        return EXPECT_OK;
    if (n - start == 3 && strncmp(dir + start, "bad", 3) == 0)
        return EXPECT_FAIL;
    return EXPECT_ANY;
}

static void replay_dir(const char *dir, expect want, tally *t) {
    DIR *d = opendir(dir);
    if (!d) {
        printf("%s: FAIL cannot open directory: %s\n", dir, strerror(errno));
        t->failed++;
        return;
    }
    if (want == EXPECT_DEFAULT)
        want = expect_for_dir(dir);
    char **names = NULL;
    size_t n = 0, cap = 0;
    for (struct dirent *e; (e = readdir(d)) != NULL;) {
        if (e->d_name[0] == '.')
            continue;
        if (n == cap) {
            cap = cap ? 2 * cap : 64;
            char **grown = realloc(names, cap * sizeof *names);
            if (!grown) {
                fprintf(stderr, "moe_fuzz_replay: out of memory\n");
                exit(1);
            }
            names = grown;
        }
        size_t len = strlen(dir) + strlen(e->d_name) + 2;
        names[n] = malloc(len);
        if (!names[n]) {
            fprintf(stderr, "moe_fuzz_replay: out of memory\n");
            exit(1);
        }
        snprintf(names[n], len, "%s/%s", dir, e->d_name);
        n++;
    }
    closedir(d);
    if (n == 0) {
        printf("%s: FAIL no files to replay\n", dir);
        t->failed++;
    }
    qsort(names, n, sizeof *names, cmp_names);
    for (size_t i = 0; i < n; i++) {
        struct stat sb;
        if (stat(names[i], &sb) == 0 && S_ISREG(sb.st_mode))
            replay_file(names[i], want, t);
        free(names[i]);
    }
    free(names);
}

int main(int argc, char **argv) {
    expect want = EXPECT_DEFAULT;
    tally t = {0, 0};
    int n_paths = 0;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--expect") == 0 && i + 1 < argc) {
            const char *v = argv[++i];
            if (strcmp(v, "ok") == 0)
                want = EXPECT_OK;
            else if (strcmp(v, "fail") == 0)
                want = EXPECT_FAIL;
            else if (strcmp(v, "any") == 0)
                want = EXPECT_ANY;
            else {
                fprintf(stderr, "moe_fuzz_replay: --expect takes ok, fail or any\n");
                return 2;
            }
            continue;
        }
        if (argv[i][0] == '-') {
            fprintf(stderr, "usage: %s [--expect ok|fail|any] PATH...\n", argv[0]);
            return 2;
        }
        struct stat sb;
        n_paths++;
        if (stat(argv[i], &sb) == 0 && S_ISDIR(sb.st_mode))
            replay_dir(argv[i], want, &t);
        else
            replay_file(argv[i], want == EXPECT_DEFAULT ? EXPECT_ANY : want, &t);
    }
    if (n_paths == 0) {
        fprintf(stderr, "usage: %s [--expect ok|fail|any] PATH...\n", argv[0]);
        return 2;
    }
    printf("%d passed, %d failed\n", t.passed, t.failed);
    return t.failed ? 1 : 0;
}
