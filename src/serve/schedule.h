/* schedule: starts the runs of workflow schedules. Each schedule time of a workflow gets exactly one run, whatever
 * ticks it (serve's own clock every --schedule-tick, POST /v1/schedules:tick from Cloud Scheduler, several replicas,
 * restarts, a reload, a tick delivered twice): the start is keyed by the schedule time (request_key
 * "schedule:WORKFLOW:TIME"), and the store keeps how far each schedule was handled. Missed times younger than the
 * schedule's catchup run once each; older ones are skipped and logged. A run carries its logical time and interval
 * (the previous schedule time to this one).
 * Uses: engine (starting and cancelling runs), store (marks, counts), wf_sched, cron, log. Must not: run on any
 * thread but the engine loop's (it calls the engine). */
#ifndef SLUICE_SCHEDULE_H
#define SLUICE_SCHEDULE_H
#include <jansson.h>
#include <stdint.h>

#include "engine.h"
#include "http_server.h"
#include "store.h"

struct engine_loop;

/* Ticks every current workflow's schedule as of now_ms (unix ms). Returns a new JSON object: {"time", "started":
 * [{workflow, run, logical_time, existing}], "skipped": [{workflow, logical_time, why}]}, or NULL. */
json_t *schedule_tick(engine *e, store *st, int64_t now_ms);
/* An engine_loop_fn for serve's periodic tick (arg unused). */
void schedule_every(engine *e, store *st, hs_request *r, void *arg);
/* POST /v1/schedules:tick: the tick's time is the X-CloudScheduler-ScheduleTime header (stable across Cloud
 * Scheduler's retries), else {"time": RFC 3339} in the body, else now; a time more than 5 minutes ahead is refused.
 * Answers 200 with schedule_tick's object, from the engine loop; running backfills go on too (backfill.h). */
void schedule_api_tick(struct engine_loop *l, hs_request *r);

#endif
