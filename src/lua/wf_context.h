/* wf_context: the context a workflow function (parameter function, hook, choice) receives, built in one place for
 * the engine (from a run's stored steps), `sluice plan` and `sluice preflight` (from a run they imagine), so the
 * three cannot hand a script different shapes. docs/workflows.md ("The context") documents exactly what
 * wf_step_context builds.
 * Uses: workflow (the model, job names), util (time formatting), jansson. Must not: touch the store, call Lua,
 * do I/O. */
#ifndef SLUICE_WF_CONTEXT_H
#define SLUICE_WF_CONTEXT_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "workflow.h"

/* How a finished step ended, as ctx.results.<Step>.state names it. */
typedef enum { WF_CTX_SUCCEEDED = 0, WF_CTX_FAILED, WF_CTX_CANCELLED } wf_ctx_state;

/* A finished step of the run, as a function's context shows it. Every pointer may be NULL: absent (the key is
 * left out, so Lua sees nil). Strings and JSON are borrowed from the caller. */
typedef struct {
    const char *name;      /* the step's name in the workflow (required) */
    wf_ctx_state state;
    int attempt;           /* the attempt it ended with, >= 1 */
    const char *job_id;    /* its job's id; NULL when it has no job (a hook, a refused launch, a failed function) */
    const char *job_name;  /* the launch name of its last attempt; NULL when it never got one */
    const char *job_state; /* the job's last Dataflow state (JOB_STATE_*); NULL when unknown or no job */
    json_t *labels;        /* the job's labels as Dataflow reported them */
    json_t *output;        /* a hook's return value (a JSON null counts as none) */
    const char *error;     /* why it failed or was cancelled */
    const char *cause;     /* a failed job's cause in Dataflow's words (its job messages) */
} wf_ctx_step;

/* The run the context is for. */
typedef struct {
    const char *id;              /* [a-z0-9]+ (required) */
    json_t *params;              /* borrowed; NULL = {} */
    int64_t started_ms;          /* Unix milliseconds */
    const char *default_project; /* the project when neither step nor workflow names one; may be NULL */
    /* For the workflow's failure_handler: the step whose failure failed the run (NULL: the last failed step in
     * `done`, or none when the run failed otherwise) and the run's error. */
    const char *failed_step;
    const char *failure_error;
} wf_ctx_run;

/* The context `step` (attempt `attempt`) receives, given the run's finished steps `done` (n_done of them, in the
 * order they were reached): ctx.run, ctx.step, ctx.job_name, ctx.template_location, ctx.project, ctx.region,
 * ctx.results (every finished step by name; names are unique), ctx.jobs (the jobs of the
 * steps that led here: predecessors that succeeded with `step` in their next or choices, and steps that failed
 * with `step` as their on_failure; only those with a job id) and ctx.job (the first of ctx.jobs). The workflow's
 * failure_handler also gets ctx.failure = {step, error, cause, job} (each present when known; job as a ctx.jobs
 * entry, and then ctx.job and ctx.jobs are that job). Nothing in
 * it is a JSON null: an absent value is a missing key. Returns a new object, or NULL when the launch name
 * cannot be formed (a run id that is not [a-z0-9]+, a name too long). */
json_t *wf_step_context(const wf_workflow *wf, const wf_step *step, const wf_ctx_run *run, int attempt,
                        const wf_ctx_step *done, size_t n_done);

/* ---- imagined runs (`sluice plan`, `sluice preflight`) ---- */

/* A list of finished steps that owns its strings and JSON (copies of what was put). */
typedef struct {
    wf_ctx_step *items;
    size_t n, cap;
} wf_ctx_steps;

/* Adds a copy of `s`. replace: a step of the same name already in the list is replaced (else the list keeps it
 * and `s` is dropped). Returns 1 when added, 0 when dropped. */
int wf_ctx_steps_put(wf_ctx_steps *l, const wf_ctx_step *s, int replace);
/* Removes the step called `name`, if there. */
void wf_ctx_steps_remove(wf_ctx_steps *l, const char *name);
const wf_ctx_step *wf_ctx_steps_get(const wf_ctx_steps *l, const char *name);
void wf_ctx_steps_free(wf_ctx_steps *l);

/* The placeholder job id plan and preflight give an imagined job: "<tool>-job-id-of-<step label>", a non-empty
 * string that says what it is. Into buf; returns buf. */
const char *wf_ctx_placeholder_id(const char *tool, const wf_step *step, char *buf, size_t buflen);

/* `step` as an imagined run has it once it succeeded at attempt 1 of run `run_id`: a launch step with its launch
 * name, a placeholder job id (wf_ctx_placeholder_id) and JOB_STATE_DONE; a hook with no job and no output. Added
 * to l unless l has that step already. */
void wf_ctx_imagine_succeeded(const wf_step *step, const char *run_id, const char *tool, wf_ctx_steps *l);

/* What a run that reached `step` has finished, as plan and preflight imagine it: every step it can be reached
 * from along next and choices succeeded at attempt 1 (wf_ctx_imagine_succeeded), and every step whose
 * on_failure is `step` failed at attempt 1 (a launch step's job ended JOB_STATE_FAILED), with the steps before
 * those succeeded. `step` itself is not added. Steps already in l are kept; the others are added in the
 * workflow's step order. */
void wf_ctx_imagine_reaching(const wf_workflow *wf, const wf_step *step, const char *run_id, const char *tool,
                             wf_ctx_steps *l);

#endif
