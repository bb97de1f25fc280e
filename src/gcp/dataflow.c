/* dataflow: Dataflow v1b3 calls as asynchronous operations (df_op) on the caller's hc loop; launch safety
 * (look-up before re-send, adopt on 409 / 400-but-launched / unknown outcome), retries, the jobs.get lag window.
 * Uses: http_client, gauth, retry, jansson, log. Must not: log tokens or request bodies' credentials; decide
 * what a job state means for a workflow. Over 900 lines because it is the one owner of Dataflow's REST format:
 * rendering, parsing and the launch-safety protocol depend on each other and are kept together. */
#include "dataflow.h"

#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "job_state.h"
#include "launch.h"
#include "log.h"
#include "mem.h"
#include "quota.h"
#include "util.h"

#define DF_DEFAULT_BASE "https://dataflow.googleapis.com"
#define DF_MAX_PAGES 10000

typedef enum { K_LAUNCH, K_GET, K_LIST, K_LIST_ALL, K_UPDATE, K_MESSAGES } op_kind;
/* Why a launch is looking its job name up. */
typedef enum { LK_NONE, LK_UNKNOWN, LK_EXISTS, LK_400, LK_BADRESP } lookup_reason;

/* One call in flight. Owned by the client (linked in df->ops) from creation until op_finish hands its result to
 * the callback; exactly one of hc_id / timer_id / ga_waiter / child is pending at any time. */
typedef struct df_op {
    df_client *df;
    int64_t id;
    op_kind kind;
    char *method, *url, *body;
    int idempotent;
    unsigned flags;
    retry_state rs;
    int auth_retried;
    int64_t hc_id, timer_id, ga_waiter, child;
    char *token; /* the token the current attempt carries (for ga_invalidate); wiped on free */
    df_done_cb cb;
    void *ud;
    int internal; /* a look-up child: its callback belongs to the parent op */
    int attempts;
    df_result *deferred; /* result to deliver from a 0 ms timer */
    /* launch */
    char *job_name;
    int64_t intent_ms;
    int64_t deadline; /* hc_now_ms after which nothing of the launch may still be in flight (0: none) */
    lookup_reason lk;
    int lookup_phase; /* 0: ACTIVE, 1: TERMINATED */
    df_result *held;  /* the failure that triggered the look-up */
    /* get */
    int64_t lag_start;
    int lag_tries;
    /* list_all */
    char *list_url; /* without pageToken */
    df_result *acc;
    int pages;
    struct df_op *prev, *next;
} df_op;

struct df_client {
    hc_client *hc;
    ga_auth *ga;
    char *base, *project, *region;
    retry_policy policy, launch_policy;
    int64_t lag_window_ms, skew_ms;
    long timeout_ms;
    int64_t (*wall_ms)(void *);
    void *wall_ud;
    retry_rng_fn rng;
    void *rng_ud;
    df_op *ops;
    int nops;
    int64_t next_id;
    df_stats st;
    void (*on_retry)(void *hook_ud, void *call_ud, const struct df_result *r, int failures, int64_t delay_ms);
    void *hook_ud;
    /* the WARNING lines about failed attempts: when the next may be logged, and how many were held back */
    int64_t warn_interval_ms, warn_next_ms;
    int warn_held;
    int launch_quota_report;
};

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


static int64_t default_wall(void *ud)
{
    (void)ud;
    return util_now_ms();
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

static df_result *result_new(df_err err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static df_result *result_new(df_err err, const char *fmt, ...)
{
    df_result *r = xcalloc(1, sizeof *r);
    if (r == NULL) return NULL;
    r->err = err;
    r->retry_delay_ms = -1;
    if (fmt) {
        va_list ap;
        va_start(ap, fmt);
        if (vasprintf(&r->message, fmt, ap) < 0) r->message = NULL;
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
            if (nv == NULL) continue;
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
 * by parse_answer) or DF_ERR_HTTP with Google's error fields. `now_ms` (unix ms) dates a Retry-After given as a
 * date. NULL only when out of memory. */
static df_result *result_from_http(long status, const char *body, size_t len, const char *retry_after, int64_t now_ms)
{
    df_result *r = result_new(DF_OK, NULL);
    if (r == NULL) return NULL;
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

/* Turns an HTTP outcome into a result: DF_OK (2xx; body parsed later per call), DF_ERR_HTTP or
 * DF_ERR_TRANSPORT. */
static df_result *result_from_resp(df_client *df, const hc_resp *resp)
{
    if (resp->error == HC_OK)
        return result_from_http(resp->status, resp->body, resp->body_len, resp->retry_after,
                                resp->retry_after ? df->wall_ms(df->wall_ud) : 0);
    df_result *r = result_new(DF_ERR_TRANSPORT, NULL);
    if (r == NULL) return NULL;
    r->transport = resp->error;
    r->message = util_printf("%s: %s", hc_error_name(resp->error), resp->error_text);
    return r;
}

/* --- URL building --- */

static char *pct(const char *s)
{
    static const char hex[] = "0123456789ABCDEF";
    size_t n = strlen(s);
    char *o = xmalloc(n * 3 + 1), *p = o;
    if (o == NULL) return NULL;
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (isalnum(c) || c == '-' || c == '.' || c == '_' || c == '~') {
            *p++ = (char)c;
        } else {
            *p++ = '%';
            *p++ = hex[c >> 4];
            *p++ = hex[c & 15];
        }
    }
    *p = '\0';
    return o;
}

/* base/v1b3/projects/P/locations/R<suffix>; caller frees. */
static char *loc_url(df_client *df, const char *suffix)
{
    return util_printf("%s/v1b3/projects/%s/locations/%s%s", df->base, df->project, df->region, suffix);
}

static char *job_url(df_client *df, const char *job_id, const char *query)
{
    char *id = pct(job_id), *suffix = id ? util_printf("/jobs/%s%s", id, query ? query : "") : NULL;
    char *u = suffix ? loc_url(df, suffix) : NULL;
    free(id);
    free(suffix);
    return u;
}

static const char *filter_name(df_filter f)
{
    switch (f) {
    case DF_FILTER_ACTIVE: return "ACTIVE";
    case DF_FILTER_TERMINATED: return "TERMINATED";
    case DF_FILTER_ALL: return "ALL";
    case DF_FILTER_UNSET: break;
    }
    return NULL;
}

static char *list_url(df_client *df, const df_list_query *q, const char *page_token)
{
    char query[64] = "";
    char *name = q->name ? pct(q->name) : NULL, *tok = page_token ? pct(page_token) : NULL;
    if (q->page_size > 0) snprintf(query, sizeof query, "&pageSize=%d", q->page_size);
    const char *f = filter_name(q->filter);
    char *suffix = util_printf("/jobs?%s%s%s%s%s%s%s", f ? "filter=" : "", f ? f : "", name ? "&name=" : "",
                             name ? name : "", query, tok ? "&pageToken=" : "", tok ? tok : "");
    free(name);
    free(tok);
    if (suffix == NULL) return NULL;
    /* Tidy "jobs?&..." and a trailing "?" (no filter, no parameters). */
    char *qm = strchr(suffix, '?');
    if (qm[1] == '&') memmove(qm + 1, qm + 2, strlen(qm + 2) + 1);
    if (qm[1] == '\0') *qm = '\0';
    char *u = loc_url(df, suffix);
    free(suffix);
    return u;
}

/* --- the op machinery --- */

df_client *df_new(hc_client *hc, ga_auth *ga, const df_options *o, const char **err)
{
    const char *project = o && o->project ? o->project : (ga ? ga_project_id(ga) : NULL);
    if (hc == NULL || ga == NULL) {
        *err = "df_new needs an http client and credentials";
        return NULL;
    }
    if (project == NULL || project[0] == '\0' || o == NULL || o->region == NULL || o->region[0] == '\0') {
        *err = "df_new needs a project and a region";
        return NULL;
    }
    df_client *df = xcalloc(1, sizeof *df);
    if (df == NULL) {
        *err = "out of memory";
        return NULL;
    }
    df->hc = hc;
    df->ga = ga;
    const char *base = o->base_url ? o->base_url : DF_DEFAULT_BASE;
    size_t bl = strlen(base);
    while (bl > 0 && base[bl - 1] == '/') bl--;
    df->base = xstrndup(base, bl);
    df->project = pct(project);
    df->region = pct(o->region);
    df->policy = o->policy ? *o->policy : retry_policy_default();
    df->launch_policy = o->launch_policy ? *o->launch_policy : retry_policy_default();
    df->lag_window_ms = o->lag_window_ms == 0 ? 60000 : o->lag_window_ms;
    df->launch_quota_report = o->launch_quota_report;
    df->skew_ms = o->adopt_skew_ms > 0 ? o->adopt_skew_ms : 10000;
    df->timeout_ms = o->timeout_ms > 0 ? o->timeout_ms : 60000;
    df->wall_ms = o->wall_ms ? o->wall_ms : default_wall;
    df->wall_ud = o->wall_ud;
    df->rng = o->rng ? o->rng : retry_rng_default;
    df->rng_ud = o->rng_ud;
    df->on_retry = o->on_retry;
    df->hook_ud = o->hook_ud;
    df->warn_interval_ms = o->warn_interval_ms > 0 ? o->warn_interval_ms : 30000;
    df->next_id = 1;
    if (df->base == NULL || df->project == NULL || df->region == NULL) {
        df_free(df);
        *err = "out of memory";
        return NULL;
    }
    return df;
}

df_stats df_get_stats(const df_client *df) { return df->st; }
int df_pending(const df_client *df) { return df->nops; }

static void op_free(df_op *op)
{
    free(op->method);
    free(op->url);
    free(op->body);
    if (op->token) explicit_bzero(op->token, strlen(op->token));
    free(op->token);
    free(op->job_name);
    free(op->list_url);
    df_result_free(op->held);
    df_result_free(op->acc);
    df_result_free(op->deferred);
    free(op);
}

static void op_unlink(df_op *op)
{
    df_client *df = op->df;
    if (op->prev) op->prev->next = op->next;
    else df->ops = op->next;
    if (op->next) op->next->prev = op->prev;
    df->nops--;
}

/* Cancels whatever the op is waiting for (an HTTP request, a timer, a token, a look-up child). */
static void op_abort_pending(df_op *op)
{
    df_client *df = op->df;
    if (op->hc_id > 0) hc_cancel(df->hc, op->hc_id);
    if (op->timer_id > 0) hc_timer_cancel(df->hc, op->timer_id);
    if (op->ga_waiter > 0) ga_cancel(df->ga, op->ga_waiter);
    op->hc_id = op->timer_id = op->ga_waiter = 0;
}

static df_op *op_find(df_client *df, int64_t id)
{
    for (df_op *op = df->ops; op; op = op->next)
        if (op->id == id) return op;
    return NULL;
}

/* Unlinks and frees an op and its look-up child (if any) without running any callback. */
static void op_discard(df_op *op)
{
    df_client *df = op->df;
    if (op->child > 0) {
        df_op *c = op_find(df, op->child);
        if (c) op_discard(c);
    }
    op_unlink(op);
    op_abort_pending(op);
    op_free(op);
}

int df_cancel(df_client *df, int64_t id)
{
    df_op *op = op_find(df, id);
    if (op == NULL || op->internal) return -1;
    op_discard(op);
    return 0;
}

void df_free(df_client *df)
{
    if (df == NULL) return;
    while (df->ops) {
        df_op *op = df->ops;
        op_unlink(op);
        op_abort_pending(op);
        if (!op->internal) {
            df_result *r = result_new(DF_ERR_CANCELLED, "cancelled: the client was freed");
            r->transport = HC_ERR_CANCELLED;
            op->cb(op->ud, r);
        }
        op_free(op);
    }
    free(df->base);
    free(df->project);
    free(df->region);
    free(df);
}

/* Delivers r (never NULL: allocation failures become a static-less cancelled result) and frees the op. */
static void op_finish(df_op *op, df_result *r)
{
    if (r == NULL) r = result_new(DF_ERR_TRANSPORT, "out of memory");
    if (r) r->attempts += op->attempts;
    op_unlink(op);
    op_abort_pending(op);
    df_done_cb cb = op->cb;
    void *ud = op->ud;
    op_free(op);
    cb(ud, r);
}

static void finish_timer(hc_client *hc, void *ud)
{
    (void)hc;
    df_op *op = ud;
    op->timer_id = 0;
    df_result *r = op->deferred;
    op->deferred = NULL;
    op_finish(op, r);
}

/* Finishes from a 0 ms timer: used where finishing now would free the op under a caller's feet. */
static void op_finish_later(df_op *op, df_result *r)
{
    df_result_free(op->deferred);
    op->deferred = r;
    op->timer_id = hc_timer_add(op->df->hc, 0, finish_timer, op);
    if (op->timer_id < 0) {
        op->timer_id = 0;
        log_error("dataflow: cannot arm a timer; call %lld is stuck", (long long)op->id);
    }
}

static void op_send(df_op *op);

static void resend_timer(hc_client *hc, void *ud)
{
    (void)hc;
    df_op *op = ud;
    op->timer_id = 0;
    op_send(op);
}

/* An attempt of `op` failed with `r` and will be retried after delay_ms: logged at WARNING with its reason (the
 * first at once, then at most one line per warn_interval_ms for this client, with the count held back since: a
 * Dataflow that cannot be reached must not look like a quiet wait, nor flood the log), and told to the caller's
 * on_retry hook with the ud the call was started with (a look-up's is its launch's). */
static void report_retry(df_op *op, const df_result *r, int64_t now, int64_t delay)
{
    df_client *df = op->df;
    df_op *root = op;
    while (root->internal && root->ud != NULL) root = root->ud;
    int failures = op->rs.attempts;
    const char *why = r->message ? r->message : df_err_name(r->err);
    if (now >= df->warn_next_ms) {
        char what[300], status[32] = "", held[96] = "";
        if (root->kind == K_LAUNCH && root->job_name != NULL)
            snprintf(what, sizeof what, "%s of %s", op == root ? "launch" : "look-up for the launch", root->job_name);
        else
            snprintf(what, sizeof what, "%s %s", op->method, op->url);
        if (r->http_status) snprintf(status, sizeof status, " (HTTP %ld)", r->http_status);
        if (df->warn_held > 0)
            snprintf(held, sizeof held, "; %d more failed attempts not logged in the last %lld s", df->warn_held,
                     (long long)(df->warn_interval_ms / 1000));
        log_warn("dataflow: %s failed%s: %s; retrying in %.1f s (%d failed so far)%s", what, status, why,
                 (double)delay / 1000.0, failures, held);
        df->warn_next_ms = now + df->warn_interval_ms;
        df->warn_held = 0;
    } else {
        df->warn_held++;
    }
    if (df->on_retry != NULL) df->on_retry(df->hook_ud, root->ud, r, failures, delay);
}

/* Re-sends after the policy's backoff (or the server's hint), or finishes with r when the policy is spent. */
static void op_backoff(df_op *op, df_result *r)
{
    int64_t delay = 0;
    int64_t now = hc_now_ms(op->df->hc);
    if (retry_next(&op->rs, now, r->retry_delay_ms, &delay) && (op->deadline == 0 || now + delay < op->deadline)) {
        op->df->st.retries++;
        report_retry(op, r, now, delay);
        df_result_free(r);
        op->timer_id = hc_timer_add(op->df->hc, delay, resend_timer, op);
        if (op->timer_id > 0) return;
        op->timer_id = 0;
        r = result_new(DF_ERR_TRANSPORT, "cannot arm a retry timer");
    }
    op_finish(op, r);
}

static retry_transport to_rt(hc_error e)
{
    switch (e) {
    case HC_OK: return RETRY_T_NONE;
    case HC_ERR_CONNECT: return RETRY_T_CONNECT;
    case HC_ERR_TIMEOUT: return RETRY_T_TIMEOUT;
    case HC_ERR_RESET: return RETRY_T_RESET;
    default: return RETRY_T_OTHER;
    }
}

static df_op *op_new(df_client *df, op_kind kind, const char *method, char *url, char *body, int idempotent,
                     df_done_cb cb, void *ud)
{
    df_op *op = xcalloc(1, sizeof *op);
    if (op == NULL || url == NULL) {
        free(op);
        free(url);
        free(body);
        return NULL;
    }
    op->df = df;
    op->id = df->next_id++;
    op->kind = kind;
    op->method = xstrdup(method);
    op->url = url;
    op->body = body;
    op->idempotent = idempotent;
    op->cb = cb;
    op->ud = ud;
    retry_begin(&op->rs, idempotent ? &df->policy : &df->launch_policy, hc_now_ms(df->hc), df->rng, df->rng_ud);
    op->next = df->ops;
    if (df->ops) df->ops->prev = op;
    df->ops = op;
    df->nops++;
    return op;
}

/* --- look-ups (launch safety) --- */

static int64_t start_list_all(df_client *df, const df_list_query *q, df_done_cb cb, void *ud, int internal);

static int64_t parse_rfc3339_ms(const char *s)
{
    if (s == NULL) return -1;
    struct tm tm;
    memset(&tm, 0, sizeof tm);
    int frac_len = 0;
    const char *p = strptime(s, "%Y-%m-%dT%H:%M:%S", &tm);
    if (p == NULL) return -1;
    int64_t ms = 0;
    if (*p == '.') {
        p++;
        while (isdigit((unsigned char)*p)) {
            if (frac_len < 3) ms = ms * 10 + (*p - '0');
            frac_len++;
            p++;
        }
        for (int i = frac_len; i < 3; i++) ms *= 10;
    }
    int64_t off = 0;
    if (*p == '+' || *p == '-') {
        int hh = 0, mm = 0;
        if (sscanf(p + 1, "%2d:%2d", &hh, &mm) != 2) return -1;
        off = (int64_t)(hh * 60 + mm) * 60000 * (*p == '+' ? 1 : -1);
    } else if (*p != 'Z' && *p != 'z') {
        return -1;
    }
    return (int64_t)timegm(&tm) * 1000 + ms - off;
}

static void on_lookup(void *ud, df_result *lr);

static void lookup_start(df_op *op)
{
    df_list_query q = {.filter = op->lookup_phase == 0 ? DF_FILTER_ACTIVE : DF_FILTER_TERMINATED,
                       .name = op->job_name};
    int64_t id = start_list_all(op->df, &q, on_lookup, op, 1);
    if (id < 0) {
        df_result *r = op->held;
        op->held = NULL;
        op_finish(op, r);
        return;
    }
    op->child = id;
}

/* Enters the look-up for `why`, keeping r (the failure) to report if the look-up finds nothing. */
static void lookup(df_op *op, lookup_reason why, df_result *r)
{
    df_result_free(op->held);
    op->held = r;
    op->lk = why;
    op->lookup_phase = 0;
    op->df->st.lookups++;
    log_info("dataflow: launch of %s answered %s; looking the name up before anything else", op->job_name,
             r->message ? r->message : df_err_name(r->err));
    lookup_start(op);
}

static void on_lookup(void *ud, df_result *lr)
{
    df_op *op = ud;
    df_client *df = op->df;
    op->child = 0;
    op->attempts += lr->attempts;
    df_result *held = op->held;
    op->held = NULL;
    if (lr->err != DF_OK) {
        /* The look-up itself failed: we cannot tell whether the job exists, so never re-send. */
        if (op->lk == LK_UNKNOWN || op->lk == LK_BADRESP) {
            char *m = util_printf("launch outcome unknown (%s) and the job-name look-up failed (%s)",
                                held->message ? held->message : df_err_name(held->err),
                                lr->message ? lr->message : df_err_name(lr->err));
            free(held->message);
            held->message = m;
            held->err = DF_ERR_UNKNOWN_OUTCOME;
        }
        df_result_free(lr);
        op_finish(op, held);
        return;
    }
    /* Newest matching job first: the API lists newest first, but do not rely on it. */
    df_job *found = NULL;
    int64_t found_ct = -1;
    for (size_t i = 0; i < lr->n_jobs; i++) {
        df_job *j = &lr->jobs[i];
        if (j->name == NULL || strcmp(j->name, op->job_name) != 0) continue;
        int64_t ct = parse_rfc3339_ms(j->create_time);
        /* A terminated job is ours only if created after our intent (an older run's job is not). After a 400
         * the same holds for active jobs: a job that predates the launch cannot be this launch's. */
        int must_be_recent = op->lookup_phase == 1 || op->lk == LK_400;
        if (must_be_recent && (ct < 0 || ct < op->intent_ms - df->skew_ms)) continue;
        if (found == NULL || ct > found_ct) {
            found = j;
            found_ct = ct;
        }
    }
    if (found) {
        df_result *r = result_new(DF_OK, NULL);
        r->http_status = 200;
        r->adopted = 1;
        r->job = xcalloc(1, sizeof *r->job);
        *r->job = *found; /* steal */
        memset(found, 0, sizeof *found);
        df->st.adopted++;
        log_info("dataflow: adopted existing job %s (%s) for launch of %s", r->job->id,
                 r->job->current_state ? r->job->current_state : "state unknown", op->job_name);
        df_result_free(lr);
        df_result_free(held);
        op_finish(op, r);
        return;
    }
    df_result_free(lr);
    if (op->lookup_phase == 0) {
        op->lookup_phase = 1; /* a very fast job may already have finished */
        op->held = held;
        lookup_start(op);
        return;
    }
    switch (op->lk) {
    case LK_UNKNOWN:
    case LK_EXISTS:
        /* Verified: no job of ours exists. Re-sending is safe. */
        op_backoff(op, held);
        return;
    default:
        op_finish(op, held); /* the 400 (with its violations) or the bad response, as reported */
        return;
    }
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
    if (r->jobs == NULL) return -1;
    json_array_foreach(jobs, i, o) {
        if (parse_job(o, &r->jobs[i], why) != 0) return -1;
        r->n_jobs++;
    }
    return 0;
}

static void bad_response(df_result *r, const char *why)
{
    r->err = DF_ERR_BAD_RESPONSE;
    free(r->message);
    r->message = util_printf("unexpected response (HTTP %ld): %s", r->http_status, why);
}

/* Reads a 2xx answer's body (r->raw) as `kind` expects it: the job into r->job, the list into r->jobs. Returns 0,
 * or -1 with r turned into DF_ERR_BAD_RESPONSE. */
static int parse_answer(df_answer_kind kind, df_result *r)
{
    const char *why = NULL;
    json_t *job;
    switch (kind) {
    case DF_ANSWER_JOB:
        r->job = xcalloc(1, sizeof *r->job);
        if (r->job != NULL && parse_job(r->raw, r->job, &why) == 0) return 0;
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
        if (r->job != NULL && parse_job(job, r->job, &why) == 0) return 0;
        break;
    }
    free(r->job); /* parse_job cleared it */
    r->job = NULL;
    bad_response(r, why ? why : "out of memory");
    return -1;
}

df_result *df_parse_answer(df_answer_kind kind, long status, const char *body, size_t len, const char *retry_after,
                           int64_t now_ms)
{
    df_result *r = result_from_http(status, body, len, retry_after, now_ms);
    if (r != NULL && r->err == DF_OK) parse_answer(kind, r);
    return r;
}

static void on_success(df_op *op, df_result *r)
{
    switch (op->kind) {
    case K_GET:
    case K_UPDATE:
        parse_answer(DF_ANSWER_JOB, r);
        op_finish(op, r);
        return;
    case K_LIST:
        parse_answer(DF_ANSWER_LIST, r);
        op_finish(op, r);
        return;
    case K_MESSAGES: {
        json_t *m = json_object_get(r->raw, "jobMessages");
        if (!json_is_object(r->raw) || (m != NULL && !json_is_array(m)))
            bad_response(r, "jobs.messages answer is not {jobMessages: [...]}");
        op_finish(op, r);
        return;
    }
    case K_LIST_ALL:
        if (parse_answer(DF_ANSWER_LIST, r) != 0) {
            op_finish(op, r);
            return;
        }
        if (op->acc == NULL) {
            op->acc = result_new(DF_OK, NULL);
            op->acc->http_status = r->http_status;
        }
        if (r->n_jobs) {
            df_job *nj = xrealloc(op->acc->jobs, (op->acc->n_jobs + r->n_jobs) * sizeof *nj);
            if (nj == NULL) {
                bad_response(r, "out of memory");
                op_finish(op, r);
                return;
            }
            op->acc->jobs = nj;
            memcpy(nj + op->acc->n_jobs, r->jobs, r->n_jobs * sizeof *nj);
            op->acc->n_jobs += r->n_jobs;
            free(r->jobs);
            r->jobs = NULL;
            r->n_jobs = 0;
        }
        if (r->next_page_token && ++op->pages < DF_MAX_PAGES) {
            char *tok = pct(r->next_page_token);
            free(op->url);
            op->url = tok ? util_printf("%s%cpageToken=%s", op->list_url, strchr(op->list_url, '?') ? '&' : '?', tok)
                          : NULL;
            free(tok);
            df_result_free(r);
            if (op->url == NULL) {
                op_finish(op, result_new(DF_ERR_TRANSPORT, "out of memory"));
                return;
            }
            retry_begin(&op->rs, &op->df->policy, hc_now_ms(op->df->hc), op->df->rng, op->df->rng_ud);
            op_send(op);
            return;
        }
        df_result_free(r);
        r = op->acc;
        op->acc = NULL;
        op_finish(op, r);
        return;
    case K_LAUNCH:
        if (parse_answer((op->flags & DF_VALIDATE_ONLY) ? DF_ANSWER_VALIDATE : DF_ANSWER_LAUNCH, r) == 0 ||
            (op->flags & DF_VALIDATE_ONLY)) {
            op_finish(op, r);
            return;
        }
        /* A 2xx we cannot read most likely created the job: find it rather than report a failure. */
        lookup(op, LK_BADRESP, r);
        return;
    }
}

static void on_failure(df_op *op, df_result *r)
{
    df_client *df = op->df;
    retry_transport t = to_rt(r->transport);
    if (op->kind == K_UPDATE && r->err == DF_ERR_HTTP && r->message && strstr(r->message, "has terminated")) {
        r->err = DF_OK; /* cancelling or draining a finished job: it is done */
        r->already_terminated = 1;
        op_finish(op, r);
        return;
    }
    if (op->kind == K_GET && r->http_status == 404 && !(op->flags & DF_NO_LAG_RETRY) && df->lag_window_ms > 0) {
        int64_t now = hc_now_ms(df->hc);
        if (op->lag_tries == 0) op->lag_start = now;
        int64_t delay = retry_backoff_ms(&df->policy, ++op->lag_tries, df->rng, df->rng_ud);
        if (now + delay <= op->lag_start + df->lag_window_ms) {
            df->st.retries++;
            df_result_free(r);
            op->timer_id = hc_timer_add(df->hc, delay, resend_timer, op);
            if (op->timer_id > 0) return;
            op->timer_id = 0;
            r = result_new(DF_ERR_TRANSPORT, "cannot arm a retry timer");
        }
        op_finish(op, r);
        return;
    }
    if (op->kind == K_LAUNCH && !op->idempotent) {
        if (r->http_status == 409 && r->status && strcmp(r->status, "ALREADY_EXISTS") == 0) {
            lookup(op, LK_EXISTS, r);
            return;
        }
        if (r->http_status == 400) {
            lookup(op, LK_400, r); /* the 400-but-launched trap */
            return;
        }
        if (df->launch_quota_report && quota_refused(r->http_status, r->status, r->reason, r->message)) {
            op_finish(op, r); /* nothing was created: the caller waits for capacity */
            return;
        }
        switch (retry_classify(0, t, r->http_status, r->status)) {
        case RETRY_AGAIN: op_backoff(op, r); return;
        case RETRY_UNKNOWN: lookup(op, LK_UNKNOWN, r); return;
        case RETRY_STOP: op_finish(op, r); return;
        }
    }
    if (retry_classify(1, t, r->http_status, r->status) == RETRY_AGAIN) op_backoff(op, r);
    else op_finish(op, r);
}

static void on_http(hc_client *hc, const hc_resp *resp, void *ud)
{
    (void)hc;
    df_op *op = ud;
    df_client *df = op->df;
    op->hc_id = 0;
    op->attempts++;
    if (resp->error == HC_OK && resp->status == 401 && !op->auth_retried && ga_invalidate(df->ga, op->token)) {
        /* The token was revoked or expired early: refresh once and re-send (a 401 created nothing). */
        op->auth_retried = 1;
        df->st.auth_refreshes++;
        op_send(op);
        return;
    }
    df_result *r = result_from_resp(df, resp);
    if (r == NULL) {
        op_finish(op, NULL);
        return;
    }
    if (r->err == DF_OK) on_success(op, r);
    else on_failure(op, r);
}

static void on_token(void *ud, int rc, const char *token, const char *err)
{
    df_op *op = ud;
    df_client *df = op->df;
    op->ga_waiter = 0;
    if (rc < 0) {
        op_finish_later(op, result_new(DF_ERR_AUTH, "cannot get an access token: %s", err ? err : "?"));
        return;
    }
    if (op->token) explicit_bzero(op->token, strlen(op->token));
    free(op->token);
    op->token = token ? xstrdup(token) : NULL;
    long timeout_ms = df->timeout_ms;
    if (op->deadline > 0) {
        int64_t left = op->deadline - hc_now_ms(df->hc);
        if (left <= 0) {
            /* the token came too late: this attempt never left (an earlier one's outcome is in op->held's
             * look-up, or there was none) */
            op_finish_later(op, result_new(DF_ERR_UNKNOWN_OUTCOME, "the launch's time ran out before it was sent"));
            return;
        }
        if (left < timeout_ms) timeout_ms = (long)left;
    }
    char *auth = token ? util_printf("Authorization: Bearer %s", token) : NULL;
    const char *headers[4];
    int n = 0;
    if (auth) headers[n++] = auth;
    if (op->body) headers[n++] = "Content-Type: application/json";
    headers[n++] = "Accept: application/json";
    headers[n] = NULL;
    hc_req rq = {.method = op->method, .url = op->url, .headers = headers, .body = op->body,
                 .body_len = op->body ? strlen(op->body) : 0, .timeout_ms = timeout_ms,
                 .fresh_connection = op->kind == K_LAUNCH && !op->idempotent};
    const char *e = NULL;
    op->hc_id = hc_request(df->hc, &rq, on_http, op, &e);
    if (auth) {
        explicit_bzero(auth, strlen(auth));
        free(auth);
    }
    if (op->hc_id < 0) {
        op->hc_id = 0;
        op_finish_later(op, result_new(DF_ERR_TRANSPORT, "cannot queue the request: %s", e ? e : "?"));
        return;
    }
    df->st.requests++;
    if (op->kind == K_LAUNCH) df->st.launch_posts++;
}

/* Gets a token (maybe synchronously) and sends. on_token never finishes the op synchronously, so op stays
 * valid here. */
static void op_send(df_op *op)
{
    int64_t w = ga_token(op->df->ga, on_token, op);
    if (w > 0) op->ga_waiter = w;
}

/* --- public calls --- */

static int64_t start(df_op *op, const char **err)
{
    if (op == NULL) {
        if (err) *err = "out of memory";
        return -1;
    }
    int64_t id = op->id;
    op_send(op);
    return id;
}

/* --- the launch request's wire format: the one place that knows it --- */

json_t *df_launch_render(const launch_req *req, unsigned flags)
{
    if (req == NULL || req->template == NULL || req->job_name == NULL || req->project == NULL || req->region == NULL)
        return NULL;
    int validate = (flags & DF_VALIDATE_ONLY) != 0;
    char *project = pct(req->project), *region = pct(req->region), *path = NULL;
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
        out = path && body ? json_pack("{s:s,s:s,s:o}", "method", "POST", "path", path, "body", body) : NULL;
        if (out == NULL) json_decref(body);
    } else if (req->kind == LAUNCH_CLASSIC) {
        path = util_printf("/v1b3/projects/%s/locations/%s/templates:launch", project, region);
        out = path ? json_pack("{s:s,s:s,s:{s:s,s:s},s:{s:s,s:O,s:O}}", "method", "POST", "path", path, "query",
                               "gcsPath", req->template, "validateOnly", validate ? "true" : "false", "body",
                               "jobName", req->job_name, "parameters", params, "environment", env)
                   : NULL;
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
static char *query_string(json_t *query)
{
    char *out = xstrdup("");
    const char *k;
    json_t *v;
    json_object_foreach(query, k, v) {
        char *val = pct(json_string_value(v) ? json_string_value(v) : "");
        char *next = out && val ? util_printf("%s%c%s=%s", out, out[0] ? '&' : '?', k, val) : NULL;
        free(out);
        free(val);
        out = next;
    }
    return out;
}

int64_t df_launch(df_client *df, const launch_req *req, unsigned flags, df_done_cb cb, void *ud, const char **err)
{
    json_t *rendered = df_launch_render(req, flags);
    char *prefix = loc_url(df, "/"), *url = NULL, *qs = NULL, *body = NULL;
    int64_t id = -1;
    const char *path = json_string_value(json_object_get(rendered, "path"));
    *err = NULL;
    if (rendered == NULL || req->job_name[0] == '\0' || cb == NULL) {
        *err = "a launch needs a template, a job name, a project, a region and a callback";
    } else if ((qs = query_string(json_object_get(rendered, "query"))) == NULL || prefix == NULL ||
               (url = util_printf("%s%s%s", df->base, path, qs)) == NULL) {
        *err = "out of memory";
    } else if (strncmp(url, prefix, strlen(prefix)) != 0) {
        *err = "the launch names another project or region than this client's";
    } else {
        body = json_dumps(json_object_get(rendered, "body"), JSON_COMPACT);
        int validate = (flags & DF_VALIDATE_ONLY) != 0;
        df_op *op = op_new(df, K_LAUNCH, "POST", url, body, validate, cb, ud);
        url = NULL; /* owned by the op (or freed by op_new) */
        if (op) {
            op->flags = flags;
            op->job_name = xstrdup(req->job_name);
            op->intent_ms = df->wall_ms(df->wall_ud);
            if (req->budget_ms > 0) op->deadline = hc_now_ms(df->hc) + req->budget_ms;
        }
        id = start(op, err);
    }
    free(url);
    free(qs);
    free(prefix);
    json_decref(rendered);
    return id;
}

int64_t df_job_get(df_client *df, const char *job_id, df_view view, unsigned flags, df_done_cb cb, void *ud,
                   const char **err)
{
    if (job_id == NULL || job_id[0] == '\0' || cb == NULL) {
        *err = "jobs.get needs a job id and a callback";
        return -1;
    }
    const char *v = view == DF_VIEW_ALL ? "?view=JOB_VIEW_ALL"
                    : view == DF_VIEW_DESCRIPTION ? "?view=JOB_VIEW_DESCRIPTION" : "?view=JOB_VIEW_SUMMARY";
    df_op *op = op_new(df, K_GET, "GET", job_url(df, job_id, v), NULL, 1, cb, ud);
    if (op) op->flags = flags;
    return start(op, err);
}

int64_t df_job_messages(df_client *df, const char *job_id, const char *min_importance, df_done_cb cb, void *ud,
                        const char **err)
{
    if (job_id == NULL || job_id[0] == '\0' || cb == NULL) {
        *err = "jobs.messages needs a job id and a callback";
        return -1;
    }
    char *q = util_printf("/messages?minimumImportance=%s&pageSize=100",
                          min_importance ? min_importance : "JOB_MESSAGE_ERROR");
    char *suffix = q;
    df_op *op = op_new(df, K_MESSAGES, "GET", job_url(df, job_id, suffix), NULL, 1, cb, ud);
    free(q);
    return start(op, err);
}

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

int64_t df_jobs_list(df_client *df, const df_list_query *q, df_done_cb cb, void *ud, const char **err)
{
    df_list_query none = {0};
    if (cb == NULL) {
        *err = "jobs.list needs a callback";
        return -1;
    }
    if (q == NULL) q = &none;
    return start(op_new(df, K_LIST, "GET", list_url(df, q, q->page_token), NULL, 1, cb, ud), err);
}

static int64_t start_list_all(df_client *df, const df_list_query *q, df_done_cb cb, void *ud, int internal)
{
    df_op *op = op_new(df, K_LIST_ALL, "GET", list_url(df, q, NULL), NULL, 1, cb, ud);
    if (op == NULL) return -1;
    op->internal = internal;
    op->list_url = xstrdup(op->url);
    const char *e;
    return start(op, &e);
}

int64_t df_jobs_list_all(df_client *df, const df_list_query *q, df_done_cb cb, void *ud, const char **err)
{
    df_list_query none = {0};
    if (cb == NULL) {
        *err = "jobs.list needs a callback";
        return -1;
    }
    int64_t id = start_list_all(df, q ? q : &none, cb, ud, 0);
    if (id < 0) *err = "out of memory";
    return id;
}

static int64_t update_state(df_client *df, const char *job_id, const char *state, df_done_cb cb, void *ud,
                            const char **err)
{
    if (job_id == NULL || job_id[0] == '\0' || cb == NULL) {
        *err = "cancel/drain needs a job id and a callback";
        return -1;
    }
    char *body = util_printf("{\"requestedState\":\"%s\"}", state);
    return start(op_new(df, K_UPDATE, "PUT", job_url(df, job_id, NULL), body, 1, cb, ud), err);
}

int64_t df_job_cancel(df_client *df, const char *job_id, df_done_cb cb, void *ud, const char **err)
{
    return update_state(df, job_id, js_name(JS_CANCELLED), cb, ud, err);
}

int64_t df_job_drain(df_client *df, const char *job_id, df_done_cb cb, void *ud, const char **err)
{
    return update_state(df, job_id, js_name(JS_DRAINED), cb, ud, err);
}
