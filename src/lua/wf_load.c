/* wf_load: loading a script into the workflow model: the declaration (plain data from lua_host) read field by
 * field, every problem reported with file:line (placed by wf_source), sorted by line, so that one pass reports
 * every problem of a file. The rules over the loaded steps together and the graph are wf_check.c; the model itself
 * (lifetime, lookups, names) is workflow.c.
 * Uses: wf_load_internal.h, workflow (the model), lua_host (the only way into the script), wf_source, gcp_names,
 * wf_notify, wf_sched, job_state, jansson, util.
 * Must not: call a workflow's functions (wf_call.c does, at run time), talk to Dataflow, touch the store, or call
 * Lua except through lua_host. */
#include <ctype.h>
#include <errno.h>
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
#include "wf_load_internal.h"
#include "wf_notify.h"

#define WF_JOB_PREFIX_MAX 960 /* leaves room for "--<run id>-<attempt>" under Dataflow's 1024 */

/* ---- reporting problems where they are ---- */

void wfl_problem(loader *ld, int line, const char *fmt, ...)
{
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (line > 0)
        wf_diags_add(ld->diags, "%s:%d: %s", ld->wf->path, line, msg);
    else
        wf_diags_add(ld->diags, "%s: %s", ld->wf->path, msg);
    ld->errors++;
}

/* Where the workflow's table starts; 0 if the scan found none. */
static int decl_line(const loader *ld) { return ld->src.decl >= 0 ? ld->src.tables[ld->src.decl].line : 0; }

/* The line of a workflow field (a path from the workflow's table), else the declaration's. */
int wfl_line(const loader *ld, const char *const *path)
{
    return src_path_line(&ld->src, ld->src.decl, decl_line(ld), path);
}

/* The constructor of step `name` (-1 if none was found) and its line into *line: the step's key in the steps
 * table; else, for steps declared apart from the workflow's table, a field of that name whose value is a
 * table; else the line of `steps`, else the declaration's. */
static int step_table(const loader *ld, const char *name, int *line)
{
    const src_index *ix = &ld->src;
    int f = src_field_in(ix, ix->steps, name);
    for (size_t i = 0; f < 0 && i < ix->n_fields; i++)
        if (ix->fields[i].value >= 0 && ix->fields[i].table != ix->decl && strcmp(ix->fields[i].key, name) == 0)
            f = (int)i;
    if (f >= 0) {
        *line = ix->fields[f].line;
        return ix->fields[f].value;
    }
    *line = wfl_line(ld, PATH("steps"));
    return -1;
}

/* The line of a field of step s (a path from its table), else the step's. */
int wfl_step_line(const loader *ld, const wf_step *s, const char *const *path)
{
    int line = 0, t = step_table(ld, s->name, &line);
    return src_path_line(&ld->src, t, s->line, path);
}

/* ---- reading fields ---- */

static char *opt_string(loader *ld, int line, json_t *obj, const char *key, const char *what)
{
    json_t *v = json_object_get(obj, key);
    if (v == NULL || json_is_null(v)) return NULL;
    if (!json_is_string(v)) {
        wfl_problem(ld, line, "%s '%s' must be a string, not a %s", what, key, wf_type_name(v));
        return NULL;
    }
    return xstrdup(json_string_value(v));
}

/* Parses "90", 90, "90s", "30m", "2h", "1d" into seconds; -1 if invalid. */
static double parse_duration(json_t *v)
{
    if (json_is_number(v)) return json_number_value(v) >= 0 ? json_number_value(v) : -1;
    if (!json_is_string(v)) return -1;
    const char *s = json_string_value(v);
    char *end = NULL;
    double d = strtod(s, &end);
    if (end == s || d < 0 || !isfinite(d)) return -1;
    if (*end == '\0' || strcmp(end, "s") == 0) return d;
    if (strcmp(end, "ms") == 0) return d / 1000.0;
    if (strcmp(end, "m") == 0) return d * 60;
    if (strcmp(end, "h") == 0) return d * 3600;
    if (strcmp(end, "d") == 0) return d * 86400;
    return -1;
}

static int in_list(const char *s, const char *const *list)
{
    for (; *list; list++)
        if (strcmp(s, *list) == 0) return 1;
    return 0;
}

static char **string_list(loader *ld, int line, json_t *v, const char *what, size_t *n)
{
    *n = 0;
    if (json_is_string(v)) {
        char **out = xmalloc(sizeof *out);
        out[0] = xstrdup(json_string_value(v));
        *n = 1;
        return out;
    }
    if (!json_is_array(v)) {
        wfl_problem(ld, line, "%s must be a string or a list of strings, not a %s", what, wf_type_name(v));
        return NULL;
    }
    char **out = xcalloc(json_array_size(v) + 1, sizeof *out);
    size_t i;
    json_t *x;
    json_array_foreach(v, i, x) {
        if (!json_is_string(x)) {
            wfl_problem(ld, line, "%s[%zu] must be a string, not a %s", what, i + 1, wf_type_name(x));
            continue;
        }
        out[(*n)++] = xstrdup(json_string_value(x));
    }
    return out;
}

static const char *const step_keys[] = {"job_name", "template", "classic_template", "function", "parameters",
                                        "environment", "project", "region", "next", "choices", "on_failure",
                                        "retry", "timeout", "success", "on_cancel", "description", "deadline", NULL};
static const char *const workflow_keys[] = {"name", "project", "region", "environment", "labels", "start",
                                            "steps", "on_run_failure", "description", "params",
                                            "failure_handler", "deadline", "notify", "max_active_runs",
                                            "schedule", NULL};

static int cmp_param(const void *a, const void *b)
{
    return strcmp(((const wf_param *)a)->name, ((const wf_param *)b)->name);
}

/* params = { name = { required = true, default = "...", description = "..." }, ... } */
static void load_params(loader *ld, json_t *v)
{
    wf_workflow *wf = ld->wf;
    if (v == NULL || json_is_null(v)) return;
    int line = wfl_line(ld, PATH("params"));
    if (!json_is_object(v) || wf_is_fn(v)) {
        wfl_problem(ld, line, "params must be a table of parameter declarations, not a %s", wf_type_name(v));
        return;
    }
    wf->declares_params = 1;
    wf->params = xcalloc(json_object_size(v) + 1, sizeof *wf->params);
    const char *k;
    json_t *x;
    json_object_foreach(v, k, x) {
        int pl = wfl_line(ld, PATH("params", k));
        wf_param *p = &wf->params[wf->n_params++];
        p->name = xstrdup(k);
        if (!json_is_object(x) || wf_is_fn(x)) {
            wfl_problem(ld, pl, "param '%s' must be a table {required, default, description}, not a %s", k, wf_type_name(x));
            continue;
        }
        const char *f;
        json_t *y;
        json_object_foreach(x, f, y) {
            if (!in_list(f, (const char *const[]){"required", "default", "description", NULL}))
                wfl_problem(ld, pl, "param '%s': unknown field '%s' (required, default, description)", k, f);
        }
        json_t *req = json_object_get(x, "required"), *def = json_object_get(x, "default"),
               *desc = json_object_get(x, "description");
        if (req != NULL && !json_is_boolean(req)) wfl_problem(ld, pl, "param '%s': required must be true or false", k);
        p->required = json_is_true(req);
        if (def != NULL && !json_is_string(def) && !json_is_number(def) && !json_is_boolean(def))
            wfl_problem(ld, pl, "param '%s': default must be a string, number or boolean, not a %s", k,
                        wf_type_name(def));
        else if (def != NULL)
            p->def = json_incref(def);
        if (p->required && p->def) wfl_problem(ld, pl, "param '%s' is required and has a default: choose one", k);
        if (desc != NULL && !json_is_string(desc)) wfl_problem(ld, pl, "param '%s': description must be a string", k);
        else if (desc != NULL) p->description = xstrdup(json_string_value(desc));
    }
    qsort(wf->params, wf->n_params, sizeof *wf->params, cmp_param);
}

/* ---- steps ---- */

static void load_function(loader *ld, wf_step *s, json_t *v)
{
    if (v == NULL || json_is_null(v)) return;
    if (wf_is_fn(v)) {
        s->has_fn = 1;
        return;
    }
    if (!json_is_string(v)) {
        wfl_problem(ld, wfl_step_line(ld, s, PATH("function")), "step '%s': function must be a function or the name of one, not a %s", s->name,
                wf_type_name(v));
        return;
    }
    s->fn_name = xstrdup(json_string_value(v));
    s->has_fn = 1;
    if (lh_ref_global(ld->vm, s->fn_name, NULL) == 0)
        wfl_problem(ld, wfl_step_line(ld, s, PATH("function")), "step '%s': function '%s' is not defined in the script", s->name,
                s->fn_name);
}

/* Clamps a script's attempt count into int range before the 1..100 check (a plain cast wrapped 2^32+1 to 1). */
static int attempts_of(json_int_t v) { return v < 1 ? 0 : v > 100 ? 101 : (int)v; }

/* retry.on: a list of failure class names (or one name). */
static unsigned retry_classes(loader *ld, const wf_step *s, json_t *on)
{
    unsigned bits = 0;
    json_t *list = json_is_string(on) ? json_pack("[O]", on) : json_incref(on);
    if (!json_is_array(list) || json_array_size(list) == 0) {
        wfl_problem(ld, wfl_step_line(ld, s, PATH("retry", "on")),
                "step '%s': retry.on must list failure classes (job_failed, timeout, rejected, error)", s->name);
        json_decref(list);
        return WF_RETRY_ON_DEFAULT;
    }
    size_t i;
    json_t *x;
    json_array_foreach(list, i, x) {
        int cls = 0;
        for (int c = 1; c < WF_FAIL_COUNT && cls == 0; c++)
            if (json_is_string(x) && strcmp(json_string_value(x), wf_fail_class_name(c)) == 0) cls = c;
        if (cls == 0)
            wfl_problem(ld, wfl_step_line(ld, s, PATH("retry", "on")),
                    "step '%s': retry.on: '%s' is not a failure class (job_failed, timeout, rejected, error)", s->name, json_is_string(x) ? json_string_value(x) : wf_type_name(x));
        else
            bits |= 1u << cls;
    }
    json_decref(list);
    return bits;
}

static char *label_of(const char *s)
{
    size_t n = strlen(s);
    if (n > 63) n = 63;
    char *out = xmalloc(n + 1);
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        c = (unsigned char)tolower(c);
        out[i] = (isascii(c) && (islower(c) || isdigit(c) || c == '_' || c == '-')) ? (char)c : '-';
    }
    out[n] = '\0';
    return out;
}

/* The line of a field of the step being loaded. */
#define FL(key) wfl_step_line(ld, s, PATH(key))

/* 1 when opt_string has nothing to report about obj[key] (absent, nil or a string). */
static int opt_string_fine(json_t *obj, const char *key)
{
    json_t *x = json_object_get(obj, key);
    return x == NULL || json_is_null(x) || json_is_string(x);
}

/* FL(key) only when opt_string will report the field: each lookup searches the source, and a valid file
 * needs none of them. */
#define OPT_FL(obj, key) (opt_string_fine(obj, key) ? 0 : FL(key))

static void load_step(loader *ld, wf_step *s, const char *name, json_t *v)
{
    s->name = xstrdup(name);
    s->label = label_of(name);
    step_table(ld, name, &s->line);
    s->retry_attempts = 1;
    s->retry_backoff = 30;
    s->retry_max_backoff = 600;
    s->retry_on = WF_RETRY_ON_DEFAULT;
    if (!json_is_object(v) || wf_is_fn(v)) {
        wfl_problem(ld, s->line, "step '%s' must be a table, not a %s", name, wf_type_name(v));
        return;
    }
    char what[300];
    snprintf(what, sizeof what, "step '%s': field", name);
    const char *k;
    json_t *x;
    json_object_foreach(v, k, x) {
        if (!in_list(k, step_keys)) wfl_problem(ld, FL(k), "step '%s': unknown field '%s'", name, k);
    }
    s->job_name = opt_string(ld, OPT_FL(v, "job_name"), v, "job_name", what);
    s->template = opt_string(ld, OPT_FL(v, "template"), v, "template", what);
    char *classic = opt_string(ld, OPT_FL(v, "classic_template"), v, "classic_template", what);
    s->project = opt_string(ld, OPT_FL(v, "project"), v, "project", what);
    s->region = opt_string(ld, OPT_FL(v, "region"), v, "region", what);
    s->on_failure = opt_string(ld, OPT_FL(v, "on_failure"), v, "on_failure", what);
    if (s->on_failure != NULL && strcmp(s->on_failure, "stop") == 0) {
        free(s->on_failure);
        s->on_failure = NULL;
    }
    if (s->template && classic) {
        wfl_problem(ld, s->line, "step '%s': give either template (Flex) or classic_template, not both", name);
        free(classic);
    } else if (classic) {
        s->template = classic;
        s->kind = WF_STEP_CLASSIC;
    } else if (s->template) {
        s->kind = WF_STEP_FLEX;
    } else {
        s->kind = WF_STEP_HOOK;
    }
    char gerr[200];
    if (s->template != NULL && strncmp(s->template, "gs://", 5) != 0)
        wfl_problem(ld, FL(s->kind == WF_STEP_CLASSIC ? "classic_template" : "template"),
                "step '%s': template '%s' must be a gs:// path", name, s->template);
    else if (s->template != NULL && gn_gcs_path_check(s->template, gerr, sizeof gerr) != 0)
        wfl_problem(ld, FL(s->kind == WF_STEP_CLASSIC ? "classic_template" : "template"),
                    "step '%s': template '%s': %s", name, s->template, gerr);

    if (s->job_name == NULL) {
        if (s->kind != WF_STEP_HOOK) wfl_problem(ld, s->line, "step '%s': job_name is required", name);
    } else if (!gn_job_name_valid(s->job_name)) {
        wfl_problem(ld, FL("job_name"),
                "step '%s': job_name '%s' breaks Dataflow's rule [a-z]([-a-z0-9]*[a-z0-9])?", name, s->job_name);
    } else if (strstr(s->job_name, WF_SUFFIX_SEP) != NULL) {
        wfl_problem(ld, FL("job_name"), "step '%s': job_name '%s' must not contain '--' (it separates the run suffix)", name,
                s->job_name);
    } else if (strlen(s->job_name) > WF_JOB_PREFIX_MAX) {
        wfl_problem(ld, FL("job_name"), "step '%s': job_name is longer than %d characters", name, WF_JOB_PREFIX_MAX);
    }
    load_function(ld, s, json_object_get(v, "function"));

    json_t *p = json_object_get(v, "parameters");
    if (p != NULL && !json_is_object(p) && !(json_is_array(p) && json_array_size(p) == 0))
        wfl_problem(ld, FL("parameters"), "step '%s': parameters must be a table, not a %s", name, wf_type_name(p));
    else if (json_is_object(p))
        s->parameters = json_incref(p);
    json_t *env = json_object_get(v, "environment");
    if (env != NULL && !json_is_object(env))
        wfl_problem(ld, FL("environment"), "step '%s': environment must be a table, not a %s", name, wf_type_name(env));
    else if (env != NULL)
        s->environment = json_incref(env);

    if (s->kind == WF_STEP_HOOK) {
        static const char *const launch_only[] = {"parameters", "environment", "retry", "timeout", "success",
                                                  "on_cancel", NULL};
        for (const char *const *lk = launch_only; *lk; lk++)
            if (json_object_get(v, *lk) != NULL)
                wfl_problem(ld, FL(*lk), "step '%s' has '%s' but no template: a launch step needs template or "
                        "classic_template", name, *lk);
    }

    json_t *next = json_object_get(v, "next");
    json_t *choices = json_object_get(v, "choices");
    if (next != NULL && wf_is_fn(next)) {
        s->next_kind = WF_NEXT_CHOICE;
        s->next_ref = 0; /* bound when the workflow's VM is created */
        if (choices == NULL)
            wfl_problem(ld, FL("next"), "step '%s': next is a function, so list the steps it may return in 'choices'",
                    name);
        else
            s->next = string_list(ld, FL("choices"), choices, "choices", &s->n_next);
    } else if (next != NULL) {
        s->next_kind = WF_NEXT_STATIC;
        s->next = string_list(ld, json_is_string(next) ? 0 : FL("next"), next, "next", &s->n_next);
        if (choices != NULL)
            wfl_problem(ld, FL("choices"), "step '%s': 'choices' only goes with a next function", name);
    }
    /* A repeated successor would count its step as a predecessor twice: a join that waits for itself. */
    for (size_t i = 0; i < s->n_next; i++)
        for (size_t j = 0; j < i; j++)
            if (strcmp(s->next[i], s->next[j]) == 0) {
                wfl_problem(ld, FL(s->next_kind == WF_NEXT_CHOICE ? "choices" : "next"), "step '%s': %s lists '%s' twice", name,
                        s->next_kind == WF_NEXT_CHOICE ? "choices" : "next", s->next[i]);
                break;
            }

    json_t *retry = json_object_get(v, "retry");
    if (json_is_integer(retry)) {
        s->retry_attempts = attempts_of(json_integer_value(retry));
    } else if (json_is_object(retry)) {
        json_object_foreach(retry, k, x) {
            if (!in_list(k, (const char *const[]){"attempts", "backoff", "max_backoff", "on", NULL}))
                wfl_problem(ld, wfl_step_line(ld, s, PATH("retry", k)), "step '%s': unknown retry field '%s'", name, k);
        }
        json_t *a = json_object_get(retry, "attempts");
        if (a != NULL && !json_is_integer(a))
            wfl_problem(ld, wfl_step_line(ld, s, PATH("retry", "attempts")), "step '%s': retry.attempts must be a whole number", name);
        else if (a != NULL)
            s->retry_attempts = attempts_of(json_integer_value(a));
        json_t *b = json_object_get(retry, "backoff");
        if (b != NULL && (s->retry_backoff = parse_duration(b)) < 0)
            wfl_problem(ld, wfl_step_line(ld, s, PATH("retry", "backoff")), "step '%s': retry.backoff must be a duration (30, \"30s\", \"5m\")", name);
        json_t *mb = json_object_get(retry, "max_backoff");
        if (mb != NULL && (s->retry_max_backoff = parse_duration(mb)) < 0)
            wfl_problem(ld, wfl_step_line(ld, s, PATH("retry", "max_backoff")), "step '%s': retry.max_backoff must be a duration", name);
        json_t *on = json_object_get(retry, "on");
        if (on != NULL) s->retry_on = retry_classes(ld, s, on);
    } else if (retry != NULL) {
        wfl_problem(ld, FL("retry"), "step '%s': retry must be a number of attempts or a table, not a %s", name,
                wf_type_name(retry));
    }
    if (s->retry_attempts < 1 || s->retry_attempts > 100)
        wfl_problem(ld, wfl_step_line(ld, s, PATH("retry", "attempts")), "step '%s': retry.attempts must be between 1 and 100", name);

    json_t *timeout = json_object_get(v, "timeout");
    if (timeout != NULL && (s->timeout = parse_duration(timeout)) < 0)
        wfl_problem(ld, FL("timeout"), "step '%s': timeout must be a duration (3600, \"90m\", \"2h\")", name);
    json_t *deadline = json_object_get(v, "deadline");
    if (deadline != NULL && ((s->deadline = parse_duration(deadline)) <= 0 || s->kind == WF_STEP_HOOK))
        wfl_problem(ld, FL("deadline"), s->kind == WF_STEP_HOOK ? "step '%s': a hook has no deadline (it does not wait)"
                                                            : "step '%s': deadline must be a positive duration (\"30m\", \"2h\")",
                name);

    json_t *success = json_object_get(v, "success");
    if (success != NULL) {
        s->success = string_list(ld, FL("success"), success, "success", &s->n_success);
        for (size_t i = 0; i < s->n_success; i++) {
            int js = js_from_user(s->success[i]);
            if (js != JS_DONE && js != JS_DRAINED && js != JS_UPDATED && js != JS_CANCELLED && js != JS_RUNNING) {
                wfl_problem(ld, FL("success"), "step '%s': '%s' cannot count as success (use DONE, DRAINED, UPDATED, "
                        "CANCELLED or RUNNING)", name, s->success[i]);
                continue;
            }
            free(s->success[i]);
            s->success[i] = xstrdup(js_name((job_state)js));
        }
    } else {
        s->success = xmalloc(sizeof *s->success);
        s->success[0] = xstrdup(js_name(JS_DONE));
        s->n_success = 1;
    }
    char *on_cancel = opt_string(ld, OPT_FL(v, "on_cancel"), v, "on_cancel", what);
    if (on_cancel != NULL) {
        if (strcmp(on_cancel, "drain") == 0)
            s->stop_mode = WF_STOP_DRAIN;
        else if (strcmp(on_cancel, "cancel") != 0)
            wfl_problem(ld, FL("on_cancel"), "step '%s': on_cancel must be \"cancel\" or \"drain\"", name);
        free(on_cancel);
    }
}

#undef FL

static int cmp_step(const void *a, const void *b)
{
    return strcmp(((const wf_step *)a)->name, ((const wf_step *)b)->name);
}

/* ---- run policies: deadlines, notifications, the failure handler ---- */

static void load_run_policies(loader *ld, json_t *decl)
{
    wf_workflow *wf = ld->wf;
    wf->failure_handler = opt_string(ld, wfl_line(ld, PATH("failure_handler")), decl, "failure_handler", "workflow field");
    json_t *dl = json_object_get(decl, "deadline");
    if (dl != NULL && (wf->deadline = parse_duration(dl)) <= 0)
        wfl_problem(ld, wfl_line(ld, PATH("deadline")), "deadline must be a positive duration (\"30m\", \"2h\")");
    wf->notify_on = WF_NOTIFY_ON_DEFAULT;
    json_t *n = json_object_get(decl, "notify");
    if (n == NULL) return;
    if (!json_is_object(n)) {
        wfl_problem(ld, wfl_line(ld, PATH("notify")), "notify must be a table {webhook = ..., pubsub = ..., on = {...}}, not a %s",
                wf_type_name(n));
        return;
    }
    const char *k;
    json_t *x;
    json_object_foreach(n, k, x) {
        if (strcmp(k, "webhook") != 0 && strcmp(k, "pubsub") != 0 && strcmp(k, "on") != 0)
            wfl_problem(ld, wfl_line(ld, PATH("notify", k)), "unknown notify field '%s' (webhook, pubsub, on)", k);
    }
    wf->notify_webhook = opt_string(ld, wfl_line(ld, PATH("notify", "webhook")), n, "webhook", "notify field");
    wf->notify_pubsub = opt_string(ld, wfl_line(ld, PATH("notify", "pubsub")), n, "pubsub", "notify field");
    const char *why;
    if (wf->notify_webhook != NULL && (why = wf_webhook_url_problem(wf->notify_webhook)) != NULL)
        wfl_problem(ld, wfl_line(ld, PATH("notify", "webhook")), "notify.webhook '%s' %s", wf->notify_webhook, why);
    if (wf->notify_pubsub != NULL && (why = wf_topic_problem(wf->notify_pubsub)) != NULL)
        wfl_problem(ld, wfl_line(ld, PATH("notify", "pubsub")), "notify.pubsub '%s' %s", wf->notify_pubsub, why);
    if (wf->notify_webhook == NULL && wf->notify_pubsub == NULL)
        wfl_problem(ld, wfl_line(ld, PATH("notify")), "notify needs a webhook or a pubsub topic");
    json_t *on = json_object_get(n, "on");
    /* Lua's empty table arrives as an empty object: it is the empty list, not a wrong type */
    if (json_is_object(on) && json_object_size(on) == 0) {
        wfl_problem(ld, wfl_line(ld, PATH("notify", "on")), "notify.on lists no event");
        wf->notify_on = 0;
    } else if (on != NULL) {
        size_t cnt = 0;
        char **names = string_list(ld, wfl_line(ld, PATH("notify", "on")), on, "notify.on", &cnt);
        wf->notify_on = 0;
        for (size_t i = 0; i < cnt; i++) {
            int ev = wf_run_event_parse(names[i]);
            if (ev < 0)
                wfl_problem(ld, wfl_line(ld, PATH("notify", "on")),
                            "notify.on: unknown event '%s' (started, succeeded, failed, cancelled, recovered, "
                            "deadline_missed)", names[i]);
            else
                wf->notify_on |= 1u << ev;
            free(names[i]);
        }
        free(names);
        if (cnt == 0 && json_is_array(on))
            wfl_problem(ld, wfl_line(ld, PATH("notify", "on")), "notify.on lists no event");
    }
}

/* ---- the declaration, a file in one pass ---- */

static void load_declaration(loader *ld, json_t *decl)
{
    wf_workflow *wf = ld->wf;
    const char *k;
    json_t *x;
    json_object_foreach(decl, k, x) {
        if (!in_list(k, workflow_keys)) wfl_problem(ld, wfl_line(ld, PATH(k)), "unknown workflow field '%s'", k);
    }
    wf->name = opt_string(ld, wfl_line(ld, PATH("name")), decl, "name", "workflow field");
    if (json_object_get(decl, "name") == NULL)
        wfl_problem(ld, decl_line(ld), "the workflow needs a name");
    else if (wf->name != NULL && (!gn_label_value_valid(wf->name) || wf->name[0] == '\0'))
        wfl_problem(ld, wfl_line(ld, PATH("name")),
                "workflow name '%s' must be a valid label value: lowercase letters, digits, '_' and '-', at most 63",
                wf->name);
    wf->project = opt_string(ld, wfl_line(ld, PATH("project")), decl, "project", "workflow field");
    wf->region = opt_string(ld, wfl_line(ld, PATH("region")), decl, "region", "workflow field");
    wf->start = opt_string(ld, wfl_line(ld, PATH("start")), decl, "start", "workflow field");
    json_t *env = json_object_get(decl, "environment");
    if (env != NULL && !json_is_object(env))
        wfl_problem(ld, wfl_line(ld, PATH("environment")), "environment must be a table, not a %s", wf_type_name(env));
    wf->environment = json_is_object(env) ? json_incref(env) : json_object();
    json_t *labels = json_object_get(decl, "labels");
    wf->labels = labels ? json_incref(labels) : json_object();
    wfl_check_labels(ld, wfl_line(ld, PATH("labels")), wf->labels, "labels");
    wfl_check_gs_paths(ld, NULL, wf->environment, "environment");
    wfl_check_labels(ld, wfl_line(ld, PATH("environment", "additionalUserLabels")),
                 json_object_get(wf->environment, "additionalUserLabels"), "environment.additionalUserLabels");
    char *orf = opt_string(ld, wfl_line(ld, PATH("on_run_failure")), decl, "on_run_failure", "workflow field");
    if (orf != NULL) {
        if (strcmp(orf, "cancel") == 0)
            wf->cancel_on_failure = 1;
        else if (strcmp(orf, "leave") != 0)
            wfl_problem(ld, wfl_line(ld, PATH("on_run_failure")), "on_run_failure must be \"leave\" or \"cancel\"");
        free(orf);
    }

    load_run_policies(ld, decl);
    {
        const char *field = NULL;
        char why[400];
        if (wf_sched_load(decl, &ld->wf->max_active_runs, &ld->wf->schedule, &field, why, sizeof why) != 0)
            wfl_problem(ld, wfl_line(ld, PATH(field)), "%s", why);
    }
    load_params(ld, json_object_get(decl, "params"));

    json_t *steps = json_object_get(decl, "steps");
    if (!json_is_object(steps) || json_object_size(steps) == 0) {
        wfl_problem(ld, wfl_line(ld, PATH("steps")), "the workflow needs a non-empty 'steps' table");
        return;
    }
    wf->steps = xcalloc(json_object_size(steps), sizeof *wf->steps);
    json_object_foreach(steps, k, x) load_step(ld, &wf->steps[wf->n_steps++], k, x);
    qsort(wf->steps, wf->n_steps, sizeof *wf->steps, cmp_step);

    /* Without a (valid) start only reachability cannot be checked: every other rule still runs. */
    int si = -1;
    if (json_object_get(decl, "start") == NULL)
        wfl_problem(ld, wfl_line(ld, PATH("steps")), "the workflow needs 'start', the name of its first step");
    else if (wf->start != NULL && (si = wf_step_index(wf, wf->start)) < 0)
        wfl_problem(ld, wfl_line(ld, PATH("start")), "start step '%s' does not exist", wf->start);
    if (si >= 0) wf->start_index = (size_t)si;

    wfl_check_steps(ld);
    wfl_check_graph(ld, si >= 0);
}

/* The line of a "path:line: message" diagnostic; 0 for "path: message". */
static long diag_line(const char *item, size_t path_len)
{
    const char *p = item + path_len;
    if (*p != ':' || !isdigit((unsigned char)p[1])) return 0;
    return strtol(p + 1, NULL, 10);
}

typedef struct {
    long line;
    char *item;
} diag_key;

static int cmp_diag(const void *a, const void *b)
{
    const diag_key *x = a, *y = b;
    return x->line != y->line ? (x->line < y->line ? -1 : 1) : strcmp(x->item, y->item);
}

/* Orders one file's problems by line (then text). They are found in the order Lua hands out the table's keys,
 * which changes from run to run. */
static void sort_diags(wf_diags *d, size_t from, const char *path)
{
    if (d == NULL || d->n - from < 2) return;
    size_t n = d->n - from, plen = strlen(path);
    diag_key *keys = xmalloc(n * sizeof *keys);
    for (size_t i = 0; i < n; i++) keys[i] = (diag_key){diag_line(d->items[from + i], plen), d->items[from + i]};
    qsort(keys, n, sizeof *keys, cmp_diag);
    for (size_t i = 0; i < n; i++) d->items[from + i] = keys[i].item;
    free(keys);
}

/* Loads and validates in `vm`. */
static wf_workflow *load_in(const char *path, const char *src, size_t len, lh_vm *vm, const lh_limits *limits,
                            wf_diags *diags)
{
    wf_workflow *wf = xcalloc(1, sizeof *wf);
    atomic_init(&wf->refs, 1);
    loader ld = {wf, diags, 0, vm, {0}};
    size_t first_diag = diags ? diags->n : 0;
    wf->path = xstrdup(path);
    wf->source = xmalloc(len + 1);
    memcpy(wf->source, src, len);
    wf->source[len] = '\0';
    wf->source_len = len;
    if (limits != NULL) wf->limits = *limits;
    char hash[65];
    util_sha256_hex(src, len, hash);
    wf->version = xstrdup(hash);
    char *err = NULL;
    json_t *decl = NULL;
    /* validation only: this VM is freed or loads the next file, so its garbage need not be collected now */
    lh_status st = lh_load_uncollected(vm, path, src, len, "dag", &decl, &err);
    if (st != LH_OK) {
        /* Lua's message already starts with "path:line:" */
        if (err != NULL && strncmp(err, path, strlen(path)) == 0)
            wf_diags_add(diags, "%s", err);
        else
            wfl_problem(&ld, 0, "%s: %s", lh_status_name(st), err ? err : "");
        free(err);
        wf_free(wf);
        return NULL;
    }
    src_index_build(&ld.src, wf->source);
    if (!json_is_object(decl))
        wfl_problem(&ld, decl_line(&ld), "the workflow table must have named fields (name, start, steps, ...)");
    else
        load_declaration(&ld, decl);
    json_decref(decl);
    src_index_free(&ld.src);
    sort_diags(diags, first_diag, path);
    if (ld.errors) {
        wf_free(wf);
        return NULL;
    }
    return wf;
}

wf_workflow *wf_load_source(const char *path, const char *src, size_t len, const lh_limits *limits,
                            wf_diags *diags)
{
    char *err = NULL;
    lh_vm *vm = lh_new(limits, &err);
    if (vm == NULL) {
        wf_diags_add(diags, "%s: %s", path, err ? err : "cannot create a Lua VM");
        free(err);
        return NULL;
    }
    wf_workflow *wf = load_in(path, src, len, vm, limits, diags);
    lh_free(vm);
    return wf;
}

static wf_workflow *load_file(const char *path, lh_vm *scratch, const lh_limits *limits, wf_diags *diags)
{
    size_t len = 0;
    char *src = util_read_file(path, 4u << 20, &len);
    if (src == NULL) {
        wf_diags_add(diags, "%s: cannot read: %s", path, strerror(errno));
        return NULL;
    }
    wf_workflow *wf = scratch ? load_in(path, src, len, scratch, limits, diags)
                              : wf_load_source(path, src, len, limits, diags);
    free(src);
    return wf;
}

wf_workflow *wf_load_file(const char *path, const lh_limits *limits, wf_diags *diags)
{
    return load_file(path, NULL, limits, diags);
}

wf_workflow *wf_load_file_in(const char *path, lh_vm *scratch, const lh_limits *limits, wf_diags *diags)
{
    return load_file(path, scratch, limits, diags);
}

