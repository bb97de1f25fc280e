/* decide: what follows a step's outcome, and when a join may start. Pure; shared by the engine and plan.
 * Uses: workflow (model). Must not: touch the store, call Lua, do I/O. */
#include "decide.h"
#include "mem.h"

#include <stdlib.h>
#include <string.h>

const char *dec_outcome_name(dec_outcome o)
{
    const char *n = o == DEC_SUCCEEDED ? "succeeded" : wf_fail_class_name((int)o);
    return n ? n : "?";
}

dec_outcome dec_classify(const wf_step *step, const char *job_state, int timed_out)
{
    /* A timeout is a failure even when the stopped job ends in a success state (a drained streaming job). */
    if (timed_out) return DEC_TIMED_OUT;
    return wf_step_success(step, job_state) ? DEC_SUCCEEDED : DEC_JOB_FAILED;
}

dec_result dec_step(const wf_workflow *wf, const wf_step *step, dec_outcome o, int attempt, int launched,
                    int run_running)
{
    dec_result r = {.action = DEC_RECORD};
    if (!run_running) return r;
    if (o == DEC_SUCCEEDED) {
        r.action = DEC_NEXT;
        return r;
    }
    if (launched && attempt < step->retry_attempts && (step->retry_on & (1u << o))) {
        r.action = DEC_RETRY;
        r.next_attempt = attempt + 1;
        r.retry_delay_s = wf_retry_delay(step, attempt + 1);
        return r;
    }
    if (step->on_failure != NULL) {
        r.action = DEC_ON_FAILURE;
        r.target = step->on_failure;
        return r;
    }
    r.action = DEC_FAIL_RUN;
    r.stop_others = wf->cancel_on_failure;
    /* The run's failure handler runs once whichever step failed, but not for its own failure. */
    if (wf->failure_handler != NULL && strcmp(wf->failure_handler, step->name) != 0) r.handler = wf->failure_handler;
    return r;
}

/* Whether step `target` can be reached from an active step (static edges, choices, on_failure). */
static int reachable_from_active(const wf_workflow *wf, const dec_step_state *states, size_t target)
{
    size_t n = wf->n_steps;
    char *seen = xcalloc(n, 1);
    size_t *queue = xmalloc(n * sizeof *queue), qh = 0, qt = 0;
    for (size_t i = 0; i < n; i++)
        if (states[i] == DEC_ST_ACTIVE) {
            seen[i] = 1;
            queue[qt++] = i;
        }
    int found = 0;
    while (qh < qt && !found) {
        size_t at = queue[qh++];
        const wf_step *s = &wf->steps[at];
        if (at == target) found = 1;
        size_t n_out = s->n_next + (s->on_failure ? 1 : 0);
        for (size_t j = 0; j < n_out; j++) {
            int t = wf_step_index(wf, j < s->n_next ? s->next[j] : s->on_failure);
            if (t >= 0 && !seen[t]) {
                seen[t] = 1;
                queue[qt++] = (size_t)t;
            }
        }
    }
    free(seen);
    free(queue);
    return found;
}

dec_join dec_join_check(const wf_workflow *wf, const wf_step *join, const dec_step_state *states,
                        const char **blocker)
{
    for (size_t i = 0; i < join->n_preds; i++) {
        size_t p = join->preds[i];
        switch (states[p]) {
        case DEC_ST_SUCCEEDED: continue;
        case DEC_ST_ACTIVE:
        case DEC_ST_WAITING: return DEC_JOIN_WAIT;
        case DEC_ST_ENDED:
            if (blocker) *blocker = wf->steps[p].name;
            return DEC_JOIN_BLOCKED;
        case DEC_ST_ABSENT:
            if (reachable_from_active(wf, states, p)) return DEC_JOIN_WAIT;
            continue;
        }
    }
    return DEC_JOIN_READY;
}
