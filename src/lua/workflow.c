/* workflow: the workflow model: diagnostics, launch names, success and retry rules, the model's lifetime, lookups,
 * a run's params checked against the declared ones, the workflow's own VM, and the rules across workflows loaded
 * together. Loading a script into the model is wf_load.c, the rules over a loaded workflow's steps and graph
 * wf_check.c; calling the script at run time (launch requests, hooks, choices, the context) is wf_call.c; Google's
 * naming rules are gcp_names.c, the notification settings' rules wf_notify.c, the graph renderers wf_graph.c.
 * Uses: lua_host (the only way into the script), wf_sched, gcp_names, job_state, jansson, util.
 * Must not: talk to Dataflow or build its REST requests, touch the store, or call Lua except through lua_host. */
#include "workflow.h"

#include <ctype.h>
#include <math.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gcp_names.h"
#include "job_state.h"
#include "mem.h"
#include "util.h"

/* ---- diagnostics ---- */

void wf_diags_add(wf_diags *d, const char *fmt, ...)
{
    if (d == NULL) return;
    if (d->n == d->cap) {
        size_t cap = d->cap ? d->cap * 2 : 8;
        char **items = xrealloc(d->items, cap * sizeof *items);
        d->items = items;
        d->cap = cap;
    }
    va_list ap;
    va_start(ap, fmt);
    d->items[d->n++] = util_vprintf(fmt, ap);
    va_end(ap);
}

void wf_diags_free(wf_diags *d)
{
    for (size_t i = 0; i < d->n; i++) free(d->items[i]);
    free(d->items);
    memset(d, 0, sizeof *d);
}

/* ---- launch names, success, retries ---- */

int wf_launch_name(const wf_step *step, const char *run_id, int attempt, char *buf, size_t buflen)
{
    /* Only names wf_parse_launch_name can read back: a [a-z0-9]+ run id and an attempt in 1..1000000. */
    if (run_id[0] == '\0' || attempt < 1 || attempt > 1000000) return -1;
    for (const char *p = run_id; *p; p++)
        if (!(islower((unsigned char)*p) || isdigit((unsigned char)*p)) || !isascii((unsigned char)*p)) return -1;
    int n = snprintf(buf, buflen, "%s" WF_SUFFIX_SEP "%s-%d", step->job_name, run_id, attempt);
    if (n < 0 || (size_t)n >= buflen || n > WF_JOB_NAME_MAX || !gn_job_name_valid(buf)) return -1;
    return 0;
}

int wf_parse_launch_name(const char *name, char *run_id, size_t run_len, int *attempt)
{
    const char *sep = strstr(name, WF_SUFFIX_SEP);
    if (sep == NULL) return -1;
    const char *suffix = sep + strlen(WF_SUFFIX_SEP);
    const char *dash = strrchr(suffix, '-');
    if (dash == NULL || dash == suffix || dash[1] == '\0') return -1;
    size_t rl = (size_t)(dash - suffix);
    if (rl + 1 > run_len) return -1;
    for (const char *p = suffix; p < dash; p++)
        if (!(islower((unsigned char)*p) || isdigit((unsigned char)*p))) return -1;
    char *end = NULL;
    long a = strtol(dash + 1, &end, 10);
    if (*end != '\0' || a < 1 || a > 1000000) return -1;
    memcpy(run_id, suffix, rl);
    run_id[rl] = '\0';
    *attempt = (int)a;
    return 0;
}

int wf_step_success(const wf_step *step, const char *state)
{
    char norm[64];
    js_normalize(state, norm, sizeof norm);
    for (size_t i = 0; i < step->n_success; i++)
        if (strcmp(step->success[i], norm) == 0) return 1;
    return 0;
}

double wf_retry_delay(const wf_step *step, int next_attempt)
{
    double d = step->retry_backoff * pow(2.0, (double)(next_attempt - 2));
    return d > step->retry_max_backoff ? step->retry_max_backoff : d;
}

const char *wf_fail_class_name(int cls)
{
    static const char *const names[WF_FAIL_COUNT] = {NULL, "job_failed", "timeout", "rejected", "error"};
    return cls > 0 && cls < WF_FAIL_COUNT ? names[cls] : NULL;
}

/* ---- model lifetime ---- */

static void free_strv(char **v, size_t n)
{
    for (size_t i = 0; i < n; i++) free(v[i]);
    free(v);
}

wf_workflow *wf_ref(wf_workflow *wf)
{
    if (wf != NULL) atomic_fetch_add(&wf->refs, 1);
    return wf;
}

void wf_free(wf_workflow *wf)
{
    if (wf == NULL || atomic_fetch_sub(&wf->refs, 1) > 1) return;
    for (size_t i = 0; i < wf->n_steps; i++) {
        wf_step *s = &wf->steps[i];
        free(s->name);
        free(s->label);
        free(s->job_name);
        free(s->template);
        free(s->fn_name);
        json_decref(s->parameters);
        json_decref(s->environment);
        free(s->project);
        free(s->region);
        free_strv(s->next, s->n_next);
        free(s->on_failure);
        free_strv(s->success, s->n_success);
        free(s->preds);
    }
    free(wf->steps);
    wf_sched_clear(&wf->schedule);
    free(wf->name);
    free(wf->path);
    free(wf->version);
    free(wf->source);
    free(wf->project);
    free(wf->region);
    json_decref(wf->environment);
    json_decref(wf->labels);
    free(wf->start);
    free(wf->failure_handler);
    free(wf->notify_webhook);
    free(wf->notify_pubsub);
    for (size_t i = 0; i < wf->n_params; i++) {
        free(wf->params[i].name);
        json_decref(wf->params[i].def);
        free(wf->params[i].description);
    }
    free(wf->params);
    lh_free(wf->vm);
    free(wf);
}

int wf_step_index(const wf_workflow *wf, const char *name)
{
    size_t lo = 0, hi = wf->n_steps;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        int c = strcmp(wf->steps[mid].name, name);
        if (c == 0) return (int)mid;
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return -1;
}

int wf_names_every_project(const wf_workflow *wf)
{
    for (size_t i = 0; i < wf->n_steps; i++)
        if (wf->steps[i].kind != WF_STEP_HOOK && wf->steps[i].project == NULL && wf->project == NULL) return 0;
    return 1;
}

const wf_step *wf_step_for_job(const wf_workflow *wf, const char *job_name)
{
    const char *sep = strstr(job_name, WF_SUFFIX_SEP);
    size_t n = sep ? (size_t)(sep - job_name) : strlen(job_name);
    for (size_t i = 0; i < wf->n_steps; i++) {
        const wf_step *s = &wf->steps[i];
        if (s->kind != WF_STEP_HOOK && strlen(s->job_name) == n && strncmp(s->job_name, job_name, n) == 0) return s;
    }
    return NULL;
}

/* ---- declared values ---- */

int wf_is_fn(json_t *v) { return json_is_object(v) && json_object_get(v, "$fn") != NULL; }
static int fn_ref(json_t *v) { return (int)json_integer_value(json_object_get(v, "$fn")); }

const char *wf_type_name(json_t *v)
{
    if (v == NULL) return "nil";
    if (wf_is_fn(v)) return "function";
    switch (json_typeof(v)) {
    case JSON_OBJECT: return "table";
    case JSON_ARRAY: return "list";
    case JSON_STRING: return "string";
    case JSON_INTEGER:
    case JSON_REAL: return "number";
    case JSON_TRUE:
    case JSON_FALSE: return "boolean";
    default: return "nil";
    }
}

/* ---- a run's params ---- */

/* "a, b, c" (caller frees). */
static char *declared_names(const wf_workflow *wf)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *f = util_memstream(&buf, &len);
    for (size_t i = 0; i < wf->n_params; i++) fprintf(f, "%s%s", i ? ", " : "", wf->params[i].name);
    fclose(f);
    return buf;
}

int wf_apply_params(const wf_workflow *wf, json_t *params, char **err)
{
    if (!wf->declares_params) return 0;
    const char *k;
    json_t *v;
    json_object_foreach(params, k, v) {
        int known = 0;
        for (size_t i = 0; i < wf->n_params && !known; i++) known = strcmp(wf->params[i].name, k) == 0;
        if (!known) {
            char *names = declared_names(wf);
            if (err) *err = util_printf("workflow %s has no parameter '%s' (it declares: %s)", wf->name, k, names);
            free(names);
            return -1;
        }
    }
    for (size_t i = 0; i < wf->n_params; i++) {
        const wf_param *p = &wf->params[i];
        if (json_object_get(params, p->name) != NULL) continue;
        if (p->required) {
            if (err)
                *err = util_printf("missing required parameter '%s' of workflow %s%s%s", p->name, wf->name,
                                   p->description ? ": " : "", p->description ? p->description : "");
            return -1;
        }
        if (p->def) json_object_set(params, p->name, p->def);
    }
    return 0;
}

/* ---- the workflow's VM, workflows together ---- */

/* The reference of a declared function value ({"$fn": ref}) or of a named global; 0 if neither. */
static int bind_fn(lh_vm *vm, json_t *v)
{
    if (wf_is_fn(v)) return fn_ref(v);
    if (json_is_string(v)) return lh_ref_global(vm, json_string_value(v), NULL);
    return 0;
}

lh_vm *wf_vm(const wf_workflow *cwf, char **err)
{
    wf_workflow *wf = (wf_workflow *)cwf; /* the lazily created VM is cache state, not part of the model */
    if (wf->vm != NULL && lh_vm_dead(wf->vm)) { /* a budget kill abandoned it: build it again, as on first use */
        lh_free(wf->vm);
        wf->vm = NULL;
    }
    if (wf->vm != NULL) return wf->vm;
    lh_vm *vm = lh_new(&wf->limits, err);
    if (vm == NULL) return NULL;
    json_t *decl = NULL;
    if (lh_load(vm, wf->path, wf->source, wf->source_len, "dag", &decl, err) != LH_OK) {
        lh_free(vm);
        return NULL;
    }
    /* The same source declares the same steps; bind each step's functions to this VM. */
    json_t *steps = json_object_get(decl, "steps");
    int ok = 1;
    for (size_t i = 0; i < wf->n_steps && ok; i++) {
        wf_step *s = &wf->steps[i];
        json_t *d = json_object_get(steps, s->name);
        s->fn_ref = s->has_fn ? bind_fn(vm, json_object_get(d, "function")) : 0;
        s->next_ref = s->next_kind == WF_NEXT_CHOICE ? bind_fn(vm, json_object_get(d, "next")) : 0;
        ok = (!s->has_fn || s->fn_ref != 0) && (s->next_kind != WF_NEXT_CHOICE || s->next_ref != 0);
    }
    json_decref(decl);
    if (!ok) {
        if (err) *err = util_printf("%s: the script declared different functions when loaded again", wf->path);
        lh_free(vm);
        return NULL;
    }
    wf->vm = vm;
    return vm;
}

int wf_validate_set(wf_workflow *const *wfs, size_t n, wf_diags *diags)
{
    int found = 0;
    for (size_t a = 0; a < n; a++) {
        for (size_t b = a + 1; b < n; b++) {
            if (strcmp(wfs[a]->name, wfs[b]->name) == 0) {
                wf_diags_add(diags, "%s: workflow name '%s' is also used by %s", wfs[b]->path, wfs[b]->name,
                             wfs[a]->path);
                found++;
            }
            for (size_t i = 0; i < wfs[a]->n_steps; i++) {
                const wf_step *s = &wfs[a]->steps[i];
                if (s->kind == WF_STEP_HOOK) continue;
                const wf_step *o = wf_step_for_job(wfs[b], s->job_name);
                if (o == NULL) continue;
                wf_diags_add(diags, "%s:%d: job_name '%s' of step '%s' is also used by step '%s' of %s (%s:%d): "
                             "finished jobs could not be mapped to one workflow",
                             wfs[b]->path, o->line, s->job_name, o->name, s->name, wfs[a]->name, wfs[a]->path, s->line);
                found++;
            }
        }
    }
    return found;
}
