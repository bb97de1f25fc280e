/* bench_ui_runs: the runs page's store queries with 100,000 runs (3 steps each, 5 workflows, 5% failed runs, 2%
 * recovered: succeeded with a failed step), and the workflow page's runs x steps grid (grid_view, 25 runs a page:
 * the newest page and the 40th through cursors; with --workflows 1 every run is of one workflow). Fills a fresh store at --store (kept for bench/ui_runs.sh, which then
 * times the same queries through `sluice serve`'s HTTP API), and times store_run_find_page in-process for each
 * of the page's queries: the newest page, a state, a workflow, "any failed step", a run-id prefix, a job-name
 * prefix, an exact job name, a job id, and the 40th page through cursors. Prints median and worst of 20 each.
 * Usage: bench_ui_runs --store PATH [--runs N] [--workflows K] [--fill-only]. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include "grid.h"
#include "store.h"

#define HASH "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"

static void check(int rc, char *err, const char *what)
{
    if (rc == STORE_OK) return;
    fprintf(stderr, "bench_ui_runs: %s: %s\n", what, err ? err : store_strerror(rc));
    exit(1);
}

static double now_ms(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec * 1e3 + (double)t.tv_nsec / 1e6;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static void fill(store *s, int n, int nwf)
{
    char *err = NULL, id[32], jn[96], jid[64];
    static const char *const steps[] = {"load", "clean", "report"};
    const int64_t base = 1767225600000; /* 2026-01-01 */
    check(store_script_put(s, HASH, "wf0", "return {}", &err), err, "script_put");
    for (int i = 0; i < n; i++) {
        if (i % 10000 == 0) check(store_begin(s, &err), err, "begin");
        snprintf(id, sizeof id, "r%09d", i);
        int failed = i % 20 == 7, recovered = i % 50 == 3, cancelled = i % 50 == 11;
        char wf[16];
        snprintf(wf, sizeof wf, "wf%d", i % nwf);
        store_run r = {.id = id, .workflow = wf, .script_hash = HASH,
                       .state = failed ? STORE_RUN_FAILED : cancelled ? STORE_RUN_CANCELLED : STORE_RUN_SUCCEEDED,
                       .created_at = base + (int64_t)i * 1000, .updated_at = base + (int64_t)i * 1000 + 900,
                       .finished_at = base + (int64_t)i * 1000 + 900,
                       .error = failed ? "step report failed: job ended JOB_STATE_FAILED" : NULL};
        check(store_run_create(s, &r, &err), err, "run_create");
        for (int k = 0; k < 3; k++) {
            snprintf(jn, sizeof jn, "%s-%s--%s-1", wf, steps[k], id);
            snprintf(jid, sizeof jid, "2026-01-01_00_00_00-%09d%d", i, k);
            store_step_state st = STORE_STEP_SUCCEEDED;
            if (k == 2 && (failed || recovered)) st = STORE_STEP_FAILED;
            if (k == 2 && cancelled) st = STORE_STEP_CANCELLED;
            store_step row = {.run_id = id, .name = (char *)steps[k], .state = st, .attempt = 1, .job_name = jn,
                              .job_id = jid, .project = "bench-project", .region = "europe-west4",
                              .job_state = st == STORE_STEP_SUCCEEDED ? "JOB_STATE_DONE" : "JOB_STATE_FAILED",
                              .started_at = r.created_at + k * 300, .finished_at = r.created_at + k * 300 + 250,
                              .next_check_at = 0};
            check(store_step_insert(s, &row, &err), err, "step_insert");
        }
        if (i % 10000 == 9999 || i == n - 1) check(store_commit(s, &err), err, "commit");
    }
}

static void time_query(store *s, const char *label, store_run_query q, int pages)
{
    double t[20];
    size_t got = 0;
    for (int rep = 0; rep < 20; rep++) {
        char *cursor = NULL, *err = NULL;
        double t0 = now_ms();
        for (int p = 0; p < pages; p++) {
            store_run_query qq = q;
            qq.base.cursor = cursor;
            store_run_list l = {0};
            check(store_run_find_page(s, &qq, &l, &err), err, label);
            got = l.count;
            free(cursor);
            cursor = l.next_cursor;
            l.next_cursor = NULL;
            store_run_list_free(&l);
            if (cursor == NULL) break;
        }
        t[rep] = now_ms() - t0;
        free(cursor);
    }
    qsort(t, 20, sizeof t[0], cmp_double);
    printf("  %-34s rows %3zu  median %7.2f ms  worst %7.2f ms\n", label, got, t[10], t[19]);
}

/* grid_view's newest page, or the page after `pages` - 1 others (following next_cursor), for `wf`. */
static void time_grid(store *s, const char *label, const char *wf, int pages)
{
    double t[20];
    size_t got = 0;
    for (int rep = 0; rep < 20; rep++) {
        char *cursor = NULL, *err = NULL;
        double t0 = 0;
        for (int p = 0; p < pages; p++) {
            if (p == pages - 1) t0 = now_ms();
            int rc;
            json_t *g = grid_view(s, wf, NULL, 25, cursor, &rc, &err);
            if (g == NULL) check(rc, err, label);
            got = json_array_size(json_object_get(g, "runs"));
            free(cursor);
            const char *next = json_string_value(json_object_get(g, "next_cursor"));
            cursor = next ? strdup(next) : NULL;
            char *text = json_dumps(g, JSON_COMPACT); /* the answer's body is part of its cost */
            free(text);
            json_decref(g);
        }
        t[rep] = now_ms() - t0;
        free(cursor);
    }
    qsort(t, 20, sizeof t[0], cmp_double);
    printf("  %-34s runs %3zu  median %7.2f ms  worst %7.2f ms\n", label, got, t[10], t[19]);
}

int main(int argc, char **argv)
{
    const char *path = NULL;
    int n = 100000, fill_only = 0, nwf = 5;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--store") == 0 && i + 1 < argc) path = argv[++i];
        else if (strcmp(argv[i], "--runs") == 0 && i + 1 < argc) n = atoi(argv[++i]);
        else if (strcmp(argv[i], "--workflows") == 0 && i + 1 < argc) nwf = atoi(argv[++i]);
        else if (strcmp(argv[i], "--fill-only") == 0) fill_only = 1;
        else {
            fprintf(stderr, "usage: bench_ui_runs --store PATH [--runs N] [--workflows 1..5] [--fill-only]\n");
            return 2;
        }
    }
    if (path == NULL || n < 100 || nwf < 1 || nwf > 5) {
        fprintf(stderr, "usage: bench_ui_runs --store PATH [--runs N >= 100] [--workflows 1..5] [--fill-only]\n");
        return 2;
    }
    unlink(path);
    store *s = NULL;
    char *err = NULL;
    store_options o = {.synchronous = STORE_SYNC_NORMAL};
    check(store_open(path, &o, &s, &err), err, "open");
    double t0 = now_ms();
    fill(s, n, nwf);
    printf("filled %d runs (%d steps) in %.1f s\n", n, 3 * n, (now_ms() - t0) / 1000);
    if (!fill_only) {
        char probe_id[32], probe_job[96], probe_jid[64];
        snprintf(probe_id, sizeof probe_id, "r%09d", n / 2);
        snprintf(probe_job, sizeof probe_job, "wf%d-report--r%09d-1", (n / 3) % 5, n / 3);
        snprintf(probe_jid, sizeof probe_jid, "2026-01-01_00_00_00-%09d1", n / 4);
        printf("store_run_find_page, limit 25 (the page's size), %d runs:\n", n);
        store_run_filter base = {.state = STORE_RUN_ANY, .limit = 25};
        store_run_query q = {.base = base};
        time_query(s, "newest", q, 1);
        q.base.state = STORE_RUN_FAILED;
        time_query(s, "state=failed", q, 1);
        q.base.state = STORE_RUN_ANY;
        q.base.workflow = "wf3";
        time_query(s, "workflow=wf3", q, 1);
        q.base.workflow = NULL;
        q.failed_step = 1;
        time_query(s, "any failed step", q, 1);
        q.base.workflow = "wf3";
        q.base.state = STORE_RUN_SUCCEEDED;
        time_query(s, "wf3 + succeeded + failed step", q, 1);
        q = (store_run_query){.base = base, .search = probe_id};
        time_query(s, "search: run id", q, 1);
        q.search = "r0000123";
        time_query(s, "search: run id prefix (100 runs)", q, 1);
        q.search = probe_job;
        time_query(s, "search: exact job name", q, 1);
        q.search = "wf2-clean--r00005";
        time_query(s, "search: job name prefix", q, 1);
        q.search = probe_jid;
        time_query(s, "search: job id", q, 1);
        q.search = "no-such-thing";
        time_query(s, "search: no match", q, 1);
        q = (store_run_query){.base = base};
        time_query(s, "40 pages through cursors (total)", q, 40);
        printf("grid_view (GET /v1/workflows/{name}/grid), 25 runs x 3 steps, workflow wf0 with %d runs:\n", n / nwf);
        time_grid(s, "newest page", "wf0", 1);
        time_grid(s, "40th page (cursor)", "wf0", 40);
    }
    store_close(s);
    return 0;
}
