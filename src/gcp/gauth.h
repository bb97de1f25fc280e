/* gauth: OAuth2 access tokens for Google APIs from Application Default Credentials: a service-account key
 * (RS256 JWT assertion), gcloud's authorized_user file (refresh-token grant) or the metadata server; plus a
 * static-token mode and a no-auth mode for tests. Tokens are cached, refreshed ahead of expiry, and fetched
 * single-flight: however many callers need a token at once, one fetch runs and all of them wait for it.
 * Uses: http_client (the caller's loop), retry, jwt, jansson, log. Must not: log or put into any error
 * message a token, refresh token, client secret or private key. */
#ifndef SLUICE_GAUTH_H
#define SLUICE_GAUTH_H
#include <stdint.h>

#include "http_client.h"
#include "retry.h"

typedef struct ga_auth ga_auth;

typedef enum { GA_NONE = 0, GA_STATIC, GA_SERVICE_ACCOUNT, GA_AUTHORIZED_USER, GA_METADATA } ga_kind;

typedef struct ga_options {
    const char *credentials_file;  /* instead of $GOOGLE_APPLICATION_CREDENTIALS */
    const char *gcloud_config_dir; /* instead of $CLOUDSDK_CONFIG / ~/.config/gcloud */
    const char *token_url;         /* refresh-token grant endpoint; default: the file's token_uri, else Google's */
    const char *metadata_host;     /* host[:port] instead of $GCE_METADATA_HOST / metadata.google.internal */
    const char *project_id;        /* wins over what the credentials say */
    const char *scope;             /* NULL: https://www.googleapis.com/auth/cloud-platform */
    int64_t refresh_margin_ms;     /* refresh this long before expiry (at most half the lifetime); 0: 5 min */
    int no_metadata;               /* ADC: fail instead of falling back to the metadata server */
    const retry_policy *policy;    /* token fetch retries; NULL: 200 ms initial, 5 s cap, 5 attempts, 30 s */
    int64_t (*wall_clock)(void *ud); /* unix seconds for JWT iat/exp; NULL: time() */
    void *wall_clock_ud;
} ga_options;

/* Constructors. opts may be NULL; strings are copied. On failure they return NULL and set *err (caller
 * frees; it never contains secret material). `hc` is borrowed and must outlive the ga_auth. */
ga_auth *ga_new_adc(hc_client *hc, const ga_options *opts, char **err); /* env var, gcloud file, metadata */
ga_auth *ga_new_from_file(hc_client *hc, const char *path, const ga_options *opts, char **err); /* by "type" */
ga_auth *ga_new_metadata(hc_client *hc, const ga_options *opts, char **err);
ga_auth *ga_new_static(const char *token, const char *project_id); /* always this token; never refreshed */
ga_auth *ga_new_none(const char *project_id);                      /* no Authorization header at all */
/* Pending waiters are completed with an error ("cancelled") first. NULL is a no-op. */
void ga_free(ga_auth *ga);

ga_kind ga_get_kind(const ga_auth *ga);
const char *ga_kind_name(ga_kind k);
/* Project id from the options, the key file (project_id) or the authorized_user file (quota_project_id);
 * NULL if unknown (metadata: see ga_project_id_fetch). Borrowed until ga_free. */
const char *ga_project_id(const ga_auth *ga);

/* token: borrowed, valid only during the callback; NULL with rc 0 in no-auth mode. On failure rc < 0 and err
 * (borrowed) says why. */
typedef void (*ga_token_cb)(void *ud, int rc, const char *token, const char *err);

/* Gets a token. When a fresh one is cached the callback runs before ga_token returns and 0 is returned;
 * otherwise the caller waits for the single in-flight fetch and a waiter id > 0 is returned (for
 * ga_cancel). A token inside the refresh margin but not yet expiring is handed out at once while a
 * background refresh runs. */
int64_t ga_token(ga_auth *ga, ga_token_cb cb, void *ud);
/* Forgets a waiter without running its callback. Returns 0, or -1 if unknown. */
int ga_cancel(ga_auth *ga, int64_t waiter);
/* An API answered 401 to `token`: drop it if it is still the cached one (concurrent 401s for the same
 * token cause one refresh). Returns 1 if a refresh is possible (the caller may retry once), 0 for static or
 * no-auth credentials. */
int ga_invalidate(ga_auth *ga, const char *token);

/* Project id from the metadata server when not otherwise known; the callback may run before this returns.
 * project: borrowed during the callback. */
typedef void (*ga_project_cb)(void *ud, int rc, const char *project, const char *err);
void ga_project_id_fetch(ga_auth *ga, ga_project_cb cb, void *ud);

/* Token fetches started so far (for tests and stats). */
int ga_fetch_count(const ga_auth *ga);

#endif
