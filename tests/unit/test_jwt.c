/* test_jwt: base64url, RSA keys (PEM, JWK, generation), RS256 sign/decode/verify and the forgeries a
 * verifier must refuse (tampered payload, alg none, HS256 keyed with the public key, wrong key, garbage). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/pem.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "jwt.h"

static jwt_key *g_key;   /* shared private key: generation is slow */
static jwt_key *g_other; /* an unrelated key */

static int setup(void **state)
{
    (void)state;
    g_key = jwt_key_generate(2048);
    g_other = jwt_key_generate(2048);
    return g_key && g_other ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    jwt_key_free(g_key);
    jwt_key_free(g_other);
    return 0;
}

static char *sign_sample(const jwt_key *key)
{
    json_t *hdr = json_pack("{s:s}", "kid", "k1");
    json_t *claims = json_pack("{s:s, s:s, s:i}", "iss", "a@b", "aud", "x", "exp", 2000000000);
    char *tok = jwt_sign_rs256(key, hdr, claims);
    json_decref(hdr);
    json_decref(claims);
    return tok;
}

/* Builds "<b64(header)>.<b64(claims)>.<sig64>" from raw strings; caller frees. */
static char *assemble(const char *header, const char *claims, const char *sig64)
{
    char *h = jwt_b64url_encode((const unsigned char *)header, strlen(header));
    char *c = jwt_b64url_encode((const unsigned char *)claims, strlen(claims));
    size_t n = strlen(h) + strlen(c) + strlen(sig64) + 3;
    char *out = malloc(n);
    snprintf(out, n, "%s.%s.%s", h, c, sig64);
    free(h);
    free(c);
    return out;
}

static void test_b64url(void **state)
{
    (void)state;
    const unsigned char bin[] = {0xfb, 0xff, 0xfe, 0x00, 0x41};
    for (size_t len = 0; len <= sizeof bin; len++) {
        char *s = jwt_b64url_encode(bin, len);
        assert_non_null(s);
        assert_null(strchr(s, '='));
        assert_null(strchr(s, '+'));
        assert_null(strchr(s, '/'));
        size_t n = 99;
        unsigned char *back = jwt_b64url_decode(s, strlen(s), &n);
        assert_non_null(back);
        assert_int_equal(n, len);
        assert_memory_equal(back, bin, len);
        free(back);
        free(s);
    }
    char *s = jwt_b64url_encode(bin, 3);
    assert_string_equal(s, "-__-");
    free(s);
    size_t n;
    assert_null(jwt_b64url_decode("ab+c", 4, &n));  /* standard alphabet is refused */
    assert_null(jwt_b64url_decode("abc=", 4, &n));  /* padding is refused */
    assert_null(jwt_b64url_decode("abcde", 5, &n)); /* impossible length */
    assert_null(jwt_b64url_decode("ab c", 4, &n));
    /* Standard base64 (Pub/Sub message.data). */
    char *std = jwt_b64_encode(bin, 5);
    assert_string_equal(std, "+//+AEE=");
    unsigned char *back = jwt_b64_decode(std, strlen(std), &n);
    assert_non_null(back);
    assert_int_equal(n, 5);
    assert_memory_equal(back, bin, 5);
    free(back);
    free(std);
    assert_null(jwt_b64_decode("-__-", 4, &n)); /* URL alphabet is refused */
    assert_null(jwt_b64_decode("abc", 3, &n));  /* unpadded is refused */
    assert_null(jwt_b64_decode("a===", 4, &n));
    unsigned char *d = jwt_b64url_decode("aGk", 3, &n);
    assert_non_null(d);
    assert_string_equal((char *)d, "hi");
    free(d);
}

static void test_round_trip(void **state)
{
    (void)state;
    char *tok = sign_sample(g_key);
    assert_non_null(tok);
    const char *err = NULL;
    assert_int_equal(jwt_verify_rs256(tok, g_key, &err), 0);
    json_t *h = NULL, *c = NULL;
    assert_int_equal(jwt_decode(tok, &h, &c, &err), 0);
    assert_string_equal(json_string_value(json_object_get(h, "alg")), "RS256");
    assert_string_equal(json_string_value(json_object_get(h, "typ")), "JWT");
    assert_string_equal(json_string_value(json_object_get(h, "kid")), "k1");
    assert_string_equal(json_string_value(json_object_get(c, "iss")), "a@b");
    json_decref(h);
    json_decref(c);
    free(tok);
}

static void test_pem_and_jwk(void **state)
{
    (void)state;
    char *pem = jwt_key_private_pem(g_key);
    assert_non_null(pem);
    assert_non_null(strstr(pem, "BEGIN PRIVATE KEY"));
    jwt_key *k2 = jwt_key_from_pem(pem);
    assert_non_null(k2);
    char *tok = sign_sample(k2);
    assert_int_equal(jwt_verify_rs256(tok, g_key, NULL), 0);

    /* A public JWK verifies, cannot sign and cannot export a private PEM. */
    json_t *jwk = jwt_key_public_jwk(g_key, "kid-1");
    assert_non_null(jwk);
    assert_string_equal(json_string_value(json_object_get(jwk, "kty")), "RSA");
    assert_string_equal(json_string_value(json_object_get(jwk, "alg")), "RS256");
    assert_string_equal(json_string_value(json_object_get(jwk, "use")), "sig");
    assert_string_equal(json_string_value(json_object_get(jwk, "kid")), "kid-1");
    assert_string_equal(json_string_value(json_object_get(jwk, "e")), "AQAB");
    jwt_key *pub = jwt_key_from_jwk(jwk);
    assert_non_null(pub);
    assert_int_equal(jwt_verify_rs256(tok, pub, NULL), 0);
    assert_null(jwt_key_private_pem(pub));
    assert_null(sign_sample(pub));

    json_t *bad = json_pack("{s:s, s:s, s:s}", "kty", "EC", "n", "AQAB", "e", "AQAB");
    assert_null(jwt_key_from_jwk(bad));
    json_decref(bad);
    bad = json_pack("{s:s, s:s}", "kty", "RSA", "n", "!!");
    assert_null(jwt_key_from_jwk(bad));
    json_decref(bad);
    assert_null(jwt_key_from_pem("-----BEGIN PRIVATE KEY-----\nnope\n-----END PRIVATE KEY-----\n"));
    assert_null(jwt_key_from_pem(""));

    json_decref(jwk);
    jwt_key_free(pub);
    jwt_key_free(k2);
    free(tok);
    free(pem);
}

/* The text held by a memory BIO, which is freed; caller frees the result. */
static char *bio_text(BIO *bio)
{
    char *data = NULL;
    long n = BIO_get_mem_data(bio, &data);
    char *out = malloc((size_t)n + 1);
    memcpy(out, data, (size_t)n);
    out[n] = '\0';
    BIO_free(bio);
    return out;
}

/* Every PEM form a service-account file or a peer may hand us: PKCS#8, PKCS#1 private, SPKI public. */
static void test_pem_forms(void **state)
{
    (void)state;
    EVP_PKEY *pkey = EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)2048);
    assert_non_null(pkey);
    BIO *b1 = BIO_new(BIO_s_mem()), *b2 = BIO_new(BIO_s_mem()), *b3 = BIO_new(BIO_s_mem());
    assert_int_equal(PEM_write_bio_PrivateKey(b1, pkey, NULL, NULL, 0, NULL, NULL), 1);
    assert_int_equal(PEM_write_bio_PrivateKey_traditional(b2, pkey, NULL, NULL, 0, NULL, NULL), 1);
    assert_int_equal(PEM_write_bio_PUBKEY(b3, pkey), 1);
    char *pkcs8 = bio_text(b1), *pkcs1 = bio_text(b2), *spki = bio_text(b3);
    assert_non_null(strstr(pkcs1, "BEGIN RSA PRIVATE KEY"));
    assert_non_null(strstr(spki, "BEGIN PUBLIC KEY"));
    jwt_key *k8 = jwt_key_from_pem(pkcs8), *k1 = jwt_key_from_pem(pkcs1), *kp = jwt_key_from_pem(spki);
    assert_non_null(k8);
    assert_non_null(k1);
    assert_non_null(kp);
    char *t8 = sign_sample(k8), *t1 = sign_sample(k1);
    assert_int_equal(jwt_verify_rs256(t8, kp, NULL), 0);
    assert_int_equal(jwt_verify_rs256(t1, kp, NULL), 0);
    assert_null(sign_sample(kp));
    assert_int_equal(jwt_verify_rs256(t8, g_key, NULL), -1);
    free(t8);
    free(t1);
    jwt_key_free(k8);
    jwt_key_free(k1);
    jwt_key_free(kp);
    free(pkcs8);
    free(pkcs1);
    free(spki);
    EVP_PKEY_free(pkey);
}

static void test_tampered_payload(void **state)
{
    (void)state;
    char *tok = sign_sample(g_key);
    char *d1 = strchr(tok, '.');
    char *d2 = strchr(d1 + 1, '.');
    /* Replace the claims with other (valid) claims, keep the signature. */
    char *evil = jwt_b64url_encode((const unsigned char *)"{\"iss\":\"evil\"}", 14);
    size_t n = (size_t)(d1 - tok) + strlen(evil) + strlen(d2) + 2;
    char *forged = malloc(n);
    snprintf(forged, n, "%.*s.%s%s", (int)(d1 - tok), tok, evil, d2);
    const char *err = NULL;
    assert_int_equal(jwt_verify_rs256(forged, g_key, &err), -1);
    assert_string_equal(err, "invalid signature");
    /* Flipping one signature character also fails. */
    tok[strlen(tok) - 2] = tok[strlen(tok) - 2] == 'A' ? 'B' : 'A';
    assert_int_equal(jwt_verify_rs256(tok, g_key, &err), -1);
    free(evil);
    free(forged);
    free(tok);
}

static void test_alg_none(void **state)
{
    (void)state;
    const char *err = NULL;
    char *tok = assemble("{\"alg\":\"none\",\"typ\":\"JWT\"}", "{\"iss\":\"a@b\"}", "");
    assert_int_equal(jwt_verify_rs256(tok, g_key, &err), -1);
    free(tok);
    tok = assemble("{\"alg\":\"none\"}", "{\"iss\":\"a@b\"}", "AAAA");
    assert_int_equal(jwt_verify_rs256(tok, g_key, &err), -1);
    assert_string_equal(err, "unsupported algorithm: only RS256 is accepted");
    free(tok);
    tok = assemble("{\"typ\":\"JWT\"}", "{\"iss\":\"a@b\"}", "AAAA");
    assert_int_equal(jwt_verify_rs256(tok, g_key, &err), -1);
    free(tok);
    /* Decoding does not verify and still works for such a token. */
    json_t *h = NULL, *c = NULL;
    tok = assemble("{\"alg\":\"none\"}", "{\"iss\":\"a@b\"}", "");
    assert_int_equal(jwt_decode(tok, &h, &c, &err), 0);
    assert_string_equal(json_string_value(json_object_get(h, "alg")), "none");
    json_decref(h);
    json_decref(c);
    free(tok);
}

/* The classic key-confusion forgery: HMAC-SHA256 keyed with the verifier's public key. */
static void test_hs256_with_public_key(void **state)
{
    (void)state;
    json_t *jwk = jwt_key_public_jwk(g_key, NULL);
    char *secret = json_dumps(jwk, JSON_COMPACT);
    char *tok0 = assemble("{\"alg\":\"HS256\",\"typ\":\"JWT\"}", "{\"iss\":\"a@b\"}", "x");
    char *d2 = strrchr(tok0, '.');
    unsigned char mac[EVP_MAX_MD_SIZE];
    unsigned int maclen = 0;
    HMAC(EVP_sha256(), secret, (int)strlen(secret), (unsigned char *)tok0, (size_t)(d2 - tok0), mac, &maclen);
    char *mac64 = jwt_b64url_encode(mac, maclen);
    *d2 = '\0';
    size_t n = strlen(tok0) + strlen(mac64) + 2;
    char *forged = malloc(n);
    snprintf(forged, n, "%s.%s", tok0, mac64);
    const char *err = NULL;
    assert_int_equal(jwt_verify_rs256(forged, g_key, &err), -1);
    assert_string_equal(err, "unsupported algorithm: only RS256 is accepted");
    free(forged);
    free(mac64);
    free(tok0);
    free(secret);
    json_decref(jwk);
}

static void test_wrong_key(void **state)
{
    (void)state;
    char *tok = sign_sample(g_key);
    const char *err = NULL;
    assert_int_equal(jwt_verify_rs256(tok, g_other, &err), -1);
    assert_string_equal(err, "invalid signature");
    free(tok);
}

static void test_garbage(void **state)
{
    (void)state;
    static const char *const bad[] = {"", ".", "..", "a.b", "a.b.c.d", "!!!.???.***", "e30.e30.", ".e30.AAAA",
                                      "e30..AAAA", "bm90IGpzb24.e30.AAAA", "e30.e30.A", "WzFd.e30.AAAA"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        const char *err = NULL;
        assert_int_equal(jwt_verify_rs256(bad[i], g_key, &err), -1);
        assert_non_null(err);
    }
    assert_int_equal(jwt_verify_rs256(NULL, g_key, NULL), -1);
    json_t *h = NULL, *c = NULL;
    const char *err = NULL;
    assert_int_equal(jwt_decode("bm90IGpzb24.e30.AAAA", &h, &c, &err), -1);
    assert_null(h);
    assert_null(c);
    /* A valid token cut short in its signature fails cleanly. */
    char *tok = sign_sample(g_key);
    tok[strlen(tok) - 5] = '\0';
    assert_int_equal(jwt_verify_rs256(tok, g_key, &err), -1);
    free(tok);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_b64url),          cmocka_unit_test(test_round_trip),
        cmocka_unit_test(test_pem_and_jwk),     cmocka_unit_test(test_pem_forms),
        cmocka_unit_test(test_tampered_payload),
        cmocka_unit_test(test_alg_none),        cmocka_unit_test(test_hs256_with_public_key),
        cmocka_unit_test(test_wrong_key),       cmocka_unit_test(test_garbage),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
