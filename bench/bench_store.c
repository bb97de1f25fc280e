/* bench_store: per-operation cost of the store's hot paths on a temp file: launch intents, job ids, inbox
 * inserts and the engine's grouped transaction with synchronous FULL and NORMAL, and the reconciler's due
 * query over 10,000 in-flight steps (plus finished ones that must not cost anything).
 * Uses: store.h. Usage: bench_store [N (default 2000)] [DIR (default $TMPDIR or /tmp)]
 * With $SLUICE_BENCH_PG=CONNINFO the same runs on PostgreSQL; each case first drops the store's tables in the
 * connection's schema (use a database or schema kept for the bench). */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <libpq-fe.h>

#include "store.h"

#define HASH "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void check(int rc, char *err, const char *what)
{
    if (rc == STORE_OK) return;
    fprintf(stderr, "bench_store: %s: %s (%s)\n", what, err ? err : "", store_strerror(rc));
    exit(1);
}

static void report(const char *mode, const char *op, int n, double secs)
{
    printf("%-6s %-34s %7d ops %9.1f us/op %9.0f ops/s\n", mode, op, n, secs * 1e6 / n, n / secs);
}

/* A realistic launch request: about 1 KB of JSON. */
static void make_request(char *buf, size_t cap, int i)
{
    snprintf(buf, cap,
             "{\"launchParameter\":{\"jobName\":\"sluice-bench-%d\",\"containerSpecGcsPath\":"
             "\"gs://bucket/templates/etl.json\",\"parameters\":{\"input\":\"gs://bucket/in/%d/*.avro\","
             "\"output\":\"project:dataset.table_%d\",\"window\":\"2026-11-27T00:00:00Z/2026-11-28T00:00:00Z\"},"
             "\"environment\":{\"numWorkers\":2,\"maxWorkers\":50,\"machineType\":\"n2-standard-4\","
             "\"serviceAccountEmail\":\"etl@project.iam.gserviceaccount.com\",\"tempLocation\":\"gs://bucket/tmp\","
             "\"additionalExperiments\":[\"use_runner_v2\",\"enable_streaming_engine\"],"
             "\"additionalUserLabels\":{\"sluice-run\":\"run-%d\",\"sluice-step\":\"load\"}}}}",
             i, i, i, i);
}

static store *open_fresh(const char *dir, const char *name, store_sync sync)
{
    char path[512];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    unlink(path);
    const char *pg = getenv("SLUICE_BENCH_PG");
    if (pg != NULL && *pg) {
        PGconn *c = PQconnectdb(pg);
        PQclear(PQexec(c, "DROP TABLE IF EXISTS inbox, steps, runs, scripts, sluice_schema CASCADE"));
        PQfinish(c);
    }
    store *s = NULL;
    char *err = NULL;
    store_options o = {.synchronous = sync};
    check(store_open(pg && *pg ? pg : path, &o, &s, &err), err, "open");
    check(store_script_put(s, HASH, "bench", "return {}", &err), err, "script_put");
    return s;
}

/* Creates runs b<i> with a pending step "load" and a pending step "next", in one transaction. */
static void seed_runs(store *s, int n)
{
    char *err = NULL, id[32];
    check(store_begin(s, &err), err, "begin");
    for (int i = 0; i < n; i++) {
        snprintf(id, sizeof id, "b%d", i);
        store_run r = {.id = id, .workflow = "bench", .script_hash = HASH, .state = STORE_RUN_RUNNING};
        check(store_run_create(s, &r, &err), err, "run_create");
        check(store_step_insert(s, &(store_step){.run_id = id, .name = "load"}, &err), err, "step_insert");
    }
    check(store_commit(s, &err), err, "commit");
}

static void bench_writes(const char *dir, store_sync sync, int n)
{
    const char *mode = sync == STORE_SYNC_FULL ? "FULL" : "NORMAL";
    store *s = open_fresh(dir, sync == STORE_SYNC_FULL ? "bench-full.db" : "bench-normal.db", sync);
    char *err = NULL, id[32], jn[48], jid[48], req[2048];
    seed_runs(s, n);

    double t0 = now_s();
    for (int i = 0; i < n; i++) {
        snprintf(id, sizeof id, "b%d", i);
        snprintf(jn, sizeof jn, "sluice-bench-%d-load-1", i);
        make_request(req, sizeof req, i);
        store_intent in = {.attempt = 1, .job_name = jn, .project = "project", .region = "europe-west1",
                           .request_json = req};
        check(store_step_record_intent(s, id, "load", STORE_STEP_PENDING, 1, &in, &err), err, "record_intent");
    }
    double t_intent = now_s() - t0;
    report(mode, "record_intent (1 commit each)", n, t_intent);

    t0 = now_s();
    for (int i = 0; i < n; i++) {
        snprintf(id, sizeof id, "b%d", i);
        snprintf(jid, sizeof jid, "2026-11-27_00_00_00-%d", i);
        check(store_step_set_job(s, id, "load", 1, jid, "JOB_STATE_PENDING", 0, &err), err, "set_job");
    }
    double t_job = now_s() - t0;
    report(mode, "set_job (1 commit each)", n, t_job);
    report(mode, "=> launch = intent + set_job", n, t_intent + t_job);

    /* The read an event costs before anything is written: which step owns this job? */
    t0 = now_s();
    for (int i = 0; i < n; i++) {
        snprintf(jid, sizeof jid, "2026-11-27_00_00_00-%d", i);
        store_step st;
        check(store_step_find_by_job_id(s, jid, &st, &err), err, "find_by_job_id");
        store_step_free(&st);
    }
    report(mode, "step_find_by_job_id (read)", n, now_s() - t0);

    t0 = now_s();
    for (int i = 0; i < n; i++) {
        snprintf(jid, sizeof jid, "2026-11-27_00_00_00-%d", i);
        snprintf(jn, sizeof jn, "projects/p/topics/t/%d", i);
        store_event ev = {.message_id = jn, .source = STORE_SRC_PUSH, .job_id = jid, .job_name = "x",
                          .state = "JOB_STATE_DONE",
                          .payload_json = "{\"job\":{\"id\":\"x\",\"currentState\":\"JOB_STATE_DONE\"}}"};
        check(store_inbox_put(s, &ev, NULL, &err), err, "inbox_put");
    }
    report(mode, "inbox_put new (1 commit each)", n, now_s() - t0);

    t0 = now_s();
    for (int i = 0; i < n; i++) {
        snprintf(jid, sizeof jid, "2026-11-27_00_00_00-%d", i);
        store_event ev = {.source = STORE_SRC_POLL, .job_id = jid, .state = "JOB_STATE_DONE"};
        int rc = store_inbox_put(s, &ev, NULL, &err);
        if (rc != STORE_DUPLICATE) check(rc == STORE_OK ? STORE_IO : rc, err, "inbox_put dup");
        free(err);
        err = NULL;
    }
    report(mode, "inbox_put duplicate", n, now_s() - t0);

    /* The engine's grouped write: finish a step, create the next, record its intent. */
    t0 = now_s();
    for (int i = 0; i < n; i++) {
        snprintf(id, sizeof id, "b%d", i);
        snprintf(jn, sizeof jn, "sluice-bench-%d-next-1", i);
        make_request(req, sizeof req, i);
        check(store_begin(s, &err), err, "begin");
        check(store_step_finish(s, id, "load", 1, STORE_STEP_SUCCEEDED, "JOB_STATE_DONE", "{\"rows\":1}", NULL, &err),
              err, "finish");
        check(store_step_insert(s, &(store_step){.run_id = id, .name = "next"}, &err), err, "insert next");
        store_intent in = {.attempt = 1, .job_name = jn, .request_json = req};
        check(store_step_record_intent(s, id, "next", STORE_STEP_PENDING, 1, &in, &err), err, "intent next");
        check(store_commit(s, &err), err, "commit");
    }
    report(mode, "txn finish+insert+intent", n, now_s() - t0);

    /* Group commit: the engine records the intents of up to 10 ready steps in one transaction, then
     * sends the 10 launches. Reported per intent. */
    t0 = now_s();
    for (int i = 0; i < n; i++) {
        snprintf(id, sizeof id, "b%d", i);
        snprintf(jn, sizeof jn, "sluice-bench-%d-next-2", i);
        make_request(req, sizeof req, i);
        if (i % 10 == 0) check(store_begin(s, &err), err, "begin");
        store_intent in = {.attempt = 2, .job_name = jn, .request_json = req};
        check(store_step_record_intent(s, id, "next", STORE_STEP_LAUNCHING, 1, &in, &err), err, "intent batch");
        if (i % 10 == 9 || i == n - 1) check(store_commit(s, &err), err, "commit");
    }
    report(mode, "record_intent, 10 per commit", n, now_s() - t0);
    store_close(s);
}

static void bench_due(const char *dir)
{
    const int inflight = 10000, finished = 50000, reps = 2000;
    store *s = open_fresh(dir, "bench-due.db", STORE_SYNC_NORMAL);
    char *err = NULL, id[32];
    check(store_begin(s, &err), err, "begin");
    store_run r = {.id = "due", .workflow = "bench", .script_hash = HASH, .state = STORE_RUN_RUNNING};
    check(store_run_create(s, &r, &err), err, "run_create");
    /* In-flight steps due at t = 1000 * i ms; finished steps all "due" long ago (must not be scanned). */
    for (int i = 0; i < inflight + finished; i++) {
        snprintf(id, sizeof id, "s%d", i);
        store_step st = {.run_id = "due", .name = id,
                         .state = i < inflight ? (i % 3 == 0 ? STORE_STEP_LAUNCHING : STORE_STEP_RUNNING)
                                               : STORE_STEP_SUCCEEDED,
                         .next_check_at = i < inflight ? (int64_t)1000 * (i + 1) : 1};
        check(store_step_insert(s, &st, &err), err, "step_insert");
    }
    check(store_commit(s, &err), err, "commit");

    struct {
        const char *what;
        int64_t now;
        int limit;
    } cases[] = {
        {"due: none due (limit 100)", 0, 100},
        {"due: 10 due (limit 100)", 10 * 1000, 100},
        {"due: 100 due (limit 100)", 100 * 1000, 100},
        {"due: all 10k due (limit 100)", INT64_MAX, 100},
        {"due: all 10k due (limit 10000)", INT64_MAX, 10000},
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        int n = cases[c].limit == 10000 ? 50 : reps;
        size_t rows = 0;
        double t0 = now_s();
        for (int i = 0; i < n; i++) {
            store_step_list l;
            check(store_step_due(s, cases[c].now, cases[c].limit, &l, &err), err, "due");
            rows = l.count;
            store_step_list_free(&l);
        }
        double secs = now_s() - t0;
        printf("%-6s %-34s %7d qry %9.1f us/qry  (%zu rows, %d in flight + %d finished)\n", "-", cases[c].what, n,
               secs * 1e6 / n, rows, inflight, finished);
    }
    store_close(s);
}

int main(int argc, char **argv)
{
    int n = argc > 1 ? atoi(argv[1]) : 2000;
    const char *base = argc > 2 ? argv[2] : (getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
    if (n <= 0) n = 2000;
    char dir[512];
    snprintf(dir, sizeof dir, "%s/sluice-bench-XXXXXX", base);
    if (mkdtemp(dir) == NULL) {
        perror("mkdtemp");
        return 1;
    }
    printf("bench_store: dir %s, N=%d\n", dir, n);
    bench_writes(dir, STORE_SYNC_FULL, n);
    bench_writes(dir, STORE_SYNC_NORMAL, n);
    bench_due(dir);
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0) fprintf(stderr, "bench_store: could not remove %s\n", dir);
    return 0;
}
