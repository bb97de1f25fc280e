/* test_oidc: the token verifier with an injected clock and a JWKS file: valid tokens pass and are cached, a
 * cached token stops passing once it expires, an unknown kid refetches the keys at most once per interval
 * (key rotation works, a flood of bogus kids does not hammer the JWKS endpoint), and the refusal classes. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "jwt.h"
#include "oidc.h"
#include "testutil.h"

static int64_t fake_now = 1800000000;
static int64_t clock_fn(void) { return fake_now; }

static char *dir, jwks_path[600];
static jwt_key *k1, *k2;

static void write_jwks(int with_k2)
{
    json_t *keys = json_array();
    json_array_append_new(keys, jwt_key_public_jwk(k1, "k1"));
    if (with_k2) json_array_append_new(keys, jwt_key_public_jwk(k2, "k2"));
    json_t *doc = json_pack("{s:o}", "keys", keys);
    char *t = json_dumps(doc, 0);
    tu_write_file(jwks_path, t);
    free(t);
    json_decref(doc);
}

static char *bearer(jwt_key *key, const char *kid, int64_t iat, int64_t exp, const char *email)
{
    json_t *claims = json_pack("{s:s,s:s,s:s,s:b,s:I,s:I}", "iss", "https://accounts.google.com", "aud", "aud-1",
                               "email", email, "email_verified", 1, "iat", (json_int_t)iat, "exp", (json_int_t)exp);
    json_t *h = json_pack("{s:s}", "kid", kid);
    char *tok = jwt_sign_rs256(key, h, claims);
    char *out = NULL;
    if (asprintf(&out, "Bearer %s", tok) < 0) out = NULL;
    free(tok);
    json_decref(h);
    json_decref(claims);
    return out;
}

static oidc *make(void)
{
    static const char *const emails[] = {"ok@x.iam.gserviceaccount.com", NULL};
    oidc_options o = {.jwks_file = jwks_path, .audience = "aud-1", .emails = emails, .clock_s = clock_fn};
    const char *err = NULL;
    oidc *v = oidc_new(&o, &err);
    assert_non_null(v);
    return v;
}

static void test_cached_token_expires(void **state)
{
    (void)state;
    write_jwks(0);
    oidc *v = make();
    char *b = bearer(k1, "k1", fake_now, fake_now + 600, "ok@x.iam.gserviceaccount.com");
    char email[128], why[128];
    assert_int_equal(oidc_verify(v, b, email, sizeof email, why, sizeof why), OIDC_OK);
    assert_string_equal(email, "ok@x.iam.gserviceaccount.com");
    assert_int_equal(oidc_verify(v, b, NULL, 0, why, sizeof why), OIDC_OK); /* from the cache */
    fake_now += 600 + 61;                                                   /* past exp + skew */
    assert_int_equal(oidc_verify(v, b, NULL, 0, why, sizeof why), OIDC_UNAUTHENTICATED);
    assert_string_equal(why, "token expired");
    free(b);
    oidc_free(v);
}

static void test_unknown_kid_refetch_is_rate_limited(void **state)
{
    (void)state;
    write_jwks(0);
    oidc *v = make();
    char why[128];
    char *b1 = bearer(k1, "k1", fake_now, fake_now + 3600, "ok@x.iam.gserviceaccount.com");
    assert_int_equal(oidc_verify(v, b1, NULL, 0, why, sizeof why), OIDC_OK);
    write_jwks(1); /* Google rotates in a new key */
    char *b2 = bearer(k2, "k2", fake_now, fake_now + 3600, "ok@x.iam.gserviceaccount.com");
    /* just fetched: an unknown kid does not refetch yet */
    assert_int_equal(oidc_verify(v, b2, NULL, 0, why, sizeof why), OIDC_UNAUTHENTICATED);
    assert_string_equal(why, "unknown key id");
    fake_now += 31;
    assert_int_equal(oidc_verify(v, b2, NULL, 0, why, sizeof why), OIDC_OK);
    int64_t ok = 0, failed = 0;
    oidc_fetch_counts(v, &ok, &failed);
    assert_int_equal(ok, 2);
    /* a burst of bogus kids costs at most one fetch per interval */
    char *bogus = bearer(k2, "k-bogus", fake_now, fake_now + 3600, "ok@x.iam.gserviceaccount.com");
    for (int i = 0; i < 50; i++) assert_int_equal(oidc_verify(v, bogus, NULL, 0, why, sizeof why), OIDC_UNAUTHENTICATED);
    oidc_fetch_counts(v, &ok, &failed);
    assert_int_equal(ok, 2);
    free(b1);
    free(b2);
    free(bogus);
    oidc_free(v);
}

static void test_refusal_classes(void **state)
{
    (void)state;
    write_jwks(0);
    oidc *v = make();
    char why[128];
    char *wrong_email = bearer(k1, "k1", fake_now, fake_now + 3600, "other@x.iam.gserviceaccount.com");
    assert_int_equal(oidc_verify(v, wrong_email, NULL, 0, why, sizeof why), OIDC_FORBIDDEN);
    char *future = bearer(k1, "k1", fake_now + 3600, fake_now + 7200, "ok@x.iam.gserviceaccount.com");
    assert_int_equal(oidc_verify(v, future, NULL, 0, why, sizeof why), OIDC_UNAUTHENTICATED);
    char *skewed = bearer(k1, "k1", fake_now + 30, fake_now + 3600, "ok@x.iam.gserviceaccount.com");
    assert_int_equal(oidc_verify(v, skewed, NULL, 0, why, sizeof why), OIDC_OK); /* within 60 s skew */
    assert_int_equal(oidc_verify(v, NULL, NULL, 0, why, sizeof why), OIDC_UNAUTHENTICATED);
    assert_int_equal(oidc_verify(v, "Bearer", NULL, 0, why, sizeof why), OIDC_UNAUTHENTICATED);
    free(wrong_email);
    free(future);
    free(skewed);
    oidc_free(v);
    /* no keys at all: 503-class, a retry may help */
    oidc_options o = {.jwks_file = "/nonexistent/jwks.json", .audience = "aud-1", .clock_s = clock_fn};
    const char *err = NULL;
    oidc *none = oidc_new(&o, &err);
    char *b = bearer(k1, "k1", fake_now, fake_now + 3600, "ok@x.iam.gserviceaccount.com");
    assert_int_equal(oidc_verify(none, b, NULL, 0, why, sizeof why), OIDC_UNAVAILABLE);
    free(b);
    oidc_free(none);
    /* an audience is mandatory */
    oidc_options bad = {.jwks_file = jwks_path};
    assert_null(oidc_new(&bad, &err));
}

/* Regression (found by fuzz/fuzz_jwt.c): a time claim given as a real beyond int64_t ("exp": 1.55e41) was cast
 * to int64_t, which is undefined behaviour (UBSan aborts; x86 yields INT64_MIN, so such a token was refused as
 * "expired" only by accident). exp, iat and nbf outside int64_t are now invalid claims; ordinary large values
 * still pass. */
static void test_time_claims_out_of_range(void **state)
{
    (void)state;
    write_jwks(0);
    oidc *v = make();
    static const struct {
        const char *claim;
        double value;
        const char *why;
    } cases[] = {
        {"exp", 1.55e41, "missing or invalid exp"},
        {"exp", -1e300, "missing or invalid exp"},
        {"exp", 9.3e18, "missing or invalid exp"},
        {"iat", 1e300, "token issued in the future"},
        {"nbf", -1e41, "token not yet valid"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        json_t *claims = json_pack("{s:s,s:s,s:s,s:b,s:I,s:I}", "iss", "https://accounts.google.com", "aud", "aud-1",
                                   "email", "ok@x.iam.gserviceaccount.com", "email_verified", 1, "iat",
                                   (json_int_t)fake_now, "exp", (json_int_t)(fake_now + 600));
        json_object_set_new(claims, cases[i].claim, json_real(cases[i].value));
        json_t *h = json_pack("{s:s}", "kid", "k1");
        char *tok = jwt_sign_rs256(k1, h, claims), *b = NULL;
        assert_non_null(tok);
        assert_true(asprintf(&b, "Bearer %s", tok) > 0);
        char why[128] = "";
        assert_int_equal(oidc_verify(v, b, NULL, 0, why, sizeof why), OIDC_UNAUTHENTICATED);
        if (strcmp(why, cases[i].why) != 0) fprintf(stderr, "%s = %g: got '%s'\n", cases[i].claim, cases[i].value, why);
        assert_string_equal(why, cases[i].why);
        free(b);
        free(tok);
        json_decref(h);
        json_decref(claims);
    }
    char *far = bearer(k1, "k1", fake_now, 4102444800, "ok@x.iam.gserviceaccount.com"); /* exp in 2100 */
    assert_int_equal(oidc_verify(v, far, NULL, 0, NULL, 0), OIDC_OK);
    free(far);
    oidc_free(v);
}

int main(void)
{
    dir = tu_tempdir();
    snprintf(jwks_path, sizeof jwks_path, "%s/jwks.json", dir);
    k1 = jwt_key_generate(2048);
    k2 = jwt_key_generate(2048);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_cached_token_expires),
        cmocka_unit_test(test_unknown_kid_refetch_is_rate_limited),
        cmocka_unit_test(test_refusal_classes),
        cmocka_unit_test(test_time_claims_out_of_range),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    jwt_key_free(k1);
    jwt_key_free(k2);
    tu_rmtree(dir);
    free(dir);
    return rc;
}
