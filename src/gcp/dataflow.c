/* dataflow: Dataflow v1b3 calls as asynchronous operations (df_op) on the caller's hc loop; launch safety
 * (look-up before re-send, adopt on 409 / 400-but-launched / unknown outcome), retries, the jobs.get lag window.
 * What the requests and answers look like (rendering, parsing) is dataflow_format.c's.
 * Uses: dataflow_format (through dataflow_internal.h), http_client, gauth, retry, jansson, log. Must not: log tokens
 * or request bodies' credentials; decide what a job state means for a workflow. */
#include "dataflow.h"
#include "dataflow_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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

static int64_t default_wall(void *ud)
{
    (void)ud;
    return util_now_ms();
}

/* Turns an HTTP outcome into a result: DF_OK (2xx; body parsed later per call), DF_ERR_HTTP or
 * DF_ERR_TRANSPORT. */
static df_result *result_from_resp(df_client *df, const hc_resp *resp)
{
    if (resp->error == HC_OK)
        return df_result_from_http(resp->status, resp->body, resp->body_len, resp->retry_after,
                                   resp->retry_after ? df->wall_ms(df->wall_ud) : 0);
    df_result *r = df_result_new(DF_ERR_TRANSPORT, NULL);
    r->transport = resp->error;
    r->message = util_printf("%s: %s", hc_error_name(resp->error), resp->error_text);
    return r;
}

/* --- URL building --- */

/* base/v1b3/projects/P/locations/R<suffix>; caller frees. */
static char *loc_url(df_client *df, const char *suffix)
{
    return util_printf("%s/v1b3/projects/%s/locations/%s%s", df->base, df->project, df->region, suffix);
}

static char *job_url(df_client *df, const char *job_id, const char *query)
{
    char *id = hc_escape(job_id), *suffix = util_printf("/jobs/%s%s", id, query ? query : "");
    char *u = loc_url(df, suffix);
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
    char *name = q->name ? hc_escape(q->name) : NULL, *tok = page_token ? hc_escape(page_token) : NULL;
    if (q->page_size > 0) snprintf(query, sizeof query, "&pageSize=%d", q->page_size);
    const char *f = filter_name(q->filter);
    char *suffix = util_printf("/jobs?%s%s%s%s%s%s%s", f ? "filter=" : "", f ? f : "", name ? "&name=" : "",
                             name ? name : "", query, tok ? "&pageToken=" : "", tok ? tok : "");
    free(name);
    free(tok);
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
    df->hc = hc;
    df->ga = ga;
    const char *base = o->base_url ? o->base_url : DF_DEFAULT_BASE;
    size_t bl = strlen(base);
    while (bl > 0 && base[bl - 1] == '/') bl--;
    df->base = xstrndup(base, bl);
    df->project = hc_escape(project);
    df->region = hc_escape(o->region);
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
            df_result *r = df_result_new(DF_ERR_CANCELLED, "cancelled: the client was freed");
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

/* Delivers r (never NULL) and frees the op. */
static void op_finish(df_op *op, df_result *r)
{
    r->attempts += op->attempts;
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
        return;
    }
    op_finish(op, r);
}

static df_op *op_new(df_client *df, op_kind kind, const char *method, char *url, char *body, int idempotent,
                     df_done_cb cb, void *ud)
{
    df_op *op = xcalloc(1, sizeof *op);
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

static void on_lookup(void *ud, df_result *lr);

static void lookup_start(df_op *op)
{
    df_list_query q = {.filter = op->lookup_phase == 0 ? DF_FILTER_ACTIVE : DF_FILTER_TERMINATED,
                       .name = op->job_name};
    op->child = start_list_all(op->df, &q, on_lookup, op, 1);
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
        int64_t ct = -1; /* no or unreadable createTime: not provably recent */
        if (j->create_time == NULL || util_parse_rfc3339(j->create_time, &ct) != 0) ct = -1;
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
        df_result *r = df_result_new(DF_OK, NULL);
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

static void on_success(df_op *op, df_result *r)
{
    switch (op->kind) {
    case K_GET:
    case K_UPDATE:
        df_answer_read(DF_ANSWER_JOB, r);
        op_finish(op, r);
        return;
    case K_LIST:
        df_answer_read(DF_ANSWER_LIST, r);
        op_finish(op, r);
        return;
    case K_MESSAGES: {
        json_t *m = json_object_get(r->raw, "jobMessages");
        if (!json_is_object(r->raw) || (m != NULL && !json_is_array(m)))
            df_bad_response(r, "jobs.messages answer is not {jobMessages: [...]}");
        op_finish(op, r);
        return;
    }
    case K_LIST_ALL:
        if (df_answer_read(DF_ANSWER_LIST, r) != 0) {
            op_finish(op, r);
            return;
        }
        if (op->acc == NULL) {
            op->acc = df_result_new(DF_OK, NULL);
            op->acc->http_status = r->http_status;
        }
        if (r->n_jobs) {
            df_job *nj = xrealloc(op->acc->jobs, (op->acc->n_jobs + r->n_jobs) * sizeof *nj);
            op->acc->jobs = nj;
            memcpy(nj + op->acc->n_jobs, r->jobs, r->n_jobs * sizeof *nj);
            op->acc->n_jobs += r->n_jobs;
            free(r->jobs);
            r->jobs = NULL;
            r->n_jobs = 0;
        }
        if (r->next_page_token && ++op->pages < DF_MAX_PAGES) {
            char *tok = hc_escape(r->next_page_token);
            free(op->url);
            op->url = util_printf("%s%cpageToken=%s", op->list_url, strchr(op->list_url, '?') ? '&' : '?', tok);
            free(tok);
            df_result_free(r);
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
        if (df_answer_read((op->flags & DF_VALIDATE_ONLY) ? DF_ANSWER_VALIDATE : DF_ANSWER_LAUNCH, r) == 0 ||
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
    retry_transport t = retry_transport_of(r->transport);
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
            return;
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
    if (r->err == DF_OK) on_success(op, r);
    else on_failure(op, r);
}

static void on_token(void *ud, int rc, const char *token, const char *err)
{
    df_op *op = ud;
    df_client *df = op->df;
    op->ga_waiter = 0;
    if (rc < 0) {
        op_finish_later(op, df_result_new(DF_ERR_AUTH, "cannot get an access token: %s", err ? err : "?"));
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
            op_finish_later(op, df_result_new(DF_ERR_UNKNOWN_OUTCOME, "the launch's time ran out before it was sent"));
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
        op_finish_later(op, df_result_new(DF_ERR_TRANSPORT, "cannot queue the request: %s", e ? e : "?"));
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

static int64_t start(df_op *op)
{
    int64_t id = op->id;
    op_send(op);
    return id;
}

int64_t df_launch(df_client *df, const launch_req *req, unsigned flags, df_done_cb cb, void *ud, const char **err)
{
    json_t *rendered = df_launch_render(req, flags);
    char *prefix = loc_url(df, "/"), *url = NULL, *qs = NULL, *body = NULL;
    int64_t id = -1;
    const char *path = json_string_value(json_object_get(rendered, "path"));
    *err = NULL;
    if (rendered != NULL) {
        qs = df_query_string(json_object_get(rendered, "query"));
        url = util_printf("%s%s%s", df->base, path, qs);
    }
    if (rendered == NULL || req->job_name[0] == '\0' || cb == NULL) {
        *err = "a launch needs a template, a job name, a project, a region and a callback";
    } else if (strncmp(url, prefix, strlen(prefix)) != 0) {
        *err = "the launch names another project or region than this client's";
    } else {
        body = json_dumps(json_object_get(rendered, "body"), JSON_COMPACT);
        int validate = (flags & DF_VALIDATE_ONLY) != 0;
        df_op *op = op_new(df, K_LAUNCH, "POST", url, body, validate, cb, ud);
        url = NULL; /* owned by the op */
        op->flags = flags;
        op->job_name = xstrdup(req->job_name);
        op->intent_ms = df->wall_ms(df->wall_ud);
        if (req->budget_ms > 0) op->deadline = hc_now_ms(df->hc) + req->budget_ms;
        id = start(op);
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
    op->flags = flags;
    return start(op);
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
    return start(op);
}

int64_t df_jobs_list(df_client *df, const df_list_query *q, df_done_cb cb, void *ud, const char **err)
{
    df_list_query none = {0};
    if (cb == NULL) {
        *err = "jobs.list needs a callback";
        return -1;
    }
    if (q == NULL) q = &none;
    return start(op_new(df, K_LIST, "GET", list_url(df, q, q->page_token), NULL, 1, cb, ud));
}

static int64_t start_list_all(df_client *df, const df_list_query *q, df_done_cb cb, void *ud, int internal)
{
    df_op *op = op_new(df, K_LIST_ALL, "GET", list_url(df, q, NULL), NULL, 1, cb, ud);
    op->internal = internal;
    op->list_url = xstrdup(op->url);
    return start(op);
}

int64_t df_jobs_list_all(df_client *df, const df_list_query *q, df_done_cb cb, void *ud, const char **err)
{
    df_list_query none = {0};
    if (cb == NULL) {
        *err = "jobs.list needs a callback";
        return -1;
    }
    return start_list_all(df, q ? q : &none, cb, ud, 0);
}

static int64_t update_state(df_client *df, const char *job_id, const char *state, df_done_cb cb, void *ud,
                            const char **err)
{
    if (job_id == NULL || job_id[0] == '\0' || cb == NULL) {
        *err = "cancel/drain needs a job id and a callback";
        return -1;
    }
    char *body = util_printf("{\"requestedState\":\"%s\"}", state);
    return start(op_new(df, K_UPDATE, "PUT", job_url(df, job_id, NULL), body, 1, cb, ud));
}

int64_t df_job_cancel(df_client *df, const char *job_id, df_done_cb cb, void *ud, const char **err)
{
    return update_state(df, job_id, js_name(JS_CANCELLED), cb, ud, err);
}

int64_t df_job_drain(df_client *df, const char *job_id, df_done_cb cb, void *ud, const char **err)
{
    return update_state(df, job_id, js_name(JS_DRAINED), cb, ud, err);
}
