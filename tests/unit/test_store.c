/* test_store: the store API against real SQLite files in temp dirs: CRUD, compare-and-set, dedupe,
 * transactions, the reconciler's due query, two handles, migrations, corrupt files, crash durability. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "store.h"
#include "testutil.h"

#define HASH_A "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
#define HASH_B "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"

static char *g_err; /* the last call's message; EXPECT frees it before each call */

static void expect_rc(int want, int got, const char *call, int line)
{
    if (want != got)
        fail_msg("line %d: %s returned %d (%s), expected %d (%s); message: %s", line, call, got, store_strerror(got),
                 want, store_strerror(want), g_err ? g_err : "(none)");
    if (got != STORE_OK && g_err == NULL) fail_msg("line %d: %s failed without a message", line, call);
}
#define EXPECT(want, call) expect_rc((want), (free(g_err), g_err = NULL, (call)), #call, __LINE__)
#define OK(call) EXPECT(STORE_OK, call)

typedef struct {
    char *dir;
    char *path;
    store *s;
    int64_t now;
} fixture;

static int64_t fake_clock(void *arg) { return ((fixture *)arg)->now; }

static store *open_store(fixture *f, int schema_version)
{
    store_options o = {.synchronous = STORE_SYNC_FULL, .busy_timeout_ms = 5000, .schema_version = schema_version,
                       .clock_ms = fake_clock, .clock_arg = f};
    store *s = NULL;
    OK(store_open(f->path, &o, &s, &g_err));
    assert_non_null(s);
    return s;
}

static int setup(void **state)
{
    fixture *f = calloc(1, sizeof *f);
    f->dir = tu_tempdir();
    assert_non_null(f->dir);
    assert_true(asprintf(&f->path, "%s/sluice.db", f->dir) > 0);
    f->now = 1700000000000;
    f->s = open_store(f, 0);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture *f = *state;
    store_close(f->s);
    tu_rmtree(f->dir);
    free(f->dir);
    free(f->path);
    free(f);
    free(g_err);
    g_err = NULL;
    return 0;
}

/* Runs one SQL statement on a separate raw connection; returns the first column of the first row as a
 * malloc'd string (or NULL). Used to look under the API and to damage files on purpose. */
static char *raw_sql(const char *path, const char *sql)
{
    sqlite3 *db = NULL;
    char *res = NULL;
    if (sqlite3_open(path, &db) != SQLITE_OK) goto done;
    sqlite3_busy_timeout(db, 5000);
    sqlite3_stmt *st = NULL;
    const char *tail = sql;
    while (tail && *tail) {
        if (sqlite3_prepare_v2(db, tail, -1, &st, &tail) != SQLITE_OK) {
            res = strdup(sqlite3_errmsg(db));
            goto done;
        }
        if (st == NULL) break;
        int rc;
        while ((rc = sqlite3_step(st)) == SQLITE_ROW)
            if (res == NULL && sqlite3_column_text(st, 0)) res = strdup((const char *)sqlite3_column_text(st, 0));
        if (rc != SQLITE_DONE && res == NULL) res = strdup(sqlite3_errmsg(db));
        sqlite3_finalize(st);
        st = NULL;
    }
done:
    sqlite3_close(db);
    return res;
}

static void assert_raw(const char *path, const char *sql, const char *want)
{
    char *got = raw_sql(path, sql);
    assert_non_null(got);
    assert_string_equal(got, want);
    free(got);
}

static void put_script(store *s, const char *hash) { OK(store_script_put(s, hash, "wf", "return {}", &g_err)); }

static void make_run(store *s, const char *id, const char *workflow, const char *request_key)
{
    store_run r = {.id = (char *)id, .workflow = (char *)workflow, .script_hash = HASH_A,
                   .params_json = "{\"n\":1}", .state = STORE_RUN_PENDING, .origin = "api",
                   .request_key = (char *)request_key};
    OK(store_run_create(s, &r, &g_err));
}

static void make_step(store *s, const char *run_id, const char *name)
{
    store_step st = {.run_id = (char *)run_id, .name = (char *)name, .state = STORE_STEP_PENDING};
    OK(store_step_insert(s, &st, &g_err));
}

/* ---- open ---- */

static void test_open_url_and_pragmas(void **state)
{
    fixture *f = *state;
    assert_int_equal(store_schema_version(f->s), store_schema_latest());
    assert_int_equal(store_schema_latest(), 3);
    assert_raw(f->path, "PRAGMA journal_mode", "wal");
    assert_raw(f->path, "PRAGMA application_id", "1397506885");
    assert_raw(f->path, "PRAGMA user_version", "3");

    /* "sqlite:PATH" names the same file. */
    char *url = NULL;
    assert_true(asprintf(&url, "sqlite:%s", f->path) > 0);
    char *desc = NULL;
    OK(store_describe(f->s, &desc, &g_err));
    assert_string_equal(desc, "{\"backend\":\"sqlite\",\"schema_version\":3,\"journal_mode\":\"wal\","
                              "\"synchronous\":\"full\",\"foreign_keys\":true,\"busy_timeout_ms\":5000,"
                              "\"sqlite_version\":\"" SQLITE_VERSION "\"}");
    free(desc);
    store *s2 = NULL;
    store_options o = {.synchronous = STORE_SYNC_NORMAL, .busy_timeout_ms = 250};
    OK(store_open(url, &o, &s2, &g_err));
    OK(store_describe(s2, &desc, &g_err));
    assert_non_null(strstr(desc, "\"synchronous\":\"normal\""));
    assert_non_null(strstr(desc, "\"busy_timeout_ms\":250,"));
    free(desc);
    put_script(s2, HASH_A);
    store_close(s2);
    free(url);
    store_script sc;
    OK(store_script_get(f->s, HASH_A, &sc, &g_err));
    assert_string_equal(sc.source, "return {}");
    store_script_free(&sc);

    EXPECT(STORE_INVALID, store_open("postgres://db/x", NULL, &s2, &g_err));
    assert_null(s2);
    EXPECT(STORE_INVALID, store_open("", NULL, &s2, &g_err));
    EXPECT(STORE_INVALID, store_open("sqlite:", NULL, &s2, &g_err));
    store_options bad = {.schema_version = 99};
    EXPECT(STORE_INVALID, store_open(f->path, &bad, &s2, &g_err));
    EXPECT(STORE_IO, store_open("/nonexistent-dir/x/y.db", NULL, &s2, &g_err));
    assert_non_null(strstr(g_err, "/nonexistent-dir/x/y.db"));
}

/* ---- scripts ---- */

static void test_script_crud(void **state)
{
    fixture *f = *state;
    OK(store_script_put(f->s, HASH_A, "etl", "step('a')", &g_err));
    OK(store_script_put(f->s, HASH_A, "etl", "step('a')", &g_err)); /* idempotent */
    EXPECT(STORE_CONFLICT, store_script_put(f->s, HASH_A, "etl", "step('b')", &g_err));
    EXPECT(STORE_INVALID, store_script_put(f->s, "ABC", "etl", "x", &g_err));
    EXPECT(STORE_INVALID, store_script_put(f->s, HASH_B, NULL, "x", &g_err));
    store_script sc;
    OK(store_script_get(f->s, HASH_A, &sc, &g_err));
    assert_string_equal(sc.hash, HASH_A);
    assert_string_equal(sc.workflow, "etl");
    assert_string_equal(sc.source, "step('a')");
    assert_int_equal(sc.created_at, 1700000000000);
    store_script_free(&sc);
    assert_null(sc.source);
    EXPECT(STORE_NOTFOUND, store_script_get(f->s, HASH_B, &sc, &g_err));
    assert_null(sc.hash);
}

/* ---- runs ---- */

static void test_run_crud_and_cas(void **state)
{
    fixture *f = *state;
    put_script(f->s, HASH_A);
    store_run r = {.id = "run-1", .workflow = "etl", .script_hash = HASH_A, .params_json = "{\"day\":\"2026-11-27\"}",
                   .state = STORE_RUN_PENDING, .origin = "schedule", .request_key = "req-1"};
    OK(store_run_create(f->s, &r, &g_err));
    r.request_key = "req-2"; /* same id, another request */
    EXPECT(STORE_EXISTS, store_run_create(f->s, &r, &g_err));
    assert_string_equal(g_err, "run 'run-1' already exists");
    r.id = "run-2"; /* same request key: the start request is a duplicate */
    r.request_key = "req-1";
    EXPECT(STORE_EXISTS, store_run_create(f->s, &r, &g_err));
    assert_string_equal(g_err, "request_key 'req-1' already started a run");
    r.request_key = NULL;
    r.params_json = "[1,2]";
    EXPECT(STORE_INVALID, store_run_create(f->s, &r, &g_err));
    r.params_json = "{bad";
    EXPECT(STORE_INVALID, store_run_create(f->s, &r, &g_err));
    r.params_json = NULL; /* defaults to {} */
    r.script_hash = HASH_B; /* not stored */
    EXPECT(STORE_INVALID, store_run_create(f->s, &r, &g_err));
    assert_non_null(strstr(g_err, "not stored"));

    store_run got;
    OK(store_run_get_by_request_key(f->s, "req-1", &got, &g_err));
    assert_string_equal(got.id, "run-1");
    assert_string_equal(got.workflow, "etl");
    assert_string_equal(got.script_hash, HASH_A);
    assert_string_equal(got.params_json, "{\"day\":\"2026-11-27\"}");
    assert_int_equal(got.state, STORE_RUN_PENDING);
    assert_string_equal(got.origin, "schedule");
    assert_null(got.error);
    assert_int_equal(got.created_at, 1700000000000);
    assert_int_equal(got.updated_at, 1700000000000);
    assert_int_equal(got.finished_at, 0);
    store_run_free(&got);
    EXPECT(STORE_NOTFOUND, store_run_get(f->s, "run-2", &got, &g_err));
    EXPECT(STORE_NOTFOUND, store_run_get_by_request_key(f->s, "nope", &got, &g_err));

    f->now += 1000;
    OK(store_run_set_state(f->s, "run-1", STORE_RUN_PENDING, STORE_RUN_RUNNING, NULL, &g_err));
    EXPECT(STORE_CONFLICT, store_run_set_state(f->s, "run-1", STORE_RUN_PENDING, STORE_RUN_RUNNING, NULL, &g_err));
    assert_non_null(strstr(g_err, "is running, expected pending"));
    EXPECT(STORE_NOTFOUND, store_run_set_state(f->s, "run-9", STORE_RUN_ANY, STORE_RUN_FAILED, NULL, &g_err));
    EXPECT(STORE_INVALID, store_run_set_state(f->s, "run-1", 42, STORE_RUN_FAILED, NULL, &g_err));
    OK(store_run_get(f->s, "run-1", &got, &g_err));
    assert_int_equal(got.state, STORE_RUN_RUNNING);
    assert_int_equal(got.updated_at, 1700000001000);
    assert_int_equal(got.finished_at, 0);
    store_run_free(&got);
    f->now += 1000;
    OK(store_run_set_state(f->s, "run-1", STORE_RUN_ANY, STORE_RUN_FAILED, "step b failed", &g_err));
    OK(store_run_get(f->s, "run-1", &got, &g_err));
    assert_int_equal(got.state, STORE_RUN_FAILED);
    assert_int_equal(got.finished_at, 1700000002000);
    assert_string_equal(got.error, "step b failed");
    store_run_free(&got);

    make_run(f->s, "run-3", "etl", NULL);
    make_run(f->s, "run-4", "etl", NULL);
    int64_t counts[STORE_RUN_STATE_COUNT];
    OK(store_run_count_by_state(f->s, counts, &g_err));
    assert_int_equal(counts[STORE_RUN_PENDING], 2);
    assert_int_equal(counts[STORE_RUN_RUNNING], 0);
    assert_int_equal(counts[STORE_RUN_FAILED], 1);
    assert_int_equal(counts[STORE_RUN_SUCCEEDED], 0);
}

static void test_run_list_pages(void **state)
{
    fixture *f = *state;
    put_script(f->s, HASH_A);
    /* 25 runs; every pair shares a created_at so the id breaks ties; wf-b for i % 3 == 0. */
    for (int i = 0; i < 25; i++) {
        char id[16];
        snprintf(id, sizeof id, "r%02d", i);
        f->now = 1000 + (i / 2) * 10;
        make_run(f->s, id, i % 3 == 0 ? "wf-b" : "wf-a", NULL);
        if (i % 5 == 0) OK(store_run_set_state(f->s, id, STORE_RUN_PENDING, STORE_RUN_RUNNING, NULL, &g_err));
    }
    /* All, 10 per page: r24 r23 ... r00, newest first. */
    char *cursor = NULL;
    int seen = 0, pages = 0;
    do {
        store_run_filter flt = {.state = STORE_RUN_ANY, .limit = 10, .cursor = cursor};
        store_run_list l;
        OK(store_run_list_page(f->s, &flt, &l, &g_err));
        free(cursor);
        cursor = l.next_cursor ? strdup(l.next_cursor) : NULL;
        for (size_t i = 0; i < l.count; i++, seen++) {
            char want[16];
            snprintf(want, sizeof want, "r%02d", 24 - seen);
            assert_string_equal(l.items[i].id, want);
        }
        pages++;
        store_run_list_free(&l);
    } while (cursor != NULL);
    assert_int_equal(seen, 25);
    assert_int_equal(pages, 3);

    /* By workflow: wf-b = r24 r21 ... r00 (9 runs). */
    store_run_filter fb = {.state = STORE_RUN_ANY, .workflow = "wf-b", .limit = 4};
    store_run_list l;
    OK(store_run_list_page(f->s, &fb, &l, &g_err));
    assert_int_equal(l.count, 4);
    assert_string_equal(l.items[0].id, "r24");
    assert_string_equal(l.items[3].id, "r15");
    assert_non_null(l.next_cursor);
    fb.cursor = l.next_cursor;
    store_run_list l2;
    OK(store_run_list_page(f->s, &fb, &l2, &g_err));
    assert_int_equal(l2.count, 4);
    assert_string_equal(l2.items[0].id, "r12");
    store_run_list_free(&l2);
    store_run_list_free(&l);

    /* By state: running = r00 r05 r10 r15 r20; by state and workflow: running wf-b = r00 r15. */
    store_run_filter fs = {.state = STORE_RUN_RUNNING};
    OK(store_run_list_page(f->s, &fs, &l, &g_err));
    assert_int_equal(l.count, 5);
    assert_string_equal(l.items[0].id, "r20");
    assert_string_equal(l.items[4].id, "r00");
    assert_null(l.next_cursor);
    store_run_list_free(&l);
    fs.workflow = "wf-b";
    OK(store_run_list_page(f->s, &fs, &l, &g_err));
    assert_int_equal(l.count, 2);
    assert_string_equal(l.items[0].id, "r15");
    assert_string_equal(l.items[1].id, "r00");
    store_run_list_free(&l);

    store_run_filter bad = {.state = STORE_RUN_ANY, .cursor = "garbage"};
    EXPECT(STORE_INVALID, store_run_list_page(f->s, &bad, &l, &g_err));
    bad.cursor = NULL;
    bad.limit = 5000;
    EXPECT(STORE_INVALID, store_run_list_page(f->s, &bad, &l, &g_err));
}

/* ---- steps ---- */

static void test_step_crud(void **state)
{
    fixture *f = *state;
    put_script(f->s, HASH_A);
    make_run(f->s, "run-1", "etl", NULL);
    make_step(f->s, "run-1", "zeta");
    make_step(f->s, "run-1", "alpha");
    store_step full = {.run_id = "run-1", .name = "mid", .state = STORE_STEP_RUNNING, .attempt = 2,
                       .job_name = "sluice-run-1-mid-2", .job_id = "2026-11-27_01", .project = "p", .region = "r",
                       .request_json = "{\"launchParameter\":{}}", .job_state = "JOB_STATE_RUNNING",
                       .started_at = 5, .next_check_at = 7, .deadline_at = 9};
    OK(store_step_insert(f->s, &full, &g_err));
    EXPECT(STORE_EXISTS, store_step_insert(f->s, &full, &g_err));
    full.name = "other"; /* same job name and id as "mid" */
    EXPECT(STORE_EXISTS, store_step_insert(f->s, &full, &g_err));
    full.run_id = "run-404";
    full.job_name = full.job_id = NULL;
    EXPECT(STORE_INVALID, store_step_insert(f->s, &full, &g_err));
    full.run_id = "run-1";
    full.request_json = "[]";
    EXPECT(STORE_INVALID, store_step_insert(f->s, &full, &g_err));

    store_step_list l;
    OK(store_step_list_run(f->s, "run-1", &l, &g_err));
    assert_int_equal(l.count, 3);
    assert_string_equal(l.items[0].name, "zeta"); /* insertion order, not name order */
    assert_string_equal(l.items[1].name, "alpha");
    assert_string_equal(l.items[2].name, "mid");
    assert_int_equal(l.items[0].attempt, 1);
    assert_int_equal(l.items[0].state, STORE_STEP_PENDING);
    store_step_list_free(&l);
    OK(store_step_list_run(f->s, "run-404", &l, &g_err));
    assert_int_equal(l.count, 0);
    store_step_list_free(&l);

    store_step st;
    OK(store_step_find_by_job_name(f->s, "sluice-run-1-mid-2", &st, &g_err));
    assert_string_equal(st.name, "mid");
    assert_int_equal(st.attempt, 2);
    assert_string_equal(st.job_id, "2026-11-27_01");
    assert_string_equal(st.project, "p");
    assert_string_equal(st.region, "r");
    assert_string_equal(st.request_json, "{\"launchParameter\":{}}");
    assert_string_equal(st.job_state, "JOB_STATE_RUNNING");
    assert_int_equal(st.started_at, 5);
    assert_int_equal(st.next_check_at, 7);
    assert_int_equal(st.deadline_at, 9);
    assert_int_equal(st.finished_at, 0);
    assert_int_equal(st.check_failures, 0);
    store_step_free(&st);
    OK(store_step_find_by_job_id(f->s, "2026-11-27_01", &st, &g_err));
    assert_string_equal(st.name, "mid");
    store_step_free(&st);
    EXPECT(STORE_NOTFOUND, store_step_find_by_job_id(f->s, "nope", &st, &g_err));
    EXPECT(STORE_NOTFOUND, store_step_get(f->s, "run-1", "nope", &st, &g_err));
    EXPECT(STORE_INVALID, store_step_get(f->s, "run-1", NULL, &st, &g_err));
}

static void test_step_intent_lifecycle(void **state)
{
    fixture *f = *state;
    put_script(f->s, HASH_A);
    make_run(f->s, "run-1", "etl", NULL);
    make_step(f->s, "run-1", "load");
    make_step(f->s, "run-1", "other");
    f->now = 2000;
    store_intent in = {.attempt = 1, .job_name = "sluice-run-1-load-1", .project = "proj", .region = "europe-west1",
                       .request_json = "{\"launchParameter\":{\"jobName\":\"sluice-run-1-load-1\"}}",
                       .next_check_at = 0, .deadline_at = 9000};
    OK(store_step_record_intent(f->s, "run-1", "load", STORE_STEP_PENDING, 1, &in, &g_err));
    /* A second engine instance (or a replay) expecting "pending" loses. */
    EXPECT(STORE_CONFLICT, store_step_record_intent(f->s, "run-1", "load", STORE_STEP_PENDING, 1, &in, &g_err));
    assert_non_null(strstr(g_err, "is launching at attempt 1"));
    EXPECT(STORE_NOTFOUND, store_step_record_intent(f->s, "run-1", "nope", STORE_STEP_ANY, STORE_ATTEMPT_ANY, &in, &g_err));
    /* Job names are unique across the store. */
    EXPECT(STORE_EXISTS, store_step_record_intent(f->s, "run-1", "other", STORE_STEP_PENDING, 1, &in, &g_err));
    in.request_json = "not json";
    EXPECT(STORE_INVALID, store_step_record_intent(f->s, "run-1", "other", STORE_STEP_PENDING, 1, &in, &g_err));
    in.request_json = "{}";
    in.job_name = NULL;
    EXPECT(STORE_INVALID, store_step_record_intent(f->s, "run-1", "other", STORE_STEP_PENDING, 1, &in, &g_err));

    store_step st;
    OK(store_step_get(f->s, "run-1", "load", &st, &g_err));
    assert_int_equal(st.state, STORE_STEP_LAUNCHING);
    assert_int_equal(st.attempt, 1);
    assert_string_equal(st.job_name, "sluice-run-1-load-1");
    assert_string_equal(st.project, "proj");
    assert_string_equal(st.region, "europe-west1");
    assert_string_equal(st.request_json, "{\"launchParameter\":{\"jobName\":\"sluice-run-1-load-1\"}}");
    assert_null(st.job_id);
    assert_int_equal(st.started_at, 2000);
    assert_int_equal(st.next_check_at, 2000); /* 0 = now */
    assert_int_equal(st.deadline_at, 9000);
    store_step_free(&st);

    EXPECT(STORE_CONFLICT, store_step_set_job(f->s, "run-1", "load", 2, "job-1", NULL, 2500, &g_err));
    OK(store_step_set_job(f->s, "run-1", "load", 1, "job-1", "JOB_STATE_PENDING", 2500, &g_err));
    /* Only once: a late duplicate launch response cannot overwrite it. */
    EXPECT(STORE_CONFLICT, store_step_set_job(f->s, "run-1", "load", 1, "job-1", NULL, 2600, &g_err));
    EXPECT(STORE_CONFLICT, store_step_set_job(f->s, "run-1", "load", 1, "job-X", NULL, 2600, &g_err));
    OK(store_step_get(f->s, "run-1", "load", &st, &g_err));
    assert_int_equal(st.state, STORE_STEP_RUNNING);
    assert_string_equal(st.job_id, "job-1");
    assert_string_equal(st.job_state, "JOB_STATE_PENDING");
    assert_int_equal(st.next_check_at, 2500);
    store_step_free(&st);

    OK(store_step_set_check(f->s, "run-1", "load", 1, 4000, 2, "JOB_STATE_RUNNING", &g_err));
    EXPECT(STORE_CONFLICT, store_step_set_check(f->s, "run-1", "load", 3, 4000, 2, NULL, &g_err));
    f->now = 5000;
    EXPECT(STORE_INVALID, store_step_finish(f->s, "run-1", "load", 1, STORE_STEP_RUNNING, NULL, NULL, NULL, &g_err));
    OK(store_step_finish(f->s, "run-1", "load", 1, STORE_STEP_FAILED, "JOB_STATE_FAILED", "{\"rows\":0}",
                         "worker crashed", &g_err));
    /* A duplicate "failed" event cannot finish it again. */
    EXPECT(STORE_CONFLICT, store_step_finish(f->s, "run-1", "load", 1, STORE_STEP_FAILED, NULL, NULL, NULL, &g_err));
    OK(store_step_get(f->s, "run-1", "load", &st, &g_err));
    assert_int_equal(st.state, STORE_STEP_FAILED);
    assert_string_equal(st.job_state, "JOB_STATE_FAILED");
    assert_string_equal(st.result_json, "{\"rows\":0}");
    assert_string_equal(st.error, "worker crashed");
    assert_int_equal(st.finished_at, 5000);
    assert_int_equal(st.check_failures, 2);
    store_step_free(&st);

    /* Retry: attempt 2 from failed/1, with a fresh job name; the intent clears the old attempt's fields. */
    f->now = 6000;
    in.attempt = 2;
    in.job_name = "sluice-run-1-load-2";
    in.request_json = "{\"attempt\":2}";
    EXPECT(STORE_CONFLICT, store_step_record_intent(f->s, "run-1", "load", STORE_STEP_FAILED, 2, &in, &g_err));
    OK(store_step_record_intent(f->s, "run-1", "load", STORE_STEP_FAILED, 1, &in, &g_err));
    OK(store_step_get(f->s, "run-1", "load", &st, &g_err));
    assert_int_equal(st.state, STORE_STEP_LAUNCHING);
    assert_int_equal(st.attempt, 2);
    assert_null(st.job_id);
    assert_null(st.job_state);
    assert_null(st.result_json);
    assert_null(st.error);
    assert_int_equal(st.finished_at, 0);
    assert_int_equal(st.check_failures, 0);
    store_step_free(&st);
    /* job-1 belongs to this step's old attempt only; another step cannot take the id of a live job. */
    OK(store_step_set_job(f->s, "run-1", "load", 2, "job-2", NULL, 0, &g_err));
    OK(store_step_record_intent(f->s, "run-1", "other", STORE_STEP_PENDING, 1,
                                &(store_intent){.attempt = 1, .job_name = "j-other", .request_json = "{}"}, &g_err));
    EXPECT(STORE_EXISTS, store_step_set_job(f->s, "run-1", "other", 1, "job-2", NULL, 0, &g_err));

    /* Generic compare-and-set and cancel-while-launching. */
    OK(store_step_set_state(f->s, "run-1", "other", STORE_STEP_LAUNCHING, 1, STORE_STEP_CANCELLING, &g_err));
    OK(store_step_set_job(f->s, "run-1", "other", 1, "job-3", NULL, 0, &g_err));
    OK(store_step_get(f->s, "run-1", "other", &st, &g_err));
    assert_int_equal(st.state, STORE_STEP_CANCELLING);
    assert_string_equal(st.job_id, "job-3");
    store_step_free(&st);
    f->now = 7000;
    OK(store_step_set_state(f->s, "run-1", "other", STORE_STEP_CANCELLING, STORE_ATTEMPT_ANY, STORE_STEP_CANCELLED, &g_err));
    OK(store_step_get(f->s, "run-1", "other", &st, &g_err));
    assert_int_equal(st.finished_at, 7000);
    store_step_free(&st);
    EXPECT(STORE_CONFLICT, store_step_set_state(f->s, "run-1", "other", STORE_STEP_CANCELLING, 1, STORE_STEP_CANCELLED, &g_err));
}

/* Inserts step `name` of run-1 in `state` with `next`. */
static void due_step(store *s, const char *name, store_step_state state, int64_t next)
{
    store_step st = {.run_id = "run-1", .name = (char *)name, .state = state, .next_check_at = next};
    OK(store_step_insert(s, &st, &g_err));
}

static void test_step_due(void **state)
{
    fixture *f = *state;
    put_script(f->s, HASH_A);
    make_run(f->s, "run-1", "etl", NULL);
    due_step(f->s, "a", STORE_STEP_RUNNING, 300);
    due_step(f->s, "b", STORE_STEP_LAUNCHING, 100);
    due_step(f->s, "c", STORE_STEP_SUCCEEDED, 50);  /* finished: never due */
    due_step(f->s, "d", STORE_STEP_CANCELLING, 200);
    due_step(f->s, "e", STORE_STEP_PENDING, 10);    /* not launched: not due */
    due_step(f->s, "f", STORE_STEP_RUNNING, 1000);  /* later */
    due_step(f->s, "g", STORE_STEP_RUNNING, 200);   /* ties with d: insertion order */
    store_step_list l;
    OK(store_step_due(f->s, 500, 10, &l, &g_err));
    assert_int_equal(l.count, 4);
    assert_string_equal(l.items[0].name, "b");
    assert_string_equal(l.items[1].name, "d");
    assert_string_equal(l.items[2].name, "g");
    assert_string_equal(l.items[3].name, "a");
    store_step_list_free(&l);
    OK(store_step_due(f->s, 500, 2, &l, &g_err));
    assert_int_equal(l.count, 2);
    assert_string_equal(l.items[1].name, "d");
    store_step_list_free(&l);
    OK(store_step_set_check(f->s, "run-1", "b", 1, 2000, 1, NULL, &g_err));
    OK(store_step_finish(f->s, "run-1", "d", 1, STORE_STEP_CANCELLED, NULL, NULL, NULL, &g_err));
    OK(store_step_due(f->s, 1000, 10, &l, &g_err));
    assert_int_equal(l.count, 3);
    assert_string_equal(l.items[0].name, "g");
    assert_string_equal(l.items[1].name, "a");
    assert_string_equal(l.items[2].name, "f");
    store_step_list_free(&l);
    OK(store_step_due(f->s, 0, 10, &l, &g_err));
    assert_int_equal(l.count, 0);
    store_step_list_free(&l);
    EXPECT(STORE_INVALID, store_step_due(f->s, 0, 0, &l, &g_err));

    /* The plan: the partial index, in order, no sort and no table scan. */
    sqlite3 *db = NULL;
    assert_int_equal(sqlite3_open(f->path, &db), SQLITE_OK);
    sqlite3_stmt *st = NULL;
    assert_int_equal(sqlite3_prepare_v2(db,
                                        "EXPLAIN QUERY PLAN SELECT * FROM steps WHERE state IN ('launching','running','cancelling')"
                                        " AND next_check_at <= 5 ORDER BY next_check_at, rowid LIMIT 10",
                                        -1, &st, NULL),
                     SQLITE_OK);
    char details[512] = "";
    while (sqlite3_step(st) == SQLITE_ROW) {
        strncat(details, (const char *)sqlite3_column_text(st, 3), sizeof details - strlen(details) - 3);
        strcat(details, "; ");
    }
    sqlite3_finalize(st);
    sqlite3_close(db);
    assert_non_null(strstr(details, "USING INDEX steps_due"));
    assert_null(strstr(details, "TEMP B-TREE"));
}

/* ---- inbox ---- */

static void test_inbox_dedupe(void **state)
{
    fixture *f = *state;
    int64_t id1 = 0, id = 0;
    store_event ev = {.message_id = "m1", .source = STORE_SRC_PUSH, .job_id = "job-A", .job_name = "jn-A",
                      .state = "JOB_STATE_RUNNING", .payload_json = "{\"a\":1}"};
    f->now = 100;
    OK(store_inbox_put(f->s, &ev, &id1, &g_err));
    assert_true(id1 > 0);
    /* Same message id, redelivered (even with other content). */
    ev.state = "JOB_STATE_DONE";
    EXPECT(STORE_DUPLICATE, store_inbox_put(f->s, &ev, &id, &g_err));
    assert_int_equal(id, id1);
    /* Another message id, same job and state (Eventarc and Pub/Sub both delivering it). */
    ev.message_id = "ce-src ce-1";
    ev.source = STORE_SRC_EVENTARC;
    ev.state = "JOB_STATE_RUNNING";
    EXPECT(STORE_DUPLICATE, store_inbox_put(f->s, &ev, &id, &g_err));
    assert_int_equal(id, id1);
    /* Same job, a different state: new. */
    ev.state = "JOB_STATE_DONE";
    f->now = 200;
    int64_t id2 = 0;
    OK(store_inbox_put(f->s, &ev, &id2, &g_err));
    assert_true(id2 > id1);
    /* The poller sees the same state with no message id: duplicate by identity. */
    store_event poll_ev = {.source = STORE_SRC_POLL, .job_id = "job-A", .state = "JOB_STATE_DONE"};
    EXPECT(STORE_DUPLICATE, store_inbox_put(f->s, &poll_ev, &id, &g_err));
    assert_int_equal(id, id2);
    poll_ev.job_id = "job-B";
    poll_ev.received_at = 50;
    int64_t id3 = 0;
    OK(store_inbox_put(f->s, &poll_ev, &id3, &g_err));
    /* An event with only a message id dedupes on it alone. */
    store_event bare = {.message_id = "m9", .source = STORE_SRC_PUSH, .payload_json = "\"x\""};
    int64_t id4 = 0;
    OK(store_inbox_put(f->s, &bare, &id4, &g_err));
    EXPECT(STORE_DUPLICATE, store_inbox_put(f->s, &bare, NULL, &g_err));
    store_event nokey = {.source = STORE_SRC_POLL, .job_id = "job-C"};
    EXPECT(STORE_INVALID, store_inbox_put(f->s, &nokey, NULL, &g_err));
    bare.message_id = "m10";
    bare.payload_json = "{oops";
    EXPECT(STORE_INVALID, store_inbox_put(f->s, &bare, NULL, &g_err));

    store_event_list l;
    OK(store_inbox_fetch(f->s, 10, &l, &g_err));
    assert_int_equal(l.count, 4);
    assert_int_equal(l.items[0].id, id1);
    assert_string_equal(l.items[0].message_id, "m1");
    assert_int_equal(l.items[0].source, STORE_SRC_PUSH);
    assert_string_equal(l.items[0].job_id, "job-A");
    assert_string_equal(l.items[0].job_name, "jn-A");
    assert_string_equal(l.items[0].state, "JOB_STATE_RUNNING");
    assert_string_equal(l.items[0].payload_json, "{\"a\":1}");
    assert_int_equal(l.items[0].received_at, 100);
    assert_int_equal(l.items[0].processed_at, 0);
    assert_int_equal(l.items[1].id, id2);
    assert_int_equal(l.items[1].source, STORE_SRC_EVENTARC);
    assert_int_equal(l.items[2].id, id3);
    assert_int_equal(l.items[2].source, STORE_SRC_POLL);
    assert_null(l.items[2].message_id);
    assert_int_equal(l.items[2].received_at, 50);
    assert_int_equal(l.items[3].id, id4);
    store_event_list_free(&l);

    OK(store_inbox_mark_processed(f->s, id1, 1000, &g_err));
    OK(store_inbox_mark_processed(f->s, id1, 9999, &g_err)); /* twice: keeps the first time */
    OK(store_inbox_mark_processed(f->s, id3, 3000, &g_err));
    EXPECT(STORE_NOTFOUND, store_inbox_mark_processed(f->s, 12345, 1, &g_err));
    OK(store_inbox_fetch(f->s, 1, &l, &g_err));
    assert_int_equal(l.count, 1);
    assert_int_equal(l.items[0].id, id2);
    store_event_list_free(&l);

    int64_t deleted = -1;
    OK(store_inbox_prune(f->s, 2000, &deleted, &g_err));
    assert_int_equal(deleted, 1); /* id1 only: id3 was processed at 3000 */
    OK(store_inbox_fetch(f->s, 10, &l, &g_err));
    assert_int_equal(l.count, 2);
    store_event_list_free(&l);
    /* Still remembered: id3's keys. Forgotten after pruning: id1's (the dedupe window is the retention). */
    poll_ev.received_at = 0;
    EXPECT(STORE_DUPLICATE, store_inbox_put(f->s, &poll_ev, &id, &g_err));
    assert_int_equal(id, id3);
    ev.message_id = "m1";
    ev.state = "JOB_STATE_RUNNING";
    int64_t id5 = 0;
    OK(store_inbox_put(f->s, &ev, &id5, &g_err));
    assert_true(id5 > id4); /* ids are never reused */
}

/* ---- transactions ---- */

static void test_transactions(void **state)
{
    fixture *f = *state;
    put_script(f->s, HASH_A);
    make_run(f->s, "run-1", "etl", NULL);
    make_step(f->s, "run-1", "a");
    EXPECT(STORE_INVALID, store_commit(f->s, &g_err));
    OK(store_rollback(f->s, &g_err)); /* nothing open: a no-op */

    /* "mark a succeeded + create b + record b's intent", rolled back: nothing of it remains. */
    OK(store_begin(f->s, &g_err));
    assert_true(store_in_transaction(f->s));
    EXPECT(STORE_INVALID, store_begin(f->s, &g_err));
    OK(store_step_finish(f->s, "run-1", "a", 1, STORE_STEP_SUCCEEDED, NULL, "{}", NULL, &g_err));
    make_step(f->s, "run-1", "b");
    OK(store_step_record_intent(f->s, "run-1", "b", STORE_STEP_PENDING, 1,
                                &(store_intent){.attempt = 1, .job_name = "jb", .request_json = "{}"}, &g_err));
    OK(store_rollback(f->s, &g_err));
    assert_false(store_in_transaction(f->s));
    store_step st;
    OK(store_step_get(f->s, "run-1", "a", &st, &g_err));
    assert_int_equal(st.state, STORE_STEP_PENDING);
    store_step_free(&st);
    EXPECT(STORE_NOTFOUND, store_step_get(f->s, "run-1", "b", &st, &g_err));
    EXPECT(STORE_NOTFOUND, store_step_find_by_job_name(f->s, "jb", &st, &g_err));

    /* A failed call inside a transaction does not end it; the caller decides. */
    OK(store_begin(f->s, &g_err));
    make_step(f->s, "run-1", "b");
    EXPECT(STORE_EXISTS, store_step_insert(f->s, &(store_step){.run_id = "run-1", .name = "b"}, &g_err));
    assert_true(store_in_transaction(f->s));
    OK(store_step_finish(f->s, "run-1", "a", 1, STORE_STEP_SUCCEEDED, NULL, NULL, NULL, &g_err));
    OK(store_commit(f->s, &g_err));
    OK(store_step_get(f->s, "run-1", "b", &st, &g_err));
    store_step_free(&st);
    OK(store_step_get(f->s, "run-1", "a", &st, &g_err));
    assert_int_equal(st.state, STORE_STEP_SUCCEEDED);
    store_step_free(&st);

    /* Closing with an open transaction rolls it back. */
    OK(store_begin(f->s, &g_err));
    make_step(f->s, "run-1", "c");
    store_close(f->s);
    f->s = open_store(f, 0);
    EXPECT(STORE_NOTFOUND, store_step_get(f->s, "run-1", "c", &st, &g_err));
}

/* ---- two handles ---- */

typedef struct {
    const char *path;
    int n, failures, first_rc;
    char first_err[256];
} writer_arg;

static void *event_writer(void *p)
{
    writer_arg *a = p;
    store *s = NULL;
    char *err = NULL;
    store_options o = {.busy_timeout_ms = 10000};
    int rc = store_open(a->path, &o, &s, &err);
    for (int i = 0; rc == STORE_OK && i < a->n; i++) {
        char mid[32];
        snprintf(mid, sizeof mid, "w-%d", i);
        store_event ev = {.message_id = mid, .source = STORE_SRC_PUSH, .job_id = mid, .state = "JOB_STATE_RUNNING"};
        rc = store_inbox_put(s, &ev, NULL, &err);
        if (rc == STORE_OK && i % 50 == 0) { /* reads while the other handle holds the write lock */
            store_event_list l;
            rc = store_inbox_fetch(s, 5, &l, &err);
            store_event_list_free(&l);
        }
    }
    if (rc != STORE_OK) {
        a->failures++;
        a->first_rc = rc;
        snprintf(a->first_err, sizeof a->first_err, "%s", err ? err : "");
    }
    free(err);
    store_close(s);
    return NULL;
}

static void test_two_handles(void **state)
{
    fixture *f = *state;
    put_script(f->s, HASH_A);
    writer_arg a = {.path = f->path, .n = 400};
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, event_writer, &a), 0);
    /* Meanwhile the engine runs transactions that hold the write lock for a few ms each. */
    for (int i = 0; i < 40; i++) {
        char id[32];
        snprintf(id, sizeof id, "run-%d", i);
        OK(store_begin(f->s, &g_err));
        make_run(f->s, id, "etl", NULL);
        make_step(f->s, id, "a");
        struct timespec ts = {0, 3 * 1000 * 1000};
        nanosleep(&ts, NULL);
        OK(store_commit(f->s, &g_err));
    }
    pthread_join(th, NULL);
    if (a.failures) fail_msg("writer failed: %d %s", a.first_rc, a.first_err);

    int64_t counts[STORE_RUN_STATE_COUNT];
    OK(store_run_count_by_state(f->s, counts, &g_err));
    assert_int_equal(counts[STORE_RUN_PENDING], 40);
    store_event_list l;
    OK(store_inbox_fetch(f->s, 10000, &l, &g_err));
    assert_int_equal(l.count, 400);
    store_event_list_free(&l);

    /* Isolation: the second handle does not see an uncommitted run, then sees it after commit. */
    store *s2 = open_store(f, 0);
    OK(store_begin(f->s, &g_err));
    make_run(f->s, "hidden", "etl", NULL);
    store_run r;
    EXPECT(STORE_NOTFOUND, store_run_get(s2, "hidden", &r, &g_err));
    /* And its writes wait for the lock: with a short timeout it reports BUSY, not a crash or a hang. */
    store_options quick = {.busy_timeout_ms = 50};
    store *s3 = NULL;
    OK(store_open(f->path, &quick, &s3, &g_err));
    store_event ev = {.message_id = "late", .source = STORE_SRC_PUSH};
    EXPECT(STORE_BUSY, store_inbox_put(s3, &ev, NULL, &g_err));
    OK(store_commit(f->s, &g_err));
    OK(store_inbox_put(s3, &ev, NULL, &g_err));
    OK(store_run_get(s2, "hidden", &r, &g_err));
    store_run_free(&r);
    store_close(s3);
    store_close(s2);
}

/* ---- schema ---- */

static void test_migration_from_v1(void **state)
{
    fixture *f = *state;
    store_close(f->s);
    tu_rmtree(f->dir);
    assert_int_equal(mkdir(f->dir, 0700), 0);
    /* A store written by a binary that knew only schema 1 (no inbox, no check_failures). */
    f->s = open_store(f, 1);
    assert_int_equal(store_schema_version(f->s), 1);
    put_script(f->s, HASH_A);
    make_run(f->s, "old-run", "etl", "old-key");
    make_step(f->s, "old-run", "a");
    store_close(f->s);
    assert_raw(f->path, "PRAGMA user_version", "1");
    assert_raw(f->path, "SELECT count(*) FROM sqlite_schema WHERE name = 'inbox'", "0");

    f->s = open_store(f, 0);
    assert_int_equal(store_schema_version(f->s), 3);
    assert_raw(f->path, "PRAGMA user_version", "3");
    store_step st;
    OK(store_step_get(f->s, "old-run", "a", &st, &g_err));
    assert_int_equal(st.check_failures, 0);
    store_step_free(&st);
    OK(store_step_set_check(f->s, "old-run", "a", 1, 10, 4, NULL, &g_err));
    OK(store_step_get(f->s, "old-run", "a", &st, &g_err));
    assert_int_equal(st.check_failures, 4);
    store_step_free(&st);
    store_run r;
    OK(store_run_get_by_request_key(f->s, "old-key", &r, &g_err));
    assert_string_equal(r.id, "old-run");
    store_run_free(&r);
    store_event ev = {.message_id = "m", .source = STORE_SRC_PUSH};
    OK(store_inbox_put(f->s, &ev, NULL, &g_err));
    /* Opening an up-to-date store again changes nothing. */
    store *s2 = open_store(f, 0);
    assert_int_equal(store_schema_version(s2), 3);
    store_close(s2);
}

static void test_refuses_newer_schema(void **state)
{
    fixture *f = *state;
    put_script(f->s, HASH_A);
    store_close(f->s);
    f->s = NULL;
    free(raw_sql(f->path, "PRAGMA user_version = 99"));
    store *s = NULL;
    EXPECT(STORE_SCHEMA, store_open(f->path, NULL, &s, &g_err));
    assert_null(s);
    assert_non_null(strstr(g_err, "schema version 99, newer than this binary supports (3)"));
    /* The file is left alone. */
    assert_raw(f->path, "PRAGMA user_version", "99");
    assert_raw(f->path, "SELECT count(*) FROM scripts", "1");
}

static void test_corrupt_and_foreign_files(void **state)
{
    fixture *f = *state;
    char *p = NULL;
    store *s = NULL;

    /* Garbage bytes. */
    assert_true(asprintf(&p, "%s/garbage.db", f->dir) > 0);
    char junk[16384];
    for (size_t i = 0; i < sizeof junk - 1; i++) junk[i] = (char)('A' + (i * 7919) % 26);
    junk[sizeof junk - 1] = '\0';
    assert_int_equal(tu_write_file(p, junk), 0);
    EXPECT(STORE_CORRUPT, store_open(p, NULL, &s, &g_err));
    assert_null(s);
    assert_non_null(strstr(g_err, "garbage.db"));
    free(p);

    /* A real SQLite file of someone else's. */
    assert_true(asprintf(&p, "%s/foreign.db", f->dir) > 0);
    free(raw_sql(p, "CREATE TABLE t(x)"));
    EXPECT(STORE_CORRUPT, store_open(p, NULL, &s, &g_err));
    assert_non_null(strstr(g_err, "not a sluice store"));
    free(p);

    /* An empty file is a new, empty store. */
    assert_true(asprintf(&p, "%s/empty.db", f->dir) > 0);
    assert_int_equal(tu_write_file(p, ""), 0);
    OK(store_open(p, NULL, &s, &g_err));
    store_close(s);
    free(p);

    /* Bad values written behind the store's back surface as STORE_CORRUPT, not a crash. */
    put_script(f->s, HASH_A);
    make_run(f->s, "run-1", "etl", NULL);
    free(raw_sql(f->path, "PRAGMA ignore_check_constraints = ON; UPDATE runs SET state = 'bogus'"));
    store_run r;
    EXPECT(STORE_CORRUPT, store_run_get(f->s, "run-1", &r, &g_err));
    assert_non_null(strstr(g_err, "bogus"));
    assert_null(r.id);
    int64_t counts[STORE_RUN_STATE_COUNT];
    EXPECT(STORE_CORRUPT, store_run_count_by_state(f->s, counts, &g_err));
    store_run_list l;
    EXPECT(STORE_CORRUPT, store_run_list_page(f->s, NULL, &l, &g_err));
    store_run_list_free(&l);

    /* A store whose pages were overwritten: every call fails cleanly. */
    for (int i = 0; i < 200; i++) {
        char id[16];
        snprintf(id, sizeof id, "x%03d", i);
        make_run(f->s, id, "etl", NULL);
    }
    store_close(f->s);
    f->s = NULL;
    free(raw_sql(f->path, "PRAGMA wal_checkpoint(TRUNCATE)"));
    int fd = open(f->path, O_WRONLY);
    assert_true(fd >= 0);
    assert_int_equal(pwrite(fd, junk, 4096 * 3, 4096), 4096 * 3); /* pages 2-4: schema and tables */
    close(fd);
    int rc = store_open(f->path, NULL, &s, &g_err);
    if (rc == STORE_OK) {
        int64_t c[STORE_RUN_STATE_COUNT];
        EXPECT(STORE_CORRUPT, store_run_count_by_state(s, c, &g_err));
        store_close(s);
    } else {
        assert_int_equal(rc, STORE_CORRUPT);
        assert_non_null(g_err);
    }
}

/* ---- crash durability ---- */

#define CRASH_PAD 3000

/* The child: commits one "launch" per transaction (run + step + intent + inbox event) forever, acking each
 * committed index on `fd`. Invariant checked by the parent: runs are exactly r0..rN-1, each with one step
 * in launching whose request carries its own index and a full pad, and one inbox event. */
static void crash_child(const char *path, int start, int fd, int sync)
{
    store *s = NULL;
    char *err = NULL;
    store_options o = {.synchronous = sync ? STORE_SYNC_NORMAL : STORE_SYNC_FULL};
    if (store_open(path, &o, &s, &err) != STORE_OK) _exit(3);
    if (start == 0 && store_script_put(s, HASH_A, "wf", "src", &err) != STORE_OK) _exit(4);
    char *pad = malloc(CRASH_PAD + 1);
    memset(pad, 'p', CRASH_PAD);
    pad[CRASH_PAD] = '\0';
    for (int i = start;; i++) {
        char id[32], jn[32], req[CRASH_PAD + 128];
        snprintf(id, sizeof id, "r%07d", i);
        snprintf(jn, sizeof jn, "job-%07d", i);
        snprintf(req, sizeof req, "{\"i\":%d,\"pad\":\"%s\"}", i, pad);
        store_run r = {.id = id, .workflow = "wf", .script_hash = HASH_A, .state = STORE_RUN_RUNNING};
        store_step st = {.run_id = id, .name = "s", .state = STORE_STEP_PENDING};
        store_intent in = {.attempt = 1, .job_name = jn, .request_json = req, .next_check_at = i + 1};
        store_event ev = {.message_id = jn, .source = STORE_SRC_PUSH, .job_id = jn, .state = "JOB_STATE_RUNNING"};
        if (store_begin(s, &err) || store_run_create(s, &r, &err) || store_step_insert(s, &st, &err) ||
            store_step_record_intent(s, id, "s", STORE_STEP_PENDING, 1, &in, &err) ||
            store_inbox_put(s, &ev, NULL, &err) || store_commit(s, &err))
            _exit(5);
        if (write(fd, &i, sizeof i) != sizeof i) _exit(6);
    }
}

/* Checks the invariant over the whole file; returns the number of launches committed. */
static int crash_check(fixture *f, int acked)
{
    assert_raw(f->path, "PRAGMA integrity_check", "ok");
    store *s = open_store(f, 0);
    int64_t counts[STORE_RUN_STATE_COUNT];
    OK(store_run_count_by_state(s, counts, &g_err));
    int n = (int)counts[STORE_RUN_RUNNING];
    assert_true(n >= acked + 1); /* every acknowledged commit survived */
    store_step_list due;
    OK(store_step_due(s, INT64_MAX, 10000, &due, &g_err));
    assert_int_equal(due.count, (size_t)n); /* one launching step per run, no more, no less */
    for (int i = 0; i < n; i++) {
        store_step *st = &due.items[i]; /* ordered by next_check_at = i + 1 */
        char id[32], jn[32];
        snprintf(id, sizeof id, "r%07d", i);
        snprintf(jn, sizeof jn, "job-%07d", i);
        assert_string_equal(st->run_id, id);
        assert_string_equal(st->job_name, jn);
        assert_int_equal(st->state, STORE_STEP_LAUNCHING);
        assert_int_equal(st->attempt, 1);
        json_t *req = json_loads(st->request_json, 0, NULL);
        assert_non_null(req);
        assert_int_equal(json_integer_value(json_object_get(req, "i")), i);
        assert_int_equal(strlen(json_string_value(json_object_get(req, "pad"))), CRASH_PAD);
        json_decref(req);
    }
    store_step_list_free(&due);
    store_event_list ev;
    OK(store_inbox_fetch(s, 10000, &ev, &g_err));
    assert_int_equal(ev.count, (size_t)n);
    store_event_list_free(&ev);
    store_close(s);
    return n;
}

static void crash_rounds(fixture *f, int sync)
{
    store_close(f->s);
    f->s = NULL;
    unsigned seed = (unsigned)time(NULL) ^ (unsigned)getpid();
    srand(seed);
    print_message("crash test seed %u (%s)\n", seed, sync ? "NORMAL" : "FULL");
    int total = 0;
    for (int round = 0; round < 6; round++) {
        int fds[2];
        assert_int_equal(pipe(fds), 0);
        pid_t pid = fork();
        assert_true(pid >= 0);
        if (pid == 0) {
            close(fds[0]);
            crash_child(f->path, total, fds[1], sync);
            _exit(0);
        }
        close(fds[1]);
        /* Let it commit at least once, then kill it at a random moment within the next ~150 ms. */
        int acked = -1, v;
        struct pollfd pfd = {.fd = fds[0], .events = POLLIN};
        assert_true(poll(&pfd, 1, 10000) == 1);
        int wait_ms = 1 + rand() % 150;
        struct timespec ts = {0, (long)wait_ms * 1000000L};
        nanosleep(&ts, NULL);
        kill(pid, SIGKILL);
        int status = 0;
        assert_int_equal(waitpid(pid, &status, 0), pid);
        assert_true(WIFSIGNALED(status)); /* killed, not exited with an error */
        while (read(fds[0], &v, sizeof v) == sizeof v) acked = v;
        close(fds[0]);
        assert_true(acked >= total);
        int n = crash_check(f, acked);
        print_message("round %d: killed after %d ms, acked %d, found %d launches\n", round, wait_ms, acked + 1, n);
        total = n;
    }
    assert_true(total >= 6);
}

static void test_crash_durability_full(void **state) { crash_rounds(*state, 0); }
static void test_crash_durability_normal(void **state) { crash_rounds(*state, 1); }

/* ---- argument checks ---- */

static void test_invalid_arguments(void **state)
{
    fixture *f = *state;
    store_run r;
    store_step st;
    EXPECT(STORE_INVALID, store_run_get(NULL, "x", &r, &g_err));
    EXPECT(STORE_INVALID, store_run_get(f->s, NULL, &r, &g_err));
    EXPECT(STORE_INVALID, store_run_create(f->s, NULL, &g_err));
    EXPECT(STORE_INVALID, store_step_insert(f->s, &(store_step){.run_id = "r", .name = "n", .state = 77}, &g_err));
    EXPECT(STORE_INVALID, store_step_set_job(f->s, "r", "n", 0, "j", NULL, 0, &g_err));
    EXPECT(STORE_INVALID, store_step_set_state(f->s, "r", "n", 99, 1, STORE_STEP_RUNNING, &g_err));
    EXPECT(STORE_INVALID, store_step_finish(f->s, "r", "n", 1, STORE_STEP_LAUNCHING, NULL, NULL, NULL, &g_err));
    EXPECT(STORE_INVALID, store_step_get(f->s, "", "n", &st, &g_err));
    EXPECT(STORE_INVALID, store_inbox_put(f->s, &(store_event){.message_id = "m", .source = 9}, NULL, &g_err));
    EXPECT(STORE_INVALID, store_inbox_fetch(f->s, 0, NULL, &g_err));
    /* A NULL err is allowed everywhere. */
    assert_int_equal(store_run_get(f->s, "missing", &r, NULL), STORE_NOTFOUND);
    assert_string_equal(store_strerror(STORE_CONFLICT), "conflict");
    assert_string_equal(store_run_state_name(STORE_RUN_CANCELLING), "cancelling");
    assert_string_equal(store_step_state_name(STORE_STEP_SKIPPED), "skipped");
    store_step_state ss;
    assert_int_equal(store_step_state_parse("waiting", &ss), STORE_OK);
    assert_int_equal(ss, STORE_STEP_WAITING);
    assert_int_equal(store_step_state_parse("WAITING", &ss), STORE_INVALID);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_open_url_and_pragmas, setup, teardown),
        cmocka_unit_test_setup_teardown(test_script_crud, setup, teardown),
        cmocka_unit_test_setup_teardown(test_run_crud_and_cas, setup, teardown),
        cmocka_unit_test_setup_teardown(test_run_list_pages, setup, teardown),
        cmocka_unit_test_setup_teardown(test_step_crud, setup, teardown),
        cmocka_unit_test_setup_teardown(test_step_intent_lifecycle, setup, teardown),
        cmocka_unit_test_setup_teardown(test_step_due, setup, teardown),
        cmocka_unit_test_setup_teardown(test_inbox_dedupe, setup, teardown),
        cmocka_unit_test_setup_teardown(test_transactions, setup, teardown),
        cmocka_unit_test_setup_teardown(test_two_handles, setup, teardown),
        cmocka_unit_test_setup_teardown(test_migration_from_v1, setup, teardown),
        cmocka_unit_test_setup_teardown(test_refuses_newer_schema, setup, teardown),
        cmocka_unit_test_setup_teardown(test_corrupt_and_foreign_files, setup, teardown),
        cmocka_unit_test_setup_teardown(test_crash_durability_full, setup, teardown),
        cmocka_unit_test_setup_teardown(test_crash_durability_normal, setup, teardown),
        cmocka_unit_test_setup_teardown(test_invalid_arguments, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
