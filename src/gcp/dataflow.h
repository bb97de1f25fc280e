/* dataflow: asynchronous client for the Dataflow REST API v1b3 (projects.locations.* only): flex and classic
 * launches with launch safety (never a blind re-send: look the job name up, adopt, re-send only when no job
 * exists), jobs.get (with a bounded window for the 404 that follows a job's end), jobs.list (+ paging
 * helper), cancel and drain; idempotent calls retried with the retry policy; 401 -> refresh token once. The
 * pure half (rendering requests, parsing answers) is dataflow_format.c; both implement this header.
 * Uses: http_client (the caller's loop), gauth, retry, jansson, log. Must not: decide workflow semantics
 * (which job to launch or what a state means for a run) or log tokens. */
#ifndef SLUICE_DATAFLOW_H
#define SLUICE_DATAFLOW_H
#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "gauth.h"
#include "http_client.h"
#include "launch.h"
#include "retry.h"

typedef struct df_client df_client;
struct df_result;

typedef struct df_options {
    const char *base_url;   /* NULL: https://dataflow.googleapis.com */
    const char *project;    /* NULL: ga_project_id(ga) */
    const char *region;     /* required, e.g. "europe-west4" */
    const retry_policy *policy;        /* get/list/cancel/drain; NULL: retry_policy_default() */
    const retry_policy *launch_policy; /* re-sends and look-ups of a launch; NULL: retry_policy_default() */
    int64_t lag_window_ms;  /* jobs.get 404 retried this long; 0: 60 s; < 0: never */
    int64_t adopt_skew_ms;  /* a TERMINATED job named like ours counts if created after intent - skew; 0: 10 s */
    long timeout_ms;        /* per HTTP request; 0: 60 s (what Google's clients use) */
    int64_t (*wall_ms)(void *ud); /* unix ms (intent times, Retry-After dates); NULL: the real clock */
    void *wall_ud;
    retry_rng_fn rng;       /* NULL: retry_rng_default */
    void *rng_ud;
    /* Optional: told (from hc_run) each time an attempt of a call failed and the call will try again after
     * delay_ms: `call_ud` is the ud the call was started with, `r` the failed attempt (borrowed), `failures` how
     * many of its attempts failed so far. For showing a call that keeps failing before it gives up. */
    void (*on_retry)(void *hook_ud, void *call_ud, const struct df_result *r, int failures,
                     int64_t delay_ms);
    void *hook_ud;
    /* A failed attempt that will be retried is logged at WARNING with its reason: the first at once, then at
     * most one line per this many ms for the client, saying how many were not logged. 0: 30 s. */
    int64_t warn_interval_ms;
    /* 1: a launch refused for quota (quota_refused: 429, RESOURCE_EXHAUSTED, ...) is reported at once instead of
     * re-sent after a backoff, so the caller can wait for capacity its own way (the engine puts the step back in
     * its wait queue and launches it when a job ends). 0: re-sent like any 429. */
    int launch_quota_report;
} df_options;

typedef enum {
    DF_OK = 0,
    DF_ERR_TRANSPORT,       /* no HTTP answer; see transport */
    DF_ERR_HTTP,            /* Google answered an error; see http_status, status, reason, message, violations */
    DF_ERR_BAD_RESPONSE,    /* an answer that is not the documented shape (garbage, truncated, wrong types) */
    DF_ERR_AUTH,            /* no access token could be obtained */
    DF_ERR_UNKNOWN_OUTCOME, /* launch: the outcome is unknown and the look-up could not settle it */
    DF_ERR_CANCELLED,       /* df_free() while in flight */
} df_err;
const char *df_err_name(df_err e);

typedef struct df_violation {
    char *parameter, *description;
} df_violation;

/* A job as the API returned it. Strings are NULL when absent (a launch answer has no currentState). */
typedef struct df_job {
    char *id, *name, *project_id, *location, *type, *current_state, *current_state_time, *create_time;
    json_t *labels; /* object of strings, or NULL */
    json_t *raw;    /* the whole Job object */
} df_job;

/* The outcome of one call. The callback owns it and releases it with df_result_free. */
typedef struct df_result {
    df_err err;
    hc_error transport;        /* for DF_ERR_TRANSPORT / DF_ERR_UNKNOWN_OUTCOME */
    long http_status;          /* last HTTP status seen, 0 if none */
    char *status;              /* google error.status, e.g. "ALREADY_EXISTS" */
    char *reason;              /* error.errors[0].reason, e.g. "alreadyExists" */
    char *message;             /* error.message verbatim, or a description of the failure */
    df_violation *violations;  /* InvalidTemplateParameters.parameterViolations, verbatim */
    size_t n_violations;
    int64_t retry_delay_ms;    /* server hint (Retry-After or RetryInfo.retryDelay), -1 if none */
    df_job *job;               /* get, launch (NULL for validateOnly), cancel/drain (when returned) */
    df_job *jobs;              /* list: array of n_jobs */
    size_t n_jobs;
    char *next_page_token;     /* list: NULL on the last page */
    json_t *raw;               /* the parsed response body, if it was JSON */
    int attempts;              /* HTTP requests this call made (look-ups included) */
    int adopted;               /* launch: an existing job was adopted instead of created */
    int already_terminated;    /* cancel/drain: the job had already finished ("has terminated") */
} df_result;

typedef void (*df_done_cb)(void *ud, df_result *res);

void df_result_free(df_result *r);
void df_job_clear(df_job *j);
/* Deep copy; returns 0 or -1 (allocation). */
int df_job_copy(df_job *dst, const df_job *src);

/* `hc` and `ga` are borrowed and must outlive the client. Returns NULL with *err (static string). */
df_client *df_new(hc_client *hc, ga_auth *ga, const df_options *opts, const char **err);
/* Completes every outstanding call with DF_ERR_CANCELLED (callbacks run; they must not call df_* on this
 * client), then frees. NULL is a no-op. */
void df_free(df_client *df);

enum {
    DF_VALIDATE_ONLY = 1, /* launches: validateOnly=true (nothing is created, so plain retries apply) */
    DF_NO_LAG_RETRY = 2,  /* get: report a 404 at once instead of waiting out the lag window */
};
typedef enum { DF_VIEW_SUMMARY = 0, DF_VIEW_DESCRIPTION, DF_VIEW_ALL } df_view;
typedef enum { DF_FILTER_UNSET = 0, DF_FILTER_ACTIVE, DF_FILTER_TERMINATED, DF_FILTER_ALL } df_filter;

typedef struct df_list_query {
    df_filter filter;
    const char *name;       /* exact job name, or NULL */
    int page_size;          /* 0: server default */
    const char *page_token; /* NULL: first page (ignored by df_jobs_list_all) */
} df_list_query;

/* Every call returns an operation id > 0 and later runs `cb` exactly once from hc_run (never before the call
 * returns), or returns -1 with *err set (static string) and never runs `cb`. JSON arguments are borrowed. */

/* Sends the launch request (flex or classic by its kind) to this client's project and region, which must be the
 * request's; borrowed. flags: DF_VALIDATE_ONLY. */
int64_t df_launch(df_client *df, const launch_req *req, unsigned flags, df_done_cb cb, void *ud, const char **err);
int64_t df_job_get(df_client *df, const char *job_id, df_view view, unsigned flags, df_done_cb cb, void *ud,
                   const char **err);
int64_t df_jobs_list(df_client *df, const df_list_query *q, df_done_cb cb, void *ud, const char **err);
/* Pages through every result (following nextPageToken); res->jobs holds them all. */
int64_t df_jobs_list_all(df_client *df, const df_list_query *q, df_done_cb cb, void *ud, const char **err);
/* requestedState JOB_STATE_CANCELLED / JOB_STATE_DRAINED. A job that already finished is success with
 * already_terminated = 1. */
int64_t df_job_cancel(df_client *df, const char *job_id, df_done_cb cb, void *ud, const char **err);
int64_t df_job_drain(df_client *df, const char *job_id, df_done_cb cb, void *ud, const char **err);

/* jobs.messages.list of a job, at least `min_importance` (NULL: JOB_MESSAGE_ERROR), first page (100): res->raw
 * holds {jobMessages: [{id, time, messageText, messageImportance}], nextPageToken?}. */
int64_t df_job_messages(df_client *df, const char *job_id, const char *min_importance, df_done_cb cb, void *ud,
                        const char **err);
/* A failed job's cause from such an answer: the "Workflow failed. Causes: ..." error message, else the last
 * error message; NULL when there is none. Caller frees. At most 4000 bytes. */
char *df_failure_cause(json_t *raw);

/* Abandons an outstanding call: its callback never runs. A launch abandoned mid-way may still have created its
 * job (look the name up before launching that name again). Returns 0, or -1 if `id` is not outstanding. */
int df_cancel(df_client *df, int64_t id);

/* Counters since df_new. */
typedef struct df_stats {
    int64_t requests;      /* HTTP requests sent */
    int64_t launch_posts;  /* launch requests sent (re-sends included) */
    int64_t lookups;       /* launch look-ups started */
    int64_t adopted;       /* launches that adopted an existing job */
    int64_t retries;       /* backoff re-sends */
    int64_t auth_refreshes; /* 401 -> refresh -> retry */
} df_stats;
df_stats df_get_stats(const df_client *df);
int df_pending(const df_client *df); /* calls outstanding */

/* What an answer was for, as df_parse_answer reads it. */
typedef enum {
    DF_ANSWER_JOB = 0,  /* jobs.get, cancel, drain: a Job */
    DF_ANSWER_LIST,     /* jobs.list: {jobs?, nextPageToken?} */
    DF_ANSWER_LAUNCH,   /* a launch: {job} */
    DF_ANSWER_VALIDATE, /* a validateOnly launch: {} (or {job}) */
} df_answer_kind;

/* How the client reads one HTTP answer (status, body, raw Retry-After or NULL) into a result, without what the
 * call then does with it (retries, look-ups, the 404 lag window). err is DF_OK (job or jobs filled),
 * DF_ERR_HTTP (Google's error fields, violations, retry delay; `now_ms` dates a Retry-After date) or
 * DF_ERR_BAD_RESPONSE. Pure: the calls above use it, tests and fuzzing call it directly. Caller frees with
 * df_result_free. */
df_result *df_parse_answer(df_answer_kind kind, long status, const char *body, size_t len, const char *retry_after,
                           int64_t now_ms);

/* The exact request df_launch sends, without sending it: {method, path, query?, body}. path is relative to the
 * base URL, with project and region percent-encoded ("/v1b3/projects/P/locations/R/flexTemplates:launch"); query
 * (classic only: gcsPath, validateOnly) holds the URL's query parameters before encoding; body is the JSON sent.
 * Pure. flags: DF_VALIDATE_ONLY. New reference; NULL when the request lacks a template, name, project or
 * region. This is the only place that knows Dataflow's launch shapes. */
json_t *df_launch_render(const launch_req *req, unsigned flags);
/* The inverse, for launch intents recorded before they were plain data: a rendered request plus the top-level
 * "project" and "region" those intents carried ({method, path, query?, body, project, region, jobName}). The
 * kind is read from the body (a launchParameter is flex), the template from containerSpecGcsPath or the query's
 * gcsPath. NULL when it is not of that shape. Caller frees with launch_free. */
launch_req *df_launch_parse(json_t *request);

#endif
