/* reconciler: the policy for steps whose job is in flight — what to ask Dataflow next (look a launch up, get
 * the job, stop it on timeout or cancellation) and when to look again (poll interval, per-job backoff).
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
} rec_policy;

rec_policy rec_policy_default(void);

/* What to do with a due step. `run_cancelling` is 1 when its run is being cancelled. */
rec_action rec_decide(const store_step *st, int run_cancelling, int64_t now_ms);

/* When to check again after a check: healthy (failures = 0) → poll_ms; after failed checks →
 * min(poll_max_ms, poll_ms * 2^failures). A stopped (cancelling) job is checked sooner. */
int64_t rec_next_check(const rec_policy *p, const store_step *st, int failures, int64_t now_ms);

#endif
