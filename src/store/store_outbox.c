/* store_outbox: the notification outbox and the deadlines of the store (store.h), on both backends: each call
 * has its SQLite and its PostgreSQL statement side by side and runs on the handle's own connection, so it joins
 * the transaction the caller has open (an event is written with the transition it reports).
 * Uses: store_sql.h (one statement on either SQL backend), store_backend.h (store_now, store_fail), jansson; a
 * Firestore handle goes to store_firestore_outbox.c after the argument checks.
 * Must not: know what an event says or where it goes (notify.c does), or keep state between calls. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "mem.h"
#include "store_backend.h"
#include "store_firestore_outbox.h"
#include "store_sql.h"

/* ---- the outbox ---- */

static const char *const note_names[STORE_NOTE_STATE_COUNT] = {"pending", "delivered", "given_up"};

const char *store_note_state_name(store_note_state st)
{
    return st >= 0 && st < STORE_NOTE_STATE_COUNT ? note_names[st] : "?";
}

static store_note_state note_parse(const char *t)
{
    for (int i = 0; i < STORE_NOTE_STATE_COUNT; i++)
        if (t != NULL && strcmp(t, note_names[i]) == 0) return (store_note_state)i;
    return STORE_NOTE_PENDING;
}

#define NOTE_COLS "id, sink, run_id, type, event, state, attempts, last_error, created_at, next_attempt_at, updated_at, delivered_at"

static void notes_from(sql_result *r, store_note_list *out)
{
    out->items = xcalloc(r->rows + 1, sizeof *out->items);
    for (size_t i = 0; i < r->rows; i++) {
        store_note *n = &out->items[i];
        n->id = sql_take(r, i, 0);
        n->sink = sql_take(r, i, 1);
        n->run_id = sql_take(r, i, 2);
        n->type = sql_take(r, i, 3);
        n->event_json = sql_take(r, i, 4);
        n->state = note_parse(sql_cell(r, i, 5));
        n->attempts = (int)sql_int(r, i, 6);
        n->last_error = sql_take(r, i, 7);
        n->created_at = sql_int(r, i, 8);
        n->next_attempt_at = sql_int(r, i, 9);
        n->updated_at = sql_int(r, i, 10);
        n->delivered_at = sql_int(r, i, 11);
    }
    out->count = r->rows;
}

int store_outbox_put(store *s, const store_note *n, char **err)
{
    if (s == NULL || n == NULL || n->id == NULL || n->sink == NULL || n->run_id == NULL || n->type == NULL ||
        n->event_json == NULL)
        return store_fail(err, STORE_INVALID, "outbox_put: id, sink, run_id, type and event are required");
    json_t *j = json_loads(n->event_json, 0, NULL);
    int is_obj = json_is_object(j);
    json_decref(j);
    if (!is_obj) return store_fail(err, STORE_INVALID, "outbox_put: the event is not a JSON object");
    if (store_firestore_native(s)) return fs_outbox_put(s, n, err);
    int64_t now = store_now(s);
    sql_param p[] = {SQL_T(n->id), SQL_T(n->sink), SQL_T(n->run_id), SQL_T(n->type), SQL_T(n->event_json),
                    SQL_I(n->created_at ? n->created_at : now), SQL_I(n->next_attempt_at ? n->next_attempt_at : now),
                    SQL_I(now)};
    sql_result r;
    int rc = sql_exec(s,
                     "INSERT INTO outbox(id, sink, run_id, type, event, created_at, next_attempt_at, updated_at)"
                     " VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8) ON CONFLICT DO NOTHING",
                     "INSERT INTO outbox(id, sink, run_id, type, event, created_at, next_attempt_at, updated_at)"
                     " VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT DO NOTHING",
                     p, 8, &r, "outbox_put", err);
    if (rc == STORE_OK && r.changes == 0)
        rc = store_fail(err, STORE_DUPLICATE, "outbox_put: event %s to %s is there already", n->id, n->sink);
    sql_result_free(&r);
    return rc;
}

int store_outbox_count(store *s, const char *run_id, const char *type, int64_t *count, char **err)
{
    if (s == NULL || run_id == NULL || type == NULL || count == NULL)
        return store_fail(err, STORE_INVALID, "outbox_count: run_id and type are required");
    if (store_firestore_native(s)) return fs_outbox_count(s, run_id, type, count, err);
    sql_param p[] = {SQL_T(run_id), SQL_T(type)};
    sql_result r;
    int rc = sql_exec(s, "SELECT count(DISTINCT id) FROM outbox WHERE run_id = ?1 AND type = ?2",
                     "SELECT count(DISTINCT id) FROM outbox WHERE run_id = $1 AND type = $2", p, 2, &r,
                     "outbox_count", err);
    *count = rc == STORE_OK && r.rows == 1 ? sql_int(&r, 0, 0) : 0;
    sql_result_free(&r);
    return rc;
}

int store_outbox_claim(store *s, int64_t now, int64_t lease_ms, int limit, store_note_list *out, char **err)
{
    if (out != NULL) memset(out, 0, sizeof *out);
    if (s == NULL || out == NULL || limit < 1 || limit > 1000 || lease_ms < 0)
        return store_fail(err, STORE_INVALID, "outbox_claim: limit must be 1..1000");
    if (store_firestore_native(s)) return fs_outbox_claim(s, now, lease_ms, limit, out, err);
    sql_param p[] = {SQL_I(now), SQL_I(now + lease_ms), SQL_I(limit), SQL_I(store_now(s))};
    sql_result r;
    int rc = sql_exec(s,
                     "UPDATE outbox SET attempts = attempts + 1, next_attempt_at = ?2, updated_at = ?4"
                     " WHERE rowid IN (SELECT rowid FROM outbox WHERE state = 'pending' AND next_attempt_at <= ?1"
                     " ORDER BY next_attempt_at LIMIT ?3) RETURNING " NOTE_COLS,
                     "UPDATE outbox o SET attempts = o.attempts + 1, next_attempt_at = $2, updated_at = $4"
                     " FROM (SELECT id, sink FROM outbox WHERE state = 'pending' AND next_attempt_at <= $1"
                     " ORDER BY next_attempt_at LIMIT $3 FOR UPDATE SKIP LOCKED) d"
                     " WHERE o.id = d.id AND o.sink = d.sink RETURNING o.id, o.sink, o.run_id, o.type, o.event,"
                     " o.state, o.attempts, o.last_error, o.created_at, o.next_attempt_at, o.updated_at, o.delivered_at",
                     p, 4, &r, "outbox_claim", err);
    if (rc == STORE_OK) notes_from(&r, out);
    sql_result_free(&r);
    return rc;
}

int store_outbox_finish(store *s, const char *id, const char *sink, int attempts, store_note_state next,
                        int64_t next_attempt_at, const char *error, char **err)
{
    if (s == NULL || id == NULL || sink == NULL || next < 0 || next >= STORE_NOTE_STATE_COUNT)
        return store_fail(err, STORE_INVALID, "outbox_finish: id, sink and a state are required");
    if (store_firestore_native(s)) return fs_outbox_finish(s, id, sink, attempts, next, next_attempt_at, error, err);
    int64_t now = store_now(s);
    sql_param p[] = {SQL_T(id), SQL_T(sink), SQL_I(attempts), SQL_T(note_names[next]), SQL_I(next_attempt_at),
                    SQL_T(error), SQL_I(now), SQL_I(next == STORE_NOTE_DELIVERED ? now : 0)};
    sql_result r;
    int rc = sql_exec(s,
                     "UPDATE outbox SET state = ?4, next_attempt_at = ?5, last_error = ?6, updated_at = ?7,"
                     " delivered_at = nullif(?8, 0) WHERE id = ?1 AND sink = ?2 AND attempts = ?3 AND state = 'pending'",
                     "UPDATE outbox SET state = $4, next_attempt_at = $5, last_error = $6, updated_at = $7,"
                     " delivered_at = nullif($8::bigint, 0) WHERE id = $1 AND sink = $2 AND attempts = $3::int"
                     " AND state = 'pending'",
                     p, 8, &r, "outbox_finish", err);
    int64_t changed = r.changes;
    sql_result_free(&r);
    if (rc != STORE_OK || changed > 0) return rc;
    sql_param q[] = {SQL_T(id), SQL_T(sink)};
    rc = sql_exec(s, "SELECT 1 FROM outbox WHERE id = ?1 AND sink = ?2", "SELECT 1 FROM outbox WHERE id = $1 AND sink = $2",
                 q, 2, &r, "outbox_finish", err);
    if (rc == STORE_OK)
        rc = r.rows ? store_fail(err, STORE_CONFLICT, "outbox_finish: %s to %s was claimed again or settled", id, sink)
                    : store_fail(err, STORE_NOTFOUND, "outbox_finish: no event %s to %s", id, sink);
    sql_result_free(&r);
    return rc;
}

int store_outbox_amend(store *s, const char *id, const char *sink, const char *event_json, int64_t next_attempt_at,
                       char **err)
{
    if (s == NULL || id == NULL || sink == NULL || event_json == NULL)
        return store_fail(err, STORE_INVALID, "outbox_amend: id, sink and event are required");
    if (store_firestore_native(s)) return fs_outbox_amend(s, id, sink, event_json, next_attempt_at, err);
    sql_param p[] = {SQL_T(id), SQL_T(sink), SQL_T(event_json), SQL_I(next_attempt_at), SQL_I(store_now(s))};
    sql_result r;
    int rc = sql_exec(s,
                     "UPDATE outbox SET event = ?3, next_attempt_at = ?4, updated_at = ?5"
                     " WHERE id = ?1 AND sink = ?2 AND attempts = 0 AND state = 'pending'",
                     "UPDATE outbox SET event = $3, next_attempt_at = $4, updated_at = $5"
                     " WHERE id = $1 AND sink = $2 AND attempts = 0 AND state = 'pending'",
                     p, 5, &r, "outbox_amend", err);
    if (rc == STORE_OK && r.changes == 0)
        rc = store_fail(err, STORE_CONFLICT, "outbox_amend: %s to %s was claimed, settled or is not there", id, sink);
    sql_result_free(&r);
    return rc;
}

int store_outbox_list_run(store *s, const char *run_id, store_note_list *out, char **err)
{
    if (out != NULL) memset(out, 0, sizeof *out);
    if (s == NULL || run_id == NULL || out == NULL) return store_fail(err, STORE_INVALID, "outbox_list_run: run_id is required");
    if (store_firestore_native(s)) return fs_outbox_list_run(s, run_id, out, err);
    sql_param p[] = {SQL_T(run_id)};
    sql_result r;
    int rc = sql_exec(s, "SELECT " NOTE_COLS " FROM outbox WHERE run_id = ?1 ORDER BY created_at, id, sink",
                     "SELECT " NOTE_COLS " FROM outbox WHERE run_id = $1 ORDER BY created_at, id, sink", p, 1, &r,
                     "outbox_list_run", err);
    if (rc == STORE_OK) notes_from(&r, out);
    sql_result_free(&r);
    return rc;
}

static int min_due(store *s, const char *sq, const char *pq, int64_t *at, const char *what, char **err)
{
    sql_result r;
    int rc = sql_exec(s, sq, pq, NULL, 0, &r, what, err);
    *at = rc == STORE_OK && r.rows == 1 && sql_cell(&r, 0, 0) != NULL ? sql_int(&r, 0, 0) : INT64_MAX;
    sql_result_free(&r);
    return rc;
}

int store_outbox_next_due(store *s, int64_t *at, char **err)
{
    if (s == NULL || at == NULL) return store_fail(err, STORE_INVALID, "outbox_next_due: bad arguments");
    if (store_firestore_native(s)) return fs_outbox_next_due(s, at, err);
    return min_due(s, "SELECT min(next_attempt_at) FROM outbox WHERE state = 'pending'",
                   "SELECT min(next_attempt_at) FROM outbox WHERE state = 'pending'", at, "outbox_next_due", err);
}

void store_note_free(store_note *n)
{
    if (n == NULL) return;
    free(n->id);
    free(n->sink);
    free(n->run_id);
    free(n->type);
    free(n->event_json);
    free(n->last_error);
    memset(n, 0, sizeof *n);
}

void store_note_list_free(store_note_list *l)
{
    if (l == NULL) return;
    for (size_t i = 0; i < l->count; i++) store_note_free(&l->items[i]);
    free(l->items);
    memset(l, 0, sizeof *l);
}

/* ---- deadlines ---- */

int store_deadline_arm(store *s, const char *run_id, const char *scope, int64_t due_at, char **err)
{
    if (s == NULL || run_id == NULL || scope == NULL) return store_fail(err, STORE_INVALID, "deadline_arm: run_id and scope are required");
    if (store_firestore_native(s)) return fs_deadline_arm(s, run_id, scope, due_at, err);
    sql_param p[] = {SQL_T(run_id), SQL_T(scope), SQL_I(due_at)};
    sql_result r;
    int rc = sql_exec(s,
                     "INSERT INTO deadlines(run_id, scope, due_at) VALUES (?1, ?2, ?3) ON CONFLICT(run_id, scope)"
                     " DO UPDATE SET due_at = excluded.due_at, state = 'armed' WHERE deadlines.state <> 'missed'",
                     "INSERT INTO deadlines(run_id, scope, due_at) VALUES ($1, $2, $3) ON CONFLICT(run_id, scope)"
                     " DO UPDATE SET due_at = excluded.due_at, state = 'armed' WHERE deadlines.state <> 'missed'",
                     p, 3, &r, "deadline_arm", err);
    sql_result_free(&r);
    return rc;
}

int store_deadline_due(store *s, int64_t now, int limit, store_deadline_list *out, char **err)
{
    if (out != NULL) memset(out, 0, sizeof *out);
    if (s == NULL || out == NULL || limit < 1 || limit > 1000)
        return store_fail(err, STORE_INVALID, "deadline_due: limit must be 1..1000");
    if (store_firestore_native(s)) return fs_deadline_due(s, now, limit, out, err);
    sql_param p[] = {SQL_I(now), SQL_I(limit)};
    sql_result r;
    int in_tx = store_in_transaction(s);
    int rc = sql_exec(s,
                     "SELECT run_id, scope, due_at FROM deadlines WHERE state = 'armed' AND due_at <= ?1"
                     " ORDER BY due_at LIMIT ?2",
                     in_tx ? "SELECT run_id, scope, due_at FROM deadlines WHERE state = 'armed' AND due_at <= $1"
                             " ORDER BY due_at LIMIT $2 FOR UPDATE SKIP LOCKED"
                           : "SELECT run_id, scope, due_at FROM deadlines WHERE state = 'armed' AND due_at <= $1"
                             " ORDER BY due_at LIMIT $2",
                     p, 2, &r, "deadline_due", err);
    if (rc == STORE_OK) out->items = xcalloc(r.rows + 1, sizeof *out->items);
    for (size_t i = 0; rc == STORE_OK && i < r.rows; i++) {
        out->items[i].run_id = sql_take(&r, i, 0);
        out->items[i].scope = sql_take(&r, i, 1);
        out->items[i].due_at = sql_int(&r, i, 2);
        out->count++;
    }
    sql_result_free(&r);
    return rc;
}

int store_deadline_settle(store *s, const char *run_id, const char *scope, int missed, char **err)
{
    if (s == NULL || run_id == NULL || scope == NULL) return store_fail(err, STORE_INVALID, "deadline_settle: run_id and scope are required");
    if (store_firestore_native(s)) return fs_deadline_settle(s, run_id, scope, missed, err);
    sql_param p[] = {SQL_T(run_id), SQL_T(scope), SQL_T(missed ? "missed" : "met")};
    sql_result r;
    int rc = sql_exec(s, "UPDATE deadlines SET state = ?3 WHERE run_id = ?1 AND scope = ?2 AND state = 'armed'",
                     "UPDATE deadlines SET state = $3 WHERE run_id = $1 AND scope = $2 AND state = 'armed'", p, 3, &r,
                     "deadline_settle", err);
    if (rc == STORE_OK && r.changes == 0)
        rc = store_fail(err, STORE_CONFLICT, "deadline_settle: the deadline of %s %s is not armed", run_id, scope);
    sql_result_free(&r);
    return rc;
}

int store_deadline_next_due(store *s, int64_t *at, char **err)
{
    if (s == NULL || at == NULL) return store_fail(err, STORE_INVALID, "deadline_next_due: bad arguments");
    if (store_firestore_native(s)) return fs_deadline_next_due(s, at, err);
    return min_due(s, "SELECT min(due_at) FROM deadlines WHERE state = 'armed'",
                   "SELECT min(due_at) FROM deadlines WHERE state = 'armed'", at, "deadline_next_due", err);
}

void store_deadline_list_free(store_deadline_list *l)
{
    if (l == NULL) return;
    for (size_t i = 0; i < l->count; i++) {
        free(l->items[i].run_id);
        free(l->items[i].scope);
    }
    free(l->items);
    memset(l, 0, sizeof *l);
}
