/* serve_auth: who may call `sluice serve`: OIDC tokens (Pub/Sub push, Eventarc, Cloud Scheduler), the operator's
 * static token on the API, or nobody checked (--no-auth, development). Answers 401/403/503 itself, and logs and
 * counts every refusal by its reason (rate-limited lines, sluice_auth_refusals_total).
 * Uses: oidc, http_server, metrics, log. Must not: route requests or touch the store. */
#ifndef SLUICE_SERVE_AUTH_H
#define SLUICE_SERVE_AUTH_H
#include <stdint.h>

#include "http_server.h"
#include "oidc.h"

/* The rate limit of the WARNING lines about refused requests: at most one line per route and reason per interval;
 * the next line says how many were not logged in between. Thread-safe. */
typedef struct serve_refusals serve_refusals;

typedef struct {
    int no_auth;
    const char *operator_token; /* accepted on the API when set and non-empty (borrowed) */
    oidc *oidc;                 /* borrowed; NULL with no_auth */
    /* --ui-trust-header: a request carrying this header (non-empty) is allowed on the API, as an identity-aware
     * proxy's verified identity (e.g. X-Goog-Authenticated-User-Email behind IAP). Only safe when every request
     * passes through that proxy and it strips the header from clients. NULL: off. Borrowed. */
    const char *trust_header;
    /* Separate identities for ingress and the API (NULL-terminated, borrowed). When api_emails is NULL, oidc's
     * own allow-list decides for both. When set, a verified email must be on api_emails for the API; on ingress
     * it must be on emails, or, when emails is NULL (any identity), not on api_emails. oidc must then accept
     * both lists' identities. */
    const char *const *emails;
    const char *const *api_emails;
    serve_refusals *refusals; /* borrowed; NULL: every refusal is logged */
} serve_auth;

/* Returns 1 when the request may go on; otherwise it has been answered (401 with WWW-Authenticate, 403, or 503
 * while the signing keys cannot be fetched) and 0 is returned. api = 1 also accepts the operator token, and with
 * api_emails set only those OIDC identities (ingress-only identities get 403).
 * metric_source (may be NULL): an ingress source whose refusals count in sluice_events_total; it is also the
 * route label of sluice_auth_refusals_total ("api" when NULL). */
int serve_authorize(const serve_auth *a, hs_request *r, int api, const char *metric_source);

/* Whether the request's Content-Type is `want` (parameters after ';' ignored, case-insensitive). */
int serve_content_type_is(hs_request *r, const char *want);

/* serve_refusals_free(NULL) is a no-op. */
serve_refusals *serve_refusals_new(int64_t interval_ms);
void serve_refusals_free(serve_refusals *l);
/* Whether a refusal of `reason` on `route` (both static strings) at now_ms gets its log line; when it does,
 * *suppressed receives how many of the same were refused without a line since the previous one. */
int serve_refusals_admit(serve_refusals *l, const char *route, const char *reason, int64_t now_ms, int64_t *suppressed);

#endif
