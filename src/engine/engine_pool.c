/* engine_pool: the engine's side of capacity: admitting a launch into its project and region's job pool
 * (engine_options.max_active_jobs), putting a step whose launch Dataflow refused for quota back to wait, and waking
 * the oldest waiters when a job ends. The counting and the waiting list are the store's (store_sched.c), so the pool
 * holds across replicas on a shared store.
 * Uses: engine_internal.h, store, log. Must not: send anything to Dataflow, or call Lua. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine_internal.h"
#include "log.h"

/* A waiting step is due again after this long even if no job end wakes it (a wake lost with a crashed replica). */
#define POOL_RECHECK_MS 5000

int eng_pool_admit(engine *e, const char *run_id, const char *name, int attempt, const char *project,
                   const char *region)
{
    if (e->o.max_active_jobs <= 0 || project == NULL || region == NULL) return 1;
    char *err = NULL;
    int64_t active = 0, now = eng_now_ms(e);
    int rc = store_pool_active(e->o.st, project, region, &active, &err);
    if (rc == STORE_OK && active < e->o.max_active_jobs) return 1;
    char note[300];
    if (rc != STORE_OK) {
        log_error("run %s: step %s: cannot count the jobs of %s/%s: %s", run_id, name, project, region, err ? err : "?");
        snprintf(note, sizeof note, "waiting: the job pool of %s/%s could not be read", project, region);
    } else {
        snprintf(note, sizeof note, "waiting for a slot: %lld of %d jobs active in %s/%s", (long long)active,
                 e->o.max_active_jobs, project, region);
    }
    free(err);
    err = NULL;
    if (store_step_wait_capacity(e->o.st, run_id, name, STORE_STEP_PENDING, attempt, project, region,
                                 now + POOL_RECHECK_MS, note, &err) != STORE_OK)
        log_warn("run %s: step %s: cannot put it to wait: %s", run_id, name, err ? err : "?");
    else
        log_debug("run %s: step %s: %s", run_id, name, note);
    free(err);
    e->stats.pool_waits++;
    return 0;
}

void eng_pool_refused(engine *e, const store_step *st, const ja_result *r)
{
    char *err = NULL;
    int64_t now = eng_now_ms(e), since = 0;
    if (st->project == NULL || st->region == NULL) return;
    eng_w(e, store_step_wait_since(e->o.st, st->run_id, st->name, &since, NULL));
    /* The longer it has waited, the less often it asks (1 s up to 30 s); a job's end wakes it before that. */
    int64_t delay = since > 0 ? (now - since) / 2 : 0;
    if (delay < 1000) delay = 1000;
    if (delay > 30000) delay = 30000;
    if (r->retry_delay_ms > delay) delay = r->retry_delay_ms;
    char note[700];
    snprintf(note, sizeof note, "waiting for quota: launch refused (HTTP %ld): %.500s", r->http_status,
             r->message ? r->message : "");
    if (store_step_wait_capacity(e->o.st, st->run_id, st->name, STORE_STEP_LAUNCHING, st->attempt, st->project,
                                 st->region, now + delay, note, &err) != STORE_OK)
        log_warn("run %s: step %s: cannot put it back to wait for quota: %s", st->run_id, st->name, err ? err : "?");
    else
        log_info("run %s: step %s: launch of %s refused for quota; waits (next try in %lld ms or when a job ends)",
                 st->run_id, st->name, st->job_name ? st->job_name : "?", (long long)delay);
    free(err);
    e->stats.quota_refusals++;
}

void eng_pool_freed(engine *e, const char *project, const char *region)
{
    if (project == NULL || region == NULL) return;
    int n = 1, woken = 0;
    char *err = NULL;
    if (e->o.max_active_jobs > 0) {
        int64_t active = 0;
        if (store_pool_active(e->o.st, project, region, &active, NULL) == STORE_OK && active < e->o.max_active_jobs)
            n = (int)(e->o.max_active_jobs - active);
    }
    if (store_pool_wake(e->o.st, project, region, n, &woken, &err) != STORE_OK)
        log_warn("engine: cannot wake the steps waiting for %s/%s: %s", project, region, err ? err : "?");
    free(err);
    if (woken > 0) e->ready_hint++;
    e->stats.pool_wakes += woken;
}
