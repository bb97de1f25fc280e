/* fuzz_jwt: inbound OIDC tokens. Two input forms:
 *  - a line "<header JSON>\n<claims JSON>" (the input starts with '{'): signed here with the target's own RS256 key
 *    (jwt_sign_rs256 sets alg and typ; kid and the rest come from the input), then judged by oidc_verify, so
 *    the claim checks (iss, aud, exp/iat/nbf, email_verified, the allow-list) and the cache see fuzzed claims
 *    behind a valid signature, which a fuzzer could never forge;
 *  - anything else: the raw token text, through jwt_decode, jwt_verify_rs256 and oidc_verify ("Bearer " + the
 *    input, and the input as the whole Authorization value): segments, base64url, JSON, alg, signature.
 * The verifier reads its keys from a JWKS file written at start (oidc's jwks_file: no network) and runs on a
 * fixed clock, so the reference sample's claims are valid. */
#include <stdio.h>
#include <unistd.h>

#include "fuzz.h"
#include "jwt.h"
#include "oidc.h"

#define FUZZ_KID "fuzz-kid"
#define FUZZ_NOW 1550182395 /* the sample token's iat + 60 s */

static jwt_key *key;
static oidc *verifier;
static char jwks_path[] = "/tmp/sluice-fuzz-jwks-XXXXXX";

static int64_t fixed_clock(void) { return FUZZ_NOW; }

static void cleanup(void)
{
    oidc_free(verifier);
    jwt_key_free(key);
    unlink(jwks_path);
}

static void setup(void)
{
    key = jwt_key_generate(1024); /* small: the parsers are the subject, not RSA */
    json_t *jwk = jwt_key_public_jwk(key, FUZZ_KID);
    json_t *doc = json_pack("{s:[o]}", "keys", jwk);
    int fd = mkstemp(jwks_path);
    if (key == NULL || doc == NULL || fd < 0 || json_dumpfd(doc, fd, 0) != 0) abort();
    close(fd);
    json_decref(doc);
    static const char *const emails[] = {"pubsub-push@my-project.iam.gserviceaccount.com", NULL};
    oidc_options o = {.jwks_file = jwks_path,
                      .audience = "https://sluice-abc-ew.a.run.app/pubsub/push",
                      .emails = emails,
                      .clock_s = fixed_clock};
    const char *err = NULL;
    verifier = oidc_new(&o, &err);
    if (verifier == NULL) abort();
    atexit(cleanup);
}

static void verify(const char *authz)
{
    char email[256], reason[256];
    (void)oidc_verify(verifier, authz, email, sizeof email, reason, sizeof reason);
}

static void raw_token(const char *tok)
{
    json_t *h = NULL, *c = NULL;
    const char *why = NULL;
    if (jwt_decode(tok, &h, &c, &why) == 0) {
        json_decref(h);
        json_decref(c);
    }
    (void)jwt_verify_rs256(tok, key, &why);
    size_t n = strlen(tok);
    char *authz = malloc(n + 8);
    if (authz == NULL) return;
    memcpy(authz, "Bearer ", 7);
    memcpy(authz + 7, tok, n + 1);
    verify(authz);
    verify(tok);
    free(authz);
}

static void signed_claims(const char *text)
{
    const char *nl = strchr(text, '\n');
    if (nl == NULL) return;
    json_t *h = json_loadb(text, (size_t)(nl - text), 0, NULL);
    json_t *c = json_loads(nl + 1, 0, NULL);
    char *tok = json_is_object(h) && json_is_object(c) ? jwt_sign_rs256(key, h, c) : NULL;
    json_decref(h);
    json_decref(c);
    if (tok == NULL) return;
    char *authz = malloc(strlen(tok) + 8);
    if (authz != NULL) {
        sprintf(authz, "Bearer %s", tok);
        verify(authz); /* a second time: the success cache answers it */
        verify(authz);
        free(authz);
    }
    free(tok);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (key == NULL) setup();
    if (size > 16384) return 0; /* oidc refuses tokens over 8 KiB; more only slows the fuzzer */
    char *text = fuzz_cstr(data, size);
    if (size > 0 && text[0] == '{') signed_claims(text);
    else raw_token(text);
    free(text);
    return 0;
}
