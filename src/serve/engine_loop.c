/* engine_loop: the engine's thread, its command queue and the requests held for it.
 * Uses: engine, store, wfset, views, http_server, metrics, log. Must not: parse HTTP bodies or decide about runs.
 *
 * Commands and held requests are queued under one mutex by any thread and executed or answered by the loop's
 * thread between ticks. While API calls are outstanding the thread ticks every few milliseconds; when idle it
 * sleeps on a condition variable until woken, the next due check (the engine knows when), or tick_ms. */
#include "engine_loop.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "log.h"
#include "mem.h"
#include "metrics.h"
#include "reply.h"
#include "util.h"
#include "views.h"

typedef enum { CMD_START, CMD_CANCEL, CMD_REDRIVE, CMD_RECONCILE, CMD_ADOPT, CMD_INSTALL, CMD_CALL } cmd_kind;

typedef struct cmd {
    struct cmd *next;
    cmd_kind kind;
    hs_request *r;
    char *workflow, *request_key, *run_id;
    char *step, *job_id, *job_name, *project, *region; /* CMD_ADOPT */
    json_t *params;
    int budget_ms, latest;
    wfset *set; /* CMD_INSTALL */
    engine_loop_fn fn; /* CMD_CALL */
    void *arg;
    void (*free_arg)(void *);
} cmd;

/* A recorded event's request held open until the engine has acted on it (--process-in-request); or a run command's
 * (run_id set), answered with the run as it is then. */
typedef struct waiter {
    struct waiter *next;
    hs_request *r;
    char body[160];
    char *run_id;          /* a command's run (owned): answered with answer_run(status, extra_key, extra_val) */
    int status, extra_val;
    const char *extra_key; /* a literal */
    int64_t deadline;  /* monotonic ms */
    uint64_t need_gen; /* answered after an idle tick of at least this generation */
} waiter;

struct engine_loop {
    engine_loop_options o;
    pthread_t thread;
    int started;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int wake, stop;
    cmd *head, *tail;
    waiter *waiters;
    uint64_t tick_gen; /* under mu: incremented as each tick starts */
    atomic_int alive, draining;
    atomic_int wedge_logged; /* the current wedge has been logged (engine_loop_wedged) */
    int64_t last_pub;
    int64_t next_prune; /* monotonic ms */
    int64_t next_every; /* monotonic ms: when o.every runs next */
    atomic_int leader;  /* this process holds the store's leader lease (singleton duties: retention) */
    _Atomic int64_t lease_until; /* monotonic ms: the lease is ours until then at most (counted from the ask) */
    int64_t term;       /* the lease's term while we hold it */
    char holder[96];    /* this process's name in the lease: host, pid and a random part */
    char *listen_url;   /* copied from the options */
    pthread_t listen_thread;
    int listening;
    atomic_int listen_stop;
    int64_t next_try;   /* monotonic ms: when the lease is asked for (or renewed) next */
};

#define LEADER_LEASE "leader"

/* Every process runs the engine (on a shared store the engines split the work row by row, see store.h); the
 * duties that must run once go to the holder of the store's leader lease. It is asked for, or renewed, every
 * third of its time, and counted as ours only until lease_ms after the ask was sent: a process paused or cut off
 * longer than that has lost it, whatever it believed. */
static void lead(engine_loop *l)
{
    int64_t now = util_mono_ms();
    if (now < l->next_try) return;
    l->next_try = now + l->o.lease_ms / 3;
    store_lease ls = {0};
    char *err = NULL;
    int was = engine_loop_leader(l);
    if (store_lease_acquire(l->o.st, LEADER_LEASE, l->holder, l->o.lease_ms, &ls, &err) != STORE_OK) {
        log_warn("engine: cannot ask for the leader lease: %s", err ? err : "?");
        free(err);
        return; /* what we hold runs out at lease_until */
    }
    if (ls.held) {
        atomic_store(&l->lease_until, now + l->o.lease_ms);
        if (!was || ls.term != l->term)
            log_info("engine: this process (%s) holds the leader lease, term %lld", l->holder, (long long)ls.term);
        l->term = ls.term;
    } else {
        /* ask again as soon as the holder's time is up, rather than a third of the lease from now */
        if (ls.expires_in_ms + 20 < l->o.lease_ms / 3) l->next_try = now + (ls.expires_in_ms > 0 ? ls.expires_in_ms : 0) + 20;
        atomic_store(&l->lease_until, 0);
        if (was) log_warn("engine: the leader lease passed to %s (term %lld)", ls.holder ? ls.holder : "?",
                          (long long)ls.term);
    }
    atomic_store(&l->leader, ls.held);
    if (l->o.publish_metrics) metrics_set("sluice_engine_leader", "", ls.held);
    store_lease_free(&ls);
}

int engine_loop_leader(engine_loop *l)
{
    return atomic_load(&l->leader) && util_mono_ms() < atomic_load(&l->lease_until);
}

/* The inbox keeps events (and so their dedupe keys) at least as long as Pub/Sub may redeliver: 7 days. */
#define INBOX_KEEP_MS (7LL * 24 * 3600 * 1000)

/* Retention, on the loop's thread between ticks: a few bounded batches so a tick is never held up long. */
static void prune(engine_loop *l)
{
    int64_t now = util_now_ms(), total = 0, n = 0;
    char *err = NULL;
    for (int batch = 0; batch < 10; batch++) {
        n = 0;
        if (store_run_prune(l->o.st, now - l->o.retain_ms, 500, &n, &err) != STORE_OK) {
            log_warn("serve: retention: %s", err ? err : "store error");
            free(err);
            err = NULL;
            break;
        }
        total += n;
        if (n < 500) break;
    }
    int64_t keep = l->o.retain_ms > INBOX_KEEP_MS ? l->o.retain_ms : INBOX_KEEP_MS, events = 0;
    if (store_inbox_prune(l->o.st, now - keep, &events, &err) != STORE_OK) {
        log_warn("serve: inbox retention: %s", err ? err : "store error");
        free(err);
    }
    if (total || events) log_info("serve: retention: deleted %lld finished run(s) and %lld old event(s)",
                                  (long long)total, (long long)events);
    metrics_add("sluice_runs_pruned_total", "", (double)total);
    /* more left: come back soon rather than in 10 minutes */
    l->next_prune = util_mono_ms() + (n == 500 ? 1000 : l->o.prune_every_ms);
}

static void cmd_free(cmd *c)
{
    free(c->workflow);
    free(c->request_key);
    free(c->run_id);
    free(c->step);
    free(c->job_id);
    free(c->job_name);
    free(c->project);
    free(c->region);
    json_decref(c->params);
    wfset_unref(c->set);
    if (c->free_arg) c->free_arg(c->arg);
    free(c);
}


static void enqueue(engine_loop *l, cmd *c)
{
    if (c->r) hs_defer(c->r);
    pthread_mutex_lock(&l->mu);
    if (l->tail)
        l->tail->next = c;
    else
        l->head = c;
    l->tail = c;
    l->wake = 1;
    pthread_cond_signal(&l->cv);
    pthread_mutex_unlock(&l->mu);
}

static cmd *cmd_new(cmd_kind kind, hs_request *r)
{
    cmd *c = xcalloc(1, sizeof *c);
    c->kind = kind;
    c->r = r;
    return c;
}

void engine_loop_start_run(engine_loop *l, hs_request *r, const char *workflow, json_t *params,
                           const char *request_key)
{
    cmd *c = cmd_new(CMD_START, r);
    if (c == NULL) return;
    c->workflow = xstrdup(workflow);
    /* A copy, not a reference: the engine thread owns the command's values outright and the request's body is
     * freed on the HTTP thread (a shared reference count would tie the two threads' frees together). */
    c->params = params ? json_deep_copy(params) : json_object();
    c->request_key = xstrdup(request_key);
    enqueue(l, c);
}

void engine_loop_cancel(engine_loop *l, hs_request *r, const char *run_id)
{
    cmd *c = cmd_new(CMD_CANCEL, r);
    if (c == NULL) return;
    c->run_id = xstrdup(run_id);
    enqueue(l, c);
}

void engine_loop_redrive(engine_loop *l, hs_request *r, const char *run_id, json_t *params, int latest)
{
    cmd *c = cmd_new(CMD_REDRIVE, r);
    if (c == NULL) return;
    c->run_id = xstrdup(run_id);
    c->params = params ? json_deep_copy(params) : NULL; /* a copy: as engine_loop_start_run */
    c->latest = latest;
    enqueue(l, c);
}

void engine_loop_reconcile(engine_loop *l, hs_request *r, int budget_ms)
{
    cmd *c = cmd_new(CMD_RECONCILE, r);
    if (c == NULL) return;
    c->budget_ms = budget_ms;
    enqueue(l, c);
}

void engine_loop_adopt(engine_loop *l, const char *workflow, const char *step, const char *job_id,
                       const char *job_name, const char *project, const char *region)
{
    cmd *c = cmd_new(CMD_ADOPT, NULL);
    if (c == NULL) return;
    c->workflow = xstrdup(workflow);
    c->step = xstrdup(step);
    c->job_id = xstrdup(job_id);
    c->job_name = xstrdup(job_name);
    c->project = xstrdup(project);
    c->region = xstrdup(region);
    enqueue(l, c);
}

void engine_loop_call(engine_loop *l, hs_request *r, engine_loop_fn fn, void *arg, void (*free_arg)(void *))
{
    cmd *c = cmd_new(CMD_CALL, r);
    if (c == NULL) {
        if (free_arg) free_arg(arg);
        return;
    }
    c->fn = fn;
    c->arg = arg;
    c->free_arg = free_arg;
    enqueue(l, c);
}

void engine_loop_install(engine_loop *l, wfset *set)
{
    cmd *c = cmd_new(CMD_INSTALL, NULL);
    if (c == NULL) return;
    c->set = wfset_ref(set);
    enqueue(l, c);
}

static void hold_waiter(engine_loop *l, waiter *w)
{
    pthread_mutex_lock(&l->mu);
    w->need_gen = l->tick_gen + 1;
    w->next = l->waiters;
    l->waiters = w;
    l->wake = 1;
    pthread_cond_signal(&l->cv);
    pthread_mutex_unlock(&l->mu);
}

void engine_loop_hold(engine_loop *l, hs_request *r, const char *body, int64_t deadline_ms)
{
    waiter *w = xcalloc(1, sizeof *w);
    w->r = r;
    snprintf(w->body, sizeof w->body, "%s", body);
    w->deadline = deadline_ms;
    hold_waiter(l, w);
}

void engine_loop_wake(engine_loop *l)
{
    pthread_mutex_lock(&l->mu);
    l->wake = 1;
    pthread_cond_signal(&l->cv);
    pthread_mutex_unlock(&l->mu);
}

void engine_loop_drain(engine_loop *l)
{
    atomic_store(&l->draining, 1);
    engine_loop_wake(l);
}

int engine_loop_alive(engine_loop *l) { return atomic_load(&l->alive); }

/* Past its budget plus this, a Lua call is reported as wedged (the budget promises 0.25 s at most). */
#define WEDGE_MARGIN_S 1.0

int engine_loop_wedged(engine_loop *l, char *why, size_t cap)
{
    char buf[256];
    if (!lh_watch_overdue(l->o.lua_watch, WEDGE_MARGIN_S, buf, sizeof buf)) {
        atomic_store(&l->wedge_logged, 0);
        return 0;
    }
    if (!atomic_exchange(&l->wedge_logged, 1)) log_error("engine: wedged: %s", buf);
    if (why != NULL && cap > 0) snprintf(why, cap, "%s", buf);
    return 1;
}

/* ---- executing commands (loop thread) ---- */

static void answer_run(engine_loop *l, hs_request *r, int status, const char *run_id, const char *extra_key,
                       int extra_val)
{
    int rc;
    json_t *j = view_run_detail(l->o.st, run_id, &rc);
    json_t *out = json_pack("{s:o}", "run", j ? j : json_null());
    if (extra_key) json_object_set_new(out, extra_key, json_boolean(extra_val));
    reply_complete(r, status, out);
    json_decref(out);
}

/* 1 while the engine waits to re-check a job it expects to end (engine_expecting_until) before `deadline`
 * (monotonic ms): a held answer waits for it, since the process may get no CPU once the answer is sent. */
static int expecting(engine_loop *l, int64_t deadline)
{
    int64_t left = engine_expecting_until(l->o.eng) - util_now_ms();
    return left > 0 && util_mono_ms() + left < deadline;
}

/* A run command's answer: with hold_ms (CPU only during requests), held like an event's until the engine has
 * acted on the command (its launches sent and answered), or hold_ms passed; else at once. */
static void answer_cmd(engine_loop *l, hs_request *r, int status, const char *run_id, const char *extra_key,
                       int extra_val)
{
    waiter *w = l->o.hold_ms > 0 ? xcalloc(1, sizeof *w) : NULL;
    if (w != NULL && (w->run_id = xstrdup(run_id)) == NULL) {
        free(w);
        w = NULL;
    }
    if (w == NULL) {
        answer_run(l, r, status, run_id, extra_key, extra_val);
        return;
    }
    w->r = r;
    w->status = status;
    w->extra_key = extra_key;
    w->extra_val = extra_val;
    w->deadline = util_mono_ms() + l->o.hold_ms;
    hold_waiter(l, w);
}

static int status_of(int rc)
{
    switch (rc) {
    case ENG_ERR_NO_WORKFLOW:
    case ENG_ERR_NOTFOUND: return 404;
    case ENG_ERR_PARAMS: return 400;
    case ENG_ERR_CONFLICT:
    case ENG_ERR_STATE: return 409;
    default: return 503;
    }
}

static void run_cmd(engine_loop *l, cmd *c)
{
    char *err = NULL;
    char run_id[64];
    int rc;
    switch (c->kind) {
    case CMD_START:
        rc = engine_start_run(l->o.eng, c->workflow, c->params, c->request_key, "api", run_id, sizeof run_id, &err);
        if (rc < 0) {
            reply_complete_error(c->r, status_of(rc), err ? err : "cannot start the run");
        } else {
            answer_cmd(l, c->r, rc == 1 ? 200 : 201, run_id, NULL, 0);
            if (rc == 0) {
                char labels[200], wf[160];
                snprintf(labels, sizeof labels, "workflow=\"%s\"", metrics_escape(c->workflow, wf, sizeof wf));
                metrics_add("sluice_runs_started_total", labels, 1);
            }
        }
        break;
    case CMD_CANCEL:
        rc = engine_cancel_run(l->o.eng, c->run_id, &err);
        if (rc < 0)
            reply_complete_error(c->r, 503, err ? err : "cannot cancel");
        else
            answer_cmd(l, c->r, rc == 1 ? 200 : 202, c->run_id, "already_finished", rc == 1);
        break;
    case CMD_REDRIVE:
        rc = engine_redrive_run(l->o.eng, c->run_id, c->params, c->latest, &err);
        if (rc < 0)
            reply_complete_error(c->r, status_of(rc), err ? err : "cannot redrive");
        else
            answer_cmd(l, c->r, 202, c->run_id, NULL, 0);
        break;
    case CMD_ADOPT:
        rc = engine_adopt_job(l->o.eng, c->workflow, c->step, c->job_id, c->job_name, c->project, c->region, run_id,
                              sizeof run_id, &err);
        if (rc < 0) {
            log_error("serve: cannot adopt job %s: %s", c->job_name ? c->job_name : c->job_id, err ? err : "?");
        } else if (rc == 0) {
            char labels[200], wf[160];
            snprintf(labels, sizeof labels, "workflow=\"%s\"", metrics_escape(c->workflow, wf, sizeof wf));
            metrics_add("sluice_runs_adopted_total", labels, 1);
        }
        break;
    case CMD_CALL: c->fn(l->o.eng, l->o.st, c->r, c->arg); break;
    case CMD_INSTALL: {
        size_t n = wfset_count(c->set);
        wf_workflow **wfs = xcalloc(n + 1, sizeof *wfs);
        for (size_t i = 0; i < n; i++) wfs[i] = wfset_at(c->set, i);
        engine_set_workflows(l->o.eng, wfs, n);
        free(wfs);
        break;
    }
    case CMD_RECONCILE: {
        int64_t deadline = util_mono_ms() + c->budget_ms;
        int ticks = 0, n = 1;
        while (util_mono_ms() < deadline && !atomic_load(&l->draining)) {
            n = engine_tick(l->o.eng, 10);
            ticks++;
            if (n == 0 && !expecting(l, deadline)) break;
        }
        /* scaled to zero, the notifier's thread gets no CPU between requests: the due events go out here */
        int notified = 0;
        if (l->o.notify != NULL) {
            int64_t left = deadline - util_mono_ms();
            notified = notify_pass(l->o.notify, left > 1000 ? (int)left : 1000);
        }
        json_t *out = json_pack("{s:i,s:b,s:i}", "ticks", ticks, "idle", n == 0, "notified", notified);
        reply_complete(c->r, 200, out);
        json_decref(out);
        break;
    }
    }
    free(err);
    cmd_free(c);
}

/* Answers the held requests whose event an idle tick of generation idle_gen (0: none) has seen (and whose
 * expected job ends are re-checked), whose deadline passed, or all of them. */
static void answer_waiters(engine_loop *l, uint64_t idle_gen, int all)
{
    int64_t now = util_mono_ms();
    waiter *done = NULL;
    pthread_mutex_lock(&l->mu);
    for (waiter **pp = &l->waiters; *pp;) {
        waiter *w = *pp;
        if (all || (idle_gen && w->need_gen <= idle_gen && !expecting(l, w->deadline)) || w->deadline <= now) {
            *pp = w->next;
            w->next = done;
            done = w;
        } else {
            pp = &w->next;
        }
    }
    pthread_mutex_unlock(&l->mu);
    while (done) {
        waiter *w = done;
        done = w->next;
        if (w->run_id != NULL)
            answer_run(l, w->r, w->status, w->run_id, w->extra_key, w->extra_val);
        else
            hs_complete(w->r, 200, NULL, w->body, strlen(w->body));
        free(w->run_id);
        free(w);
    }
}

static void publish_stats(engine_loop *l)
{
    engine_stats s = engine_get_stats(l->o.eng);
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
    metrics_set("sluice_engine_fenced_total", "", (double)s.fenced);
    metrics_set("sluice_engine_claims_lost_total", "", (double)s.claims_lost);
    metrics_set("sluice_engine_run_busy_total", "", (double)s.run_busy);
    metrics_set("sluice_engine_pool_waits_total", "", (double)s.pool_waits);
    metrics_set("sluice_engine_quota_refusals_total", "", (double)s.quota_refusals);
    metrics_set("sluice_engine_pool_wakes_total", "", (double)s.pool_wakes);
}

int engine_loop_step(engine_loop *l, int max_wait_ms)
{
    pthread_mutex_lock(&l->mu);
    cmd *cmds = l->head;
    l->head = l->tail = NULL;
    l->wake = 0;
    uint64_t gen = ++l->tick_gen;
    pthread_mutex_unlock(&l->mu);
    while (cmds) {
        cmd *next = cmds->next;
        run_cmd(l, cmds);
        cmds = next;
    }
    lead(l);
    if (l->o.retain_ms > 0 && util_mono_ms() >= l->next_prune && engine_loop_leader(l)) prune(l);
    if (l->o.every != NULL && util_mono_ms() >= l->next_every) { /* schedules (schedule.c) */
        l->next_every = util_mono_ms() + l->o.every_ms;
        l->o.every(l->o.eng, l->o.st, NULL, l->o.every_ud);
    }
    int n = engine_tick(l->o.eng, max_wait_ms);
    answer_waiters(l, n == 0 ? gen : 0, atomic_load(&l->draining));
    if (l->o.publish_metrics) {
        int64_t now = util_mono_ms();
        if (now - l->last_pub >= 500) {
            publish_stats(l);
            l->last_pub = now;
        }
    }
    return n;
}

static void *loop_main(void *arg)
{
    engine_loop *l = arg;
    util_thread_name("engine");
    atomic_store(&l->alive, 1);
    int busy = 1;
    for (;;) {
        pthread_mutex_lock(&l->mu);
        if (!busy && !l->wake && l->head == NULL && !l->stop) {
            /* idle: until woken, the next due check, the first held answer's deadline, or tick_ms (held answers
             * that an idle tick did not release wait for a re-check, which is due work: see answer_waiters) */
            int64_t wait = l->o.tick_ms;
            for (waiter *w = l->waiters; w; w = w->next) {
                int64_t until = w->deadline - util_mono_ms();
                if (until < wait) wait = until < 1 ? 1 : until;
            }
            if (l->waiters != NULL) { /* the expected re-check may have become moot: look again when it was due */
                int64_t until = engine_expecting_until(l->o.eng) - util_now_ms() + 1;
                if (until > 0 && until < wait) wait = until;
            }
            int64_t due = engine_next_due(l->o.eng);
            if (due != INT64_MAX) {
                int64_t until = due - util_now_ms();
                if (until < wait) wait = until < 1 ? 1 : until;
            }
            int64_t lease_in = l->next_try - util_mono_ms(); /* the lease is asked for, or renewed, on time */
            if (lease_in < wait) wait = lease_in < 1 ? 1 : lease_in;
            struct timespec ts;
            clock_gettime(CLOCK_REALTIME, &ts);
            int64_t ns = ts.tv_nsec + wait * 1000000;
            ts.tv_sec += ns / 1000000000;
            ts.tv_nsec = ns % 1000000000;
            pthread_cond_timedwait(&l->cv, &l->mu, &ts);
        }
        int stop = l->stop && l->head == NULL;
        pthread_mutex_unlock(&l->mu);
        if (stop) break;
        busy = engine_loop_step(l, busy ? 5 : 0) != 0;
    }
    answer_waiters(l, 0, 1);
    if (l->o.publish_metrics) publish_stats(l);
    atomic_store(&l->alive, 0);
    return NULL;
}

engine_loop *engine_loop_new(const engine_loop_options *o)
{
    engine_loop *l = xcalloc(1, sizeof *l);
    l->o = *o;
    if (l->o.tick_ms <= 0) l->o.tick_ms = 250;
    if (l->o.prune_every_ms <= 0) l->o.prune_every_ms = 600000;
    if (l->o.lease_ms <= 0) l->o.lease_ms = 60000;
    char host[64] = "host";
    gethostname(host, sizeof host - 1);
    host[sizeof host - 1] = '\0';
    char rnd[9];
    util_random_id(rnd, 8);
    snprintf(l->holder, sizeof l->holder, "%s:%ld:%s", host, (long)getpid(), rnd);
    l->next_prune = util_mono_ms() + l->o.prune_every_ms / 10; /* not during start-up */
    pthread_mutex_init(&l->mu, NULL);
    pthread_cond_init(&l->cv, NULL);
    return l;
}

/* The listener: events recorded by any process on the store (another replica's ingress) wake this loop at once
 * instead of at its next tick. A broken connection is replaced every 2 s; meanwhile the tick polls. */
static void *listen_main(void *arg)
{
    engine_loop *l = arg;
    store_listener *sl = NULL;
    int64_t retry_at = 0;
    while (!atomic_load(&l->listen_stop)) {
        if (sl == NULL) {
            if (util_mono_ms() < retry_at) {
                struct timespec ts = {.tv_sec = 0, .tv_nsec = 200 * 1000000L};
                nanosleep(&ts, NULL);
                continue;
            }
            char *err = NULL;
            if ((sl = store_listen(l->listen_url, &err)) == NULL && err == NULL) break; /* no notifications here */
            if (sl == NULL) {
                log_warn("serve: cannot listen for inbox notifications (polling instead): %s", err ? err : "?");
                free(err);
                retry_at = util_mono_ms() + 2000;
                continue;
            }
        }
        int r = store_listen_wait(sl, 500);
        if (r == 1) {
            if (l->o.publish_metrics) metrics_add("sluice_engine_notifications_total", "", 1);
            engine_loop_wake(l);
        }
        if (r < 0) {
            store_listen_free(sl);
            sl = NULL;
            retry_at = util_mono_ms() + 2000;
        }
    }
    store_listen_free(sl);
    return NULL;
}

int engine_loop_start(engine_loop *l)
{
    if (l->o.listen_url && (l->listen_url = xstrdup(l->o.listen_url)) != NULL &&
        pthread_create(&l->listen_thread, NULL, listen_main, l) == 0)
        l->listening = 1;
    /* alive from here, so /readyz is never 503 in the instant between start-up and the thread's first line */
    atomic_store(&l->alive, 1);
    if (pthread_create(&l->thread, NULL, loop_main, l) != 0) {
        atomic_store(&l->alive, 0);
        return -1;
    }
    l->started = 1;
    return 0;
}

void engine_loop_free(engine_loop *l)
{
    if (l == NULL) return;
    if (l->listening) {
        atomic_store(&l->listen_stop, 1);
        pthread_join(l->listen_thread, NULL);
    }
    free(l->listen_url);
    if (l->started) {
        pthread_mutex_lock(&l->mu);
        l->stop = 1;
        pthread_cond_signal(&l->cv);
        pthread_mutex_unlock(&l->mu);
        pthread_join(l->thread, NULL);
    }
    /* commands queued after the thread stopped (or with no thread) are refused */
    while (l->head) {
        cmd *c = l->head;
        l->head = c->next;
        if (c->r) reply_complete_error(c->r, 503, "shutting down");
        cmd_free(c);
    }
    answer_waiters(l, 0, 1);
    if (atomic_load(&l->leader)) { /* a clean stop hands the lease on at once */
        char *err = NULL;
        if (store_lease_release(l->o.st, LEADER_LEASE, l->holder, &err) != STORE_OK) free(err);
    }
    pthread_mutex_destroy(&l->mu);
    pthread_cond_destroy(&l->cv);
    free(l);
}
