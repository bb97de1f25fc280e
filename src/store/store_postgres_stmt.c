/* store_postgres_stmt: the PostgreSQL backend's statements: the SQL of each (prepared once per connection on first
 * use; sent unprepared through a pooler), parameters as text, running them (a write inside a transaction under a
 * savepoint), mapping SQLSTATEs to store_rc, and reading rows into store records.
 * Uses: libpq, store_postgres_internal.h. Must not: decide what an operation does (store_postgres_runs.c and
 * store_postgres_steps.c do), or change the schema (store_postgres.c's migrations do). */
#include <libpq-fe.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mem.h"
#include "store_postgres_internal.h"

/* The SQL of each statement (the ids are in store_postgres_internal.h). */
static const char *const pg_sql[Q_COUNT] = {
    [Q_SCRIPT_PUT] = "INSERT INTO scripts(hash, workflow, source, created_at)"
                     " VALUES ($1::text, $2::text, $3::text, $4::bigint) ON CONFLICT (hash) DO NOTHING",
    [Q_SCRIPT_SOURCE] = "SELECT source FROM scripts WHERE hash = $1::text",
    [Q_SCRIPT_GET] = "SELECT hash, workflow, source, created_at FROM scripts WHERE hash = $1::text",
    [Q_RUN_CREATE] = "INSERT INTO runs(" RUN_COLS ") VALUES ($1::text, $2::text, $3::text, $4::text, $5::text,"
                     " $6::text, $7::text, $8::text, $9::bigint, $10::bigint, $11::bigint)",
    [Q_RUN_GET] = "SELECT " RUN_COLS " FROM runs WHERE id = $1::text",
    [Q_RUN_GET_KEY] = "SELECT " RUN_COLS " FROM runs WHERE request_key = $1::text",
    /* The variants number their parameters densely: cursor time, cursor id, [state], [workflow], limit. */
    [Q_RUN_LIST] = "SELECT " RUN_COLS " FROM runs WHERE (created_at, id) < ($1::bigint, $2::text)" RUN_ORDER "$3::int",
    [Q_RUN_LIST_STATE] = "SELECT " RUN_COLS " FROM runs WHERE (created_at, id) < ($1::bigint, $2::text)"
                         " AND state = $3::text" RUN_ORDER "$4::int",
    [Q_RUN_LIST_WF] = "SELECT " RUN_COLS " FROM runs WHERE (created_at, id) < ($1::bigint, $2::text)"
                      " AND workflow = $3::text" RUN_ORDER "$4::int",
    [Q_RUN_LIST_BOTH] = "SELECT " RUN_COLS " FROM runs WHERE (created_at, id) < ($1::bigint, $2::text)"
                        " AND state = $3::text AND workflow = $4::text" RUN_ORDER "$5::int",
    [Q_RUN_SET_STATE] = "UPDATE runs SET state = $3::text, updated_at = $4::bigint,"
                        " finished_at = CASE WHEN $5::boolean THEN $4::bigint ELSE finished_at END,"
                        " error = COALESCE($6::text, error)"
                        " WHERE id = $1::text AND ($2::text IS NULL OR state = $2::text)",
    [Q_RUN_STATE] = "SELECT state FROM runs WHERE id = $1::text",
    [Q_RUN_COUNT] = "SELECT state, count(*) FROM runs GROUP BY state",
    [Q_RUN_REDRIVE] = "UPDATE runs SET state = 'running', error = NULL, finished_at = NULL, updated_at = $5::bigint,"
                      " script_hash = COALESCE($3::text, script_hash), params = COALESCE($4::text, params)"
                      " WHERE id = $1::text AND state = $2::text",
    [Q_STEP_SET_CAUSE] = "UPDATE steps SET failure_cause = $4::text WHERE run_id = $1::text AND name = $2::text"
                         " AND attempt = $3::int",
    [Q_STEP_SET_NOTE] = "UPDATE steps SET error = $4::text WHERE run_id = $1::text AND name = $2::text"
                        " AND attempt = $3::int AND state IN ('launching','running','cancelling')",
    /* Steps go with their run (ON DELETE CASCADE). */
    [Q_RUN_PRUNE] = "DELETE FROM runs WHERE id IN (SELECT id FROM runs WHERE finished_at IS NOT NULL"
                    " AND finished_at < $1::bigint AND state IN ('succeeded','failed','cancelled') LIMIT $2::int)",
    [Q_STEP_INSERT] = "INSERT INTO steps(run_id, name, state, attempt, job_name, job_id, project, region, request,"
                      " job_state, result, error, started_at, finished_at, next_check_at, deadline_at, updated_at)"
                      " VALUES ($1::text, $2::text, $3::text, $4::int, $5::text, $6::text, $7::text, $8::text,"
                      " $9::text, $10::text, $11::text, $12::text, $13::bigint, $14::bigint, $15::bigint,"
                      " $16::bigint, $17::bigint)",
    [Q_STEP_GET] = "SELECT " STEP_COLS " FROM steps WHERE run_id = $1::text AND name = $2::text",
    [Q_STEP_LIST] = "SELECT " STEP_COLS " FROM steps WHERE run_id = $1::text ORDER BY id",
    [Q_STEP_BY_NAME] = "SELECT " STEP_COLS " FROM steps WHERE job_name = $1::text",
    [Q_STEP_BY_ID] = "SELECT " STEP_COLS " FROM steps WHERE job_id = $1::text",
    [Q_STEP_INTENT] = "UPDATE steps SET state = 'launching', attempt = $5::int, job_name = $6::text,"
                      " project = $7::text, region = $8::text, request = $9::text, started_at = $10::bigint,"
                      " updated_at = $10::bigint, next_check_at = $11::bigint, deadline_at = $12::bigint,"
                      " job_id = NULL, job_state = NULL, result = NULL, error = NULL, finished_at = NULL,"
                      " check_failures = 0, hint_at = 0, failure_cause = NULL, running_at = NULL"
                      " WHERE run_id = $1::text AND name = $2::text AND ($3::text IS NULL OR state = $3::text)"
                      " AND ($4::int IS NULL OR attempt = $4::int)",
    /* A step may be asked to cancel while its launch is in flight: it keeps cancelling but learns its id. */
    [Q_STEP_SET_JOB] = "UPDATE steps SET job_id = $4::text, job_state = COALESCE($5::text, job_state),"
                       RUNNING_AT("$5::text", "$7::bigint")
                       " next_check_at = $6::bigint, updated_at = $7::bigint,"
                       " state = CASE WHEN state = 'launching' THEN 'running' ELSE state END"
                       " WHERE run_id = $1::text AND name = $2::text AND attempt = $3::int"
                       " AND state IN ('launching', 'cancelling') AND (job_id IS NULL OR job_id = $4::text)",
    [Q_STEP_SET_STATE] = "UPDATE steps SET state = $5::text, updated_at = $6::bigint,"
                         " finished_at = CASE WHEN $7::boolean THEN $6::bigint ELSE finished_at END"
                         " WHERE run_id = $1::text AND name = $2::text AND ($3::text IS NULL OR state = $3::text)"
                         " AND ($4::int IS NULL OR attempt = $4::int)",
    [Q_STEP_FINISH] = "UPDATE steps SET state = $4::text, job_state = COALESCE($5::text, job_state),"
                      " result = COALESCE($6::text, result), error = COALESCE($7::text, error),"
                      " finished_at = $8::bigint, updated_at = $8::bigint"
                      " WHERE run_id = $1::text AND name = $2::text AND ($3::int IS NULL OR attempt = $3::int)"
                      " AND state NOT IN ('succeeded', 'failed', 'cancelled', 'skipped')",
    [Q_STEP_RECLAIM] = "UPDATE steps SET next_check_at = $5::bigint, check_failures = $6::int, updated_at = $7::bigint"
                       " WHERE run_id = $1::text AND name = $2::text AND attempt = $3::int"
                       " AND next_check_at = $4::bigint AND state IN ('launching', 'cancelling') AND job_id IS NULL",
    [Q_STEP_SET_CHECK] = "UPDATE steps SET next_check_at = $4::bigint, check_failures = $5::int,"
                         RUNNING_AT("$6::text", "$7::bigint")
                         " job_state = COALESCE($6::text, job_state), updated_at = $7::bigint"
                         " WHERE run_id = $1::text AND name = $2::text AND attempt = $3::int",
    /* The first hint is kept (the schedule counts from it); the check is brought forward, never put back. */
    [Q_STEP_SET_HINT] = "UPDATE steps SET hint_at = CASE WHEN hint_at = 0 THEN $4::bigint ELSE hint_at END,"
                        " next_check_at = LEAST(next_check_at, $5::bigint), updated_at = $6::bigint"
                        " WHERE run_id = $1::text AND name = $2::text AND attempt = $3::int"
                        " AND state IN ('launching','running','cancelling')",
    /* The WHERE repeats the partial index's predicate so the planner can use steps_due. */
    [Q_STEP_DUE] = "SELECT " STEP_COLS " FROM steps WHERE " IN_FLIGHT " AND next_check_at <= $1::bigint"
                   " ORDER BY next_check_at, id LIMIT $2::int",
    [Q_STEP_NEXT_DUE] = "SELECT min(next_check_at) FROM steps WHERE " IN_FLIGHT,
    [Q_STEP_STATE] = "SELECT state, attempt FROM steps WHERE run_id = $1::text AND name = $2::text",
    /* ON CONFLICT DO NOTHING without a target covers both dedupe keys (message_id and inbox_identity). */
    [Q_INBOX_PUT] = "INSERT INTO inbox(message_id, source, job_id, job_name, state, payload, received_at)"
                    " VALUES ($1::text, $2::text, $3::text, $4::text, $5::text, $6::text, $7::bigint)"
                    " ON CONFLICT DO NOTHING RETURNING id",
    [Q_INBOX_FIND] = "(SELECT id FROM inbox WHERE message_id = $1::text"
                     " UNION ALL SELECT id FROM inbox WHERE job_id = $2::text AND state = $3::text) LIMIT 1",
    [Q_INBOX_FETCH] = "SELECT " EVENT_COLS " FROM inbox WHERE processed_at IS NULL ORDER BY id LIMIT $1::int",
    [Q_INBOX_MARK] = "UPDATE inbox SET processed_at = COALESCE(processed_at, $2::bigint) WHERE id = $1::bigint",
    [Q_INBOX_PRUNE] = "DELETE FROM inbox WHERE processed_at IS NOT NULL AND processed_at < $1::bigint",
    /* Inside the engine's transaction: another engine's locked rows are skipped, ours stay locked until COMMIT. */
    [Q_STEP_DUE_LOCK] = "SELECT " STEP_COLS " FROM steps WHERE " IN_FLIGHT " AND next_check_at <= $1::bigint"
                        " ORDER BY next_check_at, id LIMIT $2::int FOR UPDATE SKIP LOCKED",
    [Q_INBOX_FETCH_LOCK] = "SELECT " EVENT_COLS " FROM inbox WHERE processed_at IS NULL ORDER BY id LIMIT $1::int"
                           " FOR UPDATE SKIP LOCKED",
    /* NO KEY UPDATE: it excludes other engines' locks (and updates of the run row) but not the key-share lock
     * that adding a step of the run takes for its foreign key. */
    [Q_RUN_LOCK] = "SELECT 1 FROM runs WHERE id = $1::text FOR NO KEY UPDATE",
    [Q_RUN_LOCK_NOWAIT] = "SELECT 1 FROM runs WHERE id = $1::text FOR NO KEY UPDATE SKIP LOCKED",
    /* Taken when free or expired (a new term), renewed by its holder (the same term), on the server's clock;
     * no row when another holds it. excluded.expires_at - ttl is the statement's "now". */
    [Q_LEASE_TAKE] = "INSERT INTO leases(name, holder, term, expires_at) VALUES ($1::text, $2::text, 1,"
                     " (extract(epoch FROM clock_timestamp()) * 1000)::bigint + $3::bigint)"
                     " ON CONFLICT (name) DO UPDATE SET"
                     " term = CASE WHEN leases.holder = excluded.holder THEN leases.term ELSE leases.term + 1 END,"
                     " holder = excluded.holder, expires_at = excluded.expires_at"
                     " WHERE leases.holder = excluded.holder OR leases.expires_at <= excluded.expires_at - $3::bigint"
                     " RETURNING term, $3::bigint",
    [Q_LEASE_GET] = "SELECT holder, term, expires_at - (extract(epoch FROM clock_timestamp()) * 1000)::bigint"
                    " FROM leases WHERE name = $1::text",
    [Q_LEASE_RELEASE] = "UPDATE leases SET expires_at = 0 WHERE name = $1::text AND holder = $2::text",
};

/* ---- parameters: every value travels as text; NULL is SQL NULL ---- */

void pg_p_text(pg_params *p, const char *v) { p->v[p->n++] = v; }

void pg_p_i64(pg_params *p, int64_t v)
{
    snprintf(p->buf[p->n], sizeof p->buf[p->n], "%lld", (long long)v);
    p->v[p->n] = p->buf[p->n];
    p->n++;
}

/* 0 is "unset" and stored as NULL. */
void pg_p_time(pg_params *p, int64_t v)
{
    if (v == 0) pg_p_text(p, NULL);
    else pg_p_i64(p, v);
}

void pg_p_opt_int(pg_params *p, int v, int any)
{
    if (v == any) pg_p_text(p, NULL);
    else pg_p_i64(p, v);
}

void pg_p_bool(pg_params *p, int v) { pg_p_text(p, v ? "true" : "false"); }

/* ---- errors ---- */

/* Maps a failed result's SQLSTATE to a store_rc. */
static int pg_map_state(const char *sqlstate)
{
    if (sqlstate == NULL) return STORE_IO; /* no server answer: the connection failed */
    if (strcmp(sqlstate, "23505") == 0) return STORE_EXISTS;          /* unique_violation */
    if (strncmp(sqlstate, "23", 2) == 0) return STORE_INVALID;        /* FK, check, not null */
    if (strcmp(sqlstate, "55P03") == 0 ||                             /* lock_not_available (lock_timeout) */
        strcmp(sqlstate, "40001") == 0 ||                             /* serialization_failure */
        strcmp(sqlstate, "40P01") == 0 ||                             /* deadlock_detected */
        strcmp(sqlstate, "57014") == 0)                               /* query_canceled (statement_timeout) */
        return STORE_BUSY;
    if (strcmp(sqlstate, "53200") == 0) return STORE_NOMEM;           /* out_of_memory */
    if (strcmp(sqlstate, "22021") == 0) return STORE_INVALID;         /* character_not_in_repertoire */
    if (strncmp(sqlstate, "XX", 2) == 0 && strcmp(sqlstate, "XX000") != 0) return STORE_CORRUPT; /* data_corrupted */
    return STORE_IO;
}

/* libpq's message without its trailing newline; borrowed from `res` or the connection. */
const char *pg_msg(pg_store *q, const PGresult *res, char *buf, size_t cap)
{
    const char *m = res ? PQresultErrorMessage(res) : NULL;
    if (m == NULL || m[0] == '\0') m = q->conn ? PQerrorMessage(q->conn) : "no connection";
    snprintf(buf, cap, "%s", m);
    size_t n = strlen(buf);
    while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == ' ')) buf[--n] = '\0';
    return buf;
}

/* Formats "what: libpq message (SQLSTATE x)" for a failed `res` (may be NULL) and returns its store_rc. */
int pg_fail(pg_store *q, const PGresult *res, char **err, const char *what)
{
    char buf[1024];
    const char *state = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
    return store_fail(err, pg_map_state(state), "%s: %s (SQLSTATE %s)", what, pg_msg(q, res, buf, sizeof buf),
                      state ? state : "none");
}

/* ---- running statements ---- */

/* Runs a one-off SQL text (migrations, session settings, transaction control). */
int pg_simple(pg_store *q, const char *sql, const char *what, char **err)
{
    PGresult *res = PQexec(q->conn, sql);
    ExecStatusType st = PQresultStatus(res);
    int rc = STORE_OK;
    if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK) rc = pg_fail(q, res, err, what);
    PQclear(res);
    return rc;
}

/* Runs a one-off query with text parameters returning one value: *out = malloc'd text (NULL for SQL NULL or
 * no row). */
int pg_query_text(pg_store *q, const char *sql, int n, const char *const *vals, char **out, const char *what,
                  char **err)
{
    *out = NULL;
    PGresult *res = PQexecParams(q->conn, sql, n, NULL, vals, NULL, NULL, 0);
    int rc = STORE_OK;
    if (PQresultStatus(res) != PGRES_TUPLES_OK) rc = pg_fail(q, res, err, what);
    else if (PQntuples(res) > 0 && !PQgetisnull(res, 0, 0))
        *out = xstrdup(PQgetvalue(res, 0, 0));
    PQclear(res);
    return rc;
}

/* The next result of a pipeline: the one result of a statement, or NULL when the pipeline broke. Consumes the
 * NULL that ends each statement's results. */
static PGresult *pg_pipe_next(PGconn *c)
{
    PGresult *res = PQgetResult(c);
    if (res != NULL && PQresultStatus(res) != PGRES_PIPELINE_SYNC) {
        PGresult *end = PQgetResult(c);
        PQclear(end); /* NULL after a statement's result */
    }
    return res;
}

/* A write inside a transaction, under a savepoint so that its failure (a unique key taken, a lock wait timed out)
 * leaves the transaction usable, as store.h promises. SAVEPOINT, the statement and RELEASE travel in one round
 * trip (libpq's pipeline mode); only a failure costs a second one, to roll back to the savepoint. */
static int pg_run_guarded(pg_store *q, const char *name, const char *sql, const pg_params *p, PGresult **out,
                          const char *what, char **err)
{
    PGconn *c = q->conn;
    int n = p ? p->n : 0;
    const char *const *v = p ? p->v : NULL;
    if (PQenterPipelineMode(c) != 1 ||
        PQsendQueryParams(c, "SAVEPOINT sluice_call", 0, NULL, NULL, NULL, NULL, 0) != 1 ||
        (q->base.opts.pooled ? PQsendQueryParams(c, sql, n, NULL, v, NULL, NULL, 0)
                             : PQsendQueryPrepared(c, name, n, v, NULL, NULL, 0)) != 1 ||
        PQsendQueryParams(c, "RELEASE SAVEPOINT sluice_call", 0, NULL, NULL, NULL, NULL, 0) != 1 ||
        PQpipelineSync(c) != 1) {
        int rc = store_fail(err, STORE_IO, "%s: %s", what, PQerrorMessage(c));
        while (PQisBusy(c) == 0 && PQgetResult(c) != NULL) {}
        PQexitPipelineMode(c);
        return rc;
    }
    PGresult *sp = pg_pipe_next(c), *res = pg_pipe_next(c), *rel = pg_pipe_next(c), *sync = pg_pipe_next(c);
    ExecStatusType st = PQresultStatus(res);
    int ok = PQresultStatus(sp) == PGRES_COMMAND_OK && (st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK) &&
             PQresultStatus(rel) == PGRES_COMMAND_OK;
    int rc = STORE_OK;
    if (!ok) rc = pg_fail(q, PQresultStatus(sp) != PGRES_COMMAND_OK ? sp : res, err, what);
    PQclear(sp);
    PQclear(rel);
    PQclear(sync);
    PQexitPipelineMode(c);
    if (ok) {
        *out = res;
        return STORE_OK;
    }
    PQclear(res);
    pg_simple(q, "ROLLBACK TO SAVEPOINT sluice_call; RELEASE SAVEPOINT sluice_call", what, NULL);
    return rc;
}

/* Runs the prepared statement `id` (preparing it on first use on this connection) with `p`. On STORE_OK
 * *out holds the result (caller PQclears). Inside an explicit transaction a statement that writes runs under
 * a savepoint, so its failure (a unique key taken, a lock wait timed out) leaves the transaction usable, as
 * store.h promises; a failed read leaves it aborted, and the caller rolls back. */
int pg_run(pg_store *q, int id, const pg_params *p, PGresult **out, const char *what, char **err)
{
    *out = NULL;
    char name[16];
    snprintf(name, sizeof name, "sluice_q%d", id);
    if (!q->prepared[id] && !q->base.opts.pooled) { /* a pooler may hand each transaction another session */
        PGresult *res = PQprepare(q->conn, name, pg_sql[id], 0, NULL);
        int ok = PQresultStatus(res) == PGRES_COMMAND_OK;
        int rc = ok ? STORE_OK : pg_fail(q, res, err, what);
        PQclear(res);
        if (!ok) return rc;
        q->prepared[id] = 1;
    }
    int savepoint = q->tx && ((strncmp(pg_sql[id], "SELECT", 6) != 0 && pg_sql[id][0] != '(') ||
                              strstr(pg_sql[id], " FOR ") != NULL);
    if (savepoint) return pg_run_guarded(q, name, pg_sql[id], p, out, what, err);
    PGresult *res = q->base.opts.pooled ? PQexecParams(q->conn, pg_sql[id], p ? p->n : 0, NULL, p ? p->v : NULL, NULL, NULL, 0)
                                        : PQexecPrepared(q->conn, name, p ? p->n : 0, p ? p->v : NULL, NULL, NULL, 0);
    ExecStatusType st = PQresultStatus(res);
    if (st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK) {
        *out = res;
        return STORE_OK;
    }
    int rc = pg_fail(q, res, err, what);
    PQclear(res);
    return rc;
}

/* Number of rows an INSERT/UPDATE/DELETE changed. */
int64_t pg_changes(PGresult *res)
{
    const char *t = PQcmdTuples(res);
    return t && *t ? strtoll(t, NULL, 10) : 0;
}

/* ---- reading rows ---- */

char *pg_col_dup(PGresult *res, int row, int col)
{
    return PQgetisnull(res, row, col) ? NULL : xstrdup(PQgetvalue(res, row, col));
}

int64_t pg_col_i64(PGresult *res, int row, int col)
{
    return PQgetisnull(res, row, col) ? 0 : strtoll(PQgetvalue(res, row, col), NULL, 10);
}

const char *pg_col_str(PGresult *res, int row, int col)
{
    return PQgetisnull(res, row, col) ? NULL : PQgetvalue(res, row, col);
}

int pg_read_run(PGresult *res, int row, void *out, char **err)
{
    store_run *r = out;
    r->id = pg_col_dup(res, row, 0);
    r->workflow = pg_col_dup(res, row, 1);
    r->script_hash = pg_col_dup(res, row, 2);
    r->params_json = pg_col_dup(res, row, 3);
    const char *state = pg_col_str(res, row, 4);
    r->origin = pg_col_dup(res, row, 5);
    r->request_key = pg_col_dup(res, row, 6);
    r->error = pg_col_dup(res, row, 7);
    r->created_at = pg_col_i64(res, row, 8);
    r->updated_at = pg_col_i64(res, row, 9);
    r->finished_at = pg_col_i64(res, row, 10);
    int rc = STORE_OK;
    if (store_run_state_parse(state, &r->state) != STORE_OK)
        rc = store_fail(err, STORE_CORRUPT, "run '%s' has unknown state '%s'", r->id, state ? state : "(null)");
    if (rc != STORE_OK) store_run_free(r);
    return rc;
}

int pg_read_step(PGresult *res, int row, void *out, char **err)
{
    store_step *p = out;
    p->run_id = pg_col_dup(res, row, 0);
    p->name = pg_col_dup(res, row, 1);
    const char *state = pg_col_str(res, row, 2);
    p->attempt = (int)pg_col_i64(res, row, 3);
    p->job_name = pg_col_dup(res, row, 4);
    p->job_id = pg_col_dup(res, row, 5);
    p->project = pg_col_dup(res, row, 6);
    p->region = pg_col_dup(res, row, 7);
    p->request_json = pg_col_dup(res, row, 8);
    p->job_state = pg_col_dup(res, row, 9);
    p->result_json = pg_col_dup(res, row, 10);
    p->error = pg_col_dup(res, row, 11);
    p->started_at = pg_col_i64(res, row, 12);
    p->finished_at = pg_col_i64(res, row, 13);
    p->next_check_at = pg_col_i64(res, row, 14);
    p->deadline_at = pg_col_i64(res, row, 15);
    p->updated_at = pg_col_i64(res, row, 16);
    p->check_failures = (int)pg_col_i64(res, row, 17);
    p->hint_at = pg_col_i64(res, row, 18);
    p->failure_cause = pg_col_dup(res, row, 19);
    p->running_at = pg_col_i64(res, row, 20);
    int rc = STORE_OK;
    if (store_step_state_parse(state, &p->state) != STORE_OK)
        rc = store_fail(err, STORE_CORRUPT, "step '%s/%s' has unknown state '%s'", p->run_id, p->name,
                        state ? state : "(null)");
    if (rc != STORE_OK) store_step_free(p);
    return rc;
}

int pg_read_event(PGresult *res, int row, void *out, char **err)
{
    store_event *e = out;
    e->id = pg_col_i64(res, row, 0);
    e->message_id = pg_col_dup(res, row, 1);
    const char *src = pg_col_str(res, row, 2);
    e->job_id = pg_col_dup(res, row, 3);
    e->job_name = pg_col_dup(res, row, 4);
    e->state = pg_col_dup(res, row, 5);
    e->payload_json = pg_col_dup(res, row, 6);
    e->received_at = pg_col_i64(res, row, 7);
    e->processed_at = pg_col_i64(res, row, 8);
    e->source = STORE_SRC_COUNT;
    for (int i = 0; i < STORE_SRC_COUNT && src != NULL; i++)
        if (strcmp(src, store_event_source_name((store_event_source)i)) == 0) e->source = (store_event_source)i;
    int rc = STORE_OK;
    if (e->source == STORE_SRC_COUNT)
        rc = store_fail(err, STORE_CORRUPT, "event %lld has unknown source '%s'", (long long)e->id,
                        src ? src : "(null)");
    if (rc != STORE_OK) store_event_free(e);
    return rc;
}

/* Runs `id` expecting at most one row, read into `out`; STORE_NOTFOUND when there is none. */
int pg_one(pg_store *q, int id, const pg_params *p, row_reader reader, void *out, const char *what, char **err)
{
    PGresult *res = NULL;
    int rc = pg_run(q, id, p, &res, what, err);
    if (rc != STORE_OK) return rc;
    if (PQntuples(res) == 0) rc = store_fail(err, STORE_NOTFOUND, "%s: not found", what);
    else rc = reader(res, 0, out, err);
    PQclear(res);
    return rc;
}

/* Runs `id` collecting every row (the SQL bounds them) into a malloc'd array of `size`-byte items. */
int pg_many(pg_store *q, int id, const pg_params *p, row_reader reader, size_t size, void **items,
            size_t *count, const char *what, char **err)
{
    *items = NULL;
    *count = 0;
    PGresult *res = NULL;
    int rc = pg_run(q, id, p, &res, what, err);
    if (rc != STORE_OK) return rc;
    int n = PQntuples(res);
    char *arr = n > 0 ? xcalloc((size_t)n, size) : NULL;
    size_t got = 0;
    for (int i = 0; rc == STORE_OK && i < n; i++) {
        rc = reader(res, i, arr + (size_t)i * size, err);
        if (rc == STORE_OK) got++;
    }
    PQclear(res);
    *items = arr; /* on failure the caller's list free releases the complete rows */
    *count = got;
    return rc;
}
