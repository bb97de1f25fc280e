/* reconciler: the policy for steps whose job is in flight — what to ask Dataflow next (look a launch up, get
 * the job, stop it on timeout or cancellation) and when to look again: the poll interval for a job with no
 * news, a short schedule for a job that should be ending (an end event the API does not confirm yet — the
 * API lags behind the logs —, a cancel or drain the engine asked for, a job winding down), the step's
 * deadline, and a per-job backoff after failed checks.
 * Pure decisions over a step's stored fields and the clock; the engine performs them.
 * Uses: store (types only). Must not: do I/O, touch the store, or call Lua. */
#ifndef SLUICE_RECONCILER_H
#define SLUICE_RECONCILER_H
#include <stdint.h>

#include "store.h"

typedef enum {
    REC_NONE = 0,  /* nothing to do now */
    REC_FIND,      /* launch intent without a job id: look the name up (adopt) before any re-send */
    REC_GET,       /* ask for the job's state */
    REC_STOP,      /* cancel or drain the job (timeout or run cancellation) */
} rec_action;

typedef struct {
    int64_t poll_ms;       /* between two checks of a healthy running job */
    int64_t poll_max_ms;   /* cap of the per-job backoff after failed checks */
    int64_t lease_ms;      /* how long a dispatched check owns the step before it is due again */
    int64_t hint_first_ms; /* first re-check of a job that should be ending */
    int64_t hint_max_ms;   /* cap of that schedule's interval */
    int64_t lag_window_ms; /* how long after the hint the short schedule lasts; then the poll interval */
} rec_policy;

rec_policy rec_policy_default(void);

/* What to do with a due step. `run_stopping` is 1 when its run's in-flight jobs must be stopped (the run is
 * being cancelled, or failed with on_run_failure = "cancel"). */
rec_action rec_decide(const store_step *st, int run_stopping, int64_t now_ms);

/* Whether the step is on the short schedule: it has a hint (st->hint_at) younger than lag_window_ms. */
int rec_expecting_end(const rec_policy *p, const store_step *st, int64_t now_ms);

/* When to check again after a check. On the short schedule: clamp(age of the hint / 8, hint_first_ms,
 * hint_max_ms); otherwise poll_ms. After failed checks that doubles per failure, up to poll_max_ms. Never
 * later than a running step's deadline. */
int64_t rec_next_check(const rec_policy *p, const store_step *st, int failures, int64_t now_ms);

#endif
