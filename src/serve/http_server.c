/* http_server: the inbound HTTP/1.1 server under `sluice serve` (libmicrohttpd, bounded thread pool, limits,
 * request ids, JSON access log, deferred answers, graceful shutdown).
 * Uses: libmicrohttpd, log, util. Must not: know routes, JSON bodies, auth or the store.
 *
 * MHD calls the access handler several times per request: first with the headers, then with each piece of the
 * body, then once with no data. The hs_request is allocated on the first call and released in on_completed;
 * a deferred request is suspended in MHD and resumed by hs_complete, which makes MHD call the handler once
 * more so the answer is queued from an MHD thread, as MHD requires. A deferred request is counted twice (the
 * server's reference and the completer's) and listed, so that shutdown can resume every suspended connection
 * before MHD_stop_daemon (which aborts the process when one is left suspended) and a late hs_complete finds
 * its request still allocated.
 *
 * Slow clients: MHD's connection timeout is an idle timeout (every byte received resets it), so a client that
 * trickles a header one byte at a time would hold its connection for ever. MHD 0.9.75 has no deadline for a
 * whole request, so each connection is stamped when it starts waiting for a request (MHD's connection
 * notifications, and our completion callback) and again when the request's first line is in (MHD's URI
 * callback), and a sweeper thread shuts down (shutdown(2); MHD then closes
 * it) the sockets whose request has not fully arrived by the deadline. MHD's own per-address limit
 * (MHD_OPTION_PER_IP_CONNECTION_LIMIT) keeps one client from taking every connection. */
#include "http_server.h"

#include <arpa/inet.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <pthread.h>
#include <sched.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "dbuf.h"
#include "log.h"
#include "mem.h"
#include "util.h"

#define MAX_LOG_FIELDS 6

/* A connection's read deadline (one per MHD connection, its socket context). Guarded by hs_server.mu. */
typedef struct hs_conn {
    struct hs_conn *prev, *next;
    int fd;
    int reading;      /* 1 while a request's head or body is awaited: the deadline runs */
    int cut;          /* shut down by the sweeper */
    int64_t since_us; /* when the wait began: the accept, or the previous request's completion */
} hs_conn;

struct hs_server {
    struct MHD_Daemon *d;
    hs_options o;
    int port;
    atomic_int inflight;
    atomic_int draining;
    atomic_ullong next_id;
    char id_prefix[9];
    int stopped;
    pthread_mutex_t mu;       /* guards conns, deferred, stopping, sweep_stop */
    pthread_cond_t cv;        /* wakes the sweeper to stop */
    hs_conn *conns;           /* every open connection */
    hs_request *deferred;     /* every suspended request */
    int stopping;             /* shutdown answered the deferred requests: hs_defer suspends no more */
    int sweep_stop;
    int sweeping;             /* the sweeper thread runs */
    pthread_t sweeper;
};

/* A deferred request's state: who answers it. */
enum { D_NONE = 0, D_WAITING, D_COMPLETING, D_DONE, D_FORCED };

struct hs_request {
    hs_server *srv;
    struct MHD_Connection *conn;
    char method[16];
    char *path;
    dbuf body; /* capped at the server's max_body */
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
    atomic_int refs;   /* the server's, and the completer's while deferred */
    atomic_int dstate; /* D_*: set by hs_defer, hs_complete and hs_shutdown */
    hs_request *dprev, *dnext;
    int listed;        /* on srv->deferred (under srv->mu) */
};

/* Drops one reference; the last frees the request. Touches nothing but the request (the server may be gone). */
static void req_release(hs_request *r)
{
    if (atomic_fetch_sub(&r->refs, 1) != 1) return;
    if (r->data_free) r->data_free(r->data);
    free(r->hnames);
    free(r->hvalues);
    free(r->resp_body);
    dbuf_free(&r->body);
    free(r->path);
    free(r);
}

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
const char *hs_body(const hs_request *r) { return r->body.data ? r->body.data : ""; }
size_t hs_body_len(const hs_request *r) { return r->body.len; }
int64_t hs_start_us(const hs_request *r) { return r->start_us; }
int hs_status(const hs_request *r) { return r->status; }
int hs_port(const hs_server *s) { return s->port; }
int hs_inflight(hs_server *s) { return atomic_load(&s->inflight); }

hs_server *hs_request_server(hs_request *r) { return r->srv; }

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
        const char **n = xrealloc(r->hnames, cap * sizeof *n);
        r->hnames = n;
        const char **v = xrealloc(r->hvalues, cap * sizeof *v);
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
        r->resp_body = xmalloc(len);
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
    hs_server *s = r->srv;
    atomic_fetch_add(&r->refs, 1); /* the completer's */
    pthread_mutex_lock(&s->mu);
    if (s->stopping) {
        /* Shutdown has already answered the deferred requests and is about to stop MHD, which must find no
         * connection suspended: answer this one now as well; its completer's answer will be dropped. */
        pthread_mutex_unlock(&s->mu);
        atomic_store(&r->dstate, D_FORCED);
        hs_respond_error(r, 503, "shutting down");
        return;
    }
    atomic_store(&r->dstate, D_WAITING);
    r->deferred = 1;
    r->dnext = s->deferred;
    if (s->deferred) s->deferred->dprev = r;
    s->deferred = r;
    r->listed = 1;
    MHD_suspend_connection(r->conn);
    pthread_mutex_unlock(&s->mu);
}

void hs_complete(hs_request *r, int status, const char *content_type, const char *body, size_t len)
{
    int expect = D_WAITING;
    if (atomic_compare_exchange_strong(&r->dstate, &expect, D_COMPLETING)) {
        set_answer(r, status, content_type, body, len);
        /* MHD's resume takes its own lock, which orders the writes above before the MHD thread reads them. */
        MHD_resume_connection(r->conn);
        atomic_store(&r->dstate, D_DONE);
    }
    /* else shutdown answered it (D_FORCED): the connection may be gone, so only the reference is dropped */
    req_release(r);
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

/* ---- read deadlines ---- */

static hs_conn *conn_of(struct MHD_Connection *c)
{
    const union MHD_ConnectionInfo *ci = MHD_get_connection_info(c, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
    return ci ? (hs_conn *)ci->socket_context : NULL;
}

/* reading = 1: the connection waits for a request from now on (the deadline starts); 0: its request is in. */
static void conn_reading(hs_server *s, struct MHD_Connection *c, int reading)
{
    pthread_mutex_lock(&s->mu);
    hs_conn *hc = conn_of(c); /* under mu: on_connection clears it there */
    if (hc) {
        hc->reading = reading;
        if (reading) hc->since_us = mono_us();
    }
    pthread_mutex_unlock(&s->mu);
}

static void on_connection(void *cls, struct MHD_Connection *c, void **socket_context,
                          enum MHD_ConnectionNotificationCode code)
{
    hs_server *s = cls;
    if (code == MHD_CONNECTION_NOTIFY_STARTED) {
        const union MHD_ConnectionInfo *ci = MHD_get_connection_info(c, MHD_CONNECTION_INFO_CONNECTION_FD);
        hs_conn *hc = ci ? xcalloc(1, sizeof *hc) : NULL;
        if (hc == NULL) return; /* no deadline for this one; the idle timeout still applies */
        hc->fd = ci->connect_fd;
        hc->reading = 1;
        hc->since_us = mono_us();
        pthread_mutex_lock(&s->mu);
        hc->next = s->conns;
        if (s->conns) s->conns->prev = hc;
        s->conns = hc;
        *socket_context = hc;
        pthread_mutex_unlock(&s->mu);
        return;
    }
    /* MHD_CONNECTION_NOTIFY_CLOSED: before MHD closes the socket, so the sweeper never shuts down a reused fd */
    pthread_mutex_lock(&s->mu);
    hs_conn *hc = *socket_context;
    if (hc) {
        if (hc->prev) hc->prev->next = hc->next;
        else s->conns = hc->next;
        if (hc->next) hc->next->prev = hc->prev;
        *socket_context = NULL;
    }
    pthread_mutex_unlock(&s->mu);
    free(hc);
}

/* MHD's URI callback: a request's first line is in. Its deadline restarts here, so the time a kept-alive
 * connection sat idle before it (bounded by the idle timeout) never shortens the time its request has to arrive;
 * a client trickling the first line itself is still cut at the deadline of its wait. Returns no request state
 * (on_request allocates it). */
static void *on_uri(void *cls, const char *uri, struct MHD_Connection *c)
{
    (void)uri;
    conn_reading(cls, c, 1);
    return NULL;
}

/* Shuts down the connections whose request is overdue; runs until hs_shutdown stops it. */
static void *sweep_main(void *arg)
{
    hs_server *s = arg;
    util_thread_name("http-deadline");
    int64_t limit_us = (int64_t)s->o.read_timeout_s * 1000000;
    int64_t period_ms = s->o.read_timeout_s * 1000 / 8;
    if (period_ms < 50) period_ms = 50;
    if (period_ms > 1000) period_ms = 1000;
    int64_t last_log_ms = 0;
    long unlogged = 0;
    pthread_mutex_lock(&s->mu);
    while (!s->sweep_stop) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_nsec += (long)(period_ms % 1000) * 1000000L;
        ts.tv_sec += (time_t)(period_ms / 1000) + ts.tv_nsec / 1000000000L;
        ts.tv_nsec %= 1000000000L;
        pthread_cond_timedwait(&s->cv, &s->mu, &ts);
        if (s->sweep_stop) break;
        int64_t now = mono_us();
        for (hs_conn *hc = s->conns; hc; hc = hc->next)
            if (hc->reading && !hc->cut && now - hc->since_us >= limit_us) {
                /* MHD reads end-of-file and closes the connection itself; the fd stays MHD's. */
                shutdown(hc->fd, SHUT_RDWR);
                hc->cut = 1;
                unlogged++;
            }
        int64_t now_ms = util_mono_ms();
        if (unlogged > 0 && now_ms - last_log_ms >= 10000) { /* at most one line per 10 s under attack */
            log_warn("http: closed %ld connection(s) whose request had not arrived within %u s (--read-timeout)",
                     unlogged, s->o.read_timeout_s);
            unlogged = 0;
            last_log_ms = now_ms;
        }
    }
    pthread_mutex_unlock(&s->mu);
    return NULL;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url, const char *method,
                                  const char *version, const char *upload_data, size_t *upload_data_size,
                                  void **con_cls)
{
    (void)version;
    hs_server *s = cls;
    hs_request *r = *con_cls;
    if (r == NULL) {
        r = xcalloc(1, sizeof *r);
        r->srv = s;
        r->conn = c;
        dbuf_init(&r->body, s->o.max_body);
        r->start_us = mono_us();
        snprintf(r->method, sizeof r->method, "%s", method);
        r->path = xstrdup(url ? url : "/");
        snprintf(r->id, sizeof r->id, "%s-%llu", s->id_prefix, (unsigned long long)atomic_fetch_add(&s->next_id, 1));
        atomic_init(&r->refs, 1);
        atomic_init(&r->dstate, D_NONE);
        *con_cls = r;
        atomic_fetch_add(&s->inflight, 1);
        if (atomic_load(&s->draining)) {
            r->handled = 1;
            conn_reading(s, c, 0);
            hs_respond_error(r, 503, "shutting down");
            return queue_answer(r);
        }
        const char *cl = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
        if (cl != NULL && strtoull(cl, NULL, 10) > s->o.max_body) {
            /* Answer before reading the body: MHD then closes the connection instead of reading it. */
            r->handled = 1;
            r->too_large = 1;
            conn_reading(s, c, 0);
            hs_respond_error(r, 413, "request body too large");
            return queue_answer(r);
        }
        return MHD_YES;
    }
    if (*upload_data_size > 0) {
        size_t n = *upload_data_size;
        *upload_data_size = 0;
        if (r->too_large) return MHD_YES;
        if (dbuf_add(&r->body, upload_data, n) != 0) {
            r->too_large = 1;
            dbuf_free(&r->body);
        }
        return MHD_YES;
    }
    if (r->queued) return MHD_YES;
    if (r->resp_ready) return queue_answer(r);
    if (r->handled) return MHD_YES; /* deferred and not complete yet (a spurious call) */
    r->handled = 1;
    conn_reading(s, c, 0); /* the whole request is in: its deadline no longer runs */
    if (r->too_large) {
        hs_respond_error(r, 413, "request body too large");
    } else {
        s->o.handler(r, s->o.ud);
    }
    /* Deferred: the completer may be writing the answer already (hs_complete, another thread), so nothing of it is
     * read here; MHD calls again once the connection is resumed. */
    if (r->deferred) return MHD_YES;
    if (!r->resp_ready) hs_respond_error(r, 500, "no answer");
    return queue_answer(r);
}

/* The request path for the access log: invalid UTF-8 bytes as %XX (jansson refuses invalid strings, and the line
 * would be lost). Caller frees. */
static char *loggable(const char *text)
{
    const unsigned char *p = (const unsigned char *)(text ? text : "");
    size_t n = strlen((const char *)p);
    char *out = xmalloc(n * 3 + 1), *o = out;
    for (size_t i = 0; i < n;) {
        size_t k = util_utf8_seq(p + i, n - i);
        if (k == 0) {
            o += sprintf(o, "%%%02X", p[i]);
            i++;
        } else {
            memcpy(o, p + i, k);
            o += k;
            i += k;
        }
    }
    *o = '\0';
    return out;
}

static void on_completed(void *cls, struct MHD_Connection *c, void **con_cls, enum MHD_RequestTerminationCode toe)
{
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
        char *method = loggable(r->method), *path = loggable(r->path);
        json_t *extra = json_pack("{s:{s:s,s:s,s:i,s:s},s:s}", "httpRequest", "requestMethod", method ? method : "?",
                                  "requestUrl", path ? path : "?", "status", r->status, "latency", latency,
                                  "requestId", r->id);
        if (extra) {
            for (int i = 0; i < r->n_log; i++) json_object_set_new(extra, r->log_keys[i], json_string(r->log_vals[i]));
            log_json(r->status >= 500 ? LOG_WARNING : LOG_INFO, extra, "%s %s %d", method ? method : "?",
                     path ? path : "?", r->status);
            json_decref(extra);
        }
        free(method);
        free(path);
    }
    pthread_mutex_lock(&s->mu);
    if (r->listed) {
        if (r->dprev) r->dprev->dnext = r->dnext;
        else s->deferred = r->dnext;
        if (r->dnext) r->dnext->dprev = r->dprev;
        r->listed = 0;
    }
    pthread_mutex_unlock(&s->mu);
    conn_reading(s, c, 1); /* a kept-alive connection now waits for its next request */
    atomic_fetch_sub(&s->inflight, 1);
    req_release(r);
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

/* Every connection is a file descriptor: raises the soft open-file limit (up to the hard one) to fit
 * *max_connections and what else the process keeps open, or lowers *max_connections to what fits. */
static void fit_open_files(unsigned *max_connections)
{
    const rlim_t reserve = 256; /* the store, the Dataflow client's connections, workflow files, logs */
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0) return;
    rlim_t want = (rlim_t)*max_connections + reserve;
    if (rl.rlim_cur != RLIM_INFINITY && rl.rlim_cur < want) {
        rlim_t was = rl.rlim_cur;
        rl.rlim_cur = rl.rlim_max == RLIM_INFINITY || rl.rlim_max >= want ? want : rl.rlim_max;
        if (setrlimit(RLIMIT_NOFILE, &rl) != 0) rl.rlim_cur = was;
    }
    if (rl.rlim_cur != RLIM_INFINITY && rl.rlim_cur < want) {
        unsigned fit = rl.rlim_cur > reserve + 16 ? (unsigned)(rl.rlim_cur - reserve) : 16;
        log_warn("http: the open-file limit (%llu) allows %u connections, not %u: raise it (ulimit -n) or lower "
                 "--max-connections", (unsigned long long)rl.rlim_cur, fit, *max_connections);
        *max_connections = fit;
    }
}

/* libmicrohttpd's fatal errors (its default prints a bare line and aborts): logged as one JSON line with where MHD
 * stopped, then the abort the library requires (it cannot go on after a panic). */
static void mhd_panic(void *cls, const char *file, unsigned int line, const char *reason)
{
    (void)cls;
    log_error("http: libmicrohttpd fatal error at %s:%u: %s", file ? file : "?", line, reason ? reason : "?");
    abort();
}

hs_server *hs_start(const hs_options *o, const char **err)
{
    hs_server *s = xcalloc(1, sizeof *s);
    s->o = *o;
    if (s->o.threads == 0) s->o.threads = 4;
    if (s->o.max_connections == 0) s->o.max_connections = 4096;
    if (s->o.idle_timeout_s == 0) s->o.idle_timeout_s = 30;
    if (s->o.read_timeout_s == 0) s->o.read_timeout_s = 30;
    fit_open_files(&s->o.max_connections);
    if (s->o.max_connections_per_ip == 0) s->o.max_connections_per_ip = s->o.max_connections / 2;
    if (s->o.max_connections_per_ip == 0) s->o.max_connections_per_ip = 1;
    if (s->o.max_connections_per_ip > s->o.max_connections) s->o.max_connections_per_ip = s->o.max_connections;
    if (s->o.max_body == 0) s->o.max_body = 1 << 20;
    if (s->o.conn_memory == 0) s->o.conn_memory = 32 * 1024;
    util_random_id(s->id_prefix, 8);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)o->port)};
    if (inet_pton(AF_INET, o->listen ? o->listen : "0.0.0.0", &sa.sin_addr) != 1) {
        *err = "--listen needs an IPv4 address";
        free(s);
        return NULL;
    }
    pthread_mutex_init(&s->mu, NULL);
    pthread_cond_init(&s->cv, NULL);
    MHD_set_panic_func(mhd_panic, NULL);
    s->d = MHD_start_daemon(MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL | MHD_ALLOW_SUSPEND_RESUME |
                                MHD_USE_ERROR_LOG,
                            0, NULL, NULL, on_request, s, MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&sa,
                            MHD_OPTION_THREAD_POOL_SIZE, s->o.threads, MHD_OPTION_NOTIFY_COMPLETED, on_completed, s,
                            MHD_OPTION_NOTIFY_CONNECTION, on_connection, s, MHD_OPTION_URI_LOG_CALLBACK, on_uri, s,
                            MHD_OPTION_CONNECTION_LIMIT,
                            s->o.max_connections, MHD_OPTION_PER_IP_CONNECTION_LIMIT, s->o.max_connections_per_ip,
                            MHD_OPTION_CONNECTION_TIMEOUT, s->o.idle_timeout_s, MHD_OPTION_CONNECTION_MEMORY_LIMIT,
                            s->o.conn_memory,
                            MHD_OPTION_LISTEN_BACKLOG_SIZE, 1024u, MHD_OPTION_EXTERNAL_LOGGER, mhd_log, NULL,
                            MHD_OPTION_END);
    if (s->d == NULL) {
        *err = "cannot listen (address in use or not available)";
        pthread_mutex_destroy(&s->mu);
        pthread_cond_destroy(&s->cv);
        free(s);
        return NULL;
    }
    const union MHD_DaemonInfo *info = MHD_get_daemon_info(s->d, MHD_DAEMON_INFO_BIND_PORT);
    s->port = info ? info->port : o->port;
    /* Without the sweeper a trickling client is only bounded by the idle timeout: say so, but serve. */
    s->sweeping = pthread_create(&s->sweeper, NULL, sweep_main, s) == 0;
    if (!s->sweeping) log_warn("http: cannot start the read-deadline thread; --read-timeout is not enforced");
    return s;
}

static void stop_sweeper(hs_server *s)
{
    if (!s->sweeping) return;
    pthread_mutex_lock(&s->mu);
    s->sweep_stop = 1;
    pthread_cond_signal(&s->cv);
    pthread_mutex_unlock(&s->mu);
    pthread_join(s->sweeper, NULL);
    s->sweeping = 0;
}

void hs_shutdown(hs_server *s, int grace_ms)
{
    if (s == NULL || s->stopped) return;
    atomic_store(&s->draining, 1);
    /* No MHD_quiesce_daemon: on an epoll daemon with a thread pool it races the workers' own removal of the
     * listening socket from their epoll sets and aborts the process ("Failed to remove listen FD from epoll set",
     * an open libmicrohttpd defect; seen once in integration.test_serve_api). A request that arrives while draining
     * is answered 503 with Connection: close (on_request); the socket closes with MHD_stop_daemon. */
    int64_t deadline = util_mono_ms() + grace_ms;
    while (atomic_load(&s->inflight) > 0 && util_mono_ms() < deadline) {
        struct timespec ts = {0, 2 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    if (atomic_load(&s->inflight) > 0) log_warn("http: %d requests still open after %d ms; closing them",
                                                atomic_load(&s->inflight), grace_ms);
    /* MHD_stop_daemon aborts the process when a connection is still suspended: answer every deferred request
     * that its completer has not answered yet with 503 (the completer's hs_complete is then dropped), and let
     * one that is being completed right now finish its resume first. */
    int forced = 0;
    pthread_mutex_lock(&s->mu);
    s->stopping = 1;
    for (hs_request *r = s->deferred; r; r = r->dnext) {
        int expect = D_WAITING;
        if (atomic_compare_exchange_strong(&r->dstate, &expect, D_FORCED)) {
            hs_respond_error(r, 503, "shutting down");
            MHD_resume_connection(r->conn);
            forced++;
        } else {
            while (atomic_load(&r->dstate) == D_COMPLETING) sched_yield();
        }
    }
    pthread_mutex_unlock(&s->mu);
    if (forced > 0) {
        log_warn("http: answered %d request(s) still waiting for their answer with 503", forced);
        /* Give the 503s a moment to leave (MHD closes whatever is left either way). */
        int64_t until = util_mono_ms() + 200;
        while (atomic_load(&s->inflight) > 0 && util_mono_ms() < until) {
            struct timespec ts = {0, 2 * 1000 * 1000};
            nanosleep(&ts, NULL);
        }
    }
    stop_sweeper(s);
    MHD_stop_daemon(s->d);
    s->d = NULL;
    s->stopped = 1;
}

void hs_free(hs_server *s)
{
    if (s == NULL) return;
    if (!s->stopped) hs_shutdown(s, 0);
    pthread_mutex_destroy(&s->mu);
    pthread_cond_destroy(&s->cv);
    free(s);
}
