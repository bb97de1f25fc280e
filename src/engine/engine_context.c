/* engine_context: the context a step's Lua receives (its parameter function, hook or choice function), built from
 * the run's stored steps and parameters: finished steps with their results, the failed step a failure handler
 * is for, the run's times.
 * Uses: engine_internal.h, store, workflow, wf_context. Must not: write to the store, or run Lua itself. */
#include <stdlib.h>

#include "engine_internal.h"
#include "mem.h"
#include "wf_context.h"

static json_t *parse_or_null(const char *text)
{
    if (text == NULL) return NULL;
    return json_loads(text, JSON_DECODE_ANY, NULL);
}

/* The context `ws` receives (wf_step_context) from the run's stored steps: every step that ended succeeded, failed
 * or cancelled is a finished step (a skipped one never ran, or waits to be reached again after a redrive). */
json_t *eng_build_ctx(engine *e, const wf_workflow *wf, const wf_step *ws, const store_run *run,
                      const store_step_list *steps, int attempt)
{
    wf_ctx_step *done = xcalloc(steps->count + 1, sizeof *done);
    json_t **res = xcalloc(steps->count + 1, sizeof *res);
    json_t *params = parse_or_null(run->params_json), *ctx = NULL;
    size_t n = 0;
    for (size_t i = 0; i < steps->count; i++) {
        const store_step *s = &steps->items[i];
        if (s->state != STORE_STEP_SUCCEEDED && s->state != STORE_STEP_FAILED && s->state != STORE_STEP_CANCELLED)
            continue;
        json_t *r = res[n] = parse_or_null(s->result_json);
        done[n++] = (wf_ctx_step){
            .name = s->name,
            .state = s->state == STORE_STEP_SUCCEEDED ? WF_CTX_SUCCEEDED
                     : s->state == STORE_STEP_FAILED  ? WF_CTX_FAILED
                                                      : WF_CTX_CANCELLED,
            .attempt = s->attempt,
            .job_id = s->job_id,
            .job_name = s->job_name,
            .job_state = s->job_state,
            .labels = json_object_get(r, "labels"),
            .output = json_object_get(r, "output"),
            .error = s->error,
            .cause = s->failure_cause,
        };
    }
    /* for the failure handler: the failed step that finished last */
    const store_step *failed = NULL;
    for (size_t i = 0; i < steps->count; i++) {
        const store_step *s = &steps->items[i];
        if (s->state == STORE_STEP_FAILED && !eng_is_handler(wf, s->name) &&
            (failed == NULL || s->finished_at >= failed->finished_at))
            failed = s;
    }
    wf_ctx_run cr = {.id = run->id, .params = params, .started_ms = run->created_at,
                     .default_project = e->o.default_project, .failed_step = failed ? failed->name : NULL,
                     .failure_error = run->error};
    ctx = wf_step_context(wf, ws, &cr, attempt, done, n);
    eng_ctx_times(e, run->id, json_object_get(ctx, "run")); /* logical_time, interval (engine_queue.c) */
    for (size_t i = 0; i < n; i++) json_decref(res[i]);
    free(res);
    free(done);
    json_decref(params);
    return ctx;
}
