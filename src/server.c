/* server: `sluice serve`: ingress (Pub/Sub push, Eventarc), the HTTP API, health, metrics, the engine thread.
 * Uses: http_server, oidc, metrics, events, store, engine, workflow, jobs_api, config, log, util.
 * Must not: call the engine from an HTTP thread, or parse event bodies itself (events does).
 *
 * Threads and ownership:
 *  - MHD worker threads run route handlers. Each has its own store handle for reads (opened lazily, closed at
 *    shutdown through the handle registry). They never touch the engine.
 *  - One writer thread owns the ingress store handle: it takes every queued event, records the whole batch in
 *    one transaction (group commit), and only then answers each request (deferred answers). So a 2xx always
 *    means "on disk", and one fsync covers many concurrent deliveries.
 *  - One engine thread owns the engine, its store handle and the Dataflow client. It runs engine_tick in a loop
 *    and executes commands (start, cancel, reconcile) queued by API handlers, answering their deferred requests.
 *    A recorded event or a command wakes it at once (condition variable); while API calls are outstanding it
 *    ticks every few milliseconds, and when idle it sleeps up to --tick. */
#include "server.h"

#include <dirent.h>
#include <errno.h>
#include <getopt.h>
#include <malloc.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "config.h"
#include "engine.h"
#include "events.h"
#include "http_server.h"
#include "jobs_api.h"
#include "log.h"
#include "metrics.h"
#include "oidc.h"
#include "store.h"
#include "util.h"
#include "workflow.h"

enum { EXIT_OK = 0, EXIT_RUNTIME = 1, EXIT_USAGE = 2 };
#define MAX_LIST_OPT 16
#define WRITER_BATCH 1024

/* ---- state ---- */

typedef struct ingress_item {
    struct ingress_item *next;
    hs_request *r;
    store_event ev; /* strings owned by the item */
    const char *source_label;
    int rc;
    int64_t id;
    /* --adopt-foreign: a finished job of a workflow's first launch step that no step row knows */
    const char *adopt_wf, *adopt_step; /* borrowed from S.adopt (immutable) */
    char *project, *region;
} ingress_item;

typedef enum { CMD_START, CMD_CANCEL, CMD_RECONCILE, CMD_ADOPT } cmd_kind;

typedef struct eng_cmd {
    struct eng_cmd *next;
    cmd_kind kind;
    hs_request *r;
    char *workflow, *request_key, *run_id;
    char *step, *job_id, *job_name, *project, *region; /* CMD_ADOPT */
    json_t *params;
    int budget_ms;
} eng_cmd;

/* A recorded event's request held open until the engine has acted on it (--process-in-request). */
typedef struct waiter {
    struct waiter *next;
    hs_request *r;
    char body[160];
    int64_t deadline;  /* monotonic ms */
    uint64_t need_gen; /* answered after an idle tick of at least this generation */
} waiter;

typedef struct {
    char *name, *file, *version, *start;
    json_t *steps; /* [{name, kind, job_name}] */
} wf_info;

/* A workflow's first launch step (reached from start through hooks), for --adopt-foreign. */
typedef struct {
    char *prefix, *workflow, *step;
} adopt_entry;

static struct {
    /* options */
    sluice_config cfg;
    const char *listen, *workflows_dir, *audience, *jwks_url, *jwks_file, *operator_token, *ready_file;
    const char *issuers[MAX_LIST_OPT + 1], *emails[MAX_LIST_OPT + 1];
    size_t n_issuers, n_emails;
    int port, no_auth, dataflow_no_auth, tick_ms, grace_ms, process_ms, adopt_foreign;
    adopt_entry *adopt;
    size_t n_adopt;
    adopt_entry *launch_steps; /* every launch step: job-name prefix -> workflow, step (metrics labels) */
    size_t n_launch_steps;
    unsigned threads, max_conns, idle_timeout_s;
    size_t max_body;
    /* immutable after start */
    wf_info *wfs;
    size_t n_wfs;
    char **prefixes; /* job-name prefixes of every launch step, sorted */
    size_t n_prefixes;
    char *workflows_json; /* the /v1/workflows answer */
    json_t *load_errors;  /* [{file, errors:[..]}] */
    oidc *oidc;
    hs_server *http;
    /* writer */
    pthread_t writer;
    pthread_mutex_t wmu;
    pthread_cond_t wcv;
    ingress_item *wq_head, *wq_tail;
    int writer_stop;
    store *wstore;
    atomic_int writer_alive;
    /* engine thread */
    pthread_t eng_thread;
    pthread_mutex_t emu;
    pthread_cond_t ecv;
    int eng_wake, eng_stop;
    eng_cmd *cq_head, *cq_tail;
    waiter *waiters;
    uint64_t tick_gen; /* under emu: incremented as each engine tick starts */
    engine *eng;
    store *estore;
    jobs_api *api;
    atomic_int engine_alive;
    atomic_int draining; /* SIGTERM seen: held answers and reconcile loops end now */
    /* read handles of the HTTP threads */
    pthread_mutex_t hmu;
    store **handles;
    size_t n_handles;
} S;

static _Thread_local store *tl_store;
static _Thread_local int tl_store_failed;

/* The calling HTTP thread's store handle (opened on first use), or NULL if it cannot be opened. */
static store *thread_store(void)
{
    if (tl_store != NULL) return tl_store;
    store_options so = {.synchronous = config_ack_sync(&S.cfg)};
    char *err = NULL;
    if (store_open(S.cfg.store, &so, &tl_store, &err) != STORE_OK) {
        if (!tl_store_failed) log_error("serve: cannot open the store for a request thread: %s", err ? err : "?");
        tl_store_failed = 1;
        free(err);
        return NULL;
    }
    pthread_mutex_lock(&S.hmu);
    store **h = realloc(S.handles, (S.n_handles + 1) * sizeof *h);
    if (h) {
        S.handles = h;
        S.handles[S.n_handles++] = tl_store;
    }
    pthread_mutex_unlock(&S.hmu);
    return tl_store;
}

static void wake_engine(void)
{
    pthread_mutex_lock(&S.emu);
    S.eng_wake = 1;
    pthread_cond_signal(&S.ecv);
    pthread_mutex_unlock(&S.emu);
}

/* ---- small helpers ---- */

static void respond_json(hs_request *r, int status, json_t *j)
{
    char *text = json_dumps(j, JSON_COMPACT);
    hs_respond(r, status, NULL, text ? text : "{}", text ? strlen(text) : 2, NULL);
    free(text);
}

static void complete_json(hs_request *r, int status, json_t *j)
{
    char *text = json_dumps(j, JSON_COMPACT);
    hs_complete(r, status, NULL, text ? text : "{}", text ? strlen(text) : 2);
    free(text);
}

static void complete_error(hs_request *r, int status, const char *msg)
{
    json_t *j = json_pack("{s:{s:i,s:s}}", "error", "code", status, "message", msg ? msg : "");
    complete_json(r, status, j);
    json_decref(j);
}

static int prefix_cmp(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

/* Whether a job name belongs to a loaded workflow: its part before "--" is some step's job name. */
static int job_name_relevant(const char *job_name)
{
    char prefix[WF_JOB_NAME_MAX + 1];
    const char *sep = strstr(job_name, WF_SUFFIX_SEP);
    size_t n = sep ? (size_t)(sep - job_name) : strlen(job_name);
    if (n > WF_JOB_NAME_MAX) return 0;
    memcpy(prefix, job_name, n);
    prefix[n] = '\0';
    const char *key = prefix;
    return bsearch(&key, S.prefixes, S.n_prefixes, sizeof *S.prefixes, prefix_cmp) != NULL;
}

static int content_type_is(hs_request *r, const char *want)
{
    const char *ct = hs_header(r, "Content-Type");
    if (ct == NULL) return 0;
    size_t n = strlen(want);
    return strncasecmp(ct, want, n) == 0 && (ct[n] == '\0' || ct[n] == ';' || ct[n] == ' ');
}

static const char *bearer_eq(const char *authz, const char *token)
{
    if (authz == NULL || token == NULL || strncasecmp(authz, "Bearer ", 7) != 0) return NULL;
    const char *t = authz + 7;
    size_t a = strlen(t), b = strlen(token);
    unsigned diff = (unsigned)(a ^ b);
    for (size_t i = 0; i < a && i < b; i++) diff |= (unsigned char)(t[i] ^ token[i]);
    return diff == 0 ? t : NULL;
}

/* Authenticates a request. Returns 1 when allowed; otherwise answers 401/403/503 and returns 0.
 * api = 1 also accepts the operator token. */
static int authorize(hs_request *r, int api, const char *metric_source)
{
    if (S.no_auth) {
        hs_set_log_field(r, "auth", "disabled");
        return 1;
    }
    const char *authz = hs_header(r, "Authorization");
    if (api && S.operator_token && bearer_eq(authz, S.operator_token)) {
        hs_set_log_field(r, "auth", "operator");
        return 1;
    }
    char reason[128];
    oidc_status st = oidc_verify(S.oidc, authz, NULL, 0, reason, sizeof reason);
    if (st == OIDC_OK) {
        hs_set_log_field(r, "auth", "oidc");
        return 1;
    }
    const char *outcome = st == OIDC_FORBIDDEN ? "forbidden" : st == OIDC_UNAVAILABLE ? "auth_unavailable"
                                                                                   : "unauthenticated";
    if (metric_source) {
        char labels[128];
        snprintf(labels, sizeof labels, "source=\"%s\",outcome=\"%s\"", metric_source, outcome);
        metrics_add("sluice_events_total", labels, 1);
    }
    hs_set_log_field(r, "auth", outcome);
    if (st == OIDC_FORBIDDEN) {
        hs_respond_error(r, 403, reason);
    } else if (st == OIDC_UNAVAILABLE) {
        const char *b = "{\"error\":{\"code\":503,\"message\":\"signing keys unavailable\"}}";
        hs_respond(r, 503, NULL, b, strlen(b), "Retry-After: 5");
    } else {
        json_t *j = json_pack("{s:{s:i,s:s}}", "error", "code", 401, "message", reason);
        char *text = json_dumps(j, JSON_COMPACT);
        hs_respond(r, 401, NULL, text, strlen(text), "WWW-Authenticate: Bearer");
        free(text);
        json_decref(j);
    }
    return 0;
}

/* ---- ingress ---- */

static void count_event(const char *source, const char *outcome)
{
    char labels[128];
    snprintf(labels, sizeof labels, "source=\"%s\",outcome=\"%s\"", source, outcome);
    metrics_add("sluice_events_total", labels, 1);
}

static const adopt_entry *adopt_for(const char *job_name)
{
    const char *sep = strstr(job_name, WF_SUFFIX_SEP);
    size_t n = sep ? (size_t)(sep - job_name) : strlen(job_name);
    for (size_t i = 0; i < S.n_adopt; i++)
        if (strlen(S.adopt[i].prefix) == n && strncmp(S.adopt[i].prefix, job_name, n) == 0) return &S.adopt[i];
    return NULL;
}

static void queue_cmd_nowait(struct eng_cmd *c);

static void queue_adopt(const ingress_item *it)
{
    struct eng_cmd *c = calloc(1, sizeof *c);
    if (c == NULL) return;
    c->kind = CMD_ADOPT;
    c->workflow = strdup(it->adopt_wf);
    c->step = strdup(it->adopt_step);
    c->job_id = it->ev.job_id ? strdup(it->ev.job_id) : NULL;
    c->job_name = it->ev.job_name ? strdup(it->ev.job_name) : NULL;
    c->project = it->project ? strdup(it->project) : NULL;
    c->region = it->region ? strdup(it->region) : NULL;
    queue_cmd_nowait(c);
}

static void item_free(ingress_item *it)
{
    free(it->ev.message_id);
    free(it->ev.job_id);
    free(it->ev.job_name);
    free(it->ev.state);
    free(it->ev.payload_json);
    free(it->project);
    free(it->region);
    free(it);
}

static void handle_ingress(hs_request *r, const char *source_label)
{
    if (!authorize(r, 0, source_label)) return;
    const char *ct = hs_header(r, "Content-Type");
    if (ct != NULL && !content_type_is(r, "application/json") && !content_type_is(r, "application/cloudevents+json") &&
        !content_type_is(r, "text/plain")) {
        count_event(source_label, "malformed");
        hs_respond_error(r, 415, "content type must be application/json");
        return;
    }
    const char **names, **values;
    size_t nh = hs_headers(r, &names, &values);
    ev_header hdrs[64];
    size_t n = 0;
    for (size_t i = 0; i < nh && n < 64; i++) hdrs[n++] = (ev_header){names[i], values[i]};
    ev_job_event ev = {0};
    char why[256];
    ev_status es = ev_decode(hdrs, n, hs_body(r), hs_body_len(r), &ev, why, sizeof why);
    if (es == EV_IRRELEVANT) {
        count_event(source_label, "irrelevant");
        hs_respond(r, 200, NULL, "{\"outcome\":\"irrelevant\"}", strlen("{\"outcome\":\"irrelevant\"}"), NULL);
        return;
    }
    if (es != EV_OK) {
        count_event(source_label, "malformed");
        hs_set_log_field(r, "reason", "malformed");
        hs_respond_error(r, 400, why);
        return;
    }
    if (ev.job_name != NULL && !job_name_relevant(ev.job_name)) {
        ev_job_event_free(&ev);
        count_event(source_label, "foreign");
        hs_respond(r, 200, NULL, "{\"outcome\":\"foreign\"}", strlen("{\"outcome\":\"foreign\"}"), NULL);
        return;
    }
    if (ev.state != NULL && !ev_state_terminal(ev.state)) {
        /* Only an end moves a DAG forward; the engine learns job ids from launch answers. */
        ev_job_event_free(&ev);
        count_event(source_label, "nonterminal");
        hs_respond(r, 200, NULL, "{\"outcome\":\"nonterminal\"}", strlen("{\"outcome\":\"nonterminal\"}"), NULL);
        return;
    }
    if (ev.job_id == NULL && ev.job_name == NULL) {
        ev_job_event_free(&ev);
        count_event(source_label, "malformed");
        hs_respond_error(r, 400, "the event names no job");
        return;
    }
    ingress_item *it = calloc(1, sizeof *it);
    if (it == NULL) {
        ev_job_event_free(&ev);
        hs_respond_error(r, 503, "out of memory");
        return;
    }
    it->r = r;
    it->source_label = source_label;
    const adopt_entry *ad = S.adopt_foreign && ev.job_name ? adopt_for(ev.job_name) : NULL;
    if (ad != NULL) {
        store *rs = thread_store();
        store_step known = {0};
        int by_name = rs ? store_step_find_by_job_name(rs, ev.job_name, &known, NULL) : STORE_IO;
        store_step_free(&known);
        int by_id = STORE_NOTFOUND;
        if (rs && by_name == STORE_NOTFOUND && ev.job_id) by_id = store_step_find_by_job_id(rs, ev.job_id, &known, NULL);
        store_step_free(&known);
        if (by_name == STORE_NOTFOUND && by_id == STORE_NOTFOUND) {
            it->adopt_wf = ad->workflow;
            it->adopt_step = ad->step;
            it->project = ev.project ? strdup(ev.project) : NULL;
            it->region = ev.region ? strdup(ev.region) : NULL;
        }
    }
    it->ev.message_id = ev.message_id;
    it->ev.job_id = ev.job_id;
    it->ev.job_name = ev.job_name;
    it->ev.state = ev.state;
    ev.message_id = ev.job_id = ev.job_name = ev.state = NULL;
    it->ev.source = strncmp(ev.source, "eventarc", 8) == 0 ? STORE_SRC_EVENTARC : STORE_SRC_PUSH;
    json_t *payload = json_pack("{s:s,s:s?,s:s?,s:s?,s:i}", "source", ev.source, "project", ev.project, "region",
                                ev.region, "log", ev.log_text, "delivery_attempt", ev.delivery_attempt);
    it->ev.payload_json = payload ? json_dumps(payload, JSON_COMPACT) : NULL;
    json_decref(payload);
    ev_job_event_free(&ev);
    hs_defer(r);
    pthread_mutex_lock(&S.wmu);
    if (S.wq_tail)
        S.wq_tail->next = it;
    else
        S.wq_head = it;
    S.wq_tail = it;
    pthread_cond_signal(&S.wcv);
    pthread_mutex_unlock(&S.wmu);
}

/* The writer thread: group commit of queued events; answers each request after its batch is durable. */
static void *writer_main(void *arg)
{
    (void)arg;
    atomic_store(&S.writer_alive, 1);
    for (;;) {
        pthread_mutex_lock(&S.wmu);
        while (S.wq_head == NULL && !S.writer_stop) pthread_cond_wait(&S.wcv, &S.wmu);
        if (S.wq_head == NULL && S.writer_stop) {
            pthread_mutex_unlock(&S.wmu);
            break;
        }
        ingress_item *batch = S.wq_head;
        S.wq_head = S.wq_tail = NULL;
        pthread_mutex_unlock(&S.wmu);
        int64_t t0 = util_mono_ms();
        char *err = NULL;
        int rc = store_begin(S.wstore, &err);
        int64_t t1 = util_mono_ms();
        metrics_observe("sluice_inbox_lock_wait_seconds", "", (double)(t1 - t0) / 1000.0);
        size_t n = 0, recorded = 0;
        for (ingress_item *it = batch; rc == STORE_OK && it; it = it->next, n++) {
            it->rc = store_inbox_put(S.wstore, &it->ev, &it->id, NULL);
            if (it->rc == STORE_OK) recorded++;
            else if (it->rc != STORE_DUPLICATE && it->rc != STORE_INVALID) rc = it->rc;
        }
        int64_t t2 = util_mono_ms();
        if (rc == STORE_OK) rc = store_commit(S.wstore, &err);
        metrics_observe("sluice_inbox_commit_only_seconds", "", (double)(util_mono_ms() - t2) / 1000.0);
        if (rc != STORE_OK) {
            log_error("serve: recording %zu events failed: %s", n, err ? err : store_strerror(rc));
            if (store_in_transaction(S.wstore)) store_rollback(S.wstore, NULL);
        }
        free(err);
        metrics_observe("sluice_inbox_commit_seconds", "", (double)(util_mono_ms() - t0) / 1000.0);
        metrics_add("sluice_inbox_batches_total", "", 1);
        while (batch) {
            ingress_item *it = batch;
            batch = batch->next;
            char body[160];
            if (rc != STORE_OK) {
                count_event(it->source_label, "store_error");
                snprintf(body, sizeof body, "{\"error\":{\"code\":503,\"message\":\"the event could not be recorded\"}}");
                hs_complete(it->r, 503, NULL, body, strlen(body));
            } else if (it->rc == STORE_INVALID) {
                count_event(it->source_label, "malformed");
                snprintf(body, sizeof body, "{\"error\":{\"code\":400,\"message\":\"the event was refused by the store\"}}");
                hs_complete(it->r, 400, NULL, body, strlen(body));
            } else {
                int dup = it->rc == STORE_DUPLICATE;
                if (!dup && it->adopt_wf) queue_adopt(it);
                count_event(it->source_label, dup ? "duplicate" : "recorded");
                snprintf(body, sizeof body, "{\"outcome\":\"%s\",\"event_id\":%lld}", dup ? "duplicate" : "recorded",
                         (long long)it->id);
                waiter *w = S.process_ms > 0 ? calloc(1, sizeof *w) : NULL;
                if (w == NULL) {
                    hs_complete(it->r, 200, NULL, body, strlen(body));
                } else {
                    /* CPU-only-during-requests: keep the request open so the engine runs on the CPU it buys */
                    w->r = it->r;
                    memcpy(w->body, body, sizeof body);
                    w->deadline = util_mono_ms() + S.process_ms;
                    pthread_mutex_lock(&S.emu);
                    w->need_gen = S.tick_gen + 1;
                    w->next = S.waiters;
                    S.waiters = w;
                    pthread_mutex_unlock(&S.emu);
                    recorded++;
                }
            }
            item_free(it);
        }
        if (recorded > 0) wake_engine();
    }
    atomic_store(&S.writer_alive, 0);
    return NULL;
}

/* ---- JSON views of runs and steps ---- */

static json_t *time_json(int64_t ms)
{
    if (ms == 0) return json_null();
    char buf[40];
    return json_string(util_rfc3339(ms, buf, sizeof buf));
}

static json_t *run_json(const store_run *run)
{
    json_error_t je;
    json_t *params = run->params_json ? json_loads(run->params_json, 0, &je) : NULL;
    return json_pack("{s:s,s:s,s:s,s:s,s:o,s:s?,s:s?,s:s?,s:o,s:o,s:o}", "id", run->id, "workflow", run->workflow,
                     "version", run->script_hash, "state", store_run_state_name(run->state), "params",
                     params ? params : json_object(), "origin", run->origin, "request_key", run->request_key, "error",
                     run->error, "created_at", time_json(run->created_at), "updated_at", time_json(run->updated_at),
                     "finished_at", time_json(run->finished_at));
}

static json_t *step_json(const store_step *st)
{
    json_error_t je;
    json_t *result = st->result_json ? json_loads(st->result_json, JSON_DECODE_ANY, &je) : NULL;
    return json_pack("{s:s,s:s,s:i,s:s?,s:s?,s:s?,s:s?,s:s?,s:o,s:s?,s:o,s:o}", "name", st->name, "state",
                     store_step_state_name(st->state), "attempt", st->attempt, "job_name", st->job_name, "job_id",
                     st->job_id, "job_state", st->job_state, "project", st->project, "region", st->region, "result",
                     result ? result : json_null(), "error", st->error, "started_at", time_json(st->started_at),
                     "finished_at", time_json(st->finished_at));
}

/* {run, steps} for a run id read with `s`. Returns NULL when absent (*rc says why). */
static json_t *run_detail(store *s, const char *id, int *rc)
{
    store_run run = {0};
    store_step_list steps = {0};
    *rc = store_run_get(s, id, &run, NULL);
    if (*rc != STORE_OK) return NULL;
    json_t *j = run_json(&run);
    json_t *arr = json_array();
    json_t *recovered = json_array();
    if (store_step_list_run(s, id, &steps, NULL) == STORE_OK)
        for (size_t i = 0; i < steps.count; i++) {
            json_array_append_new(arr, step_json(&steps.items[i]));
            if (steps.items[i].state == STORE_STEP_FAILED)
                json_array_append_new(recovered, json_pack("{s:s,s:s?}", "step", steps.items[i].name, "error",
                                                           steps.items[i].error));
        }
    json_object_set_new(j, "steps", arr);
    /* A run that on_failure recovered succeeded, and says which step failed and why. */
    if (run.state == STORE_RUN_SUCCEEDED && json_array_size(recovered) > 0)
        json_object_set_new(j, "recovered", recovered);
    else
        json_decref(recovered);
    store_run_free(&run);
    store_step_list_free(&steps);
    return j;
}

/* ---- Dataflow calls, counted: a jobs_api that wraps the real one ----
 * The engine keeps only totals; wrapping its jobs_api here gives launches by workflow, step and outcome and
 * every call's outcome and latency without touching the engine. Callbacks run on the engine thread. */

typedef struct {
    jobs_api base;
    jobs_api *inner;
} counting_api;

typedef struct {
    ja_cb cb;
    void *ud;
    const char *method;
    int64_t t0;
    const adopt_entry *step; /* launches only; NULL if unknown */
} counted_call;

static const char *const ja_outcome_names[] = {"ok", "not_found", "rejected", "unknown", "transient"};

static void counted_cb(void *ud, const ja_result *r)
{
    counted_call *c = ud;
    const char *outcome = (unsigned)r->outcome < 5 ? ja_outcome_names[r->outcome] : "other";
    char labels[400];
    snprintf(labels, sizeof labels, "method=\"%s\",outcome=\"%s\",code=\"%ld\"", c->method, outcome, r->http_status);
    metrics_add("sluice_dataflow_calls_total", labels, 1);
    snprintf(labels, sizeof labels, "method=\"%s\"", c->method);
    metrics_observe("sluice_dataflow_call_seconds", labels, (double)(util_mono_ms() - c->t0) / 1000.0);
    if (strcmp(c->method, "launch") == 0) {
        snprintf(labels, sizeof labels, "workflow=\"%s\",step=\"%s\",outcome=\"%s\"",
                 c->step ? c->step->workflow : "unknown", c->step ? c->step->step : "unknown", outcome);
        metrics_add("sluice_launches_total", labels, 1);
    }
    c->cb(c->ud, r);
    free(c);
}

static counted_call *counted_new(const char *method, ja_cb cb, void *ud)
{
    counted_call *c = calloc(1, sizeof *c);
    if (c == NULL) return NULL;
    c->cb = cb;
    c->ud = ud;
    c->method = method;
    c->t0 = util_mono_ms();
    return c;
}

static const adopt_entry *launch_step_for(const char *job_name)
{
    if (job_name == NULL) return NULL;
    const char *sep = strstr(job_name, WF_SUFFIX_SEP);
    size_t n = sep ? (size_t)(sep - job_name) : strlen(job_name);
    for (size_t i = 0; i < S.n_launch_steps; i++)
        if (strlen(S.launch_steps[i].prefix) == n && strncmp(S.launch_steps[i].prefix, job_name, n) == 0)
            return &S.launch_steps[i];
    return NULL;
}

static int ca_launch(jobs_api *api, const launch_req *req, ja_cb cb, void *ud)
{
    counting_api *a = (counting_api *)api;
    counted_call *c = counted_new("launch", cb, ud);
    if (c == NULL) return -1;
    c->step = launch_step_for(req->job_name);
    int rc = a->inner->ops->launch(a->inner, req, counted_cb, c);
    if (rc != 0) free(c);
    return rc;
}

static int ca_get(jobs_api *api, const char *project, const char *region, const char *job_id, ja_cb cb, void *ud)
{
    counting_api *a = (counting_api *)api;
    counted_call *c = counted_new("get", cb, ud);
    if (c == NULL) return -1;
    int rc = a->inner->ops->get(a->inner, project, region, job_id, counted_cb, c);
    if (rc != 0) free(c);
    return rc;
}

static int ca_find(jobs_api *api, const char *project, const char *region, const char *job_name, ja_cb cb, void *ud)
{
    counting_api *a = (counting_api *)api;
    counted_call *c = counted_new("find", cb, ud);
    if (c == NULL) return -1;
    int rc = a->inner->ops->find(a->inner, project, region, job_name, counted_cb, c);
    if (rc != 0) free(c);
    return rc;
}

static int ca_stop(jobs_api *api, const char *project, const char *region, const char *job_id, int drain, ja_cb cb,
                   void *ud)
{
    counting_api *a = (counting_api *)api;
    counted_call *c = counted_new(drain ? "drain" : "cancel", cb, ud);
    if (c == NULL) return -1;
    int rc = a->inner->ops->stop(a->inner, project, region, job_id, drain, counted_cb, c);
    if (rc != 0) free(c);
    return rc;
}

static int ca_poll(jobs_api *api, int max_wait_ms)
{
    counting_api *a = (counting_api *)api;
    return a->inner->ops->poll(a->inner, max_wait_ms);
}

static void ca_free(jobs_api *api)
{
    counting_api *a = (counting_api *)api;
    a->inner->ops->free(a->inner);
    free(a);
}

static const jobs_api_ops counting_ops = {ca_launch, ca_get, ca_find, ca_stop, ca_poll, ca_free};

/* Wraps `inner` (takes ownership). Returns NULL on allocation failure (inner is then freed). */
static jobs_api *counting_api_new(jobs_api *inner)
{
    counting_api *a = calloc(1, sizeof *a);
    if (a == NULL) {
        inner->ops->free(inner);
        return NULL;
    }
    a->base.ops = &counting_ops;
    a->inner = inner;
    return &a->base;
}

/* ---- engine thread ---- */

static void cmd_free(eng_cmd *c)
{
    free(c->step);
    free(c->job_id);
    free(c->job_name);
    free(c->project);
    free(c->region);
    free(c->workflow);
    free(c->request_key);
    free(c->run_id);
    json_decref(c->params);
    free(c);
}

static void queue_cmd_nowait(eng_cmd *c)
{
    pthread_mutex_lock(&S.emu);
    if (S.cq_tail)
        S.cq_tail->next = c;
    else
        S.cq_head = c;
    S.cq_tail = c;
    S.eng_wake = 1;
    pthread_cond_signal(&S.ecv);
    pthread_mutex_unlock(&S.emu);
}

static void queue_cmd(eng_cmd *c)
{
    hs_defer(c->r);
    pthread_mutex_lock(&S.emu);
    if (S.cq_tail)
        S.cq_tail->next = c;
    else
        S.cq_head = c;
    S.cq_tail = c;
    S.eng_wake = 1;
    pthread_cond_signal(&S.ecv);
    pthread_mutex_unlock(&S.emu);
}

static void publish_engine_stats(void)
{
    engine_stats s = engine_get_stats(S.eng);
    metrics_set("sluice_engine_launches_sent_total", "", (double)s.launches_sent);
    metrics_set("sluice_engine_launches_ok_total", "", (double)s.launches_ok);
    metrics_set("sluice_engine_launches_adopted_total", "", (double)s.adopted);
    metrics_set("sluice_engine_checks_total", "", (double)s.checks);
    metrics_set("sluice_engine_events_consumed_total", "", (double)s.events);
    metrics_set("sluice_engine_steps_total", "outcome=\"succeeded\"", (double)s.steps_succeeded);
    metrics_set("sluice_engine_steps_total", "outcome=\"failed\"", (double)s.steps_failed);
    metrics_set("sluice_engine_runs_finished_total", "state=\"succeeded\",recovered=\"false\"",
                (double)(s.runs_succeeded - s.runs_recovered));
    metrics_set("sluice_engine_runs_finished_total", "state=\"succeeded\",recovered=\"true\"",
                (double)s.runs_recovered);
    metrics_set("sluice_engine_runs_finished_total", "state=\"failed\",recovered=\"false\"", (double)s.runs_failed);
    metrics_set("sluice_engine_runs_finished_total", "state=\"cancelled\",recovered=\"false\"",
                (double)s.runs_cancelled);
    metrics_set("sluice_engine_commit_failures_total", "", (double)s.commit_failures);
}

static void run_cmd(eng_cmd *c)
{
    char *err = NULL;
    if (c->kind == CMD_START) {
        store_run prev = {0};
        int existed = c->request_key && store_run_get_by_request_key(S.estore, c->request_key, &prev, NULL) == STORE_OK;
        store_run_free(&prev);
        char run_id[64];
        if (engine_start_run(S.eng, c->workflow, c->params, c->request_key, "api", run_id, sizeof run_id, &err) != 0) {
            complete_error(c->r, 503, err ? err : "cannot start the run");
        } else {
            int rc;
            json_t *j = run_detail(S.estore, run_id, &rc);
            json_t *out = json_pack("{s:o}", "run", j ? j : json_null());
            complete_json(c->r, existed ? 200 : 201, out);
            json_decref(out);
            char labels[200];
            snprintf(labels, sizeof labels, "workflow=\"%s\"", c->workflow);
            if (!existed) metrics_add("sluice_runs_started_total", labels, 1);
        }
    } else if (c->kind == CMD_CANCEL) {
        int rc = engine_cancel_run(S.eng, c->run_id, &err);
        if (rc < 0) {
            store_run tmp = {0};
            int gr = store_run_get(S.estore, c->run_id, &tmp, NULL);
            store_run_free(&tmp);
            complete_error(c->r, gr == STORE_NOTFOUND ? 404 : 503, err ? err : "cannot cancel");
        } else {
            int grc;
            json_t *j = run_detail(S.estore, c->run_id, &grc);
            json_t *out = json_pack("{s:o,s:b}", "run", j ? j : json_null(), "already_finished", rc == 1);
            complete_json(c->r, rc == 1 ? 200 : 202, out);
            json_decref(out);
        }
    } else if (c->kind == CMD_ADOPT) {
        char run_id[64];
        int rc = engine_adopt_job(S.eng, c->workflow, c->step, c->job_id, c->job_name, c->project, c->region, run_id,
                                  sizeof run_id, &err);
        if (rc < 0) {
            log_error("serve: cannot adopt job %s: %s", c->job_name ? c->job_name : c->job_id, err ? err : "?");
        } else if (rc == 0) {
            char labels[200];
            snprintf(labels, sizeof labels, "workflow=\"%s\"", c->workflow);
            metrics_add("sluice_runs_adopted_total", labels, 1);
        }
    } else {
        int64_t deadline = util_mono_ms() + c->budget_ms;
        int ticks = 0, n = 1;
        while (util_mono_ms() < deadline && !atomic_load(&S.draining)) {
            n = engine_tick(S.eng, 10);
            ticks++;
            if (n == 0) break;
        }
        json_t *out = json_pack("{s:i,s:b}", "ticks", ticks, "idle", n == 0);
        complete_json(c->r, 200, out);
        json_decref(out);
    }
    free(err);
    cmd_free(c);
}

/* Answers the held requests whose event an idle tick of generation idle_gen (0: none) has seen, whose budget
 * ran out, or all of them (all = 1, at shutdown). Engine thread only. */
static void answer_waiters(uint64_t idle_gen, int all)
{
    int64_t now = util_mono_ms();
    waiter *done = NULL;
    pthread_mutex_lock(&S.emu);
    for (waiter **pp = &S.waiters; *pp;) {
        waiter *w = *pp;
        if (all || (idle_gen && w->need_gen <= idle_gen) || w->deadline <= now) {
            *pp = w->next;
            w->next = done;
            done = w;
        } else {
            pp = &w->next;
        }
    }
    pthread_mutex_unlock(&S.emu);
    while (done) {
        waiter *w = done;
        done = w->next;
        hs_complete(w->r, 200, NULL, w->body, strlen(w->body));
        free(w);
    }
}

static void *engine_main(void *arg)
{
    (void)arg;
    atomic_store(&S.engine_alive, 1);
    int busy = 1;
    int64_t last_pub = 0;
    for (;;) {
        pthread_mutex_lock(&S.emu);
        if (!busy && !S.eng_wake && S.cq_head == NULL && !S.eng_stop && S.waiters == NULL) {
            struct timespec ts;
            clock_gettime(CLOCK_REALTIME, &ts);
            int64_t ns = ts.tv_nsec + (int64_t)S.tick_ms * 1000000;
            ts.tv_sec += ns / 1000000000;
            ts.tv_nsec = ns % 1000000000;
            pthread_cond_timedwait(&S.ecv, &S.emu, &ts);
        }
        eng_cmd *cmds = S.cq_head;
        S.cq_head = S.cq_tail = NULL;
        S.eng_wake = 0;
        int stop = S.eng_stop;
        pthread_mutex_unlock(&S.emu);
        while (cmds) {
            eng_cmd *next = cmds->next;
            run_cmd(cmds);
            cmds = next;
        }
        if (stop) break;
        pthread_mutex_lock(&S.emu);
        uint64_t gen = ++S.tick_gen;
        pthread_mutex_unlock(&S.emu);
        int n = engine_tick(S.eng, busy ? 5 : 0);
        busy = n != 0;
        answer_waiters(n == 0 ? gen : 0, atomic_load(&S.draining));
        int64_t now = util_mono_ms();
        if (now - last_pub >= 500) {
            publish_engine_stats();
            last_pub = now;
        }
    }
    answer_waiters(0, 1);
    publish_engine_stats();
    atomic_store(&S.engine_alive, 0);
    return NULL;
}

/* ---- API handlers ---- */

static int parse_body_object(hs_request *r, json_t **out)
{
    if (!content_type_is(r, "application/json")) {
        hs_respond_error(r, 415, "content type must be application/json");
        return -1;
    }
    json_error_t je;
    json_t *j = json_loadb(hs_body(r), hs_body_len(r), JSON_REJECT_DUPLICATES, &je);
    if (j == NULL || !json_is_object(j)) {
        char msg[300];
        snprintf(msg, sizeof msg, "body must be a JSON object: %s", j ? "not an object" : je.text);
        json_decref(j);
        hs_respond_error(r, 400, msg);
        return -1;
    }
    *out = j;
    return 0;
}

static const wf_info *find_wf(const char *name)
{
    for (size_t i = 0; i < S.n_wfs; i++)
        if (strcmp(S.wfs[i].name, name) == 0) return &S.wfs[i];
    return NULL;
}

static void api_start_run(hs_request *r)
{
    json_t *body = NULL;
    if (parse_body_object(r, &body) != 0) return;
    const char *key;
    json_t *v;
    json_object_foreach(body, key, v)
    {
        if (strcmp(key, "workflow") != 0 && strcmp(key, "params") != 0 && strcmp(key, "request_key") != 0) {
            char msg[200];
            snprintf(msg, sizeof msg, "unknown field '%.100s'", key);
            hs_respond_error(r, 400, msg);
            json_decref(body);
            return;
        }
    }
    json_t *wf = json_object_get(body, "workflow"), *params = json_object_get(body, "params"),
           *rk = json_object_get(body, "request_key");
    const char *msg = NULL;
    if (!json_is_string(wf) || json_string_length(wf) == 0) msg = "workflow must be a non-empty string";
    else if (params != NULL && !json_is_object(params) && !json_is_null(params)) msg = "params must be an object";
    else if (rk != NULL && !json_is_null(rk) && (!json_is_string(rk) || json_string_length(rk) == 0 ||
                                                 json_string_length(rk) > 200))
        msg = "request_key must be a string of 1..200 characters";
    if (msg) {
        hs_respond_error(r, 400, msg);
        json_decref(body);
        return;
    }
    if (find_wf(json_string_value(wf)) == NULL) {
        char m[200];
        snprintf(m, sizeof m, "no workflow named '%.100s'", json_string_value(wf));
        hs_respond_error(r, 404, m);
        json_decref(body);
        return;
    }
    eng_cmd *c = calloc(1, sizeof *c);
    c->kind = CMD_START;
    c->r = r;
    c->workflow = strdup(json_string_value(wf));
    c->params = json_is_object(params) ? json_incref(params) : json_object();
    c->request_key = json_is_string(rk) ? strdup(json_string_value(rk)) : NULL;
    json_decref(body);
    queue_cmd(c);
}

static int valid_run_id(const char *id)
{
    size_t n = strlen(id);
    if (n == 0 || n > 64) return 0;
    for (size_t i = 0; i < n; i++)
        if (!((id[i] >= 'a' && id[i] <= 'z') || (id[i] >= '0' && id[i] <= '9'))) return 0;
    return 1;
}

static void api_list_runs(hs_request *r)
{
    store *s = thread_store();
    if (s == NULL) {
        hs_respond_error(r, 503, "store unavailable");
        return;
    }
    store_run_filter f = {.state = STORE_RUN_ANY};
    const char *state = hs_query(r, "state"), *wf = hs_query(r, "workflow"), *limit = hs_query(r, "limit"),
               *cursor = hs_query(r, "cursor");
    if (state && *state) {
        store_run_state st;
        if (store_run_state_parse(state, &st) != STORE_OK) {
            hs_respond_error(r, 400, "unknown state");
            return;
        }
        f.state = (int)st;
    }
    if (wf && *wf) f.workflow = wf;
    if (limit && *limit) {
        char *end;
        long l = strtol(limit, &end, 10);
        if (*end || l < 1 || l > 1000) {
            hs_respond_error(r, 400, "limit must be 1..1000");
            return;
        }
        f.limit = (int)l;
    }
    if (cursor && *cursor) f.cursor = cursor;
    store_run_list l = {0};
    char *err = NULL;
    int rc = store_run_list_page(s, &f, &l, &err);
    if (rc != STORE_OK) {
        hs_respond_error(r, rc == STORE_INVALID ? 400 : 503, err ? err : "store error");
        free(err);
        return;
    }
    json_t *arr = json_array();
    for (size_t i = 0; i < l.count; i++) json_array_append_new(arr, run_json(&l.items[i]));
    json_t *out = json_pack("{s:o,s:s?}", "runs", arr, "next_cursor", l.next_cursor);
    respond_json(r, 200, out);
    json_decref(out);
    store_run_list_free(&l);
}

static void api_get_run(hs_request *r, const char *id)
{
    store *s = thread_store();
    if (s == NULL) {
        hs_respond_error(r, 503, "store unavailable");
        return;
    }
    int rc;
    json_t *j = run_detail(s, id, &rc);
    if (j == NULL) {
        hs_respond_error(r, rc == STORE_NOTFOUND ? 404 : 503, rc == STORE_NOTFOUND ? "no such run" : "store error");
        return;
    }
    json_t *out = json_pack("{s:o}", "run", j);
    respond_json(r, 200, out);
    json_decref(out);
}

static void api_cancel_run(hs_request *r, const char *id)
{
    store *s = thread_store();
    store_run run = {0};
    int rc = s ? store_run_get(s, id, &run, NULL) : STORE_IO;
    store_run_free(&run);
    if (rc != STORE_OK) {
        hs_respond_error(r, rc == STORE_NOTFOUND ? 404 : 503, rc == STORE_NOTFOUND ? "no such run" : "store error");
        return;
    }
    eng_cmd *c = calloc(1, sizeof *c);
    c->kind = CMD_CANCEL;
    c->r = r;
    c->run_id = strdup(id);
    queue_cmd(c);
}

static void api_reconcile(hs_request *r)
{
    const char *b = hs_query(r, "budget_ms");
    long budget = b ? strtol(b, NULL, 10) : 5000;
    if (budget < 1 || budget > 600000) {
        hs_respond_error(r, 400, "budget_ms must be 1..600000");
        return;
    }
    eng_cmd *c = calloc(1, sizeof *c);
    c->kind = CMD_RECONCILE;
    c->r = r;
    c->budget_ms = (int)budget;
    queue_cmd(c);
}

static void handle_readyz(hs_request *r)
{
    store *s = thread_store();
    int store_ok = s != NULL;
    int engine_ok = atomic_load(&S.engine_alive), writer_ok = atomic_load(&S.writer_alive);
    int ok = store_ok && engine_ok && writer_ok;
    json_t *out = json_pack("{s:b,s:b,s:b,s:b,s:i,s:O}", "ready", ok, "store", store_ok, "engine", engine_ok, "writer",
                            writer_ok, "workflows", (int)S.n_wfs, "workflow_errors", S.load_errors);
    respond_json(r, ok ? 200 : 503, out);
    json_decref(out);
}

static void handle_metrics(hs_request *r)
{
    store *s = thread_store();
    int64_t counts[STORE_RUN_STATE_COUNT] = {0};
    if (s && store_run_count_by_state(s, counts, NULL) == STORE_OK)
        for (int i = 0; i < STORE_RUN_STATE_COUNT; i++) {
            char labels[64];
            snprintf(labels, sizeof labels, "state=\"%s\"", store_run_state_name((store_run_state)i));
            metrics_set("sluice_runs", labels, (double)counts[i]);
        }
    metrics_set("sluice_http_inflight_requests", "", (double)hs_inflight(S.http));
    if (S.oidc) {
        int64_t ok, failed;
        oidc_fetch_counts(S.oidc, &ok, &failed);
        metrics_set("sluice_jwks_fetches_total", "outcome=\"ok\"", (double)ok);
        metrics_set("sluice_jwks_fetches_total", "outcome=\"failed\"", (double)failed);
    }
    size_t len = 0;
    char *text = metrics_render(&len);
    hs_respond(r, 200, "text/plain; version=0.0.4", text ? text : "", text ? len : 0, NULL);
    free(text);
}

/* The route a path belongs to, for metrics labels (bounded cardinality). */
static const char *route_of(const char *path)
{
    if (strcmp(path, "/v1/events/pubsub") == 0) return "events_pubsub";
    if (strcmp(path, "/v1/events/eventarc") == 0 || strcmp(path, "/") == 0) return "events_eventarc";
    if (strcmp(path, "/v1/runs") == 0) return "runs";
    if (strncmp(path, "/v1/runs/", 9) == 0) return strstr(path, ":cancel") ? "run_cancel" : "run";
    if (strcmp(path, "/v1/workflows") == 0) return "workflows";
    if (strcmp(path, "/v1/reconcile") == 0) return "reconcile";
    if (strcmp(path, "/healthz") == 0) return "healthz";
    if (strcmp(path, "/readyz") == 0) return "readyz";
    if (strcmp(path, "/metrics") == 0) return "metrics";
    return "other";
}

static void on_complete(hs_request *r, int64_t latency_us, void *ud)
{
    (void)ud;
    const char *route = route_of(hs_path(r));
    const char *m = hs_method(r);
    static const char *const known[] = {"GET", "POST", "PUT", "DELETE", "HEAD", "PATCH", "OPTIONS", NULL};
    const char *method = "other";
    for (int i = 0; known[i]; i++)
        if (strcmp(m, known[i]) == 0) method = known[i];
    char labels[160];
    snprintf(labels, sizeof labels, "route=\"%s\",method=\"%s\",code=\"%d\"", route, method, hs_status(r));
    metrics_add("sluice_http_requests_total", labels, 1);
    snprintf(labels, sizeof labels, "route=\"%s\"", route);
    metrics_observe("sluice_http_request_duration_seconds", labels, (double)latency_us / 1e6);
}

static void method_not_allowed(hs_request *r, const char *allow)
{
    char hdr[64];
    snprintf(hdr, sizeof hdr, "Allow: %s", allow);
    const char *body = "{\"error\":{\"code\":405,\"message\":\"method not allowed\"}}";
    hs_respond(r, 405, NULL, body, strlen(body), hdr);
}

static void route(hs_request *r, void *ud)
{
    (void)ud;
    const char *p = hs_path(r), *m = hs_method(r);
    int get = strcmp(m, "GET") == 0, post = strcmp(m, "POST") == 0;
    if (strcmp(p, "/v1/events/pubsub") == 0) {
        if (!post) { method_not_allowed(r, "POST"); return; }
        { handle_ingress(r, "pubsub"); return; }
    }
    if (strcmp(p, "/v1/events/eventarc") == 0 || (strcmp(p, "/") == 0 && post)) {
        if (!post) { method_not_allowed(r, "POST"); return; }
        { handle_ingress(r, "eventarc"); return; }
    }
    if (strcmp(p, "/healthz") == 0) {
        if (!get) { method_not_allowed(r, "GET"); return; }
        { hs_respond(r, 200, NULL, "{\"ok\":true}", strlen("{\"ok\":true}"), NULL); return; }
    }
    if (strcmp(p, "/readyz") == 0) {
        if (!get) { method_not_allowed(r, "GET"); return; }
        { handle_readyz(r); return; }
    }
    if (strcmp(p, "/metrics") == 0) {
        if (!get) { method_not_allowed(r, "GET"); return; }
        { handle_metrics(r); return; }
    }
    if (strcmp(p, "/v1/workflows") == 0) {
        if (!get) { method_not_allowed(r, "GET"); return; }
        if (!authorize(r, 1, NULL)) return;
        { hs_respond(r, 200, NULL, S.workflows_json, strlen(S.workflows_json), NULL); return; }
    }
    if (strcmp(p, "/v1/runs") == 0) {
        if (!get && !post) { method_not_allowed(r, "GET, POST"); return; }
        if (!authorize(r, 1, NULL)) return;
        { post ? api_start_run(r) : api_list_runs(r); return; }
    }
    if (strcmp(p, "/v1/reconcile") == 0) {
        if (!post) { method_not_allowed(r, "POST"); return; }
        if (!authorize(r, 1, NULL)) return;
        { api_reconcile(r); return; }
    }
    if (strncmp(p, "/v1/runs/", 9) == 0) {
        char id[80];
        const char *rest = p + 9;
        const char *colon = strchr(rest, ':');
        size_t n = colon ? (size_t)(colon - rest) : strlen(rest);
        if (n >= sizeof id) { hs_respond_error(r, 404, "no such run"); return; }
        memcpy(id, rest, n);
        id[n] = '\0';
        if (colon && strcmp(colon, ":cancel") != 0) { hs_respond_error(r, 404, "unknown path"); return; }
        if (colon && !post) { method_not_allowed(r, "POST"); return; }
        if (!colon && !get) { method_not_allowed(r, "GET"); return; }
        if (!authorize(r, 1, NULL)) return;
        if (!valid_run_id(id)) { hs_respond_error(r, 404, "no such run"); return; }
        { colon ? api_cancel_run(r, id) : api_get_run(r, id); return; }
    }
    hs_respond_error(r, 404, "unknown path");
}

/* ---- start-up ---- */

/* Every call into a workflow's Lua (parameter, hook and choice functions, loading) by outcome. */
static void observe_lua(lh_status st, double seconds)
{
    char labels[48];
    snprintf(labels, sizeof labels, "outcome=\"%s\"", st == LH_OK ? "ok" : st == LH_ERROR ? "error"
                                                         : st == LH_TIMEOUT ? "timeout" : "nomem");
    metrics_observe("sluice_lua_call_seconds", labels, seconds);
}

static void declare_metrics(void)
{
    metrics_declare("sluice_lua_call_seconds", METRIC_HISTOGRAM,
                    "Calls into workflow Lua (parameter, hook and choice functions; script loading) by outcome.");
    lh_set_observer(observe_lua);
    metrics_declare("sluice_events_total", METRIC_COUNTER,
                    "Event deliveries by source (pubsub, eventarc) and outcome (recorded, duplicate, foreign, "
                    "nonterminal, irrelevant, malformed, unauthenticated, forbidden, store_error).");
    metrics_declare("sluice_http_requests_total", METRIC_COUNTER, "HTTP requests by route, method and status code.");
    metrics_declare("sluice_http_request_duration_seconds", METRIC_HISTOGRAM, "HTTP request latency by route.");
    metrics_declare("sluice_http_inflight_requests", METRIC_GAUGE, "HTTP requests being served.");
    metrics_declare("sluice_inbox_commit_seconds", METRIC_HISTOGRAM, "Time of one group commit of ingress events.");
    metrics_declare("sluice_inbox_batches_total", METRIC_COUNTER, "Group commits of ingress events.");
    metrics_declare("sluice_inbox_lock_wait_seconds", METRIC_HISTOGRAM,
                    "Time a group commit waited for the store's write lock (held by the engine's tick).");
    metrics_declare("sluice_inbox_commit_only_seconds", METRIC_HISTOGRAM,
                    "Time of the COMMIT of a group commit (fsync, WAL checkpoints).");
    metrics_declare("sluice_runs", METRIC_GAUGE, "Runs in the store by state.");
    metrics_declare("sluice_runs_started_total", METRIC_COUNTER, "Runs started through the API by workflow.");
    metrics_declare("sluice_runs_adopted_total", METRIC_COUNTER,
                    "Runs started from a finished job Sluice did not launch (--adopt-foreign), by workflow.");
    metrics_declare("sluice_engine_launches_sent_total", METRIC_COUNTER, "Launch requests sent to Dataflow.");
    metrics_declare("sluice_engine_runs_finished_total", METRIC_COUNTER,
                    "Runs this engine finished, by state; recovered=\"true\": succeeded after on_failure handled a "
                    "step's failure.");
    metrics_declare("sluice_engine_launches_ok_total", METRIC_COUNTER, "Launches that produced or adopted a job.");
    metrics_declare("sluice_engine_launches_adopted_total", METRIC_COUNTER, "Launch intents resolved by name.");
    metrics_declare("sluice_engine_checks_total", METRIC_COUNTER, "jobs.get and look-ups sent.");
    metrics_declare("sluice_engine_events_consumed_total", METRIC_COUNTER, "Inbox events consumed by the engine.");
    metrics_declare("sluice_engine_steps_total", METRIC_COUNTER, "Finished steps by outcome.");
    metrics_declare("sluice_engine_commit_failures_total", METRIC_COUNTER, "Engine ticks rolled back.");
    metrics_declare("sluice_jwks_fetches_total", METRIC_COUNTER, "JWKS fetches by outcome.");
    metrics_declare("sluice_launches_total", METRIC_COUNTER, "Dataflow launches by workflow, step and outcome.");
    metrics_declare("sluice_dataflow_calls_total", METRIC_COUNTER,
                    "Dataflow calls by method (launch, get, find, cancel, drain), outcome and HTTP code.");
    metrics_declare("sluice_dataflow_call_seconds", METRIC_HISTOGRAM, "Dataflow call latency by method.");
}

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

typedef struct {
    char **files;
    size_t n;
    wf_workflow **wfs; /* per file, NULL when invalid */
    wf_diags *diags;   /* per file */
    atomic_size_t next;
} load_job;

static void *load_worker(void *arg)
{
    load_job *lj = arg;
    /* One scratch VM per thread validates its share of the files; each workflow's own VM is created only when
     * one of its functions first runs, so idle workflows cost no VM. */
    lh_vm *scratch = NULL;
    for (size_t i; (i = atomic_fetch_add(&lj->next, 1)) < lj->n;) {
        if (scratch == NULL) scratch = lh_new(NULL, NULL);
        lj->wfs[i] = scratch ? wf_load_file_in(lj->files[i], scratch, NULL, &lj->diags[i])
                             : wf_load_file(lj->files[i], NULL, &lj->diags[i]);
    }
    lh_free(scratch);
    return NULL;
}

/* Workflow loading runs in two halves so that parsing (one Lua VM per file: the bulk of start-up) overlaps
 * opening the store and the Dataflow client: load_start() lists the files and starts parser threads;
 * load_workflows() joins them and registers the valid workflows with the engine. */
static struct {
    load_job lj;
    char **files;
    size_t nf;
    pthread_t th[4];
    size_t started;
} L;

static int load_start(const char *dir)
{
    S.load_errors = json_array();
    DIR *d = opendir(dir);
    if (d == NULL) {
        log_error("serve: cannot open the workflows directory %s: %s", dir, strerror(errno));
        return -1;
    }
    char **files = NULL;
    size_t nf = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        size_t l = strlen(e->d_name);
        if (l < 5 || strcmp(e->d_name + l - 4, ".lua") != 0 || e->d_name[0] == '.') continue;
        files = realloc(files, (nf + 1) * sizeof *files);
        if (asprintf(&files[nf], "%s/%s", dir, e->d_name) >= 0) nf++;
    }
    closedir(d);
    if (nf > 1) qsort(files, nf, sizeof *files, cmp_str);
    L.files = files;
    L.nf = nf;
    L.lj = (load_job){.files = files, .n = nf, .wfs = calloc(nf + 1, sizeof(wf_workflow *)),
                      .diags = calloc(nf + 1, sizeof(wf_diags))};
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    size_t nthreads = nf == 0 ? 0 : nf < 8 ? 1 : (size_t)(cpus < 1 ? 1 : cpus > 4 ? 4 : cpus);
    for (size_t t = 0; t < nthreads; t++)
        if (pthread_create(&L.th[L.started], NULL, load_worker, &L.lj) == 0) L.started++;
    return 0;
}

/* Joins the parser threads. */
static void load_join(void)
{
    for (size_t t = 0; t < L.started; t++) pthread_join(L.th[t], NULL);
    L.started = 0;
}

/* Start-up failed before load_workflows took the results: wait for the parsers and drop what they made. */
static void load_abandon(void)
{
    if (L.lj.wfs == NULL) return;
    load_join();
    for (size_t i = 0; i < L.nf; i++) {
        wf_free(L.lj.wfs[i]);
        wf_diags_free(&L.lj.diags[i]);
        free(L.files[i]);
    }
    free(L.lj.wfs);
    free(L.lj.diags);
    free(L.files);
    memset(&L, 0, sizeof L);
}

/* Valid workflows go to the engine, problems to S.load_errors. */
static int load_workflows(void)
{
    load_worker(&L.lj); /* whatever the threads have not taken yet (all of it if none started) */
    load_join();
    char **files = L.files;
    size_t nf = L.nf;
    load_job lj = L.lj;
    const char *dir = S.workflows_dir;
    wf_workflow **wfs = calloc(nf + 1, sizeof *wfs);
    size_t nw = 0;
    for (size_t i = 0; i < nf; i++) {
        wf_diags dg = lj.diags[i];
        wf_workflow *wf = lj.wfs[i];
        if (wf) {
            for (size_t k = 0; k < nw; k++)
                if (strcmp(wfs[k]->name, wf->name) == 0) {
                    wf_diags_add(&dg, "%s: workflow '%s' is already defined by %s", files[i], wf->name, wfs[k]->path);
                    wf_free(wf);
                    wf = NULL;
                    break;
                }
        }
        if (wf) {
            wfs[nw++] = wf;
        }
        if (dg.n > 0) {
            json_t *errs = json_array();
            for (size_t k = 0; k < dg.n; k++) json_array_append_new(errs, json_string(dg.items[k]));
            json_array_append_new(S.load_errors, json_pack("{s:s,s:o}", "file", files[i], "errors", errs));
        }
        wf_diags_free(&dg);
    }
    wf_diags set = {0};
    if (wf_validate_set(wfs, nw, &set) > 0) {
        json_t *errs = json_array();
        for (size_t k = 0; k < set.n; k++) json_array_append_new(errs, json_string(set.items[k]));
        json_array_append_new(S.load_errors, json_pack("{s:s,s:o}", "file", dir, "errors", errs));
    }
    wf_diags_free(&set);
    S.wfs = calloc(nw + 1, sizeof *S.wfs);
    json_t *list = json_array();
    char *err = NULL;
    store_begin(S.estore, NULL); /* one commit for every script instead of one each */
    for (size_t i = 0; i < nw; i++) {
        wf_workflow *wf = wfs[i];
        wf_info *in = &S.wfs[S.n_wfs];
        in->name = strdup(wf->name);
        in->file = strdup(wf->path);
        in->version = strdup(wf->version);
        in->start = strdup(wf->start);
        in->steps = json_array();
        for (size_t k = 0; k < wf->n_steps; k++) {
            wf_step *st = &wf->steps[k];
            static const char *const kinds[] = {"hook", "flex", "classic"};
            json_array_append_new(in->steps, json_pack("{s:s,s:s,s:s?}", "name", st->name, "kind", kinds[st->kind],
                                                       "job_name", st->job_name));
            if (st->job_name && st->kind != WF_STEP_HOOK) {
                S.prefixes = realloc(S.prefixes, (S.n_prefixes + 1) * sizeof *S.prefixes);
                S.prefixes[S.n_prefixes++] = strdup(st->job_name);
                S.launch_steps = realloc(S.launch_steps, (S.n_launch_steps + 1) * sizeof *S.launch_steps);
                S.launch_steps[S.n_launch_steps++] =
                    (adopt_entry){strdup(st->job_name), strdup(wf->name), strdup(st->name)};
            }
        }
        {
            const wf_step *fs = &wf->steps[wf->start_index];
            for (int hops = 0; fs->kind == WF_STEP_HOOK && fs->next_kind == WF_NEXT_STATIC && fs->n_next == 1 && hops < 64;
                 hops++) {
                int ni = wf_step_index(wf, fs->next[0]);
                if (ni < 0) break;
                fs = &wf->steps[ni];
            }
            if (fs->kind != WF_STEP_HOOK && fs->job_name) {
                S.adopt = realloc(S.adopt, (S.n_adopt + 1) * sizeof *S.adopt);
                S.adopt[S.n_adopt++] = (adopt_entry){strdup(fs->job_name), strdup(wf->name), strdup(fs->name)};
            }
        }
        json_array_append_new(list, json_pack("{s:s,s:s,s:s,s:s,s:O}", "name", in->name, "file", in->file, "version",
                                              in->version, "start", in->start, "steps", in->steps));
        S.n_wfs++;
        if (engine_add_workflow(S.eng, wf, &err) != 0) { /* takes wf either way */
            log_error("serve: cannot register %s: %s", in->file, err ? err : "?");
            free(err);
            err = NULL;
        }
    }
    if (store_commit(S.estore, &err) != STORE_OK) {
        log_error("serve: cannot store workflow sources: %s", err ? err : "?");
        free(err);
        store_rollback(S.estore, NULL);
    }
    if (S.n_prefixes > 1) qsort(S.prefixes, S.n_prefixes, sizeof *S.prefixes, prefix_cmp);
    json_t *doc = json_pack("{s:o,s:O}", "workflows", list, "errors", S.load_errors);
    S.workflows_json = json_dumps(doc, JSON_COMPACT);
    json_decref(doc);
    for (size_t i = 0; i < nf; i++) free(files[i]);
    free(files);
    free(wfs);
    free(lj.wfs);
    free(lj.diags);
    memset(&L, 0, sizeof L); /* taken: nothing left for load_abandon */
    return 0;
}

static void free_state(void)
{
    /* the engine and the API first: cancelled calls may still report to counted_cb, which reads launch_steps */
    engine_free(S.eng);
    if (S.api) S.api->ops->free(S.api);
    for (size_t i = 0; i < S.n_wfs; i++) {
        free(S.wfs[i].name);
        free(S.wfs[i].file);
        free(S.wfs[i].version);
        free(S.wfs[i].start);
        json_decref(S.wfs[i].steps);
    }
    free(S.wfs);
    for (size_t i = 0; i < S.n_adopt; i++) {
        free(S.adopt[i].prefix);
        free(S.adopt[i].workflow);
        free(S.adopt[i].step);
    }
    free(S.adopt);
    for (size_t i = 0; i < S.n_launch_steps; i++) {
        free(S.launch_steps[i].prefix);
        free(S.launch_steps[i].workflow);
        free(S.launch_steps[i].step);
    }
    free(S.launch_steps);
    for (size_t i = 0; i < S.n_prefixes; i++) free(S.prefixes[i]);
    free(S.prefixes);
    free(S.workflows_json);
    json_decref(S.load_errors);
    for (size_t i = 0; i < S.n_handles; i++) store_close(S.handles[i]);
    free(S.handles);
    oidc_free(S.oidc);
    store_close(S.estore);
    store_close(S.wstore);
    metrics_reset();
}

static const char USAGE[] =
    "usage: sluice serve --workflows DIR [options]\n"
    "Serves Pub/Sub push and Eventarc deliveries, the HTTP API (docs/api.md), /healthz, /readyz and /metrics,\n"
    "and runs the engine. SIGTERM/SIGINT: stop accepting, finish requests in flight, stop cleanly.\n"
    "  --workflows DIR        load every *.lua in DIR (files with errors are reported, not fatal)\n"
    "  --port N               listen port (default $PORT, else 8080; 0 = ephemeral)\n"
    "  --listen ADDR          IPv4 address to bind (default 0.0.0.0)\n"
    "  --ready-file PATH      write the base URL there once listening (tests)\n"
    "  --audience A           the OIDC audience every token must carry (required unless --no-auth)\n"
    "  --allow-email E        accepted token identity (repeatable; default: any verified email)\n"
    "  --issuer I             accepted token issuer (repeatable; default Google's two spellings)\n"
    "  --jwks-url URL         signing keys (default https://www.googleapis.com/oauth2/v3/certs)\n"
    "  --jwks-file PATH       signing keys from a file instead\n"
    "  --operator-token T     a static bearer token accepted on the API (default $SLUICE_OPERATOR_TOKEN)\n"
    "  --no-auth              accept every request unauthenticated (logged; development only)\n"
    "  --threads N            HTTP worker threads (default 4)\n"
    "  --max-connections N    open connections at most (default 1024)\n"
    "  --max-body BYTES       larger bodies get 413 (default 1048576)\n"
    "  --idle-timeout S       close connections idle this long (default 30)\n"
    "  --tick D               engine wake-up when idle (default 250ms)\n"
    "  --grace D              how long shutdown waits for requests in flight (default 8s)\n"
    "  --process-in-request D after recording an event, hold the answer until the engine has acted on it\n"
    "                         (or D passed): for Cloud Run with CPU only during requests (default 0: off)\n"
    "  --store PATH, --dataflow-url URL, --credentials FILE, --token T, --project P, --poll-interval D,\n"
    "  --lag-window D\n"
    "                         as for 'sluice run'\n"
    "  --dataflow-no-auth     send no credentials to Dataflow (the emulator with auth off)\n"
    "  --adopt-foreign        a finished job of a workflow's first launch step that Sluice did not launch\n"
    "                         starts a run from that step (as the original Cloud Function did)\n";

/* A whole decimal number (nothing after it): 0 and *v, or -1. `--port 80x` and `--threads four` are errors, not
 * 80 and 0. */
static int parse_long(const char *text, long *v)
{
    char *end = NULL;
    errno = 0;
    *v = strtol(text, &end, 10);
    return end == text || *end != '\0' || errno != 0 ? -1 : 0;
}

static int parse_args(int argc, char **argv)
{
    enum {
        O_WORKFLOWS = 256, O_PORT, O_LISTEN, O_READY, O_AUD, O_EMAIL, O_ISS, O_JWKS_URL, O_JWKS_FILE, O_OPTOKEN,
        O_NOAUTH, O_THREADS, O_MAXCONN, O_MAXBODY, O_IDLE, O_TICK, O_GRACE, O_STORE, O_DFURL, O_CREDS, O_TOKEN,
        O_PROJECT, O_POLL, O_DFNOAUTH, O_PROCESS, O_ADOPT, O_HELP, O_LAG
    };
    static const struct option opts[] = {
        {"workflows", required_argument, NULL, O_WORKFLOWS}, {"port", required_argument, NULL, O_PORT},
        {"listen", required_argument, NULL, O_LISTEN},       {"ready-file", required_argument, NULL, O_READY},
        {"audience", required_argument, NULL, O_AUD},        {"allow-email", required_argument, NULL, O_EMAIL},
        {"issuer", required_argument, NULL, O_ISS},          {"jwks-url", required_argument, NULL, O_JWKS_URL},
        {"jwks-file", required_argument, NULL, O_JWKS_FILE}, {"operator-token", required_argument, NULL, O_OPTOKEN},
        {"no-auth", no_argument, NULL, O_NOAUTH},            {"threads", required_argument, NULL, O_THREADS},
        {"max-connections", required_argument, NULL, O_MAXCONN}, {"max-body", required_argument, NULL, O_MAXBODY},
        {"idle-timeout", required_argument, NULL, O_IDLE},   {"tick", required_argument, NULL, O_TICK},
        {"grace", required_argument, NULL, O_GRACE},         {"store", required_argument, NULL, O_STORE},
        {"dataflow-url", required_argument, NULL, O_DFURL},  {"credentials", required_argument, NULL, O_CREDS},
        {"token", required_argument, NULL, O_TOKEN},         {"project", required_argument, NULL, O_PROJECT},
        {"poll-interval", required_argument, NULL, O_POLL},  {"dataflow-no-auth", no_argument, NULL, O_DFNOAUTH},
        {"process-in-request", required_argument, NULL, O_PROCESS}, {"adopt-foreign", no_argument, NULL, O_ADOPT},
        {"lag-window", required_argument, NULL, O_LAG},
        {"help", no_argument, NULL, O_HELP},                 {0, 0, 0, 0}};
    config_init(&S.cfg);
    const char *penv = getenv("PORT");
    S.port = penv ? atoi(penv) : 8080;
    S.operator_token = getenv("SLUICE_OPERATOR_TOKEN");
    S.tick_ms = 250;
    S.grace_ms = 8000;
    int c;
    long v;
    int64_t ms;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (c) {
        case O_WORKFLOWS: S.workflows_dir = optarg; break;
        case O_PORT:
            if (parse_long(optarg, &v) != 0) goto bad;
            if (v < 0 || v > 65535) goto bad;
            S.port = (int)v;
            break;
        case O_LISTEN: S.listen = optarg; break;
        case O_READY: S.ready_file = optarg; break;
        case O_AUD: S.audience = optarg; break;
        case O_EMAIL:
            if (S.n_emails == MAX_LIST_OPT) goto bad;
            S.emails[S.n_emails++] = optarg;
            break;
        case O_ISS:
            if (S.n_issuers == MAX_LIST_OPT) goto bad;
            S.issuers[S.n_issuers++] = optarg;
            break;
        case O_JWKS_URL: S.jwks_url = optarg; break;
        case O_JWKS_FILE: S.jwks_file = optarg; break;
        case O_OPTOKEN: S.operator_token = optarg; break;
        case O_NOAUTH: S.no_auth = 1; break;
        case O_THREADS:
            if (parse_long(optarg, &v) != 0) goto bad;
            if (v < 1 || v > 256) goto bad;
            S.threads = (unsigned)v;
            break;
        case O_MAXCONN:
            if (parse_long(optarg, &v) != 0) goto bad;
            if (v < 1 || v > 100000) goto bad;
            S.max_conns = (unsigned)v;
            break;
        case O_MAXBODY:
            if (parse_long(optarg, &v) != 0) goto bad;
            if (v < 1024 || v > 64L * 1024 * 1024) goto bad;
            S.max_body = (size_t)v;
            break;
        case O_IDLE:
            if (parse_long(optarg, &v) != 0) goto bad;
            if (v < 1 || v > 3600) goto bad;
            S.idle_timeout_s = (unsigned)v;
            break;
        case O_TICK:
            if ((ms = config_parse_ms(optarg)) < 1) goto bad;
            S.tick_ms = (int)ms;
            break;
        case O_GRACE:
            if ((ms = config_parse_ms(optarg)) < 0) goto bad;
            S.grace_ms = (int)ms;
            break;
        case O_STORE: S.cfg.store = optarg; break;
        case O_DFURL: S.cfg.dataflow_url = optarg; break;
        case O_CREDS: S.cfg.credentials = optarg; break;
        case O_TOKEN: S.cfg.token = optarg; break;
        case O_PROJECT: S.cfg.project = optarg; break;
        case O_POLL:
            if ((S.cfg.poll_ms = config_parse_ms(optarg)) <= 0) goto bad;
            break;
        case O_LAG:
            if ((S.cfg.lag_window_ms = config_parse_ms(optarg)) <= 0) goto bad;
            break;
        case O_DFNOAUTH: S.dataflow_no_auth = 1; break;
        case O_ADOPT: S.adopt_foreign = 1; break;
        case O_PROCESS:
            if ((ms = config_parse_ms(optarg)) < 0 || ms > 600000) goto bad;
            S.process_ms = (int)ms;
            break;
        case O_HELP: fputs(USAGE, stdout); return 1;
        default: fprintf(stderr, "(see 'sluice serve --help')\n"); return -1;
        }
    }
    if (optind != argc) {
        fprintf(stderr, "sluice serve: unexpected argument '%s'\n", argv[optind]);
        return -1;
    }
    if (S.workflows_dir == NULL) {
        fprintf(stderr, "sluice serve: --workflows DIR is required\n");
        return -1;
    }
    if (!S.no_auth && S.audience == NULL) {
        fprintf(stderr, "sluice serve: --audience is required (or --no-auth for development)\n");
        return -1;
    }
    return 0;
bad:
    fprintf(stderr, "sluice serve: invalid value '%s' for --%s\n", optarg ? optarg : "", opts[c - O_WORKFLOWS].name);
    return -1;
}

static int write_ready_file(const char *path, const char *url)
{
    char tmp[4096];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    FILE *f = fopen(tmp, "w");
    if (f == NULL) return -1;
    fprintf(f, "%s\n", url);
    if (fclose(f) != 0) return -1;
    return rename(tmp, path);
}

int server_main(int argc, char **argv)
{
    memset(&S, 0, sizeof S);
    int pr = parse_args(argc, argv);
    if (pr != 0) return pr > 0 ? EXIT_OK : EXIT_USAGE;
    int rc = EXIT_RUNTIME;
    char *err = NULL;
    pthread_mutex_init(&S.wmu, NULL);
    pthread_cond_init(&S.wcv, NULL);
    pthread_mutex_init(&S.emu, NULL);
    pthread_cond_init(&S.ecv, NULL);
    pthread_mutex_init(&S.hmu, NULL);
    declare_metrics();
    /* Signals are taken by sigwait in this thread only: block them before any thread starts. */
    sigset_t sigs;
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGTERM);
    sigaddset(&sigs, SIGINT);
    pthread_sigmask(SIG_BLOCK, &sigs, NULL);
    signal(SIGPIPE, SIG_IGN);
    int writer_started = 0, engine_started = 0;
    if (load_start(S.workflows_dir) != 0) goto done;

    /* The engine's handle syncs only launch intents; the writer's acknowledges events, so it syncs every commit. */
    store_options eso = {.synchronous = config_engine_sync(&S.cfg)}, wso = {.synchronous = config_ack_sync(&S.cfg)};
    if (store_open(S.cfg.store, &eso, &S.estore, &err) != STORE_OK ||
        store_open(S.cfg.store, &wso, &S.wstore, &err) != STORE_OK) {
        fprintf(stderr, "sluice serve: cannot open the store %s: %s\n", S.cfg.store, err ? err : "?");
        goto done;
    }
    jobs_api_df_options ao = {.base_url = S.cfg.dataflow_url, .credentials = S.cfg.credentials,
                              .static_token = S.cfg.token, .no_auth = S.dataflow_no_auth};
    if ((S.api = jobs_api_df_new(&ao, &err)) == NULL) {
        fprintf(stderr, "sluice serve: Dataflow credentials: %s\n", err ? err : "?");
        goto done;
    }
    /* The default project, resolved once before the engine starts; workflows may be added later, so the
     * credentials are asked whenever neither --project nor SLUICE_PROJECT names one. */
    const char *cred_from = NULL, *cred_project = NULL;
    if (config_project(&(config_projects){.flag = S.cfg.project, .env = S.cfg.project_env}, NULL) == NULL)
        cred_project = jobs_api_df_credentials_project(S.api, CONFIG_PROJECT_LOOKUP_MS, &cred_from);
    const char *default_project = config_default_project(&S.cfg, cred_project, cred_from);
    if ((S.api = counting_api_new(S.api)) == NULL) goto done;
    engine_options eo = {.st = S.estore, .api = S.api, .default_project = default_project};
    eo.rec = rec_policy_default();
    eo.rec.poll_ms = S.cfg.poll_ms;
    eo.rec.lag_window_ms = S.cfg.lag_window_ms;
    if (eo.rec.lease_ms < S.cfg.poll_ms * 2) eo.rec.lease_ms = S.cfg.poll_ms * 2;
    if ((S.eng = engine_new(&eo, &err)) == NULL) {
        fprintf(stderr, "sluice serve: %s\n", err ? err : "cannot start the engine");
        goto done;
    }
    if (load_workflows() != 0) goto done;
    /* Loading left parse garbage in the heap; hand those pages back so an idle server stays small. */
    malloc_trim(0);
    if (json_array_size(S.load_errors) > 0)
        log_warn("serve: %zu workflow file(s) have errors; see /v1/workflows", json_array_size(S.load_errors));
    if (S.no_auth) {
        log_warn("serve: --no-auth: every request is accepted without authentication");
    } else {
        S.issuers[S.n_issuers] = NULL;
        S.emails[S.n_emails] = NULL;
        oidc_options oo = {.jwks_url = S.jwks_url, .jwks_file = S.jwks_file, .audience = S.audience,
                           .issuers = S.n_issuers ? S.issuers : NULL, .emails = S.n_emails ? S.emails : NULL};
        const char *oe = NULL;
        if ((S.oidc = oidc_new(&oo, &oe)) == NULL) {
            fprintf(stderr, "sluice serve: %s\n", oe);
            goto done;
        }
        if (S.n_emails == 0) log_warn("serve: no --allow-email: any Google-verified identity with the audience is accepted");
    }
    if (pthread_create(&S.writer, NULL, writer_main, NULL) != 0) goto done;
    writer_started = 1;
    if (pthread_create(&S.eng_thread, NULL, engine_main, NULL) != 0) goto done;
    engine_started = 1;
    hs_options ho = {.listen = S.listen, .port = S.port, .threads = S.threads, .max_connections = S.max_conns,
                     .idle_timeout_s = S.idle_timeout_s, .max_body = S.max_body, .handler = route,
                     .on_complete = on_complete};
    const char *he = NULL;
    if ((S.http = hs_start(&ho, &he)) == NULL) {
        fprintf(stderr, "sluice serve: %s\n", he);
        goto done;
    }
    char url[128];
    snprintf(url, sizeof url, "http://%s:%d", S.listen ? S.listen : "127.0.0.1", hs_port(S.http));
    printf("{\"listening\":\"%s\"}\n", url);
    fflush(stdout);
    if (S.ready_file && write_ready_file(S.ready_file, url) != 0)
        log_warn("serve: cannot write %s: %s", S.ready_file, strerror(errno));
    log_info("serve: listening on %s with %zu workflow(s)", url, S.n_wfs);
    if (S.oidc) oidc_prefetch(S.oidc);

    int sig = 0;
    sigwait(&sigs, &sig);
    log_info("serve: signal %d: draining", sig);
    atomic_store(&S.draining, 1);
    wake_engine();
    hs_shutdown(S.http, S.grace_ms);
    rc = EXIT_OK;
done:
    if (writer_started) {
        pthread_mutex_lock(&S.wmu);
        S.writer_stop = 1;
        pthread_cond_signal(&S.wcv);
        pthread_mutex_unlock(&S.wmu);
        pthread_join(S.writer, NULL);
    }
    if (engine_started) {
        pthread_mutex_lock(&S.emu);
        S.eng_stop = 1;
        pthread_cond_signal(&S.ecv);
        pthread_mutex_unlock(&S.emu);
        pthread_join(S.eng_thread, NULL);
    }
    hs_free(S.http);
    free(err);
    load_abandon();
    free_state();
    if (rc == EXIT_OK) log_info("serve: stopped");
    return rc;
}
