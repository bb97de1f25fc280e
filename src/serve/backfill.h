/* backfill: runs of a workflow for past times. POST /v1/backfills {workflow, from, to, dry_run?, max_active?,
 * rerun?, params?} starts one run per schedule time of the workflow in [from, to] (or one per day, midnight UTC, for
 * a workflow without a schedule), each with its logical time and interval, keyed exactly as the schedule keys its
 * runs ("schedule:WORKFLOW:TIME"): a time that already has a run (scheduled, or from an earlier backfill) gets no
 * second one; rerun = "failed" redrives such a run when it failed or was cancelled, "all" also starts a new run
 * where it succeeded. dry_run lists exactly the times that would start. max_active bounds how many of the
 * backfill's runs are active at once: the rest start as earlier ones end (driven from serve's schedule tick).
 * GET /v1/backfills, GET /v1/backfills/{id} (progress: its runs by state), POST /v1/backfills/{id}:cancel.
 * Uses: engine, store (backfill documents), cron, wf_sched, engine_loop, views, util, log. Must not: run on any
 * thread but the engine loop's. */
#ifndef SLUICE_BACKFILL_H
#define SLUICE_BACKFILL_H
#include "engine.h"
#include "http_server.h"
#include "store.h"

struct engine_loop;

/* Routes /v1/backfills`rest` ("" or "/{id}" or "/{id}:cancel"); the caller has authorized the request (a POST as a
 * change). */
void backfill_api(struct engine_loop *l, hs_request *r, const char *rest);
/* Starts what the running backfills may start now (serve calls it with the schedule tick). */
void backfill_drive_all(engine *e, store *st);

#endif
