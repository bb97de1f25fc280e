/* store_postgres_steps: steps and the event inbox in the PostgreSQL backend (struct store_ops entries,
 * store_backend.h): insert and read steps, their compare-and-set updates, the due queue; record, fetch, mark and
 * prune events (deduplicated by message id and by job and state).
 * Uses: store_postgres_internal.h. Must not: validate arguments (store.c does), or touch runs
 * (store_postgres_runs.c). */
#include <libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mem.h"
#include "store_postgres_internal.h"

/* ---- steps ---- */

int pg_step_insert(store *s, const store_step *st, char **err)
{
    pg_store *q = pg(s);
    int64_t now = store_now(s);
    pg_params p = {.n = 0};
    pg_p_text(&p, st->run_id);
    pg_p_text(&p, st->name);
    pg_p_text(&p, store_step_state_name(st->state));
    pg_p_i64(&p, st->attempt ? st->attempt : 1);
    pg_p_text(&p, st->job_name);
    pg_p_text(&p, st->job_id);
    pg_p_text(&p, st->project);
    pg_p_text(&p, st->region);
    pg_p_text(&p, st->request_json);
    pg_p_text(&p, st->job_state);
    pg_p_text(&p, st->result_json);
    pg_p_text(&p, st->error);
    pg_p_time(&p, st->started_at);
    pg_p_time(&p, st->finished_at);
    pg_p_i64(&p, st->next_check_at);
    pg_p_time(&p, st->deadline_at);
    pg_p_i64(&p, st->updated_at ? st->updated_at : now);
    PGresult *res = NULL;
    char *msg = NULL;
    int rc = pg_run(q, Q_STEP_INSERT, &p, &res, "step_insert", &msg);
    PQclear(res);
    if (rc == STORE_EXISTS && pg_msg_names(msg, "steps_run_name"))
        rc = store_fail(err, STORE_EXISTS, "run '%s' already has a step '%s'", st->run_id, st->name);
    else if (rc == STORE_EXISTS)
        rc = store_fail(err, STORE_EXISTS, "step '%s/%s': job name or job id is already used by another step",
                        st->run_id, st->name);
    else if (rc == STORE_INVALID && pg_msg_names(msg, "steps_run_id_fkey"))
        rc = store_fail(err, STORE_INVALID, "step '%s': no run with id '%s'", st->name, st->run_id);
    else if (rc != STORE_OK && err != NULL) {
        *err = msg;
        msg = NULL;
    }
    free(msg);
    return rc;
}

int pg_step_get(store *s, const char *run_id, const char *name, store_step *out, char **err)
{
    pg_params p = {.n = 0};
    pg_p_text(&p, run_id);
    pg_p_text(&p, name);
    return pg_one(pg(s), Q_STEP_GET, &p, pg_read_step, out, "step_get", err);
}

int pg_step_list_run(store *s, const char *run_id, store_step_list *out, char **err)
{
    pg_params p = {.n = 0};
    pg_p_text(&p, run_id);
    void *items = NULL;
    int rc = pg_many(pg(s), Q_STEP_LIST, &p, pg_read_step, sizeof(store_step), &items, &out->count, "step_list", err);
    out->items = items;
    return rc;
}

int pg_step_find(store *s, store_step_key key, const char *value, store_step *out, char **err)
{
    pg_params p = {.n = 0};
    pg_p_text(&p, value);
    return pg_one(pg(s), key == STORE_KEY_JOB_NAME ? Q_STEP_BY_NAME : Q_STEP_BY_ID, &p, pg_read_step, out,
                  key == STORE_KEY_JOB_NAME ? "step by job name" : "step by job id", err);
}

/* After a compare-and-set UPDATE changed nothing: NOTFOUND or CONFLICT with the step's actual state. */
static int pg_step_diag(pg_store *q, const char *run_id, const char *name, const char *what, char **err)
{
    pg_params p = {.n = 0};
    pg_p_text(&p, run_id);
    pg_p_text(&p, name);
    PGresult *res = NULL;
    int rc = pg_run(q, Q_STEP_STATE, &p, &res, what, err);
    if (rc != STORE_OK) return rc;
    if (PQntuples(res) == 1)
        rc = store_fail(err, STORE_CONFLICT, "%s: step '%s/%s' is %s at attempt %s", what, run_id, name,
                        PQgetvalue(res, 0, 0), PQgetvalue(res, 0, 1));
    else rc = store_fail(err, STORE_NOTFOUND, "%s: no step '%s/%s'", what, run_id, name);
    PQclear(res);
    return rc;
}

/* Runs a compare-and-set UPDATE; maps a taken unique key and "nothing changed". */
static int pg_step_cas(pg_store *q, int id, const pg_params *p, const char *run_id, const char *name,
                       const char *what, char **err)
{
    PGresult *res = NULL;
    char *msg = NULL;
    int rc = pg_run(q, id, p, &res, what, &msg);
    if (rc == STORE_EXISTS) {
        rc = store_fail(err, STORE_EXISTS, "%s: step '%s/%s': job name or job id is already used by another step",
                        what, run_id, name);
    } else if (rc != STORE_OK) {
        if (err != NULL) {
            *err = msg;
            msg = NULL;
        }
    } else if (pg_changes(res) == 0) {
        rc = pg_step_diag(q, run_id, name, what, err);
    }
    free(msg);
    PQclear(res);
    return rc;
}

int pg_step_record_intent(store *s, const char *run_id, const char *name, int expected_state,
                          int expected_attempt, const store_intent *in, char **err)
{
    int64_t now = store_now(s);
    pg_params p = {.n = 0};
    pg_p_text(&p, run_id);
    pg_p_text(&p, name);
    pg_p_text(&p, expected_state == STORE_STEP_ANY ? NULL : store_step_state_name((store_step_state)expected_state));
    pg_p_opt_int(&p, expected_attempt, STORE_ATTEMPT_ANY);
    pg_p_i64(&p, in->attempt);
    pg_p_text(&p, in->job_name);
    pg_p_text(&p, in->project);
    pg_p_text(&p, in->region);
    pg_p_text(&p, in->request_json);
    pg_p_i64(&p, now);
    pg_p_i64(&p, in->next_check_at ? in->next_check_at : now);
    pg_p_time(&p, in->deadline_at);
    return pg_step_cas(pg(s), Q_STEP_INTENT, &p, run_id, name, "record_intent", err);
}

int pg_step_set_job(store *s, const char *run_id, const char *name, int attempt, const char *job_id,
                    const char *job_state, int64_t next_check_at, char **err)
{
    pg_params p = {.n = 0};
    pg_p_text(&p, run_id);
    pg_p_text(&p, name);
    pg_p_i64(&p, attempt);
    pg_p_text(&p, job_id);
    pg_p_text(&p, job_state);
    pg_p_i64(&p, next_check_at);
    pg_p_i64(&p, store_now(s));
    return pg_step_cas(pg(s), Q_STEP_SET_JOB, &p, run_id, name, "set_job", err);
}

int pg_step_set_state(store *s, const char *run_id, const char *name, int expected_state,
                      int expected_attempt, store_step_state next, char **err)
{
    pg_params p = {.n = 0};
    pg_p_text(&p, run_id);
    pg_p_text(&p, name);
    pg_p_text(&p, expected_state == STORE_STEP_ANY ? NULL : store_step_state_name((store_step_state)expected_state));
    pg_p_opt_int(&p, expected_attempt, STORE_ATTEMPT_ANY);
    pg_p_text(&p, store_step_state_name(next));
    pg_p_i64(&p, store_now(s));
    pg_p_bool(&p, store_step_state_terminal(next));
    return pg_step_cas(pg(s), Q_STEP_SET_STATE, &p, run_id, name, "step_set_state", err);
}

int pg_step_finish(store *s, const char *run_id, const char *name, int attempt, store_step_state final,
                   const char *job_state, const char *result_json, const char *error, char **err)
{
    pg_params p = {.n = 0};
    pg_p_text(&p, run_id);
    pg_p_text(&p, name);
    pg_p_opt_int(&p, attempt, STORE_ATTEMPT_ANY);
    pg_p_text(&p, store_step_state_name(final));
    pg_p_text(&p, job_state);
    pg_p_text(&p, result_json);
    pg_p_text(&p, error);
    pg_p_i64(&p, store_now(s));
    return pg_step_cas(pg(s), Q_STEP_FINISH, &p, run_id, name, "step_finish", err);
}

int pg_step_set_check(store *s, const char *run_id, const char *name, int attempt, int64_t next_check_at,
                      int check_failures, const char *job_state, char **err)
{
    pg_params p = {.n = 0};
    pg_p_text(&p, run_id);
    pg_p_text(&p, name);
    pg_p_i64(&p, attempt);
    pg_p_i64(&p, next_check_at);
    pg_p_i64(&p, check_failures);
    pg_p_text(&p, job_state);
    pg_p_i64(&p, store_now(s));
    return pg_step_cas(pg(s), Q_STEP_SET_CHECK, &p, run_id, name, "set_check", err);
}

int pg_step_reclaim(store *s, const char *run_id, const char *name, int attempt, int64_t claimed,
                    int64_t next_check_at, int check_failures, char **err)
{
    pg_params p = {.n = 0};
    pg_p_text(&p, run_id);
    pg_p_text(&p, name);
    pg_p_i64(&p, attempt);
    pg_p_i64(&p, claimed);
    pg_p_i64(&p, next_check_at);
    pg_p_i64(&p, check_failures);
    pg_p_i64(&p, store_now(s));
    return pg_step_cas(pg(s), Q_STEP_RECLAIM, &p, run_id, name, "step_reclaim", err);
}

int pg_step_set_hint(store *s, const char *run_id, const char *name, int attempt, int64_t hint_at,
                     int64_t next_check_at, char **err)
{
    pg_params p = {.n = 0};
    pg_p_text(&p, run_id);
    pg_p_text(&p, name);
    pg_p_i64(&p, attempt);
    pg_p_i64(&p, hint_at);
    pg_p_i64(&p, next_check_at);
    pg_p_i64(&p, store_now(s));
    return pg_step_cas(pg(s), Q_STEP_SET_HINT, &p, run_id, name, "set_hint", err);
}

int pg_step_set_cause(store *s, const char *run_id, const char *name, int attempt, const char *cause,
                      char **err)
{
    pg_params p = {.n = 0};
    pg_p_text(&p, run_id);
    pg_p_text(&p, name);
    pg_p_i64(&p, attempt);
    pg_p_text(&p, cause);
    return pg_step_cas(pg(s), Q_STEP_SET_CAUSE, &p, run_id, name, "step_set_cause", err);
}

int pg_step_set_note(store *s, const char *run_id, const char *name, int attempt, const char *note,
                     char **err)
{
    pg_params p = {.n = 0};
    pg_p_text(&p, run_id);
    pg_p_text(&p, name);
    pg_p_i64(&p, attempt);
    pg_p_text(&p, note);
    return pg_step_cas(pg(s), Q_STEP_SET_NOTE, &p, run_id, name, "step_set_note", err);
}

int pg_step_next_due(store *s, int64_t *at, char **err)
{
    PGresult *res = NULL;
    int rc = pg_run(pg(s), Q_STEP_NEXT_DUE, NULL, &res, "step_next_due", err);
    if (rc != STORE_OK) return rc;
    *at = PQntuples(res) == 0 || PQgetisnull(res, 0, 0) ? INT64_MAX : pg_col_i64(res, 0, 0);
    PQclear(res);
    return STORE_OK;
}

int pg_step_due(store *s, int64_t now, int limit, store_step_list *out, char **err)
{
    pg_params p = {.n = 0};
    pg_p_i64(&p, now);
    pg_p_i64(&p, limit);
    void *items = NULL;
    int rc = pg_many(pg(s), pg(s)->tx ? Q_STEP_DUE_LOCK : Q_STEP_DUE, &p, pg_read_step, sizeof(store_step), &items, &out->count, "step_due", err);
    out->items = items;
    return rc;
}

/* ---- inbox ---- */

/* Looks an event up by either key: *found = id of the earlier event, or 0. */
static int pg_inbox_find(pg_store *q, const store_event *ev, int64_t *found, char **err)
{
    pg_params p = {.n = 0};
    pg_p_text(&p, ev->message_id);
    pg_p_text(&p, ev->job_id);
    pg_p_text(&p, ev->state);
    PGresult *res = NULL;
    int rc = pg_run(q, Q_INBOX_FIND, &p, &res, "inbox_put", err);
    if (rc != STORE_OK) return rc;
    *found = PQntuples(res) > 0 ? pg_col_i64(res, 0, 0) : 0;
    PQclear(res);
    return STORE_OK;
}

/* One round trip for a new event: INSERT ... ON CONFLICT DO NOTHING settles duplicates (and races between
 * handles) atomically; only a duplicate costs a second statement, to name the earlier event. */
int pg_inbox_put(store *s, const store_event *ev, int64_t *id, char **err)
{
    pg_store *q = pg(s);
    int64_t first = 0;
    int rc = STORE_OK;
    pg_params p = {.n = 0};
    pg_p_text(&p, ev->message_id);
    pg_p_text(&p, store_event_source_name(ev->source));
    pg_p_text(&p, ev->job_id);
    pg_p_text(&p, ev->job_name);
    pg_p_text(&p, ev->state);
    pg_p_text(&p, ev->payload_json);
    pg_p_i64(&p, ev->received_at ? ev->received_at : store_now(s));
    PGresult *res = NULL;
    rc = pg_run(q, Q_INBOX_PUT, &p, &res, "inbox_put", err);
    if (rc != STORE_OK) return rc;
    int inserted = PQntuples(res) == 1;
    if (inserted && id != NULL) *id = pg_col_i64(res, 0, 0);
    PQclear(res);
    if (inserted) pg_wake_engines(q);
    if (inserted) return STORE_OK;
    rc = pg_inbox_find(q, ev, &first, err);
    if (rc != STORE_OK) return rc;
    return store_inbox_duplicate(ev, first, id, err);
}

int pg_inbox_fetch(store *s, int limit, store_event_list *out, char **err)
{
    pg_params p = {.n = 0};
    pg_p_i64(&p, limit);
    void *items = NULL;
    int rc = pg_many(pg(s), pg(s)->tx ? Q_INBOX_FETCH_LOCK : Q_INBOX_FETCH, &p, pg_read_event, sizeof(store_event), &items, &out->count, "inbox_fetch",
                     err);
    out->items = items;
    return rc;
}

int pg_inbox_mark_processed(store *s, int64_t id, int64_t processed_at, char **err)
{
    pg_params p = {.n = 0};
    pg_p_i64(&p, id);
    pg_p_i64(&p, processed_at);
    PGresult *res = NULL;
    int rc = pg_run(pg(s), Q_INBOX_MARK, &p, &res, "inbox_mark_processed", err);
    if (rc != STORE_OK) return rc;
    if (pg_changes(res) == 0) rc = store_fail(err, STORE_NOTFOUND, "no event with id %lld", (long long)id);
    PQclear(res);
    return rc;
}

int pg_inbox_prune(store *s, int64_t before, int64_t *deleted, char **err)
{
    pg_params p = {.n = 0};
    pg_p_i64(&p, before);
    PGresult *res = NULL;
    int rc = pg_run(pg(s), Q_INBOX_PRUNE, &p, &res, "inbox_prune", err);
    if (rc != STORE_OK) return rc;
    if (deleted != NULL) *deleted = pg_changes(res);
    PQclear(res);
    return STORE_OK;
}
