/* jobs_api: what the engine needs from Dataflow, as a small asynchronous interface (launch, get, find by
 * name, stop, poll), plus its implementation over the dataflow client. Tests plug in a scripted fake.
 * Uses: launch (the request), dataflow, http_client, gauth (the real implementation), config, jansson.
 * Must not: decide anything about runs or steps; it only carries requests and classifies answers. */
#ifndef SLUICE_JOBS_API_H
#define SLUICE_JOBS_API_H
#include <jansson.h>
#include <stdint.h>

#include "config.h"
#include "launch.h"

typedef enum {
    JA_OK = 0,       /* job holds the job */
    JA_NOT_FOUND,    /* get: no such job (after the API-lag window); find: no job of that name */
    JA_REJECTED,     /* a definitive refusal (e.g. 400 invalid parameters, 403): retrying the same request is futile */
    JA_UNKNOWN,      /* launch: the outcome could not be settled (the name must be looked up before re-sending) */
    JA_TRANSIENT,    /* anything a later retry may fix (5xx, 429 past the deadline, transport, auth) */
    JA_QUOTA,        /* launch: refused for quota or rate (quota_refused); nothing was created, so the same request
                      * may be sent again once capacity frees (retry_delay_ms: the server's hint, 0 when none) */
} ja_outcome;

typedef struct {
    ja_outcome outcome;
    long http_status;
    char *message;  /* for errors: Google's message, parameter violations appended verbatim */
    json_t *violations; /* a refused launch's parameterViolations [{parameter, description}] verbatim, or NULL */
    json_t *job;    /* the Job resource (id, name, currentState, labels, ...) when outcome is JA_OK */
    int already_terminated; /* stop: the job had already finished */
    int64_t retry_delay_ms; /* JA_QUOTA: the server's Retry-After / RetryInfo hint (0: none) */
} ja_result;

/* Every accepted call's callback runs exactly once: from poll(), or from free() for the calls still
 * outstanding then (with JA_TRANSIENT or JA_UNKNOWN). `r` is borrowed for the call. */
typedef void (*ja_cb)(void *ud, const ja_result *r);

typedef struct jobs_api jobs_api;
typedef struct {
    /* Launches the request (flex or classic, by its kind). Never blindly re-sends: the implementation looks the
     * name up on an unknown outcome and adopts an existing job (409 or found). */
    int (*launch)(jobs_api *api, const launch_req *req, ja_cb cb, void *ud);
    int (*get)(jobs_api *api, const char *project, const char *region, const char *job_id, ja_cb cb, void *ud);
    /* The newest job with exactly this name, active or terminated; JA_NOT_FOUND when none. */
    int (*find)(jobs_api *api, const char *project, const char *region, const char *job_name, ja_cb cb, void *ud);
    /* Cancels (drain = 0) or drains (drain = 1) a job. A job that already ended is JA_OK. */
    int (*stop)(jobs_api *api, const char *project, const char *region, const char *job_id, int drain, ja_cb cb,
                void *ud);
    /* Performs I/O for up to max_wait_ms and runs callbacks; returns the number of calls still outstanding. */
    int (*poll)(jobs_api *api, int max_wait_ms);
    void (*free)(jobs_api *api);
    /* Optional (NULL: not offered; the engine then records no cause). A failed job's cause from its job
     * messages (jobs.messages.list, JOB_MESSAGE_ERROR and up): JA_OK with `message` the cause (NULL when the job
     * has no error message), JA_NOT_FOUND, or JA_TRANSIENT. */
    int (*messages)(jobs_api *api, const char *project, const char *region, const char *job_id, ja_cb cb, void *ud);
} jobs_api_ops;

/* Told from poll() each time an attempt of an accepted call failed and the call will try again (so a call that
 * keeps failing can be shown before its callback runs): `ud` is the call's, `reason` why the attempt failed,
 * `failures` how many of its attempts failed so far, `delay_ms` until the next. */
typedef void (*ja_retry_fn)(void *hook_ud, void *ud, const char *reason, int failures, int64_t delay_ms);

struct jobs_api {
    const jobs_api_ops *ops;
    /* Optional, set by the caller before its first call (the engine does); an implementation that retries calls
     * by itself tells it, one that does not never calls it. */
    ja_retry_fn on_retry;
    void *on_retry_ud;
};

/* Options of the Dataflow-backed implementation. */
typedef struct {
    const char *base_url;        /* NULL: https://dataflow.googleapis.com */
    const char *credentials;     /* a credentials file; NULL: Application Default Credentials */
    const char *static_token;    /* use this bearer token (tests, demos); overrides credentials */
    int no_auth;                 /* send no Authorization header (emulator with auth off) */
    long timeout_ms;             /* per HTTP request; 0: 60 s */
    int max_connections;         /* 0: 64 */
} jobs_api_df_options;

/* Returns NULL with *err (caller frees) when credentials cannot be set up. */
jobs_api *jobs_api_df_new(const jobs_api_df_options *opts, char **err);

/* The project that the credentials of a jobs_api_df_new implementation name: a service-account key's project_id,
 * an authorized_user file's quota_project_id, or (ADC on Cloud Run, GCE, GKE) the metadata server's
 * project/project-id, fetched here, waiting up to timeout_ms. NULL when they name none (also for a static
 * token and no-auth); *from (may be NULL) says which credentials answered, for logs. Borrowed until the
 * jobs_api is freed. Call it before the engine starts: it runs the HTTP loop itself. */
const char *jobs_api_df_credentials_project(jobs_api *api, int timeout_ms, const char **from);

/* Asks Dataflow whether it would accept the launch, creating nothing (validateOnly): JA_OK when it would,
 * JA_REJECTED with its refusal (message, violations), JA_TRANSIENT when it could not be asked. For a jobs_api made
 * by jobs_api_df_new (used by `sluice preflight`); the callback runs from poll() as for the other calls. */
int jobs_api_df_validate(jobs_api *api, const launch_req *req, ja_cb cb, void *ud);

/* The default project of a command that launches (for workflows and steps that name none), in config_project's
 * order: cfg's --project, $SLUICE_PROJECT, then — only when `needed` (some launch step names no project), since it
 * may ask the metadata server — the credentials' (jobs_api_df_credentials_project, bounded by
 * CONFIG_PROJECT_LOOKUP_MS). Logged by config_default_project, which warns when there is none; not when nothing
 * needs one (!needed and neither --project nor $SLUICE_PROJECT given: NULL, no log). Borrowed; NULL when none. */
const char *jobs_api_df_default_project(jobs_api *api, const sluice_config *cfg, int needed);

void ja_result_clear(ja_result *r);
/* A recorded launch intent back as a launch request: the stored form (launch_from_json), or the REST request itself
 * ({method, path, query, body, project, region, jobName}) that versions before the request became plain data
 * recorded, read by dataflow's parser, so a run in flight across an upgrade resumes. NULL when `j` is neither.
 * Caller frees. */
launch_req *ja_launch_from_record(json_t *j);

#endif
