/* test_gauth: Application Default Credentials against the real emulator: all three sources (service-account
 * key, gcloud authorized_user file, metadata server) and their ADC order, token caching, single-flight (50
 * concurrent needs -> exactly one grant, counted by the emulator), refresh before expiry, failures that must
 * not leak secrets, token-endpoint retries; static and no-auth modes. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "emu_harness.h"
#include "gauth.h"
#include "jwt.h"
#include "mhd_stub.h"

static emu_proc emu;
static hc_client *hc;

static int setup(void **state)
{
    (void)state;
    const char *args[] = {"--token-lifetime", "3600", NULL};
    if (emu_start(&emu, args) != 0) return -1;
    hc = hc_new(NULL);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    hc_free(hc);
    emu_stop(&emu);
    return 0;
}

static int per_test_setup(void **state)
{
    (void)state;
    unsetenv("GOOGLE_APPLICATION_CREDENTIALS");
    unsetenv("CLOUDSDK_CONFIG");
    unsetenv("GCE_METADATA_HOST");
    return emu_reset(&emu);
}

typedef struct tok_wait {
    int calls, rc;
    char token[256];
    char err[512];
} tok_wait;

static void on_tok(void *ud, int rc, const char *token, const char *err)
{
    tok_wait *w = ud;
    w->calls++;
    w->rc = rc;
    snprintf(w->token, sizeof w->token, "%s", token ? token : "");
    snprintf(w->err, sizeof w->err, "%s", err ? err : "");
}

static void wait_tokens(tok_wait *w, int n)
{
    for (int i = 0; i < 1000; i++) {
        int done = 0;
        for (int k = 0; k < n; k++) done += w[k].calls;
        if (done >= n) return;
        hc_run(hc, 20);
    }
}

static void test_static_and_none(void **state)
{
    (void)state;
    ga_auth *s = ga_new_static("abc", "p1");
    tok_wait w = {0};
    assert_int_equal(ga_token(s, on_tok, &w), 0); /* answered before returning */
    assert_int_equal(w.calls, 1);
    assert_string_equal(w.token, "abc");
    assert_string_equal(ga_project_id(s), "p1");
    assert_int_equal(ga_invalidate(s, "abc"), 0); /* nothing to refresh */
    ga_free(s);
    ga_auth *n = ga_new_none(NULL);
    memset(&w, 0, sizeof w);
    ga_token(n, on_tok, &w);
    assert_int_equal(w.calls, 1);
    assert_int_equal(w.rc, 0);
    assert_string_equal(w.token, "");
    assert_int_equal(ga_get_kind(n), GA_NONE);
    ga_free(n);
}

static void test_service_account_via_env(void **state)
{
    (void)state;
    setenv("GOOGLE_APPLICATION_CREDENTIALS", emu.sa_path, 1);
    char *err = NULL;
    ga_auth *ga = ga_new_adc(hc, NULL, &err);
    assert_non_null(ga);
    assert_int_equal(ga_get_kind(ga), GA_SERVICE_ACCOUNT);
    assert_string_equal(ga_project_id(ga), "emulator-project");
    tok_wait w = {0};
    assert_true(ga_token(ga, on_tok, &w) > 0); /* nothing cached: waits */
    wait_tokens(&w, 1);
    assert_int_equal(w.rc, 0);
    assert_true(strncmp(w.token, "ya29.", 5) == 0);
    /* The emulator verified the RS256 assertion (kid, iss, aud = token_uri, iat/exp) and granted once. */
    assert_int_equal(emu_stat(&emu, "token_grants", "jwt_bearer", NULL), 1);
    /* Cached: the next need is answered at once, without a grant. */
    tok_wait w2 = {0};
    assert_int_equal(ga_token(ga, on_tok, &w2), 0);
    assert_string_equal(w2.token, w.token);
    assert_int_equal(ga_fetch_count(ga), 1);
    ga_free(ga);
}

static void test_authorized_user_via_gcloud_dir(void **state)
{
    (void)state;
    char *dir = tu_tempdir(), path[600];
    snprintf(path, sizeof path, "%s/application_default_credentials.json", dir);
    char *text = tu_read_file(emu.au_path, NULL);
    assert_non_null(text);
    assert_int_equal(tu_write_file(path, text), 0);
    free(text);
    setenv("CLOUDSDK_CONFIG", dir, 1);
    char *err = NULL;
    ga_auth *ga = ga_new_adc(hc, NULL, &err);
    assert_non_null(ga);
    assert_int_equal(ga_get_kind(ga), GA_AUTHORIZED_USER);
    tok_wait w = {0};
    ga_token(ga, on_tok, &w);
    wait_tokens(&w, 1);
    assert_int_equal(w.rc, 0);
    assert_true(strlen(w.token) > 10);
    assert_int_equal(emu_stat(&emu, "token_grants", "refresh_token", NULL), 1);
    assert_int_equal(emu_stat(&emu, "token_grants", "jwt_bearer", NULL), 0);
    ga_free(ga);
    tu_rmtree(dir);
    free(dir);
}

static void test_metadata_server(void **state)
{
    (void)state;
    char *home = tu_tempdir(); /* no gcloud file there */
    setenv("CLOUDSDK_CONFIG", home, 1);
    setenv("GCE_METADATA_HOST", emu.base + strlen("http://"), 1);
    char *err = NULL;
    ga_auth *ga = ga_new_adc(hc, NULL, &err);
    assert_non_null(ga);
    assert_int_equal(ga_get_kind(ga), GA_METADATA);
    assert_null(ga_project_id(ga));
    tok_wait w = {0};
    ga_token(ga, on_tok, &w);
    wait_tokens(&w, 1);
    assert_int_equal(w.rc, 0);
    assert_int_equal(emu_stat(&emu, "token_grants", "metadata", NULL), 1);
    tok_wait p = {0};
    ga_project_id_fetch(ga, on_tok, &p);
    wait_tokens(&p, 1);
    assert_int_equal(p.rc, 0);
    assert_string_equal(p.token, "emulator-project");
    assert_string_equal(ga_project_id(ga), "emulator-project");
    ga_free(ga);
    /* no_metadata: ADC with nothing configured fails with a clear message. */
    ga_options o = {.no_metadata = 1};
    ga = ga_new_adc(hc, &o, &err);
    assert_null(ga);
    assert_non_null(strstr(err, "no credentials"));
    free(err);
    tu_rmtree(home);
    free(home);
}

static void test_single_flight(void **state)
{
    (void)state;
    char *err = NULL;
    ga_auth *ga = ga_new_from_file(hc, emu.sa_path, NULL, &err);
    assert_non_null(ga);
    tok_wait w[50];
    memset(w, 0, sizeof w);
    for (int i = 0; i < 50; i++) assert_true(ga_token(ga, on_tok, &w[i]) > 0);
    wait_tokens(w, 50);
    for (int i = 0; i < 50; i++) {
        assert_int_equal(w[i].calls, 1);
        assert_int_equal(w[i].rc, 0);
        assert_string_equal(w[i].token, w[0].token);
    }
    assert_int_equal(ga_fetch_count(ga), 1);
    assert_int_equal(emu_stat(&emu, "token_grants", "jwt_bearer", NULL), 1);
    assert_int_equal(emu_stat(&emu, "requests", "token", "200"), 1);
    /* A 401 for that token: concurrent invalidations of the same token cause one refresh. */
    assert_int_equal(ga_invalidate(ga, w[0].token), 1);
    assert_int_equal(ga_invalidate(ga, w[0].token), 1);
    tok_wait again[10];
    memset(again, 0, sizeof again);
    for (int i = 0; i < 10; i++) ga_token(ga, on_tok, &again[i]);
    wait_tokens(again, 10);
    assert_int_equal(ga_fetch_count(ga), 2);
    assert_string_not_equal(again[0].token, w[0].token);
    assert_int_equal(emu_stat(&emu, "token_grants", "jwt_bearer", NULL), 2);
    ga_free(ga);
}

/* Waiters cancelled or left pending at ga_free are handled: cancel -> no callback; free -> "cancelled". */
static void test_cancel_and_free(void **state)
{
    (void)state;
    char *err = NULL;
    ga_auth *ga = ga_new_from_file(hc, emu.au_path, NULL, &err);
    tok_wait a = {0}, b = {0};
    int64_t ida = ga_token(ga, on_tok, &a);
    ga_token(ga, on_tok, &b);
    assert_int_equal(ga_cancel(ga, ida), 0);
    assert_int_equal(ga_cancel(ga, ida), -1);
    ga_free(ga);
    assert_int_equal(a.calls, 0);
    assert_int_equal(b.calls, 1);
    assert_int_equal(b.rc, -1);
    for (int i = 0; i < 20; i++) hc_run(hc, 5); /* the cancelled transfer leaves nothing behind */
    assert_int_equal(hc_active(hc), 0);
}

static void test_refresh_before_expiry(void **state)
{
    (void)state;
    /* 3 s tokens: fresh for 1.5 s (half-life margin), usable until 2.7 s. */
    assert_int_equal(emu_config(&emu, "{\"token_lifetime_s\": 3}"), 0);
    char *err = NULL;
    ga_auth *ga = ga_new_from_file(hc, emu.sa_path, NULL, &err);
    tok_wait w1 = {0}, w2 = {0}, w3 = {0};
    ga_token(ga, on_tok, &w1);
    wait_tokens(&w1, 1);
    assert_int_equal(w1.rc, 0);
    usleep(1700 * 1000);
    /* Inside the margin: the old (still valid) token comes back at once and a refresh starts behind it. */
    assert_int_equal(ga_token(ga, on_tok, &w2), 0);
    assert_string_equal(w2.token, w1.token);
    assert_int_equal(ga_fetch_count(ga), 2);
    while (hc_run(hc, 20) > 0) {
    }
    assert_int_equal(ga_token(ga, on_tok, &w3), 0);
    assert_string_not_equal(w3.token, w1.token);
    assert_int_equal(emu_stat(&emu, "token_grants", "jwt_bearer", NULL), 2);
    /* Past the usable point the caller waits for a fresh token rather than getting an expiring one. */
    usleep(2800 * 1000);
    tok_wait w4 = {0};
    assert_true(ga_token(ga, on_tok, &w4) > 0);
    wait_tokens(&w4, 1);
    assert_string_not_equal(w4.token, w3.token);
    assert_int_equal(emu_stat(&emu, "token_grants", "jwt_bearer", NULL), 3);
    ga_free(ga);
}

static void test_bad_credentials_do_not_leak(void **state)
{
    (void)state;
    char *dir = tu_tempdir(), path[600], *err = NULL;
    /* A refresh token the endpoint rejects: 400 invalid_grant, not retried, reported without the secret. */
    json_t *au = json_load_file(emu.au_path, 0, NULL);
    json_object_set_new(au, "refresh_token", json_string("1//wrong-secret-refresh-token"));
    snprintf(path, sizeof path, "%s/au.json", dir);
    json_dump_file(au, path, 0);
    const char *secret = json_string_value(json_object_get(au, "client_secret"));
    ga_auth *ga = ga_new_from_file(hc, path, NULL, &err);
    assert_non_null(ga);
    tok_wait w = {0};
    ga_token(ga, on_tok, &w);
    wait_tokens(&w, 1);
    assert_int_equal(w.rc, -1);
    assert_non_null(strstr(w.err, "invalid_grant"));
    assert_null(strstr(w.err, "wrong-secret"));
    assert_null(strstr(w.err, secret));
    assert_int_equal(ga_fetch_count(ga), 1);
    ga_free(ga);
    json_decref(au);
    /* A key file whose private key is garbage: the error names the file, never the key text. */
    json_t *sa = json_load_file(emu.sa_path, 0, NULL);
    json_object_set_new(sa, "private_key", json_string("-----BEGIN PRIVATE KEY-----\nSECRETSECRET\n-----END PRIVATE KEY-----\n"));
    json_dump_file(sa, path, 0);
    json_decref(sa);
    assert_null(ga_new_from_file(hc, path, NULL, &err));
    assert_non_null(strstr(err, "private_key"));
    assert_null(strstr(err, "SECRETSECRET"));
    free(err);
    /* Not JSON at all (the text is a key): only the position is reported. */
    tu_write_file(path, "-----BEGIN PRIVATE KEY----- MIIE SECRETSECRET");
    assert_null(ga_new_from_file(hc, path, NULL, &err));
    assert_null(strstr(err, "SECRETSECRET"));
    free(err);
    tu_write_file(path, "{\"type\":\"external_account\"}");
    assert_null(ga_new_from_file(hc, path, NULL, &err));
    assert_non_null(strstr(err, "unsupported credentials type"));
    free(err);
    tu_rmtree(dir);
    free(dir);
}

static void test_token_endpoint_retries(void **state)
{
    (void)state;
    /* Every token request fails with 503: retried per policy (4 attempts), then every waiter gets the error. */
    assert_int_equal(emu_config(&emu, "{\"faults\": {\"token\": {\"rate_503\": 1.0}}}"), 0);
    retry_policy p = {.initial_ms = 10, .multiplier = 2, .cap_ms = 50, .max_attempts = 4, .deadline_ms = 10000};
    ga_options o = {.policy = &p};
    char *err = NULL;
    ga_auth *ga = ga_new_from_file(hc, emu.sa_path, &o, &err);
    tok_wait w[3];
    memset(w, 0, sizeof w);
    for (int i = 0; i < 3; i++) ga_token(ga, on_tok, &w[i]);
    wait_tokens(w, 3);
    for (int i = 0; i < 3; i++) {
        assert_int_equal(w[i].rc, -1);
        assert_non_null(strstr(w[i].err, "503"));
    }
    assert_int_equal(emu_stat(&emu, "requests", "token", "503"), 4);
    /* Once the endpoint recovers the next need fetches again. */
    assert_int_equal(emu_config(&emu, "{\"faults\": {\"token\": {\"rate_503\": 0}}}"), 0);
    tok_wait ok = {0};
    ga_token(ga, on_tok, &ok);
    wait_tokens(&ok, 1);
    assert_int_equal(ok.rc, 0);
    ga_free(ga);
}

static int64_t fixed_wall(void *ud)
{
    (void)ud;
    return 1700000000;
}

/* The assertion itself, checked independently of the emulator: header kid = private_key_id, RS256; claims iss,
 * scope, aud = the key's token_uri, exp = iat + 3600 (<= 1 h); a valid signature. Also "expires_in" given as a
 * string, and token responses of the wrong shape. */
static void test_assertion_claims_and_token_shapes(void **state)
{
    (void)state;
    stub_server *st = stub_start();
    assert_non_null(st);
    jwt_key *key = jwt_key_generate(2048);
    char *pem = jwt_key_private_pem(key);
    char token_uri[128];
    snprintf(token_uri, sizeof token_uri, "%s/token", st->base);
    json_t *sa = json_pack("{s:s, s:s, s:s, s:s, s:s, s:s}", "type", "service_account", "project_id", "p",
                           "private_key_id", "kid-123", "private_key", pem, "client_email", "sa@p.iam.gserviceaccount.com",
                           "token_uri", token_uri);
    char *dir = tu_tempdir(), path[600];
    snprintf(path, sizeof path, "%s/sa.json", dir);
    json_dump_file(sa, path, 0);
    stub_set(st, 200, "{\"access_token\":\"tok-1\",\"expires_in\":\"3599\",\"token_type\":\"Bearer\"}", 0);
    ga_options o = {.wall_clock = fixed_wall};
    char *err = NULL;
    ga_auth *g = ga_new_from_file(hc, path, &o, &err);
    assert_non_null(g);
    tok_wait w = {0};
    ga_token(g, on_tok, &w);
    wait_tokens(&w, 1);
    assert_int_equal(w.rc, 0);
    assert_string_equal(w.token, "tok-1");
    pthread_mutex_lock(&st->mu);
    char *body = strdup(st->last_body);
    pthread_mutex_unlock(&st->mu);
    const char *prefix = "grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer&assertion=";
    assert_true(strncmp(body, prefix, strlen(prefix)) == 0);
    const char *assertion = body + strlen(prefix);
    json_t *hdr = NULL, *claims = NULL;
    const char *why = NULL;
    assert_int_equal(jwt_decode(assertion, &hdr, &claims, &why), 0);
    assert_string_equal(json_string_value(json_object_get(hdr, "kid")), "kid-123");
    assert_string_equal(json_string_value(json_object_get(hdr, "alg")), "RS256");
    assert_string_equal(json_string_value(json_object_get(claims, "iss")), "sa@p.iam.gserviceaccount.com");
    assert_string_equal(json_string_value(json_object_get(claims, "scope")), "https://www.googleapis.com/auth/cloud-platform");
    assert_string_equal(json_string_value(json_object_get(claims, "aud")), token_uri);
    assert_int_equal(json_integer_value(json_object_get(claims, "iat")), 1700000000);
    assert_int_equal(json_integer_value(json_object_get(claims, "exp")), 1700000000 + 3600);
    assert_int_equal(jwt_verify_rs256(assertion, key, &why), 0);
    json_decref(hdr);
    json_decref(claims);
    free(body);
    ga_free(g);
    /* Wrong shapes: each is an error, never a crash, never retried. */
    const char *bad[] = {"{\"access_token\":\"t\",\"expires_in\":\"soon\"}", "{\"access_token\":\"t\"}",
                         "{\"expires_in\":3600}", "{\"access_token\":5,\"expires_in\":3600}", "not json", "[]",
                         "{\"access_token\":\"t\",\"expires_in\":-5}"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        stub_set(st, 200, bad[i], 0);
        g = ga_new_from_file(hc, path, &o, &err);
        tok_wait b = {0};
        ga_token(g, on_tok, &b);
        wait_tokens(&b, 1);
        assert_int_equal(b.rc, -1);
        assert_non_null(strstr(b.err, "token response"));
        assert_int_equal(ga_fetch_count(g), 1);
        ga_free(g);
    }
    json_decref(sa);
    free(pem);
    jwt_key_free(key);
    tu_rmtree(dir);
    free(dir);
    stub_stop(st);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(test_static_and_none, per_test_setup),
        cmocka_unit_test_setup(test_service_account_via_env, per_test_setup),
        cmocka_unit_test_setup(test_authorized_user_via_gcloud_dir, per_test_setup),
        cmocka_unit_test_setup(test_metadata_server, per_test_setup),
        cmocka_unit_test_setup(test_single_flight, per_test_setup),
        cmocka_unit_test_setup(test_cancel_and_free, per_test_setup),
        cmocka_unit_test_setup(test_refresh_before_expiry, per_test_setup),
        cmocka_unit_test_setup(test_bad_credentials_do_not_leak, per_test_setup),
        cmocka_unit_test_setup(test_token_endpoint_retries, per_test_setup),
        cmocka_unit_test_setup(test_assertion_claims_and_token_shapes, per_test_setup),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
