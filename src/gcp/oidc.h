/* oidc: verification of the OIDC ID tokens Google attaches to Pub/Sub push, Eventarc and Cloud Scheduler
 * requests (Authorization: Bearer, RS256 only), with a thread-safe cache of the signing keys (JWKS).
 * Uses: jwt (RS256, JWK), libcurl (a GET of the JWKS on a thread of its own, to read Cache-Control), jansson, log.
 * Must not: know about HTTP servers or routes; it judges one header value and says why it refuses. */
#ifndef SLUICE_OIDC_H
#define SLUICE_OIDC_H
#include <stddef.h>
#include <stdint.h>

typedef struct oidc oidc;

typedef struct {
    const char *jwks_url;            /* NULL: https://www.googleapis.com/oauth2/v3/certs */
    const char *jwks_file;           /* a local JWKS document instead of the URL (tests, air-gapped); reread on
                                      * an unknown kid like the URL */
    const char *const *issuers;      /* NULL-terminated; NULL: https://accounts.google.com, accounts.google.com */
    const char *audience;            /* required: the exact `aud` */
    const char *const *emails;       /* NULL-terminated allow-list of `email`; NULL or empty: any verified email */
    int skew_s;                      /* clock skew allowed for exp/iat/nbf; 0: 60 */
    int refetch_min_s;               /* an unknown kid refetches the keys at most this often; 0: 30 */
    int fetch_timeout_ms;            /* one JWKS fetch gives up after this long; 0: 5000 */
    int backoff_max_s;               /* a failed fetch waits 1, 2, 4 ... s before the next, at most this; 0: 60 */
    int64_t (*clock_s)(void);        /* NULL: wall clock (tests inject) */
} oidc_options;

typedef enum {
    OIDC_OK = 0,
    OIDC_UNAUTHENTICATED = -1, /* 401: missing, malformed, badly signed, expired, wrong issuer/audience */
    OIDC_FORBIDDEN = -2,       /* 403: a valid token of an identity that is not allowed */
    OIDC_UNAVAILABLE = -3,     /* 503: the keys could not be fetched at all (a retry may succeed) */
} oidc_status;

/* Returns NULL with *err (static string) when the options are unusable. The first JWKS fetch happens lazily
 * (or call oidc_prefetch). Fetches run on a thread of their own, one at a time (see oidc.c). */
oidc *oidc_new(const oidc_options *o, const char **err);
/* Stops a fetch in flight (promptly: the transfer is aborted) and frees. */
void oidc_free(oidc *o);
/* Fetches the keys now (or waits for the fetch in flight) and returns 0 when it succeeded, else -1. */
int oidc_prefetch(oidc *o);

/* Verifies an Authorization header value ("Bearer <jwt>", may be NULL). On OIDC_OK, email (may be NULL)
 * receives the token's email. Otherwise reason receives a one-line explanation (never the token).
 * Never waits for another request's fetch when it has a key to check with: expired keys are used while their
 * refresh runs. Without a usable key it waits for the one fetch in flight, at most 2 s (then OIDC_UNAVAILABLE). */
oidc_status oidc_verify(oidc *o, const char *authorization, char *email, size_t email_len, char *reason,
                        size_t reason_len);
/* As oidc_verify; on a refusal *code (may be NULL) also receives a short static label for metrics and logs:
 * missing_token, not_bearer, malformed, bad_algorithm, unknown_key, keys_unavailable, bad_signature,
 * wrong_issuer, wrong_audience, expired, not_yet_valid, unverified_email, identity_not_allowed. */
oidc_status oidc_verify_code(oidc *o, const char *authorization, char *email, size_t email_len, char *reason,
                             size_t reason_len, const char **code);

/* Parses a JWKS document exactly as a fetch does before installing it (keys with a kid whose alg is RS256 or
 * absent; others are skipped) and returns how many usable keys it holds, or -1 when it is no key set. Pure:
 * for tests and fuzzing. */
int oidc_jwks_parse(const char *text, size_t len);

/* Counters since oidc_new: JWKS fetches that succeeded and failed. */
void oidc_fetch_counts(oidc *o, int64_t *ok, int64_t *failed);
/* JWKS fetches started since oidc_new (finished or not). */
int64_t oidc_fetch_attempts(oidc *o);

#endif
