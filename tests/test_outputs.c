/* moe_output (formats/base/tempfile.h), issue 16 hardening 1 and 5: what a writer
 * killed by SIGKILL leaves behind, with O_TMPFILE (nothing) and with named
 * temp files (MOE_NO_O_TMPFILE=1: a .moe.tmp.PID.* file that the next output
 * opened in that directory removes once it is stale, and only then); outputs
 * that are not regular files written in place; links written through.
 *
 *   test_outputs [DIR]   (default: $MOE_TMP or /tmp, a fresh subdirectory)
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdbool.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "formats/base/tempfile.h"
#include "test_util.h"

static char dir[512];

static void path_in(char *buf, size_t n, const char *name) { snprintf(buf, n, "%s/%s", dir, name); }

/* Names in dir (dot files too) joined by spaces, for messages and checks. */
static int list_dir(char *out, size_t n) {
    DIR *d = opendir(dir);
    int count = 0;
    out[0] = '\0';
    for (struct dirent *e; d && (e = readdir(d));) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
            continue;
        count++;
        size_t used = strlen(out);
        snprintf(out + used, n - used, "%s ", e->d_name);
    }
    if (d)
        closedir(d);
    return count;
}

static void empty_dir(void) {
    DIR *d = opendir(dir);
    for (struct dirent *e; d && (e = readdir(d));) {
        char p[1024];
        path_in(p, sizeof p, e->d_name);
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, ".."))
            unlink(p);
    }
    if (d)
        closedir(d);
}

/* A child that opens DIR/out.bin, writes to it and kills itself with SIGKILL
 * before committing. Returns the child's pid once it is dead. */
static pid_t killed_writer(bool named) {
    pid_t pid = fork();
    if (pid == 0) {
        if (named)
            setenv("MOE_NO_O_TMPFILE", "1", 1);
        char p[1024];
        path_in(p, sizeof p, "out.bin");
        moe_output o;
        moe_err err;
        if (moe_output_open(&o, p, MOE_OUTPUT_OVERWRITE, &err) != MOE_OK ||
            moe_output_write(&o, "half", 4, &err) != MOE_OK)
            _exit(3);
        raise(SIGKILL);
        _exit(4);
    }
    int status = 0;
    waitpid(pid, &status, 0);
    CHECK(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL, "writer %d killed (status %d)",
          (int)pid, status);
    return pid;
}

static void set_age(const char *name, int seconds) {
    char p[1024];
    path_in(p, sizeof p, name);
    struct timespec t[2];
    clock_gettime(CLOCK_REALTIME, &t[0]);
    t[0].tv_sec -= seconds;
    t[1] = t[0];
    CHECK(utimensat(AT_FDCWD, p, t, 0) == 0, "backdate %s: %s", name, strerror(errno));
}

static void touch(const char *name) {
    char p[1024];
    path_in(p, sizeof p, name);
    int fd = open(p, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    CHECK(fd >= 0, "create %s", name);
    if (fd >= 0)
        close(fd);
}

/* Opens and commits DIR/name with the given bytes; true on success. */
static bool write_output(const char *name, const char *bytes, unsigned flags) {
    char p[1024];
    path_in(p, sizeof p, name);
    moe_output o;
    moe_err err;
    if (moe_output_open(&o, p, flags, &err) != MOE_OK)
        return false;
    if (moe_output_write(&o, bytes, strlen(bytes), &err) != MOE_OK) {
        moe_output_abort(&o);
        return false;
    }
    return moe_output_commit(&o, &err) == MOE_OK;
}

static bool file_is(const char *name, const char *bytes) {
    char p[1024], got[256] = {0};
    path_in(p, sizeof p, name);
    FILE *f = fopen(p, "rb");
    size_t n = f ? fread(got, 1, sizeof got - 1, f) : 0;
    if (f)
        fclose(f);
    return f && n == strlen(bytes) && memcmp(got, bytes, n) == 0;
}

static void test_sigkill_anonymous(void) {
    empty_dir();
    killed_writer(false);
    char names[2048];
    int n = list_dir(names, sizeof names);
    CHECK(n == 0, "O_TMPFILE: nothing left after SIGKILL (found: %s)", names);
}

static void test_sigkill_named(void) {
    empty_dir();
    pid_t dead = killed_writer(true);
    char names[2048], mine[64];
    list_dir(names, sizeof names);
    snprintf(mine, sizeof mine, ".moe.tmp.%d.", (int)dead);
    CHECK(strstr(names, mine) != NULL, "named temp file %s* left by the killed writer (found: %s)",
          mine, names);
    /* decoys: a live process's temp file, a file of someone else's naming */
    char live[64];
    snprintf(live, sizeof live, ".moe.tmp.%d.ABCDEF", (int)getppid());
    touch(live);
    touch("user.tmp.123456");
    set_age(live, 3600);
    set_age("user.tmp.123456", 3600);
    /* fresh: kept (a writer on another machine sharing the directory) */
    setenv("MOE_NO_O_TMPFILE", "1", 1);
    CHECK(write_output("other.bin", "x", MOE_OUTPUT_OVERWRITE), "another output in the dir");
    list_dir(names, sizeof names);
    CHECK(strstr(names, mine) != NULL, "a fresh temp file of a dead pid is kept: %s", names);
    /* a minute old: removed by the next output opened there */
    DIR *d = opendir(dir);
    for (struct dirent *e; d && (e = readdir(d));)
        if (!strncmp(e->d_name, mine, strlen(mine)))
            set_age(e->d_name, 120);
    if (d)
        closedir(d);
    CHECK(write_output("other.bin", "y", MOE_OUTPUT_OVERWRITE), "another output in the dir");
    list_dir(names, sizeof names);
    CHECK(strstr(names, mine) == NULL, "the stale temp file is removed: %s", names);
    CHECK(strstr(names, live) != NULL, "a live process's temp file stays: %s", names);
    CHECK(strstr(names, "user.tmp.123456") != NULL, "other names stay: %s", names);
    unsetenv("MOE_NO_O_TMPFILE");
}

/* Both temp kinds: create, refuse without overwrite, replace with it. */
static void test_publish(bool named) {
    empty_dir();
    if (named)
        setenv("MOE_NO_O_TMPFILE", "1", 1);
    const char *what = named ? "named" : "O_TMPFILE";
    CHECK(write_output("a.bin", "one", 0), "%s: create", what);
    CHECK(file_is("a.bin", "one"), "%s: content", what);
    CHECK(!write_output("a.bin", "two", 0), "%s: existing file refused without overwrite", what);
    CHECK(write_output("a.bin", "three", MOE_OUTPUT_OVERWRITE), "%s: replace", what);
    CHECK(file_is("a.bin", "three"), "%s: replaced content", what);
    char link[1024], names[2048];
    path_in(link, sizeof link, "l.bin");
    CHECK(symlink("a.bin", link) == 0, "symlink");
    CHECK(write_output("l.bin", "four", MOE_OUTPUT_OVERWRITE), "%s: through a link", what);
    struct stat sb;
    CHECK(lstat(link, &sb) == 0 && S_ISLNK(sb.st_mode), "%s: the link stays a link", what);
    CHECK(file_is("a.bin", "four"), "%s: its target is written", what);
    list_dir(names, sizeof names);
    CHECK(!strstr(names, ".moe.tmp."), "%s: no temp file left: %s", what, names);
    unsetenv("MOE_NO_O_TMPFILE");
}

static void test_in_place(void) {
    moe_output o;
    moe_err err;
    CHECK(moe_output_open(&o, "/dev/null", 0, &err) == MOE_ERR_USAGE,
          "/dev/null without overwrite: usage error");
    CHECK(moe_output_open(&o, "/dev/null", MOE_OUTPUT_OVERWRITE, &err) == MOE_OK &&
              o.kind == MOE_OUTPUT_DIRECT && moe_output_reopen_path(&o) == NULL,
          "/dev/null is written in place");
    CHECK(moe_output_write(&o, "x", 1, &err) == MOE_OK && moe_output_commit(&o, &err) == MOE_OK,
          "write and commit /dev/null");
    struct stat sb;
    CHECK(stat("/dev/null", &sb) == 0 && S_ISCHR(sb.st_mode), "/dev/null is still a device");
    if (access("/dev/full", W_OK) == 0) {
        CHECK(moe_output_open(&o, "/dev/full", MOE_OUTPUT_OVERWRITE, &err) == MOE_OK,
              "open /dev/full");
        moe_status st = moe_output_write(&o, "x", 1, &err);
        CHECK(st == MOE_ERR_IO && strstr(err.msg, "/dev/full"), "/dev/full: write error: %s",
              err.msg);
        moe_output_abort(&o);
        CHECK(stat("/dev/full", &sb) == 0 && S_ISCHR(sb.st_mode), "/dev/full is still a device");
    }
    CHECK(moe_output_open(&o, dir, MOE_OUTPUT_OVERWRITE, &err) == MOE_ERR_USAGE &&
              strstr(err.msg, "is a directory"),
          "a directory is refused: %s", err.msg);
    CHECK(moe_output_open(&o, "/dev/fd/999", MOE_OUTPUT_OVERWRITE, &err) == MOE_ERR_IO,
          "a descriptor that is not open: %s", err.msg);
}

int main(int argc, char **argv) {
    const char *base = argc > 1 ? argv[1] : getenv("MOE_TMP") ? getenv("MOE_TMP") : "/tmp";
    snprintf(dir, sizeof dir, "%s/test-outputs-%d", base, (int)getpid());
    mkdir(base, 0755);
    CHECK(mkdir(dir, 0755) == 0, "mkdir %s: %s", dir, strerror(errno));
    test_publish(false);
    test_publish(true);
    test_in_place();
    int probe = open(dir, O_TMPFILE | O_WRONLY, 0600);
    if (probe >= 0) {
        close(probe);
        test_sigkill_anonymous();
    } else {
        printf("%s: no O_TMPFILE here (%s): only the named fallback is tested\n", dir,
               strerror(errno));
    }
    test_sigkill_named();
    empty_dir();
    rmdir(dir);
    TEST_DONE();
}
