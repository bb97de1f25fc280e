/* http_server: the inbound HTTP/1.1 server under `sluice serve` (libmicrohttpd, bounded thread pool, limits,
 * request ids, JSON access log, deferred answers, graceful shutdown).
 * Uses: libmicrohttpd, log, util. Must not: know routes, JSON bodies, auth or the store.
 *
 * MHD calls the access handler several times per request: first with the headers, then with each piece of the
 * body, then once with no data. The hs_request is allocated on the first call and freed in on_completed only;
 * a deferred request is suspended in MHD and resumed by hs_complete, which makes MHD call the handler once
 * more so the answer is queued from an MHD thread, as MHD requires. */
#include "http_server.h"

#include <arpa/inet.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "log.h"
#include "util.h"

#define MAX_LOG_FIELDS 6

struct hs_server {
    struct MHD_Daemon *d;
    hs_options o;
    int port;
    atomic_int inflight;
    atomic_int draining;
    atomic_ullong next_id;
    char id_prefix[9];
    int stopped;
};

struct hs_request {
    hs_server *srv;
    struct MHD_Connection *conn;
    char method[16];
    char *path;
    char *body;
    size_t len, cap;
    int too_large;
    int handled;     /* the handler ran (or the server answered by itself) */
    int deferred;    /* suspended until hs_complete */
    int resp_ready;  /* status/resp_* are set and not yet queued */
    int queued;
    int status;
    char *resp_body;
    size_t resp_len;
    char ctype[64];
    char extra[160];
    char id[32];
    int64_t start_us;
    const char *log_keys[MAX_LOG_FIELDS], *log_vals[MAX_LOG_FIELDS];
    int n_log;
    void *data;
    hs_data_free data_free;
    const char **hnames, **hvalues;
    size_t nh, caph;
};

static int64_t mono_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/* ---- accessors ---- */

const char *hs_method(const hs_request *r) { return r->method; }
const char *hs_path(const hs_request *r) { return r->path; }
const char *hs_id(const hs_request *r) { return r->id; }
const char *hs_body(const hs_request *r) { return r->body ? r->body : ""; }
size_t hs_body_len(const hs_request *r) { return r->len; }
int64_t hs_start_us(const hs_request *r) { return r->start_us; }
int hs_status(const hs_request *r) { return r->status; }
int hs_port(const hs_server *s) { return s->port; }
int hs_inflight(hs_server *s) { return atomic_load(&s->inflight); }

const char *hs_header(hs_request *r, const char *name)
{
    return MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, name);
}

const char *hs_query(hs_request *r, const char *name)
{
    return MHD_lookup_connection_value(r->conn, MHD_GET_ARGUMENT_KIND, name);
}

static enum MHD_Result collect_header(void *cls, enum MHD_ValueKind kind, const char *key, const char *value)
{
    (void)kind;
    hs_request *r = cls;
    if (r->nh == r->caph) {
        size_t cap = r->caph ? r->caph * 2 : 16;
        const char **n = realloc(r->hnames, cap * sizeof *n);
        if (n == NULL) return MHD_NO;
        r->hnames = n;
        const char **v = realloc(r->hvalues, cap * sizeof *v);
        if (v == NULL) return MHD_NO;
        r->hvalues = v;
        r->caph = cap;
    }
    r->hnames[r->nh] = key;
    r->hvalues[r->nh] = value ? value : "";
    r->nh++;
    return MHD_YES;
}

size_t hs_headers(hs_request *r, const char ***names, const char ***values)
{
    if (r->hnames == NULL) MHD_get_connection_values(r->conn, MHD_HEADER_KIND, collect_header, r);
    *names = r->hnames;
    *values = r->hvalues;
    return r->nh;
}

void hs_set_log_field(hs_request *r, const char *key, const char *value)
{
    for (int i = 0; i < r->n_log; i++)
        if (strcmp(r->log_keys[i], key) == 0) {
            r->log_vals[i] = value;
            return;
        }
    if (r->n_log < MAX_LOG_FIELDS) {
        r->log_keys[r->n_log] = key;
        r->log_vals[r->n_log++] = value;
    }
}

void hs_set_data(hs_request *r, void *data, hs_data_free fr)
{
    r->data = data;
    r->data_free = fr;
}

void *hs_data(hs_request *r) { return r->data; }

/* ---- answering ---- */

static void set_answer(hs_request *r, int status, const char *content_type, const char *body, size_t len)
{
    free(r->resp_body);
    r->resp_body = NULL;
    r->resp_len = 0;
    if (body != NULL && len > 0) {
        r->resp_body = malloc(len);
        if (r->resp_body != NULL) {
            memcpy(r->resp_body, body, len);
            r->resp_len = len;
        }
    }
    r->status = status;
    snprintf(r->ctype, sizeof r->ctype, "%s", content_type ? content_type : "application/json");
    r->resp_ready = 1;
}

void hs_respond(hs_request *r, int status, const char *content_type, const char *body, size_t len,
                const char *extra_header)
{
    set_answer(r, status, content_type, body, len);
    snprintf(r->extra, sizeof r->extra, "%s", extra_header ? extra_header : "");
}

void hs_respond_error(hs_request *r, int status, const char *msg)
{
    json_t *j = json_pack("{s:{s:i,s:s}}", "error", "code", status, "message", msg ? msg : "");
    char *text = j ? json_dumps(j, JSON_COMPACT) : NULL;
    hs_respond(r, status, NULL, text ? text : "{}", text ? strlen(text) : 2, NULL);
    free(text);
    json_decref(j);
}

void hs_defer(hs_request *r)
{
    r->deferred = 1;
    MHD_suspend_connection(r->conn);
}

void hs_complete(hs_request *r, int status, const char *content_type, const char *body, size_t len)
{
    set_answer(r, status, content_type, body, len);
    /* MHD's resume takes its own lock, which orders the writes above before the MHD thread reads them. */
    MHD_resume_connection(r->conn);
}

/* Queues the prepared answer. Must run inside the access handler. */
static enum MHD_Result queue_answer(hs_request *r)
{
    struct MHD_Response *resp =
        MHD_create_response_from_buffer(r->resp_len, r->resp_body ? r->resp_body : (void *)"", MHD_RESPMEM_MUST_COPY);
    if (resp == NULL) return MHD_NO;
    MHD_add_response_header(resp, "Content-Type", r->ctype);
    MHD_add_response_header(resp, "X-Request-Id", r->id);
    MHD_add_response_header(resp, "Cache-Control", "no-store");
    if (r->extra[0]) {
        char *colon = strchr(r->extra, ':');
        if (colon) {
            *colon = '\0';
            const char *v = colon + 1;
            while (*v == ' ') v++;
            MHD_add_response_header(resp, r->extra, v);
        }
    }
    if (atomic_load(&r->srv->draining)) MHD_add_response_header(resp, "Connection", "close");
    enum MHD_Result rc = MHD_queue_response(r->conn, (unsigned)r->status, resp);
    MHD_destroy_response(resp);
    r->resp_ready = 0;
    r->queued = 1;
    return rc;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url, const char *method,
                                  const char *version, const char *upload_data, size_t *upload_data_size,
                                  void **con_cls)
{
    (void)version;
    hs_server *s = cls;
    hs_request *r = *con_cls;
    if (r == NULL) {
        r = calloc(1, sizeof *r);
        if (r == NULL) return MHD_NO;
        r->srv = s;
        r->conn = c;
        r->start_us = mono_us();
        snprintf(r->method, sizeof r->method, "%s", method);
        r->path = strdup(url ? url : "/");
        snprintf(r->id, sizeof r->id, "%s-%llu", s->id_prefix, (unsigned long long)atomic_fetch_add(&s->next_id, 1));
        *con_cls = r;
        atomic_fetch_add(&s->inflight, 1);
        if (atomic_load(&s->draining)) {
            r->handled = 1;
            hs_respond_error(r, 503, "shutting down");
            return queue_answer(r);
        }
        const char *cl = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
        if (cl != NULL && strtoull(cl, NULL, 10) > s->o.max_body) {
            /* Answer before reading the body: MHD then closes the connection instead of reading it. */
            r->handled = 1;
            r->too_large = 1;
            hs_respond_error(r, 413, "request body too large");
            return queue_answer(r);
        }
        return MHD_YES;
    }
    if (*upload_data_size > 0) {
        size_t n = *upload_data_size;
        *upload_data_size = 0;
        if (r->too_large) return MHD_YES;
        if (r->len + n > s->o.max_body) {
            r->too_large = 1;
            free(r->body);
            r->body = NULL;
            r->len = r->cap = 0;
            return MHD_YES;
        }
        if (r->len + n + 1 > r->cap) {
            size_t cap = r->cap ? r->cap : 1024;
            while (cap < r->len + n + 1) cap *= 2;
            char *b = realloc(r->body, cap);
            if (b == NULL) return MHD_NO;
            r->body = b;
            r->cap = cap;
        }
        memcpy(r->body + r->len, upload_data, n);
        r->len += n;
        r->body[r->len] = '\0';
        return MHD_YES;
    }
    if (r->queued) return MHD_YES;
    if (r->resp_ready) return queue_answer(r);
    if (r->handled) return MHD_YES; /* deferred and not complete yet (a spurious call) */
    r->handled = 1;
    if (r->too_large) {
        hs_respond_error(r, 413, "request body too large");
    } else {
        s->o.handler(r, s->o.ud);
    }
    if (r->resp_ready && !r->deferred) return queue_answer(r);
    if (!r->deferred) hs_respond_error(r, 500, "no answer");
    return r->deferred ? MHD_YES : queue_answer(r);
}

static void on_completed(void *cls, struct MHD_Connection *c, void **con_cls, enum MHD_RequestTerminationCode toe)
{
    (void)c;
    hs_server *s = cls;
    hs_request *r = *con_cls;
    if (r == NULL) return;
    *con_cls = NULL;
    int64_t lat = mono_us() - r->start_us;
    if (r->status == 0 && toe != MHD_REQUEST_TERMINATED_COMPLETED_OK) r->status = 499; /* client went away */
    if (s->o.on_complete) s->o.on_complete(r, lat, s->o.ud);
    if (log_enabled(LOG_INFO)) {
        char latency[32];
        snprintf(latency, sizeof latency, "%.6fs", (double)lat / 1e6);
        json_t *extra = json_pack("{s:{s:s,s:s,s:i,s:s},s:s}", "httpRequest", "requestMethod", r->method,
                                  "requestUrl", r->path ? r->path : "", "status", r->status, "latency", latency,
                                  "requestId", r->id);
        if (extra) {
            for (int i = 0; i < r->n_log; i++) json_object_set_new(extra, r->log_keys[i], json_string(r->log_vals[i]));
            log_json(r->status >= 500 ? LOG_WARNING : LOG_INFO, extra, "%s %s %d", r->method, r->path ? r->path : "",
                     r->status);
            json_decref(extra);
        }
    }
    if (r->data_free) r->data_free(r->data);
    free(r->hnames);
    free(r->hvalues);
    free(r->resp_body);
    free(r->body);
    free(r->path);
    free(r);
    atomic_fetch_sub(&s->inflight, 1);
}

static void mhd_log(void *cls, const char *fmt, va_list ap)
{
    (void)cls;
    char buf[512];
    vsnprintf(buf, sizeof buf, fmt, ap);
    size_t n = strlen(buf);
    while (n > 0 && buf[n - 1] == '\n') buf[--n] = '\0';
    log_debug("microhttpd: %s", buf);
}

hs_server *hs_start(const hs_options *o, const char **err)
{
    hs_server *s = calloc(1, sizeof *s);
    if (s == NULL) {
        *err = "out of memory";
        return NULL;
    }
    s->o = *o;
    if (s->o.threads == 0) s->o.threads = 4;
    if (s->o.max_connections == 0) s->o.max_connections = 1024;
    if (s->o.idle_timeout_s == 0) s->o.idle_timeout_s = 30;
    if (s->o.max_body == 0) s->o.max_body = 1 << 20;
    if (s->o.conn_memory == 0) s->o.conn_memory = 32 * 1024;
    util_random_id(s->id_prefix, 8);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)o->port)};
    if (inet_pton(AF_INET, o->listen ? o->listen : "0.0.0.0", &sa.sin_addr) != 1) {
        *err = "--listen needs an IPv4 address";
        free(s);
        return NULL;
    }
    s->d = MHD_start_daemon(MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL | MHD_ALLOW_SUSPEND_RESUME |
                                MHD_USE_ERROR_LOG,
                            0, NULL, NULL, on_request, s, MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&sa,
                            MHD_OPTION_THREAD_POOL_SIZE, s->o.threads, MHD_OPTION_NOTIFY_COMPLETED, on_completed, s,
                            MHD_OPTION_CONNECTION_LIMIT, s->o.max_connections, MHD_OPTION_CONNECTION_TIMEOUT,
                            s->o.idle_timeout_s, MHD_OPTION_CONNECTION_MEMORY_LIMIT, s->o.conn_memory,
                            MHD_OPTION_LISTEN_BACKLOG_SIZE, 1024u, MHD_OPTION_EXTERNAL_LOGGER, mhd_log, NULL,
                            MHD_OPTION_END);
    if (s->d == NULL) {
        *err = "cannot listen (address in use or not available)";
        free(s);
        return NULL;
    }
    const union MHD_DaemonInfo *info = MHD_get_daemon_info(s->d, MHD_DAEMON_INFO_BIND_PORT);
    s->port = info ? info->port : o->port;
    return s;
}

void hs_shutdown(hs_server *s, int grace_ms)
{
    if (s == NULL || s->stopped) return;
    atomic_store(&s->draining, 1);
    MHD_socket lfd = MHD_quiesce_daemon(s->d);
    if (lfd != MHD_INVALID_SOCKET) close(lfd);
    int64_t deadline = util_mono_ms() + grace_ms;
    while (atomic_load(&s->inflight) > 0 && util_mono_ms() < deadline) {
        struct timespec ts = {0, 2 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    if (atomic_load(&s->inflight) > 0) log_warn("http: %d requests still open after %d ms; closing them",
                                                atomic_load(&s->inflight), grace_ms);
    MHD_stop_daemon(s->d);
    s->d = NULL;
    s->stopped = 1;
}

void hs_free(hs_server *s)
{
    if (s == NULL) return;
    if (!s->stopped) hs_shutdown(s, 0);
    free(s);
}
