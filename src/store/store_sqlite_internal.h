/* store_sqlite_internal: what the SQLite backend's files share: the handle, the statement ids, the statement,
 * binding and row helpers, and the operations store_sqlite_open puts in its struct store_ops (store_sqlite.c:
 * schema and migrations, open, close, transactions; store_sqlite_stmt.c: the SQL, binding, errors, reading rows;
 * store_sqlite_runs.c: scripts, runs, leases; store_sqlite_steps.c: steps and the event inbox).
 * Uses: SQLite 3, store_backend.h. Must not: be included by anything but the store_sqlite*.c files. */
#ifndef SLUICE_STORE_SQLITE_INTERNAL_H
#define SLUICE_STORE_SQLITE_INTERNAL_H
#include <sqlite3.h>
#include <stddef.h>
#include <stdint.h>

#include "store_backend.h"

#define RUN_COLS "id, workflow, script_hash, params, state, origin, request_key, error, created_at, updated_at, finished_at"
#define STEP_COLS                                                                                            \
    "run_id, name, state, attempt, job_name, job_id, project, region, request, job_state, result, error,"    \
    " started_at, finished_at, next_check_at, deadline_at, updated_at, check_failures, hint_at, failure_cause, running_at"
#define EVENT_COLS "id, message_id, source, job_id, job_name, state, payload, received_at, processed_at"
#define RUN_WHERE_CURSOR " WHERE (created_at, id) < (?1, ?2)"
#define RUN_ORDER " ORDER BY created_at DESC, id DESC LIMIT ?5"

/* The first time a statement records the job state JOB_STATE_RUNNING, it also records when. */
#define RUNNING_AT(state, now) \
    " running_at = CASE WHEN running_at IS NULL AND " state " = 'JOB_STATE_RUNNING' THEN " now " ELSE running_at END,"

/* Every statement the backend runs, prepared once per handle on first use. */
enum {
    Q_BEGIN, Q_COMMIT, Q_ROLLBACK,
    Q_SCRIPT_PUT, Q_SCRIPT_SOURCE, Q_SCRIPT_GET,
    Q_RUN_CREATE, Q_RUN_GET, Q_RUN_GET_KEY, Q_RUN_LIST, Q_RUN_LIST_STATE, Q_RUN_LIST_WF, Q_RUN_LIST_BOTH,
    Q_RUN_SET_STATE, Q_RUN_STATE, Q_RUN_COUNT, Q_RUN_REDRIVE, Q_RUN_PRUNE,
    Q_STEP_INSERT, Q_STEP_GET, Q_STEP_LIST, Q_STEP_BY_NAME, Q_STEP_BY_ID, Q_STEP_INTENT, Q_STEP_SET_JOB,
    Q_STEP_SET_STATE, Q_STEP_FINISH, Q_STEP_SET_CHECK, Q_STEP_RECLAIM, Q_STEP_SET_HINT, Q_STEP_DUE, Q_STEP_NEXT_DUE, Q_STEP_STATE, Q_STEP_SET_CAUSE, Q_STEP_SET_NOTE,
    Q_INBOX_PUT, Q_INBOX_FIND, Q_INBOX_FETCH, Q_INBOX_MARK, Q_INBOX_PRUNE,
    Q_LEASE_TAKE, Q_LEASE_GET, Q_LEASE_RELEASE,
    Q_COUNT
};

/* How many of the store modules' own statement texts a handle keeps prepared (there are about 40). */
#define SQ_TEXTS_MAX 128

typedef struct {
    store base; /* first: a sq_store * is a store * */
    sqlite3 *db;
    int version;
    int sync_level; /* PRAGMA synchronous as set at open (1 NORMAL, 2 FULL): sq_sync need not ask */
    sqlite3_stmt *stmts[Q_COUNT];
    struct {
        const char *sql; /* a store module's statement text (store_sql.c), as the module passed it */
        sqlite3_stmt *st;
    } texts[SQ_TEXTS_MAX]; /* those statements, prepared once (store_sqlite_prepare) */
    int n_texts;
    int64_t busy_since_us; /* the short-poll busy handler: when the current wait began */
} sq_store;

/* A store handle of this backend (its struct store comes first). */
static inline sq_store *sq(store *s) { return (sq_store *)s; }

/* ---- statements, binding, errors (store_sqlite_stmt.c) ---- */
int sq_map(int rc);
int sq_fail(sq_store *q, char **err, int rc, const char *what);
int sq_stmt(sq_store *q, int id, sqlite3_stmt **out, char **err);
void sq_done(sqlite3_stmt *st);
int sq_bind_text(sqlite3_stmt *st, int i, const char *v);
int sq_bind_time(sqlite3_stmt *st, int i, int64_t v);
int sq_bind_opt_int(sqlite3_stmt *st, int i, int v, int any);
int sq_bind_all(const int *rcs, size_t n);
#define BIND(...) sq_bind_all((const int[]){__VA_ARGS__}, sizeof((const int[]){__VA_ARGS__}) / sizeof(int))
int sq_exec_stmt(sq_store *q, sqlite3_stmt *st, int *changes, const char *what, char **err);
int sq_exec(sq_store *q, const char *sql, const char *what, char **err);
int sq_query_int(sq_store *q, const char *sql, int64_t *out, char **err);

/* ---- reading rows (store_sqlite_stmt.c) ---- */
char *sq_col_dup(sqlite3_stmt *st, int i, int *oom);
int64_t sq_col_time(sqlite3_stmt *st, int i);
typedef int (*row_reader)(sqlite3_stmt *st, void *out, char **err);
int sq_rd_run(sqlite3_stmt *st, void *out, char **err);
int sq_rd_step(sqlite3_stmt *st, void *out, char **err);
int sq_rd_event(sqlite3_stmt *st, void *out, char **err);
int sq_one(sq_store *q, sqlite3_stmt *st, row_reader reader, void *out, const char *what, char **err);
int sq_many(sq_store *q, sqlite3_stmt *st, row_reader reader, size_t size, size_t max, void **items,
            size_t *count, const char *what, char **err);

/* ---- the operations (struct store_ops, store_backend.h) ---- */
/* store_sqlite_runs.c */
int sq_script_put(store *s, const char *hash, const char *workflow, const char *source, char **err);
int sq_script_get(store *s, const char *hash, store_script *out, char **err);
int sq_run_create(store *s, const store_run *r, char **err);
int sq_run_get(store *s, const char *key, int by_request_key, store_run *out, char **err);
int sq_run_list_page(store *s, const store_run_filter *f, store_run_list *out, char **err);
int sq_run_find_page(store *s, const store_run_query *qy, store_run_list *out, char **err);
int sq_run_set_state(store *s, const char *id, int expected, store_run_state next, const char *error,
                     char **err);
int sq_run_redrive(store *s, const char *id, store_run_state expected, const char *script_hash,
                   const char *params_json, char **err);
int sq_run_lock(store *s, const char *run_id, int wait, int *got, char **err);
int sq_lease_acquire(store *s, const char *name, const char *holder, int64_t ttl_ms, store_lease *out,
                     char **err);
int sq_lease_release(store *s, const char *name, const char *holder, char **err);
int sq_run_prune(store *s, int64_t before, int limit, int64_t *deleted, char **err);
int sq_run_count_by_state(store *s, int64_t counts[STORE_RUN_STATE_COUNT], char **err);
/* store_sqlite_steps.c */
int sq_step_insert(store *s, const store_step *p, char **err);
int sq_step_get(store *s, const char *run_id, const char *name, store_step *out, char **err);
int sq_step_list_run(store *s, const char *run_id, store_step_list *out, char **err);
int sq_step_find(store *s, store_step_key key, const char *value, store_step *out, char **err);
int sq_step_record_intent(store *s, const char *run_id, const char *name, int expected_state,
                          int expected_attempt, const store_intent *in, char **err);
int sq_step_set_job(store *s, const char *run_id, const char *name, int attempt, const char *job_id,
                    const char *job_state, int64_t next_check_at, char **err);
int sq_step_set_state(store *s, const char *run_id, const char *name, int expected_state,
                      int expected_attempt, store_step_state next, char **err);
int sq_step_finish(store *s, const char *run_id, const char *name, int attempt, store_step_state final,
                   const char *job_state, const char *result_json, const char *error, char **err);
int sq_step_reclaim(store *s, const char *run_id, const char *name, int attempt, int64_t claimed,
                    int64_t next_check_at, int check_failures, char **err);
int sq_step_set_check(store *s, const char *run_id, const char *name, int attempt, int64_t next_check_at,
                      int check_failures, const char *job_state, char **err);
int sq_step_set_hint(store *s, const char *run_id, const char *name, int attempt, int64_t hint_at,
                     int64_t next_check_at, char **err);
int sq_step_set_note(store *s, const char *run_id, const char *name, int attempt, const char *note, char **err);
int sq_step_set_cause(store *s, const char *run_id, const char *name, int attempt, const char *cause,
                      char **err);
int sq_step_next_due(store *s, int64_t *at, char **err);
int sq_step_due(store *s, int64_t now, int limit, store_step_list *out, char **err);
int sq_inbox_put(store *s, const store_event *ev, int64_t *id, char **err);
int sq_inbox_fetch(store *s, int limit, store_event_list *out, char **err);
int sq_inbox_mark_processed(store *s, int64_t id, int64_t processed_at, char **err);
int sq_inbox_prune(store *s, int64_t before, int64_t *deleted, char **err);

#endif
