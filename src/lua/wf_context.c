/* wf_context: the context a workflow function receives, for the engine, `sluice plan` and `sluice preflight`
 * alike, and the runs plan and preflight imagine to build it (wf_context.h).
 * Uses: workflow (the model, job names), util (time formatting), jansson. Must not: touch the store, call Lua,
 * do I/O. */
#include "wf_context.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "job_state.h"
#include "mem.h"
#include "util.h"

static const char *state_name(wf_ctx_state s)
{
    return s == WF_CTX_SUCCEEDED ? "succeeded" : s == WF_CTX_FAILED ? "failed" : "cancelled";
}

/* Whether finished step `s` led the run to `step`: it succeeded and `step` is one of its next steps (or declared
 * choices), or it failed and `step` is its on_failure. The engine's rule, for every caller. */
static int leads_here(const wf_workflow *wf, const wf_ctx_step *s, const wf_step *step)
{
    int idx = wf_step_index(wf, s->name);
    if (idx < 0) return 0;
    const wf_step *ps = &wf->steps[idx];
    if (s->state == WF_CTX_SUCCEEDED)
        for (size_t j = 0; j < ps->n_next; j++)
            if (strcmp(ps->next[j], step->name) == 0) return 1;
    return s->state == WF_CTX_FAILED && ps->on_failure != NULL && strcmp(ps->on_failure, step->name) == 0;
}

/* ctx.results.<Step>: state, attempt, and job_id, job_name, job_state, output, error when present. */
static json_t *result_json(const wf_ctx_step *s)
{
    json_t *r = json_pack("{s:s,s:i,s:s*,s:s*,s:s*,s:s*}", "state", state_name(s->state), "attempt", s->attempt,
                          "job_id", s->job_id, "job_name", s->job_name, "job_state", s->job_state, "error",
                          s->error);
    if (r != NULL && s->output != NULL && !json_is_null(s->output)) json_object_set(r, "output", s->output);
    return r;
}

/* An entry of ctx.jobs: id, step, and name, state, labels when known. */
static json_t *job_json(const wf_ctx_step *s)
{
    return json_pack("{s:s,s:s,s:s*,s:s*,s:O*}", "id", s->job_id, "step", s->name, "name", s->job_name, "state",
                     s->job_state, "labels", json_is_object(s->labels) ? s->labels : NULL);
}

json_t *wf_step_context(const wf_workflow *wf, const wf_step *step, const wf_ctx_run *run, int attempt,
                        const wf_ctx_step *done, size_t n_done)
{
    char name[WF_JOB_NAME_MAX + 1] = "";
    if (step->job_name != NULL && wf_launch_name(step, run->id, attempt, name, sizeof name) != 0) return NULL;
    char when[40];
    util_rfc3339(run->started_ms, when, sizeof when);
    const char *project = step->project ? step->project : wf->project ? wf->project : run->default_project;
    const char *region = step->region ? step->region : wf->region;
    json_t *ctx = json_pack("{s:{s:s,s:s,s:s,s:o,s:I,s:s},s:{s:s,s:s*,s:s*,s:i},s:s*,s:s*,s:s*,s:s*}", "run", "id",
                            run->id, "workflow", wf->name, "version", wf->version, "params",
                            run->params ? json_incref(run->params) : json_object(), "started_at",
                            (json_int_t)(run->started_ms / 1000), "started", when, "step", "name", step->name,
                            "job_name", step->job_name, "template", step->template, "attempt", attempt, "job_name",
                            name[0] ? name : NULL, "template_location", step->template, "project", project, "region",
                            region);
    if (ctx == NULL) return NULL;
    json_t *results = json_object(), *jobs = json_array();
    for (size_t i = 0; i < n_done; i++) {
        const wf_ctx_step *s = &done[i];
        json_object_set_new(results, s->name, result_json(s));
        if (s->job_id != NULL && leads_here(wf, s, step)) json_array_append_new(jobs, job_json(s));
    }
    if (wf->failure_handler != NULL && strcmp(wf->failure_handler, step->name) == 0) {
        /* The run failed: which step, why, Dataflow's cause, and its job. */
        const wf_ctx_step *failed = NULL;
        for (size_t i = 0; i < n_done; i++) {
            const wf_ctx_step *s = &done[i];
            if (s->state != WF_CTX_FAILED || strcmp(s->name, step->name) == 0) continue;
            if (run->failed_step != NULL ? strcmp(s->name, run->failed_step) == 0 : 1) failed = s;
        }
        json_t *f = json_pack("{s:s*,s:s*,s:s*}", "step", failed ? failed->name : NULL, "error",
                              failed && failed->error ? failed->error : run->failure_error, "cause",
                              failed ? failed->cause : NULL);
        if (f != NULL && failed != NULL && failed->job_id != NULL) {
            json_t *job = job_json(failed);
            json_object_set(f, "job", job);
            json_array_clear(jobs);
            json_array_append_new(jobs, job);
        }
        if (f != NULL) json_object_set_new(ctx, "failure", f);
    }
    if (json_array_size(jobs) > 0) json_object_set(ctx, "job", json_array_get(jobs, 0));
    json_object_set_new(ctx, "jobs", jobs);
    json_object_set_new(ctx, "results", results);
    return ctx;
}

/* ---- imagined runs ---- */


static void step_clear(wf_ctx_step *s)
{
    free((char *)s->name);
    free((char *)s->job_id);
    free((char *)s->job_name);
    free((char *)s->job_state);
    free((char *)s->error);
    free((char *)s->cause);
    json_decref(s->labels);
    json_decref(s->output);
    memset(s, 0, sizeof *s);
}

const wf_ctx_step *wf_ctx_steps_get(const wf_ctx_steps *l, const char *name)
{
    for (size_t i = 0; i < l->n; i++)
        if (strcmp(l->items[i].name, name) == 0) return &l->items[i];
    return NULL;
}

int wf_ctx_steps_put(wf_ctx_steps *l, const wf_ctx_step *s, int replace)
{
    wf_ctx_step *at = (wf_ctx_step *)wf_ctx_steps_get(l, s->name);
    if (at != NULL && !replace) return 0;
    if (at != NULL) {
        step_clear(at);
    } else {
        if (l->n == l->cap) {
            size_t cap = l->cap ? l->cap * 2 : 8;
            wf_ctx_step *items = xrealloc(l->items, cap * sizeof *items);
            l->items = items;
            l->cap = cap;
        }
        at = &l->items[l->n++];
    }
    *at = (wf_ctx_step){.name = xstrdup(s->name), .state = s->state, .attempt = s->attempt,
                        .job_id = xstrdup(s->job_id), .job_name = xstrdup(s->job_name),
                        .job_state = xstrdup(s->job_state), .labels = s->labels ? json_incref(s->labels) : NULL,
                        .output = s->output ? json_incref(s->output) : NULL, .error = xstrdup(s->error),
                        .cause = xstrdup(s->cause)};
    return 1;
}

void wf_ctx_steps_remove(wf_ctx_steps *l, const char *name)
{
    wf_ctx_step *at = (wf_ctx_step *)wf_ctx_steps_get(l, name);
    if (at == NULL) return;
    step_clear(at);
    size_t i = (size_t)(at - l->items);
    memmove(at, at + 1, (l->n - i - 1) * sizeof *at);
    l->n--;
}

void wf_ctx_steps_free(wf_ctx_steps *l)
{
    for (size_t i = 0; i < l->n; i++) step_clear(&l->items[i]);
    free(l->items);
    memset(l, 0, sizeof *l);
}

const char *wf_ctx_placeholder_id(const char *tool, const wf_step *step, char *buf, size_t buflen)
{
    snprintf(buf, buflen, "%s-job-id-of-%s", tool, step->label);
    return buf;
}

/* An imagined step at attempt 1 whose job (a launch step's) ended `job_state`. */
static void imagine(const wf_step *step, const char *run_id, const char *tool, wf_ctx_state state,
                    const char *job_state, wf_ctx_steps *l)
{
    if (wf_ctx_steps_get(l, step->name) != NULL) return;
    char name[WF_JOB_NAME_MAX + 1], id[128], why[WF_JOB_NAME_MAX + 64];
    wf_ctx_step s = {.name = step->name, .state = state, .attempt = 1};
    if (step->kind != WF_STEP_HOOK && wf_launch_name(step, run_id, 1, name, sizeof name) == 0) {
        s.job_name = name;
        s.job_id = wf_ctx_placeholder_id(tool, step, id, sizeof id);
        s.job_state = job_state;
        if (state == WF_CTX_FAILED) {
            snprintf(why, sizeof why, "job %s ended %s", name, job_state);
            s.error = why;
        }
    } else if (state == WF_CTX_FAILED) {
        s.error = "its function failed";
    }
    wf_ctx_steps_put(l, &s, 0);
}

void wf_ctx_imagine_succeeded(const wf_step *step, const char *run_id, const char *tool, wf_ctx_steps *l)
{
    imagine(step, run_id, tool, WF_CTX_SUCCEEDED, js_name(JS_DONE), l);
}

void wf_ctx_imagine_reaching(const wf_workflow *wf, const wf_step *step, const char *run_id, const char *tool,
                             wf_ctx_steps *l)
{
    size_t n = wf->n_steps;
    char *mark = xcalloc(n + 1, 1); /* 1: succeeded, 2: failed into `step` */
    size_t *todo = xcalloc(n + 1, sizeof *todo), k = 0;
    for (size_t i = 0; i < step->n_preds; i++)
        if (!mark[step->preds[i]]) mark[step->preds[i]] = 1, todo[k++] = step->preds[i];
    for (size_t i = 0; i < n; i++)
        if (!mark[i] && wf->steps[i].on_failure != NULL && strcmp(wf->steps[i].on_failure, step->name) == 0)
            mark[i] = 2, todo[k++] = i;
    while (k > 0) {
        const wf_step *a = &wf->steps[todo[--k]];
        for (size_t i = 0; i < a->n_preds; i++)
            if (!mark[a->preds[i]]) mark[a->preds[i]] = 1, todo[k++] = a->preds[i];
    }
    for (size_t i = 0; i < n; i++) {
        const wf_step *s = &wf->steps[i];
        if (s == step || mark[i] == 0) continue;
        if (mark[i] == 1)
            imagine(s, run_id, tool, WF_CTX_SUCCEEDED, js_name(JS_DONE), l);
        else
            imagine(s, run_id, tool, WF_CTX_FAILED, js_name(JS_FAILED), l);
    }
    free(mark);
    free(todo);
}
