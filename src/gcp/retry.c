/* retry: classification, full-jitter backoff, deadline accounting and server delay hints.
 * Uses: libc. Must not: do I/O or read clocks (times are passed in); the default RNG is the only state. */
#include "retry.h"

#include <ctype.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

retry_policy retry_policy_default(void)
{
    retry_policy p = {.initial_ms = 1000, .multiplier = 2.0, .cap_ms = 32000, .max_attempts = 8,
                      .deadline_ms = 120000};
    return p;
}

static _Thread_local uint64_t rng_state;

double retry_rng_default(void *ud)
{
    (void)ud;
    if (rng_state == 0) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        rng_state = ((uint64_t)ts.tv_nsec << 20) ^ (uint64_t)ts.tv_sec ^ ((uint64_t)getpid() << 40) ^
                    (uint64_t)(uintptr_t)&rng_state;
        if (rng_state == 0) rng_state = 0x9e3779b97f4a7c15ull;
    }
    uint64_t x = rng_state; /* xorshift64* */
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    rng_state = x;
    return (double)((x * 0x2545F4914F6CDD1Dull) >> 11) / 9007199254740992.0; /* 53 bits / 2^53 */
}

static int transient_status(long s) { return s == 408 || s == 429 || s == 500 || s == 502 || s == 503 || s == 504; }

retry_class retry_classify(int idempotent, retry_transport t, long http_status, const char *google_status)
{
    switch (t) {
    case RETRY_T_CONNECT: return RETRY_AGAIN;
    case RETRY_T_TIMEOUT:
    case RETRY_T_RESET: return idempotent ? RETRY_AGAIN : RETRY_UNKNOWN;
    case RETRY_T_OTHER: return RETRY_STOP;
    case RETRY_T_NONE: break;
    }
    if (http_status == 409) {
        /* ABORTED is a concurrency conflict worth retrying; ALREADY_EXISTS (or no status) is final. */
        if (google_status && strcmp(google_status, "ABORTED") == 0) return idempotent ? RETRY_AGAIN : RETRY_UNKNOWN;
        return RETRY_STOP;
    }
    if (http_status == 429) return RETRY_AGAIN; /* rejected before anything was done */
    if (transient_status(http_status)) return idempotent ? RETRY_AGAIN : RETRY_UNKNOWN;
    return RETRY_STOP;
}

int64_t retry_backoff_ms(const retry_policy *p, int retry, retry_rng_fn rng, void *rng_ud)
{
    double ceiling = (double)p->initial_ms;
    for (int i = 1; i < retry && ceiling < (double)p->cap_ms; i++) ceiling *= p->multiplier;
    if (ceiling > (double)p->cap_ms) ceiling = (double)p->cap_ms;
    if (ceiling < 0) ceiling = 0;
    double r = (rng ? rng : retry_rng_default)(rng_ud);
    if (r < 0) r = 0;
    if (r >= 1) r = 0.999999999;
    /* Uniform over the closed interval [0, ceiling] in whole milliseconds. */
    return (int64_t)floor(r * (ceiling + 1.0));
}

void retry_begin(retry_state *s, const retry_policy *p, int64_t now_ms, retry_rng_fn rng, void *rng_ud)
{
    memset(s, 0, sizeof *s);
    s->policy = p ? *p : retry_policy_default();
    s->start_ms = now_ms;
    s->rng = rng ? rng : retry_rng_default;
    s->rng_ud = rng_ud;
}

int retry_next(retry_state *s, int64_t now_ms, int64_t server_delay_ms, int64_t *delay_ms)
{
    s->attempts++;
    if (s->policy.max_attempts > 0 && s->attempts >= s->policy.max_attempts) return 0;
    int64_t d = server_delay_ms >= 0 ? server_delay_ms : retry_backoff_ms(&s->policy, s->attempts, s->rng, s->rng_ud);
    if (s->policy.deadline_ms > 0 && now_ms + d > s->start_ms + s->policy.deadline_ms) return 0;
    *delay_ms = d;
    return 1;
}

int retry_parse_retry_after(const char *value, int64_t now_unix_ms, int64_t *delay_ms)
{
    if (value == NULL) return -1;
    while (*value == ' ') value++;
    if (*value == '\0') return -1;
    const char *p = value;
    while (isdigit((unsigned char)*p)) p++;
    const char *q = p;
    while (*q == ' ') q++;
    if (p != value && *q == '\0') {
        if (p - value > 9) return -1; /* absurdly long: not a sane delay */
        *delay_ms = strtoll(value, NULL, 10) * 1000;
        return 0;
    }
    static const char *const formats[] = {"%a, %d %b %Y %H:%M:%S GMT", "%A, %d-%b-%y %H:%M:%S GMT",
                                          "%a %b %e %H:%M:%S %Y"};
    for (size_t i = 0; i < sizeof formats / sizeof formats[0]; i++) {
        struct tm tm;
        memset(&tm, 0, sizeof tm);
        const char *end = strptime(value, formats[i], &tm);
        if (end == NULL) continue;
        while (*end == ' ') end++;
        if (*end != '\0') continue;
        int64_t when = (int64_t)timegm(&tm) * 1000;
        *delay_ms = when > now_unix_ms ? when - now_unix_ms : 0;
        return 0;
    }
    return -1;
}

int retry_parse_duration(const char *text, int64_t *ms)
{
    if (text == NULL || !isdigit((unsigned char)text[0])) return -1;
    const char *p = text;
    int64_t secs = 0;
    while (isdigit((unsigned char)*p)) {
        if (secs > 315576000000LL) return -1; /* Duration's documented maximum */
        secs = secs * 10 + (*p++ - '0');
    }
    int64_t nanos = 0;
    if (*p == '.') {
        p++;
        int digits = 0;
        while (isdigit((unsigned char)*p)) {
            if (++digits > 9) return -1;
            nanos = nanos * 10 + (*p++ - '0');
        }
        if (digits == 0) return -1;
        while (digits++ < 9) nanos *= 10;
    }
    if (p[0] != 's' || p[1] != '\0') return -1;
    *ms = secs * 1000 + (nanos + 999999) / 1000000;
    return 0;
}

retry_transport retry_transport_of(hc_error e)
{
    switch (e) {
    case HC_OK: return RETRY_T_NONE;
    case HC_ERR_CONNECT: return RETRY_T_CONNECT;
    case HC_ERR_TIMEOUT: return RETRY_T_TIMEOUT;
    case HC_ERR_RESET: return RETRY_T_RESET;
    case HC_ERR_TOO_LARGE:
    case HC_ERR_CANCELLED:
    case HC_ERR_OTHER: break;
    }
    return RETRY_T_OTHER;
}
