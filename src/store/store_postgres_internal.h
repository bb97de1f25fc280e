/* store_postgres_internal: what the PostgreSQL backend's files share: the handle, the statement ids, the
 * parameter, statement and row helpers, and the operations store_postgres_open puts in its struct store_ops
 * (store_postgres.c: schema and migrations, session, open, close, transactions, the LISTEN connection;
 * store_postgres_stmt.c: the SQL, parameters, SQLSTATE mapping, running statements, reading rows;
 * store_postgres_runs.c: scripts, runs, leases; store_postgres_steps.c: steps and the event inbox).
 * Uses: libpq, store_backend.h. Must not: be included by anything but the store_postgres*.c files. */
#ifndef SLUICE_STORE_POSTGRES_INTERNAL_H
#define SLUICE_STORE_POSTGRES_INTERNAL_H
#include <libpq-fe.h>
#include <stddef.h>
#include <stdint.h>

#include "store_backend.h"

#define RUN_COLS "id, workflow, script_hash, params, state, origin, request_key, error, created_at, updated_at, finished_at"
#define STEP_COLS                                                                                            \
    "run_id, name, state, attempt, job_name, job_id, project, region, request, job_state, result, error,"    \
    " started_at, finished_at, next_check_at, deadline_at, updated_at, check_failures, hint_at, failure_cause,"  \
    " running_at"
/* The first time a statement records the job state JOB_STATE_RUNNING, it also records when. */
#define RUNNING_AT(state, now) \
    " running_at = CASE WHEN running_at IS NULL AND " state " = 'JOB_STATE_RUNNING' THEN " now " ELSE running_at END,"
#define EVENT_COLS "id, message_id, source, job_id, job_name, state, payload, received_at, processed_at"
#define RUN_ORDER " ORDER BY created_at DESC, id DESC LIMIT "
#define IN_FLIGHT "state IN ('pending','launching','running','cancelling')"

/* Every statement the backend runs, prepared once per connection on first use. Parameters carry explicit
 * casts so no statement depends on the server inferring a type. */
enum {
    Q_SCRIPT_PUT, Q_SCRIPT_SOURCE, Q_SCRIPT_GET,
    Q_RUN_CREATE, Q_RUN_GET, Q_RUN_GET_KEY, Q_RUN_LIST, Q_RUN_LIST_STATE, Q_RUN_LIST_WF, Q_RUN_LIST_BOTH,
    Q_RUN_SET_STATE, Q_RUN_STATE, Q_RUN_COUNT, Q_RUN_REDRIVE, Q_RUN_PRUNE, Q_STEP_SET_CAUSE, Q_STEP_SET_NOTE,
    Q_STEP_INSERT, Q_STEP_GET, Q_STEP_LIST, Q_STEP_BY_NAME, Q_STEP_BY_ID, Q_STEP_INTENT, Q_STEP_SET_JOB,
    Q_STEP_SET_STATE, Q_STEP_FINISH, Q_STEP_SET_CHECK, Q_STEP_RECLAIM, Q_STEP_SET_HINT, Q_STEP_DUE, Q_STEP_NEXT_DUE,
    Q_STEP_STATE,
    Q_INBOX_PUT, Q_INBOX_FIND, Q_INBOX_FETCH, Q_INBOX_MARK, Q_INBOX_PRUNE,
    Q_STEP_DUE_LOCK, Q_INBOX_FETCH_LOCK, Q_RUN_LOCK, Q_RUN_LOCK_NOWAIT, Q_LEASE_TAKE, Q_LEASE_GET, Q_LEASE_RELEASE,
    Q_COUNT
};

typedef struct {
    store base; /* first: a pg_store * is a store * */
    PGconn *conn;
    int notify;      /* the open transaction recorded an event: NOTIFY sluice_inbox with its commit */
    int version;
    int tx;                   /* an explicit transaction (store_begin) is open */
    unsigned char prepared[Q_COUNT];
} pg_store;

/* A store handle of this backend (its struct store comes first). */
static inline pg_store *pg(store *s) { return (pg_store *)s; }

/* ---- parameters (store_postgres_stmt.c): every value travels as text; NULL is SQL NULL ---- */

#define PG_MAXP 20
typedef struct {
    const char *v[PG_MAXP];
    char buf[PG_MAXP][24];
    int n;
} pg_params;

void pg_p_text(pg_params *p, const char *v);
void pg_p_i64(pg_params *p, int64_t v);
void pg_p_time(pg_params *p, int64_t v);
void pg_p_opt_int(pg_params *p, int v, int any);
void pg_p_bool(pg_params *p, int v);

/* ---- errors and running statements (store_postgres_stmt.c) ---- */
const char *pg_msg(pg_store *q, const PGresult *res, char *buf, size_t cap);
int pg_fail(pg_store *q, const PGresult *res, char **err, const char *what);
int pg_simple(pg_store *q, const char *sql, const char *what, char **err);
int pg_query_text(pg_store *q, const char *sql, int n, const char *const *vals, char **out, const char *what,
                  char **err);
int pg_run(pg_store *q, int id, const pg_params *p, PGresult **out, const char *what, char **err);
int64_t pg_changes(PGresult *res);

/* ---- reading rows (store_postgres_stmt.c) ---- */
char *pg_col_dup(PGresult *res, int row, int col);
int64_t pg_col_i64(PGresult *res, int row, int col);
const char *pg_col_str(PGresult *res, int row, int col);
int pg_read_run(PGresult *res, int row, void *out, char **err);
int pg_read_step(PGresult *res, int row, void *out, char **err);
int pg_read_event(PGresult *res, int row, void *out, char **err);
typedef int (*row_reader)(PGresult *res, int row, void *out, char **err);
int pg_one(pg_store *q, int id, const pg_params *p, row_reader reader, void *out, const char *what, char **err);
int pg_many(pg_store *q, int id, const pg_params *p, row_reader reader, size_t size, void **items,
            size_t *count, const char *what, char **err);

/* ---- the operations (struct store_ops, store_backend.h) ---- */
/* store_postgres_runs.c, with the helpers store_postgres_steps.c uses too */
int pg_msg_names(const char *msg, const char *constraint);
void pg_wake_engines(pg_store *q);
int pg_script_put(store *s, const char *hash, const char *workflow, const char *source, char **err);
int pg_script_get(store *s, const char *hash, store_script *out, char **err);
int pg_run_create(store *s, const store_run *r, char **err);
int pg_run_get(store *s, const char *key, int by_request_key, store_run *out, char **err);
int pg_run_list_page(store *s, const store_run_filter *f, store_run_list *out, char **err);
int pg_run_find_page(store *s, const store_run_query *qy, store_run_list *out, char **err);
int pg_run_set_state(store *s, const char *id, int expected, store_run_state next, const char *error,
                     char **err);
int pg_run_redrive(store *s, const char *id, store_run_state expected, const char *script_hash,
                   const char *params_json, char **err);
int pg_run_lock(store *s, const char *run_id, int wait, int *got, char **err);
int pg_lease_acquire(store *s, const char *name, const char *holder, int64_t ttl_ms, store_lease *out,
                     char **err);
int pg_lease_release(store *s, const char *name, const char *holder, char **err);
int pg_run_prune(store *s, int64_t before, int limit, int64_t *deleted, char **err);
int pg_run_count_by_state(store *s, int64_t counts[STORE_RUN_STATE_COUNT], char **err);
/* store_postgres_steps.c */
int pg_step_insert(store *s, const store_step *st, char **err);
int pg_step_get(store *s, const char *run_id, const char *name, store_step *out, char **err);
int pg_step_list_run(store *s, const char *run_id, store_step_list *out, char **err);
int pg_step_find(store *s, store_step_key key, const char *value, store_step *out, char **err);
int pg_step_record_intent(store *s, const char *run_id, const char *name, int expected_state,
                          int expected_attempt, const store_intent *in, char **err);
int pg_step_set_job(store *s, const char *run_id, const char *name, int attempt, const char *job_id,
                    const char *job_state, int64_t next_check_at, char **err);
int pg_step_set_state(store *s, const char *run_id, const char *name, int expected_state,
                      int expected_attempt, store_step_state next, char **err);
int pg_step_finish(store *s, const char *run_id, const char *name, int attempt, store_step_state final,
                   const char *job_state, const char *result_json, const char *error, char **err);
int pg_step_set_check(store *s, const char *run_id, const char *name, int attempt, int64_t next_check_at,
                      int check_failures, const char *job_state, char **err);
int pg_step_reclaim(store *s, const char *run_id, const char *name, int attempt, int64_t claimed,
                    int64_t next_check_at, int check_failures, char **err);
int pg_step_set_hint(store *s, const char *run_id, const char *name, int attempt, int64_t hint_at,
                     int64_t next_check_at, char **err);
int pg_step_set_cause(store *s, const char *run_id, const char *name, int attempt, const char *cause,
                      char **err);
int pg_step_set_note(store *s, const char *run_id, const char *name, int attempt, const char *note,
                     char **err);
int pg_step_next_due(store *s, int64_t *at, char **err);
int pg_step_due(store *s, int64_t now, int limit, store_step_list *out, char **err);
int pg_inbox_put(store *s, const store_event *ev, int64_t *id, char **err);
int pg_inbox_fetch(store *s, int limit, store_event_list *out, char **err);
int pg_inbox_mark_processed(store *s, int64_t id, int64_t processed_at, char **err);
int pg_inbox_prune(store *s, int64_t before, int64_t *deleted, char **err);

#endif
