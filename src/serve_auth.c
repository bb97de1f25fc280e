/* serve_auth: OIDC, the operator token, or no check; refusals answered here.
 * Uses: oidc, http_server, metrics. Must not: route requests or touch the store. */
#include "serve_auth.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "metrics.h"

int serve_content_type_is(hs_request *r, const char *want)
{
    const char *ct = hs_header(r, "Content-Type");
    if (ct == NULL) return 0;
    size_t n = strlen(want);
    return strncasecmp(ct, want, n) == 0 && (ct[n] == '\0' || ct[n] == ';' || ct[n] == ' ');
}

/* Compares the bearer token in constant time (no early exit on the first differing byte). */
static int bearer_eq(const char *authz, const char *token)
{
    if (authz == NULL || token == NULL || strncasecmp(authz, "Bearer ", 7) != 0) return 0;
    const char *t = authz + 7;
    size_t a = strlen(t), b = strlen(token);
    unsigned diff = (unsigned)(a ^ b);
    for (size_t i = 0; i < a && i < b; i++) diff |= (unsigned char)(t[i] ^ token[i]);
    return diff == 0;
}

static int email_listed(const char *const *list, const char *email)
{
    for (; *list; list++)
        if (strcasecmp(*list, email) == 0) return 1;
    return 0;
}

int serve_authorize(const serve_auth *a, hs_request *r, int api, const char *metric_source)
{
    if (a->no_auth) {
        hs_set_log_field(r, "auth", "disabled");
        return 1;
    }
    const char *authz = hs_header(r, "Authorization");
    if (api && a->operator_token && bearer_eq(authz, a->operator_token)) {
        hs_set_log_field(r, "auth", "operator");
        return 1;
    }
    const char *who = api && a->trust_header ? hs_header(r, a->trust_header) : NULL;
    if (who != NULL && who[0] != '\0') {
        hs_set_log_field(r, "auth", "proxy");
        return 1;
    }
    char reason[128], email[256] = "";
    oidc_status st = oidc_verify(a->oidc, authz, email, sizeof email, reason, sizeof reason);
    if (st == OIDC_OK && a->api_emails) {
        const char *const *list = api ? a->api_emails : a->emails;
        if (list && !email_listed(list, email)) {
            st = OIDC_FORBIDDEN;
            snprintf(reason, sizeof reason, "identity not allowed on %s", api ? "the API" : "ingress");
        }
    }
    if (st == OIDC_OK) {
        hs_set_log_field(r, "auth", "oidc");
        return 1;
    }
    const char *outcome = st == OIDC_FORBIDDEN     ? "forbidden"
                          : st == OIDC_UNAVAILABLE ? "auth_unavailable"
                                                   : "unauthenticated";
    if (metric_source) {
        char labels[128];
        snprintf(labels, sizeof labels, "source=\"%s\",outcome=\"%s\"", metric_source, outcome);
        metrics_add("sluice_events_total", labels, 1);
    }
    hs_set_log_field(r, "auth", outcome);
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
