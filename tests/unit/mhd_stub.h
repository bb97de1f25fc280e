/* mhd_stub: a tiny libmicrohttpd server started inside a test (127.0.0.1, ephemeral port, a thread per
 * connection) with built-in misbehaviours: delays, dropped connections, truncated and huge bodies, and one
 * canned response the test sets for every /v1b3/ path. Header-only: included by the tests that need it.
 * Per-request state is allocated on the first handler call and freed in the completion callback. */
#ifndef SLUICE_MHD_STUB_H
#define SLUICE_MHD_STUB_H
#include <arpa/inet.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

typedef struct stub_server {
    struct MHD_Daemon *d;
    int port;
    char base[64];
    pthread_mutex_t mu;
    /* the canned /v1b3/ response (set by the test, read under mu) */
    int canned_status;
    char *canned_body;
    char *canned_retry_after;
    int canned_mode; /* 0 normal, 1 drop, 2 truncate, 3 huge chunked (canned_huge bytes) */
    size_t canned_huge;
    /* counters (under mu) */
    int requests, inflight, max_inflight;
    char last_method[16];
    char *last_body;
    char last_auth[512];
} stub_server;

typedef struct stub_req {
    char *body;
    size_t len;
    int started;
} stub_req;

struct stub_gen {
    size_t total, sent, limit; /* limit: bytes to send before failing (truncate) */
};

static __attribute__((unused)) ssize_t stub_gen_cb(void *cls, uint64_t pos, char *buf, size_t max)
{
    struct stub_gen *g = cls;
    (void)pos;
    size_t stop = g->limit ? g->limit : g->total;
    if (g->sent >= stop) return g->limit ? MHD_CONTENT_READER_END_WITH_ERROR : MHD_CONTENT_READER_END_OF_STREAM;
    size_t n = stop - g->sent < max ? stop - g->sent : max;
    memset(buf, g->limit ? '{' : 'x', n);
    g->sent += n;
    return (ssize_t)n;
}

static __attribute__((unused)) void stub_gen_free(void *cls) { free(cls); }

static __attribute__((unused)) void stub_sleep_ms(long ms)
{
    struct timespec t = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&t, NULL);
}

static __attribute__((unused)) enum MHD_Result stub_queue(struct MHD_Connection *c, int status, const char *body, const char *extra_name,
                                  const char *extra_value)
{
    struct MHD_Response *r =
        MHD_create_response_from_buffer(strlen(body), (void *)body, MHD_RESPMEM_MUST_COPY);
    MHD_add_response_header(r, "Content-Type", "application/json");
    if (extra_name) MHD_add_response_header(r, extra_name, extra_value);
    enum MHD_Result ret = MHD_queue_response(c, (unsigned)status, r);
    MHD_destroy_response(r);
    return ret;
}

static __attribute__((unused)) enum MHD_Result stub_queue_gen(struct MHD_Connection *c, size_t total, size_t limit, int declare_size)
{
    struct stub_gen *g = calloc(1, sizeof *g);
    g->total = total;
    g->limit = limit;
    struct MHD_Response *r = MHD_create_response_from_callback(declare_size ? total : MHD_SIZE_UNKNOWN, 4096,
                                                               stub_gen_cb, g, stub_gen_free);
    MHD_add_response_header(r, "Content-Type", "application/json");
    enum MHD_Result ret = MHD_queue_response(c, 200, r);
    MHD_destroy_response(r);
    return ret;
}

static __attribute__((unused)) enum MHD_Result stub_handler(void *cls, struct MHD_Connection *c, const char *url, const char *method,
                                    const char *version, const char *upload, size_t *upload_size, void **con_cls)
{
    stub_server *s = cls;
    (void)version;
    stub_req *rq = *con_cls;
    if (rq == NULL) {
        rq = calloc(1, sizeof *rq);
        *con_cls = rq;
        return MHD_YES;
    }
    if (*upload_size) {
        char *nb = realloc(rq->body, rq->len + *upload_size + 1);
        memcpy(nb + rq->len, upload, *upload_size);
        rq->body = nb;
        rq->len += *upload_size;
        rq->body[rq->len] = '\0';
        *upload_size = 0;
        return MHD_YES;
    }
    const char *auth = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Authorization");
    pthread_mutex_lock(&s->mu);
    s->requests++;
    s->inflight++;
    if (s->inflight > s->max_inflight) s->max_inflight = s->inflight;
    snprintf(s->last_method, sizeof s->last_method, "%s", method);
    snprintf(s->last_auth, sizeof s->last_auth, "%s", auth ? auth : "");
    free(s->last_body);
    s->last_body = strdup(rq->body ? rq->body : "");
    pthread_mutex_unlock(&s->mu);

    enum MHD_Result ret;
    const char *q;
    if (strncmp(url, "/delay", 6) == 0) {
        q = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "ms");
        stub_sleep_ms(q ? atol(q) : 100);
        ret = stub_queue(c, 200, "{\"ok\":true}", NULL, NULL);
    } else if (strcmp(url, "/status") == 0) {
        q = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "code");
        const char *ra = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "retry_after");
        ret = stub_queue(c, q ? atoi(q) : 200, "{}", ra ? "Retry-After" : NULL, ra);
    } else if (strcmp(url, "/echo") == 0) {
        char *b = NULL;
        if (asprintf(&b, "%s %s", method, rq->body ? rq->body : "") < 0) b = NULL;
        ret = stub_queue(c, 200, b ? b : "", NULL, NULL);
        free(b);
    } else if (strcmp(url, "/drop") == 0) {
        ret = MHD_NO;
    } else if (strcmp(url, "/truncated") == 0) {
        ret = stub_queue_gen(c, 1000, 10, 1);
    } else if (strcmp(url, "/huge") == 0) {
        q = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "n");
        const char *cl = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "cl");
        ret = stub_queue_gen(c, q ? (size_t)atol(q) : 1000000, 0, cl != NULL);
    } else if (strncmp(url, "/v1b3/", 6) == 0 || strncmp(url, "/token", 6) == 0) {
        pthread_mutex_lock(&s->mu);
        int mode = s->canned_mode, status = s->canned_status ? s->canned_status : 200;
        char *body = strdup(s->canned_body ? s->canned_body : "{}");
        char *ra = s->canned_retry_after ? strdup(s->canned_retry_after) : NULL;
        size_t huge = s->canned_huge;
        pthread_mutex_unlock(&s->mu);
        if (mode == 1) ret = MHD_NO;
        else if (mode == 2) ret = stub_queue_gen(c, 1000, 10, 1);
        else if (mode == 3) ret = stub_queue_gen(c, huge, 0, 0);
        else ret = stub_queue(c, status, body, ra ? "Retry-After" : NULL, ra);
        free(body);
        free(ra);
    } else {
        ret = stub_queue(c, 404, "{\"error\":{\"code\":404}}", NULL, NULL);
    }
    pthread_mutex_lock(&s->mu);
    s->inflight--;
    pthread_mutex_unlock(&s->mu);
    return ret;
}

static __attribute__((unused)) void stub_completed(void *cls, struct MHD_Connection *c, void **con_cls, enum MHD_RequestTerminationCode t)
{
    (void)cls;
    (void)c;
    (void)t;
    stub_req *rq = *con_cls;
    if (rq) {
        free(rq->body);
        free(rq);
    }
    *con_cls = NULL;
}

/* Starts the server; returns NULL on failure. */
static __attribute__((unused)) stub_server *stub_start(void)
{
    stub_server *s = calloc(1, sizeof *s);
    pthread_mutex_init(&s->mu, NULL);
    struct sockaddr_in sa;
    memset(&sa, 0, sizeof sa);
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    s->d = MHD_start_daemon(MHD_USE_THREAD_PER_CONNECTION | MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_POLL |
                                MHD_USE_ERROR_LOG,
                            0, NULL, NULL, stub_handler, s, MHD_OPTION_NOTIFY_COMPLETED, stub_completed, s,
                            MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&sa, MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)30,
                            MHD_OPTION_END);
    if (s->d == NULL) {
        free(s);
        return NULL;
    }
    s->port = MHD_get_daemon_info(s->d, MHD_DAEMON_INFO_BIND_PORT)->port;
    snprintf(s->base, sizeof s->base, "http://127.0.0.1:%d", s->port);
    return s;
}

static __attribute__((unused)) void stub_set(stub_server *s, int status, const char *body, int mode)
{
    pthread_mutex_lock(&s->mu);
    s->canned_status = status;
    free(s->canned_body);
    s->canned_body = body ? strdup(body) : NULL;
    s->canned_mode = mode;
    pthread_mutex_unlock(&s->mu);
}

static __attribute__((unused)) int stub_requests(stub_server *s)
{
    pthread_mutex_lock(&s->mu);
    int n = s->requests;
    pthread_mutex_unlock(&s->mu);
    return n;
}

static __attribute__((unused)) void stub_stop(stub_server *s)
{
    if (s == NULL) return;
    MHD_stop_daemon(s->d);
    pthread_mutex_destroy(&s->mu);
    free(s->canned_body);
    free(s->canned_retry_after);
    free(s->last_body);
    free(s);
}

#endif
