/* http_client: asynchronous HTTP/1.1 client on one libcurl multi handle, driven by hc_run() from a single
 * event loop, plus one-shot timers on the same loop (retry backoff) and a blocking hc_perform_sync().
 * Uses: libcurl (multi + easy), log. Must not: know about Google, JSON, retries or credentials; never logs
 * request headers or bodies (they carry bearer tokens). */
#ifndef SLUICE_HTTP_CLIENT_H
#define SLUICE_HTTP_CLIENT_H
#include <stddef.h>
#include <stdint.h>

typedef struct hc_client hc_client;

/* A monotonic clock in milliseconds; tests inject their own. */
typedef int64_t (*hc_clock_fn)(void *ud);

typedef struct hc_options {
    long connect_timeout_ms;    /* 0: 10,000 */
    long total_timeout_ms;      /* per transfer unless the request overrides it; 0: 60,000 */
    size_t max_body;            /* response bodies larger than this fail with HC_ERR_TOO_LARGE; 0: 8 MiB */
    long max_conns_per_host;    /* 0: 256; transfers beyond it wait inside libcurl */
    const char *user_agent;     /* NULL: "sluice/<version>"; copied */
    hc_clock_fn clock;          /* NULL: CLOCK_MONOTONIC */
    void *clock_ud;
} hc_options;

/* Why a transfer produced no HTTP response. CONNECT means the request was certainly not sent (a launch may be
 * re-sent); TIMEOUT and RESET mean the outcome is unknown (the server may have acted on it). */
typedef enum {
    HC_OK = 0,
    HC_ERR_CONNECT,   /* refused, unreachable, DNS, connect timeout, TLS handshake */
    HC_ERR_TIMEOUT,   /* total timeout after the connection was made */
    HC_ERR_RESET,     /* connection reset / closed mid-exchange / empty reply / truncated body */
    HC_ERR_TOO_LARGE, /* response body exceeded max_body */
    HC_ERR_CANCELLED, /* hc_free() while in flight */
    HC_ERR_OTHER
} hc_error;

const char *hc_error_name(hc_error e); /* static string, e.g. "timeout" */

/* s percent-encoded by libcurl (curl_easy_escape: every byte but A-Z a-z 0-9 - . _ ~), for a URL's path or query or a
 * form body. Caller frees (libcurl's own copy is wiped: the text may be a secret). */
char *hc_escape(const char *s);

typedef struct hc_req {
    const char *method;          /* "GET", "POST", "PUT", "DELETE", ... */
    const char *url;
    const char *const *headers;  /* NULL-terminated "Name: value" lines, or NULL */
    const char *body;            /* may be NULL */
    size_t body_len;
    long timeout_ms;             /* 0: the client's total timeout */
    int fresh_connection;        /* never reuse a kept-alive connection for this request (see below) */
} hc_req;
/* Why fresh_connection exists: when a reused keep-alive connection dies before any byte of the answer arrives,
 * libcurl silently re-sends the request on a new connection. That is right for idempotent calls, but a
 * launch the server had already acted on would be sent twice (found by test_dataflow: a dropped launch answer
 * turned into a second POST). A request on a fresh connection is never re-sent by libcurl. */

/* Response. Every pointer is borrowed and valid only during the callback (hc_resp_dup to keep it). */
typedef struct hc_resp {
    hc_error error;
    const char *error_text; /* curl's description when error != HC_OK, else "" */
    long status;            /* HTTP status, 0 when error != HC_OK */
    const char *body;       /* NUL-terminated (body_len excludes the NUL); "" when empty */
    size_t body_len;
    const char *content_type; /* NULL if absent */
    const char *retry_after;  /* raw Retry-After value, NULL if absent */
    int64_t elapsed_ms;
} hc_resp;

typedef void (*hc_done_cb)(hc_client *hc, const hc_resp *resp, void *ud);
typedef void (*hc_timer_cb)(hc_client *hc, void *ud);

/* Returns NULL on failure (curl init). opts may be NULL. Caller frees with hc_free. */
hc_client *hc_new(const hc_options *opts);
/* Completes every queued transfer with HC_ERR_CANCELLED (callbacks run; they must not queue new work), drops
 * armed timers without running them, and frees the client. NULL is a no-op. */
void hc_free(hc_client *hc);

/* Queues a request; method, url, headers and body are copied. `done` runs exactly once, from hc_run (never
 * from inside hc_request). Returns a request id > 0, or a negative value with *err set to a static string. */
int64_t hc_request(hc_client *hc, const hc_req *req, hc_done_cb done, void *ud, const char **err);
/* Aborts a queued request without running its callback. Returns 0, or -1 if the id is not in flight. */
int hc_cancel(hc_client *hc, int64_t id);

/* One-shot timer: `cb` runs from hc_run once delay_ms has passed on the client's clock. Returns an id > 0
. hc_timer_cancel returns 0, or -1 if the timer already ran or is unknown. */
int64_t hc_timer_add(hc_client *hc, int64_t delay_ms, hc_timer_cb cb, void *ud);
int hc_timer_cancel(hc_client *hc, int64_t id);

/* Other file descriptors on the same loop (an inbound server's socket, a pipe from another thread): `cb` runs
 * from hc_run when poll(2) reports any of `events` (POLLIN / POLLOUT / POLLPRI) on fd, with the revents seen.
 * Returns a watch id > 0, or -1. hc_fd_unwatch returns 0, or -1 if unknown. The fd stays the caller's. */
typedef void (*hc_fd_cb)(hc_client *hc, int fd, short revents, void *ud);
int64_t hc_fd_watch(hc_client *hc, int fd, short events, hc_fd_cb cb, void *ud);
int hc_fd_unwatch(hc_client *hc, int64_t id);
/* Wakes a blocked hc_run early. The only function that may be called from another thread. */
void hc_wakeup(hc_client *hc);

/* Performs I/O for at most max_wait_ms (0: do not block), running due timers and completion callbacks.
 * Returns the work still pending (transfers in flight + armed timers), so `while (hc_run(hc, 100) > 0)`
 * drains everything; -1 if called re-entrantly from a callback. */
int hc_run(hc_client *hc, int max_wait_ms);
int hc_active(const hc_client *hc);        /* transfers in flight */
int hc_timers_pending(const hc_client *hc); /* armed timers */
int64_t hc_now_ms(const hc_client *hc);     /* the client's clock */

/* A response the caller owns (hc_resp_free). */
hc_resp *hc_resp_dup(const hc_resp *r);
void hc_resp_free(hc_resp *r);

/* Blocking: queues `req` and runs the loop (other work on this client progresses too) until it completes.
 * Returns 0 with *out set (caller frees with hc_resp_free; transport errors are reported in (*out)->error),
 * or -1 with *err set to a static string. Must not be called from a callback. */
int hc_perform_sync(hc_client *hc, const hc_req *req, hc_resp **out, const char **err);

#endif
