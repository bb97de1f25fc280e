/* reconciler: what to ask Dataflow about an in-flight step, and when to look again.
 * Uses: store (types). Must not: do I/O, touch the store, or call Lua. */
#include "reconciler.h"

rec_policy rec_policy_default(void)
{
    rec_policy p = {.poll_ms = 15000, .poll_max_ms = 300000, .lease_ms = 60000};
    return p;
}

rec_action rec_decide(const store_step *st, int run_cancelling, int64_t now_ms)
{
    switch (st->state) {
    case STORE_STEP_LAUNCHING:
        /* An intent whose answer this process is not waiting for: the request may or may not have reached
         * Dataflow, so look the name up; the engine re-sends only when nothing is found. */
        return REC_FIND;
    case STORE_STEP_RUNNING:
        if (st->job_id == NULL) return REC_FIND;
        if (run_cancelling) return REC_STOP;
        if (st->deadline_at > 0 && now_ms >= st->deadline_at) return REC_STOP;
        return REC_GET;
    case STORE_STEP_CANCELLING:
        return st->job_id == NULL ? REC_FIND : REC_GET;
    default:
        return REC_NONE;
    }
}

int64_t rec_next_check(const rec_policy *p, const store_step *st, int failures, int64_t now_ms)
{
    int64_t d = st->state == STORE_STEP_CANCELLING && failures == 0 ? p->poll_ms / 4 : p->poll_ms;
    for (int i = 0; i < failures && d < p->poll_max_ms; i++) d *= 2;
    if (d > p->poll_max_ms) d = p->poll_max_ms;
    if (d < 1) d = 1;
    return now_ms + d;
}
