/* jobs_api: the engine's view of Dataflow, and its implementation over the dataflow client.
 * Uses: launch, dataflow, http_client, gauth, config, jansson, log, util.
 * Must not: decide anything about runs or steps. */
#include "jobs_api.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dataflow.h"
#include "gauth.h"
#include "http_client.h"
#include "log.h"
#include "mem.h"
#include "quota.h"
#include "util.h"

launch_req *ja_launch_from_record(json_t *j)
{
    launch_req *l = launch_from_json(j);
    if (l == NULL && json_string_value(json_object_get(j, "kind")) == NULL && json_is_object(json_object_get(j, "body")))
        l = df_launch_parse(j);
    return l;
}

void ja_result_clear(ja_result *r)
{
    free(r->message);
    json_decref(r->job);
    json_decref(r->violations);
    memset(r, 0, sizeof *r);
}

/* ---- the Dataflow-backed implementation ---- */


typedef struct {
    char *project, *region;
    df_client *df;
} df_slot;

typedef struct {
    jobs_api base;
    hc_client *hc;
    ga_auth *ga;
    char *base_url;
    long timeout_ms;
    df_slot *slots;
    size_t n_slots;
} jobs_api_df;

typedef enum { CALL_LAUNCH, CALL_VALIDATE, CALL_GET, CALL_FIND, CALL_STOP, CALL_MESSAGES } call_kind;

typedef struct {
    call_kind kind;
    ja_cb cb;
    void *ud;
    char *name; /* CALL_FIND: the exact name wanted */
} df_call;

static char *describe(const df_result *r);

/* A call's attempt failed and the dataflow client tries again: told to the jobs_api's user with the call's ud. */
static void dfa_on_retry(void *hook_ud, void *call_ud, const df_result *r, int failures, int64_t delay_ms)
{
    jobs_api_df *a = hook_ud;
    const df_call *c = call_ud;
    if (a->base.on_retry == NULL || c == NULL) return;
    char *why = describe(r);
    a->base.on_retry(a->base.on_retry_ud, c->ud, why, failures, delay_ms);
    free(why);
}

/* The client for a project and region, created on first use. Returns NULL with *err (static). */
static df_client *client_for(jobs_api_df *a, const char *project, const char *region, const char **err)
{
    for (size_t i = 0; i < a->n_slots; i++)
        if (strcmp(a->slots[i].project, project) == 0 && strcmp(a->slots[i].region, region) == 0) return a->slots[i].df;
    df_options o = {.base_url = a->base_url, .project = project, .region = region, .timeout_ms = a->timeout_ms,
                    .on_retry = dfa_on_retry, .hook_ud = a, .launch_quota_report = 1};
    df_client *df = df_new(a->hc, a->ga, &o, err);
    if (df == NULL) return NULL;
    df_slot *slots = xrealloc(a->slots, (a->n_slots + 1) * sizeof *slots);
    a->slots = slots;
    a->slots[a->n_slots].project = xstrdup(project);
    a->slots[a->n_slots].region = xstrdup(region);
    a->slots[a->n_slots].df = df;
    a->n_slots++;
    return df;
}

/* Google's message plus the parameter violations, verbatim. Caller frees. */
static char *describe(const df_result *r)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *f = util_memstream(&buf, &len);
    if (r->message != NULL)
        fputs(r->message, f);
    else
        fputs(df_err_name(r->err), f);
    for (size_t i = 0; i < r->n_violations; i++)
        fprintf(f, "%s%s: %s", i == 0 ? " [" : "; ", r->violations[i].parameter ? r->violations[i].parameter : "?",
                r->violations[i].description ? r->violations[i].description : "");
    if (r->n_violations > 0) fputc(']', f);
    fclose(f);
    return buf;
}

static int definitive_http(long status) { return status >= 400 && status < 500 && status != 408 && status != 429; }

static void df_done(void *ud, df_result *r)
{
    df_call *c = ud;
    ja_result out = {.http_status = r->http_status};
    switch (r->err) {
    case DF_OK:
        out.outcome = JA_OK;
        if (c->kind == CALL_FIND) {
            /* the newest job carrying exactly this name */
            const df_job *best = NULL;
            for (size_t i = 0; i < r->n_jobs; i++) {
                const df_job *j = &r->jobs[i];
                if (j->name == NULL || strcmp(j->name, c->name) != 0) continue;
                if (best == NULL || (j->create_time && best->create_time && strcmp(j->create_time, best->create_time) > 0))
                    best = j;
            }
            if (best == NULL)
                out.outcome = JA_NOT_FOUND;
            else
                out.job = json_incref(best->raw);
        } else if (c->kind == CALL_MESSAGES) {
            out.message = df_failure_cause(r->raw);
        } else if (r->job != NULL && r->job->raw != NULL) {
            out.job = json_incref(r->job->raw);
        }
        out.already_terminated = r->already_terminated;
        break;
    case DF_ERR_HTTP:
        if ((c->kind == CALL_GET || c->kind == CALL_MESSAGES) && r->http_status == 404)
            out.outcome = JA_NOT_FOUND;
        else if (c->kind == CALL_LAUNCH && quota_refused(r->http_status, r->status, r->reason, r->message)) {
            out.outcome = JA_QUOTA;
            out.retry_delay_ms = r->retry_delay_ms > 0 ? r->retry_delay_ms : 0;
        } else if ((c->kind == CALL_LAUNCH || c->kind == CALL_VALIDATE) && definitive_http(r->http_status))
            out.outcome = JA_REJECTED;
        else
            out.outcome = JA_TRANSIENT;
        break;
    case DF_ERR_UNKNOWN_OUTCOME: out.outcome = JA_UNKNOWN; break;
    default: out.outcome = c->kind == CALL_LAUNCH ? JA_UNKNOWN : JA_TRANSIENT; break;
    }
    if (r->err != DF_OK) out.message = describe(r);
    for (size_t i = 0; i < r->n_violations; i++) {
        if (out.violations == NULL) out.violations = json_array();
        json_array_append_new(out.violations, json_pack("{s:s,s:s}", "parameter", r->violations[i].parameter,
                                                        "description", r->violations[i].description));
    }
    c->cb(c->ud, &out);
    ja_result_clear(&out);
    df_result_free(r);
    free(c->name);
    free(c);
}

static df_call *call_new(call_kind kind, ja_cb cb, void *ud)
{
    df_call *c = xcalloc(1, sizeof *c);
    c->kind = kind;
    c->cb = cb;
    c->ud = ud;
    return c;
}

static int submit_failed(df_call *c, const char *what, const char *err)
{
    log_error("dataflow %s could not be queued: %s", what, err ? err : "?");
    free(c->name);
    free(c);
    return -1;
}

/* A launch, or (validate) a validateOnly launch that creates nothing. */
static int send_launch(jobs_api *api, const launch_req *req, int validate, ja_cb cb, void *ud)
{
    jobs_api_df *a = (jobs_api_df *)api;
    const char *err = NULL, *what = validate ? "validation" : "launch";
    df_client *df = client_for(a, req->project, req->region, &err);
    df_call *c = call_new(validate ? CALL_VALIDATE : CALL_LAUNCH, cb, ud);
    if (df == NULL) return submit_failed(c, what, err);
    return df_launch(df, req, validate ? DF_VALIDATE_ONLY : 0, df_done, c, &err) > 0 ? 0 : submit_failed(c, what, err);
}

static int dfa_launch(jobs_api *api, const launch_req *req, ja_cb cb, void *ud) { return send_launch(api, req, 0, cb, ud); }

int jobs_api_df_validate(jobs_api *api, const launch_req *req, ja_cb cb, void *ud)
{
    return send_launch(api, req, 1, cb, ud);
}

static int dfa_get(jobs_api *api, const char *project, const char *region, const char *job_id, ja_cb cb, void *ud)
{
    jobs_api_df *a = (jobs_api_df *)api;
    const char *err = NULL;
    df_client *df = client_for(a, project, region, &err);
    df_call *c = call_new(CALL_GET, cb, ud);
    if (df == NULL) return submit_failed(c, "get", err);
    /* labels come only with the DESCRIPTION view */
    return df_job_get(df, job_id, DF_VIEW_DESCRIPTION, 0, df_done, c, &err) > 0 ? 0 : submit_failed(c, "get", err);
}

static int dfa_find(jobs_api *api, const char *project, const char *region, const char *job_name, ja_cb cb, void *ud)
{
    jobs_api_df *a = (jobs_api_df *)api;
    const char *err = NULL;
    df_client *df = client_for(a, project, region, &err);
    df_call *c = call_new(CALL_FIND, cb, ud);
    if (df == NULL) return submit_failed(c, "find", err);
    c->name = xstrdup(job_name);
    df_list_query q = {.filter = DF_FILTER_ALL, .name = job_name};
    return df_jobs_list_all(df, &q, df_done, c, &err) > 0 ? 0 : submit_failed(c, "find", err);
}

static int dfa_stop(jobs_api *api, const char *project, const char *region, const char *job_id, int drain, ja_cb cb,
                    void *ud)
{
    jobs_api_df *a = (jobs_api_df *)api;
    const char *err = NULL;
    df_client *df = client_for(a, project, region, &err);
    df_call *c = call_new(CALL_STOP, cb, ud);
    if (df == NULL) return submit_failed(c, "stop", err);
    int64_t id = drain ? df_job_drain(df, job_id, df_done, c, &err) : df_job_cancel(df, job_id, df_done, c, &err);
    return id > 0 ? 0 : submit_failed(c, "stop", err);
}

static int dfa_messages(jobs_api *api, const char *project, const char *region, const char *job_id, ja_cb cb,
                        void *ud)
{
    jobs_api_df *a = (jobs_api_df *)api;
    const char *err = NULL;
    df_client *df = client_for(a, project, region, &err);
    df_call *c = call_new(CALL_MESSAGES, cb, ud);
    if (df == NULL) return submit_failed(c, "messages", err);
    return df_job_messages(df, job_id, NULL, df_done, c, &err) > 0 ? 0 : submit_failed(c, "messages", err);
}

static int dfa_poll(jobs_api *api, int max_wait_ms)
{
    jobs_api_df *a = (jobs_api_df *)api;
    return hc_run(a->hc, max_wait_ms);
}

static void dfa_free(jobs_api *api)
{
    jobs_api_df *a = (jobs_api_df *)api;
    if (a == NULL) return;
    for (size_t i = 0; i < a->n_slots; i++) {
        df_free(a->slots[i].df);
        free(a->slots[i].project);
        free(a->slots[i].region);
    }
    free(a->slots);
    ga_free(a->ga);
    hc_free(a->hc);
    free(a->base_url);
    free(a);
}

/* The metadata fetch outlives a timed-out wait: its callback frees this when the wait gave up. */
typedef struct {
    int done, abandoned;
    const char *project; /* borrowed from the ga_auth */
    char *err;
} project_wait;

static void project_cb(void *ud, int rc, const char *project, const char *err)
{
    project_wait *w = ud;
    if (w->abandoned) {
        free(w);
        return;
    }
    w->done = 1;
    w->project = rc == 0 ? project : NULL;
    w->err = err ? xstrdup(err) : NULL;
}

const char *jobs_api_df_credentials_project(jobs_api *api, int timeout_ms, const char **from)
{
    jobs_api_df *a = (jobs_api_df *)api;
    ga_kind kind = ga_get_kind(a->ga);
    if (from) *from = kind == GA_SERVICE_ACCOUNT   ? "the service-account key's project_id"
                      : kind == GA_AUTHORIZED_USER ? "the gcloud credentials' quota_project_id"
                      : kind == GA_METADATA        ? "the metadata server's project/project-id"
                                                   : "none";
    if (kind != GA_METADATA) return ga_project_id(a->ga);
    project_wait *w = xcalloc(1, sizeof *w);
    ga_project_id_fetch(a->ga, project_cb, w);
    int64_t deadline = util_mono_ms() + timeout_ms;
    while (!w->done && util_mono_ms() < deadline) hc_run(a->hc, 50);
    if (!w->done) {
        log_warn("the metadata server did not tell the project id within %d ms", timeout_ms);
        w->abandoned = 1; /* freed by project_cb, at the latest when the HTTP client is freed */
        return NULL;
    }
    const char *p = w->project;
    if (p == NULL) log_warn("no project id from the metadata server: %s", w->err ? w->err : "?");
    free(w->err);
    free(w);
    return p;
}

const char *jobs_api_df_default_project(jobs_api *api, const sluice_config *cfg, int needed)
{
    const char *from = NULL, *cred = NULL;
    int given = config_project(&(config_projects){.flag = cfg->project, .env = cfg->project_env}, NULL) != NULL;
    /* Every launch step names its project and none was given: no default is needed, so none is looked for and
     * there is nothing to warn about (config_default_project would warn "no default project"). */
    if (!needed && !given) return NULL;
    if (needed && !given) cred = jobs_api_df_credentials_project(api, CONFIG_PROJECT_LOOKUP_MS, &from);
    return config_default_project(cfg, cred, from);
}

static const jobs_api_ops df_ops = {dfa_launch, dfa_get, dfa_find, dfa_stop, dfa_poll, dfa_free, dfa_messages};

jobs_api *jobs_api_df_new(const jobs_api_df_options *opts, char **err)
{
    jobs_api_df *a = xcalloc(1, sizeof *a);
    a->base.ops = &df_ops;
    hc_options ho = {.max_conns_per_host = opts && opts->max_connections ? opts->max_connections : 64};
    a->hc = hc_new(&ho);
    a->base_url = opts && opts->base_url ? xstrdup(opts->base_url) : NULL;
    a->timeout_ms = opts ? opts->timeout_ms : 0;
    if (a->hc == NULL) {
        if (err) *err = xstrdup("cannot create the HTTP client");
        dfa_free(&a->base);
        return NULL;
    }
    if (opts && opts->no_auth)
        a->ga = ga_new_none(NULL);
    else if (opts && opts->static_token)
        a->ga = ga_new_static(opts->static_token, NULL);
    else if (opts && opts->credentials)
        a->ga = ga_new_from_file(a->hc, opts->credentials, NULL, err);
    else
        a->ga = ga_new_adc(a->hc, NULL, err);
    if (a->ga == NULL) {
        dfa_free(&a->base);
        return NULL;
    }
    return &a->base;
}
