/* run_events: a run transition as a CloudEvents 1.0 document (docs/api.md "Run notifications"), written to the
 * store's outbox for every sink that takes it, inside the transaction that makes the transition.
 * Uses: store (outbox), views (the run's API view is the event's data), workflow (its notify declaration), jansson.
 * Must not: deliver anything (notify.c does), open or commit transactions, or call Lua. */
#ifndef SLUICE_RUN_EVENTS_H
#define SLUICE_RUN_EVENTS_H
#include <jansson.h>
#include <stdint.h>

#include "store.h"
#include "workflow.h"

/* The server's own sinks (serve --notify-webhook, --notify-topic), beside each workflow's notify. */
typedef struct {
    const char *webhook; /* NULL: none */
    const char *topic;   /* "projects/P/topics/T" or NULL */
    unsigned on;         /* bits 1 << wf_run_event; 0 = WF_NOTIFY_ON_DEFAULT */
} rev_sinks;

/* Sink keys as the outbox stores them: "webhook:<url>", "pubsub:<topic>". */
#define REV_SINK_WEBHOOK "webhook:"
#define REV_SINK_PUBSUB "pubsub:"

/* The CloudEvent of transition `ev` of `run_id`: {specversion "1.0", id, source "//sluice/<workflow>", type
 * "dev.sluice.run.<ev>", subject <run id>, time, datacontenttype "application/json", data}. data is the run's API
 * view (view_run_detail, read with `st`) plus "event" (the transition), "failure" {step, error, cause, job_id,
 * job_name} for a failed or recovered run when a step failed, and "deadline" {scope: "run" | "step", step?,
 * due_at} for deadline_missed. New reference, or NULL when the run cannot be read. */
json_t *rev_cloudevent(store *st, const char *run_id, wf_run_event ev, const char *id, int64_t now_ms,
                       const char *deadline_step, int64_t deadline_due_ms);

/* Inside the caller's transaction: the event goes to the outbox once per sink (the workflow's and the server's)
 * whose `on` takes it; its id is "<run id>-<event>-<n>" (n: this run's how-many-th event of the kind). hold_ms > 0
 * delays the first attempt (the engine expects to amend it: rev_amend). Returns STORE_OK (also when no sink takes
 * it) or a store_rc with *err. */
int rev_emit(store *st, const wf_workflow *wf, const rev_sinks *server, const char *run_id, wf_run_event ev,
             int64_t now_ms, int64_t hold_ms, const char *deadline_step, int64_t deadline_due_ms, char **err);

/* The run's events that no attempt has claimed yet get their data read again (a failed job's cause arrived) and are
 * released for delivery now. Returns how many were amended. */
int rev_amend(store *st, const char *run_id, int64_t now_ms);

#endif
