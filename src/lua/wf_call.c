/* wf_call: calling a workflow's functions — building a launch request from a step's parameter function (params
 * and environment merged over the workflow's and the step's), running hooks, choosing successors. The half of
 * the workflow model that runs at run time; loading and validating are in wf_load.c and wf_check.c, the context
 * the functions receive in wf_context.c.
 * Uses: workflow (the model), lua_host (through wf_vm), gcp_names (label rules), launch, jansson. Must not: do I/O or know about runs
 * beyond the context it is handed. */
#include "workflow.h"
#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "gcp_names.h"
#include "util.h"

/* ---- calling the script ---- */

/* Calls a function of the workflow: `which` is the step's parameter/hook function (0) or its choice (1). */
static wf_rc call_fn(const wf_workflow *wf, const wf_step *step, int which, json_t *ctx, json_t **out, char **err)
{
    lh_vm *vm = wf_vm(wf, err);
    if (vm == NULL) return WF_ERR_LUA;
    return (wf_rc)lh_call(vm, which ? step->next_ref : step->fn_ref, ctx, out, err);
}

/* Converts a parameter value to the string Dataflow expects. */
static json_t *param_string(json_t *v)
{
    char buf[64];
    switch (json_typeof(v)) {
    case JSON_STRING: return json_incref(v);
    case JSON_INTEGER: snprintf(buf, sizeof buf, "%" JSON_INTEGER_FORMAT, json_integer_value(v)); return json_string(buf);
    case JSON_REAL: snprintf(buf, sizeof buf, "%.17g", json_real_value(v)); return json_string(buf);
    case JSON_TRUE: return json_string("true");
    case JSON_FALSE: return json_string("false");
    default: return NULL;
    }
}

static wf_rc merge_params(json_t *into, json_t *from, const char *step, char **err)
{
    if (from == NULL) return WF_OK;
    const char *k;
    json_t *v;
    json_object_foreach(from, k, v) {
        if (json_is_null(v)) {
            json_object_del(into, k);
            continue;
        }
        json_t *s = param_string(v);
        if (s == NULL) {
            *err = util_printf("step '%s': parameter '%s' must be a string, number or boolean", step, k);
            return WF_ERR_RESULT;
        }
        json_object_set_new(into, k, s);
    }
    return WF_OK;
}

/* Merges launch environments: later keys win; additionalUserLabels merge key by key. */
static void merge_env(json_t *into, json_t *from)
{
    if (!json_is_object(from)) return;
    const char *k;
    json_t *v;
    json_object_foreach(from, k, v) {
        if (strcmp(k, "additionalUserLabels") == 0 && json_is_object(v)) {
            json_t *cur = json_object_get(into, k);
            if (!json_is_object(cur)) {
                cur = json_object();
                json_object_set_new(into, k, cur);
            }
            json_object_update(cur, v);
        } else if (json_is_null(v)) {
            json_object_del(into, k);
        } else {
            json_object_set(into, k, v);
        }
    }
}

wf_rc wf_build_launch(const wf_workflow *wf, const wf_step *step, json_t *ctx, const char *run_id,
                    const char *default_project, launch_req **out, char **err)
{
    *out = NULL;
    *err = NULL;
    wf_rc rc = WF_OK;
    json_t *result = NULL, *params = json_object(), *env = json_object();
    const char *job_name = json_string_value(json_object_get(ctx, "job_name"));
    /* config_project's order: the step's, the workflow's, then the default (--project, SLUICE_PROJECT, the
     * credentials), which the caller resolved with the same function at start-up. */
    const char *project = step->project ? step->project : wf->project ? wf->project : default_project;
    const char *region = step->region ? step->region : wf->region;
    /* the function sees the project the job launches into, the default one included */
    if (project && ctx && json_is_object(ctx) && !json_is_string(json_object_get(ctx, "project")))
        json_object_set_new(ctx, "project", json_string(project));
    if (step->kind == WF_STEP_HOOK) {
        rc = WF_ERR_RESULT;
        *err = util_printf("step '%s' has no template to launch", step->name);
        goto done;
    }
    if (job_name == NULL || project == NULL || region == NULL) {
        rc = WF_ERR_RESULT;
        *err = util_printf("step '%s': %s", step->name,
                           job_name == NULL  ? "the context has no job_name"
                           : project == NULL ? "no project: set project on the step or the workflow, pass --project, "
                                               "set SLUICE_PROJECT, or use credentials that name one (a "
                                               "service-account key's project_id, gcloud's quota_project_id, the "
                                               "metadata server)"
                                             : "no region");
        goto done;
    }
    if ((rc = merge_params(params, step->parameters, step->name, err)) != 0) goto done;
    merge_env(env, wf->environment);
    merge_env(env, step->environment);
    if (step->has_fn) {
        if ((rc = call_fn(wf, step, 0, ctx, &result, err)) != 0) goto done;
        json_t *fp = result, *fe = NULL;
        if (json_is_object(result) && (json_is_object(json_object_get(result, "parameters")) ||
                                       json_is_object(json_object_get(result, "environment")))) {
            fp = json_object_get(result, "parameters");
            fe = json_object_get(result, "environment");
        }
        if (fp != NULL && !json_is_null(fp) && !json_is_object(fp) && !(json_is_array(fp) && json_array_size(fp) == 0)) {
            rc = WF_ERR_RESULT;
            *err = util_printf("step '%s': function %s returned a %s; it must return a table of parameters", step->name,
                               step->fn_name ? step->fn_name : "", wf_type_name(fp));
            goto done;
        }
        if (json_is_object(fp) && (rc = merge_params(params, fp, step->name, err)) != 0) goto done;
        merge_env(env, fe);
    }
    /* Labels: workflow labels, then the environment's, then ours, which identify the run and always win. */
    json_t *labels = json_deep_copy(wf->labels);
    json_object_update(labels, json_object_get(env, "additionalUserLabels"));
    json_object_set_new(labels, WF_LABEL_WORKFLOW, json_string(wf->name));
    json_object_set_new(labels, WF_LABEL_RUN, json_string(run_id));
    json_object_set_new(labels, WF_LABEL_STEP, json_string(step->label));
    json_object_set_new(env, "additionalUserLabels", labels);
    char lerr[256];
    if (gn_labels_check(labels, lerr, sizeof lerr) != 0) {
        rc = WF_ERR_RESULT;
        *err = util_printf("step '%s': %s", step->name, lerr);
        goto done;
    }
    if (step->kind == WF_STEP_CLASSIC && json_object_get(env, "tempLocation") == NULL) {
        rc = WF_ERR_RESULT;
        *err = util_printf("step '%s': classic templates need environment.tempLocation", step->name);
        goto done;
    }
    *out = launch_new(step->kind == WF_STEP_FLEX ? LAUNCH_FLEX : LAUNCH_CLASSIC, step->template, job_name, project,
                      region, params, env);
    if (*out == NULL) {
        rc = WF_ERR_RESULT;
        *err = util_printf("step '%s': no launch request without a template, a job name, a project and a region",
                           step->name);
    }
done:
    json_decref(result);
    json_decref(params);
    json_decref(env);
    return rc;
}

wf_rc wf_run_hook(const wf_workflow *wf, const wf_step *step, json_t *ctx, json_t **output, char **err)
{
    *err = NULL;
    if (!step->has_fn) {
        *output = json_null();
        return WF_OK;
    }
    return call_fn(wf, step, 0, ctx, output, err);
}

wf_rc wf_successors(const wf_workflow *wf, const wf_step *step, json_t *ctx, json_t **names, char **err)
{
    *err = NULL;
    *names = json_array();
    if (step->next_kind == WF_NEXT_STATIC) {
        for (size_t i = 0; i < step->n_next; i++) json_array_append_new(*names, json_string(step->next[i]));
        return WF_OK;
    }
    if (step->next_kind != WF_NEXT_CHOICE) return WF_OK;
    json_t *r = NULL;
    wf_rc rc = call_fn(wf, step, 1, ctx, &r, err);
    if (rc != 0) { /* the choice function failed: no successors (the array was leaked here before) */
        json_decref(*names);
        *names = NULL;
        return rc;
    }
    if (json_is_string(r)) {
        json_array_append(*names, r);
    } else if (json_is_array(r)) {
        /* a name returned twice is one successor, launched once */
        size_t k, m;
        json_t *x, *y;
        json_array_foreach(r, k, x) {
            int seen = 0;
            json_array_foreach(*names, m, y) if (json_equal(x, y)) seen = 1;
            if (!seen) json_array_append(*names, x);
        }
    } else if (!json_is_null(r) && !(json_is_object(r) && json_object_size(r) == 0)) {
        *err = util_printf("step '%s': next() returned a %s; it must return a step name, a list of them, or nil",
                           step->name, wf_type_name(r));
        rc = WF_ERR_RESULT;
    }
    json_decref(r);
    size_t i;
    json_t *x;
    json_array_foreach(*names, i, x) {
        if (rc != 0) break;
        int ok = 0;
        for (size_t j = 0; json_is_string(x) && j < step->n_next; j++)
            if (strcmp(step->next[j], json_string_value(x)) == 0) ok = 1;
        if (!ok) {
            *err = util_printf("step '%s': next() returned %s%s%s, which is not one of its choices", step->name,
                               json_is_string(x) ? "'" : "a ",
                               json_is_string(x) ? json_string_value(x) : wf_type_name(x),
                               json_is_string(x) ? "'" : "");
            rc = WF_ERR_RESULT;
        }
    }
    if (rc != 0) {
        json_decref(*names);
        *names = NULL;
    }
    return rc;
}
