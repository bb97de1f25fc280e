/* engine: runs workflows. A state machine per run, kept in the store; decisions made with the workflow's Lua
 * functions (through workflow/lua_host); Dataflow reached through jobs_api. Every step is launched exactly once:
 * the launch intent is committed before the request is sent, and an intent without a job id is resolved by
 * looking the name up, never by a blind re-send. Events are hints: a job's end is always confirmed with the API.
 * Uses: store, workflow, jobs_api, reconciler, events (types), util, log.
 * Must not: do HTTP itself, parse events, or call Lua except through workflow.
 *
 * Single-threaded: one thread calls engine_tick in a loop; the other functions are called from that thread
 * between ticks. Other processes or threads may write events into the same store (the inbox). */
#ifndef SLUICE_ENGINE_H
#define SLUICE_ENGINE_H
#include <jansson.h>
#include <stdint.h>

#include "events.h"
#include "jobs_api.h"
#include "reconciler.h"
#include "run_events.h"
#include "store.h"
#include "workflow.h"

typedef struct engine engine;

/* Errors of the calls below, each with a message in *err (result.h's rule 1; a 1 is a success: the run existed). */
typedef enum {
    ENG_ERR_STORE = -1,       /* the store failed (retry later) */
    ENG_ERR_NO_WORKFLOW = -2, /* no workflow of that name is loaded */
    ENG_ERR_PARAMS = -3,      /* params are not an object, miss a required declared param, or name an unknown one */
    ENG_ERR_CONFLICT = -4,    /* the request_key started another run with other params */
    ENG_ERR_STATE = -5,       /* the run is not in a state that allows the call */
    ENG_ERR_NOTFOUND = -6,    /* no such run */
} eng_rc;

typedef struct {
    store *st;                   /* borrowed; must outlive the engine */
    jobs_api *api;               /* borrowed */
    int64_t (*now_ms)(void *ud); /* NULL: wall clock */
    void *clock_ud;
    const char *default_project; /* for workflows that name no project (may be NULL) */
    rec_policy rec;              /* zeroes: rec_policy_default() */
    int max_due;                 /* steps taken from the store per tick; 0: 500 */
    int max_inflight;            /* API calls outstanding at most; 0: 256 (about the HTTP connections: more only queue in libcurl) */
    lh_limits lua;               /* budgets, watch and observer of the workflow VMs the engine loads itself (a
                                  * run's version from the store's source); zeroes: lua_host defaults. Workflows
                                  * handed to it (engine_set_workflows) keep the limits they were loaded with */
    /* Called just before a launch request is handed to the API (fault injection: tests pause or kill the
     * process there, or move a fake clock); NULL: nothing. */
    void (*before_launch)(void *ud, const char *job_name);
    void *before_launch_ud;
    /* The server's notification sinks (each workflow's notify comes on top); zeroes: none. Run events go to the
     * store's outbox in the transaction of their transition (run_events.h); notify.c delivers them. */
    rev_sinks notify;
    /* How long a failed run's event waits for its failed job's cause before it may be delivered without it (ms;
     * 0: 15000). */
    int64_t cause_hold_ms;
    /* A pool per Dataflow project and region: at most this many steps launching, running or cancelling there at
     * once, counted in the store (so across replicas); launches beyond it wait, oldest first, and go when a job
     * ends. 0: no limit. Launches Dataflow refuses for quota wait the same way whatever this says. */
    int max_active_jobs;
} engine_options;

typedef struct {
    int64_t launches_sent;   /* launch requests handed to the API (re-sends included) */
    int64_t launches_ok;     /* launches that produced (or adopted) a job */
    int64_t adopted;         /* intents resolved by finding the job by name */
    int64_t checks;          /* jobs.get / look-ups sent */
    int64_t events;          /* inbox events consumed */
    int64_t steps_succeeded, steps_failed, runs_succeeded, runs_failed, runs_cancelled;
    int64_t runs_recovered;  /* succeeded after on_failure handled a step's failure (also in runs_succeeded) */
    int64_t commit_failures;
    int64_t fenced;          /* launches not sent: their claim ran out first (another engine may have the step) */
    int64_t claims_lost;     /* answers that would have launched, applied after the step's claim passed on */
    int64_t run_busy;        /* answers and starts put off: another engine held their run */
    int64_t deadlines_missed; /* deadline_missed events (a run's or a step's deadline passed with it still going) */
    int64_t handlers_started; /* failure handlers started */
    int64_t pool_waits;      /* launches held back because their job pool was full */
    int64_t pool_wakes;      /* waiting steps a job's end made due at once (pool or quota waits) */
    int64_t quota_refusals;  /* launches Dataflow refused for quota (the steps waited and went again) */
} engine_stats;

engine *engine_new(const engine_options *opts, char **err);
/* Frees the engine. The engine and its API may be freed in either order: a call the API still holds stays the
 * API's until its callback runs (jobs_api: from poll or from free), and the callback of a call whose engine is
 * gone only releases the call. Intents sent but unanswered are resolved by the next engine (look-up by name). */
void engine_free(engine *e);

/* Registers a workflow (takes ownership) as the current version of its name. Its source is stored by hash with
 * the first run that uses it, so runs can always resume on the version they started with. Returns 0 (-1 with
 * *err is reserved for backends that must write at registration). */
int engine_add_workflow(engine *e, wf_workflow *wf, char **err);
/* Makes exactly these workflows current (a reload): each is registered as its name's current version (taking a
 * reference: the caller keeps its own); a workflow no longer among them starts no new runs, while runs in flight
 * keep the version they started with. Returns 0. */
int engine_set_workflows(engine *e, wf_workflow *const *wfs, size_t n);
/* The i-th current workflow (0 ..), NULL past the last: iterates the loaded set. Borrowed until the engine is freed. */
const wf_workflow *engine_current_at(engine *e, size_t i);
/* The current version of a workflow, or NULL. Borrowed until the engine is freed. */
const wf_workflow *engine_workflow(engine *e, const char *name);

/* Starts a run of the current version of `workflow`. params (borrowed, may be NULL) become ctx.run.params, after
 * the workflow's declared params are checked and their defaults filled in. request_key (may be NULL) makes the
 * call idempotent: a second call with the same key and params returns the first run's id and 1 (with other
 * params: ENG_ERR_CONFLICT). run_id receives the id (≥ 16 bytes). Returns 0 (a new run), 1, or an ENG_ERR_*
 * with *err (caller frees). */
int engine_start_run(engine *e, const char *workflow, json_t *params, const char *request_key, const char *origin,
                     char *run_id, size_t run_id_len, char **err);

/* A run's logical time and data interval (unix ms): ctx.run.logical_time and ctx.run.interval = {start, end}. */
typedef struct {
    int64_t logical_ms, start_ms, end_ms;
} engine_run_times;
/* engine_start_run with a logical time (times may be NULL) for a scheduled or backfilled run; queue = 1 creates the
 * run pending (queued) whatever max_active_runs says (overlap = "buffer_one"): it starts when a run of the
 * workflow ends. */
int engine_start_run_at(engine *e, const char *workflow, json_t *params, const char *request_key, const char *origin,
                        const engine_run_times *times, int queue, char *run_id, size_t run_id_len, char **err);

/* Re-runs a failed or cancelled run: its failed and cancelled steps start again (a new attempt, so a new job name,
 * for each that had launched), its succeeded steps and their results stay, a step that only a failure had
 * reached waits to be reached again. params (borrowed, may be NULL) are merged over the run's. latest: move the
 * run to its workflow's current version (refused when that version lacks a step the run has). Returns 0 or an
 * ENG_ERR_* with *err (caller frees). */
int engine_redrive_run(engine *e, const char *run_id, json_t *params, int latest, char **err);

/* Asks a run to stop: pending steps are cancelled, in-flight jobs cancelled or drained per step. Returns 0,
 * 1 if the run had already finished, or -1 with *err. */
int engine_cancel_run(engine *e, const char *run_id, char **err);

/* Starts a run of `workflow` whose step `step` is a job Sluice did not launch (job_id and/or job_name; project
 * and region are used when neither step nor workflow names them): the step begins as running with that job, is
 * confirmed with the API, and the run goes on from there. Idempotent per job: adopting the same job again
 * returns the first run's id and 1. Returns 0 (new run), 1, or -1 with *err (caller frees). */
int engine_adopt_job(engine *e, const char *workflow, const char *step, const char *job_id, const char *job_name,
                     const char *project, const char *region, char *run_id, size_t run_id_len, char **err);

/* When the store next has work due (unix ms, as the engine's clock; INT64_MAX: none), as of the last tick. A
 * caller with nothing else to wait for may sleep until then. */
int64_t engine_next_due(const engine *e);

/* The latest re-check this engine has scheduled of a job it expects to end (an event said so, or it was stopped:
 * the API may lag behind for a few seconds), unix ms as the engine's clock; in the past (or 0) when none is
 * pending. With CPU only during requests, a held answer waits for it (engine_loop): once the answer is sent the
 * process may get no CPU until the next request, and the re-check would wait for the next reconcile tick. */
int64_t engine_expecting_until(const engine *e);

/* One iteration: waits up to max_wait_ms for API answers (less when work is due sooner; with no call
 * outstanding it sleeps, and a signal cuts the sleep short), then in one transaction
 * applies answers, consumes inbox events, and starts or checks due steps; then sends the requests that the
 * transaction recorded. Returns the number of API calls outstanding plus the steps known to be ready now
 * (0 means idle), or -1 on a store failure (the tick's effects were rolled back and will be redone). */
int engine_tick(engine *e, int max_wait_ms);

/* Whether a run is over as `sluice run` waits for it: in a terminal state, and, when it failed, with its failure
 * handler done and (on_run_failure = "cancel") its other jobs stopped. 1 over, 0 not yet, -1 no such run. */
int engine_run_over(engine *e, const char *run_id);

/* Counters since engine_new. */
engine_stats engine_get_stats(const engine *e);

#endif
