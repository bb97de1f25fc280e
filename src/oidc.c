/* oidc: verification of Google-signed OIDC ID tokens on inbound requests, and the JWKS cache.
 * Uses: jwt, libcurl (easy, blocking), jansson, log, util. Must not: know about HTTP servers or routes.
 *
 * Checks, in order: Bearer scheme; compact JWS with alg RS256 (anything else, "none" and HMAC included, is
 * refused before a key is touched); a known kid (an unknown one refetches the JWKS at most once per
 * refetch_min_s); the signature; iss in the allowed set; aud equal to the configured audience; exp in the
 * future (with skew); iat and nbf not in the future (with skew); email_verified true; email on the allow-list.
 * All but the last two are 401; a valid token of the wrong identity is 403.
 *
 * Threading: the key set is swapped whole under a mutex and reference counted, so verification runs without
 * holding the lock; one fetch at a time (fetch_mu). */
#include "oidc.h"

#include <curl/curl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "jwt.h"
#include "log.h"
#include "util.h"

#define DEFAULT_JWKS "https://www.googleapis.com/oauth2/v3/certs"
#define MAX_JWKS_BYTES (256 * 1024)
#define CACHE_SLOTS 64

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
    int skew_s, refetch_min_s;
    int64_t (*clock_s)(void);
    pthread_mutex_t mu;       /* guards ks, expires_at, last_fetch, counters */
    pthread_mutex_t fetch_mu; /* one fetch at a time */
    keyset *ks;
    int64_t expires_at;       /* wall seconds: refetch after this (Cache-Control max-age) */
    int64_t last_fetch;       /* when the last fetch was attempted */
    int64_t fetch_ok, fetch_failed;
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
    char **out = calloc(*n + 1, sizeof *out);
    for (size_t i = 0; out && i < *n; i++) out[i] = strdup(in[i]);
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
    oidc *o = calloc(1, sizeof *o);
    if (o == NULL) {
        *err = "out of memory";
        return NULL;
    }
    o->jwks_url = strdup(opt->jwks_url ? opt->jwks_url : DEFAULT_JWKS);
    o->jwks_file = opt->jwks_file ? strdup(opt->jwks_file) : NULL;
    o->audience = strdup(opt->audience);
    static const char *const default_iss[] = {"https://accounts.google.com", "accounts.google.com", NULL};
    o->issuers = copy_list(opt->issuers && opt->issuers[0] ? opt->issuers : default_iss, &o->n_issuers);
    o->emails = copy_list(opt->emails, &o->n_emails);
    o->skew_s = opt->skew_s > 0 ? opt->skew_s : 60;
    o->refetch_min_s = opt->refetch_min_s > 0 ? opt->refetch_min_s : 30;
    o->clock_s = opt->clock_s ? opt->clock_s : wall_s;
    pthread_mutex_init(&o->mu, NULL);
    pthread_mutex_init(&o->fetch_mu, NULL);
    pthread_mutex_init(&o->cache_mu, NULL);
    return o;
}

void oidc_free(oidc *o)
{
    if (o == NULL) return;
    pthread_mutex_lock(&o->mu);
    keyset_release(o->ks);
    pthread_mutex_unlock(&o->mu);
    pthread_mutex_destroy(&o->mu);
    pthread_mutex_destroy(&o->fetch_mu);
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
    char *b = realloc(f->buf, f->len + n + 1);
    if (b == NULL) return 0;
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
    ks = calloc(1, sizeof *ks);
    size_t n = json_array_size(keys);
    ks->kids = calloc(n + 1, sizeof *ks->kids);
    ks->keys = calloc(n + 1, sizeof *ks->keys);
    ks->refs = 1;
    for (size_t i = 0; i < n; i++) {
        json_t *k = json_array_get(keys, i);
        const char *kid = json_string_value(json_object_get(k, "kid"));
        const char *alg = json_string_value(json_object_get(k, "alg"));
        if (kid == NULL || (alg != NULL && strcmp(alg, "RS256") != 0)) continue;
        jwt_key *key = jwt_key_from_jwk(k);
        if (key == NULL) continue;
        ks->kids[ks->n] = strdup(kid);
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

/* Fetches the JWKS and installs it. Returns 0 or -1. Serialised by fetch_mu. */
static int fetch_keys(oidc *o)
{
    fetch_buf f = {.max_age = -1};
    int rc = -1;
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
        curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, 5000L);
        curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
        curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
        CURLcode cc = curl_easy_perform(c);
        if (cc == CURLE_OK) curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
        else log_warn("oidc: JWKS fetch from %s failed: %s", o->jwks_url, curl_easy_strerror(cc));
        curl_easy_cleanup(c);
    }
    keyset *ks = status == 200 && f.buf ? parse_jwks(f.buf, f.len) : NULL;
    pthread_mutex_lock(&o->mu);
    o->last_fetch = o->clock_s();
    if (ks != NULL && ks->n > 0) {
        keyset_release(o->ks);
        o->ks = ks;
        ks = NULL;
        long age = f.max_age >= 0 ? f.max_age : 3600;
        o->expires_at = o->last_fetch + age;
        o->fetch_ok++;
        rc = 0;
    } else {
        o->fetch_failed++;
    }
    pthread_mutex_unlock(&o->mu);
    if (ks) {
        pthread_mutex_lock(&o->mu);
        keyset_release(ks);
        pthread_mutex_unlock(&o->mu);
    }
    if (rc != 0) log_warn("oidc: cannot load signing keys from %s (status %ld)", o->jwks_file ? o->jwks_file : o->jwks_url,
                          status);
out:
    free(f.buf);
    return rc;
}

int oidc_prefetch(oidc *o)
{
    pthread_mutex_lock(&o->fetch_mu);
    int rc = fetch_keys(o);
    pthread_mutex_unlock(&o->fetch_mu);
    return rc;
}

void oidc_fetch_counts(oidc *o, int64_t *ok, int64_t *failed)
{
    pthread_mutex_lock(&o->mu);
    *ok = o->fetch_ok;
    *failed = o->fetch_failed;
    pthread_mutex_unlock(&o->mu);
}

/* The key for kid with a reference on its keyset (release with keyset_release under mu), refetching when the
 * cache expired or the kid is unknown (rate-limited). *have_keys says whether any keyset exists. */
static jwt_key *key_for(oidc *o, const char *kid, keyset **held, int *have_keys)
{
    for (int attempt = 0; attempt < 2; attempt++) {
        pthread_mutex_lock(&o->mu);
        int64_t now = o->clock_s();
        keyset *ks = o->ks;
        int expired = ks == NULL || now >= o->expires_at;
        int may_fetch = o->last_fetch == 0 || now - o->last_fetch >= o->refetch_min_s || (ks == NULL && now != o->last_fetch);
        jwt_key *found = NULL;
        for (size_t i = 0; ks && i < ks->n; i++)
            if (strcmp(ks->kids[i], kid) == 0) found = ks->keys[i];
        *have_keys = ks != NULL;
        if (found && !expired) {
            ks->refs++;
            *held = ks;
            pthread_mutex_unlock(&o->mu);
            return found;
        }
        pthread_mutex_unlock(&o->mu);
        if (attempt == 0 && (expired || may_fetch)) {
            pthread_mutex_lock(&o->fetch_mu);
            /* another thread may have fetched meanwhile: fetch only if still stale or still unknown */
            pthread_mutex_lock(&o->mu);
            int again = o->ks == ks;
            pthread_mutex_unlock(&o->mu);
            if (again) fetch_keys(o);
            pthread_mutex_unlock(&o->fetch_mu);
            continue;
        }
        if (found) { /* expired cache but the refetch failed or was rate-limited: keep using the old key */
            pthread_mutex_lock(&o->mu);
            if (o->ks == ks && ks != NULL) {
                ks->refs++;
                *held = ks;
                pthread_mutex_unlock(&o->mu);
                return found;
            }
            pthread_mutex_unlock(&o->mu);
        }
        break;
    }
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

oidc_status oidc_verify(oidc *o, const char *authz, char *email, size_t email_len, char *reason, size_t reason_len)
{
    json_t *h = NULL, *c = NULL;
    keyset *held = NULL;
    const char *why = NULL;
    oidc_status st = OIDC_UNAUTHENTICATED;
    if (authz == NULL || authz[0] == '\0') {
        why = "missing Authorization header";
        goto out;
    }
    if (strncasecmp(authz, "Bearer ", 7) != 0) {
        why = "Authorization must be a Bearer token";
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
        goto out;
    }
    const char *kid = json_string_value(json_object_get(h, "kid"));
    if (kid == NULL) {
        why = "token has no kid";
        goto out;
    }
    int have_keys = 0;
    jwt_key *key = key_for(o, kid, &held, &have_keys);
    if (key == NULL) {
        if (!have_keys) {
            st = OIDC_UNAVAILABLE;
            why = "signing keys unavailable";
        } else {
            why = "unknown key id";
        }
        goto out;
    }
    if (jwt_verify_rs256(tok, key, &why) != 0) goto out;
    const char *iss = json_string_value(json_object_get(c, "iss"));
    int iss_ok = 0;
    for (size_t i = 0; iss && i < o->n_issuers; i++)
        if (strcmp(iss, o->issuers[i]) == 0) iss_ok = 1;
    if (!iss_ok) {
        why = "wrong issuer";
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
        goto out;
    }
    int64_t now = o->clock_s(), exp = 0, iat = 0, nbf = 0;
    int r = claim_time(c, "exp", &exp);
    if (r != 1) {
        why = "missing or invalid exp";
        goto out;
    }
    if (exp + o->skew_s <= now) {
        why = "token expired";
        goto out;
    }
    r = claim_time(c, "iat", &iat);
    if (r < 0 || (r == 1 && iat > now + o->skew_s)) {
        why = "token issued in the future";
        goto out;
    }
    r = claim_time(c, "nbf", &nbf);
    if (r < 0 || (r == 1 && nbf > now + o->skew_s)) {
        why = "token not yet valid";
        goto out;
    }
    const char *em = json_string_value(json_object_get(c, "email"));
    if (em == NULL || !json_is_true(json_object_get(c, "email_verified"))) {
        st = OIDC_FORBIDDEN;
        why = "token has no verified email";
        goto out;
    }
    int em_ok = o->n_emails == 0;
    for (size_t i = 0; i < o->n_emails; i++)
        if (strcasecmp(em, o->emails[i]) == 0) em_ok = 1;
    if (!em_ok) {
        st = OIDC_FORBIDDEN;
        why = "identity not allowed";
        goto out;
    }
    if (email) snprintf(email, email_len, "%s", em);
    st = OIDC_OK;
    pthread_mutex_lock(&o->cache_mu);
    ce = &o->cache[slot];
    free(ce->token);
    ce->token = strdup(tok);
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
    return st;
}
