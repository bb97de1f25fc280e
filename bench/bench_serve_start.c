/* bench_serve_start: time from starting `sluice serve` to its first /readyz 200, and the idle RSS of a fresh
 * server. Usage: bench_serve_start SLUICE_BIN WORKFLOWS_DIR TMPDIR EMULATOR_URL
 * Runs 5 starts on a fresh store and 5 on the store the first run left, prints each and the median. */
#include <curl/curl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1000.0 + (double)ts.tv_nsec / 1e6;
}

static size_t sink(char *p, size_t s, size_t n, void *u)
{
    (void)p;
    (void)u;
    return s * n;
}

static int cmp_d(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static long rss_kb(pid_t pid)
{
    char path[64], line[256];
    snprintf(path, sizeof path, "/proc/%d/status", (int)pid);
    FILE *f = fopen(path, "r");
    long kb = -1;
    while (f && fgets(line, sizeof line, f))
        if (strncmp(line, "VmRSS:", 6) == 0) kb = strtol(line + 6, NULL, 10);
    if (f) fclose(f);
    return kb;
}

/* One start; returns ms to readyz 200 (or -1); *rss receives the RSS 1 s after ready when rss != NULL. */
static double one(const char *bin, const char *wf, const char *store, const char *dir, const char *emu, long *rss)
{
    char ready[512], jwks[512];
    snprintf(ready, sizeof ready, "%s/start.ready", dir);
    snprintf(jwks, sizeof jwks, "%s/oauth2/v3/certs", emu);
    unlink(ready);
    fflush(stdout); /* else the child's freopen flushes our buffered lines a second time */
    double t0 = now_ms();
    pid_t pid = fork();
    if (pid == 0) {
        if (freopen("/dev/null", "w", stdout) == NULL || freopen("/dev/null", "w", stderr) == NULL) _exit(127);
        execl(bin, bin, "serve", "--listen", "127.0.0.1", "--port", "0", "--ready-file", ready, "--workflows", wf,
              "--store", store, "--audience", "bench", "--jwks-url", jwks, "--dataflow-url", emu, "--dataflow-no-auth",
              (char *)NULL);
        _exit(127);
    }
    char base[128] = "";
    double t = -1;
    CURL *c = curl_easy_init();
    while (now_ms() - t0 < 10000) {
        if (base[0] == '\0') {
            FILE *f = fopen(ready, "r");
            if (f) {
                if (fgets(base, sizeof base, f) == NULL) base[0] = '\0';
                fclose(f);
                base[strcspn(base, "\n")] = '\0';
            }
            if (base[0] == '\0') {
                usleep(200);
                continue;
            }
        }
        char url[256];
        snprintf(url, sizeof url, "%s/readyz", base);
        curl_easy_setopt(c, CURLOPT_URL, url);
        curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, sink);
        long status = 0;
        if (curl_easy_perform(c) == CURLE_OK) curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
        if (status == 200) {
            t = now_ms() - t0;
            break;
        }
        usleep(200);
    }
    curl_easy_cleanup(c);
    if (rss) {
        sleep(1);
        *rss = rss_kb(pid);
    }
    kill(pid, SIGTERM);
    waitpid(pid, NULL, 0);
    return t;
}

int main(int argc, char **argv)
{
    if (argc != 5) {
        fprintf(stderr, "usage: bench_serve_start SLUICE_BIN WORKFLOWS_DIR TMPDIR EMULATOR_URL\n");
        return 2;
    }
    curl_global_init(CURL_GLOBAL_DEFAULT);
    for (int pass = 0; pass < 2; pass++) {
        double t[5];
        long rss = 0;
        for (int i = 0; i < 5; i++) {
            char store[512];
            snprintf(store, sizeof store, "%s/start-%d.db", argv[3], pass == 0 ? i : 0);
            t[i] = one(argv[1], argv[2], store, argv[3], argv[4], i == 4 ? &rss : NULL);
            printf("  %s store, start %d: %.1f ms\n", pass == 0 ? "fresh" : "existing", i + 1, t[i]);
        }
        qsort(t, 5, sizeof *t, cmp_d);
        printf("%s store: median %.1f ms to readyz 200; idle RSS 1 s after ready %ld kB\n",
               pass == 0 ? "fresh" : "existing", t[2], rss);
    }
    curl_global_cleanup();
    return 0;
}
