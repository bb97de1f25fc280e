/* schedule: ticking workflow schedules (schedule.h).
 * Uses: engine, store, wf_sched, cron, engine_loop (to reach the engine's thread), views, log, util.
 * Must not: start a run any other way than keyed by its schedule time. */
#include "schedule.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backfill.h"
#include "cron.h"
#include "engine_loop.h"
#include "log.h"
#include "mem.h"
#include "reply.h"
#include "util.h"
#include "views.h"

#define MAX_PER_TICK 1000 /* schedule times one workflow starts in one tick; the rest wait for the next */

/* Cancels the workflow's active runs other than `keep_key`'s (overlap = cancel_other). */
static void cancel_others(engine *e, store *st, const char *workflow, const char *keep_key)
{
    for (int state = STORE_RUN_PENDING; state <= STORE_RUN_RUNNING; state++) {
        store_run_filter f = {.state = state, .workflow = workflow, .limit = 1000};
        store_run_list l = {0};
        if (store_run_list_page(st, &f, &l, NULL) != STORE_OK) continue;
        for (size_t i = 0; i < l.count; i++) {
            if (l.items[i].request_key && strcmp(l.items[i].request_key, keep_key) == 0) continue;
            char *err = NULL;
            if (engine_cancel_run(e, l.items[i].id, &err) < 0)
                log_warn("schedule %s: cannot cancel run %s (overlap cancel_other): %s", workflow, l.items[i].id,
                         err ? err : "?");
            else
                log_info("schedule %s: run %s cancelled for the next schedule time (overlap cancel_other)", workflow,
                         l.items[i].id);
            free(err);
        }
        store_run_list_free(&l);
    }
}

static void tick_one(engine *e, store *st, const wf_workflow *wf, int64_t now_ms, json_t *started, json_t *skipped)
{
    const wf_schedule *sc = &wf->schedule;
    char *err = NULL;
    int64_t mark = 0;
    if (store_schedule_mark(st, wf->name, now_ms, 0, &mark, &err) != STORE_OK) {
        log_error("schedule %s: cannot read its progress: %s", wf->name, err ? err : "?");
        free(err);
        return;
    }
    int64_t active = 0, queued = 0;
    int counted = 0, n = 0, old = 0;
    int64_t handled = 0, old_first = 0, old_last = 0;
    for (int64_t t = cron_next(&sc->expr, sc->zone, mark / 1000); t >= 0 && t * 1000 <= now_ms && n < MAX_PER_TICK;
         t = cron_next(&sc->expr, sc->zone, t)) {
        int64_t tms = t * 1000;
        char when[40];
        util_rfc3339(tms, when, sizeof when);
        if (tms < now_ms - sc->catchup_ms) { /* older than catchup: skipped, logged once below */
            if (old++ == 0) old_first = tms;
            old_last = tms;
            handled = tms;
            continue;
        }
        n++;
        if (!counted && store_run_count_active(st, wf->name, &active, &queued, NULL) == STORE_OK) counted = 1;
        char key[400];
        snprintf(key, sizeof key, "schedule:%s:%s", wf->name, when);
        int queue = 0;
        const char *why = NULL;
        if (sc->overlap == WF_OVERLAP_SKIP && active + queued > 0) why = "a run of the workflow is still active";
        if (sc->overlap == WF_OVERLAP_BUFFER_ONE && active > 0) {
            if (queued > 0) why = "a run already waits behind the active one";
            else queue = 1;
        }
        if (why != NULL) {
            /* The key may have started a run already (another replica, an earlier tick): then it is not skipped. */
            store_run prev = {0};
            int had = store_run_get_by_request_key(st, key, &prev, NULL) == STORE_OK;
            store_run_free(&prev);
            if (!had) {
                log_info("schedule %s: %s skipped (overlap %s: %s)", wf->name, when, wf_overlap_name(sc->overlap), why);
                json_array_append_new(skipped, json_pack("{s:s,s:s,s:s}", "workflow", wf->name, "logical_time", when,
                                                         "why", why));
                handled = tms;
                continue;
            }
        }
        if (sc->overlap == WF_OVERLAP_CANCEL_OTHER && active + queued > 0) cancel_others(e, st, wf->name, key);
        int64_t prev_t = cron_prev(&sc->expr, sc->zone, t - 1);
        engine_run_times times = {.logical_ms = tms, .start_ms = prev_t >= 0 ? prev_t * 1000 : tms, .end_ms = tms};
        char run_id[64] = "";
        int rc = engine_start_run_at(e, wf->name, NULL, key, "schedule", &times, queue, run_id, sizeof run_id, &err);
        if (rc < 0 && rc != ENG_ERR_PARAMS && rc != ENG_ERR_NO_WORKFLOW && rc != ENG_ERR_CONFLICT) {
            /* the store failed: this time is not handled; the next tick tries it again */
            log_error("schedule %s: cannot start the run of %s: %s", wf->name, when, err ? err : "?");
            free(err);
            break;
        }
        if (rc < 0) {
            log_error("schedule %s: the run of %s cannot start: %s", wf->name, when, err ? err : "?");
            json_array_append_new(skipped, json_pack("{s:s,s:s,s:s}", "workflow", wf->name, "logical_time", when, "why",
                                                     err ? err : "cannot start"));
        } else {
            if (rc == 0) {
                if (queue) queued++;
                else active++;
                log_info("schedule %s: run %s started for %s", wf->name, run_id, when);
            }
            json_array_append_new(started, json_pack("{s:s,s:s,s:s,s:b}", "workflow", wf->name, "run", run_id,
                                                     "logical_time", when, "existing", rc == 1));
        }
        free(err);
        err = NULL;
        handled = tms;
    }
    if (old > 0) {
        char a[40], b[40];
        log_warn("schedule %s: %d missed schedule time(s) from %s to %s are older than catchup (%lld s): skipped",
                 wf->name, old, util_rfc3339(old_first, a, sizeof a), util_rfc3339(old_last, b, sizeof b),
                 (long long)(sc->catchup_ms / 1000));
    }
    if (handled > 0 && store_schedule_mark(st, wf->name, now_ms, handled, &mark, &err) != STORE_OK) {
        log_error("schedule %s: cannot record its progress: %s", wf->name, err ? err : "?");
        free(err);
    }
}

json_t *schedule_tick(engine *e, store *st, int64_t now_ms)
{
    json_t *started = json_array(), *skipped = json_array();
    const wf_workflow *wf;
    for (size_t i = 0; (wf = engine_current_at(e, i)) != NULL; i++)
        if (wf->schedule.cron != NULL) tick_one(e, st, wf, now_ms, started, skipped);
    char when[40];
    return json_pack("{s:s,s:o,s:o}", "time", util_rfc3339(now_ms, when, sizeof when), "started", started, "skipped",
                     skipped);
}

void schedule_every(engine *e, store *st, hs_request *r, void *arg)
{
    (void)r;
    (void)arg;
    json_decref(schedule_tick(e, st, util_now_ms()));
    backfill_drive_all(e, st); /* backfills with max_active start more as their runs end */
}

static void tick_request(engine *e, store *st, hs_request *r, void *arg)
{
    json_t *out = schedule_tick(e, st, *(int64_t *)arg);
    backfill_drive_all(e, st); /* scaled to zero, this tick is the backfills' clock too */
    reply_complete(r, 200, out);
    json_decref(out);
}

void schedule_api_tick(struct engine_loop *l, hs_request *r)
{
    const char *h = hs_header(r, "X-CloudScheduler-ScheduleTime");
    json_t *body = NULL;
    const char *b = hs_body(r);
    if (h == NULL && b != NULL && *b != '\0') {
        json_error_t je;
        body = json_loads(b, 0, &je);
        if (!json_is_object(body) || (json_object_get(body, "time") && !json_is_string(json_object_get(body, "time")))) {
            json_decref(body);
            hs_respond_error(r, 400, "the body must be {} or {\"time\": \"RFC 3339\"}");
            return;
        }
        h = json_string_value(json_object_get(body, "time"));
    }
    int64_t now = util_now_ms(), t = now;
    if (h != NULL && util_parse_rfc3339(h, &t) != 0) {
        json_decref(body);
        hs_respond_error(r, 400, "the schedule time is not an RFC 3339 time");
        return;
    }
    json_decref(body);
    if (t > now + 5 * 60 * 1000) {
        hs_respond_error(r, 400, "the schedule time is more than 5 minutes ahead of this server's clock");
        return;
    }
    int64_t *arg = xmalloc(sizeof *arg);
    *arg = t;
    engine_loop_call(l, r, tick_request, arg, free);
}
