/* server: one `sluice serve` instance: start-up and shutdown. It builds the parts and wires them together:
 * the workflow set (wfset, reloaded by reload), the store handles, the Dataflow client (counted by
 * counting_api), the engine and its loop thread (engine_loop), event ingress with its group-commit writer
 * (ingress), the API router (api) on the HTTP server (http_server), and OIDC (oidc, serve_auth).
 * Uses: all of those, config, metrics, log. Must not: handle requests or drive the engine itself.
 *
 * Threads: MHD workers run api_route (reads through the store pool; changes go to the engine loop as commands);
 * the ingress writer records events; the engine loop's thread owns the engine, its store handle and the Dataflow
 * client; the reloader's thread loads changed workflows; the thread that opened the instance waits for signals in
 * serve_run (SIGTERM/SIGINT stop, SIGHUP reloads). Shutdown (serve_close): stop accepting and finish requests in
 * flight (hs_shutdown), then stop the reloader, the writer (after it answered what it holds) and the engine loop,
 * then free. */
#include "server.h"

#include <errno.h>
#include <malloc.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api.h"
#include "checkpointer.h"
#include "counting_api.h"
#include "engine.h"
#include "engine_loop.h"
#include "http_server.h"
#include "ingress.h"
#include "log.h"
#include "mem.h"
#include "metrics.h"
#include "notify.h"
#include "oidc.h"
#include "pubsub_pull.h"
#include "reload.h"
#include "serve_auth.h"
#include "store_pool.h"
#include "schedule.h"
#include "util.h"
#include "wf_notify.h"

/* Fault injection for the replica tests (SLUICE_FAULT_PAUSE_BEFORE_LAUNCH=N): the process stops itself (SIGSTOP)
 * just before its N-th launch request leaves, between the intent's commit and the send, where a paused replica
 * is most dangerous; the test continues it later (SIGCONT). */
static void fault_pause(void *ud, const char *job_name)
{
    int *left = ud;
    if (*left <= 0 || --*left > 0) return;
    log_warn("serve: fault injection: stopping before the launch of %s", job_name);
    raise(SIGSTOP);
    log_warn("serve: fault injection: continued");
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

/* Loading the workflows is the bulk of start-up (a Lua VM per file): it runs on its own thread while the store
 * and the Dataflow client open. */
typedef struct {
    const char *dir;
    const lh_limits *limits;
    wfset *set;
} initial_load;

static void *load_main(void *arg)
{
    initial_load *il = arg;
    const char *paths[] = {il->dir};
    wfset_options wo = {.paths = paths, .n_paths = 1, .limits = il->limits};
    il->set = wfset_load(&wo);
    return NULL;
}

struct serve_instance {
    serve_opts o;       /* the caller's, copied (its strings stay the caller's) */
    sigset_t sigs;      /* blocked by serve_open, taken by serve_run */
    int fault_pause_at; /* SLUICE_FAULT_PAUSE_BEFORE_LAUNCH */
    store *estore, *wstore;
    checkpointer *ckpt;
    store_pool *reads;
    jobs_api *api;
    engine *eng;
    engine_loop *loop;
    notifier *notifier_;
    ingress *ing;
    reloader *rl;
    oidc *od;
    serve_refusals *refusals;
    hs_server *http;
    pubsub_pull *puller;
    wfset_box *box;
    lh_watch *lua_watch;
    lh_limits lua_limits;
    initial_load il;
    serve_auth auth; /* the ingress's and the API's (borrowed by both) */
    api_ctx ctx;     /* the HTTP server's */
    char url[128];
};

/* The teardown, in this order, of whatever serve_open got to. `graceful`: serve_close has already stopped the
 * HTTP server (with its grace time); else it stops now, without waiting. */
static void release(serve_instance *si, int graceful)
{
    if (si->loop) engine_loop_drain(si->loop);
    if (si->http && !graceful) hs_shutdown(si->http, 0);
    reloader_free(si->rl);
    pubsub_pull_free(si->puller); /* before ingress: its answers go to the puller */
    ingress_free(si->ing);    /* answers what it holds (held answers go to the loop, which is still running) */
    engine_loop_free(si->loop);
    notify_free(si->notifier_); /* after the loop: a reconcile request may be delivering */
    hs_free(si->http);
    engine_free(si->eng);
    if (si->api) si->api->ops->free(si->api); /* calls still outstanding are answered to their (orphaned) callers */
    store_pool_free(si->reads);
    wfset_unref(si->il.set);
    wfset_box_free(si->box);
    oidc_free(si->od);
    serve_refusals_free(si->refusals);
    checkpointer_stop(si->ckpt); /* after the writers stopped; the last handle to close checkpoints what is left */
    store_close(si->estore);
    store_close(si->wstore);
    metrics_reset();
    lh_watch_free(si->lua_watch); /* after every workflow VM is gone */
    free(si);
}

int serve_open(const serve_opts *opts, serve_instance **out, char **err)
{
    *out = NULL;
    if (err) *err = NULL;
    serve_instance *si = xcalloc(1, sizeof *si);
    si->o = *opts;
    serve_opts *o = &si->o;
    si->api = o->api; /* taken over now: freed with the rest, also when opening fails */
    char *e = NULL, *why = NULL; /* a part's error; the message for *err */
    api_declare_metrics();
    metrics_declare("sluice_store_ops_total", METRIC_COUNTER,
                    "Firestore documents this process read, wrote and deleted (op: read, write, delete), what Firestore "
                    "bills; absent on the other stores");
    /* Signals are taken by sigwait in this thread only: block them before any thread starts. */
    sigemptyset(&si->sigs);
    sigaddset(&si->sigs, SIGTERM);
    sigaddset(&si->sigs, SIGINT);
    sigaddset(&si->sigs, SIGHUP);
    pthread_sigmask(SIG_BLOCK, &si->sigs, NULL);
    signal(SIGPIPE, SIG_IGN);

    si->box = wfset_box_new(NULL);
    /* Every workflow VM (loading, reloading, the engine's) gets these limits: it registers its calls in progress
     * with one watch, which /readyz consults (engine_loop_wedged), and reports each call to sluice_lua_call_seconds
     * (api_observe_lua). Default budgets otherwise. */
    si->lua_watch = lh_watch_new();
    si->lua_limits = (lh_limits){.watch = si->lua_watch, .observe = api_observe_lua};
    si->il = (initial_load){.dir = o->workflows_dir, .limits = &si->lua_limits};
    pthread_t loader;
    int loading = pthread_create(&loader, NULL, load_main, &si->il) == 0;
    if (!loading) load_main(&si->il);

    /* The engine's handle syncs only launch intents; the writer's acknowledges events, so it syncs every commit. */
    /* --store-poll-only: a transaction pooler may sit between, so no handle keeps session state. Neither handle
     * checkpoints the SQLite log as it commits: the checkpointer thread does (checkpointer.h). The writer polls a
     * held write lock every 100 us rather than with SQLite's 1-100 ms back-off. */
    store_options eso = {.synchronous = config_engine_sync_full(&o->cfg) ? STORE_SYNC_FULL : STORE_SYNC_NORMAL,
                         .manual_checkpoint = 1, .pooled = o->store_poll_only},
                  wso = {.synchronous = config_ack_sync_full(&o->cfg) ? STORE_SYNC_FULL : STORE_SYNC_NORMAL,
                         .manual_checkpoint = 1, .busy_poll_us = 100, .pooled = o->store_poll_only};
    if (store_open(o->cfg.store, &eso, &si->estore, &e) != STORE_OK ||
        store_open(o->cfg.store, &wso, &si->wstore, &e) != STORE_OK) {
        char *shown = store_url_redacted(o->cfg.store); /* no PostgreSQL password in the message */
        why = util_printf("cannot open the store %s: %s", shown, e ? e : "?");
        free(shown);
        goto fail;
    }
    if (strcmp(store_backend_name(si->wstore), "sqlite") == 0 &&
        (si->ckpt = checkpointer_start(o->cfg.store, &wso, NULL, &e)) == NULL) {
        why = util_printf("cannot start the checkpointer on %s: %s", o->cfg.store, e ? e : "?");
        goto fail;
    }
    si->reads = store_pool_new(o->cfg.store, &wso);
    jobs_api_df_options ao = {.base_url = o->cfg.dataflow_url, .credentials = o->cfg.credentials,
                              .static_token = o->cfg.token, .no_auth = o->dataflow_no_auth};
    if (si->api == NULL && (si->api = jobs_api_df_new(&ao, &e)) == NULL) {
        why = util_printf("Dataflow credentials: %s", e ? e : "?");
        goto fail;
    }
    /* The default project, resolved once before the engine starts; workflows may be added by a reload, so the
     * credentials are asked whenever neither --project nor SLUICE_PROJECT names one (an injected client has none
     * to ask). */
    const char *default_project = jobs_api_df_default_project(si->api, &o->cfg, o->api == NULL);
    si->api = counting_api_new(si->api);
    engine_options eo = {.st = si->estore, .api = si->api, .default_project = default_project,
                         .max_active_jobs = o->max_active_jobs, .lua = si->lua_limits};
    eo.notify.webhook = o->notify_webhook && *o->notify_webhook ? o->notify_webhook : NULL;
    eo.notify.topic = o->notify_topic && *o->notify_topic ? o->notify_topic : NULL;
    eo.notify.on = o->notify_on && *o->notify_on ? (unsigned)wf_run_event_mask(o->notify_on) : 0;
    eo.rec = rec_policy_default();
    eo.rec.poll_ms = o->cfg.poll_ms;
    eo.rec.lag_window_ms = o->cfg.lag_window_ms;
    if (o->lease_ms > 0) eo.rec.lease_ms = o->lease_ms;
    if (eo.rec.lease_ms < o->cfg.poll_ms * 2) eo.rec.lease_ms = o->cfg.poll_ms * 2;
    const char *fault = getenv("SLUICE_FAULT_PAUSE_BEFORE_LAUNCH");
    if (fault != NULL && (si->fault_pause_at = atoi(fault)) > 0) {
        log_warn("serve: SLUICE_FAULT_PAUSE_BEFORE_LAUNCH=%d: this process stops itself before that launch "
                 "(fault injection for tests)", si->fault_pause_at);
        eo.before_launch = fault_pause;
        eo.before_launch_ud = &si->fault_pause_at;
    }
    if ((si->eng = engine_new(&eo, &e)) == NULL) {
        why = xstrdup(e ? e : "cannot start the engine");
        goto fail;
    }
    if (loading) pthread_join(loader, NULL);
    loading = 0;
    if (si->il.set == NULL) goto fail;
    {
        size_t n = wfset_count(si->il.set);
        wf_workflow **wfs = xcalloc(n + 1, sizeof *wfs);
        for (size_t i = 0; i < n; i++) wfs[i] = wfset_at(si->il.set, i);
        engine_set_workflows(si->eng, wfs, n); /* the loop's thread does not run yet */
        free(wfs);
    }
    wfset_box_put(si->box, wfset_ref(si->il.set));
    /* Loading left parse garbage in the heap; hand those pages back so an idle server stays small. */
    malloc_trim(0);
    if (json_array_size(wfset_errors(si->il.set)) > 0)
        log_warn("serve: %zu workflow file(s) have errors; see /v1/workflows",
                 json_array_size(wfset_errors(si->il.set)));
    if (o->no_auth) {
        log_warn("serve: --no-auth: every request is accepted without authentication");
    } else {
        o->issuers[o->n_issuers] = NULL;
        o->emails[o->n_emails] = NULL;
        o->api_emails[o->n_api_emails] = NULL;
        /* With an API allow-list, oidc accepts any verified identity and serve_auth applies both lists. */
        oidc_options oo = {.jwks_url = o->jwks_url, .jwks_file = o->jwks_file, .audience = o->audience,
                           .issuers = o->n_issuers ? o->issuers : NULL,
                           .emails = o->n_emails && !o->n_api_emails ? o->emails : NULL};
        const char *oe = NULL;
        if ((si->od = oidc_new(&oo, &oe)) == NULL) {
            why = xstrdup(oe ? oe : "cannot set up OIDC");
            goto fail;
        }
        if (o->n_emails == 0)
            log_warn("serve: no --allow-email: any Google-verified identity with the audience is accepted");
        if (o->n_api_emails == 0)
            log_warn("serve: no --api-allow-email: the identities accepted on ingress may also use the API");
    }
    if (o->trust_header)
        log_warn("serve: --ui-trust-header %s: any request carrying that header is allowed on the API; only safe "
                 "behind a proxy that sets it and strips it from clients", o->trust_header);
    si->refusals = serve_refusals_new(60000); /* one WARNING line per route and reason per minute */
    si->auth = (serve_auth){.no_auth = o->no_auth, .operator_token = o->operator_token, .oidc = si->od,
                            .trust_header = o->trust_header,
                            .emails = o->n_api_emails && o->n_emails ? o->emails : NULL,
                            .api_emails = o->n_api_emails ? o->api_emails : NULL, .refusals = si->refusals};
    /* Run notifications: delivered by a thread of their own, and in POST /v1/reconcile (scaled to zero). */
    notify_options no = {.store_url = o->cfg.store, .secret = o->notify_secret, .pubsub_url = o->pubsub_url,
                         .credentials = o->cfg.credentials, .static_token = o->cfg.token};
    notify_options_from_env(&no);
    notify_declare_metrics();
    /* $SLUICE_TEST_NOTIFY_NO_THREAD=1 (tests only) leaves the thread unstarted, as a container scaled to zero starves
     * it: then only POST /v1/reconcile delivers. */
    const char *no_thread = getenv("SLUICE_TEST_NOTIFY_NO_THREAD");
    if ((si->notifier_ = notify_new(&no, &e)) == NULL ||
        (!(no_thread && strcmp(no_thread, "1") == 0) && notify_start(si->notifier_) != 0)) {
        why = util_printf("notifications: %s", e ? e : "cannot start");
        goto fail;
    }
    if (o->notify_secret == NULL || *o->notify_secret == '\0')
        log_info("serve: no --notify-secret: webhooks get run events unsigned (no X-Sluice-Signature)");
    engine_loop_options lo = {.eng = si->eng, .st = si->estore, .tick_ms = o->tick_ms, .publish_metrics = 1,
                              .notify = si->notifier_, .retain_ms = o->retain_ms, .prune_every_ms = o->prune_every_ms,
                              .listen_url = o->store_poll_only ? NULL : o->cfg.store, .lease_ms = o->lease_ms,
                              .lua_watch = si->lua_watch, .hold_ms = o->process_ms,
                              .every = o->schedule_tick_ms > 0 ? schedule_every : NULL,
                              .every_ms = o->schedule_tick_ms};
    if ((si->loop = engine_loop_new(&lo)) == NULL || engine_loop_start(si->loop) != 0) goto fail;
    ingress_options io = {.writer = si->wstore, .ckpt = si->ckpt, .reads = si->reads, .workflows = si->box,
                          .auth = &si->auth, .loop = si->loop, .adopt_foreign = o->adopt_foreign,
                          .process_ms = o->process_ms, .writer_realtime = !o->writer_normal};
    if ((si->ing = ingress_new(&io)) == NULL || ingress_start(si->ing) != 0) goto fail;
    if (o->n_subs > 0) {
        int ps_no_auth = 0;
        char *ps_url = pubsub_pull_endpoint(o->pubsub_url, getenv("PUBSUB_EMULATOR_HOST"), &ps_no_auth);
        if (ps_no_auth) log_info("serve: PUBSUB_EMULATOR_HOST: Pub/Sub at %s without credentials", ps_url);
        const char *fault_nack = getenv("SLUICE_FAULT_NACK_PULLED"), *fault_hold = getenv("SLUICE_FAULT_HOLD_PULLED");
        pubsub_pull_options po = {.ing = si->ing, .subscriptions = o->subs, .n_subscriptions = o->n_subs,
                                  .base_url = ps_url, .no_auth = ps_no_auth, .static_token = o->cfg.token,
                                  .credentials = o->cfg.credentials, .max_messages = (int)o->pull_max_messages,
                                  .max_bytes = (size_t)o->pull_max_bytes,
                                  .fault_nack = fault_nack ? atoi(fault_nack) : 0,
                                  .fault_hold = fault_hold ? atoi(fault_hold) : 0};
        si->puller = pubsub_pull_new(&po, &e);
        free(ps_url);
        if (si->puller == NULL) {
            why = xstrdup(e ? e : "cannot start Pub/Sub pull");
            goto fail;
        }
        if (pubsub_pull_start(si->puller) != 0) goto fail;
    }
    reloader_options ro = {.dir = o->workflows_dir, .box = si->box, .loop = si->loop, .watch = !o->no_watch,
                           .limits = &si->lua_limits};
    if ((si->rl = reloader_new(&ro, si->il.set)) == NULL) goto fail;
    si->ctx = (api_ctx){.reads = si->reads, .workflows = si->box, .auth = &si->auth, .loop = si->loop,
                        .ingress = si->ing, .reloader = si->rl, .oidc = si->od};
    hs_options ho = {.listen = o->listen, .port = o->port, .threads = o->threads, .max_connections = o->max_conns,
                     .max_connections_per_ip = o->max_conns_ip, .idle_timeout_s = o->idle_timeout_s,
                     .read_timeout_s = o->read_timeout_s, .max_body = o->max_body, .handler = api_route,
                     .ud = &si->ctx, .on_complete = api_on_complete};
    const char *he = NULL;
    if ((si->http = hs_start(&ho, &he)) == NULL) {
        why = xstrdup(he ? he : "cannot start the HTTP server");
        goto fail;
    }
    /* url: where a client on this machine reaches the server (stdout, --ready-file); the log names the address
     * actually bound, which is every interface unless --listen says otherwise. */
    const char *bound = o->listen ? o->listen : "0.0.0.0";
    snprintf(si->url, sizeof si->url, "http://%s:%d", strcmp(bound, "0.0.0.0") == 0 ? "127.0.0.1" : bound,
             hs_port(si->http));
    printf("{\"listening\":\"%s\"}\n", si->url);
    fflush(stdout);
    if (o->ready_file && write_ready_file(o->ready_file, si->url) != 0)
        log_warn("serve: cannot write %s: %s", o->ready_file, strerror(errno));
    log_info("serve: listening on %s:%d%s with %zu workflow(s)", bound, hs_port(si->http),
             strcmp(bound, "0.0.0.0") == 0 ? " (every interface)" : "", wfset_count(si->il.set));
    if (si->od) oidc_prefetch(si->od);
    free(e);
    *out = si;
    return 0;
fail:
    if (loading) pthread_join(loader, NULL);
    release(si, 0);
    free(e);
    if (err)
        *err = why;
    else
        free(why);
    return -1;
}

void serve_run(serve_instance *si)
{
    for (;;) {
        int sig = 0;
        sigwait(&si->sigs, &sig);
        if (sig == SIGHUP) {
            log_info("serve: SIGHUP: reloading %s", si->o.workflows_dir);
            reloader_trigger(si->rl);
            continue;
        }
        log_info("serve: signal %d: draining", sig);
        return;
    }
}

void serve_close(serve_instance *si, int grace_ms)
{
    if (si == NULL) return;
    engine_loop_drain(si->loop);
    pubsub_pull_stop(si->puller, grace_ms); /* no more pulls; what ingress recorded is acknowledged, the rest nacked */
    hs_shutdown(si->http, grace_ms);
    release(si, 1);
    log_info("serve: stopped");
}

const char *serve_url(const serve_instance *si) { return si->url; }

wfset_box *serve_workflows(serve_instance *si) { return si->box; }
