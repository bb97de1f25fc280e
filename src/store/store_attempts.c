/* store_attempts: the history of a step's attempts (store.h, "attempts"): one row per (run, step, attempt), written
 * in the transaction of the step change it copies, read back by run. Both SQL backends, each statement with its
 * SQLite and PostgreSQL text side by side (store_sql.h), on the handle's own connection; a Firestore handle goes to
 * store_firestore_attempts.c (documents keyed by run/step/attempt) after the argument checks, and shares the
 * capture logic here.
 * Uses: store.h (store_step_get, the step being copied), store_sql.h, store_backend.h (store_now, store_fail).
 * Must not: decide anything about a step (the engine does) or change the step row. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "job_state.h"
#include "mem.h"
#include "store_firestore_attempts.h"
#include "store_sql.h"

#define ATT_COLS                                                                                              \
    "run_id, step, attempt, job_name, job_id, project, region, request, state, job_state, error, failure_cause," \
    " launched_at, running_at, ended_at, updated_at"

static int has_sql(store *s) { return store_sqlite_native(s) != NULL || store_postgres_native(s) != NULL; }

/* Every backend keeps attempts; a store of none of them (a test double) keeps none. */
static int kept(store *s) { return has_sql(s) || store_firestore_native(s); }

int store_attempts_kept(store *s) { return s != NULL && kept(s); }

static void from_row(sql_result *r, size_t i, store_attempt *a)
{
    a->run_id = sql_take(r, i, 0);
    a->step = sql_take(r, i, 1);
    a->attempt = (int)sql_int(r, i, 2);
    a->job_name = sql_take(r, i, 3);
    a->job_id = sql_take(r, i, 4);
    a->project = sql_take(r, i, 5);
    a->region = sql_take(r, i, 6);
    a->request_json = sql_take(r, i, 7);
    store_step_state st = STORE_STEP_LAUNCHING;
    if (sql_cell(r, i, 8) != NULL) store_step_state_parse(sql_cell(r, i, 8), &st);
    a->state = st;
    a->job_state = sql_take(r, i, 9);
    a->error = sql_take(r, i, 10);
    a->failure_cause = sql_take(r, i, 11);
    a->launched_at = sql_int(r, i, 12);
    a->running_at = sql_int(r, i, 13);
    a->ended_at = sql_int(r, i, 14);
    a->updated_at = sql_int(r, i, 15);
}

/* Times of 0 are stored as NULL (store.h). */
#define TIME_P(x) ((x) ? SQL_I(x) : SQL_T(NULL))

/* Writes the whole row (insert or replace). */
static int attempt_put(store *s, const store_attempt *a, char **err)
{
    if (store_firestore_native(s)) return fs_attempt_put(s, a, err);
    sql_param p[] = {SQL_T(a->run_id), SQL_T(a->step), SQL_I(a->attempt), SQL_T(a->job_name), SQL_T(a->job_id),
                     SQL_T(a->project), SQL_T(a->region), SQL_T(a->request_json), SQL_T(store_step_state_name(a->state)),
                     SQL_T(a->job_state), SQL_T(a->error), SQL_T(a->failure_cause), TIME_P(a->launched_at),
                     TIME_P(a->running_at), TIME_P(a->ended_at), SQL_I(a->updated_at)};
#define ATT_SET                                                                                                   \
    " ON CONFLICT (run_id, step, attempt) DO UPDATE SET job_name = excluded.job_name, job_id = excluded.job_id," \
    " project = excluded.project, region = excluded.region, request = excluded.request, state = excluded.state,"  \
    " job_state = excluded.job_state, error = excluded.error, failure_cause = excluded.failure_cause,"            \
    " launched_at = excluded.launched_at, running_at = excluded.running_at, ended_at = excluded.ended_at,"        \
    " updated_at = excluded.updated_at"
    sql_result r;
    int rc = sql_exec(s,
                      "INSERT INTO attempts(" ATT_COLS ") VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12,"
                      " ?13, ?14, ?15, ?16)" ATT_SET,
                      "INSERT INTO attempts(" ATT_COLS ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12,"
                      " $13, $14, $15, $16)" ATT_SET,
                      p, (int)(sizeof p / sizeof p[0]), &r, "attempt_put", err);
    sql_result_free(&r);
    return rc;
}

int store_attempt_get(store *s, const char *run_id, const char *step, int attempt, store_attempt *out, char **err)
{
    if (out != NULL) memset(out, 0, sizeof *out);
    if (s == NULL || run_id == NULL || step == NULL || out == NULL)
        return store_fail(err, STORE_INVALID, "attempt_get: run_id and step are required");
    if (store_firestore_native(s)) return fs_attempt_get(s, run_id, step, attempt, out, err);
    if (!has_sql(s)) return store_fail(err, STORE_NOTFOUND, "attempt_get: this backend keeps no attempts");
    sql_param p[] = {SQL_T(run_id), SQL_T(step), SQL_I(attempt)};
    sql_result r;
    int rc = sql_exec(s, "SELECT " ATT_COLS " FROM attempts WHERE run_id = ?1 AND step = ?2 AND attempt = ?3",
                      "SELECT " ATT_COLS " FROM attempts WHERE run_id = $1 AND step = $2 AND attempt = $3", p, 3, &r,
                      "attempt_get", err);
    if (rc == STORE_OK && r.rows == 0)
        rc = store_fail(err, STORE_NOTFOUND, "attempt_get: run %s has no attempt %d of step %s", run_id, attempt, step);
    if (rc == STORE_OK) from_row(&r, 0, out);
    sql_result_free(&r);
    return rc;
}

int store_attempt_list_run(store *s, const char *run_id, store_attempt_list *out, char **err)
{
    if (out != NULL) memset(out, 0, sizeof *out);
    if (s == NULL || run_id == NULL || out == NULL) return store_fail(err, STORE_INVALID, "attempt_list_run: run_id is required");
    if (store_firestore_native(s)) return fs_attempt_list_run(s, run_id, out, err);
    if (!has_sql(s)) return STORE_OK;
    sql_param p[] = {SQL_T(run_id)};
    sql_result r;
    int rc = sql_exec(s, "SELECT " ATT_COLS " FROM attempts WHERE run_id = ?1 ORDER BY step, attempt",
                      "SELECT " ATT_COLS " FROM attempts WHERE run_id = $1 ORDER BY step, attempt", p, 1, &r,
                      "attempt_list_run", err);
    if (rc == STORE_OK && r.rows > 0) {
        out->items = xcalloc(r.rows, sizeof *out->items);
        for (size_t i = 0; rc == STORE_OK && i < r.rows; i++) from_row(&r, i, &out->items[i]);
        if (rc == STORE_OK) out->count = r.rows;
    }
    sql_result_free(&r);
    return rc;
}

static int same_str(const char *a, const char *b) { return a == b || (a != NULL && b != NULL && strcmp(a, b) == 0); }

/* 1 when the rows say the same (updated_at aside): the copy is then not written again. */
static int same_attempt(const store_attempt *a, const store_attempt *b)
{
    return same_str(a->job_name, b->job_name) && same_str(a->job_id, b->job_id) && same_str(a->project, b->project) &&
           same_str(a->region, b->region) && same_str(a->request_json, b->request_json) && a->state == b->state &&
           same_str(a->job_state, b->job_state) && same_str(a->error, b->error) &&
           same_str(a->failure_cause, b->failure_cause) && a->launched_at == b->launched_at &&
           a->running_at == b->running_at && a->ended_at == b->ended_at;
}

static const char *first_set(const char *a, const char *b) { return a != NULL ? a : b; }

int store_attempt_capture(store *s, const char *run_id, const char *step, char **err)
{
    if (s == NULL || run_id == NULL || step == NULL)
        return store_fail(err, STORE_INVALID, "attempt_capture: run_id and step are required");
    if (!kept(s)) return STORE_OK;
    store_step st = {0};
    store_attempt old = {0};
    int rc = store_step_get(s, run_id, step, &st, err);
    if (rc != STORE_OK || st.job_name == NULL) goto done; /* nothing launched yet: no attempt to keep */
    char *gerr = NULL;
    rc = store_attempt_get(s, run_id, step, st.attempt, &old, &gerr);
    int had = rc == STORE_OK;
    if (rc == STORE_NOTFOUND) rc = STORE_OK;
    if (rc != STORE_OK) {
        if (err != NULL) *err = gerr;
        else free(gerr);
        goto done;
    }
    free(gerr);
    int64_t now = store_now(s);
    int step_over = store_step_state_terminal(st.state);
    int back = st.state == STORE_STEP_PENDING || st.state == STORE_STEP_WAITING;
    /* Borrowed pointers into st and old: both outlive the write. */
    store_attempt a = {
        .run_id = (char *)run_id, .step = (char *)step, .attempt = st.attempt, .job_name = st.job_name,
        .job_id = (char *)first_set(st.job_id, old.job_id),
        .project = st.project, .region = st.region, .request_json = st.request_json, .state = st.state,
        .job_state = (char *)first_set(st.job_state, old.job_state), .error = old.error,
        .failure_cause = (char *)first_set(st.failure_cause, old.failure_cause), .launched_at = st.started_at,
        .running_at = old.running_at ? old.running_at : st.running_at, .updated_at = now,
    };
    if (st.running_at != 0 && st.running_at < a.running_at) a.running_at = st.running_at;
    if (back) { /* the attempt is over; the step waits for the next one (or for nothing, after a redrive) */
        /* without a row (an attempt launched before schema 9), its last job state says how it ended */
        int done = js_name_is(st.job_state, JS_DONE);
        a.state = had && store_step_state_terminal(old.state) ? old.state
                  : !had && done                              ? STORE_STEP_SUCCEEDED
                                                              : STORE_STEP_FAILED;
        a.ended_at = old.ended_at ? old.ended_at : now;
    } else if (step_over) {
        a.error = (char *)first_set(st.error, old.error);
        a.ended_at = st.finished_at ? st.finished_at : now;
    } /* in flight, the step's error is a note about a failing call, not the attempt's failure: not copied */
    if (!had || !same_attempt(&a, &old)) rc = attempt_put(s, &a, err);
done:
    store_step_free(&st);
    store_attempt_free(&old);
    return rc;
}

int store_attempt_set_running(store *s, const char *run_id, const char *step, int attempt, int64_t at, char **err)
{
    if (s == NULL || run_id == NULL || step == NULL)
        return store_fail(err, STORE_INVALID, "attempt_set_running: run_id and step are required");
    if (at == 0) at = store_now(s);
    if (store_firestore_native(s)) return fs_attempt_set_running(s, run_id, step, attempt, at, err);
    if (!has_sql(s)) return STORE_OK;
    /* The earliest time any source gave is kept: an event may arrive after a check saw the job running. */
    sql_param p[] = {SQL_T(run_id), SQL_T(step), SQL_I(attempt), SQL_I(at), SQL_I(store_now(s))};
    sql_result r;
    int rc = sql_exec(s,
                      "UPDATE attempts SET running_at = ?4, updated_at = ?5 WHERE run_id = ?1 AND step = ?2"
                      " AND attempt = ?3 AND (running_at IS NULL OR running_at > ?4)",
                      "UPDATE attempts SET running_at = $4, updated_at = $5 WHERE run_id = $1 AND step = $2"
                      " AND attempt = $3 AND (running_at IS NULL OR running_at > $4)",
                      p, 5, &r, "attempt_set_running", err);
    int64_t changed = r.changes;
    sql_result_free(&r);
    if (rc == STORE_OK && changed == 0) {
        store_attempt a = {0};
        rc = store_attempt_get(s, run_id, step, attempt, &a, err); /* NOTFOUND, or it already had an earlier time */
        store_attempt_free(&a);
    }
    return rc;
}

int store_attempt_end(store *s, const char *run_id, const char *step, int attempt, store_step_state state,
                      const char *error, char **err)
{
    if (s == NULL || run_id == NULL || step == NULL || !store_step_state_terminal(state))
        return store_fail(err, STORE_INVALID, "attempt_end: run_id, step and a terminal state are required");
    if (store_firestore_native(s)) return fs_attempt_end(s, run_id, step, attempt, state, error, err);
    if (!has_sql(s)) return STORE_OK;
    int64_t now = store_now(s);
    sql_param p[] = {SQL_T(run_id), SQL_T(step), SQL_I(attempt), SQL_T(store_step_state_name(state)), SQL_T(error),
                     SQL_I(now)};
    sql_result r;
    int rc = sql_exec(s,
                      "UPDATE attempts SET state = ?4, error = COALESCE(?5, error), ended_at = COALESCE(ended_at, ?6),"
                      " updated_at = ?6 WHERE run_id = ?1 AND step = ?2 AND attempt = ?3",
                      "UPDATE attempts SET state = $4, error = COALESCE($5, error), ended_at = COALESCE(ended_at, $6),"
                      " updated_at = $6 WHERE run_id = $1 AND step = $2 AND attempt = $3",
                      p, 6, &r, "attempt_end", err);
    if (rc == STORE_OK && r.changes == 0)
        rc = store_fail(err, STORE_NOTFOUND, "attempt_end: run %s has no attempt %d of step %s", run_id, attempt, step);
    sql_result_free(&r);
    return rc;
}

int store_attempt_set_cause(store *s, const char *run_id, const char *step, int attempt, const char *cause,
                            char **err)
{
    if (s == NULL || run_id == NULL || step == NULL)
        return store_fail(err, STORE_INVALID, "attempt_set_cause: run_id and step are required");
    if (store_firestore_native(s)) return fs_attempt_set_cause(s, run_id, step, attempt, cause, err);
    if (!has_sql(s)) return STORE_OK;
    sql_param p[] = {SQL_T(run_id), SQL_T(step), SQL_I(attempt), SQL_T(cause), SQL_I(store_now(s))};
    sql_result r;
    int rc = sql_exec(s,
                      "UPDATE attempts SET failure_cause = ?4, updated_at = ?5 WHERE run_id = ?1 AND step = ?2"
                      " AND attempt = ?3",
                      "UPDATE attempts SET failure_cause = $4, updated_at = $5 WHERE run_id = $1 AND step = $2"
                      " AND attempt = $3",
                      p, 5, &r, "attempt_set_cause", err);
    if (rc == STORE_OK && r.changes == 0)
        rc = store_fail(err, STORE_NOTFOUND, "attempt_set_cause: run %s has no attempt %d of step %s", run_id, attempt,
                        step);
    sql_result_free(&r);
    return rc;
}

void store_attempt_free(store_attempt *a)
{
    if (a == NULL) return;
    free(a->run_id);
    free(a->step);
    free(a->job_name);
    free(a->job_id);
    free(a->project);
    free(a->region);
    free(a->request_json);
    free(a->job_state);
    free(a->error);
    free(a->failure_cause);
    memset(a, 0, sizeof *a);
}

void store_attempt_list_free(store_attempt_list *l)
{
    if (l == NULL) return;
    for (size_t i = 0; i < l->count; i++) store_attempt_free(&l->items[i]);
    free(l->items);
    memset(l, 0, sizeof *l);
}
