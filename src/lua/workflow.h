/* workflow: the workflow model (steps, edges, policies), its validation, job naming, and the launch
 * requests (plain data, launch.h) built from a step's parameter function. See docs/workflows.md for the language.
 * The model is workflow.c; loading a script into it wf_load.c, with the rules over its steps and graph in
 * wf_check.c; calling its functions wf_call.c. Google's naming rules are gcp_names, the notification settings'
 * rules wf_notify, the graph drawn wf_graph.
 * Uses: lua_host (the only way into the script), launch, gcp_names, wf_notify, wf_sched, jansson, OpenSSL (content
 * hash), log.
 * Must not: do I/O beyond reading the script file, talk to Dataflow or know its wire format, or know about
 * stored runs. */
#ifndef SLUICE_WORKFLOW_H
#define SLUICE_WORKFLOW_H
#include <jansson.h>
#include <stdatomic.h>
#include <stddef.h>

#include "gcp_names.h"
#include "launch.h"
#include "lua_host.h"
#include "wf_notify.h"
#include "wf_sched.h"

#define WF_SUFFIX_SEP "--"
#define WF_JOB_NAME_MAX GN_JOB_NAME_MAX
#define WF_LABEL_WORKFLOW "sluice-workflow"
#define WF_LABEL_RUN "sluice-run"
#define WF_LABEL_STEP "sluice-step"

typedef enum { WF_STEP_HOOK = 0, WF_STEP_FLEX, WF_STEP_CLASSIC } wf_step_kind;
typedef enum { WF_NEXT_NONE = 0, WF_NEXT_STATIC, WF_NEXT_CHOICE } wf_next_kind;
typedef enum { WF_STOP_CANCEL = 0, WF_STOP_DRAIN } wf_stop_mode;
/* The ways an attempt can fail, as retry.on names them ("job_failed", "timeout", "rejected", "error"); a step
 * retries the classes whose bit (1 << class) is set in retry_on. */
typedef enum { WF_FAIL_JOB = 1, WF_FAIL_TIMEOUT, WF_FAIL_REJECTED, WF_FAIL_ERROR, WF_FAIL_COUNT } wf_fail_class;
#define WF_RETRY_ON_DEFAULT ((1u << WF_FAIL_JOB) | (1u << WF_FAIL_TIMEOUT))
/* "job_failed", ...; NULL for a value that is not a class. */
const char *wf_fail_class_name(int cls);

typedef struct {
    char *name;        /* the key in `steps` */
    char *label;       /* the step as a label value (lowercased, [a-z0-9_-], ≤ 63) */
    int line;          /* where it is declared in the script, 0 if unknown */
    wf_step_kind kind;
    char *job_name;    /* the name before "--" */
    char *template;    /* Flex spec or classic template gs:// path; NULL for hooks */
    char *fn_name;     /* parameter/hook function given by name, or NULL */
    int has_fn;        /* the step has a parameter/hook function (a value or a name) */
    int fn_ref;        /* its lua_host reference in wf->vm (valid once the VM exists), 0 if none */
    json_t *parameters;  /* static parameters (object) or NULL */
    json_t *environment; /* step environment overrides (object) or NULL */
    char *project, *region; /* overrides of the workflow's, or NULL */
    wf_next_kind next_kind;
    char **next;       /* static successors, or the declared choices of a choice function */
    size_t n_next;
    int next_ref;      /* choice function's reference in wf->vm (valid once the VM exists) */
    char *on_failure;  /* step to go to on failure, NULL = the run fails */
    int retry_attempts;       /* total attempts, ≥ 1 */
    double retry_backoff;     /* seconds before the 2nd attempt; doubles each time */
    double retry_max_backoff; /* cap, seconds */
    unsigned retry_on;        /* failure classes that are retried (bits 1 << wf_fail_class) */
    double timeout;           /* seconds from launch to a terminal state, 0 = none */
    double deadline;          /* soft: seconds from launch after which a deadline_missed event fires once; 0 = none */
    char **success;           /* terminal states that count as success (JOB_STATE_*) */
    size_t n_success;
    wf_stop_mode stop_mode;   /* how its job is stopped when the run is cancelled or times out */
    /* derived by validation */
    size_t *preds;            /* indices of steps that lead here (next, choices) */
    size_t n_preds;
} wf_step;

/* A declared run parameter (the workflow's `params` table). */
typedef struct {
    char *name;
    int required;
    json_t *def;        /* default value (string, number or boolean) or NULL */
    char *description;  /* or NULL */
} wf_param;

typedef struct {
    char *name;
    char *path;          /* file it was loaded from (or the chunk name) */
    char *version;       /* sha256 hex of the source */
    char *source;        /* the script text (owned) */
    size_t source_len;
    char *project, *region;
    json_t *environment; /* default launch environment (object) */
    json_t *labels;      /* extra labels for every job (object) */
    char *start;         /* name of the first step */
    size_t start_index;
    int cancel_on_failure; /* when the run fails: 1 cancels its other in-flight jobs, 0 leaves them */
    char *failure_handler; /* a step that runs once when the run fails (reached no other way), or NULL */
    double deadline;       /* soft: seconds from the run's start after which deadline_missed fires once; 0 = none */
    char *notify_webhook;  /* notify.webhook (a URL) or NULL */
    char *notify_pubsub;   /* notify.pubsub ("projects/P/topics/T") or NULL */
    unsigned notify_on;    /* notify.on: bits 1 << wf_run_event (WF_NOTIFY_ON_DEFAULT when not given) */
    int declares_params;   /* the workflow has a `params` table: only those params are accepted */
    wf_param *params;      /* sorted by name */
    size_t n_params;
    wf_step *steps;      /* sorted by name */
    size_t n_steps;
    lh_vm *vm;           /* the workflow's own VM, created on the first call into it (NULL until then) */
    atomic_int refs;     /* wf_ref / wf_free: a workflow set and the engine may hold the same version */
    lh_limits limits;    /* its budgets */
    int max_active_runs; /* runs at once at most (further runs wait, pending, in order); 0: no limit (wf_sched.h) */
    wf_schedule schedule; /* schedule.cron NULL: no schedule */
} wf_workflow;

/* A list of problems found while loading or validating: "file:line: message" strings. */
typedef struct {
    char **items;
    size_t n, cap;
} wf_diags;

void wf_diags_add(wf_diags *d, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void wf_diags_free(wf_diags *d);

/* Loads and validates a workflow from source. Returns the workflow (caller frees with wf_free) when it
 * is valid; NULL when not, with every problem appended to `diags`. `limits` may be NULL. */
wf_workflow *wf_load_source(const char *path, const char *src, size_t len, const lh_limits *limits,
                            wf_diags *diags);
wf_workflow *wf_load_file(const char *path, const lh_limits *limits, wf_diags *diags);
/* The same, validating in `scratch` (borrowed; reusable for many workflows, one thread at a time) instead of a
 * VM of its own. Either way the workflow's own VM is only created when one of its functions is first called:
 * validation needs the script to run, but a workflow that never runs costs no VM. */
wf_workflow *wf_load_file_in(const char *path, lh_vm *scratch, const lh_limits *limits, wf_diags *diags);

/* The workflow's own VM, created (and the script loaded into it again) on first use. NULL with *err set
 * (caller frees) if that fails. Borrowed until wf_free. */
lh_vm *wf_vm(const wf_workflow *wf, char **err);
/* Reference counting: wf_ref adds a holder (returns wf); wf_free drops one and frees with the last. The model is
 * immutable after loading, so holders on different threads may read it; only one thread calls into its VM. */
wf_workflow *wf_ref(wf_workflow *wf);
void wf_free(wf_workflow *wf);

/* Checks rules across workflows loaded together: a job name must map to one workflow and step.
 * Appends problems to diags; returns how many it found. */
int wf_validate_set(wf_workflow *const *wfs, size_t n, wf_diags *diags);

/* 1 when every launch step names its project (its own or the workflow's), so no default is needed. */
int wf_names_every_project(const wf_workflow *wf);

/* Checks a run's params (an object, changed in place) against the declared ones: every required one present, no
 * unknown one; defaults filled in. A workflow that declares none accepts anything. Returns 0, or -1 with *err
 * naming the parameter (caller frees). */
int wf_apply_params(const wf_workflow *wf, json_t *params, char **err);

/* The script-facing type of a plain value converted from Lua ("table", "list", "string", "function", ...). */
const char *wf_type_name(json_t *v);
/* 1 when v is a function value converted from Lua ({"$fn": ref}, lua_host.h). */
int wf_is_fn(json_t *v);

/* Index of the step called `name`, or -1. */
int wf_step_index(const wf_workflow *wf, const char *name);
/* The step whose job_name is the part of `job_name` before the first "--" (or all of it); NULL if none. */
const wf_step *wf_step_for_job(const wf_workflow *wf, const char *job_name);

/* The deterministic launch name "<job_name>--<run_id>-<attempt>" into buf. Returns 0, or -1 when it
 * would not fit Dataflow's rule (too long). The run id must be [a-z0-9]+. */
int wf_launch_name(const wf_step *step, const char *run_id, int attempt, char *buf, size_t buflen);
/* Parses "<job>--<run>-<attempt>" back; returns 0 and fills run_id/attempt, -1 if not of that shape. */
int wf_parse_launch_name(const char *name, char *run_id, size_t run_len, int *attempt);

/* Whether `state` (JOB_STATE_*, or as a user writes it: job_state.h) counts as success for the step. */
int wf_step_success(const wf_step *step, const char *state);
/* Backoff before attempt `next_attempt` (≥ 2) of a failed step, in seconds. */
double wf_retry_delay(const wf_step *step, int next_attempt);

/* What calling a workflow's function came to (result.h's rule 1). The first three are lua_host's outcomes. */
typedef enum {
    WF_OK = LH_OK,
    WF_ERR_LUA = LH_ERROR,       /* the function raised an error (or its VM could not be made) */
    WF_ERR_TIMEOUT = LH_TIMEOUT, /* it ran past its instruction or time budget */
    WF_ERR_NOMEM = LH_NOMEM,     /* it reached its memory cap */
    WF_ERR_RESULT = -4,          /* it returned something unusable, or the step cannot be built (no project...) */
} wf_rc;

/* Builds a step's launch request: calls its parameter function (if any) with `ctx` (borrowed;
 * wf_step_context in wf_context.h builds it; ctx.job_name must already be the launch name) and merges workflow,
 * step and function environment and labels. `default_project` is used when neither workflow nor step
 * names a project (may be NULL). Returns WF_OK and *out (caller frees with launch_free), or a wf_rc with *err
 * (caller frees). */
wf_rc wf_build_launch(const wf_workflow *wf, const wf_step *step, json_t *ctx, const char *run_id,
                      const char *default_project, launch_req **out, char **err);

/* Runs a hook step's function with ctx. *output receives its return value (caller decrefs; json null if
 * none). Returns WF_OK or a wf_rc as wf_build_launch. A step without a function returns WF_OK. */
wf_rc wf_run_hook(const wf_workflow *wf, const wf_step *step, json_t *ctx, json_t **output, char **err);

/* The successors of a step that succeeded: for static edges, its `next`; for a choice, the function's
 * answer (checked against the declared choices). *names is a new array of strings (caller decrefs).
 * Returns WF_OK or a wf_rc as wf_build_launch. */
wf_rc wf_successors(const wf_workflow *wf, const wf_step *step, json_t *ctx, json_t **names, char **err);

#endif
