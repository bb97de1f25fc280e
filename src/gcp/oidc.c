/* oidc: verification of Google-signed OIDC ID tokens on inbound requests, and the JWKS cache.
 * Uses: jwt, libcurl (easy, on a fetch thread), pthreads, jansson, log, util. Must not: know about HTTP servers
 * or routes.
 *
 * Checks, in order: Bearer scheme; compact JWS with alg RS256 (anything else, "none" and HMAC included, is
 * refused before a key is touched); a known kid (an unknown one refetches the JWKS at most once per
 * refetch_min_s); the signature; iss in the allowed set; aud equal to the configured audience; exp in the
 * future (with skew); iat and nbf not in the future (with skew); email_verified true; email on the allow-list.
 * All but the last two are 401; a valid token of the wrong identity is 403.
 *
 * Threading: the key set is swapped whole under a mutex and reference counted, so verification runs without
 * holding the lock. Fetches are single-flight and never run on a request's thread: at most one fetch thread
 * exists at a time, a request that has a key for its kid (even an expired one) uses it at once while the
 * refresh runs, and a request with no usable key waits on a condition variable for that one fetch (at most
 * WAIT_MS), never for a fetch of its own. A failed fetch backs off (1, 2, 4 ... s, capped at backoff_max_s)
 * before the next one is started, whatever asks for it. */
#include "oidc.h"

#include <curl/curl.h>
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "jwt.h"
#include "log.h"
#include "mem.h"
#include "util.h"

#define DEFAULT_JWKS "https://www.googleapis.com/oauth2/v3/certs"
#define MAX_JWKS_BYTES (256 * 1024)
#define CACHE_SLOTS 64
#define WAIT_MS 2000 /* a request without a usable key waits this long at most for the fetch in flight */

/* A token that passed every check, remembered until its exp: Pub/Sub and Eventarc reuse one token for many
 * deliveries, and an RS256 verification costs more than the rest of a request. Only successes are cached, keyed
 * by the whole token text, so a different token can never hit another's entry. */
typedef struct {
    char *token;
    int64_t exp;
    char email[256];
} cache_entry;

typedef struct {
    int refs;
    size_t n;
    char **kids;
    jwt_key **keys;
} keyset;

struct oidc {
    char *jwks_url, *jwks_file, *audience;
    char **issuers, **emails;
    size_t n_issuers, n_emails;
    int skew_s, refetch_min_s, fetch_timeout_ms, backoff_max_s;
    int64_t (*clock_s)(void);
    pthread_mutex_t mu;    /* guards everything below up to the cache */
    pthread_cond_t done;   /* broadcast when a fetch ends (CLOCK_MONOTONIC) */
    keyset *ks;
    int64_t expires_at;    /* clock_s seconds: refetch after this (Cache-Control max-age) */
    int64_t last_attempt;  /* when the last fetch was started (0: never) */
    int64_t retry_at;      /* after a failure: no fetch starts before this (backoff) */
    int failures;          /* consecutive failed fetches */
    int fetching;          /* a fetch thread is running */
    int thread_live;       /* `thread` was started and not yet joined */
    int last_ok;           /* the last finished fetch succeeded */
    pthread_t thread;
    atomic_int stopping;   /* oidc_free: abort the transfer */
    int64_t fetch_ok, fetch_failed, fetch_attempts;
    pthread_mutex_t cache_mu;
    cache_entry cache[CACHE_SLOTS];
    int64_t cache_hits;
};

static uint32_t token_hash(const char *t)
{
    uint32_t h = 2166136261u;
    for (; *t; t++) h = (h ^ (unsigned char)*t) * 16777619u;
    return h;
}

static int64_t wall_s(void) { return (int64_t)time(NULL); }

static char **copy_list(const char *const *in, size_t *n)
{
    *n = 0;
    if (in == NULL) return NULL;
    while (in[*n]) (*n)++;
    char **out = xcalloc(*n + 1, sizeof *out);
    for (size_t i = 0; i < *n; i++) out[i] = xstrdup(in[i]);
    return out;
}

static void free_list(char **l, size_t n)
{
    for (size_t i = 0; l && i < n; i++) free(l[i]);
    free(l);
}

static void keyset_release(keyset *ks)
{
    if (ks == NULL) return;
    /* callers hold o->mu when they drop a reference */
    if (--ks->refs > 0) return;
    for (size_t i = 0; i < ks->n; i++) {
        free(ks->kids[i]);
        jwt_key_free(ks->keys[i]);
    }
    free(ks->kids);
    free(ks->keys);
    free(ks);
}

oidc *oidc_new(const oidc_options *opt, const char **err)
{
    if (opt->audience == NULL || opt->audience[0] == '\0') {
        *err = "an audience is required (--audience)";
        return NULL;
    }
    oidc *o = xcalloc(1, sizeof *o);
    o->jwks_url = xstrdup(opt->jwks_url ? opt->jwks_url : DEFAULT_JWKS);
    o->jwks_file = opt->jwks_file ? xstrdup(opt->jwks_file) : NULL;
    o->audience = xstrdup(opt->audience);
    static const char *const default_iss[] = {"https://accounts.google.com", "accounts.google.com", NULL};
    o->issuers = copy_list(opt->issuers && opt->issuers[0] ? opt->issuers : default_iss, &o->n_issuers);
    o->emails = copy_list(opt->emails, &o->n_emails);
    o->skew_s = opt->skew_s > 0 ? opt->skew_s : 60;
    o->refetch_min_s = opt->refetch_min_s > 0 ? opt->refetch_min_s : 30;
    o->fetch_timeout_ms = opt->fetch_timeout_ms > 0 ? opt->fetch_timeout_ms : 5000;
    o->backoff_max_s = opt->backoff_max_s > 0 ? opt->backoff_max_s : 60;
    o->clock_s = opt->clock_s ? opt->clock_s : wall_s;
    pthread_mutex_init(&o->mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&o->done, &ca);
    pthread_condattr_destroy(&ca);
    pthread_mutex_init(&o->cache_mu, NULL);
    return o;
}

void oidc_free(oidc *o)
{
    if (o == NULL) return;
    atomic_store(&o->stopping, 1); /* a transfer in flight aborts at its next progress call */
    pthread_mutex_lock(&o->mu);
    int live = o->thread_live;
    o->thread_live = 0;
    pthread_mutex_unlock(&o->mu);
    if (live) pthread_join(o->thread, NULL);
    pthread_mutex_lock(&o->mu);
    keyset_release(o->ks);
    pthread_mutex_unlock(&o->mu);
    pthread_mutex_destroy(&o->mu);
    pthread_cond_destroy(&o->done);
    pthread_mutex_destroy(&o->cache_mu);
    for (size_t i = 0; i < CACHE_SLOTS; i++) free(o->cache[i].token);
    free(o->jwks_url);
    free(o->jwks_file);
    free(o->audience);
    free_list(o->issuers, o->n_issuers);
    free_list(o->emails, o->n_emails);
    free(o);
}

/* ---- fetching ---- */

typedef struct {
    char *buf;
    size_t len;
    long max_age;
} fetch_buf;

static size_t on_body(char *p, size_t sz, size_t nm, void *ud)
{
    fetch_buf *f = ud;
    size_t n = sz * nm;
    if (f->len + n > MAX_JWKS_BYTES) return 0;
    char *b = xrealloc(f->buf, f->len + n + 1);
    memcpy(b + f->len, p, n);
    f->buf = b;
    f->len += n;
    f->buf[f->len] = '\0';
    return n;
}

static size_t on_header(char *p, size_t sz, size_t nm, void *ud)
{
    fetch_buf *f = ud;
    size_t n = sz * nm;
    if (n > 14 && strncasecmp(p, "cache-control:", 14) == 0) {
        char line[256];
        snprintf(line, sizeof line, "%.*s", (int)(n < 255 ? n : 255), p);
        char *m = strstr(line, "max-age=");
        if (m) f->max_age = strtol(m + 8, NULL, 10);
    }
    return n;
}

/* Parses a JWKS document into a new keyset (refs 1), or NULL. */
static keyset *parse_jwks(const char *text, size_t len)
{
    json_error_t je;
    json_t *doc = json_loadb(text, len, 0, &je);
    json_t *keys = json_object_get(doc, "keys");
    keyset *ks = NULL;
    if (!json_is_array(keys)) goto out;
    ks = xcalloc(1, sizeof *ks);
    size_t n = json_array_size(keys);
    ks->kids = xcalloc(n + 1, sizeof *ks->kids);
    ks->keys = xcalloc(n + 1, sizeof *ks->keys);
    ks->refs = 1;
    for (size_t i = 0; i < n; i++) {
        json_t *k = json_array_get(keys, i);
        const char *kid = json_string_value(json_object_get(k, "kid"));
        const char *alg = json_string_value(json_object_get(k, "alg"));
        if (kid == NULL || (alg != NULL && strcmp(alg, "RS256") != 0)) continue;
        jwt_key *key = jwt_key_from_jwk(k);
        if (key == NULL) continue;
        ks->kids[ks->n] = xstrdup(kid);
        ks->keys[ks->n++] = key;
    }
out:
    json_decref(doc);
    return ks;
}

int oidc_jwks_parse(const char *text, size_t len)
{
    keyset *ks = parse_jwks(text, len);
    if (ks == NULL) return -1;
    int n = (int)ks->n;
    keyset_release(ks); /* never shared: no lock needed */
    return n;
}

/* Aborts the transfer when oidc_free wants the fetch thread to end. */
static int on_progress(void *ud, curl_off_t dt, curl_off_t dn, curl_off_t ut, curl_off_t un)
{
    (void)dt;
    (void)dn;
    (void)ut;
    (void)un;
    oidc *o = ud;
    return atomic_load(&o->stopping) ? 1 : 0;
}

/* Reads the JWKS (file or URL) without holding any lock. Returns a new keyset with keys (refs 1), or NULL;
 * *max_age receives Cache-Control's max-age or -1. */
static keyset *load_keys(oidc *o, long *max_age)
{
    fetch_buf f = {.max_age = -1};
    long status = 0;
    if (o->jwks_file) {
        f.buf = util_read_file(o->jwks_file, MAX_JWKS_BYTES, &f.len);
        status = f.buf ? 200 : 0;
    } else {
        CURL *c = curl_easy_init();
        if (c == NULL) goto out;
        curl_easy_setopt(c, CURLOPT_URL, o->jwks_url);
        curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
        curl_easy_setopt(c, CURLOPT_WRITEDATA, &f);
        curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, on_header);
        curl_easy_setopt(c, CURLOPT_HEADERDATA, &f);
        curl_easy_setopt(c, CURLOPT_XFERINFOFUNCTION, on_progress);
        curl_easy_setopt(c, CURLOPT_XFERINFODATA, o);
        curl_easy_setopt(c, CURLOPT_NOPROGRESS, 0L);
        curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, (long)o->fetch_timeout_ms);
        curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
        curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
        CURLcode cc = curl_easy_perform(c);
        if (cc == CURLE_OK) curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
        else if (!atomic_load(&o->stopping))
            log_warn("oidc: JWKS fetch from %s failed: %s", o->jwks_url, curl_easy_strerror(cc));
        curl_easy_cleanup(c);
    }
out:;
    keyset *ks = status == 200 && f.buf ? parse_jwks(f.buf, f.len) : NULL;
    if (ks != NULL && ks->n == 0) {
        keyset_release(ks); /* never shared yet */
        ks = NULL;
    }
    if (ks == NULL && !atomic_load(&o->stopping))
        log_warn("oidc: cannot load signing keys from %s (status %ld)", o->jwks_file ? o->jwks_file : o->jwks_url,
                 status);
    free(f.buf);
    *max_age = f.max_age;
    return ks;
}

/* The fetch thread: loads the keys, installs them (or records the failure and the backoff), wakes the waiters. */
static void *fetch_main(void *arg)
{
    oidc *o = arg;
    util_thread_name("oidc-fetch");
    long max_age = -1;
    keyset *ks = load_keys(o, &max_age);
    pthread_mutex_lock(&o->mu);
    int64_t now = o->clock_s();
    if (ks != NULL) {
        keyset_release(o->ks);
        o->ks = ks;
        o->expires_at = now + (max_age >= 0 ? max_age : 3600);
        o->fetch_ok++;
        o->failures = 0;
        o->retry_at = 0;
        o->last_ok = 1;
    } else {
        o->fetch_failed++;
        o->failures++;
        int64_t delay = o->failures > 16 ? o->backoff_max_s : (int64_t)1 << (o->failures - 1);
        if (delay > o->backoff_max_s) delay = o->backoff_max_s;
        o->retry_at = now + delay;
        o->last_ok = 0;
    }
    o->fetching = 0;
    pthread_cond_broadcast(&o->done);
    pthread_mutex_unlock(&o->mu); /* nothing after this touches o: oidc_free may join and free it */
    return NULL;
}

/* Starts the fetch thread unless one runs (single flight). Under mu. Returns 1 when a fetch is in flight. */
static int start_fetch_locked(oidc *o, int64_t now)
{
    if (o->fetching) return 1;
    if (atomic_load(&o->stopping)) return 0;
    if (o->thread_live) {
        /* the previous fetch thread has ended its last locked section (fetching is 0): this join is immediate */
        pthread_join(o->thread, NULL);
        o->thread_live = 0;
    }
    o->fetching = 1;
    o->last_attempt = now;
    o->fetch_attempts++;
    if (pthread_create(&o->thread, NULL, fetch_main, o) != 0) {
        log_warn("oidc: cannot start a JWKS fetch: %s", strerror(errno));
        o->fetching = 0;
        o->fetch_failed++;
        o->retry_at = now + 1;
        return 0;
    }
    o->thread_live = 1;
    return 1;
}

/* Waits (mu held) until no fetch is in flight or deadline_ms (util_mono_ms) passes; returns 1 when none is. */
static int wait_fetch_locked(oidc *o, int64_t deadline_ms)
{
    while (o->fetching) {
        int64_t left = deadline_ms - util_mono_ms();
        if (left <= 0) return 0;
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        ts.tv_sec += left / 1000;
        ts.tv_nsec += (long)(left % 1000) * 1000000L;
        if (ts.tv_nsec >= 1000000000L) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000L;
        }
        pthread_cond_timedwait(&o->done, &o->mu, &ts);
    }
    return 1;
}

int oidc_prefetch(oidc *o)
{
    pthread_mutex_lock(&o->mu);
    int rc = -1;
    if (start_fetch_locked(o, o->clock_s()) && wait_fetch_locked(o, util_mono_ms() + o->fetch_timeout_ms + 1000))
        rc = o->last_ok ? 0 : -1;
    pthread_mutex_unlock(&o->mu);
    return rc;
}

void oidc_fetch_counts(oidc *o, int64_t *ok, int64_t *failed)
{
    pthread_mutex_lock(&o->mu);
    *ok = o->fetch_ok;
    *failed = o->fetch_failed;
    pthread_mutex_unlock(&o->mu);
}

int64_t oidc_fetch_attempts(oidc *o)
{
    pthread_mutex_lock(&o->mu);
    int64_t n = o->fetch_attempts;
    pthread_mutex_unlock(&o->mu);
    return n;
}

/* The key for kid with a reference on its keyset (release with keyset_release under mu), or NULL with *st
 * OIDC_UNAUTHENTICATED (unknown kid) or OIDC_UNAVAILABLE (no keys yet, or the fetch did not end in time).
 * Starts a fetch when the keys expired or the kid is unknown (rate-limited, backed off after failures); waits
 * for the fetch in flight only when there is no key to check with. */
static jwt_key *key_for(oidc *o, const char *kid, keyset **held, oidc_status *st)
{
    int waited = 0;
    int64_t deadline = util_mono_ms() + (o->fetch_timeout_ms < WAIT_MS ? o->fetch_timeout_ms : WAIT_MS);
    pthread_mutex_lock(&o->mu);
    for (;;) {
        int64_t now = o->clock_s();
        keyset *ks = o->ks;
        jwt_key *found = NULL;
        for (size_t i = 0; ks && i < ks->n; i++)
            if (strcmp(ks->kids[i], kid) == 0) found = ks->keys[i];
        /* expired keys are refreshed at most once a second; an unknown kid refetches once per refetch_min_s */
        int expired = ks == NULL || now >= o->expires_at;
        int want = (expired && (ks == NULL || now != o->last_attempt)) ||
                   (found == NULL && (o->last_attempt == 0 || now - o->last_attempt >= o->refetch_min_s));
        if (!waited && want && now >= o->retry_at) start_fetch_locked(o, now);
        if (found) { /* fresh, or expired while its refresh runs or backs off: use it now */
            ks->refs++;
            *held = ks;
            pthread_mutex_unlock(&o->mu);
            return found;
        }
        if (!o->fetching || waited) {
            *st = ks == NULL || o->fetching ? OIDC_UNAVAILABLE : OIDC_UNAUTHENTICATED;
            break;
        }
        waited = 1;
        if (!wait_fetch_locked(o, deadline)) {
            *st = OIDC_UNAVAILABLE;
            break;
        }
    }
    pthread_mutex_unlock(&o->mu);
    return NULL;
}

static int claim_time(json_t *claims, const char *name, int64_t *out)
{
    json_t *v = json_object_get(claims, name);
    if (v == NULL) return 0;
    if (!json_is_number(v)) return -1;
    double d = json_number_value(v);
    if (!(d > -9e18 && d < 9e18)) return -1; /* NaN or beyond int64_t: the cast would be undefined */
    *out = (int64_t)d;
    return 1;
}

oidc_status oidc_verify_code(oidc *o, const char *authz, char *email, size_t email_len, char *reason,
                             size_t reason_len, const char **code)
{
    const char *label = "malformed";
    json_t *h = NULL, *c = NULL;
    keyset *held = NULL;
    const char *why = NULL;
    oidc_status st = OIDC_UNAUTHENTICATED;
    if (authz == NULL || authz[0] == '\0') {
        why = "missing Authorization header";
        label = "missing_token";
        goto out;
    }
    if (strncasecmp(authz, "Bearer ", 7) != 0) {
        why = "Authorization must be a Bearer token";
        label = "not_bearer";
        goto out;
    }
    const char *tok = authz + 7;
    while (*tok == ' ') tok++;
    if (strlen(tok) > 8192) {
        why = "token too long";
        goto out;
    }
    uint32_t slot = token_hash(tok) % CACHE_SLOTS;
    pthread_mutex_lock(&o->cache_mu);
    cache_entry *ce = &o->cache[slot];
    if (ce->token && strcmp(ce->token, tok) == 0 && ce->exp + o->skew_s > o->clock_s()) {
        if (email) snprintf(email, email_len, "%s", ce->email);
        o->cache_hits++;
        pthread_mutex_unlock(&o->cache_mu);
        return OIDC_OK;
    }
    pthread_mutex_unlock(&o->cache_mu);
    if (jwt_decode(tok, &h, &c, &why) != 0) goto out;
    const char *alg = json_string_value(json_object_get(h, "alg"));
    if (alg == NULL || strcmp(alg, "RS256") != 0) {
        why = "unsupported algorithm: only RS256 is accepted";
        label = "bad_algorithm";
        goto out;
    }
    const char *kid = json_string_value(json_object_get(h, "kid"));
    if (kid == NULL) {
        why = "token has no kid";
        goto out;
    }
    jwt_key *key = key_for(o, kid, &held, &st);
    if (key == NULL) {
        if (st == OIDC_UNAVAILABLE) {
            why = "signing keys unavailable";
            label = "keys_unavailable";
        } else {
            why = "unknown key id";
            label = "unknown_key";
        }
        goto out;
    }
    st = OIDC_UNAUTHENTICATED;
    label = "bad_signature";
    if (jwt_verify_rs256(tok, key, &why) != 0) goto out;
    const char *iss = json_string_value(json_object_get(c, "iss"));
    int iss_ok = 0;
    for (size_t i = 0; iss && i < o->n_issuers; i++)
        if (strcmp(iss, o->issuers[i]) == 0) iss_ok = 1;
    if (!iss_ok) {
        why = "wrong issuer";
        label = "wrong_issuer";
        goto out;
    }
    json_t *aud = json_object_get(c, "aud");
    int aud_ok = json_is_string(aud) && strcmp(json_string_value(aud), o->audience) == 0;
    if (json_is_array(aud)) {
        size_t i;
        json_t *v;
        json_array_foreach(aud, i, v) if (json_is_string(v) && strcmp(json_string_value(v), o->audience) == 0) aud_ok = 1;
    }
    if (!aud_ok) {
        why = "wrong audience";
        label = "wrong_audience";
        goto out;
    }
    int64_t now = o->clock_s(), exp = 0, iat = 0, nbf = 0;
    int r = claim_time(c, "exp", &exp);
    if (r != 1) {
        why = "missing or invalid exp";
        label = "malformed";
        goto out;
    }
    if (exp + o->skew_s <= now) {
        why = "token expired";
        label = "expired";
        goto out;
    }
    r = claim_time(c, "iat", &iat);
    if (r < 0 || (r == 1 && iat > now + o->skew_s)) {
        why = "token issued in the future";
        label = "not_yet_valid";
        goto out;
    }
    r = claim_time(c, "nbf", &nbf);
    if (r < 0 || (r == 1 && nbf > now + o->skew_s)) {
        why = "token not yet valid";
        label = "not_yet_valid";
        goto out;
    }
    const char *em = json_string_value(json_object_get(c, "email"));
    if (em == NULL || !json_is_true(json_object_get(c, "email_verified"))) {
        st = OIDC_FORBIDDEN;
        why = "token has no verified email";
        label = "unverified_email";
        goto out;
    }
    int em_ok = o->n_emails == 0;
    for (size_t i = 0; i < o->n_emails; i++)
        if (strcasecmp(em, o->emails[i]) == 0) em_ok = 1;
    if (!em_ok) {
        st = OIDC_FORBIDDEN;
        why = "identity not allowed";
        label = "identity_not_allowed";
        goto out;
    }
    if (email) snprintf(email, email_len, "%s", em);
    st = OIDC_OK;
    pthread_mutex_lock(&o->cache_mu);
    ce = &o->cache[slot];
    free(ce->token);
    ce->token = xstrdup(tok);
    ce->exp = exp;
    snprintf(ce->email, sizeof ce->email, "%s", em);
    pthread_mutex_unlock(&o->cache_mu);
out:
    if (held) {
        pthread_mutex_lock(&o->mu);
        keyset_release(held);
        pthread_mutex_unlock(&o->mu);
    }
    json_decref(h);
    json_decref(c);
    if (st != OIDC_OK && reason) snprintf(reason, reason_len, "%s", why ? why : "invalid token");
    if (code) *code = st == OIDC_OK ? NULL : label;
    return st;
}

oidc_status oidc_verify(oidc *o, const char *authz, char *email, size_t email_len, char *reason, size_t reason_len)
{
    return oidc_verify_code(o, authz, email, email_len, reason, reason_len, NULL);
}
