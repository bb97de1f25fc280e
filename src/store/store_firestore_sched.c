/* store_firestore_sched: capacity, schedules and backfills (store.h, "capacity") as Firestore documents, called by
 * store_sched.c for a Firestore handle.
 * Layout: pools/{fs_id(key)} (key "project/region" or "runs:" workflow; `n` bumped by a transaction that counted
 * the pool and admits into it (fs_put_with), so two that both counted it cannot both admit: the loser's commit fails
 * its precondition, as PostgreSQL's row lock makes the second wait and recount); waits/{fs_id2(run_id, name)} {run_id, name, project,
 * region, since, parked_at}; runtimes/{fs_id(run_id)}; marks/{fs_id(workflow)} {workflow, handled_to};
 * backfills/{fs_id(id)} {id, workflow, state, doc, created_at, updated_at}. A run's waits and times go with it
 * (fs_sched_delete_run, from store_run_prune). Counts of steps and runs are queries on one single-field index
 * (steps.project, runs.workflow, runs.origin), the rest filtered here.
 * Uses: store_firestore.h. Must not: decide who waits or for how long (engine_pool.c does); change a step's
 * document except the waiting fields store_step_wait_capacity and store_pool_wake own. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mem.h"
#include "store_firestore.h"
#include "store_firestore_attempts.h"

int fs_sched_delete_run(fs_store *f, const char *run_id, char **err);

static int str_is(const json_t *d, const char *key, const char *want)
{
    const char *v = fs_str(d, key);
    return v != NULL && want != NULL && strcmp(v, want) == 0;
}

static int state_in(const json_t *d, const char *const *names)
{
    for (int i = 0; names[i]; i++)
        if (str_is(d, "state", names[i])) return 1;
    return 0;
}

static const char *const STEP_IN_FLIGHT[] = {"launching", "running", "cancelling", NULL};
static const char *const RUN_ACTIVE[] = {"running", "cancelling", NULL};

/* Reads pools/{key} and, if the caller's transaction admits (writes a document of when_coll with the fields of
 * `when`, stolen: a step launching in the pool, a run of the workflow running), writes it back with `n` + 1: the
 * admission lock. A transaction that only counts (a job end choosing how many to wake) conflicts with nobody. */
static int pool_lock(fs_store *f, const char *key, const char *when_coll, json_t *when, char **err)
{
    char *pid = fs_id(key);
    json_t *d = NULL;
    int rc = fs_get(f, "pools", pid, &d, err);
    if (rc == STORE_NOTFOUND) {
        d = json_pack("{s:s}", "pool", key);
        rc = STORE_OK;
    }
    if (rc == STORE_OK) {
        json_object_del(d, "_id");
        fs_set_int(d, "n", fs_int(d, "n") + 1);
        fs_put_with(f, "pools", pid, d, when_coll, when);
    } else {
        json_decref(d);
        json_decref(when);
    }
    free(pid);
    return rc;
}

int fs_pool_active(store *s, const char *project, const char *region, int64_t *active, char **err)
{
    fs_store *f = FS(s);
    char key[600];
    snprintf(key, sizeof key, "%s/%s", project, region);
    int rc = pool_lock(f, key, "steps",
                       json_pack("{s:s,s:s,s:s}", "state", "launching", "project", project, "region", region), err);
    json_t *docs = NULL, *d;
    if (rc == STORE_OK)
        rc = fs_query(f, "steps", fs_where("project", "EQUAL", json_string(project)), NULL, 0, NULL, 0, NULL, &docs, err);
    size_t i;
    int64_t n = 0;
    json_array_foreach(docs, i, d) if (str_is(d, "project", project) && str_is(d, "region", region) &&
                                       state_in(d, STEP_IN_FLIGHT)) n++;
    json_decref(docs);
    if (rc == STORE_OK) *active = n;
    return rc;
}

static int wait_doc(fs_store *f, const char *run_id, const char *name, json_t **d, char **err)
{
    char *wid = fs_id2(run_id, name);
    int rc = fs_get(f, "waits", wid, d, err);
    free(wid);
    return rc;
}

static void doc_write(fs_store *f, const char *coll, const char *id, json_t *d)
{
    json_object_del(d, "_id");
    fs_put(f, coll, id, d);
}

int fs_step_wait_capacity(store *s, const char *run_id, const char *name, int from_state, int attempt,
                          const char *project, const char *region, int64_t next_check_at, const char *note,
                          char **err)
{
    fs_store *f = FS(s);
    const char *from = store_step_state_name((store_step_state)from_state);
    int rc;
    FS_UNIT(f, rc, err, {
        char *sid = fs_id2(run_id, name), *wid = fs_id2(run_id, name);
        json_t *d = NULL, *w = NULL;
        rc = fs_get(f, "steps", sid, &d, NULL);
        if (rc == STORE_OK || rc == STORE_NOTFOUND) {
            if (rc != STORE_OK || fs_int(d, "attempt") != attempt || !str_is(d, "state", from) ||
                (strcmp(from, "pending") != 0 && fs_str(d, "job_id") != NULL))
                rc = store_fail(err, STORE_CONFLICT, "step_wait_capacity: step %s of run %s moved", name, run_id);
        }
        if (rc == STORE_OK) {
            int64_t now = fs_now(f);
            /* A launching step without a job forgets its intent, so the same attempt (the same job name) goes
             * again; a pending one keeps its last attempt's job name, from which the next attempt is numbered. */
            if (strcmp(from, "launching") == 0) {
                const char *jn = fs_str(d, "job_name");
                char *kid = jn ? fs_id(jn) : NULL;
                json_t *k = NULL;
                if (kid && fs_get(f, "jobnames", kid, &k, NULL) == STORE_OK && str_is(k, "run_id", run_id) &&
                    str_is(k, "name", name))
                    fs_delete(f, "jobnames", kid);
                json_decref(k);
                free(kid);
                json_object_del(d, "job_name");
                json_object_del(d, "request");
                json_object_del(d, "started_at");
                json_object_del(d, "deadline_at");
            }
            fs_set_str(d, "state", "pending");
            fs_set_int(d, "next_check_at", next_check_at);
            fs_set_int(d, "due", next_check_at);
            fs_set_str(d, "error", note);
            fs_set_int(d, "updated_at", now);
            fs_set_int(d, "check_failures", 0);
            fs_set_str(d, "project", project);
            fs_set_str(d, "region", region);
            doc_write(f, "steps", sid, json_incref(d));
            /* The first wait's time stays: it orders the waiters of a pool. parked_at is the step's next_check_at
             * as parked here: a wake moves only a step that still has it. */
            rc = fs_get(f, "waits", wid, &w, err);
            if (rc == STORE_NOTFOUND) {
                w = json_pack("{s:s,s:s,s:I}", "run_id", run_id, "name", name, "since", (json_int_t)now);
                rc = STORE_OK;
            }
            if (rc == STORE_OK) {
                fs_set_str(w, "project", project);
                fs_set_str(w, "region", region);
                fs_set_int(w, "parked_at", next_check_at);
                doc_write(f, "waits", wid, json_incref(w));
            }
        }
        json_decref(d);
        json_decref(w);
        free(sid);
        free(wid);
    });
    return rc;
}

int fs_step_wait_since(store *s, const char *run_id, const char *name, int64_t *since, char **err)
{
    json_t *w = NULL;
    int rc = wait_doc(FS(s), run_id, name, &w, err);
    if (rc == STORE_OK) *since = fs_int(w, "since");
    json_decref(w);
    return rc == STORE_NOTFOUND ? STORE_OK : rc;
}

static int since_cmp(const void *a, const void *b)
{
    int64_t x = fs_int(*(json_t *const *)a, "since"), y = fs_int(*(json_t *const *)b, "since");
    return (x > y) - (x < y);
}

int fs_pool_wake(store *s, const char *project, const char *region, int n, int *woken, char **err)
{
    fs_store *f = FS(s);
    int rc;
    FS_UNIT(f, rc, err, {
        json_t *docs = NULL, *w;
        int64_t now = fs_now(f);
        int k = 0;
        rc = fs_query(f, "waits", fs_where("project", "EQUAL", json_string(project)), NULL, 0, NULL, 0, NULL, &docs, err);
        size_t cnt = json_array_size(docs), m = 0, i;
        json_t **v = rc == STORE_OK ? xcalloc(cnt + 1, sizeof *v) : NULL;
        if (v) json_array_foreach(docs, i, w) if (str_is(w, "project", project) && str_is(w, "region", region)) v[m++] = w;
        if (v) qsort(v, m, sizeof *v, since_cmp);
        /* Due at their first wait's time: the oldest waiter is taken first (store_step_due goes by `due`). */
        for (i = 0; rc == STORE_OK && i < m && k < n; i++) {
            char *sid = fs_id2(fs_str(v[i], "run_id"), fs_str(v[i], "name"));
            json_t *d = NULL;
            int grc = fs_get(f, "steps", sid, &d, NULL);
            if (grc == STORE_OK && str_is(d, "state", "pending") &&
                fs_int(d, "next_check_at") == fs_int(v[i], "parked_at") && fs_int(d, "next_check_at") > now) {
                fs_set_int(d, "next_check_at", fs_int(v[i], "since"));
                fs_set_int(d, "due", fs_int(v[i], "since"));
                doc_write(f, "steps", sid, json_incref(d));
                k++;
            } else if (grc != STORE_OK && grc != STORE_NOTFOUND) {
                rc = store_fail(err, grc, "pool_wake: cannot read a waiting step");
            }
            json_decref(d);
            free(sid);
        }
        free(v);
        json_decref(docs);
        if (woken != NULL) *woken = k;
    });
    return rc;
}

int fs_step_wait_clear(store *s, const char *run_id, const char *name, char **err)
{
    fs_store *f = FS(s);
    int rc;
    FS_UNIT(f, rc, err, {
        json_t *w = NULL;
        rc = wait_doc(f, run_id, name, &w, err);
        if (rc == STORE_OK) fs_delete(f, "waits", fs_str(w, "_id"));
        if (rc == STORE_NOTFOUND) rc = STORE_OK;
        json_decref(w);
    });
    return rc;
}

/* ---- runs waiting for their workflow's max_active_runs ---- */

static int runs_of(fs_store *f, const char *field, const char *value, json_t **docs, char **err)
{
    return fs_query(f, "runs", fs_where(field, "EQUAL", json_string(value)), NULL, 0, NULL, 0, NULL, docs, err);
}

int fs_run_slots(store *s, const char *workflow, int64_t *active, char **err)
{
    fs_store *f = FS(s);
    char key[600];
    snprintf(key, sizeof key, "runs:%s", workflow);
    int rc = pool_lock(f, key, "runs", json_pack("{s:s,s:s}", "state", "running", "workflow", workflow), err);
    json_t *docs = NULL, *d;
    if (rc == STORE_OK) rc = runs_of(f, "workflow", workflow, &docs, err);
    int64_t n = 0;
    size_t i;
    json_array_foreach(docs, i, d) if (str_is(d, "workflow", workflow) && state_in(d, RUN_ACTIVE)) n++;
    json_decref(docs);
    if (rc == STORE_OK) *active = n;
    return rc;
}

static int created_cmp(const void *a, const void *b)
{
    const json_t *x = *(json_t *const *)a, *y = *(json_t *const *)b;
    int64_t p = fs_int(x, "created_at"), q = fs_int(y, "created_at");
    if (p != q) return (p > q) - (p < q);
    return strcmp(fs_str(x, "id") ? fs_str(x, "id") : "", fs_str(y, "id") ? fs_str(y, "id") : "");
}

/* The `id`s of v[0..m) (at most limit) as a new array of strings: *ids, *n. */
static void ids_out(json_t **v, size_t m, int limit, char ***ids, size_t *n)
{
    if (m > (size_t)limit) m = (size_t)limit;
    if (m == 0) return;
    *ids = xcalloc(m, sizeof **ids);
    for (size_t i = 0; i < m; i++) (*ids)[i] = store_strdup(fs_str(v[i], "id"));
    *n = m;
}

int fs_run_queued(store *s, const char *workflow, int limit, char ***ids, size_t *n, char **err)
{
    json_t *docs = NULL, *d;
    int rc = runs_of(FS(s), "workflow", workflow, &docs, err);
    size_t cnt = json_array_size(docs), m = 0, i;
    json_t **v = rc == STORE_OK ? xcalloc(cnt + 1, sizeof *v) : NULL;
    if (v) json_array_foreach(docs, i, d) if (str_is(d, "workflow", workflow) && str_is(d, "state", "pending")) v[m++] = d;
    if (rc == STORE_OK) {
        qsort(v, m, sizeof *v, created_cmp);
        ids_out(v, m, limit, ids, n);
    }
    free(v);
    json_decref(docs);
    return rc;
}

int fs_run_count_active(store *s, const char *workflow, int64_t *active, int64_t *queued, char **err)
{
    json_t *docs = NULL, *d;
    int rc = runs_of(FS(s), "workflow", workflow, &docs, err);
    size_t i;
    json_array_foreach(docs, i, d) {
        if (!str_is(d, "workflow", workflow)) continue;
        if (state_in(d, RUN_ACTIVE)) ++*active;
        else if (str_is(d, "state", "pending")) ++*queued;
    }
    json_decref(docs);
    return rc;
}

int fs_run_count_origin(store *s, const char *workflow, const char *origin, int64_t *counts, char **err)
{
    json_t *docs = NULL, *d;
    int rc = runs_of(FS(s), "origin", origin, &docs, err);
    size_t i;
    json_array_foreach(docs, i, d) {
        store_run_state st;
        if (str_is(d, "workflow", workflow) && str_is(d, "origin", origin) &&
            store_run_state_parse(fs_str(d, "state"), &st) == STORE_OK)
            counts[st]++;
    }
    json_decref(docs);
    return rc;
}

/* ---- logical times of runs, and the schedules' progress ---- */

int fs_run_times_put(store *s, const char *run_id, int64_t logical, int64_t start, int64_t end, char **err)
{
    fs_store *f = FS(s);
    char *rid = fs_id(run_id);
    int rc;
    FS_UNIT(f, rc, err, {
        json_t *d = NULL;
        rc = fs_get(f, "runtimes", rid, &d, err);
        json_decref(d);
        if (rc == STORE_OK) { /* the first times stay (the SQL's ON CONFLICT DO NOTHING) */
        } else if (rc == STORE_NOTFOUND) {
            fs_create(f, "runtimes", rid,
                      json_pack("{s:s,s:I,s:I,s:I}", "run_id", run_id, "logical_time", (json_int_t)logical,
                                "interval_start", (json_int_t)start, "interval_end", (json_int_t)end));
            rc = STORE_OK;
        }
    });
    free(rid);
    return rc;
}

int fs_run_times_get(store *s, const char *run_id, int64_t *logical, int64_t *start, int64_t *end, char **err)
{
    char *rid = fs_id(run_id);
    json_t *d = NULL;
    int rc = fs_get(FS(s), "runtimes", rid, &d, err);
    free(rid);
    if (rc == STORE_OK) {
        *logical = fs_int(d, "logical_time");
        *start = fs_int(d, "interval_start");
        *end = fs_int(d, "interval_end");
    }
    json_decref(d);
    return rc; /* STORE_NOTFOUND without a message: most runs have no logical time */
}

int fs_schedule_mark(store *s, const char *workflow, int64_t seen, int64_t handled, int64_t *mark, char **err)
{
    fs_store *f = FS(s);
    char *mid = fs_id(workflow);
    int rc;
    /* The first sight records `seen`; later calls only move the mark forward (replicas may race: the larger wins,
     * the loser's unit reruns on the precondition and sees the winner's mark). */
    FS_UNIT(f, rc, err, {
        json_t *d = NULL;
        rc = fs_get(f, "marks", mid, &d, err);
        if (rc == STORE_NOTFOUND) {
            d = json_pack("{s:s,s:I}", "workflow", workflow, "handled_to", (json_int_t)seen);
            *mark = seen;
            fs_create(f, "marks", mid, json_incref(d));
            rc = STORE_OK;
        } else if (rc == STORE_OK) {
            *mark = fs_int(d, "handled_to");
            if (handled > *mark) {
                *mark = handled;
                fs_set_int(d, "handled_to", handled);
                doc_write(f, "marks", mid, json_incref(d));
            }
        }
        json_decref(d);
    });
    free(mid);
    return rc;
}

/* ---- backfills: one document per backfill, keyed by its id ---- */

int fs_backfill_put(store *s, const char *id, const char *workflow, const char *state, const char *doc, char **err)
{
    fs_store *f = FS(s);
    char *bid = fs_id(id);
    int rc;
    FS_UNIT(f, rc, err, {
        json_t *d = NULL;
        int64_t now = fs_now(f);
        rc = fs_get(f, "backfills", bid, &d, err);
        if (rc == STORE_NOTFOUND) {
            d = json_pack("{s:s,s:s,s:I}", "id", id, "workflow", workflow, "created_at", (json_int_t)now);
            rc = STORE_OK;
        }
        if (rc == STORE_OK) {
            fs_set_str(d, "state", state);
            fs_set_str(d, "doc", doc);
            fs_set_int(d, "updated_at", now);
            doc_write(f, "backfills", bid, json_incref(d));
        }
        json_decref(d);
    });
    free(bid);
    return rc;
}

int fs_backfill_get(store *s, const char *id, char **state, char **doc, char **err)
{
    char *bid = fs_id(id);
    json_t *d = NULL;
    int rc = fs_get(FS(s), "backfills", bid, &d, err);
    free(bid);
    if (rc == STORE_NOTFOUND) rc = store_fail(err, rc, "backfill_get: no backfill %s", id);
    if (rc == STORE_OK) {
        *state = store_strdup(fs_str(d, "state"));
        *doc = store_strdup(fs_str(d, "doc"));
    }
    json_decref(d);
    return rc;
}

static int newest_cmp(const void *a, const void *b) /* created_at descending, then id */
{
    const json_t *x = *(json_t *const *)a, *y = *(json_t *const *)b;
    int64_t p = fs_int(x, "created_at"), q = fs_int(y, "created_at");
    if (p != q) return (p < q) - (p > q);
    return strcmp(fs_str(x, "id") ? fs_str(x, "id") : "", fs_str(y, "id") ? fs_str(y, "id") : "");
}

int fs_backfill_list(store *s, int only_running, int limit, char ***ids, size_t *n, char **err)
{
    json_t *docs = NULL, *d;
    int rc = fs_query(FS(s), "backfills", only_running ? fs_where("state", "EQUAL", json_string("running")) : NULL, NULL,
                      0, NULL, 0, NULL, &docs, err);
    size_t cnt = json_array_size(docs), m = 0, i;
    json_t **v = rc == STORE_OK ? xcalloc(cnt + 1, sizeof *v) : NULL;
    if (v) json_array_foreach(docs, i, d) if (!only_running || str_is(d, "state", "running")) v[m++] = d;
    if (rc == STORE_OK) {
        qsort(v, m, sizeof *v, newest_cmp);
        ids_out(v, m, limit, ids, n);
    }
    free(v);
    json_decref(docs);
    return rc;
}

/* Deletes the waits and the logical times of run_id in the current unit. */
int fs_sched_delete_run(fs_store *f, const char *run_id, char **err)
{
    json_t *docs = NULL, *d;
    int rc = fs_query(f, "waits", fs_where("run_id", "EQUAL", json_string(run_id)), NULL, 0, NULL, 0, NULL, &docs, err);
    size_t i;
    json_array_foreach(docs, i, d) if (str_is(d, "run_id", run_id)) fs_delete(f, "waits", fs_str(d, "_id"));
    json_decref(docs);
    char *rid = fs_id(run_id);
    json_t *t = NULL;
    if (rc == STORE_OK && fs_get(f, "runtimes", rid, &t, NULL) == STORE_OK) fs_delete(f, "runtimes", rid);
    json_decref(t);
    free(rid);
    return rc;
}
