/* run_events: run transitions as CloudEvents, written to the outbox with the transition (run_events.h).
 * Uses: store, views, workflow, wf_notify, util, log, jansson. Must not: deliver, commit, or call Lua. */
#include "run_events.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "mem.h"
#include "util.h"
#include "views.h"
#include "wf_notify.h"

/* The step whose failure the run reports: the failed step that finished last (an event is written before the
 * failure handler runs). */
static json_t *failed_step_json(json_t *detail, const char *handler)
{
    json_t *steps = json_object_get(detail, "steps"), *best = NULL, *x;
    size_t i;
    json_array_foreach(steps, i, x) {
        const char *state = json_string_value(json_object_get(x, "state"));
        const char *name = json_string_value(json_object_get(x, "name"));
        if (state == NULL || strcmp(state, "failed") != 0 || (handler && name && strcmp(name, handler) == 0)) continue;
        const char *fa = json_string_value(json_object_get(x, "finished_at"));
        const char *fb = best ? json_string_value(json_object_get(best, "finished_at")) : NULL;
        if (best == NULL || (fa && fb && strcmp(fa, fb) >= 0)) best = x;
    }
    if (best == NULL) return NULL;
    json_t *f = json_object();
    const char *keys[][2] = {{"step", "name"}, {"error", "error"}, {"cause", "failure_cause"}, {"job_id", "job_id"},
                             {"job_name", "job_name"}, {"job_state", "job_state"}};
    for (size_t k = 0; k < sizeof keys / sizeof keys[0]; k++) {
        json_t *v = json_object_get(best, keys[k][1]);
        if (json_is_string(v)) json_object_set(f, keys[k][0], v);
    }
    return f;
}

json_t *rev_cloudevent(store *st, const char *run_id, wf_run_event ev, const char *id, int64_t now_ms,
                       const char *deadline_step, int64_t deadline_due_ms)
{
    int rc = STORE_OK;
    json_t *data = view_run_detail(st, run_id, &rc);
    if (data == NULL) return NULL;
    json_object_del(data, "notifications"); /* how earlier events fared is not this event's content */
    const char *wfname = json_string_value(json_object_get(data, "workflow"));
    json_object_set_new(data, "event", json_string(wf_run_event_name(ev)));
    if (ev == WF_EV_FAILED || ev == WF_EV_RECOVERED) {
        json_t *f = failed_step_json(data, NULL);
        if (f != NULL) json_object_set_new(data, "failure", f);
    }
    if (ev == WF_EV_DEADLINE_MISSED) {
        char due[40];
        json_object_set_new(data, "deadline",
                            json_pack("{s:s,s:s*,s:s}", "scope", deadline_step && *deadline_step ? "step" : "run",
                                      "step", deadline_step && *deadline_step ? deadline_step : NULL, "due_at",
                                      util_rfc3339(deadline_due_ms, due, sizeof due)));
    }
    char when[40], source[300], type[64];
    snprintf(source, sizeof source, "//sluice/%s", wfname ? wfname : "?");
    snprintf(type, sizeof type, "dev.sluice.run.%s", wf_run_event_name(ev));
    return json_pack("{s:s,s:s,s:s,s:s,s:s,s:s,s:s,s:o}", "specversion", "1.0", "id", id, "source", source, "type",
                     type, "subject", run_id, "time", util_rfc3339(now_ms, when, sizeof when), "datacontenttype",
                     "application/json", "data", data);
}

static int put_one(store *st, const char *sink_kind, const char *target, const char *id, const char *run_id,
                   wf_run_event ev, const char *text, int64_t now_ms, int64_t hold_ms, char **err)
{
    char *sink = util_printf("%s%s", sink_kind, target);
    store_note n = {.id = (char *)id, .sink = sink, .run_id = (char *)run_id, .type = (char *)wf_run_event_name(ev),
                    .event_json = (char *)text, .created_at = now_ms, .next_attempt_at = now_ms + hold_ms};
    int rc = store_outbox_put(st, &n, err);
    free(sink);
    if (rc == STORE_DUPLICATE) { /* the same sink twice (the workflow's and the server's): one delivery */
        if (err) {
            free(*err);
            *err = NULL;
        }
        rc = STORE_OK;
    }
    return rc;
}

int rev_emit(store *st, const wf_workflow *wf, const rev_sinks *server, const char *run_id, wf_run_event ev,
             int64_t now_ms, int64_t hold_ms, const char *deadline_step, int64_t deadline_due_ms, char **err)
{
    unsigned bit = 1u << ev, son = server && server->on ? server->on : WF_NOTIFY_ON_DEFAULT;
    const char *targets[4][2] = {{NULL, NULL}};
    int n = 0;
    if (wf != NULL && (wf->notify_on & bit)) {
        if (wf->notify_webhook) targets[n][0] = REV_SINK_WEBHOOK, targets[n++][1] = wf->notify_webhook;
        if (wf->notify_pubsub) targets[n][0] = REV_SINK_PUBSUB, targets[n++][1] = wf->notify_pubsub;
    }
    if (server != NULL && (son & bit)) {
        if (server->webhook) targets[n][0] = REV_SINK_WEBHOOK, targets[n++][1] = server->webhook;
        if (server->topic) targets[n][0] = REV_SINK_PUBSUB, targets[n++][1] = server->topic;
    }
    if (n == 0) return STORE_OK;
    int64_t count = 0;
    int rc = store_outbox_count(st, run_id, wf_run_event_name(ev), &count, err);
    if (rc != STORE_OK) return rc;
    char id[200];
    snprintf(id, sizeof id, "%s-%s-%lld", run_id, wf_run_event_name(ev), (long long)count + 1);
    json_t *ce = rev_cloudevent(st, run_id, ev, id, now_ms, deadline_step, deadline_due_ms);
    char *text = ce ? json_dumps(ce, JSON_COMPACT) : NULL;
    json_decref(ce);
    if (text == NULL) {
        if (err) *err = xstrdup("the run's event cannot be formed");
        return STORE_NOTFOUND;
    }
    for (int i = 0; i < n && rc == STORE_OK; i++)
        rc = put_one(st, targets[i][0], targets[i][1], id, run_id, ev, text, now_ms, hold_ms, err);
    free(text);
    return rc;
}

int rev_amend(store *st, const char *run_id, int64_t now_ms)
{
    store_note_list l = {0};
    int amended = 0;
    if (store_outbox_list_run(st, run_id, &l, NULL) != STORE_OK) return 0;
    for (size_t i = 0; i < l.count; i++) {
        store_note *n = &l.items[i];
        if (n->state != STORE_NOTE_PENDING || n->attempts != 0) continue;
        json_t *old = json_loads(n->event_json, 0, NULL);
        json_t *data = json_object_get(old, "data");
        int ev = wf_run_event_parse(json_string_value(json_object_get(data, "event")));
        json_t *dl = json_object_get(data, "deadline");
        json_t *fresh = ev >= 0 ? rev_cloudevent(st, run_id, (wf_run_event)ev, n->id, 0, NULL, 0) : NULL;
        if (fresh != NULL) {
            /* the same event with its data read again: id, time and any deadline stay as they were */
            json_object_set(fresh, "time", json_object_get(old, "time"));
            if (dl != NULL) json_object_set(json_object_get(fresh, "data"), "deadline", dl);
            char *text = json_dumps(fresh, JSON_COMPACT);
            if (text && store_outbox_amend(st, n->id, n->sink, text, now_ms, NULL) == STORE_OK) amended++;
            free(text);
        }
        json_decref(fresh);
        json_decref(old);
    }
    store_note_list_free(&l);
    return amended;
}
