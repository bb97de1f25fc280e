/* ingress: authenticate, decode, filter and group-commit job events; answer after they are durable.
 * Uses: events, store, store_pool, wfset, gcp_names (the job-name rule), serve_auth, engine_loop, http_server,
 * metrics, log. Must not: touch the engine or parse bodies itself. */
#include "ingress.h"

#include <jansson.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "events.h"
#include "gcp_names.h"
#include "job_state.h"
#include "log.h"
#include "mem.h"
#include "metrics.h"
#include "util.h"
#include "workflow.h"

typedef struct item {
    struct item *next;
    hs_request *r;
    ingress_done_fn done; /* instead of r: ingress_submit's caller is told (r is then NULL) */
    void *done_ud;
    store_event ev; /* strings owned by the item */
    const char *source;
    int rc;
    int64_t id;
    int64_t queued_us; /* when the worker queued it (util_mono_us) */
    /* --adopt-foreign: a finished job of a workflow's first launch step that no step row knows */
    char *adopt_wf, *adopt_step, *project, *region;
} item;

struct ingress {
    ingress_options o;
    pthread_t thread;
    int started;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    item *head, *tail;
    int stop;
    atomic_int alive;
};

static void count_event(const char *source, const char *outcome)
{
    char labels[128];
    snprintf(labels, sizeof labels, "source=\"%s\",outcome=\"%s\"", source, outcome);
    metrics_add("sluice_events_total", labels, 1);
}

static void item_free(item *it)
{
    free(it->ev.message_id);
    free(it->ev.job_id);
    free(it->ev.job_name);
    free(it->ev.state);
    free(it->ev.payload_json);
    free(it->adopt_wf);
    free(it->adopt_step);
    free(it->project);
    free(it->region);
    free(it);
}

static void answer_outcome(hs_request *r, const char *source, const char *outcome)
{
    char body[64];
    snprintf(body, sizeof body, "{\"outcome\":\"%s\"}", outcome);
    count_event(source, outcome);
    hs_respond(r, 200, NULL, body, strlen(body), NULL);
}

/* --adopt-foreign: the event is about the first launch step of a workflow and no step row knows the job. */
static void mark_adoption(ingress *g, item *it, const wfset *set, const ev_job_event *ev)
{
    const wf_workflow *wf = NULL;
    const wf_step *st = wfset_step_for_job(set, ev->job_name, &wf);
    if (st == NULL || wfset_first_launch_step(wf) != st) return;
    store *rs = store_pool_get(g->o.reads);
    if (rs == NULL) return;
    store_step known = {0};
    int by_name = store_step_find_by_job_name(rs, ev->job_name, &known, NULL);
    store_step_free(&known);
    int by_id = STORE_NOTFOUND;
    if (by_name == STORE_NOTFOUND && ev->job_id) by_id = store_step_find_by_job_id(rs, ev->job_id, &known, NULL);
    store_step_free(&known);
    if (by_name != STORE_NOTFOUND || by_id != STORE_NOTFOUND) return;
    it->adopt_wf = xstrdup(wf->name);
    it->adopt_step = xstrdup(st->name);
    it->project = ev->project ? xstrdup(ev->project) : NULL;
    it->region = ev->region ? xstrdup(ev->region) : NULL;
}

/* The answer to an event that is not queued: to the HTTP request (status 200 with the outcome, or `status` with
 * `why`), or to ingress_submit's caller. */
static void answer_now(hs_request *r, ingress_done_fn done, void *ud, const char *source, const char *outcome,
                       int status, const char *why)
{
    if (done != NULL) {
        count_event(source, outcome);
        done(ud, status == 200 ? INGRESS_IGNORED : status == 503 ? INGRESS_FAILED : INGRESS_MALFORMED, outcome);
        return;
    }
    if (status == 200) {
        answer_outcome(r, source, outcome);
        return;
    }
    count_event(source, outcome);
    if (status == 400) hs_set_log_field(r, "reason", outcome);
    hs_respond_error(r, status, why);
}

/* Decodes, filters and queues one event for the writer: the part of a delivery after its authentication, shared
 * by pushes (r) and pulled messages (done). */
static void accept_event(ingress *g, hs_request *r, ingress_done_fn done, void *done_ud, const ev_header *hdrs,
                         size_t n, const char *body, size_t len, const char *source)
{
    ev_job_event ev = {0};
    char why[256];
    ev_status es = ev_decode(hdrs, n, body, len, &ev, why, sizeof why);
    if (es == EV_IRRELEVANT) {
        answer_now(r, done, done_ud, source, "irrelevant", 200, NULL);
        return;
    }
    if (es != EV_OK) {
        answer_now(r, done, done_ud, source, "malformed", 400, why);
        return;
    }
    if (ev.job_name != NULL && !gn_job_name_valid(ev.job_name)) {
        /* No Dataflow job can have this name ([a-z]([-a-z0-9]*[a-z0-9])?, 1024 at most), so no step's job can be
         * meant: acknowledged (200) and counted, never recorded. A non-2xx would only make Pub/Sub redeliver it. */
        ev_job_event_free(&ev);
        if (r != NULL) hs_set_log_field(r, "reason", "invalid_job_name");
        answer_now(r, done, done_ud, source, "invalid_job_name", 200, NULL);
        return;
    }
    wfset *set = wfset_box_get(g->o.workflows);
    const char *skip = NULL;
    if (ev.job_name != NULL && !wfset_job_known(set, ev.job_name))
        skip = "foreign";
    else if (ev.state != NULL && !js_name_terminal(ev.state) && !js_name_is(ev.state, JS_RUNNING))
        skip = "nonterminal"; /* an end moves a DAG forward, RUNNING gives the attempt its running time (push-only
                               * setups never see it otherwise); the engine learns job ids from launch answers */
    if (skip || (ev.job_id == NULL && ev.job_name == NULL)) {
        wfset_unref(set);
        ev_job_event_free(&ev);
        if (skip)
            answer_now(r, done, done_ud, source, skip, 200, NULL);
        else
            answer_now(r, done, done_ud, source, "malformed", 400, "the event names no job");
        return;
    }
    item *it = xcalloc(1, sizeof *it);
    it->r = r;
    it->done = done;
    it->done_ud = done_ud;
    it->source = source;
    /* a job is adopted from its end (a RUNNING event only gives a known attempt its running time) */
    if (g->o.adopt_foreign && ev.job_name && (ev.state == NULL || js_name_terminal(ev.state))) mark_adoption(g, it, set, &ev);
    wfset_unref(set);
    it->ev.message_id = ev.message_id;
    it->ev.job_id = ev.job_id;
    it->ev.job_name = ev.job_name;
    it->ev.state = ev.state;
    ev.message_id = ev.job_id = ev.job_name = ev.state = NULL;
    it->ev.source = strncmp(ev.source, "eventarc", 8) == 0 ? STORE_SRC_EVENTARC : STORE_SRC_PUSH;
    json_t *payload = json_pack("{s:s,s:s?,s:s?,s:s?,s:i}", "source", ev.source, "project", ev.project, "region",
                                ev.region, "log", ev.log_text, "delivery_attempt", ev.delivery_attempt);
    if (payload != NULL && ev.event_time_ms > 0) /* when the state changed, as the event says (engine_running.c) */
        json_object_set_new(payload, "time_ms", json_integer(ev.event_time_ms));
    it->ev.payload_json = payload ? json_dumps(payload, JSON_COMPACT) : NULL;
    json_decref(payload);
    ev_job_event_free(&ev);
    if (r != NULL) hs_defer(r);
    it->queued_us = util_mono_us();
    pthread_mutex_lock(&g->mu);
    if (g->tail)
        g->tail->next = it;
    else
        g->head = it;
    g->tail = it;
    pthread_cond_signal(&g->cv);
    pthread_mutex_unlock(&g->mu);
}

void ingress_handle(ingress *g, hs_request *r, const char *source)
{
    if (!serve_authorize(g->o.auth, r, 0, source)) return;
    const char *ct = hs_header(r, "Content-Type");
    if (ct != NULL && !serve_content_type_is(r, "application/json") &&
        !serve_content_type_is(r, "application/cloudevents+json") && !serve_content_type_is(r, "text/plain")) {
        count_event(source, "malformed");
        hs_respond_error(r, 415, "content type must be application/json");
        return;
    }
    const char **names, **values;
    size_t nh = hs_headers(r, &names, &values);
    ev_header hdrs[64];
    size_t n = 0;
    for (size_t i = 0; i < nh && n < 64; i++) hdrs[n++] = (ev_header){names[i], values[i]};
    accept_event(g, r, NULL, NULL, hdrs, n, hs_body(r), hs_body_len(r), source);
}

void ingress_submit(ingress *g, const ev_header *headers, size_t n_headers, const char *body, size_t len,
                    const char *source, ingress_done_fn done, void *ud)
{
    accept_event(g, NULL, done, ud, headers, n_headers, body, len, source);
}

/* Records one batch in one transaction; returns the store_rc of the batch (each item has its own rc). */
static int commit_batch(ingress *g, item *batch, size_t *recorded)
{
    int64_t t0 = util_mono_us();
    /* the batch's first event waited longest; one observation per batch keeps the metrics mutex off the loop */
    metrics_observe("sluice_inbox_queue_wait_seconds", "", (double)(t0 - batch->queued_us) / 1e6);
    char *err = NULL;
    int rc = store_begin(g->o.writer, &err);
    int64_t t1 = util_mono_us();
    metrics_observe("sluice_inbox_lock_wait_seconds", "", (double)(t1 - t0) / 1e6);
    size_t n = 0;
    for (item *it = batch; rc == STORE_OK && it; it = it->next, n++) {
        it->rc = store_inbox_put(g->o.writer, &it->ev, &it->id, NULL);
        if (it->rc == STORE_OK)
            (*recorded)++;
        else if (it->rc != STORE_DUPLICATE && it->rc != STORE_INVALID)
            rc = it->rc;
    }
    int64_t t2 = util_mono_us();
    if (rc == STORE_OK) rc = store_commit(g->o.writer, &err);
    metrics_observe("sluice_inbox_commit_only_seconds", "", (double)(util_mono_us() - t2) / 1e6);
    if (rc != STORE_OK) {
        log_error("serve: recording %zu events failed: %s", n, err ? err : store_strerror(rc));
        if (store_in_transaction(g->o.writer)) store_rollback(g->o.writer, NULL);
    }
    free(err);
    metrics_observe("sluice_inbox_commit_seconds", "", (double)(util_mono_us() - t0) / 1e6);
    metrics_add("sluice_inbox_batches_total", "", 1);
    return rc;
}

static void answer_item(ingress *g, item *it, int batch_rc)
{
    char body[160];
    if (it->done != NULL) { /* ingress_submit: its caller acknowledges (or not) on its own channel */
        int dup = it->rc == STORE_DUPLICATE;
        const char *outcome = batch_rc != STORE_OK ? "store_error" : it->rc == STORE_INVALID ? "malformed"
                              : dup ? "duplicate" : "recorded";
        if (batch_rc == STORE_OK && !dup && it->rc == STORE_OK && it->adopt_wf && g->o.loop)
            engine_loop_adopt(g->o.loop, it->adopt_wf, it->adopt_step, it->ev.job_id, it->ev.job_name, it->project,
                              it->region);
        count_event(it->source, outcome);
        it->done(it->done_ud, batch_rc != STORE_OK ? INGRESS_FAILED : it->rc == STORE_INVALID ? INGRESS_MALFORMED
                                                                                            : INGRESS_RECORDED,
                 outcome);
        return;
    }
    if (batch_rc != STORE_OK) {
        count_event(it->source, "store_error");
        snprintf(body, sizeof body, "{\"error\":{\"code\":503,\"message\":\"the event could not be recorded\"}}");
        hs_complete(it->r, 503, NULL, body, strlen(body));
        return;
    }
    if (it->rc == STORE_INVALID) {
        count_event(it->source, "malformed");
        snprintf(body, sizeof body, "{\"error\":{\"code\":400,\"message\":\"the event was refused by the store\"}}");
        hs_complete(it->r, 400, NULL, body, strlen(body));
        return;
    }
    int dup = it->rc == STORE_DUPLICATE;
    if (!dup && it->adopt_wf && g->o.loop)
        engine_loop_adopt(g->o.loop, it->adopt_wf, it->adopt_step, it->ev.job_id, it->ev.job_name, it->project,
                          it->region);
    count_event(it->source, dup ? "duplicate" : "recorded");
    snprintf(body, sizeof body, "{\"outcome\":\"%s\",\"event_id\":%lld}", dup ? "duplicate" : "recorded",
             (long long)it->id);
    if (g->o.process_ms > 0 && g->o.loop)
        /* CPU only during requests: keep the request open so the engine runs on the CPU it buys */
        engine_loop_hold(g->o.loop, it->r, body, util_mono_ms() + g->o.process_ms);
    else
        hs_complete(it->r, 200, NULL, body, strlen(body));
}

static void *writer_main(void *arg)
{
    ingress *g = arg;
    util_thread_name("ingress-writer");
    /* Every recorded event's answer waits for this thread; on a machine whose CPUs are busy with other work it
     * spent over half of its time runnable but not running (benchmarks, "Server"). */
    if (g->o.writer_realtime) {
        int e = util_thread_realtime();
        if (e == 0)
            log_info("serve: the ingress writer runs in the real-time class (SCHED_RR 1)");
        else
            log_info("serve: the ingress writer stays in the normal class (%s)", strerror(e));
    }
    atomic_store(&g->alive, 1);
    for (;;) {
        pthread_mutex_lock(&g->mu);
        while (g->head == NULL && !g->stop) pthread_cond_wait(&g->cv, &g->mu);
        if (g->head == NULL && g->stop) {
            pthread_mutex_unlock(&g->mu);
            break;
        }
        item *batch = g->head;
        g->head = g->tail = NULL;
        pthread_mutex_unlock(&g->mu);
        size_t recorded = 0;
        int rc = commit_batch(g, batch, &recorded);
        while (batch) {
            item *it = batch;
            batch = batch->next;
            answer_item(g, it, rc);
            item_free(it);
        }
        if (recorded > 0 && g->o.loop) engine_loop_wake(g->o.loop);
        checkpointer_writer_turn(g->o.ckpt, g->o.writer); /* after the answers: off their path */
    }
    atomic_store(&g->alive, 0);
    return NULL;
}

ingress *ingress_new(const ingress_options *o)
{
    ingress *g = xcalloc(1, sizeof *g);
    g->o = *o;
    pthread_mutex_init(&g->mu, NULL);
    pthread_cond_init(&g->cv, NULL);
    return g;
}

int ingress_start(ingress *g)
{
    atomic_store(&g->alive, 1); /* as engine_loop_start: ready from the start, not from the thread's first line */
    if (pthread_create(&g->thread, NULL, writer_main, g) != 0) {
        atomic_store(&g->alive, 0);
        return -1;
    }
    g->started = 1;
    return 0;
}

int ingress_alive(ingress *g) { return atomic_load(&g->alive); }

void ingress_free(ingress *g)
{
    if (g == NULL) return;
    if (g->started) {
        pthread_mutex_lock(&g->mu);
        g->stop = 1;
        pthread_cond_signal(&g->cv);
        pthread_mutex_unlock(&g->mu);
        pthread_join(g->thread, NULL);
    }
    pthread_mutex_destroy(&g->mu);
    pthread_cond_destroy(&g->cv);
    free(g);
}
