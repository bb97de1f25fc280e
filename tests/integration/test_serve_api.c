/* serve's ingress and API in this process (no `sluice serve` child): the test writes workflows and a JWKS file,
 * opens the server as `sluice serve` does (serve_open: store, OIDC, engine, engine loop, ingress writer, reloader,
 * the API router on a real HTTP server on 127.0.0.1) over the scripted fake Dataflow (fake_dataflow.h), then checks
 * answers and what reached the store: auth (operator token, OIDC), input errors, declared params, request_key
 * reuse, cancel and redrive, reload, readiness, and event ingress (foreign, relevant, duplicate, malformed). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <sys/stat.h>

#include <sqlite3.h>

#include "fake_dataflow.h"
#include "server.h"
#include "store.h"
#include "util.h"
#include "serve_harness.h"

/* ---- the server, opened as `sluice serve` opens it (serve_open), over the fake Dataflow ---- */

typedef struct {
    char *dir, *store_path, *wf_dir, *jwks_path; /* the strings serve_open borrows */
    jwt_key *key;
    store *reader; /* the test's own handle on the server's store */
    fake_dataflow api; /* launches create running jobs named as their ids; they never end on their own, a stopped
                        * one is CANCELLED at once */
    serve_instance *si;
    const char *base;
} serve_fx;

static const char *dp_src = "return { name = 'dp', project = 'p', region = 'r', start = 'A',\n"
                            "  params = { date = { required = true, description = 'the day' } },\n"
                            "  steps = { A = { job_name = 'dp-a', template = 'gs://bucket/a.json' } } }\n";

/* The workflows (chain and dp), a JWKS file, then the server: OIDC from that file for SH_AUD, the operator token
 * "optok", ingress for SH_EMAIL; `api_email` (may be NULL): the one identity allowed on the API (--api-allow-email). */
static serve_fx *open_fx(const char *api_email)
{
    serve_fx *f = calloc(1, sizeof *f);
    f->dir = tu_tempdir();
    assert_true(asprintf(&f->wf_dir, "%s/wf", f->dir) > 0);
    assert_true(asprintf(&f->store_path, "%s/s.db", f->dir) > 0);
    mkdir(f->wf_dir, 0755);
    char *chain = tu_src_path("tests/data/engine/chain.lua"), path[600];
    char *text = tu_read_file(chain, NULL);
    snprintf(path, sizeof path, "%s/chain.lua", f->wf_dir);
    tu_write_file(path, text);
    free(text);
    free(chain);
    snprintf(path, sizeof path, "%s/dp.lua", f->wf_dir);
    tu_write_file(path, dp_src);
    f->key = jwt_key_generate(2048);
    json_t *doc = json_pack("{s:[o]}", "keys", jwt_key_public_jwk(f->key, "k1"));
    char *jwks = json_dumps(doc, 0);
    assert_true(asprintf(&f->jwks_path, "%s/jwks.json", f->dir) > 0);
    tu_write_file(f->jwks_path, jwks);
    free(jwks);
    json_decref(doc);
    fd_init(&f->api);
    f->api.ids_are_names = 1;
    f->api.launch_state = "JOB_STATE_RUNNING";
    f->api.stay_prefix = "";
    f->api.stop_ends_at_once = 1;
    serve_opts o = {.listen = "127.0.0.1", .workflows_dir = f->wf_dir, .jwks_file = f->jwks_path,
                    .audience = SH_AUD, .operator_token = "optok", .emails = {SH_EMAIL}, .n_emails = 1,
                    .no_watch = 1, .api = &f->api.base};
    if (api_email) {
        o.api_emails[0] = api_email;
        o.n_api_emails = 1;
    }
    config_init(&o.cfg);
    o.cfg.store = f->store_path;
    o.cfg.poll_ms = 600000;
    /* retention: runs finished more than an hour ago go (checked by test_retention) */
    o.retain_ms = 3600000;
    o.prune_every_ms = 200;
    char *err = NULL;
    if (serve_open(&o, &f->si, &err) != 0) fail_msg("serve_open: %s", err ? err : "?");
    f->base = serve_url(f->si);
    wfset *set = wfset_box_get(serve_workflows(f->si));
    assert_int_equal(wfset_count(set), 2);
    wfset_unref(set);
    store_options so = {.synchronous = STORE_SYNC_NORMAL};
    assert_int_equal(store_open(f->store_path, &so, &f->reader, NULL), STORE_OK);
    return f;
}

static int setup(void **state)
{
    *state = open_fx(NULL);
    return 0;
}

static int setup_api_identity(void **state)
{
    *state = open_fx("ops@p.iam.gserviceaccount.com");
    return 0;
}

static int teardown(void **state)
{
    serve_fx *f = *state;
    serve_close(f->si, 1000);
    fd_fini(&f->api);
    store_close(f->reader);
    jwt_key_free(f->key);
    tu_rmtree(f->dir);
    free(f->dir);
    free(f->wf_dir);
    free(f->store_path);
    free(f->jwks_path);
    free(f);
    return 0;
}

/* ---- requests ---- */

typedef struct {
    char *data;
    size_t len;
} buf;

static size_t sink(char *p, size_t sz, size_t n, void *ud)
{
    buf *b = ud;
    b->data = realloc(b->data, b->len + sz * n + 1);
    memcpy(b->data + b->len, p, sz * n);
    b->len += sz * n;
    b->data[b->len] = '\0';
    return sz * n;
}

/* Sends METHOD PATH with optional JSON body and auth ("op": the operator token, "oidc": a valid push token,
 * "oidc:EMAIL": a valid token of EMAIL, NULL: none). Returns the status; *out (may be NULL) receives the parsed body. */
static long call(serve_fx *f, const char *method, const char *path, const char *body, const char *auth, json_t **out)
{
    CURL *c = curl_easy_init();
    struct curl_slist *hl = curl_slist_append(NULL, "Content-Type: application/json");
    char *tok = NULL, *hdr = NULL;
    if (auth && strcmp(auth, "op") == 0) tok = strdup("optok");
    if (auth && strcmp(auth, "oidc") == 0) tok = sh_token(f->key, "k1", NULL);
    if (auth && strncmp(auth, "oidc:", 5) == 0) { /* a valid token of another identity */
        json_t *o = json_pack("{s:s}", "email", auth + 5);
        tok = sh_token(f->key, "k1", o);
        json_decref(o);
    }
    if (tok) {
        hdr = sh_auth(tok);
        hl = curl_slist_append(hl, hdr);
    }
    char url[700];
    snprintf(url, sizeof url, "%s%s", f->base, path);
    buf b = {0};
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, hl);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, sink);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &b);
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, 10000L);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    if (body) curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
    long status = 0;
    if (curl_easy_perform(c) == CURLE_OK) curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
    if (out) *out = b.data ? json_loads(b.data, 0, NULL) : NULL;
    free(b.data);
    free(tok);
    free(hdr);
    curl_slist_free_all(hl);
    curl_easy_cleanup(c);
    return status;
}

static const char *str_at(json_t *j, const char *k1, const char *k2)
{
    json_t *v = json_object_get(j, k1);
    if (k2) v = json_object_get(v, k2);
    return json_string_value(v);
}

/* ---- the API ---- */

static void test_start_runs(void **state)
{
    serve_fx *f = *state;
    json_t *j = NULL;
    assert_int_equal(call(f, "POST", "/v1/runs", "{\"workflow\":\"chain\"}", NULL, NULL), 401);
    assert_int_equal(call(f, "POST", "/v1/runs", "{\"workflow\":\"chain\",\"x\":1}", "op", &j), 400);
    assert_string_equal(str_at(j, "error", "message"), "unknown field 'x'");
    json_decref(j);
    assert_int_equal(call(f, "POST", "/v1/runs", "{\"workflow\":\"nope\"}", "op", NULL), 404);
    assert_int_equal(call(f, "POST", "/v1/runs", "[1]", "op", NULL), 400);
    /* declared params: the missing one is named */
    assert_int_equal(call(f, "POST", "/v1/runs", "{\"workflow\":\"dp\"}", "op", &j), 400);
    assert_string_equal(str_at(j, "error", "message"), "missing required parameter 'date' of workflow dp: the day");
    json_decref(j);
    assert_int_equal(call(f, "POST", "/v1/runs", "{\"workflow\":\"dp\",\"params\":{\"date\":\"d1\"},\"request_key\":\"k\"}",
                          "op", &j), 201);
    char id[32];
    snprintf(id, sizeof id, "%s", str_at(j, "run", "id"));
    json_decref(j);
    /* the same request again: the same run; the key with other params: a conflict */
    assert_int_equal(call(f, "POST", "/v1/runs", "{\"workflow\":\"dp\",\"params\":{\"date\":\"d1\"},\"request_key\":\"k\"}",
                          "op", &j), 200);
    assert_string_equal(str_at(j, "run", "id"), id);
    json_decref(j);
    assert_int_equal(call(f, "POST", "/v1/runs", "{\"workflow\":\"dp\",\"params\":{\"date\":\"d2\"},\"request_key\":\"k\"}",
                          "op", &j), 409);
    assert_non_null(strstr(str_at(j, "error", "message"), "already started run"));
    json_decref(j);
    /* the run as stored */
    char path[100];
    snprintf(path, sizeof path, "/v1/runs/%s", id);
    assert_int_equal(call(f, "GET", path, NULL, "op", &j), 200);
    assert_string_equal(str_at(j, "run", "workflow"), "dp");
    json_decref(j);
    assert_int_equal(call(f, "GET", "/v1/runs/NOT-AN-ID", NULL, "op", NULL), 404);
    snprintf(path, sizeof path, "/v1/runs/%s:bogus", id);
    assert_int_equal(call(f, "POST", path, "{}", "op", NULL), 404);
    snprintf(path, sizeof path, "/v1/runs/%s:cancel", id);
    assert_int_equal(call(f, "GET", path, NULL, "op", NULL), 405);
}

static void test_cancel_and_redrive(void **state)
{
    serve_fx *f = *state;
    json_t *j = NULL;
    assert_int_equal(call(f, "POST", "/v1/runs", "{\"workflow\":\"chain\"}", "op", &j), 201);
    char id[32], path[100];
    snprintf(id, sizeof id, "%s", str_at(j, "run", "id"));
    json_decref(j);
    /* a running run cannot be redriven */
    snprintf(path, sizeof path, "/v1/runs/%s:redrive", id);
    assert_int_equal(call(f, "POST", path, "{}", "op", &j), 409);
    json_decref(j);
    assert_int_equal(call(f, "POST", path, "{\"latest\":\"yes\"}", "op", NULL), 400);
    snprintf(path, sizeof path, "/v1/runs/%s:cancel", id);
    assert_int_equal(call(f, "POST", path, "{}", "op", &j), 202);
    json_decref(j);
    snprintf(path, sizeof path, "/v1/runs/%s", id);
    int cancelled = 0;
    for (int i = 0; i < 300 && !cancelled; i++) {
        call(f, "GET", path, NULL, "op", &j);
        cancelled = str_at(j, "run", "state") && strcmp(str_at(j, "run", "state"), "cancelled") == 0;
        json_decref(j);
        if (!cancelled) usleep(10000);
    }
    assert_true(cancelled);
    snprintf(path, sizeof path, "/v1/runs/%s:redrive", id);
    assert_int_equal(call(f, "POST", path, "{\"params\":{}}", "op", &j), 202);
    assert_string_equal(str_at(j, "run", "state"), "running");
    json_decref(j);
}

/* Issue 22: GET /v1/runs/{id} returns each step's attempts (with the job id), and the workflow's runs x steps grid
 * is served paged; recovered=true filters the runs list. */
typedef struct {
    serve_fx *f;
    char path[100];
} attempt_wait;

static int first_attempt_has_job(void *arg)
{
    attempt_wait *w = arg;
    json_t *j = NULL;
    call(w->f, "GET", w->path, NULL, "op", &j);
    json_t *a = json_array_get(json_object_get(json_array_get(json_object_get(json_object_get(j, "run"), "steps"), 0),
                                               "attempts"), 0);
    int ok = json_string_value(json_object_get(a, "job_id")) != NULL;
    json_decref(j);
    return ok;
}

static void test_attempts_and_grid(void **state)
{
    serve_fx *f = *state;
    json_t *j = NULL;
    assert_int_equal(call(f, "POST", "/v1/runs", "{\"workflow\":\"chain\"}", "op", &j), 201);
    char id[32];
    snprintf(id, sizeof id, "%s", str_at(j, "run", "id"));
    json_decref(j);
    attempt_wait w = {.f = f};
    snprintf(w.path, sizeof w.path, "/v1/runs/%s", id);
    assert_true(tu_poll(first_attempt_has_job, &w, 5000));
    assert_int_equal(call(f, "GET", w.path, NULL, "op", &j), 200);
    json_t *step = json_array_get(json_object_get(json_object_get(j, "run"), "steps"), 0);
    json_t *a = json_array_get(json_object_get(step, "attempts"), 0);
    assert_int_equal(json_array_size(json_object_get(step, "attempts")), 1);
    assert_int_equal(json_integer_value(json_object_get(a, "attempt")), 1);
    assert_string_equal(json_string_value(json_object_get(a, "state")), "running");
    assert_non_null(json_string_value(json_object_get(a, "launched_at")));
    assert_non_null(json_string_value(json_object_get(a, "running_at")));
    assert_string_equal(json_string_value(json_object_get(a, "job_name")), json_string_value(json_object_get(a, "job_id")));
    json_decref(j);
    /* the grid: the run as a column, the workflow's steps as rows in its order */
    assert_int_equal(call(f, "GET", "/v1/workflows/chain/grid?limit=5", NULL, "op", &j), 200);
    json_t *rows = json_object_get(j, "steps");
    assert_int_equal(json_array_size(rows), 3);
    assert_string_equal(json_string_value(json_array_get(rows, 0)), "A"); /* from the start, along the graph */
    assert_string_equal(json_string_value(json_array_get(rows, 1)), "B");
    assert_string_equal(json_string_value(json_array_get(rows, 2)), "C");
    json_t *col = json_array_get(json_object_get(j, "runs"), 0);
    assert_string_equal(json_string_value(json_object_get(col, "id")), id);
    json_t *cell = json_object_get(json_object_get(col, "cells"), "A");
    assert_string_equal(json_string_value(json_object_get(cell, "state")), "running");
    assert_int_equal(json_integer_value(json_object_get(cell, "attempts")), 1);
    json_decref(j);
    assert_int_equal(call(f, "GET", "/v1/workflows/chain/grid?limit=0", NULL, "op", NULL), 400);
    assert_int_equal(call(f, "GET", "/v1/workflows/chain/grid?cursor=bogus", NULL, "op", NULL), 400);
    assert_int_equal(call(f, "GET", "/v1/workflows/chain/grid", NULL, NULL, NULL), 401);
    assert_int_equal(call(f, "POST", "/v1/workflows/chain/grid", "{}", "op", NULL), 405);
    /* no runs of an unknown workflow: an empty grid */
    assert_int_equal(call(f, "GET", "/v1/workflows/nope/grid", NULL, "op", &j), 200);
    assert_int_equal(json_array_size(json_object_get(j, "runs")), 0);
    json_decref(j);
    /* recovered runs: none yet; a recovered run is a succeeded one */
    assert_int_equal(call(f, "GET", "/v1/runs?recovered=true", NULL, "op", &j), 200);
    assert_int_equal(json_array_size(json_object_get(j, "runs")), 0);
    json_decref(j);
    assert_int_equal(call(f, "GET", "/v1/runs?recovered=true&state=failed", NULL, "op", NULL), 400);
}

static void test_health_workflows_reload(void **state)
{
    serve_fx *f = *state;
    json_t *j = NULL;
    /* The engine and writer threads flag themselves alive once they run, which may be just after setup returns:
     * readyz is 503 until then (seen as a flaky 503 here), so poll rather than ask once. */
    long st = 0;
    for (int i = 0; i < 250 && (st = call(f, "GET", "/readyz", NULL, NULL, NULL)) != 200; i++) usleep(20000);
    assert_int_equal(call(f, "GET", "/readyz", NULL, NULL, &j), 200);
    assert_true(json_is_true(json_object_get(j, "ready")));
    assert_int_equal(json_integer_value(json_object_get(j, "workflows")), 2);
    json_decref(j);
    assert_int_equal(call(f, "GET", "/v1/workflows", NULL, NULL, NULL), 401);
    assert_int_equal(call(f, "GET", "/v1/workflows", NULL, "op", &j), 200);
    assert_int_equal(json_array_size(json_object_get(j, "workflows")), 2);
    json_decref(j);
    /* a broken file: the reload reports it, the set keeps its good version */
    char path[600];
    snprintf(path, sizeof path, "%s/dp.lua", f->wf_dir);
    tu_write_file(path, "return {\n  name = 'dp',\n  steps = \n");
    assert_int_equal(call(f, "POST", "/v1/workflows:reload", NULL, "op", &j), 200);
    assert_string_equal(str_at(j, "outcome", NULL), "errors");
    assert_int_equal(json_integer_value(json_object_get(j, "workflows")), 2);
    json_decref(j);
    assert_int_equal(call(f, "GET", "/readyz", NULL, NULL, &j), 200);
    assert_string_equal(json_string_value(json_object_get(json_array_get(json_object_get(j, "workflow_errors"), 0), "file")),
                        path);
    json_decref(j);
    assert_int_equal(call(f, "GET", "/v1/workflows:reload", NULL, "op", NULL), 405);
}

/* ---- ingress ---- */

static int64_t inbox_count(serve_fx *f)
{
    store_event_list l = {0};
    store_inbox_fetch(f->reader, 1000, &l, NULL);
    int64_t n = (int64_t)l.count;
    store_event_list_free(&l);
    return n;
}

static void test_ingress(void **state)
{
    serve_fx *f = *state;
    json_t *j = NULL;
    char *foreign = sh_push_body("m-1", "someone-else--1", "2024-01-01_00_00_00-1");
    assert_int_equal(call(f, "POST", "/v1/events/pubsub", foreign, NULL, NULL), 401);
    assert_int_equal(call(f, "POST", "/v1/events/pubsub", foreign, "op", NULL), 401); /* the operator is no pusher */
    assert_int_equal(call(f, "POST", "/v1/events/pubsub", foreign, "oidc", &j), 200);
    assert_string_equal(str_at(j, "outcome", NULL), "foreign");
    json_decref(j);
    free(foreign);
    assert_int_equal(call(f, "POST", "/v1/events/pubsub", "{not json", "oidc", NULL), 400);
    int64_t before = inbox_count(f);
    /* the end of a job of a loaded workflow is recorded once; its redelivery is a duplicate */
    char *mine = sh_push_body("m-2", "chain-a--abc-1", "2024-01-01_00_00_00-2");
    assert_int_equal(call(f, "POST", "/v1/events/pubsub", mine, "oidc", &j), 200);
    assert_string_equal(str_at(j, "outcome", NULL), "recorded");
    json_decref(j);
    assert_int_equal(call(f, "POST", "/v1/events/pubsub", mine, "oidc", &j), 200);
    assert_string_equal(str_at(j, "outcome", NULL), "duplicate");
    json_decref(j);
    free(mine);
    /* "recorded" means in the store: the same message again is a duplicate there too */
    store_event ev = {.message_id = "m-2", .source = STORE_SRC_PUSH};
    assert_int_equal(store_inbox_put(f->reader, &ev, NULL, NULL), STORE_DUPLICATE);
    (void)before;
    assert_int_equal(call(f, "GET", "/v1/events/pubsub", NULL, "oidc", NULL), 405);
}

/* Issue 11: every identity allowed on ingress could also start and cancel runs. With --api-allow-email the API
 * takes only those identities (and the operator token); ingress keeps --allow-email. The server is opened with
 * both lists (setup_api_identity), so wired by serve_open: oidc accepts any verified email, serve_auth applies
 * the two lists. */
static void test_separate_identities(void **state)
{
    serve_fx *f = *state;
    const char *start = "{\"workflow\":\"chain\"}";
    json_t *j = NULL;
    /* the pusher: ingress yes, the API no */
    assert_int_equal(call(f, "POST", "/v1/runs", start, "oidc", &j), 403);
    assert_non_null(strstr(str_at(j, "error", "message"), "API"));
    json_decref(j);
    assert_int_equal(call(f, "GET", "/v1/runs", NULL, "oidc", NULL), 403);
    assert_int_equal(call(f, "POST", "/v1/runs/x:cancel", NULL, "oidc", NULL), 403);
    assert_int_equal(call(f, "POST", "/v1/reconcile?budget_ms=10", NULL, "oidc", NULL), 403);
    char *body = sh_push_body("m-9", "someone-else--1", "2024-01-01_00_00_00-9");
    assert_int_equal(call(f, "POST", "/v1/events/pubsub", body, "oidc", NULL), 200);
    /* the API caller: the API yes, ingress no */
    assert_int_equal(call(f, "POST", "/v1/events/pubsub", body, "oidc:ops@p.iam.gserviceaccount.com", NULL), 403);
    assert_int_equal(call(f, "POST", "/v1/runs", start, "oidc:OPS@p.iam.gserviceaccount.com", NULL), 201);
    assert_int_equal(call(f, "GET", "/v1/runs", NULL, "oidc:ops@p.iam.gserviceaccount.com", NULL), 200);
    /* anyone else: neither; the operator token: the API only, as before */
    assert_int_equal(call(f, "GET", "/v1/runs", NULL, "oidc:stranger@x.com", NULL), 403);
    assert_int_equal(call(f, "POST", "/v1/events/pubsub", body, "oidc:stranger@x.com", NULL), 403);
    assert_int_equal(call(f, "GET", "/v1/runs", NULL, "op", NULL), 200);
    assert_int_equal(call(f, "POST", "/v1/events/pubsub", body, "op", NULL), 401);
    free(body);
}

/* --retain: finished runs older than the retention go in the background, with their steps; others stay. */
static void test_retention(void **state)
{
    serve_fx *f = *state;
    json_t *j = NULL;
    wfset *set = wfset_box_get(serve_workflows(f->si));
    const char *hash = wfset_at(set, 0)->version;
    store_script_put(f->reader, hash, wfset_at(set, 0)->name, wfset_at(set, 0)->source, NULL);
    int64_t old = util_now_ms() - 2 * 3600000;
    store_run r = {.id = "oldrun", .workflow = wfset_at(set, 0)->name, .script_hash = (char *)hash,
                   .params_json = "{}", .state = STORE_RUN_RUNNING, .created_at = old};
    assert_int_equal(store_run_create(f->reader, &r, NULL), STORE_OK);
    wfset_unref(set);
    store_step oldstep = {.run_id = "oldrun", .name = "A", .state = STORE_STEP_SUCCEEDED};
    assert_int_equal(store_step_insert(f->reader, &oldstep, NULL), STORE_OK);
    assert_int_equal(store_run_set_state(f->reader, "oldrun", STORE_RUN_ANY, STORE_RUN_SUCCEEDED, NULL, NULL), STORE_OK);
    /* finished just now: kept */
    usleep(300000);
    assert_int_equal(call(f, "GET", "/v1/runs/oldrun", NULL, "op", NULL), 200);
    assert_int_equal(call(f, "POST", "/v1/runs", "{\"workflow\":\"chain\"}", "op", &j), 201);
    char fresh[32];
    snprintf(fresh, sizeof fresh, "%s", str_at(j, "run", "id"));
    json_decref(j);
    /* a finished run from two hours ago, written as an old store would hold it */
    sqlite3 *db = NULL;
    assert_int_equal(sqlite3_open(f->store_path, &db), SQLITE_OK);
    sqlite3_busy_timeout(db, 5000); /* the server's engine and its leader lease write meanwhile */
    char sql[300];
    snprintf(sql, sizeof sql, "UPDATE runs SET finished_at = %lld WHERE id = 'oldrun'", (long long)old);
    assert_int_equal(sqlite3_exec(db, sql, NULL, NULL, NULL), SQLITE_OK);
    sqlite3_close(db);
    int gone = 0;
    for (int i = 0; i < 300 && !gone; i++) {
        gone = call(f, "GET", "/v1/runs/oldrun", NULL, "op", NULL) == 404;
        if (!gone) usleep(10000);
    }
    assert_true(gone);
    store_step_list left = {0};
    assert_int_equal(store_step_list_run(f->reader, "oldrun", &left, NULL), STORE_OK);
    assert_int_equal(left.count, 0); /* its steps went with it */
    store_step_list_free(&left);
    char path[100];
    snprintf(path, sizeof path, "/v1/runs/%s", fresh);
    assert_int_equal(call(f, "GET", path, NULL, "op", NULL), 200); /* a running (and a recent) run stays */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_start_runs, setup, teardown),
        cmocka_unit_test_setup_teardown(test_cancel_and_redrive, setup, teardown),
        cmocka_unit_test_setup_teardown(test_attempts_and_grid, setup, teardown),
        cmocka_unit_test_setup_teardown(test_health_workflows_reload, setup, teardown),
        cmocka_unit_test_setup_teardown(test_ingress, setup, teardown),
        cmocka_unit_test_setup_teardown(test_retention, setup, teardown),
        cmocka_unit_test_setup_teardown(test_separate_identities, setup_api_identity, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
