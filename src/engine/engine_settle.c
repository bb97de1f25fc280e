/* engine_settle: a run's transitions as its steps end: a step succeeded (what comes next, choice functions
 * included) or failed (decide's retry, on_failure step or the run's failure), joins released, the failure handler
 * started, and the run finished once nothing is active; stopping a run's in-flight steps; run views and run events.
 * Uses: engine_internal.h, decide, store, workflow, run_events, log. Must not: send anything to Dataflow itself
 * (calls go to the outbox), or read API answers (engine_answers.c does). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "decide.h"
#include "engine_internal.h"
#include "log.h"
#include "mem.h"
#include "util.h"

/* ---- run views ---- */

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
int eng_is_handler(const wf_workflow *wf, const char *step)
{
    return wf != NULL && wf->failure_handler != NULL && step != NULL && strcmp(wf->failure_handler, step) == 0;
}

/* Whether `step` of a run in `state` may still start and follow its job: the run is running, or the run failed and
 * the step is the failure handler. */
int eng_run_goes_on_for(store_run_state state, const wf_workflow *wf, const char *step)
{
    return state == STORE_RUN_RUNNING || (state == STORE_RUN_FAILED && eng_is_handler(wf, step));
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
        if (step_active(v.steps.items[i].state) && eng_is_handler(v.wf, v.steps.items[i].name)) handler_active = 1;
    if (start_handler(e, &v, active - handler_active) || active > 0 || released > 0) {
        eng_run_view_free(&v);
        return;
    }
    /* Nothing is in flight: the run ends. Joins that can never start are skipped. */
    for (size_t i = 0; i < v.steps.count; i++)
        if (v.steps.items[i].state == STORE_STEP_WAITING)
            eng_w(e, store_step_finish(e->o.st, run_id, v.steps.items[i].name, STORE_ATTEMPT_ANY, STORE_STEP_SKIPPED, NULL, NULL,
                              "never started", NULL));
    if (v.run.state == STORE_RUN_RUNNING) {
        char *msg = NULL;
        if (blocked_join != NULL)
            msg = util_printf("join step %s can never start: predecessor %s did not succeed", blocked_join,
                              blocker ? blocker : "?");
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
void eng_step_succeeded(engine *e, const store_step *st, const char *job_state, json_t *result)
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
        json_t *ctx = ws->next_kind == WF_NEXT_CHOICE ? eng_build_ctx(e, v.wf, ws, &v.run, &v.steps, st->attempt) : NULL;
        json_t *names = NULL;
        if (wf_successors(v.wf, ws, ctx, &names, &err) != 0) {
            /* A failing choice function fails the run: the step itself did its work. */
            char *msg = util_printf("step %s: choosing the next step failed: %s", st->name, err ? err : "?");
            log_error("run %s: %s", st->run_id, msg);
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
 * the answer is recorded with the attempt (eng_apply_answer) whatever happened to the step meanwhile. */
static void fetch_cause(engine *e, const store_step *st)
{
    if (e->o.api->ops->messages == NULL || st->job_id == NULL || st->project == NULL || st->region == NULL) return;
    eng_outbox_push(e, eng_op_new(e, OP_MESSAGES, st));
}

void eng_step_failed(engine *e, const store_step *st, const char *job_state, const char *why, dec_outcome o)
{
    char *err = NULL;
    int cause_coming = o == DEC_JOB_FAILED && e->o.api->ops->messages != NULL && st->job_id != NULL &&
                       st->project != NULL && st->region != NULL;
    if (o == DEC_JOB_FAILED) fetch_cause(e, st);
    run_view v;
    if (run_view_load_logged(e, st->run_id, &v) != 0) return;
    int idx = wf_step_index(v.wf, st->name);
    const wf_step *ws = idx >= 0 ? &v.wf->steps[idx] : NULL;
    int running = eng_run_goes_on_for(v.run.state, v.wf, st->name);
    dec_result d = {.action = running ? DEC_FAIL_RUN : DEC_RECORD, .stop_others = v.wf->cancel_on_failure};
    if (ws != NULL) d = dec_step(v.wf, ws, o, st->attempt, st->job_name != NULL, running);
    if (d.action == DEC_RETRY) {
        int64_t delay = (int64_t)(d.retry_delay_s * 1000.0);
        int rc = store_step_set_state(e->o.st, st->run_id, st->name, st->state, st->attempt, STORE_STEP_PENDING, &err);
        if (rc == STORE_OK) rc = store_step_set_check(e->o.st, st->run_id, st->name, st->attempt, eng_now_ms(e) + delay, 0,
                                                      job_state, &err);
        /* the attempt's own row keeps why it failed (the step's error is for its last attempt's end) */
        if (rc == STORE_OK && st->job_name != NULL)
            eng_w(e, store_attempt_end(e->o.st, st->run_id, st->name, st->attempt, STORE_STEP_FAILED, why, NULL));
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
        char *msg = util_printf("step %s failed: %s", st->name, why);
        if (store_run_set_state(e->o.st, st->run_id, STORE_RUN_RUNNING, STORE_RUN_FAILED, msg, &err) == STORE_OK) {
            e->stats.runs_failed++;
            /* the event waits a little for the job's cause (rev_amend releases it when the cause is recorded) */
            eng_emit(e, v.wf, st->run_id, WF_EV_FAILED,
                     cause_coming ? (e->o.cause_hold_ms > 0 ? e->o.cause_hold_ms : 15000) : 0);
            log_warn("run %s of %s failed: %s", st->run_id, v.run.workflow, msg);
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
            eng_w(e, store_step_finish(e->o.st, s->run_id, s->name, STORE_ATTEMPT_ANY, STORE_STEP_CANCELLED, NULL, NULL,
                              "run stopped", &err));
        } else if (s->state == STORE_STEP_LAUNCHING || s->state == STORE_STEP_RUNNING) {
            /* due now: seeing the run stopping, the reconciler stops the job (after learning its id, for a
             * launch in flight), then follows its wind-down on the short schedule */
            eng_w(e, store_step_set_hint(e->o.st, s->run_id, s->name, s->attempt, eng_now_ms(e), 0, &err));
            e->ready_hint++;
        }
        free(err);
        err = NULL;
    }
}
