/* jwt: owns compact JWS (RS256) signing/verification, base64url and RSA key import/export (PEM, JWK).
 * Uses: OpenSSL 3 (EVP, OSSL_DECODER/ENCODER, OSSL_PARAM), jansson.
 * Must not: do I/O, know about HTTP, log key material or token text, or use the deprecated RSA_* API. */
#include "jwt.h"
#include "mem.h"

#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/decoder.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/param_build.h>
#include <openssl/pem.h>
#include <stdlib.h>
#include <string.h>

struct jwt_key {
    EVP_PKEY *pkey;
    int has_private;
};

/* ---------- base64url ---------- */

char *jwt_b64url_encode(const unsigned char *data, size_t len)
{
    if (len > (size_t)1 << 30) return NULL; /* EVP_EncodeBlock takes an int */
    size_t cap = 4 * ((len + 2) / 3) + 1;
    char *out = xmalloc(cap);
    int n = EVP_EncodeBlock((unsigned char *)out, data, (int)len);
    if (n < 0) {
        free(out);
        return NULL;
    }
    /* Translate to the URL alphabet and drop the padding. */
    while (n > 0 && out[n - 1] == '=') n--;
    out[n] = '\0';
    for (int i = 0; i < n; i++) {
        if (out[i] == '+') out[i] = '-';
        else if (out[i] == '/') out[i] = '_';
    }
    return out;
}

static int b64url_char_ok(char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '_';
}

unsigned char *jwt_b64url_decode(const char *text, size_t text_len, size_t *len)
{
    unsigned char *out = NULL;
    char *tmp = NULL;
    if (text == NULL || text_len > (size_t)1 << 30 || text_len % 4 == 1) goto fail;
    /* Reject anything outside the URL alphabet (including padding and whitespace, which EVP_DecodeBlock would
     * otherwise tolerate), then translate to the standard alphabet and restore the padding. */
    for (size_t i = 0; i < text_len; i++)
        if (!b64url_char_ok(text[i])) goto fail;
    size_t pad = (4 - text_len % 4) % 4;
    size_t padded = text_len + pad;
    tmp = xmalloc(padded + 1);
    out = xmalloc(padded / 4 * 3 + 1);
    for (size_t i = 0; i < text_len; i++) tmp[i] = text[i] == '-' ? '+' : text[i] == '_' ? '/' : text[i];
    for (size_t i = 0; i < pad; i++) tmp[text_len + i] = '=';
    tmp[padded] = '\0';
    int n = padded ? EVP_DecodeBlock(out, (unsigned char *)tmp, (int)padded) : 0;
    if (n < 0 || (size_t)n < pad) goto fail;
    n -= (int)pad; /* EVP_DecodeBlock counts the padding as zero bytes */
    out[n] = '\0';
    if (len != NULL) *len = (size_t)n;
    free(tmp);
    return out;
fail:
    free(tmp);
    free(out);
    return NULL;
}

char *jwt_b64_encode(const unsigned char *data, size_t len)
{
    if (len > (size_t)1 << 30) return NULL;
    char *out = xmalloc(4 * ((len + 2) / 3) + 1);
    if (EVP_EncodeBlock((unsigned char *)out, data, (int)len) < 0) {
        free(out);
        return NULL;
    }
    return out;
}

unsigned char *jwt_b64_decode(const char *text, size_t text_len, size_t *len)
{
    /* Strip the padding, translate to the URL alphabet and reuse the strict decoder. */
    if (text == NULL || text_len % 4 != 0) return NULL;
    size_t n = text_len;
    while (n > 0 && text_len - n < 2 && text[n - 1] == '=') n--;
    char *tmp = xmalloc(n + 1);
    for (size_t i = 0; i < n; i++) {
        char c = text[i];
        tmp[i] = c == '+' ? '-' : c == '/' ? '_' : (c == '-' || c == '_') ? '!' : c;
    }
    tmp[n] = '\0';
    unsigned char *out = jwt_b64url_decode(tmp, n, len);
    free(tmp);
    return out;
}

/* ---------- keys ---------- */

static jwt_key *key_wrap(EVP_PKEY *pkey)
{
    if (pkey == NULL) return NULL;
    if (!EVP_PKEY_is_a(pkey, "RSA")) {
        EVP_PKEY_free(pkey);
        return NULL;
    }
    jwt_key *k = xcalloc(1, sizeof *k);
    k->pkey = pkey;
    BIGNUM *d = NULL;
    k->has_private = EVP_PKEY_get_bn_param(pkey, OSSL_PKEY_PARAM_RSA_D, &d) == 1 && d != NULL;
    BN_clear_free(d);
    return k;
}

jwt_key *jwt_key_from_pem(const char *pem)
{
    if (pem == NULL) return NULL;
    EVP_PKEY *pkey = NULL;
    /* The decoder accepts every PEM form we care about: PKCS#8, PKCS#1 private, SubjectPublicKeyInfo and
     * PKCS#1 public. */
    OSSL_DECODER_CTX *dctx =
        OSSL_DECODER_CTX_new_for_pkey(&pkey, "PEM", NULL, "RSA", 0, NULL, NULL);
    if (dctx == NULL) return NULL;
    const unsigned char *data = (const unsigned char *)pem;
    size_t len = strlen(pem);
    if (OSSL_DECODER_from_data(dctx, &data, &len) != 1) {
        EVP_PKEY_free(pkey);
        pkey = NULL;
    }
    OSSL_DECODER_CTX_free(dctx);
    ERR_clear_error(); /* failed decoder attempts leave entries in this thread's error queue */
    return key_wrap(pkey);
}

/* Decodes a base64url JWK member into a BIGNUM; NULL when missing or malformed. Caller frees. */
static BIGNUM *jwk_bn(json_t *jwk, const char *name)
{
    const char *s = json_string_value(json_object_get(jwk, name));
    if (s == NULL || *s == '\0') return NULL;
    size_t n = 0;
    unsigned char *raw = jwt_b64url_decode(s, strlen(s), &n);
    if (raw == NULL || n == 0) {
        free(raw);
        return NULL;
    }
    BIGNUM *bn = BN_bin2bn(raw, (int)n, NULL);
    OPENSSL_cleanse(raw, n);
    free(raw);
    return bn;
}

jwt_key *jwt_key_from_jwk(json_t *jwk)
{
    static const char *const priv_names[] = {"d", "p", "q", "dp", "dq", "qi"};
    static const char *const priv_params[] = {OSSL_PKEY_PARAM_RSA_D,         OSSL_PKEY_PARAM_RSA_FACTOR1,
                                              OSSL_PKEY_PARAM_RSA_FACTOR2,   OSSL_PKEY_PARAM_RSA_EXPONENT1,
                                              OSSL_PKEY_PARAM_RSA_EXPONENT2, OSSL_PKEY_PARAM_RSA_COEFFICIENT1};
    BIGNUM *n = NULL, *e = NULL, *priv[6] = {0};
    OSSL_PARAM_BLD *bld = NULL;
    OSSL_PARAM *params = NULL;
    EVP_PKEY_CTX *ctx = NULL;
    EVP_PKEY *pkey = NULL;
    int npriv = 0;

    if (!json_is_object(jwk)) goto out;
    const char *kty = json_string_value(json_object_get(jwk, "kty"));
    if (kty == NULL || strcmp(kty, "RSA") != 0) goto out;
    n = jwk_bn(jwk, "n");
    e = jwk_bn(jwk, "e");
    if (n == NULL || e == NULL) goto out;
    for (int i = 0; i < 6; i++) {
        priv[i] = jwk_bn(jwk, priv_names[i]);
        if (priv[i] != NULL) npriv++;
    }
    if (npriv != 0 && npriv != 6) goto out; /* a partial private key is malformed */
    bld = OSSL_PARAM_BLD_new();
    if (bld == NULL || !OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_N, n) ||
        !OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_E, e))
        goto out;
    for (int i = 0; i < 6 && npriv; i++)
        if (!OSSL_PARAM_BLD_push_BN(bld, priv_params[i], priv[i])) goto out;
    params = OSSL_PARAM_BLD_to_param(bld);
    ctx = EVP_PKEY_CTX_new_from_name(NULL, "RSA", NULL);
    if (params == NULL || ctx == NULL || EVP_PKEY_fromdata_init(ctx) != 1) goto out;
    if (EVP_PKEY_fromdata(ctx, &pkey, npriv ? EVP_PKEY_KEYPAIR : EVP_PKEY_PUBLIC_KEY, params) != 1) pkey = NULL;
out:
    EVP_PKEY_CTX_free(ctx);
    OSSL_PARAM_free(params);
    OSSL_PARAM_BLD_free(bld);
    BN_free(n);
    BN_free(e);
    for (int i = 0; i < 6; i++) BN_clear_free(priv[i]);
    return key_wrap(pkey);
}

jwt_key *jwt_key_generate(int bits)
{
    if (bits < 1024 || bits > 8192) return NULL;
    return key_wrap(EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)bits));
}

char *jwt_key_private_pem(const jwt_key *key)
{
    if (key == NULL || !key->has_private) return NULL;
    char *out = NULL;
    BIO *bio = BIO_new(BIO_s_mem());
    if (bio == NULL) return NULL;
    /* PEM_write_bio_PrivateKey writes PKCS#8 ("BEGIN PRIVATE KEY") in OpenSSL 3. */
    if (PEM_write_bio_PrivateKey(bio, key->pkey, NULL, NULL, 0, NULL, NULL) == 1) {
        char *data = NULL;
        long n = BIO_get_mem_data(bio, &data);
        if (n > 0 && (out = xmalloc((size_t)n + 1)) != NULL) {
            memcpy(out, data, (size_t)n);
            out[n] = '\0';
        }
    }
    BIO_free(bio);
    return out;
}

/* base64url of a BIGNUM's big-endian bytes; caller frees. */
static char *bn_b64url(const BIGNUM *bn)
{
    int n = BN_num_bytes(bn);
    unsigned char *raw = xmalloc(n > 0 ? (size_t)n : 1);
    BN_bn2bin(bn, raw);
    char *s = jwt_b64url_encode(raw, (size_t)n);
    free(raw);
    return s;
}

json_t *jwt_key_public_jwk(const jwt_key *key, const char *kid)
{
    if (key == NULL) return NULL;
    BIGNUM *n = NULL, *e = NULL;
    char *ns = NULL, *es = NULL;
    json_t *jwk = NULL;
    if (EVP_PKEY_get_bn_param(key->pkey, OSSL_PKEY_PARAM_RSA_N, &n) != 1 ||
        EVP_PKEY_get_bn_param(key->pkey, OSSL_PKEY_PARAM_RSA_E, &e) != 1)
        goto out;
    ns = bn_b64url(n);
    es = bn_b64url(e);
    if (ns == NULL || es == NULL) goto out;
    jwk = json_pack("{s:s, s:s, s:s, s:s, s:s}", "kty", "RSA", "alg", "RS256", "use", "sig", "n", ns, "e", es);
    if (jwk != NULL && kid != NULL) json_object_set_new(jwk, "kid", json_string(kid));
out:
    BN_free(n);
    BN_free(e);
    free(ns);
    free(es);
    return jwk;
}

void jwt_key_free(jwt_key *key)
{
    if (key == NULL) return;
    EVP_PKEY_free(key->pkey);
    free(key);
}

/* ---------- sign, decode, verify ---------- */

/* base64url of a JSON value's compact serialization; caller frees. */
static char *json_b64url(json_t *v)
{
    char *text = json_dumps(v, JSON_COMPACT);
    if (text == NULL) return NULL;
    char *s = jwt_b64url_encode((const unsigned char *)text, strlen(text));
    free(text);
    return s;
}

char *jwt_sign_rs256(const jwt_key *key, json_t *header, json_t *claims)
{
    char *out = NULL, *h64 = NULL, *c64 = NULL, *s64 = NULL, *input = NULL;
    unsigned char *sig = NULL;
    json_t *hdr = NULL;
    EVP_MD_CTX *md = NULL;
    if (key == NULL || !key->has_private || !json_is_object(claims)) goto out;
    if (header != NULL && !json_is_object(header)) goto out;
    hdr = header ? json_deep_copy(header) : json_object();
    if (hdr == NULL) goto out;
    json_object_set_new(hdr, "alg", json_string("RS256"));
    json_object_set_new(hdr, "typ", json_string("JWT"));
    h64 = json_b64url(hdr);
    c64 = json_b64url(claims);
    if (h64 == NULL || c64 == NULL) goto out;
    size_t ilen = strlen(h64) + 1 + strlen(c64);
    input = xmalloc(ilen + 1);
    snprintf(input, ilen + 1, "%s.%s", h64, c64);
    md = EVP_MD_CTX_new();
    size_t siglen = 0;
    if (md == NULL || EVP_DigestSignInit(md, NULL, EVP_sha256(), NULL, key->pkey) != 1 ||
        EVP_DigestSign(md, NULL, &siglen, (unsigned char *)input, ilen) != 1)
        goto out;
    sig = xmalloc(siglen);
    if (EVP_DigestSign(md, sig, &siglen, (unsigned char *)input, ilen) != 1) goto out;
    s64 = jwt_b64url_encode(sig, siglen);
    if (s64 == NULL) goto out;
    size_t olen = ilen + 1 + strlen(s64);
    out = xmalloc(olen + 1);
    snprintf(out, olen + 1, "%s.%s", input, s64);
out:
    EVP_MD_CTX_free(md);
    json_decref(hdr);
    free(h64);
    free(c64);
    free(s64);
    free(input);
    free(sig);
    return out;
}

/* Decodes one base64url segment holding a JSON object; NULL when malformed. Caller decrefs. */
static json_t *segment_json(const char *seg, size_t len)
{
    size_t n = 0;
    unsigned char *raw = jwt_b64url_decode(seg, len, &n);
    if (raw == NULL) return NULL;
    json_t *v = json_loadb((const char *)raw, n, JSON_REJECT_DUPLICATES, NULL);
    free(raw);
    if (v != NULL && !json_is_object(v)) {
        json_decref(v);
        v = NULL;
    }
    return v;
}

/* Finds the two dots of a compact JWS; returns 0 or -1 when the shape is wrong (empty header/payload, not
 * exactly three segments). */
static int split_token(const char *token, const char **dot1, const char **dot2)
{
    if (token == NULL) return -1;
    const char *a = strchr(token, '.');
    if (a == NULL || a == token) return -1;
    const char *b = strchr(a + 1, '.');
    if (b == NULL || b == a + 1 || strchr(b + 1, '.') != NULL) return -1;
    *dot1 = a;
    *dot2 = b;
    return 0;
}

int jwt_decode(const char *token, json_t **header, json_t **claims, const char **err)
{
    const char *d1, *d2;
    json_t *h = NULL, *c = NULL;
    const char *e = NULL;
    if (split_token(token, &d1, &d2) != 0) {
        e = "malformed token: expected three segments";
        goto fail;
    }
    h = segment_json(token, (size_t)(d1 - token));
    if (h == NULL) {
        e = "malformed token header";
        goto fail;
    }
    c = segment_json(d1 + 1, (size_t)(d2 - d1 - 1));
    if (c == NULL) {
        e = "malformed token claims";
        goto fail;
    }
    if (header) *header = h;
    else json_decref(h);
    if (claims) *claims = c;
    else json_decref(c);
    return 0;
fail:
    json_decref(h);
    json_decref(c);
    if (err) *err = e;
    return -1;
}

int jwt_verify_rs256(const char *token, const jwt_key *key, const char **err)
{
    const char *d1, *d2, *e = NULL;
    json_t *h = NULL;
    unsigned char *sig = NULL;
    EVP_MD_CTX *md = NULL;
    int rc = -1;
    if (split_token(token, &d1, &d2) != 0) {
        e = "malformed token: expected three segments";
        goto out;
    }
    /* The algorithm is checked before the key is touched: "none", HMAC (which would turn a public key into
     * a shared secret) and everything else but RS256 are refused outright. */
    h = segment_json(token, (size_t)(d1 - token));
    if (h == NULL) {
        e = "malformed token header";
        goto out;
    }
    const char *alg = json_string_value(json_object_get(h, "alg"));
    if (alg == NULL || strcmp(alg, "RS256") != 0) {
        e = "unsupported algorithm: only RS256 is accepted";
        goto out;
    }
    if (jwt_decode(token, NULL, NULL, &e) != 0) goto out;
    size_t siglen = 0;
    sig = jwt_b64url_decode(d2 + 1, strlen(d2 + 1), &siglen);
    if (sig == NULL || siglen == 0) {
        e = "malformed signature";
        goto out;
    }
    if (key == NULL) {
        e = "no key";
        goto out;
    }
    md = EVP_MD_CTX_new();
    if (md == NULL || EVP_DigestVerifyInit(md, NULL, EVP_sha256(), NULL, key->pkey) != 1) {
        e = "cannot initialise verification";
        goto out;
    }
    if (EVP_DigestVerify(md, sig, siglen, (const unsigned char *)token, (size_t)(d2 - token)) != 1) {
        e = "invalid signature";
        goto out;
    }
    rc = 0;
out:
    ERR_clear_error();
    EVP_MD_CTX_free(md);
    json_decref(h);
    free(sig);
    if (rc != 0 && err) *err = e;
    return rc;
}
