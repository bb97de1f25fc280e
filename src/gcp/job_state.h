/* job_state: Dataflow's job states (JobState, projects.locations.jobs: JOB_STATE_DONE, ...) — their wire names,
 * which of them are terminal, and the normal form of a name a workflow or a command line writes ("done", "DONE"
 * and "JOB_STATE_DONE" are one state). The one home of these rules: events, ingress, the engine, the workflow
 * model, plan and the emulator use it.
 * Pure: no I/O, no allocation. Uses: nothing. */
#ifndef SLUICE_JOB_STATE_H
#define SLUICE_JOB_STATE_H

#include <stddef.h>

typedef enum {
    JS_UNKNOWN = 0, JS_STOPPED, JS_RUNNING, JS_DONE, JS_FAILED, JS_CANCELLED, JS_UPDATED, JS_DRAINING, JS_DRAINED,
    JS_PENDING, JS_CANCELLING, JS_QUEUED, JS_RESOURCE_CLEANING_UP, JS_PAUSING, JS_PAUSED, JS_COUNT
} job_state;

/* The wire name of a state ("JOB_STATE_DONE"); "JOB_STATE_UNKNOWN" for a value out of range. */
const char *js_name(job_state s);
/* A wire name, exactly as the API writes it, to its state; -1 for a name that is not one (NULL included). */
int js_parse(const char *name);
/* The job has ended and will not change again: DONE, FAILED, CANCELLED, UPDATED (replaced by a new job), DRAINED. */
int js_terminal(job_state s);
/* js_terminal of a wire name; 0 for NULL or a name that is not one. */
int js_name_terminal(const char *name);
/* The wire name is `s` (0 for NULL). */
int js_name_is(const char *name, job_state s);
/* The state a user means by `text`: the name with or without its JOB_STATE_ prefix, in any case; -1 when none. */
int js_from_user(const char *text);
/* `text` in its wire form, "JOB_STATE_" + the rest upper-cased, into buf (truncated to buflen); returns buf. It
 * names a state only when js_from_user(text) >= 0. */
const char *js_normalize(const char *text, char *buf, size_t buflen);

#endif
