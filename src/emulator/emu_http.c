/* emu_http: owns the emulator's HTTP plumbing on libmicrohttpd: per-connection state (allocated on the first
 * call, freed only in the completion callback), body collection with the size limit, building and queueing
 * answers (Google error shapes included), delayed answers by suspend/resume, the timer thread that resumes them
 * and advances jobs, and starting and draining the daemon. Uses: emu.h, libmicrohttpd, emu_dispatch (what to
 * answer), emu_jobs (advance). Must not: decide answers itself; it never calls into MHD with emu_g.lock held. */
#include "emu.h"
#include "mem.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static void emu_resp_clear(struct emu_resp *r)
{
    free(r->body);
    for (int i = 0; i < r->nh; i++) {
        free(r->hname[i]);
        free(r->hval[i]);
    }
    memset(r, 0, sizeof *r);
}


void emu_resp_header(struct emu_resp *r, const char *name, const char *value)
{
    if (r->nh >= 4) return;
    r->hname[r->nh] = xstrdup(name);
    r->hval[r->nh] = xstrdup(value);
    r->nh++;
}

/* Sets a JSON answer; `v` is stolen. */
void emu_resp_json(struct emu_resp *r, int status, json_t *v)
{
    free(r->body);
    r->body = v ? json_dumps(v, JSON_INDENT(2)) : NULL;
    json_decref(v);
    if (r->body == NULL) r->body = xstrdup("{}");
    r->status = status;
    r->ctype = "application/json; charset=UTF-8";
}

void emu_resp_text(struct emu_resp *r, int status, const char *ctype, const char *text)
{
    free(r->body);
    r->body = xstrdup(text);
    r->status = status;
    r->ctype = ctype;
}

static const char *emu_reason_for(int code)
{
    switch (code) {
    case 400: return "badRequest";
    case 401: return "authError";
    case 403: return "forbidden";
    case 409: return "alreadyExists";
    case 413: return "badRequest";
    case 405: return "badRequest";
    case 500: return "backendError";
    case 503: return "backendError";
    default: return NULL;
    }
}

/* Google's error body. with_errors: add the legacy errors[] array (domain/reason/message). details: stolen,
 * may be NULL. Messages get the "(hex): " prefix Dataflow puts on its own errors when `prefixed`. */
void emu_resp_gerror(struct emu_resp *r, int code, const char *status, int with_errors, int prefixed,
                     json_t *details, const char *fmt, ...)
{
    char msg[2048], full[2100], hex[17];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (prefixed) {
        emu_random_hex(hex, 16);
        snprintf(full, sizeof full, "(%s): %s", hex, msg);
    } else {
        snprintf(full, sizeof full, "%s", msg);
    }
    json_t *err = json_pack("{s:i, s:s}", "code", code, "message", full);
    const char *reason = emu_reason_for(code);
    if (with_errors && reason != NULL)
        json_object_set_new(err, "errors", json_pack("[{s:s, s:s, s:s}]", "domain", "global", "reason", reason,
                                                     "message", full));
    json_object_set_new(err, "status", json_string(status));
    if (details != NULL) json_object_set_new(err, "details", details);
    emu_resp_json(r, code, json_pack("{s:o}", "error", err));
}

void emu_resp_oauth_error(struct emu_resp *r, int code, const char *error, const char *desc)
{
    emu_resp_json(r, code, json_pack("{s:s, s:s}", "error", error, "error_description", desc));
}


void emu_bad_request(struct emu_resp *r, const char *msg)
{
    emu_resp_gerror(r, 400, "INVALID_ARGUMENT", 1, 0,
                    json_pack("[{s:s, s:[{s:s}]}]", "@type", "type.googleapis.com/google.rpc.BadRequest",
                              "fieldViolations", "description", msg),
                    "%s", msg);
}

/* Parses the request body as a JSON object (empty = {}). On failure answers 400 and returns NULL.
 * Caller decrefs. */
json_t *emu_body_json(struct emu_call *cx)
{
    struct emu_req *q = cx->q;
    if (q->body.len == 0) return json_object();
    json_error_t je;
    json_t *v = json_loadb(q->body.data, q->body.len, 0, &je);
    if (v == NULL || !json_is_object(v)) {
        char msg[512];
        snprintf(msg, sizeof msg, "Invalid JSON payload received. %s.\n%.40s\n^",
                 v == NULL ? "Unexpected token" : "Expected an object", q->body.data);
        json_decref(v);
        emu_bad_request(&q->resp, msg);
        return NULL;
    }
    return v;
}

const char *emu_query(struct emu_call *cx, const char *key)
{
    return MHD_lookup_connection_value(cx->conn, MHD_GET_ARGUMENT_KIND, key);
}

/* Queues the decided answer. Returns MHD_NO for a drop (MHD then closes the connection). */
static enum MHD_Result emu_queue(struct emu_req *q)
{
    struct emu_resp *r = &q->resp;
    if (r->drop) return MHD_NO;
    const char *body = r->body ? r->body : "";
    struct MHD_Response *resp =
        MHD_create_response_from_buffer(strlen(body), (void *)body, MHD_RESPMEM_MUST_COPY);
    if (resp == NULL) return MHD_NO;
    if (r->ctype) MHD_add_response_header(resp, "Content-Type", r->ctype);
    for (int i = 0; i < r->nh; i++)
        if (r->hname[i] && r->hval[i]) MHD_add_response_header(resp, r->hname[i], r->hval[i]);
    enum MHD_Result ret = MHD_queue_response(q->conn, (unsigned)r->status, resp);
    MHD_destroy_response(resp);
    return ret;
}

/* Parks the decided answer for `delay_ms`: suspends the connection (called from the handler, without
 * emu_g.lock) and only then makes it visible to the timer thread, so a resume can never precede the suspend. */
static void emu_delay(struct emu_req *q, int64_t delay_ms)
{
    q->ready = 1;
    MHD_suspend_connection(q->conn);
    pthread_mutex_lock(&emu_g.lock);
    emu_g.suspended++;
    q->parked = 1;
    q->due_ms = emu_now_ms() + delay_ms;
    if (emu_g.stopping) q->due_ms = 0; /* the timer is draining: answer at once */
    struct emu_req **pp = &emu_g.delayed;
    while (*pp != NULL && (*pp)->due_ms <= q->due_ms) pp = &(*pp)->next_delayed;
    q->next_delayed = *pp;
    *pp = q;
    q->in_delayed = 1;
    pthread_cond_signal(&emu_g.timer_cond);
    pthread_mutex_unlock(&emu_g.lock);
}

/* The request is no longer suspended: settle emu_g.suspended, which the shutdown waits on. */
static void emu_req_unpark(struct emu_req *q)
{
    pthread_mutex_lock(&emu_g.lock);
    if (q->parked) emu_g.suspended--;
    q->parked = 0;
    pthread_mutex_unlock(&emu_g.lock);
}

/* Resumes delayed answers when they are due and applies job transitions when they are due; woken by
 * emu_g.timer_cond whenever either changes, and at least once a second. */
void *emu_timer_thread(void *arg)
{
    (void)arg;
    struct MHD_Connection *due[256];
    pthread_mutex_lock(&emu_g.lock);
    for (;;) {
        int64_t now = emu_now_ms();
        emu_jobs_advance(now);
        int n = 0;
        while (emu_g.delayed != NULL && (emu_g.delayed->due_ms <= now || emu_g.stopping) && n < 256) {
            struct emu_req *q = emu_g.delayed;
            emu_g.delayed = q->next_delayed;
            q->in_delayed = 0;
            due[n++] = q->conn;
        }
        if (n > 0) {
            /* Resume outside our lock: MHD takes its own locks and the handler then takes ours. */
            pthread_mutex_unlock(&emu_g.lock);
            for (int i = 0; i < n; i++) MHD_resume_connection(due[i]);
            pthread_mutex_lock(&emu_g.lock);
            continue;
        }
        if (emu_g.timer_exit) break;
        int64_t next = emu_jobs_next_deadline();
        if (emu_g.delayed != NULL && (next == 0 || emu_g.delayed->due_ms < next)) next = emu_g.delayed->due_ms;
        if (next == 0 || next > now + 1000) next = now + 1000;
        struct timespec ts = emu_abstime(next);
        pthread_cond_timedwait(&emu_g.timer_cond, &emu_g.lock, &ts);
    }
    pthread_mutex_unlock(&emu_g.lock);
    return NULL;
}

static enum MHD_Result emu_handler(void *cls, struct MHD_Connection *conn, const char *url, const char *method,
                                   const char *version, const char *upload_data, size_t *upload_data_size,
                                   void **con_cls)
{
    (void)cls;
    (void)version;
    struct emu_req *q = *con_cls;
    if (q == NULL) {
        /* First call: headers only. The state is freed in emu_completed. */
        q = xcalloc(1, sizeof *q);
        q->conn = conn;
        *con_cls = q;
        return MHD_YES;
    }
    if (*upload_data_size != 0) {
        size_t n = *upload_data_size;
        *upload_data_size = 0;
        pthread_mutex_lock(&emu_g.lock);
        size_t limit = (size_t)emu_g.cfg.max_body_bytes;
        pthread_mutex_unlock(&emu_g.lock);
        q->body.max = limit; /* the limit may change between calls (the control API sets it) */
        if (q->too_large || dbuf_add(&q->body, upload_data, n) != 0) q->too_large = 1; /* keep reading, discard */
        return MHD_YES;
    }
    if (q->ready) {
        /* Resumed after a delay. */
        emu_req_unpark(q);
        return emu_queue(q);
    }
    pthread_mutex_lock(&emu_g.lock);
    int64_t delay = emu_dispatch(q, url, method);
    pthread_mutex_unlock(&emu_g.lock);
    if (delay > 0) {
        emu_delay(q, delay);
        return MHD_YES;
    }
    return emu_queue(q);
}

static void emu_completed(void *cls, struct MHD_Connection *conn, void **con_cls, enum MHD_RequestTerminationCode toe)
{
    (void)cls;
    (void)conn;
    (void)toe;
    struct emu_req *q = *con_cls;
    if (q == NULL) return;
    /* A suspended connection never completes before it is resumed (the shutdown drains them first), so q
     * is no longer in emu_g.delayed here. If the client went away while parked, MHD may end the request without
     * calling the handler again: settle the count here. emu_g.lock is safe to take: no code holding it calls
     * into MHD. */
    if (q->parked) emu_req_unpark(q);
    emu_resp_clear(&q->resp);
    dbuf_free(&q->body);
    free(q);
    *con_cls = NULL;
}

void emu_timer_stop(pthread_t tid)
{
    pthread_mutex_lock(&emu_g.lock);
    emu_g.stopping = 1;
    emu_g.timer_exit = 1;
    pthread_cond_signal(&emu_g.timer_cond);
    pthread_mutex_unlock(&emu_g.lock);
    pthread_join(tid, NULL);
}

/* Starts the daemon (its own polling threads, `threads` of them) on addr. Returns 0 or -1. */
int emu_http_start(const struct sockaddr_in *addr, unsigned threads)
{
    emu_g.daemon = MHD_start_daemon(MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL | MHD_ALLOW_SUSPEND_RESUME |
                                        MHD_USE_ERROR_LOG,
                                    0, NULL, NULL, emu_handler, NULL, MHD_OPTION_SOCK_ADDR, (struct sockaddr *)addr,
                                    MHD_OPTION_THREAD_POOL_SIZE, threads, MHD_OPTION_NOTIFY_COMPLETED,
                                    emu_completed, NULL, MHD_OPTION_CONNECTION_LIMIT, (unsigned int)2000,
                                    MHD_OPTION_CONNECTION_TIMEOUT, (unsigned int)120, MHD_OPTION_END);
    return emu_g.daemon != NULL ? 0 : -1;
}

/* The bound port (the asked-for one is 0 for an ephemeral port), or 0 when unknown. */
unsigned emu_http_port(void)
{
    const union MHD_DaemonInfo *info = MHD_get_daemon_info(emu_g.daemon, MHD_DAEMON_INFO_BIND_PORT);
    return info ? info->port : 0;
}

/* Answers every parked request, then stops the daemon: MHD must not be stopped with suspended connections.
 * Waits up to 3 s for them. A no-op when the daemon is not running. */
void emu_http_stop(void)
{
    if (emu_g.daemon == NULL) return;
    pthread_mutex_lock(&emu_g.lock);
    emu_g.stopping = 1;
    pthread_cond_signal(&emu_g.timer_cond);
    pthread_mutex_unlock(&emu_g.lock);
    for (int i = 0; i < 300; i++) {
        pthread_mutex_lock(&emu_g.lock);
        int left = emu_g.suspended;
        pthread_mutex_unlock(&emu_g.lock);
        if (left == 0) break;
        usleep(10000);
    }
    MHD_stop_daemon(emu_g.daemon);
    emu_g.daemon = NULL;
}
