/* fake_dataflow: the one scripted fake of Dataflow behind the jobs_api interface (jobs_api.h) for the tests that
 * run the engine without the real client or the emulator (test_engine, test_decide, test_serve_api).
 * What it is: a table of jobs (name, id, state, project, region, when created and stopped) that launch fills and
 * get, find and stop read; a job's state moves as the script fields below say, on the clock the test gives; a test
 * may set a job's state itself (fd_add_job, or jobs[i].state) and the next get or find sees it.
 * What it promises: every accepted call's answer is queued and delivered by poll(), in the order the calls came,
 * as the real client's callbacks are — never from inside launch, get, find or stop — except the calls the script
 * holds (hold_finds: until fd_release_finds) or leaves hanging (hang_launches: answered only by free, as by a
 * process that died first). free() answers everything still outstanding and leaves the fake usable (a test may
 * "crash" one engine and start another on the same fake); fd_fini ends it. The calls and poll take a mutex, so
 * the engine may call in from its loop thread (serve) while another thread frees; callbacks run unlocked (they may
 * call in again). The script fields are the test's to set between calls, from the thread that drives the engine.
 * What it does not do: HTTP, retries of its own (on_retry is the test's to call), job messages (ops->messages is
 * NULL), validateOnly, more than FD_MAX_JOBS jobs, or any of the real API's answers beyond those listed here.
 * Uses: jobs_api, launch, job_state, util, mem, jansson, pthreads. */
#ifndef SLUICE_FAKE_DATAFLOW_H
#define SLUICE_FAKE_DATAFLOW_H
#include <pthread.h>
#include <stdint.h>

#include "jobs_api.h"

#define FD_MAX_JOBS 512

typedef struct {
    char id[160], name[160], state[40], project[40], region[40];
    int gets;                       /* jobs.get calls that named this job */
    int64_t created_at, stopped_at; /* on the fake's clock; stopped_at 0: never stopped */
} fd_job;

typedef struct fd_call fd_call;

typedef struct {
    jobs_api base; /* pass &f->base as the engine's api */
    pthread_mutex_t mu;
    fd_job jobs[FD_MAX_JOBS]; /* in creation order; a name may repeat (a relaunch after its job ended) */
    int n_jobs;
    fd_call *queue, *tail; /* answers for the next poll */
    fd_call *hung;         /* hanging launches, newest first */
    fd_call *held, *held_tail;
    /* counters: calls made */
    int launches, gets, finds, stops, drains;
    /* the last launch request, in its stored form (launch_to_json), and its metric labels "workflow/step" ("-" for
     * none) */
    json_t *last_launch;
    char last_labels[160];

    /* ---- the clock and the shape of answers ---- */
    const int64_t *now;     /* the test's fake clock (ms); NULL: the real one (util_now_ms) */
    int ids_are_names;      /* a launched job's id is its name (default: "2024-01-01_00_00_00-<n>") */
    const char *launch_state; /* a launched job's first state; NULL: JOB_STATE_PENDING */
    int stop_ends_at_once;  /* a stopped job is CANCELLED / DRAINED at once (default: CANCELLING / DRAINING until
                             * the first get after wind_ms) */

    /* ---- scripted outcomes (a prefix "" matches every name; NULL none) ---- */
    const char *reject_prefix;  /* launches of these names are refused: JA_REJECTED, 400 */
    int unknown_next;           /* the next launch creates its job but answers JA_UNKNOWN */
    int hang_launches;          /* launches are accepted but never answered (before free) ... */
    int hang_creates;           /* ... and create their job nonetheless */
    int hold_finds;             /* finds are answered as of when asked, but only once fd_release_finds runs */
    int batch_only;             /* drains are refused with 400, as Dataflow does for batch jobs */
    /* How a launched job ends, seen by jobs.get: a PENDING or RUNNING job is RUNNING while its name starts with
     * stay_prefix or stay_prefix2 (until stopped) or while it has had no more than gets_until_done gets; then it
     * is FAILED when its name starts with fail_prefix, fail_times times in all (-1: always; fd_init sets -1), and
     * DONE otherwise. */
    const char *stay_prefix, *stay_prefix2;
    int gets_until_done;
    const char *fail_prefix;
    int fail_times;
    int failed_so_far;
    /* The real API's slower behaviours, on the fake clock: jobs named timed_prefix... really end DONE run_ms after
     * their launch, but jobs.get shows them RUNNING for stale_ms more; a stopped job is CANCELLING / DRAINING for
     * wind_ms before it ends. */
    const char *timed_prefix;
    int64_t run_ms, stale_ms, wind_ms;
} fake_dataflow;

/* Sets up a zeroed (or garbage) fake: ops, mutex, fail_times = -1. */
void fd_init(fake_dataflow *f);
/* Answers what is outstanding (as free does) and destroys the mutex; the struct is the caller's. */
void fd_fini(fake_dataflow *f);

/* Adds a job to the table as if launched earlier (id, name, state; project "p", region "r"). */
fd_job *fd_add_job(fake_dataflow *f, const char *id, const char *name, const char *state);
/* The newest job of that name / the first with that id; NULL when none. */
fd_job *fd_by_name(fake_dataflow *f, const char *name);
fd_job *fd_by_id(fake_dataflow *f, const char *id);
/* Whether s starts with prefix (never for a NULL prefix): the script's name matching, for tests to count with. */
int fd_starts(const char *s, const char *prefix);

/* Answers waiting for the next poll. */
int fd_pending(fake_dataflow *f);
/* The held finds' answers go to the queue: they arrive at the next poll. */
void fd_release_finds(fake_dataflow *f);
/* The newest hanging launch's caller data (for the engine's on_retry hook); NULL when none hangs. */
void *fd_hung_ud(fake_dataflow *f);
/* Answers the newest hanging launch now, from the caller's thread, with `outcome` and `message` (borrowed). */
void fd_answer_hung(fake_dataflow *f, ja_outcome outcome, const char *message);

#endif
