/* wf_sched: a workflow's scheduling fields, read from its declaration: `max_active_runs = N` and
 * `schedule = { cron = "0 3 * * *", timezone = "Europe/Amsterdam", catchup = "3d", overlap = "skip" }` (or
 * `schedule = "0 3 * * *"`, UTC), with the parsed cron expression and the loaded zone.
 * Uses: cron, tz, config (durations), jansson. Must not: start runs or read clocks (schedule.c does). */
#ifndef SLUICE_WF_SCHED_H
#define SLUICE_WF_SCHED_H
#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "cron.h"
#include "tz.h"

typedef enum { WF_OVERLAP_SKIP = 0, WF_OVERLAP_BUFFER_ONE, WF_OVERLAP_ALLOW, WF_OVERLAP_CANCEL_OTHER } wf_overlap;

typedef struct {
    char *cron;         /* the expression as written; NULL: the workflow has no schedule */
    char *timezone;     /* the zone's name ("UTC" when not given) */
    cron_expr expr;
    tz_zone *zone;      /* owned */
    int64_t catchup_ms; /* missed times younger than this run after an outage; older ones are skipped */
    wf_overlap overlap; /* what a schedule time does while a run of the workflow is active */
} wf_schedule;

#define WF_CATCHUP_DEFAULT_MS (10 * 60 * 1000)

/* "skip", "buffer_one", "allow", "cancel_other". */
const char *wf_overlap_name(wf_overlap o);

/* Reads `max_active_runs` and `schedule` from the declaration into *max_active_runs and *out (zeroed first).
 * Returns 0, or -1 with the offending field's name in *field (static) and why (cap bytes). */
int wf_sched_load(json_t *decl, int *max_active_runs, wf_schedule *out, const char **field, char *why, size_t cap);
void wf_sched_clear(wf_schedule *s);

#endif
