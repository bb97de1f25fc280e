/* store_firestore_outbox: the notification outbox and the deadlines (store.h) as Firestore documents, called by
 * store_outbox.c for a Firestore handle.
 * Layout: outbox/{fs_id2(id, sink)} (every outbox column, plus `due` = next_attempt_at while pending, the claim
 * order); deadlines/{fs_id2(run_id, scope)} (plus `due` = due_at while armed). A run's documents of both go with
 * it (fs_outbox_delete_run, from store_run_prune).
 * Uses: store_firestore.h. Must not: know what an event says or where it goes (notify.c does). */
#include <stdlib.h>
#include <string.h>

#include "mem.h"
#include "store_firestore.h"
#include "store_firestore_outbox.h"

static const char *const note_names[STORE_NOTE_STATE_COUNT] = {"pending", "delivered", "given_up"};

static store_note_state note_parse(const char *t)
{
    for (int i = 0; i < STORE_NOTE_STATE_COUNT; i++)
        if (t != NULL && strcmp(t, note_names[i]) == 0) return (store_note_state)i;
    return STORE_NOTE_PENDING;
}

/* Writes an outbox document back with `due` derived from its state. */
static void note_put(fs_store *f, json_t *d)
{
    if (strcmp(fs_str(d, "state"), "pending") == 0) fs_set_int(d, "due", fs_int(d, "next_attempt_at"));
    else json_object_del(d, "due");
    char *nid = fs_id2(fs_str(d, "id"), fs_str(d, "sink"));
    fs_put(f, "outbox", nid, d);
    free(nid);
}

static void note_from(const json_t *d, store_note *n)
{
    memset(n, 0, sizeof *n);
    n->id = store_strdup(fs_str(d, "id"));
    n->sink = store_strdup(fs_str(d, "sink"));
    n->run_id = store_strdup(fs_str(d, "run_id"));
    n->type = store_strdup(fs_str(d, "type"));
    n->event_json = store_strdup(fs_str(d, "event"));
    n->state = note_parse(fs_str(d, "state"));
    n->attempts = (int)fs_int(d, "attempts");
    n->last_error = store_strdup(fs_str(d, "last_error"));
    n->created_at = fs_int(d, "created_at");
    n->next_attempt_at = fs_int(d, "next_attempt_at");
    n->updated_at = fs_int(d, "updated_at");
    n->delivered_at = fs_int(d, "delivered_at");
}

static void notes_from(json_t **v, size_t k, store_note_list *out)
{
    out->items = xcalloc(k + 1, sizeof *out->items);
    for (size_t i = 0; i < k; i++) note_from(v[i], &out->items[out->count++]);
}

/* STORE_INVALID unless the run exists (the SQL backends' foreign key). */
static int run_exists(fs_store *f, const char *run_id, const char *what, char **err)
{
    char *rid = fs_id(run_id);
    json_t *d = NULL;
    int rc = fs_get(f, "runs", rid, &d, err);
    free(rid);
    json_decref(d);
    if (rc == STORE_NOTFOUND) return store_fail(err, STORE_INVALID, "%s: no run with id '%s'", what, run_id);
    return rc;
}

static int note_doc(fs_store *f, const char *id, const char *sink, json_t **d, char **err)
{
    char *nid = fs_id2(id, sink);
    int rc = fs_get(f, "outbox", nid, d, err);
    free(nid);
    return rc;
}

int fs_outbox_put(store *s, const store_note *n, char **err)
{
    fs_store *f = FS(s);
    int rc;
    FS_UNIT(f, rc, err, {
        json_t *d = NULL;
        rc = note_doc(f, n->id, n->sink, &d, err);
        json_decref(d);
        if (rc == STORE_OK) rc = store_fail(err, STORE_DUPLICATE, "outbox_put: event %s to %s is there already", n->id, n->sink);
        else if (rc == STORE_NOTFOUND && (rc = run_exists(f, n->run_id, "outbox_put", err)) == STORE_OK) {
            int64_t now = fs_now(f);
            json_t *nd = json_object();
            fs_set_str(nd, "id", n->id);
            fs_set_str(nd, "sink", n->sink);
            fs_set_str(nd, "run_id", n->run_id);
            fs_set_str(nd, "type", n->type);
            fs_set_str(nd, "event", n->event_json);
            fs_set_str(nd, "state", "pending");
            fs_set_int(nd, "attempts", 0);
            fs_set_int(nd, "created_at", n->created_at ? n->created_at : now);
            fs_set_int(nd, "next_attempt_at", n->next_attempt_at ? n->next_attempt_at : now);
            fs_set_int(nd, "updated_at", now);
            fs_set_int(nd, "due", fs_int(nd, "next_attempt_at"));
            char *nid = fs_id2(n->id, n->sink);
            fs_create(f, "outbox", nid, nd);
            free(nid);
            rc = STORE_OK;
        }
    });
    return rc;
}

int fs_outbox_count(store *s, const char *run_id, const char *type, int64_t *count, char **err)
{
    json_t *docs = NULL, *d, *ids = json_object();
    int rc = fs_query(FS(s), "outbox", fs_where("run_id", "EQUAL", json_string(run_id)), NULL, 0, NULL, 0, NULL, &docs, err);
    size_t i;
    json_array_foreach(docs, i, d) if (strcmp(fs_str(d, "run_id"), run_id) == 0 && strcmp(fs_str(d, "type"), type) == 0)
        json_object_set_new(ids, fs_str(d, "id"), json_true());
    *count = rc == STORE_OK ? (int64_t)json_object_size(ids) : 0;
    json_decref(ids);
    json_decref(docs);
    return rc;
}

static int due_cmp(const void *a, const void *b)
{
    int64_t x = fs_int(*(json_t *const *)a, "due"), y = fs_int(*(json_t *const *)b, "due");
    return (x > y) - (x < y);
}

/* The documents of coll that are due at `now` (their `due` <= now and `state` == want), earliest first, at most
 * `limit`: *v (caller frees the array; the documents are borrowed from *docs, which the caller releases). */
static int due_docs(fs_store *f, const char *coll, const char *want, int64_t now, int limit, json_t **docs,
                    json_t ***v, size_t *k, char **err)
{
    *v = NULL;
    *k = 0;
    int rc = fs_query(f, coll, fs_where("due", "LESS_THAN_OR_EQUAL", json_integer(now)), "due", 0, NULL, limit, NULL,
                      docs, err);
    if (rc != STORE_OK) return rc;
    size_t n = json_array_size(*docs), i;
    json_t *d;
    *v = xcalloc(n + 1, sizeof **v);
    json_array_foreach(*docs, i, d) if (json_object_get(d, "due") && fs_int(d, "due") <= now &&
                                        strcmp(fs_str(d, "state"), want) == 0)(*v)[(*k)++] = d;
    qsort(*v, *k, sizeof **v, due_cmp);
    if (*k > (size_t)limit) *k = (size_t)limit;
    return STORE_OK;
}

int fs_outbox_claim(store *s, int64_t now, int64_t lease_ms, int limit, store_note_list *out, char **err)
{
    fs_store *f = FS(s);
    int rc;
    FS_UNIT(f, rc, err, {
        store_note_list_free(out);
        json_t *docs = NULL, **v = NULL;
        size_t k = 0;
        rc = due_docs(f, "outbox", "pending", now, limit, &docs, &v, &k, err);
        int64_t t = fs_now(f);
        for (size_t i = 0; rc == STORE_OK && i < k; i++) {
            fs_set_int(v[i], "attempts", fs_int(v[i], "attempts") + 1);
            fs_set_int(v[i], "next_attempt_at", now + lease_ms);
            fs_set_int(v[i], "updated_at", t);
        }
        if (rc == STORE_OK) notes_from(v, k, out);
        for (size_t i = 0; rc == STORE_OK && i < k; i++) note_put(f, json_incref(v[i]));
        free(v);
        json_decref(docs);
    });
    return rc;
}

int fs_outbox_finish(store *s, const char *id, const char *sink, int attempts, store_note_state next,
                     int64_t next_attempt_at, const char *error, char **err)
{
    fs_store *f = FS(s);
    int rc;
    FS_UNIT(f, rc, err, {
        json_t *d = NULL;
        rc = note_doc(f, id, sink, &d, err);
        if (rc == STORE_NOTFOUND) rc = store_fail(err, rc, "outbox_finish: no event %s to %s", id, sink);
        else if (rc == STORE_OK && (strcmp(fs_str(d, "state"), "pending") != 0 || fs_int(d, "attempts") != attempts))
            rc = store_fail(err, STORE_CONFLICT, "outbox_finish: %s to %s was claimed again or settled", id, sink);
        if (rc == STORE_OK) {
            int64_t now = fs_now(f);
            fs_set_str(d, "state", note_names[next]);
            fs_set_int(d, "next_attempt_at", next_attempt_at);
            fs_set_str(d, "last_error", error);
            fs_set_int(d, "updated_at", now);
            fs_set_time(d, "delivered_at", next == STORE_NOTE_DELIVERED ? now : 0);
            note_put(f, json_incref(d));
        }
        json_decref(d);
    });
    return rc;
}

int fs_outbox_amend(store *s, const char *id, const char *sink, const char *event_json, int64_t next_attempt_at,
                    char **err)
{
    fs_store *f = FS(s);
    int rc;
    FS_UNIT(f, rc, err, {
        json_t *d = NULL;
        rc = note_doc(f, id, sink, &d, NULL);
        if (rc != STORE_OK || strcmp(fs_str(d, "state"), "pending") != 0 || fs_int(d, "attempts") != 0)
            rc = store_fail(err, STORE_CONFLICT, "outbox_amend: %s to %s was claimed, settled or is not there", id, sink);
        if (rc == STORE_OK) {
            fs_set_str(d, "event", event_json);
            fs_set_int(d, "next_attempt_at", next_attempt_at);
            fs_set_int(d, "updated_at", fs_now(f));
            note_put(f, json_incref(d));
        }
        json_decref(d);
    });
    return rc;
}

static int created_cmp(const void *a, const void *b)
{
    const json_t *x = *(json_t *const *)a, *y = *(json_t *const *)b;
    int64_t cx = fs_int(x, "created_at"), cy = fs_int(y, "created_at");
    if (cx != cy) return (cx > cy) - (cx < cy);
    int c = strcmp(fs_str(x, "id"), fs_str(y, "id"));
    return c ? c : strcmp(fs_str(x, "sink"), fs_str(y, "sink"));
}

int fs_outbox_list_run(store *s, const char *run_id, store_note_list *out, char **err)
{
    json_t *docs = NULL, *d;
    int rc = fs_query(FS(s), "outbox", fs_where("run_id", "EQUAL", json_string(run_id)), NULL, 0, NULL, 0, NULL, &docs, err);
    if (rc != STORE_OK) return rc;
    size_t n = json_array_size(docs), k = 0, i;
    json_t **v = xcalloc(n + 1, sizeof *v);
    json_array_foreach(docs, i, d) if (strcmp(fs_str(d, "run_id"), run_id) == 0) v[k++] = d;
    qsort(v, k, sizeof *v, created_cmp);
    notes_from(v, k, out);
    free(v);
    json_decref(docs);
    return rc;
}

/* The smallest `due` of coll's documents in state `want`, or INT64_MAX. */
static int min_due(fs_store *f, const char *coll, const char *want, int64_t *at, char **err)
{
    json_t *docs = NULL, *d;
    *at = INT64_MAX;
    int rc = fs_query(f, coll, NULL, "due", 0, NULL, 1, NULL, &docs, err);
    size_t i;
    json_array_foreach(docs, i, d) if (json_object_get(d, "due") && strcmp(fs_str(d, "state"), want) == 0 &&
                                       fs_int(d, "due") < *at) *at = fs_int(d, "due");
    json_decref(docs);
    return rc;
}

int fs_outbox_next_due(store *s, int64_t *at, char **err) { return min_due(FS(s), "outbox", "pending", at, err); }

/* ---- deadlines ---- */

static void deadline_put(fs_store *f, json_t *d)
{
    if (strcmp(fs_str(d, "state"), "armed") == 0) fs_set_int(d, "due", fs_int(d, "due_at"));
    else json_object_del(d, "due");
    char *did = fs_id2(fs_str(d, "run_id"), fs_str(d, "scope"));
    fs_put(f, "deadlines", did, d);
    free(did);
}

static int deadline_doc(fs_store *f, const char *run_id, const char *scope, json_t **d, char **err)
{
    char *did = fs_id2(run_id, scope);
    int rc = fs_get(f, "deadlines", did, d, err);
    free(did);
    return rc;
}

int fs_deadline_arm(store *s, const char *run_id, const char *scope, int64_t due_at, char **err)
{
    fs_store *f = FS(s);
    int rc;
    FS_UNIT(f, rc, err, {
        json_t *d = NULL;
        rc = deadline_doc(f, run_id, scope, &d, err);
        if (rc == STORE_NOTFOUND && (rc = run_exists(f, run_id, "deadline_arm", err)) == STORE_OK) {
            d = json_pack("{s:s,s:s,s:s}", "run_id", run_id, "scope", scope, "state", "armed");
            rc = STORE_OK;
        }
        if (rc == STORE_OK && strcmp(fs_str(d, "state"), "missed") != 0) {
            fs_set_int(d, "due_at", due_at);
            fs_set_str(d, "state", "armed");
            deadline_put(f, json_incref(d));
        }
        json_decref(d);
    });
    return rc;
}

int fs_deadline_due(store *s, int64_t now, int limit, store_deadline_list *out, char **err)
{
    json_t *docs = NULL, **v = NULL;
    size_t k = 0;
    int rc = due_docs(FS(s), "deadlines", "armed", now, limit, &docs, &v, &k, err);
    if (rc == STORE_OK) out->items = xcalloc(k + 1, sizeof *out->items);
    for (size_t i = 0; rc == STORE_OK && i < k; i++) {
        out->items[i].run_id = store_strdup(fs_str(v[i], "run_id"));
        out->items[i].scope = store_strdup(fs_str(v[i], "scope"));
        out->items[i].due_at = fs_int(v[i], "due_at");
        out->count++;
    }
    free(v);
    json_decref(docs);
    return rc;
}

int fs_deadline_settle(store *s, const char *run_id, const char *scope, int missed, char **err)
{
    fs_store *f = FS(s);
    int rc;
    FS_UNIT(f, rc, err, {
        json_t *d = NULL;
        rc = deadline_doc(f, run_id, scope, &d, NULL);
        if (rc != STORE_OK || strcmp(fs_str(d, "state"), "armed") != 0)
            rc = store_fail(err, STORE_CONFLICT, "deadline_settle: the deadline of %s %s is not armed", run_id, scope);
        if (rc == STORE_OK) {
            fs_set_str(d, "state", missed ? "missed" : "met");
            deadline_put(f, json_incref(d));
        }
        json_decref(d);
    });
    return rc;
}

int fs_deadline_next_due(store *s, int64_t *at, char **err) { return min_due(FS(s), "deadlines", "armed", at, err); }

int fs_outbox_delete_run(fs_store *f, const char *run_id, char **err)
{
    const char *colls[2] = {"outbox", "deadlines"};
    int rc = STORE_OK;
    for (int c = 0; rc == STORE_OK && c < 2; c++) {
        json_t *docs = NULL, *d;
        rc = fs_query(f, colls[c], fs_where("run_id", "EQUAL", json_string(run_id)), NULL, 0, NULL, 0, NULL, &docs, err);
        size_t i;
        json_array_foreach(docs, i, d) if (strcmp(fs_str(d, "run_id"), run_id) == 0) fs_delete(f, colls[c], fs_str(d, "_id"));
        json_decref(docs);
    }
    return rc;
}
