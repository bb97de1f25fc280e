/* store_sqlite_stmt: the SQLite backend's statements: the SQL of each (prepared once per handle on first use),
 * binding, running, mapping SQLite's result codes to store_rc, and reading rows into store records.
 * Uses: SQLite 3, store_sqlite_internal.h. Must not: decide what an operation does (store_sqlite_runs.c and
 * store_sqlite_steps.c do), or change the schema (store_sqlite.c's migrations do). */
#include <limits.h>
#include <sqlite3.h>
#include <stdlib.h>
#include <string.h>

#include "mem.h"
#include "store_sqlite_internal.h"

/* The SQL of each statement (the ids are in store_sqlite_internal.h). */
static const char *const sq_sql[Q_COUNT] = {
    [Q_BEGIN] = "BEGIN IMMEDIATE",
    [Q_COMMIT] = "COMMIT",
    [Q_ROLLBACK] = "ROLLBACK",
    [Q_SCRIPT_PUT] = "INSERT INTO scripts(hash, workflow, source, created_at) VALUES (?1, ?2, ?3, ?4)"
                     " ON CONFLICT(hash) DO NOTHING",
    [Q_SCRIPT_SOURCE] = "SELECT source FROM scripts WHERE hash = ?1",
    [Q_SCRIPT_GET] = "SELECT hash, workflow, source, created_at FROM scripts WHERE hash = ?1",
    [Q_RUN_CREATE] = "INSERT INTO runs(" RUN_COLS ") VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
    [Q_RUN_GET] = "SELECT " RUN_COLS " FROM runs WHERE id = ?1",
    [Q_RUN_GET_KEY] = "SELECT " RUN_COLS " FROM runs WHERE request_key = ?1",
    [Q_RUN_LIST] = "SELECT " RUN_COLS " FROM runs" RUN_WHERE_CURSOR RUN_ORDER,
    [Q_RUN_LIST_STATE] = "SELECT " RUN_COLS " FROM runs" RUN_WHERE_CURSOR " AND state = ?3" RUN_ORDER,
    [Q_RUN_LIST_WF] = "SELECT " RUN_COLS " FROM runs" RUN_WHERE_CURSOR " AND workflow = ?4" RUN_ORDER,
    [Q_RUN_LIST_BOTH] = "SELECT " RUN_COLS " FROM runs" RUN_WHERE_CURSOR " AND state = ?3 AND workflow = ?4" RUN_ORDER,
    [Q_RUN_SET_STATE] = "UPDATE runs SET state = ?3, updated_at = ?4,"
                        " finished_at = CASE WHEN ?5 THEN ?4 ELSE finished_at END, error = COALESCE(?6, error)"
                        " WHERE id = ?1 AND (?2 IS NULL OR state = ?2)",
    [Q_RUN_STATE] = "SELECT state FROM runs WHERE id = ?1",
    [Q_RUN_COUNT] = "SELECT state, count(*) FROM runs GROUP BY state",
    /* Steps go with their run (ON DELETE CASCADE). */
    [Q_RUN_PRUNE] = "DELETE FROM runs WHERE id IN (SELECT id FROM runs WHERE finished_at IS NOT NULL"
                    " AND finished_at < ?1 AND state IN ('succeeded','failed','cancelled') LIMIT ?2)",
    [Q_RUN_REDRIVE] = "UPDATE runs SET state = 'running', error = NULL, finished_at = NULL, updated_at = ?5,"
                      " script_hash = COALESCE(?3, script_hash), params = COALESCE(?4, params)"
                      " WHERE id = ?1 AND state = ?2",
    [Q_STEP_INSERT] = "INSERT INTO steps(run_id, name, state, attempt, job_name, job_id, project, region, request,"
                      " job_state, result, error, started_at, finished_at, next_check_at, deadline_at, updated_at)"
                      " VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17)",
    [Q_STEP_GET] = "SELECT " STEP_COLS " FROM steps WHERE run_id = ?1 AND name = ?2",
    [Q_STEP_LIST] = "SELECT " STEP_COLS " FROM steps WHERE run_id = ?1 ORDER BY id",
    [Q_STEP_BY_NAME] = "SELECT " STEP_COLS " FROM steps WHERE job_name = ?1",
    [Q_STEP_BY_ID] = "SELECT " STEP_COLS " FROM steps WHERE job_id = ?1",
    [Q_STEP_INTENT] = "UPDATE steps SET state = 'launching', attempt = ?5, job_name = ?6, project = ?7,"
                      " region = ?8, request = ?9, started_at = ?10, updated_at = ?10, next_check_at = ?11,"
                      " deadline_at = ?12, job_id = NULL, job_state = NULL, result = NULL, error = NULL,"
                      " finished_at = NULL, check_failures = 0, hint_at = 0, failure_cause = NULL, running_at = NULL"
                      " WHERE run_id = ?1 AND name = ?2 AND (?3 IS NULL OR state = ?3)"
                      " AND (?4 IS NULL OR attempt = ?4)",
    /* A step may be asked to cancel while its launch is in flight: it keeps cancelling but learns its id. */
    [Q_STEP_SET_JOB] = "UPDATE steps SET job_id = ?4, job_state = COALESCE(?5, job_state), next_check_at = ?6," RUNNING_AT("?5", "?7")
                       " updated_at = ?7, state = CASE WHEN state = 'launching' THEN 'running' ELSE state END"
                       " WHERE run_id = ?1 AND name = ?2 AND attempt = ?3"
                       " AND state IN ('launching', 'cancelling') AND (job_id IS NULL OR job_id = ?4)",
    [Q_STEP_SET_STATE] = "UPDATE steps SET state = ?5, updated_at = ?6,"
                         " finished_at = CASE WHEN ?7 THEN ?6 ELSE finished_at END"
                         " WHERE run_id = ?1 AND name = ?2 AND (?3 IS NULL OR state = ?3)"
                         " AND (?4 IS NULL OR attempt = ?4)",
    [Q_STEP_FINISH] = "UPDATE steps SET state = ?4, job_state = COALESCE(?5, job_state),"
                      " result = COALESCE(?6, result), error = COALESCE(?7, error), finished_at = ?8,"
                      " updated_at = ?8"
                      " WHERE run_id = ?1 AND name = ?2 AND (?3 IS NULL OR attempt = ?3)"
                      " AND state NOT IN ('succeeded', 'failed', 'cancelled', 'skipped')",
    [Q_STEP_RECLAIM] = "UPDATE steps SET next_check_at = ?5, check_failures = ?6, updated_at = ?7"
                       " WHERE run_id = ?1 AND name = ?2 AND attempt = ?3 AND next_check_at = ?4"
                       " AND state IN ('launching', 'cancelling') AND job_id IS NULL",
    [Q_STEP_SET_CHECK] = "UPDATE steps SET next_check_at = ?4, check_failures = ?5," RUNNING_AT("?6", "?7")
                         " job_state = COALESCE(?6, job_state), updated_at = ?7"
                         " WHERE run_id = ?1 AND name = ?2 AND attempt = ?3",
    /* The first hint is kept (the schedule counts from it); the check is brought forward, never put back. */
    [Q_STEP_SET_HINT] = "UPDATE steps SET hint_at = CASE WHEN hint_at = 0 THEN ?4 ELSE hint_at END,"
                        " next_check_at = MIN(next_check_at, ?5), updated_at = ?6"
                        " WHERE run_id = ?1 AND name = ?2 AND attempt = ?3"
                        " AND state IN ('launching','running','cancelling')",
    /* The WHERE repeats the partial index's condition word for word so the planner uses steps_due. */
    [Q_STEP_DUE] = "SELECT " STEP_COLS " FROM steps"
                   " WHERE state IN ('pending','launching','running','cancelling') AND next_check_at <= ?1"
                   " ORDER BY next_check_at, id LIMIT ?2",
    [Q_STEP_NEXT_DUE] = "SELECT min(next_check_at) FROM steps"
                        " WHERE state IN ('pending','launching','running','cancelling')",
    [Q_STEP_STATE] = "SELECT state, attempt FROM steps WHERE run_id = ?1 AND name = ?2",
    [Q_STEP_SET_CAUSE] = "UPDATE steps SET failure_cause = ?4 WHERE run_id = ?1 AND name = ?2 AND attempt = ?3",
    [Q_STEP_SET_NOTE] = "UPDATE steps SET error = ?4 WHERE run_id = ?1 AND name = ?2 AND attempt = ?3"
                        " AND state IN ('launching','running','cancelling')",
    [Q_INBOX_PUT] = "INSERT INTO inbox(message_id, source, job_id, job_name, state, payload, received_at)"
                    " VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) ON CONFLICT DO NOTHING",
    [Q_INBOX_FIND] = "SELECT id FROM inbox WHERE message_id = ?1"
                     " UNION ALL SELECT id FROM inbox WHERE job_id = ?2 AND state = ?3 LIMIT 1",
    [Q_INBOX_FETCH] = "SELECT " EVENT_COLS " FROM inbox WHERE processed_at IS NULL ORDER BY id LIMIT ?1",
    [Q_INBOX_MARK] = "UPDATE inbox SET processed_at = COALESCE(processed_at, ?2) WHERE id = ?1",
    [Q_INBOX_PRUNE] = "DELETE FROM inbox WHERE processed_at IS NOT NULL AND processed_at < ?1",
    /* Taken when free or expired (a new term), renewed by its holder (the same term); no row when another holds it. */
    [Q_LEASE_TAKE] = "INSERT INTO leases(name, holder, term, expires_at) VALUES (?1, ?2, 1, ?3 + ?4)"
                     " ON CONFLICT (name) DO UPDATE SET"
                     " term = CASE WHEN leases.holder = excluded.holder THEN leases.term ELSE leases.term + 1 END,"
                     " holder = excluded.holder, expires_at = excluded.expires_at"
                     " WHERE leases.holder = excluded.holder OR leases.expires_at <= ?3"
                     " RETURNING term, expires_at - ?3",
    [Q_LEASE_GET] = "SELECT holder, term, expires_at - ?2 FROM leases WHERE name = ?1",
    [Q_LEASE_RELEASE] = "UPDATE leases SET expires_at = 0 WHERE name = ?1 AND holder = ?2",
};

/* Maps an SQLite result code (extended codes are on) to a store_rc. */
int sq_map(int rc)
{
    switch (rc & 0xff) {
    case SQLITE_OK:
    case SQLITE_ROW:
    case SQLITE_DONE: return STORE_OK;
    case SQLITE_BUSY:
    case SQLITE_LOCKED: return STORE_BUSY;
    case SQLITE_NOMEM: return STORE_NOMEM;
    case SQLITE_CORRUPT:
    case SQLITE_NOTADB: return STORE_CORRUPT;
    case SQLITE_CONSTRAINT:
        if (rc == SQLITE_CONSTRAINT_PRIMARYKEY || rc == SQLITE_CONSTRAINT_UNIQUE) return STORE_EXISTS;
        return STORE_INVALID;
    default: return STORE_IO;
    }
}

/* Formats "what: sqlite message" for the handle's last error `rc` and returns its store_rc. */
int sq_fail(sq_store *q, char **err, int rc, const char *what)
{
    return store_fail(err, sq_map(rc), "%s: %s (sqlite code %d)", what, q->db ? sqlite3_errmsg(q->db) : "", rc);
}

/* Borrows the cached statement `id`, preparing it on first use. The caller resets it (sq_done). */
int sq_stmt(sq_store *q, int id, sqlite3_stmt **out, char **err)
{
    if (q->stmts[id] == NULL) {
        int rc = sqlite3_prepare_v3(q->db, sq_sql[id], -1, SQLITE_PREPARE_PERSISTENT, &q->stmts[id], NULL);
        if (rc != SQLITE_OK) {
            q->stmts[id] = NULL;
            return sq_fail(q, err, rc, "prepare");
        }
    }
    *out = q->stmts[id];
    return STORE_OK;
}

int store_sqlite_prepare(store *s, const char *sql, void **out, int *kept)
{
    sq_store *q = (sq_store *)s;
    sqlite3_stmt *st = NULL;
    *kept = 0;
    for (int i = 0; i < q->n_texts; i++)
        if (q->texts[i].sql == sql || strcmp(q->texts[i].sql, sql) == 0) {
            *out = q->texts[i].st;
            *kept = 1;
            return SQLITE_OK;
        }
    int keep = q->n_texts < SQ_TEXTS_MAX;
    int rc = sqlite3_prepare_v3(q->db, sql, -1, keep ? SQLITE_PREPARE_PERSISTENT : 0, &st, NULL);
    if (rc != SQLITE_OK) {
        sqlite3_finalize(st);
        *out = NULL;
        return rc;
    }
    if (keep) {
        q->texts[q->n_texts].sql = sql;
        q->texts[q->n_texts].st = st;
        q->n_texts++;
        *kept = 1;
    }
    *out = st;
    return SQLITE_OK;
}

/* Resets a statement after use so it holds no read snapshot and no borrowed bindings. */
void sq_done(sqlite3_stmt *st)
{
    if (st == NULL) return;
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
}

int sq_bind_text(sqlite3_stmt *st, int i, const char *v)
{
    return v ? sqlite3_bind_text(st, i, v, -1, SQLITE_STATIC) : sqlite3_bind_null(st, i);
}

/* 0 is "unset" and stored as NULL. */
int sq_bind_time(sqlite3_stmt *st, int i, int64_t v)
{
    return v ? sqlite3_bind_int64(st, i, v) : sqlite3_bind_null(st, i);
}

int sq_bind_opt_int(sqlite3_stmt *st, int i, int v, int any)
{
    return v == any ? sqlite3_bind_null(st, i) : sqlite3_bind_int(st, i, v);
}

/* Binds all (rc, ...) results: the first failure wins. */
int sq_bind_all(const int *rcs, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (rcs[i] != SQLITE_OK) return rcs[i];
    return SQLITE_OK;
}

/* Runs a statement that returns no rows. *changes (may be NULL) = rows changed. */
int sq_exec_stmt(sq_store *q, sqlite3_stmt *st, int *changes, const char *what, char **err)
{
    int rc = sqlite3_step(st);
    int out = STORE_OK;
    if (rc != SQLITE_DONE && rc != SQLITE_ROW) out = sq_fail(q, err, rc, what);
    else if (changes != NULL) *changes = sqlite3_changes(q->db);
    sq_done(st);
    return out;
}

/* Runs a one-off SQL script (migrations, pragmas). */
int sq_exec(sq_store *q, const char *sql, const char *what, char **err)
{
    char *msg = NULL;
    int rc = sqlite3_exec(q->db, sql, NULL, NULL, &msg);
    int out = STORE_OK;
    if (rc != SQLITE_OK) {
        rc = sqlite3_extended_errcode(q->db);
        out = store_fail(err, sq_map(rc), "%s: %s (sqlite code %d)", what, msg ? msg : sqlite3_errstr(rc), rc);
    }
    sqlite3_free(msg);
    return out;
}

/* Reads one integer from a one-row query such as "PRAGMA user_version". */
int sq_query_int(sq_store *q, const char *sql, int64_t *out, char **err)
{
    sqlite3_stmt *st = NULL;
    int rc = sqlite3_prepare_v2(q->db, sql, -1, &st, NULL);
    int res = STORE_OK;
    if (rc != SQLITE_OK) {
        res = sq_fail(q, err, rc, sql);
        goto done;
    }
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) *out = sqlite3_column_int64(st, 0);
    else if (rc == SQLITE_DONE) *out = 0;
    else res = sq_fail(q, err, rc, sql);
done:
    sqlite3_finalize(st);
    return res;
}

/* ---- reading rows ---- */

/* Copies a TEXT column (NULL stays NULL); sets *oom when SQLite could not produce the text (its own
 * allocation failed: SQLITE_NOMEM). Caller frees. */
char *sq_col_dup(sqlite3_stmt *st, int i, int *oom)
{
    const unsigned char *t = sqlite3_column_text(st, i);
    if (t == NULL) {
        if (sqlite3_column_type(st, i) != SQLITE_NULL) *oom = 1;
        return NULL;
    }
    return xstrdup((const char *)t);
}

int64_t sq_col_time(sqlite3_stmt *st, int i)
{
    return sqlite3_column_type(st, i) == SQLITE_NULL ? 0 : sqlite3_column_int64(st, i);
}

static int read_run(sqlite3_stmt *st, store_run *r, char **err)
{
    int oom = 0;
    r->id = sq_col_dup(st, 0, &oom);
    r->workflow = sq_col_dup(st, 1, &oom);
    r->script_hash = sq_col_dup(st, 2, &oom);
    r->params_json = sq_col_dup(st, 3, &oom);
    const char *state = (const char *)sqlite3_column_text(st, 4);
    r->origin = sq_col_dup(st, 5, &oom);
    r->request_key = sq_col_dup(st, 6, &oom);
    r->error = sq_col_dup(st, 7, &oom);
    r->created_at = sq_col_time(st, 8);
    r->updated_at = sq_col_time(st, 9);
    r->finished_at = sq_col_time(st, 10);
    int rc = STORE_OK;
    if (oom) rc = store_fail(err, STORE_NOMEM, "out of memory reading a run");
    else if (store_run_state_parse(state, &r->state) != STORE_OK)
        rc = store_fail(err, STORE_CORRUPT, "run '%s' has unknown state '%s'", r->id, state ? state : "(null)");
    if (rc != STORE_OK) store_run_free(r);
    return rc;
}

static int read_step(sqlite3_stmt *st, store_step *p, char **err)
{
    int oom = 0;
    p->run_id = sq_col_dup(st, 0, &oom);
    p->name = sq_col_dup(st, 1, &oom);
    const char *state = (const char *)sqlite3_column_text(st, 2);
    p->attempt = sqlite3_column_int(st, 3);
    p->job_name = sq_col_dup(st, 4, &oom);
    p->job_id = sq_col_dup(st, 5, &oom);
    p->project = sq_col_dup(st, 6, &oom);
    p->region = sq_col_dup(st, 7, &oom);
    p->request_json = sq_col_dup(st, 8, &oom);
    p->job_state = sq_col_dup(st, 9, &oom);
    p->result_json = sq_col_dup(st, 10, &oom);
    p->error = sq_col_dup(st, 11, &oom);
    p->started_at = sq_col_time(st, 12);
    p->finished_at = sq_col_time(st, 13);
    p->next_check_at = sq_col_time(st, 14);
    p->deadline_at = sq_col_time(st, 15);
    p->updated_at = sq_col_time(st, 16);
    p->check_failures = sqlite3_column_int(st, 17);
    p->hint_at = sq_col_time(st, 18);
    p->failure_cause = sq_col_dup(st, 19, &oom);
    p->running_at = sq_col_time(st, 20);
    int rc = STORE_OK;
    if (oom) rc = store_fail(err, STORE_NOMEM, "out of memory reading a step");
    else if (store_step_state_parse(state, &p->state) != STORE_OK)
        rc = store_fail(err, STORE_CORRUPT, "step '%s/%s' has unknown state '%s'", p->run_id, p->name,
                        state ? state : "(null)");
    if (rc != STORE_OK) store_step_free(p);
    return rc;
}

static int read_event(sqlite3_stmt *st, store_event *e, char **err)
{
    int oom = 0;
    e->id = sqlite3_column_int64(st, 0);
    e->message_id = sq_col_dup(st, 1, &oom);
    const char *src = (const char *)sqlite3_column_text(st, 2);
    e->job_id = sq_col_dup(st, 3, &oom);
    e->job_name = sq_col_dup(st, 4, &oom);
    e->state = sq_col_dup(st, 5, &oom);
    e->payload_json = sq_col_dup(st, 6, &oom);
    e->received_at = sq_col_time(st, 7);
    e->processed_at = sq_col_time(st, 8);
    int rc = STORE_OK;
    e->source = STORE_SRC_COUNT;
    for (int i = 0; i < STORE_SRC_COUNT && src != NULL; i++)
        if (strcmp(src, store_event_source_name((store_event_source)i)) == 0) e->source = (store_event_source)i;
    if (oom) rc = store_fail(err, STORE_NOMEM, "out of memory reading an event");
    else if (e->source == STORE_SRC_COUNT)
        rc = store_fail(err, STORE_CORRUPT, "event %lld has unknown source '%s'", (long long)e->id,
                        src ? src : "(null)");
    if (rc != STORE_OK) store_event_free(e);
    return rc;
}

/* Steps a bound query expected to return at most one row into `out` via `reader`. */
int sq_rd_run(sqlite3_stmt *st, void *out, char **err) { return read_run(st, out, err); }
int sq_rd_step(sqlite3_stmt *st, void *out, char **err) { return read_step(st, out, err); }
int sq_rd_event(sqlite3_stmt *st, void *out, char **err) { return read_event(st, out, err); }

int sq_one(sq_store *q, sqlite3_stmt *st, row_reader reader, void *out, const char *what, char **err)
{
    int rc = sqlite3_step(st);
    int res;
    if (rc == SQLITE_ROW) res = reader(st, out, err);
    else if (rc == SQLITE_DONE) res = store_fail(err, STORE_NOTFOUND, "%s: not found", what);
    else res = sq_fail(q, err, rc, what);
    sq_done(st);
    return res;
}

/* Steps a bound query collecting up to `max` rows of `size` bytes into a malloc'd array. */
int sq_many(sq_store *q, sqlite3_stmt *st, row_reader reader, size_t size, size_t max, void **items,
            size_t *count, const char *what, char **err)
{
    size_t cap = 0, n = 0;
    char *arr = NULL;
    int res = STORE_OK;
    for (;;) {
        int rc = sqlite3_step(st);
        if (rc == SQLITE_DONE) break;
        if (rc != SQLITE_ROW) {
            res = sq_fail(q, err, rc, what);
            break;
        }
        if (n == max) break;
        if (n == cap) {
            size_t ncap = cap ? cap * 2 : 16;
            char *na = xrealloc(arr, ncap * size);
            arr = na;
            cap = ncap;
        }
        memset(arr + n * size, 0, size);
        res = reader(st, arr + n * size, err);
        if (res != STORE_OK) break;
        n++;
    }
    sq_done(st);
    *items = arr; /* on failure the caller's list free releases the n complete rows */
    *count = n;
    return res;
}
