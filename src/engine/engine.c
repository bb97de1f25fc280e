/* engine: the run state machine over the store, with exactly-once launches: the tick, step transitions (through
 * decide's rules), API answers and checks. Run commands and the version registry are in engine_runs.c. The file
 * stays one (about 1,300 lines) because a tick's transaction, its answers and its outbox form one protocol.
 * Uses: engine_internal, decide, reconciler, store, workflow, wf_context, wf_notify, jobs_api, util, log. Must not: do HTTP
 * itself or call Lua directly.
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

#include "decide.h"
#include "job_state.h"
#include "log.h"
#include "mem.h"
#include "util.h"
#include "wf_context.h"
#include "wf_notify.h"

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

static char *busy_key(const char *run, const char *step)
{
    char *k = NULL;
    if (asprintf(&k, "%s\x1f%s", run, step) < 0) return NULL;
    return k;
}

static int busy_has(engine *e, const char *run, const char *step)
{
    char *k = busy_key(run, step);
    int found = 0;
    for (busy_node *n = e->busy[busy_hash(run, step)]; n && !found; n = n->next) found = strcmp(n->key, k) == 0;
    free(k);
    return found;
}

static void busy_set(engine *e, const char *run, const char *step, int on)
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

static eng_op *op_new(engine *e, op_kind kind, const store_step *st)
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
static void outbox_push(engine *e, eng_op *op)
{
    busy_set(e, op->run_id, op->step, 1);
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

/* ---- context and results ---- */

static int is_handler(const wf_workflow *wf, const char *step);

static json_t *parse_or_null(const char *text)
{
    if (text == NULL) return NULL;
    return json_loads(text, JSON_DECODE_ANY, NULL);
}

/* The context `ws` receives (wf_step_context) from the run's stored steps: every step that ended succeeded, failed
 * or cancelled is a finished step (a skipped one never ran, or waits to be reached again after a redrive). */
static json_t *build_ctx(engine *e, const wf_workflow *wf, const wf_step *ws, const store_run *run,
                         const store_step_list *steps, int attempt)
{
    wf_ctx_step *done = xcalloc(steps->count + 1, sizeof *done);
    json_t **res = xcalloc(steps->count + 1, sizeof *res);
    json_t *params = parse_or_null(run->params_json), *ctx = NULL;
    size_t n = 0;
    if (done == NULL || res == NULL) goto out;
    for (size_t i = 0; i < steps->count; i++) {
        const store_step *s = &steps->items[i];
        if (s->state != STORE_STEP_SUCCEEDED && s->state != STORE_STEP_FAILED && s->state != STORE_STEP_CANCELLED)
            continue;
        json_t *r = res[n] = parse_or_null(s->result_json);
        done[n++] = (wf_ctx_step){
            .name = s->name,
            .state = s->state == STORE_STEP_SUCCEEDED ? WF_CTX_SUCCEEDED
                     : s->state == STORE_STEP_FAILED  ? WF_CTX_FAILED
                                                      : WF_CTX_CANCELLED,
            .attempt = s->attempt,
            .job_id = s->job_id,
            .job_name = s->job_name,
            .job_state = s->job_state,
            .labels = json_object_get(r, "labels"),
            .output = json_object_get(r, "output"),
            .error = s->error,
            .cause = s->failure_cause,
        };
    }
    /* for the failure handler: the failed step that finished last */
    const store_step *failed = NULL;
    for (size_t i = 0; i < steps->count; i++) {
        const store_step *s = &steps->items[i];
        if (s->state == STORE_STEP_FAILED && !is_handler(wf, s->name) &&
            (failed == NULL || s->finished_at >= failed->finished_at))
            failed = s;
    }
    wf_ctx_run cr = {.id = run->id, .params = params, .started_ms = run->created_at,
                     .default_project = e->o.default_project, .failed_step = failed ? failed->name : NULL,
                     .failure_error = run->error};
    ctx = wf_step_context(wf, ws, &cr, attempt, done, n);
    eng_ctx_times(e, run->id, json_object_get(ctx, "run")); /* logical_time, interval (engine_queue.c) */
out:
    for (size_t i = 0; res != NULL && i < n; i++) json_decref(res[i]);
    free(res);
    free(done);
    json_decref(params);
    return ctx;
}

/* ---- transitions ---- */


void eng_run_view_free(run_view *v)
{
    store_run_free(&v->run);
    store_step_list_free(&v->steps);
}

int eng_run_view_load(engine *e, const char *run_id, run_view *v, char **err)
{
    memset(v, 0, sizeof *v);
    if (store_run_get(e->o.st, run_id, &v->run, err) != STORE_OK) return -1;
    if (store_step_list_run(e->o.st, run_id, &v->steps, err) != STORE_OK) {
        eng_run_view_free(v);
        return -1;
    }
    v->wf = eng_wf_by_version(e, v->run.script_hash, err);
    if (v->wf == NULL) {
        eng_run_view_free(v);
        return -1;
    }
    return 0;
}

/* run_view_load for callers that can only log a failure (the step stays due and is retried later). */
static int run_view_load_logged(engine *e, const char *run_id, run_view *v)
{
    char *err = NULL;
    if (eng_run_view_load(e, run_id, v, &err) == 0) return 0;
    log_error("run %s: %s", run_id, err ? err : "cannot load");
    free(err);
    return -1;
}

static int step_active(store_step_state s)
{
    return s == STORE_STEP_PENDING || s == STORE_STEP_LAUNCHING || s == STORE_STEP_RUNNING || s == STORE_STEP_CANCELLING;
}

/* ---- run events, the failure handler ---- */

void eng_emit(engine *e, const wf_workflow *wf, const char *run_id, wf_run_event ev, int64_t hold_ms)
{
    char *err = NULL;
    if (rev_emit(e->o.st, wf, &e->o.notify, run_id, ev, eng_now_ms(e), hold_ms, NULL, 0, &err) != STORE_OK)
        log_error("run %s: cannot record its %s event: %s", run_id, wf_run_event_name(ev), err ? err : "?");
    free(err);
}

/* Whether `step` is its workflow's failure handler: it runs while its run is failed. */
static int is_handler(const wf_workflow *wf, const char *step)
{
    return wf != NULL && wf->failure_handler != NULL && step != NULL && strcmp(wf->failure_handler, step) == 0;
}

/* Whether `step` of a run in `state` may still start and follow its job: the run is running, or the run failed and
 * the step is the failure handler. */
static int run_goes_on_for(store_run_state state, const wf_workflow *wf, const char *step)
{
    return state == STORE_RUN_RUNNING || (state == STORE_RUN_FAILED && is_handler(wf, step));
}

static void activate(engine *e, const char *run_id, const wf_step *ws);

/* A failed run's failure handler starts once (again after a redrive that failed again: the redrive left it
 * skipped) when the run's other jobs were stopped (on_run_failure = "cancel": nothing else is active) or at once
 * (they are left). Returns 1 when it started it. */
static int start_handler(engine *e, const run_view *v, int active)
{
    if (v->run.state != STORE_RUN_FAILED || v->wf->failure_handler == NULL) return 0;
    int idx = wf_step_index(v->wf, v->wf->failure_handler);
    if (idx < 0) return 0;
    for (size_t i = 0; i < v->steps.count; i++) {
        const store_step *s = &v->steps.items[i];
        if (strcmp(s->name, v->wf->failure_handler) != 0) continue;
        if (s->state != STORE_STEP_SKIPPED) return 0; /* it ran (or runs) for this failure */
        if (active > 0 && v->wf->cancel_on_failure) return 0;
    }
    if (active > 0 && v->wf->cancel_on_failure) return 0;
    activate(e, v->run.id, &v->wf->steps[idx]);
    e->stats.handlers_started++;
    log_warn("run %s of %s failed: starting its failure handler %s", v->run.id, v->run.workflow, v->wf->failure_handler);
    return 1;
}

static int step_attempt(engine *e, const char *run_id, const char *name)
{
    store_step st = {0};
    int attempt = store_step_get(e->o.st, run_id, name, &st, NULL) == STORE_OK ? st.attempt : 1;
    store_step_free(&st);
    return attempt;
}

/* Inserts a pending (or, for a join, waiting) step; an existing row is left alone (a join reached twice). */
static void activate(engine *e, const char *run_id, const wf_step *ws)
{
    store_step st = {.run_id = (char *)run_id, .name = ws->name, .attempt = 1,
                     .state = ws->n_preds > 1 ? STORE_STEP_WAITING : STORE_STEP_PENDING};
    char *err = NULL;
    int rc = store_step_insert(e->o.st, &st, &err);
    if (rc == STORE_EXISTS) {
        /* Reached before. A redrive leaves a step skipped that only an earlier failure had reached: reached
         * again, it starts (with a new attempt: its job name is taken). Any other row is left alone. */
        rc = store_step_set_state(e->o.st, run_id, ws->name, STORE_STEP_SKIPPED, STORE_ATTEMPT_ANY, st.state, NULL);
        if (rc != STORE_OK) rc = STORE_EXISTS;
        else store_step_set_check(e->o.st, run_id, ws->name, step_attempt(e, run_id, ws->name), 0, 0, NULL, NULL);
    }
    if (rc != STORE_OK && rc != STORE_EXISTS) log_error("run %s: cannot add step %s: %s", run_id, ws->name, err);
    if (rc == STORE_OK) e->ready_hint++;
    free(err);
}

static dec_step_state dec_state_of(store_step_state st)
{
    if (step_active(st)) return DEC_ST_ACTIVE;
    if (st == STORE_STEP_WAITING) return DEC_ST_WAITING;
    return st == STORE_STEP_SUCCEEDED ? DEC_ST_SUCCEEDED : DEC_ST_ENDED;
}

/* The run's steps in the shape decide's join rule reads: states[i] for wf->steps[i]. Caller frees. */
static dec_step_state *view_states(const run_view *v)
{
    dec_step_state *states = xcalloc(v->wf->n_steps ? v->wf->n_steps : 1, sizeof *states);
    for (size_t i = 0; i < v->steps.count; i++) {
        int idx = wf_step_index(v->wf, v->steps.items[i].name);
        if (idx >= 0) states[idx] = dec_state_of(v->steps.items[i].state);
    }
    return states;
}


/* Re-reads the run after a change: releases ready joins, and finishes the run when nothing is active. */
void eng_settle_run(engine *e, const char *run_id)
{
    run_view v;
    char *err = NULL;
    if (run_view_load_logged(e, run_id, &v) != 0) return;
    int active = 0, released = 0;
    const char *blocked_join = NULL, *blocker = NULL;
    dec_step_state *states = view_states(&v);
    for (size_t i = 0; i < v.steps.count; i++) {
        store_step *s = &v.steps.items[i];
        if (step_active(s->state)) active++;
    }
    for (size_t i = 0; i < v.steps.count; i++) {
        store_step *s = &v.steps.items[i];
        if (s->state != STORE_STEP_WAITING) continue;
        int idx = wf_step_index(v.wf, s->name);
        if (idx < 0) continue;
        const char *b = NULL;
        dec_join js = v.run.state == STORE_RUN_RUNNING ? dec_join_check(v.wf, &v.wf->steps[idx], states, &b)
                                                       : DEC_JOIN_BLOCKED;
        if (js == DEC_JOIN_READY) {
            if (store_step_set_state(e->o.st, run_id, s->name, STORE_STEP_WAITING, STORE_ATTEMPT_ANY,
                                     STORE_STEP_PENDING, &err) == STORE_OK) {
                released++;
                e->ready_hint++;
            }
            free(err);
            err = NULL;
        } else if (js == DEC_JOIN_BLOCKED && blocked_join == NULL) {
            blocked_join = s->name;
            blocker = b;
        }
    }
    free(states);
    int handler_active = 0;
    for (size_t i = 0; i < v.steps.count; i++)
        if (step_active(v.steps.items[i].state) && is_handler(v.wf, v.steps.items[i].name)) handler_active = 1;
    if (start_handler(e, &v, active - handler_active) || active > 0 || released > 0) {
        eng_run_view_free(&v);
        return;
    }
    /* Nothing is in flight: the run ends. Joins that can never start are skipped. */
    for (size_t i = 0; i < v.steps.count; i++)
        if (v.steps.items[i].state == STORE_STEP_WAITING)
            store_step_finish(e->o.st, run_id, v.steps.items[i].name, STORE_ATTEMPT_ANY, STORE_STEP_SKIPPED, NULL, NULL,
                              "never started", NULL);
    if (v.run.state == STORE_RUN_RUNNING) {
        char *msg = NULL;
        if (blocked_join != NULL &&
            asprintf(&msg, "join step %s can never start: predecessor %s did not succeed", blocked_join,
                     blocker ? blocker : "?") < 0)
            msg = NULL;
        store_run_state next = blocked_join ? STORE_RUN_FAILED : STORE_RUN_SUCCEEDED;
        if (store_run_set_state(e->o.st, run_id, STORE_RUN_RUNNING, next, msg, &err) == STORE_OK) {
            const store_step *recovered = NULL;
            for (size_t i = 0; i < v.steps.count && recovered == NULL; i++)
                if (v.steps.items[i].state == STORE_STEP_FAILED) recovered = &v.steps.items[i];
            if (next == STORE_RUN_SUCCEEDED)
                e->stats.runs_succeeded++;
            else
                e->stats.runs_failed++;
            eng_emit(e, v.wf, run_id, next == STORE_RUN_FAILED ? WF_EV_FAILED
                                       : recovered != NULL      ? WF_EV_RECOVERED
                                                                : WF_EV_SUCCEEDED, 0);
            if (next == STORE_RUN_FAILED) {
                v.run.state = STORE_RUN_FAILED;
                start_handler(e, &v, 0);
            }
            if (next == STORE_RUN_SUCCEEDED && recovered != NULL) {
                /* on_failure handled a failure: the run succeeded, and says which step failed and why */
                e->stats.runs_recovered++;
                log_warn("run %s of %s succeeded after recovering from the failure of step %s: %s", run_id,
                         v.run.workflow, recovered->name, recovered->error ? recovered->error : "?");
            } else {
                log_info("run %s of %s %s", run_id, v.run.workflow, store_run_state_name(next));
            }
        }
        free(msg);
    } else if (v.run.state == STORE_RUN_CANCELLING) {
        if (store_run_set_state(e->o.st, run_id, STORE_RUN_CANCELLING, STORE_RUN_CANCELLED, NULL, &err) == STORE_OK) {
            eng_emit(e, v.wf, run_id, WF_EV_CANCELLED, 0);
            e->stats.runs_cancelled++;
            log_info("run %s of %s cancelled", run_id, v.run.workflow);
        }
    }
    eng_runs_promote(e, v.run.workflow); /* the run ended: a queued one may start (engine_queue.c) */
    free(err);
    eng_run_view_free(&v);
}

/* The step succeeded: record it, then start what comes next (unless the run stopped meanwhile). */
static void step_succeeded(engine *e, const store_step *st, const char *job_state, json_t *result)
{
    char *err = NULL;
    char *res = result ? json_dumps(result, JSON_COMPACT | JSON_ENCODE_ANY) : NULL;
    int rc = store_step_finish(e->o.st, st->run_id, st->name, st->attempt, STORE_STEP_SUCCEEDED, job_state, res, NULL,
                               &err);
    free(res);
    if (rc != STORE_OK) { /* finished before (a duplicate answer): nothing to do */
        free(err);
        return;
    }
    e->stats.steps_succeeded++;
    run_view v;
    if (run_view_load_logged(e, st->run_id, &v) != 0) return;
    int idx = wf_step_index(v.wf, st->name);
    if (v.run.state == STORE_RUN_RUNNING && idx >= 0) {
        const wf_step *ws = &v.wf->steps[idx];
        /* Only a choice function reads the context: a static next (the hot path to the next launch) skips
         * parsing every finished step's result. */
        json_t *ctx = ws->next_kind == WF_NEXT_CHOICE ? build_ctx(e, v.wf, ws, &v.run, &v.steps, st->attempt) : NULL;
        json_t *names = NULL;
        if (wf_successors(v.wf, ws, ctx, &names, &err) != 0) {
            /* A failing choice function fails the run: the step itself did its work. */
            char *msg = NULL;
            if (asprintf(&msg, "step %s: choosing the next step failed: %s", st->name, err ? err : "?") < 0) msg = NULL;
            log_error("run %s: %s", st->run_id, msg ? msg : "choice failed");
            if (store_run_set_state(e->o.st, st->run_id, STORE_RUN_RUNNING, STORE_RUN_FAILED, msg, NULL) == STORE_OK) {
                e->stats.runs_failed++;
                eng_emit(e, v.wf, st->run_id, WF_EV_FAILED, 0);
            }
            free(msg);
        } else {
            size_t i;
            json_t *x;
            json_array_foreach(names, i, x) {
                int t = wf_step_index(v.wf, json_string_value(x));
                if (t >= 0) activate(e, st->run_id, &v.wf->steps[t]);
            }
        }
        json_decref(names);
        json_decref(ctx);
    }
    free(err);
    eng_run_view_free(&v);
    eng_settle_run(e, st->run_id);
}

/* The step's attempt failed with `why` (outcome `o`, a failure class). What follows is decide's: a retry,
 * the on_failure step, or the run's failure (stopping its other jobs when the workflow says so). */
/* A failed job's cause is in its job messages ("Workflow failed. Causes: ..."): asked for once, after the commit;
 * the answer is recorded with the attempt (apply_answer) whatever happened to the step meanwhile. */
static void fetch_cause(engine *e, const store_step *st)
{
    if (e->o.api->ops->messages == NULL || st->job_id == NULL || st->project == NULL || st->region == NULL) return;
    outbox_push(e, op_new(e, OP_MESSAGES, st));
}

static void step_failed(engine *e, const store_step *st, const char *job_state, const char *why, dec_outcome o)
{
    char *err = NULL;
    int cause_coming = o == DEC_JOB_FAILED && e->o.api->ops->messages != NULL && st->job_id != NULL &&
                       st->project != NULL && st->region != NULL;
    if (o == DEC_JOB_FAILED) fetch_cause(e, st);
    run_view v;
    if (run_view_load_logged(e, st->run_id, &v) != 0) return;
    int idx = wf_step_index(v.wf, st->name);
    const wf_step *ws = idx >= 0 ? &v.wf->steps[idx] : NULL;
    int running = run_goes_on_for(v.run.state, v.wf, st->name);
    dec_result d = {.action = running ? DEC_FAIL_RUN : DEC_RECORD, .stop_others = v.wf->cancel_on_failure};
    if (ws != NULL) d = dec_step(v.wf, ws, o, st->attempt, st->job_name != NULL, running);
    if (d.action == DEC_RETRY) {
        int64_t delay = (int64_t)(d.retry_delay_s * 1000.0);
        int rc = store_step_set_state(e->o.st, st->run_id, st->name, st->state, st->attempt, STORE_STEP_PENDING, &err);
        if (rc == STORE_OK) rc = store_step_set_check(e->o.st, st->run_id, st->name, st->attempt, eng_now_ms(e) + delay, 0,
                                                      job_state, &err);
        /* the attempt's own row keeps why it failed (the step's error is for its last attempt's end) */
        if (rc == STORE_OK && st->job_name != NULL)
            store_attempt_end(e->o.st, st->run_id, st->name, st->attempt, STORE_STEP_FAILED, why, NULL);
        if (rc == STORE_OK)
            log_warn("run %s: step %s attempt %d failed (%s: %s); attempt %d in %lld ms", st->run_id, st->name,
                     st->attempt, dec_outcome_name(o), why, d.next_attempt, (long long)delay);
        free(err);
        eng_run_view_free(&v);
        return;
    }
    int rc = store_step_finish(e->o.st, st->run_id, st->name, STORE_ATTEMPT_ANY, STORE_STEP_FAILED, job_state, NULL,
                               why, &err);
    if (rc != STORE_OK) {
        free(err);
        eng_run_view_free(&v);
        return;
    }
    e->stats.steps_failed++;
    log_warn("run %s: step %s failed (%s): %s", st->run_id, st->name, dec_outcome_name(o), why);
    if (d.action == DEC_ON_FAILURE) {
        activate(e, st->run_id, &v.wf->steps[wf_step_index(v.wf, d.target)]);
    } else if (d.action == DEC_FAIL_RUN) {
        char *msg = NULL;
        if (asprintf(&msg, "step %s failed: %s", st->name, why) < 0) msg = NULL;
        if (store_run_set_state(e->o.st, st->run_id, STORE_RUN_RUNNING, STORE_RUN_FAILED, msg, &err) == STORE_OK) {
            e->stats.runs_failed++;
            /* the event waits a little for the job's cause (rev_amend releases it when the cause is recorded) */
            eng_emit(e, v.wf, st->run_id, WF_EV_FAILED,
                     cause_coming ? (e->o.cause_hold_ms > 0 ? e->o.cause_hold_ms : 15000) : 0);
            log_warn("run %s of %s failed: %s", st->run_id, v.run.workflow, msg ? msg : why);
            if (d.stop_others) eng_stop_inflight(e, &v, st->name);
        }
        free(msg);
    }
    free(err);
    eng_run_view_free(&v);
    eng_settle_run(e, st->run_id);
}

/* Cancels pending steps and stops the in-flight jobs of a run (all but `except`). */
void eng_stop_inflight(engine *e, run_view *v, const char *except)
{
    char *err = NULL;
    for (size_t i = 0; i < v->steps.count; i++) {
        store_step *s = &v->steps.items[i];
        if (except && strcmp(s->name, except) == 0) continue;
        if (s->state == STORE_STEP_PENDING || s->state == STORE_STEP_WAITING) {
            store_step_finish(e->o.st, s->run_id, s->name, STORE_ATTEMPT_ANY, STORE_STEP_CANCELLED, NULL, NULL,
                              "run stopped", &err);
        } else if (s->state == STORE_STEP_LAUNCHING || s->state == STORE_STEP_RUNNING) {
            /* due now: seeing the run stopping, the reconciler stops the job (after learning its id, for a
             * launch in flight), then follows its wind-down on the short schedule */
            store_step_set_hint(e->o.st, s->run_id, s->name, s->attempt, eng_now_ms(e), 0, &err);
            e->ready_hint++;
        }
        free(err);
        err = NULL;
    }
}

/* ---- starting a due pending step ---- */

/* Starting a due pending step runs its Lua (a hook, or the parameter function that builds the launch request),
 * and Lua never runs under the store's write lock: the tick takes the due steps in its first transaction,
 * prepares them with no transaction open (store reads only), and records the outcomes (launch intents, hook
 * results, failures) in a second one. Only the engine's thread writes steps, so nothing moves in between. */
typedef enum { PREP_PARK, PREP_STOPPED, PREP_FAIL, PREP_HOOK, PREP_LAUNCH } prep_kind;

typedef struct prepared {
    struct prepared *next;
    prep_kind kind;
    char *run_id, *name, *job_name; /* the due step: job_name is the last attempt's (NULL before any launch) */
    int attempt;
    char *why;         /* PREP_FAIL */
    json_t *output;    /* PREP_HOOK */
    launch_req *l;     /* PREP_LAUNCH */
    double timeout;    /* PREP_LAUNCH: the step's timeout in seconds (0: none) */
    double deadline;   /* PREP_LAUNCH: the step's soft deadline in seconds (0: none) */
    int64_t claimed_mono; /* PREP_LAUNCH: the step's claim was made no earlier than this (eng_mono_ms) */
} prepared;

static void prepared_free(prepared *p)
{
    while (p) {
        prepared *n = p->next;
        free(p->run_id);
        free(p->name);
        free(p->job_name);
        free(p->why);
        json_decref(p->output);
        launch_free(p->l);
        free(p);
        p = n;
    }
}

/* The due step as the transitions expect it. */
static store_step prepared_step(const prepared *p)
{
    store_step st = {.run_id = p->run_id, .name = p->name, .attempt = p->attempt, .job_name = p->job_name,
                     .state = STORE_STEP_PENDING};
    return st;
}

/* No transaction open: reads the run and calls the step's Lua. */
static void prepare_step(engine *e, prepared *p)
{
    char *err = NULL;
    run_view v;
    if (eng_run_view_load(e, p->run_id, &v, &err) != 0) {
        log_error("run %s: %s", p->run_id, err ? err : "cannot load");
        free(err);
        p->kind = PREP_PARK;
        return;
    }
    int idx = wf_step_index(v.wf, p->name);
    json_t *ctx = NULL;
    if (!run_goes_on_for(v.run.state, v.wf, p->name)) {
        p->kind = PREP_STOPPED;
    } else if (idx < 0) {
        p->kind = PREP_FAIL;
        p->why = xstrdup("the step is not in the workflow version of this run");
    } else if ((ctx = build_ctx(e, v.wf, &v.wf->steps[idx], &v.run, &v.steps,
                                p->job_name ? p->attempt + 1 : p->attempt)) == NULL) {
        p->kind = PREP_FAIL;
        p->why = xstrdup("the job name for this step cannot be formed");
    } else if (v.wf->steps[idx].kind == WF_STEP_HOOK) {
        json_t *out = NULL;
        if (wf_run_hook(v.wf, &v.wf->steps[idx], ctx, &out, &err) != 0) {
            p->kind = PREP_FAIL;
            p->why = err ? err : xstrdup("hook failed");
            err = NULL;
            json_decref(out);
        } else {
            p->kind = PREP_HOOK;
            p->output = out;
        }
    } else if (wf_build_launch(v.wf, &v.wf->steps[idx], ctx, v.run.id, e->o.default_project, &p->l, &err) != 0) {
        p->kind = PREP_FAIL;
        p->why = err ? err : xstrdup("building the launch request failed");
        err = NULL;
    } else {
        p->kind = PREP_LAUNCH;
        p->timeout = v.wf->steps[idx].timeout;
        p->deadline = v.wf->steps[idx].deadline;
    }
    free(err);
    json_decref(ctx);
    eng_run_view_free(&v);
}

/* In the second transaction: records what prepare_step found. */
static void start_prepared(engine *e, prepared *p)
{
    store_step st = prepared_step(p);
    char *err = NULL;
    int64_t now = eng_now_ms(e);
    /* Only a step that ends here (a hook, a failure, a stopped run) changes what its run does next; recording a
     * launch intent is a compare-and-set on this step alone, so it needs no lock of the run. */
    if (p->kind != PREP_LAUNCH && eng_lock_run(e, p->run_id, 0) == 0) {
        /* another engine is changing the run: the step is due again at once, for whichever engine takes it */
        store_step_set_check(e->o.st, p->run_id, p->name, p->attempt, now, 0, NULL, NULL);
        e->ready_hint++;
        return;
    }
    switch (p->kind) {
    case PREP_PARK: /* a later tick retries */
        store_step_set_check(e->o.st, p->run_id, p->name, p->attempt, now + e->o.rec.poll_ms, 0, NULL, NULL);
        return;
    case PREP_STOPPED:
        store_step_finish(e->o.st, p->run_id, p->name, STORE_ATTEMPT_ANY, STORE_STEP_CANCELLED, NULL, NULL,
                          "run stopped", NULL);
        eng_settle_run(e, p->run_id);
        return;
    case PREP_FAIL: step_failed(e, &st, NULL, p->why, DEC_ERROR); return;
    case PREP_HOOK: {
        json_t *res = json_pack("{s:O}", "output", p->output ? p->output : json_null());
        step_succeeded(e, &st, NULL, res);
        json_decref(res);
        return;
    }
    case PREP_LAUNCH: break;
    }
    launch_req *l = p->l;
    int attempt = p->job_name ? p->attempt + 1 : p->attempt;
    if (!eng_pool_admit(e, p->run_id, p->name, p->attempt, l->project, l->region)) return; /* waits for a slot */
    json_t *req = launch_to_json(l);
    char *req_text = json_dumps(req, JSON_COMPACT);
    json_decref(req);
    store_intent in = {.attempt = attempt, .job_name = l->job_name, .project = l->project, .region = l->region,
                       .request_json = req_text, .next_check_at = now + e->o.rec.lease_ms,
                       .deadline_at = p->timeout > 0 ? now + (int64_t)(p->timeout * 1000.0) : 0};
    int rc = store_step_record_intent(e->o.st, p->run_id, p->name, STORE_STEP_PENDING, p->attempt, &in, &err);
    free(req_text);
    if (rc == STORE_OK && p->deadline > 0 &&
        store_deadline_arm(e->o.st, p->run_id, p->name, now + (int64_t)(p->deadline * 1000.0), &err) != STORE_OK) {
        log_error("run %s: step %s: cannot arm its deadline: %s", p->run_id, p->name, err ? err : "?");
        free(err);
        err = NULL;
    }
    if (rc != STORE_OK) {
        if (rc == STORE_EXISTS && eng_lock_run(e, p->run_id, 0) == 0) {
            store_step_set_check(e->o.st, p->run_id, p->name, p->attempt, now, 0, NULL, NULL);
            e->ready_hint++;
        } else if (rc == STORE_EXISTS) {
            char *msg = NULL;
            if (asprintf(&msg, "job name %s is already used by another step", l->job_name) < 0) msg = NULL;
            step_failed(e, &st, NULL, msg ? msg : "job name taken", DEC_ERROR);
            free(msg);
        } else if (rc != STORE_CONFLICT) {
            log_error("run %s: step %s: cannot record the launch intent: %s", p->run_id, p->name, err ? err : "?");
        }
        free(err);
        return;
    }
    store_step intent = st;
    intent.attempt = attempt;
    intent.project = l->project;
    intent.region = l->region;
    intent.job_name = l->job_name;
    eng_op *op = op_new(e, OP_LAUNCH, &intent);
    op->launch = l;
    op->claim = in.next_check_at;
    op->claimed_mono = p->claimed_mono;
    p->l = NULL; /* the op owns it now */
    outbox_push(e, op);
}

/* ---- applying answers ---- */

static void finish_from_job(engine *e, const store_step *st, json_t *job)
{
    const char *state = json_string_value(json_object_get(job, "currentState"));
    /* The run and its workflow version only, not the whole view: the steps are read again once this one is
     * finished (step_succeeded, step_failed, eng_settle_run). */
    store_run run = {0};
    char *err = NULL;
    const wf_workflow *wf = NULL;
    if (store_run_get(e->o.st, st->run_id, &run, &err) != STORE_OK ||
        (wf = eng_wf_by_version(e, run.script_hash, &err)) == NULL) {
        free(err);
        store_run_free(&run);
        return;
    }
    int idx = wf_step_index(wf, st->name);
    int running = run_goes_on_for(run.state, wf, st->name);
    store_run_free(&run);
    /* cancelling while the run runs: the engine stopped the job because the step timed out */
    int stopped = st->state == STORE_STEP_CANCELLING;
    dec_outcome o = idx >= 0 ? dec_classify(&wf->steps[idx], state, stopped && running) : DEC_ERROR;
    json_t *res = json_pack("{s:s?,s:s?,s:s?,s:O?}", "job_id", json_string_value(json_object_get(job, "id")), "job_name",
                            json_string_value(json_object_get(job, "name")), "state", state, "labels",
                            json_object_get(job, "labels"));
    if (!running) {
        /* The run was cancelled or failed meanwhile: record how the job ended; nothing new starts. */
        char *r = json_dumps(res, JSON_COMPACT);
        store_step_state final = o == DEC_SUCCEEDED ? STORE_STEP_SUCCEEDED
                                 : stopped          ? STORE_STEP_CANCELLED
                                                    : STORE_STEP_FAILED;
        char why[256];
        snprintf(why, sizeof why, "job %s ended %s after the run %s", st->job_name ? st->job_name : "?",
                 state ? state : "?", stopped ? "stopped it" : "had ended");
        store_step_finish(e->o.st, st->run_id, st->name, STORE_ATTEMPT_ANY, final, state, r,
                          final == STORE_STEP_SUCCEEDED ? NULL : why, NULL);
        free(r);
        eng_settle_run(e, st->run_id);
    } else if (o == DEC_SUCCEEDED) {
        step_succeeded(e, st, state, res);
    } else {
        char why[256];
        if (o == DEC_TIMED_OUT)
            snprintf(why, sizeof why, "timed out; the job was stopped and ended %s", state ? state : "?");
        else
            snprintf(why, sizeof why, "job %s ended %s", st->job_name ? st->job_name : "?", state ? state : "?");
        step_failed(e, st, state, why, o);
    }
    json_decref(res);
    eng_pool_freed(e, st->project, st->region); /* its slot is free: the oldest waiter goes */
}

static int run_is_running(engine *e, const char *run_id)
{
    store_run run = {0};
    int running = store_run_get(e->o.st, run_id, &run, NULL) == STORE_OK && run.state == STORE_RUN_RUNNING;
    store_run_free(&run);
    return running;
}

/* Whether the run's in-flight jobs must be stopped: it is being cancelled, or it failed and its workflow says
 * on_run_failure = "cancel". */
static int run_stopping(engine *e, const char *run_id, const char *step)
{
    store_run run = {0};
    int stopping = 0;
    if (store_run_get(e->o.st, run_id, &run, NULL) == STORE_OK) {
        if (run.state == STORE_RUN_CANCELLING) {
            stopping = 1;
        } else if (run.state == STORE_RUN_FAILED) {
            /* the failure handler's own job goes on */
            const wf_workflow *wf = eng_wf_by_version(e, run.script_hash, NULL);
            stopping = wf != NULL && wf->cancel_on_failure && !is_handler(wf, step);
        }
    }
    store_run_free(&run);
    return stopping;
}

static int winding_down(const char *job_state)
{
    return job_state != NULL &&
           (js_name_is(job_state, JS_CANCELLING) || js_name_is(job_state, JS_DRAINING));
}

/* Whether the step's job is drained (on_cancel = "drain") rather than cancelled when it must stop. */
static int step_drains(engine *e, const store_step *st)
{
    const wf_workflow *wf = NULL;
    store_run run = {0};
    if (store_run_get(e->o.st, st->run_id, &run, NULL) == STORE_OK) wf = eng_wf_by_version(e, run.script_hash, NULL);
    int idx = wf ? wf_step_index(wf, st->name) : -1;
    store_run_free(&run);
    return idx >= 0 && wf->steps[idx].stop_mode == WF_STOP_DRAIN;
}

static int64_t backoff_next(engine *e, const store_step *st, int failures)
{
    int64_t now = eng_now_ms(e), at = rec_next_check(&e->o.rec, st, failures, now);
    if (rec_expecting_end(&e->o.rec, st, now) && at > e->expect_until) e->expect_until = at; /* see engine.h */
    return at;
}

/* A launching step's next check, if this engine's claim on it (op->claim) still holds: 1 then, else 0 (another
 * engine took the step over after the claim ran out, or an event brought its check forward). Whatever decides
 * to launch goes through here, so an answer applied late (a slow call, a run another engine held) cannot send a
 * launch that the step's new holder may send too. */
static int reclaim(engine *e, const eng_op *op, const store_step *st, int64_t next_check_at, int check_failures)
{
    char *err = NULL;
    int rc = store_step_reclaim(e->o.st, st->run_id, st->name, st->attempt, op->claim, next_check_at, check_failures,
                                &err);
    if (rc != STORE_OK) {
        log_info("run %s: step %s: the claim on %s passed on before its answer was applied; leaving it to the step's "
                 "holder (%s)", st->run_id, st->name, st->job_name ? st->job_name : "?", err ? err : "?");
        e->stats.claims_lost++;
    }
    free(err);
    return rc == STORE_OK;
}

/* Applies one answer in the tick's transaction. Returns 1 when it must wait for a later tick: another engine
 * holds the run (an answer may finish the step and start what follows, which needs the run to itself). */
static int apply_answer(engine *e, eng_op *op)
{
    store_step st = {0};
    char *err = NULL;
    /* An answer that reports a job still going only records what it says about this step; any other may finish
     * the step and start what follows, which needs the run to itself. */
    const char *js = op->res.outcome == JA_OK && op->res.job ? json_string_value(json_object_get(op->res.job, "currentState")) : NULL;
    int step_only = op->kind == OP_MESSAGES || (js != NULL && !js_name_terminal(js) && op->kind != OP_STOP);
    if (!step_only && eng_lock_run(e, op->run_id, 0) == 0) return 1;
    busy_set(e, op->run_id, op->step, 0);
    if (op->kind == OP_MESSAGES) { /* the step has failed already: only its attempt must match */
        if (op->res.outcome == JA_OK && op->res.message != NULL)
            store_step_set_cause(e->o.st, op->run_id, op->step, op->attempt, op->res.message, NULL);
        /* the run's events held for this cause carry it now, and may go */
        rev_amend(e->o.st, op->run_id, eng_now_ms(e));
        return 0;
    }
    if (store_step_get(e->o.st, op->run_id, op->step, &st, &err) != STORE_OK) {
        free(err);
        return 0;
    }
    if (st.attempt != op->attempt || store_step_state_terminal(st.state)) { /* stale answer */
        store_step_free(&st);
        return 0;
    }
    eng_note_answer(e, op, &st); /* the step's note: cleared by an answer, or why the call failed (engine_notes.c) */
    const ja_result *r = &op->res;
    int64_t now = eng_now_ms(e);
    switch (op->kind) {
    case OP_LAUNCH:
    case OP_FIND:
        if (op->kind == OP_LAUNCH && r->outcome != JA_QUOTA) store_step_wait_clear(e->o.st, st.run_id, st.name, NULL);
        if (r->outcome == JA_OK && r->job != NULL) {
            const char *id = json_string_value(json_object_get(r->job, "id"));
            const char *state = json_string_value(json_object_get(r->job, "currentState"));
            if (op->kind == OP_LAUNCH) e->stats.launches_ok++;
            if (op->kind == OP_FIND) e->stats.adopted++;
            if (id == NULL) break;
            /* Looked at again now when something is already known to be due (an end event that came while the
             * launch was in flight, a stop); else after the poll interval, or at the step's deadline. */
            int64_t next = now + e->o.rec.poll_ms;
            if (st.deadline_at > 0 && st.deadline_at < next) next = st.deadline_at;
            if (st.hint_at > 0 || st.state == STORE_STEP_CANCELLING || !run_is_running(e, st.run_id)) next = now;
            store_step_set_job(e->o.st, st.run_id, st.name, st.attempt, id, state, next, &err);
            eng_running_from_job(e, &st, r->job);
            e->ready_hint++;
            if (state != NULL && js_name_terminal(state) && st.job_id == NULL) {
                store_step fresh = {0};
                if (store_step_get(e->o.st, st.run_id, st.name, &fresh, NULL) == STORE_OK) finish_from_job(e, &fresh, r->job);
                store_step_free(&fresh);
            }
        } else if (op->kind == OP_FIND && r->outcome == JA_NOT_FOUND && !reclaim(e, op, &st, now + e->o.rec.lease_ms, st.check_failures)) {
            break; /* the step is another engine's now (or was brought forward): what it finds decides */
        } else if (op->kind == OP_FIND && r->outcome == JA_NOT_FOUND && !run_is_running(e, st.run_id)) {
            /* The run stopped while this launch was unsettled, and it never created a job: nothing to stop. */
            store_step_finish(e->o.st, st.run_id, st.name, st.attempt, STORE_STEP_CANCELLED, NULL, NULL,
                              "run stopped before the job was created", &err);
            eng_settle_run(e, st.run_id);
        } else if (op->kind == OP_FIND && r->outcome == JA_NOT_FOUND) {
            /* Nothing carries this name: the intent's request never created a job. Send it (again). */
            json_t *req = json_loads(st.request_json ? st.request_json : "", 0, NULL);
            launch_req *l = req ? ja_launch_from_record(req) : NULL;
            json_decref(req);
            if (l == NULL) {
                step_failed(e, &st, NULL, "the recorded launch request is unreadable", DEC_ERROR);
                break;
            }
            eng_op *again = op_new(e, OP_LAUNCH, &st);
            again->launch = l;
            again->claim = now + e->o.rec.lease_ms; /* reclaimed above */
            again->claimed_mono = eng_mono_ms(e);
            outbox_push(e, again);
        } else if (op->kind == OP_LAUNCH && r->outcome == JA_QUOTA) {
            /* Nothing was created: the step waits for capacity (woken when a job ends), if the claim is still ours. */
            if (st.job_id == NULL && reclaim(e, op, &st, now + e->o.rec.lease_ms, st.check_failures))
                eng_pool_refused(e, &st, r);
        } else if (op->kind == OP_LAUNCH && r->outcome == JA_REJECTED) {
            /* Definitive: the same request would be refused again. A retry only if retry.on lists "rejected". */
            char why[1200];
            snprintf(why, sizeof why, "launch rejected (HTTP %ld): %s", r->http_status, r->message ? r->message : "");
            step_failed(e, &st, NULL, why, DEC_REJECTED);
            eng_pool_freed(e, st.project, st.region);
        } else {
            /* unknown outcome or a transient failure: the reconciler looks the name up after a backoff */
            if (st.job_id == NULL)
                reclaim(e, op, &st, backoff_next(e, &st, st.check_failures + 1), st.check_failures + 1);
            else
                store_step_set_check(e->o.st, st.run_id, st.name, st.attempt,
                                     backoff_next(e, &st, st.check_failures + 1), st.check_failures + 1, NULL, &err);
            log_warn("run %s: step %s: launch of %s unsettled (%s); will look it up", st.run_id, st.name,
                     st.job_name ? st.job_name : "?", r->message ? r->message : "no answer");
        }
        break;
    case OP_GET:
        if (r->outcome == JA_OK && r->job != NULL) {
            const char *state = json_string_value(json_object_get(r->job, "currentState"));
            eng_running_from_job(e, &st, r->job);
            if (state != NULL && js_name_terminal(state)) {
                log_debug("run %s: step %s: job %s is %s", st.run_id, st.name, st.job_id ? st.job_id : "?", state);
                finish_from_job(e, &st, r->job);
            } else {
                /* A job winding down (cancelled or drained by anyone) should end soon: short schedule. */
                if (winding_down(state) && st.hint_at == 0 &&
                    store_step_set_hint(e->o.st, st.run_id, st.name, st.attempt, now, now, NULL) == STORE_OK)
                    st.hint_at = now;
                store_step_set_check(e->o.st, st.run_id, st.name, st.attempt, backoff_next(e, &st, 0), 0, state, &err);
                if (st.state == STORE_STEP_CANCELLING && state != NULL && !winding_down(state)) {
                    /* the stop did not take (or its answer was lost): ask again; stopping is idempotent */
                    eng_op *again = op_new(e, OP_STOP, &st);
                    again->drain = step_drains(e, &st);
                    outbox_push(e, again);
                }
            }
        } else {
            store_step_set_check(e->o.st, st.run_id, st.name, st.attempt, backoff_next(e, &st, st.check_failures + 1),
                                 st.check_failures + 1, NULL, &err);
        }
        break;
    case OP_STOP:
        if (r->outcome == JA_OK) {
            /* the job winds down: followed on the short schedule from the stop request (its hint) */
            store_step_set_check(e->o.st, st.run_id, st.name, st.attempt,
                                 r->already_terminated ? now : backoff_next(e, &st, 0), 0, NULL, &err);
            e->ready_hint++;
        } else if (op->drain && r->http_status >= 400 && r->http_status < 500 && r->http_status != 429) {
            /* Dataflow drains only streaming jobs and refuses the drain of a batch job: cancel it instead. */
            log_warn("run %s: step %s: the drain of job %s was refused (HTTP %ld: %s); cancelling it", st.run_id,
                     st.name, st.job_id ? st.job_id : "?", r->http_status, r->message ? r->message : "");
            store_step_set_check(e->o.st, st.run_id, st.name, st.attempt, now + e->o.rec.lease_ms, 0, NULL, &err);
            eng_op *cancel = op_new(e, OP_STOP, &st);
            cancel->drain = 0;
            outbox_push(e, cancel);
        } else {
            store_step_set_check(e->o.st, st.run_id, st.name, st.attempt, backoff_next(e, &st, st.check_failures + 1),
                                 st.check_failures + 1, NULL, &err);
        }
        break;
    case OP_MESSAGES: break; /* answered above */
    }
    free(err);
    store_step_free(&st);
    return 0;
}

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
                store_step_set_hint(e->o.st, st.run_id, st.name, st.attempt, eng_now_ms(e), 0, NULL);
                e->ready_hint++;
            }
        }
        store_step_free(&st);
        store_inbox_mark_processed(e->o.st, ev->id, 0, NULL);
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
            busy_set(e, op->run_id, op->step, 0);
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
            busy_set(e, op->run_id, op->step, 0);
            op_free(op);
        }
        op = next;
    }
}

/* Dispatches a due in-flight step: leases it and queues the check the reconciler asks for. */
static void check_step(engine *e, const store_step *st)
{
    int stopping = run_stopping(e, st->run_id, st->name);
    rec_action a = rec_decide(st, stopping, eng_now_ms(e));
    int timeout_stop = a == REC_STOP && !stopping;
    if (a == REC_NONE) return;
    int64_t claim = eng_now_ms(e) + e->o.rec.lease_ms;
    store_step_set_check(e->o.st, st->run_id, st->name, st->attempt, claim, st->check_failures, NULL, NULL);
    eng_op *op = op_new(e, a == REC_FIND ? OP_FIND : a == REC_GET ? OP_GET : OP_STOP, st);
    op->claim = claim;
    if (a == REC_STOP) {
        op->drain = step_drains(e, st);
        store_step_set_state(e->o.st, st->run_id, st->name, STORE_STEP_RUNNING, st->attempt, STORE_STEP_CANCELLING,
                             NULL);
        /* the stop request is the hint: its wind-down is followed on the short schedule */
        store_step_set_hint(e->o.st, st->run_id, st->name, st->attempt, eng_now_ms(e), eng_now_ms(e) + e->o.rec.lease_ms,
                            NULL);
        if (timeout_stop)
            log_warn("run %s: step %s timed out; stopping job %s", st->run_id, st->name, st->job_id ? st->job_id : "?");
    }
    outbox_push(e, op);
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
            store_step_set_check(e->o.st, st->run_id, st->name, st->attempt, now, st->check_failures, NULL, NULL);
            e->ready_hint++;
        }
    }
    store_step_list_free(&l);
}

/* Drops what the outbox holds (nothing of it may be sent). */
static void drop_outbox(engine *e)
{
    for (eng_op *op = e->outbox; op; op = op->next) busy_set(e, op->run_id, op->step, 0);
    free_ops(e->outbox);
    e->outbox = e->outbox_tail = NULL;
}

/* Commits the tick's open transaction; on failure rolls back and drops the unsent outbox. Returns 0 or -1. */
static int commit_or_drop(engine *e)
{
    char *err = NULL;
    if (store_commit(e->o.st, &err) == STORE_OK) return 0;
    log_error("engine: commit failed, the tick will be redone: %s", err ? err : "?");
    free(err);
    store_rollback(e->o.st, NULL);
    e->stats.commit_failures++;
    drop_outbox(e);
    return -1;
}

static int begin(engine *e)
{
    char *err = NULL;
    if (store_begin(e->o.st, &err) == STORE_OK) return 0;
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
        if (apply_answer(e, op)) { /* the run is another engine's for now: next tick */
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
    prepared *starts = NULL, **tail = &starts;
    int room = e->o.max_inflight - e->inflight;
    if (room > 0) {
        store_step_list due = {0};
        int limit = room < e->o.max_due ? room : e->o.max_due;
        if (store_step_due(e->o.st, eng_now_ms(e), limit, &due, &err) == STORE_OK) {
            for (size_t i = 0; i < due.count; i++) {
                store_step *st = &due.items[i];
                if (busy_has(e, st->run_id, st->name)) continue;
                if (st->state != STORE_STEP_PENDING) {
                    check_step(e, st);
                    continue;
                }
                /* Leased while its Lua runs outside a transaction, so no other engine starts it meanwhile (one
                 * engine per store needs none: the step is started before its next tick). */
                if (store_shared(e->o.st))
                    store_step_set_check(e->o.st, st->run_id, st->name, st->attempt, eng_now_ms(e) + e->o.rec.lease_ms,
                                         st->check_failures, NULL, NULL);
                prepared *p = xcalloc(1, sizeof *p);
                p->run_id = xstrdup(st->run_id);
                p->name = xstrdup(st->name);
                p->job_name = st->job_name ? xstrdup(st->job_name) : NULL;
                p->attempt = st->attempt;
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
        for (prepared *p = starts; p; p = p->next) prepare_step(e, p);
        /* before the intents' claims are written (their clock reads come later): the fence errs early */
        int64_t claimed = eng_mono_ms(e);
        for (prepared *p = starts; p; p = p->next) p->claimed_mono = claimed;
        if ((rc = begin(e)) == 0) {
            for (prepared *p = starts; p; p = p->next) start_prepared(e, p);
            rc = commit_or_drop(e);
        }
    }
    prepared_free(starts);
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

