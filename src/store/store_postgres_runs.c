/* store_postgres_runs: scripts, runs and leases in the PostgreSQL backend (struct store_ops entries,
 * store_backend.h): create, read, list and page runs, their state changes, redrive, prune and counts, the run
 * lock and leases; NOTIFY for the changes other engines must learn of at once.
 * Uses: store_postgres_internal.h. Must not: validate arguments (store.c does), or touch steps or the inbox
 * (store_postgres_steps.c). */
#include <libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mem.h"
#include "store_postgres_internal.h"
#include "util.h"

/* ---- scripts ---- */

static int read_script(PGresult *res, int row, void *out, char **err)
{
    store_script *sc = out;
    sc->hash = pg_col_dup(res, row, 0);
    sc->workflow = pg_col_dup(res, row, 1);
    sc->source = pg_col_dup(res, row, 2);
    sc->created_at = pg_col_i64(res, row, 3);
    (void)err;
    return STORE_OK;
}

int pg_script_put(store *s, const char *hash, const char *workflow, const char *source, char **err)
{
    pg_store *q = pg(s);
    pg_params p = {.n = 0};
    pg_p_text(&p, hash);
    pg_p_text(&p, workflow);
    pg_p_text(&p, source);
    pg_p_i64(&p, store_now(s));
    PGresult *res = NULL;
    int rc = pg_run(q, Q_SCRIPT_PUT, &p, &res, "script_put", err);
    if (rc != STORE_OK) return rc;
    int64_t changes = pg_changes(res);
    PQclear(res);
    if (changes == 1) return STORE_OK;
    /* Already there: idempotent if it is the same text. */
    pg_params k = {.n = 0};
    pg_p_text(&k, hash);
    rc = pg_run(q, Q_SCRIPT_SOURCE, &k, &res, "script_put", err);
    if (rc != STORE_OK) return rc;
    if (PQntuples(res) == 0) rc = store_fail(err, STORE_CONFLICT, "script %s vanished during put", hash);
    else if (strcmp(PQgetvalue(res, 0, 0), source) != 0)
        rc = store_fail(err, STORE_CONFLICT, "script %s is already stored with a different source", hash);
    PQclear(res);
    return rc;
}

int pg_script_get(store *s, const char *hash, store_script *out, char **err)
{
    pg_params p = {.n = 0};
    pg_p_text(&p, hash);
    return pg_one(pg(s), Q_SCRIPT_GET, &p, read_script, out, "script_get", err);
}

/* ---- runs ---- */

/* Which constraint a failed statement's message names (PostgreSQL puts it in the DETAIL and a field, but
 * pg_run keeps the message only: the constraint's name is in it as "... constraint \"name\""). */
int pg_msg_names(const char *msg, const char *constraint) { return msg && strstr(msg, constraint) != NULL; }

/* A change another process's engine must learn of at once (a new run, a run's state, a recorded event): NOTIFY
 * sluice_inbox, with the commit inside a transaction (once per transaction), else now. */
void pg_wake_engines(pg_store *q)
{
    if (q->tx)
        q->notify = 1;
    else
        pg_simple(q, "NOTIFY sluice_inbox", "notify", NULL);
}

int pg_run_create(store *s, const store_run *r, char **err)
{
    pg_store *q = pg(s);
    int64_t now = store_now(s);
    int64_t created = r->created_at ? r->created_at : now;
    pg_params p = {.n = 0};
    pg_p_text(&p, r->id);
    pg_p_text(&p, r->workflow);
    pg_p_text(&p, r->script_hash);
    pg_p_text(&p, r->params_json ? r->params_json : "{}");
    pg_p_text(&p, store_run_state_name(r->state));
    pg_p_text(&p, r->origin);
    pg_p_text(&p, r->request_key);
    pg_p_text(&p, r->error);
    pg_p_i64(&p, created);
    pg_p_i64(&p, r->updated_at ? r->updated_at : created);
    pg_p_time(&p, r->finished_at);
    PGresult *res = NULL;
    char *msg = NULL;
    int rc = pg_run(q, Q_RUN_CREATE, &p, &res, "run_create", &msg);
    PQclear(res);
    if (rc == STORE_EXISTS && pg_msg_names(msg, "runs_request_key_key"))
        rc = store_fail(err, STORE_EXISTS, "request_key '%s' already started a run", r->request_key);
    else if (rc == STORE_EXISTS) rc = store_fail(err, STORE_EXISTS, "run '%s' already exists", r->id);
    else if (rc == STORE_INVALID && pg_msg_names(msg, "runs_script_hash_fkey"))
        rc = store_fail(err, STORE_INVALID, "run '%s': script %s is not stored", r->id, r->script_hash);
    else if (rc != STORE_OK && err != NULL) {
        *err = msg;
        msg = NULL;
    }
    free(msg);
    if (rc == STORE_OK) pg_wake_engines(pg(s)); /* a run started through another replica: its engine may take it */
    return rc;
}

int pg_run_get(store *s, const char *key, int by_request_key, store_run *out, char **err)
{
    pg_params p = {.n = 0};
    pg_p_text(&p, key);
    int rc = pg_one(pg(s), by_request_key ? Q_RUN_GET_KEY : Q_RUN_GET, &p, pg_read_run, out, "run_get", err);
    if (rc == STORE_NOTFOUND && err != NULL) {
        free(*err);
        store_fail(err, rc, "no run with %s '%s'", by_request_key ? "request_key" : "id", key);
    }
    return rc;
}

int pg_run_list_page(store *s, const store_run_filter *f, store_run_list *out, char **err)
{
    int64_t c_time;
    const char *c_id;
    int crc = store_run_cursor(f->cursor, &c_time, &c_id, err);
    if (crc != STORE_OK) return crc;
    int id = f->state == STORE_RUN_ANY ? (f->workflow ? Q_RUN_LIST_WF : Q_RUN_LIST)
                                       : (f->workflow ? Q_RUN_LIST_BOTH : Q_RUN_LIST_STATE);
    pg_params p = {.n = 0};
    pg_p_i64(&p, c_time);
    pg_p_text(&p, c_id);
    if (f->state != STORE_RUN_ANY) pg_p_text(&p, store_run_state_name((store_run_state)f->state));
    if (f->workflow) pg_p_text(&p, f->workflow);
    pg_p_i64(&p, f->limit + 1); /* one more tells whether there is a next page */
    void *items = NULL;
    size_t n = 0;
    int rc = pg_many(pg(s), id, &p, pg_read_run, sizeof(store_run), &items, &n, "run_list", err);
    out->items = items;
    out->count = n;
    if (rc != STORE_OK) return rc;
    return store_run_page_trim(out, f->limit, err);
}

int pg_run_set_state(store *s, const char *id, int expected, store_run_state next, const char *error,
                     char **err)
{
    pg_store *q = pg(s);
    pg_params p = {.n = 0};
    pg_p_text(&p, id);
    pg_p_text(&p, expected == STORE_RUN_ANY ? NULL : store_run_state_name((store_run_state)expected));
    pg_p_text(&p, store_run_state_name(next));
    pg_p_i64(&p, store_now(s));
    pg_p_bool(&p, store_run_state_terminal(next));
    pg_p_text(&p, error);
    PGresult *res = NULL;
    int rc = pg_run(q, Q_RUN_SET_STATE, &p, &res, "run_set_state", err);
    if (rc != STORE_OK) return rc;
    int64_t changes = pg_changes(res);
    PQclear(res);
    if (changes == 1) {
        /* a cancel asked through another replica: the engines act on it now */
        if (next == STORE_RUN_CANCELLING) pg_wake_engines(q);
        return STORE_OK;
    }
    /* Nothing changed: tell "no such run" from "not in the expected state". */
    pg_params k = {.n = 0};
    pg_p_text(&k, id);
    rc = pg_run(q, Q_RUN_STATE, &k, &res, "run_set_state", err);
    if (rc != STORE_OK) return rc;
    if (PQntuples(res) == 1)
        rc = store_fail(err, STORE_CONFLICT, "run '%s' is %s, expected %s", id, PQgetvalue(res, 0, 0),
                        store_run_state_name((store_run_state)expected));
    else rc = store_fail(err, STORE_NOTFOUND, "no run with id '%s'", id);
    PQclear(res);
    return rc;
}

int pg_run_redrive(store *s, const char *id, store_run_state expected, const char *script_hash,
                   const char *params_json, char **err)
{
    pg_params p = {.n = 0};
    pg_p_text(&p, id);
    pg_p_text(&p, store_run_state_name(expected));
    pg_p_text(&p, script_hash);
    pg_p_text(&p, params_json);
    pg_p_i64(&p, store_now(s));
    PGresult *res = NULL;
    int rc = pg_run(pg(s), Q_RUN_REDRIVE, &p, &res, "run_redrive", err);
    if (rc != STORE_OK) return rc;
    if (pg_changes(res) != 1)
        rc = store_fail(err, STORE_CONFLICT, "run '%s' is not %s (or does not exist)", id,
                        store_run_state_name(expected));
    else
        pg_wake_engines(pg(s));
    PQclear(res);
    return rc;
}

int pg_run_lock(store *s, const char *run_id, int wait, int *got, char **err)
{
    pg_params p = {.n = 0};
    pg_p_text(&p, run_id);
    PGresult *res = NULL;
    int rc = pg_run(pg(s), wait ? Q_RUN_LOCK : Q_RUN_LOCK_NOWAIT, &p, &res, "run_lock", err);
    if (rc != STORE_OK) return rc;
    *got = PQntuples(res) == 1;
    PQclear(res);
    if (*got) return STORE_OK;
    /* no row: another transaction holds it (SKIP LOCKED), or there is no such run */
    if ((rc = pg_run(pg(s), Q_RUN_STATE, &p, &res, "run_lock", err)) != STORE_OK) return rc;
    if (PQntuples(res) == 0) rc = store_fail(err, STORE_NOTFOUND, "run '%s' not found", run_id);
    PQclear(res);
    return rc;
}

int pg_lease_acquire(store *s, const char *name, const char *holder, int64_t ttl_ms, store_lease *out,
                     char **err)
{
    pg_params p = {.n = 0};
    pg_p_text(&p, name);
    pg_p_text(&p, holder);
    pg_p_i64(&p, ttl_ms);
    PGresult *res = NULL;
    int rc = pg_run(pg(s), Q_LEASE_TAKE, &p, &res, "lease_acquire", err);
    if (rc != STORE_OK) return rc;
    if (PQntuples(res) == 1) {
        out->held = 1;
        out->term = pg_col_i64(res, 0, 0);
        out->expires_in_ms = pg_col_i64(res, 0, 1);
        out->holder = xstrdup(holder);
        PQclear(res);
        return rc;
    }
    PQclear(res);
    p.n = 1;
    if ((rc = pg_run(pg(s), Q_LEASE_GET, &p, &res, "lease_get", err)) != STORE_OK) return rc;
    if (PQntuples(res) == 1) {
        out->holder = pg_col_dup(res, 0, 0);
        out->term = pg_col_i64(res, 0, 1);
        out->expires_in_ms = pg_col_i64(res, 0, 2);
    }
    PQclear(res);
    return rc;
}

int pg_lease_release(store *s, const char *name, const char *holder, char **err)
{
    pg_params p = {.n = 0};
    pg_p_text(&p, name);
    pg_p_text(&p, holder);
    PGresult *res = NULL;
    int rc = pg_run(pg(s), Q_LEASE_RELEASE, &p, &res, "lease_release", err);
    PQclear(res);
    return rc;
}

int pg_run_prune(store *s, int64_t before, int limit, int64_t *deleted, char **err)
{
    pg_params p = {.n = 0};
    pg_p_i64(&p, before);
    pg_p_i64(&p, limit);
    PGresult *res = NULL;
    int rc = pg_run(pg(s), Q_RUN_PRUNE, &p, &res, "run_prune", err);
    if (rc != STORE_OK) return rc;
    if (deleted) *deleted = pg_changes(res);
    PQclear(res);
    return rc;
}

/* The web UI's listing (store_run_find_page): the plain listing's conditions plus the step conditions, as one
 * statement built per call. The failed-step test probes the partial index steps_failed per run; the search is a
 * range of the primary key and of steps_job_name (a prefix is a range under the "C" collation), or an exact
 * job id. */
int pg_run_find_page(store *s, const store_run_query *qy, store_run_list *out, char **err)
{
    pg_store *q = pg(s);
    const store_run_filter *f = &qy->base;
    int64_t c_time;
    const char *c_id;
    int crc = store_run_cursor(f->cursor, &c_time, &c_id, err);
    if (crc != STORE_OK) return crc;
    pg_params p = {.n = 0};
    pg_p_i64(&p, c_time);
    pg_p_text(&p, c_id);
    char cond[900] = "", tmp[400];
    if (f->state != STORE_RUN_ANY) {
        pg_p_text(&p, store_run_state_name((store_run_state)f->state));
        snprintf(tmp, sizeof tmp, " AND state = $%d::text", p.n);
        strcat(cond, tmp);
    }
    if (f->workflow) {
        pg_p_text(&p, f->workflow);
        snprintf(tmp, sizeof tmp, " AND workflow = $%d::text", p.n);
        strcat(cond, tmp);
    }
    if (qy->failed_step)
        strcat(cond, " AND EXISTS (SELECT 1 FROM steps WHERE steps.run_id = runs.id AND steps.state = 'failed')");
    char *upper = NULL;
    if (qy->search) {
        /* every text starting with the prefix sorts below prefix + U+FFFF under the "C" collation */
        upper = util_printf("%s\xef\xbf\xbf", qy->search);
        pg_p_text(&p, qy->search);
        pg_p_text(&p, upper);
        int a = p.n - 1, b = p.n;
        snprintf(tmp, sizeof tmp,
                 " AND ((id >= $%d::text AND id < $%d::text)"
                 " OR id IN (SELECT run_id FROM steps WHERE job_name >= $%d::text AND job_name < $%d::text)"
                 " OR id IN (SELECT run_id FROM steps WHERE job_id = $%d::text))",
                 a, b, a, b, a);
        strcat(cond, tmp);
    }
    pg_p_i64(&p, f->limit + 1); /* one more tells whether there is a next page */
    char sql[1600];
    snprintf(sql, sizeof sql,
             "SELECT " RUN_COLS " FROM runs WHERE (created_at, id) < ($1::bigint, $2::text)%s" RUN_ORDER "$%d::int",
             cond, p.n);
    PGresult *res = PQexecParams(q->conn, sql, p.n, NULL, p.v, NULL, NULL, 0);
    free(upper);
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        int rc = pg_fail(q, res, err, "run_find_page");
        PQclear(res);
        return rc;
    }
    int n = PQntuples(res), rc = STORE_OK;
    out->items = n > 0 ? xcalloc((size_t)n, sizeof *out->items) : NULL;
    for (int i = 0; rc == STORE_OK && i < n; i++) {
        rc = pg_read_run(res, i, &out->items[i], err);
        if (rc == STORE_OK) out->count++;
    }
    PQclear(res);
    if (rc != STORE_OK) return rc;
    return store_run_page_trim(out, f->limit, err);
}

int pg_run_count_by_state(store *s, int64_t counts[STORE_RUN_STATE_COUNT], char **err)
{
    PGresult *res = NULL;
    int rc = pg_run(pg(s), Q_RUN_COUNT, NULL, &res, "run_count_by_state", err);
    if (rc != STORE_OK) return rc;
    for (int i = 0; i < PQntuples(res); i++) {
        store_run_state rs;
        const char *name = pg_col_str(res, i, 0);
        if (store_run_state_parse(name, &rs) != STORE_OK) {
            rc = store_fail(err, STORE_CORRUPT, "runs hold unknown state '%s'", name ? name : "(null)");
            break;
        }
        counts[rs] = pg_col_i64(res, i, 1);
    }
    PQclear(res);
    return rc;
}
