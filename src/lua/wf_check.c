/* wf_check: the rules over a workflow once its fields are loaded: gs:// paths and labels Google would refuse, each
 * step against the workflow's settings and the steps before it (region, a classic template's tempLocation, the
 * labels a launch would carry, job names and labels that must differ), and the graph (edges to missing steps, the
 * failure handler's place, reachability from the start, cycles). The loader (wf_load.c) calls them in its one pass,
 * so their problems go with the file's others.
 * Uses: wf_load_internal.h (the loader's state and its problem/line helpers), workflow (the model), gcp_names,
 * jansson. Must not: call Lua, read a file, or change the model beyond the steps' predecessors (wfl_check_graph
 * records them). */
#include <stdlib.h>
#include <string.h>

#include "gcp_names.h"
#include "mem.h"
#include "wf_load_internal.h"

/* Every gs:// string of a table of environment fields or parameters (of step s, or the workflow's when s is NULL)
 * must name a bucket that can exist: Dataflow refuses a launch whose template or temp location cannot. */
void wfl_check_gs_paths(loader *ld, const wf_step *s, json_t *table, const char *field)
{
    const char *k;
    json_t *v;
    char err[200];
    json_object_foreach(table, k, v) {
        if (!json_is_string(v) || gn_gcs_path_check(json_string_value(v), err, sizeof err) == 0) continue;
        if (s != NULL)
            wfl_problem(ld, wfl_step_line(ld, s, PATH(field, k)), "step '%s': %s.%s '%s': %s", s->name, field, k,
                    json_string_value(v), err);
        else
            wfl_problem(ld, wfl_line(ld, PATH(field, k)), "%s.%s '%s': %s", field, k, json_string_value(v), err);
    }
}

void wfl_check_labels(loader *ld, int line, json_t *labels, const char *where)
{
    char err[256];
    if (labels != NULL && gn_labels_check(labels, err, sizeof err) != 0) wfl_problem(ld, line, "%s: %s", where, err);
}

/* Each step against the workflow's settings and the steps before it (their job names and labels must differ). */
void wfl_check_steps(loader *ld)
{
    wf_workflow *wf = ld->wf;
    for (size_t i = 0; i < wf->n_steps; i++) {
        wf_step *s = &wf->steps[i];
        if (s->kind != WF_STEP_HOOK && s->region == NULL && wf->region == NULL)
            wfl_problem(ld, s->line, "step '%s': no region (set it on the workflow or the step)", s->name);
        wfl_check_labels(ld, wfl_step_line(ld, s, PATH("environment", "additionalUserLabels")),
                     json_object_get(s->environment, "additionalUserLabels"),
                     "environment.additionalUserLabels");
        wfl_check_gs_paths(ld, s, s->environment, "environment");
        wfl_check_gs_paths(ld, s, s->parameters, "parameters");
        /* A classic launch without environment.tempLocation is refused. Offline, the environment is known only
         * where it is static: the workflow's merged with the step's (a null there removes it). A step with a
         * function may still return one at run time, so only a step without a function is refused here; for the
         * others wf_build_launch checks the merged result before anything is sent. */
        if (s->kind == WF_STEP_CLASSIC && !s->has_fn) {
            json_t *tl = json_object_get(s->environment, "tempLocation");
            if (tl == NULL) tl = json_object_get(wf->environment, "tempLocation");
            if (tl == NULL || json_is_null(tl))
                wfl_problem(ld, wfl_step_line(ld, s, PATH("classic_template")),
                        "step '%s': a classic template needs environment.tempLocation (in the workflow's or the step's "
                        "environment, or returned by a parameter function)", s->name);
        }
        /* Each set may be within 64 and their union plus Sluice's three labels not: every launch would fail. */
        if (s->kind != WF_STEP_HOOK && json_is_object(wf->labels)) {
            json_t *all = json_copy(wf->labels);
            json_t *el = json_object_get(wf->environment, "additionalUserLabels");
            if (json_is_object(el)) json_object_update(all, el);
            el = json_object_get(s->environment, "additionalUserLabels");
            if (json_is_object(el)) json_object_update(all, el);
            json_object_set_new(all, WF_LABEL_WORKFLOW, json_null());
            json_object_set_new(all, WF_LABEL_RUN, json_null());
            json_object_set_new(all, WF_LABEL_STEP, json_null());
            if (json_object_size(all) > 64)
                wfl_problem(ld, s->line, "step '%s': its jobs would carry %zu labels with Sluice's own three: Dataflow "
                        "allows at most 64", s->name, json_object_size(all));
            json_decref(all);
        }
        for (size_t j = 0; j < i; j++) {
            wf_step *o = &wf->steps[j];
            if (s->job_name && o->job_name && strcmp(s->job_name, o->job_name) == 0)
                wfl_problem(ld, wfl_step_line(ld, s, PATH("job_name")), "steps '%s' and '%s' share job_name '%s' (finished jobs could not be told apart)",
                        o->name, s->name, s->job_name);
            if (strcmp(s->label, o->label) == 0)
                wfl_problem(ld, s->line, "steps '%s' and '%s' have the same label value '%s'", o->name, s->name,
                            s->label);
        }
    }
}

/* Depth-first from `root` over the edges whose target exists, reporting each edge that closes a cycle.
 * colour: 0 unseen, 1 on the stack, 2 done; stack and edge have room for every step. */
static void graph_walk(loader *ld, size_t root, int *colour, size_t *stack, size_t *edge)
{
    wf_workflow *wf = ld->wf;
    size_t sp = 0;
    stack[sp++] = root;
    colour[root] = 1;
    while (sp > 0) {
        size_t u = stack[sp - 1];
        wf_step *s = &wf->steps[u];
        size_t n_out = s->n_next + (s->on_failure ? 1 : 0);
        if (edge[u] < n_out) {
            size_t e = edge[u]++;
            const char *target = e < s->n_next ? s->next[e] : s->on_failure;
            int v = wf_step_index(wf, target);
            if (v < 0) continue; /* reported when the edges were resolved */
            if (colour[v] == 1) {
                const char *field = e >= s->n_next ? "on_failure" : s->next_kind == WF_NEXT_CHOICE ? "choices" : "next";
                wfl_problem(ld, wfl_step_line(ld, s, PATH(field)),
                        "cycle: step '%s' leads back to '%s' (a run launches each step once)", s->name, target);
            } else if (colour[v] == 0) {
                colour[v] = 1;
                stack[sp++] = (size_t)v;
            }
        } else {
            colour[u] = 2;
            sp--;
        }
    }
}

/* Edges to missing steps, reachability from the start (when it exists) and cycles anywhere, over next,
 * choices and on_failure edges. A missing target only removes its own edge from the later checks. */
void wfl_check_graph(loader *ld, int start_known)
{
    wf_workflow *wf = ld->wf;
    size_t n = wf->n_steps;
    for (size_t i = 0; i < n; i++) {
        wf_step *s = &wf->steps[i];
        for (size_t j = 0; j < s->n_next; j++) {
            int t = wf_step_index(wf, s->next[j]);
            if (t < 0) {
                wfl_problem(ld, wfl_step_line(ld, s, PATH(s->next_kind == WF_NEXT_CHOICE ? "choices" : "next")),
                        "step '%s': next step '%s' does not exist", s->name, s->next[j]);
                continue;
            }
            wf_step *ts = &wf->steps[t];
            size_t *np = xrealloc(ts->preds, (ts->n_preds + 1) * sizeof *np);
            ts->preds = np;
            ts->preds[ts->n_preds++] = i;
        }
        if (s->on_failure != NULL && wf_step_index(wf, s->on_failure) < 0)
            wfl_problem(ld, wfl_step_line(ld, s, PATH("on_failure")), "step '%s': on_failure step '%s' does not exist",
                    s->name, s->on_failure);
    }
    /* The failure handler runs only when the run fails: nothing else may lead to it, and it leads nowhere. */
    int fh = -1;
    if (wf->failure_handler != NULL && (fh = wf_step_index(wf, wf->failure_handler)) < 0)
        wfl_problem(ld, wfl_line(ld, PATH("failure_handler")), "failure_handler step '%s' does not exist", wf->failure_handler);
    if (fh >= 0) {
        wf_step *h = &wf->steps[fh];
        if (start_known && (size_t)fh == wf->start_index)
            wfl_problem(ld, wfl_line(ld, PATH("failure_handler")), "failure_handler '%s' is the start step", h->name);
        for (size_t i = 0; i < h->n_preds; i++)
            wfl_problem(ld, wfl_line(ld, PATH("failure_handler")), "failure_handler '%s' is also reached from step '%s': it must "
                    "run only when the run fails", h->name, wf->steps[h->preds[i]].name);
        for (size_t i = 0; i < n; i++)
            if (wf->steps[i].on_failure != NULL && strcmp(wf->steps[i].on_failure, h->name) == 0)
                wfl_problem(ld, wfl_line(ld, PATH("failure_handler")), "failure_handler '%s' is also step '%s''s on_failure: it "
                        "must run only when the run fails", h->name, wf->steps[i].name);
        if (h->n_next > 0 || h->on_failure != NULL)
            wfl_problem(ld, h->line, "failure_handler '%s' must have no next, choices or on_failure (it ends the failed run)",
                    h->name);
    }
    int *colour = xcalloc(n, sizeof *colour);
    size_t *stack = xmalloc((n + 1) * sizeof *stack), *edge = xcalloc(n, sizeof *edge);
    if (fh >= 0) colour[fh] = 2; /* reached by the run's failure, not by an edge */
    if (start_known) {
        graph_walk(ld, wf->start_index, colour, stack, edge);
        for (size_t i = 0; i < n; i++)
            if (colour[i] == 0)
                wfl_problem(ld, wf->steps[i].line, "step '%s' is unreachable from start step '%s'", wf->steps[i].name,
                        wf->start);
    }
    /* cycles among the steps the start does not reach (or all of them, without a start) */
    for (size_t i = 0; i < n; i++)
        if (colour[i] == 0) graph_walk(ld, i, colour, stack, edge);
    free(colour);
    free(stack);
    free(edge);
}
