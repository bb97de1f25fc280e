/* engine: the run state machine over the store, with exactly-once launches: the tick, its transactions and its
 * outbox (API calls sent only after the commit that recorded them), inbox events and soft deadlines, and the
 * engine's lifecycle. The pieces of a tick live beside it and share engine_internal.h: the transitions of a run
 * (engine_settle.c), starting due pending steps (engine_start.c), checks of in-flight steps and the API's answers
 * (engine_answers.c), the context a step's Lua receives (engine_context.c); run commands and the version registry
 * are in engine_runs.c.
 * Uses: engine_internal, store, job_state, jobs_api, run_events, util, log. Must not: do HTTP itself or call Lua
 * directly.
 *
 * How a tick works (engine_tick):
 *   1. poll the API: answers land in e->done (callbacks only queue);
 *   2. BEGIN; apply answers; consume inbox events; take due steps (in-flight ones get a check leased; pending
 *      ones are set aside); COMMIT; send the checks;
 *   3. no transaction open: the pending steps' Lua runs (hooks; parameter functions build launch requests);
 *   4. BEGIN; record those outcomes (launch intents first of all); COMMIT;
 *   5. only then sync the log and send the launches the transaction recorded (e->outbox).
 * A crash anywhere leaves either no intent (nothing was sent) or an intent that the next process resolves by
 * looking the job name up. */
#include "engine.h"

#include <stdio.h>
#include <time.h>
#include <stdlib.h>
#include <string.h>

#include "job_state.h"
#include "log.h"
#include "mem.h"
#include "util.h"

#include "engine_internal.h"

/* ---- small helpers ---- */

int64_t eng_now_ms(engine *e) { return e->o.now_ms ? e->o.now_ms(e->o.clock_ud) : util_now_ms(); }

int64_t eng_mono_ms(engine *e) { return e->o.now_ms ? e->o.now_ms(e->o.clock_ud) : util_mono_ms(); }

int eng_lock_run(engine *e, const char *run_id, int wait)
{
    if (!store_shared(e->o.st)) return 1; /* one engine per store: its transactions exclude every other writer */
    int got = 0;
    char *err = NULL;
    int rc = store_run_lock(e->o.st, run_id, wait, &got, &err);
    if (rc != STORE_OK) {
        if (rc != STORE_NOTFOUND) log_warn("run %s: cannot lock it: %s", run_id, err ? err : "?");
        free(err);
        return -1;
    }
    if (!got) e->stats.run_busy++;
    return got;
}

/* How long after its claim a launch may still leave (send_by) and still be in flight (gone_by), in eng_mono_ms.
 * A step claimed for lease_ms may be taken over by another engine after that, on that engine's clock, which
 * looks the job name up and launches it if no job carries it: by then nothing of this engine's launch may still
 * be on its way to Dataflow. Half the lease to leave, three quarters to be answered or abandoned: the last
 * quarter leaves room for the clocks to disagree. */
static int64_t launch_send_by(const engine *e, const eng_op *op) { return op->claimed_mono + e->o.rec.lease_ms / 2; }
static int64_t launch_gone_by(const engine *e, const eng_op *op)
{
    return op->claimed_mono + e->o.rec.lease_ms * 3 / 4;
}


static unsigned busy_hash(const char *run, const char *step)
{
    unsigned h = 2166136261u;
    for (const char *p = run; *p; p++) h = (h ^ (unsigned char)*p) * 16777619u;
    h = (h ^ 0x1f) * 16777619u;
    for (const char *p = step; *p; p++) h = (h ^ (unsigned char)*p) * 16777619u;
    return h % BUSY_BUCKETS;
}

static char *busy_key(const char *run, const char *step) { return util_printf("%s\x1f%s", run, step); }

static int busy_has(engine *e, const char *run, const char *step)
{
    char *k = busy_key(run, step);
    int found = 0;
    for (busy_node *n = e->busy[busy_hash(run, step)]; n && !found; n = n->next) found = strcmp(n->key, k) == 0;
    free(k);
    return found;
}

void eng_busy_set(engine *e, const char *run, const char *step, int on)
{
    unsigned h = busy_hash(run, step);
    char *k = busy_key(run, step);
    busy_node **pp = &e->busy[h];
    while (*pp && strcmp((*pp)->key, k) != 0) pp = &(*pp)->next;
    if (on && *pp == NULL) {
        busy_node *n = xmalloc(sizeof *n);
        n->key = k;
        n->next = e->busy[h];
        e->busy[h] = n;
        return;
    }
    if (!on && *pp != NULL) {
        busy_node *n = *pp;
        *pp = n->next;
        free(n->key);
        free(n);
    }
    free(k);
}

static void op_free(eng_op *op)
{
    free(op->run_id);
    free(op->step);
    free(op->project);
    free(op->region);
    free(op->job_id);
    free(op->job_name);
    launch_free(op->launch);
    ja_result_clear(&op->res);
    free(op->note);
    free(op);
}

eng_op *eng_op_new(engine *e, op_kind kind, const store_step *st)
{
    eng_op *op = xcalloc(1, sizeof *op);
    op->e = e;
    op->kind = kind;
    op->run_id = xstrdup(st->run_id);
    op->step = xstrdup(st->name);
    op->project = xstrdup(st->project);
    op->region = xstrdup(st->region);
    op->job_id = xstrdup(st->job_id);
    op->job_name = xstrdup(st->job_name);
    op->attempt = st->attempt;
    return op;
}

/* Queues an API call to send after the commit; the step is busy until its answer is applied. */
void eng_outbox_push(engine *e, eng_op *op)
{
    eng_busy_set(e, op->run_id, op->step, 1);
    if (e->outbox_tail)
        e->outbox_tail->next = op;
    else
        e->outbox = op;
    e->outbox_tail = op;
}

/* ---- lifecycle ---- */

engine *engine_new(const engine_options *opts, char **err)
{
    if (opts == NULL || opts->st == NULL || opts->api == NULL) {
        if (err) *err = xstrdup("engine: a store and an API are required");
        return NULL;
    }
    engine *e = xcalloc(1, sizeof *e);
    e->o = *opts;
    if (e->o.rec.poll_ms <= 0) e->o.rec = rec_policy_default();
    if (e->o.max_due <= 0) e->o.max_due = 500;
    if (e->o.max_inflight <= 0) e->o.max_inflight = 256;
    e->next_due = 0;
    eng_notes_install(e); /* a call that keeps failing is shown on its step (engine_notes.c) */
    return e;
}

static void free_ops(eng_op *op)
{
    while (op) {
        eng_op *n = op->next;
        op_free(op);
        op = n;
    }
}

void engine_free(engine *e)
{
    if (e == NULL) return;
    /* Calls the API still holds are the API's until their callback runs (from its poll or its free, whichever
     * comes first): orphaned here, api_cb frees them without touching the engine. So the engine and the API
     * may be freed in either order. */
    while (e->sent) {
        eng_op *op = e->sent;
        e->sent = op->sent_next;
        op->sent_prev = op->sent_next = NULL;
        op->e = NULL;
    }
    free_ops(e->outbox);
    free_ops(e->done);
    for (size_t i = 0; i < e->n_wfs; i++) {
        free(e->wfs[i].version);
        wf_free(e->wfs[i].wf);
    }
    free(e->wfs);
    for (size_t c = 0; c < e->n_current; c++) {
        free(e->current_names[c]);
        free(e->current_versions[c]);
    }
    free(e->current_names);
    free(e->current_versions);
    for (int b = 0; b < BUSY_BUCKETS; b++) {
        busy_node *n = e->busy[b];
        while (n) {
            busy_node *x = n->next;
            free(n->key);
            free(n);
            n = x;
        }
    }
    free(e);
}

engine_stats engine_get_stats(const engine *e) { return e->stats; }

/* ---- inbox: events are hints that make a step due now ---- */

static void consume_inbox(engine *e)
{
    store_event_list evs = {0};
    char *err = NULL;
    /* A bounded batch keeps the tick's write lock short: ingress commits wait for it. */
    if (store_inbox_fetch(e->o.st, 256, &evs, &err) != STORE_OK) {
        free(err);
        return;
    }
    for (size_t i = 0; i < evs.count; i++) {
        store_event *ev = &evs.items[i];
        store_step st = {0};
        int rc = STORE_NOTFOUND;
        if (ev->job_id) rc = store_step_find_by_job_id(e->o.st, ev->job_id, &st, NULL);
        if (rc != STORE_OK && ev->job_name) rc = store_step_find_by_job_name(e->o.st, ev->job_name, &st, NULL);
        if (rc == STORE_OK && (st.state == STORE_STEP_RUNNING || st.state == STORE_STEP_LAUNCHING ||
                               st.state == STORE_STEP_CANCELLING)) {
            /* Confirm with the API at once (the event alone is never trusted); if the API still shows the job
             * running (it lags behind the logs), the hint keeps the step on the short schedule. */
            if (js_name_is(ev->state, JS_RUNNING)) {
                eng_running_from_event(e, &st, ev); /* not an end: only the attempt's running time */
            } else {
                eng_w(e, store_step_set_hint(e->o.st, st.run_id, st.name, st.attempt, eng_now_ms(e), 0, NULL));
                e->ready_hint++;
            }
        }
        store_step_free(&st);
        eng_w(e, store_inbox_mark_processed(e->o.st, ev->id, 0, NULL));
        e->stats.events++;
    }
    store_event_list_free(&evs);
}

/* ---- deadlines: a run's or a step's soft deadline passed ---- */

static void check_deadlines(engine *e)
{
    store_deadline_list l = {0};
    int64_t now = eng_now_ms(e);
    if (store_deadline_due(e->o.st, now, 100, &l, NULL) != STORE_OK) return;
    for (size_t i = 0; i < l.count; i++) {
        const store_deadline *d = &l.items[i];
        store_run run = {0};
        const wf_workflow *wf = NULL;
        int going = 0;
        if (store_run_get(e->o.st, d->run_id, &run, NULL) == STORE_OK) {
            wf = eng_wf_by_version(e, run.script_hash, NULL);
            if (d->scope[0] == '\0') {
                going = run.state == STORE_RUN_RUNNING || run.state == STORE_RUN_PENDING;
            } else {
                store_step st = {0};
                going = run.state == STORE_RUN_RUNNING && store_step_get(e->o.st, d->run_id, d->scope, &st, NULL) == STORE_OK &&
                        (st.state == STORE_STEP_LAUNCHING || st.state == STORE_STEP_RUNNING ||
                         st.state == STORE_STEP_PENDING || st.state == STORE_STEP_CANCELLING);
                store_step_free(&st);
            }
        }
        if (store_deadline_settle(e->o.st, d->run_id, d->scope, going, NULL) == STORE_OK && going) {
            char *err = NULL;
            e->stats.deadlines_missed++;
            log_warn("run %s of %s: %s%s missed its deadline", d->run_id, run.workflow ? run.workflow : "?",
                     d->scope[0] ? "step " : "the run", d->scope);
            if (rev_emit(e->o.st, wf, &e->o.notify, d->run_id, WF_EV_DEADLINE_MISSED, now, 0, d->scope, d->due_at,
                         &err) != STORE_OK)
                log_error("run %s: cannot record its deadline_missed event: %s", d->run_id, err ? err : "?");
            free(err);
        }
        store_run_free(&run);
    }
    store_deadline_list_free(&l);
}

/* ---- the loop ---- */

static void sent_unlink(engine *e, eng_op *op)
{
    if (op->sent_prev)
        op->sent_prev->sent_next = op->sent_next;
    else
        e->sent = op->sent_next;
    if (op->sent_next) op->sent_next->sent_prev = op->sent_prev;
    op->sent_prev = op->sent_next = NULL;
}

static void api_cb(void *ud, const ja_result *r)
{
    eng_op *op = ud;
    engine *e = op->e;
    if (e == NULL) { /* the engine was freed while the API held this call */
        op_free(op);
        return;
    }
    sent_unlink(e, op);
    op->res.outcome = r->outcome;
    op->res.http_status = r->http_status;
    op->res.message = xstrdup(r->message);
    op->res.job = r->job ? json_incref(r->job) : NULL;
    op->res.already_terminated = r->already_terminated;
    op->res.retry_delay_ms = r->retry_delay_ms;
    op->next = e->done;
    e->done = op;
    e->inflight--;
}

static void send_outbox(engine *e)
{
    eng_op *op = e->outbox;
    e->outbox = e->outbox_tail = NULL;
    while (op) {
        eng_op *next = op->next;
        op->next = NULL;
        int rc = -1;
        e->inflight++;
        op->sent_next = e->sent;
        if (e->sent) e->sent->sent_prev = op;
        e->sent = op;
        if (op->kind == OP_LAUNCH && e->o.before_launch) e->o.before_launch(e->o.before_launch_ud, op->launch->job_name);
        if (op->kind == OP_LAUNCH && eng_mono_ms(e) > launch_send_by(e, op)) {
            /* The claim ran out before the request could leave (the process was paused or starved): another
             * engine may have taken the step over by now, so this one must not send it. Whoever has the step
             * looks the name up and launches it if nobody did. */
            log_warn("run %s: step %s: the claim on the launch of %s ran out before it was sent; not sending it",
                     op->run_id, op->step, op->launch->job_name);
            e->stats.fenced++;
            e->inflight--;
            sent_unlink(e, op);
            eng_busy_set(e, op->run_id, op->step, 0);
            op_free(op);
            op = next;
            continue;
        }
        switch (op->kind) {
        case OP_LAUNCH:
            e->stats.launches_sent++;
            /* On a shared store the call must be over (answered, or abandoned with its outcome unknown, which a
             * look-up settles) before another engine may take the step over. */
            if (store_shared(e->o.st)) {
                int64_t left = launch_gone_by(e, op) - eng_mono_ms(e);
                op->launch->budget_ms = left > 1 ? left : 1;
            }
            log_debug("run %s: step %s: sending launch of %s", op->run_id, op->step, op->launch->job_name);
            rc = e->o.api->ops->launch(e->o.api, op->launch, api_cb, op);
            break;
        case OP_GET:
            e->stats.checks++;
            rc = e->o.api->ops->get(e->o.api, op->project, op->region, op->job_id, api_cb, op);
            break;
        case OP_FIND:
            e->stats.checks++;
            rc = e->o.api->ops->find(e->o.api, op->project, op->region, op->job_name, api_cb, op);
            break;
        case OP_STOP:
            rc = e->o.api->ops->stop(e->o.api, op->project, op->region, op->job_id, op->drain, api_cb, op);
            break;
        case OP_MESSAGES:
            rc = e->o.api->ops->messages(e->o.api, op->project, op->region, op->job_id, api_cb, op);
            break;
        }
        if (rc != 0) { /* could not even be queued: the step stays due after its lease */
            e->inflight--;
            sent_unlink(e, op);
            eng_busy_set(e, op->run_id, op->step, 0);
            op_free(op);
        }
        op = next;
    }
}

/* Sleeps up to ms, or less if a signal arrives (the caller's loop then sees its flag). */
static void idle_sleep(int ms)
{
    if (ms <= 0) return;
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

int64_t engine_next_due(const engine *e) { return e->next_due; }

int64_t engine_expecting_until(const engine *e) { return e->expect_until; }

/* The first tick of a process: a launch intent (or a check of a job that should be ending) leased by the
 * process before this one will never be answered, so it is due now rather than when its lease runs out (a
 * minute or more: a restart must not delay a resumed run). One engine per store, so no lease is live. */
static void void_old_leases(engine *e)
{
    store_step_list l = {0};
    int64_t now = eng_now_ms(e);
    if (store_step_due(e->o.st, INT64_MAX, 10000, &l, NULL) != STORE_OK) return;
    for (size_t i = 0; i < l.count; i++) {
        const store_step *st = &l.items[i];
        if (st->next_check_at <= now) continue;
        if (st->state == STORE_STEP_LAUNCHING || (st->hint_at > 0 && st->state != STORE_STEP_PENDING)) {
            eng_w(e, store_step_set_check(e->o.st, st->run_id, st->name, st->attempt, now, st->check_failures, NULL, NULL));
            e->ready_hint++;
        }
    }
    store_step_list_free(&l);
}

/* Drops what the outbox holds (nothing of it may be sent). */
static void drop_outbox(engine *e)
{
    for (eng_op *op = e->outbox; op; op = op->next) eng_busy_set(e, op->run_id, op->step, 0);
    free_ops(e->outbox);
    e->outbox = e->outbox_tail = NULL;
}

int eng_w(engine *e, int rc)
{
    if (rc != STORE_OK && rc != STORE_NOTFOUND && rc != STORE_EXISTS && rc != STORE_DUPLICATE && rc != STORE_CONFLICT &&
        store_in_transaction(e->o.st)) {
        if (!e->tx_failed) log_warn("engine: a store write failed (%s): the transaction is rolled back and redone",
                                    store_strerror(rc));
        e->tx_failed = 1;
    }
    return rc;
}

int eng_begin(engine *e, char **err)
{
    e->tx_failed = 0;
    return store_begin(e->o.st, err);
}

int eng_commit(engine *e, char **err)
{
    if (e->tx_failed) {
        e->tx_failed = 0;
        store_rollback(e->o.st, NULL);
        if (err) {
            free(*err);
            *err = xstrdup("a store write of the transaction failed (logged above); rolled back");
        }
        return STORE_IO;
    }
    int rc = store_commit(e->o.st, err);
    if (rc != STORE_OK && store_in_transaction(e->o.st)) store_rollback(e->o.st, NULL);
    return rc;
}

/* Commits the tick's open transaction; on failure rolls back and drops the unsent outbox. Returns 0 or -1. */
static int commit_or_drop(engine *e)
{
    char *err = NULL;
    if (eng_commit(e, &err) == STORE_OK) return 0;
    log_error("engine: commit failed, the tick will be redone: %s", err ? err : "?");
    free(err);
    e->stats.commit_failures++;
    drop_outbox(e);
    return -1;
}

static int begin(engine *e)
{
    char *err = NULL;
    if (eng_begin(e, &err) == STORE_OK) return 0;
    log_error("engine: cannot begin a transaction: %s", err ? err : "?");
    free(err);
    e->stats.commit_failures++;
    return -1;
}

int engine_tick(engine *e, int max_wait_ms)
{
    int wait = (e->ready_hint > 0 || e->done != NULL) ? 0 : max_wait_ms;
    if (wait > 0 && e->next_due != INT64_MAX) {
        int64_t until = e->next_due - eng_now_ms(e);
        if (until < wait) wait = until < 0 ? 0 : (int)until;
    }
    e->ready_hint = 0;
    /* With nothing outstanding there is nothing to wait for but the clock: sleep instead of polling. */
    if (e->inflight > 0)
        e->o.api->ops->poll(e->o.api, wait);
    else
        idle_sleep(wait);
    char *err = NULL;
    if (begin(e) != 0) return -1;
    if (!e->recovered) {
        /* On a shared store other engines' leases are live: they run out instead. */
        if (!store_shared(e->o.st)) void_old_leases(e);
        e->recovered = 1;
    }
    eng_notes_flush(e); /* why calls still being retried failed, onto their steps (engine_notes.c) */
    /* answers first: they may finish steps and create new pending ones */
    eng_op *done = e->done, *later = NULL, **later_tail = &later, **pp = &done;
    e->done = NULL;
    while (*pp) {
        eng_op *op = *pp;
        if (eng_apply_answer(e, op)) { /* the run is another engine's for now: next tick */
            *pp = op->next;
            op->next = NULL;
            *later_tail = op;
            later_tail = &op->next;
            e->ready_hint++;
        } else {
            pp = &op->next;
        }
    }
    *later_tail = e->done;
    e->done = later;
    consume_inbox(e);
    check_deadlines(e);
    eng_runs_promote_all(e);
    eng_prepared *starts = NULL, **tail = &starts;
    int room = e->o.max_inflight - e->inflight;
    if (room > 0) {
        store_step_list due = {0};
        int limit = room < e->o.max_due ? room : e->o.max_due;
        if (store_step_due(e->o.st, eng_now_ms(e), limit, &due, &err) == STORE_OK) {
            for (size_t i = 0; i < due.count; i++) {
                store_step *st = &due.items[i];
                if (busy_has(e, st->run_id, st->name)) continue;
                if (st->state != STORE_STEP_PENDING) {
                    eng_check_step(e, st);
                    continue;
                }
                /* Leased while its Lua runs outside a transaction, so no other engine starts it meanwhile (one
                 * engine per store needs none: the step is started before its next tick). */
                if (store_shared(e->o.st))
                    eng_w(e, store_step_set_check(e->o.st, st->run_id, st->name, st->attempt, eng_now_ms(e) + e->o.rec.lease_ms,
                                         st->check_failures, NULL, NULL));
                eng_prepared *p = eng_prepared_new(st);
                *tail = p;
                tail = &p->next;
            }
            if (due.count == (size_t)limit) e->ready_hint++;
        } else {
            log_error("engine: due query failed: %s", err ? err : "?");
        }
        store_step_list_free(&due);
        free(err);
        err = NULL;
    }
    int rc = commit_or_drop(e);
    free_ops(done); /* applied and committed, or lost with the rollback: their steps fall due again */
    if (rc == 0 && starts != NULL) {
        /* the checks leased above are committed: they may leave now */
        send_outbox(e);
        for (eng_prepared *p = starts; p; p = p->next) eng_prepare_step(e, p);
        /* before the intents' claims are written (their clock reads come later): the fence errs early */
        int64_t claimed = eng_mono_ms(e);
        for (eng_prepared *p = starts; p; p = p->next) p->claimed_mono = claimed;
        if ((rc = begin(e)) == 0) {
            for (eng_prepared *p = starts; p; p = p->next) eng_start_prepared(e, p);
            rc = commit_or_drop(e);
        }
    }
    eng_prepared_free(starts);
    if (rc != 0) return -1;
    /* A launch may leave only once its intent survives power loss, not just a crash: commits run with
     * synchronous=NORMAL (cheap), and a tick that recorded intents pays for one sync of the log here. */
    int launches = 0;
    for (eng_op *op = e->outbox; op && !launches; op = op->next) launches = op->kind == OP_LAUNCH;
    if (launches && store_flush(e->o.st, &err) != STORE_OK) {
        log_error("engine: cannot make launch intents durable, not sending: %s", err ? err : "?");
        free(err);
        drop_outbox(e);
        rc = -1;
    } else {
        send_outbox(e);
    }
    /* after the sends: the launches need not wait for it */
    if (store_step_next_due(e->o.st, &e->next_due, NULL) != STORE_OK) e->next_due = 0;
    int64_t deadline_due = INT64_MAX;
    if (store_deadline_next_due(e->o.st, &deadline_due, NULL) == STORE_OK && deadline_due < e->next_due)
        e->next_due = deadline_due;
    return rc != 0 ? -1 : e->inflight + e->ready_hint;
}
