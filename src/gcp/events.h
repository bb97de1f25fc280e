/* events: decodes everything that can tell Sluice a Dataflow job changed state — Pub/Sub push bodies
 * (wrapped and unwrapped) carrying a dataflow_step LogEntry, bare LogEntries, Eventarc CloudEvents (binary
 * and structured; messagePublished and Dataflow statusChanged) and Dataflow Job JSON — into one ev_job_event.
 * Uses: jansson, OpenSSL (base64), util. Must not: decide anything about runs or call the engine; it only
 * parses. Every input is untrusted: bad input gives a clear error, never a crash. */
#ifndef SLUICE_EVENTS_H
#define SLUICE_EVENTS_H
#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

typedef struct {
    const char *name;
    const char *value;
} ev_header;

typedef enum {
    EV_OK = 0,
    EV_ERR_SYNTAX = -1,   /* not JSON, bad base64, not UTF-8, too deep */
    EV_ERR_SHAPE = -2,    /* JSON of an unknown or incomplete shape */
    EV_IRRELEVANT = -3,   /* well-formed but not about a Dataflow job (e.g. another log type) */
} ev_status;

typedef struct {
    char source[24];     /* "pubsub", "eventarc-pubsub", "eventarc-dataflow", "logentry", "job" */
    char *message_id;    /* Pub/Sub message id or "ce-source/ce-id"; NULL when the channel has none */
    char *job_id;
    char *job_name;
    char *project;       /* may hold a project number (log resource labels do) */
    char *region;
    char *state;         /* JOB_STATE_*, or NULL when the event only says the job ended ("Worker pool stopped.") */
    int state_confirmed; /* 1 when the state comes from Dataflow itself (statusChanged, Job JSON), 0 for log hints */
    char *log_text;      /* the log line, for log-derived events */
    json_t *labels;      /* the job's labels when the channel carries them, else NULL */
    int64_t event_time_ms;
    int delivery_attempt; /* Pub/Sub deliveryAttempt, 0 if absent */
} ev_job_event;

void ev_job_event_free(ev_job_event *ev);

/* Decodes one HTTP delivery: headers (may be NULL/0) and body. On EV_OK, *ev is filled (free with
 * ev_job_event_free). Otherwise err receives a one-line reason and *ev is left empty (freeing it is a no-op). */
ev_status ev_decode(const ev_header *headers, size_t n_headers, const char *body, size_t len, ev_job_event *ev,
                    char *err, size_t errlen);

/* Decodes a file as `sluice plan --event` takes it: a JSON body (push, LogEntry, Job, structured CloudEvent)
 * or an HTTP request dump (request line, headers, blank line, body) as in the reference samples. Outcomes as for
 * ev_decode: on failure *ev is left empty. */
ev_status ev_decode_file_text(const char *text, size_t len, ev_job_event *ev, char *err, size_t errlen);

/* "job_id/state" (or "job_id/ENDED" for a stateless hint) into buf: the identity used for dedupe. */
const char *ev_identity(const ev_job_event *ev, char *buf, size_t buflen);

#endif
