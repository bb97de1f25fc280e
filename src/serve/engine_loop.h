/* engine_loop: drives one engine — its ticks, the commands other threads queue for it (start, cancel, redrive,
 * reconcile, adopt, install a reloaded workflow set) and the requests held until it has acted on an event
 * (--process-in-request). In `sluice serve` it runs on a thread of its own, woken at once by a command or a
 * recorded event; `sluice run` drives the same loop in the foreground (engine_loop_step). The engine stays
 * single-threaded: only the loop's thread touches it.
 * Uses: engine, store, wfset, views, http_server (deferred answers), metrics, log. Must not: parse HTTP
 * bodies or decide about runs itself. */
#ifndef SLUICE_ENGINE_LOOP_H
#define SLUICE_ENGINE_LOOP_H
#include <jansson.h>
#include <stdint.h>

#include "engine.h"
#include "http_server.h"
#include "lua_host.h"
#include "notify.h"
#include "wfset.h"

typedef struct engine_loop engine_loop;
/* Work run on the loop's thread between ticks (the engine is the loop's): `r` is the request to answer (NULL when
 * none), `arg` the caller's. */
typedef void (*engine_loop_fn)(engine *eng, store *st, hs_request *r, void *arg);

typedef struct {
    engine *eng;  /* borrowed; only the loop's thread uses it */
    store *st;    /* the engine's handle (borrowed), for answers */
    int tick_ms;  /* the longest idle sleep of the thread (events and commands wake it at once); 0: 250 */
    int publish_metrics; /* export engine counters to metrics every 500 ms */
    int64_t retain_ms;   /* > 0: finished runs older than this are deleted in the background */
    int64_t prune_every_ms; /* how often (0: 10 min; the first time after a tenth of it) */
    const char *listen_url; /* a store with inbox notifications (PostgreSQL): wake on events that other
                             * processes record (store_listen); NULL: poll only (tick_ms) */
    int64_t lease_ms;       /* the leader lease's time (singleton duties); 0: 60 s */
    lh_watch *lua_watch;    /* the watch of the workflows' VMs (borrowed; NULL: engine_loop_wedged never says so) */
    notifier *notify;       /* run notifications (borrowed; NULL: none): a reconcile also delivers the due events */
    int hold_ms;            /* > 0 (--process-in-request): start, cancel and redrive are answered, as held events
                             * are, once the engine has acted on them (or after hold_ms): see engine_loop_hold */
    engine_loop_fn every;   /* NULL, or called with r = NULL every every_ms between ticks (serve ticks schedules) */
    void *every_ud;
    int every_ms;
} engine_loop_options;

engine_loop *engine_loop_new(const engine_loop_options *o);
/* Starts the loop's thread. Returns 0 or -1. */
int engine_loop_start(engine_loop *l);
/* Stops the thread (after its tick), answers every held request, and frees the loop. The engine is the caller's. */
void engine_loop_free(engine_loop *l);
/* 1 while this process holds the store's leader lease (retention runs there; every process runs the engine).
 * Another process takes the lease over within its time when this one dies or stops renewing it. */
int engine_loop_leader(engine_loop *l);
/* 1 while the thread runs. */
int engine_loop_alive(engine_loop *l);
/* The watchdog: 1 when a call into workflow Lua (on this loop's thread or another: the reloader's) has outlived its
 * time budget by more than a second, which the budget is meant to make impossible: the engine is wedged. `why`
 * says which script and for how long; the first report of a wedge is logged as an error. Thread-safe. */
int engine_loop_wedged(engine_loop *l, char *why, size_t cap);
/* Shutdown has begun: held answers and reconcile loops end now. */
void engine_loop_drain(engine_loop *l);
/* Something was recorded for the engine (an inbox event): tick now. */
void engine_loop_wake(engine_loop *l);

/* One iteration in the caller's thread (`sluice run`): queued commands, one engine tick waiting up to
 * max_wait_ms (see engine_tick), held answers. Returns engine_tick's value. */
int engine_loop_step(engine_loop *l, int max_wait_ms);

/* ---- commands: each answers `r` (deferred here) from the loop's thread ---- */
/* 201 {"run"} (200 with the earlier run for a reused request_key with the same params; 409 with other params;
 * 404 no such workflow; 400 missing or unknown declared params). params: borrowed. */
void engine_loop_start_run(engine_loop *l, hs_request *r, const char *workflow, json_t *params,
                           const char *request_key);
void engine_loop_cancel(engine_loop *l, hs_request *r, const char *run_id);
/* Re-runs a failed or cancelled run from its failed, cancelled and never-started steps. params (borrowed, may be
 * NULL) are merged over the run's; latest: move the run to its workflow's current version. */
void engine_loop_redrive(engine_loop *l, hs_request *r, const char *run_id, json_t *params, int latest);
void engine_loop_reconcile(engine_loop *l, hs_request *r, int budget_ms);
/* Without a request: */
void engine_loop_adopt(engine_loop *l, const char *workflow, const char *step, const char *job_id,
                       const char *job_name, const char *project, const char *region);
/* Runs fn(eng, st, r, arg) on the loop's thread before its next tick; fn answers r (deferred here) if not NULL.
 * free_arg (may be NULL) releases arg afterwards, or at once when the command cannot be queued. */
void engine_loop_call(engine_loop *l, hs_request *r, engine_loop_fn fn, void *arg, void (*free_arg)(void *));
/* Makes `set`'s workflows the engine's current ones (takes a reference on the set until done). */
void engine_loop_install(engine_loop *l, wfset *set);
/* Holds `r` (already deferred) until an engine tick that starts after this call has gone idle with no re-check of
 * a job expected to end due before deadline_ms (engine_expecting_until), or deadline_ms (monotonic) passes; then
 * answers 200 with `body`. */
void engine_loop_hold(engine_loop *l, hs_request *r, const char *body, int64_t deadline_ms);

#endif
