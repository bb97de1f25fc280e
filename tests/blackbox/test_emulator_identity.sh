# test_emulator_identity: the identity side from the outside: credential files, the metadata server's
# Metadata-Flavor rule, JWKS caching headers, the refresh-token grant, OAuth error shapes, and the Bearer
# rule on the Dataflow endpoints (401, revocation, expiry). The jwt-bearer grant with real signed
# assertions is covered by tests/integration/test_emulator_identity.c.
source "$(dirname "$0")/emu_lib.sh"
P=/v1b3/projects/my-project/locations/europe-west4
CREDS=$TMPD/creds
emu_start id --write-credentials "$CREDS" --project my-project --token-lifetime 3600

# --- credential files, written after binding so token_uri has the real port ---
[ -f "$CREDS/service-account.json" ] && ok "service-account.json" || fail "no service-account.json"
cp "$CREDS/service-account.json" "$TMPD/body"
expect_eq "sa type" "$(jget 'd.type')" service_account
expect_eq "sa token_uri" "$(jget 'd.token_uri')" "$B/token"
expect_eq "sa project" "$(jget 'd.project_id')" my-project
jget 'd.private_key' | grep -q "BEGIN PRIVATE KEY" && ok "sa private key PEM" || fail "no PEM"
[ "$(stat -c %a "$CREDS/service-account.json")" == 600 ] && ok "key file mode 600" || fail "key file mode"
cp "$CREDS/authorized_user.json" "$TMPD/body"
expect_eq "au type" "$(jget 'd.type')" authorized_user
CID=$(jget 'd.client_id'); CSEC=$(jget 'd.client_secret'); RTOK=$(jget 'd.refresh_token')

# --- metadata server ---
MD=/computeMetadata/v1
expect_eq "metadata without header" "$(req GET $MD/instance/service-accounts/default/token)" 403
expect_eq "metadata wrong header" "$(req GET $MD/instance/service-accounts/default/token '' -H 'Metadata-Flavor: google')" 403
expect_eq "metadata token" "$(curl -s -o "$TMPD/body" -D "$TMPD/headers" -w '%{http_code}' -H 'Metadata-Flavor: Google' "$B$MD/instance/service-accounts/default/token")" 200
grep -qi '^Metadata-Flavor: Google' "$TMPD/headers" && ok "answers with Metadata-Flavor" || fail "no Metadata-Flavor header"
expect_eq "metadata token type" "$(jget 'd.token_type')" Bearer
[ "$(jget 'd.expires_in')" -gt 0 ] && ok "expires_in" || fail "expires_in"
MDTOK=$(jget 'd.access_token')
expect_eq "project-id" "$(curl -s -H 'Metadata-Flavor: Google' "$B$MD/project/project-id")" my-project
expect_eq "sa email" "$(curl -s -H 'Metadata-Flavor: Google' "$B$MD/instance/service-accounts/default/email")" "sluice-emulator@my-project.iam.gserviceaccount.com"
expect_eq "identity needs audience" "$(curl -s -o /dev/null -w '%{http_code}' -H 'Metadata-Flavor: Google' "$B$MD/instance/service-accounts/default/identity")" 400
IDT=$(curl -s -H 'Metadata-Flavor: Google' "$B$MD/instance/service-accounts/default/identity?audience=https://x.example")
[ "$(tr -cd . <<<"$IDT" | wc -c)" -eq 2 ] && ok "identity token is a JWT" || fail "identity token: $IDT"
expect_eq "metadata unknown" "$(curl -s -o /dev/null -w '%{http_code}' -H 'Metadata-Flavor: Google' "$B$MD/instance/zone")" 404
expect_eq "metadata POST" "$(req POST $MD/project/project-id '' -H 'Metadata-Flavor: Google')" 405

# --- JWKS ---
expect_eq "jwks" "$(req GET /oauth2/v3/certs)" 200
grep -qi '^Cache-Control: public, max-age=[0-9]' "$TMPD/headers" && ok "jwks cache-control" || fail "jwks cache-control"
expect_eq "jwks key" "$(jget 'd.keys[1].kty .. " " .. d.keys[1].alg .. " " .. tostring(#d.keys[1].kid > 0)')" "RSA RS256 true"

# --- Bearer rule on Dataflow endpoints ---
expect_eq "no token" "$(req GET "$P/jobs")" 401
expect_eq "401 status" "$(jget 'd.error.status')" UNAUTHENTICATED
grep -qi '^WWW-Authenticate: Bearer' "$TMPD/headers" && ok "WWW-Authenticate" || fail "WWW-Authenticate"
expect_eq "bogus token" "$(req GET "$P/jobs" '' -H 'Authorization: Bearer ya29.forged')" 401
expect_eq "basic auth" "$(req GET "$P/jobs" '' -H 'Authorization: Basic Zm9vOmJhcg==')" 401
expect_eq "metadata token accepted" "$(req GET "$P/jobs" '' -H "Authorization: Bearer $MDTOK")" 200
expect_eq "401 before launch validation" "$(req POST "$P/flexTemplates:launch" '{bad')" 401

# --- refresh_token grant ---
tok() { req POST /token "$1" -H 'Content-Type: application/x-www-form-urlencoded'; }
expect_eq "refresh grant" "$(tok "grant_type=refresh_token&client_id=$CID&client_secret=$CSEC&refresh_token=$(sed 's|/|%2F|g' <<<"$RTOK")")" 200
RFTOK=$(jget 'd.access_token')
expect_eq "refresh token type" "$(jget 'd.token_type')" Bearer
expect_eq "refreshed token accepted" "$(req GET "$P/jobs" '' -H "Authorization: Bearer $RFTOK")" 200
expect_eq "wrong secret" "$(tok "grant_type=refresh_token&client_id=$CID&client_secret=nope&refresh_token=$RTOK")" 401
expect_eq "wrong secret error" "$(jget 'd.error')" invalid_client
expect_eq "wrong refresh token" "$(tok "grant_type=refresh_token&client_id=$CID&client_secret=$CSEC&refresh_token=1//other")" 400
expect_eq "wrong refresh error" "$(jget 'd.error')" invalid_grant
expect_eq "unsupported grant" "$(tok "grant_type=password&username=a")" 400
expect_eq "unsupported grant error" "$(jget 'd.error')" unsupported_grant_type
expect_eq "missing grant" "$(tok "")" 400
expect_eq "garbage assertion" "$(tok "grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer&assertion=a.b.c")" 400
expect_eq "garbage assertion error" "$(jget 'd.error')" invalid_grant
expect_eq "token GET" "$(req GET /token)" 405
req GET /emulator/stats >/dev/null
expect_eq "grants counted" "$(jget 'd.token_grants.metadata .. "," .. d.token_grants.refresh_token')" "1,1"

# --- revocation: a client sees 401 and must fetch a new token ---
expect_eq revoke "$(req POST /emulator/revoke-tokens)" 200
expect_eq "revoked token refused" "$(req GET "$P/jobs" '' -H "Authorization: Bearer $RFTOK")" 401
MDTOK=$(curl -s -H 'Metadata-Flavor: Google' "$B$MD/instance/service-accounts/default/token" | grep -o 'ya29[^"]*')
expect_eq "new token works" "$(req GET "$P/jobs" '' -H "Authorization: Bearer $MDTOK")" 200

# --- expiry ---
req POST /emulator/config '{"token_lifetime_s": 1}' >/dev/null
SHORT=$(curl -s -H 'Metadata-Flavor: Google' "$B$MD/instance/service-accounts/default/token" | grep -o 'ya29[^"]*')
expect_eq "short token works" "$(req GET "$P/jobs" '' -H "Authorization: Bearer $SHORT")" 200
expired() { [ "$(req GET "$P/jobs" '' -H "Authorization: Bearer $SHORT")" == 401 ]; }
poll_until 10 expired && ok "token expires" || fail "token never expired"

# --- auth can be turned off ---
req POST /emulator/config '{"auth": false}' >/dev/null
expect_eq "auth off" "$(req GET "$P/jobs")" 200

emu_stop "$EMU_PID"
finish
