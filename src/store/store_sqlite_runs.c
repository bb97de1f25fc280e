/* store_sqlite_runs: scripts, runs and leases in the SQLite backend (struct store_ops entries, store_backend.h):
 * create, read, list and page runs, their state changes, redrive, prune and counts, the run lock and leases.
 * Uses: store_sqlite_internal.h. Must not: validate arguments (store.c does), or touch steps or the inbox
 * (store_sqlite_steps.c). */
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mem.h"
#include "store_sqlite_internal.h"
#include "util.h"

/* ---- scripts ---- */

int sq_script_put(store *s, const char *hash, const char *workflow, const char *source, char **err)
{
    sq_store *q = sq(s);
    sqlite3_stmt *st = NULL;
    int changes = 0, rc = sq_stmt(q, Q_SCRIPT_PUT, &st, err);
    if (rc != STORE_OK) return rc;
    int brc = BIND(sq_bind_text(st, 1, hash), sq_bind_text(st, 2, workflow), sq_bind_text(st, 3, source),
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
    sq_bind_text(st, 1, hash);
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
    sc->hash = sq_col_dup(st, 0, &oom);
    sc->workflow = sq_col_dup(st, 1, &oom);
    sc->source = sq_col_dup(st, 2, &oom);
    sc->created_at = sq_col_time(st, 3);
    if (!oom) return STORE_OK;
    store_script_free(sc);
    return store_fail(err, STORE_NOMEM, "out of memory reading a script");
}

int sq_script_get(store *s, const char *hash, store_script *out, char **err)
{
    sq_store *q = sq(s);
    sqlite3_stmt *st = NULL;
    int rc = sq_stmt(q, Q_SCRIPT_GET, &st, err);
    if (rc != STORE_OK) return rc;
    sq_bind_text(st, 1, hash);
    return sq_one(q, st, rd_script, out, "script_get", err);
}

/* ---- runs ---- */

int sq_run_create(store *s, const store_run *r, char **err)
{
    sq_store *q = sq(s);
    sqlite3_stmt *st = NULL;
    int rc = sq_stmt(q, Q_RUN_CREATE, &st, err);
    if (rc != STORE_OK) return rc;
    int64_t now = store_now(s);
    int64_t created = r->created_at ? r->created_at : now;
    int brc = BIND(sq_bind_text(st, 1, r->id), sq_bind_text(st, 2, r->workflow), sq_bind_text(st, 3, r->script_hash),
                   sq_bind_text(st, 4, r->params_json ? r->params_json : "{}"),
                   sq_bind_text(st, 5, store_run_state_name(r->state)), sq_bind_text(st, 6, r->origin),
                   sq_bind_text(st, 7, r->request_key), sq_bind_text(st, 8, r->error), sqlite3_bind_int64(st, 9, created),
                   sqlite3_bind_int64(st, 10, r->updated_at ? r->updated_at : created),
                   sq_bind_time(st, 11, r->finished_at));
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

int sq_run_get(store *s, const char *key, int by_request_key, store_run *out, char **err)
{
    sq_store *q = sq(s);
    sqlite3_stmt *st = NULL;
    int rc = sq_stmt(q, by_request_key ? Q_RUN_GET_KEY : Q_RUN_GET, &st, err);
    if (rc != STORE_OK) return rc;
    sq_bind_text(st, 1, key);
    rc = sq_one(q, st, sq_rd_run, out, "run_get", err);
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
    sq_bind_text(st, 2, c_id);
    if (f->state != STORE_RUN_ANY) sq_bind_text(st, 3, store_run_state_name((store_run_state)f->state));
    if (f->workflow) sq_bind_text(st, 4, f->workflow);
    sqlite3_bind_int(st, 5, f->limit + 1); /* one more tells whether there is a next page */
}

static int run_page_collect(sq_store *q, sqlite3_stmt *st, const store_run_filter *f, store_run_list *out,
                            char **err);

int sq_run_list_page(store *s, const store_run_filter *f, store_run_list *out, char **err)
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
int sq_run_find_page(store *s, const store_run_query *qy, store_run_list *out, char **err)
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
        upper = util_printf("%s\xff", qy->search);
        sq_bind_text(st, 6, qy->search);
        sq_bind_text(st, 7, upper);
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
    rc = sq_many(q, st, sq_rd_run, sizeof(store_run), (size_t)f->limit + 1, &items, &n, "run_list", err);
    out->items = items;
    out->count = n;
    if (rc != STORE_OK) return rc;
    return store_run_page_trim(out, f->limit, err);
}

int sq_run_set_state(store *s, const char *id, int expected, store_run_state next, const char *error,
                     char **err)
{
    sq_store *q = sq(s);
    sqlite3_stmt *st = NULL;
    int changes = 0, rc = sq_stmt(q, Q_RUN_SET_STATE, &st, err);
    if (rc != STORE_OK) return rc;
    int brc = BIND(sq_bind_text(st, 1, id),
                   expected == STORE_RUN_ANY ? sqlite3_bind_null(st, 2)
                                             : sq_bind_text(st, 2, store_run_state_name((store_run_state)expected)),
                   sq_bind_text(st, 3, store_run_state_name(next)), sqlite3_bind_int64(st, 4, store_now(s)),
                   sqlite3_bind_int(st, 5, store_run_state_terminal(next)), sq_bind_text(st, 6, error));
    if (brc != SQLITE_OK) {
        sq_done(st);
        return sq_fail(q, err, brc, "run_set_state");
    }
    rc = sq_exec_stmt(q, st, &changes, "run_set_state", err);
    if (rc != STORE_OK || changes == 1) return rc;
    /* Nothing changed: tell "no such run" from "not in the expected state". */
    rc = sq_stmt(q, Q_RUN_STATE, &st, err);
    if (rc != STORE_OK) return rc;
    sq_bind_text(st, 1, id);
    int step = sqlite3_step(st);
    if (step == SQLITE_ROW)
        rc = store_fail(err, STORE_CONFLICT, "run '%s' is %s, expected %s", id, sqlite3_column_text(st, 0),
                        store_run_state_name((store_run_state)expected));
    else if (step == SQLITE_DONE) rc = store_fail(err, STORE_NOTFOUND, "no run with id '%s'", id);
    else rc = sq_fail(q, err, step, "run_set_state");
    sq_done(st);
    return rc;
}

int sq_run_redrive(store *s, const char *id, store_run_state expected, const char *script_hash,
                   const char *params_json, char **err)
{
    sq_store *q = sq(s);
    sqlite3_stmt *st = NULL;
    int changes = 0, rc = sq_stmt(q, Q_RUN_REDRIVE, &st, err);
    if (rc != STORE_OK) return rc;
    int brc = BIND(sq_bind_text(st, 1, id), sq_bind_text(st, 2, store_run_state_name(expected)),
                   sq_bind_text(st, 3, script_hash), sq_bind_text(st, 4, params_json), sqlite3_bind_int64(st, 5, store_now(s)));
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
int sq_run_lock(store *s, const char *run_id, int wait, int *got, char **err)
{
    (void)wait;
    sq_store *q = sq(s);
    sqlite3_stmt *st = NULL;
    int rc = sq_stmt(q, Q_RUN_STATE, &st, err);
    if (rc != STORE_OK) return rc;
    int brc = sq_bind_text(st, 1, run_id);
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

int sq_lease_acquire(store *s, const char *name, const char *holder, int64_t ttl_ms, store_lease *out,
                     char **err)
{
    sq_store *q = sq(s);
    sqlite3_stmt *st = NULL;
    int64_t now = store_now(s);
    int rc = sq_stmt(q, Q_LEASE_TAKE, &st, err);
    if (rc != STORE_OK) return rc;
    int brc = BIND(sq_bind_text(st, 1, name), sq_bind_text(st, 2, holder), sqlite3_bind_int64(st, 3, now),
                   sqlite3_bind_int64(st, 4, ttl_ms));
    int step = brc == SQLITE_OK ? sqlite3_step(st) : brc;
    if (step == SQLITE_ROW) {
        out->held = 1;
        out->term = sqlite3_column_int64(st, 0);
        out->expires_in_ms = sqlite3_column_int64(st, 1);
        out->holder = xstrdup(holder);
    } else if (step != SQLITE_DONE) {
        rc = sq_fail(q, err, step, "lease_acquire");
    }
    sq_done(st);
    if (rc != STORE_OK || out->held) return rc;
    if ((rc = sq_stmt(q, Q_LEASE_GET, &st, err)) != STORE_OK) return rc;
    brc = BIND(sq_bind_text(st, 1, name), sqlite3_bind_int64(st, 2, now));
    step = brc == SQLITE_OK ? sqlite3_step(st) : brc;
    if (step == SQLITE_ROW) {
        int oom = 0;
        out->holder = sq_col_dup(st, 0, &oom);
        out->term = sqlite3_column_int64(st, 1);
        out->expires_in_ms = sqlite3_column_int64(st, 2);
        if (oom) rc = store_fail(err, STORE_NOMEM, "lease: out of memory");
    } else if (step != SQLITE_DONE) {
        rc = sq_fail(q, err, step, "lease_get");
    }
    sq_done(st);
    return rc;
}

int sq_lease_release(store *s, const char *name, const char *holder, char **err)
{
    sq_store *q = sq(s);
    sqlite3_stmt *st = NULL;
    int rc = sq_stmt(q, Q_LEASE_RELEASE, &st, err);
    if (rc != STORE_OK) return rc;
    int brc = BIND(sq_bind_text(st, 1, name), sq_bind_text(st, 2, holder));
    if (brc != SQLITE_OK) {
        sq_done(st);
        return sq_fail(q, err, brc, "lease_release");
    }
    return sq_exec_stmt(q, st, NULL, "lease_release", err);
}

int sq_run_prune(store *s, int64_t before, int limit, int64_t *deleted, char **err)
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

int sq_run_count_by_state(store *s, int64_t counts[STORE_RUN_STATE_COUNT], char **err)
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
