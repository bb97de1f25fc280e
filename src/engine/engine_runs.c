/* engine_runs: the engine's run commands — start (declared params, request keys), cancel, redrive, adopting a
 * foreign job — and the registry of workflow versions (current ones by name; any version a run uses).
 * Uses: engine_internal (the engine's state), store, workflow, util, log. Must not: send API calls (the tick
 * does, from what these record). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine_internal.h"
#include "log.h"
#include "mem.h"
#include "util.h"

/* ---- workflows by version ---- */

const wf_workflow *eng_wf_by_version(engine *e, const char *version, char **err)
{
    for (size_t i = 0; i < e->n_wfs; i++)
        if (strcmp(e->wfs[i].version, version) == 0) return e->wfs[i].wf;
    store_script sc = {0};
    if (store_script_get(e->o.st, version, &sc, err) != STORE_OK) return NULL;
    wf_diags d = {0};
    wf_workflow *wf = wf_load_source(sc.workflow, sc.source, strlen(sc.source), &e->o.lua, &d);
    if (wf == NULL) {
        *err = util_printf("stored version %.12s of workflow %s no longer loads: %s", version, sc.workflow,
                           d.n ? d.items[0] : "?");
    } else {
        e->wfs = xrealloc(e->wfs, (e->n_wfs + 1) * sizeof *e->wfs);
        e->wfs[e->n_wfs].version = xstrdup(version);
        e->wfs[e->n_wfs].wf = wf;
        e->wfs[e->n_wfs].stored = 1;
        e->n_wfs++;
    }
    wf_diags_free(&d);
    store_script_free(&sc);
    return wf;
}

int engine_add_workflow(engine *e, wf_workflow *wf, char **err)
{
    (void)err;
    size_t i;
    for (i = 0; i < e->n_wfs; i++)
        if (strcmp(e->wfs[i].version, wf->version) == 0) break;
    if (i == e->n_wfs) {
        e->wfs = xrealloc(e->wfs, (e->n_wfs + 1) * sizeof *e->wfs);
        e->wfs[e->n_wfs].version = xstrdup(wf->version);
        e->wfs[e->n_wfs].wf = wf;
        e->wfs[e->n_wfs].stored = 0;
        e->n_wfs++;
    } else {
        wf_free(wf);
        wf = e->wfs[i].wf;
    }
    for (size_t c = 0; c < e->n_current; c++) {
        if (strcmp(e->current_names[c], wf->name) == 0) {
            free(e->current_versions[c]);
            e->current_versions[c] = xstrdup(wf->version);
            return 0;
        }
    }
    e->current_names = xrealloc(e->current_names, (e->n_current + 1) * sizeof(char *));
    e->current_versions = xrealloc(e->current_versions, (e->n_current + 1) * sizeof(char *));
    e->current_names[e->n_current] = xstrdup(wf->name);
    e->current_versions[e->n_current] = xstrdup(wf->version);
    e->n_current++;
    return 0;
}

int engine_set_workflows(engine *e, wf_workflow *const *wfs, size_t n)
{
    /* Called between ticks only: no run_view of this tick borrows a version that goes. */
    /* Register every version first (each takes a reference), then replace the current mapping in one go. */
    for (size_t i = 0; i < n; i++) engine_add_workflow(e, wf_ref(wfs[i]), NULL);
    size_t kept = 0;
    for (size_t c = 0; c < e->n_current; c++) {
        int still = 0;
        for (size_t i = 0; i < n && !still; i++) still = strcmp(e->current_names[c], wfs[i]->name) == 0;
        if (still) {
            e->current_names[kept] = e->current_names[c];
            e->current_versions[kept] = e->current_versions[c];
            kept++;
        } else {
            log_info("engine: workflow %s is no longer loaded: no new runs; its runs in flight go on",
                     e->current_names[c]);
            free(e->current_names[c]);
            free(e->current_versions[c]);
        }
    }
    e->n_current = kept;
    /* Versions that are no longer current leave memory: a run still on one loads it again from the store's
     * copy of its source when it next needs it (eng_wf_by_version), so a server that reloads often does not
     * keep every version it ever saw. A version no run used was never stored and cannot be needed. */
    size_t w = 0;
    for (size_t i = 0; i < e->n_wfs; i++) {
        int current = 0;
        for (size_t c = 0; c < e->n_current && !current; c++) current = strcmp(e->current_versions[c], e->wfs[i].version) == 0;
        if (current) {
            e->wfs[w++] = e->wfs[i];
        } else {
            free(e->wfs[i].version);
            wf_free(e->wfs[i].wf);
        }
    }
    e->n_wfs = w;
    return 0;
}

const wf_workflow *engine_workflow(engine *e, const char *name)
{
    for (size_t c = 0; c < e->n_current; c++)
        if (strcmp(e->current_names[c], name) == 0)
            for (size_t i = 0; i < e->n_wfs; i++)
                if (strcmp(e->wfs[i].version, e->current_versions[c]) == 0) return e->wfs[i].wf;
    return NULL;
}

int engine_cancel_run(engine *e, const char *run_id, char **err)
{
    run_view v;
    if (eng_run_view_load(e, run_id, &v, err) != 0) return -1;
    if (store_run_state_terminal(v.run.state)) {
        eng_run_view_free(&v);
        return 1;
    }
    eng_run_view_free(&v);
    if (eng_begin(e, err) != STORE_OK) return -1;
    /* With the run locked no other engine changes its steps until the cancel commits: read them again. */
    int rc = eng_lock_run(e, run_id, 1) == 1 && eng_run_view_load(e, run_id, &v, err) == 0 ? 0 : -1;
    if (rc != 0) {
        if (err && *err == NULL) *err = xstrdup("the run is busy; try again");
        store_rollback(e->o.st, NULL);
        return -1;
    }
    if (store_run_state_terminal(v.run.state)) {
        eng_run_view_free(&v);
        store_rollback(e->o.st, NULL);
        return 1;
    }
    eng_w(e, store_run_set_state(e->o.st, run_id, v.run.state, STORE_RUN_CANCELLING, "cancelled by request", NULL));
    eng_stop_inflight(e, &v, NULL);
    eng_run_view_free(&v);
    eng_settle_run(e, run_id);
    rc = eng_commit(e, err) == STORE_OK ? 0 : -1;
    e->ready_hint++;
    return rc;
}

/* ---- runs ---- */

/* Inside a run-creating transaction: stores the workflow version's source if no run stored it yet. Returns its
 * slot (mark it stored once the transaction commits), or NULL for a version loaded from the store. */
wf_slot *eng_store_version(engine *e, const wf_workflow *wf, int *rc, char **msg)
{
    for (size_t i = 0; i < e->n_wfs; i++) {
        wf_slot *slot = &e->wfs[i];
        if (slot->wf != wf) continue;
        if (!slot->stored && *rc == STORE_OK) *rc = store_script_put(e->o.st, wf->version, wf->name, wf->source, msg);
        return slot;
    }
    return NULL;
}

static int fail_with(char **err, int code, const char *fmt, const char *a, const char *b)
{
    if (err) *err = util_printf(fmt, a, b ? b : "");
    return code;
}

int engine_start_run(engine *e, const char *workflow, json_t *params, const char *request_key, const char *origin,
                     char *run_id, size_t run_id_len, char **err)
{
    return engine_start_run_at(e, workflow, params, request_key, origin, NULL, 0, run_id, run_id_len, err);
}

int engine_start_run_at(engine *e, const char *workflow, json_t *params, const char *request_key, const char *origin,
                        const engine_run_times *times, int queue, char *run_id, size_t run_id_len, char **err)
{
    const wf_workflow *wf = engine_workflow(e, workflow);
    if (wf == NULL) return fail_with(err, ENG_ERR_NO_WORKFLOW, "no workflow named '%s'%s", workflow, NULL);
    if (params != NULL && !json_is_object(params)) return fail_with(err, ENG_ERR_PARAMS, "params must be an object%s%s", "", NULL);
    /* declared params: required ones present, no unknown ones, defaults filled in */
    json_t *full = params ? json_deep_copy(params) : json_object();
    char *perr = NULL;
    if (wf_apply_params(wf, full, &perr) != 0) {
        json_decref(full);
        if (err) *err = perr;
        else free(perr);
        return ENG_ERR_PARAMS;
    }
    char id[RUN_ID_LEN + 1];
    util_random_id(id, RUN_ID_LEN);
    char *ptext = json_dumps(full, JSON_COMPACT | JSON_SORT_KEYS);
    json_decref(full);
    store_run run = {.id = id, .workflow = wf->name, .script_hash = wf->version, .params_json = ptext,
                     .state = STORE_RUN_RUNNING, .origin = (char *)origin, .request_key = (char *)request_key};
    char *msg = NULL;
    int result = 0, queued = 0;
    int rc = eng_begin(e, &msg);
    /* The source goes into the store with the first run of this version, so that the run can always resume on
     * it (registering hundreds of workflows at start-up writes nothing). */
    wf_slot *slot = eng_store_version(e, wf, &rc, &msg);
    if (rc == STORE_OK) rc = eng_runs_admit(e, wf, &queued, &msg); /* max_active_runs (engine_queue.c) */
    if (queue) queued = 1;
    if (queued) run.state = STORE_RUN_PENDING;
    if (rc == STORE_OK) rc = store_run_create(e->o.st, &run, &msg);
    if (rc == STORE_OK && times != NULL)
        rc = store_run_times_put(e->o.st, id, times->logical_ms, times->start_ms, times->end_ms, &msg);
    if (rc == STORE_EXISTS && request_key != NULL) {
        /* The same request again answers with the run it started; the key with other params is a mistake. */
        store_rollback(e->o.st, NULL);
        free(msg);
        msg = NULL;
        store_run prev = {0};
        rc = store_run_get_by_request_key(e->o.st, request_key, &prev, &msg);
        if (rc == STORE_OK) {
            snprintf(run_id, run_id_len, "%s", prev.id);
            if (strcmp(prev.workflow, wf->name) != 0 || strcmp(prev.params_json ? prev.params_json : "{}", ptext) != 0) {
                msg = util_printf("request_key '%s' already started run %s of %s with other params", request_key,
                                  prev.id, prev.workflow);
                result = ENG_ERR_CONFLICT;
            } else {
                result = 1;
            }
        } else {
            result = ENG_ERR_STORE;
        }
        store_run_free(&prev);
        free(ptext);
        goto out;
    }
    if (rc == STORE_OK && !queued) rc = eng_run_begin(e, wf, id, &msg);
    if (rc == STORE_OK) rc = eng_commit(e, &msg);
    if (rc != STORE_OK && store_in_transaction(e->o.st)) store_rollback(e->o.st, NULL);
    free(ptext);
    if (rc == STORE_OK) {
        if (slot != NULL) slot->stored = 1;
        snprintf(run_id, run_id_len, "%s", id);
        e->ready_hint++;
        log_info("run %s of %s %s", id, wf->name, queued ? "queued (max_active_runs)" : "started");
    } else {
        result = ENG_ERR_STORE;
    }
out:
    if (err != NULL)
        *err = msg;
    else
        free(msg);
    return result;
}

/* Which of the run's steps a redrive keeps where they are: those reached along the success path — the start step,
 * and every step a kept step that succeeded leads to by `next` (or its declared choices). keep[i] is for
 * v->steps.items[i], edges are `wf`'s (the version the run goes on with). Every other step was reached only
 * through a failure (an on_failure step, the steps after it): the redrive runs the failed steps again, so those wait
 * to be reached again, whatever state they ended in. Caller frees. */
static char *success_path(const run_view *v, const wf_workflow *wf)
{
    size_t n = v->steps.count;
    char *keep = xcalloc(n + 1, 1);
    for (size_t i = 0; i < n; i++)
        if (strcmp(v->steps.items[i].name, wf->start) == 0) keep[i] = 1;
    for (int grew = 1; grew;) {
        grew = 0;
        for (size_t i = 0; i < n; i++) {
            if (!keep[i] || v->steps.items[i].state != STORE_STEP_SUCCEEDED) continue;
            int idx = wf_step_index(wf, v->steps.items[i].name);
            if (idx < 0) continue;
            const wf_step *ps = &wf->steps[idx];
            for (size_t k = 0; k < n; k++)
                for (size_t j = 0; !keep[k] && j < ps->n_next; j++)
                    if (strcmp(ps->next[j], v->steps.items[k].name) == 0) keep[k] = 1, grew = 1;
        }
    }
    return keep;
}

int engine_redrive_run(engine *e, const char *run_id, json_t *params, int latest, char **err)
{
    run_view v;
    char *msg = NULL;
    if (eng_run_view_load(e, run_id, &v, &msg) != 0) {
        free(msg);
        return fail_with(err, ENG_ERR_NOTFOUND, "no run '%s'%s", run_id, NULL);
    }
    int result = 0;
    char *ptext = NULL, *keep = NULL;
    const wf_workflow *target = v.wf;
    if (v.run.state != STORE_RUN_FAILED && v.run.state != STORE_RUN_CANCELLED) {
        result = fail_with(err, ENG_ERR_STATE, "run %s is %s: only a failed or cancelled run can be redriven", run_id,
                           store_run_state_name(v.run.state));
        goto done;
    }
    if (latest) {
        target = engine_workflow(e, v.run.workflow);
        if (target == NULL) {
            result = fail_with(err, ENG_ERR_STATE, "workflow %s of run %s is no longer loaded: redrive it without --latest",
                               v.run.workflow, run_id);
            goto done;
        }
        for (size_t i = 0; i < v.steps.count; i++)
            if (wf_step_index(target, v.steps.items[i].name) < 0) {
                result = fail_with(err, ENG_ERR_STATE, "the current version of %s has no step %s: redrive it on its own "
                                   "version (without --latest)", v.run.workflow, v.steps.items[i].name);
                goto done;
            }
    }
    if (params != NULL) {
        json_t *merged = json_loads(v.run.params_json ? v.run.params_json : "{}", 0, NULL);
        if (merged == NULL) merged = json_object();
        json_object_update(merged, params);
        char *perr = NULL;
        if (wf_apply_params(target, merged, &perr) != 0) {
            json_decref(merged);
            if (err) *err = perr;
            else free(perr);
            result = ENG_ERR_PARAMS;
            goto done;
        }
        ptext = json_dumps(merged, JSON_COMPACT | JSON_SORT_KEYS);
        json_decref(merged);
    }
    int rc = eng_begin(e, &msg);
    if (rc == STORE_OK && eng_lock_run(e, run_id, 1) != 1) {
        rc = STORE_BUSY;
        if (msg == NULL) msg = xstrdup("the run is busy; try again");
    }
    wf_slot *slot = rc == STORE_OK && target != v.wf ? eng_store_version(e, target, &rc, &msg) : NULL;
    if (rc == STORE_OK)
        rc = store_run_redrive(e->o.st, run_id, v.run.state, target != v.wf ? target->version : NULL, ptext, &msg);
    /* Steps on the success path stay: succeeded ones with their results, failed and cancelled ones start again (a
     * new attempt, so a new job name, whenever they had launched). A step reached only through a failure — an
     * on_failure step and what followed it, succeeded or not — waits (skipped) to be reached again: if the failure
     * happens again it runs again (activate), so an alert is not lost; if not, it does not run. */
    if (rc == STORE_OK) keep = success_path(&v, target);
    int restarted = 0;
    for (size_t i = 0; rc == STORE_OK && i < v.steps.count; i++) {
        const store_step *s = &v.steps.items[i];
        store_step_state next;
        if (keep[i] && (s->state == STORE_STEP_FAILED || s->state == STORE_STEP_CANCELLED))
            next = STORE_STEP_PENDING;
        else if (!keep[i] && (s->state == STORE_STEP_SUCCEEDED || s->state == STORE_STEP_FAILED ||
                              s->state == STORE_STEP_CANCELLED))
            next = STORE_STEP_SKIPPED;
        else
            continue;
        rc = store_step_set_state(e->o.st, run_id, s->name, s->state, s->attempt, next, &msg);
        if (rc == STORE_OK && next == STORE_STEP_PENDING) {
            rc = store_step_set_check(e->o.st, run_id, s->name, s->attempt, 0, 0, NULL, &msg);
            restarted++;
        }
    }
    if (rc == STORE_OK && restarted == 0) {
        msg = util_printf("run %s has no failed or cancelled step to run again", run_id);
        rc = STORE_CONFLICT;
    }
    /* The run starts again: its deadline counts from now (one already missed stays missed), and it says so. */
    if (rc == STORE_OK && target->deadline > 0)
        rc = store_deadline_arm(e->o.st, run_id, "", eng_now_ms(e) + (int64_t)(target->deadline * 1000.0), &msg);
    if (rc == STORE_OK) eng_emit(e, target, run_id, WF_EV_STARTED, 0);
    if (rc == STORE_OK) rc = eng_commit(e, &msg);
    if (rc != STORE_OK && store_in_transaction(e->o.st)) store_rollback(e->o.st, NULL);
    if (rc == STORE_OK) {
        if (slot != NULL) slot->stored = 1;
        e->ready_hint++;
        log_info("run %s of %s redriven: %d step(s) run again%s", run_id, v.run.workflow, restarted,
                 target != v.wf ? " on the current version" : "");
    } else {
        result = rc == STORE_CONFLICT ? ENG_ERR_STATE : ENG_ERR_STORE;
        if (err) {
            *err = msg;
            msg = NULL;
        }
    }
done:
    free(keep);
    free(msg);
    free(ptext);
    eng_run_view_free(&v);
    return result;
}

/* ---- adopting a job Sluice did not launch (sluice serve --adopt-foreign) ---- */

int engine_adopt_job(engine *e, const char *workflow, const char *step, const char *job_id, const char *job_name,
                     const char *project, const char *region, char *run_id, size_t run_id_len, char **err)
{
    const wf_workflow *wf = engine_workflow(e, workflow);
    int idx = wf ? wf_step_index(wf, step) : -1;
    if (idx < 0 || (job_id == NULL && job_name == NULL)) {
        if (err) *err = xstrdup("no such workflow or step, or no job named");
        return -1;
    }
    const wf_step *ws = &wf->steps[idx];
    char key[600];
    snprintf(key, sizeof key, "adopt:%s", job_id ? job_id : job_name);
    char id[RUN_ID_LEN + 1];
    util_random_id(id, RUN_ID_LEN);
    store_run run = {.id = id, .workflow = wf->name, .script_hash = wf->version, .params_json = "{}",
                     .state = STORE_RUN_RUNNING, .origin = "adopted", .request_key = key};
    int rc = eng_begin(e, err);
    wf_slot *slot = eng_store_version(e, wf, &rc, err);
    if (rc == STORE_OK) rc = store_run_create(e->o.st, &run, err);
    if (rc == STORE_EXISTS) { /* the same job was adopted before (another event about it) */
        store_rollback(e->o.st, NULL);
        if (err) {
            free(*err);
            *err = NULL;
        }
        store_run prev = {0};
        rc = store_run_get_by_request_key(e->o.st, key, &prev, err);
        if (rc == STORE_OK) snprintf(run_id, run_id_len, "%s", prev.id);
        store_run_free(&prev);
        return rc == STORE_OK ? 1 : -1;
    }
    /* The step starts as running with the job's identity: the reconciler confirms its state with jobs.get at
     * once and the usual path (finish, successors) follows. */
    store_step st = {.run_id = id, .name = ws->name, .attempt = 1, .state = STORE_STEP_RUNNING,
                     .job_name = (char *)job_name, .job_id = (char *)job_id,
                     .project = (char *)(ws->project ? ws->project : wf->project ? wf->project : project),
                     .region = (char *)(ws->region ? ws->region : wf->region ? wf->region : region),
                     .started_at = eng_now_ms(e), .next_check_at = 0};
    if (rc == STORE_OK) rc = store_step_insert(e->o.st, &st, err);
    if (rc == STORE_OK) eng_emit(e, wf, id, WF_EV_STARTED, 0);
    if (rc == STORE_OK) rc = eng_commit(e, err);
    if (rc != STORE_OK && store_in_transaction(e->o.st)) store_rollback(e->o.st, NULL);
    if (rc != STORE_OK) return -1;
    if (slot != NULL) slot->stored = 1;
    snprintf(run_id, run_id_len, "%s", id);
    e->ready_hint++;
    log_info("run %s of %s adopted job %s at step %s", id, wf->name, job_name ? job_name : job_id, ws->name);
    return 0;
}

int engine_run_over(engine *e, const char *run_id)
{
    run_view v;
    if (eng_run_view_load(e, run_id, &v, NULL) != 0) return -1;
    int over = store_run_state_terminal(v.run.state);
    if (over && v.run.state == STORE_RUN_FAILED) {
        int handler_seen = v.wf->failure_handler == NULL;
        for (size_t i = 0; i < v.steps.count; i++) {
            const store_step *s = &v.steps.items[i];
            int handler = v.wf->failure_handler != NULL && strcmp(s->name, v.wf->failure_handler) == 0;
            int active = s->state == STORE_STEP_PENDING || s->state == STORE_STEP_LAUNCHING ||
                         s->state == STORE_STEP_RUNNING || s->state == STORE_STEP_CANCELLING;
            if (handler) handler_seen = s->state != STORE_STEP_SKIPPED;
            if (active && (handler || v.wf->cancel_on_failure)) over = 0;
        }
        /* a handler not started yet is started once the others are stopped */
        if (!handler_seen && v.wf->failure_handler != NULL && wf_step_index(v.wf, v.wf->failure_handler) >= 0) over = 0;
    }
    eng_run_view_free(&v);
    return over;
}
