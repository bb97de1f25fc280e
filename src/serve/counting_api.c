/* counting_api: Dataflow calls counted for /metrics around another jobs_api.
 * Uses: jobs_api, launch, metrics, util. Must not: change, retry or reorder calls. */
#include "counting_api.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mem.h"
#include "metrics.h"
#include "util.h"

typedef struct {
    jobs_api base;
    jobs_api *inner;
} counting_api;

typedef struct {
    ja_cb cb;
    void *ud;
    const char *method;
    int64_t t0;
    char workflow[128], step[128]; /* launches: metric labels (the request's; "unknown" when it has none) */
} counted_call;

static const char *const ja_outcome_names[] = {"ok", "not_found", "rejected", "unknown", "transient", "quota"};

static void counted_cb(void *ud, const ja_result *r)
{
    counted_call *c = ud;
    const char *outcome = (unsigned)r->outcome < 6 ? ja_outcome_names[r->outcome] : "other";
    char labels[400];
    snprintf(labels, sizeof labels, "method=\"%s\",outcome=\"%s\",code=\"%ld\"", c->method, outcome, r->http_status);
    metrics_add("sluice_dataflow_calls_total", labels, 1);
    snprintf(labels, sizeof labels, "method=\"%s\"", c->method);
    metrics_observe("sluice_dataflow_call_seconds", labels, (double)(util_mono_ms() - c->t0) / 1000.0);
    if (strcmp(c->method, "launch") == 0) {
        /* Step names are the workflow author's text: escaped, or a quote and a newline in one would add lines. */
        char wf[160], step[160];
        snprintf(labels, sizeof labels, "workflow=\"%s\",step=\"%s\",outcome=\"%s\"",
                 metrics_escape(c->workflow, wf, sizeof wf), metrics_escape(c->step, step, sizeof step), outcome);
        metrics_add("sluice_launches_total", labels, 1);
    }
    c->cb(c->ud, r);
    free(c);
}

static counted_call *counted_new(const char *method, ja_cb cb, void *ud)
{
    counted_call *c = xcalloc(1, sizeof *c);
    c->cb = cb;
    c->ud = ud;
    c->method = method;
    c->t0 = util_mono_ms();
    return c;
}

static int ca_launch(jobs_api *api, const launch_req *req, ja_cb cb, void *ud)
{
    counting_api *a = (counting_api *)api;
    counted_call *c = counted_new("launch", cb, ud);
    if (c == NULL) return -1;
    snprintf(c->workflow, sizeof c->workflow, "%s", req->workflow ? req->workflow : "unknown");
    snprintf(c->step, sizeof c->step, "%s", req->step ? req->step : "unknown");
    int rc = a->inner->ops->launch(a->inner, req, counted_cb, c);
    if (rc != 0) free(c);
    return rc;
}

static int ca_get(jobs_api *api, const char *project, const char *region, const char *job_id, ja_cb cb, void *ud)
{
    counting_api *a = (counting_api *)api;
    counted_call *c = counted_new("get", cb, ud);
    if (c == NULL) return -1;
    int rc = a->inner->ops->get(a->inner, project, region, job_id, counted_cb, c);
    if (rc != 0) free(c);
    return rc;
}

static int ca_find(jobs_api *api, const char *project, const char *region, const char *job_name, ja_cb cb, void *ud)
{
    counting_api *a = (counting_api *)api;
    counted_call *c = counted_new("find", cb, ud);
    if (c == NULL) return -1;
    int rc = a->inner->ops->find(a->inner, project, region, job_name, counted_cb, c);
    if (rc != 0) free(c);
    return rc;
}

static int ca_stop(jobs_api *api, const char *project, const char *region, const char *job_id, int drain, ja_cb cb,
                   void *ud)
{
    counting_api *a = (counting_api *)api;
    counted_call *c = counted_new(drain ? "drain" : "cancel", cb, ud);
    if (c == NULL) return -1;
    int rc = a->inner->ops->stop(a->inner, project, region, job_id, drain, counted_cb, c);
    if (rc != 0) free(c);
    return rc;
}

static int ca_messages(jobs_api *api, const char *project, const char *region, const char *job_id, ja_cb cb,
                       void *ud)
{
    counting_api *a = (counting_api *)api;
    if (a->inner->ops->messages == NULL) return -1;
    counted_call *c = counted_new("messages", cb, ud);
    if (c == NULL) return -1;
    int rc = a->inner->ops->messages(a->inner, project, region, job_id, counted_cb, c);
    if (rc != 0) free(c);
    return rc;
}

static int ca_poll(jobs_api *api, int max_wait_ms)
{
    counting_api *a = (counting_api *)api;
    return a->inner->ops->poll(a->inner, max_wait_ms);
}

static void ca_free(jobs_api *api)
{
    counting_api *a = (counting_api *)api;
    a->inner->ops->free(a->inner); /* answers what is outstanding through counted_cb, which frees each call */
    free(a);
}

/* The inner api's retry notice, passed on with the caller's ud. */
static void ca_on_retry(void *hook_ud, void *ud, const char *reason, int failures, int64_t delay_ms)
{
    counting_api *a = hook_ud;
    const counted_call *c = ud;
    if (a->base.on_retry != NULL && c != NULL) a->base.on_retry(a->base.on_retry_ud, c->ud, reason, failures, delay_ms);
}

static const jobs_api_ops counting_ops = {ca_launch, ca_get, ca_find, ca_stop, ca_poll, ca_free, ca_messages};

jobs_api *counting_api_new(jobs_api *inner)
{
    counting_api *a = xcalloc(1, sizeof *a);
    a->base.ops = &counting_ops;
    a->inner = inner;
    inner->on_retry = ca_on_retry;
    inner->on_retry_ud = a;
    return &a->base;
}
