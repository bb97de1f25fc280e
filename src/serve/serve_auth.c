/* serve_auth: OIDC, the operator token, or no check; refusals answered, logged (rate-limited) and counted here.
 * Uses: oidc, http_server, metrics, log, OpenSSL (SHA-256, CRYPTO_memcmp). Must not: route requests or touch the
 * store. */
#include "serve_auth.h"

#include <jansson.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "log.h"
#include "mem.h"
#include "metrics.h"
#include "util.h"

#define REFUSAL_KEYS 96

typedef struct {
    char route[24], reason[32];
    int64_t last_ms;    /* when its last line was written */
    int64_t suppressed; /* refusals since then without a line */
} refusal_slot;

struct serve_refusals {
    pthread_mutex_t mu;
    int64_t interval_ms;
    size_t n;
    refusal_slot slots[REFUSAL_KEYS];
};

serve_refusals *serve_refusals_new(int64_t interval_ms)
{
    serve_refusals *l = xcalloc(1, sizeof *l);
    pthread_mutex_init(&l->mu, NULL);
    l->interval_ms = interval_ms;
    return l;
}

void serve_refusals_free(serve_refusals *l)
{
    if (l == NULL) return;
    pthread_mutex_destroy(&l->mu);
    free(l);
}

int serve_refusals_admit(serve_refusals *l, const char *route, const char *reason, int64_t now_ms, int64_t *suppressed)
{
    *suppressed = 0;
    pthread_mutex_lock(&l->mu);
    refusal_slot *s = NULL;
    for (size_t i = 0; i < l->n && s == NULL; i++)
        if (strcmp(l->slots[i].route, route) == 0 && strcmp(l->slots[i].reason, reason) == 0) s = &l->slots[i];
    int admit = 1;
    if (s == NULL && l->n == REFUSAL_KEYS) {
        s = &l->slots[REFUSAL_KEYS - 1]; /* routes x reasons are fewer than the slots; this only guards the bound */
    } else if (s == NULL) {
        s = &l->slots[l->n++];
        snprintf(s->route, sizeof s->route, "%s", route);
        snprintf(s->reason, sizeof s->reason, "%s", reason);
    } else if (now_ms - s->last_ms < l->interval_ms) {
        s->suppressed++;
        admit = 0;
    }
    if (admit) {
        *suppressed = s->suppressed;
        s->suppressed = 0;
        s->last_ms = now_ms;
    }
    pthread_mutex_unlock(&l->mu);
    return admit;
}

int serve_content_type_is(hs_request *r, const char *want)
{
    const char *ct = hs_header(r, "Content-Type");
    if (ct == NULL) return 0;
    size_t n = strlen(want);
    return strncasecmp(ct, want, n) == 0 && (ct[n] == '\0' || ct[n] == ';' || ct[n] == ' ');
}

/* Whether authz is "Bearer <the operator token>". The SHA-256 digests of both are compared with CRYPTO_memcmp, so
 * the time taken says nothing about the token's bytes or its length. An empty token, configured or presented,
 * never matches (`sluice serve` also refuses to start with one: serve_cmd.c). */
static int bearer_is_operator(const char *authz, const char *token)
{
    if (authz == NULL || token == NULL || token[0] == '\0' || strncasecmp(authz, "Bearer ", 7) != 0) return 0;
    const char *t = authz + 7;
    if (t[0] == '\0') return 0;
    unsigned char a[EVP_MAX_MD_SIZE], b[EVP_MAX_MD_SIZE];
    unsigned int na = 0, nb = 0;
    if (EVP_Digest(t, strlen(t), a, &na, EVP_sha256(), NULL) != 1 ||
        EVP_Digest(token, strlen(token), b, &nb, EVP_sha256(), NULL) != 1 || na != nb)
        return 0;
    return CRYPTO_memcmp(a, b, na) == 0;
}

static int email_listed(const char *const *list, const char *email)
{
    for (; *list; list++)
        if (strcasecmp(*list, email) == 0) return 1;
    return 0;
}

/* Counts the refusal by route and reason and writes its WARNING line unless one for the same route and reason was
 * written within the rate limit's interval. Never logs the token. */
static void note_refusal(const serve_auth *a, hs_request *r, const char *route, const char *code, int status,
                         const char *reason, const char *email)
{
    /* declared here, where it is used, so the family exists whoever built the serve_auth (idempotent) */
    metrics_declare("sluice_auth_refusals_total", METRIC_COUNTER,
                    "Requests refused by authentication or authorization, by route (pubsub, eventarc, api) and "
                    "reason (wrong_audience, expired, unknown_key, identity_not_allowed, keys_unavailable, ...).");
    char labels[96];
    snprintf(labels, sizeof labels, "route=\"%s\",reason=\"%s\"", route, code);
    metrics_add("sluice_auth_refusals_total", labels, 1);
    int64_t suppressed = 0;
    if (a->refusals && !serve_refusals_admit(a->refusals, route, code, util_mono_ms(), &suppressed)) return;
    json_t *extra = json_pack("{s:s,s:s,s:i,s:I}", "route", route, "reason", code, "status", status, "suppressed",
                              (json_int_t)suppressed);
    if (extra && email && email[0]) json_object_set_new(extra, "email", json_string(email));
    char more[96] = "";
    if (suppressed > 0)
        snprintf(more, sizeof more, " (%lld more refused for this reason since the last such line)",
                 (long long)suppressed);
    log_json(LOG_WARNING, extra, "serve: refused %s %s with %d: %s%s", hs_method(r), hs_path(r) ? hs_path(r) : "",
             status, reason, more);
    json_decref(extra);
}

int serve_authorize(const serve_auth *a, hs_request *r, int api, const char *metric_source)
{
    if (a->no_auth) {
        hs_set_log_field(r, "auth", "disabled");
        return 1;
    }
    const char *authz = hs_header(r, "Authorization");
    if (api && a->operator_token && bearer_is_operator(authz, a->operator_token)) {
        hs_set_log_field(r, "auth", "operator");
        return 1;
    }
    const char *who = api && a->trust_header ? hs_header(r, a->trust_header) : NULL;
    if (who != NULL && who[0] != '\0') {
        hs_set_log_field(r, "auth", "proxy");
        return 1;
    }
    char reason[256], why[160], email[256] = "";
    const char *code = NULL;
    oidc_status st = oidc_verify_code(a->oidc, authz, email, sizeof email, why, sizeof why, &code);
    snprintf(reason, sizeof reason, "%s", why);
    if (st == OIDC_OK && a->api_emails) {
        /* ingress without --allow-email admits any verified identity except those kept for the API */
        int allowed = api ? email_listed(a->api_emails, email)
                          : a->emails ? email_listed(a->emails, email) : !email_listed(a->api_emails, email);
        if (!allowed) {
            st = OIDC_FORBIDDEN;
            code = "identity_not_allowed";
            snprintf(reason, sizeof reason, "identity not allowed on %s", api ? "the API" : "ingress");
        }
    }
    if (st == OIDC_OK) {
        hs_set_log_field(r, "auth", "oidc");
        return 1;
    }
    if (st == OIDC_UNAUTHENTICATED && api && a->operator_token && authz && strncasecmp(authz, "Bearer ", 7) == 0)
        /* a bearer on the API is either the operator token or an ID token: say it is neither, not only why it is
         * no JWT ("malformed token: expected three segments" reads like a bug to someone who typed a token) */
        snprintf(reason, sizeof reason, "not the operator token, and not a valid Google ID token: %s", why);
    const char *outcome = st == OIDC_FORBIDDEN     ? "forbidden"
                          : st == OIDC_UNAVAILABLE ? "auth_unavailable"
                                                   : "unauthenticated";
    if (metric_source) {
        char labels[128];
        snprintf(labels, sizeof labels, "source=\"%s\",outcome=\"%s\"", metric_source, outcome);
        metrics_add("sluice_events_total", labels, 1);
    }
    hs_set_log_field(r, "auth", outcome);
    hs_set_log_field(r, "auth_reason", code ? code : "invalid_token");
    int status = st == OIDC_FORBIDDEN ? 403 : st == OIDC_UNAVAILABLE ? 503 : 401;
    note_refusal(a, r, metric_source ? metric_source : "api", code ? code : "invalid_token", status, reason,
                 st == OIDC_FORBIDDEN ? email : NULL);
    if (st == OIDC_FORBIDDEN) {
        hs_respond_error(r, 403, reason);
    } else if (st == OIDC_UNAVAILABLE) {
        const char *b = "{\"error\":{\"code\":503,\"message\":\"signing keys unavailable\"}}";
        hs_respond(r, 503, NULL, b, strlen(b), "Retry-After: 5");
    } else {
        json_t *j = json_pack("{s:{s:i,s:s}}", "error", "code", 401, "message", reason);
        char *text = json_dumps(j, JSON_COMPACT);
        hs_respond(r, 401, NULL, text, strlen(text), "WWW-Authenticate: Bearer");
        free(text);
        json_decref(j);
    }
    return 0;
}
