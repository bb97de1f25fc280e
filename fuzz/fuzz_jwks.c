/* fuzz_jwks: a signing-key document as the JWKS fetch receives it (Google's certs endpoint, or --jwks-file):
 * oidc_jwks_parse, the parser the fetch installs keys with, which imports every usable JWK (jwt_key_from_jwk:
 * base64url n and e, partial private members refused). Then each element of `keys` on its own through
 * jwt_key_from_jwk, including those the key-set parser skips (no kid, another alg). */
#include "fuzz.h"
#include "jwt.h"
#include "oidc.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    (void)oidc_jwks_parse((const char *)data, size);
    json_t *doc = json_loadb((const char *)data, size, 0, NULL);
    json_t *keys = json_object_get(doc, "keys");
    size_t i;
    json_t *k;
    json_array_foreach(keys, i, k) {
        jwt_key *key = jwt_key_from_jwk(k);
        if (key != NULL) json_decref(jwt_key_public_jwk(key, "k"));
        jwt_key_free(key);
    }
    json_decref(doc);
    return 0;
}
