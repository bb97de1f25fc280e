/* engine: the run state machine over the store, with exactly-once launches.
 * Uses: store, workflow, jobs_api, reconciler, util, log. Must not: do HTTP itself or call Lua directly.
 *
 * How a tick works (engine_tick):
 *   1. poll the API: answers land in e->done (callbacks only queue);
 *   2. BEGIN; apply answers; consume inbox events; take due steps (pending ones start: hooks run, launches are
 *      built by the workflow's function and their intent recorded; in-flight ones get a check leased); COMMIT;
 *   3. only then send what the transaction recorded (e->outbox).
 * A crash anywhere leaves either no intent (nothing was sent) or an intent that the next process resolves by
 * looking the job name up. */
#include "engine.h"

#include <stdio.h>
#include <time.h>
#include <stdlib.h>
#include <string.h>

#include "decide.h"
#include "log.h"
#include "util.h"

#define RUN_ID_LEN 10

typedef enum { OP_LAUNCH, OP_GET, OP_FIND, OP_STOP, OP_MESSAGES } op_kind;

typedef struct eng_op {
    engine *e;
    op_kind kind;
    char *run_id, *step, *project, *region, *job_id, *job_name;
    int attempt;
    int drain;
    launch_req *launch; /* OP_LAUNCH */
    ja_result res;     /* filled by the callback */
    struct eng_op *next;
    struct eng_op *sent_prev, *sent_next; /* in e->sent while the API holds it */
} eng_op;

typedef struct {
    char *version;
    wf_workflow *wf;
    int stored; /* its source is in the store (written with the first run that uses it) */
} wf_slot;

typedef struct busy_node {
    char *key;
    struct busy_node *next;
} busy_node;
#define BUSY_BUCKETS 4096

struct engine {
    engine_options o;
    wf_slot *wfs;
    size_t n_wfs;
    char **current_names, **current_versions;
    size_t n_current;
    eng_op *outbox, *outbox_tail; /* to send after the commit */
    eng_op *done;                 /* answered, to apply in the next transaction */
    eng_op *sent;                 /* handed to the API and not answered yet */
    int inflight;                 /* sent and not yet answered */
    int ready_hint;               /* work created this tick that the next tick should take at once */
    busy_node *busy[BUSY_BUCKETS];
    int64_t next_due;             /* earliest due work in the store after the last tick (INT64_MAX: none) */
    int recovered;                /* the first tick has voided the leases of the process before this one */
    engine_stats stats;
};

/* ---- small helpers ---- */

static int64_t now_ms(engine *e) { return e->o.now_ms ? e->o.now_ms(e->o.clock_ud) : util_now_ms(); }

static char *xstrdup(const char *s) { return s ? strdup(s) : NULL; }

static unsigned busy_hash(const char *run, const char *step)
{
    unsigned h = 2166136261u;
    for (const char *p = run; *p; p++) h = (h ^ (unsigned char)*p) * 16777619u;
    h = (h ^ 0x1f) * 16777619u;
    for (const char *p = step; *p; p++) h = (h ^ (unsigned char)*p) * 16777619u;
    return h % BUSY_BUCKETS;
}

static char *busy_key(const char *run, const char *step)
{
    char *k = NULL;
    if (asprintf(&k, "%s\x1f%s", run, step) < 0) return NULL;
    return k;
}

static int busy_has(engine *e, const char *run, const char *step)
{
    char *k = busy_key(run, step);
    int found = 0;
    for (busy_node *n = e->busy[busy_hash(run, step)]; n && !found; n = n->next) found = strcmp(n->key, k) == 0;
    free(k);
    return found;
}

static void busy_set(engine *e, const char *run, const char *step, int on)
{
    unsigned h = busy_hash(run, step);
    char *k = busy_key(run, step);
    busy_node **pp = &e->busy[h];
    while (*pp && strcmp((*pp)->key, k) != 0) pp = &(*pp)->next;
    if (on && *pp == NULL) {
        busy_node *n = malloc(sizeof *n);
        n->key = k;
        n->next = e->busy[h];
        e->busy[h] = n;
        return;
    }
    if (!on && *pp != NULL) {
        busy_node *n = *pp;
        *pp = n->next;
        free(n->key);
        free(n);
    }
    free(k);
}

static void op_free(eng_op *op)
{
    free(op->run_id);
    free(op->step);
    free(op->project);
    free(op->region);
    free(op->job_id);
    free(op->job_name);
    launch_free(op->launch);
    ja_result_clear(&op->res);
    free(op);
}

static eng_op *op_new(engine *e, op_kind kind, const store_step *st)
{
    eng_op *op = calloc(1, sizeof *op);
    op->e = e;
    op->kind = kind;
    op->run_id = xstrdup(st->run_id);
    op->step = xstrdup(st->name);
    op->project = xstrdup(st->project);
    op->region = xstrdup(st->region);
    op->job_id = xstrdup(st->job_id);
    op->job_name = xstrdup(st->job_name);
    op->attempt = st->attempt;
    return op;
}

/* Queues an API call to send after the commit; the step is busy until its answer is applied. */
static void outbox_push(engine *e, eng_op *op)
{
    busy_set(e, op->run_id, op->step, 1);
    if (e->outbox_tail)
        e->outbox_tail->next = op;
    else
        e->outbox = op;
    e->outbox_tail = op;
}

/* ---- workflows by version ---- */

static const wf_workflow *wf_by_version(engine *e, const char *version, char **err)
{
    for (size_t i = 0; i < e->n_wfs; i++)
        if (strcmp(e->wfs[i].version, version) == 0) return e->wfs[i].wf;
    store_script sc = {0};
    if (store_script_get(e->o.st, version, &sc, err) != STORE_OK) return NULL;
    wf_diags d = {0};
    wf_workflow *wf = wf_load_source(sc.workflow, sc.source, strlen(sc.source), &e->o.lua, &d);
    if (wf == NULL) {
        if (asprintf(err, "stored version %.12s of workflow %s no longer loads: %s", version, sc.workflow,
                     d.n ? d.items[0] : "?") < 0)
            *err = NULL;
    } else {
        e->wfs = realloc(e->wfs, (e->n_wfs + 1) * sizeof *e->wfs);
        e->wfs[e->n_wfs].version = strdup(version);
        e->wfs[e->n_wfs].wf = wf;
        e->wfs[e->n_wfs].stored = 1;
        e->n_wfs++;
    }
    wf_diags_free(&d);
    store_script_free(&sc);
    return wf;
}

int engine_add_workflow(engine *e, wf_workflow *wf, char **err)
{
    (void)err;
    size_t i;
    for (i = 0; i < e->n_wfs; i++)
        if (strcmp(e->wfs[i].version, wf->version) == 0) break;
    if (i == e->n_wfs) {
        e->wfs = realloc(e->wfs, (e->n_wfs + 1) * sizeof *e->wfs);
        e->wfs[e->n_wfs].version = strdup(wf->version);
        e->wfs[e->n_wfs].wf = wf;
        e->wfs[e->n_wfs].stored = 0;
        e->n_wfs++;
    } else {
        wf_free(wf);
        wf = e->wfs[i].wf;
    }
    for (size_t c = 0; c < e->n_current; c++) {
        if (strcmp(e->current_names[c], wf->name) == 0) {
            free(e->current_versions[c]);
            e->current_versions[c] = strdup(wf->version);
            return 0;
        }
    }
    e->current_names = realloc(e->current_names, (e->n_current + 1) * sizeof(char *));
    e->current_versions = realloc(e->current_versions, (e->n_current + 1) * sizeof(char *));
    e->current_names[e->n_current] = strdup(wf->name);
    e->current_versions[e->n_current] = strdup(wf->version);
    e->n_current++;
    return 0;
}

int engine_set_workflows(engine *e, wf_workflow *const *wfs, size_t n)
{
    /* Register every version first (each takes a reference), then replace the current mapping in one go. */
    for (size_t i = 0; i < n; i++) engine_add_workflow(e, wf_ref(wfs[i]), NULL);
    size_t kept = 0;
    for (size_t c = 0; c < e->n_current; c++) {
        int still = 0;
        for (size_t i = 0; i < n && !still; i++) still = strcmp(e->current_names[c], wfs[i]->name) == 0;
        if (still) {
            e->current_names[kept] = e->current_names[c];
            e->current_versions[kept] = e->current_versions[c];
            kept++;
        } else {
            log_info("engine: workflow %s is no longer loaded: no new runs; its runs in flight go on",
                     e->current_names[c]);
            free(e->current_names[c]);
            free(e->current_versions[c]);
        }
    }
    e->n_current = kept;
    return 0;
}

const wf_workflow *engine_workflow(engine *e, const char *name)
{
    for (size_t c = 0; c < e->n_current; c++)
        if (strcmp(e->current_names[c], name) == 0)
            for (size_t i = 0; i < e->n_wfs; i++)
                if (strcmp(e->wfs[i].version, e->current_versions[c]) == 0) return e->wfs[i].wf;
    return NULL;
}

/* ---- lifecycle ---- */

engine *engine_new(const engine_options *opts, char **err)
{
    if (opts == NULL || opts->st == NULL || opts->api == NULL) {
        if (err) *err = strdup("engine: a store and an API are required");
        return NULL;
    }
    engine *e = calloc(1, sizeof *e);
    e->o = *opts;
    if (e->o.rec.poll_ms <= 0) e->o.rec = rec_policy_default();
    if (e->o.max_due <= 0) e->o.max_due = 500;
    if (e->o.max_inflight <= 0) e->o.max_inflight = 256;
    e->next_due = 0;
    return e;
}

static void free_ops(eng_op *op)
{
    while (op) {
        eng_op *n = op->next;
        op_free(op);
        op = n;
    }
}

void engine_free(engine *e)
{
    if (e == NULL) return;
    /* Calls the API still holds are the API's until their callback runs (from its poll or its free, whichever
     * comes first): orphaned here, api_cb frees them without touching the engine. So the engine and the API
     * may be freed in either order. */
    while (e->sent) {
        eng_op *op = e->sent;
        e->sent = op->sent_next;
        op->sent_prev = op->sent_next = NULL;
        op->e = NULL;
    }
    free_ops(e->outbox);
    free_ops(e->done);
    for (size_t i = 0; i < e->n_wfs; i++) {
        free(e->wfs[i].version);
        wf_free(e->wfs[i].wf);
    }
    free(e->wfs);
    for (size_t c = 0; c < e->n_current; c++) {
        free(e->current_names[c]);
        free(e->current_versions[c]);
    }
    free(e->current_names);
    free(e->current_versions);
    for (int b = 0; b < BUSY_BUCKETS; b++) {
        busy_node *n = e->busy[b];
        while (n) {
            busy_node *x = n->next;
            free(n->key);
            free(n);
            n = x;
        }
    }
    free(e);
}

engine_stats engine_get_stats(const engine *e) { return e->stats; }

/* ---- context and results ---- */

static json_t *parse_or_null(const char *text)
{
    if (text == NULL) return NULL;
    return json_loads(text, JSON_DECODE_ANY, NULL);
}

/* ctx.results and ctx.jobs for `ws` from the run's stored steps. */
static json_t *build_ctx(const wf_workflow *wf, const wf_step *ws, const store_run *run, const store_step_list *steps,
                         int attempt)
{
    json_t *results = json_object(), *jobs = json_array();
    for (size_t i = 0; i < steps->count; i++) {
        const store_step *s = &steps->items[i];
        if (!store_step_state_terminal(s->state)) continue;
        json_t *res = parse_or_null(s->result_json);
        json_t *r = json_pack("{s:s,s:s?,s:s?,s:s?,s:O?}", "state", store_step_state_name(s->state), "job_id", s->job_id,
                              "job_name", s->job_name, "job_state", s->job_state, "output",
                              json_object_get(res, "output"));
        if (s->error) json_object_set_new(r, "error", json_string(s->error));
        json_object_set_new(results, s->name, r);
        /* predecessors: steps whose next leads here and that succeeded, and steps that failed into here */
        int pred = 0;
        int idx = wf_step_index(wf, s->name);
        if (idx >= 0) {
            const wf_step *ps = &wf->steps[idx];
            for (size_t j = 0; j < ps->n_next; j++)
                if (strcmp(ps->next[j], ws->name) == 0 && s->state == STORE_STEP_SUCCEEDED) pred = 1;
            if (ps->on_failure && strcmp(ps->on_failure, ws->name) == 0 && s->state == STORE_STEP_FAILED) pred = 1;
        }
        if (pred && s->job_name != NULL)
            json_array_append_new(jobs, json_pack("{s:s?,s:s,s:s?,s:s,s:O?}", "id", s->job_id, "name", s->job_name,
                                                  "state", s->job_state, "step", s->name, "labels",
                                                  json_object_get(res, "labels")));
        json_decref(res);
    }
    json_t *params = parse_or_null(run->params_json);
    json_t *ctx = wf_context(wf, ws, run->id, params, run->created_at, attempt, jobs, results);
    json_decref(params);
    json_decref(jobs);
    json_decref(results);
    return ctx;
}

/* ---- transitions ---- */

typedef struct {
    store_run run;
    store_step_list steps;
    const wf_workflow *wf;
} run_view;

static void run_view_free(run_view *v)
{
    store_run_free(&v->run);
    store_step_list_free(&v->steps);
}

static int run_view_load(engine *e, const char *run_id, run_view *v, char **err)
{
    memset(v, 0, sizeof *v);
    if (store_run_get(e->o.st, run_id, &v->run, err) != STORE_OK) return -1;
    if (store_step_list_run(e->o.st, run_id, &v->steps, err) != STORE_OK) {
        run_view_free(v);
        return -1;
    }
    v->wf = wf_by_version(e, v->run.script_hash, err);
    if (v->wf == NULL) {
        run_view_free(v);
        return -1;
    }
    return 0;
}

/* run_view_load for callers that can only log a failure (the step stays due and is retried later). */
static int run_view_load_logged(engine *e, const char *run_id, run_view *v)
{
    char *err = NULL;
    if (run_view_load(e, run_id, v, &err) == 0) return 0;
    log_error("run %s: %s", run_id, err ? err : "cannot load");
    free(err);
    return -1;
}

static int step_active(store_step_state s)
{
    return s == STORE_STEP_PENDING || s == STORE_STEP_LAUNCHING || s == STORE_STEP_RUNNING || s == STORE_STEP_CANCELLING;
}

static int step_attempt(engine *e, const char *run_id, const char *name)
{
    store_step st = {0};
    int attempt = store_step_get(e->o.st, run_id, name, &st, NULL) == STORE_OK ? st.attempt : 1;
    store_step_free(&st);
    return attempt;
}

/* Inserts a pending (or, for a join, waiting) step; an existing row is left alone (a join reached twice). */
static void activate(engine *e, const char *run_id, const wf_step *ws)
{
    store_step st = {.run_id = (char *)run_id, .name = ws->name, .attempt = 1,
                     .state = ws->n_preds > 1 ? STORE_STEP_WAITING : STORE_STEP_PENDING};
    char *err = NULL;
    int rc = store_step_insert(e->o.st, &st, &err);
    if (rc == STORE_EXISTS) {
        /* Reached before. A redrive leaves a step skipped that only an earlier failure had reached: reached
         * again, it starts (with a new attempt: its job name is taken). Any other row is left alone. */
        rc = store_step_set_state(e->o.st, run_id, ws->name, STORE_STEP_SKIPPED, STORE_ATTEMPT_ANY, st.state, NULL);
        if (rc != STORE_OK) rc = STORE_EXISTS;
        else store_step_set_check(e->o.st, run_id, ws->name, step_attempt(e, run_id, ws->name), 0, 0, NULL, NULL);
    }
    if (rc != STORE_OK && rc != STORE_EXISTS) log_error("run %s: cannot add step %s: %s", run_id, ws->name, err);
    if (rc == STORE_OK) e->ready_hint++;
    free(err);
}

static dec_step_state dec_state_of(store_step_state st)
{
    if (step_active(st)) return DEC_ST_ACTIVE;
    if (st == STORE_STEP_WAITING) return DEC_ST_WAITING;
    return st == STORE_STEP_SUCCEEDED ? DEC_ST_SUCCEEDED : DEC_ST_ENDED;
}

/* The run's steps in the shape decide's join rule reads: states[i] for wf->steps[i]. Caller frees. */
static dec_step_state *view_states(const run_view *v)
{
    dec_step_state *states = calloc(v->wf->n_steps ? v->wf->n_steps : 1, sizeof *states);
    for (size_t i = 0; i < v->steps.count; i++) {
        int idx = wf_step_index(v->wf, v->steps.items[i].name);
        if (idx >= 0) states[idx] = dec_state_of(v->steps.items[i].state);
    }
    return states;
}

static void stop_inflight(engine *e, run_view *v, const char *except);

/* Re-reads the run after a change: releases ready joins, and finishes the run when nothing is active. */
static void settle_run(engine *e, const char *run_id)
{
    run_view v;
    char *err = NULL;
    if (run_view_load_logged(e, run_id, &v) != 0) return;
    int active = 0, released = 0;
    const char *blocked_join = NULL, *blocker = NULL;
    dec_step_state *states = view_states(&v);
    for (size_t i = 0; i < v.steps.count; i++) {
        store_step *s = &v.steps.items[i];
        if (step_active(s->state)) active++;
    }
    for (size_t i = 0; i < v.steps.count; i++) {
        store_step *s = &v.steps.items[i];
        if (s->state != STORE_STEP_WAITING) continue;
        int idx = wf_step_index(v.wf, s->name);
        if (idx < 0) continue;
        const char *b = NULL;
        dec_join js = v.run.state == STORE_RUN_RUNNING ? dec_join_check(v.wf, &v.wf->steps[idx], states, &b)
                                                       : DEC_JOIN_BLOCKED;
        if (js == DEC_JOIN_READY) {
            if (store_step_set_state(e->o.st, run_id, s->name, STORE_STEP_WAITING, STORE_ATTEMPT_ANY,
                                     STORE_STEP_PENDING, &err) == STORE_OK) {
                released++;
                e->ready_hint++;
            }
            free(err);
            err = NULL;
        } else if (js == DEC_JOIN_BLOCKED && blocked_join == NULL) {
            blocked_join = s->name;
            blocker = b;
        }
    }
    free(states);
    if (active > 0 || released > 0) {
        run_view_free(&v);
        return;
    }
    /* Nothing is in flight: the run ends. Joins that can never start are skipped. */
    for (size_t i = 0; i < v.steps.count; i++)
        if (v.steps.items[i].state == STORE_STEP_WAITING)
            store_step_finish(e->o.st, run_id, v.steps.items[i].name, STORE_ATTEMPT_ANY, STORE_STEP_SKIPPED, NULL, NULL,
                              "never started", NULL);
    if (v.run.state == STORE_RUN_RUNNING) {
        char *msg = NULL;
        if (blocked_join != NULL &&
            asprintf(&msg, "join step %s can never start: predecessor %s did not succeed", blocked_join,
                     blocker ? blocker : "?") < 0)
            msg = NULL;
        store_run_state next = blocked_join ? STORE_RUN_FAILED : STORE_RUN_SUCCEEDED;
        if (store_run_set_state(e->o.st, run_id, STORE_RUN_RUNNING, next, msg, &err) == STORE_OK) {
            const store_step *recovered = NULL;
            for (size_t i = 0; i < v.steps.count && recovered == NULL; i++)
                if (v.steps.items[i].state == STORE_STEP_FAILED) recovered = &v.steps.items[i];
            if (next == STORE_RUN_SUCCEEDED)
                e->stats.runs_succeeded++;
            else
                e->stats.runs_failed++;
            if (next == STORE_RUN_SUCCEEDED && recovered != NULL) {
                /* on_failure handled a failure: the run succeeded, and says which step failed and why */
                e->stats.runs_recovered++;
                log_warn("run %s of %s succeeded after recovering from the failure of step %s: %s", run_id,
                         v.run.workflow, recovered->name, recovered->error ? recovered->error : "?");
            } else {
                log_info("run %s of %s %s", run_id, v.run.workflow, store_run_state_name(next));
            }
        }
        free(msg);
    } else if (v.run.state == STORE_RUN_CANCELLING) {
        if (store_run_set_state(e->o.st, run_id, STORE_RUN_CANCELLING, STORE_RUN_CANCELLED, NULL, &err) == STORE_OK) {
            e->stats.runs_cancelled++;
            log_info("run %s of %s cancelled", run_id, v.run.workflow);
        }
    }
    free(err);
    run_view_free(&v);
}

/* The step succeeded: record it, then start what comes next (unless the run stopped meanwhile). */
static void step_succeeded(engine *e, const store_step *st, const char *job_state, json_t *result)
{
    char *err = NULL;
    char *res = result ? json_dumps(result, JSON_COMPACT | JSON_ENCODE_ANY) : NULL;
    int rc = store_step_finish(e->o.st, st->run_id, st->name, st->attempt, STORE_STEP_SUCCEEDED, job_state, res, NULL,
                               &err);
    free(res);
    if (rc != STORE_OK) { /* finished before (a duplicate answer): nothing to do */
        free(err);
        return;
    }
    e->stats.steps_succeeded++;
    run_view v;
    if (run_view_load_logged(e, st->run_id, &v) != 0) return;
    int idx = wf_step_index(v.wf, st->name);
    if (v.run.state == STORE_RUN_RUNNING && idx >= 0) {
        const wf_step *ws = &v.wf->steps[idx];
        json_t *ctx = build_ctx(v.wf, ws, &v.run, &v.steps, st->attempt);
        json_t *names = NULL;
        if (wf_successors(v.wf, ws, ctx, &names, &err) != 0) {
            /* A failing choice function fails the run: the step itself did its work. */
            char *msg = NULL;
            if (asprintf(&msg, "step %s: choosing the next step failed: %s", st->name, err ? err : "?") < 0) msg = NULL;
            log_error("run %s: %s", st->run_id, msg ? msg : "choice failed");
            if (store_run_set_state(e->o.st, st->run_id, STORE_RUN_RUNNING, STORE_RUN_FAILED, msg, NULL) == STORE_OK)
                e->stats.runs_failed++;
            free(msg);
        } else {
            size_t i;
            json_t *x;
            json_array_foreach(names, i, x) {
                int t = wf_step_index(v.wf, json_string_value(x));
                if (t >= 0) activate(e, st->run_id, &v.wf->steps[t]);
            }
        }
        json_decref(names);
        json_decref(ctx);
    }
    free(err);
    run_view_free(&v);
    settle_run(e, st->run_id);
}

/* The step's attempt failed with `why` (outcome `o`, a failure class). What follows is decide's: a retry,
 * the on_failure step, or the run's failure (stopping its other jobs when the workflow says so). */
/* A failed job's cause is in its job messages ("Workflow failed. Causes: ..."): asked for once, after the commit;
 * the answer is recorded with the attempt (apply_answer) whatever happened to the step meanwhile. */
static void fetch_cause(engine *e, const store_step *st)
{
    if (e->o.api->ops->messages == NULL || st->job_id == NULL || st->project == NULL || st->region == NULL) return;
    outbox_push(e, op_new(e, OP_MESSAGES, st));
}

static void step_failed(engine *e, const store_step *st, const char *job_state, const char *why, dec_outcome o)
{
    char *err = NULL;
    if (o == DEC_JOB_FAILED) fetch_cause(e, st);
    run_view v;
    if (run_view_load_logged(e, st->run_id, &v) != 0) return;
    int idx = wf_step_index(v.wf, st->name);
    const wf_step *ws = idx >= 0 ? &v.wf->steps[idx] : NULL;
    int running = v.run.state == STORE_RUN_RUNNING;
    dec_result d = {.action = running ? DEC_FAIL_RUN : DEC_RECORD, .stop_others = v.wf->cancel_on_failure};
    if (ws != NULL) d = dec_step(v.wf, ws, o, st->attempt, st->job_name != NULL, running);
    if (d.action == DEC_RETRY) {
        int64_t delay = (int64_t)(d.retry_delay_s * 1000.0);
        int rc = store_step_set_state(e->o.st, st->run_id, st->name, st->state, st->attempt, STORE_STEP_PENDING, &err);
        if (rc == STORE_OK) rc = store_step_set_check(e->o.st, st->run_id, st->name, st->attempt, now_ms(e) + delay, 0,
                                                      job_state, &err);
        if (rc == STORE_OK)
            log_warn("run %s: step %s attempt %d failed (%s: %s); attempt %d in %lld ms", st->run_id, st->name,
                     st->attempt, dec_outcome_name(o), why, d.next_attempt, (long long)delay);
        free(err);
        run_view_free(&v);
        return;
    }
    int rc = store_step_finish(e->o.st, st->run_id, st->name, STORE_ATTEMPT_ANY, STORE_STEP_FAILED, job_state, NULL,
                               why, &err);
    if (rc != STORE_OK) {
        free(err);
        run_view_free(&v);
        return;
    }
    e->stats.steps_failed++;
    log_warn("run %s: step %s failed (%s): %s", st->run_id, st->name, dec_outcome_name(o), why);
    if (d.action == DEC_ON_FAILURE) {
        activate(e, st->run_id, &v.wf->steps[wf_step_index(v.wf, d.target)]);
    } else if (d.action == DEC_FAIL_RUN) {
        char *msg = NULL;
        if (asprintf(&msg, "step %s failed: %s", st->name, why) < 0) msg = NULL;
        if (store_run_set_state(e->o.st, st->run_id, STORE_RUN_RUNNING, STORE_RUN_FAILED, msg, &err) == STORE_OK) {
            e->stats.runs_failed++;
            log_warn("run %s of %s failed: %s", st->run_id, v.run.workflow, msg ? msg : why);
            if (d.stop_others) stop_inflight(e, &v, st->name);
        }
        free(msg);
    }
    free(err);
    run_view_free(&v);
    settle_run(e, st->run_id);
}

/* Cancels pending steps and stops the in-flight jobs of a run (all but `except`). */
static void stop_inflight(engine *e, run_view *v, const char *except)
{
    char *err = NULL;
    for (size_t i = 0; i < v->steps.count; i++) {
        store_step *s = &v->steps.items[i];
        if (except && strcmp(s->name, except) == 0) continue;
        if (s->state == STORE_STEP_PENDING || s->state == STORE_STEP_WAITING) {
            store_step_finish(e->o.st, s->run_id, s->name, STORE_ATTEMPT_ANY, STORE_STEP_CANCELLED, NULL, NULL,
                              "run stopped", &err);
        } else if (s->state == STORE_STEP_LAUNCHING || s->state == STORE_STEP_RUNNING) {
            /* due now: seeing the run stopping, the reconciler stops the job (after learning its id, for a
             * launch in flight), then follows its wind-down on the short schedule */
            store_step_set_hint(e->o.st, s->run_id, s->name, s->attempt, now_ms(e), 0, &err);
            e->ready_hint++;
        }
        free(err);
        err = NULL;
    }
}

int engine_cancel_run(engine *e, const char *run_id, char **err)
{
    run_view v;
    if (run_view_load(e, run_id, &v, err) != 0) return -1;
    if (store_run_state_terminal(v.run.state)) {
        run_view_free(&v);
        return 1;
    }
    int rc = store_begin(e->o.st, err) == STORE_OK ? 0 : -1;
    if (rc == 0) {
        store_run_set_state(e->o.st, run_id, v.run.state, STORE_RUN_CANCELLING, "cancelled by request", NULL);
        stop_inflight(e, &v, NULL);
        run_view_free(&v);
        settle_run(e, run_id);
        rc = store_commit(e->o.st, err) == STORE_OK ? 0 : -1;
    } else {
        run_view_free(&v);
    }
    e->ready_hint++;
    return rc;
}

/* ---- starting a due pending step ---- */

static void start_step(engine *e, const store_step *st)
{
    char *err = NULL;
    run_view v;
    if (run_view_load(e, st->run_id, &v, &err) != 0) {
        log_error("run %s: %s", st->run_id, err ? err : "cannot load");
        /* park it: a later tick retries */
        store_step_set_check(e->o.st, st->run_id, st->name, st->attempt, now_ms(e) + e->o.rec.poll_ms, 0, NULL, NULL);
        free(err);
        return;
    }
    if (v.run.state != STORE_RUN_RUNNING) {
        store_step_finish(e->o.st, st->run_id, st->name, STORE_ATTEMPT_ANY, STORE_STEP_CANCELLED, NULL, NULL,
                          "run stopped", NULL);
        run_view_free(&v);
        settle_run(e, st->run_id);
        return;
    }
    int idx = wf_step_index(v.wf, st->name);
    if (idx < 0) {
        run_view_free(&v);
        step_failed(e, st, NULL, "the step is not in the workflow version of this run", DEC_ERROR);
        return;
    }
    const wf_step *ws = &v.wf->steps[idx];
    int attempt = st->job_name ? st->attempt + 1 : st->attempt;
    json_t *ctx = build_ctx(v.wf, ws, &v.run, &v.steps, attempt);
    if (ctx == NULL) {
        run_view_free(&v);
        step_failed(e, st, NULL, "the job name for this step cannot be formed", DEC_ERROR);
        return;
    }
    if (ws->kind == WF_STEP_HOOK) {
        json_t *out = NULL;
        int rc = wf_run_hook(v.wf, ws, ctx, &out, &err);
        json_decref(ctx);
        run_view_free(&v);
        if (rc != 0) {
            step_failed(e, st, NULL, err ? err : "hook failed", DEC_ERROR);
        } else {
            json_t *res = json_pack("{s:O}", "output", out);
            step_succeeded(e, st, NULL, res);
            json_decref(res);
        }
        json_decref(out);
        free(err);
        return;
    }
    launch_req *l = NULL;
    int rc = wf_build_launch(v.wf, ws, ctx, v.run.id, e->o.default_project, &l, &err);
    json_decref(ctx);
    run_view_free(&v);
    if (rc != 0) {
        step_failed(e, st, NULL, err ? err : "building the launch request failed", DEC_ERROR);
        free(err);
        return;
    }
    json_t *req = launch_to_json(l);
    char *req_text = json_dumps(req, JSON_COMPACT);
    json_decref(req);
    int64_t now = now_ms(e);
    store_intent in = {.attempt = attempt, .job_name = l->job_name, .project = l->project, .region = l->region,
                       .request_json = req_text, .next_check_at = now + e->o.rec.lease_ms,
                       .deadline_at = ws->timeout > 0 ? now + (int64_t)(ws->timeout * 1000.0) : 0};
    rc = store_step_record_intent(e->o.st, st->run_id, st->name, STORE_STEP_PENDING, st->attempt, &in, &err);
    free(req_text);
    if (rc != STORE_OK) {
        if (rc == STORE_EXISTS) {
            char *msg = NULL;
            if (asprintf(&msg, "job name %s is already used by another step", l->job_name) < 0) msg = NULL;
            step_failed(e, st, NULL, msg ? msg : "job name taken", DEC_ERROR);
            free(msg);
        } else if (rc != STORE_CONFLICT) {
            log_error("run %s: step %s: cannot record the launch intent: %s", st->run_id, st->name, err ? err : "?");
        }
        launch_free(l);
        free(err);
        return;
    }
    store_step intent = *st;
    intent.attempt = attempt;
    intent.project = l->project;
    intent.region = l->region;
    intent.job_name = l->job_name;
    eng_op *op = op_new(e, OP_LAUNCH, &intent);
    op->launch = l;
    outbox_push(e, op);
}

/* ---- applying answers ---- */

static void finish_from_job(engine *e, const store_step *st, json_t *job)
{
    const char *state = json_string_value(json_object_get(job, "currentState"));
    run_view v;
    char *err = NULL;
    if (run_view_load(e, st->run_id, &v, &err) != 0) {
        free(err);
        return;
    }
    int idx = wf_step_index(v.wf, st->name);
    int running = v.run.state == STORE_RUN_RUNNING;
    /* cancelling while the run runs: the engine stopped the job because the step timed out */
    int stopped = st->state == STORE_STEP_CANCELLING;
    dec_outcome o = idx >= 0 ? dec_classify(&v.wf->steps[idx], state, stopped && running) : DEC_ERROR;
    run_view_free(&v);
    json_t *res = json_pack("{s:s?,s:s?,s:s?,s:O?}", "job_id", json_string_value(json_object_get(job, "id")), "job_name",
                            json_string_value(json_object_get(job, "name")), "state", state, "labels",
                            json_object_get(job, "labels"));
    if (!running) {
        /* The run was cancelled or failed meanwhile: record how the job ended; nothing new starts. */
        char *r = json_dumps(res, JSON_COMPACT);
        store_step_state final = o == DEC_SUCCEEDED ? STORE_STEP_SUCCEEDED
                                 : stopped          ? STORE_STEP_CANCELLED
                                                    : STORE_STEP_FAILED;
        char why[256];
        snprintf(why, sizeof why, "job %s ended %s after the run %s", st->job_name ? st->job_name : "?",
                 state ? state : "?", stopped ? "stopped it" : "had ended");
        store_step_finish(e->o.st, st->run_id, st->name, STORE_ATTEMPT_ANY, final, state, r,
                          final == STORE_STEP_SUCCEEDED ? NULL : why, NULL);
        free(r);
        settle_run(e, st->run_id);
    } else if (o == DEC_SUCCEEDED) {
        step_succeeded(e, st, state, res);
    } else {
        char why[256];
        if (o == DEC_TIMED_OUT)
            snprintf(why, sizeof why, "timed out; the job was stopped and ended %s", state ? state : "?");
        else
            snprintf(why, sizeof why, "job %s ended %s", st->job_name ? st->job_name : "?", state ? state : "?");
        step_failed(e, st, state, why, o);
    }
    json_decref(res);
}

static int run_is_running(engine *e, const char *run_id)
{
    store_run run = {0};
    int running = store_run_get(e->o.st, run_id, &run, NULL) == STORE_OK && run.state == STORE_RUN_RUNNING;
    store_run_free(&run);
    return running;
}

/* Whether the run's in-flight jobs must be stopped: it is being cancelled, or it failed and its workflow says
 * on_run_failure = "cancel". */
static int run_stopping(engine *e, const char *run_id)
{
    store_run run = {0};
    int stopping = 0;
    if (store_run_get(e->o.st, run_id, &run, NULL) == STORE_OK) {
        if (run.state == STORE_RUN_CANCELLING) {
            stopping = 1;
        } else if (run.state == STORE_RUN_FAILED) {
            const wf_workflow *wf = wf_by_version(e, run.script_hash, NULL);
            stopping = wf != NULL && wf->cancel_on_failure;
        }
    }
    store_run_free(&run);
    return stopping;
}

static int winding_down(const char *job_state)
{
    return job_state != NULL &&
           (strcmp(job_state, "JOB_STATE_CANCELLING") == 0 || strcmp(job_state, "JOB_STATE_DRAINING") == 0);
}

/* Whether the step's job is drained (on_cancel = "drain") rather than cancelled when it must stop. */
static int step_drains(engine *e, const store_step *st)
{
    const wf_workflow *wf = NULL;
    store_run run = {0};
    if (store_run_get(e->o.st, st->run_id, &run, NULL) == STORE_OK) wf = wf_by_version(e, run.script_hash, NULL);
    int idx = wf ? wf_step_index(wf, st->name) : -1;
    store_run_free(&run);
    return idx >= 0 && wf->steps[idx].stop_mode == WF_STOP_DRAIN;
}

static int64_t backoff_next(engine *e, const store_step *st, int failures)
{
    return rec_next_check(&e->o.rec, st, failures, now_ms(e));
}

static void apply_answer(engine *e, eng_op *op)
{
    store_step st = {0};
    char *err = NULL;
    busy_set(e, op->run_id, op->step, 0);
    if (op->kind == OP_MESSAGES) { /* the step has failed already: only its attempt must match */
        if (op->res.outcome == JA_OK && op->res.message != NULL)
            store_step_set_cause(e->o.st, op->run_id, op->step, op->attempt, op->res.message, NULL);
        return;
    }
    if (store_step_get(e->o.st, op->run_id, op->step, &st, &err) != STORE_OK) {
        free(err);
        return;
    }
    if (st.attempt != op->attempt || store_step_state_terminal(st.state)) { /* stale answer */
        store_step_free(&st);
        return;
    }
    const ja_result *r = &op->res;
    int64_t now = now_ms(e);
    switch (op->kind) {
    case OP_LAUNCH:
    case OP_FIND:
        if (r->outcome == JA_OK && r->job != NULL) {
            const char *id = json_string_value(json_object_get(r->job, "id"));
            const char *state = json_string_value(json_object_get(r->job, "currentState"));
            if (op->kind == OP_LAUNCH) e->stats.launches_ok++;
            if (op->kind == OP_FIND) e->stats.adopted++;
            if (id == NULL) break;
            /* Looked at again now when something is already known to be due (an end event that came while the
             * launch was in flight, a stop); else after the poll interval, or at the step's deadline. */
            int64_t next = now + e->o.rec.poll_ms;
            if (st.deadline_at > 0 && st.deadline_at < next) next = st.deadline_at;
            if (st.hint_at > 0 || st.state == STORE_STEP_CANCELLING || !run_is_running(e, st.run_id)) next = now;
            store_step_set_job(e->o.st, st.run_id, st.name, st.attempt, id, state, next, &err);
            e->ready_hint++;
            if (state != NULL && ev_state_terminal(state) && st.job_id == NULL) {
                store_step fresh = {0};
                if (store_step_get(e->o.st, st.run_id, st.name, &fresh, NULL) == STORE_OK) finish_from_job(e, &fresh, r->job);
                store_step_free(&fresh);
            }
        } else if (op->kind == OP_FIND && r->outcome == JA_NOT_FOUND && !run_is_running(e, st.run_id)) {
            /* The run stopped while this launch was unsettled, and it never created a job: nothing to stop. */
            store_step_finish(e->o.st, st.run_id, st.name, st.attempt, STORE_STEP_CANCELLED, NULL, NULL,
                              "run stopped before the job was created", &err);
            settle_run(e, st.run_id);
        } else if (op->kind == OP_FIND && r->outcome == JA_NOT_FOUND) {
            /* Nothing carries this name: the intent's request never created a job. Send it (again). */
            json_t *req = json_loads(st.request_json ? st.request_json : "", 0, NULL);
            launch_req *l = req ? launch_from_json(req) : NULL;
            json_decref(req);
            if (l == NULL) {
                step_failed(e, &st, NULL, "the recorded launch request is unreadable", DEC_ERROR);
                break;
            }
            store_step_set_check(e->o.st, st.run_id, st.name, st.attempt, now + e->o.rec.lease_ms, st.check_failures,
                                 NULL, &err);
            eng_op *again = op_new(e, OP_LAUNCH, &st);
            again->launch = l;
            outbox_push(e, again);
        } else if (op->kind == OP_LAUNCH && r->outcome == JA_REJECTED) {
            /* Definitive: the same request would be refused again. A retry only if retry.on lists "rejected". */
            char why[1200];
            snprintf(why, sizeof why, "launch rejected (HTTP %ld): %s", r->http_status, r->message ? r->message : "");
            step_failed(e, &st, NULL, why, DEC_REJECTED);
        } else {
            /* unknown outcome or a transient failure: the reconciler looks the name up after a backoff */
            store_step_set_check(e->o.st, st.run_id, st.name, st.attempt, backoff_next(e, &st, st.check_failures + 1),
                                 st.check_failures + 1, NULL, &err);
            log_warn("run %s: step %s: launch of %s unsettled (%s); will look it up", st.run_id, st.name,
                     st.job_name ? st.job_name : "?", r->message ? r->message : "no answer");
        }
        break;
    case OP_GET:
        if (r->outcome == JA_OK && r->job != NULL) {
            const char *state = json_string_value(json_object_get(r->job, "currentState"));
            if (state != NULL && ev_state_terminal(state)) {
                log_debug("run %s: step %s: job %s is %s", st.run_id, st.name, st.job_id ? st.job_id : "?", state);
                finish_from_job(e, &st, r->job);
            } else {
                /* A job winding down (cancelled or drained by anyone) should end soon: short schedule. */
                if (winding_down(state) && st.hint_at == 0 &&
                    store_step_set_hint(e->o.st, st.run_id, st.name, st.attempt, now, now, NULL) == STORE_OK)
                    st.hint_at = now;
                store_step_set_check(e->o.st, st.run_id, st.name, st.attempt, backoff_next(e, &st, 0), 0, state, &err);
                if (st.state == STORE_STEP_CANCELLING && state != NULL && !winding_down(state)) {
                    /* the stop did not take (or its answer was lost): ask again; stopping is idempotent */
                    eng_op *again = op_new(e, OP_STOP, &st);
                    again->drain = step_drains(e, &st);
                    outbox_push(e, again);
                }
            }
        } else {
            store_step_set_check(e->o.st, st.run_id, st.name, st.attempt, backoff_next(e, &st, st.check_failures + 1),
                                 st.check_failures + 1, NULL, &err);
        }
        break;
    case OP_STOP:
        if (r->outcome == JA_OK) {
            /* the job winds down: followed on the short schedule from the stop request (its hint) */
            store_step_set_check(e->o.st, st.run_id, st.name, st.attempt,
                                 r->already_terminated ? now : backoff_next(e, &st, 0), 0, NULL, &err);
            e->ready_hint++;
        } else {
            store_step_set_check(e->o.st, st.run_id, st.name, st.attempt, backoff_next(e, &st, st.check_failures + 1),
                                 st.check_failures + 1, NULL, &err);
        }
        break;
    case OP_MESSAGES: break; /* answered above */
    }
    free(err);
    store_step_free(&st);
}

/* ---- inbox: events are hints that make a step due now ---- */

static void consume_inbox(engine *e)
{
    store_event_list evs = {0};
    char *err = NULL;
    /* A bounded batch keeps the tick's write lock short: ingress commits wait for it. */
    if (store_inbox_fetch(e->o.st, 256, &evs, &err) != STORE_OK) {
        free(err);
        return;
    }
    for (size_t i = 0; i < evs.count; i++) {
        store_event *ev = &evs.items[i];
        store_step st = {0};
        int rc = STORE_NOTFOUND;
        if (ev->job_id) rc = store_step_find_by_job_id(e->o.st, ev->job_id, &st, NULL);
        if (rc != STORE_OK && ev->job_name) rc = store_step_find_by_job_name(e->o.st, ev->job_name, &st, NULL);
        if (rc == STORE_OK && (st.state == STORE_STEP_RUNNING || st.state == STORE_STEP_LAUNCHING ||
                               st.state == STORE_STEP_CANCELLING)) {
            /* Confirm with the API at once (the event alone is never trusted); if the API still shows the job
             * running (it lags behind the logs), the hint keeps the step on the short schedule. */
            store_step_set_hint(e->o.st, st.run_id, st.name, st.attempt, now_ms(e), 0, NULL);
            e->ready_hint++;
        }
        store_step_free(&st);
        store_inbox_mark_processed(e->o.st, ev->id, 0, NULL);
        e->stats.events++;
    }
    store_event_list_free(&evs);
}

/* ---- runs ---- */

/* Inside a run-creating transaction: stores the workflow version's source if no run stored it yet. Returns its
 * slot (mark it stored once the transaction commits), or NULL for a version loaded from the store. */
static wf_slot *store_version(engine *e, const wf_workflow *wf, int *rc, char **msg)
{
    for (size_t i = 0; i < e->n_wfs; i++) {
        wf_slot *slot = &e->wfs[i];
        if (slot->wf != wf) continue;
        if (!slot->stored && *rc == STORE_OK) *rc = store_script_put(e->o.st, wf->version, wf->name, wf->source, msg);
        return slot;
    }
    return NULL;
}

static int fail_with(char **err, int code, const char *fmt, const char *a, const char *b)
{
    if (err && asprintf(err, fmt, a, b ? b : "") < 0) *err = NULL;
    return code;
}

int engine_start_run(engine *e, const char *workflow, json_t *params, const char *request_key, const char *origin,
                     char *run_id, size_t run_id_len, char **err)
{
    const wf_workflow *wf = engine_workflow(e, workflow);
    if (wf == NULL) return fail_with(err, ENG_ERR_NO_WORKFLOW, "no workflow named '%s'%s", workflow, NULL);
    if (params != NULL && !json_is_object(params)) return fail_with(err, ENG_ERR_PARAMS, "params must be an object%s%s", "", NULL);
    /* declared params: required ones present, no unknown ones, defaults filled in */
    json_t *full = params ? json_deep_copy(params) : json_object();
    char *perr = NULL;
    if (wf_apply_params(wf, full, &perr) != 0) {
        json_decref(full);
        if (err) *err = perr;
        else free(perr);
        return ENG_ERR_PARAMS;
    }
    char id[RUN_ID_LEN + 1];
    util_random_id(id, RUN_ID_LEN);
    char *ptext = json_dumps(full, JSON_COMPACT | JSON_SORT_KEYS);
    json_decref(full);
    store_run run = {.id = id, .workflow = wf->name, .script_hash = wf->version, .params_json = ptext,
                     .state = STORE_RUN_RUNNING, .origin = (char *)origin, .request_key = (char *)request_key};
    char *msg = NULL;
    int result = 0;
    int rc = store_begin(e->o.st, &msg);
    /* The source goes into the store with the first run of this version, so that the run can always resume on
     * it (registering hundreds of workflows at start-up writes nothing). */
    wf_slot *slot = store_version(e, wf, &rc, &msg);
    if (rc == STORE_OK) rc = store_run_create(e->o.st, &run, &msg);
    if (rc == STORE_EXISTS && request_key != NULL) {
        /* The same request again answers with the run it started; the key with other params is a mistake. */
        store_rollback(e->o.st, NULL);
        free(msg);
        msg = NULL;
        store_run prev = {0};
        rc = store_run_get_by_request_key(e->o.st, request_key, &prev, &msg);
        if (rc == STORE_OK) {
            snprintf(run_id, run_id_len, "%s", prev.id);
            if (strcmp(prev.workflow, wf->name) != 0 || strcmp(prev.params_json ? prev.params_json : "{}", ptext) != 0) {
                if (asprintf(&msg, "request_key '%s' already started run %s of %s with other params", request_key,
                             prev.id, prev.workflow) < 0)
                    msg = NULL;
                result = ENG_ERR_CONFLICT;
            } else {
                result = 1;
            }
        } else {
            result = ENG_ERR_STORE;
        }
        store_run_free(&prev);
        free(ptext);
        goto out;
    }
    if (rc == STORE_OK) {
        store_step first = {.run_id = id, .name = wf->steps[wf->start_index].name, .attempt = 1,
                            .state = STORE_STEP_PENDING};
        rc = store_step_insert(e->o.st, &first, &msg);
    }
    if (rc == STORE_OK) rc = store_commit(e->o.st, &msg);
    if (rc != STORE_OK && store_in_transaction(e->o.st)) store_rollback(e->o.st, NULL);
    free(ptext);
    if (rc == STORE_OK) {
        if (slot != NULL) slot->stored = 1;
        snprintf(run_id, run_id_len, "%s", id);
        e->ready_hint++;
        log_info("run %s of %s started", id, wf->name);
    } else {
        result = ENG_ERR_STORE;
    }
out:
    if (err != NULL)
        *err = msg;
    else
        free(msg);
    return result;
}

/* Whether step `name` was reached by a failure: it is the on_failure target of a step that failed or was
 * cancelled in this run. */
static int reached_by_failure(const run_view *v, const char *name)
{
    for (size_t i = 0; i < v->steps.count; i++) {
        const store_step *s = &v->steps.items[i];
        if (s->state != STORE_STEP_FAILED && s->state != STORE_STEP_CANCELLED) continue;
        int idx = wf_step_index(v->wf, s->name);
        if (idx >= 0 && v->wf->steps[idx].on_failure && strcmp(v->wf->steps[idx].on_failure, name) == 0) return 1;
    }
    return 0;
}

int engine_redrive_run(engine *e, const char *run_id, json_t *params, int latest, char **err)
{
    run_view v;
    char *msg = NULL;
    if (run_view_load(e, run_id, &v, &msg) != 0) {
        free(msg);
        return fail_with(err, ENG_ERR_NOTFOUND, "no run '%s'%s", run_id, NULL);
    }
    int result = 0;
    char *ptext = NULL;
    const wf_workflow *target = v.wf;
    if (v.run.state != STORE_RUN_FAILED && v.run.state != STORE_RUN_CANCELLED) {
        result = fail_with(err, ENG_ERR_STATE, "run %s is %s: only a failed or cancelled run can be redriven", run_id,
                           store_run_state_name(v.run.state));
        goto done;
    }
    if (latest) {
        target = engine_workflow(e, v.run.workflow);
        if (target == NULL) {
            result = fail_with(err, ENG_ERR_STATE, "workflow %s of run %s is no longer loaded: redrive it without --latest",
                               v.run.workflow, run_id);
            goto done;
        }
        for (size_t i = 0; i < v.steps.count; i++)
            if (wf_step_index(target, v.steps.items[i].name) < 0) {
                result = fail_with(err, ENG_ERR_STATE, "the current version of %s has no step %s: redrive it on its own "
                                   "version (without --latest)", v.run.workflow, v.steps.items[i].name);
                goto done;
            }
    }
    if (params != NULL) {
        json_t *merged = json_loads(v.run.params_json ? v.run.params_json : "{}", 0, NULL);
        if (merged == NULL) merged = json_object();
        json_object_update(merged, params);
        char *perr = NULL;
        if (wf_apply_params(target, merged, &perr) != 0) {
            json_decref(merged);
            if (err) *err = perr;
            else free(perr);
            result = ENG_ERR_PARAMS;
            goto done;
        }
        ptext = json_dumps(merged, JSON_COMPACT | JSON_SORT_KEYS);
        json_decref(merged);
    }
    int rc = store_begin(e->o.st, &msg);
    wf_slot *slot = target != v.wf ? store_version(e, target, &rc, &msg) : NULL;
    if (rc == STORE_OK)
        rc = store_run_redrive(e->o.st, run_id, v.run.state, target != v.wf ? target->version : NULL, ptext, &msg);
    /* Succeeded steps and their results stay; failed and cancelled ones start again (a new attempt, so a new job
     * name, whenever they had launched); a step that only a failure reached waits to be reached again. */
    int restarted = 0;
    for (size_t i = 0; rc == STORE_OK && i < v.steps.count; i++) {
        const store_step *s = &v.steps.items[i];
        if (s->state != STORE_STEP_FAILED && s->state != STORE_STEP_CANCELLED) continue;
        store_step_state next = reached_by_failure(&v, s->name) ? STORE_STEP_SKIPPED : STORE_STEP_PENDING;
        rc = store_step_set_state(e->o.st, run_id, s->name, s->state, s->attempt, next, &msg);
        if (rc == STORE_OK && next == STORE_STEP_PENDING) {
            rc = store_step_set_check(e->o.st, run_id, s->name, s->attempt, 0, 0, NULL, &msg);
            restarted++;
        }
    }
    if (rc == STORE_OK && restarted == 0) {
        if (asprintf(&msg, "run %s has no failed or cancelled step to run again", run_id) < 0) msg = NULL;
        rc = STORE_CONFLICT;
    }
    if (rc == STORE_OK) rc = store_commit(e->o.st, &msg);
    if (rc != STORE_OK && store_in_transaction(e->o.st)) store_rollback(e->o.st, NULL);
    if (rc == STORE_OK) {
        if (slot != NULL) slot->stored = 1;
        e->ready_hint++;
        log_info("run %s of %s redriven: %d step(s) run again%s", run_id, v.run.workflow, restarted,
                 target != v.wf ? " on the current version" : "");
    } else {
        result = rc == STORE_CONFLICT ? ENG_ERR_STATE : ENG_ERR_STORE;
        if (err) {
            *err = msg;
            msg = NULL;
        }
    }
done:
    free(msg);
    free(ptext);
    run_view_free(&v);
    return result;
}

/* ---- the loop ---- */

static void sent_unlink(engine *e, eng_op *op)
{
    if (op->sent_prev)
        op->sent_prev->sent_next = op->sent_next;
    else
        e->sent = op->sent_next;
    if (op->sent_next) op->sent_next->sent_prev = op->sent_prev;
    op->sent_prev = op->sent_next = NULL;
}

static void api_cb(void *ud, const ja_result *r)
{
    eng_op *op = ud;
    engine *e = op->e;
    if (e == NULL) { /* the engine was freed while the API held this call */
        op_free(op);
        return;
    }
    sent_unlink(e, op);
    op->res.outcome = r->outcome;
    op->res.http_status = r->http_status;
    op->res.message = xstrdup(r->message);
    op->res.job = r->job ? json_incref(r->job) : NULL;
    op->res.already_terminated = r->already_terminated;
    op->next = e->done;
    e->done = op;
    e->inflight--;
}

static void send_outbox(engine *e)
{
    eng_op *op = e->outbox;
    e->outbox = e->outbox_tail = NULL;
    while (op) {
        eng_op *next = op->next;
        op->next = NULL;
        int rc = -1;
        e->inflight++;
        op->sent_next = e->sent;
        if (e->sent) e->sent->sent_prev = op;
        e->sent = op;
        switch (op->kind) {
        case OP_LAUNCH:
            e->stats.launches_sent++;
            log_debug("run %s: step %s: sending launch of %s", op->run_id, op->step, op->launch->job_name);
            rc = e->o.api->ops->launch(e->o.api, op->launch, api_cb, op);
            break;
        case OP_GET:
            e->stats.checks++;
            rc = e->o.api->ops->get(e->o.api, op->project, op->region, op->job_id, api_cb, op);
            break;
        case OP_FIND:
            e->stats.checks++;
            rc = e->o.api->ops->find(e->o.api, op->project, op->region, op->job_name, api_cb, op);
            break;
        case OP_STOP:
            rc = e->o.api->ops->stop(e->o.api, op->project, op->region, op->job_id, op->drain, api_cb, op);
            break;
        case OP_MESSAGES:
            rc = e->o.api->ops->messages(e->o.api, op->project, op->region, op->job_id, api_cb, op);
            break;
        }
        if (rc != 0) { /* could not even be queued: the step stays due after its lease */
            e->inflight--;
            sent_unlink(e, op);
            busy_set(e, op->run_id, op->step, 0);
            op_free(op);
        }
        op = next;
    }
}

/* Dispatches a due in-flight step: leases it and queues the check the reconciler asks for. */
static void check_step(engine *e, const store_step *st)
{
    int stopping = run_stopping(e, st->run_id);
    rec_action a = rec_decide(st, stopping, now_ms(e));
    int timeout_stop = a == REC_STOP && !stopping;
    if (a == REC_NONE) return;
    store_step_set_check(e->o.st, st->run_id, st->name, st->attempt, now_ms(e) + e->o.rec.lease_ms, st->check_failures,
                         NULL, NULL);
    eng_op *op = op_new(e, a == REC_FIND ? OP_FIND : a == REC_GET ? OP_GET : OP_STOP, st);
    if (a == REC_STOP) {
        op->drain = step_drains(e, st);
        store_step_set_state(e->o.st, st->run_id, st->name, STORE_STEP_RUNNING, st->attempt, STORE_STEP_CANCELLING,
                             NULL);
        /* the stop request is the hint: its wind-down is followed on the short schedule */
        store_step_set_hint(e->o.st, st->run_id, st->name, st->attempt, now_ms(e), now_ms(e) + e->o.rec.lease_ms,
                            NULL);
        if (timeout_stop)
            log_warn("run %s: step %s timed out; stopping job %s", st->run_id, st->name, st->job_id ? st->job_id : "?");
    }
    outbox_push(e, op);
}

/* Sleeps up to ms, or less if a signal arrives (the caller's loop then sees its flag). */
static void idle_sleep(int ms)
{
    if (ms <= 0) return;
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

int64_t engine_next_due(const engine *e) { return e->next_due; }

/* The first tick of a process: a launch intent (or a check of a job that should be ending) leased by the
 * process before this one will never be answered, so it is due now rather than when its lease runs out (a
 * minute or more: a restart must not delay a resumed run). One engine per store, so no lease is live. */
static void void_old_leases(engine *e)
{
    store_step_list l = {0};
    int64_t now = now_ms(e);
    if (store_step_due(e->o.st, INT64_MAX, 10000, &l, NULL) != STORE_OK) return;
    for (size_t i = 0; i < l.count; i++) {
        const store_step *st = &l.items[i];
        if (st->next_check_at <= now) continue;
        if (st->state == STORE_STEP_LAUNCHING || (st->hint_at > 0 && st->state != STORE_STEP_PENDING)) {
            store_step_set_check(e->o.st, st->run_id, st->name, st->attempt, now, st->check_failures, NULL, NULL);
            e->ready_hint++;
        }
    }
    store_step_list_free(&l);
}

int engine_tick(engine *e, int max_wait_ms)
{
    int wait = (e->ready_hint > 0 || e->done != NULL) ? 0 : max_wait_ms;
    if (wait > 0 && e->next_due != INT64_MAX) {
        int64_t until = e->next_due - now_ms(e);
        if (until < wait) wait = until < 0 ? 0 : (int)until;
    }
    e->ready_hint = 0;
    /* With nothing outstanding there is nothing to wait for but the clock: sleep instead of polling. */
    if (e->inflight > 0)
        e->o.api->ops->poll(e->o.api, wait);
    else
        idle_sleep(wait);
    char *err = NULL;
    if (store_begin(e->o.st, &err) != STORE_OK) {
        log_error("engine: cannot begin a transaction: %s", err ? err : "?");
        free(err);
        e->stats.commit_failures++;
        return -1;
    }
    if (!e->recovered) {
        void_old_leases(e);
        e->recovered = 1;
    }
    /* answers first: they may finish steps and create new pending ones */
    eng_op *done = e->done;
    e->done = NULL;
    for (eng_op *op = done; op; op = op->next) apply_answer(e, op);
    consume_inbox(e);
    int room = e->o.max_inflight - e->inflight;
    if (room > 0) {
        store_step_list due = {0};
        int limit = room < e->o.max_due ? room : e->o.max_due;
        if (store_step_due(e->o.st, now_ms(e), limit, &due, &err) == STORE_OK) {
            for (size_t i = 0; i < due.count; i++) {
                store_step *st = &due.items[i];
                if (busy_has(e, st->run_id, st->name)) continue;
                if (st->state == STORE_STEP_PENDING)
                    start_step(e, st);
                else
                    check_step(e, st);
            }
            if (due.count == (size_t)limit) e->ready_hint++;
        } else {
            log_error("engine: due query failed: %s", err ? err : "?");
        }
        store_step_list_free(&due);
        free(err);
        err = NULL;
    }
    if (store_commit(e->o.st, &err) != STORE_OK) {
        log_error("engine: commit failed, the tick will be redone: %s", err ? err : "?");
        free(err);
        store_rollback(e->o.st, NULL);
        e->stats.commit_failures++;
        /* nothing recorded may be sent; the answers are lost and their steps fall due again */
        for (eng_op *op = e->outbox; op; op = op->next) busy_set(e, op->run_id, op->step, 0);
        free_ops(e->outbox);
        e->outbox = e->outbox_tail = NULL;
        free_ops(done);
        return -1;
    }
    free_ops(done);
    if (store_step_next_due(e->o.st, &e->next_due, NULL) != STORE_OK) e->next_due = 0;
    /* A launch may leave only once its intent survives power loss, not just a crash: commits run with
     * synchronous=NORMAL (cheap), and a tick that recorded intents pays for one sync of the log here. */
    int launches = 0;
    for (eng_op *op = e->outbox; op && !launches; op = op->next) launches = op->kind == OP_LAUNCH;
    if (launches && store_flush(e->o.st, &err) != STORE_OK) {
        log_error("engine: cannot make launch intents durable, not sending: %s", err ? err : "?");
        free(err);
        for (eng_op *op = e->outbox; op; op = op->next) busy_set(e, op->run_id, op->step, 0);
        free_ops(e->outbox);
        e->outbox = e->outbox_tail = NULL;
        return -1;
    }
    send_outbox(e);
    return e->inflight + e->ready_hint;
}

/* ---- adopting a job Sluice did not launch (sluice serve --adopt-foreign) ---- */

int engine_adopt_job(engine *e, const char *workflow, const char *step, const char *job_id, const char *job_name,
                     const char *project, const char *region, char *run_id, size_t run_id_len, char **err)
{
    const wf_workflow *wf = engine_workflow(e, workflow);
    int idx = wf ? wf_step_index(wf, step) : -1;
    if (idx < 0 || (job_id == NULL && job_name == NULL)) {
        if (err) *err = strdup("no such workflow or step, or no job named");
        return -1;
    }
    const wf_step *ws = &wf->steps[idx];
    char key[600];
    snprintf(key, sizeof key, "adopt:%s", job_id ? job_id : job_name);
    char id[RUN_ID_LEN + 1];
    util_random_id(id, RUN_ID_LEN);
    store_run run = {.id = id, .workflow = wf->name, .script_hash = wf->version, .params_json = "{}",
                     .state = STORE_RUN_RUNNING, .origin = "adopted", .request_key = key};
    int rc = store_begin(e->o.st, err);
    wf_slot *slot = store_version(e, wf, &rc, err);
    if (rc == STORE_OK) rc = store_run_create(e->o.st, &run, err);
    if (rc == STORE_EXISTS) { /* the same job was adopted before (another event about it) */
        store_rollback(e->o.st, NULL);
        if (err) {
            free(*err);
            *err = NULL;
        }
        store_run prev = {0};
        rc = store_run_get_by_request_key(e->o.st, key, &prev, err);
        if (rc == STORE_OK) snprintf(run_id, run_id_len, "%s", prev.id);
        store_run_free(&prev);
        return rc == STORE_OK ? 1 : -1;
    }
    /* The step starts as running with the job's identity: the reconciler confirms its state with jobs.get at
     * once and the usual path (finish, successors) follows. */
    store_step st = {.run_id = id, .name = ws->name, .attempt = 1, .state = STORE_STEP_RUNNING,
                     .job_name = (char *)job_name, .job_id = (char *)job_id,
                     .project = (char *)(ws->project ? ws->project : wf->project ? wf->project : project),
                     .region = (char *)(ws->region ? ws->region : wf->region ? wf->region : region),
                     .started_at = now_ms(e), .next_check_at = 0};
    if (rc == STORE_OK) rc = store_step_insert(e->o.st, &st, err);
    if (rc == STORE_OK) rc = store_commit(e->o.st, err);
    if (rc != STORE_OK && store_in_transaction(e->o.st)) store_rollback(e->o.st, NULL);
    if (rc != STORE_OK) return -1;
    if (slot != NULL) slot->stored = 1;
    snprintf(run_id, run_id_len, "%s", id);
    e->ready_hint++;
    log_info("run %s of %s adopted job %s at step %s", id, wf->name, job_name ? job_name : job_id, ws->name);
    return 0;
}
