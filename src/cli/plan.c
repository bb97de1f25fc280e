/* plan: `sluice plan`: what the engine does once a job has finished, over a run imagined up to that job.
 * Uses: workflow, wf_context (the functions' context, the imagined run), decide (the engine's rules), events
 * (--event), dataflow (the exact request), config (the default project), util. Must not: send anything anywhere,
 * read credentials or touch the store. */
#include "plan.h"

#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config.h"
#include "dataflow.h"
#include "decide.h"
#include "events.h"
#include "job_state.h"
#include "mem.h"
#include "util.h"
#include "wf_context.h"
#include "workflow.h"

enum { PLAN_OK = 0, PLAN_RUNTIME = 1, PLAN_USAGE_ERR = 2 };

/* The placeholder ids plan gives the jobs it imagines: "plan-job-id-of-<step>". */
#define PLAN_TOOL "plan"

static int usage_error(const char *fmt, const char *arg)
{
    fputs("sluice plan: ", stderr);
    fprintf(stderr, fmt, arg);
    fputs("\n(see 'sluice plan --help')\n", stderr);
    return PLAN_USAGE_ERR;
}

typedef struct {
    const wf_workflow *wf;
    wf_ctx_run run;
    wf_ctx_steps done; /* the imagined run's finished steps (hooks that ran during planning add theirs) */
    json_t *actions;   /* output */
    int depth;
    int failed;
} planner;

static void plan_step(planner *p, const wf_step *step, int attempt, const char *why);

static void plan_error(planner *p, json_t *action, const char *msg)
{
    json_object_set_new(action, "error", json_string(msg ? msg : "unknown error"));
    p->failed = 1;
}

static json_t *context(planner *p, const wf_step *step, int attempt)
{
    return wf_step_context(p->wf, step, &p->run, attempt, p->done.items, p->done.n);
}

/* What happens once `step` (attempt `attempt`) has succeeded (hooks succeed as soon as they ran). A choice
 * function receives its own step's context, as in the engine. */
static void plan_successors(planner *p, const wf_step *step, int attempt)
{
    json_t *ctx = step->next_kind == WF_NEXT_CHOICE ? context(p, step, attempt) : NULL;
    json_t *names = NULL;
    char *err = NULL;
    if (wf_successors(p->wf, step, ctx, &names, &err) != 0) {
        json_t *a = json_pack("{s:s,s:s}", "action", "fail-run", "step", step->name);
        plan_error(p, a, err);
        json_array_append_new(p->actions, a);
        free(err);
        json_decref(ctx);
        return;
    }
    json_decref(ctx);
    if (json_array_size(names) == 0)
        json_array_append_new(p->actions, json_pack("{s:s,s:s}", "action", "branch-ends", "after", step->name));
    size_t i;
    json_t *x;
    json_array_foreach(names, i, x) {
        int idx = wf_step_index(p->wf, json_string_value(x));
        plan_step(p, &p->wf->steps[idx], 1, step->name);
    }
    json_decref(names);
}

static void plan_step(planner *p, const wf_step *step, int attempt, const char *why)
{
    if (++p->depth > 64) return;
    json_t *a = json_pack("{s:s,s:s,s:i}", "step", step->name, "after", why, "attempt", attempt);
    json_array_append_new(p->actions, a);
    if (step->n_preds > 1) {
        json_t *wait = json_array();
        for (size_t i = 0; i < step->n_preds; i++)
            json_array_append_new(wait, json_string(p->wf->steps[step->preds[i]].name));
        json_object_set_new(a, "join", wait);
        /* A join launches once all its predecessors succeeded, so its function may read every one's result.
         * Only one job finished here: assume the others succeeded (attempt 1, with what came before them) and
         * say so. */
        json_t *assumed = json_array();
        dec_step_state *states = xcalloc(p->wf->n_steps, sizeof *states);
        for (size_t i = 0; i < step->n_preds; i++) {
            const wf_step *pr = &p->wf->steps[step->preds[i]];
            if (wf_ctx_steps_get(&p->done, pr->name) != NULL) continue;
            wf_ctx_imagine_reaching(p->wf, pr, p->run.id, PLAN_TOOL, &p->done);
            wf_ctx_imagine_succeeded(pr, p->run.id, PLAN_TOOL, &p->done);
            json_array_append_new(assumed, json_string(pr->name));
        }
        for (size_t i = 0; i < step->n_preds; i++) states[step->preds[i]] = DEC_ST_SUCCEEDED;
        const char *blocker = NULL;
        dec_join js = dec_join_check(p->wf, step, states, &blocker);
        free(states);
        if (js != DEC_JOIN_READY) { /* cannot happen with every predecessor assumed done; the rule decides */
            json_object_set_new(a, "action", json_string(js == DEC_JOIN_WAIT ? "join-waits" : "join-blocked"));
            json_decref(assumed);
            p->depth--;
            return;
        }
        if (json_array_size(assumed) > 0)
            json_object_set_new(a, "assumed_succeeded", assumed);
        else
            json_decref(assumed);
    }
    json_t *ctx = context(p, step, attempt);
    char *err = NULL;
    if (step->kind == WF_STEP_HOOK) {
        json_object_set_new(a, "action", json_string("hook"));
        json_t *out = NULL;
        if (ctx == NULL) {
            plan_error(p, a, "the job name for this step cannot be formed");
        } else if (wf_run_hook(p->wf, step, ctx, &out, &err) != 0) {
            plan_error(p, a, err);
        } else {
            json_object_set(a, "output", out);
            wf_ctx_steps_put(&p->done,
                             &(wf_ctx_step){.name = step->name, .state = WF_CTX_SUCCEEDED, .attempt = attempt,
                                            .output = out},
                             1);
            json_decref(out);
            plan_successors(p, step, attempt);
        }
    } else {
        json_object_set_new(a, "action", json_string("launch"));
        launch_req *l = NULL;
        if (ctx == NULL) {
            plan_error(p, a, "the job name for this step cannot be formed");
        } else if (wf_build_launch(p->wf, step, ctx, p->run.id, p->run.default_project, &l, &err) != 0) {
            plan_error(p, a, err);
        } else {
            /* the exact request (dataflow renders it), and where it goes */
            json_t *req = df_launch_render(l, 0);
            json_object_set_new(req, "project", json_string(l->project));
            json_object_set_new(req, "region", json_string(l->region));
            json_object_set_new(req, "jobName", json_string(l->job_name));
            json_object_set_new(a, "request", req);
            launch_free(l);
        }
    }
    free(err);
    json_decref(ctx);
    p->depth--;
}

/* The plan for a person at a terminal: one line for what finished, one per action. */
static void print_plan_table(json_t *out)
{
    json_t *fin = json_object_get(out, "finished");
    printf("workflow %s  run %s\n", json_string_value(json_object_get(out, "workflow")),
           json_is_string(json_object_get(out, "run")) ? json_string_value(json_object_get(out, "run")) : "-");
    printf("finished %s (%s) %s  ->  %s", json_string_value(json_object_get(fin, "name")),
           json_is_string(json_object_get(fin, "step")) ? json_string_value(json_object_get(fin, "step")) : "no step",
           json_string_value(json_object_get(fin, "state")), json_string_value(json_object_get(out, "outcome")));
    if (json_is_string(json_object_get(out, "failure")))
        printf(" (%s)", json_string_value(json_object_get(out, "failure")));
    if (json_is_number(json_object_get(out, "retry_in_seconds")))
        printf(" in %.0f s", json_number_value(json_object_get(out, "retry_in_seconds")));
    printf("\n");
    if (json_is_string(json_object_get(out, "reason"))) printf("  %s\n", json_string_value(json_object_get(out, "reason")));
    if (json_is_string(json_object_get(out, "note"))) printf("  note: %s\n", json_string_value(json_object_get(out, "note")));
    size_t i;
    json_t *a;
    json_array_foreach(json_object_get(out, "actions"), i, a) {
        const char *act = json_string_value(json_object_get(a, "action"));
        json_t *req = json_object_get(a, "request");
        printf("  %-12s %-20s attempt %-3lld", act ? act : "-",
               json_is_string(json_object_get(a, "step")) ? json_string_value(json_object_get(a, "step")) : "",
               (long long)json_integer_value(json_object_get(a, "attempt")));
        if (req) printf(" %s %s", json_string_value(json_object_get(req, "jobName")),
                        json_string_value(json_object_get(req, "path")));
        if (json_is_string(json_object_get(a, "error"))) printf("  ERROR %s", json_string_value(json_object_get(a, "error")));
        printf("\n");
    }
    printf("(the exact requests: sluice plan ... --json)\n");
}

static int cmp_str(const void *a, const void *b) { return strcmp(*(const char *const *)a, *(const char *const *)b); }

/* The job names of the workflow's launch steps, sorted, for the message about a job that belongs to none.
 * Caller frees. */
static char *job_names(const wf_workflow *wf)
{
    const char **names = xcalloc(wf->n_steps + 1, sizeof *names);
    size_t n = 0, len = 1;
    for (size_t i = 0; i < wf->n_steps; i++)
        if (wf->steps[i].kind != WF_STEP_HOOK && wf->steps[i].job_name) {
            names[n++] = wf->steps[i].job_name;
            len += strlen(wf->steps[i].job_name) + 2;
        }
    char *s = xcalloc(len, 1);
    qsort(names, n, sizeof *names, cmp_str);
    for (size_t i = 0; i < n; i++) {
        if (i > 0) strcat(s, ", ");
        strcat(s, names[i]);
    }
    free(names);
    return s;
}

/* The finished step as the imagined run holds it once its attempt ended with outcome `o`: the job it names
 * (`job_id` from the event, else a placeholder), none for a hook, a refused launch (only its name) or a function
 * that failed; the failure's message in the engine's words where plan can know them. */
static void put_finished(planner *p, const wf_step *step, int attempt, dec_outcome o, const char *job_name,
                         const char *job_id, const char *state, json_t *labels)
{
    char pid[128], why[WF_JOB_NAME_MAX + 128];
    wf_ctx_step fin = {.name = step->name, .state = o == DEC_SUCCEEDED ? WF_CTX_SUCCEEDED : WF_CTX_FAILED,
                       .attempt = attempt};
    int has_job = step->kind != WF_STEP_HOOK && o != DEC_REJECTED && o != DEC_ERROR;
    if (has_job) {
        fin.job_id = job_id ? job_id : wf_ctx_placeholder_id(PLAN_TOOL, step, pid, sizeof pid);
        fin.job_state = state;
        fin.labels = labels;
    }
    if (step->kind != WF_STEP_HOOK && o != DEC_ERROR) fin.job_name = job_name;
    switch (o) {
    case DEC_SUCCEEDED: break;
    case DEC_JOB_FAILED: snprintf(why, sizeof why, "job %s ended %s", job_name, state); fin.error = why; break;
    case DEC_TIMED_OUT:
        snprintf(why, sizeof why, "timed out; the job was stopped and ended %s", state);
        fin.error = why;
        break;
    case DEC_REJECTED: fin.error = "plan: Dataflow refused the launch (a run shows Dataflow's message here)"; break;
    case DEC_ERROR: fin.error = "plan: the step's function failed (a run shows its error here)"; break;
    }
    wf_ctx_steps_put(&p->done, &fin, 1);
}

int plan_main(int argc, char **argv)
{
    static const struct option opts[] = {
        {"help", no_argument, NULL, 'h'},       {"after", required_argument, NULL, 'a'},
        {"state", required_argument, NULL, 's'}, {"param", required_argument, NULL, 'p'},
        {"event", required_argument, NULL, 'e'}, {"run", required_argument, NULL, 'r'},
        {"time", required_argument, NULL, 't'},  {"project", required_argument, NULL, 'P'},
        {"outcome", required_argument, NULL, 'o'}, {"json", no_argument, NULL, 'j'},
        {0, 0, 0, 0}};
    const char *outcome_arg = NULL;
    int json_flag = 0;
    const char *after = NULL, *state_arg = NULL, *event_file = NULL, *run_arg = NULL, *time_arg = NULL,
               *project = NULL;
    json_t *params = json_object(), *out = NULL;
    int c, rc = PLAN_USAGE_ERR;
    ev_job_event ev = {0};
    wf_workflow *wf = NULL;
    planner p = {0};
    while ((c = getopt_long(argc, argv, "ha:s:p:e:r:t:P:o:", opts, NULL)) != -1) {
        const char *eq = c == 'p' ? strchr(optarg, '=') : NULL;
        switch (c) {
        case 'j': json_flag = 1; break;
        case 'o': outcome_arg = optarg; break;
        case 'h': json_decref(params); fputs(PLAN_USAGE, stdout); return PLAN_OK;
        case 'a': after = optarg; break;
        case 's': state_arg = optarg; break;
        case 'e': event_file = optarg; break;
        case 'r': run_arg = optarg; break;
        case 't': time_arg = optarg; break;
        case 'P': project = optarg; break;
        case 'p':
            if (eq == NULL || eq == optarg) {
                rc = usage_error("--param takes k=v, not '%s'", optarg);
                goto done;
            } else {
                char *k = xstrndup(optarg, (size_t)(eq - optarg));
                json_object_set_new(params, k, json_string(eq + 1));
                free(k);
            }
            break;
        default: rc = usage_error("unknown option %s", argv[optind - 1]); goto done;
        }
    }
    if (state_arg != NULL && js_from_user(state_arg) < 0) {
        rc = usage_error("--state must be a Dataflow job state (DONE, FAILED, CANCELLED, DRAINED, RUNNING, ...), "
                         "not '%s'", state_arg);
        goto done;
    }
    if (optind != argc - 1) {
        rc = usage_error("%s", "give exactly one workflow file");
        goto done;
    }
    if ((after == NULL) == (event_file == NULL)) {
        rc = usage_error("%s", "give either --after JOB_NAME or --event FILE");
        goto done;
    }
    int64_t started_ms = util_now_ms();
    if (time_arg != NULL && util_parse_rfc3339(time_arg, &started_ms) != 0) {
        rc = usage_error("--time must be RFC 3339 (2024-05-01T12:00:00Z), not '%s'", time_arg);
        goto done;
    }
    if (run_arg != NULL) {
        for (const char *q = run_arg; *q; q++)
            if (!((*q >= 'a' && *q <= 'z') || (*q >= '0' && *q <= '9'))) {
                rc = usage_error("--run must be lowercase letters and digits, not '%s'", run_arg);
                goto done;
            }
    }
    int forced = -1; /* --outcome: how the attempt failed, when not by its job's state */
    if (outcome_arg != NULL) {
        for (int k = WF_FAIL_TIMEOUT; k < WF_FAIL_COUNT; k++)
            if (strcmp(outcome_arg, wf_fail_class_name(k)) == 0) forced = k;
        if (forced < 0) {
            rc = usage_error("--outcome is timeout, rejected or error, not '%s'", outcome_arg);
            goto done;
        }
    }
    wf_diags d = {0};
    wf = wf_load_file(argv[optind], NULL, &d);
    for (size_t i = 0; i < d.n; i++) fprintf(stderr, "%s\n", d.items[i]);
    wf_diags_free(&d);
    if (wf == NULL) {
        fprintf(stderr, "sluice plan: %s is not a valid workflow\n", argv[optind]);
        goto done;
    }
    /* plan sends nothing anywhere, so of the credentials it reads none: --project, then SLUICE_PROJECT */
    project = config_project(&(config_projects){.flag = project, .env = getenv("SLUICE_PROJECT")}, NULL);

    json_t *note = NULL;
    if (event_file != NULL) {
        size_t len = 0;
        char *text = util_read_file(event_file, 1u << 20, &len);
        if (text == NULL) {
            fprintf(stderr, "sluice plan: cannot read %s: %s\n", event_file, strerror(errno));
            goto done;
        }
        char err[256];
        ev_status st = ev_decode_file_text(text, len, &ev, err, sizeof err);
        free(text);
        if (st != EV_OK) {
            fprintf(stderr, "sluice plan: %s: %s\n", event_file, err);
            goto done;
        }
        after = ev.job_name;
        if (ev.state == NULL)
            note = json_string("the event only says the job ended (\"Worker pool stopped.\" is logged for failed jobs "
                               "too); Sluice confirms the state with jobs.get before acting. Planned for --state or "
                               "JOB_STATE_DONE.");
        else if (!ev.state_confirmed)
            note = json_string("the state is a hint from a log line; Sluice confirms it with jobs.get before acting.");
    }
    const wf_step *step = wf_step_for_job(wf, after);
    if (step == NULL) {
        /* The engine ignores such a job; planning for it is a mistake in the command (a typo, another file). */
        char *names = job_names(wf);
        fprintf(stderr,
                "sluice plan: job '%s' belongs to no step of workflow '%s' (%s): the part of its name before '--' "
                "must be the job_name of one of its launch steps: %s\n",
                after, wf->name, argv[optind], names[0] ? names : "(it has none)");
        free(names);
        json_decref(note);
        goto done;
    }
    char state[64];
    js_normalize(state_arg ? state_arg : ev.state ? ev.state : js_name(JS_DONE), state, sizeof state);

    out = json_object();
    json_object_set_new(out, "workflow", json_string(wf->name));
    json_t *finished = json_pack("{s:s,s:s}", "name", after, "state", state);
    if (ev.job_id) json_object_set_new(finished, "id", json_string(ev.job_id));
    if (ev.labels) json_object_set(finished, "labels", ev.labels);
    json_object_set_new(out, "finished", finished);
    if (note) json_object_set_new(out, "note", note);
    char run_id[40] = "plan";
    int attempt = 1;
    if (wf_parse_launch_name(after, run_id, sizeof run_id, &attempt) != 0) {
        attempt = 1;
        const char *lr = json_string_value(json_object_get(ev.labels, WF_LABEL_RUN));
        snprintf(run_id, sizeof run_id, "%s", lr ? lr : "plan");
    }
    if (run_arg != NULL) snprintf(run_id, sizeof run_id, "%s", run_arg);
    json_object_set_new(finished, "step", json_string(step->name));
    json_object_set_new(out, "run", json_string(run_id));
    p = (planner){.wf = wf,
                  .run = {.id = run_id, .params = params, .started_ms = started_ms, .default_project = project},
                  .actions = json_array()};
    /* The run as the engine would hold it when this job ended: what comes before the step succeeded. */
    wf_ctx_imagine_reaching(wf, step, run_id, PLAN_TOOL, &p.done);
    /* The same rule the engine applies (decide.c): nothing here encodes it again. A step that never launched (a
     * hook; a function that failed at attempt 1) is not retried. */
    dec_outcome o = forced > 0 ? (dec_outcome)forced : dec_classify(step, state, 0);
    int launched = step->kind != WF_STEP_HOOK && !(o == DEC_ERROR && attempt == 1);
    dec_result dr = dec_step(wf, step, o, attempt, launched, 1);
    if (forced < 0 && !js_name_terminal(state)) {
        json_object_set_new(out, "outcome", json_string("not-finished"));
        json_object_set_new(out, "reason", json_string("the job is not in a terminal state: nothing happens yet"));
    } else if (dr.action == DEC_RETRY) {
        /* the step is pending again, not finished: its new attempt sees the run without it, as in the engine */
        json_object_set_new(out, "outcome", json_string("retry"));
        json_object_set_new(out, "retry_in_seconds", json_real(dr.retry_delay_s));
        plan_step(&p, step, dr.next_attempt, step->name);
    } else {
        put_finished(&p, step, attempt, o, after, ev.job_id, state, ev.labels);
        if (dr.action == DEC_NEXT) {
            json_object_set_new(out, "outcome", json_string("success"));
            plan_successors(&p, step, attempt);
        } else if (dr.action == DEC_ON_FAILURE) {
            json_object_set_new(out, "outcome", json_string("on_failure"));
            plan_step(&p, &wf->steps[wf_step_index(wf, dr.target)], 1, step->name);
        } else {
            json_object_set_new(out, "outcome", json_string("run-fails"));
            char reason[300];
            snprintf(reason, sizeof reason, "%s: the run fails%s",
                     attempt < step->retry_attempts ? "this failure class is not in the step's retry.on, and it has "
                                                      "no on_failure"
                                                    : "no retry or on_failure left",
                     dr.stop_others ? " and its other in-flight jobs are cancelled"
                                    : "; its other in-flight jobs are left running");
            json_object_set_new(out, "reason", json_string(reason));
            if (dr.handler != NULL) {
                /* the failure handler runs once the others are stopped (or at once when they are left) */
                json_object_set_new(out, "failure_handler", json_string(dr.handler));
                p.run.failed_step = step->name;
                plan_step(&p, &wf->steps[wf_step_index(wf, dr.handler)], 1, "failure_handler");
            }
        }
    }
    if (o != DEC_SUCCEEDED && (forced > 0 || js_name_terminal(state)))
        json_object_set_new(out, "failure", json_string(dec_outcome_name(o)));
    json_object_set_new(out, "actions", p.actions);
    p.actions = NULL;
    if (p.failed) json_object_set_new(out, "error", json_true());
    rc = p.failed ? PLAN_RUNTIME : PLAN_OK;
    if (json_flag || !isatty(STDOUT_FILENO)) {
        char *text = json_dumps(out, JSON_INDENT(2) | JSON_SORT_KEYS);
        puts(text);
        free(text);
    } else {
        print_plan_table(out);
    }
done:
    json_decref(out);
    json_decref(p.actions);
    wf_ctx_steps_free(&p.done);
    ev_job_event_free(&ev);
    json_decref(params);
    wf_free(wf);
    return rc;
}
