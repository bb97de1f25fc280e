/* test_store: the store contract, each test on a SQLite file in a temp dir and on a PostgreSQL schema of a
 * real server (store_fixture.h): CRUD of scripts, runs, steps and events, compare-and-set conflicts, inbox
 * dedupe, transactions and the reconciler's due query. */
#include "store_fixture.h"

/* ---- open ---- */

static void test_open_url_and_settings(void **state)
{
    fixture *f = *state;
    assert_int_equal(store_schema_version(f->s), store_schema_latest());
    assert_int_equal(store_schema_latest(), 10);
    if (!is_fs(f)) assert_query(f, version_sql(f), "10");
    char *desc = NULL;
    OK(store_describe(f->s, &desc, &g_err));
    if (is_fs(f)) {
        /* The document counters are part of the description (docs/cost.md is computed from them). */
        json_t *d = json_loads(desc, 0, NULL);
        assert_non_null(d);
        assert_string_equal(json_string_value(json_object_get(d, "backend")), "firestore");
        assert_int_equal(json_integer_value(json_object_get(d, "schema_version")), store_schema_latest());
        assert_true(json_is_true(json_object_get(d, "emulator")));
        assert_true(json_integer_value(json_object_get(d, "reads")) >= 1); /* the schema document */
        assert_non_null(json_object_get(d, "writes"));
        assert_non_null(json_object_get(d, "deletes"));
        json_decref(d);
        int64_t r0 = 0, w0 = 0, d0 = 0, r1 = 0, w1 = 0, d1 = 0;
        OK(store_firestore_counts(f->s, &r0, &w0, &d0));
        put_script(f->s, HASH_B); /* one read (is it there?), one write */
        OK(store_firestore_counts(f->s, &r1, &w1, &d1));
        assert_int_equal(r1 - r0, 1);
        assert_int_equal(w1 - w0, 1);
        assert_int_equal(d1 - d0, 0);
    } else if (is_pg(f)) {
        json_t *d = json_loads(desc, 0, NULL);
        assert_non_null(d);
        assert_string_equal(json_string_value(json_object_get(d, "backend")), "postgres");
        assert_int_equal(json_integer_value(json_object_get(d, "schema_version")), 10);
        assert_string_equal(json_string_value(json_object_get(d, "synchronous_commit")), "on");
        assert_int_equal(json_integer_value(json_object_get(d, "busy_timeout_ms")), 5000);
        assert_string_equal(json_string_value(json_object_get(d, "isolation")), "read committed");
        assert_string_equal(json_string_value(json_object_get(d, "database")), "sluice");
        assert_true(strncmp(json_string_value(json_object_get(d, "server_version")), "15.", 3) == 0);
        json_decref(d);
    } else {
        assert_query(f, "PRAGMA journal_mode", "wal");
        assert_query(f, "PRAGMA application_id", "1397506885");
        assert_string_equal(desc, "{\"backend\":\"sqlite\",\"schema_version\":10,\"journal_mode\":\"wal\","
                                  "\"synchronous\":\"full\",\"foreign_keys\":true,\"busy_timeout_ms\":5000,"
                                  "\"sqlite_version\":\"" SQLITE_VERSION "\"}");
    }
    free(desc);

    /* A second handle on the same store, with other options: SQLite as "sqlite:PATH", PostgreSQL as the
     * same conninfo. */
    char *url = NULL;
    assert_true(asprintf(&url, is_pg(f) || is_fs(f) ? "%s" : "sqlite:%s", f->url) > 0);
    store *s2 = NULL;
    store_options o = {.synchronous = STORE_SYNC_NORMAL, .busy_timeout_ms = 250};
    OK(store_open(url, &o, &s2, &g_err));
    OK(store_describe(s2, &desc, &g_err));
    if (is_pg(f)) {
        assert_non_null(strstr(desc, "\"synchronous_commit\":\"on\"")); /* durable whatever `synchronous` says */
    } else if (is_fs(f)) {
        assert_non_null(strstr(desc, "\"backend\":\"firestore\""));
    } else {
        assert_non_null(strstr(desc, "\"synchronous\":\"normal\""));
    }
    assert_non_null(strstr(desc, "\"busy_timeout_ms\":250,"));
    free(desc);
    OK(store_flush(s2, &g_err));
    put_script(s2, HASH_A);
    store_close(s2);
    free(url);
    store_script sc;
    OK(store_script_get(f->s, HASH_A, &sc, &g_err));
    assert_string_equal(sc.source, "return {}");
    store_script_free(&sc);

    EXPECT(STORE_INVALID, store_open("mysql://db/x", NULL, &s2, &g_err));
    assert_null(s2);
    EXPECT(STORE_INVALID, store_open("", NULL, &s2, &g_err));
    EXPECT(STORE_INVALID, store_open("sqlite:", NULL, &s2, &g_err));
    store_options bad = {.schema_version = 99};
    EXPECT(STORE_INVALID, store_open(f->url, &bad, &s2, &g_err));
    if (is_fs(f)) {
        EXPECT(STORE_INVALID, store_open("firestore://", NULL, &s2, &g_err));
        EXPECT(STORE_INVALID, store_open("firestore://p/a/b", NULL, &s2, &g_err));
        EXPECT(STORE_INVALID, store_open("firestore://p q", NULL, &s2, &g_err));
        assert_null(s2);
        int64_t r = 0;
        store *sq = NULL;
        char *p = NULL;
        assert_true(asprintf(&p, "%s/other.db", f->dir) > 0);
        OK(store_open(p, NULL, &sq, &g_err));
        assert_int_equal(store_firestore_counts(sq, &r, NULL, NULL), STORE_INVALID); /* only a Firestore handle counts */
        store_close(sq);
        free(p);
    } else if (is_pg(f)) {
        /* Both spellings reach libpq, whose message says what failed. */
        EXPECT(STORE_IO, store_open("postgresql:///x?host=/nonexistent-dir", NULL, &s2, &g_err));
        assert_non_null(strstr(g_err, "/nonexistent-dir/.s.PGSQL.5432"));
        EXPECT(STORE_IO, store_open("host=/nonexistent-dir dbname=x", NULL, &s2, &g_err));
        assert_non_null(strstr(g_err, "/nonexistent-dir/.s.PGSQL.5432"));
        EXPECT(STORE_IO, store_open("postgres://sluice@/nope?host=/nonexistent-dir", NULL, &s2, &g_err));
        /* A database that does not exist on a running server. */
        char *nodb = NULL;
        assert_true(asprintf(&nodb, "%s dbname=nope", g_pg.base) > 0);
        EXPECT(STORE_IO, store_open(nodb, NULL, &s2, &g_err));
        assert_non_null(strstr(g_err, "\"nope\" does not exist"));
        free(nodb);
    } else {
        EXPECT(STORE_IO, store_open("/nonexistent-dir/x/y.db", NULL, &s2, &g_err));
        assert_non_null(strstr(g_err, "/nonexistent-dir/x/y.db"));
        /* A path that merely contains '=' after a '/' is a file, not a conninfo. */
        char *p = NULL;
        assert_true(asprintf(&p, "%s/host=x.db", f->dir) > 0);
        OK(store_open(p, NULL, &s2, &g_err));
        OK(store_describe(s2, &desc, &g_err));
        assert_non_null(strstr(desc, "\"backend\":\"sqlite\""));
        free(desc);
        store_close(s2);
        free(p);
    }
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

/* The web UI's store support: store_run_find_page (runs with a failed step; search by run id prefix, job name
 * prefix or job id; paging like store_run_list_page), store_step_set_cause, and running_at. */
static void test_run_find_page(void **state)
{
    fixture *f = *state;
    put_script(f->s, HASH_A);
    for (int i = 0; i < 12; i++) {
        char id[16], jn[64], jid[32];
        snprintf(id, sizeof id, "q%02d", i);
        f->now = 1000 + i * 10;
        make_run(f->s, id, i % 2 ? "wf-b" : "wf-a", NULL);
        snprintf(jn, sizeof jn, "load--%s-1", id);
        snprintf(jid, sizeof jid, "job-%02d", i);
        store_step st = {.run_id = id, .name = "load", .state = i % 4 == 1 ? STORE_STEP_FAILED : STORE_STEP_SUCCEEDED,
                         .job_name = jn, .job_id = jid};
        OK(store_step_insert(f->s, &st, &g_err));
    }
    /* failed step: q01, q05, q09 (newest first), two per page */
    store_run_query q = {.base = {.state = STORE_RUN_ANY, .limit = 2}, .failed_step = 1};
    store_run_list l;
    OK(store_run_find_page(f->s, &q, &l, &g_err));
    assert_int_equal(l.count, 2);
    assert_string_equal(l.items[0].id, "q09");
    assert_string_equal(l.items[1].id, "q05");
    assert_non_null(l.next_cursor);
    q.base.cursor = l.next_cursor;
    store_run_list l2;
    OK(store_run_find_page(f->s, &q, &l2, &g_err));
    assert_int_equal(l2.count, 1);
    assert_string_equal(l2.items[0].id, "q01");
    assert_null(l2.next_cursor);
    store_run_list_free(&l);
    store_run_list_free(&l2);
    /* with a workflow: wf-b holds all three */
    q = (store_run_query){.base = {.state = STORE_RUN_ANY, .workflow = "wf-a"}, .failed_step = 1};
    OK(store_run_find_page(f->s, &q, &l, &g_err));
    assert_int_equal(l.count, 0);
    store_run_list_free(&l);
    /* search: run id prefix, job name prefix, exact job id; no match */
    q = (store_run_query){.base = {.state = STORE_RUN_ANY}, .search = "q1"};
    OK(store_run_find_page(f->s, &q, &l, &g_err));
    assert_int_equal(l.count, 2); /* q11, q10 */
    store_run_list_free(&l);
    q.search = "load--q03";
    OK(store_run_find_page(f->s, &q, &l, &g_err));
    assert_int_equal(l.count, 1);
    assert_string_equal(l.items[0].id, "q03");
    store_run_list_free(&l);
    q.search = "job-07";
    OK(store_run_find_page(f->s, &q, &l, &g_err));
    assert_int_equal(l.count, 1);
    assert_string_equal(l.items[0].id, "q07");
    store_run_list_free(&l);
    q.search = "job-0"; /* a job id matches exactly, never by prefix */
    OK(store_run_find_page(f->s, &q, &l, &g_err));
    assert_int_equal(l.count, 0);
    store_run_list_free(&l);
    /* neither condition: the same as store_run_list_page */
    q = (store_run_query){.base = {.state = STORE_RUN_ANY, .limit = 3}, .search = ""};
    OK(store_run_find_page(f->s, &q, &l, &g_err));
    assert_int_equal(l.count, 3);
    assert_string_equal(l.items[0].id, "q11");
    store_run_list_free(&l);
    q.base.cursor = "garbage";
    q.failed_step = 1;
    EXPECT(STORE_INVALID, store_run_find_page(f->s, &q, &l, &g_err));

    /* failure_cause: kept with the attempt, refused for another, cleared by a new intent */
    OK(store_step_set_cause(f->s, "q01", "load", 1, "Workflow failed. Causes: x", &g_err));
    store_step st;
    OK(store_step_get(f->s, "q01", "load", &st, &g_err));
    assert_string_equal(st.failure_cause, "Workflow failed. Causes: x");
    store_step_free(&st);
    EXPECT(STORE_CONFLICT, store_step_set_cause(f->s, "q01", "load", 2, "other", &g_err));
    EXPECT(STORE_NOTFOUND, store_step_set_cause(f->s, "q01", "nope", 1, "other", &g_err));

    /* running_at: set the first time a RUNNING job state is recorded, kept after */
    store_step pend = {.run_id = "q00", .name = "next"};
    OK(store_step_insert(f->s, &pend, &g_err));
    store_intent in = {.attempt = 1, .job_name = "next--q00-1", .project = "p", .region = "r", .request_json = "{}"};
    OK(store_step_record_intent(f->s, "q00", "next", STORE_STEP_PENDING, STORE_ATTEMPT_ANY, &in, &g_err));
    f->now = 5000;
    OK(store_step_set_job(f->s, "q00", "next", 1, "job-next", "JOB_STATE_PENDING", 0, &g_err));
    OK(store_step_get(f->s, "q00", "next", &st, &g_err));
    assert_int_equal(st.running_at, 0);
    store_step_free(&st);
    f->now = 6000;
    OK(store_step_set_check(f->s, "q00", "next", 1, 0, 0, "JOB_STATE_RUNNING", &g_err));
    f->now = 7000;
    OK(store_step_set_check(f->s, "q00", "next", 1, 0, 0, "JOB_STATE_RUNNING", &g_err));
    OK(store_step_get(f->s, "q00", "next", &st, &g_err));
    assert_int_equal(st.running_at, 6000);
    store_step_free(&st);
}

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

    /* The claim is handed on only by whoever still holds it: next_check_at is the token. */
    OK(store_step_reclaim(f->s, "run-1", "load", 1, 2000, 2200, 1, &g_err));
    EXPECT(STORE_CONFLICT, store_step_reclaim(f->s, "run-1", "load", 1, 2000, 2300, 0, &g_err)); /* stale claim */
    EXPECT(STORE_CONFLICT, store_step_reclaim(f->s, "run-1", "load", 2, 2200, 2300, 0, &g_err)); /* other attempt */
    OK(store_step_get(f->s, "run-1", "load", &st, &g_err));
    assert_int_equal(st.next_check_at, 2200);
    assert_int_equal(st.check_failures, 1);
    store_step_free(&st);
    OK(store_step_reclaim(f->s, "run-1", "load", 1, 2200, 2000, 0, &g_err));

    EXPECT(STORE_CONFLICT, store_step_set_job(f->s, "run-1", "load", 2, "job-1", NULL, 2500, &g_err));
    OK(store_step_set_job(f->s, "run-1", "load", 1, "job-1", "JOB_STATE_PENDING", 2500, &g_err));
    /* A step with its job is no longer anybody's to launch. */
    EXPECT(STORE_CONFLICT, store_step_reclaim(f->s, "run-1", "load", 1, 2500, 2600, 0, &g_err));
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
    due_step(f->s, "e", STORE_STEP_PENDING, 10);    /* to start (schema 4): due */
    due_step(f->s, "f", STORE_STEP_RUNNING, 1000);  /* later */
    due_step(f->s, "g", STORE_STEP_RUNNING, 200);   /* ties with d: insertion order */
    due_step(f->s, "h", STORE_STEP_WAITING, 5);     /* a join waiting for its predecessors: never due */
    store_step_list l;
    OK(store_step_due(f->s, 500, 10, &l, &g_err));
    assert_int_equal(l.count, 5);
    assert_string_equal(l.items[0].name, "e");
    assert_string_equal(l.items[1].name, "b");
    assert_string_equal(l.items[2].name, "d");
    assert_string_equal(l.items[3].name, "g");
    assert_string_equal(l.items[4].name, "a");
    store_step_list_free(&l);
    OK(store_step_due(f->s, 500, 2, &l, &g_err));
    assert_int_equal(l.count, 2);
    assert_string_equal(l.items[1].name, "b");
    store_step_list_free(&l);
    OK(store_step_set_check(f->s, "run-1", "b", 1, 2000, 1, NULL, &g_err));
    OK(store_step_finish(f->s, "run-1", "d", 1, STORE_STEP_CANCELLED, NULL, NULL, NULL, &g_err));
    OK(store_step_finish(f->s, "run-1", "e", 1, STORE_STEP_SKIPPED, NULL, NULL, NULL, &g_err));
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

    /* The plan: the partial index, in order, no sort and no table scan. Firestore: one range on the single-field
     * index of `due`, which only steps the engine must act on have. */
    if (is_fs(f)) return;
    if (is_pg(f)) {
        /* A table this small is read sequentially by choice; with that option priced out, the plan shows
         * the index can serve the query in order (no Sort node). */
        char *plan = pg_harness_query_rows(f->url, "SET enable_seqscan = off; EXPLAIN SELECT * FROM steps WHERE"
                                                   " state IN ('pending','launching','running','cancelling')"
                                                   " AND next_check_at <= 5 ORDER BY next_check_at, id LIMIT 10");
        if (strstr(plan, "Index Scan using steps_due") == NULL || strstr(plan, "Sort") != NULL)
            fail_msg("due query plan:\n%s", plan);
        free(plan);
        return;
    }
    sqlite3 *db = NULL;
    assert_int_equal(sqlite3_open(f->path, &db), SQLITE_OK);
    sqlite3_stmt *st = NULL;
    assert_int_equal(sqlite3_prepare_v2(db,
                                        "EXPLAIN QUERY PLAN SELECT * FROM steps WHERE state IN ('pending','launching','running','cancelling')"
                                        " AND next_check_at <= 5 ORDER BY next_check_at, id LIMIT 10",
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

/* Schema 5: the first hint is kept, it only brings the check forward, only in-flight steps take one, a new
 * attempt clears it; next_due is the earliest due time of any step the engine must act on. */
static void test_step_hint_and_next_due(void **state)
{
    fixture *f = *state;
    put_script(f->s, HASH_A);
    make_run(f->s, "run-1", "etl", NULL);
    int64_t at = 0;
    OK(store_step_next_due(f->s, &at, &g_err));
    assert_true(at == INT64_MAX);
    due_step(f->s, "a", STORE_STEP_RUNNING, 5000);
    due_step(f->s, "w", STORE_STEP_WAITING, 10); /* never due, so not counted */
    OK(store_step_next_due(f->s, &at, &g_err));
    assert_int_equal(at, 5000);
    OK(store_step_set_hint(f->s, "run-1", "a", 1, 100, 200, &g_err));
    store_step st;
    OK(store_step_get(f->s, "run-1", "a", &st, &g_err));
    assert_int_equal(st.hint_at, 100);
    assert_int_equal(st.next_check_at, 200);
    store_step_free(&st);
    /* a later hint keeps the first and never puts the check back */
    OK(store_step_set_hint(f->s, "run-1", "a", 1, 150, 900, &g_err));
    OK(store_step_get(f->s, "run-1", "a", &st, &g_err));
    assert_int_equal(st.hint_at, 100);
    assert_int_equal(st.next_check_at, 200);
    store_step_free(&st);
    OK(store_step_next_due(f->s, &at, &g_err));
    assert_int_equal(at, 200);
    EXPECT(STORE_CONFLICT, store_step_set_hint(f->s, "run-1", "a", 2, 100, 200, &g_err));
    EXPECT(STORE_CONFLICT, store_step_set_hint(f->s, "run-1", "w", 1, 100, 200, &g_err));
    EXPECT(STORE_INVALID, store_step_set_hint(f->s, "run-1", "a", 1, 0, 200, &g_err));
    /* a new attempt starts without a hint */
    store_intent in = {.attempt = 2, .job_name = "a--run1-2", .project = "p", .region = "r",
                       .request_json = "{}", .next_check_at = 7000};
    OK(store_step_record_intent(f->s, "run-1", "a", STORE_STEP_ANY, STORE_ATTEMPT_ANY, &in, &g_err));
    OK(store_step_get(f->s, "run-1", "a", &st, &g_err));
    assert_int_equal(st.hint_at, 0);
    store_step_free(&st);
    OK(store_step_next_due(f->s, &at, &g_err));
    assert_int_equal(at, 7000);
}

/* Redrive: a terminal run back to running, its error and end cleared, optionally on another version with other
 * params; retention: finished runs older than a time go with their steps, in bounded batches. */
static void test_run_redrive_and_prune(void **state)
{
    fixture *f = *state;
    put_script(f->s, HASH_A);
    put_script(f->s, HASH_B);
    make_run(f->s, "old-1", "etl", NULL);
    make_run(f->s, "old-2", "etl", NULL);
    make_run(f->s, "live", "etl", NULL);
    make_step(f->s, "old-1", "a");
    OK(store_run_set_state(f->s, "old-1", STORE_RUN_ANY, STORE_RUN_FAILED, "step a failed", &g_err));
    OK(store_run_set_state(f->s, "old-2", STORE_RUN_ANY, STORE_RUN_SUCCEEDED, NULL, &g_err));
    EXPECT(STORE_CONFLICT, store_run_redrive(f->s, "old-1", STORE_RUN_CANCELLED, NULL, NULL, &g_err));
    EXPECT(STORE_INVALID, store_run_redrive(f->s, "old-1", STORE_RUN_RUNNING, NULL, NULL, &g_err));
    EXPECT(STORE_INVALID, store_run_redrive(f->s, "old-1", STORE_RUN_FAILED, NULL, "[1]", &g_err));
    OK(store_run_redrive(f->s, "old-1", STORE_RUN_FAILED, HASH_B, "{\"n\":2}", &g_err));
    store_run r;
    OK(store_run_get(f->s, "old-1", &r, &g_err));
    assert_int_equal(r.state, STORE_RUN_RUNNING);
    assert_null(r.error);
    assert_int_equal(r.finished_at, 0);
    assert_string_equal(r.script_hash, HASH_B);
    assert_string_equal(r.params_json, "{\"n\":2}");
    store_run_free(&r);
    OK(store_run_set_state(f->s, "old-1", STORE_RUN_ANY, STORE_RUN_CANCELLED, NULL, &g_err));
    int64_t n = -1;
    OK(store_run_prune(f->s, f->now + 1, 1, &n, &g_err)); /* one at a time */
    assert_int_equal(n, 1);
    OK(store_run_prune(f->s, f->now + 1, 100, &n, &g_err));
    assert_int_equal(n, 1);
    OK(store_run_prune(f->s, f->now + 1, 100, &n, &g_err));
    assert_int_equal(n, 0); /* "live" is not finished */
    EXPECT(STORE_NOTFOUND, store_run_get(f->s, "old-1", &r, &g_err));
    store_step st;
    EXPECT(STORE_NOTFOUND, store_step_get(f->s, "old-1", "a", &st, &g_err)); /* its steps went with it */
    OK(store_run_get(f->s, "live", &r, &g_err));
    store_run_free(&r);
    EXPECT(STORE_INVALID, store_run_prune(f->s, 0, 0, &n, &g_err));
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

/* ---- reading an existing store only; file modes; secrets in messages (issue 17) ---- */

/* Regression (issue 17, finding 16): `sluice status --store typo.db` created an empty store and exited 0. With
 * must_exist, a missing SQLite file, an empty one, or a PostgreSQL schema without a store is STORE_NOTFOUND, and
 * nothing is created; an existing store opens. */
static void test_open_must_exist(void **state)
{
    fixture *f = *state;
    store_options must = {.must_exist = 1};
    store *s = NULL;
    char *url = fixture_new_url(f, "typo.db");
    assert_non_null(url);
    EXPECT(STORE_NOTFOUND, store_open(url, &must, &s, &g_err));
    assert_null(s);
    assert_non_null(g_err);
    if (is_fs(f)) {
        EXPECT(STORE_NOTFOUND, store_open(url, &must, &s, &g_err)); /* the first attempt created nothing */
    } else if (is_pg(f)) {
        char *n = raw_query_at(f, url, "SELECT count(*) FROM pg_catalog.pg_tables WHERE schemaname = current_schema()");
        assert_string_equal(n, "0"); /* no table was created */
        free(n);
    } else {
        struct stat sb;
        assert_int_equal(stat(url, &sb), -1); /* no file was created */
        int fd = open(url, O_WRONLY | O_CREAT, 0600); /* an empty file is no store either */
        assert_true(fd >= 0);
        close(fd);
        EXPECT(STORE_NOTFOUND, store_open(url, &must, &s, &g_err));
        assert_int_equal(stat(url, &sb), 0);
        assert_int_equal(sb.st_size, 0);
    }
    store_options make = {0};
    OK(store_open(url, &make, &s, &g_err));
    store_close(s);
    s = NULL;
    OK(store_open(url, &must, &s, &g_err)); /* a store that exists opens */
    assert_int_equal(store_schema_version(s), store_schema_latest());
    store_close(s);
    free(url);
}

/* Regression (issue 17, finding 11): the SQLite store's files were created 0644 (world-readable run parameters,
 * results and errors). The database, its -wal and its -shm are 0600 under a umask of 022; an existing file's
 * mode is left as it is. */
static void test_sqlite_files_private(void **state)
{
    fixture *f = *state;
    mode_t old = umask(022);
    char *url = fixture_new_url(f, "private.db");
    store *s = NULL;
    OK(store_open(url, NULL, &s, &g_err));
    put_script(s, HASH_B); /* a write: the -wal and -shm files exist while the handle is open */
    const char *suffixes[] = {"", "-wal", "-shm"};
    for (size_t i = 0; i < 3; i++) {
        char *p = NULL;
        assert_true(asprintf(&p, "%s%s", url, suffixes[i]) > 0);
        struct stat sb;
        assert_int_equal(stat(p, &sb), 0);
        print_message("%s: %o\n", p, (unsigned)(sb.st_mode & 0777));
        assert_int_equal(sb.st_mode & 0777, 0600);
        free(p);
    }
    store_close(s);
    /* an operator's choice on an existing file stays */
    assert_int_equal(chmod(url, 0640), 0);
    OK(store_open(url, NULL, &s, &g_err));
    store_close(s);
    struct stat sb;
    assert_int_equal(stat(url, &sb), 0);
    assert_int_equal(sb.st_mode & 0777, 0640);
    umask(old);
    free(url);
}

/* Regression (issue 17, finding 5): a PostgreSQL password given in --store was printed in the error when the
 * store could not be opened (libpq's own messages may echo the connection string too). The shown form masks it;
 * store_open's message never holds it, however the string is malformed. */
static void test_pg_password_redacted(void **state)
{
    (void)state;
    static const struct {
        const char *url, *shown;
    } cases[] = {
        {"postgres://u:S3cretPW@127.0.0.1:1/db", "postgres://u:***@127.0.0.1:1/db"},
        {"postgresql://u@127.0.0.1:1/db?sslmode=disable&password=S3cretPW", "postgresql://u@127.0.0.1:1/db?sslmode=disable&password=***"},
        {"postgres://u:S3c%zzretPW@127.0.0.1:1/db", "postgres://u:***@127.0.0.1:1/db"},
        {"postgres://u:S3cret/PW@127.0.0.1:1/db", "postgres://u:***@127.0.0.1:1/db"},
        {"postgres://u:S3c@ret@PW@127.0.0.1:1/db", "postgres://u:***@127.0.0.1:1/db"},
        {"postgres://u:S3cretPW@[::1:1/db", "postgres://u:***@[::1:1/db"},
        {"host=127.0.0.1 port=1 user=u password=S3cretPW dbname=db", "user=u password=*** dbname=db host=127.0.0.1 port=1"},
        {"host=127.0.0.1 port=1 password='S3cret PW' dbname='my db'", "password=*** dbname='my db' host=127.0.0.1 port=1"},
        {"host=127.0.0.1 port=1 sslpassword=S3cretPW", "host=127.0.0.1 port=1 sslpassword=***"},
        {"host=127.0.0.1 password=S3cret PW", NULL}, /* libpq cannot parse it */
        {"host=127.0.0.1 password='S3cretPW", NULL},
        {"host=127.0.0.1 port=1 dbname=db", "host=127.0.0.1 port=1 dbname=db"}, /* nothing secret: as given */
        {"/tmp/S3cretPW.db", "/tmp/S3cretPW.db"},                              /* a SQLite path, as given */
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        char *shown = store_url_redacted(cases[i].url);
        assert_non_null(shown);
        print_message("%s -> %s\n", cases[i].url, shown);
        if (cases[i].shown != NULL) assert_string_equal(shown, cases[i].shown);
        if (strncmp(cases[i].url, "/tmp", 4) != 0) {
            assert_null(strstr(shown, "S3cret"));
            assert_null(strstr(shown, "PW"));
        }
        free(shown);
        if (cases[i].url[0] == '/') continue;
        store *s = NULL;
        char *err = NULL;
        assert_int_not_equal(store_open(cases[i].url, NULL, &s, &err), STORE_OK);
        assert_non_null(err);
        print_message("  store_open: %s\n", err);
        assert_null(strstr(err, "S3cret"));
        assert_null(strstr(err, "PW"));
        free(err);
    }
    char *shown = store_url_redacted("mysql://u:S3cretPW@h/db"); /* refused by store_open, masked all the same */
    assert_string_equal(shown, "mysql://u:***@h/db");
    free(shown);
    store *s = NULL;
    char *err = NULL;
    assert_int_equal(store_open("mysql://u:S3cretPW@h/db", NULL, &s, &err), STORE_INVALID);
    assert_null(strstr(err, "S3cret"));
    free(err);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        STORE_TEST(test_open_url_and_settings),
        STORE_TEST(test_script_crud),
        STORE_TEST(test_run_crud_and_cas),
        STORE_TEST(test_run_list_pages),
        STORE_TEST(test_run_find_page),
        STORE_TEST(test_step_crud),
        STORE_TEST(test_step_intent_lifecycle),
        STORE_TEST(test_step_due),
        STORE_TEST(test_step_hint_and_next_due),
        STORE_TEST(test_run_redrive_and_prune),
        STORE_TEST(test_inbox_dedupe),
        STORE_TEST(test_transactions),
        STORE_TEST(test_invalid_arguments),
        STORE_TEST(test_open_must_exist),
        SQLITE_TEST(test_sqlite_files_private),
        SQLITE_TEST(test_pg_password_redacted),
    };
    return STORE_RUN_TESTS(tests);
}
