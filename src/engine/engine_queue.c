/* engine_queue: a workflow's max_active_runs: a run started beyond the limit is created pending (queued) and starts,
 * oldest first, when a run of the workflow ends (or at the periodic check, for an end another process handled before
 * it knew of the limit). The count and the order are the store's (store_run_slots, store_run_queued), under a lock
 * per workflow, so the limit holds across replicas.
 * Uses: engine_internal.h, store, workflow, log. Must not: send anything to Dataflow or call Lua. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine_internal.h"
#include "log.h"
#include "util.h"

/* How often the tick looks for queued runs that could start (a wake lost with a crashed replica). */
#define QUEUE_CHECK_MS 1000
#define PROMOTE_BATCH 100

/* How many runs of wf may be active before queued ones wait: max_active_runs, else 1 for a schedule with overlap
 * buffer_one (its buffered run waits for the active one), else 0 (no limit). */
static int run_limit(const wf_workflow *wf)
{
    if (wf == NULL) return 0;
    if (wf->max_active_runs > 0) return wf->max_active_runs;
    return wf->schedule.cron != NULL && wf->schedule.overlap == WF_OVERLAP_BUFFER_ONE ? 1 : 0;
}

int eng_runs_admit(engine *e, const wf_workflow *wf, int *queued, char **msg)
{
    *queued = 0;
    if (wf->max_active_runs <= 0) return STORE_OK;
    int64_t active = 0;
    int rc = store_run_slots(e->o.st, wf->name, &active, msg);
    if (rc != STORE_OK) return rc;
    /* Runs queued earlier go first: a new run waits behind them even when a slot is free this instant. */
    char **ids = NULL;
    size_t n = 0;
    if (active < wf->max_active_runs && (rc = store_run_queued(e->o.st, wf->name, 1, &ids, &n, msg)) != STORE_OK) return rc;
    for (size_t i = 0; i < n; i++) free(ids[i]);
    free(ids);
    *queued = active >= wf->max_active_runs || n > 0;
    return STORE_OK;
}

int eng_run_begin(engine *e, const wf_workflow *wf, const char *run_id, char **msg)
{
    store_step first = {.run_id = (char *)run_id, .name = wf->steps[wf->start_index].name, .attempt = 1,
                        .state = STORE_STEP_PENDING};
    int rc = store_step_insert(e->o.st, &first, msg);
    if (rc == STORE_OK && wf->deadline > 0)
        rc = store_deadline_arm(e->o.st, run_id, "", eng_now_ms(e) + (int64_t)(wf->deadline * 1000.0), msg);
    if (rc == STORE_OK) eng_emit(e, wf, run_id, WF_EV_STARTED, 0);
    if (rc == STORE_OK) e->ready_hint++;
    return rc;
}

void eng_runs_promote(engine *e, const char *workflow)
{
    int limit = run_limit(engine_workflow(e, workflow));
    char *err = NULL;
    int room = PROMOTE_BATCH;
    if (limit > 0) {
        int64_t active = 0;
        if (store_run_slots(e->o.st, workflow, &active, &err) != STORE_OK) {
            log_warn("engine: cannot count the runs of %s: %s", workflow, err ? err : "?");
            free(err);
            return;
        }
        room = (int)(limit - active);
        if (room <= 0) return;
        if (room > PROMOTE_BATCH) room = PROMOTE_BATCH;
    }
    /* Without a limit (none declared, or a reload removed it, or the workflow is gone) queued runs all go. */
    char **ids = NULL;
    size_t n = 0;
    if (store_run_queued(e->o.st, workflow, room, &ids, &n, &err) != STORE_OK) {
        log_warn("engine: cannot list the queued runs of %s: %s", workflow, err ? err : "?");
        free(err);
        return;
    }
    for (size_t i = 0; i < n; i++) {
        store_run run = {0};
        const wf_workflow *wf = NULL;
        if (eng_lock_run(e, ids[i], 0) == 1 && store_run_get(e->o.st, ids[i], &run, NULL) == STORE_OK &&
            run.state == STORE_RUN_PENDING && (wf = eng_wf_by_version(e, run.script_hash, &err)) != NULL &&
            store_run_set_state(e->o.st, ids[i], STORE_RUN_PENDING, STORE_RUN_RUNNING, NULL, &err) == STORE_OK &&
            eng_run_begin(e, wf, ids[i], &err) == STORE_OK)
            log_info("run %s of %s leaves the queue and starts", ids[i], workflow);
        else if (err != NULL)
            log_warn("run %s of %s: cannot start it from the queue: %s", ids[i], workflow, err);
        free(err);
        err = NULL;
        store_run_free(&run);
        free(ids[i]);
    }
    free(ids);
}

void eng_runs_promote_all(engine *e)
{
    int64_t now = eng_mono_ms(e);
    if (now < e->queue_next_ms) return;
    e->queue_next_ms = now + QUEUE_CHECK_MS;
    for (size_t c = 0; c < e->n_current; c++) {
        const wf_workflow *wf = engine_workflow(e, e->current_names[c]);
        if (run_limit(wf) > 0) eng_runs_promote(e, wf->name);
    }
}

void eng_ctx_times(engine *e, const char *run_id, json_t *run)
{
    int64_t lt, start, end;
    if (run == NULL || store_run_times_get(e->o.st, run_id, &lt, &start, &end, NULL) != STORE_OK) return;
    char a[40], b[40], c[40];
    json_object_set_new(run, "logical_time", json_string(util_rfc3339(lt, a, sizeof a)));
    json_object_set_new(run, "interval", json_pack("{s:s,s:s}", "start", util_rfc3339(start, b, sizeof b), "end",
                                                  util_rfc3339(end, c, sizeof c)));
}

const wf_workflow *engine_current_at(engine *e, size_t i)
{
    return i < e->n_current ? engine_workflow(e, e->current_names[i]) : NULL;
}
