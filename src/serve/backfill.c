/* backfill: backfills of past schedule times (backfill.h).
 * Uses: engine, store, cron, wf_sched, engine_loop, views, util, log. Must not: start a run under any key but its
 * schedule time's (or, for rerun = "all" of a succeeded one, its backfill's). */
#include "backfill.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cron.h"
#include "engine_loop.h"
#include "log.h"
#include "mem.h"
#include "reply.h"
#include "util.h"
#include "views.h"
#include "workflow.h"

#define MAX_TIMES 10000 /* schedule times one backfill may cover */
#define DRIVE_BATCH 500 /* runs one pass starts at most */

typedef enum { RERUN_NONE = 0, RERUN_FAILED, RERUN_ALL } rerun_mode;
static const char *const rerun_names[] = {"none", "failed", "all"};

/* A bound: a date (YYYY-MM-DD: midnight in `z`; for `to` the end of that day) or an RFC 3339 time. -1 when bad. */
static int64_t parse_bound(const char *text, const tz_zone *z, int is_to)
{
    int y, m, d;
    char tail;
    if (text != NULL && strlen(text) == 10 && sscanf(text, "%4d-%2d-%2d%c", &y, &m, &d, &tail) == 3) {
        char iso[40];
        snprintf(iso, sizeof iso, "%sT00:00:00Z", text);
        int64_t w;
        if (util_parse_rfc3339(iso, &w) != 0) return -1;
        if (is_to) w += 86400000 - 1;
        if (z == NULL) return w;
        int64_t ws = (is_to ? w + 1 : w) / 1000; /* wall-clock midnight, as if UTC */
        int64_t u = ws - tz_offset(z, ws - tz_offset(z, ws));
        return is_to ? u * 1000 - 1 : u * 1000;
    }
    int64_t ms;
    return text != NULL && util_parse_rfc3339(text, &ms) == 0 ? ms : -1;
}

/* The logical times in [from, to] and their intervals: arrays of {t, start, end} in ms (n of them). */
typedef struct {
    int64_t t, start, end;
} bf_time;

static bf_time *times_of(const wf_workflow *wf, int64_t from, int64_t to, size_t *n, char **why)
{
    *n = 0;
    bf_time *out = xcalloc(MAX_TIMES + 1, sizeof *out);
    const wf_schedule *sc = &wf->schedule;
    if (sc->cron != NULL) {
        for (int64_t t = cron_next(&sc->expr, sc->zone, from / 1000 - (from % 1000 == 0 ? 1 : 0)); t >= 0 && t * 1000 <= to;
             t = cron_next(&sc->expr, sc->zone, t)) {
            if (t * 1000 < from) continue;
            if (*n == MAX_TIMES) goto too_many;
            int64_t prev = cron_prev(&sc->expr, sc->zone, t - 1);
            out[(*n)++] = (bf_time){t * 1000, prev >= 0 ? prev * 1000 : t * 1000, t * 1000};
        }
    } else {
        int64_t day = (from + 86400000 - 1) / 86400000 * 86400000; /* the first midnight UTC at or after from */
        for (; day <= to; day += 86400000) {
            if (*n == MAX_TIMES) goto too_many;
            out[(*n)++] = (bf_time){day, day, day + 86400000};
        }
    }
    return out;
too_many:
    free(out);
    *why = util_printf("the range holds more than %d times: backfill it in parts", MAX_TIMES);
    return NULL;
}

static void key_of(const char *workflow, int64_t t, char *key, size_t cap)
{
    char when[40];
    snprintf(key, cap, "schedule:%s:%s", workflow, util_rfc3339(t, when, sizeof when));
}

/* The run a time already has (its key's), into *state; 0 when there is one, -1 when none. */
static int existing(store *st, const char *key, store_run_state *state, char *id, size_t cap)
{
    store_run prev = {0};
    if (store_run_get_by_request_key(st, key, &prev, NULL) != STORE_OK) return -1;
    *state = prev.state;
    snprintf(id, cap, "%s", prev.id);
    store_run_free(&prev);
    return 0;
}

static json_t *view(store *st, const char *id)
{
    char *state = NULL, *doc = NULL;
    if (store_backfill_get(st, id, &state, &doc, NULL) != STORE_OK) return NULL;
    json_error_t je;
    json_t *j = json_loads(doc, 0, &je);
    free(doc);
    if (j == NULL) {
        free(state);
        return NULL;
    }
    json_object_set_new(j, "state", json_string(state));
    free(state);
    json_object_set_new(j, "total", json_integer((json_int_t)json_array_size(json_object_get(j, "times"))));
    json_object_del(j, "times");
    char origin[80];
    snprintf(origin, sizeof origin, "backfill:%s", id);
    int64_t counts[STORE_RUN_STATE_COUNT];
    json_t *runs = json_object();
    if (store_run_count_origin(st, json_string_value(json_object_get(j, "workflow")), origin, counts, NULL) == STORE_OK)
        for (int s = 0; s < STORE_RUN_STATE_COUNT; s++)
            json_object_set_new(runs, store_run_state_name((store_run_state)s), json_integer(counts[s]));
    json_object_set_new(j, "runs", runs);
    return j;
}

/* One pass over a running backfill: starts (or reruns) what it may start now. */
static void drive(engine *e, store *st, const char *id)
{
    char *state = NULL, *doc = NULL;
    if (store_backfill_get(st, id, &state, &doc, NULL) != STORE_OK) return;
    json_error_t je;
    json_t *j = strcmp(state, "running") == 0 ? json_loads(doc, 0, &je) : NULL;
    free(doc);
    free(state);
    if (j == NULL) return;
    const char *workflow = json_string_value(json_object_get(j, "workflow"));
    json_t *times = json_object_get(j, "times"), *params = json_object_get(j, "params");
    if (!json_is_object(params)) params = NULL;
    size_t total = json_array_size(times);
    size_t cursor = (size_t)json_integer_value(json_object_get(j, "cursor"));
    int max_active = (int)json_integer_value(json_object_get(j, "max_active"));
    rerun_mode rerun = (rerun_mode)json_integer_value(json_object_get(j, "rerun_mode"));
    char origin[80];
    snprintf(origin, sizeof origin, "backfill:%s", id);
    int room = DRIVE_BATCH;
    if (max_active > 0) {
        int64_t counts[STORE_RUN_STATE_COUNT];
        if (store_run_count_origin(st, workflow, origin, counts, NULL) != STORE_OK) goto out;
        int64_t active = counts[STORE_RUN_PENDING] + counts[STORE_RUN_RUNNING] + counts[STORE_RUN_CANCELLING];
        room = max_active - (int)active;
    }
    json_int_t started = json_integer_value(json_object_get(j, "started")),
               skipped = json_integer_value(json_object_get(j, "existing")),
               reruns = json_integer_value(json_object_get(j, "rerun"));
    for (; cursor < total && room > 0; cursor++) {
        json_t *tj = json_array_get(times, cursor);
        int64_t t = json_integer_value(json_array_get(tj, 0));
        engine_run_times rt = {.logical_ms = t, .start_ms = json_integer_value(json_array_get(tj, 1)),
                               .end_ms = json_integer_value(json_array_get(tj, 2))};
        char key[400], rid[64] = "", *err = NULL;
        key_of(workflow, t, key, sizeof key);
        store_run_state prev_state;
        char prev_id[64];
        int rc;
        if (existing(st, key, &prev_state, prev_id, sizeof prev_id) == 0) {
            int failed = prev_state == STORE_RUN_FAILED || prev_state == STORE_RUN_CANCELLED;
            if (rerun != RERUN_NONE && failed) {
                rc = engine_redrive_run(e, prev_id, NULL, 0, &err);
                if (rc == 0) reruns++, room--;
            } else if (rerun == RERUN_ALL && prev_state == STORE_RUN_SUCCEEDED) {
                char k2[512];
                snprintf(k2, sizeof k2, "backfill:%s:%s", id, key + strlen("schedule:"));
                rc = engine_start_run_at(e, workflow, params, k2, origin, &rt, 0, rid, sizeof rid, &err);
                if (rc == 0) reruns++, room--;
            } else {
                skipped++;
            }
        } else {
            rc = engine_start_run_at(e, workflow, params, key, origin, &rt, 0, rid, sizeof rid, &err);
            if (rc == ENG_ERR_STORE) {
                log_error("backfill %s: cannot start the run of %s: %s", id, key, err ? err : "?");
                free(err);
                break; /* tried again on the next pass */
            }
            if (rc == 0) started++, room--;
            else if (rc == 1 || rc == ENG_ERR_CONFLICT) skipped++;
            if (rc < 0) log_error("backfill %s: the run of %s cannot start: %s", id, key, err ? err : "?");
        }
        free(err);
    }
    json_object_set_new(j, "cursor", json_integer((json_int_t)cursor));
    json_object_set_new(j, "started", json_integer(started));
    json_object_set_new(j, "existing", json_integer(skipped));
    json_object_set_new(j, "rerun", json_integer(reruns));
    char *text = json_dumps(j, JSON_COMPACT);
    if (text != NULL) store_backfill_put(st, id, workflow, cursor >= total ? "done" : "running", text, NULL);
    free(text);
out:
    json_decref(j);
}

void backfill_drive_all(engine *e, store *st)
{
    char **ids = NULL;
    size_t n = 0;
    if (store_backfill_list(st, 1, 100, &ids, &n, NULL) != STORE_OK) return;
    for (size_t i = 0; i < n; i++) {
        drive(e, st, ids[i]);
        free(ids[i]);
    }
    free(ids);
}

/* ---- the API (each call runs on the engine loop's thread) ---- */

typedef struct {
    char *id;    /* GET one / cancel */
    int cancel;
    json_t *body; /* POST */
} bf_req;

static void bf_req_free(void *p)
{
    bf_req *q = p;
    free(q->id);
    json_decref(q->body);
    free(q);
}

static void create(engine *e, store *st, hs_request *r, json_t *b)
{
    const char *workflow = json_string_value(json_object_get(b, "workflow"));
    const char *from_s = json_string_value(json_object_get(b, "from")), *to_s = json_string_value(json_object_get(b, "to"));
    const char *rerun_s = json_string_value(json_object_get(b, "rerun"));
    json_t *ma = json_object_get(b, "max_active"), *dry = json_object_get(b, "dry_run"), *params = json_object_get(b, "params");
    if (workflow == NULL || from_s == NULL || to_s == NULL || (ma && !json_is_integer(ma)) || (dry && !json_is_boolean(dry)) ||
        (params && !json_is_object(params)) || (json_object_get(b, "rerun") && rerun_s == NULL)) {
        reply_complete_error(r, 400, "give {\"workflow\", \"from\", \"to\"} (dates or RFC 3339 times), and optionally "
                                    "\"dry_run\" (boolean), \"max_active\" (integer), \"rerun\" (none, failed, all), "
                                    "\"params\" (object)");
        return;
    }
    const char *k;
    json_t *v;
    json_object_foreach(b, k, v) {
        if (strcmp(k, "workflow") && strcmp(k, "from") && strcmp(k, "to") && strcmp(k, "rerun") && strcmp(k, "max_active") &&
            strcmp(k, "dry_run") && strcmp(k, "params")) {
            char msg[160];
            snprintf(msg, sizeof msg, "unknown field '%.60s'", k);
            reply_complete_error(r, 400, msg);
            return;
        }
    }
    const wf_workflow *wf = engine_workflow(e, workflow);
    if (wf == NULL) {
        reply_complete_error(r, 404, "no such workflow");
        return;
    }
    rerun_mode rerun = RERUN_NONE;
    if (rerun_s != NULL) {
        int found = 0;
        for (int i = 0; i < 3 && !found; i++)
            if (strcmp(rerun_s, rerun_names[i]) == 0) rerun = (rerun_mode)i, found = 1;
        if (!found) {
            reply_complete_error(r, 400, "rerun must be none, failed or all");
            return;
        }
    }
    json_int_t max_active = ma ? json_integer_value(ma) : 0;
    if (max_active < 0 || max_active > 100000) {
        reply_complete_error(r, 400, "max_active must be 0 (no limit) to 100000");
        return;
    }
    const tz_zone *z = wf->schedule.cron ? wf->schedule.zone : NULL;
    int64_t from = parse_bound(from_s, z, 0), to = parse_bound(to_s, z, 1);
    if (from < 0 || to < 0 || to < from) {
        reply_complete_error(r, 400, "from and to must be dates (YYYY-MM-DD) or RFC 3339 times, from not after to");
        return;
    }
    size_t n = 0;
    char *why = NULL;
    bf_time *ts = times_of(wf, from, to, &n, &why);
    if (ts == NULL) {
        reply_complete_error(r, 400, why);
        free(why);
        return;
    }
    char a[40], c[40];
    if (json_is_true(dry)) {
        json_t *would = json_array(), *rer = json_array();
        size_t exist = 0;
        for (size_t i = 0; i < n; i++) {
            char key[400], prev_id[64];
            store_run_state ps;
            key_of(workflow, ts[i].t, key, sizeof key);
            if (existing(st, key, &ps, prev_id, sizeof prev_id) != 0) {
                json_array_append_new(would, json_string(util_rfc3339(ts[i].t, a, sizeof a)));
            } else if ((rerun != RERUN_NONE && (ps == STORE_RUN_FAILED || ps == STORE_RUN_CANCELLED)) ||
                       (rerun == RERUN_ALL && ps == STORE_RUN_SUCCEEDED)) {
                json_array_append_new(rer, json_pack("{s:s,s:s,s:s}", "logical_time", util_rfc3339(ts[i].t, a, sizeof a),
                                                     "run", prev_id, "state", store_run_state_name(ps)));
            } else {
                exist++;
            }
        }
        json_t *out = json_pack("{s:b,s:s,s:s,s:s,s:i,s:o,s:o,s:i}", "dry_run", 1, "workflow", workflow, "from",
                                util_rfc3339(from, a, sizeof a), "to", util_rfc3339(to, c, sizeof c), "total", (json_int_t)n,
                                "would_start", would, "would_rerun", rer, "existing", (json_int_t)exist);
        reply_complete(r, 200, out);
        json_decref(out);
        free(ts);
        return;
    }
    char id[16];
    util_random_id(id, 10);
    json_t *times = json_array();
    for (size_t i = 0; i < n; i++) json_array_append_new(times, json_pack("[I,I,I]", ts[i].t, ts[i].start, ts[i].end));
    free(ts);
    json_t *doc = json_pack("{s:s,s:s,s:s,s:s,s:s,s:i,s:i,s:o,s:O?,s:i,s:i,s:i,s:i}", "id", id, "workflow", workflow, "from",
                            util_rfc3339(from, a, sizeof a), "to", util_rfc3339(to, c, sizeof c), "rerun_name",
                            rerun_names[rerun], "rerun_mode", (int)rerun, "max_active", max_active, "times", times,
                            "params", params, "cursor", 0, "started", 0, "existing", 0, "rerun", 0);
    char *text = json_dumps(doc, JSON_COMPACT);
    json_decref(doc);
    char *err = NULL;
    int rc = text ? store_backfill_put(st, id, workflow, "running", text, &err) : STORE_NOMEM;
    free(text);
    if (rc != STORE_OK) {
        reply_complete_error(r, 503, err ? err : "cannot record the backfill");
        free(err);
        return;
    }
    log_info("backfill %s of %s: %zu time(s) from %s to %s", id, workflow, n, a, c);
    drive(e, st, id); /* what may start now starts now */
    json_t *out = json_pack("{s:o}", "backfill", view(st, id));
    reply_complete(r, 201, out);
    json_decref(out);
}

static void call_fn(engine *e, store *st, hs_request *r, void *arg)
{
    bf_req *q = arg;
    if (q->body != NULL) {
        create(e, st, r, q->body);
    } else if (q->id == NULL) {
        char **ids = NULL;
        size_t n = 0;
        json_t *arr = json_array();
        if (store_backfill_list(st, 0, 100, &ids, &n, NULL) == STORE_OK)
            for (size_t i = 0; i < n; i++) {
                json_t *v = view(st, ids[i]);
                if (v) json_array_append_new(arr, v);
                free(ids[i]);
            }
        free(ids);
        json_t *out = json_pack("{s:o}", "backfills", arr);
        reply_complete(r, 200, out);
        json_decref(out);
    } else {
        char *state = NULL, *doc = NULL;
        if (store_backfill_get(st, q->id, &state, &doc, NULL) != STORE_OK) {
            reply_complete_error(r, 404, "no such backfill");
            return;
        }
        if (q->cancel && strcmp(state, "running") == 0) {
            json_error_t je;
            json_t *j = json_loads(doc, 0, &je);
            const char *workflow = json_string_value(json_object_get(j, "workflow"));
            if (workflow) store_backfill_put(st, q->id, workflow, "cancelled", doc, NULL);
            /* its runs that are still queued or going stop too */
            char origin[80];
            snprintf(origin, sizeof origin, "backfill:%s", q->id);
            for (int s = STORE_RUN_PENDING; workflow && s <= STORE_RUN_RUNNING; s++) {
                store_run_filter f = {.state = s, .workflow = workflow, .limit = 1000};
                store_run_list l = {0};
                if (store_run_list_page(st, &f, &l, NULL) == STORE_OK)
                    for (size_t i = 0; i < l.count; i++)
                        if (l.items[i].origin && strcmp(l.items[i].origin, origin) == 0)
                            engine_cancel_run(e, l.items[i].id, NULL);
                store_run_list_free(&l);
            }
            json_decref(j);
        }
        free(state);
        free(doc);
        json_t *out = json_pack("{s:o}", "backfill", view(st, q->id));
        reply_complete(r, 200, out);
        json_decref(out);
    }
}

void backfill_api(struct engine_loop *l, hs_request *r, const char *rest)
{
    int post = strcmp(hs_method(r), "POST") == 0;
    bf_req *q = xcalloc(1, sizeof *q);
    if (*rest == '\0') {
        if (post) {
            json_error_t je;
            q->body = json_loads(hs_body(r), 0, &je);
            if (!json_is_object(q->body)) {
                bf_req_free(q);
                hs_respond_error(r, 400, "the body must be a JSON object");
                return;
            }
        }
    } else if (rest[0] == '/' && rest[1] != '\0') {
        const char *colon = strchr(rest + 1, ':');
        if ((colon != NULL && (strcmp(colon, ":cancel") != 0 || !post)) || (colon == NULL && post)) {
            bf_req_free(q);
            hs_respond_error(r, colon ? 404 : 405, colon ? "unknown path" : "method not allowed");
            return;
        }
        q->id = colon ? xstrndup(rest + 1, (size_t)(colon - rest - 1)) : xstrdup(rest + 1);
        q->cancel = colon != NULL;
    } else {
        bf_req_free(q);
        hs_respond_error(r, 404, "unknown path");
        return;
    }
    engine_loop_call(l, r, call_fn, q, bf_req_free);
}
