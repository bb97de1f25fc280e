/* store_firestore_attempts: the history of a step's attempts (store.h, "attempts") as Firestore documents, called
 * by store_attempts.c for a Firestore handle (which shares the capture logic with the SQL backends).
 * Layout: attempts/{fs_id2(run_id, step) "~" attempt} (every attempts column; times of 0 are left out). Written in
 * the unit or explicit transaction of the step change it copies (store.c opens one around the pair); a run's
 * attempts go with it (fs_attempts_delete_run, from store_run_prune).
 * Uses: store_firestore.h. Must not: change a step's document (store_firestore_steps.c owns it). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mem.h"
#include "store_firestore.h"
#include "store_firestore_attempts.h"
#include "util.h"

int fs_attempts_delete_run(fs_store *f, const char *run_id, char **err);

static char *att_id(const char *run_id, const char *step, int attempt)
{
    char *two = fs_id2(run_id, step), *id = util_printf("%s~%d", two, attempt);
    free(two);
    return id;
}

static void att_from(const json_t *d, store_attempt *a)
{
    memset(a, 0, sizeof *a);
    a->run_id = store_strdup(fs_str(d, "run_id"));
    a->step = store_strdup(fs_str(d, "step"));
    a->attempt = (int)fs_int(d, "attempt");
    a->job_name = store_strdup(fs_str(d, "job_name"));
    a->job_id = store_strdup(fs_str(d, "job_id"));
    a->project = store_strdup(fs_str(d, "project"));
    a->region = store_strdup(fs_str(d, "region"));
    a->request_json = store_strdup(fs_str(d, "request"));
    store_step_state st = STORE_STEP_LAUNCHING;
    if (fs_str(d, "state") != NULL) store_step_state_parse(fs_str(d, "state"), &st);
    a->state = st;
    a->job_state = store_strdup(fs_str(d, "job_state"));
    a->error = store_strdup(fs_str(d, "error"));
    a->failure_cause = store_strdup(fs_str(d, "failure_cause"));
    a->launched_at = fs_int(d, "launched_at");
    a->running_at = fs_int(d, "running_at");
    a->ended_at = fs_int(d, "ended_at");
    a->updated_at = fs_int(d, "updated_at");
}

static int att_doc(fs_store *f, const char *run_id, const char *step, int attempt, json_t **d, char **err)
{
    char *id = att_id(run_id, step, attempt);
    int rc = fs_get(f, "attempts", id, d, err);
    free(id);
    return rc;
}

static void att_write(fs_store *f, json_t *d)
{
    char *id = att_id(fs_str(d, "run_id"), fs_str(d, "step"), (int)fs_int(d, "attempt"));
    if (id) fs_put(f, "attempts", id, d);
    else json_decref(d);
    free(id);
}

int fs_attempt_get(store *s, const char *run_id, const char *step, int attempt, store_attempt *out, char **err)
{
    json_t *d = NULL;
    int rc = att_doc(FS(s), run_id, step, attempt, &d, err);
    if (rc == STORE_NOTFOUND)
        rc = store_fail(err, rc, "attempt_get: run %s has no attempt %d of step %s", run_id, attempt, step);
    if (rc == STORE_OK) att_from(d, out);
    json_decref(d);
    return rc;
}

int fs_attempt_put(store *s, const store_attempt *a, char **err)
{
    fs_store *f = FS(s);
    int rc;
    FS_UNIT(f, rc, err, {
        json_t *d = NULL;
        rc = att_doc(f, a->run_id, a->step, a->attempt, &d, err); /* recorded: the write's precondition */
        json_decref(d);
        if (rc == STORE_NOTFOUND) rc = STORE_OK;
        if (rc == STORE_OK) {
            json_t *nd = json_object();
            fs_set_str(nd, "run_id", a->run_id);
            fs_set_str(nd, "step", a->step);
            fs_set_int(nd, "attempt", a->attempt);
            fs_set_str(nd, "job_name", a->job_name);
            fs_set_str(nd, "job_id", a->job_id);
            fs_set_str(nd, "project", a->project);
            fs_set_str(nd, "region", a->region);
            fs_set_str(nd, "request", a->request_json);
            fs_set_str(nd, "state", store_step_state_name(a->state));
            fs_set_str(nd, "job_state", a->job_state);
            fs_set_str(nd, "error", a->error);
            fs_set_str(nd, "failure_cause", a->failure_cause);
            fs_set_time(nd, "launched_at", a->launched_at);
            fs_set_time(nd, "running_at", a->running_at);
            fs_set_time(nd, "ended_at", a->ended_at);
            fs_set_int(nd, "updated_at", a->updated_at);
            att_write(f, nd);
        }
    });
    return rc;
}

static int att_cmp(const void *x, const void *y)
{
    const json_t *a = *(json_t *const *)x, *b = *(json_t *const *)y;
    int c = strcmp(fs_str(a, "step") ? fs_str(a, "step") : "", fs_str(b, "step") ? fs_str(b, "step") : "");
    if (c) return c;
    int64_t p = fs_int(a, "attempt"), q = fs_int(b, "attempt");
    return (p > q) - (p < q);
}

int fs_attempt_list_run(store *s, const char *run_id, store_attempt_list *out, char **err)
{
    json_t *docs = NULL, *d;
    int rc = fs_query(FS(s), "attempts", fs_where("run_id", "EQUAL", json_string(run_id)), NULL, 0, NULL, 0, NULL,
                      &docs, err);
    size_t n = json_array_size(docs), k = 0, i;
    json_t **v = rc == STORE_OK ? xcalloc(n + 1, sizeof *v) : NULL;
    if (rc == STORE_OK) {
        json_array_foreach(docs, i, d) if (fs_str(d, "run_id") && strcmp(fs_str(d, "run_id"), run_id) == 0) v[k++] = d;
        qsort(v, k, sizeof *v, att_cmp);
        if (k > 0) out->items = xcalloc(k, sizeof *out->items);
        for (i = 0; rc == STORE_OK && i < k; i++) att_from(v[i], &out->items[out->count++]);
    }
    free(v);
    json_decref(docs);
    return rc;
}

int fs_attempt_set_running(store *s, const char *run_id, const char *step, int attempt, int64_t at, char **err)
{
    fs_store *f = FS(s);
    int rc;
    FS_UNIT(f, rc, err, {
        json_t *d = NULL;
        rc = att_doc(f, run_id, step, attempt, &d, err);
        if (rc == STORE_NOTFOUND)
            rc = store_fail(err, rc, "attempt_set_running: run %s has no attempt %d of step %s", run_id, attempt, step);
        /* The earliest time any source gave is kept. */
        if (rc == STORE_OK && (fs_int(d, "running_at") == 0 || fs_int(d, "running_at") > at)) {
            fs_set_int(d, "running_at", at);
            fs_set_int(d, "updated_at", fs_now(f));
            att_write(f, json_incref(d));
        }
        json_decref(d);
    });
    return rc;
}

int fs_attempt_end(store *s, const char *run_id, const char *step, int attempt, store_step_state state,
                   const char *error, char **err)
{
    fs_store *f = FS(s);
    int rc;
    FS_UNIT(f, rc, err, {
        json_t *d = NULL;
        rc = att_doc(f, run_id, step, attempt, &d, err);
        if (rc == STORE_NOTFOUND)
            rc = store_fail(err, rc, "attempt_end: run %s has no attempt %d of step %s", run_id, attempt, step);
        if (rc == STORE_OK) {
            int64_t now = fs_now(f);
            fs_set_str(d, "state", store_step_state_name(state));
            if (error != NULL) fs_set_str(d, "error", error);
            if (fs_int(d, "ended_at") == 0) fs_set_int(d, "ended_at", now);
            fs_set_int(d, "updated_at", now);
            att_write(f, json_incref(d));
        }
        json_decref(d);
    });
    return rc;
}

int fs_attempt_set_cause(store *s, const char *run_id, const char *step, int attempt, const char *cause, char **err)
{
    fs_store *f = FS(s);
    int rc;
    FS_UNIT(f, rc, err, {
        json_t *d = NULL;
        rc = att_doc(f, run_id, step, attempt, &d, err);
        if (rc == STORE_NOTFOUND)
            rc = store_fail(err, rc, "attempt_set_cause: run %s has no attempt %d of step %s", run_id, attempt, step);
        if (rc == STORE_OK) {
            fs_set_str(d, "failure_cause", cause);
            fs_set_int(d, "updated_at", fs_now(f));
            att_write(f, json_incref(d));
        }
        json_decref(d);
    });
    return rc;
}

/* Deletes every attempt of run_id in the current unit. */
int fs_attempts_delete_run(fs_store *f, const char *run_id, char **err)
{
    json_t *docs = NULL, *d;
    int rc = fs_query(f, "attempts", fs_where("run_id", "EQUAL", json_string(run_id)), NULL, 0, NULL, 0, NULL, &docs,
                      err);
    size_t i;
    json_array_foreach(docs, i, d) if (fs_str(d, "run_id") && strcmp(fs_str(d, "run_id"), run_id) == 0)
        fs_delete(f, "attempts", fs_str(d, "_id"));
    json_decref(docs);
    return rc;
}
