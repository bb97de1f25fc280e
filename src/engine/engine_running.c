/* engine_running: when an attempt's job was first known running (store_attempt_set_running), from a Job the engine
 * was shown (its state and its own times) or from a RUNNING event. With push-only events the engine may never see a
 * job in JOB_STATE_RUNNING itself: its end event arrives and the job is finished when looked at, so the running
 * time comes from the job's times instead.
 * Uses: engine_internal, store, events (terminal states), util (RFC 3339). Must not: change a step's state. */
#include <string.h>

#include <jansson.h>

#include "engine_internal.h"
#include "events.h"
#include "job_state.h"
#include "util.h"

/* A Job time field in unix ms, or 0 when absent, unparsable or the epoch (launch answers carry an epoch
 * currentStateTime). */
static int64_t job_time(json_t *job, const char *field)
{
    const char *t = json_string_value(json_object_get(job, field));
    int64_t ms = 0;
    if (t == NULL || util_parse_rfc3339(t, &ms) != 0 || ms <= 0) return 0;
    return ms;
}

void eng_running_from_job(engine *e, const store_step *st, json_t *job)
{
    const char *state = json_string_value(json_object_get(job, "currentState"));
    if (state == NULL || st->job_name == NULL) return;
    int64_t at = 0;
    if (js_name_is(state, JS_RUNNING)) {
        at = job_time(job, "currentStateTime");
        if (at == 0) at = eng_now_ms(e);
    } else if (js_name_terminal(state) && st->running_at == 0) {
        /* finished before anyone saw it running (no poll, no RUNNING event): it started at its startTime
         * (Dataflow's, set when the job leaves the queue; createTime for jobs that are never queued) */
        store_attempt a = {0};
        int known = store_attempt_get(e->o.st, st->run_id, st->name, st->attempt, &a, NULL) == STORE_OK &&
                    a.running_at != 0;
        store_attempt_free(&a);
        if (known) return;
        at = job_time(job, "startTime");
        if (at == 0) at = job_time(job, "createTime");
    }
    if (at > 0) store_attempt_set_running(e->o.st, st->run_id, st->name, st->attempt, at, NULL);
}

void eng_running_from_event(engine *e, const store_step *st, const store_event *ev)
{
    if (!js_name_is(ev->state, JS_RUNNING) || st->job_name == NULL) return;
    /* the event's own time of the change (ingress keeps it as time_ms), else when it was received */
    json_t *p = ev->payload_json ? json_loads(ev->payload_json, 0, NULL) : NULL;
    int64_t at = (int64_t)json_integer_value(json_object_get(p, "time_ms"));
    json_decref(p);
    if (at <= 0) at = ev->received_at ? ev->received_at : eng_now_ms(e);
    eng_w(e, store_attempt_set_running(e->o.st, st->run_id, st->name, st->attempt, at, NULL));
}
