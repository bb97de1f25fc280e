/* store_firestore_attempts: a step's attempts (store.h, "attempts") and the capacity/schedule records
 * (store.h, "capacity") as Firestore documents (store_firestore_attempts.c, store_firestore_sched.c).
 * store_attempts.c and store_sched.c check the arguments and call these for a Firestore store.
 * Uses: store_backend.h. Must not: be included outside the store modules. */
#ifndef SLUICE_STORE_FIRESTORE_ATTEMPTS_H
#define SLUICE_STORE_FIRESTORE_ATTEMPTS_H
#include "store_backend.h"

/* ---- attempts (store_firestore_attempts.c) ---- */
int fs_attempt_get(store *s, const char *run_id, const char *step, int attempt, store_attempt *out, char **err);
int fs_attempt_put(store *s, const store_attempt *a, char **err);
int fs_attempt_list_run(store *s, const char *run_id, store_attempt_list *out, char **err);
int fs_attempt_set_running(store *s, const char *run_id, const char *step, int attempt, int64_t at, char **err);
int fs_attempt_end(store *s, const char *run_id, const char *step, int attempt, store_step_state state,
                   const char *error, char **err);
int fs_attempt_set_cause(store *s, const char *run_id, const char *step, int attempt, const char *cause, char **err);

/* ---- capacity, schedules, backfills (store_firestore_sched.c) ---- */
int fs_pool_active(store *s, const char *project, const char *region, int64_t *active, char **err);
int fs_step_wait_capacity(store *s, const char *run_id, const char *name, int from_state, int attempt,
                          const char *project, const char *region, int64_t next_check_at, const char *note,
                          char **err);
int fs_step_wait_since(store *s, const char *run_id, const char *name, int64_t *since, char **err);
int fs_pool_wake(store *s, const char *project, const char *region, int n, int *woken, char **err);
int fs_step_wait_clear(store *s, const char *run_id, const char *name, char **err);
int fs_run_slots(store *s, const char *workflow, int64_t *active, char **err);
int fs_run_queued(store *s, const char *workflow, int limit, char ***ids, size_t *n, char **err);
int fs_run_times_put(store *s, const char *run_id, int64_t logical, int64_t start, int64_t end, char **err);
int fs_run_times_get(store *s, const char *run_id, int64_t *logical, int64_t *start, int64_t *end, char **err);
int fs_schedule_mark(store *s, const char *workflow, int64_t seen, int64_t handled, int64_t *mark, char **err);
int fs_run_count_active(store *s, const char *workflow, int64_t *active, int64_t *queued, char **err);
int fs_backfill_put(store *s, const char *id, const char *workflow, const char *state, const char *doc, char **err);
int fs_backfill_get(store *s, const char *id, char **state, char **doc, char **err);
int fs_backfill_list(store *s, int only_running, int limit, char ***ids, size_t *n, char **err);
int fs_run_count_origin(store *s, const char *workflow, const char *origin, int64_t *counts, char **err);

#endif
