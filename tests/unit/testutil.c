/* testutil: helpers shared by the cmocka tests. */
#include "testutil.h"

#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

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

static int rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb;
    (void)flag;
    (void)ftw;
    remove(path); /* as rm -rf: go on past what cannot be removed */
    return 0;
}

void tu_rmtree(const char *path)
{
    if (path == NULL || path[0] == '\0' || strcmp(path, "/") == 0) return;
    nftw(path, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
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
