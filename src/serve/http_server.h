/* http_server: the inbound HTTP/1.1 server under `sluice serve`: libmicrohttpd with a bounded thread pool,
 * request limits (body, connections in all and per client address, idle time, a deadline for reading each
 * request, header memory), request ids, one JSON access-log line per request, deferred answers (a request may
 * be answered later from another thread) and graceful shutdown.
 * Uses: libmicrohttpd, log, util. Must not: know routes, JSON bodies, auth or the store: the handler decides.
 *
 * Per-request state (hs_request) is allocated on MHD's first call for the request and released in MHD's
 * completion callback. A deferred request has a second owner, whoever will call hs_complete: it is freed when
 * both have let go (the completion callback and hs_complete), so an answer that comes after shutdown answered
 * the request itself (503) is dropped safely. */
#ifndef SLUICE_HTTP_SERVER_H
#define SLUICE_HTTP_SERVER_H
#include <stddef.h>
#include <stdint.h>

typedef struct hs_server hs_server;
typedef struct hs_request hs_request;

/* Called once per request, when the whole body has been read (or found too large: then the server has already
 * answered 413 and the handler is not called). The handler must either answer (hs_respond) before returning,
 * or call hs_defer and later hs_complete exactly once from any thread. */
typedef void (*hs_handler)(hs_request *r, void *ud);
/* Called from the completion callback with the handler's per-request data (hs_set_data), if any. */
typedef void (*hs_data_free)(void *data);

typedef struct {
    const char *listen;        /* IPv4 address; NULL: 0.0.0.0 */
    int port;                  /* 0: ephemeral */
    unsigned threads;          /* worker threads; 0: 4 */
    unsigned max_connections;  /* 0: 4096 (the process's open-file limit is raised to fit, or this is lowered) */
    unsigned max_connections_per_ip; /* connections from one client address at once; 0: max_connections / 2 */
    unsigned idle_timeout_s;   /* a connection idle (or a request incomplete) this long is closed; 0: 30 */
    /* A request's head and body must have arrived this long after the connection was accepted or answered its
     * previous request, however slowly they trickle in; otherwise the connection is closed. 0: 30. */
    unsigned read_timeout_s;
    size_t max_body;           /* bigger bodies get 413; 0: 1 MiB */
    size_t conn_memory;        /* per-connection memory (request line + headers); 0: 32 KiB */
    hs_handler handler;
    void *ud;
    /* Called from the completion callback of every request that got an answer, before it is freed (metrics);
     * may be NULL. */
    void (*on_complete)(hs_request *r, int64_t latency_us, void *ud);
} hs_options;

/* Starts listening. Returns the server, or NULL with *err (static string). */
hs_server *hs_start(const hs_options *o, const char **err);
/* The bound port. */
int hs_port(const hs_server *s);
/* Graceful stop: stops accepting connections, answers new requests on open connections with 503 and
 * "Connection: close", waits up to grace_ms for every started request to be answered, answers those still
 * deferred with 503 itself (their later hs_complete is then dropped), then closes everything.
 * Safe to call once; hs_free afterwards. */
void hs_shutdown(hs_server *s, int grace_ms);
void hs_free(hs_server *s);
/* Requests started and not yet completed. */
int hs_inflight(hs_server *s);
/* The server a request came to (for a handler that reports on it, as /metrics does). */
hs_server *hs_request_server(hs_request *r);

/* ---- inside a handler ---- */
const char *hs_method(const hs_request *r);
const char *hs_path(const hs_request *r);  /* without the query string */
const char *hs_id(const hs_request *r);    /* the request id (also sent as X-Request-Id) */
const char *hs_body(const hs_request *r);  /* NUL-terminated; "" when empty */
size_t hs_body_len(const hs_request *r);
const char *hs_header(hs_request *r, const char *name); /* case-insensitive; NULL if absent; borrowed */
const char *hs_query(hs_request *r, const char *name);  /* NULL if absent; borrowed */
/* Every request header as name/value pairs (borrowed until the request completes); returns the count. */
size_t hs_headers(hs_request *r, const char ***names, const char ***values);
int64_t hs_start_us(const hs_request *r);
/* Extra fields for the access-log line (borrowed static strings). */
void hs_set_log_field(hs_request *r, const char *key, const char *value);
/* Per-request data owned by the handler; freed with `fr` when the request completes. */
void hs_set_data(hs_request *r, void *data, hs_data_free fr);
void *hs_data(hs_request *r);

/* Answers with `status` and a body (copied). content_type NULL: application/json. `extra_header` may be a
 * "Name: value" line or NULL. */
void hs_respond(hs_request *r, int status, const char *content_type, const char *body, size_t len,
                const char *extra_header);
/* Answers {"error":{"code":status,"message":msg}}. */
void hs_respond_error(hs_request *r, int status, const char *msg);
/* Defers the answer: the connection is suspended until hs_complete, which may run on any thread. */
void hs_defer(hs_request *r);
/* Answers a deferred request and lets go of it: must be called exactly once per hs_defer, even during or after
 * hs_shutdown (the answer is then dropped if shutdown already answered 503); `r` is not to be used after. */
void hs_complete(hs_request *r, int status, const char *content_type, const char *body, size_t len);
/* The status the request was answered with (0 before). */
int hs_status(const hs_request *r);

#endif
