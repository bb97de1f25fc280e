/* retry: the pure retry policy for Google APIs: which failures may be retried (given idempotency, HTTP
 * status, google.rpc status and transport class), truncated exponential backoff with full jitter bounded by
 * attempts and an overall deadline, and the server's own hints (Retry-After, RetryInfo.retryDelay).
 * Uses: libc; http_client.h for the type hc_error only. Must not: do I/O, read clocks or keep global state; time and randomness are injected. */
#ifndef SLUICE_RETRY_H
#define SLUICE_RETRY_H
#include <stdint.h>

#include "http_client.h"

typedef struct retry_policy {
    int64_t initial_ms; /* backoff ceiling of the first retry */
    double multiplier;  /* ceiling grows by this factor per retry */
    int64_t cap_ms;     /* the ceiling never exceeds this */
    int max_attempts;   /* total attempts, the first included; <= 0: unlimited (deadline only) */
    int64_t deadline_ms; /* no retry starts later than start + deadline; <= 0: no deadline */
} retry_policy;

/* 1 s initial, x2, 32 s cap, 8 attempts, 120 s deadline: the truncated exponential backoff Google documents for
 * its APIs. */
retry_policy retry_policy_default(void);

/* Uniform random number in [0, 1). */
typedef double (*retry_rng_fn)(void *ud);
/* A xorshift generator seeded from the clock and pid; thread-local state. Suitable as a retry_rng_fn. */
double retry_rng_default(void *ud);

/* How an attempt failed at the transport level (retry_transport_of reads it from an hc_error). */
typedef enum {
    RETRY_T_NONE = 0, /* an HTTP response arrived */
    RETRY_T_CONNECT,  /* the request was certainly not sent */
    RETRY_T_TIMEOUT,  /* sent (maybe partly), no answer in time: outcome unknown */
    RETRY_T_RESET,    /* connection dropped mid-exchange: outcome unknown */
    RETRY_T_OTHER     /* anything retrying cannot fix (bad URL, TLS verification, body too large) */
} retry_transport;

/* The class of an HTTP client's transport failure (HC_OK: an HTTP response arrived). */
retry_transport retry_transport_of(hc_error e);

typedef enum {
    RETRY_STOP = 0,   /* report the failure */
    RETRY_AGAIN = 1,  /* safe to re-send after a backoff */
    RETRY_UNKNOWN = 2 /* non-idempotent call whose outcome is unknown: look before re-sending */
} retry_class;

/* Classifies one failed attempt. google_status is error.status ("ABORTED", "ALREADY_EXISTS", ...) or NULL.
 * Idempotent: 408/429/500/502/503/504, 409 ABORTED and CONNECT/TIMEOUT/RESET are AGAIN.
 * Non-idempotent: 429 and CONNECT are AGAIN (nothing happened); TIMEOUT/RESET, 408, 409 ABORTED and
 * 500/502/503/504 are UNKNOWN. Everything else (2xx included) is STOP. */
retry_class retry_classify(int idempotent, retry_transport t, long http_status, const char *google_status);

/* Full-jitter backoff before retry number `retry` (1 = first retry): uniform in [0, min(cap, initial *
 * multiplier^(retry-1))]. */
int64_t retry_backoff_ms(const retry_policy *p, int retry, retry_rng_fn rng, void *rng_ud);

/* Per-operation state; plain data, copy freely. */
typedef struct retry_state {
    retry_policy policy;
    int64_t start_ms;
    int attempts; /* attempts made so far */
    retry_rng_fn rng;
    void *rng_ud;
} retry_state;

/* Starts an operation at now_ms (its first attempt counts once retry_next is called). rng NULL: default. */
void retry_begin(retry_state *s, const retry_policy *p, int64_t now_ms, retry_rng_fn rng, void *rng_ud);
/* Call after a failed attempt. server_delay_ms >= 0 is the server's hint (Retry-After / retryDelay), honoured
 * as given instead of the jittered backoff. Returns 1 with *delay_ms set when another attempt is allowed
 * (attempts left and now + delay within the deadline), 0 when the operation must give up. */
int retry_next(retry_state *s, int64_t now_ms, int64_t server_delay_ms, int64_t *delay_ms);

/* Retry-After: delta-seconds or an HTTP date (IMF-fixdate, RFC 850, asctime) relative to now_unix_ms (wall
 * clock). Returns 0 with *delay_ms (>= 0), or -1 if the value is malformed. */
int retry_parse_retry_after(const char *value, int64_t now_unix_ms, int64_t *delay_ms);
/* A google.protobuf.Duration in JSON form ("2s", "1.5s", "0.000000001s"), rounded up to whole ms.
 * Returns 0 with *ms, or -1 if malformed or negative. */
int retry_parse_duration(const char *text, int64_t *ms);

#endif
