/* views: the JSON shapes of runs and steps that the API, the engine loop's answers, the run events and `sluice
 * status --store` show (documented in docs/api.md).
 * Uses: store, util, jansson. Must not: decide anything (it only presents stored rows), or answer HTTP (reply.h). */
#ifndef SLUICE_VIEWS_H
#define SLUICE_VIEWS_H
#include <jansson.h>

#include "store.h"

/* Run: {id, workflow, version, state, params, origin, request_key, error, created_at, updated_at, finished_at}. */
json_t *view_run(const store_run *run);
json_t *view_step(const store_step *st);
/* An attempt: {attempt, job_name, job_id, state, job_state, error, failure_cause, launched_at, running_at, ended_at}. */
json_t *view_attempt(const store_attempt *a);
/* A row of the runs list: view_run plus duration_ms (to its end, or to its last change while going), and for a run
 * with a failed step root_cause {step, attempt, job_id, error, failure_cause, at} (the step that failed first) and
 * recovered: true when the run succeeded anyway. Reads the run's steps with `s` (NULL: none of those). */
json_t *view_run_summary(store *s, const store_run *run);
/* {run..., duration_ms, steps: [{step..., attempts: [...]}], root_cause?, recovered?: [{step, error}]} read with
 * `s`; NULL when it cannot be read (*rc says why: STORE_NOTFOUND or another store_rc). New reference. */
json_t *view_run_detail(store *s, const char *id, int *rc);

#endif
