/* store_firestore_ops: scripts, runs, run locks and leases as Firestore documents.
 * Layout: scripts/{hash}; runs/{fs_id(id)} (every run column, plus `nsteps`, the count of its steps, and `lockn`,
 * bumped by store_run_lock); runkeys/{fs_id(request_key)} -> {run_id} (the unique request key, created in the
 * commit that creates the run); leases/{fs_id(name)}. Run listings are one query on runs ordered by
 * (created_at, id) descending with a cursor.
 * Uses: store_firestore.h. Must not: talk HTTP (store_firestore.c does) or touch steps' documents except where a
 * run's deletion takes them along (store_firestore_steps.c owns their layout: fs_steps_delete_run). */
#include <stdlib.h>
#include <string.h>

#include "mem.h"
#include "store_firestore.h"
#include "util.h"

#define UPPER_BOUND "\xef\xbf\xbf" /* U+FFFF: sorts after every text a prefix search can match */

/* Defined in store_firestore_steps.c: deletes a run's steps and their key documents in the current unit. */
int fs_steps_delete_run(fs_store *f, const char *run_id, char **err);
/* Defined in store_firestore_outbox.c: deletes a run's outbox and deadline documents in the current unit. */
int fs_outbox_delete_run(fs_store *f, const char *run_id, char **err);
int fs_attempts_delete_run(fs_store *f, const char *run_id, char **err);
int fs_sched_delete_run(fs_store *f, const char *run_id, char **err);

/* ---- scripts ---- */

static int fs_script_put(store *s, const char *hash, const char *workflow, const char *source, char **err)
{
    fs_store *f = FS(s);
    int rc;
    FS_UNIT(f, rc, err, {
        json_t *doc = NULL;
        rc = fs_get(f, "scripts", hash, &doc, err);
        if (rc == STORE_OK) {
            const char *old = fs_str(doc, "source");
            if (old == NULL || strcmp(old, source) != 0)
                rc = store_fail(err, STORE_CONFLICT, "script %s is already stored with a different source", hash);
        } else if (rc == STORE_NOTFOUND) {
            rc = STORE_OK;
            fs_create(f, "scripts", hash, json_pack("{s:s,s:s,s:s,s:I}", "hash", hash, "workflow", workflow, "source",
                                                    source, "created_at", (json_int_t)fs_now(f)));
        }
        json_decref(doc);
    });
    return rc;
}

static int fs_script_get(store *s, const char *hash, store_script *out, char **err)
{
    fs_store *f = FS(s);
    json_t *doc = NULL;
    int rc = fs_get(f, "scripts", hash, &doc, err);
    if (rc == STORE_NOTFOUND) return store_fail(err, rc, "no script %s", hash);
    if (rc != STORE_OK) return rc;
    out->hash = store_strdup(fs_str(doc, "hash"));
    out->workflow = store_strdup(fs_str(doc, "workflow"));
    out->source = store_strdup(fs_str(doc, "source"));
    out->created_at = fs_int(doc, "created_at");
    json_decref(doc);
    return STORE_OK;
}

/* ---- runs ---- */

static json_t *run_doc(const store_run *r, int64_t now)
{
    int64_t created = r->created_at ? r->created_at : now;
    json_t *d = json_object();
    fs_set_str(d, "id", r->id);
    fs_set_str(d, "workflow", r->workflow);
    fs_set_str(d, "script_hash", r->script_hash);
    fs_set_str(d, "params", r->params_json ? r->params_json : "{}");
    fs_set_str(d, "state", store_run_state_name(r->state));
    fs_set_str(d, "origin", r->origin);
    fs_set_str(d, "request_key", r->request_key);
    fs_set_str(d, "error", r->error);
    fs_set_int(d, "created_at", created);
    fs_set_int(d, "updated_at", r->updated_at ? r->updated_at : created);
    fs_set_time(d, "finished_at", r->finished_at);
    return d;
}

static int run_from(const json_t *d, store_run *r, char **err)
{
    memset(r, 0, sizeof *r);
    r->id = store_strdup(fs_str(d, "id"));
    r->workflow = store_strdup(fs_str(d, "workflow"));
    r->script_hash = store_strdup(fs_str(d, "script_hash"));
    r->params_json = store_strdup(fs_str(d, "params"));
    r->origin = store_strdup(fs_str(d, "origin"));
    r->request_key = store_strdup(fs_str(d, "request_key"));
    r->error = store_strdup(fs_str(d, "error"));
    r->created_at = fs_int(d, "created_at");
    r->updated_at = fs_int(d, "updated_at");
    r->finished_at = fs_int(d, "finished_at");
    if (store_run_state_parse(fs_str(d, "state"), &r->state) != STORE_OK) {
        store_run_free(r);
        return store_fail(err, STORE_CORRUPT, "run document %s has unknown state", fs_str(d, "_id"));
    }
    return STORE_OK;
}

/* Reads runs/{id} of the unit: STORE_OK with *doc, or STORE_NOTFOUND with a message. */
int fs_run_doc(fs_store *f, const char *id, json_t **doc, char **err)
{
    char *did = fs_id(id);
    int rc = fs_get(f, "runs", did, doc, err);
    free(did);
    if (rc == STORE_NOTFOUND) rc = store_fail(err, rc, "no run with id '%s'", id);
    return rc;
}

void fs_run_put(fs_store *f, json_t *doc)
{
    char *did = fs_id(fs_str(doc, "id"));
    fs_put(f, "runs", did, doc);
    free(did);
}

static int fs_run_create(store *s, const store_run *r, char **err)
{
    fs_store *f = FS(s);
    int rc;
    char *rid = fs_id(r->id), *kid = r->request_key ? fs_id(r->request_key) : NULL;
    FS_UNIT(f, rc, err, {
        json_t *d = NULL;
        rc = fs_get(f, "scripts", r->script_hash, &d, err);
        json_decref(d);
        d = NULL;
        if (rc == STORE_NOTFOUND)
            rc = store_fail(err, STORE_INVALID, "run '%s': script %s is not stored", r->id, r->script_hash);
        if (rc == STORE_OK && kid) {
            rc = fs_get(f, "runkeys", kid, &d, err);
            json_decref(d);
            d = NULL;
            rc = rc == STORE_OK ? store_fail(err, STORE_EXISTS, "request_key '%s' already started a run", r->request_key)
                 : rc == STORE_NOTFOUND ? STORE_OK : rc;
        }
        if (rc == STORE_OK) {
            rc = fs_get(f, "runs", rid, &d, err);
            json_decref(d);
            rc = rc == STORE_OK ? store_fail(err, STORE_EXISTS, "run '%s' already exists", r->id)
                 : rc == STORE_NOTFOUND ? STORE_OK : rc;
        }
        if (rc == STORE_OK) {
            fs_create(f, "runs", rid, run_doc(r, fs_now(f)));
            if (kid) fs_create(f, "runkeys", kid, json_pack("{s:s}", "run_id", r->id));
        }
    });
    free(rid);
    free(kid);
    return rc;
}

static int fs_run_get(store *s, const char *key, int by_request_key, store_run *out, char **err)
{
    fs_store *f = FS(s);
    json_t *d = NULL;
    int rc;
    if (by_request_key) {
        char *kid = fs_id(key);
        rc = fs_get(f, "runkeys", kid, &d, err);
        free(kid);
        if (rc == STORE_NOTFOUND) return store_fail(err, rc, "no run with request_key '%s'", key);
        if (rc != STORE_OK) return rc;
        char *id = store_strdup(fs_str(d, "run_id"));
        json_decref(d);
        d = NULL;
        rc = id ? fs_run_doc(f, id, &d, err) : store_fail(err, STORE_CORRUPT, "request key '%s' names no run", key);
        free(id);
    } else {
        rc = fs_run_doc(f, key, &d, err);
    }
    if (rc == STORE_OK) rc = run_from(d, out, err);
    json_decref(d);
    return rc;
}

/* Orders run documents newest first: created_at, then id, descending. */
static int run_cmp(const void *a, const void *b)
{
    const store_run *x = a, *y = b;
    if (x->created_at != y->created_at) return x->created_at < y->created_at ? 1 : -1;
    return -strcmp(x->id, y->id);
}

/* Keeps the run documents in `docs` that pass the filter and lie after the cursor, newest first, at most
 * limit + 1 of them, and trims to a page. `only` (may be NULL): a JSON object whose keys are the run ids allowed. */
static int runs_page(json_t *docs, const store_run_filter *fl, int64_t c_time, const char *c_id, json_t *only,
                     store_run_list *out, char **err)
{
    size_t n = json_array_size(docs), i;
    out->items = xcalloc(n + 1, sizeof *out->items);
    json_t *d;
    int rc = STORE_OK;
    json_array_foreach(docs, i, d) {
        const char *id = fs_str(d, "id");
        int64_t ct = fs_int(d, "created_at");
        if (id == NULL || (only && !json_object_get(only, id))) continue;
        if (fl->state != STORE_RUN_ANY && strcmp(fs_str(d, "state"), store_run_state_name((store_run_state)fl->state)))
            continue;
        if (fl->workflow && strcmp(fs_str(d, "workflow"), fl->workflow) != 0) continue;
        if (ct > c_time || (ct == c_time && strcmp(id, c_id) >= 0 && c_time != INT64_MAX)) continue;
        if ((rc = run_from(d, &out->items[out->count], err)) != STORE_OK) break;
        out->count++;
    }
    if (rc != STORE_OK) return rc;
    qsort(out->items, out->count, sizeof *out->items, run_cmp);
    while (out->count > (size_t)fl->limit + 1) store_run_free(&out->items[--out->count]);
    return store_run_page_trim(out, fl->limit, err);
}

static json_t *run_filter(const store_run_filter *fl)
{
    json_t *w = NULL;
    if (fl->state != STORE_RUN_ANY)
        w = fs_where("state", "EQUAL", json_string(store_run_state_name((store_run_state)fl->state)));
    if (fl->workflow) w = fs_and(w, fs_where("workflow", "EQUAL", json_string(fl->workflow)));
    return w;
}

static int fs_run_list_page(store *s, const store_run_filter *fl, store_run_list *out, char **err)
{
    fs_store *f = FS(s);
    int64_t c_time;
    const char *c_id;
    int rc = store_run_cursor(fl->cursor, &c_time, &c_id, err);
    if (rc != STORE_OK) return rc;
    json_t *after = fl->cursor ? json_pack("[I,s]", (json_int_t)c_time, c_id) : NULL, *docs = NULL;
    rc = fs_query(f, "runs", run_filter(fl), "created_at", 1, "id", fl->limit + 1, after, &docs, err);
    if (rc == STORE_OK) rc = runs_page(docs, fl, c_time, c_id, NULL, out, err);
    json_decref(docs);
    return rc;
}

/* Adds each document's `field` (a run id) as a key of `set`. */
static void collect(json_t *set, json_t *docs, const char *field)
{
    size_t i;
    json_t *d;
    json_array_foreach(docs, i, d) if (fs_str(d, field)) json_object_set_new(set, fs_str(d, field), json_true());
}

/* The web UI's listing: the runs with a failed step and/or matching the search are found through the steps' and
 * runs' single-field indexes, then read one by one and paged like a listing. */
static int fs_run_find_page(store *s, const store_run_query *q, store_run_list *out, char **err)
{
    fs_store *f = FS(s);
    if (!q->failed_step && (q->search == NULL || q->search[0] == '\0'))
        return fs_run_list_page(s, &q->base, out, err);
    int64_t c_time;
    const char *c_id;
    int rc = store_run_cursor(q->base.cursor, &c_time, &c_id, err);
    if (rc != STORE_OK) return rc;
    json_t *failed = NULL, *found = NULL, *docs = NULL, *runs = json_array();
    if (q->failed_step) {
        failed = json_object();
        rc = fs_query(f, "steps", fs_where("state", "EQUAL", json_string("failed")), NULL, 0, NULL, 0, NULL, &docs, err);
        if (rc == STORE_OK) collect(failed, docs, "run_id");
        json_decref(docs);
        docs = NULL;
    }
    if (rc == STORE_OK && q->search && q->search[0]) {
        found = json_object();
        char *upper = util_printf("%s" UPPER_BOUND, q->search);
        const char *colls[3] = {"runs", "steps", "steps"}, *fields[3] = {"id", "job_name", "job_id"};
        for (int i = 0; rc == STORE_OK && i < 3; i++) {
            json_t *w = i == 2 ? fs_where("job_id", "EQUAL", json_string(q->search))
                               : fs_and(fs_where(fields[i], "GREATER_THAN_OR_EQUAL", json_string(q->search)),
                                        fs_where(fields[i], "LESS_THAN", json_string(upper)));
            rc = fs_query(f, colls[i], w, NULL, 0, NULL, 0, NULL, &docs, err);
            if (rc == STORE_OK) collect(found, docs, i == 0 ? "id" : "run_id");
            json_decref(docs);
            docs = NULL;
        }
        free(upper);
    }
    json_t *ids = found ? found : failed;
    const char *id;
    json_t *v;
    json_object_foreach(ids, id, v) {
        if (rc != STORE_OK) break;
        if (found && failed && !json_object_get(failed, id)) continue;
        json_t *d = NULL;
        int grc = fs_run_doc(f, id, &d, NULL);
        if (grc == STORE_OK) json_array_append_new(runs, d);
        else if (grc != STORE_NOTFOUND) rc = store_fail(err, grc, "run_find_page: cannot read run %s", id);
    }
    if (rc == STORE_OK) rc = runs_page(runs, &q->base, c_time, c_id, NULL, out, err);
    json_decref(runs);
    json_decref(failed);
    json_decref(found);
    return rc;
}

static int fs_run_set_state(store *s, const char *id, int expected, store_run_state next, const char *error,
                            char **err)
{
    fs_store *f = FS(s);
    int rc;
    FS_UNIT(f, rc, err, {
        json_t *d = NULL;
        rc = fs_run_doc(f, id, &d, err);
        if (rc == STORE_OK && expected != STORE_RUN_ANY &&
            strcmp(fs_str(d, "state"), store_run_state_name((store_run_state)expected)) != 0) {
            rc = store_fail(err, STORE_CONFLICT, "run '%s' is %s, expected %s", id, fs_str(d, "state"),
                            store_run_state_name((store_run_state)expected));
        }
        if (rc == STORE_OK) {
            int64_t now = fs_now(f);
            fs_set_str(d, "state", store_run_state_name(next));
            fs_set_int(d, "updated_at", now);
            if (store_run_state_terminal(next)) fs_set_int(d, "finished_at", now);
            if (error) fs_set_str(d, "error", error);
            fs_run_put(f, json_incref(d));
        }
        json_decref(d);
    });
    return rc;
}

static int fs_run_redrive(store *s, const char *id, store_run_state expected, const char *script_hash,
                          const char *params_json, char **err)
{
    fs_store *f = FS(s);
    int rc;
    FS_UNIT(f, rc, err, {
        json_t *d = NULL;
        rc = fs_run_doc(f, id, &d, NULL);
        if (rc != STORE_OK || strcmp(fs_str(d, "state"), store_run_state_name(expected)) != 0)
            rc = store_fail(err, STORE_CONFLICT, "run '%s' is not %s (or does not exist)", id,
                            store_run_state_name(expected));
        if (rc == STORE_OK && script_hash) {
            json_t *sc = NULL;
            rc = fs_get(f, "scripts", script_hash, &sc, err);
            json_decref(sc);
            if (rc == STORE_NOTFOUND) rc = store_fail(err, STORE_INVALID, "run '%s': script %s is not stored", id, script_hash);
        }
        if (rc == STORE_OK) {
            fs_set_str(d, "state", "running");
            json_object_del(d, "error");
            json_object_del(d, "finished_at");
            fs_set_int(d, "updated_at", fs_now(f));
            if (script_hash) fs_set_str(d, "script_hash", script_hash);
            if (params_json) fs_set_str(d, "params", params_json);
            fs_run_put(f, json_incref(d));
        }
        json_decref(d);
    });
    return rc;
}

/* The run document is read and written back with `lockn` bumped, under the precondition that it did not change
 * since the read: of two transactions that lock the same run, the second to commit fails with STORE_BUSY and
 * nothing of it is applied (the engine retries it). So *got is always 1 and `wait` changes nothing: the conflict
 * shows at commit, not here. */
static int fs_run_lock(store *s, const char *run_id, int wait, int *got, char **err)
{
    (void)wait;
    fs_store *f = FS(s);
    json_t *d = NULL;
    int rc = fs_run_doc(f, run_id, &d, err);
    if (rc == STORE_OK) {
        fs_set_int(d, "lockn", fs_int(d, "lockn") + 1);
        fs_run_put(f, json_incref(d));
        *got = 1;
    }
    json_decref(d);
    return rc;
}

static int fs_lease_acquire(store *s, const char *name, const char *holder, int64_t ttl_ms, store_lease *out,
                            char **err)
{
    fs_store *f = FS(s);
    char *lid = fs_id(name);
    int rc;
    FS_UNIT(f, rc, err, {
        store_lease_free(out);
        json_t *d = NULL;
        int64_t now = fs_now(f);
        rc = fs_get(f, "leases", lid, &d, err);
        if (rc == STORE_OK || rc == STORE_NOTFOUND) {
            const char *cur = d ? fs_str(d, "holder") : NULL;
            int64_t term = d ? fs_int(d, "term") : 0, exp = d ? fs_int(d, "expires_at") : 0;
            rc = STORE_OK;
            if (d == NULL || (cur && strcmp(cur, holder) == 0) || exp <= now) {
                if (d == NULL || cur == NULL || strcmp(cur, holder) != 0) term++;
                fs_put(f, "leases", lid, json_pack("{s:s,s:s,s:I,s:I}", "name", name, "holder", holder, "term",
                                                   (json_int_t)term, "expires_at", (json_int_t)(now + ttl_ms)));
                out->held = 1;
                out->holder = xstrdup(holder);
                out->term = term;
                out->expires_in_ms = ttl_ms;
            } else {
                out->holder = store_strdup(cur);
                out->term = term;
                out->expires_in_ms = exp - now;
            }
        }
        json_decref(d);
    });
    free(lid);
    return rc;
}

static int fs_lease_release(store *s, const char *name, const char *holder, char **err)
{
    fs_store *f = FS(s);
    char *lid = fs_id(name);
    int rc;
    FS_UNIT(f, rc, err, {
        json_t *d = NULL;
        rc = fs_get(f, "leases", lid, &d, err);
        if (rc == STORE_OK && fs_str(d, "holder") && strcmp(fs_str(d, "holder"), holder) == 0) {
            fs_set_int(d, "expires_at", 0);
            fs_put(f, "leases", lid, json_incref(d));
        }
        if (rc == STORE_NOTFOUND) rc = STORE_OK;
        json_decref(d);
    });
    free(lid);
    return rc;
}

/* Each run goes in a unit of its own (a run with its steps and key documents stays well below a commit's limit
 * of 500 writes). */
static int fs_run_prune(store *s, int64_t before, int limit, int64_t *deleted, char **err)
{
    fs_store *f = FS(s);
    json_t *docs = NULL;
    int rc = fs_query(f, "runs", fs_where("finished_at", "LESS_THAN", json_integer(before)), "finished_at", 0, NULL,
                      limit * 2, NULL, &docs, err);
    int64_t n = 0;
    size_t i;
    json_t *d;
    json_array_foreach(docs, i, d) {
        if (rc != STORE_OK || n >= limit) break;
        store_run_state st;
        if (store_run_state_parse(fs_str(d, "state"), &st) != STORE_OK || !store_run_state_terminal(st) ||
            fs_int(d, "finished_at") >= before)
            continue;
        const char *id = fs_str(d, "id");
        FS_UNIT(f, rc, err, {
            json_t *cur = NULL;
            rc = fs_run_doc(f, id, &cur, err);
            if (rc == STORE_OK) rc = fs_steps_delete_run(f, id, err);
            if (rc == STORE_OK) rc = fs_outbox_delete_run(f, id, err);
            if (rc == STORE_OK) rc = fs_attempts_delete_run(f, id, err);
            if (rc == STORE_OK) rc = fs_sched_delete_run(f, id, err);
            if (rc == STORE_OK) {
                if (fs_str(cur, "request_key")) {
                    char *kid = fs_id(fs_str(cur, "request_key"));
                    fs_delete(f, "runkeys", kid);
                    free(kid);
                }
                fs_delete(f, "runs", fs_str(cur, "_id"));
            }
            json_decref(cur);
        });
        if (rc == STORE_NOTFOUND) rc = STORE_OK;
        else if (rc == STORE_OK) n++;
    }
    json_decref(docs);
    if (deleted) *deleted = n;
    return rc;
}

static int fs_run_count_by_state(store *s, int64_t counts[STORE_RUN_STATE_COUNT], char **err)
{
    int rc = STORE_OK;
    for (int i = 0; rc == STORE_OK && i < STORE_RUN_STATE_COUNT; i++)
        rc = fs_count(FS(s), "runs", fs_where("state", "EQUAL", json_string(store_run_state_name((store_run_state)i))),
                      &counts[i], err);
    return rc;
}

void fs_ops_fill(struct store_ops *ops)
{
    ops->script_put = fs_script_put;
    ops->script_get = fs_script_get;
    ops->run_create = fs_run_create;
    ops->run_get = fs_run_get;
    ops->run_list_page = fs_run_list_page;
    ops->run_find_page = fs_run_find_page;
    ops->run_set_state = fs_run_set_state;
    ops->run_redrive = fs_run_redrive;
    ops->run_lock = fs_run_lock;
    ops->lease_acquire = fs_lease_acquire;
    ops->lease_release = fs_lease_release;
    ops->run_prune = fs_run_prune;
    ops->run_count_by_state = fs_run_count_by_state;
}
