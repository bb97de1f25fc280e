/* views: JSON shapes of runs and steps.
 * Uses: store, util, jansson. Must not: decide anything, or answer HTTP (reply.c does). */
#include "views.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util.h"

static json_t *time_json(int64_t ms)
{
    if (ms == 0) return json_null();
    char buf[40];
    return json_string(util_rfc3339(ms, buf, sizeof buf));
}

json_t *view_run(const store_run *run)
{
    json_error_t je;
    json_t *params = run->params_json ? json_loads(run->params_json, 0, &je) : NULL;
    return json_pack("{s:s,s:s,s:s,s:s,s:o,s:s?,s:s?,s:s?,s:o,s:o,s:o}", "id", run->id, "workflow", run->workflow,
                     "version", run->script_hash, "state", store_run_state_name(run->state), "params",
                     params ? params : json_object(), "origin", run->origin, "request_key", run->request_key, "error",
                     run->error, "created_at", time_json(run->created_at), "updated_at", time_json(run->updated_at),
                     "finished_at", time_json(run->finished_at));
}

json_t *view_step(const store_step *st)
{
    json_error_t je;
    json_t *result = st->result_json ? json_loads(st->result_json, JSON_DECODE_ANY, &je) : NULL;
    json_t *j = json_pack("{s:s,s:s,s:i,s:s?,s:s?,s:s?,s:s?,s:s?,s:o,s:s?,s:o,s:o}", "name", st->name, "state",
                          store_step_state_name(st->state), "attempt", st->attempt, "job_name", st->job_name, "job_id",
                          st->job_id, "job_state", st->job_state, "project", st->project, "region", st->region,
                          "result", result ? result : json_null(), "error", st->error, "started_at",
                          time_json(st->started_at), "finished_at", time_json(st->finished_at));
    /* updated_at: when the row last changed; running_at: when the job was first seen running (the Gantt's
     * running segment); failure_cause: Dataflow's own words for a failed job (its job messages). */
    if (j != NULL) {
        json_object_set_new(j, "updated_at", time_json(st->updated_at));
        json_object_set_new(j, "running_at", time_json(st->running_at));
        json_object_set_new(j, "failure_cause", st->failure_cause ? json_string(st->failure_cause) : json_null());
    }
    return j;
}

json_t *view_attempt(const store_attempt *a)
{
    json_t *j = json_pack("{s:i,s:s?,s:s?,s:s,s:s?,s:s?,s:s?,s:o,s:o,s:o}", "attempt", a->attempt, "job_name",
                          a->job_name, "job_id", a->job_id, "state", store_step_state_name(a->state), "job_state",
                          a->job_state, "error", a->error, "failure_cause", a->failure_cause, "launched_at",
                          time_json(a->launched_at), "running_at", time_json(a->running_at), "ended_at",
                          time_json(a->ended_at));
    return j;
}

/* The step that failed first (the earliest finished), its error and Dataflow's cause: what a failed or recovered
 * run is about. NULL when no step failed. New reference. */
static json_t *view_root_cause(const store_step_list *steps)
{
    const store_step *first = NULL;
    for (size_t i = 0; i < steps->count; i++) {
        const store_step *st = &steps->items[i];
        if (st->state == STORE_STEP_FAILED && (first == NULL || st->finished_at < first->finished_at)) first = st;
    }
    if (first == NULL) return NULL;
    return json_pack("{s:s,s:i,s:s?,s:s?,s:s?,s:o}", "step", first->name, "attempt", first->attempt, "job_id",
                     first->job_id, "error", first->error, "failure_cause", first->failure_cause, "at",
                     time_json(first->finished_at));
}

json_t *view_run_summary(store *s, const store_run *run)
{
    json_t *j = view_run(run);
    if (j == NULL) return NULL;
    int64_t end = run->finished_at ? run->finished_at : run->updated_at;
    json_object_set_new(j, "duration_ms", json_integer(end > run->created_at ? end - run->created_at : 0));
    /* Only failed and succeeded runs can have a root cause (a succeeded one when on_failure recovered it). */
    if (s != NULL && (run->state == STORE_RUN_FAILED || run->state == STORE_RUN_SUCCEEDED)) {
        store_step_list steps = {0};
        if (store_step_list_run(s, run->id, &steps, NULL) == STORE_OK) {
            json_t *rc = view_root_cause(&steps);
            if (rc != NULL) {
                json_object_set_new(j, "root_cause", rc);
                if (run->state == STORE_RUN_SUCCEEDED) json_object_set_new(j, "recovered", json_true());
            }
        }
        store_step_list_free(&steps);
    }
    return j;
}

/* The run's events and how their delivery stands, per sink: [{id, type, sink, target, state (pending: not tried
 * yet | retrying | delivered | given_up), attempts, last_error, created_at, next_attempt_at, delivered_at}]. A
 * webhook's target loses its query string (it may carry a token). */
static json_t *view_notifications(store *s, const char *run_id)
{
    json_t *arr = json_array();
    store_note_list l = {0};
    if (store_outbox_list_run(s, run_id, &l, NULL) != STORE_OK) return arr;
    for (size_t i = 0; i < l.count; i++) {
        const store_note *n = &l.items[i];
        const char *colon = strchr(n->sink, ':');
        char kind[16], target[512];
        snprintf(kind, sizeof kind, "%.*s", colon ? (int)(colon - n->sink) : 0, n->sink);
        snprintf(target, sizeof target, "%s", colon ? colon + 1 : n->sink);
        target[strcspn(target, "?#")] = '\0';
        const char *state = n->state == STORE_NOTE_DELIVERED  ? "delivered"
                            : n->state == STORE_NOTE_GIVEN_UP ? "given_up"
                            : n->attempts > 0                 ? "retrying"
                                                              : "pending";
        json_array_append_new(arr, json_pack("{s:s,s:s,s:s,s:s,s:s,s:i,s:s?,s:o,s:o,s:o}", "id", n->id, "type", n->type,
                                             "sink", kind, "target", target, "state", state, "attempts", n->attempts,
                                             "last_error", n->last_error, "created_at", time_json(n->created_at),
                                             "next_attempt_at",
                                             n->state == STORE_NOTE_PENDING ? time_json(n->next_attempt_at) : json_null(),
                                             "delivered_at", time_json(n->delivered_at)));
    }
    store_note_list_free(&l);
    return arr;
}

json_t *view_run_detail(store *s, const char *id, int *rc)
{
    store_run run = {0};
    store_step_list steps = {0};
    *rc = store_run_get(s, id, &run, NULL);
    if (*rc != STORE_OK) return NULL;
    json_t *j = view_run(&run);
    /* a scheduled or backfilled run's logical time and data interval */
    int64_t lt, i_start, i_end;
    if (store_run_times_get(s, id, &lt, &i_start, &i_end, NULL) == STORE_OK) {
        json_object_set_new(j, "logical_time", time_json(lt));
        json_object_set_new(j, "interval", json_pack("{s:o,s:o}", "start", time_json(i_start), "end", time_json(i_end)));
    }
    json_t *arr = json_array();
    json_t *recovered = json_array();
    store_attempt_list atts = {0};
    store_attempt_list_run(s, id, &atts, NULL); /* none (an old run, a backend without them): empty lists */
    if (store_step_list_run(s, id, &steps, NULL) == STORE_OK)
        for (size_t i = 0; i < steps.count; i++) {
            store_step *st = &steps.items[i];
            json_t *sj = view_step(st);
            json_t *list = json_array();
            for (size_t k = 0; k < atts.count; k++) {
                const store_attempt *a = &atts.items[k];
                if (strcmp(a->step, st->name) != 0) continue;
                json_array_append_new(list, view_attempt(a));
                /* running time known from another source than the step's own state (an event, the job's times) */
                if (a->attempt == st->attempt && st->running_at == 0 && a->running_at != 0)
                    json_object_set_new(sj, "running_at", time_json(a->running_at));
            }
            json_object_set_new(sj, "attempts", list);
            json_array_append_new(arr, sj);
            if (steps.items[i].state == STORE_STEP_FAILED)
                json_array_append_new(recovered, json_pack("{s:s,s:s?}", "step", steps.items[i].name, "error",
                                                           steps.items[i].error));
        }
    json_object_set_new(j, "steps", arr);
    /* A run that on_failure recovered succeeded, and says which step failed and why. */
    if (run.state == STORE_RUN_SUCCEEDED && json_array_size(recovered) > 0)
        json_object_set_new(j, "recovered", recovered);
    else
        json_decref(recovered);
    json_t *root = view_root_cause(&steps);
    if (root != NULL) json_object_set_new(j, "root_cause", root);
    int64_t end = run.finished_at ? run.finished_at : run.updated_at;
    json_object_set_new(j, "duration_ms", json_integer(end > run.created_at ? end - run.created_at : 0));
    json_object_set_new(j, "notifications", view_notifications(s, id));
    store_run_free(&run);
    store_step_list_free(&steps);
    store_attempt_list_free(&atts);
    return j;
}
