/* wf_notify: the settings of a workflow's run notifications (docs/api.md "Run notifications") and the server's
 * --notify-* flags: run event names, a webhook URL Sluice may post to, a Pub/Sub topic name.
 * Uses: libc only. Must not: do I/O, send anything (engine/notify does), or know the workflow model (the loader in
 * wf_load.c reads notify = {...} with these rules). */
#ifndef SLUICE_WF_NOTIFY_H
#define SLUICE_WF_NOTIFY_H

/* Run events: the transitions a run reports, as CloudEvent types name them ("dev.sluice.run.<name>"). A
 * workflow's notify.on is a set of bits 1 << wf_run_event. */
typedef enum {
    WF_EV_STARTED = 0,
    WF_EV_SUCCEEDED,
    WF_EV_FAILED,
    WF_EV_CANCELLED,
    WF_EV_RECOVERED,
    WF_EV_DEADLINE_MISSED,
    WF_EV_COUNT
} wf_run_event;
#define WF_NOTIFY_ON_DEFAULT ((1u << WF_EV_FAILED) | (1u << WF_EV_CANCELLED) | (1u << WF_EV_DEADLINE_MISSED))
/* "started", ...; NULL for a value that is not an event. */
const char *wf_run_event_name(int ev);
/* The event named `name`, or -1. */
int wf_run_event_parse(const char *name);
/* Parses a comma-separated list of event names ("failed,cancelled") into bits; -1 when one is unknown. */
long wf_run_event_mask(const char *list);
/* A webhook URL Sluice may post to: https://HOST..., or http:// to a loopback host (127.0.0.0/8, localhost, [::1]).
 * NULL when valid, else why not (static text). */
const char *wf_webhook_url_problem(const char *url);
/* A Pub/Sub topic as "projects/P/topics/T": NULL when valid, else why not (static text). */
const char *wf_topic_problem(const char *topic);

#endif
