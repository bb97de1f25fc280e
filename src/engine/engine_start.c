/* engine_start: starting a due pending step. Its Lua (a hook, or the parameter function that builds the launch
 * request) never runs under the store's write lock: the tick takes the due steps in its first transaction
 * (eng_prepared_new), prepares them with no transaction open (eng_prepare_step: store reads only), and records the
 * outcomes (launch intents, hook results, failures) in a second one (eng_start_prepared). Only the engine's thread
 * writes steps, so nothing moves in between.
 * Uses: engine_internal.h, decide, store, workflow, launch, log. Must not: send anything to Dataflow itself (a
 * launch goes to the outbox, sent after the commit). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine_internal.h"
#include "log.h"
#include "mem.h"
#include "util.h"

eng_prepared *eng_prepared_new(const store_step *st)
{
    eng_prepared *p = xcalloc(1, sizeof *p);
    p->run_id = xstrdup(st->run_id);
    p->name = xstrdup(st->name);
    p->job_name = st->job_name ? xstrdup(st->job_name) : NULL;
    p->attempt = st->attempt;
    return p;
}

void eng_prepared_free(eng_prepared *p)
{
    while (p) {
        eng_prepared *n = p->next;
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
static store_step prepared_step(const eng_prepared *p)
{
    store_step st = {.run_id = p->run_id, .name = p->name, .attempt = p->attempt, .job_name = p->job_name,
                     .state = STORE_STEP_PENDING};
    return st;
}

/* No transaction open: reads the run and calls the step's Lua. */
void eng_prepare_step(engine *e, eng_prepared *p)
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
    if (!eng_run_goes_on_for(v.run.state, v.wf, p->name)) {
        p->kind = PREP_STOPPED;
    } else if (idx < 0) {
        p->kind = PREP_FAIL;
        p->why = xstrdup("the step is not in the workflow version of this run");
    } else if ((ctx = eng_build_ctx(e, v.wf, &v.wf->steps[idx], &v.run, &v.steps,
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
        /* /metrics counts the launch under this run's workflow and step, whatever a reload has loaded since */
        launch_set_labels(p->l, v.run.workflow, p->name);
        p->kind = PREP_LAUNCH;
        p->timeout = v.wf->steps[idx].timeout;
        p->deadline = v.wf->steps[idx].deadline;
    }
    free(err);
    json_decref(ctx);
    eng_run_view_free(&v);
}

/* In the second transaction: records what eng_prepare_step found. */
void eng_start_prepared(engine *e, eng_prepared *p)
{
    store_step st = prepared_step(p);
    char *err = NULL;
    int64_t now = eng_now_ms(e);
    /* Only a step that ends here (a hook, a failure, a stopped run) changes what its run does next; recording a
     * launch intent is a compare-and-set on this step alone, so it needs no lock of the run. */
    if (p->kind != PREP_LAUNCH && eng_lock_run(e, p->run_id, 0) == 0) {
        /* another engine is changing the run: the step is due again at once, for whichever engine takes it */
        eng_w(e, store_step_set_check(e->o.st, p->run_id, p->name, p->attempt, now, 0, NULL, NULL));
        e->ready_hint++;
        return;
    }
    switch (p->kind) {
    case PREP_PARK: /* a later tick retries */
        eng_w(e, store_step_set_check(e->o.st, p->run_id, p->name, p->attempt, now + e->o.rec.poll_ms, 0, NULL, NULL));
        return;
    case PREP_STOPPED:
        eng_w(e, store_step_finish(e->o.st, p->run_id, p->name, STORE_ATTEMPT_ANY, STORE_STEP_CANCELLED, NULL, NULL,
                          "run stopped", NULL));
        eng_settle_run(e, p->run_id);
        return;
    case PREP_FAIL: eng_step_failed(e, &st, NULL, p->why, DEC_ERROR); return;
    case PREP_HOOK: {
        json_t *res = json_pack("{s:O}", "output", p->output ? p->output : json_null());
        eng_step_succeeded(e, &st, NULL, res);
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
            eng_w(e, store_step_set_check(e->o.st, p->run_id, p->name, p->attempt, now, 0, NULL, NULL));
            e->ready_hint++;
        } else if (rc == STORE_EXISTS) {
            char *msg = util_printf("job name %s is already used by another step", l->job_name);
            eng_step_failed(e, &st, NULL, msg, DEC_ERROR);
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
    eng_op *op = eng_op_new(e, OP_LAUNCH, &intent);
    op->launch = l;
    op->claim = in.next_check_at;
    op->claimed_mono = p->claimed_mono;
    p->l = NULL; /* the op owns it now */
    eng_outbox_push(e, op);
}
