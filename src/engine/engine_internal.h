/* engine_internal: what the engine's files share: engine.c (the tick, its outbox), engine_settle.c (a run's
 * transitions), engine_start.c (starting due pending steps), engine_answers.c (checks and API answers),
 * engine_context.c (a step's Lua context), engine_runs.c (run commands and the registry of workflow versions) and
 * the smaller ones below. Private to the engine: nothing else includes it.
 * Uses: engine.h, decide, store, workflow. */
#ifndef SLUICE_ENGINE_INTERNAL_H
#define SLUICE_ENGINE_INTERNAL_H
#include "decide.h"
#include "engine.h"

#define RUN_ID_LEN 10

typedef enum { OP_LAUNCH, OP_GET, OP_FIND, OP_STOP, OP_MESSAGES } op_kind;

typedef struct eng_op {
    engine *e;
    op_kind kind;
    char *run_id, *step, *project, *region, *job_id, *job_name;
    int attempt;
    int drain;
    launch_req *launch; /* OP_LAUNCH */
    int64_t claim;        /* OP_LAUNCH, OP_FIND: the next_check_at this engine wrote with its claim on the step */
    int64_t claimed_mono; /* OP_LAUNCH: when that claim was made (eng_mono_ms): it bounds when the launch may leave
                           * and how long it may stay in flight (launch_send_by, launch_gone_by in engine.c) */
    ja_result res;     /* filled by the callback */
    char *note;        /* why its last attempt failed while the API retries it (engine_notes.c); NULL: none */
    int note_dirty;    /* the note is not in the store yet */
    struct eng_op *next;
    struct eng_op *sent_prev, *sent_next; /* in e->sent while the API holds it */
} eng_op;

typedef struct {
    char *version;
    wf_workflow *wf;
    int stored; /* its source is in the store (written with the first run that uses it) */
} wf_slot;

typedef struct busy_node {
    char *key;
    struct busy_node *next;
} busy_node;
#define BUSY_BUCKETS 4096

struct engine {
    engine_options o;
    wf_slot *wfs;
    size_t n_wfs;
    char **current_names, **current_versions;
    size_t n_current;
    eng_op *outbox, *outbox_tail; /* to send after the commit */
    eng_op *done;                 /* answered, to apply in the next transaction */
    eng_op *sent;                 /* handed to the API and not answered yet */
    int inflight;                 /* sent and not yet answered */
    int ready_hint;               /* work created this tick that the next tick should take at once */
    busy_node *busy[BUSY_BUCKETS];
    int64_t next_due;             /* earliest due work in the store after the last tick (INT64_MAX: none) */
    int64_t expect_until;         /* the latest re-check scheduled for a job expected to end (engine_expecting_until) */
    int recovered;                /* the first tick has voided the leases of the process before this one */
    engine_stats stats;
    int64_t queue_next_ms;        /* when the tick next looks for queued runs that may start (engine_queue.c) */
    int tx_failed;                /* a store call of the open transaction failed (eng_w): it must not commit */
};

/* A run with its steps and its workflow version, read in one go. */
typedef struct {
    store_run run;
    store_step_list steps;
    const wf_workflow *wf;
} run_view;

/* The engine's transactions (the tick's and each command's). A store call whose result the caller has no other use
 * for is wrapped in eng_w: a failure other than "not found", "exists" or a lost compare-and-set (the step moved,
 * which the next tick sees) marks the open transaction failed, and eng_commit then rolls it back instead of
 * committing, so the work is redone whole — the same on every backend (PostgreSQL aborts a transaction at its first
 * failed statement by itself; SQLite and Firestore would otherwise commit the rest without the failed write). */
int eng_w(engine *e, int rc);
int eng_begin(engine *e, char **err);
/* STORE_OK, or the error with the transaction rolled back (*err says why). */
int eng_commit(engine *e, char **err);

int64_t eng_now_ms(engine *e);
/* Monotonic ms (the fake clock when the options give one): claims' fences are measured with it. */
int64_t eng_mono_ms(engine *e);
/* Inside a transaction: locks the run against other engines on a shared store (wait = 1: waits for it). 1 when
 * held (always on a store one engine owns), 0 when another engine has it, -1 on an error (logged unless the run is
 * gone): callers that test for 0 then go on, and the store reports what is wrong on their next statement. */
int eng_lock_run(engine *e, const char *run_id, int wait);
/* 0, or -1 with *err (caller frees). */
int eng_run_view_load(engine *e, const char *run_id, run_view *v, char **err);
void eng_run_view_free(run_view *v);
/* Cancels pending steps and stops the in-flight jobs of a run (all but `except`). */
void eng_stop_inflight(engine *e, run_view *v, const char *except);
/* Re-reads the run after a change: releases ready joins, and finishes the run when nothing is active. */
void eng_settle_run(engine *e, const char *run_id);
/* Inside the transition's transaction: the run event `ev` goes to the outbox for the sinks that take it (logged on
 * failure; the transition stands). hold_ms: see rev_emit. */
void eng_emit(engine *e, const wf_workflow *wf, const char *run_id, wf_run_event ev, int64_t hold_ms);
/* A workflow version by its hash: registered, or loaded from the store's source. NULL with *err. Borrowed. */
const wf_workflow *eng_wf_by_version(engine *e, const char *version, char **err);
/* Inside a run-creating transaction: stores the version's source if no run stored it yet. Returns its slot
 * (mark it stored once the transaction commits), or NULL for a version loaded from the store. */
wf_slot *eng_store_version(engine *e, const wf_workflow *wf, int *rc, char **msg);

/* engine.c: the outbox. A new API call about the step `st` (its run, name, attempt, project, region, job). */
eng_op *eng_op_new(engine *e, op_kind kind, const store_step *st);
/* Queues an API call to send after the commit; the step is busy until its answer is applied. */
void eng_outbox_push(engine *e, eng_op *op);
/* Marks the step busy (on = 1: a call about it is queued or in flight, so the tick does not take it) or not. */
void eng_busy_set(engine *e, const char *run, const char *step, int on);

/* engine_settle.c: a run's transitions, inside the tick's transaction. */
/* Whether `step` is its workflow's failure handler: it runs while its run is failed. */
int eng_is_handler(const wf_workflow *wf, const char *step);
/* Whether `step` of a run in `state` may still start and follow its job: the run is running, or the run failed and
 * the step is the failure handler. */
int eng_run_goes_on_for(store_run_state state, const wf_workflow *wf, const char *step);
/* The step succeeded (job_state: its job's final state, NULL for a hook; result: what its attempt records, may be
 * NULL): records it, then starts what comes next (unless the run stopped meanwhile). */
void eng_step_succeeded(engine *e, const store_step *st, const char *job_state, json_t *result);
/* The step's attempt failed with `why` (outcome `o`, a failure class): decide's retry, the on_failure step, or the
 * run's failure (stopping its other jobs when the workflow says so). */
void eng_step_failed(engine *e, const store_step *st, const char *job_state, const char *why, dec_outcome o);

/* engine_context.c: the context `ws` receives (wf_step_context) from the run's stored steps, for its `attempt`.
 * New reference; NULL when it cannot be formed. */
json_t *eng_build_ctx(engine *e, const wf_workflow *wf, const wf_step *ws, const store_run *run,
                      const store_step_list *steps, int attempt);

/* engine_start.c: starting a due pending step, in three phases (see there). */
typedef enum { PREP_PARK, PREP_STOPPED, PREP_FAIL, PREP_HOOK, PREP_LAUNCH } prep_kind;

typedef struct eng_prepared {
    struct eng_prepared *next;
    prep_kind kind;
    char *run_id, *name, *job_name; /* the due step: job_name is the last attempt's (NULL before any launch) */
    int attempt;
    char *why;         /* PREP_FAIL */
    json_t *output;    /* PREP_HOOK */
    launch_req *l;     /* PREP_LAUNCH */
    double timeout;    /* PREP_LAUNCH: the step's timeout in seconds (0: none) */
    double deadline;   /* PREP_LAUNCH: the step's soft deadline in seconds (0: none) */
    int64_t claimed_mono; /* PREP_LAUNCH: the step's claim was made no earlier than this (eng_mono_ms) */
} eng_prepared;

/* In the first transaction: a due pending step, taken to be started. */
eng_prepared *eng_prepared_new(const store_step *st);
/* Frees a list of them. */
void eng_prepared_free(eng_prepared *p);
/* No transaction open: reads the run and calls the step's Lua. */
void eng_prepare_step(engine *e, eng_prepared *p);
/* In the second transaction: records what eng_prepare_step found (a launch intent goes to the outbox). */
void eng_start_prepared(engine *e, eng_prepared *p);

/* engine_answers.c: steps in flight. */
/* Inside the tick's transaction: dispatches a due in-flight step: leases it and queues the check the reconciler
 * asks for. */
void eng_check_step(engine *e, const store_step *st);
/* Applies one answer in the tick's transaction. Returns 1 when it must wait for a later tick: another engine
 * holds the run (an answer may finish the step and start what follows, which needs the run to itself). */
int eng_apply_answer(engine *e, eng_op *op);

/* engine_notes.c: a Dataflow call that keeps failing, shown on its step (the step's `error` while in flight,
 * store_step_set_note) and so in `sluice status`, the API and the UI.
 * Installs the retry hook on the engine's jobs_api (engine_new). */
void eng_notes_install(engine *e);
/* Inside the tick's transaction, before the answers are applied: records the notes the hook took since. */
void eng_notes_flush(engine *e);
/* Inside the transaction, as an answer about the in-flight step `st` is applied (before what it decides): an
 * answer clears the step's note; a failure that leaves the step to be retried later records why. */
void eng_note_answer(engine *e, const eng_op *op, const store_step *st);

/* engine_pool.c: capacity (job pools per project and region, and launches refused for quota).
 * In the tick's second transaction, before a launch intent is recorded: 1 when the step may launch now; 0 when its
 * pool is full, and then the step waits (pending, woken when a slot frees). */
int eng_pool_admit(engine *e, const char *run_id, const char *name, int attempt, const char *project,
                   const char *region);
/* A launch answered JA_QUOTA: the step goes back to wait, with backoff, for capacity in its project and region. */
void eng_pool_refused(engine *e, const store_step *st, const ja_result *r);
/* A step that held a slot of project/region let it go (its job ended, its launch was refused): the oldest waiters
 * become due. */
void eng_pool_freed(engine *e, const char *project, const char *region);

/* engine_queue.c: max_active_runs. Inside the run-creating transaction: *queued = 1 when a run of wf must wait
 * (created pending) instead of starting. A store_rc with *msg on failure. */
int eng_runs_admit(engine *e, const wf_workflow *wf, int *queued, char **msg);
/* Inside a transaction: a run of wf begins: its first step, its deadline, its started event. A store_rc. */
int eng_run_begin(engine *e, const wf_workflow *wf, const char *run_id, char **msg);
/* Inside a transaction: starts queued runs of `workflow`, oldest first, while it has room. */
void eng_runs_promote(engine *e, const char *workflow);
/* Inside the tick's transaction, at most once a second: eng_runs_promote for every workflow with a limit. */
void eng_runs_promote_all(engine *e);
/* Adds a scheduled or backfilled run's logical_time and interval {start, end} (RFC 3339) to ctx.run (`run`, may be
 * NULL); nothing for a run without them. */
void eng_ctx_times(engine *e, const char *run_id, json_t *run);
/* engine_running.c: when an attempt's job was first known running, from whatever source says so, so a push-only
 * setup (no poll ever sees JOB_STATE_RUNNING) still gets a running time. Inside the tick's transaction. */
/* A Job (jobs.get, a launch answer, a look-up) about the step's current attempt: running since its
 * currentStateTime when it is running, or since its startTime when it is already finished. */
void eng_running_from_job(engine *e, const store_step *st, json_t *job);
/* An event reporting JOB_STATE_RUNNING for the step's current attempt: running since the event's time. */
void eng_running_from_event(engine *e, const store_step *st, const store_event *ev);

#endif
