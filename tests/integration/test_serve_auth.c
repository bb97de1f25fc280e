/* test_serve_auth: serve_auth in process, behind the real HTTP server (http_server) with a handler that only
 * authorizes: /api as the API routes do, /ingress as a Pub/Sub push. Keys come from a JWKS file. Pins, from
 * issue 17: an empty operator token never matches (finding 1); a wrong operator token is reported as neither that
 * token nor an ID token (16); --api-allow-email without --allow-email keeps the API identities off ingress (11);
 * refusals are counted by reason and logged at WARNING, one line per reason per interval (15). And `sluice serve`
 * refuses to start with an empty operator token (1). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <curl/curl.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "http_server.h"
#include "jwt.h"
#include "metrics.h"
#include "oidc.h"
#include "serve_auth.h"
#include "testproc.h"
#include "testutil.h"

#define AUD "aud-serve-auth"
#define PUSHER "pusher@p.iam.gserviceaccount.com"
#define OPS "ops@p.iam.gserviceaccount.com"

static char *dir, jwks_path[600];
static jwt_key *key;

typedef struct {
    serve_auth auth;
    oidc *od;
    hs_server *http;
    char base[64];
} fixture;

static void handler(hs_request *r, void *ud)
{
    fixture *f = ud;
    int api = strcmp(hs_path(r), "/api") == 0;
    if (!serve_authorize(&f->auth, r, api, api ? NULL : "pubsub")) return;
    hs_respond(r, 200, NULL, "{\"ok\":true}", 11, NULL);
}

/* Starts the server; auth fields other than oidc come from `a`. */
static void start(fixture *f, serve_auth a, const char *const *oidc_emails)
{
    memset(f, 0, sizeof *f);
    oidc_options oo = {.jwks_file = jwks_path, .audience = AUD, .emails = oidc_emails};
    const char *err = NULL;
    f->od = oidc_new(&oo, &err);
    assert_non_null(f->od);
    f->auth = a;
    f->auth.oidc = f->od;
    hs_options ho = {.listen = "127.0.0.1", .handler = handler, .ud = f};
    f->http = hs_start(&ho, &err);
    assert_non_null(f->http);
    snprintf(f->base, sizeof f->base, "http://127.0.0.1:%d", hs_port(f->http));
}

static void stop(fixture *f)
{
    hs_shutdown(f->http, 1000);
    hs_free(f->http);
    oidc_free(f->od);
}

static size_t collect(char *p, size_t sz, size_t n, void *ud)
{
    char **buf = ud;
    size_t have = *buf ? strlen(*buf) : 0;
    char *b = realloc(*buf, have + sz * n + 1);
    memcpy(b + have, p, sz * n);
    b[have + sz * n] = '\0';
    *buf = b;
    return sz * n;
}

/* GET path with an Authorization header line (or none); returns the status; *body (may be NULL) receives the
 * answer's body (caller frees). */
static long get(const fixture *f, const char *path, const char *authz, char **body)
{
    CURL *c = curl_easy_init();
    struct curl_slist *hl = NULL;
    if (authz) hl = curl_slist_append(hl, authz);
    char url[128], *buf = NULL;
    snprintf(url, sizeof url, "%s%s", f->base, path);
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, hl);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, collect);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &buf);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    long status = 0;
    if (curl_easy_perform(c) == CURLE_OK) curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
    curl_slist_free_all(hl);
    curl_easy_cleanup(c);
    if (body) *body = buf;
    else free(buf);
    return status;
}

/* "Authorization: Bearer <ID token>" for email, with the audience given (caller frees). */
static char *id_token(const char *email, const char *aud)
{
    time_t now = time(NULL);
    json_t *claims = json_pack("{s:s,s:s,s:s,s:b,s:I,s:I}", "iss", "https://accounts.google.com", "aud", aud, "email",
                               email, "email_verified", 1, "iat", (json_int_t)now, "exp", (json_int_t)now + 3600);
    json_t *h = json_pack("{s:s}", "kid", "k1");
    char *tok = jwt_sign_rs256(key, h, claims), *out = NULL;
    if (asprintf(&out, "Authorization: Bearer %s", tok) < 0) out = NULL;
    free(tok);
    json_decref(h);
    json_decref(claims);
    return out;
}

/* Regression, issue 17 finding 1: with an empty operator token, "Authorization: Bearer " (trailing space) was the
 * operator: GET /v1/runs 200, POST /v1/runs 201. An empty token, configured or presented, never matches now. */
static void test_empty_operator_token_never_matches(void **state)
{
    (void)state;
    fixture f;
    start(&f, (serve_auth){.operator_token = ""}, NULL);
    assert_int_equal(get(&f, "/api", "Authorization: Bearer ", NULL), 401);
    assert_int_equal(get(&f, "/api", "Authorization: Bearer", NULL), 401);
    assert_int_equal(get(&f, "/api", "Authorization: Bearer  ", NULL), 401);
    assert_int_equal(get(&f, "/api", NULL, NULL), 401);
    stop(&f);
    /* a real token: exactly it, nothing shorter, longer or empty */
    start(&f, (serve_auth){.operator_token = "op-secret"}, NULL);
    assert_int_equal(get(&f, "/api", "Authorization: Bearer op-secret", NULL), 200);
    assert_int_equal(get(&f, "/api", "Authorization: bearer op-secret", NULL), 200);
    assert_int_equal(get(&f, "/api", "Authorization: Bearer op-secre", NULL), 401);
    assert_int_equal(get(&f, "/api", "Authorization: Bearer op-secret2", NULL), 401);
    assert_int_equal(get(&f, "/api", "Authorization: Bearer ", NULL), 401);
    assert_int_equal(get(&f, "/ingress", "Authorization: Bearer op-secret", NULL), 401); /* the API only */
    stop(&f);
}

/* Regression, issue 17 finding 1: `sluice serve` with an empty operator token (--operator-token "" or
 * SLUICE_OPERATOR_TOKEN set but empty) refuses to start (usage error, exit 2) instead of serving with it. */
static void test_serve_refuses_empty_operator_token(void **state)
{
    (void)state;
    const char *bin = getenv("SLUICE_BIN");
    assert_non_null(bin);
    char *wf = tu_src_path("workflows"), store[700], ready[700];
    snprintf(store, sizeof store, "%s/s.db", dir);
    snprintf(ready, sizeof ready, "%s/ready", dir);
    /* `timeout`: before the fix the server started and ran; it must not hang the suite */
    char *const by_flag[] = {"timeout", "20", (char *)bin, "serve", "--workflows", wf, "--store", store, "--listen",
                             "127.0.0.1", "--port", "0", "--ready-file", ready, "--audience", "a", "--operator-token",
                             "", NULL};
    char *err = NULL;
    assert_int_equal(tu_run(by_flag, NULL, &err), 2);
    assert_non_null(strstr(err, "operator token is empty"));
    free(err);
    char *const by_env[] = {"timeout", "20", (char *)bin, "serve", "--workflows", wf, "--store", store, "--listen",
                            "127.0.0.1", "--port", "0", "--ready-file", ready, "--audience", "a", NULL};
    setenv("SLUICE_OPERATOR_TOKEN", "", 1);
    err = NULL;
    assert_int_equal(tu_run(by_env, NULL, &err), 2);
    unsetenv("SLUICE_OPERATOR_TOKEN");
    assert_non_null(strstr(err, "SLUICE_OPERATOR_TOKEN"));
    free(err);
    free(wf);
}

/* Regression, issue 17 finding 16: a wrong operator token was answered "malformed token: expected three segments",
 * which reads like a server bug. On the API (where the operator token is accepted) the message now says it is
 * neither the operator token nor a valid ID token, and why the latter. */
static void test_wrong_operator_token_message(void **state)
{
    (void)state;
    fixture f;
    start(&f, (serve_auth){.operator_token = "op-secret"}, NULL);
    char *body = NULL;
    assert_int_equal(get(&f, "/api", "Authorization: Bearer op-secrex", &body), 401);
    assert_non_null(strstr(body, "not the operator token, and not a valid Google ID token: malformed token"));
    free(body);
    /* ingress takes no operator token: only the token's own fault is named */
    assert_int_equal(get(&f, "/ingress", "Authorization: Bearer op-secrex", &body), 401);
    assert_null(strstr(body, "operator"));
    free(body);
    stop(&f);
}

/* Regression, issue 17 finding 11: --api-allow-email without --allow-email let the API identities deliver events,
 * where docs/api.md says they get 403 on ingress. Wired as server.c does it: oidc accepts any verified email,
 * serve_auth gets api_emails and no ingress list. */
static void test_api_identities_refused_on_ingress_without_allow_email(void **state)
{
    (void)state;
    static const char *const api_emails[] = {OPS, NULL};
    fixture f;
    start(&f, (serve_auth){.api_emails = api_emails}, NULL);
    char *ops = id_token(OPS, AUD), *pusher = id_token(PUSHER, AUD), *body = NULL;
    assert_int_equal(get(&f, "/api", ops, NULL), 200);
    assert_int_equal(get(&f, "/ingress", ops, &body), 403);
    assert_non_null(strstr(body, "identity not allowed on ingress"));
    free(body);
    assert_int_equal(get(&f, "/ingress", pusher, NULL), 200); /* any other verified identity: as documented */
    assert_int_equal(get(&f, "/api", pusher, NULL), 403);
    stop(&f);
    free(ops);
    free(pusher);
}

/* Lines of the captured stderr that contain every one of the needles. */
static int count_lines(const char *text, const char *a, const char *b)
{
    int n = 0;
    for (const char *line = text; line && *line;) {
        const char *nl = strchr(line, '\n');
        size_t len = nl ? (size_t)(nl - line) : strlen(line);
        char *l = strndup(line, len);
        if (strstr(l, a) && (b == NULL || strstr(l, b))) n++;
        free(l);
        line = nl ? nl + 1 : NULL;
    }
    return n;
}

/* Regression, issue 17 finding 15: pushes refused for a wrong audience were logged at INFO (the access log) with
 * no reason, and counted only as "unauthenticated". Each refusal now counts in
 * sluice_auth_refusals_total{route,reason} and gets a WARNING line with its reason, at most one per route and
 * reason per interval; the next line says how many were not logged. */
static void test_refusals_counted_and_logged_by_reason(void **state)
{
    (void)state;
    metrics_reset();
    metrics_declare("sluice_events_total", METRIC_COUNTER, "events");
    serve_refusals *lim = serve_refusals_new(60000);
    fixture f;
    start(&f, (serve_auth){.operator_token = "op-secret", .refusals = lim}, NULL);
    char *wrong_aud = id_token(PUSHER, "https://elsewhere.example/push"), *good = id_token(PUSHER, AUD);
    /* stderr to a file while the requests run */
    char logp[700];
    snprintf(logp, sizeof logp, "%s/stderr.log", dir);
    fflush(stderr);
    int saved = dup(2), fd = open(logp, O_CREAT | O_TRUNC | O_WRONLY, 0600);
    assert_true(saved >= 0 && fd >= 0);
    dup2(fd, 2);
    for (int i = 0; i < 5; i++) assert_int_equal(get(&f, "/ingress", wrong_aud, NULL), 401);
    assert_int_equal(get(&f, "/ingress", "Authorization: Bearer x.y.z", NULL), 401);
    assert_int_equal(get(&f, "/api", wrong_aud, NULL), 401);
    assert_int_equal(get(&f, "/ingress", good, NULL), 200);
    fflush(stderr);
    dup2(saved, 2);
    close(saved);
    close(fd);
    stop(&f);
    char *log = tu_read_file(logp, NULL);
    assert_non_null(log);
    assert_true(metrics_get("sluice_auth_refusals_total", "route=\"pubsub\",reason=\"wrong_audience\"") == 5);
    assert_true(metrics_get("sluice_auth_refusals_total", "route=\"pubsub\",reason=\"malformed\"") == 1);
    assert_true(metrics_get("sluice_auth_refusals_total", "route=\"api\",reason=\"wrong_audience\"") == 1);
    assert_true(metrics_get("sluice_events_total", "source=\"pubsub\",outcome=\"unauthenticated\"") == 6);
    /* one WARNING line per route and reason, with the reason in words and as a field */
    int lines = count_lines(log, "\"severity\":\"WARNING\"", "\"reason\":\"wrong_audience\"");
    if (lines != 2) fprintf(stderr, "captured log:\n%s\n", log);
    assert_int_equal(lines, 2);
    assert_int_equal(count_lines(log, "\"severity\":\"WARNING\"", "wrong audience"), 2);
    assert_int_equal(count_lines(log, "\"severity\":\"WARNING\"", "\"reason\":\"malformed\""), 1);
    assert_int_equal(count_lines(log, "\"severity\":\"WARNING\"", "\"route\":\"api\""), 1);
    assert_int_equal(count_lines(log, "Bearer", NULL), 0); /* never the token */
    free(log);
    free(wrong_aud);
    free(good);
    serve_refusals_free(lim);
    metrics_reset();

    /* the limiter's clock: one line per interval, the next one carries the suppressed count */
    lim = serve_refusals_new(1000);
    int64_t sup = -1;
    assert_true(serve_refusals_admit(lim, "pubsub", "expired", 0, &sup));
    assert_int_equal(sup, 0);
    assert_false(serve_refusals_admit(lim, "pubsub", "expired", 10, &sup));
    assert_false(serve_refusals_admit(lim, "pubsub", "expired", 999, &sup));
    assert_true(serve_refusals_admit(lim, "pubsub", "wrong_audience", 999, &sup)); /* another reason */
    assert_true(serve_refusals_admit(lim, "api", "expired", 999, &sup));            /* another route */
    assert_true(serve_refusals_admit(lim, "pubsub", "expired", 1000, &sup));
    assert_int_equal(sup, 2);
    assert_false(serve_refusals_admit(lim, "pubsub", "expired", 1500, &sup));
    serve_refusals_free(lim);
}

int main(void)
{
    curl_global_init(CURL_GLOBAL_DEFAULT);
    dir = tu_tempdir();
    snprintf(jwks_path, sizeof jwks_path, "%s/jwks.json", dir);
    key = jwt_key_generate(2048);
    json_t *doc = json_pack("{s:[o]}", "keys", jwt_key_public_jwk(key, "k1"));
    char *text = json_dumps(doc, 0);
    tu_write_file(jwks_path, text);
    free(text);
    json_decref(doc);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_empty_operator_token_never_matches),
        cmocka_unit_test(test_serve_refuses_empty_operator_token),
        cmocka_unit_test(test_wrong_operator_token_message),
        cmocka_unit_test(test_api_identities_refused_on_ingress_without_allow_email),
        cmocka_unit_test(test_refusals_counted_and_logged_by_reason),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    jwt_key_free(key);
    tu_rmtree(dir);
    free(dir);
    curl_global_cleanup();
    return rc;
}
