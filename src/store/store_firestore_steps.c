/* store_firestore_steps: steps and the event inbox as Firestore documents.
 * Layout: steps/{fs_id2(run_id, name)} (every step column, plus `seq`, the step's place in its run, and `due` =
 * next_check_at while the step is pending or in flight, absent otherwise, so the engine's due query is one range on
 * one single-field index); jobnames/{fs_id(job_name)} and jobids/{fs_id(job_id)} -> {run_id, name}: the unique keys,
 * written in the commit that sets them. inbox/{id, 20 digits} (`pending` = id until processed, the fetch order);
 * inboxmsg/{fs_id(message_id)} and inboxkey/{fs_id2(job_id, state)} -> {event_id}: the dedupe keys, created with the
 * event; meta/inbox holds the next event id.
 * Uses: store_firestore.h. Must not: talk HTTP (store_firestore.c does) or lay out runs (store_firestore_ops.c). */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "job_state.h"
#include "mem.h"
#include "store_firestore.h"
#include "util.h"

int fs_run_doc(fs_store *f, const char *id, json_t **doc, char **err);
void fs_run_put(fs_store *f, json_t *doc);

static int state_is(const json_t *d, const char *const *names)
{
    const char *st = fs_str(d, "state");
    for (int i = 0; st && names[i]; i++)
        if (strcmp(st, names[i]) == 0) return 1;
    return 0;
}

static const char *const ACTIVE[] = {"pending", "launching", "running", "cancelling", NULL};
static const char *const IN_FLIGHT[] = {"launching", "running", "cancelling", NULL};
static const char *const TERMINAL[] = {"succeeded", "failed", "cancelled", "skipped", NULL};

/* Writes the step document back with `due` derived from its state. */
static void step_put(fs_store *f, json_t *d)
{
    if (state_is(d, ACTIVE)) fs_set_int(d, "due", fs_int(d, "next_check_at"));
    else json_object_del(d, "due");
    char *sid = fs_id2(fs_str(d, "run_id"), fs_str(d, "name"));
    fs_put(f, "steps", sid, d);
    free(sid);
}

static int step_from(const json_t *d, store_step *p, char **err)
{
    memset(p, 0, sizeof *p);
    p->run_id = store_strdup(fs_str(d, "run_id"));
    p->name = store_strdup(fs_str(d, "name"));
    p->attempt = (int)fs_int(d, "attempt");
    p->job_name = store_strdup(fs_str(d, "job_name"));
    p->job_id = store_strdup(fs_str(d, "job_id"));
    p->project = store_strdup(fs_str(d, "project"));
    p->region = store_strdup(fs_str(d, "region"));
    p->request_json = store_strdup(fs_str(d, "request"));
    p->job_state = store_strdup(fs_str(d, "job_state"));
    p->result_json = store_strdup(fs_str(d, "result"));
    p->error = store_strdup(fs_str(d, "error"));
    p->started_at = fs_int(d, "started_at");
    p->finished_at = fs_int(d, "finished_at");
    p->next_check_at = fs_int(d, "next_check_at");
    p->deadline_at = fs_int(d, "deadline_at");
    p->updated_at = fs_int(d, "updated_at");
    p->check_failures = (int)fs_int(d, "check_failures");
    p->hint_at = fs_int(d, "hint_at");
    p->failure_cause = store_strdup(fs_str(d, "failure_cause"));
    p->running_at = fs_int(d, "running_at");
    if (store_step_state_parse(fs_str(d, "state"), &p->state) != STORE_OK) {
        store_step_free(p);
        return store_fail(err, STORE_CORRUPT, "step document %s has unknown state", fs_str(d, "_id"));
    }
    return STORE_OK;
}

static int step_doc(fs_store *f, const char *run_id, const char *name, json_t **d, char **err)
{
    char *sid = fs_id2(run_id, name);
    int rc = fs_get(f, "steps", sid, d, err);
    free(sid);
    return rc;
}

/* Reads the key document coll/fs_id(key): STORE_EXISTS when it is there and names another step than
 * run_id/name, STORE_OK otherwise (absent, or this step's own). */
static int key_free_for(fs_store *f, const char *coll, const char *key, const char *run_id, const char *name,
                        int *own, char **err)
{
    char *kid = fs_id(key);
    json_t *k = NULL;
    *own = 0;
    int rc = fs_get(f, coll, kid, &k, err);
    free(kid);
    if (rc == STORE_NOTFOUND) return STORE_OK;
    if (rc != STORE_OK) return rc;
    *own = strcmp(fs_str(k, "run_id"), run_id) == 0 && strcmp(fs_str(k, "name"), name) == 0;
    json_decref(k);
    return *own ? STORE_OK
                : store_fail(err, STORE_EXISTS, "step '%s/%s': job name or job id is already used by another step",
                             run_id, name);
}

static void key_set(fs_store *f, const char *coll, const char *key, const char *run_id, const char *name)
{
    char *kid = fs_id(key);
    fs_put(f, coll, kid, json_pack("{s:s,s:s}", "run_id", run_id, "name", name));
    free(kid);
}

static void key_drop(fs_store *f, const char *coll, const char *key)
{
    char *kid = key ? fs_id(key) : NULL;
    if (kid) fs_delete(f, coll, kid);
    free(kid);
}

static int fs_step_insert(store *s, const store_step *p, char **err)
{
    fs_store *f = FS(s);
    int rc;
    FS_UNIT(f, rc, err, {
        json_t *run = NULL, *old = NULL;
        int own;
        rc = fs_run_doc(f, p->run_id, &run, NULL);
        if (rc == STORE_NOTFOUND) rc = store_fail(err, STORE_INVALID, "step '%s': no run with id '%s'", p->name, p->run_id);
        if (rc == STORE_OK) {
            rc = step_doc(f, p->run_id, p->name, &old, err);
            rc = rc == STORE_OK ? store_fail(err, STORE_EXISTS, "step '%s/%s' already exists", p->run_id, p->name)
                 : rc == STORE_NOTFOUND ? STORE_OK : rc;
        }
        if (rc == STORE_OK && p->job_name) rc = key_free_for(f, "jobnames", p->job_name, p->run_id, p->name, &own, err);
        if (rc == STORE_OK && p->job_id) rc = key_free_for(f, "jobids", p->job_id, p->run_id, p->name, &own, err);
        if (rc == STORE_OK) {
            int64_t now = fs_now(f), seq = fs_int(run, "nsteps") + 1;
            fs_set_int(run, "nsteps", seq);
            fs_run_put(f, json_incref(run));
            json_t *d = json_object();
            fs_set_str(d, "run_id", p->run_id);
            fs_set_str(d, "name", p->name);
            fs_set_str(d, "state", store_step_state_name(p->state));
            fs_set_int(d, "attempt", p->attempt ? p->attempt : 1);
            fs_set_str(d, "job_name", p->job_name);
            fs_set_str(d, "job_id", p->job_id);
            fs_set_str(d, "project", p->project);
            fs_set_str(d, "region", p->region);
            fs_set_str(d, "request", p->request_json);
            fs_set_str(d, "job_state", p->job_state);
            fs_set_str(d, "result", p->result_json);
            fs_set_str(d, "error", p->error);
            fs_set_time(d, "started_at", p->started_at);
            fs_set_time(d, "finished_at", p->finished_at);
            fs_set_int(d, "next_check_at", p->next_check_at);
            fs_set_time(d, "deadline_at", p->deadline_at);
            fs_set_int(d, "updated_at", p->updated_at ? p->updated_at : now);
            fs_set_int(d, "seq", seq);
            step_put(f, d);
            if (p->job_name) key_set(f, "jobnames", p->job_name, p->run_id, p->name);
            if (p->job_id) key_set(f, "jobids", p->job_id, p->run_id, p->name);
        }
        json_decref(run);
        json_decref(old);
    });
    return rc;
}

static int fs_step_get(store *s, const char *run_id, const char *name, store_step *out, char **err)
{
    json_t *d = NULL;
    int rc = step_doc(FS(s), run_id, name, &d, err);
    if (rc == STORE_NOTFOUND) return store_fail(err, rc, "no step '%s/%s'", run_id, name);
    if (rc == STORE_OK) rc = step_from(d, out, err);
    json_decref(d);
    return rc;
}

static int seq_cmp(const void *a, const void *b)
{
    int64_t x = fs_int(*(json_t *const *)a, "seq"), y = fs_int(*(json_t *const *)b, "seq");
    return (x > y) - (x < y);
}

static int due_cmp(const void *a, const void *b)
{
    int64_t x = fs_int(*(json_t *const *)a, "due"), y = fs_int(*(json_t *const *)b, "due");
    return (x > y) - (x < y);
}

/* The documents of `docs` that pass `keep`, sorted by `cmp`, at most max (0: all), as steps. */
static int steps_from(json_t *docs, int (*keep)(const json_t *, const void *), const void *arg,
                      int (*cmp)(const void *, const void *), size_t max, store_step_list *out, char **err)
{
    size_t n = json_array_size(docs), k = 0, i;
    json_t **v = xcalloc(n + 1, sizeof *v), *d;
    out->items = xcalloc(n + 1, sizeof *out->items);
    json_array_foreach(docs, i, d) if (keep == NULL || keep(d, arg)) v[k++] = d;
    qsort(v, k, sizeof *v, cmp);
    if (max && k > max) k = max;
    int rc = STORE_OK;
    for (i = 0; rc == STORE_OK && i < k; i++)
        if ((rc = step_from(v[i], &out->items[out->count], err)) == STORE_OK) out->count++;
    free(v);
    return rc;
}

static int of_run(const json_t *d, const void *run_id) { return strcmp(fs_str(d, "run_id"), run_id) == 0; }

static int fs_step_list_run(store *s, const char *run_id, store_step_list *out, char **err)
{
    json_t *docs = NULL;
    int rc = fs_query(FS(s), "steps", fs_where("run_id", "EQUAL", json_string(run_id)), NULL, 0, NULL, 0, NULL, &docs, err);
    if (rc == STORE_OK) rc = steps_from(docs, of_run, run_id, seq_cmp, 0, out, err);
    json_decref(docs);
    return rc;
}

static int fs_step_find(store *s, store_step_key key, const char *value, store_step *out, char **err)
{
    fs_store *f = FS(s);
    const char *coll = key == STORE_KEY_JOB_NAME ? "jobnames" : "jobids";
    char *kid = fs_id(value);
    json_t *k = NULL;
    int rc = fs_get(f, coll, kid, &k, err);
    free(kid);
    if (rc == STORE_OK) {
        json_t *d = NULL;
        rc = step_doc(f, fs_str(k, "run_id"), fs_str(k, "name"), &d, err);
        if (rc == STORE_OK) rc = step_from(d, out, err);
        json_decref(d);
    }
    json_decref(k);
    if (rc == STORE_NOTFOUND)
        rc = store_fail(err, rc, "no step with %s '%s'", key == STORE_KEY_JOB_NAME ? "job name" : "job id", value);
    return rc;
}

/* The failed compare-and-set's answer: CONFLICT naming the step's state, or NOTFOUND. */
static int cas_fail(const json_t *d, const char *run_id, const char *name, const char *what, char **err)
{
    if (d == NULL) return store_fail(err, STORE_NOTFOUND, "%s: no step '%s/%s'", what, run_id, name);
    return store_fail(err, STORE_CONFLICT, "%s: step '%s/%s' is %s at attempt %d", what, run_id, name,
                      fs_str(d, "state"), (int)fs_int(d, "attempt"));
}

static int at_attempt(const json_t *d, int attempt)
{
    return attempt == STORE_ATTEMPT_ANY || fs_int(d, "attempt") == attempt;
}

static int in_state(const json_t *d, int st)
{
    return st == STORE_STEP_ANY || strcmp(fs_str(d, "state"), store_step_state_name((store_step_state)st)) == 0;
}

/* The first time a job state JOB_STATE_RUNNING is recorded, when. */
static void note_running(json_t *d, const char *job_state, int64_t now)
{
    if (js_name_is(job_state, JS_RUNNING) && fs_int(d, "running_at") == 0)
        fs_set_int(d, "running_at", now);
}

/* One step compare-and-set as a unit: reads the step, lets `apply` check and change it (returning STORE_OK,
 * CONFLICT via cas_fail, or EXISTS), writes it back. */
typedef int (*step_apply)(fs_store *f, json_t *d, const void *arg, char **err);

static int step_cas(fs_store *f, const char *run_id, const char *name, step_apply apply, const void *arg,
                    const char *what, char **err)
{
    int rc;
    FS_UNIT(f, rc, err, {
        json_t *d = NULL;
        rc = step_doc(f, run_id, name, &d, err);
        if (rc == STORE_NOTFOUND) rc = cas_fail(NULL, run_id, name, what, err);
        if (rc == STORE_OK) rc = apply(f, d, arg, err);
        if (rc == STORE_OK) step_put(f, json_incref(d));
        json_decref(d);
    });
    return rc;
}

typedef struct {
    const char *run_id, *name;
    int expected_state, expected_attempt, attempt, check_failures;
    const store_intent *in;
    const char *job_id, *job_state, *text, *result, *error;
    int64_t next_check_at, claimed, hint_at;
    store_step_state next;
} step_args;

#define CAS_CHECK(cond, what)                                                                                \
    do {                                                                                                     \
        if (!(cond)) return cas_fail(d, a->run_id, a->name, what, err);                                      \
    } while (0)

static int apply_intent(fs_store *f, json_t *d, const void *arg, char **err)
{
    const step_args *a = arg;
    const store_intent *in = a->in;
    CAS_CHECK(in_state(d, a->expected_state) && at_attempt(d, a->expected_attempt), "record_intent");
    int own = 0, rc;
    const char *old_name = fs_str(d, "job_name");
    if (in->job_name && (old_name == NULL || strcmp(old_name, in->job_name) != 0)) {
        if ((rc = key_free_for(f, "jobnames", in->job_name, a->run_id, a->name, &own, err)) != STORE_OK) return rc;
        key_set(f, "jobnames", in->job_name, a->run_id, a->name);
    }
    if (old_name && (in->job_name == NULL || strcmp(old_name, in->job_name) != 0)) key_drop(f, "jobnames", old_name);
    key_drop(f, "jobids", fs_str(d, "job_id"));
    int64_t now = fs_now(f);
    fs_set_str(d, "state", "launching");
    fs_set_int(d, "attempt", in->attempt);
    fs_set_str(d, "job_name", in->job_name);
    fs_set_str(d, "project", in->project);
    fs_set_str(d, "region", in->region);
    fs_set_str(d, "request", in->request_json);
    fs_set_int(d, "started_at", now);
    fs_set_int(d, "updated_at", now);
    fs_set_int(d, "next_check_at", in->next_check_at ? in->next_check_at : now);
    fs_set_time(d, "deadline_at", in->deadline_at);
    const char *cleared[] = {"job_id", "job_state", "result", "error", "finished_at", "check_failures", "hint_at",
                             "failure_cause", "running_at"};
    for (size_t i = 0; i < sizeof cleared / sizeof *cleared; i++) json_object_del(d, cleared[i]);
    return STORE_OK;
}

static int fs_step_record_intent(store *s, const char *run_id, const char *name, int expected_state,
                                 int expected_attempt, const store_intent *in, char **err)
{
    step_args a = {.run_id = run_id, .name = name, .expected_state = expected_state,
                   .expected_attempt = expected_attempt, .in = in};
    return step_cas(FS(s), run_id, name, apply_intent, &a, "record_intent", err);
}

static int apply_set_job(fs_store *f, json_t *d, const void *arg, char **err)
{
    const step_args *a = arg;
    static const char *const LC[] = {"launching", "cancelling", NULL};
    const char *cur = fs_str(d, "job_id");
    CAS_CHECK(fs_int(d, "attempt") == a->attempt && state_is(d, LC) && (cur == NULL || strcmp(cur, a->job_id) == 0),
              "set_job");
    if (cur == NULL) {
        int own, rc = key_free_for(f, "jobids", a->job_id, a->run_id, a->name, &own, err);
        if (rc != STORE_OK) return rc;
        key_set(f, "jobids", a->job_id, a->run_id, a->name);
    }
    int64_t now = fs_now(f);
    fs_set_str(d, "job_id", a->job_id);
    if (a->job_state) fs_set_str(d, "job_state", a->job_state);
    note_running(d, a->job_state, now);
    fs_set_int(d, "next_check_at", a->next_check_at);
    fs_set_int(d, "updated_at", now);
    if (strcmp(fs_str(d, "state"), "launching") == 0) fs_set_str(d, "state", "running");
    return STORE_OK;
}

static int fs_step_set_job(store *s, const char *run_id, const char *name, int attempt, const char *job_id,
                           const char *job_state, int64_t next_check_at, char **err)
{
    step_args a = {.run_id = run_id, .name = name, .attempt = attempt, .job_id = job_id, .job_state = job_state,
                   .next_check_at = next_check_at};
    return step_cas(FS(s), run_id, name, apply_set_job, &a, "set_job", err);
}

static int apply_set_state(fs_store *f, json_t *d, const void *arg, char **err)
{
    const step_args *a = arg;
    CAS_CHECK(in_state(d, a->expected_state) && at_attempt(d, a->expected_attempt), "step_set_state");
    int64_t now = fs_now(f);
    fs_set_str(d, "state", store_step_state_name(a->next));
    fs_set_int(d, "updated_at", now);
    if (store_step_state_terminal(a->next)) fs_set_int(d, "finished_at", now);
    return STORE_OK;
}

static int fs_step_set_state(store *s, const char *run_id, const char *name, int expected_state,
                             int expected_attempt, store_step_state next, char **err)
{
    step_args a = {.run_id = run_id, .name = name, .expected_state = expected_state,
                   .expected_attempt = expected_attempt, .next = next};
    return step_cas(FS(s), run_id, name, apply_set_state, &a, "step_set_state", err);
}

static int apply_finish(fs_store *f, json_t *d, const void *arg, char **err)
{
    const step_args *a = arg;
    CAS_CHECK(at_attempt(d, a->attempt) && !state_is(d, TERMINAL), "step_finish");
    int64_t now = fs_now(f);
    fs_set_str(d, "state", store_step_state_name(a->next));
    if (a->job_state) fs_set_str(d, "job_state", a->job_state);
    if (a->result) fs_set_str(d, "result", a->result);
    if (a->error) fs_set_str(d, "error", a->error);
    fs_set_int(d, "finished_at", now);
    fs_set_int(d, "updated_at", now);
    return STORE_OK;
}

static int fs_step_finish(store *s, const char *run_id, const char *name, int attempt, store_step_state final,
                          const char *job_state, const char *result_json, const char *error, char **err)
{
    step_args a = {.run_id = run_id, .name = name, .attempt = attempt, .next = final, .job_state = job_state,
                   .result = result_json, .error = error};
    return step_cas(FS(s), run_id, name, apply_finish, &a, "step_finish", err);
}

static int apply_reclaim(fs_store *f, json_t *d, const void *arg, char **err)
{
    const step_args *a = arg;
    static const char *const LC[] = {"launching", "cancelling", NULL};
    CAS_CHECK(fs_int(d, "attempt") == a->attempt && fs_int(d, "next_check_at") == a->claimed && state_is(d, LC) &&
                  fs_str(d, "job_id") == NULL,
              "step_reclaim");
    fs_set_int(d, "next_check_at", a->next_check_at);
    fs_set_int(d, "check_failures", a->check_failures);
    fs_set_int(d, "updated_at", fs_now(f));
    return STORE_OK;
}

static int fs_step_reclaim(store *s, const char *run_id, const char *name, int attempt, int64_t claimed,
                           int64_t next_check_at, int check_failures, char **err)
{
    step_args a = {.run_id = run_id, .name = name, .attempt = attempt, .claimed = claimed,
                   .next_check_at = next_check_at, .check_failures = check_failures};
    return step_cas(FS(s), run_id, name, apply_reclaim, &a, "step_reclaim", err);
}

static int apply_set_check(fs_store *f, json_t *d, const void *arg, char **err)
{
    const step_args *a = arg;
    CAS_CHECK(fs_int(d, "attempt") == a->attempt, "set_check");
    int64_t now = fs_now(f);
    fs_set_int(d, "next_check_at", a->next_check_at);
    fs_set_int(d, "check_failures", a->check_failures);
    note_running(d, a->job_state, now);
    if (a->job_state) fs_set_str(d, "job_state", a->job_state);
    fs_set_int(d, "updated_at", now);
    return STORE_OK;
}

static int fs_step_set_check(store *s, const char *run_id, const char *name, int attempt, int64_t next_check_at,
                             int check_failures, const char *job_state, char **err)
{
    step_args a = {.run_id = run_id, .name = name, .attempt = attempt, .next_check_at = next_check_at,
                   .check_failures = check_failures, .job_state = job_state};
    return step_cas(FS(s), run_id, name, apply_set_check, &a, "set_check", err);
}

static int apply_set_hint(fs_store *f, json_t *d, const void *arg, char **err)
{
    const step_args *a = arg;
    CAS_CHECK(fs_int(d, "attempt") == a->attempt && state_is(d, IN_FLIGHT), "set_hint");
    if (fs_int(d, "hint_at") == 0) fs_set_int(d, "hint_at", a->hint_at);
    if (a->next_check_at < fs_int(d, "next_check_at")) fs_set_int(d, "next_check_at", a->next_check_at);
    fs_set_int(d, "updated_at", fs_now(f));
    return STORE_OK;
}

static int fs_step_set_hint(store *s, const char *run_id, const char *name, int attempt, int64_t hint_at,
                            int64_t next_check_at, char **err)
{
    step_args a = {.run_id = run_id, .name = name, .attempt = attempt, .hint_at = hint_at, .next_check_at = next_check_at};
    return step_cas(FS(s), run_id, name, apply_set_hint, &a, "set_hint", err);
}

static int apply_set_note(fs_store *f, json_t *d, const void *arg, char **err)
{
    (void)f;
    const step_args *a = arg;
    CAS_CHECK(fs_int(d, "attempt") == a->attempt && state_is(d, IN_FLIGHT), "set_note");
    fs_set_str(d, "error", a->text);
    return STORE_OK;
}

static int fs_step_set_note(store *s, const char *run_id, const char *name, int attempt, const char *note, char **err)
{
    step_args a = {.run_id = run_id, .name = name, .attempt = attempt, .text = note};
    return step_cas(FS(s), run_id, name, apply_set_note, &a, "set_note", err);
}

static int apply_set_cause(fs_store *f, json_t *d, const void *arg, char **err)
{
    (void)f;
    const step_args *a = arg;
    CAS_CHECK(fs_int(d, "attempt") == a->attempt, "set_cause");
    fs_set_str(d, "failure_cause", a->text);
    return STORE_OK;
}

static int fs_step_set_cause(store *s, const char *run_id, const char *name, int attempt, const char *cause,
                             char **err)
{
    step_args a = {.run_id = run_id, .name = name, .attempt = attempt, .text = cause};
    return step_cas(FS(s), run_id, name, apply_set_cause, &a, "set_cause", err);
}

static int is_due(const json_t *d, const void *now)
{
    return json_object_get(d, "due") != NULL && state_is(d, ACTIVE) && fs_int(d, "due") <= *(const int64_t *)now;
}

static int fs_step_due(store *s, int64_t now, int limit, store_step_list *out, char **err)
{
    json_t *docs = NULL;
    int rc = fs_query(FS(s), "steps", fs_where("due", "LESS_THAN_OR_EQUAL", json_integer(now)), "due", 0, NULL, limit,
                      NULL, &docs, err);
    if (rc == STORE_OK) rc = steps_from(docs, is_due, &now, due_cmp, (size_t)limit, out, err);
    json_decref(docs);
    return rc;
}

static int fs_step_next_due(store *s, int64_t *at, char **err)
{
    json_t *docs = NULL, *d;
    *at = INT64_MAX;
    int rc = fs_query(FS(s), "steps", NULL, "due", 0, NULL, 1, NULL, &docs, err);
    size_t i;
    json_array_foreach(docs, i, d) if (json_object_get(d, "due") && state_is(d, ACTIVE) && fs_int(d, "due") < *at)
        *at = fs_int(d, "due");
    json_decref(docs);
    return rc;
}

/* Deletes every step of run_id and their key documents in the current unit. */
int fs_steps_delete_run(fs_store *f, const char *run_id, char **err)
{
    json_t *docs = NULL, *d;
    int rc = fs_query(f, "steps", fs_where("run_id", "EQUAL", json_string(run_id)), NULL, 0, NULL, 0, NULL, &docs, err);
    size_t i;
    json_array_foreach(docs, i, d) {
        if (!of_run(d, run_id)) continue;
        key_drop(f, "jobnames", fs_str(d, "job_name"));
        key_drop(f, "jobids", fs_str(d, "job_id"));
        fs_delete(f, "steps", fs_str(d, "_id"));
    }
    json_decref(docs);
    return rc;
}

/* ---- inbox ---- */

static char *event_id(int64_t id) { return util_printf("%020" PRId64, id); }

/* The dedupe key documents of an event: message id and (job id, state); each NULL when the event has none. */
static void event_keys(const char *message_id, const char *job_id, const char *state, char **mk, char **jk)
{
    *mk = message_id ? fs_id(message_id) : NULL;
    *jk = job_id && state ? fs_id2(job_id, state) : NULL;
}

static int fs_inbox_put(store *s, const store_event *ev, int64_t *id, char **err)
{
    fs_store *f = FS(s);
    char *mk, *jk;
    event_keys(ev->message_id, ev->job_id, ev->state, &mk, &jk);
    int rc;
    FS_UNIT(f, rc, err, {
        json_t *k = NULL, *ctr = NULL;
        int64_t first = 0;
        rc = STORE_OK;
        if (mk && (rc = fs_get(f, "inboxmsg", mk, &k, err)) == STORE_OK) first = fs_int(k, "event_id");
        json_decref(k);
        k = NULL;
        if (rc == STORE_NOTFOUND) rc = STORE_OK;
        if (rc == STORE_OK && !first && jk && (rc = fs_get(f, "inboxkey", jk, &k, err)) == STORE_OK)
            first = fs_int(k, "event_id");
        json_decref(k);
        if (rc == STORE_NOTFOUND) rc = STORE_OK;
        if (rc == STORE_OK && first) {
            rc = store_inbox_duplicate(ev, first, id, err);
        }
        if (rc == STORE_OK) {
            rc = fs_get(f, "meta", "inbox", &ctr, err);
            int64_t next = rc == STORE_OK ? fs_int(ctr, "next") : 1;
            if (rc == STORE_NOTFOUND) rc = STORE_OK;
            char *eid = event_id(next);
            if (rc == STORE_OK) {
                fs_put(f, "meta", "inbox", json_pack("{s:I}", "next", (json_int_t)(next + 1)));
                json_t *d = json_object();
                fs_set_int(d, "id", next);
                fs_set_int(d, "pending", next);
                fs_set_str(d, "message_id", ev->message_id);
                fs_set_str(d, "source", store_event_source_name(ev->source));
                fs_set_str(d, "job_id", ev->job_id);
                fs_set_str(d, "job_name", ev->job_name);
                fs_set_str(d, "state", ev->state);
                fs_set_str(d, "payload", ev->payload_json);
                fs_set_int(d, "received_at", ev->received_at ? ev->received_at : fs_now(f));
                fs_create(f, "inbox", eid, d);
                if (mk) fs_create(f, "inboxmsg", mk, json_pack("{s:I}", "event_id", (json_int_t)next));
                if (jk) fs_create(f, "inboxkey", jk, json_pack("{s:I}", "event_id", (json_int_t)next));
                if (id) *id = next;
            }
            free(eid);
        }
        json_decref(ctr);
    });
    free(mk);
    free(jk);
    return rc;
}

static int event_from(const json_t *d, store_event *e, char **err)
{
    memset(e, 0, sizeof *e);
    e->id = fs_int(d, "id");
    e->message_id = store_strdup(fs_str(d, "message_id"));
    e->job_id = store_strdup(fs_str(d, "job_id"));
    e->job_name = store_strdup(fs_str(d, "job_name"));
    e->state = store_strdup(fs_str(d, "state"));
    e->payload_json = store_strdup(fs_str(d, "payload"));
    e->received_at = fs_int(d, "received_at");
    e->processed_at = fs_int(d, "processed_at");
    e->source = STORE_SRC_COUNT;
    const char *src = fs_str(d, "source");
    for (int i = 0; i < STORE_SRC_COUNT && src; i++)
        if (strcmp(src, store_event_source_name((store_event_source)i)) == 0) e->source = (store_event_source)i;
    if (e->source == STORE_SRC_COUNT) {
        store_event_free(e);
        return store_fail(err, STORE_CORRUPT, "event %" PRId64 " has unknown source", fs_int(d, "id"));
    }
    return STORE_OK;
}

static int id_cmp(const void *a, const void *b)
{
    int64_t x = fs_int(*(json_t *const *)a, "id"), y = fs_int(*(json_t *const *)b, "id");
    return (x > y) - (x < y);
}

static int fs_inbox_fetch(store *s, int limit, store_event_list *out, char **err)
{
    json_t *docs = NULL, *d;
    int rc = fs_query(FS(s), "inbox", NULL, "pending", 0, NULL, limit, NULL, &docs, err);
    if (rc != STORE_OK) return rc;
    size_t n = json_array_size(docs), k = 0, i;
    json_t **v = xcalloc(n + 1, sizeof *v);
    out->items = xcalloc(n + 1, sizeof *out->items);
    json_array_foreach(docs, i, d) if (json_object_get(d, "pending")) v[k++] = d;
    qsort(v, k, sizeof *v, id_cmp);
    for (i = 0; rc == STORE_OK && i < k && i < (size_t)limit; i++)
        if ((rc = event_from(v[i], &out->items[out->count], err)) == STORE_OK) out->count++;
    free(v);
    json_decref(docs);
    return rc;
}

static int fs_inbox_mark_processed(store *s, int64_t id, int64_t processed_at, char **err)
{
    fs_store *f = FS(s);
    char *eid = event_id(id);
    int rc;
    FS_UNIT(f, rc, err, {
        json_t *d = NULL;
        rc = fs_get(f, "inbox", eid, &d, err);
        if (rc == STORE_NOTFOUND) rc = store_fail(err, rc, "no event with id %" PRId64, id);
        if (rc == STORE_OK && json_object_get(d, "processed_at") == NULL) {
            fs_set_int(d, "processed_at", processed_at);
            json_object_del(d, "pending");
            fs_put(f, "inbox", eid, json_incref(d));
        }
        json_decref(d);
    });
    free(eid);
    return rc;
}

/* At most 100 events (300 deletes with their keys) per commit. */
static int fs_inbox_prune(store *s, int64_t before, int64_t *deleted, char **err)
{
    fs_store *f = FS(s);
    int64_t n = 0;
    int rc = STORE_OK;
    for (;;) {
        json_t *docs = NULL, *d;
        rc = fs_query(f, "inbox", fs_where("processed_at", "LESS_THAN", json_integer(before)), NULL, 0, NULL, 100,
                      NULL, &docs, err);
        if (rc != STORE_OK) break;
        size_t got = json_array_size(docs), i;
        FS_UNIT(f, rc, err, {
            rc = STORE_OK;
            json_array_foreach(docs, i, d) {
                char *mk, *jk;
                event_keys(fs_str(d, "message_id"), fs_str(d, "job_id"), fs_str(d, "state"), &mk, &jk);
                if (mk) fs_delete(f, "inboxmsg", mk);
                if (jk) fs_delete(f, "inboxkey", jk);
                fs_delete(f, "inbox", fs_str(d, "_id"));
                free(mk);
                free(jk);
            }
        });
        json_decref(docs);
        if (rc != STORE_OK) break;
        n += (int64_t)got;
        if (got < 100) break;
    }
    if (deleted) *deleted = n;
    return rc;
}

void fs_steps_fill(struct store_ops *ops)
{
    ops->step_insert = fs_step_insert;
    ops->step_get = fs_step_get;
    ops->step_list_run = fs_step_list_run;
    ops->step_find = fs_step_find;
    ops->step_record_intent = fs_step_record_intent;
    ops->step_set_job = fs_step_set_job;
    ops->step_set_state = fs_step_set_state;
    ops->step_finish = fs_step_finish;
    ops->step_set_check = fs_step_set_check;
    ops->step_reclaim = fs_step_reclaim;
    ops->step_due = fs_step_due;
    ops->step_set_hint = fs_step_set_hint;
    ops->step_next_due = fs_step_next_due;
    ops->step_set_cause = fs_step_set_cause;
    ops->step_set_note = fs_step_set_note;
    ops->inbox_put = fs_inbox_put;
    ops->inbox_fetch = fs_inbox_fetch;
    ops->inbox_mark_processed = fs_inbox_mark_processed;
    ops->inbox_prune = fs_inbox_prune;
}
