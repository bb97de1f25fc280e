/* emu_identity: owns Google identity as the emulator plays it: the service-account and OIDC keys, issued access
 * tokens, the OAuth token endpoint (jwt-bearer and refresh_token grants), the metadata server, the JWKS, and
 * the credential documents a test points ADC at. Uses: emu.h, jwt (RS256, keys), emu_http (answers). Must not:
 * decide faults or auth for other endpoints (emu_dispatch does); handlers here run with emu_g.lock held. */
#include "emu.h"
#include "mem.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

/* Issues a new access token (lock held); returns it (borrowed until revoked) or NULL. */
static const char *emu_token_issue(const char *grant)
{
    int64_t now = emu_now_ms();
    size_t w = 0;
    for (size_t i = 0; i < emu_g.ntokens; i++) {
        if (emu_g.tokens[i].expires_ms > now) emu_g.tokens[w++] = emu_g.tokens[i];
        else free(emu_g.tokens[i].token);
    }
    emu_g.ntokens = w;
    if (emu_g.ntokens == emu_g.cap_tokens) {
        size_t cap = emu_g.cap_tokens ? emu_g.cap_tokens * 2 : 16;
        struct emu_token *nt = xrealloc(emu_g.tokens, cap * sizeof *nt);
        emu_g.tokens = nt;
        emu_g.cap_tokens = cap;
    }
    char hex[41], *tok = xmalloc(64);
    emu_random_hex(hex, 40);
    snprintf(tok, 64, "ya29.emu.%s", hex);
    emu_g.tokens[emu_g.ntokens].token = tok;
    emu_g.tokens[emu_g.ntokens].expires_ms = now + (int64_t)emu_g.cfg.token_lifetime_s * 1000;
    emu_g.ntokens++;
    emu_stat_add("token_grants", grant, NULL, 1);
    return tok;
}

int emu_token_valid(const char *tok)
{
    int64_t now = emu_now_ms();
    for (size_t i = 0; i < emu_g.ntokens; i++)
        if (strcmp(emu_g.tokens[i].token, tok) == 0) return emu_g.tokens[i].expires_ms > now;
    return 0;
}

void emu_tokens_revoke(void)
{
    for (size_t i = 0; i < emu_g.ntokens; i++) free(emu_g.tokens[i].token);
    emu_g.ntokens = 0;
}

/* Signs the OIDC token a push or event carries (Google's push token shape); caller frees. */
char *emu_oidc_token(const char *aud, const char *email, int64_t now_s)
{
    json_t *hdr = json_pack("{s:s}", "kid", emu_g.oidc_kid);
    json_t *claims = json_pack("{s:s, s:s, s:s, s:s, s:b, s:I, s:I, s:s}", "aud", aud, "azp", "113774264463038321964",
                               "email", email, "sub", "113774264463038321964", "email_verified", 1, "exp",
                               (json_int_t)(now_s + 3600), "iat", (json_int_t)now_s, "iss", "https://accounts.google.com");
    char *tok = jwt_sign_rs256(emu_g.oidc_key, hdr, claims);
    json_decref(hdr);
    json_decref(claims);
    return tok;
}

static int emu_hexval(char c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

/* The decoded value of `key` in an application/x-www-form-urlencoded body, or NULL. Caller frees. */
static char *emu_form_get(const char *body, size_t len, const char *key)
{
    size_t klen = strlen(key), i = 0;
    while (i < len) {
        size_t end = i;
        while (end < len && body[end] != '&') end++;
        if (end - i > klen && strncmp(body + i, key, klen) == 0 && body[i + klen] == '=') {
            size_t vs = i + klen + 1;
            char *out = xmalloc(end - vs + 1);
            size_t o = 0;
            for (size_t k = vs; k < end; k++) {
                if (body[k] == '+') out[o++] = ' ';
                else if (body[k] == '%' && k + 2 < end && emu_hexval(body[k + 1]) >= 0 && emu_hexval(body[k + 2]) >= 0) {
                    out[o++] = (char)(emu_hexval(body[k + 1]) * 16 + emu_hexval(body[k + 2]));
                    k += 2;
                } else out[o++] = body[k];
            }
            out[o] = '\0';
            return out;
        }
        i = end + 1;
    }
    return NULL;
}

static void emu_token_response(struct emu_resp *r, const char *grant, int with_scope)
{
    const char *tok = emu_token_issue(grant);
    if (tok == NULL) {
        emu_resp_oauth_error(r, 500, "internal_failure", "Out of memory.");
        return;
    }
    json_t *o = json_pack("{s:s, s:i}", "access_token", tok, "expires_in", emu_g.cfg.token_lifetime_s);
    if (with_scope) json_object_set_new(o, "scope", json_string("https://www.googleapis.com/auth/cloud-platform"));
    json_object_set_new(o, "token_type", json_string("Bearer"));
    emu_resp_json(r, 200, o);
}

/* POST /token: jwt-bearer (service account assertion, fully verified) and refresh_token grants. */
void emu_token(struct emu_call *cx)
{
    static const char *const bad_time = "Invalid JWT: Token must be a short-lived token (60 minutes) and in a "
                                        "reasonable timeframe. Check your iat and exp values in the JWT claim.";
    struct emu_req *q = cx->q;
    struct emu_resp *r = &q->resp;
    char *grant = emu_form_get(q->body.data ? q->body.data : "", q->body.len, "grant_type");
    char *assertion = NULL, *cid = NULL, *csecret = NULL, *rtok = NULL;
    json_t *hdr = NULL, *claims = NULL;
    const char *err = NULL;
    if (grant == NULL) {
        emu_resp_oauth_error(r, 400, "invalid_request", "Missing required parameter: grant_type");
    } else if (strcmp(grant, "urn:ietf:params:oauth:grant-type:jwt-bearer") == 0) {
        assertion = emu_form_get(q->body.data, q->body.len, "assertion");
        if (assertion == NULL) {
            emu_resp_oauth_error(r, 400, "invalid_request", "Missing required parameter: assertion");
            goto out;
        }
        if (jwt_decode(assertion, &hdr, &claims, &err) != 0) {
            emu_resp_oauth_error(r, 400, "invalid_grant", "Invalid JWT: malformed token.");
            goto out;
        }
        const char *iss = json_string_value(json_object_get(claims, "iss"));
        const char *kid = json_string_value(json_object_get(hdr, "kid"));
        if (iss == NULL || strcmp(iss, emu_g.client_email) != 0) {
            emu_resp_oauth_error(r, 400, "invalid_grant", "Invalid grant: account not found");
            goto out;
        }
        if ((kid != NULL && strcmp(kid, emu_g.sa_kid) != 0) || jwt_verify_rs256(assertion, emu_g.sa_key, &err) != 0) {
            emu_resp_oauth_error(r, 400, "invalid_grant", "Invalid JWT Signature.");
            goto out;
        }
        const char *aud = json_string_value(json_object_get(claims, "aud"));
        if (aud == NULL || strcmp(aud, emu_g.token_uri) != 0) {
            char msg[300];
            snprintf(msg, sizeof msg, "Invalid JWT: Failed audience check. The right audience is %s", emu_g.token_uri);
            emu_resp_oauth_error(r, 400, "invalid_grant", msg);
            goto out;
        }
        json_t *iat = json_object_get(claims, "iat"), *exp = json_object_get(claims, "exp");
        int64_t now = emu_now_ms() / 1000;
        if (!json_is_integer(iat) || !json_is_integer(exp) || json_integer_value(exp) <= now ||
            json_integer_value(exp) > json_integer_value(iat) + 3600 || json_integer_value(iat) > now + 60) {
            emu_resp_oauth_error(r, 400, "invalid_grant", bad_time);
            goto out;
        }
        const char *scope = json_string_value(json_object_get(claims, "scope"));
        if (scope == NULL || *scope == '\0') {
            emu_resp_oauth_error(r, 400, "invalid_scope", "Invalid OAuth scope or ID token audience provided.");
            goto out;
        }
        emu_token_response(r, "jwt_bearer", 0);
    } else if (strcmp(grant, "refresh_token") == 0) {
        cid = emu_form_get(q->body.data, q->body.len, "client_id");
        csecret = emu_form_get(q->body.data, q->body.len, "client_secret");
        rtok = emu_form_get(q->body.data, q->body.len, "refresh_token");
        if (cid == NULL || csecret == NULL || strcmp(cid, emu_g.au_client_id) != 0 ||
            strcmp(csecret, emu_g.au_client_secret) != 0) {
            emu_resp_oauth_error(r, 401, "invalid_client", "The OAuth client was not found.");
        } else if (rtok == NULL || strcmp(rtok, emu_g.au_refresh_token) != 0) {
            emu_resp_oauth_error(r, 400, "invalid_grant", "Token has been expired or revoked.");
        } else {
            emu_token_response(r, "refresh_token", 1);
        }
    } else {
        char msg[200];
        snprintf(msg, sizeof msg, "Invalid grant_type: %.100s", grant);
        emu_resp_oauth_error(r, 400, "unsupported_grant_type", msg);
    }
out:
    json_decref(hdr);
    json_decref(claims);
    free(grant);
    free(assertion);
    free(cid);
    free(csecret);
    free(rtok);
}

/* GET /computeMetadata/v1/...: `what` is the path below v1/. */
void emu_metadata(struct emu_call *cx, const char *what)
{
    struct emu_resp *r = &cx->q->resp;
    const char *flavor = MHD_lookup_connection_value(cx->conn, MHD_HEADER_KIND, "Metadata-Flavor");
    if (flavor == NULL || strcmp(flavor, "Google") != 0) {
        emu_resp_text(r, 403, "text/html; charset=UTF-8",
                      "Your client does not have permission to get URL from this server. Missing Metadata-Flavor:Google header.\n");
    } else if (strcmp(what, "instance/service-accounts/default/token") == 0) {
        emu_token_response(r, "metadata", 0);
    } else if (strcmp(what, "instance/service-accounts/default/email") == 0) {
        emu_resp_text(r, 200, "application/text", emu_g.client_email);
    } else if (strcmp(what, "instance/service-accounts/default/identity") == 0) {
        const char *aud = emu_query(cx, "audience");
        if (aud == NULL || *aud == '\0') {
            emu_resp_text(r, 400, "text/plain", "non-empty audience parameter required\n");
        } else {
            char *tok = emu_oidc_token(aud, emu_g.client_email, emu_now_ms() / 1000);
            emu_resp_text(r, tok ? 200 : 500, "text/html; charset=utf-8", tok ? tok : "");
            free(tok);
        }
    } else if (strcmp(what, "project/project-id") == 0) {
        emu_resp_text(r, 200, "application/text", emu_g.cfg.project_id);
    } else if (strcmp(what, "project/numeric-project-id") == 0) {
        emu_resp_text(r, 200, "application/text", emu_g.cfg.project_number);
    } else {
        emu_resp_text(r, 404, "text/html; charset=UTF-8", "Not Found\n");
    }
    emu_resp_header(r, "Metadata-Flavor", "Google");
}

void emu_jwks(struct emu_call *cx)
{
    struct emu_resp *r = &cx->q->resp;
    json_t *jwk = jwt_key_public_jwk(emu_g.oidc_key, emu_g.oidc_kid);
    emu_resp_json(r, 200, json_pack("{s:[o]}", "keys", jwk ? jwk : json_object()));
    char cc[96];
    snprintf(cc, sizeof cc, "public, max-age=%d, must-revalidate, no-transform", emu_g.cfg.jwks_max_age_s);
    emu_resp_header(r, "Cache-Control", cc);
}

/* The credential files a test points ADC at. Returns new references. */
json_t *emu_sa_json(void)
{
    char *pem = jwt_key_private_pem(emu_g.sa_key);
    char cert[300];
    snprintf(cert, sizeof cert, "%s/robot/v1/metadata/x509/%s", emu_g.base_url, emu_g.client_email);
    json_t *o = json_pack("{s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:s}", "type", "service_account", "project_id",
                          emu_g.cfg.project_id, "private_key_id", emu_g.sa_kid, "private_key", pem ? pem : "", "client_email",
                          emu_g.client_email, "client_id", emu_g.client_id, "auth_uri", "https://accounts.google.com/o/oauth2/auth",
                          "token_uri", emu_g.token_uri, "auth_provider_x509_cert_url", "https://www.googleapis.com/oauth2/v1/certs",
                          "client_x509_cert_url", cert);
    free(pem);
    return o;
}

json_t *emu_au_json(void)
{
    return json_pack("{s:s, s:s, s:s, s:s, s:s}", "type", "authorized_user", "client_id", emu_g.au_client_id,
                     "client_secret", emu_g.au_client_secret, "refresh_token", emu_g.au_refresh_token, "token_uri", emu_g.token_uri);
}

int emu_write_credentials(const char *dir)
{
    char path[4096];
    int rc = -1;
    /* The HTTP side is already up (the files name its port): a config request may be changing emu_g. */
    pthread_mutex_lock(&emu_g.lock);
    json_t *sa = emu_sa_json(), *au = emu_au_json();
    pthread_mutex_unlock(&emu_g.lock);
    char *sa_text = json_dumps(sa, JSON_INDENT(2)), *au_text = json_dumps(au, JSON_INDENT(2));
    mkdir(dir, 0700);
    if (sa_text == NULL || au_text == NULL) goto out;
    snprintf(path, sizeof path, "%s/service-account.json", dir);
    if (emu_write_atomic(path, sa_text, 0600) != 0) goto out;
    snprintf(path, sizeof path, "%s/authorized_user.json", dir);
    if (emu_write_atomic(path, au_text, 0600) != 0) goto out;
    rc = 0;
out:
    json_decref(sa);
    json_decref(au);
    free(sa_text);
    free(au_text);
    return rc;
}

/* Identity material: a service-account key the token endpoint trusts, the OIDC signing key, and the ids and
 * secrets of the two credential documents. New on every start. Returns 0, or -1 when keys cannot be made. */
int emu_identity_init(void)
{
    emu_g.sa_key = jwt_key_generate(2048);
    emu_g.oidc_key = jwt_key_generate(2048);
    if (emu_g.sa_key == NULL || emu_g.oidc_key == NULL) return -1;
    emu_random_hex(emu_g.sa_kid, 40);
    emu_random_hex(emu_g.oidc_kid, 40);
    snprintf(emu_g.client_email, sizeof emu_g.client_email, "sluice-emulator@%s.iam.gserviceaccount.com",
             emu_g.cfg.project_id);
    char hex[41];
    emu_random_hex(hex, 20);
    int n = snprintf(emu_g.client_id, sizeof emu_g.client_id, "10%.20s", hex);
    (void)n;
    /* Google's client ids are digits: map the hex letters onto digits. */
    for (char *c = emu_g.client_id; *c; c++)
        if (*c >= 'a') *c = (char)('0' + (*c - 'a'));
    emu_random_hex(hex, 24);
    snprintf(emu_g.au_client_id, sizeof emu_g.au_client_id, "%s.apps.googleusercontent.com", hex);
    emu_random_hex(hex, 32);
    snprintf(emu_g.au_client_secret, sizeof emu_g.au_client_secret, "emu-%s", hex);
    emu_random_hex(hex, 32);
    snprintf(emu_g.au_refresh_token, sizeof emu_g.au_refresh_token, "1//emu-%s", hex);
    return 0;
}

/* The address the token endpoint and the credential documents name, once the port is bound. */
void emu_identity_set_base(const char *host, unsigned port)
{
    pthread_mutex_lock(&emu_g.lock);
    snprintf(emu_g.base_url, sizeof emu_g.base_url, "http://%s:%u", host, port);
    snprintf(emu_g.token_uri, sizeof emu_g.token_uri, "%s/token", emu_g.base_url);
    pthread_mutex_unlock(&emu_g.lock);
}

void emu_identity_free(void)
{
    emu_tokens_revoke();
    free(emu_g.tokens);
    jwt_key_free(emu_g.sa_key);
    jwt_key_free(emu_g.oidc_key);
}
