/* reconciler: what to ask Dataflow about an in-flight step, and when to look again.
 * Uses: store (types). Must not: do I/O, touch the store, or call Lua. */
#include "reconciler.h"

rec_policy rec_policy_default(void)
{
    rec_policy p = {.poll_ms = 15000, .poll_max_ms = 300000, .lease_ms = 60000,
                    .hint_first_ms = 200, .hint_max_ms = 1000, .lag_window_ms = 120000};
    return p;
}

rec_action rec_decide(const store_step *st, int run_stopping, int64_t now_ms)
{
    switch (st->state) {
    case STORE_STEP_LAUNCHING:
        /* An intent whose answer this process is not waiting for: the request may or may not have reached
         * Dataflow, so look the name up; the engine re-sends only when nothing is found. */
        return REC_FIND;
    case STORE_STEP_RUNNING:
        if (st->job_id == NULL) return REC_FIND;
        if (run_stopping) return REC_STOP;
        if (st->deadline_at > 0 && now_ms >= st->deadline_at) return REC_STOP;
        return REC_GET;
    case STORE_STEP_CANCELLING:
        return st->job_id == NULL ? REC_FIND : REC_GET;
    default:
        return REC_NONE;
    }
}

int rec_expecting_end(const rec_policy *p, const store_step *st, int64_t now_ms)
{
    return st->hint_at > 0 && now_ms - st->hint_at < p->lag_window_ms;
}

int64_t rec_next_check(const rec_policy *p, const store_step *st, int failures, int64_t now_ms)
{
    int64_t d;
    if (rec_expecting_end(p, st, now_ms)) {
        /* A job that should be ending: look again soon, a little less soon the longer it takes, so that the
         * answer is late by at most an eighth of the lag (and hint_max_ms). */
        d = (now_ms - st->hint_at) / 8;
        if (d < p->hint_first_ms) d = p->hint_first_ms;
        if (d > p->hint_max_ms) d = p->hint_max_ms;
    } else {
        d = p->poll_ms;
    }
    for (int i = 0; i < failures && d < p->poll_max_ms; i++) d *= 2;
    if (failures > 0 && d > p->poll_max_ms) d = p->poll_max_ms;
    if (d < 1) d = 1;
    int64_t at = now_ms + d;
    /* A running step's timeout is acted on when it falls due, not at the next poll after it. */
    if (st->state == STORE_STEP_RUNNING && st->deadline_at > 0 && st->deadline_at < at)
        at = st->deadline_at > now_ms ? st->deadline_at : now_ms;
    return at;
}
