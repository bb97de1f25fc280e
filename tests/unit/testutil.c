/* testutil: helpers shared by the cmocka tests. */
#include "testutil.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

char *tu_read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL) return NULL;
    char *buf = NULL;
    size_t cap = 0, n = 0;
    for (;;) {
        if (n + 4096 + 1 > cap) {
            cap = cap ? cap * 2 : 8192;
            char *nb = realloc(buf, cap);
            if (nb == NULL) {
                free(buf);
                fclose(f);
                return NULL;
            }
            buf = nb;
        }
        size_t r = fread(buf + n, 1, cap - n - 1, f);
        n += r;
        if (r == 0) break;
    }
    fclose(f);
    buf[n] = '\0';
    if (len) *len = n;
    return buf;
}

int tu_write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "wb");
    if (f == NULL) return -1;
    size_t n = strlen(text);
    int rc = fwrite(text, 1, n, f) == n ? 0 : -1;
    if (fclose(f) != 0) rc = -1;
    return rc;
}

char *tu_tempdir(void)
{
    const char *base = getenv("TMPDIR");
    char *path = NULL;
    if (asprintf(&path, "%s/sluice-test-XXXXXX", base ? base : "/tmp") < 0) return NULL;
    if (mkdtemp(path) == NULL) {
        free(path);
        return NULL;
    }
    return path;
}

void tu_rmtree(const char *path)
{
    if (path == NULL || path[0] == '\0' || strcmp(path, "/") == 0) return;
    char *const argv[] = {"rm", "-rf", (char *)path, NULL};
    tu_run(argv, NULL, NULL);
}

static char *join_env(const char *var, const char *fallback, const char *rel)
{
    const char *base = getenv(var);
    char *p = NULL;
    if (asprintf(&p, "%s/%s", base ? base : fallback, rel) < 0) return NULL;
    return p;
}

char *tu_src_path(const char *rel) { return join_env("SLUICE_SRC", ".", rel); }
char *tu_sample_path(const char *name)
{
    char *rel = NULL;
    if (asprintf(&rel, "tests/data/samples/%s", name) < 0) return NULL;
    char *p = tu_src_path(rel);
    free(rel);
    return p;
}

int tu_timeout_ms(int ms)
{
    const char *m = getenv("SLUICE_TEST_TIMEOUT_MULTIPLIER");
    long k = m ? strtol(m, NULL, 10) : 1;
    if (k < 1) k = 1;
    if (k > 100) k = 100;
    return (int)(ms * k);
}

static char *slurp_fd(int fd)
{
    size_t cap = 4096, n = 0;
    char *buf = malloc(cap);
    for (;;) {
        if (n + 1 >= cap) buf = realloc(buf, cap *= 2);
        ssize_t r = read(fd, buf + n, cap - n - 1);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) break;
        n += (size_t)r;
    }
    buf[n] = '\0';
    return buf;
}

int tu_run(char *const argv[], char **out, char **err)
{
    char outpath[] = "/tmp/sluice-tu-out-XXXXXX", errpath[] = "/tmp/sluice-tu-err-XXXXXX";
    int ofd = mkstemp(outpath), efd = mkstemp(errpath);
    if (ofd < 0 || efd < 0) return -1;
    unlink(outpath);
    unlink(errpath);
    pid_t pid = fork();
    if (pid < 0) return -1;
    if (pid == 0) {
        int devnull = open("/dev/null", O_RDONLY);
        dup2(devnull, 0);
        dup2(ofd, 1);
        dup2(efd, 2);
        execvp(argv[0], argv);
        _exit(127);
    }
    int status = 0;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
    lseek(ofd, 0, SEEK_SET);
    lseek(efd, 0, SEEK_SET);
    if (out) *out = slurp_fd(ofd);
    if (err) *err = slurp_fd(efd);
    close(ofd);
    close(efd);
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

int tu_poll(int (*cond)(void *), void *arg, int timeout_ms)
{
    struct timespec d = {0, 10 * 1000 * 1000};
    int v = 0;
    timeout_ms = tu_timeout_ms(timeout_ms);
    for (int waited = 0; waited <= timeout_ms; waited += 10) {
        if ((v = cond(arg)) != 0) return v;
        nanosleep(&d, NULL);
    }
    return v;
}
