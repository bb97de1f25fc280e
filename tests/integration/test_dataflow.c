/* test_dataflow: the Dataflow client against the real emulator (every call, every error class, the launch-safety
 * rules, proven with the emulator's own launch and creation counters) and against an in-test server that
 * answers garbage, truncated bodies, wrong types and huge bodies. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "dataflow.h"
#include "emu_harness.h"
#include "mhd_stub.h"
#include "util.h"

static emu_proc emu;
static hc_client *hc;
static ga_auth *ga;
static df_client *df;
static const retry_policy fast = {.initial_ms = 10, .multiplier = 2, .cap_ms = 80, .max_attempts = 4, .deadline_ms = 20000};

static int group_setup(void **state)
{
    (void)state;
    return emu_start(&emu, NULL);
}

static int group_teardown(void **state)
{
    (void)state;
    emu_stop(&emu);
    return 0;
}

static df_client *make_df(const df_options *extra)
{
    df_options o = {.region = "europe-west4", .policy = &fast, .launch_policy = &fast, .base_url = emu.base};
    if (extra) {
        o = *extra;
        if (!o.region) o.region = "europe-west4";
        if (!o.policy) o.policy = &fast;
        if (!o.launch_policy) o.launch_policy = &fast;
        if (!o.base_url) o.base_url = emu.base;
    }
    const char *err = NULL;
    df_client *d = df_new(hc, ga, &o, &err);
    assert_non_null(d);
    return d;
}

static int setup(void **state)
{
    (void)state;
    if (emu_reset(&emu) != 0) return -1;
    hc = hc_new(NULL);
    char *err = NULL;
    ga = ga_new_from_file(hc, emu.sa_path, NULL, &err);
    if (ga == NULL) return -1;
    df = make_df(NULL);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    df_free(df);
    ga_free(ga);
    hc_free(hc);
    df = NULL;
    return 0;
}

typedef struct call {
    int done;
    df_result *r;
} call;

static void on_res(void *ud, df_result *r)
{
    call *c = ud;
    c->done++;
    c->r = r;
}

static df_result *wait_call(call *c)
{
    for (int i = 0; i < 6000 && !c->done; i++) hc_run(hc, 10);
    assert_int_equal(c->done, 1);
    return c->r;
}

/* A launch request for the emulator's project (the key file's) in europe-west4; params/env NULL: the defaults. */
static launch_req *req_in(const char *project, const char *region, launch_kind kind, const char *name,
                          const char *path, json_t *params, json_t *env)
{
    launch_req *l = launch_new(kind, path ? path : "gs://bucket/templates/t.json", name, project, region, params, env);
    json_decref(params);
    json_decref(env);
    assert_non_null(l);
    return l;
}

static launch_req *req_for(const char *name, const char *path)
{
    return req_in(ga_project_id(ga), "europe-west4", LAUNCH_FLEX, name, path, json_pack("{s:s}", "input", "gs://bucket/in/*"),
                  json_pack("{s:s, s:{s:s}}", "tempLocation", "gs://bucket/tmp", "additionalUserLabels", "sluice-run", "r1"));
}

static df_result *launch(df_client *d, const char *name, unsigned flags)
{
    launch_req *l = req_for(name, NULL);
    call c = {0};
    const char *err = NULL;
    assert_true(df_launch(d, l, flags, on_res, &c, &err) > 0);
    launch_free(l);
    return wait_call(&c);
}

static df_result *get(df_client *d, const char *id, df_view view, unsigned flags)
{
    call c = {0};
    const char *err = NULL;
    assert_true(df_job_get(d, id, view, flags, on_res, &c, &err) > 0);
    return wait_call(&c);
}

static void show(const char *what, df_result *r)
{
    if (r->err != DF_OK)
        print_message("%s: %s http=%ld status=%s msg=%s attempts=%d\n", what, df_err_name(r->err), r->http_status,
                      r->status ? r->status : "-", r->message ? r->message : "-", r->attempts);
}

static long created(const char *name) { return emu_stat(&emu, "jobs_created_by_name", name, NULL); }
static long launches(const char *name) { return emu_stat(&emu, "launches_by_name", name, NULL); }

static void config(const char *json) { assert_int_equal(emu_config(&emu, json), 0); }

static void finish_job(const char *id, const char *state)
{
    char path[300], body[100];
    snprintf(path, sizeof path, "/emulator/jobs/%s:finish", id);
    snprintf(body, sizeof body, "{\"state\":\"%s\"}", state);
    json_t *j = emu_call(&emu, "POST", path, body);
    assert_non_null(j);
    json_decref(j);
}

/* ---- every call ---- */

static void test_flex_launch_get_list(void **state)
{
    (void)state;
    config("{\"job_defaults\": {\"running_ms\": 60000}}");
    df_result *r = launch(df, "job-a", 0);
    show("launch", r);
    assert_int_equal(r->err, DF_OK);
    assert_non_null(r->job);
    assert_non_null(r->job->id);
    assert_string_equal(r->job->name, "job-a");
    assert_int_equal(r->adopted, 0);
    assert_int_equal(r->attempts, 1);
    char *id = strdup(r->job->id);
    df_result_free(r);

    r = get(df, id, DF_VIEW_ALL, 0);
    assert_int_equal(r->err, DF_OK);
    assert_string_equal(r->job->id, id);
    assert_string_equal(r->job->project_id, "emulator-project");
    assert_string_equal(r->job->location, "europe-west4");
    assert_non_null(r->job->current_state);
    assert_true(strncmp(r->job->current_state, "JOB_STATE_", 10) == 0);
    assert_non_null(r->job->labels);
    assert_string_equal(json_string_value(json_object_get(r->job->labels, "sluice-run")), "r1");
    assert_non_null(r->job->raw);
    df_result_free(r);

    call c = {0};
    const char *err;
    df_list_query q = {.filter = DF_FILTER_ACTIVE, .name = "job-a"};
    assert_true(df_jobs_list(df, &q, on_res, &c, &err) > 0);
    r = wait_call(&c);
    assert_int_equal(r->err, DF_OK);
    assert_int_equal(r->n_jobs, 1);
    assert_string_equal(r->jobs[0].id, id);
    assert_null(r->next_page_token);
    df_result_free(r);

    q.name = "no-such-job";
    memset(&c, 0, sizeof c);
    df_jobs_list(df, &q, on_res, &c, &err);
    r = wait_call(&c);
    assert_int_equal(r->err, DF_OK);
    assert_int_equal(r->n_jobs, 0); /* {} */
    df_result_free(r);
    free(id);
}

static void test_list_all_pages(void **state)
{
    (void)state;
    config("{\"job_defaults\": {\"running_ms\": 60000}}");
    char name[32];
    for (int i = 0; i < 7; i++) {
        snprintf(name, sizeof name, "page-job-%d", i);
        df_result_free(launch(df, name, 0));
    }
    call c = {0};
    const char *err;
    df_list_query q = {.filter = DF_FILTER_ALL, .page_size = 2};
    df_jobs_list(df, &q, on_res, &c, &err);
    df_result *r = wait_call(&c);
    assert_int_equal(r->n_jobs, 2);
    assert_non_null(r->next_page_token);
    df_result_free(r);
    memset(&c, 0, sizeof c);
    df_jobs_list_all(df, &q, on_res, &c, &err);
    r = wait_call(&c);
    assert_int_equal(r->err, DF_OK);
    assert_int_equal(r->n_jobs, 7);
    assert_int_equal(r->attempts, 4); /* 2 + 2 + 2 + 1 */
    for (size_t i = 0; i < r->n_jobs; i++) assert_non_null(r->jobs[i].id);
    df_result_free(r);
}

static void test_classic_launch_and_validate_only(void **state)
{
    (void)state;
    launch_req *body = req_in(ga_project_id(ga), "europe-west4", LAUNCH_CLASSIC, "classic-1", "gs://bucket/templates/classic",
                              json_pack("{s:s}", "input", "gs://bucket/x"), json_pack("{s:s}", "tempLocation", "gs://bucket/tmp"));
    call c = {0};
    const char *err;
    assert_true(df_launch(df, body, 0, on_res, &c, &err) > 0);
    df_result *r = wait_call(&c);
    show("classic", r);
    assert_int_equal(r->err, DF_OK);
    assert_string_equal(r->job->name, "classic-1");
    df_result_free(r);
    launch_free(body);
    /* validateOnly: success without a job, and nothing is created. */
    r = launch(df, "validate-me", DF_VALIDATE_ONLY);
    assert_int_equal(r->err, DF_OK);
    assert_null(r->job);
    df_result_free(r);
    assert_int_equal(created("validate-me"), 0);
    /* Classic without tempLocation: a 400 that is reported as is (after one look-up finds nothing). */
    body = req_in(ga_project_id(ga), "europe-west4", LAUNCH_CLASSIC, "classic-2", "gs://bucket/templates/classic", NULL, NULL);
    memset(&c, 0, sizeof c);
    df_launch(df, body, 0, on_res, &c, &err);
    r = wait_call(&c);
    assert_int_equal(r->err, DF_ERR_HTTP);
    assert_int_equal(r->http_status, 400);
    assert_non_null(strstr(r->message, "tempLocation"));
    assert_int_equal(launches("classic-2"), 1);
    assert_int_equal(df_get_stats(df).lookups, 1);
    df_result_free(r);
    launch_free(body);
}

static void test_cancel_and_drain(void **state)
{
    (void)state;
    config("{\"job_defaults\": {\"running_ms\": 60000, \"cancel_ms\": 50, \"drain_ms\": 50}}");
    df_result *r = launch(df, "to-cancel", 0);
    char *id = strdup(r->job->id);
    df_result_free(r);
    call c = {0};
    const char *err;
    assert_true(df_job_cancel(df, id, on_res, &c, &err) > 0);
    r = wait_call(&c);
    show("cancel", r);
    assert_int_equal(r->err, DF_OK);
    assert_int_equal(r->already_terminated, 0);
    assert_non_null(r->job);
    df_result_free(r);
    finish_job(id, "JOB_STATE_CANCELLED");
    /* Cancelling a finished job: "has terminated" is success. */
    memset(&c, 0, sizeof c);
    df_job_cancel(df, id, on_res, &c, &err);
    r = wait_call(&c);
    assert_int_equal(r->err, DF_OK);
    assert_int_equal(r->already_terminated, 1);
    df_result_free(r);
    memset(&c, 0, sizeof c);
    df_job_drain(df, id, on_res, &c, &err);
    r = wait_call(&c);
    assert_int_equal(r->err, DF_OK);
    assert_int_equal(r->already_terminated, 1);
    df_result_free(r);
    free(id);
    /* Draining a batch job is a real error, reported verbatim and not retried. */
    r = launch(df, "batch-drain", 0);
    id = strdup(r->job->id);
    df_result_free(r);
    memset(&c, 0, sizeof c);
    df_job_drain(df, id, on_res, &c, &err);
    r = wait_call(&c);
    assert_int_equal(r->err, DF_ERR_HTTP);
    assert_int_equal(r->http_status, 400);
    assert_string_equal(r->status, "FAILED_PRECONDITION");
    assert_non_null(strstr(r->message, "streaming"));
    assert_int_equal(r->attempts, 1);
    df_result_free(r);
    free(id);
    /* A streaming job drains. */
    launch_req *lp = req_in(ga_project_id(ga), "europe-west4", LAUNCH_FLEX, "stream-1", NULL,
                            json_pack("{s:s}", "streaming", "true"), NULL);
    memset(&c, 0, sizeof c);
    df_launch(df, lp, 0, on_res, &c, &err);
    r = wait_call(&c);
    launch_free(lp);
    id = strdup(r->job->id);
    df_result_free(r);
    memset(&c, 0, sizeof c);
    df_job_drain(df, id, on_res, &c, &err);
    r = wait_call(&c);
    show("drain", r);
    assert_int_equal(r->err, DF_OK);
    assert_int_equal(r->already_terminated, 0);
    df_result_free(r);
    free(id);
}

/* ---- error classes ---- */

static void test_400_parameter_violations_verbatim(void **state)
{
    (void)state;
    config("{\"templates\": {\"required_parameters\": {\"gs://bucket/strict/*\": [\"input\", \"output\"]}}}");
    launch_req *lp = req_in(ga_project_id(ga), "europe-west4", LAUNCH_FLEX, "strict-1", "gs://bucket/strict/t.json", NULL, NULL);
    call c = {0};
    const char *err;
    df_launch(df, lp, 0, on_res, &c, &err);
    df_result *r = wait_call(&c);
    launch_free(lp);
    assert_int_equal(r->err, DF_ERR_HTTP);
    assert_int_equal(r->http_status, 400);
    assert_string_equal(r->status, "INVALID_ARGUMENT");
    assert_int_equal(r->n_violations, 2);
    assert_string_equal(r->violations[0].parameter, "input");
    assert_string_equal(r->violations[0].description, "Required parameter is missing.");
    assert_string_equal(r->violations[1].parameter, "output");
    assert_int_equal(r->adopted, 0);
    /* One launch request, one look-up (ACTIVE + TERMINATED), nothing created, never re-sent. */
    assert_int_equal(launches("strict-1"), 1);
    assert_int_equal(created("strict-1"), 0);
    assert_int_equal(df_get_stats(df).lookups, 1);
    assert_int_equal(r->attempts, 3);
    df_result_free(r);
}

static void test_404_get(void **state)
{
    (void)state;
    df_result *r = get(df, "2020-01-01_00_00_00-123", DF_VIEW_SUMMARY, DF_NO_LAG_RETRY);
    assert_int_equal(r->err, DF_ERR_HTTP);
    assert_int_equal(r->http_status, 404);
    assert_string_equal(r->status, "NOT_FOUND");
    assert_int_equal(r->attempts, 1);
    df_result_free(r);
    /* A client with a short lag window gives up on a 404 after that window. */
    df_options o = {.lag_window_ms = 300};
    df_client *d = make_df(&o);
    r = get(d, "2020-01-01_00_00_00-123", DF_VIEW_SUMMARY, 0);
    assert_int_equal(r->http_status, 404);
    assert_true(r->attempts > 1);
    df_result_free(r);
    df_free(d);
}

static void test_lag_window(void **state)
{
    (void)state;
    config("{\"lag\": {\"window_ms\": 700, \"mode\": \"not_found\"}, \"job_defaults\": {\"running_ms\": 60000}}");
    df_result *r = launch(df, "laggy", 0);
    char *id = strdup(r->job->id);
    df_result_free(r);
    finish_job(id, "JOB_STATE_DONE");
    r = get(df, id, DF_VIEW_SUMMARY, DF_NO_LAG_RETRY);
    assert_int_equal(r->http_status, 404); /* the API lags behind the job's end */
    df_result_free(r);
    r = get(df, id, DF_VIEW_SUMMARY, 0);
    show("lag", r);
    assert_int_equal(r->err, DF_OK);
    assert_string_equal(r->job->current_state, "JOB_STATE_DONE");
    assert_true(r->attempts > 1);
    df_result_free(r);
    free(id);
}

static void test_409_adopts_existing(void **state)
{
    (void)state;
    config("{\"job_defaults\": {\"running_ms\": 60000}}");
    df_result *a = launch(df, "dup", 0);
    df_result *b = launch(df, "dup", 0);
    show("dup", b);
    assert_int_equal(b->err, DF_OK);
    assert_int_equal(b->adopted, 1);
    assert_string_equal(b->job->id, a->job->id);
    assert_int_equal(launches("dup"), 2);
    assert_int_equal(created("dup"), 1);
    assert_int_equal(emu_stat(&emu, "requests", "flexTemplates.launch", "409"), 1);
    df_result_free(a);
    df_result_free(b);
}

static void test_429_retry_info(void **state)
{
    (void)state;
    config("{\"faults\": {\"jobs.get\": {\"rate_429\": 1.0, \"retry_delay_s\": 1}}}");
    retry_policy once = fast;
    once.max_attempts = 1;
    df_options o = {.policy = &once};
    df_client *d = make_df(&o);
    df_result *r = get(d, "any", DF_VIEW_SUMMARY, 0);
    assert_int_equal(r->err, DF_ERR_HTTP);
    assert_int_equal(r->http_status, 429);
    assert_string_equal(r->status, "RESOURCE_EXHAUSTED");
    assert_int_equal(r->retry_delay_ms, 1000);
    df_result_free(r);
    df_free(d);
    /* With retries, the server's 1 s hint is honoured over the 10-80 ms backoff. */
    retry_policy three = fast;
    three.max_attempts = 3;
    o.policy = &three;
    d = make_df(&o);
    int64_t t0 = hc_now_ms(hc);
    r = get(d, "any", DF_VIEW_SUMMARY, 0);
    int64_t took = hc_now_ms(hc) - t0;
    assert_int_equal(r->attempts, 3);
    assert_true(took >= 2000);
    df_result_free(r);
    df_free(d);
}

static void test_5xx_and_drop_on_idempotent_calls(void **state)
{
    (void)state;
    const char *cfgs[] = {"{\"faults\": {\"jobs.get\": {\"rate_500\": 1.0}}}",
                          "{\"faults\": {\"jobs.get\": {\"rate_500\": 0, \"rate_503\": 1.0}}}",
                          "{\"faults\": {\"jobs.get\": {\"rate_503\": 0, \"drop_rate\": 1.0}}}"};
    long want[] = {500, 503, 0};
    for (int i = 0; i < 3; i++) {
        config(cfgs[i]);
        df_result *r = get(df, "x", DF_VIEW_SUMMARY, 0);
        assert_int_equal(r->attempts, 4); /* max_attempts of the policy */
        assert_int_equal(r->http_status, want[i]);
        if (want[i]) {
            assert_int_equal(r->err, DF_ERR_HTTP);
        } else {
            assert_int_equal(r->err, DF_ERR_TRANSPORT);
            assert_int_equal(r->transport, HC_ERR_RESET);
        }
        df_result_free(r);
    }
    /* Transient faults on a real job are ridden out. */
    config("{\"faults\": {\"jobs.get\": {\"drop_rate\": 0}}, \"job_defaults\": {\"running_ms\": 60000}}");
    df_result *l = launch(df, "flaky-get", 0);
    config("{\"faults\": {\"jobs.get\": {\"rate_503\": 0.5}}}");
    retry_policy many = fast;
    many.max_attempts = 15; /* 0.5^15: a spurious failure is practically impossible */
    df_options o = {.policy = &many};
    df_client *d = make_df(&o);
    for (int i = 0; i < 10; i++) {
        df_result *r = get(d, l->job->id, DF_VIEW_SUMMARY, 0);
        assert_int_equal(r->err, DF_OK);
        df_result_free(r);
    }
    df_free(d);
    df_result_free(l);
}

/* What the on_retry hook saw. */
typedef struct {
    int calls, last_failures;
    void *last_ud;
    char reason[200];
} retry_seen;

static void on_retry_hook(void *hook_ud, void *call_ud, const df_result *r, int failures, int64_t delay_ms)
{
    retry_seen *s = hook_ud;
    assert_true(delay_ms >= 0);
    s->calls++;
    assert_int_equal(failures, s->calls); /* counted per call, in order */
    s->last_failures = failures;
    s->last_ud = call_ud;
    snprintf(s->reason, sizeof s->reason, "%s", r->message ? r->message : df_err_name(r->err));
}

static double rng_high(void *ud)
{
    (void)ud;
    return 0.999;
}

/* Runs get() with stderr (where log lines go) in a file; returns how many lines hold `needle`. */
static int get_counting_log(df_client *d, const char *needle)
{
    char path[] = "/tmp/sluice-test-log-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    int saved = dup(STDERR_FILENO);
    dup2(fd, STDERR_FILENO);
    df_result *r = get(d, "x", DF_VIEW_SUMMARY, 0);
    dup2(saved, STDERR_FILENO);
    close(saved);
    assert_int_equal(r->err, DF_ERR_HTTP);
    df_result_free(r);
    FILE *f = fdopen(fd, "r");
    rewind(f);
    char line[4096];
    int n = 0;
    while (fgets(line, sizeof line, f))
        if (strstr(line, needle) && strstr(line, "\"severity\":\"WARNING\"")) n++;
    fclose(f);
    unlink(path);
    return n;
}

/* Regression (issue 17, finding 15): a call that kept failing was retried silently (debug-level lines only), so
 * an unreachable Dataflow looked like a quiet wait. Each failed attempt that is retried reaches the on_retry hook
 * with the call's ud, its count and reason, and is logged at WARNING with its reason: the first at once, then at
 * most one line per warn_interval_ms for the client. */
static void test_retries_reported(void **state)
{
    (void)state;
    config("{\"faults\": {\"jobs.get\": {\"rate_503\": 1.0}}}");
    retry_seen seen = {0};
    df_options o = {.on_retry = on_retry_hook, .hook_ud = &seen, .warn_interval_ms = 3600 * 1000};
    df_client *d = make_df(&o);
    /* 4 attempts (the fast policy): 3 failures retried, all told to the hook; one WARNING line (rate-limited) */
    assert_int_equal(get_counting_log(d, "dataflow: GET "), 1);
    assert_int_equal(seen.calls, 3);
    assert_int_equal(seen.last_failures, 3);
    print_message("last reason: %s\n", seen.reason);
    assert_true(seen.reason[0] != '\0');
    /* a second failing call within the interval: no line at all (held back, counted) */
    seen = (retry_seen){0};
    assert_int_equal(get_counting_log(d, "dataflow: GET "), 0);
    assert_int_equal(seen.calls, 3);
    df_free(d);
    /* with a 1 ms interval and backoffs at their ceiling (10, 20, 40 ms) every retried attempt is logged, with
     * the HTTP status */
    seen = (retry_seen){0};
    o.warn_interval_ms = 1;
    o.rng = rng_high;
    d = make_df(&o);
    assert_int_equal(get_counting_log(d, "failed (HTTP 503)"), 3);
    df_free(d);
    config("{\"faults\": {\"jobs.get\": {\"rate_503\": 0}}}");
}

static void test_401_refreshes_once(void **state)
{
    (void)state;
    df_result *r = get(df, "warm-up", DF_VIEW_SUMMARY, DF_NO_LAG_RETRY); /* obtains a token */
    df_result_free(r);
    assert_int_equal(emu_stat(&emu, "token_grants", "jwt_bearer", NULL), 1);
    json_decref(emu_call(&emu, "POST", "/emulator/revoke-tokens", "{}"));
    config("{\"job_defaults\": {\"running_ms\": 60000}}");
    r = launch(df, "after-revoke", 0);
    show("after revoke", r);
    assert_int_equal(r->err, DF_OK);
    assert_int_equal(r->attempts, 2);
    assert_int_equal(df_get_stats(df).auth_refreshes, 1);
    assert_int_equal(emu_stat(&emu, "token_grants", "jwt_bearer", NULL), 2);
    assert_int_equal(created("after-revoke"), 1);
    df_result_free(r);
    /* A static token cannot be refreshed: the 401 is reported, once. */
    ga_auth *st = ga_new_static("ya29.not-valid", "emulator-project");
    df_options o = {.region = "europe-west4", .policy = &fast, .base_url = emu.base};
    const char *err;
    df_client *d = df_new(hc, st, &o, &err);
    r = get(d, "x", DF_VIEW_SUMMARY, DF_NO_LAG_RETRY);
    assert_int_equal(r->http_status, 401);
    assert_string_equal(r->status, "UNAUTHENTICATED");
    assert_int_equal(r->attempts, 1);
    assert_null(strstr(r->message, "ya29.not-valid"));
    df_result_free(r);
    df_free(d);
    ga_free(st);
}

/* ---- launch safety: each proves with the emulator's counters that no second job was created ---- */

/* Regression: libcurl silently re-sent a launch whose reused keep-alive connection was dropped after the job
 * was created (two POSTs, the second answered 409; with a fast job, two jobs). Launches now use a fresh
 * connection (hc_req.fresh_connection), so launches_by_name stays 1. */
static void test_unknown_outcome_adopts(void **state)
{
    (void)state;
    /* The job is created but the answer never comes (connection dropped after 300 ms). */
    config("{\"job_defaults\": {\"running_ms\": 60000}, \"faults\": {\"flexTemplates.launch\": "
           "{\"launched_timeout_rate\": 1.0, \"launched_timeout_ms\": 300, \"launched_timeout_drop\": true}}}");
    df_result *r = launch(df, "lost-answer", 0);
    show("lost", r);
    assert_int_equal(r->err, DF_OK);
    assert_int_equal(r->adopted, 1);
    assert_non_null(r->job->id);
    assert_int_equal(launches("lost-answer"), 1);
    assert_int_equal(created("lost-answer"), 1);
    df_result_free(r);
    /* Same, but our own timeout fires first (outcome unknown by timeout rather than reset). */
    config("{\"faults\": {\"flexTemplates.launch\": {\"launched_timeout_drop\": false, \"launched_timeout_ms\": 2000}}}");
    df_options o = {.timeout_ms = 400};
    df_client *d = make_df(&o);
    r = launch(d, "slow-answer", 0);
    show("slow", r);
    assert_int_equal(r->err, DF_OK);
    assert_int_equal(r->adopted, 1);
    assert_int_equal(launches("slow-answer"), 1);
    assert_int_equal(created("slow-answer"), 1);
    df_result_free(r);
    df_free(d);
}

static void test_fast_job_already_terminated_is_adopted(void **state)
{
    (void)state;
    /* The job runs and finishes before the look-up: found among TERMINATED jobs created after our intent. */
    config("{\"job_defaults\": {\"pending_ms\": 0, \"running_ms\": 30}, \"faults\": {\"flexTemplates.launch\": "
           "{\"launched_timeout_rate\": 1.0, \"launched_timeout_ms\": 300, \"launched_timeout_drop\": true}}}");
    df_result *r = launch(df, "speedy", 0);
    show("speedy", r);
    assert_int_equal(r->err, DF_OK);
    assert_int_equal(r->adopted, 1);
    assert_string_equal(r->job->current_state, "JOB_STATE_DONE");
    assert_int_equal(launches("speedy"), 1);
    assert_int_equal(created("speedy"), 1);
    df_result_free(r);
}

static void test_old_terminated_job_is_not_adopted(void **state)
{
    (void)state;
    /* An older job with the same name finished long ago; the new launch fails with 503 every time. The old job
     * must not be mistaken for ours: we re-send (bounded) and report the failure. */
    config("{\"job_defaults\": {\"pending_ms\": 0, \"running_ms\": 60000}}");
    df_result *old = launch(df, "reused-name", 0);
    finish_job(old->job->id, "JOB_STATE_DONE");
    usleep(300 * 1000);
    config("{\"faults\": {\"flexTemplates.launch\": {\"rate_503\": 1.0}}}");
    df_options o = {.adopt_skew_ms = 100};
    retry_policy three = fast;
    three.max_attempts = 3;
    o.launch_policy = &three;
    df_client *d = make_df(&o);
    df_result *r = launch(d, "reused-name", 0);
    assert_int_equal(r->err, DF_ERR_HTTP);
    assert_int_equal(r->http_status, 503);
    assert_int_equal(r->adopted, 0);
    assert_int_equal(launches("reused-name"), 1 + 3);
    assert_int_equal(created("reused-name"), 1);
    assert_int_equal(df_get_stats(d).lookups, 3);
    df_result_free(r);
    df_result_free(old);
    df_free(d);
}

static void test_400_but_launched_is_adopted(void **state)
{
    (void)state;
    config("{\"job_defaults\": {\"running_ms\": 60000}, \"faults\": {\"flexTemplates.launch\": "
           "{\"launched_400_rate\": 1.0}}}");
    df_result *r = launch(df, "trap", 0);
    show("trap", r);
    assert_int_equal(r->err, DF_OK);
    assert_int_equal(r->adopted, 1);
    assert_int_equal(launches("trap"), 1);
    assert_int_equal(created("trap"), 1);
    assert_int_equal(emu_stat(&emu, "requests", "flexTemplates.launch", "400"), 1);
    df_result_free(r);
}

static void test_5xx_and_drop_on_launch_resend_after_lookup(void **state)
{
    (void)state;
    /* 503 and dropped connections created nothing: look up, find nothing, re-send; each name ends up created
     * exactly once. */
    config("{\"job_defaults\": {\"running_ms\": 60000}, \"faults\": {\"flexTemplates.launch\": "
           "{\"rate_503\": 0.3, \"drop_rate\": 0.3}}}");
    retry_policy many = fast;
    many.max_attempts = 30;
    df_options o = {.launch_policy = &many};
    df_client *d = make_df(&o);
    char name[32];
    for (int i = 0; i < 8; i++) {
        snprintf(name, sizeof name, "flaky-%d", i);
        df_result *r = launch(d, name, 0);
        show(name, r);
        assert_int_equal(r->err, DF_OK);
        assert_int_equal(created(name), 1);
        df_result_free(r);
    }
    df_stats st = df_get_stats(d);
    print_message("8 launches: %lld POSTs, %lld look-ups, %lld retries\n", (long long)st.launch_posts,
                  (long long)st.lookups, (long long)st.retries);
    assert_true(st.launch_posts > 8);
    assert_int_equal(st.lookups, st.launch_posts - 8);
    df_free(d);
    /* Always failing: bounded by the policy. */
    config("{\"faults\": {\"flexTemplates.launch\": {\"rate_503\": 1.0, \"drop_rate\": 0}}}");
    df_result *r = launch(df, "never", 0);
    assert_int_equal(r->err, DF_ERR_HTTP);
    assert_int_equal(r->http_status, 503);
    assert_int_equal(launches("never"), 4);
    assert_int_equal(created("never"), 0);
    df_result_free(r);
}

static void test_429_on_launch_resends_without_lookup(void **state)
{
    (void)state;
    config("{\"job_defaults\": {\"running_ms\": 60000}, \"faults\": {\"flexTemplates.launch\": "
           "{\"rate_429\": 0.5, \"retry_delay_s\": 0}}}");
    retry_policy many = fast;
    many.max_attempts = 30;
    df_options o = {.launch_policy = &many};
    df_client *d = make_df(&o);
    char name[32];
    for (int i = 0; i < 6; i++) {
        snprintf(name, sizeof name, "quota-%d", i);
        df_result *r = launch(d, name, 0);
        assert_int_equal(r->err, DF_OK);
        assert_int_equal(r->adopted, 0);
        assert_int_equal(created(name), 1);
        df_result_free(r);
    }
    assert_true(emu_stat(&emu, "requests", "flexTemplates.launch", "429") > 0);
    assert_int_equal(df_get_stats(d).lookups, 0);
    df_free(d);
    /* Always 429: bounded, the hint reported. */
    config("{\"faults\": {\"flexTemplates.launch\": {\"rate_429\": 1.0, \"retry_delay_s\": 0}}}");
    df_result *r = launch(df, "quota-never", 0);
    assert_int_equal(r->http_status, 429);
    assert_int_equal(r->retry_delay_ms, 0);
    assert_int_equal(launches("quota-never"), 4);
    df_result_free(r);
}

static df_result *launch_budget(df_client *d, const char *name, int64_t budget_ms, int64_t *took_ms)
{
    launch_req *l = req_for(name, NULL);
    l->budget_ms = budget_ms;
    call c = {0};
    const char *err = NULL;
    int64_t t0 = util_mono_ms();
    assert_true(df_launch(d, l, 0, on_res, &c, &err) > 0);
    launch_free(l);
    df_result *r = wait_call(&c);
    *took_ms = util_mono_ms() - t0;
    return r;
}

/* A launch given a budget (what is left of the step's claim on a shared store) is over within it: no re-send
 * after it, and a slow answer is abandoned and settled by the name look-up, so nothing of the call is still on its
 * way when another replica may take the step over. */
static void test_launch_budget(void **state)
{
    (void)state;
    retry_policy many = fast;
    many.max_attempts = 30;
    df_options o = {.launch_policy = &many};
    df_client *d = make_df(&o);
    int64_t took = 0;
    /* Every launch answers 503 after 100 ms: without a budget the policy's 30 attempts go out... */
    config("{\"faults\": {\"flexTemplates.launch\": {\"rate_503\": 1.0, \"latency_ms\": 100}}}");
    df_result *r = launch_budget(d, "spent", 0, &took);
    assert_int_equal(launches("spent"), 30);
    df_result_free(r);
    /* ...with 400 ms, the ones that fit. */
    r = launch_budget(d, "budget", 400, &took);
    print_message("503s within a 400 ms budget: %ld launch requests, over after %lld ms\n", launches("budget"),
                  (long long)took);
    assert_true(launches("budget") >= 1 && launches("budget") <= 4);
    assert_true(took < 800); /* the budget, and a look-up */
    assert_int_equal(created("budget"), 0);
    assert_true(r->err != DF_OK); /* refused, or the last one cut short by the budget and looked up */
    df_result_free(r);
    /* An answer slower than the budget: abandoned (its outcome unknown), then the look-up finds the job it made. */
    config("{\"job_defaults\": {\"running_ms\": 60000}, \"faults\": {\"flexTemplates.launch\": "
           "{\"rate_503\": 0, \"latency_ms\": 3000}}}");
    r = launch_budget(d, "slow", 300, &took);
    show("slow", r);
    print_message("a 3 s answer within a 300 ms budget: settled after %lld ms\n", (long long)took);
    assert_int_equal(r->err, DF_OK);
    assert_int_equal(r->adopted, 1);
    assert_true(took < 800); /* not the answer's 3 s */
    assert_int_equal(launches("slow"), 1);
    assert_int_equal(created("slow"), 1);
    df_result_free(r);
    df_free(d);
}

static void test_lookup_failure_is_unknown_outcome(void **state)
{
    (void)state;
    /* Answer lost and the look-up cannot run: report "unknown", never re-send. */
    config("{\"job_defaults\": {\"running_ms\": 60000}, \"faults\": {\"flexTemplates.launch\": "
           "{\"launched_timeout_rate\": 1.0, \"launched_timeout_ms\": 200, \"launched_timeout_drop\": true}, "
           "\"jobs.list\": {\"rate_503\": 1.0}}}");
    df_result *r = launch(df, "in-the-dark", 0);
    assert_int_equal(r->err, DF_ERR_UNKNOWN_OUTCOME);
    assert_non_null(strstr(r->message, "look-up failed"));
    assert_int_equal(launches("in-the-dark"), 1);
    assert_int_equal(created("in-the-dark"), 1);
    df_result_free(r);
}

static void test_free_cancels_outstanding(void **state)
{
    (void)state;
    config("{\"faults\": {\"jobs.get\": {\"latency_ms\": 2000}}}");
    df_client *d = make_df(NULL);
    call c[5];
    memset(c, 0, sizeof c);
    const char *err;
    for (int i = 0; i < 5; i++) df_job_get(d, "slow", DF_VIEW_SUMMARY, 0, on_res, &c[i], &err);
    for (int i = 0; i < 10; i++) hc_run(hc, 10);
    assert_int_equal(df_pending(d), 5);
    df_free(d);
    for (int i = 0; i < 5; i++) {
        assert_int_equal(c[i].done, 1);
        assert_int_equal(c[i].r->err, DF_ERR_CANCELLED);
        df_result_free(c[i].r);
    }
    assert_int_equal(hc_active(hc), 0);
}

static void test_cancel_one_call(void **state)
{
    (void)state;
    /* Cancelled mid-look-up: neither the launch's nor the look-up's callback runs, nothing is left behind. */
    config("{\"job_defaults\": {\"running_ms\": 60000}, \"faults\": {\"flexTemplates.launch\": "
           "{\"launched_400_rate\": 1.0}, \"jobs.list\": {\"latency_ms\": 500}}}");
    launch_req *lp = req_for("cancel-me", NULL);
    call c = {0};
    const char *err;
    int64_t id = df_launch(df, lp, 0, on_res, &c, &err);
    launch_free(lp);
    for (int i = 0; i < 300 && df_get_stats(df).lookups == 0; i++) hc_run(hc, 10);
    assert_int_equal(df_get_stats(df).lookups, 1);
    assert_int_equal(df_pending(df), 2); /* the launch and its look-up */
    assert_int_equal(df_cancel(df, id), 0);
    assert_int_equal(df_cancel(df, id), -1);
    assert_int_equal(df_pending(df), 0);
    for (int i = 0; i < 80; i++) hc_run(hc, 10);
    assert_int_equal(c.done, 0);
    assert_int_equal(hc_active(hc), 0);
}

/* ---- bad responses from a misbehaving server ---- */

static stub_server *stub;

static df_client *stub_df(hc_client *h, ga_auth *g)
{
    df_options o = {.region = "r", .project = "p", .policy = &fast, .launch_policy = &fast, .base_url = stub->base,
                    .lag_window_ms = -1};
    const char *err;
    return df_new(h, g, &o, &err);
}

static void test_bad_responses(void **state)
{
    (void)state;
    stub = stub_start();
    assert_non_null(stub);
    hc_options ho = {.max_body = 1 << 20};
    hc_client *h = hc_new(&ho);
    ga_auth *none = ga_new_none("p");
    df_client *d = stub_df(h, none);
    struct {
        int status, mode;
        const char *body;
        df_err want;
        int attempts;
    } cases[] = {
        {200, 0, "this is not json", DF_ERR_BAD_RESPONSE, 1},
        {200, 0, "{\"id\": \"x\", \"currentSta", DF_ERR_BAD_RESPONSE, 1}, /* cut short but complete HTTP */
        {200, 0, "[1,2,3]", DF_ERR_BAD_RESPONSE, 1},
        {200, 0, "{\"id\": 5}", DF_ERR_BAD_RESPONSE, 1},
        {200, 0, "{\"name\": \"no-id\"}", DF_ERR_BAD_RESPONSE, 1},
        {200, 0, "{\"id\": \"x\", \"currentState\": 7}", DF_ERR_BAD_RESPONSE, 1},
        {200, 0, "{\"id\": \"x\", \"labels\": [\"a\"]}", DF_ERR_BAD_RESPONSE, 1},
        {200, 0, "{\"id\": \"x\", \"labels\": {\"a\": 1}}", DF_ERR_BAD_RESPONSE, 1},
        {200, 0, "{\"id\": \"x\", \"unknownField\": {\"deep\": [1]}}", DF_OK, 1}, /* unknown fields are fine */
        {200, 2, NULL, DF_ERR_TRANSPORT, 4},  /* truncated body (Content-Length not met): retried, then reported */
        {200, 3, NULL, DF_ERR_TRANSPORT, 1},  /* 20 MB body: refused at the cap, not retried */
        {200, 1, NULL, DF_ERR_TRANSPORT, 4},  /* connection dropped */
        {502, 0, "<html>bad gateway</html>", DF_ERR_HTTP, 4},
        {500, 0, "{\"error\": \"a string, not an object\"}", DF_ERR_HTTP, 4},
        {400, 0, "{\"error\": {\"code\": \"x\", \"message\": 5, \"details\": \"no\"}}", DF_ERR_HTTP, 1},
    };
    stub->canned_huge = 20u << 20;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        stub_set(stub, cases[i].status, cases[i].body, cases[i].mode);
        call c = {0};
        const char *err;
        df_job_get(d, "x", DF_VIEW_SUMMARY, 0, on_res, &c, &err);
        for (int k = 0; k < 3000 && !c.done; k++) hc_run(h, 10);
        assert_int_equal(c.done, 1);
        if (c.r->err != cases[i].want || c.r->attempts != cases[i].attempts)
            print_message("case %zu: got %s attempts %d (%s)\n", i, df_err_name(c.r->err), c.r->attempts,
                          c.r->message ? c.r->message : "");
        assert_int_equal(c.r->err, cases[i].want);
        assert_int_equal(c.r->attempts, cases[i].attempts);
        assert_non_null(c.r->message ? c.r->message : (cases[i].want == DF_OK ? "" : NULL));
        if (i == 10) assert_int_equal(c.r->transport, HC_ERR_TOO_LARGE);
        if (i == 12) assert_non_null(strstr(c.r->message, "not JSON"));
        df_result_free(c.r);
    }
    /* Lists with the wrong shapes. */
    const char *lists[] = {"{\"jobs\": {}}", "{\"jobs\": [{\"id\": 1}]}", "{\"jobs\": [], \"nextPageToken\": 3}", "{\"jobs\": [7]}"};
    for (size_t i = 0; i < 4; i++) {
        stub_set(stub, 200, lists[i], 0);
        call c = {0};
        const char *err;
        df_jobs_list(d, NULL, on_res, &c, &err);
        for (int k = 0; k < 3000 && !c.done; k++) hc_run(h, 10);
        assert_int_equal(c.r->err, DF_ERR_BAD_RESPONSE);
        df_result_free(c.r);
    }
    /* The sample error bodies: violations verbatim, RetryInfo, Retry-After winning over RetryInfo. */
    char *p400 = tu_sample_path("dataflow-error-400-invalid-template-parameters.json");
    char *p429 = tu_sample_path("dataflow-error-429-rate-limited.json");
    char *b400 = tu_read_file(p400, NULL), *b429 = tu_read_file(p429, NULL);
    assert_non_null(b400);
    assert_non_null(b429);
    {
        stub_set(stub, 400, b400, 0);
        call c = {0};
        const char *err;
        df_job_get(d, "x", DF_VIEW_SUMMARY, 0, on_res, &c, &err);
        for (int k = 0; k < 3000 && !c.done; k++) hc_run(h, 10);
        assert_int_equal(c.r->n_violations, 1);
        assert_string_equal(c.r->violations[0].parameter, "input");
        assert_string_equal(c.r->message, "Invalid template parameters: input: Required parameter is missing.");
        df_result_free(c.r);
        retry_policy once = fast;
        once.max_attempts = 1;
        df_options o = {.region = "r", .project = "p", .policy = &once, .base_url = stub->base};
        df_client *d1 = df_new(h, none, &o, &err);
        stub_set(stub, 429, b429, 0);
        memset(&c, 0, sizeof c);
        df_job_get(d1, "x", DF_VIEW_SUMMARY, 0, on_res, &c, &err);
        for (int k = 0; k < 3000 && !c.done; k++) hc_run(h, 10);
        assert_int_equal(c.r->retry_delay_ms, 2000);
        df_result_free(c.r);
        pthread_mutex_lock(&stub->mu);
        stub->canned_retry_after = strdup("7");
        pthread_mutex_unlock(&stub->mu);
        memset(&c, 0, sizeof c);
        df_job_get(d1, "x", DF_VIEW_SUMMARY, 0, on_res, &c, &err);
        for (int k = 0; k < 3000 && !c.done; k++) hc_run(h, 10);
        assert_int_equal(c.r->retry_delay_ms, 7000);
        df_result_free(c.r);
        df_free(d1);
        pthread_mutex_lock(&stub->mu);
        free(stub->canned_retry_after);
        stub->canned_retry_after = NULL;
        pthread_mutex_unlock(&stub->mu);
    }
    free(b400);
    free(b429);
    free(p400);
    free(p429);
    /* A launch answered 200 with garbage: the job probably exists, so it is looked up; here the look-up is
     * garbage too, so the outcome is reported unknown rather than re-sent. */
    stub_set(stub, 200, "garbage", 0);
    launch_req *lp = req_in("p", "r", LAUNCH_FLEX, "garbled", NULL, NULL, NULL);
    call c = {0};
    const char *err;
    df_launch(d, lp, 0, on_res, &c, &err);
    launch_free(lp);
    for (int k = 0; k < 3000 && !c.done; k++) hc_run(h, 10);
    assert_int_equal(c.r->err, DF_ERR_UNKNOWN_OUTCOME);
    assert_int_equal(df_get_stats(d).launch_posts, 1);
    df_result_free(c.r);
    df_free(d);
    ga_free(none);
    hc_free(h);
    stub_stop(stub);
}

static void test_argument_errors(void **state)
{
    (void)state;
    const char *err = NULL;
    call c = {0};
    launch_req *nameless = req_in(ga_project_id(ga), "europe-west4", LAUNCH_FLEX, "", NULL, NULL, NULL);
    assert_int_equal(df_launch(df, nameless, 0, on_res, &c, &err), -1);
    assert_non_null(err);
    assert_int_equal(df_launch(df, NULL, 0, on_res, &c, &err), -1);
    assert_int_equal(df_job_get(df, "", DF_VIEW_SUMMARY, 0, on_res, &c, &err), -1);
    launch_free(nameless);
    /* a client sends only to its own project and region */
    launch_req *elsewhere = req_in(ga_project_id(ga), "us-central1", LAUNCH_FLEX, "elsewhere", NULL, NULL, NULL);
    assert_int_equal(df_launch(df, elsewhere, 0, on_res, &c, &err), -1);
    assert_string_equal(err, "the launch names another project or region than this client's");
    launch_free(elsewhere);
    assert_int_equal(c.done, 0);
    df_options o = {.region = NULL};
    assert_null(df_new(hc, ga, &o, &err));
}

int main(void)
{
#define T(f) cmocka_unit_test_setup_teardown(f, setup, teardown)
    const struct CMUnitTest tests[] = {
        T(test_flex_launch_get_list),
        T(test_list_all_pages),
        T(test_classic_launch_and_validate_only),
        T(test_cancel_and_drain),
        T(test_400_parameter_violations_verbatim),
        T(test_404_get),
        T(test_lag_window),
        T(test_409_adopts_existing),
        T(test_429_retry_info),
        T(test_5xx_and_drop_on_idempotent_calls),
        T(test_401_refreshes_once),
        T(test_unknown_outcome_adopts),
        T(test_fast_job_already_terminated_is_adopted),
        T(test_old_terminated_job_is_not_adopted),
        T(test_400_but_launched_is_adopted),
        T(test_5xx_and_drop_on_launch_resend_after_lookup),
        T(test_429_on_launch_resends_without_lookup),
        T(test_launch_budget),
        T(test_lookup_failure_is_unknown_outcome),
        T(test_free_cancels_outstanding),
        T(test_cancel_one_call),
        T(test_retries_reported),
        T(test_bad_responses),
        T(test_argument_errors),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
