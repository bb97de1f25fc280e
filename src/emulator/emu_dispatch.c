/* emu_dispatch: owns deciding the answer to one complete request: routing by path and method, the per-method
 * fault dice (latency, 429/500/503, drops, answered-400 and timed-out launches), bearer-token auth for the
 * Dataflow methods, the launch log, request stats, and the call into the handler. Uses: emu.h, emu_dataflow,
 * emu_identity, emu_inspect, emu_http (answers). Must not: call into MHD beyond reading the request; it runs
 * with emu_g.lock held and returns the delay, emu_http parks the answer. */
#include "emu.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

static enum MHD_Result emu_collect_arg(void *cls, enum MHD_ValueKind kind, const char *key, const char *value)
{
    (void)kind;
    json_object_set_new((json_t *)cls, key, value ? json_string(value) : json_null());
    return MHD_YES;
}

/* Splits /v1b3/projects/{p}/locations/{r}/<rest> into cx; returns the method or M_UNROUTED, and sets
 * *allowed to the methods the path supports (for 405). */
static int emu_route_dataflow(struct emu_call *cx, const char *url, const char **allowed)
{
    const char *p = url + strlen("/v1b3/projects/");
    const char *slash = strchr(p, '/');
    *allowed = NULL;
    if (slash == NULL || slash == p || (size_t)(slash - p) >= sizeof cx->project) return M_UNROUTED;
    snprintf(cx->project, sizeof cx->project, "%.*s", (int)(slash - p), p);
    if (strncmp(slash, "/locations/", 11) != 0) return M_UNROUTED;
    const char *r = slash + 11;
    slash = strchr(r, '/');
    if (slash == NULL || slash == r || (size_t)(slash - r) >= sizeof cx->region) return M_UNROUTED;
    snprintf(cx->region, sizeof cx->region, "%.*s", (int)(slash - r), r);
    const char *rest = slash + 1;
    const char *m = cx->http_method;
    if (strcmp(rest, "flexTemplates:launch") == 0) {
        *allowed = "POST";
        return strcmp(m, "POST") == 0 ? M_FLEX_LAUNCH : M_UNROUTED;
    }
    if (strcmp(rest, "templates:launch") == 0) {
        *allowed = "POST";
        return strcmp(m, "POST") == 0 ? M_TEMPLATE_LAUNCH : M_UNROUTED;
    }
    if (strcmp(rest, "jobs") == 0) {
        *allowed = "GET";
        return strcmp(m, "GET") == 0 ? M_JOBS_LIST : M_UNROUTED;
    }
    const char *msgs = strncmp(rest, "jobs/", 5) == 0 ? strchr(rest + 5, '/') : NULL;
    if (msgs != NULL && msgs > rest + 5 && strcmp(msgs, "/messages") == 0 && (size_t)(msgs - rest - 5) < sizeof cx->jobid) {
        snprintf(cx->jobid, sizeof cx->jobid, "%.*s", (int)(msgs - rest - 5), rest + 5);
        *allowed = "GET";
        return strcmp(m, "GET") == 0 ? M_JOBS_MESSAGES : M_UNROUTED;
    }
    if (strncmp(rest, "jobs/", 5) == 0 && rest[5] != '\0' && strchr(rest + 5, '/') == NULL &&
        strlen(rest + 5) < sizeof cx->jobid) {
        snprintf(cx->jobid, sizeof cx->jobid, "%s", rest + 5);
        *allowed = "GET, PUT";
        if (strcmp(m, "GET") == 0) return M_JOBS_GET;
        if (strcmp(m, "PUT") == 0) return M_JOBS_UPDATE;
    }
    return M_UNROUTED;
}

static int emu_authorized(struct emu_call *cx)
{
    const char *h = MHD_lookup_connection_value(cx->conn, MHD_HEADER_KIND, "Authorization");
    if (h == NULL || strncasecmp(h, "Bearer ", 7) != 0) return 0;
    return emu_token_valid(h + 7);
}

#define EMU_METADATA_PREFIX "/computeMetadata/v1/"

void emu_call_outcome(struct emu_call *cx, const char *outcome)
{
    snprintf(cx->outcome, sizeof cx->outcome, "%s", outcome);
}

/* Sets cx->m to the API method of (url, method), or M_UNROUTED with *allowed naming the methods the path
 * supports (NULL when the path is unknown). */
static void emu_route(struct emu_call *cx, const char *url, const char **allowed)
{
    const char *method = cx->http_method;
    *allowed = NULL;
    if (strncmp(url, "/v1b3/projects/", 15) == 0) {
        cx->m = emu_route_dataflow(cx, url, allowed);
    } else if (strcmp(url, "/token") == 0) {
        *allowed = "POST";
        if (strcmp(method, "POST") == 0) cx->m = M_TOKEN;
    } else if (strncmp(url, EMU_METADATA_PREFIX, strlen(EMU_METADATA_PREFIX)) == 0) {
        *allowed = "GET";
        if (strcmp(method, "GET") == 0) cx->m = M_METADATA;
    } else if (strcmp(url, "/oauth2/v3/certs") == 0) {
        *allowed = "GET";
        if (strcmp(method, "GET") == 0) cx->m = M_JWKS;
    }
}

/* Appends the launch request to emu_g.launches (cx->entry borrows it, to be completed by emu_record) and
 * counts it by job name. */
static void emu_launch_record(struct emu_call *cx)
{
    struct emu_req *q = cx->q;
    char tm[64];
    emu_fmt_time(emu_now_ms(), 3, tm, sizeof tm);
    json_t *query = json_object();
    MHD_get_connection_values(q->conn, MHD_GET_ARGUMENT_KIND, emu_collect_arg, query);
    json_t *parsed = q->body.len ? json_loadb(q->body.data, q->body.len, 0, NULL) : json_object();
    json_t *body = parsed ? parsed : json_stringn(q->body.data ? q->body.data : "", q->body.len);
    if (body == NULL) body = json_string("<not UTF-8>");
    cx->entry = json_pack("{s:I, s:s, s:s, s:s, s:s, s:o, s:o}", "seq",
                          (json_int_t)json_array_size(emu_g.launches) + 1, "time", tm, "method",
                          emu_method_names[cx->m], "project", cx->project, "location", cx->region, "query", query,
                          "body", body);
    json_array_append_new(emu_g.launches, cx->entry);
    json_t *lp = cx->m == M_FLEX_LAUNCH ? json_object_get(parsed, "launchParameter") : parsed;
    const char *jn = json_string_value(json_object_get(lp, "jobName"));
    emu_stat_add("launches_by_name", jn ? jn : "(none)", NULL, 1);
}

/* Answers before the handler runs when the body is too large, auth fails or the fault dice say so. Returns
 * 1 when it answered (or dropped), 0 when the handler should run. */
static int emu_refused(struct emu_call *cx, const struct emu_fault *f, double r_fault)
{
    struct emu_resp *r = &cx->q->resp;
    if (cx->q->too_large) {
        emu_resp_gerror(r, 413, "INVALID_ARGUMENT", 1, 0, NULL,
                        "Request payload size exceeds the limit: %d bytes.", emu_g.cfg.max_body_bytes);
        emu_call_outcome(cx, "rejected");
    } else if (cx->m <= M_DATAFLOW_LAST && emu_g.cfg.auth && !emu_authorized(cx)) {
        emu_resp_gerror(r, 401, "UNAUTHENTICATED", 1, 0, NULL,
                        "Request had invalid authentication credentials. Expected OAuth 2 access token, login "
                        "cookie or other valid authentication credential. See "
                        "https://developers.google.com/identity/sign-in/web/devconsole-project.");
        emu_resp_header(r, "WWW-Authenticate", "Bearer realm=\"https://accounts.google.com/\", error=\"invalid_token\"");
        emu_call_outcome(cx, "unauthenticated");
    } else if (r_fault < f->rate_429) {
        char delay_s[32];
        snprintf(delay_s, sizeof delay_s, "%ds", f->retry_delay_s);
        emu_resp_gerror(r, 429, "RESOURCE_EXHAUSTED", 0, 0,
                        json_pack("[{s:s, s:s}]", "@type", "type.googleapis.com/google.rpc.RetryInfo", "retryDelay",
                                  delay_s),
                        "Quota exceeded for quota metric 'Job management requests' and limit 'Job management "
                        "requests per minute per user'.");
        emu_call_outcome(cx, "fault_429");
    } else if (r_fault < f->rate_429 + f->rate_500) {
        emu_resp_gerror(r, 500, "INTERNAL", 1, 0, NULL, "Internal error encountered.");
        emu_call_outcome(cx, "fault_500");
    } else if (r_fault < f->rate_429 + f->rate_500 + f->rate_503) {
        emu_resp_gerror(r, 503, "UNAVAILABLE", 1, 0, NULL, "The service is currently unavailable.");
        emu_call_outcome(cx, "fault_503");
    } else if (r_fault < f->rate_429 + f->rate_500 + f->rate_503 + f->drop_rate) {
        r->drop = 1;
        emu_call_outcome(cx, "dropped");
    } else {
        return 0;
    }
    return 1;
}

static void emu_handle(struct emu_call *cx, const char *url)
{
    switch (cx->m) {
    case M_FLEX_LAUNCH: emu_launch(cx, 1); break;
    case M_TEMPLATE_LAUNCH: emu_launch(cx, 0); break;
    case M_JOBS_GET: emu_jobs_get(cx); break;
    case M_JOBS_LIST: emu_jobs_list(cx); break;
    case M_JOBS_UPDATE: emu_jobs_update(cx); break;
    case M_JOBS_MESSAGES: emu_jobs_messages(cx); break;
    case M_TOKEN: emu_token(cx); break;
    case M_METADATA: emu_metadata(cx, url + strlen(EMU_METADATA_PREFIX)); break;
    case M_JWKS: emu_jwks(cx); break;
    default: break;
    }
}

/* The traps of a launch that did create a job: the caller is told 400, or the answer comes late (and maybe
 * never). Returns the extra delay. */
static int64_t emu_launch_trap(struct emu_call *cx, const struct emu_fault *f, double r_trap)
{
    struct emu_resp *r = &cx->q->resp;
    if (r_trap < f->launched_400_rate) {
        /* The job exists, yet the caller is told its parameters were invalid. */
        emu_invalid_params(r, json_pack("[{s:s, s:s}]", "parameter", "input", "description",
                                        "Required parameter is missing."));
        emu_call_outcome(cx, "created_answered_400");
    } else if (r_trap < f->launched_400_rate + f->launched_timeout_rate) {
        if (f->launched_timeout_drop) r->drop = 1;
        emu_call_outcome(cx, "created_timeout");
        return f->launched_timeout_ms;
    }
    return 0;
}

/* Counts the answer by method and status, and completes the launch record. */
static void emu_record(struct emu_call *cx)
{
    struct emu_resp *r = &cx->q->resp;
    char code[16];
    if (r->drop) snprintf(code, sizeof code, "dropped");
    else snprintf(code, sizeof code, "%d", r->status);
    emu_stat_add("requests", emu_method_names[cx->m], code, 1);
    if (cx->entry != NULL) {
        json_object_set_new(cx->entry, "status", r->drop ? json_null() : json_integer(r->status));
        json_object_set_new(cx->entry, "outcome", json_string(cx->outcome[0] ? cx->outcome : "rejected"));
    }
}

/* Decides the answer for a complete request (lock held). Returns the delay in ms before answering. */
int64_t emu_dispatch(struct emu_req *q, const char *url, const char *method)
{
    struct emu_call cx;
    memset(&cx, 0, sizeof cx);
    cx.q = q;
    cx.conn = q->conn;
    cx.http_method = method;
    cx.m = M_UNROUTED;
    struct emu_resp *r = &q->resp;
    const char *allowed = NULL;
    int64_t delay = 0;

    if (strncmp(url, "/emulator/", 10) == 0) {
        if (q->too_large) emu_resp_gerror(r, 413, "INVALID_ARGUMENT", 1, 0, NULL, "Request payload too large.");
        else emu_control(&cx, url + 10);
        return 0;
    }
    emu_route(&cx, url, &allowed);
    if (cx.m == M_UNROUTED && allowed != NULL) {
        emu_resp_gerror(r, 405, "INVALID_ARGUMENT", 1, 0, NULL, "Method %s is not allowed for %.200s.", method, url);
        emu_resp_header(r, "Allow", allowed);
    } else if (cx.m == M_UNROUTED) {
        emu_resp_gerror(r, 404, "NOT_FOUND", 0, 0, NULL, "The requested URL %.300s was not found on this server.", url);
    } else {
        emu_jobs_advance(emu_now_ms());
        const struct emu_fault *f = &emu_g.cfg.faults[cx.m];
        /* Always three draws per request so the sequence replays whatever the rates are. */
        double r_fault = emu_rng_unit(&emu_g.rng[cx.m]);
        double r_slow = emu_rng_unit(&emu_g.rng[cx.m]);
        double r_trap = emu_rng_unit(&emu_g.rng[cx.m]);
        delay = f->latency_ms + (r_slow < f->slow_rate ? f->slow_ms : 0);
        int launch = cx.m == M_FLEX_LAUNCH || cx.m == M_TEMPLATE_LAUNCH;
        if (launch) emu_launch_record(&cx);
        if (!emu_refused(&cx, f, r_fault)) {
            emu_handle(&cx, url);
            if (launch && cx.created) delay += emu_launch_trap(&cx, f, r_trap);
        }
        emu_record(&cx);
    }
    if (r->status == 0 && !r->drop) emu_resp_gerror(r, 500, "INTERNAL", 1, 0, NULL, "Internal error encountered.");
    return delay;
}
