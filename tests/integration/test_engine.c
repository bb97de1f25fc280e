/* Engine: every transition against the scripted fake Dataflow API (fake_dataflow.h) and an injected clock, with a
 * real SQLite store in a temp dir: chains, fan-out/join, choice, retry, on_failure, timeout, cancellation, Lua
 * errors, rejected launches, unknown launch outcomes, crash recovery of launch intents, duplicate/reordered events. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine.h"
#include "fake_dataflow.h"
#include "fs_harness.h"
#include "pg_harness.h"
#include "testutil.h"

/* ---- the fake API (fake_dataflow.h) on a fake clock ---- */

static int64_t g_now = 1700000000000;
static int64_t clock_fn(void *ud)
{
    (void)ud;
    return g_now;
}

/* ---- fixture ---- */

typedef struct {
    char *dir, *db;
    store *st;
    fake_dataflow api;
    engine *e;
} fx;

static engine *new_engine(fx *f)
{
    engine_options o = {.st = f->st, .api = &f->api.base, .now_ms = clock_fn};
    o.rec = rec_policy_default();
    o.rec.poll_ms = 1000;
    o.rec.lease_ms = 5000;
    char *err = NULL;
    engine *e = engine_new(&o, &err);
    assert_non_null(e);
    return e;
}

/* $SLUICE_TEST_STORE=postgres (the ctest integration.test_engine.postgres) runs every test on a PostgreSQL store: a
 * fresh schema per test on the server pg_harness.h starts for this executable. $SLUICE_TEST_STORE=firestore
 * (integration.test_engine.firestore): a project of its own per test on the Firestore emulator fs_harness.h starts; without
 * gcloud the executable says so and exits 77 (skipped), under CI=true 1. Otherwise a SQLite file. */
static pg_harness g_pg;
static int g_pg_on; /* 1 running, -1 failed to start */
static fs_harness g_fs;
static int g_fs_on; /* 1 running */

static int group_setup(void **state)
{
    (void)state;
    const char *which = getenv("SLUICE_TEST_STORE");
    if (which != NULL && strcmp(which, "firestore") == 0) {
        if (fs_harness_start(&g_fs) != 0) {
            print_error("%s: the Firestore emulator cannot start: %s\n", fs_harness_must_run() ? "FAIL" : "SKIP",
                        g_fs.err);
            exit(fs_harness_must_run() ? 1 : 77);
        }
        g_fs_on = 1;
        return 0;
    }
    if (which == NULL || strcmp(which, "postgres") != 0) return 0;
    g_pg_on = pg_harness_start(&g_pg) == 0 ? 1 : -1;
    if (g_pg_on < 0) print_error("cannot start the PostgreSQL test server: %s\n", g_pg.err);
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    if (g_pg_on == 1) pg_harness_stop(&g_pg);
    if (g_fs_on == 1) fs_harness_stop(&g_fs);
    return 0;
}

static int setup(void **state)
{
    if (g_pg_on < 0) {
        print_error("FAIL: the PostgreSQL test server is not running: %s\n", g_pg.err);
        return -1;
    }
    fx *f = calloc(1, sizeof *f);
    f->dir = tu_tempdir();
    if (g_pg_on == 1) f->db = pg_harness_new_schema(&g_pg);
    else if (g_fs_on == 1) f->db = fs_harness_new_url(&g_fs);
    else assert_true(asprintf(&f->db, "%s/engine.db", f->dir) > 0);
    assert_non_null(f->db);
    store_options so = {.synchronous = STORE_SYNC_NORMAL, .clock_ms = clock_fn};
    char *err = NULL;
    assert_int_equal(store_open(f->db, &so, &f->st, &err), STORE_OK);
    fd_init(&f->api);
    f->api.now = &g_now;
    f->e = new_engine(f);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fx *f = *state;
    engine_free(f->e);
    store_close(f->st);
    fd_fini(&f->api); /* answers the calls of a "crashed" engine: they only release themselves */
    tu_rmtree(f->dir);
    free(f->dir);
    free(f->db);
    free(f);
    return 0;
}

static void add_src(fx *f, const char *src)
{
    wf_diags d = {0};
    wf_workflow *wf = wf_load_source("t.lua", src, strlen(src), NULL, &d);
    for (size_t i = 0; i < d.n; i++) fprintf(stderr, "%s\n", d.items[i]);
    assert_non_null(wf);
    wf_diags_free(&d);
    char *err = NULL;
    assert_int_equal(engine_add_workflow(f->e, wf, &err), 0);
}

static void add_file(fx *f, const char *rel)
{
    char *path = tu_src_path(rel);
    wf_diags d = {0};
    wf_workflow *wf = wf_load_file(path, NULL, &d);
    assert_non_null(wf);
    wf_diags_free(&d);
    free(path);
    assert_int_equal(engine_add_workflow(f->e, wf, NULL), 0);
}

static void start(fx *f, const char *wf, json_t *params, char *run_id)
{
    char *err = NULL;
    int rc = engine_start_run(f->e, wf, params, NULL, "test", run_id, 16, &err);
    if (rc != 0) fprintf(stderr, "start: %s\n", err);
    assert_int_equal(rc, 0);
}

/* Ticks (advancing the clock by `step_ms` when idle) until the run is terminal or `max` ticks pass. */
static store_run_state run_until_done(fx *f, const char *run_id, int64_t step_ms, int max)
{
    store_run r = {0};
    for (int i = 0; i < max; i++) {
        int busy = engine_tick(f->e, 0);
        assert_true(busy >= 0);
        assert_int_equal(store_run_get(f->st, run_id, &r, NULL), STORE_OK);
        store_run_state s = r.state;
        store_run_free(&r);
        if (store_run_state_terminal(s)) return s;
        if (busy == 0) g_now += step_ms;
    }
    return STORE_RUN_RUNNING;
}

static void expect_step(fx *f, const char *run, const char *step, store_step_state state, int attempt)
{
    store_step st = {0};
    int rc = store_step_get(f->st, run, step, &st, NULL);
    if (rc != STORE_OK) fprintf(stderr, "step %s: no row\n", step);
    assert_int_equal(rc, STORE_OK);
    if (st.state != state || st.attempt != attempt)
        fprintf(stderr, "step %s: state %s attempt %d (want %s, %d) error %s\n", step, store_step_state_name(st.state),
                st.attempt, store_step_state_name(state), attempt, st.error ? st.error : "-");
    assert_int_equal(st.state, state);
    assert_int_equal(st.attempt, attempt);
    store_step_free(&st);
}

static void expect_no_step(fx *f, const char *run, const char *step)
{
    store_step st = {0};
    assert_int_equal(store_step_get(f->st, run, step, &st, NULL), STORE_NOTFOUND);
}

static char *step_error(fx *f, const char *run, const char *step)
{
    store_step st = {0};
    assert_int_equal(store_step_get(f->st, run, step, &st, NULL), STORE_OK);
    char *e = st.error ? strdup(st.error) : NULL;
    store_step_free(&st);
    return e;
}

/* ---- tests ---- */

static void test_example_chain_completes(void **state)
{
    fx *f = *state;
    add_file(f, "workflows/example.lua");
    char run[16];
    start(f, "example", NULL, run);
    assert_int_equal(run_until_done(f, run, 1000, 200), STORE_RUN_SUCCEEDED);
    assert_int_equal(f->api.launches, 3);
    assert_int_equal(f->api.n_jobs, 3);
    char name[128];
    snprintf(name, sizeof name, "my-job-1--%s-1", run);
    assert_string_equal(f->api.jobs[0].name, name);
    snprintf(name, sizeof name, "my-job-3--%s-1", run);
    assert_string_equal(f->api.jobs[2].name, name);
    expect_step(f, run, "Start", STORE_STEP_SUCCEEDED, 1);
    expect_step(f, run, "End", STORE_STEP_SUCCEEDED, 1);
    /* the launch request recorded for Step3 carries the parameters its function computed from the run */
    store_step st = {0};
    assert_int_equal(store_step_get(f->st, run, "Step3", &st, NULL), STORE_OK);
    json_t *req = json_loads(st.request_json, 0, NULL);
    json_t *params = json_object_get(req, "parameters");
    snprintf(name, sizeof name, "my-job-2--%s-1", run);
    assert_string_equal(json_string_value(json_object_get(params, "previous_job")), name);
    assert_string_equal(json_string_value(json_object_get(params, "setup_file")), "/dataflow/template/setup.py");
    json_decref(req);
    store_step_free(&st);
}

static void test_failed_job_does_not_trigger_successor(void **state)
{
    fx *f = *state;
    add_file(f, "workflows/example.lua");
    f->api.fail_prefix = "my-job-1--";
    char run[16];
    start(f, "example", NULL, run);
    assert_int_equal(run_until_done(f, run, 1000, 200), STORE_RUN_FAILED);
    assert_int_equal(f->api.launches, 1);
    expect_step(f, run, "Step1", STORE_STEP_FAILED, 1);
    expect_no_step(f, run, "Step2");
    store_run r = {0};
    store_run_get(f->st, run, &r, NULL);
    assert_non_null(strstr(r.error, "step Step1 failed: job my-job-1--"));
    assert_non_null(strstr(r.error, "ended JOB_STATE_FAILED"));
    store_run_free(&r);
}

static const char *fanout_src =
    "return { name = 'fan', project = 'p', region = 'r', start = 'A', steps = {\n"
    "  A = { job_name = 'fa', template = 'gs://bucket/a', next = {'B', 'C'} },\n"
    "  B = { job_name = 'fb', template = 'gs://bucket/b', next = 'J', retry = {attempts = 3, backoff = 10} },\n"
    "  C = { job_name = 'fc', template = 'gs://bucket/c', next = 'J' },\n"
    "  J = { job_name = 'fj', template = 'gs://bucket/j', ['function'] = function(ctx)\n"
    "          local names = {} for _, j in ipairs(ctx.jobs) do names[#names + 1] = j.step end\n"
    "          table.sort(names) return { preds = table.concat(names, ',') } end,\n"
    "        next = function(ctx) if ctx.run.params.mode == 'x' then return 'X' end return 'Y' end,\n"
    "        choices = {'X', 'Y'} },\n"
    "  X = { job_name = 'fx', template = 'gs://bucket/x' },\n"
    "  Y = { job_name = 'fy', template = 'gs://bucket/y', on_failure = 'N' },\n"
    "  N = { job_name = 'fn', template = 'gs://bucket/n' },\n"
    "} }";

static void test_fanout_join_choice(void **state)
{
    fx *f = *state;
    add_src(f, fanout_src);
    f->api.stay_prefix = "fc--"; /* C keeps running: J must wait */
    char run[16];
    json_t *params = json_pack("{s:s}", "mode", "x");
    start(f, "fan", params, run);
    json_decref(params);
    for (int i = 0; i < 40; i++) {
        engine_tick(f->e, 0);
        g_now += 1000;
    }
    expect_step(f, run, "B", STORE_STEP_SUCCEEDED, 1);
    expect_step(f, run, "C", STORE_STEP_RUNNING, 1);
    expect_step(f, run, "J", STORE_STEP_WAITING, 1);
    f->api.stay_prefix = NULL;
    assert_int_equal(run_until_done(f, run, 1000, 200), STORE_RUN_SUCCEEDED);
    expect_step(f, run, "J", STORE_STEP_SUCCEEDED, 1);
    expect_step(f, run, "X", STORE_STEP_SUCCEEDED, 1);
    expect_no_step(f, run, "Y");
    assert_int_equal(f->api.launches, 5); /* A, B, C, J once each, X */
    /* J saw both predecessors */
    store_step st = {0};
    store_step_get(f->st, run, "J", &st, NULL);
    assert_non_null(strstr(st.request_json, "\"preds\":\"B,C\""));
    store_step_free(&st);
}

static void test_retry_then_success(void **state)
{
    fx *f = *state;
    add_src(f, fanout_src);
    f->api.fail_prefix = "fb--";
    f->api.fail_times = 2;
    char run[16];
    start(f, "fan", NULL, run);
    assert_int_equal(run_until_done(f, run, 1000, 400), STORE_RUN_SUCCEEDED);
    expect_step(f, run, "B", STORE_STEP_SUCCEEDED, 3);
    char name[64];
    snprintf(name, sizeof name, "fb--%s-3", run);
    assert_non_null(fd_by_name(&f->api, name));
    snprintf(name, sizeof name, "fb--%s-2", run);
    assert_non_null(fd_by_name(&f->api, name));
    expect_step(f, run, "Y", STORE_STEP_SUCCEEDED, 1);
}

/* Regression (issue 22): a retried step kept only its last attempt: attempts 1 and 2, their job ids, states, errors
 * and times were lost. Each attempt keeps its own row, written with the transition that produced it. Jobs that
 * are never seen RUNNING (they answer FAILED or DONE at the first look) still get a running time: the job's
 * startTime. */
static void test_attempts_of_retried_step_kept(void **state)
{
    fx *f = *state;
    add_src(f, fanout_src);
    f->api.fail_prefix = "fb--";
    f->api.fail_times = 2;
    char run[16];
    start(f, "fan", NULL, run);
    assert_int_equal(run_until_done(f, run, 1000, 400), STORE_RUN_SUCCEEDED);
    store_attempt_list l = {0};
    assert_int_equal(store_attempt_list_run(f->st, run, &l, NULL), STORE_OK);
    int seen = 0;
    int64_t last_end = 0;
    for (size_t i = 0; i < l.count; i++) {
        const store_attempt *a = &l.items[i];
        if (strcmp(a->step, "B") != 0) continue;
        seen++;
        assert_int_equal(a->attempt, seen);
        char name[64];
        snprintf(name, sizeof name, "fb--%s-%d", run, seen);
        fd_job *j = fd_by_name(&f->api, name);
        assert_non_null(j);
        assert_string_equal(a->job_name, name);
        assert_string_equal(a->job_id, j->id);
        assert_non_null(a->request_json);
        assert_int_equal(a->state, seen < 3 ? STORE_STEP_FAILED : STORE_STEP_SUCCEEDED);
        assert_string_equal(a->job_state, seen < 3 ? "JOB_STATE_FAILED" : "JOB_STATE_DONE");
        if (seen < 3) assert_non_null(a->error);
        else assert_null(a->error);
        assert_true(a->launched_at > last_end); /* the backoff lies between one attempt's end and the next launch */
        assert_int_equal(a->running_at, j->created_at);
        assert_true(a->ended_at >= a->launched_at);
        last_end = a->ended_at;
    }
    assert_int_equal(seen, 3);
    store_attempt_list_free(&l);
}

/* Push-only setups (issue 22): the engine never polls a job while it runs, so the running time comes from the
 * Eventarc RUNNING event, at the time the event says. */
static void test_running_event_gives_running_time(void **state)
{
    fx *f = *state;
    add_file(f, "workflows/example.lua");
    f->api.stay_prefix = "my-job-1--";
    char run[16];
    start(f, "example", NULL, run);
    for (int i = 0; i < 10; i++) engine_tick(f->e, 0);
    expect_step(f, run, "Step1", STORE_STEP_RUNNING, 1);
    store_attempt a = {0};
    assert_int_equal(store_attempt_get(f->st, run, "Step1", 1, &a, NULL), STORE_OK);
    assert_int_equal(a.running_at, 0); /* launched, not yet seen running */
    store_attempt_free(&a);
    fd_job *j = &f->api.jobs[0];
    store_event ev = {.message_id = "run-1", .source = STORE_SRC_EVENTARC, .job_id = j->id, .job_name = j->name,
                      .state = "JOB_STATE_RUNNING", .payload_json = "{\"time_ms\":1700000000123}"};
    assert_int_equal(store_inbox_put(f->st, &ev, NULL, NULL), STORE_OK);
    for (int i = 0; i < 3; i++) engine_tick(f->e, 0);
    assert_int_equal(store_attempt_get(f->st, run, "Step1", 1, &a, NULL), STORE_OK);
    assert_int_equal(a.running_at, 1700000000123);
    assert_int_equal(a.state, STORE_STEP_RUNNING);
    store_attempt_free(&a);
    /* a RUNNING event is no reason to expect the end: the step stays on its poll schedule */
    store_step st = {0};
    assert_int_equal(store_step_get(f->st, run, "Step1", &st, NULL), STORE_OK);
    assert_int_equal(st.hint_at, 0);
    store_step_free(&st);
}

static void test_retry_backoff_is_waited(void **state)
{
    fx *f = *state;
    add_src(f, fanout_src);
    f->api.fail_prefix = "fb--";
    f->api.fail_times = 1;
    char run[16];
    start(f, "fan", NULL, run);
    for (int i = 0; i < 20 && f->api.failed_so_far == 0; i++) {
        engine_tick(f->e, 0);
        g_now += 1000;
    }
    for (int i = 0; i < 5; i++) engine_tick(f->e, 0);
    expect_step(f, run, "B", STORE_STEP_PENDING, 1);
    int launches = f->api.launches;
    g_now += 5000; /* half the 10 s backoff: nothing yet */
    for (int i = 0; i < 5; i++) engine_tick(f->e, 0);
    assert_int_equal(f->api.launches, launches);
    g_now += 6000;
    for (int i = 0; i < 5; i++) engine_tick(f->e, 0);
    assert_int_equal(f->api.launches, launches + 1);
    expect_step(f, run, "B", STORE_STEP_RUNNING, 2);
}

static void test_on_failure(void **state)
{
    fx *f = *state;
    add_src(f, fanout_src);
    f->api.fail_prefix = "fy--";
    char run[16];
    start(f, "fan", NULL, run);
    assert_int_equal(run_until_done(f, run, 1000, 400), STORE_RUN_SUCCEEDED);
    expect_step(f, run, "Y", STORE_STEP_FAILED, 1);
    expect_step(f, run, "N", STORE_STEP_SUCCEEDED, 1);
}

static void test_join_blocked_by_failed_branch(void **state)
{
    fx *f = *state;
    add_src(f, fanout_src);
    f->api.fail_prefix = "fc--"; /* C has no retry and no on_failure */
    char run[16];
    start(f, "fan", NULL, run);
    assert_int_equal(run_until_done(f, run, 1000, 400), STORE_RUN_FAILED);
    expect_no_step(f, run, "X");
    expect_no_step(f, run, "Y");
}

static void test_timeout_cancels_job(void **state)
{
    fx *f = *state;
    add_src(f, "return { name = 'to', project = 'p', region = 'r', start = 'A', steps = {\n"
               "  A = { job_name = 'ta', template = 'gs://bucket/a', timeout = 30, next = 'B' },\n"
               "  B = { job_name = 'tb', template = 'gs://bucket/b' } } }");
    f->api.stay_prefix = "ta--";
    char run[16];
    start(f, "to", NULL, run);
    assert_int_equal(run_until_done(f, run, 1000, 400), STORE_RUN_FAILED);
    assert_int_equal(f->api.stops, 1);
    expect_step(f, run, "A", STORE_STEP_FAILED, 1);
    char *err = step_error(f, run, "A");
    assert_non_null(strstr(err, "timed out"));
    free(err);
    expect_no_step(f, run, "B");
    assert_string_equal(f->api.jobs[0].state, "JOB_STATE_CANCELLED");
}

static void test_cancel_run(void **state)
{
    fx *f = *state;
    add_src(f, fanout_src);
    f->api.stay_prefix = "fb--";
    f->api.stay_prefix2 = "fc--";
    char run[16];
    start(f, "fan", NULL, run);
    for (int i = 0; i < 20; i++) {
        engine_tick(f->e, 0);
        g_now += 1000;
    }
    expect_step(f, run, "B", STORE_STEP_RUNNING, 1);
    assert_int_equal(engine_cancel_run(f->e, run, NULL), 0);
    assert_int_equal(run_until_done(f, run, 1000, 400), STORE_RUN_CANCELLED);
    assert_int_equal(f->api.stops, 2);
    expect_step(f, run, "B", STORE_STEP_CANCELLED, 1);
    expect_step(f, run, "C", STORE_STEP_CANCELLED, 1);
    expect_no_step(f, run, "J");
    assert_int_equal(engine_cancel_run(f->e, run, NULL), 1);
}

static void test_cancel_drains_when_asked(void **state)
{
    fx *f = *state;
    add_src(f, "return { name = 'st', project = 'p', region = 'r', start = 'S', steps = {\n"
               "  S = { job_name = 'stream', template = 'gs://bucket/s', on_cancel = 'drain', success = {'DRAINED'} } } }");
    f->api.stay_prefix = "stream--";
    char run[16];
    start(f, "st", NULL, run);
    for (int i = 0; i < 10; i++) engine_tick(f->e, 0);
    expect_step(f, run, "S", STORE_STEP_RUNNING, 1);
    assert_int_equal(engine_cancel_run(f->e, run, NULL), 0);
    assert_int_equal(run_until_done(f, run, 1000, 200), STORE_RUN_CANCELLED);
    assert_int_equal(f->api.stops, 1);
    assert_int_equal(f->api.drains, 1);
}

static void test_lua_error_fails_step_only(void **state)
{
    fx *f = *state;
    add_src(f, "return { name = 'bad', project = 'p', region = 'r', start = 'A', steps = {\n"
               "  A = { job_name = 'ba', template = 'gs://bucket/a', ['function'] = function(ctx)\n"
               "    local t = nil\n"
               "    return t.x end } } }");
    add_file(f, "workflows/example.lua");
    char bad[16], good[16];
    start(f, "bad", NULL, bad);
    start(f, "example", NULL, good);
    assert_int_equal(run_until_done(f, bad, 1000, 200), STORE_RUN_FAILED);
    assert_int_equal(run_until_done(f, good, 1000, 200), STORE_RUN_SUCCEEDED);
    char *err = step_error(f, bad, "A");
    assert_non_null(strstr(err, "t.lua:4: attempt to index a nil value (local 't')"));
    assert_non_null(strstr(err, "stack traceback:"));
    free(err);
}

static void test_rejected_launch(void **state)
{
    fx *f = *state;
    add_file(f, "workflows/example.lua");
    f->api.reject_prefix = "my-job-2--";
    char run[16];
    start(f, "example", NULL, run);
    assert_int_equal(run_until_done(f, run, 1000, 200), STORE_RUN_FAILED);
    char *err = step_error(f, run, "Step2");
    assert_non_null(strstr(err, "launch rejected (HTTP 400): Invalid template parameters: input: Required parameter is missing."));
    free(err);
    assert_int_equal(f->api.n_jobs, 1);
}

/* The output a hook step recorded (its `output`), as JSON text. Caller frees. */
static char *hook_output(fx *f, const char *run, const char *step)
{
    store_step st = {0};
    assert_int_equal(store_step_get(f->st, run, step, &st, NULL), STORE_OK);
    json_t *r = json_loads(st.result_json ? st.result_json : "null", JSON_DECODE_ANY, NULL);
    char *text = json_dumps(json_object_get(r, "output"), JSON_COMPACT | JSON_SORT_KEYS | JSON_ENCODE_ANY);
    json_decref(r);
    store_step_free(&st);
    return text;
}

/* Regression (issue 17, finding 13): in an on_failure hook, ctx.job was cjson.null (a userdata) when the failed
 * step had no job, and a table of nulls after a refused launch, so the documented guard `ctx.job and
 * ctx.job.state` raised. Absent values are nil now. */
static void test_on_failure_context_without_job(void **state)
{
    fx *f = *state;
    add_src(f, "dag = { name = 'nj', project = 'p', region = 'r', start = 'S', steps = {\n"
               "  S = { next = {'A', 'B'} },\n"
               "  A = { job_name = 'nja', template = 'gs://bkt/a', on_failure = 'HA' },\n"
               "  B = { ['function'] = function(ctx) error('hook failed') end, on_failure = 'HB' },\n"
               "  HA = { ['function'] = function(ctx) return seen(ctx, ctx.results.A) end },\n"
               "  HB = { ['function'] = function(ctx) return seen(ctx, ctx.results.B) end } } }\n"
               "function seen(ctx, r)\n"
               "  return { job = type(ctx.job), state = ctx.job and ctx.job.state or 'none', jobs = #ctx.jobs,\n"
               "           id = type(r.job_id), job_state = type(r.job_state), rstate = r.state, err = r.error ~= nil,\n"
               "           name = type(r.job_name) } end");
    f->api.reject_prefix = "nja--";
    char run[16];
    start(f, "nj", NULL, run);
    assert_int_equal(run_until_done(f, run, 1000, 200), STORE_RUN_SUCCEEDED);
    char *out = hook_output(f, run, "HA"); /* after a refused launch: a job name, no job */
    assert_string_equal(out, "{\"err\":true,\"id\":\"nil\",\"job\":\"nil\",\"job_state\":\"nil\",\"jobs\":0,"
                             "\"name\":\"string\",\"rstate\":\"failed\",\"state\":\"none\"}");
    free(out);
    out = hook_output(f, run, "HB"); /* after a hook that failed: no job at all */
    assert_string_equal(out, "{\"err\":true,\"id\":\"nil\",\"job\":\"nil\",\"job_state\":\"nil\",\"jobs\":0,"
                             "\"name\":\"nil\",\"rstate\":\"failed\",\"state\":\"none\"}");
    free(out);
}

/* The shipped workflows/fanout.lua: a refused report launch goes to NotifyFailure, whose function uses the guard
 * `ctx.job and ctx.job.state or "?"`; it crashed on cjson.null (issue 17, finding 13). */
static void test_fanout_notify_after_refused_report(void **state)
{
    fx *f = *state;
    add_file(f, "workflows/fanout.lua");
    f->api.reject_prefix = "daily-report-quick--";
    char run[16];
    start(f, "daily", NULL, run);
    assert_int_equal(run_until_done(f, run, 1000, 400), STORE_RUN_SUCCEEDED);
    expect_step(f, run, "QuickReport", STORE_STEP_FAILED, 1);
    expect_step(f, run, "NotifyFailure", STORE_STEP_SUCCEEDED, 1);
    store_step st = {0};
    assert_int_equal(store_step_get(f->st, run, "NotifyFailure", &st, NULL), STORE_OK);
    char want[96];
    snprintf(want, sizeof want, "\"message\":\"report failed in run %s: ?\"", run);
    assert_non_null(strstr(st.request_json, want));
    store_step_free(&st);
}

/* Regression (issue 17, finding 14): the shape of ctx.results, which `sluice plan` and `sluice preflight` now build
 * with the engine's function: state is the step's state, job_state the Dataflow state, job_id the real id. A
 * retried step does not see its own failed attempt. tests/blackbox/test_plan_context.sh runs the same function
 * under plan. */
static void test_context_results_shape(void **state)
{
    fx *f = *state;
    add_src(f, "return { name = 'cs', project = 'p', region = 'r', start = 'A', steps = {\n"
               "  A = { job_name = 'csa', template = 'gs://bkt/a', next = 'B' },\n"
               "  B = { job_name = 'csb', template = 'gs://bkt/b', retry = { attempts = 2, backoff = 1 },\n"
               "        ['function'] = function(ctx) return { input = ctx.results.A.job_id, from = ctx.job.step,\n"
               "          st = ctx.results.A.state, js = ctx.results.A.job_state, att = ctx.results.A.attempt,\n"
               "          own = tostring(ctx.results.B) } end } } }");
    f->api.fail_prefix = "csb--";
    f->api.fail_times = 1;
    char run[16];
    start(f, "cs", NULL, run);
    assert_int_equal(run_until_done(f, run, 1000, 400), STORE_RUN_SUCCEEDED);
    expect_step(f, run, "B", STORE_STEP_SUCCEEDED, 2);
    store_step st = {0};
    assert_int_equal(store_step_get(f->st, run, "B", &st, NULL), STORE_OK);
    json_t *req = json_loads(st.request_json, 0, NULL);
    json_t *want = json_pack("{s:s,s:s,s:s,s:s,s:s,s:s}", "input", f->api.jobs[0].id, "from", "A", "st", "succeeded",
                             "js", "JOB_STATE_DONE", "att", "1", "own", "nil");
    if (!json_equal(json_object_get(req, "parameters"), want)) fprintf(stderr, "request %s\n", st.request_json);
    assert_true(json_equal(json_object_get(req, "parameters"), want));
    json_decref(want);
    json_decref(req);
    store_step_free(&st);
}

static void test_unknown_outcome_adopts(void **state)
{
    fx *f = *state;
    add_file(f, "workflows/example.lua");
    f->api.unknown_next = 1; /* the first launch creates my-job-1 but the answer is lost */
    char run[16];
    start(f, "example", NULL, run);
    assert_int_equal(run_until_done(f, run, 1000, 400), STORE_RUN_SUCCEEDED);
    assert_int_equal(f->api.n_jobs, 3); /* no second my-job-1 */
    assert_true(f->api.finds >= 1);
    assert_int_equal(engine_get_stats(f->e).adopted, 1);
}

/* Starts an example run whose Step1 launch never answers (the job is created by it when `creates`), then
 * "crashes": frees the engine and starts a new one on the same store. */
static void crash_mid_launch(fx *f, int creates, char *run)
{
    add_file(f, "workflows/example.lua");
    f->api.hang_launches = 1;
    f->api.hang_creates = creates;
    start(f, "example", NULL, run);
    for (int i = 0; i < 5; i++) engine_tick(f->e, 0);
    expect_step(f, run, "Step1", STORE_STEP_LAUNCHING, 1);
    assert_int_equal(f->api.n_jobs, creates ? 1 : 0);
    assert_string_equal(f->api.last_labels, "example/Step1"); /* the metric labels the engine put on the request */
    engine_free(f->e); /* the answer never comes */
    f->api.hang_launches = 0;
    f->e = new_engine(f);
}

/* The step's note (its `error` while in flight), read under the API. Caller frees; NULL when none. */
static char *step_note(fx *f, const char *run, const char *step)
{
    store_step st = {0};
    assert_int_equal(store_step_get(f->st, run, step, &st, NULL), STORE_OK);
    char *e = st.error ? strdup(st.error) : NULL;
    store_step_free(&st);
    return e;
}

/* Regression (issue 17, finding 15): a Dataflow call that kept failing (an unreachable --dataflow-url) left its
 * step "launching" with nothing to say why until the client gave up. The jobs_api's retry notice becomes the
 * step's note at the next tick; a failed call the engine retries later leaves its reason; the answers that
 * follow clear it. */
static void test_failing_call_noted_on_step(void **state)
{
    fx *f = *state;
    add_file(f, "workflows/example.lua");
    f->api.hang_launches = 1;
    char run[16];
    start(f, "example", NULL, run);
    for (int i = 0; i < 5; i++) engine_tick(f->e, 0);
    expect_step(f, run, "Step1", STORE_STEP_LAUNCHING, 1);
    assert_null(step_note(f, run, "Step1"));
    void *call = fd_hung_ud(&f->api);
    assert_non_null(call);
    assert_non_null(f->api.base.on_retry); /* the engine installed its hook */
    f->api.base.on_retry(f->api.base.on_retry_ud, call, "connect failed: Connection refused", 3, 2500);
    engine_tick(f->e, 0);
    char *note = step_note(f, run, "Step1");
    assert_non_null(note);
    assert_string_equal(note, "retrying: connect failed: Connection refused (3 failed attempts; next in 2.5 s)");
    free(note);
    /* the call gives up unsettled: the engine will look the name up, and says why */
    fd_answer_hung(&f->api, JA_UNKNOWN, "connect failed: Connection refused");
    engine_tick(f->e, 0);
    note = step_note(f, run, "Step1");
    assert_non_null(note);
    assert_non_null(strstr(note, "retrying: launch unsettled"));
    assert_non_null(strstr(note, "Connection refused (1 failed call)"));
    free(note);
    /* Dataflow is back: the look-up answers, the job launches, the note is gone and the run succeeds */
    f->api.hang_launches = 0;
    assert_int_equal(run_until_done(f, run, 1000, 400), STORE_RUN_SUCCEEDED);
    assert_null(step_note(f, run, "Step1"));
}

/* Crash after the intent was committed and the request sent: the new process finds the job and adopts it. */
static void test_crash_after_send_adopts(void **state)
{
    fx *f = *state;
    char run[16];
    crash_mid_launch(f, 1, run);
    add_file(f, "workflows/example.lua");
    assert_int_equal(run_until_done(f, run, 1000, 400), STORE_RUN_SUCCEEDED);
    assert_int_equal(f->api.n_jobs, 3);
    assert_int_equal(engine_get_stats(f->e).adopted, 1);
}

/* Crash after the intent was committed but before the request left: the look-up finds nothing; it is sent once. */
static void test_crash_before_send_resends_once(void **state)
{
    fx *f = *state;
    char run[16];
    crash_mid_launch(f, 0, run);
    assert_int_equal(run_until_done(f, run, 1000, 400), STORE_RUN_SUCCEEDED);
    assert_int_equal(f->api.n_jobs, 3);
    char name[64];
    snprintf(name, sizeof name, "my-job-1--%s-1", run);
    int count = 0;
    for (int i = 0; i < f->api.n_jobs; i++) count += strcmp(f->api.jobs[i].name, name) == 0;
    assert_int_equal(count, 1);
}

/* Runs `sql` on the fixture's store with a connection of its own (SQLite or PostgreSQL); returns the rows it
 * changed. Values go in as SQL literals (sqlite3_mprintf's %Q: standard quoting, which PostgreSQL reads alike). */
static int exec_sql(fx *f, const char *sql)
{
    int changed = 0;
    if (g_pg_on == 1) {
        PGconn *c = PQconnectdb(f->db);
        PGresult *res = PQexec(c, sql);
        assert_int_equal(PQresultStatus(res), PGRES_COMMAND_OK);
        changed = atoi(PQcmdTuples(res));
        PQclear(res);
        PQfinish(c);
    } else {
        sqlite3 *db = NULL;
        assert_int_equal(sqlite3_open(f->db, &db), SQLITE_OK);
        sqlite3_busy_timeout(db, 5000);
        assert_int_equal(sqlite3_exec(db, sql, NULL, NULL, NULL), SQLITE_OK);
        changed = sqlite3_changes(db);
        sqlite3_close(db);
    }
    return changed;
}

/* Upgrade in the middle of a run: an intent recorded by an older Sluice, which stored the REST request itself
 * ({method, path, query, body, project, region, jobName}), is still re-sent after the crash, from what it recorded
 * (its parameter from_old_intent is nowhere in the workflow), as plain data again. */
static void test_crash_resends_intent_recorded_in_the_old_shape(void **state)
{
    fx *f = *state;
    if (g_fs_on == 1) skip(); /* it rewrites the intent with SQL; no Firestore store ever held the old shape */
    char run[16], name[64], *sql = NULL;
    crash_mid_launch(f, 0, run);
    snprintf(name, sizeof name, "my-job-1--%s-1", run);
    json_t *old = json_pack(
        "{s:s,s:s,s:s,s:s,s:s,s:{s:{s:s,s:s,s:{s:s},s:{s:s,s:{s:s}}}}}", "method", "POST", "path",
        "/v1b3/projects/my-project/locations/europe-west4/flexTemplates:launch", "project", "my-project", "region",
        "europe-west4", "jobName", name, "body", "launchParameter", "jobName", name, "containerSpecGcsPath",
        "gs://my-bucket/my-job-1/python_command_spec.json", "parameters", "from_old_intent", "yes", "environment",
        "tempLocation", "gs://my-bucket/tmp", "additionalUserLabels", "sluice-run", run);
    char *text = json_dumps(old, JSON_COMPACT);
    sql = sqlite3_mprintf("UPDATE steps SET request = %Q WHERE run_id = %Q AND name = 'Step1'", text, run);
    assert_int_equal(exec_sql(f, sql), 1);
    sqlite3_free(sql);
    free(text);
    json_decref(old);
    for (int i = 0; i < 20 && f->api.launches < 2; i++) {
        engine_tick(f->e, 0);
        g_now += 1000;
    }
    assert_int_equal(f->api.launches, 2); /* the one that never arrived, and the re-send */
    json_t *got = f->api.last_launch;
    assert_non_null(got);
    assert_string_equal(json_string_value(json_object_get(got, "kind")), "flex");
    assert_string_equal(json_string_value(json_object_get(got, "template")),
                        "gs://my-bucket/my-job-1/python_command_spec.json");
    assert_string_equal(json_string_value(json_object_get(got, "jobName")), name);
    assert_string_equal(json_string_value(json_object_get(got, "project")), "my-project");
    assert_string_equal(json_string_value(json_object_get(got, "region")), "europe-west4");
    assert_string_equal(json_string_value(json_object_get(json_object_get(got, "parameters"), "from_old_intent")), "yes");
    assert_string_equal(json_string_value(json_object_get(json_object_get(got, "environment"), "tempLocation")),
                        "gs://my-bucket/tmp");
    assert_string_equal(f->api.last_labels, "example/Step1"); /* not in the record: the engine labels the re-send */
    assert_int_equal(run_until_done(f, run, 1000, 400), STORE_RUN_SUCCEEDED);
    assert_int_equal(f->api.n_jobs, 3);
}

static int count_named(fx *f, const char *name)
{
    int n = 0;
    for (int i = 0; i < f->api.n_jobs; i++) n += strcmp(f->api.jobs[i].name, name) == 0;
    return n;
}

/* Two engines on one store. e2 looks an unsettled launch up and the answer, "no such job", is applied only after
 * its claim ran out and e3 took the step over, found nothing either, launched the job and saw it end. e2 must not
 * launch the name again: Dataflow frees a name once its job is terminal, so a second launch would run the job
 * twice. (The race behind a duplicate job in the replicas' crash test: an answer held up, by a slow call or a run
 * another replica had locked, acted on after the claim had passed on.) */
static void test_late_not_found_does_not_relaunch(void **state)
{
    fx *f = *state;
    char run[16], name[64];
    crash_mid_launch(f, 0, run); /* the intent is recorded, its request never arrived */
    snprintf(name, sizeof name, "my-job-1--%s-1", run);
    engine *e2 = f->e;
    f->api.hold_finds = 1;
    g_now += 6000; /* the dead engine's claim (lease 5 s) has run out */
    for (int i = 0; i < 5 && f->api.finds == 0; i++) engine_tick(e2, 0);
    assert_int_equal(f->api.finds, 1); /* e2's look-up is out; its answer is held up */
    f->api.hold_finds = 0;
    g_now += 6000; /* e2's claim runs out too */
    f->e = new_engine(f); /* e3 */
    for (int i = 0; i < 10 && count_named(f, name) == 0; i++) engine_tick(f->e, 0);
    assert_int_equal(count_named(f, name), 1);
    engine_tick(f->e, 0); /* e3 records the job */
    expect_step(f, run, "Step1", STORE_STEP_RUNNING, 1);
    snprintf(f->api.jobs[f->api.n_jobs - 1].state, sizeof f->api.jobs[0].state, "JOB_STATE_DONE");
    fd_release_finds(&f->api); /* e2's "not found" arrives, late */
    for (int i = 0; i < 5; i++) engine_tick(e2, 0);
    assert_int_equal(count_named(f, name), 1);
    assert_int_equal(engine_get_stats(e2).claims_lost, 1);
    engine_free(e2);
    assert_int_equal(run_until_done(f, run, 1000, 400), STORE_RUN_SUCCEEDED);
    assert_int_equal(count_named(f, name), 1);
    assert_int_equal(f->api.n_jobs, 3);
}

/* Regression: an unsettled launch of a run cancelled meanwhile was re-sent when the look-up found no job. */
static void test_cancelled_run_does_not_resend_unsettled_launch(void **state)
{
    fx *f = *state;
    char run[16];
    crash_mid_launch(f, 0, run);
    assert_int_equal(engine_cancel_run(f->e, run, NULL), 0);
    assert_int_equal(run_until_done(f, run, 1000, 400), STORE_RUN_CANCELLED);
    assert_int_equal(f->api.launches, 1); /* only the one that never arrived */
    assert_int_equal(f->api.n_jobs, 0);
    expect_step(f, run, "Step1", STORE_STEP_CANCELLED, 1);
}

static void test_duplicate_and_reordered_events(void **state)
{
    fx *f = *state;
    add_file(f, "workflows/example.lua");
    f->api.stay_prefix = "my-job-1--";
    char run[16];
    start(f, "example", NULL, run);
    for (int i = 0; i < 10; i++) engine_tick(f->e, 0);
    expect_step(f, run, "Step1", STORE_STEP_RUNNING, 1);
    fd_job *j = &f->api.jobs[0];
    snprintf(j->state, sizeof j->state, "JOB_STATE_DONE");
    f->api.stay_prefix = NULL;
    /* the same DONE twice (log sink and Eventarc), then a late RUNNING */
    store_event ev = {.message_id = "m1", .source = STORE_SRC_PUSH, .job_id = j->id, .job_name = j->name,
                      .state = "JOB_STATE_DONE"};
    assert_int_equal(store_inbox_put(f->st, &ev, NULL, NULL), STORE_OK);
    ev.message_id = "eventarc/1";
    ev.source = STORE_SRC_EVENTARC;
    assert_int_equal(store_inbox_put(f->st, &ev, NULL, NULL), STORE_DUPLICATE);
    ev.message_id = "m2";
    ev.state = "JOB_STATE_RUNNING";
    assert_int_equal(store_inbox_put(f->st, &ev, NULL, NULL), STORE_OK);
    /* the event makes the step due at once: no clock advance is needed */
    for (int i = 0; i < 6; i++) engine_tick(f->e, 0);
    expect_step(f, run, "Step1", STORE_STEP_SUCCEEDED, 1);
    expect_step(f, run, "Step2", STORE_STEP_RUNNING, 1);
    assert_int_equal(run_until_done(f, run, 1000, 200), STORE_RUN_SUCCEEDED);
    assert_int_equal(f->api.launches, 3);
    assert_int_equal(engine_get_stats(f->e).events, 2);
}

static void test_start_run_idempotent_and_unknown(void **state)
{
    fx *f = *state;
    add_file(f, "workflows/example.lua");
    char a[16], b[16];
    char *err = NULL;
    assert_int_equal(engine_start_run(f->e, "example", NULL, "key-1", "api", a, sizeof a, &err), 0);
    assert_int_equal(engine_start_run(f->e, "example", NULL, "key-1", "api", b, sizeof b, &err), 1);
    assert_string_equal(a, b);
    /* Regression: the key reused with other params silently answered with the old run. */
    json_t *other = json_pack("{s:s}", "date", "2024-01-02");
    assert_int_equal(engine_start_run(f->e, "example", other, "key-1", "api", b, sizeof b, &err), ENG_ERR_CONFLICT);
    json_decref(other);
    assert_non_null(strstr(err, "request_key 'key-1' already started run"));
    free(err);
    err = NULL;
    assert_int_equal(engine_start_run(f->e, "nope", NULL, NULL, "api", b, sizeof b, &err), ENG_ERR_NO_WORKFLOW);
    assert_string_equal(err, "no workflow named 'nope'");
    free(err);
}

static void test_many_runs_exactly_once(void **state)
{
    fx *f = *state;
    add_src(f, fanout_src);
    char runs[50][16];
    for (int i = 0; i < 50; i++) start(f, "fan", NULL, runs[i]);
    for (int i = 0; i < 50; i++) assert_int_equal(run_until_done(f, runs[i], 1000, 400), STORE_RUN_SUCCEEDED);
    assert_int_equal(f->api.launches, 50 * 5);
    assert_int_equal(f->api.n_jobs, 50 * 5);
}

/* ---- the real API's slower behaviours (issue: stale state, wind-downs, failing siblings, teardown) ---- */

/* Replaces the fixture's engine with one that polls every `poll_ms` (the Cloud Run setting is 10 min). */
static void slow_poll_engine(fx *f, int64_t poll_ms)
{
    engine_free(f->e);
    engine_options o = {.st = f->st, .api = &f->api.base, .now_ms = clock_fn};
    o.rec = rec_policy_default();
    o.rec.poll_ms = poll_ms;
    o.rec.lease_ms = 2 * poll_ms;
    char *err = NULL;
    f->e = engine_new(&o, &err);
    assert_non_null(f->e);
}

/* What the ingress writes when Dataflow's end-of-job log line arrives. */
static void push_event(fx *f, const fd_job *j, const char *state)
{
    char mid[200];
    snprintf(mid, sizeof mid, "m-%s-%s", j->id, state);
    store_event ev = {.message_id = mid, .source = STORE_SRC_PUSH, .job_id = (char *)j->id, .job_name = (char *)j->name,
                      .state = (char *)state};
    assert_int_equal(store_inbox_put(f->st, &ev, NULL, NULL), STORE_OK);
}

/* Ticks in 50 ms steps of the fake clock until `done` holds or `limit_ms` passes; returns the clock then. */
static int64_t tick_until(fx *f, int (*done)(fx *f, void *ud), void *ud, int64_t limit_ms)
{
    int64_t until = g_now + limit_ms;
    while (g_now < until && !done(f, ud)) {
        for (int i = 0; i < 4; i++) engine_tick(f->e, 0);
        g_now += 50;
    }
    return g_now;
}

static int has_jobs(fx *f, void *ud) { return f->api.n_jobs >= *(int *)ud; }

static int run_is(fx *f, void *ud)
{
    const char **want = ud; /* {run id, state name} */
    store_run r = {0};
    int ok = store_run_get(f->st, want[0], &r, NULL) == STORE_OK &&
             strcmp(store_run_state_name(r.state), want[1]) == 0;
    store_run_free(&r);
    return ok;
}

static const char *chain_src = "return { name = 'lag', project = 'p', region = 'r', start = 'A', steps = {\n"
                               "  A = { job_name = 'la', template = 'gs://bucket/a', next = 'B' },\n"
                               "  B = { job_name = 'lb', template = 'gs://bucket/b' } } }";

/* Regression: jobs.get still answers RUNNING for seconds after the end event ("Worker pool stopped." is logged
 * before the state flips); the engine waited for the next poll (10 min here) instead of looking again soon. */
static void test_stale_state_after_event_rechecked_soon(void **state)
{
    fx *f = *state;
    slow_poll_engine(f, 600000);
    add_src(f, chain_src);
    f->api.timed_prefix = "la--";
    f->api.run_ms = 5000;
    f->api.stale_ms = 3000;
    char run[16];
    start(f, "lag", NULL, run);
    int one = 1, two = 2;
    tick_until(f, has_jobs, &one, 1000);
    assert_int_equal(f->api.n_jobs, 1);
    fd_job a = f->api.jobs[0];
    g_now = a.created_at + f->api.run_ms; /* the job really ends; its log line arrives at once */
    push_event(f, &a, "JOB_STATE_DONE");
    int64_t launched = tick_until(f, has_jobs, &two, 60000);
    assert_int_equal(f->api.n_jobs, 2);
    int64_t truth = a.created_at + f->api.run_ms + f->api.stale_ms; /* when the API first says DONE */
    fprintf(stderr, "next launch %lld ms after the API's DONE, %d gets of A\n", (long long)(launched - truth),
            f->api.jobs[0].gets);
    assert_true(launched - truth <= 1000);
    assert_true(f->api.jobs[0].gets <= 30); /* the short schedule is bounded */
}


/* Regression (issue 23): a store write of the tick that fails — here the end event's hint, refused by a trigger —
 * rolls the whole tick back on every backend, so the event stays in the inbox and is applied once the store
 * accepts it. Before, on SQLite, the failure was ignored and the rest committed: the event was marked consumed
 * and its hint lost (the step waited for the 10-minute poll); on PostgreSQL the failed statement aborted the tick. */
static void test_failed_store_write_rolls_the_tick_back(void **state)
{
    fx *f = *state;
    if (g_fs_on == 1) skip(); /* the failure is injected with a SQL trigger */
    slow_poll_engine(f, 600000);
    add_src(f, chain_src);
    char run[16];
    start(f, "lag", NULL, run);
    int one = 1, two = 2;
    tick_until(f, has_jobs, &one, 1000);
    fd_job a = f->api.jobs[0];
    if (g_pg_on == 1)
        exec_sql(f, "CREATE FUNCTION refuse_hint() RETURNS trigger LANGUAGE plpgsql AS "
                    "$$ BEGIN RAISE EXCEPTION 'injected failure'; END $$;"
                    "CREATE TRIGGER refuse_hint BEFORE UPDATE OF hint_at ON steps FOR EACH ROW "
                    "WHEN (NEW.hint_at <> OLD.hint_at) EXECUTE FUNCTION refuse_hint()");
    else
        exec_sql(f, "CREATE TRIGGER refuse_hint BEFORE UPDATE OF hint_at ON steps "
                    "WHEN NEW.hint_at <> OLD.hint_at BEGIN SELECT RAISE(ABORT, 'injected failure'); END");
    g_now = a.created_at + f->api.run_ms;
    push_event(f, &a, "JOB_STATE_DONE");
    int64_t failures = engine_get_stats(f->e).commit_failures;
    for (int i = 0; i < 4; i++) engine_tick(f->e, 0);
    assert_true(engine_get_stats(f->e).commit_failures > failures);
    store_event_list ev;
    assert_int_equal(store_inbox_fetch(f->st, 10, &ev, NULL), STORE_OK);
    assert_int_equal(ev.count, 1); /* not consumed */
    store_event_list_free(&ev);
    store_step st;
    assert_int_equal(store_step_get(f->st, run, "A", &st, NULL), STORE_OK);
    assert_int_equal(st.hint_at, 0);
    store_step_free(&st);
    exec_sql(f, g_pg_on == 1 ? "DROP TRIGGER refuse_hint ON steps" : "DROP TRIGGER refuse_hint");
    tick_until(f, has_jobs, &two, 60000); /* the event applies now: B is launched well before the poll */
    assert_int_equal(f->api.n_jobs, 2);
    assert_int_equal(store_inbox_fetch(f->st, 10, &ev, NULL), STORE_OK);
    assert_int_equal(ev.count, 0);
    store_event_list_free(&ev);
}

/* Without an event the engine knows nothing sooner: the job is seen at the poll (the schedule is not a hot loop). */
static void test_no_event_waits_for_poll(void **state)
{
    fx *f = *state;
    slow_poll_engine(f, 60000);
    add_src(f, chain_src);
    f->api.timed_prefix = "la--";
    f->api.run_ms = 5000;
    char run[16];
    start(f, "lag", NULL, run);
    int two = 2;
    tick_until(f, has_jobs, &two, 30000);
    assert_int_equal(f->api.n_jobs, 1);
    assert_true(f->api.jobs[0].gets <= 1);
}

/* Regression: after a cancel, with a 10 min poll, the run stayed "cancelling" long after Dataflow's CANCELLED. */
static void test_cancel_wind_down_followed(void **state)
{
    fx *f = *state;
    slow_poll_engine(f, 600000);
    add_src(f, "return { name = 'cw', project = 'p', region = 'r', start = 'S', steps = {\n"
               "  S = { job_name = 'cws', next = {'B', 'C'} },\n"
               "  B = { job_name = 'fb', template = 'gs://bucket/b' },\n"
               "  C = { job_name = 'fc', template = 'gs://bucket/c' } } }");
    f->api.stay_prefix = "fb--";
    f->api.stay_prefix2 = "fc--";
    f->api.wind_ms = 4000;
    char run[16];
    start(f, "cw", NULL, run);
    int two = 2;
    tick_until(f, has_jobs, &two, 5000);
    for (int i = 0; i < 5; i++) engine_tick(f->e, 0);
    expect_step(f, run, "B", STORE_STEP_RUNNING, 1);
    int64_t asked = g_now;
    assert_int_equal(engine_cancel_run(f->e, run, NULL), 0);
    const char *want[] = {run, "cancelled"};
    int64_t ended = tick_until(f, run_is, want, 60000);
    assert_true(run_is(f, want));
    fprintf(stderr, "cancelled %lld ms after the request (wind-down %lld ms)\n", (long long)(ended - asked),
            (long long)f->api.wind_ms);
    assert_true(ended - asked <= f->api.wind_ms + 1000);
    assert_int_equal(f->api.stops, 2);
}

/* Regression: a timeout noticed at the next poll, not at the deadline. */
static void test_timeout_acted_on_at_deadline(void **state)
{
    fx *f = *state;
    slow_poll_engine(f, 600000);
    add_src(f, "return { name = 'to', project = 'p', region = 'r', start = 'A', steps = {\n"
               "  A = { job_name = 'ta', template = 'gs://bucket/a', timeout = 30 } } }");
    f->api.stay_prefix = "ta--";
    f->api.wind_ms = 2000;
    char run[16];
    start(f, "to", NULL, run);
    int one = 1;
    tick_until(f, has_jobs, &one, 1000);
    int64_t launched = f->api.jobs[0].created_at;
    const char *want[] = {run, "failed"};
    int64_t ended = tick_until(f, run_is, want, 120000);
    assert_true(run_is(f, want));
    assert_true(f->api.jobs[0].stopped_at - launched <= 30000 + 200);
    assert_true(ended - launched <= 30000 + 2000 + 1000);
}

/* Regression: with on_cancel = "drain" and DRAINED a success state, a timed-out step succeeded. */
static void test_timeout_fails_even_if_drained(void **state)
{
    fx *f = *state;
    add_src(f, "return { name = 'td', project = 'p', region = 'r', start = 'S', steps = {\n"
               "  S = { job_name = 'tds', template = 'gs://bucket/s', timeout = 30, on_cancel = 'drain',\n"
               "        success = {'DONE', 'DRAINED'}, next = 'T' },\n"
               "  T = { job_name = 'tdt', template = 'gs://bucket/t' } } }");
    f->api.stay_prefix = "tds--";
    char run[16];
    start(f, "td", NULL, run);
    assert_int_equal(run_until_done(f, run, 1000, 400), STORE_RUN_FAILED);
    assert_int_equal(f->api.drains, 1);
    assert_string_equal(f->api.jobs[0].state, "JOB_STATE_DRAINED");
    expect_step(f, run, "S", STORE_STEP_FAILED, 1);
    char *err = step_error(f, run, "S");
    assert_non_null(strstr(err, "timed out; the job was stopped and ended JOB_STATE_DRAINED"));
    free(err);
    expect_no_step(f, run, "T");
}

static const char *siblings_src(const char *mode)
{
    static char buf[600];
    snprintf(buf, sizeof buf,
             "return { name = 'sib', project = 'p', region = 'r', start = 'A', on_run_failure = '%s', steps = {\n"
             "  A = { job_name = 'sa', template = 'gs://bucket/a', next = {'B', 'C'} },\n"
             "  B = { job_name = 'sb', template = 'gs://bucket/b' },\n"
             "  C = { job_name = 'sc', template = 'gs://bucket/c', on_cancel = 'drain' } } }",
             mode);
    return buf;
}

/* Regression: on_run_failure = "cancel" left the sibling's job running (and billing). */
static void test_run_failure_stops_siblings(void **state)
{
    fx *f = *state;
    add_src(f, siblings_src("cancel"));
    f->api.fail_prefix = "sb--";
    f->api.stay_prefix = "sc--";
    f->api.wind_ms = 3000;
    char run[16];
    start(f, "sib", NULL, run);
    assert_int_equal(run_until_done(f, run, 1000, 400), STORE_RUN_FAILED);
    for (int i = 0; i < 100; i++) {
        engine_tick(f->e, 0);
        g_now += 100;
    }
    assert_int_equal(f->api.stops, 1);
    assert_int_equal(f->api.drains, 1); /* C drains, per its on_cancel */
    fd_job *c = &f->api.jobs[2];
    assert_true(fd_starts(c->name, "sc--"));
    assert_string_equal(c->state, "JOB_STATE_DRAINED");
    expect_step(f, run, "B", STORE_STEP_FAILED, 1);
    expect_step(f, run, "C", STORE_STEP_CANCELLED, 1);
    char *err = step_error(f, run, "C");
    assert_non_null(strstr(err, "ended JOB_STATE_DRAINED after the run stopped it"));
    free(err);
}

static void test_run_failure_leaves_siblings(void **state)
{
    fx *f = *state;
    add_src(f, siblings_src("leave"));
    f->api.fail_prefix = "sb--";
    f->api.stay_prefix = "sc--";
    char run[16];
    start(f, "sib", NULL, run);
    assert_int_equal(run_until_done(f, run, 1000, 400), STORE_RUN_FAILED);
    for (int i = 0; i < 50; i++) {
        engine_tick(f->e, 0);
        g_now += 1000;
    }
    assert_int_equal(f->api.stops, 0);
    assert_string_equal(f->api.jobs[2].state, "JOB_STATE_RUNNING");
    expect_step(f, run, "C", STORE_STEP_RUNNING, 1);
}

/* Regression: a launch refused with 400 InvalidTemplateParameters was sent again with the same parameters. */
static void test_rejected_launch_is_final(void **state)
{
    fx *f = *state;
    add_src(f, "return { name = 'rj', project = 'p', region = 'r', start = 'A', steps = {\n"
               "  A = { job_name = 'ra', template = 'gs://bucket/a', retry = 3 } } }");
    f->api.reject_prefix = "ra--";
    char run[16];
    start(f, "rj", NULL, run);
    assert_int_equal(run_until_done(f, run, 1000, 400), STORE_RUN_FAILED);
    assert_int_equal(f->api.launches, 1);
    expect_step(f, run, "A", STORE_STEP_FAILED, 1);
    char *err = step_error(f, run, "A");
    assert_non_null(strstr(err, "Required parameter is missing"));
    free(err);
}

/* ...unless the step's retry policy names the class. */
static void test_rejected_launch_retried_when_asked(void **state)
{
    fx *f = *state;
    add_src(f, "return { name = 'rk', project = 'p', region = 'r', start = 'A', steps = {\n"
               "  A = { job_name = 'rka', template = 'gs://bucket/a', retry = {attempts = 2, backoff = 1, on = {'rejected'}} } } }");
    f->api.reject_prefix = "rka--";
    char run[16];
    start(f, "rk", NULL, run);
    assert_int_equal(run_until_done(f, run, 1000, 400), STORE_RUN_FAILED);
    assert_int_equal(f->api.launches, 2);
    expect_step(f, run, "A", STORE_STEP_FAILED, 2);
}

/* retry.on without job_failed: a failed job is not retried. */
static void test_retry_on_excludes_job_failed(void **state)
{
    fx *f = *state;
    add_src(f, "return { name = 'rt', project = 'p', region = 'r', start = 'A', steps = {\n"
               "  A = { job_name = 'rta', template = 'gs://bucket/a', retry = {attempts = 3, on = 'timeout'} } } }");
    f->api.fail_prefix = "rta--";
    char run[16];
    start(f, "rt", NULL, run);
    assert_int_equal(run_until_done(f, run, 1000, 400), STORE_RUN_FAILED);
    assert_int_equal(f->api.launches, 1);
}

/* Regression: a failure that on_failure handled left no trace once the run succeeded. */
static void test_recovered_failure_counted(void **state)
{
    fx *f = *state;
    add_src(f, fanout_src);
    f->api.fail_prefix = "fy--";
    char run[16];
    start(f, "fan", NULL, run);
    assert_int_equal(run_until_done(f, run, 1000, 400), STORE_RUN_SUCCEEDED);
    engine_stats s = engine_get_stats(f->e);
    assert_int_equal(s.runs_recovered, 1);
    assert_int_equal(s.runs_succeeded, 1);
    char *err = step_error(f, run, "Y");
    assert_non_null(strstr(err, "ended JOB_STATE_FAILED"));
    free(err);
}

/* Regression (heap-use-after-free under ASan): the API answered calls after engine_free had freed them. Either
 * order of teardown is safe now. */
static void test_free_with_calls_in_flight(void **state)
{
    fx *f = *state;
    add_file(f, "workflows/example.lua");
    char run[16];
    start(f, "example", NULL, run);
    for (int i = 0; i < 5 && fd_pending(&f->api) == 0; i++) engine_tick(f->e, 0); /* a launch sent, answer queued */
    assert_true(fd_pending(&f->api) > 0);
    engine_free(f->e);
    f->e = NULL;
    f->api.base.ops->free(&f->api.base); /* answers reach orphaned calls only */
    f->e = new_engine(f);
    add_file(f, "workflows/example.lua");
    assert_int_equal(run_until_done(f, run, 1000, 400), STORE_RUN_SUCCEEDED);
    assert_int_equal(f->api.n_jobs, 3);
}

/* An idle engine says when it must look again: the poll of a running job, not "now". */
static void test_next_due_for_idle_sleep(void **state)
{
    fx *f = *state;
    slow_poll_engine(f, 600000);
    add_src(f, chain_src);
    f->api.stay_prefix = "la--";
    char run[16];
    start(f, "lag", NULL, run);
    for (int i = 0; i < 10; i++) engine_tick(f->e, 0);
    expect_step(f, run, "A", STORE_STEP_RUNNING, 1);
    int64_t due = engine_next_due(f->e);
    assert_true(due >= g_now + 590000 && due <= g_now + 600000);
}


/* ---- redrive and declared params ---- */

static int count_jobs(fx *f, const char *prefix)
{
    int n = 0;
    for (int i = 0; i < f->api.n_jobs; i++) n += fd_starts(f->api.jobs[i].name, prefix);
    return n;
}

/* Redrive: only the failed step launches again (a new attempt, a new name), the succeeded one keeps its job. */
static void test_redrive_runs_failed_steps_only(void **state)
{
    fx *f = *state;
    add_src(f, fanout_src);
    f->api.fail_prefix = "fc--"; /* C fails once: its first job */
    f->api.fail_times = 1;
    char run[16];
    start(f, "fan", NULL, run);
    assert_int_equal(run_until_done(f, run, 1000, 400), STORE_RUN_FAILED);
    expect_step(f, run, "B", STORE_STEP_SUCCEEDED, 1);
    expect_step(f, run, "C", STORE_STEP_FAILED, 1);
    char *err = NULL;
    assert_int_equal(engine_redrive_run(f->e, run, NULL, 0, &err), 0);
    assert_int_equal(run_until_done(f, run, 1000, 400), STORE_RUN_SUCCEEDED);
    assert_int_equal(count_jobs(f, "fa--"), 1);
    assert_int_equal(count_jobs(f, "fb--"), 1); /* not re-launched */
    assert_int_equal(count_jobs(f, "fc--"), 2); /* attempt 1 (failed) and 2 */
    char name[64];
    snprintf(name, sizeof name, "fc--%s-2", run);
    assert_non_null(fd_by_name(&f->api, name));
    expect_step(f, run, "C", STORE_STEP_SUCCEEDED, 2);
    expect_step(f, run, "Y", STORE_STEP_SUCCEEDED, 1);
    for (int i = 0; i < f->api.n_jobs; i++) /* every name once */
        for (int k = i + 1; k < f->api.n_jobs; k++) assert_string_not_equal(f->api.jobs[i].name, f->api.jobs[k].name);
    /* a succeeded run cannot be redriven */
    assert_int_equal(engine_redrive_run(f->e, run, NULL, 0, &err), ENG_ERR_STATE);
    assert_non_null(strstr(err, "only a failed or cancelled run can be redriven"));
    free(err);
    err = NULL;
    assert_int_equal(engine_redrive_run(f->e, "nosuchrun", NULL, 0, &err), ENG_ERR_NOTFOUND);
    free(err);
}

/* A step that only a failure had reached (on_failure) does not run again unless the failure happens again. */
static void test_redrive_on_failure_target_waits(void **state)
{
    fx *f = *state;
    add_src(f, "return { name = 'rf', project = 'p', region = 'r', start = 'A', steps = {\n"
               "  A = { job_name = 'rfa', template = 'gs://bkt/a', on_failure = 'F' },\n"
               "  F = { job_name = 'rff', template = 'gs://bkt/f' } } }");
    f->api.fail_prefix = "rf"; /* A fails, then F fails: the run fails */
    f->api.fail_times = 2;
    char run[16];
    start(f, "rf", NULL, run);
    assert_int_equal(run_until_done(f, run, 1000, 400), STORE_RUN_FAILED);
    expect_step(f, run, "F", STORE_STEP_FAILED, 1);
    assert_int_equal(engine_redrive_run(f->e, run, NULL, 0, NULL), 0);
    expect_step(f, run, "F", STORE_STEP_SKIPPED, 1);
    assert_int_equal(run_until_done(f, run, 1000, 400), STORE_RUN_SUCCEEDED);
    assert_int_equal(count_jobs(f, "rfa--"), 2);
    assert_int_equal(count_jobs(f, "rff--"), 1); /* A succeeded this time: F was not needed */
}

/* Regression (issue 17, finding 12): after a redrive, a failure that routed to an on_failure step that had already
 * run (and succeeded) before the redrive did not run it again: the step stayed succeeded, so the run ended
 * succeeded (recovered) with no alert. Steps reached only through a failure — Alert and Cleanup after it — now wait
 * to be reached again, whatever state they ended in: Load fails again, so Alert and Cleanup run again (attempt 2). */
static const char *alerting_src =
    "return { name = 'al', project = 'p', region = 'r', start = 'Load', steps = {\n"
    "  Load = { job_name = 'xf-load', template = 'gs://bkt/l', on_failure = 'Alert' },\n"
    "  Alert = { job_name = 'al-alert', template = 'gs://bkt/a', next = 'Cleanup', ['function'] = function(ctx)\n"
    "      return { msg = ctx.job.step .. ' ' .. ctx.job.name .. ' ' .. ctx.job.state } end },\n"
    "  Cleanup = { job_name = 'xf-clean', template = 'gs://bkt/c' } } }";

static void test_redrive_reruns_on_failure_step(void **state)
{
    fx *f = *state;
    add_src(f, alerting_src);
    f->api.fail_prefix = "xf-"; /* Load fails, Alert succeeds, Cleanup fails: the run fails; then Load fails again */
    f->api.fail_times = 3;
    char run[16];
    start(f, "al", NULL, run);
    assert_int_equal(run_until_done(f, run, 1000, 400), STORE_RUN_FAILED);
    expect_step(f, run, "Alert", STORE_STEP_SUCCEEDED, 1);
    expect_step(f, run, "Cleanup", STORE_STEP_FAILED, 1);
    assert_int_equal(engine_redrive_run(f->e, run, NULL, 0, NULL), 0);
    expect_step(f, run, "Load", STORE_STEP_PENDING, 1);
    expect_step(f, run, "Alert", STORE_STEP_SKIPPED, 1); /* waits to be reached again */
    expect_step(f, run, "Cleanup", STORE_STEP_SKIPPED, 1);
    assert_int_equal(run_until_done(f, run, 1000, 400), STORE_RUN_SUCCEEDED);
    expect_step(f, run, "Load", STORE_STEP_FAILED, 2);
    expect_step(f, run, "Alert", STORE_STEP_SUCCEEDED, 2); /* the alert went out again */
    expect_step(f, run, "Cleanup", STORE_STEP_SUCCEEDED, 2);
    assert_int_equal(count_jobs(f, "al-alert--"), 2);
    assert_int_equal(count_jobs(f, "xf-load--"), 2);
    assert_int_equal(count_jobs(f, "xf-clean--"), 2);
    /* the second alert is about the second failure */
    store_step st = {0};
    assert_int_equal(store_step_get(f->st, run, "Alert", &st, NULL), STORE_OK);
    char want[96];
    snprintf(want, sizeof want, "\"msg\":\"Load xf-load--%s-2 JOB_STATE_FAILED\"", run);
    if (strstr(st.request_json, want) == NULL) fprintf(stderr, "request %s, want %s\n", st.request_json, want);
    assert_non_null(strstr(st.request_json, want));
    store_step_free(&st);
    store_run r = {0};
    assert_int_equal(store_run_get(f->st, run, &r, NULL), STORE_OK);
    assert_null(r.error);
    store_run_free(&r);
}

/* A redrive whose failed step succeeds this time: the on_failure step that ran before does not run again. */
static void test_redrive_on_failure_not_needed(void **state)
{
    fx *f = *state;
    add_src(f, alerting_src);
    f->api.fail_prefix = "xf-"; /* Load fails, Cleanup fails; then Load succeeds */
    f->api.fail_times = 2;
    char run[16];
    start(f, "al", NULL, run);
    assert_int_equal(run_until_done(f, run, 1000, 400), STORE_RUN_FAILED);
    assert_int_equal(engine_redrive_run(f->e, run, NULL, 0, NULL), 0);
    assert_int_equal(run_until_done(f, run, 1000, 400), STORE_RUN_SUCCEEDED);
    expect_step(f, run, "Load", STORE_STEP_SUCCEEDED, 2);
    expect_step(f, run, "Alert", STORE_STEP_SKIPPED, 1);
    expect_step(f, run, "Cleanup", STORE_STEP_SKIPPED, 1);
    assert_int_equal(count_jobs(f, "al-alert--"), 1);
    assert_int_equal(count_jobs(f, "xf-clean--"), 1);
}

/* Redrive of a cancelled run, with params changed: the cancelled steps start again and see the new params. */
static void test_redrive_cancelled_with_params(void **state)
{
    fx *f = *state;
    add_src(f, "return { name = 'rc', project = 'p', region = 'r', start = 'A', steps = {\n"
               "  A = { job_name = 'rca', template = 'gs://bkt/a', ['function'] = function(ctx)\n"
               "          return { mode = ctx.run.params.mode or 'none' } end } } }");
    f->api.stay_prefix = "rca--";
    char run[16];
    start(f, "rc", NULL, run);
    for (int i = 0; i < 10; i++) engine_tick(f->e, 0);
    assert_int_equal(engine_cancel_run(f->e, run, NULL), 0);
    assert_int_equal(run_until_done(f, run, 1000, 400), STORE_RUN_CANCELLED);
    f->api.stay_prefix = NULL;
    json_t *p = json_pack("{s:s}", "mode", "fast");
    assert_int_equal(engine_redrive_run(f->e, run, p, 0, NULL), 0);
    json_decref(p);
    assert_int_equal(run_until_done(f, run, 1000, 400), STORE_RUN_SUCCEEDED);
    store_step st = {0};
    assert_int_equal(store_step_get(f->st, run, "A", &st, NULL), STORE_OK);
    assert_int_equal(st.attempt, 2);
    assert_non_null(strstr(st.request_json, "\"mode\":\"fast\""));
    store_step_free(&st);
}

/* Regression: a missing required param showed up as a Lua "attempt to concatenate a nil value". */
static void test_declared_params(void **state)
{
    fx *f = *state;
    add_src(f, "return { name = 'dp', project = 'p', region = 'r', start = 'A',\n"
               "  params = { date = { required = true, description = 'the day to load' },\n"
               "             full = { default = 'false' } },\n"
               "  steps = { A = { job_name = 'dpa', template = 'gs://bkt/a', ['function'] = function(ctx)\n"
               "    return { day = ctx.run.params.date .. '', full = ctx.run.params.full } end } } }");
    char run[16];
    char *err = NULL;
    assert_int_equal(engine_start_run(f->e, "dp", NULL, NULL, "test", run, sizeof run, &err), ENG_ERR_PARAMS);
    assert_string_equal(err, "missing required parameter 'date' of workflow dp: the day to load");
    free(err);
    err = NULL;
    json_t *bad = json_pack("{s:s,s:s}", "date", "2024-05-01", "dte", "x");
    assert_int_equal(engine_start_run(f->e, "dp", bad, NULL, "test", run, sizeof run, &err), ENG_ERR_PARAMS);
    assert_string_equal(err, "workflow dp has no parameter 'dte' (it declares: date, full)");
    json_decref(bad);
    free(err);
    json_t *good = json_pack("{s:s}", "date", "2024-05-01");
    assert_int_equal(engine_start_run(f->e, "dp", good, NULL, "test", run, sizeof run, NULL), 0);
    json_decref(good);
    store_run r = {0};
    assert_int_equal(store_run_get(f->st, run, &r, NULL), STORE_OK);
    assert_string_equal(r.params_json, "{\"date\":\"2024-05-01\",\"full\":\"false\"}"); /* the default filled in */
    store_run_free(&r);
    assert_int_equal(run_until_done(f, run, 1000, 200), STORE_RUN_SUCCEEDED);
}

/* A drain that Dataflow refuses (a batch job) becomes a cancel instead of being retried forever. */
static void test_refused_drain_cancels(void **state)
{
    fx *f = *state;
    add_src(f, "return { name = 'bd', project = 'p', region = 'r', start = 'S', steps = {\n"
               "  S = { job_name = 'bds', template = 'gs://bkt/s', on_cancel = 'drain' } } }");
    f->api.stay_prefix = "bds--";
    f->api.batch_only = 1;
    char run[16];
    start(f, "bd", NULL, run);
    for (int i = 0; i < 10; i++) engine_tick(f->e, 0);
    assert_int_equal(engine_cancel_run(f->e, run, NULL), 0);
    assert_int_equal(run_until_done(f, run, 200, 400), STORE_RUN_CANCELLED);
    assert_int_equal(f->api.drains, 1);
    assert_int_equal(f->api.stops, 2);
    assert_string_equal(f->api.jobs[0].state, "JOB_STATE_CANCELLED");
}

/* The default project (--project, SLUICE_PROJECT, credentials) reaches ctx.project, not only the request. */
static void test_default_project_in_context(void **state)
{
    fx *f = *state;
    engine_free(f->e);
    engine_options o = {.st = f->st, .api = &f->api.base, .now_ms = clock_fn, .default_project = "the-default"};
    o.rec = rec_policy_default();
    f->e = engine_new(&o, NULL);
    add_src(f, "return { name = 'np', region = 'r', start = 'A', steps = {\n"
               "  A = { job_name = 'npa', template = 'gs://bkt/a', ['function'] = function(ctx)\n"
               "          return { seen = ctx.project } end } } }");
    char run[16];
    start(f, "np", NULL, run);
    assert_int_equal(run_until_done(f, run, 1000, 200), STORE_RUN_SUCCEEDED);
    store_step st = {0};
    assert_int_equal(store_step_get(f->st, run, "A", &st, NULL), STORE_OK);
    assert_non_null(strstr(st.request_json, "\"seen\":\"the-default\""));
    store_step_free(&st);
    assert_string_equal(f->api.jobs[0].project, "the-default");
}

int main(void)
{

#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)
    const struct CMUnitTest tests[] = {
        T(test_example_chain_completes),
        T(test_failed_job_does_not_trigger_successor),
        T(test_fanout_join_choice),
        T(test_retry_then_success),
        T(test_attempts_of_retried_step_kept),
        T(test_running_event_gives_running_time),
        T(test_retry_backoff_is_waited),
        T(test_on_failure),
        T(test_join_blocked_by_failed_branch),
        T(test_timeout_cancels_job),
        T(test_cancel_run),
        T(test_cancel_drains_when_asked),
        T(test_lua_error_fails_step_only),
        T(test_rejected_launch),
        T(test_stale_state_after_event_rechecked_soon),
        T(test_no_event_waits_for_poll),
        T(test_failed_store_write_rolls_the_tick_back),
        T(test_cancel_wind_down_followed),
        T(test_timeout_acted_on_at_deadline),
        T(test_timeout_fails_even_if_drained),
        T(test_run_failure_stops_siblings),
        T(test_run_failure_leaves_siblings),
        T(test_rejected_launch_is_final),
        T(test_rejected_launch_retried_when_asked),
        T(test_retry_on_excludes_job_failed),
        T(test_recovered_failure_counted),
        T(test_free_with_calls_in_flight),
        T(test_next_due_for_idle_sleep),
        T(test_redrive_runs_failed_steps_only),
        T(test_redrive_on_failure_target_waits),
        T(test_redrive_reruns_on_failure_step),
        T(test_redrive_on_failure_not_needed),
        T(test_on_failure_context_without_job),
        T(test_fanout_notify_after_refused_report),
        T(test_context_results_shape),
        T(test_redrive_cancelled_with_params),
        T(test_declared_params),
        T(test_refused_drain_cancels),
        T(test_default_project_in_context),
        T(test_unknown_outcome_adopts),
        T(test_crash_after_send_adopts),
        T(test_failing_call_noted_on_step),
        T(test_crash_before_send_resends_once),
        T(test_crash_resends_intent_recorded_in_the_old_shape),
        T(test_late_not_found_does_not_relaunch),
        T(test_cancelled_run_does_not_resend_unsettled_launch),
        T(test_duplicate_and_reordered_events),
        T(test_start_run_idempotent_and_unknown),
        T(test_many_runs_exactly_once),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
