/* dataflow_format: Dataflow v1b3's REST format, pure (no I/O, no client): the launch request's wire shape (rendered
 * and read back), Job objects, list pages and Google's error bodies read into results, a failed job's cause from its
 * messages. The asynchronous client (dataflow.c) sends and reads through it; tests and fuzzing
 * call its public entry points (df_parse_answer, df_launch_render, df_launch_parse) directly.
 * Uses: dataflow.h (the types), dataflow_internal.h, launch, retry (Retry-After, RetryInfo), util, jansson.
 * Must not: do I/O, keep state, or decide what a job state means for a workflow. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dataflow.h"
#include "dataflow_internal.h"
#include "launch.h"
#include "mem.h"
#include "util.h"

const char *df_err_name(df_err e)
{
    switch (e) {
    case DF_OK: return "ok";
    case DF_ERR_TRANSPORT: return "transport";
    case DF_ERR_HTTP: return "http";
    case DF_ERR_BAD_RESPONSE: return "bad_response";
    case DF_ERR_AUTH: return "auth";
    case DF_ERR_UNKNOWN_OUTCOME: return "unknown_outcome";
    case DF_ERR_CANCELLED: return "cancelled";
    }
    return "?";
}

/* --- results and jobs --- */

void df_job_clear(df_job *j)
{
    if (j == NULL) return;
    free(j->id);
    free(j->name);
    free(j->project_id);
    free(j->location);
    free(j->type);
    free(j->current_state);
    free(j->current_state_time);
    free(j->create_time);
    json_decref(j->labels);
    json_decref(j->raw);
    memset(j, 0, sizeof *j);
}


int df_job_copy(df_job *d, const df_job *s)
{
    memset(d, 0, sizeof *d);
    d->id = xstrdup(s->id);
    d->name = xstrdup(s->name);
    d->project_id = xstrdup(s->project_id);
    d->location = xstrdup(s->location);
    d->type = xstrdup(s->type);
    d->current_state = xstrdup(s->current_state);
    d->current_state_time = xstrdup(s->current_state_time);
    d->create_time = xstrdup(s->create_time);
    d->labels = s->labels ? json_deep_copy(s->labels) : NULL;
    d->raw = s->raw ? json_deep_copy(s->raw) : NULL;
    return 0;
}

void df_result_free(df_result *r)
{
    if (r == NULL) return;
    free(r->status);
    free(r->reason);
    free(r->message);
    for (size_t i = 0; i < r->n_violations; i++) {
        free(r->violations[i].parameter);
        free(r->violations[i].description);
    }
    free(r->violations);
    if (r->job) df_job_clear(r->job);
    free(r->job);
    for (size_t i = 0; i < r->n_jobs; i++) df_job_clear(&r->jobs[i]);
    free(r->jobs);
    free(r->next_page_token);
    json_decref(r->raw);
    free(r);
}

df_result *df_result_new(df_err err, const char *fmt, ...)
{
    df_result *r = xcalloc(1, sizeof *r);
    r->err = err;
    r->retry_delay_ms = -1;
    if (fmt) {
        va_list ap;
        va_start(ap, fmt);
        r->message = util_vprintf(fmt, ap);
        va_end(ap);
    }
    return r;
}

/* Optional string member: absent or null is fine (NULL), any other non-string type is a bad response. */
static int opt_str(json_t *o, const char *key, char **out)
{
    json_t *v = json_object_get(o, key);
    *out = NULL;
    if (v == NULL || json_is_null(v)) return 0;
    if (!json_is_string(v)) return -1;
    *out = xstrdup(json_string_value(v));
    return *out ? 0 : -1;
}

/* Parses a Job object into j. Returns 0, or -1 with *why (static) for a value of the wrong shape. */
static int parse_job(json_t *o, df_job *j, const char **why)
{
    memset(j, 0, sizeof *j);
    *why = "job is not a JSON object";
    if (!json_is_object(o)) return -1;
    *why = "job has a field of the wrong type";
    if (opt_str(o, "id", &j->id) || opt_str(o, "name", &j->name) || opt_str(o, "projectId", &j->project_id) ||
        opt_str(o, "location", &j->location) || opt_str(o, "type", &j->type) ||
        opt_str(o, "currentState", &j->current_state) || opt_str(o, "currentStateTime", &j->current_state_time) ||
        opt_str(o, "createTime", &j->create_time))
        goto bad;
    if (j->id == NULL || j->id[0] == '\0') {
        *why = "job has no id";
        goto bad;
    }
    json_t *labels = json_object_get(o, "labels");
    if (labels && !json_is_null(labels)) {
        const char *k;
        json_t *v;
        if (!json_is_object(labels)) goto bad;
        json_object_foreach(labels, k, v) {
            if (!json_is_string(v)) goto bad;
        }
        j->labels = json_incref(labels);
    }
    j->raw = json_incref(o);
    return 0;
bad:
    df_job_clear(j);
    return -1;
}

/* Fills the google error fields of r from an error body ({"error": {...}}); tolerant of any shape. */
static void parse_error_body(df_result *r, json_t *raw)
{
    json_t *e = json_object_get(raw, "error");
    if (!json_is_object(e)) return;
    json_t *v;
    if (json_is_string(v = json_object_get(e, "message"))) {
        free(r->message);
        r->message = xstrdup(json_string_value(v));
    }
    if (json_is_string(v = json_object_get(e, "status"))) r->status = xstrdup(json_string_value(v));
    json_t *errs = json_object_get(e, "errors");
    if (json_is_array(errs) && json_is_string(v = json_object_get(json_array_get(errs, 0), "reason")))
        r->reason = xstrdup(json_string_value(v));
    json_t *details = json_object_get(e, "details");
    size_t i;
    json_t *d;
    if (!json_is_array(details)) return;
    json_array_foreach(details, i, d) {
        const char *type = json_string_value(json_object_get(d, "@type"));
        if (type == NULL) continue;
        if (strstr(type, "google.rpc.RetryInfo") && r->retry_delay_ms < 0) {
            int64_t ms;
            if (retry_parse_duration(json_string_value(json_object_get(d, "retryDelay")), &ms) == 0)
                r->retry_delay_ms = ms;
        } else if (strstr(type, "InvalidTemplateParameters")) {
            json_t *pv = json_object_get(d, "parameterViolations"), *p;
            size_t k;
            if (!json_is_array(pv) || json_array_size(pv) == 0) continue;
            df_violation *nv = xrealloc(r->violations, (r->n_violations + json_array_size(pv)) * sizeof *nv);
            r->violations = nv;
            json_array_foreach(pv, k, p) {
                const char *pa = json_string_value(json_object_get(p, "parameter"));
                const char *de = json_string_value(json_object_get(p, "description"));
                df_violation *x = &r->violations[r->n_violations++];
                x->parameter = xstrdup(pa ? pa : "");
                x->description = xstrdup(de ? de : "");
            }
        }
    }
}

/* The answer of an HTTP exchange (status, body, Retry-After) as a result: DF_OK (2xx; the body is read per call
 * by df_answer_read) or DF_ERR_HTTP with Google's error fields. `now_ms` (unix ms) dates a Retry-After given as a
 * date. */
df_result *df_result_from_http(long status, const char *body, size_t len, const char *retry_after,
                               int64_t now_ms)
{
    df_result *r = df_result_new(DF_OK, NULL);
    r->http_status = status;
    if (len) r->raw = json_loadb(body, len, 0, NULL);
    if (status >= 200 && status < 300) return r;
    r->err = DF_ERR_HTTP;
    r->message = util_printf("HTTP %ld%s", status, r->raw ? "" : " (body is not JSON)");
    parse_error_body(r, r->raw);
    int64_t ms;
    if (retry_after && retry_parse_retry_after(retry_after, now_ms, &ms) == 0)
        r->retry_delay_ms = ms; /* the header wins over RetryInfo */
    return r;
}

/* --- responses --- */

static int parse_list(df_result *r, const char **why)
{
    json_t *raw = r->raw, *jobs, *tok, *o;
    size_t i;
    *why = "list response is not a JSON object";
    if (!json_is_object(raw)) return -1;
    jobs = json_object_get(raw, "jobs");
    tok = json_object_get(raw, "nextPageToken");
    *why = "list response has the wrong shape";
    if (jobs && !json_is_null(jobs) && !json_is_array(jobs)) return -1;
    if (tok && !json_is_null(tok) && !json_is_string(tok)) return -1;
    if (json_is_string(tok) && json_string_length(tok) > 0) r->next_page_token = xstrdup(json_string_value(tok));
    size_t n = json_is_array(jobs) ? json_array_size(jobs) : 0;
    if (n == 0) return 0;
    r->jobs = xcalloc(n, sizeof *r->jobs);
    json_array_foreach(jobs, i, o) {
        if (parse_job(o, &r->jobs[i], why) != 0) return -1;
        r->n_jobs++;
    }
    return 0;
}

void df_bad_response(df_result *r, const char *why)
{
    r->err = DF_ERR_BAD_RESPONSE;
    free(r->message);
    r->message = util_printf("unexpected response (HTTP %ld): %s", r->http_status, why);
}

/* Reads a 2xx answer's body (r->raw) as `kind` expects it: the job into r->job, the list into r->jobs. Returns 0,
 * or -1 with r turned into DF_ERR_BAD_RESPONSE. */
int df_answer_read(df_answer_kind kind, df_result *r)
{
    const char *why = NULL;
    json_t *job;
    switch (kind) {
    case DF_ANSWER_JOB:
        r->job = xcalloc(1, sizeof *r->job);
        if (parse_job(r->raw, r->job, &why) == 0) return 0;
        break;
    case DF_ANSWER_LIST:
        if (parse_list(r, &why) == 0) return 0;
        break;
    case DF_ANSWER_LAUNCH:
    case DF_ANSWER_VALIDATE:
        job = json_object_get(r->raw, "job");
        if (kind == DF_ANSWER_VALIDATE && (job == NULL || json_is_null(job))) {
            if (json_is_object(r->raw)) return 0;
            why = "launch response is not a JSON object";
            break;
        }
        r->job = xcalloc(1, sizeof *r->job);
        if (parse_job(job, r->job, &why) == 0) return 0;
        break;
    }
    free(r->job); /* parse_job cleared it */
    r->job = NULL;
    df_bad_response(r, why ? why : "?");
    return -1;
}

df_result *df_parse_answer(df_answer_kind kind, long status, const char *body, size_t len, const char *retry_after,
                           int64_t now_ms)
{
    df_result *r = df_result_from_http(status, body, len, retry_after, now_ms);
    if (r->err == DF_OK) df_answer_read(kind, r);
    return r;
}

/* --- the launch request's wire format --- */

json_t *df_launch_render(const launch_req *req, unsigned flags)
{
    if (req == NULL || req->template == NULL || req->job_name == NULL || req->project == NULL || req->region == NULL)
        return NULL;
    int validate = (flags & DF_VALIDATE_ONLY) != 0;
    char *project = hc_escape(req->project), *region = hc_escape(req->region), *path = NULL;
    json_t *params = req->parameters ? json_incref(req->parameters) : json_object();
    json_t *env = req->environment ? json_incref(req->environment) : json_object();
    json_t *out = NULL;
    if (project == NULL || region == NULL) goto done;
    if (req->kind == LAUNCH_FLEX) {
        /* validateOnly defaults to false: it is sent only when set, so a real launch's body is the launchParameter
         * alone (the shape of the reference sample's launchParameter, and what `sluice plan` shows). */
        path = util_printf("/v1b3/projects/%s/locations/%s/flexTemplates:launch", project, region);
        json_t *body = json_pack("{s:{s:s,s:s,s:O,s:O}}", "launchParameter", "jobName", req->job_name,
                                 "containerSpecGcsPath", req->template, "parameters", params, "environment", env);
        if (body != NULL && validate) json_object_set_new(body, "validateOnly", json_true());
        out = body ? json_pack("{s:s,s:s,s:o}", "method", "POST", "path", path, "body", body) : NULL;
        if (out == NULL) json_decref(body);
    } else if (req->kind == LAUNCH_CLASSIC) {
        path = util_printf("/v1b3/projects/%s/locations/%s/templates:launch", project, region);
        out = json_pack("{s:s,s:s,s:{s:s,s:s},s:{s:s,s:O,s:O}}", "method", "POST", "path", path, "query", "gcsPath",
                        req->template, "validateOnly", validate ? "true" : "false", "body", "jobName", req->job_name,
                        "parameters", params, "environment", env);
    }
done:
    free(project);
    free(region);
    free(path);
    json_decref(params);
    json_decref(env);
    return out;
}

launch_req *df_launch_parse(json_t *request)
{
    json_t *body = json_object_get(request, "body"), *query = json_object_get(request, "query");
    json_t *lp = json_object_get(body, "launchParameter");
    const char *project = json_string_value(json_object_get(request, "project"));
    const char *region = json_string_value(json_object_get(request, "region"));
    if (json_is_object(lp))
        return launch_new(LAUNCH_FLEX, json_string_value(json_object_get(lp, "containerSpecGcsPath")),
                          json_string_value(json_object_get(lp, "jobName")), project, region,
                          json_object_get(lp, "parameters"), json_object_get(lp, "environment"));
    if (!json_is_object(body)) return NULL;
    return launch_new(LAUNCH_CLASSIC, json_string_value(json_object_get(query, "gcsPath")),
                      json_string_value(json_object_get(body, "jobName")), project, region,
                      json_object_get(body, "parameters"), json_object_get(body, "environment"));
}

/* The query object of a rendered request as "?k=v&..." with values percent-encoded ("" when none); caller frees. */
char *df_query_string(json_t *query)
{
    char *out = xstrdup("");
    const char *k;
    json_t *v;
    json_object_foreach(query, k, v) {
        char *val = hc_escape(json_string_value(v) ? json_string_value(v) : "");
        char *next = util_printf("%s%c%s=%s", out, out[0] ? '&' : '?', k, val);
        free(out);
        free(val);
        out = next;
    }
    return out;
}

/* --- job messages --- */

char *df_failure_cause(json_t *raw)
{
    json_t *msgs = json_object_get(raw, "jobMessages"), *m;
    size_t i;
    const char *best = NULL;
    /* "Workflow failed. Causes: ..." is the summary; without it, the last error message says most. */
    json_array_foreach(msgs, i, m) {
        const char *t = json_string_value(json_object_get(m, "messageText"));
        const char *imp = json_string_value(json_object_get(m, "messageImportance"));
        if (t == NULL || (imp && strcmp(imp, "JOB_MESSAGE_ERROR") != 0)) continue;
        if (strncmp(t, "Workflow failed.", 16) == 0) return xstrndup(t, 4000);
        best = t;
    }
    return best ? xstrndup(best, 4000) : NULL;
}
