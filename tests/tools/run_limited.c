/* run_limited — runs a command under resource limits and reports its peak RSS.
 *
 *   run_limited [--fsize BYTES] [--maxrss-out FILE] -- CMD ARGS...
 *
 * --fsize sets RLIMIT_FSIZE (and ignores SIGXFSZ, so writes past the limit fail
 * with EFBIG the way a full disk fails with ENOSPC). The peak resident set size
 * of CMD (ru_maxrss, KiB) is written to FILE or stderr. Exit status: CMD's, or
 * 128 + signal if it was killed. Test helper only. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

int main(int argc, char **argv) {
    long long fsize = -1;
    const char *rss_out = NULL;
    int i = 1;
    for (; i < argc && strcmp(argv[i], "--") != 0; i++) {
        if (!strcmp(argv[i], "--fsize") && i + 1 < argc)
            fsize = atoll(argv[++i]);
        else if (!strcmp(argv[i], "--maxrss-out") && i + 1 < argc)
            rss_out = argv[++i];
        else {
            fprintf(stderr, "run_limited: unknown argument %s\n", argv[i]);
            return 2;
        }
    }
    if (i + 1 >= argc) {
        fprintf(stderr, "usage: run_limited [--fsize BYTES] [--maxrss-out FILE] -- CMD...\n");
        return 2;
    }
    pid_t pid = fork();
    if (pid == 0) {
        if (fsize >= 0) {
            struct rlimit rl = {(rlim_t)fsize, (rlim_t)fsize};
            signal(SIGXFSZ, SIG_IGN);
            setrlimit(RLIMIT_FSIZE, &rl);
        }
        execvp(argv[i + 1], argv + i + 1);
        perror("run_limited: exec");
        _exit(127);
    }
    int status = 0;
    struct rusage ru;
    if (pid < 0 || wait4(pid, &status, 0, &ru) < 0) {
        perror("run_limited");
        return 2;
    }
    FILE *f = rss_out ? fopen(rss_out, "w") : stderr;
    if (f) {
        fprintf(f, "%ld\n", ru.ru_maxrss);
        if (f != stderr)
            fclose(f);
    }
    if (WIFSIGNALED(status))
        return 128 + WTERMSIG(status);
    return WEXITSTATUS(status);
}
