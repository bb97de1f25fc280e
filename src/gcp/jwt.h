/* jwt: compact JWS (RS256) signing and verification, base64url, and RSA keys as PEM or JWK.
 * Uses: OpenSSL 3 (EVP, PEM, OSSL_PARAM), jansson. Must not: do any I/O or know about HTTP; never logs key
 * material or token text.
 * Used by gauth (service-account assertions), oidc (inbound tokens) and the emulator (issuing tokens). */
#ifndef SLUICE_JWT_H
#define SLUICE_JWT_H
#include <jansson.h>
#include <stddef.h>

typedef struct jwt_key jwt_key; /* an RSA key, public or private; opaque */

/* base64url without padding. Encode: caller frees. Decode: returns NULL on bad input; *len receives the
 * byte count; the result is NUL-terminated for convenience; caller frees. */
char *jwt_b64url_encode(const unsigned char *data, size_t len);
unsigned char *jwt_b64url_decode(const char *text, size_t text_len, size_t *len);
/* Standard base64 (RFC 4648 section 4, "+/" alphabet, with padding), as Pub/Sub uses for message.data.
 * Encode: caller frees. Decode: NULL on bad input; *len receives the byte count; NUL-terminated; caller
 * frees. */
char *jwt_b64_encode(const unsigned char *data, size_t len);
unsigned char *jwt_b64_decode(const char *text, size_t text_len, size_t *len);

/* Keys. Each returns NULL on failure. jwt_key_free(NULL) is a no-op. */
jwt_key *jwt_key_from_pem(const char *pem);                 /* private (PKCS#8/PKCS#1) or public PEM */
jwt_key *jwt_key_from_jwk(json_t *jwk);                     /* {"kty":"RSA","n","e",...}; borrowed */
jwt_key *jwt_key_generate(int bits);                        /* a new RSA private key */
char *jwt_key_private_pem(const jwt_key *key);              /* PKCS#8 PEM; caller frees */
json_t *jwt_key_public_jwk(const jwt_key *key, const char *kid); /* {"kty","alg":"RS256","use":"sig","kid","n","e"} */
void jwt_key_free(jwt_key *key);

/* Signs header and claims (borrowed) as RS256; "alg":"RS256" and "typ":"JWT" are set in the header.
 * Returns the compact token (caller frees) or NULL. */
char *jwt_sign_rs256(const jwt_key *key, json_t *header, json_t *claims);

/* Splits a compact token and decodes its header and claims without verifying anything.
 * Returns 0, or -1 with *err set to a static string. *header and *claims: caller decrefs. */
int jwt_decode(const char *token, json_t **header, json_t **claims, const char **err);

/* Verifies an RS256 signature of `token` with `key` (only RS256 is ever accepted; "none" and HMAC are
 * rejected before any key is used). Returns 0 when valid, -1 with *err set to a static string. */
int jwt_verify_rs256(const char *token, const jwt_key *key, const char **err);

#endif
