/* store_sqlite: the SQLite backend of the store: schema and migrations, pragmas, cached statements.
 * Uses: SQLite 3 (WAL mode), jansson (store_describe only), store_backend.h helpers. Must not: validate arguments or JSON (store.c does),
 * or hold a connection across fork(); nothing outside the store modules sees sqlite3 types.
 * Over 900 lines because it is one backend of the whole store contract (every statement, its binding and its
 * error mapping); the shared, backend-neutral parts live in store.c. */
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <limits.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "mem.h"
#include "store_backend.h"
#include "util.h"

/* 'SLCE': marks the file as a Sluice store so a foreign SQLite file is refused rather than migrated. */
#define SQ_APPLICATION_ID 0x534C4345

/* Ordered migrations; index i takes the schema from version i to i + 1. Each runs in one transaction
 * together with the user_version bump, so a crash leaves the file at the old or the new version. Never
 * edit a released entry: append a new one. */
static const char *const sq_migrations[] = {
    /* 1: scripts, runs, steps. */
    "CREATE TABLE scripts("
    "  hash TEXT PRIMARY KEY, workflow TEXT NOT NULL, source TEXT NOT NULL, created_at INTEGER NOT NULL);"
    "CREATE TABLE runs("
    "  id TEXT PRIMARY KEY, workflow TEXT NOT NULL, script_hash TEXT NOT NULL REFERENCES scripts(hash),"
    "  params TEXT NOT NULL DEFAULT '{}',"
    "  state TEXT NOT NULL CHECK (state IN"
    "    ('pending','running','succeeded','failed','cancelling','cancelled')),"
    "  origin TEXT, request_key TEXT UNIQUE, error TEXT,"
    "  created_at INTEGER NOT NULL, updated_at INTEGER NOT NULL, finished_at INTEGER);"
    "CREATE INDEX runs_created ON runs(created_at, id);"
    "CREATE INDEX runs_state ON runs(state, created_at, id);"
    "CREATE INDEX runs_workflow ON runs(workflow, created_at, id);"
    /* An explicit id keeps insertion order stable (VACUUM may renumber an implicit rowid). */
    "CREATE TABLE steps("
    "  id INTEGER PRIMARY KEY,"
    "  run_id TEXT NOT NULL REFERENCES runs(id) ON DELETE CASCADE, name TEXT NOT NULL,"
    "  state TEXT NOT NULL CHECK (state IN ('pending','waiting','launching','running','succeeded','failed',"
    "    'cancelling','cancelled','skipped')),"
    "  attempt INTEGER NOT NULL DEFAULT 1 CHECK (attempt >= 1),"
    "  job_name TEXT, job_id TEXT, project TEXT, region TEXT, request TEXT, job_state TEXT, result TEXT,"
    "  error TEXT, started_at INTEGER, finished_at INTEGER, next_check_at INTEGER NOT NULL DEFAULT 0,"
    "  deadline_at INTEGER, updated_at INTEGER NOT NULL,"
    "  UNIQUE (run_id, name));"
    "CREATE UNIQUE INDEX steps_job_name ON steps(job_name) WHERE job_name IS NOT NULL;"
    "CREATE UNIQUE INDEX steps_job_id ON steps(job_id) WHERE job_id IS NOT NULL;"
    /* Only in-flight steps are in this index, so the reconciler's query never scans finished ones. */
    "CREATE INDEX steps_due ON steps(next_check_at) WHERE state IN ('launching','running','cancelling');",
    /* 2: the event inbox. Both dedupe keys are unique columns of the event row. */
    "CREATE TABLE inbox("
    "  id INTEGER PRIMARY KEY AUTOINCREMENT, message_id TEXT UNIQUE,"
    "  source TEXT NOT NULL CHECK (source IN ('push','eventarc','poll')),"
    "  job_id TEXT, job_name TEXT, state TEXT, payload TEXT,"
    "  received_at INTEGER NOT NULL, processed_at INTEGER);"
    "CREATE UNIQUE INDEX inbox_identity ON inbox(job_id, state) WHERE job_id IS NOT NULL AND state IS NOT NULL;"
    "CREATE INDEX inbox_unprocessed ON inbox(id) WHERE processed_at IS NULL;"
    "CREATE INDEX inbox_processed ON inbox(processed_at) WHERE processed_at IS NOT NULL;",
    /* 3: per-job backoff of the reconciler. */
    "ALTER TABLE steps ADD COLUMN check_failures INTEGER NOT NULL DEFAULT 0;",
    /* 4: pending steps are due work too (a new step, or a retry waiting out its backoff), so the engine takes
     * everything it must act on from one indexed query. */
    "DROP INDEX steps_due;"
    "CREATE INDEX steps_due ON steps(next_check_at) WHERE state IN ('pending','launching','running','cancelling');",
    /* 5: when the engine first had reason to expect a step's job to end soon (an end event the API has not
     * confirmed yet, or a stop it asked for): the reconciler checks such a step on a short schedule. */
    "ALTER TABLE steps ADD COLUMN hint_at INTEGER NOT NULL DEFAULT 0;",
    /* 6: the web UI. A failed job's cause from Dataflow's job messages; when the job was first seen running
     * (set by the statements that record a job state, so callers need not track it); failed steps indexed by run (few rows),
     * so "runs with a failed step" is a lookup per run, not a scan of every step. Job-name search uses
     * steps_job_name (a prefix is a range of that index). */
    "ALTER TABLE steps ADD COLUMN failure_cause TEXT;"
    "ALTER TABLE steps ADD COLUMN running_at INTEGER;"
    "CREATE INDEX steps_failed ON steps(run_id) WHERE state = 'failed';",
    /* 7: leases for singleton duties (store_lease_acquire), the same table as PostgreSQL's. */
    "CREATE TABLE leases(name TEXT PRIMARY KEY, holder TEXT NOT NULL, term INTEGER NOT NULL,"
    "  expires_at INTEGER NOT NULL);",
    /* 8: run notifications (store_outbox.c): one row per event and sink, written with the run transition it
     * reports; and deadlines (armed, then missed or met once). */
    "CREATE TABLE outbox(id TEXT NOT NULL, sink TEXT NOT NULL,"
    "  run_id TEXT NOT NULL REFERENCES runs(id) ON DELETE CASCADE, type TEXT NOT NULL, event TEXT NOT NULL,"
    "  state TEXT NOT NULL DEFAULT 'pending' CHECK (state IN ('pending','delivered','given_up')),"
    "  attempts INTEGER NOT NULL DEFAULT 0, last_error TEXT, created_at INTEGER NOT NULL,"
    "  next_attempt_at INTEGER NOT NULL, updated_at INTEGER NOT NULL, delivered_at INTEGER,"
    "  PRIMARY KEY (id, sink));"
    "CREATE INDEX outbox_due ON outbox(next_attempt_at) WHERE state = 'pending';"
    "CREATE INDEX outbox_run ON outbox(run_id);"
    "CREATE TABLE deadlines(run_id TEXT NOT NULL REFERENCES runs(id) ON DELETE CASCADE, scope TEXT NOT NULL,"
    "  due_at INTEGER NOT NULL, state TEXT NOT NULL DEFAULT 'armed' CHECK (state IN ('armed','missed','met')),"
    "  PRIMARY KEY (run_id, scope));"
    "CREATE INDEX deadlines_due ON deadlines(due_at) WHERE state = 'armed';",
    /* 9: every attempt of a step (store_attempts.c), keyed by (run_id, step, attempt), read by run. */
    "CREATE TABLE attempts(run_id TEXT NOT NULL REFERENCES runs(id) ON DELETE CASCADE, step TEXT NOT NULL,"
    "  attempt INTEGER NOT NULL, job_name TEXT, job_id TEXT, project TEXT, region TEXT, request TEXT,"
    "  state TEXT NOT NULL, job_state TEXT, error TEXT, failure_cause TEXT, launched_at INTEGER, running_at INTEGER,"
    "  ended_at INTEGER, updated_at INTEGER NOT NULL, PRIMARY KEY (run_id, step, attempt));",
    /* 10 (schedules): steps waiting for capacity (a job pool, or a launch refused for quota), oldest first per pool,
     * so the end of a job wakes them in order; one row per pool that replicas lock to admit launches one at a time;
     * the steps holding a pool's slots, counted by project and region (store_sched.c). */
    "CREATE TABLE step_waits(run_id TEXT NOT NULL REFERENCES runs(id) ON DELETE CASCADE, name TEXT NOT NULL,"
    "  project TEXT NOT NULL, region TEXT NOT NULL, since INTEGER NOT NULL, parked_at INTEGER NOT NULL,"
    "  PRIMARY KEY (run_id, name));"
    "CREATE INDEX step_waits_pool ON step_waits(project, region, since);"
    "CREATE TABLE job_pools(pool TEXT PRIMARY KEY);"
    "CREATE INDEX steps_active ON steps(project, region) WHERE state IN ('launching','running','cancelling');"
    "CREATE INDEX runs_active ON runs(workflow, created_at, id) WHERE state IN ('pending','running','cancelling');"
    "CREATE TABLE run_times(run_id TEXT PRIMARY KEY REFERENCES runs(id) ON DELETE CASCADE,"
    "  logical_time INTEGER NOT NULL, interval_start INTEGER NOT NULL, interval_end INTEGER NOT NULL);"
    "CREATE TABLE schedule_marks(workflow TEXT PRIMARY KEY, handled_to INTEGER NOT NULL);"
    "CREATE TABLE backfills(id TEXT PRIMARY KEY, workflow TEXT NOT NULL, state TEXT NOT NULL, doc TEXT NOT NULL,"
    "  created_at INTEGER NOT NULL, updated_at INTEGER NOT NULL);"
    "CREATE INDEX runs_origin ON runs(workflow, origin) WHERE origin LIKE 'backfill:%';",
};
#define SQ_LATEST ((int)(sizeof sq_migrations / sizeof sq_migrations[0]))

int store_schema_latest(void) { return SQ_LATEST; }

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

typedef struct {
    store base; /* first: a sq_store * is a store * */
    sqlite3 *db;
    int version;
    int sync_level; /* PRAGMA synchronous as set at open (1 NORMAL, 2 FULL): sq_sync need not ask */
    sqlite3_stmt *stmts[Q_COUNT];
    int64_t busy_since_us; /* the short-poll busy handler: when the current wait began */
} sq_store;

/* The busy handler of a handle with busy_poll_us: SQLite calls it with count 0, 1, 2 ... while the lock it
 * wants is held; returning 0 gives up (SQLITE_BUSY). */
static int sq_busy_poll(void *arg, int count)
{
    sq_store *q = arg;
    int64_t now = util_mono_us();
    if (count == 0) q->busy_since_us = now;
    if (now - q->busy_since_us >= (int64_t)q->base.opts.busy_timeout_ms * 1000) return 0;
    struct timespec pause = {0, (long)q->base.opts.busy_poll_us * 1000L};
    nanosleep(&pause, NULL);
    return 1;
}

static sq_store *sq(store *s) { return (sq_store *)s; }

/* Maps an SQLite result code (extended codes are on) to a store_rc. */
static int sq_map(int rc)
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
static int sq_fail(sq_store *q, char **err, int rc, const char *what)
{
    return store_fail(err, sq_map(rc), "%s: %s (sqlite code %d)", what, q->db ? sqlite3_errmsg(q->db) : "", rc);
}

/* Borrows the cached statement `id`, preparing it on first use. The caller resets it (sq_done). */
static int sq_stmt(sq_store *q, int id, sqlite3_stmt **out, char **err)
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

/* Resets a statement after use so it holds no read snapshot and no borrowed bindings. */
static void sq_done(sqlite3_stmt *st)
{
    if (st == NULL) return;
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
}

static int bind_text(sqlite3_stmt *st, int i, const char *v)
{
    return v ? sqlite3_bind_text(st, i, v, -1, SQLITE_STATIC) : sqlite3_bind_null(st, i);
}

/* 0 is "unset" and stored as NULL. */
static int bind_time(sqlite3_stmt *st, int i, int64_t v)
{
    return v ? sqlite3_bind_int64(st, i, v) : sqlite3_bind_null(st, i);
}

static int bind_opt_int(sqlite3_stmt *st, int i, int v, int any)
{
    return v == any ? sqlite3_bind_null(st, i) : sqlite3_bind_int(st, i, v);
}

/* Binds all (rc, ...) results: the first failure wins. */
static int bind_all(const int *rcs, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (rcs[i] != SQLITE_OK) return rcs[i];
    return SQLITE_OK;
}
#define BIND(...) bind_all((const int[]){__VA_ARGS__}, sizeof((const int[]){__VA_ARGS__}) / sizeof(int))

/* Runs a statement that returns no rows. *changes (may be NULL) = rows changed. */
static int sq_exec_stmt(sq_store *q, sqlite3_stmt *st, int *changes, const char *what, char **err)
{
    int rc = sqlite3_step(st);
    int out = STORE_OK;
    if (rc != SQLITE_DONE && rc != SQLITE_ROW) out = sq_fail(q, err, rc, what);
    else if (changes != NULL) *changes = sqlite3_changes(q->db);
    sq_done(st);
    return out;
}

/* Runs a one-off SQL script (migrations, pragmas). */
static int sq_exec(sq_store *q, const char *sql, const char *what, char **err)
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
static int sq_query_int(sq_store *q, const char *sql, int64_t *out, char **err)
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

/* Copies a TEXT column (NULL stays NULL); sets *oom on allocation failure. Caller frees. */
static char *col_dup(sqlite3_stmt *st, int i, int *oom)
{
    const unsigned char *t = sqlite3_column_text(st, i);
    if (t == NULL) {
        if (sqlite3_column_type(st, i) != SQLITE_NULL) *oom = 1;
        return NULL;
    }
    char *d = xstrdup((const char *)t);
    if (d == NULL) *oom = 1;
    return d;
}

static int64_t col_time(sqlite3_stmt *st, int i)
{
    return sqlite3_column_type(st, i) == SQLITE_NULL ? 0 : sqlite3_column_int64(st, i);
}

static int read_run(sqlite3_stmt *st, store_run *r, char **err)
{
    int oom = 0;
    r->id = col_dup(st, 0, &oom);
    r->workflow = col_dup(st, 1, &oom);
    r->script_hash = col_dup(st, 2, &oom);
    r->params_json = col_dup(st, 3, &oom);
    const char *state = (const char *)sqlite3_column_text(st, 4);
    r->origin = col_dup(st, 5, &oom);
    r->request_key = col_dup(st, 6, &oom);
    r->error = col_dup(st, 7, &oom);
    r->created_at = col_time(st, 8);
    r->updated_at = col_time(st, 9);
    r->finished_at = col_time(st, 10);
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
    p->run_id = col_dup(st, 0, &oom);
    p->name = col_dup(st, 1, &oom);
    const char *state = (const char *)sqlite3_column_text(st, 2);
    p->attempt = sqlite3_column_int(st, 3);
    p->job_name = col_dup(st, 4, &oom);
    p->job_id = col_dup(st, 5, &oom);
    p->project = col_dup(st, 6, &oom);
    p->region = col_dup(st, 7, &oom);
    p->request_json = col_dup(st, 8, &oom);
    p->job_state = col_dup(st, 9, &oom);
    p->result_json = col_dup(st, 10, &oom);
    p->error = col_dup(st, 11, &oom);
    p->started_at = col_time(st, 12);
    p->finished_at = col_time(st, 13);
    p->next_check_at = col_time(st, 14);
    p->deadline_at = col_time(st, 15);
    p->updated_at = col_time(st, 16);
    p->check_failures = sqlite3_column_int(st, 17);
    p->hint_at = col_time(st, 18);
    p->failure_cause = col_dup(st, 19, &oom);
    p->running_at = col_time(st, 20);
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
    e->message_id = col_dup(st, 1, &oom);
    const char *src = (const char *)sqlite3_column_text(st, 2);
    e->job_id = col_dup(st, 3, &oom);
    e->job_name = col_dup(st, 4, &oom);
    e->state = col_dup(st, 5, &oom);
    e->payload_json = col_dup(st, 6, &oom);
    e->received_at = col_time(st, 7);
    e->processed_at = col_time(st, 8);
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
typedef int (*row_reader)(sqlite3_stmt *st, void *out, char **err);
static int rd_run(sqlite3_stmt *st, void *out, char **err) { return read_run(st, out, err); }
static int rd_step(sqlite3_stmt *st, void *out, char **err) { return read_step(st, out, err); }
static int rd_event(sqlite3_stmt *st, void *out, char **err) { return read_event(st, out, err); }

static int sq_one(sq_store *q, sqlite3_stmt *st, row_reader reader, void *out, const char *what, char **err)
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
static int sq_many(sq_store *q, sqlite3_stmt *st, row_reader reader, size_t size, size_t max, void **items,
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
            if (na == NULL) {
                res = store_fail(err, STORE_NOMEM, "%s: out of memory", what);
                break;
            }
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

/* ---- transactions ---- */

static int sq_run_simple(sq_store *q, int id, const char *what, char **err)
{
    sqlite3_stmt *st = NULL;
    int rc = sq_stmt(q, id, &st, err);
    if (rc != STORE_OK) return rc;
    return sq_exec_stmt(q, st, NULL, what, err);
}

static int sq_in_transaction(store *s) { return !sqlite3_get_autocommit(sq(s)->db); }

static int sq_begin(store *s, char **err)
{
    if (sq_in_transaction(s)) return store_fail(err, STORE_INVALID, "store_begin: a transaction is already open");
    return sq_run_simple(sq(s), Q_BEGIN, "begin", err);
}

static int sq_rollback(store *s, char **err)
{
    /* SQLite rolls back by itself after some errors (disk full, I/O); rolling back again is fine. */
    if (!sq_in_transaction(s)) return STORE_OK;
    return sq_run_simple(sq(s), Q_ROLLBACK, "rollback", err);
}

static int sq_commit(store *s, char **err)
{
    if (!sq_in_transaction(s)) return store_fail(err, STORE_INVALID, "store_commit: no transaction is open");
    int rc = sq_run_simple(sq(s), Q_COMMIT, "commit", err);
    if (rc != STORE_OK && sq_in_transaction(s)) sq_run_simple(sq(s), Q_ROLLBACK, "rollback", NULL);
    return rc;
}

/* One sync of the WAL file: everything committed so far survives power loss. SQLite hands out its journal
 * (WAL) file for exactly such uses via SQLITE_FCNTL_JOURNAL_POINTER. */
static int sq_sync(store *s, char **err)
{
    sq_store *q = sq(s);
    if (q->sync_level >= 2) return STORE_OK; /* FULL or EXTRA: every commit was synced */
    sqlite3_file *wal = NULL;
    if (sqlite3_file_control(q->db, "main", SQLITE_FCNTL_JOURNAL_POINTER, &wal) != SQLITE_OK || wal == NULL ||
        wal->pMethods == NULL)
        return STORE_OK; /* no log open yet: nothing was written */
    int rc = wal->pMethods->xSync(wal, SQLITE_SYNC_NORMAL);
    if (rc != SQLITE_OK) return store_fail(err, STORE_IO, "sync of the write-ahead log failed (sqlite code %d)", rc);
    return STORE_OK;
}

static int sq_checkpoint(store *s, store_checkpoint_mode mode, store_checkpoint_result *out, char **err)
{
    sq_store *q = sq(s);
    int n_log = 0, n_ckpt = 0;
    int src = sqlite3_wal_checkpoint_v2(q->db, "main",
                                        mode == STORE_CHECKPOINT_RESTART ? SQLITE_CHECKPOINT_RESTART
                                                                         : SQLITE_CHECKPOINT_PASSIVE,
                                        &n_log, &n_ckpt);
    out->log_frames = n_log > 0 ? n_log : 0;
    out->checkpointed = n_ckpt > 0 ? n_ckpt : 0;
    if (src == SQLITE_OK) return STORE_OK;
    return sq_fail(q, err, src, "checkpoint");
}

/* ---- scripts ---- */

static int sq_script_put(store *s, const char *hash, const char *workflow, const char *source, char **err)
{
    sq_store *q = sq(s);
    sqlite3_stmt *st = NULL;
    int changes = 0, rc = sq_stmt(q, Q_SCRIPT_PUT, &st, err);
    if (rc != STORE_OK) return rc;
    int brc = BIND(bind_text(st, 1, hash), bind_text(st, 2, workflow), bind_text(st, 3, source),
                   sqlite3_bind_int64(st, 4, store_now(s)));
    if (brc != SQLITE_OK) {
        sq_done(st);
        return sq_fail(q, err, brc, "script_put");
    }
    rc = sq_exec_stmt(q, st, &changes, "script_put", err);
    if (rc != STORE_OK || changes == 1) return rc;
    /* Already there: idempotent if it is the same text. */
    rc = sq_stmt(q, Q_SCRIPT_SOURCE, &st, err);
    if (rc != STORE_OK) return rc;
    bind_text(st, 1, hash);
    int step = sqlite3_step(st);
    if (step == SQLITE_ROW) {
        const char *old = (const char *)sqlite3_column_text(st, 0);
        if (old == NULL || strcmp(old, source) != 0)
            rc = store_fail(err, STORE_CONFLICT, "script %s is already stored with a different source", hash);
    } else if (step == SQLITE_DONE) {
        rc = store_fail(err, STORE_CONFLICT, "script %s vanished during put", hash);
    } else {
        rc = sq_fail(q, err, step, "script_put");
    }
    sq_done(st);
    return rc;
}

static int rd_script(sqlite3_stmt *st, void *out, char **err)
{
    store_script *sc = out;
    int oom = 0;
    sc->hash = col_dup(st, 0, &oom);
    sc->workflow = col_dup(st, 1, &oom);
    sc->source = col_dup(st, 2, &oom);
    sc->created_at = col_time(st, 3);
    if (!oom) return STORE_OK;
    store_script_free(sc);
    return store_fail(err, STORE_NOMEM, "out of memory reading a script");
}

static int sq_script_get(store *s, const char *hash, store_script *out, char **err)
{
    sq_store *q = sq(s);
    sqlite3_stmt *st = NULL;
    int rc = sq_stmt(q, Q_SCRIPT_GET, &st, err);
    if (rc != STORE_OK) return rc;
    bind_text(st, 1, hash);
    return sq_one(q, st, rd_script, out, "script_get", err);
}

/* ---- runs ---- */

static int sq_run_create(store *s, const store_run *r, char **err)
{
    sq_store *q = sq(s);
    sqlite3_stmt *st = NULL;
    int rc = sq_stmt(q, Q_RUN_CREATE, &st, err);
    if (rc != STORE_OK) return rc;
    int64_t now = store_now(s);
    int64_t created = r->created_at ? r->created_at : now;
    int brc = BIND(bind_text(st, 1, r->id), bind_text(st, 2, r->workflow), bind_text(st, 3, r->script_hash),
                   bind_text(st, 4, r->params_json ? r->params_json : "{}"),
                   bind_text(st, 5, store_run_state_name(r->state)), bind_text(st, 6, r->origin),
                   bind_text(st, 7, r->request_key), bind_text(st, 8, r->error), sqlite3_bind_int64(st, 9, created),
                   sqlite3_bind_int64(st, 10, r->updated_at ? r->updated_at : created),
                   bind_time(st, 11, r->finished_at));
    if (brc != SQLITE_OK) {
        sq_done(st);
        return sq_fail(q, err, brc, "run_create");
    }
    int step = sqlite3_step(st);
    if (step == SQLITE_DONE) rc = STORE_OK;
    else if ((step == SQLITE_CONSTRAINT_PRIMARYKEY || step == SQLITE_CONSTRAINT_UNIQUE) &&
             strstr(sqlite3_errmsg(q->db), "runs.request_key") != NULL)
        rc = store_fail(err, STORE_EXISTS, "request_key '%s' already started a run", r->request_key);
    else if (step == SQLITE_CONSTRAINT_PRIMARYKEY || step == SQLITE_CONSTRAINT_UNIQUE)
        rc = store_fail(err, STORE_EXISTS, "run '%s' already exists", r->id);
    else if (step == SQLITE_CONSTRAINT_FOREIGNKEY)
        rc = store_fail(err, STORE_INVALID, "run '%s': script %s is not stored", r->id, r->script_hash);
    else rc = sq_fail(q, err, step, "run_create");
    sq_done(st);
    return rc;
}

static int sq_run_get(store *s, const char *key, int by_request_key, store_run *out, char **err)
{
    sq_store *q = sq(s);
    sqlite3_stmt *st = NULL;
    int rc = sq_stmt(q, by_request_key ? Q_RUN_GET_KEY : Q_RUN_GET, &st, err);
    if (rc != STORE_OK) return rc;
    bind_text(st, 1, key);
    rc = sq_one(q, st, rd_run, out, "run_get", err);
    if (rc == STORE_NOTFOUND && err != NULL) {
        free(*err);
        store_fail(err, rc, "no run with %s '%s'", by_request_key ? "request_key" : "id", key);
    }
    return rc;
}


/* Binds the filter's parameters (?1..?5) of a run listing. Unused parameters of a variant are left unbound. */
static void run_bind_filter(sqlite3_stmt *st, const store_run_filter *f, int64_t c_time, const char *c_id)
{
    sqlite3_bind_int64(st, 1, c_time);
    bind_text(st, 2, c_id);
    if (f->state != STORE_RUN_ANY) bind_text(st, 3, store_run_state_name((store_run_state)f->state));
    if (f->workflow) bind_text(st, 4, f->workflow);
    sqlite3_bind_int(st, 5, f->limit + 1); /* one more tells whether there is a next page */
}

static int run_page_collect(sq_store *q, sqlite3_stmt *st, const store_run_filter *f, store_run_list *out,
                            char **err);

static int sq_run_list_page(store *s, const store_run_filter *f, store_run_list *out, char **err)
{
    sq_store *q = sq(s);
    int64_t c_time;
    const char *c_id;
    int rc = store_run_cursor(f->cursor, &c_time, &c_id, err);
    if (rc != STORE_OK) return rc;
    int id = f->state == STORE_RUN_ANY ? (f->workflow ? Q_RUN_LIST_WF : Q_RUN_LIST)
                                       : (f->workflow ? Q_RUN_LIST_BOTH : Q_RUN_LIST_STATE);
    sqlite3_stmt *st = NULL;
    rc = sq_stmt(q, id, &st, err);
    if (rc != STORE_OK) return rc;
    run_bind_filter(st, f, c_time, c_id);
    return run_page_collect(q, st, f, out, err);
}

/* The web UI's listing: the cached variants' WHERE plus the step conditions, prepared per call (the conditions
 * combine freely; preparing costs microseconds next to the page). The failed-step test is one probe of the
 * partial index steps_failed per run; the search is an id range of the primary key and of steps_job_name, or an
 * exact steps_job_id probe. */
static int sq_run_find_page(store *s, const store_run_query *qy, store_run_list *out, char **err)
{
    sq_store *q = sq(s);
    const store_run_filter *f = &qy->base;
    int64_t c_time;
    const char *c_id;
    int rc = store_run_cursor(f->cursor, &c_time, &c_id, err);
    if (rc != STORE_OK) return rc;
    char sql[1200];
    snprintf(sql, sizeof sql, "SELECT " RUN_COLS " FROM runs" RUN_WHERE_CURSOR "%s%s%s%s" RUN_ORDER,
             f->state != STORE_RUN_ANY ? " AND state = ?3" : "", f->workflow ? " AND workflow = ?4" : "",
             qy->failed_step ? " AND EXISTS (SELECT 1 FROM steps WHERE steps.run_id = runs.id AND steps.state = 'failed')"
                             : "",
             qy->search ? " AND ((id >= ?6 AND id < ?7)"
                          " OR id IN (SELECT run_id FROM steps WHERE job_name >= ?6 AND job_name < ?7)"
                          " OR id IN (SELECT run_id FROM steps WHERE job_id = ?6))"
                        : "");
    sqlite3_stmt *st = NULL;
    int prc = sqlite3_prepare_v2(q->db, sql, -1, &st, NULL);
    if (prc != SQLITE_OK) return sq_fail(q, err, prc, "run_find_page");
    run_bind_filter(st, f, c_time, c_id);
    char *upper = NULL;
    if (qy->search) {
        /* Every text starting with the prefix sorts below prefix + 0xff (BINARY collation compares bytes). */
        if (asprintf(&upper, "%s\xff", qy->search) < 0) {
            sqlite3_finalize(st);
            return store_fail(err, STORE_NOMEM, "run_find_page: out of memory");
        }
        bind_text(st, 6, qy->search);
        bind_text(st, 7, upper);
    }
    rc = run_page_collect(q, st, f, out, err);
    sqlite3_finalize(st);
    free(upper);
    return rc;
}

/* Reads a page (limit + 1 rows tell whether there is another) and sets next_cursor. Resets `st`. */
static int run_page_collect(sq_store *q, sqlite3_stmt *st, const store_run_filter *f, store_run_list *out,
                            char **err)
{
    int rc;
    void *items = NULL;
    size_t n = 0;
    rc = sq_many(q, st, rd_run, sizeof(store_run), (size_t)f->limit + 1, &items, &n, "run_list", err);
    out->items = items;
    out->count = n;
    if (rc != STORE_OK) return rc;
    return store_run_page_trim(out, f->limit, err);
}

static int sq_run_set_state(store *s, const char *id, int expected, store_run_state next, const char *error,
                            char **err)
{
    sq_store *q = sq(s);
    sqlite3_stmt *st = NULL;
    int changes = 0, rc = sq_stmt(q, Q_RUN_SET_STATE, &st, err);
    if (rc != STORE_OK) return rc;
    int brc = BIND(bind_text(st, 1, id),
                   expected == STORE_RUN_ANY ? sqlite3_bind_null(st, 2)
                                             : bind_text(st, 2, store_run_state_name((store_run_state)expected)),
                   bind_text(st, 3, store_run_state_name(next)), sqlite3_bind_int64(st, 4, store_now(s)),
                   sqlite3_bind_int(st, 5, store_run_state_terminal(next)), bind_text(st, 6, error));
    if (brc != SQLITE_OK) {
        sq_done(st);
        return sq_fail(q, err, brc, "run_set_state");
    }
    rc = sq_exec_stmt(q, st, &changes, "run_set_state", err);
    if (rc != STORE_OK || changes == 1) return rc;
    /* Nothing changed: tell "no such run" from "not in the expected state". */
    rc = sq_stmt(q, Q_RUN_STATE, &st, err);
    if (rc != STORE_OK) return rc;
    bind_text(st, 1, id);
    int step = sqlite3_step(st);
    if (step == SQLITE_ROW)
        rc = store_fail(err, STORE_CONFLICT, "run '%s' is %s, expected %s", id, sqlite3_column_text(st, 0),
                        store_run_state_name((store_run_state)expected));
    else if (step == SQLITE_DONE) rc = store_fail(err, STORE_NOTFOUND, "no run with id '%s'", id);
    else rc = sq_fail(q, err, step, "run_set_state");
    sq_done(st);
    return rc;
}

static int sq_run_redrive(store *s, const char *id, store_run_state expected, const char *script_hash,
                          const char *params_json, char **err)
{
    sq_store *q = sq(s);
    sqlite3_stmt *st = NULL;
    int changes = 0, rc = sq_stmt(q, Q_RUN_REDRIVE, &st, err);
    if (rc != STORE_OK) return rc;
    int brc = BIND(bind_text(st, 1, id), bind_text(st, 2, store_run_state_name(expected)),
                   bind_text(st, 3, script_hash), bind_text(st, 4, params_json), sqlite3_bind_int64(st, 5, store_now(s)));
    if (brc != SQLITE_OK) {
        sq_done(st);
        return sq_fail(q, err, brc, "run_redrive");
    }
    rc = sq_exec_stmt(q, st, &changes, "run_redrive", err);
    if (rc == STORE_OK && changes != 1)
        rc = store_fail(err, STORE_CONFLICT, "run '%s' is not %s (or does not exist)", id,
                        store_run_state_name(expected));
    return rc;
}

/* BEGIN IMMEDIATE took the database's write lock: no other writer can touch the run. */
static int sq_run_lock(store *s, const char *run_id, int wait, int *got, char **err)
{
    (void)wait;
    sq_store *q = sq(s);
    sqlite3_stmt *st = NULL;
    int rc = sq_stmt(q, Q_RUN_STATE, &st, err);
    if (rc != STORE_OK) return rc;
    int brc = bind_text(st, 1, run_id);
    int step = brc == SQLITE_OK ? sqlite3_step(st) : brc;
    if (step == SQLITE_ROW)
        *got = 1;
    else if (step == SQLITE_DONE)
        rc = store_fail(err, STORE_NOTFOUND, "run '%s' not found", run_id);
    else
        rc = sq_fail(q, err, step, "run_lock");
    sq_done(st);
    return rc;
}

static int sq_lease_acquire(store *s, const char *name, const char *holder, int64_t ttl_ms, store_lease *out,
                            char **err)
{
    sq_store *q = sq(s);
    sqlite3_stmt *st = NULL;
    int64_t now = store_now(s);
    int rc = sq_stmt(q, Q_LEASE_TAKE, &st, err);
    if (rc != STORE_OK) return rc;
    int brc = BIND(bind_text(st, 1, name), bind_text(st, 2, holder), sqlite3_bind_int64(st, 3, now),
                   sqlite3_bind_int64(st, 4, ttl_ms));
    int step = brc == SQLITE_OK ? sqlite3_step(st) : brc;
    if (step == SQLITE_ROW) {
        out->held = 1;
        out->term = sqlite3_column_int64(st, 0);
        out->expires_in_ms = sqlite3_column_int64(st, 1);
        if ((out->holder = xstrdup(holder)) == NULL) rc = store_fail(err, STORE_NOMEM, "lease: out of memory");
    } else if (step != SQLITE_DONE) {
        rc = sq_fail(q, err, step, "lease_acquire");
    }
    sq_done(st);
    if (rc != STORE_OK || out->held) return rc;
    if ((rc = sq_stmt(q, Q_LEASE_GET, &st, err)) != STORE_OK) return rc;
    brc = BIND(bind_text(st, 1, name), sqlite3_bind_int64(st, 2, now));
    step = brc == SQLITE_OK ? sqlite3_step(st) : brc;
    if (step == SQLITE_ROW) {
        int oom = 0;
        out->holder = col_dup(st, 0, &oom);
        out->term = sqlite3_column_int64(st, 1);
        out->expires_in_ms = sqlite3_column_int64(st, 2);
        if (oom) rc = store_fail(err, STORE_NOMEM, "lease: out of memory");
    } else if (step != SQLITE_DONE) {
        rc = sq_fail(q, err, step, "lease_get");
    }
    sq_done(st);
    return rc;
}

static int sq_lease_release(store *s, const char *name, const char *holder, char **err)
{
    sq_store *q = sq(s);
    sqlite3_stmt *st = NULL;
    int rc = sq_stmt(q, Q_LEASE_RELEASE, &st, err);
    if (rc != STORE_OK) return rc;
    int brc = BIND(bind_text(st, 1, name), bind_text(st, 2, holder));
    if (brc != SQLITE_OK) {
        sq_done(st);
        return sq_fail(q, err, brc, "lease_release");
    }
    return sq_exec_stmt(q, st, NULL, "lease_release", err);
}

static int sq_run_prune(store *s, int64_t before, int limit, int64_t *deleted, char **err)
{
    sq_store *q = sq(s);
    sqlite3_stmt *st = NULL;
    int changes = 0, rc = sq_stmt(q, Q_RUN_PRUNE, &st, err);
    if (rc != STORE_OK) return rc;
    sqlite3_bind_int64(st, 1, before);
    sqlite3_bind_int(st, 2, limit);
    rc = sq_exec_stmt(q, st, &changes, "run_prune", err);
    if (rc == STORE_OK && deleted) *deleted = changes;
    return rc;
}

static int sq_run_count_by_state(store *s, int64_t counts[STORE_RUN_STATE_COUNT], char **err)
{
    sq_store *q = sq(s);
    sqlite3_stmt *st = NULL;
    int rc = sq_stmt(q, Q_RUN_COUNT, &st, err);
    if (rc != STORE_OK) return rc;
    int step;
    while ((step = sqlite3_step(st)) == SQLITE_ROW) {
        store_run_state rs;
        const char *name = (const char *)sqlite3_column_text(st, 0);
        if (store_run_state_parse(name, &rs) != STORE_OK) {
            rc = store_fail(err, STORE_CORRUPT, "runs hold unknown state '%s'", name ? name : "(null)");
            break;
        }
        counts[rs] = sqlite3_column_int64(st, 1);
    }
    if (rc == STORE_OK && step != SQLITE_DONE) rc = sq_fail(q, err, step, "run_count_by_state");
    sq_done(st);
    return rc;
}

/* ---- steps ---- */

static int sq_step_insert(store *s, const store_step *p, char **err)
{
    sq_store *q = sq(s);
    sqlite3_stmt *st = NULL;
    int rc = sq_stmt(q, Q_STEP_INSERT, &st, err);
    if (rc != STORE_OK) return rc;
    int64_t now = store_now(s);
    int brc = BIND(bind_text(st, 1, p->run_id), bind_text(st, 2, p->name),
                   bind_text(st, 3, store_step_state_name(p->state)), sqlite3_bind_int(st, 4, p->attempt ? p->attempt : 1),
                   bind_text(st, 5, p->job_name), bind_text(st, 6, p->job_id), bind_text(st, 7, p->project),
                   bind_text(st, 8, p->region), bind_text(st, 9, p->request_json), bind_text(st, 10, p->job_state),
                   bind_text(st, 11, p->result_json), bind_text(st, 12, p->error), bind_time(st, 13, p->started_at),
                   bind_time(st, 14, p->finished_at), sqlite3_bind_int64(st, 15, p->next_check_at),
                   bind_time(st, 16, p->deadline_at), sqlite3_bind_int64(st, 17, p->updated_at ? p->updated_at : now));
    if (brc != SQLITE_OK) {
        sq_done(st);
        return sq_fail(q, err, brc, "step_insert");
    }
    int step = sqlite3_step(st);
    if (step == SQLITE_DONE) rc = STORE_OK;
    else if ((step == SQLITE_CONSTRAINT_PRIMARYKEY || step == SQLITE_CONSTRAINT_UNIQUE) &&
             strstr(sqlite3_errmsg(q->db), "steps.run_id") != NULL)
        rc = store_fail(err, STORE_EXISTS, "run '%s' already has a step '%s'", p->run_id, p->name);
    else if (step == SQLITE_CONSTRAINT_PRIMARYKEY || step == SQLITE_CONSTRAINT_UNIQUE)
        rc = store_fail(err, STORE_EXISTS, "step '%s/%s': job name or job id is already used by another step",
                        p->run_id, p->name);
    else if (step == SQLITE_CONSTRAINT_FOREIGNKEY)
        rc = store_fail(err, STORE_INVALID, "step '%s': no run with id '%s'", p->name, p->run_id);
    else rc = sq_fail(q, err, step, "step_insert");
    sq_done(st);
    return rc;
}

static int sq_step_get(store *s, const char *run_id, const char *name, store_step *out, char **err)
{
    sq_store *q = sq(s);
    sqlite3_stmt *st = NULL;
    int rc = sq_stmt(q, Q_STEP_GET, &st, err);
    if (rc != STORE_OK) return rc;
    bind_text(st, 1, run_id);
    bind_text(st, 2, name);
    return sq_one(q, st, rd_step, out, "step_get", err);
}

static int sq_step_list_run(store *s, const char *run_id, store_step_list *out, char **err)
{
    sq_store *q = sq(s);
    sqlite3_stmt *st = NULL;
    int rc = sq_stmt(q, Q_STEP_LIST, &st, err);
    if (rc != STORE_OK) return rc;
    bind_text(st, 1, run_id);
    void *items = NULL;
    rc = sq_many(q, st, rd_step, sizeof(store_step), SIZE_MAX, &items, &out->count, "step_list", err);
    out->items = items;
    return rc;
}

static int sq_step_find(store *s, store_step_key key, const char *value, store_step *out, char **err)
{
    sq_store *q = sq(s);
    sqlite3_stmt *st = NULL;
    int rc = sq_stmt(q, key == STORE_KEY_JOB_NAME ? Q_STEP_BY_NAME : Q_STEP_BY_ID, &st, err);
    if (rc != STORE_OK) return rc;
    bind_text(st, 1, value);
    return sq_one(q, st, rd_step, out, key == STORE_KEY_JOB_NAME ? "step by job name" : "step by job id", err);
}

/* After a compare-and-set UPDATE changed nothing: NOTFOUND or CONFLICT with the step's actual state. */
static int sq_step_diag(sq_store *q, const char *run_id, const char *name, const char *what, char **err)
{
    sqlite3_stmt *st = NULL;
    int rc = sq_stmt(q, Q_STEP_STATE, &st, err);
    if (rc != STORE_OK) return rc;
    bind_text(st, 1, run_id);
    bind_text(st, 2, name);
    int step = sqlite3_step(st);
    if (step == SQLITE_ROW)
        rc = store_fail(err, STORE_CONFLICT, "%s: step '%s/%s' is %s at attempt %d", what, run_id, name,
                        sqlite3_column_text(st, 0), sqlite3_column_int(st, 1));
    else if (step == SQLITE_DONE) rc = store_fail(err, STORE_NOTFOUND, "%s: no step '%s/%s'", what, run_id, name);
    else rc = sq_fail(q, err, step, what);
    sq_done(st);
    return rc;
}

/* Steps a bound compare-and-set UPDATE; maps constraint errors and "nothing changed". */
static int sq_step_cas(sq_store *q, sqlite3_stmt *st, int brc, const char *run_id, const char *name,
                       const char *what, char **err)
{
    if (brc != SQLITE_OK) {
        sq_done(st);
        return sq_fail(q, err, brc, what);
    }
    int step = sqlite3_step(st), rc = STORE_OK, changes = sqlite3_changes(q->db);
    if (step == SQLITE_CONSTRAINT_UNIQUE)
        rc = store_fail(err, STORE_EXISTS, "%s: step '%s/%s': job name or job id is already used by another step",
                        what, run_id, name);
    else if (step != SQLITE_DONE) rc = sq_fail(q, err, step, what);
    sq_done(st);
    if (rc == STORE_OK && changes == 0) rc = sq_step_diag(q, run_id, name, what, err);
    return rc;
}

static int sq_step_record_intent(store *s, const char *run_id, const char *name, int expected_state,
                                 int expected_attempt, const store_intent *in, char **err)
{
    sq_store *q = sq(s);
    sqlite3_stmt *st = NULL;
    int rc = sq_stmt(q, Q_STEP_INTENT, &st, err);
    if (rc != STORE_OK) return rc;
    int64_t now = store_now(s);
    int brc = BIND(bind_text(st, 1, run_id), bind_text(st, 2, name),
                   expected_state == STORE_STEP_ANY
                       ? sqlite3_bind_null(st, 3)
                       : bind_text(st, 3, store_step_state_name((store_step_state)expected_state)),
                   bind_opt_int(st, 4, expected_attempt, STORE_ATTEMPT_ANY), sqlite3_bind_int(st, 5, in->attempt),
                   bind_text(st, 6, in->job_name), bind_text(st, 7, in->project), bind_text(st, 8, in->region),
                   bind_text(st, 9, in->request_json), sqlite3_bind_int64(st, 10, now),
                   sqlite3_bind_int64(st, 11, in->next_check_at ? in->next_check_at : now),
                   bind_time(st, 12, in->deadline_at));
    return sq_step_cas(q, st, brc, run_id, name, "record_intent", err);
}

static int sq_step_set_job(store *s, const char *run_id, const char *name, int attempt, const char *job_id,
                           const char *job_state, int64_t next_check_at, char **err)
{
    sq_store *q = sq(s);
    sqlite3_stmt *st = NULL;
    int rc = sq_stmt(q, Q_STEP_SET_JOB, &st, err);
    if (rc != STORE_OK) return rc;
    int brc = BIND(bind_text(st, 1, run_id), bind_text(st, 2, name), sqlite3_bind_int(st, 3, attempt),
                   bind_text(st, 4, job_id), bind_text(st, 5, job_state), sqlite3_bind_int64(st, 6, next_check_at),
                   sqlite3_bind_int64(st, 7, store_now(s)));
    return sq_step_cas(q, st, brc, run_id, name, "set_job", err);
}

static int sq_step_set_state(store *s, const char *run_id, const char *name, int expected_state,
                             int expected_attempt, store_step_state next, char **err)
{
    sq_store *q = sq(s);
    sqlite3_stmt *st = NULL;
    int rc = sq_stmt(q, Q_STEP_SET_STATE, &st, err);
    if (rc != STORE_OK) return rc;
    int brc = BIND(bind_text(st, 1, run_id), bind_text(st, 2, name),
                   expected_state == STORE_STEP_ANY
                       ? sqlite3_bind_null(st, 3)
                       : bind_text(st, 3, store_step_state_name((store_step_state)expected_state)),
                   bind_opt_int(st, 4, expected_attempt, STORE_ATTEMPT_ANY),
                   bind_text(st, 5, store_step_state_name(next)), sqlite3_bind_int64(st, 6, store_now(s)),
                   sqlite3_bind_int(st, 7, store_step_state_terminal(next)));
    return sq_step_cas(q, st, brc, run_id, name, "step_set_state", err);
}

static int sq_step_finish(store *s, const char *run_id, const char *name, int attempt, store_step_state final,
                          const char *job_state, const char *result_json, const char *error, char **err)
{
    sq_store *q = sq(s);
    sqlite3_stmt *st = NULL;
    int rc = sq_stmt(q, Q_STEP_FINISH, &st, err);
    if (rc != STORE_OK) return rc;
    int brc = BIND(bind_text(st, 1, run_id), bind_text(st, 2, name),
                   bind_opt_int(st, 3, attempt, STORE_ATTEMPT_ANY), bind_text(st, 4, store_step_state_name(final)),
                   bind_text(st, 5, job_state), bind_text(st, 6, result_json), bind_text(st, 7, error),
                   sqlite3_bind_int64(st, 8, store_now(s)));
    return sq_step_cas(q, st, brc, run_id, name, "step_finish", err);
}

static int sq_step_reclaim(store *s, const char *run_id, const char *name, int attempt, int64_t claimed,
                           int64_t next_check_at, int check_failures, char **err)
{
    sq_store *q = sq(s);
    sqlite3_stmt *st = NULL;
    int rc = sq_stmt(q, Q_STEP_RECLAIM, &st, err);
    if (rc != STORE_OK) return rc;
    int brc = BIND(bind_text(st, 1, run_id), bind_text(st, 2, name), sqlite3_bind_int(st, 3, attempt),
                   sqlite3_bind_int64(st, 4, claimed), sqlite3_bind_int64(st, 5, next_check_at),
                   sqlite3_bind_int(st, 6, check_failures), sqlite3_bind_int64(st, 7, store_now(s)));
    return sq_step_cas(q, st, brc, run_id, name, "step_reclaim", err);
}

static int sq_step_set_check(store *s, const char *run_id, const char *name, int attempt, int64_t next_check_at,
                             int check_failures, const char *job_state, char **err)
{
    sq_store *q = sq(s);
    sqlite3_stmt *st = NULL;
    int rc = sq_stmt(q, Q_STEP_SET_CHECK, &st, err);
    if (rc != STORE_OK) return rc;
    int brc = BIND(bind_text(st, 1, run_id), bind_text(st, 2, name), sqlite3_bind_int(st, 3, attempt),
                   sqlite3_bind_int64(st, 4, next_check_at), sqlite3_bind_int(st, 5, check_failures),
                   bind_text(st, 6, job_state), sqlite3_bind_int64(st, 7, store_now(s)));
    return sq_step_cas(q, st, brc, run_id, name, "set_check", err);
}

static int sq_step_set_hint(store *s, const char *run_id, const char *name, int attempt, int64_t hint_at,
                            int64_t next_check_at, char **err)
{
    sq_store *q = sq(s);
    sqlite3_stmt *st = NULL;
    int rc = sq_stmt(q, Q_STEP_SET_HINT, &st, err);
    if (rc != STORE_OK) return rc;
    int brc = BIND(bind_text(st, 1, run_id), bind_text(st, 2, name), sqlite3_bind_int(st, 3, attempt),
                   sqlite3_bind_int64(st, 4, hint_at), sqlite3_bind_int64(st, 5, next_check_at),
                   sqlite3_bind_int64(st, 6, store_now(s)));
    return sq_step_cas(q, st, brc, run_id, name, "set_hint", err);
}

static int sq_step_set_note(store *s, const char *run_id, const char *name, int attempt, const char *note, char **err)
{
    sq_store *q = sq(s);
    sqlite3_stmt *st = NULL;
    int rc = sq_stmt(q, Q_STEP_SET_NOTE, &st, err);
    if (rc != STORE_OK) return rc;
    int brc = BIND(bind_text(st, 1, run_id), bind_text(st, 2, name), sqlite3_bind_int(st, 3, attempt),
                   bind_text(st, 4, note));
    return sq_step_cas(q, st, brc, run_id, name, "set_note", err);
}

static int sq_step_set_cause(store *s, const char *run_id, const char *name, int attempt, const char *cause,
                             char **err)
{
    sq_store *q = sq(s);
    sqlite3_stmt *st = NULL;
    int rc = sq_stmt(q, Q_STEP_SET_CAUSE, &st, err);
    if (rc != STORE_OK) return rc;
    int brc = BIND(bind_text(st, 1, run_id), bind_text(st, 2, name), sqlite3_bind_int(st, 3, attempt),
                   bind_text(st, 4, cause));
    return sq_step_cas(q, st, brc, run_id, name, "set_cause", err);
}

static int sq_step_next_due(store *s, int64_t *at, char **err)
{
    sq_store *q = sq(s);
    sqlite3_stmt *st = NULL;
    int rc = sq_stmt(q, Q_STEP_NEXT_DUE, &st, err);
    if (rc != STORE_OK) return rc;
    int step = sqlite3_step(st);
    if (step == SQLITE_ROW)
        *at = sqlite3_column_type(st, 0) == SQLITE_NULL ? INT64_MAX : sqlite3_column_int64(st, 0);
    else
        rc = sq_fail(q, err, step, "step_next_due");
    sq_done(st);
    return rc;
}

static int sq_step_due(store *s, int64_t now, int limit, store_step_list *out, char **err)
{
    sq_store *q = sq(s);
    sqlite3_stmt *st = NULL;
    int rc = sq_stmt(q, Q_STEP_DUE, &st, err);
    if (rc != STORE_OK) return rc;
    sqlite3_bind_int64(st, 1, now);
    sqlite3_bind_int(st, 2, limit);
    void *items = NULL;
    rc = sq_many(q, st, rd_step, sizeof(store_step), (size_t)limit, &items, &out->count, "step_due", err);
    out->items = items;
    return rc;
}

/* ---- inbox ---- */

/* Looks an event up by either key: *found = id of the earlier event, or 0. */
static int sq_inbox_find(sq_store *q, const store_event *ev, int64_t *found, char **err)
{
    sqlite3_stmt *st = NULL;
    int rc = sq_stmt(q, Q_INBOX_FIND, &st, err);
    if (rc != STORE_OK) return rc;
    bind_text(st, 1, ev->message_id);
    bind_text(st, 2, ev->job_id);
    bind_text(st, 3, ev->state);
    int step = sqlite3_step(st);
    *found = step == SQLITE_ROW ? sqlite3_column_int64(st, 0) : 0;
    if (step != SQLITE_ROW && step != SQLITE_DONE) rc = sq_fail(q, err, step, "inbox_put");
    sq_done(st);
    return rc;
}

/* Duplicates are common (push, Eventarc and the poller report the same state), so they are answered by
 * a read that takes no write lock; the INSERT ... ON CONFLICT DO NOTHING still settles races between
 * handles atomically. */
static int sq_inbox_put(store *s, const store_event *ev, int64_t *id, char **err)
{
    sq_store *q = sq(s);
    sqlite3_stmt *st = NULL;
    int64_t first = 0;
    int changes = 0, rc = sq_inbox_find(q, ev, &first, err);
    if (rc != STORE_OK) return rc;
    if (first != 0) return store_inbox_duplicate(ev, first, id, err);
    rc = sq_stmt(q, Q_INBOX_PUT, &st, err);
    if (rc != STORE_OK) return rc;
    int brc = BIND(bind_text(st, 1, ev->message_id), bind_text(st, 2, store_event_source_name(ev->source)),
                   bind_text(st, 3, ev->job_id), bind_text(st, 4, ev->job_name), bind_text(st, 5, ev->state),
                   bind_text(st, 6, ev->payload_json),
                   sqlite3_bind_int64(st, 7, ev->received_at ? ev->received_at : store_now(s)));
    if (brc != SQLITE_OK) {
        sq_done(st);
        return sq_fail(q, err, brc, "inbox_put");
    }
    rc = sq_exec_stmt(q, st, &changes, "inbox_put", err);
    if (rc != STORE_OK) return rc;
    if (changes == 1) {
        if (id != NULL) *id = sqlite3_last_insert_rowid(q->db);
        return STORE_OK;
    }
    /* Another handle recorded it between the look-up and the insert. */
    rc = sq_inbox_find(q, ev, &first, err);
    if (rc != STORE_OK) return rc;
    return store_inbox_duplicate(ev, first, id, err);
}

static int sq_inbox_fetch(store *s, int limit, store_event_list *out, char **err)
{
    sq_store *q = sq(s);
    sqlite3_stmt *st = NULL;
    int rc = sq_stmt(q, Q_INBOX_FETCH, &st, err);
    if (rc != STORE_OK) return rc;
    sqlite3_bind_int(st, 1, limit);
    void *items = NULL;
    rc = sq_many(q, st, rd_event, sizeof(store_event), (size_t)limit, &items, &out->count, "inbox_fetch", err);
    out->items = items;
    return rc;
}

static int sq_inbox_mark_processed(store *s, int64_t id, int64_t processed_at, char **err)
{
    sq_store *q = sq(s);
    sqlite3_stmt *st = NULL;
    int changes = 0, rc = sq_stmt(q, Q_INBOX_MARK, &st, err);
    if (rc != STORE_OK) return rc;
    sqlite3_bind_int64(st, 1, id);
    sqlite3_bind_int64(st, 2, processed_at);
    rc = sq_exec_stmt(q, st, &changes, "inbox_mark_processed", err);
    if (rc == STORE_OK && changes == 0) rc = store_fail(err, STORE_NOTFOUND, "no event with id %lld", (long long)id);
    return rc;
}

static int sq_inbox_prune(store *s, int64_t before, int64_t *deleted, char **err)
{
    sq_store *q = sq(s);
    sqlite3_stmt *st = NULL;
    int changes = 0, rc = sq_stmt(q, Q_INBOX_PRUNE, &st, err);
    if (rc != STORE_OK) return rc;
    sqlite3_bind_int64(st, 1, before);
    rc = sq_exec_stmt(q, st, &changes, "inbox_prune", err);
    if (rc == STORE_OK && deleted != NULL) *deleted = changes;
    return rc;
}

/* ---- open, migrate, close ---- */

static int sq_schema_version(store *s) { return sq(s)->version; }

/* Reads the settings back from the connection rather than echoing the options, so a test can tell. */
static int sq_describe(store *s, char **json, char **err)
{
    static const char *const sync_names[] = {"off", "normal", "full", "extra"};
    sq_store *q = sq(s);
    int64_t sync = 0, fk = 0, busy = 0;
    int rc = sq_query_int(q, "PRAGMA synchronous", &sync, err);
    if (rc == STORE_OK) rc = sq_query_int(q, "PRAGMA foreign_keys", &fk, err);
    if (rc == STORE_OK) rc = sq_query_int(q, "PRAGMA busy_timeout", &busy, err);
    if (rc != STORE_OK) return rc;
    if (busy == 0 && q->base.opts.busy_poll_us > 0) busy = q->base.opts.busy_timeout_ms; /* sq_busy_poll's */
    char mode[16] = "";
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(q->db, "PRAGMA journal_mode", -1, &st, NULL) == SQLITE_OK && sqlite3_step(st) == SQLITE_ROW &&
        sqlite3_column_text(st, 0) != NULL)
        snprintf(mode, sizeof mode, "%s", (const char *)sqlite3_column_text(st, 0));
    sqlite3_finalize(st);
    json_t *o = json_pack("{s:s, s:i, s:s, s:s, s:b, s:I, s:s}", "backend", "sqlite", "schema_version", q->version,
                          "journal_mode", mode, "synchronous", sync >= 0 && sync <= 3 ? sync_names[sync] : "?",
                          "foreign_keys", (int)fk, "busy_timeout_ms", (json_int_t)busy, "sqlite_version",
                          sqlite3_libversion());
    *json = o ? json_dumps(o, JSON_COMPACT) : NULL;
    json_decref(o);
    return *json ? STORE_OK : store_fail(err, STORE_NOMEM, "describe: out of memory");
}

static void sq_close(store *s)
{
    sq_store *q = sq(s);
    if (q->db != NULL && !sqlite3_get_autocommit(q->db)) sqlite3_exec(q->db, "ROLLBACK", NULL, NULL, NULL);
    for (int i = 0; i < Q_COUNT; i++) sqlite3_finalize(q->stmts[i]);
    sqlite3_close_v2(q->db);
    free(q);
}

/* Applies migrations up to `target`, each with its version bump in one IMMEDIATE transaction. The
 * version is re-read under the write lock because another process may have migrated meanwhile. */
static int sq_migrate(sq_store *q, int target, char **err)
{
    int rc = STORE_OK;
    if (q->version >= target) return STORE_OK; /* the common case takes no write lock */
    for (;;) {
        int64_t v = 0;
        rc = sq_exec(q, "BEGIN IMMEDIATE", "migrate: begin", err);
        if (rc != STORE_OK) return rc;
        rc = sq_query_int(q, "PRAGMA user_version", &v, err);
        if (rc != STORE_OK) goto rollback;
        if (v >= target) {
            q->version = (int)v;
            return sq_exec(q, "COMMIT", "migrate: commit", err);
        }
        if (v == 0) {
            char sql[64];
            snprintf(sql, sizeof sql, "PRAGMA application_id = %d", SQ_APPLICATION_ID);
            rc = sq_exec(q, sql, "migrate: application_id", err);
            if (rc != STORE_OK) goto rollback;
        }
        char what[64], bump[64];
        snprintf(what, sizeof what, "migration to schema version %d", (int)v + 1);
        rc = sq_exec(q, sq_migrations[v], what, err);
        if (rc != STORE_OK) {
            if (rc != STORE_NOMEM && rc != STORE_BUSY) rc = STORE_SCHEMA;
            goto rollback;
        }
        snprintf(bump, sizeof bump, "PRAGMA user_version = %d", (int)v + 1);
        rc = sq_exec(q, bump, what, err);
        if (rc != STORE_OK) goto rollback;
        rc = sq_exec(q, "COMMIT", what, err);
        if (rc != STORE_OK) goto rollback;
    }
rollback:
    sqlite3_exec(q->db, "ROLLBACK", NULL, NULL, NULL);
    return rc;
}

void *store_sqlite_native(store *s)
{
    return s != NULL && strcmp(s->ops->name, "sqlite") == 0 ? sq(s)->db : NULL;
}

/* Creates the database file, if absent, readable by its owner only: SQLite would make it 0644 (less the umask),
 * and it creates the -wal and -shm files with the database's permissions, so this covers all three. An existing
 * file is left as it is. A failure is SQLite's to report, on the open that follows. Not for ":memory:", "" (a
 * temporary database) or "file:" URIs. */
static void sq_create_private(const char *path)
{
    if (path[0] == '\0' || strcmp(path, ":memory:") == 0 || strncmp(path, "file:", 5) == 0) return;
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (fd >= 0) close(fd);
}

int store_sqlite_open(const char *path, const store_options *opts, store **out, char **err)
{
    static const struct store_ops ops = {
        .name = "sqlite",
        .close = sq_close,
        .schema_version = sq_schema_version,
        .describe = sq_describe,
        .begin = sq_begin,
        .commit = sq_commit,
        .rollback = sq_rollback,
        .in_transaction = sq_in_transaction,
        .sync = sq_sync,
        .checkpoint = sq_checkpoint,
        .script_put = sq_script_put,
        .script_get = sq_script_get,
        .run_create = sq_run_create,
        .run_get = sq_run_get,
        .run_list_page = sq_run_list_page,
        .run_set_state = sq_run_set_state,
        .run_count_by_state = sq_run_count_by_state,
        .step_insert = sq_step_insert,
        .step_get = sq_step_get,
        .step_list_run = sq_step_list_run,
        .step_find = sq_step_find,
        .step_record_intent = sq_step_record_intent,
        .step_set_job = sq_step_set_job,
        .step_set_state = sq_step_set_state,
        .step_finish = sq_step_finish,
        .step_set_check = sq_step_set_check,
        .step_reclaim = sq_step_reclaim,
        .step_due = sq_step_due,
        .run_redrive = sq_run_redrive,
        .run_prune = sq_run_prune,
        .run_lock = sq_run_lock,
        .lease_acquire = sq_lease_acquire,
        .lease_release = sq_lease_release,
        .step_set_hint = sq_step_set_hint,
        .step_next_due = sq_step_next_due,
        .run_find_page = sq_run_find_page,
        .step_set_cause = sq_step_set_cause,
        .step_set_note = sq_step_set_note,
        .inbox_put = sq_inbox_put,
        .inbox_fetch = sq_inbox_fetch,
        .inbox_mark_processed = sq_inbox_mark_processed,
        .inbox_prune = sq_inbox_prune,
    };
    int rc = STORE_OK;
    int64_t version = 0, app_id = 0, tables = 0;
    sq_store *q = xcalloc(1, sizeof *q);
    if (q == NULL) return store_fail(err, STORE_NOMEM, "store_open: out of memory");
    q->base.ops = &ops;
    q->base.opts = *opts;

    if (opts->must_exist) {
        struct stat sb;
        if (stat(path, &sb) != 0) {
            rc = store_fail(err, errno == ENOENT ? STORE_NOTFOUND : STORE_IO, "no store '%s': %s", path,
                            strerror(errno));
            goto fail;
        }
    } else {
        sq_create_private(path);
    }
    /* NOMUTEX: a handle is used by one thread at a time (see store.h); other threads open their own. */
    int src = sqlite3_open_v2(path, &q->db,
                              SQLITE_OPEN_READWRITE | (opts->must_exist ? 0 : SQLITE_OPEN_CREATE) | SQLITE_OPEN_NOMUTEX,
                              NULL);
    if (src != SQLITE_OK) {
        rc = store_fail(err, q->db ? sq_map(sqlite3_extended_errcode(q->db)) : STORE_NOMEM,
                        "store_open: cannot open '%s': %s", path, q->db ? sqlite3_errmsg(q->db) : "out of memory");
        goto fail;
    }
    sqlite3_extended_result_codes(q->db, 1);
    if (opts->busy_poll_us > 0 && opts->busy_poll_us < 1000000)
        sqlite3_busy_handler(q->db, sq_busy_poll, q);
    else
        sqlite3_busy_timeout(q->db, opts->busy_timeout_ms);
    if (opts->manual_checkpoint) sqlite3_wal_autocheckpoint(q->db, 0);
    /* Defensive mode: no writable_schema tricks can corrupt the file through this connection. */
    sqlite3_db_config(q->db, SQLITE_DBCONFIG_DEFENSIVE, 1, (int *)NULL);
    sqlite3_db_config(q->db, SQLITE_DBCONFIG_TRUSTED_SCHEMA, 0, (int *)NULL);

    /* The first read of the header: a garbage file fails here with "file is not a database". The three
     * values come from one statement, hence one snapshot: read separately, a racing opener's first
     * migration could commit in between and make a new store look like a foreign file. */
    {
        sqlite3_stmt *st = NULL;
        int src2 = sqlite3_prepare_v2(q->db,
                                      "SELECT (SELECT user_version FROM pragma_user_version),"
                                      " (SELECT application_id FROM pragma_application_id),"
                                      " (SELECT count(*) FROM sqlite_schema)",
                                      -1, &st, NULL);
        if (src2 == SQLITE_OK) src2 = sqlite3_step(st);
        if (src2 == SQLITE_ROW) {
            version = sqlite3_column_int64(st, 0);
            app_id = sqlite3_column_int64(st, 1);
            tables = sqlite3_column_int64(st, 2);
        } else {
            rc = sq_fail(q, err, src2 == SQLITE_DONE ? SQLITE_ERROR : sqlite3_extended_errcode(q->db), "read header");
        }
        sqlite3_finalize(st);
        if (rc != STORE_OK) goto fail_path;
    }
    if (version > SQ_LATEST) {
        rc = store_fail(err, STORE_SCHEMA,
                        "store '%s' has schema version %lld, newer than this binary supports (%d): upgrade sluice",
                        path, (long long)version, SQ_LATEST);
        goto fail;
    }
    if (opts->must_exist && version == 0 && tables == 0) {
        rc = store_fail(err, STORE_NOTFOUND, "no store '%s': the file is empty (no sluice store was made there)", path);
        goto fail;
    }
    if ((version > 0 && app_id != SQ_APPLICATION_ID) || (version == 0 && tables > 0)) {
        rc = store_fail(err, STORE_CORRUPT, "'%s' is an SQLite file but not a sluice store", path);
        goto fail;
    }
    {
        char *msg = NULL;
        /* A new file is empty until the switch to WAL below writes its first page, and SQLite writes that page
         * through a rollback journal: with the default synchronous level that transaction alone costs four syncs
         * (the journal, its directory, the journal again, the file), tens of milliseconds on a busy disk, before
         * any data exists. Unsynced, a power loss in that moment can leave at worst an empty file that is not a
         * database, which the next open reports; every later write is synced as configured below. */
        int64_t pages = -1;
        if (version == 0 && tables == 0 && sq_query_int(q, "PRAGMA page_count", &pages, NULL) == STORE_OK &&
            pages == 0)
            sqlite3_exec(q->db, "PRAGMA synchronous = OFF", NULL, NULL, NULL);
        /* Changing to WAL needs an exclusive lock. The busy handler covers most racing openers, but SQLite
         * answers BUSY at once (no handler) when waiting could deadlock — several processes creating the same
         * new file at once — so retry here, within the busy timeout. */
        int64_t dummy;
        int64_t deadline = util_mono_ms() + (opts->busy_timeout_ms > 0 ? opts->busy_timeout_ms : 5000);
        for (;;) {
            char *werr = NULL;
            rc = sq_query_int(q, "PRAGMA journal_mode = WAL", &dummy, &werr);
            if (rc != STORE_BUSY || util_mono_ms() >= deadline) {
                if (rc != STORE_OK && err != NULL) *err = werr;
                else free(werr);
                break;
            }
            free(werr);
            struct timespec pause = {0, 2 * 1000 * 1000};
            nanosleep(&pause, NULL);
        }
        if (rc != STORE_OK) goto fail_path;
        const char *sync = opts->synchronous == STORE_SYNC_NORMAL ? "PRAGMA synchronous = NORMAL"
                                                                 : "PRAGMA synchronous = FULL";
        q->sync_level = opts->synchronous == STORE_SYNC_NORMAL ? 1 : 2;
        if (sqlite3_exec(q->db, sync, NULL, NULL, &msg) != SQLITE_OK ||
            sqlite3_exec(q->db, "PRAGMA foreign_keys = ON", NULL, NULL, &msg) != SQLITE_OK) {
            rc = store_fail(err, sq_map(sqlite3_extended_errcode(q->db)), "store_open: pragma: %s",
                            msg ? msg : "failed");
            sqlite3_free(msg);
            goto fail;
        }
    }
    {
        /* journal_mode returns text; confirm WAL really is on (it is not for some file systems). */
        sqlite3_stmt *st = NULL;
        int ok = sqlite3_prepare_v2(q->db, "PRAGMA journal_mode", -1, &st, NULL) == SQLITE_OK &&
                 sqlite3_step(st) == SQLITE_ROW &&
                 strcmp((const char *)sqlite3_column_text(st, 0) ? (const char *)sqlite3_column_text(st, 0) : "",
                        "wal") == 0;
        sqlite3_finalize(st);
        if (!ok) {
            rc = store_fail(err, STORE_IO, "store_open: '%s': cannot enable WAL journal mode", path);
            goto fail;
        }
    }
    q->version = (int)version;
    rc = sq_migrate(q, opts->schema_version ? opts->schema_version : SQ_LATEST, err);
    if (rc != STORE_OK) goto fail_path;
    if (q->version > SQ_LATEST) { /* migrated concurrently by a newer binary */
        rc = store_fail(err, STORE_SCHEMA, "store '%s' has schema version %d, newer than this binary supports (%d)",
                        path, q->version, SQ_LATEST);
        goto fail;
    }
    *out = &q->base;
    return STORE_OK;

fail_path:
    /* Prefix the message with the path so "file is not a database" says which file. */
    if (err != NULL && *err != NULL) {
        char *m = NULL;
        if (asprintf(&m, "store_open '%s': %s", path, *err) >= 0) {
            free(*err);
            *err = m;
        }
    }
fail:
    sq_close(&q->base);
    return rc;
}
