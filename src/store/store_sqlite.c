/* store_sqlite: the SQLite backend of the store: schema and migrations, open (pragmas, WAL), close, transactions,
 * sync and checkpoints. Its operations are in store_sqlite_runs.c and store_sqlite_steps.c, its cached statements
 * in store_sqlite_stmt.c; store_sqlite_internal.h is what they share.
 * Uses: SQLite 3 (WAL mode), jansson (store_describe only), store_sqlite_internal.h, store_backend.h helpers.
 * Must not: validate arguments or JSON (store.c does), or hold a connection across fork(); nothing outside the
 * store modules sees sqlite3 types. */
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "mem.h"
#include "store_sqlite_internal.h"
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
    for (int i = 0; i < q->n_texts; i++) sqlite3_finalize(q->texts[i].st);
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
        char *m = util_printf("store_open '%s': %s", path, *err);
        free(*err);
        *err = m;
    }
fail:
    sq_close(&q->base);
    return rc;
}
