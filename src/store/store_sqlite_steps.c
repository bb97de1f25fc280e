/* store_sqlite_steps: steps and the event inbox in the SQLite backend (struct store_ops entries,
 * store_backend.h): insert and read steps, their compare-and-set updates, the due queue; record, fetch, mark and
 * prune events (deduplicated by message id and by job and state).
 * Uses: store_sqlite_internal.h. Must not: validate arguments (store.c does), or touch runs (store_sqlite_runs.c). */
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mem.h"
#include "store_sqlite_internal.h"

/* ---- steps ---- */

int sq_step_insert(store *s, const store_step *p, char **err)
{
    sq_store *q = sq(s);
    sqlite3_stmt *st = NULL;
    int rc = sq_stmt(q, Q_STEP_INSERT, &st, err);
    if (rc != STORE_OK) return rc;
    int64_t now = store_now(s);
    int brc = BIND(sq_bind_text(st, 1, p->run_id), sq_bind_text(st, 2, p->name),
                   sq_bind_text(st, 3, store_step_state_name(p->state)), sqlite3_bind_int(st, 4, p->attempt ? p->attempt : 1),
                   sq_bind_text(st, 5, p->job_name), sq_bind_text(st, 6, p->job_id), sq_bind_text(st, 7, p->project),
                   sq_bind_text(st, 8, p->region), sq_bind_text(st, 9, p->request_json), sq_bind_text(st, 10, p->job_state),
                   sq_bind_text(st, 11, p->result_json), sq_bind_text(st, 12, p->error), sq_bind_time(st, 13, p->started_at),
                   sq_bind_time(st, 14, p->finished_at), sqlite3_bind_int64(st, 15, p->next_check_at),
                   sq_bind_time(st, 16, p->deadline_at), sqlite3_bind_int64(st, 17, p->updated_at ? p->updated_at : now));
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

int sq_step_get(store *s, const char *run_id, const char *name, store_step *out, char **err)
{
    sq_store *q = sq(s);
    sqlite3_stmt *st = NULL;
    int rc = sq_stmt(q, Q_STEP_GET, &st, err);
    if (rc != STORE_OK) return rc;
    sq_bind_text(st, 1, run_id);
    sq_bind_text(st, 2, name);
    return sq_one(q, st, sq_rd_step, out, "step_get", err);
}

int sq_step_list_run(store *s, const char *run_id, store_step_list *out, char **err)
{
    sq_store *q = sq(s);
    sqlite3_stmt *st = NULL;
    int rc = sq_stmt(q, Q_STEP_LIST, &st, err);
    if (rc != STORE_OK) return rc;
    sq_bind_text(st, 1, run_id);
    void *items = NULL;
    rc = sq_many(q, st, sq_rd_step, sizeof(store_step), SIZE_MAX, &items, &out->count, "step_list", err);
    out->items = items;
    return rc;
}

int sq_step_find(store *s, store_step_key key, const char *value, store_step *out, char **err)
{
    sq_store *q = sq(s);
    sqlite3_stmt *st = NULL;
    int rc = sq_stmt(q, key == STORE_KEY_JOB_NAME ? Q_STEP_BY_NAME : Q_STEP_BY_ID, &st, err);
    if (rc != STORE_OK) return rc;
    sq_bind_text(st, 1, value);
    return sq_one(q, st, sq_rd_step, out, key == STORE_KEY_JOB_NAME ? "step by job name" : "step by job id", err);
}

/* After a compare-and-set UPDATE changed nothing: NOTFOUND or CONFLICT with the step's actual state. */
static int sq_step_diag(sq_store *q, const char *run_id, const char *name, const char *what, char **err)
{
    sqlite3_stmt *st = NULL;
    int rc = sq_stmt(q, Q_STEP_STATE, &st, err);
    if (rc != STORE_OK) return rc;
    sq_bind_text(st, 1, run_id);
    sq_bind_text(st, 2, name);
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

int sq_step_record_intent(store *s, const char *run_id, const char *name, int expected_state,
                          int expected_attempt, const store_intent *in, char **err)
{
    sq_store *q = sq(s);
    sqlite3_stmt *st = NULL;
    int rc = sq_stmt(q, Q_STEP_INTENT, &st, err);
    if (rc != STORE_OK) return rc;
    int64_t now = store_now(s);
    int brc = BIND(sq_bind_text(st, 1, run_id), sq_bind_text(st, 2, name),
                   expected_state == STORE_STEP_ANY
                       ? sqlite3_bind_null(st, 3)
                       : sq_bind_text(st, 3, store_step_state_name((store_step_state)expected_state)),
                   sq_bind_opt_int(st, 4, expected_attempt, STORE_ATTEMPT_ANY), sqlite3_bind_int(st, 5, in->attempt),
                   sq_bind_text(st, 6, in->job_name), sq_bind_text(st, 7, in->project), sq_bind_text(st, 8, in->region),
                   sq_bind_text(st, 9, in->request_json), sqlite3_bind_int64(st, 10, now),
                   sqlite3_bind_int64(st, 11, in->next_check_at ? in->next_check_at : now),
                   sq_bind_time(st, 12, in->deadline_at));
    return sq_step_cas(q, st, brc, run_id, name, "record_intent", err);
}

int sq_step_set_job(store *s, const char *run_id, const char *name, int attempt, const char *job_id,
                    const char *job_state, int64_t next_check_at, char **err)
{
    sq_store *q = sq(s);
    sqlite3_stmt *st = NULL;
    int rc = sq_stmt(q, Q_STEP_SET_JOB, &st, err);
    if (rc != STORE_OK) return rc;
    int brc = BIND(sq_bind_text(st, 1, run_id), sq_bind_text(st, 2, name), sqlite3_bind_int(st, 3, attempt),
                   sq_bind_text(st, 4, job_id), sq_bind_text(st, 5, job_state), sqlite3_bind_int64(st, 6, next_check_at),
                   sqlite3_bind_int64(st, 7, store_now(s)));
    return sq_step_cas(q, st, brc, run_id, name, "set_job", err);
}

int sq_step_set_state(store *s, const char *run_id, const char *name, int expected_state,
                      int expected_attempt, store_step_state next, char **err)
{
    sq_store *q = sq(s);
    sqlite3_stmt *st = NULL;
    int rc = sq_stmt(q, Q_STEP_SET_STATE, &st, err);
    if (rc != STORE_OK) return rc;
    int brc = BIND(sq_bind_text(st, 1, run_id), sq_bind_text(st, 2, name),
                   expected_state == STORE_STEP_ANY
                       ? sqlite3_bind_null(st, 3)
                       : sq_bind_text(st, 3, store_step_state_name((store_step_state)expected_state)),
                   sq_bind_opt_int(st, 4, expected_attempt, STORE_ATTEMPT_ANY),
                   sq_bind_text(st, 5, store_step_state_name(next)), sqlite3_bind_int64(st, 6, store_now(s)),
                   sqlite3_bind_int(st, 7, store_step_state_terminal(next)));
    return sq_step_cas(q, st, brc, run_id, name, "step_set_state", err);
}

int sq_step_finish(store *s, const char *run_id, const char *name, int attempt, store_step_state final,
                   const char *job_state, const char *result_json, const char *error, char **err)
{
    sq_store *q = sq(s);
    sqlite3_stmt *st = NULL;
    int rc = sq_stmt(q, Q_STEP_FINISH, &st, err);
    if (rc != STORE_OK) return rc;
    int brc = BIND(sq_bind_text(st, 1, run_id), sq_bind_text(st, 2, name),
                   sq_bind_opt_int(st, 3, attempt, STORE_ATTEMPT_ANY), sq_bind_text(st, 4, store_step_state_name(final)),
                   sq_bind_text(st, 5, job_state), sq_bind_text(st, 6, result_json), sq_bind_text(st, 7, error),
                   sqlite3_bind_int64(st, 8, store_now(s)));
    return sq_step_cas(q, st, brc, run_id, name, "step_finish", err);
}

int sq_step_reclaim(store *s, const char *run_id, const char *name, int attempt, int64_t claimed,
                    int64_t next_check_at, int check_failures, char **err)
{
    sq_store *q = sq(s);
    sqlite3_stmt *st = NULL;
    int rc = sq_stmt(q, Q_STEP_RECLAIM, &st, err);
    if (rc != STORE_OK) return rc;
    int brc = BIND(sq_bind_text(st, 1, run_id), sq_bind_text(st, 2, name), sqlite3_bind_int(st, 3, attempt),
                   sqlite3_bind_int64(st, 4, claimed), sqlite3_bind_int64(st, 5, next_check_at),
                   sqlite3_bind_int(st, 6, check_failures), sqlite3_bind_int64(st, 7, store_now(s)));
    return sq_step_cas(q, st, brc, run_id, name, "step_reclaim", err);
}

int sq_step_set_check(store *s, const char *run_id, const char *name, int attempt, int64_t next_check_at,
                      int check_failures, const char *job_state, char **err)
{
    sq_store *q = sq(s);
    sqlite3_stmt *st = NULL;
    int rc = sq_stmt(q, Q_STEP_SET_CHECK, &st, err);
    if (rc != STORE_OK) return rc;
    int brc = BIND(sq_bind_text(st, 1, run_id), sq_bind_text(st, 2, name), sqlite3_bind_int(st, 3, attempt),
                   sqlite3_bind_int64(st, 4, next_check_at), sqlite3_bind_int(st, 5, check_failures),
                   sq_bind_text(st, 6, job_state), sqlite3_bind_int64(st, 7, store_now(s)));
    return sq_step_cas(q, st, brc, run_id, name, "set_check", err);
}

int sq_step_set_hint(store *s, const char *run_id, const char *name, int attempt, int64_t hint_at,
                     int64_t next_check_at, char **err)
{
    sq_store *q = sq(s);
    sqlite3_stmt *st = NULL;
    int rc = sq_stmt(q, Q_STEP_SET_HINT, &st, err);
    if (rc != STORE_OK) return rc;
    int brc = BIND(sq_bind_text(st, 1, run_id), sq_bind_text(st, 2, name), sqlite3_bind_int(st, 3, attempt),
                   sqlite3_bind_int64(st, 4, hint_at), sqlite3_bind_int64(st, 5, next_check_at),
                   sqlite3_bind_int64(st, 6, store_now(s)));
    return sq_step_cas(q, st, brc, run_id, name, "set_hint", err);
}

int sq_step_set_note(store *s, const char *run_id, const char *name, int attempt, const char *note, char **err)
{
    sq_store *q = sq(s);
    sqlite3_stmt *st = NULL;
    int rc = sq_stmt(q, Q_STEP_SET_NOTE, &st, err);
    if (rc != STORE_OK) return rc;
    int brc = BIND(sq_bind_text(st, 1, run_id), sq_bind_text(st, 2, name), sqlite3_bind_int(st, 3, attempt),
                   sq_bind_text(st, 4, note));
    return sq_step_cas(q, st, brc, run_id, name, "set_note", err);
}

int sq_step_set_cause(store *s, const char *run_id, const char *name, int attempt, const char *cause,
                      char **err)
{
    sq_store *q = sq(s);
    sqlite3_stmt *st = NULL;
    int rc = sq_stmt(q, Q_STEP_SET_CAUSE, &st, err);
    if (rc != STORE_OK) return rc;
    int brc = BIND(sq_bind_text(st, 1, run_id), sq_bind_text(st, 2, name), sqlite3_bind_int(st, 3, attempt),
                   sq_bind_text(st, 4, cause));
    return sq_step_cas(q, st, brc, run_id, name, "set_cause", err);
}

int sq_step_next_due(store *s, int64_t *at, char **err)
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

int sq_step_due(store *s, int64_t now, int limit, store_step_list *out, char **err)
{
    sq_store *q = sq(s);
    sqlite3_stmt *st = NULL;
    int rc = sq_stmt(q, Q_STEP_DUE, &st, err);
    if (rc != STORE_OK) return rc;
    sqlite3_bind_int64(st, 1, now);
    sqlite3_bind_int(st, 2, limit);
    void *items = NULL;
    rc = sq_many(q, st, sq_rd_step, sizeof(store_step), (size_t)limit, &items, &out->count, "step_due", err);
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
    sq_bind_text(st, 1, ev->message_id);
    sq_bind_text(st, 2, ev->job_id);
    sq_bind_text(st, 3, ev->state);
    int step = sqlite3_step(st);
    *found = step == SQLITE_ROW ? sqlite3_column_int64(st, 0) : 0;
    if (step != SQLITE_ROW && step != SQLITE_DONE) rc = sq_fail(q, err, step, "inbox_put");
    sq_done(st);
    return rc;
}

/* Duplicates are common (push, Eventarc and the poller report the same state), so they are answered by
 * a read that takes no write lock; the INSERT ... ON CONFLICT DO NOTHING still settles races between
 * handles atomically. */
int sq_inbox_put(store *s, const store_event *ev, int64_t *id, char **err)
{
    sq_store *q = sq(s);
    sqlite3_stmt *st = NULL;
    int64_t first = 0;
    int changes = 0, rc = sq_inbox_find(q, ev, &first, err);
    if (rc != STORE_OK) return rc;
    if (first != 0) return store_inbox_duplicate(ev, first, id, err);
    rc = sq_stmt(q, Q_INBOX_PUT, &st, err);
    if (rc != STORE_OK) return rc;
    int brc = BIND(sq_bind_text(st, 1, ev->message_id), sq_bind_text(st, 2, store_event_source_name(ev->source)),
                   sq_bind_text(st, 3, ev->job_id), sq_bind_text(st, 4, ev->job_name), sq_bind_text(st, 5, ev->state),
                   sq_bind_text(st, 6, ev->payload_json),
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

int sq_inbox_fetch(store *s, int limit, store_event_list *out, char **err)
{
    sq_store *q = sq(s);
    sqlite3_stmt *st = NULL;
    int rc = sq_stmt(q, Q_INBOX_FETCH, &st, err);
    if (rc != STORE_OK) return rc;
    sqlite3_bind_int(st, 1, limit);
    void *items = NULL;
    rc = sq_many(q, st, sq_rd_event, sizeof(store_event), (size_t)limit, &items, &out->count, "inbox_fetch", err);
    out->items = items;
    return rc;
}

int sq_inbox_mark_processed(store *s, int64_t id, int64_t processed_at, char **err)
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

int sq_inbox_prune(store *s, int64_t before, int64_t *deleted, char **err)
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
