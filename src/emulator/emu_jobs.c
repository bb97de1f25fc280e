/* emu_jobs: owns the emulated Dataflow jobs: the store (list, id and name indexes), their JSON shape, and the
 * lifecycle (QUEUED -> PENDING -> RUNNING -> outcome, CANCELLING, DRAINING) driven by a min-heap of due
 * transitions. Uses: emu.h, emu_events (every state change queues its events). Must not: answer HTTP or
 * validate requests (emu_dataflow does); every function here runs with emu_g.lock held. */
#include "emu.h"
#include "mem.h"
#include "util.h"

#include <fnmatch.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void emu_job_free(struct emu_job *j)
{
    if (j == NULL) return;
    free(j->project);
    free(j->region);
    free(j->name);
    free(j->template_path);
    free(j->failure_cause);
    json_decref(j->labels);
    free(j);
}

/* The Job resource as the API shows it. launch_shape: the launch response (no currentState, epoch

 * currentStateTime, no labels). with_labels: JOB_VIEW_DESCRIPTION/ALL. stale: show the previous state.
 * Returns a new reference. */
json_t *emu_job_json(const struct emu_job *j, int launch_shape, int with_labels, int stale)
{
    char ct[64], st[64];
    emu_fmt_time(j->create_ms, launch_shape ? 6 : 3, ct, sizeof ct);
    json_t *o = json_pack("{s:s, s:s, s:s, s:s}", "id", j->id, "projectId", j->project, "name", j->name, "type",
                          j->streaming ? "JOB_TYPE_STREAMING" : "JOB_TYPE_BATCH");
    if (launch_shape) {
        json_object_set_new(o, "currentStateTime", json_string("1970-01-01T00:00:00Z"));
    } else {
        int state = stale ? j->prev_state : j->state;
        emu_fmt_time(stale ? j->prev_state_ms : j->state_ms, 3, st, sizeof st);
        json_object_set_new(o, "currentState", json_string(js_name(state)));
        json_object_set_new(o, "currentStateTime", json_string(st));
        if (j->requested_state != JS_UNKNOWN && !stale)
            json_object_set_new(o, "requestedState", json_string(js_name(j->requested_state)));
    }
    json_object_set_new(o, "createTime", json_string(ct));
    json_object_set_new(o, "location", json_string(j->region));
    json_object_set_new(o, "startTime", json_string(ct));
    if (with_labels && json_object_size(j->labels) > 0) json_object_set(o, "labels", j->labels);
    return o;
}

void emu_job_set_state(struct emu_job *j, int st, int64_t at_ms)
{
    emu_quota_track(j->state, st);
    j->prev_state = j->state;
    j->prev_state_ms = j->state_ms;
    j->state = st;
    j->state_ms = at_ms;
    emu_on_state_change(j);
}

static void emu_heap_swap(size_t a, size_t b)
{
    struct emu_timer t = emu_g.heap[a];
    emu_g.heap[a] = emu_g.heap[b];
    emu_g.heap[b] = t;
}

/* Schedules j's next automatic transition (j->next_ms); lock held. A later change of next_ms leaves the old
 * entry behind: entries whose due no longer matches the job's are skipped when they surface. */
void emu_timer_push(struct emu_job *j)
{
    if (j->next_ms == 0) return;
    if (emu_g.heap_n == emu_g.heap_cap) {
        size_t cap = emu_g.heap_cap ? emu_g.heap_cap * 2 : 256;
        struct emu_timer *h = xrealloc(emu_g.heap, cap * sizeof *h);
        emu_g.heap = h;
        emu_g.heap_cap = cap;
    }
    size_t i = emu_g.heap_n++;
    emu_g.heap[i] = (struct emu_timer){j->next_ms, j};
    while (i > 0 && emu_g.heap[(i - 1) / 2].due > emu_g.heap[i].due) {
        emu_heap_swap(i, (i - 1) / 2);
        i = (i - 1) / 2;
    }
}

static void emu_timer_pop(void)
{
    emu_g.heap[0] = emu_g.heap[--emu_g.heap_n];
    for (size_t i = 0;;) {
        size_t l = 2 * i + 1, r = l + 1, m = i;
        if (l < emu_g.heap_n && emu_g.heap[l].due < emu_g.heap[m].due) m = l;
        if (r < emu_g.heap_n && emu_g.heap[r].due < emu_g.heap[m].due) m = r;
        if (m == i) break;
        emu_heap_swap(i, m);
        i = m;
    }
}

/* Drops stale entries from the top; returns the earliest live one or NULL. */
static struct emu_timer *emu_timer_top(void)
{
    while (emu_g.heap_n > 0) {
        struct emu_timer *t = &emu_g.heap[0];
        if (t->job->next_ms == t->due && !js_terminal(t->job->state)) return t;
        emu_timer_pop();
    }
    return NULL;
}

/* Applies every automatic transition that is due by `now`, in time order per job; a zero duration makes
 * the next transition due at once, so several can happen in one call. Lock held. Cost: the transitions due. */
void emu_jobs_advance(int64_t now)
{
    struct emu_timer *t;
    while ((t = emu_timer_top()) != NULL && t->due <= now) {
        struct emu_job *j = t->job;
        emu_timer_pop();
        while (j->next_ms != 0 && j->next_ms <= now && !js_terminal(j->state)) {
            int64_t at = j->next_ms;
            j->next_ms = 0;
            switch (j->state) {
            case JS_QUEUED:
                emu_job_set_state(j, JS_PENDING, at);
                j->next_ms = at + j->rule.pending_ms;
                break;
            case JS_PENDING:
                emu_job_set_state(j, JS_RUNNING, at);
                if (!j->streaming) j->next_ms = at + j->rule.running_ms;
                break;
            case JS_RUNNING: emu_job_set_state(j, j->rule.outcome, at); break;
            case JS_CANCELLING: emu_job_set_state(j, JS_CANCELLED, at); break;
            case JS_DRAINING: emu_job_set_state(j, JS_DRAINED, at); break;
            default: break;
            }
        }
        emu_timer_push(j);
    }
}

int64_t emu_jobs_next_deadline(void)
{
    struct emu_timer *t = emu_timer_top();
    return t ? t->due : 0;
}

static char *emu_name_key(const char *project, const char *region, const char *name)
{
    return util_printf("%s/%s/%s", project, region, name);
}

static struct emu_job *emu_index_get(json_t *index, const char *key)
{
    json_t *v = key ? json_object_get(index, key) : NULL;
    return v ? (struct emu_job *)(intptr_t)json_integer_value(v) : NULL;
}

static void emu_index_put(json_t *index, const char *key, struct emu_job *j)
{
    if (key) json_object_set_new(index, key, json_integer((json_int_t)(intptr_t)j));
}

static const struct emu_rule *emu_rule_for(const char *name)
{
    for (size_t i = 0; i < emu_g.cfg.nrules; i++)
        if (fnmatch(emu_g.cfg.rules[i].match, name, 0) == 0) return &emu_g.cfg.rules[i];
    return &emu_g.cfg.defaults;
}

struct emu_job *emu_job_find_any(const char *id) { return emu_index_get(emu_g.by_id, id); }

struct emu_job *emu_job_find(const char *project, const char *region, const char *id)
{
    struct emu_job *j = emu_job_find_any(id);
    return j && strcmp(j->project, project) == 0 && strcmp(j->region, region) == 0 ? j : NULL;
}

/* Only the newest job of a name can be active: a launch is refused while an older one is. */
struct emu_job *emu_job_active_named(const char *project, const char *region, const char *name)
{
    char *k = emu_name_key(project, region, name);
    struct emu_job *j = emu_index_get(emu_g.by_name, k);
    free(k);
    return j && !js_terminal(j->state) ? j : NULL;
}

/* Creates a job (lock held). labels: borrowed. Returns the job (owned by emu_g.jobs) or NULL on OOM. */
struct emu_job *emu_job_create(const char *project, const char *region, const char *name,
                               const char *template_path, json_t *labels, int streaming_param)
{
    struct emu_job *j = xcalloc(1, sizeof *j);
    const struct emu_rule *r = emu_rule_for(name);
    int64_t now = emu_now_ms();
    j->project = xstrdup(project);
    j->region = xstrdup(region);
    j->name = xstrdup(name);
    j->template_path = xstrdup(template_path ? template_path : "");
    j->failure_cause = r->failure_cause ? xstrdup(r->failure_cause) : NULL;
    j->labels = labels ? json_deep_copy(labels) : json_object();
    if (!j->project || !j->region || !j->name || !j->template_path || !j->labels) {
        emu_job_free(j);
        return NULL;
    }
    j->rule = *r;
    j->rule.match = NULL;
    j->rule.failure_cause = NULL;
    j->streaming = r->streaming || streaming_param;
    j->create_ms = now;
    j->seq = ++emu_g.job_seq;
    /* The real format: YYYY-MM-DD_HH_MM_SS-<digits>. */
    for (;;) {
        char base[32];
        emu_strftime_utc(now, "%Y-%m-%d_%H_%M_%S", base, sizeof base);
        uint64_t digits = emu_rng_next(&emu_g.rng[STREAM_IDS]) % 9000000000000000000ULL + 1000000000000000000ULL;
        snprintf(j->id, sizeof j->id, "%s-%" PRIu64, base, digits);
        if (emu_job_find_any(j->id) == NULL) break;
    }
    j->state = j->prev_state = r->queued_ms > 0 ? JS_QUEUED : JS_PENDING;
    j->state_ms = j->prev_state_ms = now;
    emu_quota_track(-1, j->state);
    j->next_ms = now + (r->queued_ms > 0 ? r->queued_ms : r->pending_ms);
    j->next = emu_g.jobs;
    emu_g.jobs = j;
    emu_index_put(emu_g.by_id, j->id, j);
    char *nk = emu_name_key(project, region, name);
    emu_index_put(emu_g.by_name, nk, j);
    free(nk);
    emu_timer_push(j);
    emu_stat_add("jobs_created_by_name", name, NULL, 1);
    emu_on_state_change(j);
    pthread_cond_signal(&emu_g.timer_cond);
    return j;
}

/* Frees every job and empties the indexes and the heap. */
void emu_jobs_clear(void)
{
    json_object_clear(emu_g.by_id);
    json_object_clear(emu_g.by_name);
    emu_g.heap_n = 0;
    while (emu_g.jobs != NULL) {
        struct emu_job *j = emu_g.jobs;
        emu_g.jobs = j->next;
        emu_job_free(j);
    }
}
