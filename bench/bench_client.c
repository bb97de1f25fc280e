/* bench_client: throughput of the Dataflow client on one event loop against `sluice emulator` answering after
 * --latency-ms: keeps --inflight calls outstanding (jobs.get, or launches with --mode launch) for --seconds and
 * reports achieved concurrency, requests/s and latency percentiles.
 * Uses: http_client, gauth, dataflow. Must not: be linked into the product.
 *
 * usage: bench_client [--sluice PATH] [--url BASE] [--seconds N] [--inflight N] [--latency-ms N]
 *                     [--mode get|launch] [--emu-threads N] [--burst N]
 * --burst N queues N calls at once (at most --inflight connections) and times until all are answered.
 * Without --url it starts PATH emulator (default ./sluice) on 127.0.0.1 with a service-account key and stops
 * it at the end. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "bench_emu.h"
#include "dataflow.h"

typedef struct bench {
    df_client *df;
    hc_client *hc;
    int mode_launch;
    int inflight, target;
    int64_t deadline;
    long done, errors, launched_seq;
    int64_t *lat;
    size_t nlat, caplat;
    char **ids;
    int nids;
    const char *project; /* the credentials' project, where the launches go */
} bench;

typedef struct slot {
    bench *b;
    int64_t start;
} slot;

static int64_t now_ms(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (int64_t)t.tv_sec * 1000 + t.tv_nsec / 1000000;
}

static void issue(bench *b);

static void on_done(void *ud, df_result *r)
{
    slot *s = ud;
    bench *b = s->b;
    b->inflight--;
    if (r->err == DF_OK) b->done++;
    else {
        if (b->errors < 5) fprintf(stderr, "error: %s %ld %s\n", df_err_name(r->err), r->http_status, r->message ? r->message : "");
        b->errors++;
    }
    if (b->nlat == b->caplat) {
        b->caplat = b->caplat ? b->caplat * 2 : 65536;
        b->lat = realloc(b->lat, b->caplat * sizeof *b->lat);
    }
    b->lat[b->nlat++] = now_ms() - s->start;
    df_result_free(r);
    free(s);
    if (now_ms() < b->deadline) issue(b);
}

static void issue(bench *b)
{
    slot *s = calloc(1, sizeof *s);
    s->b = b;
    s->start = now_ms();
    const char *err = NULL;
    int64_t id;
    if (b->mode_launch) {
        char name[64];
        snprintf(name, sizeof name, "bench-%d-%ld", (int)getpid(), ++b->launched_seq);
        launch_req *lp = launch_new(LAUNCH_FLEX, "gs://bench/t.json", name, b->project, "europe-west4", NULL, NULL);
        id = df_launch(b->df, lp, 0, on_done, s, &err);
        launch_free(lp);
    } else {
        id = df_job_get(b->df, b->ids[b->done % b->nids], DF_VIEW_SUMMARY, 0, on_done, s, &err);
    }
    if (id < 0) {
        fprintf(stderr, "cannot issue: %s\n", err);
        free(s);
        return;
    }
    b->inflight++;
}

typedef struct target_wait {
    bench *b;
    int n, failed;
} target_wait;

static void on_target(void *ud, df_result *r)
{
    target_wait *tw = ud;
    if (r->err == DF_OK && r->job) tw->b->ids[tw->n] = strdup(r->job->id);
    else tw->failed = 1;
    tw->n++;
    df_result_free(r);
}

static int cmp64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return x < y ? -1 : x > y;
}

static pid_t start_emulator(const char *bin, const char *dir, int latency, int threads, char *base, size_t cap)
{
    char lat[16], thr[16];
    snprintf(lat, sizeof lat, "%d", latency);
    snprintf(thr, sizeof thr, "%d", threads);
    const char *extra[] = {"--latency-ms", lat, "--running-ms", "3600000", "--threads", thr, NULL};
    return bench_emu_start(bin, dir, extra, base, cap);
}

int main(int argc, char **argv)
{
    const char *bin = "./sluice", *url = NULL, *mode = "get";
    int seconds = 5, inflight = 200, latency = 50, emu_threads = 2, burst = 0;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (strcmp(argv[i], "--sluice") == 0) bin = argv[i + 1];
        else if (strcmp(argv[i], "--url") == 0) url = argv[i + 1];
        else if (strcmp(argv[i], "--seconds") == 0) seconds = atoi(argv[i + 1]);
        else if (strcmp(argv[i], "--inflight") == 0) inflight = atoi(argv[i + 1]);
        else if (strcmp(argv[i], "--latency-ms") == 0) latency = atoi(argv[i + 1]);
        else if (strcmp(argv[i], "--mode") == 0) mode = argv[i + 1];
        else if (strcmp(argv[i], "--emu-threads") == 0) emu_threads = atoi(argv[i + 1]);
        else if (strcmp(argv[i], "--burst") == 0) burst = atoi(argv[i + 1]);
        else {
            fprintf(stderr, "unknown option %s\n", argv[i]);
            return 2;
        }
    }
    char dir[] = "/tmp/sluice-bench-XXXXXX", base[256] = "", sa[600];
    pid_t emu = -1;
    if (mkdtemp(dir) == NULL) return 1;
    snprintf(sa, sizeof sa, "%s/creds/service-account.json", dir);
    if (url == NULL) {
        emu = start_emulator(bin, dir, latency, emu_threads, base, sizeof base);
        if (emu < 0) {
            fprintf(stderr, "cannot start the emulator (%s)\n", bin);
            return 1;
        }
        url = base;
    }
    hc_options ho = {.max_conns_per_host = inflight + 16, .total_timeout_ms = 30000};
    hc_client *hc = hc_new(&ho);
    char *gerr = NULL;
    ga_auth *ga = emu > 0 ? ga_new_from_file(hc, sa, NULL, &gerr) : ga_new_none("emulator-project");
    if (ga == NULL) {
        fprintf(stderr, "credentials: %s\n", gerr ? gerr : "?");
        return 1;
    }
    retry_policy p = {.initial_ms = 50, .multiplier = 2, .cap_ms = 1000, .max_attempts = 3, .deadline_ms = 10000};
    df_options o = {.base_url = url, .region = "europe-west4", .policy = &p, .launch_policy = &p};
    const char *err = NULL;
    bench b = {.hc = hc, .mode_launch = strcmp(mode, "launch") == 0, .target = inflight, .project = ga_project_id(ga)};
    b.df = df_new(hc, ga, &o, &err);
    if (b.df == NULL) {
        fprintf(stderr, "df_new: %s\n", err);
        return 1;
    }
    /* A few real jobs to get. */
    b.nids = 20;
    b.ids = calloc((size_t)b.nids, sizeof *b.ids);
    target_wait tw = {.b = &b};
    for (int i = 0; i < b.nids; i++) {
        char name[64];
        snprintf(name, sizeof name, "bench-target-%d-%d", (int)getpid(), i);
        launch_req *lp = launch_new(LAUNCH_FLEX, "gs://bench/t.json", name, b.project, "europe-west4", NULL, NULL);
        int64_t sent = df_launch(b.df, lp, 0, on_target, &tw, &err);
        launch_free(lp);
        if (sent < 0) return 1;
    }
    while (tw.n < b.nids) hc_run(hc, 50);
    if (tw.failed) {
        fprintf(stderr, "could not launch the target jobs\n");
        return 1;
    }
    df_stats st0 = df_get_stats(b.df);

    int64_t t0 = now_ms(), last = t0;
    b.deadline = t0 + (int64_t)seconds * 1000;
    if (burst > 0) {
        /* Reconcile-style: queue `burst` calls at once (the connection limit holds the rest inside the client)
         * and measure until the last one is answered. */
        b.deadline = t0;
        for (int i = 0; i < burst; i++) issue(&b);
    } else {
        for (int i = 0; i < inflight; i++) issue(&b);
    }
    double area = 0; /* integral of in-flight over time, for the time-weighted average */
    int peak = 0;
    while (b.inflight > 0) {
        hc_run(hc, 5);
        int64_t t = now_ms();
        area += (double)b.inflight * (double)(t - last);
        last = t;
        if (b.inflight > peak) peak = b.inflight;
    }
    double secs = (double)(now_ms() - t0) / 1000.0;
    df_stats st = df_get_stats(b.df);
    qsort(b.lat, b.nlat, sizeof *b.lat, cmp64);
    int64_t p50 = b.nlat ? b.lat[b.nlat / 2] : 0, p99 = b.nlat ? b.lat[(size_t)((double)b.nlat * 0.99)] : 0;
    printf("mode=%s latency_ms=%d target_inflight=%d seconds=%.2f\n", mode, latency, inflight, secs);
    printf("completed=%ld errors=%ld rate=%.0f req/s avg_inflight=%.1f peak_inflight=%d p50=%lld ms p99=%lld ms\n",
           b.done, b.errors, (double)b.done / secs, area / (secs * 1000.0), peak, (long long)p50, (long long)p99);
    printf("http_requests=%lld retries=%lld token_fetches=%d\n", (long long)(st.requests - st0.requests),
           (long long)(st.retries - st0.retries), ga_fetch_count(ga));
    for (int i = 0; i < b.nids; i++) free(b.ids[i]);
    free(b.ids);
    free(b.lat);
    df_free(b.df);
    ga_free(ga);
    hc_free(hc);
    if (emu > 0) {
        kill(emu, SIGTERM);
        waitpid(emu, NULL, 0);
    }
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    if (system(cmd) != 0) fprintf(stderr, "cannot remove %s\n", dir);
    return b.errors ? 1 : 0;
}
