/* engine_answers: following a step in flight: the check the reconciler asks for when the step is due
 * (eng_check_step: look the job up, get it, stop it), and the API's answers to the engine's calls applied in the
 * tick's transaction (eng_apply_answer): a job found or created, its state, a stop taken, a job's failure cause;
 * late answers are fenced by the step's claim.
 * Uses: engine_internal.h, decide, reconciler, store, job_state, jobs_api, launch, log. Must not: send anything itself
 * (calls go to the outbox), or call Lua. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "decide.h"
#include "engine_internal.h"
#include "job_state.h"
#include "log.h"

static void finish_from_job(engine *e, const store_step *st, json_t *job)
{
    const char *state = json_string_value(json_object_get(job, "currentState"));
    /* The run and its workflow version only, not the whole view: the steps are read again once this one is
     * finished (eng_step_succeeded, eng_step_failed, eng_settle_run). */
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
    int running = eng_run_goes_on_for(run.state, wf, st->name);
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
        eng_w(e, store_step_finish(e->o.st, st->run_id, st->name, STORE_ATTEMPT_ANY, final, state, r,
                          final == STORE_STEP_SUCCEEDED ? NULL : why, NULL));
        free(r);
        eng_settle_run(e, st->run_id);
    } else if (o == DEC_SUCCEEDED) {
        eng_step_succeeded(e, st, state, res);
    } else {
        char why[256];
        if (o == DEC_TIMED_OUT)
            snprintf(why, sizeof why, "timed out; the job was stopped and ended %s", state ? state : "?");
        else
            snprintf(why, sizeof why, "job %s ended %s", st->job_name ? st->job_name : "?", state ? state : "?");
        eng_step_failed(e, st, state, why, o);
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
            stopping = wf != NULL && wf->cancel_on_failure && !eng_is_handler(wf, step);
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
int eng_apply_answer(engine *e, eng_op *op)
{
    store_step st = {0};
    char *err = NULL;
    /* An answer that reports a job still going only records what it says about this step; any other may finish
     * the step and start what follows, which needs the run to itself. */
    const char *js = op->res.outcome == JA_OK && op->res.job ? json_string_value(json_object_get(op->res.job, "currentState")) : NULL;
    int step_only = op->kind == OP_MESSAGES || (js != NULL && !js_name_terminal(js) && op->kind != OP_STOP);
    if (!step_only && eng_lock_run(e, op->run_id, 0) == 0) return 1;
    eng_busy_set(e, op->run_id, op->step, 0);
    if (op->kind == OP_MESSAGES) { /* the step has failed already: only its attempt must match */
        if (op->res.outcome == JA_OK && op->res.message != NULL)
            eng_w(e, store_step_set_cause(e->o.st, op->run_id, op->step, op->attempt, op->res.message, NULL));
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
            eng_w(e, store_step_set_job(e->o.st, st.run_id, st.name, st.attempt, id, state, next, &err));
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
            eng_w(e, store_step_finish(e->o.st, st.run_id, st.name, st.attempt, STORE_STEP_CANCELLED, NULL, NULL,
                              "run stopped before the job was created", &err));
            eng_settle_run(e, st.run_id);
        } else if (op->kind == OP_FIND && r->outcome == JA_NOT_FOUND) {
            /* Nothing carries this name: the intent's request never created a job. Send it (again). */
            json_t *req = json_loads(st.request_json ? st.request_json : "", 0, NULL);
            launch_req *l = req ? ja_launch_from_record(req) : NULL;
            json_decref(req);
            if (l == NULL) {
                eng_step_failed(e, &st, NULL, "the recorded launch request is unreadable", DEC_ERROR);
                break;
            }
            store_run run = {0}; /* the labels /metrics counts it under, which the record does not hold */
            store_run_get(e->o.st, st.run_id, &run, NULL);
            launch_set_labels(l, run.workflow, st.name);
            store_run_free(&run);
            eng_op *again = eng_op_new(e, OP_LAUNCH, &st);
            again->launch = l;
            again->claim = now + e->o.rec.lease_ms; /* reclaimed above */
            again->claimed_mono = eng_mono_ms(e);
            eng_outbox_push(e, again);
        } else if (op->kind == OP_LAUNCH && r->outcome == JA_QUOTA) {
            /* Nothing was created: the step waits for capacity (woken when a job ends), if the claim is still ours. */
            if (st.job_id == NULL && reclaim(e, op, &st, now + e->o.rec.lease_ms, st.check_failures))
                eng_pool_refused(e, &st, r);
        } else if (op->kind == OP_LAUNCH && r->outcome == JA_REJECTED) {
            /* Definitive: the same request would be refused again. A retry only if retry.on lists "rejected". */
            char why[1200];
            snprintf(why, sizeof why, "launch rejected (HTTP %ld): %s", r->http_status, r->message ? r->message : "");
            eng_step_failed(e, &st, NULL, why, DEC_REJECTED);
            eng_pool_freed(e, st.project, st.region);
        } else {
            /* unknown outcome or a transient failure: the reconciler looks the name up after a backoff */
            if (st.job_id == NULL)
                reclaim(e, op, &st, backoff_next(e, &st, st.check_failures + 1), st.check_failures + 1);
            else
                eng_w(e, store_step_set_check(e->o.st, st.run_id, st.name, st.attempt,
                                     backoff_next(e, &st, st.check_failures + 1), st.check_failures + 1, NULL, &err));
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
                eng_w(e, store_step_set_check(e->o.st, st.run_id, st.name, st.attempt, backoff_next(e, &st, 0), 0, state, &err));
                if (st.state == STORE_STEP_CANCELLING && state != NULL && !winding_down(state)) {
                    /* the stop did not take (or its answer was lost): ask again; stopping is idempotent */
                    eng_op *again = eng_op_new(e, OP_STOP, &st);
                    again->drain = step_drains(e, &st);
                    eng_outbox_push(e, again);
                }
            }
        } else {
            eng_w(e, store_step_set_check(e->o.st, st.run_id, st.name, st.attempt, backoff_next(e, &st, st.check_failures + 1),
                                 st.check_failures + 1, NULL, &err));
        }
        break;
    case OP_STOP:
        if (r->outcome == JA_OK) {
            /* the job winds down: followed on the short schedule from the stop request (its hint) */
            eng_w(e, store_step_set_check(e->o.st, st.run_id, st.name, st.attempt,
                                 r->already_terminated ? now : backoff_next(e, &st, 0), 0, NULL, &err));
            e->ready_hint++;
        } else if (op->drain && r->http_status >= 400 && r->http_status < 500 && r->http_status != 429) {
            /* Dataflow drains only streaming jobs and refuses the drain of a batch job: cancel it instead. */
            log_warn("run %s: step %s: the drain of job %s was refused (HTTP %ld: %s); cancelling it", st.run_id,
                     st.name, st.job_id ? st.job_id : "?", r->http_status, r->message ? r->message : "");
            eng_w(e, store_step_set_check(e->o.st, st.run_id, st.name, st.attempt, now + e->o.rec.lease_ms, 0, NULL, &err));
            eng_op *cancel = eng_op_new(e, OP_STOP, &st);
            cancel->drain = 0;
            eng_outbox_push(e, cancel);
        } else {
            eng_w(e, store_step_set_check(e->o.st, st.run_id, st.name, st.attempt, backoff_next(e, &st, st.check_failures + 1),
                                 st.check_failures + 1, NULL, &err));
        }
        break;
    case OP_MESSAGES: break; /* answered above */
    }
    free(err);
    store_step_free(&st);
    return 0;
}

/* Dispatches a due in-flight step: leases it and queues the check the reconciler asks for. */
void eng_check_step(engine *e, const store_step *st)
{
    int stopping = run_stopping(e, st->run_id, st->name);
    rec_action a = rec_decide(st, stopping, eng_now_ms(e));
    int timeout_stop = a == REC_STOP && !stopping;
    if (a == REC_NONE) return;
    int64_t claim = eng_now_ms(e) + e->o.rec.lease_ms;
    eng_w(e, store_step_set_check(e->o.st, st->run_id, st->name, st->attempt, claim, st->check_failures, NULL, NULL));
    eng_op *op = eng_op_new(e, a == REC_FIND ? OP_FIND : a == REC_GET ? OP_GET : OP_STOP, st);
    op->claim = claim;
    if (a == REC_STOP) {
        op->drain = step_drains(e, st);
        eng_w(e, store_step_set_state(e->o.st, st->run_id, st->name, STORE_STEP_RUNNING, st->attempt, STORE_STEP_CANCELLING,
                             NULL));
        /* the stop request is the hint: its wind-down is followed on the short schedule */
        eng_w(e, store_step_set_hint(e->o.st, st->run_id, st->name, st->attempt, eng_now_ms(e), eng_now_ms(e) + e->o.rec.lease_ms,
                            NULL));
        if (timeout_stop)
            log_warn("run %s: step %s timed out; stopping job %s", st->run_id, st->name, st->job_id ? st->job_id : "?");
    }
    eng_outbox_push(e, op);
}
