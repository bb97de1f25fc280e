#!/usr/bin/env bash
# test_serve_identities: issue 11, separate identities for ingress and the API, through the real binary.
# Before --api-allow-email, every identity allowed on ingress (the Pub/Sub pusher) could also start and cancel
# runs. Tokens: the emulator's metadata server issues OIDC ID tokens for its service account; its pushes carry
# the pusher's identity.
#   1. --allow-email PUSHER --api-allow-email SA: the SA starts a run (201) and reads it, its token is refused
#      on ingress (403); the emulator's pushes (the pusher) still advance the run to success; the operator
#      token still works on the API.
#   2. --allow-email SA --api-allow-email someone-else: the SA's token delivers events (200) and gets 403 on
#      every API route.
#   3. --api-allow-email SA without --allow-email (issue 17 finding 11): the SA's token is still refused on ingress
#      (403), as docs/api.md says, and still works on the API.
source "$(dirname "$0")/serve_lib.sh"
WF="${SLUICE_SRC:?}/workflows"
PUSHER=pubsub-push@emulator.iam.gserviceaccount.com
SA=sluice-emulator@emulator-project.iam.gserviceaccount.com
emu_start emu --write-credentials "$TMPD/creds" --pending-ms 50 --running-ms 150
E=$B
token() { curl -sf -H 'Metadata-Flavor: Google' "$E/computeMetadata/v1/instance/service-accounts/default/identity?audience=sluice-ids"; }
TOK=$(token) || { echo "FAIL: no identity token from the emulator" >&2; exit 1; }
push='{"message":{"data":"eyJyZXNvdXJjZSI6eyJ0eXBlIjoiZGF0YWZsb3dfc3RlcCIsImxhYmVscyI6eyJqb2JfaWQiOiIyMDI0LTA1LTAxXzAxXzAyXzAzLTEiLCJqb2JfbmFtZSI6InNvbWVvbmUtZWxzZS0tMSIsInJlZ2lvbiI6ImV1cm9wZS13ZXN0MSIsInByb2plY3RfaWQiOiIxIn19LCJ0ZXh0UGF5bG9hZCI6IldvcmtlciBwb29sIHN0b3BwZWQuIiwibG9nTmFtZSI6InByb2plY3RzL3AvbG9ncy9kYXRhZmxvdy5nb29nbGVhcGlzLmNvbSUyRmpvYi1tZXNzYWdlIn0=","messageId":"m1"},"subscription":"s"}'
as() { # TOKEN METHOD PATH [BODY]: prints the status; the body lands in $TMPD/body
    local t=$1 method=$2 path=$3 data=()
    [ $# -ge 4 ] && data=(--data-binary "$4")
    curl -s -o "$TMPD/body" -w '%{http_code}' -X "$method" -H "Authorization: Bearer $t" \
        -H 'Content-Type: application/json' "${data[@]}" "$S$path"
}

serve_start one --workflows "$WF" --store "$TMPD/one.db" --dataflow-url "$E" \
    --credentials "$TMPD/creds/service-account.json" --audience sluice-ids --jwks-url "$E/oauth2/v3/certs" \
    --allow-email "$PUSHER" --api-allow-email "$SA" --operator-token op-secret --poll-interval 10m
# The emulator pushes before the run starts: a job ends 200 ms after its launch, and with --poll-interval 10m an
# end pushed nowhere (the push configured after it, as this test once did) is never seen: the run stayed
# "running" whenever the machine was slow enough (ctest -j8) between the start and the configuration.
B=$E; expect_eq "emulator pushes as the pusher" "$(req POST /emulator/config '{"events":{"push_url":"'"$S"'/v1/events/pubsub","audience":"sluice-ids"}}')" 200
expect_eq "API identity starts a run" "$(as "$TOK" POST /v1/runs '{"workflow":"example","params":{"date":"2026-12-01"}}')" 201
id=$(jget d.run.id)
expect_eq "API identity reads it" "$(as "$TOK" GET "/v1/runs/$id")" 200
expect_eq "API identity refused on ingress" "$(as "$TOK" POST /v1/events/pubsub "$push")" 403
done_() { as "$TOK" GET "/v1/runs/$id" >/dev/null; [ "$(jget d.run.state)" = succeeded ]; }
poll_until 30 done_ && ok "the pusher's events advance the run to success" \
    || fail "run state $(jget d.run.state)"
expect_eq "the operator token still works on the API" "$(as op-secret GET /v1/runs)" 200
grep -q 'no --api-allow-email' "$TMPD/one.err" && fail "warned about a missing --api-allow-email" || ok "no warning with --api-allow-email"
kill -TERM "$SRV_PID"; wait "$SRV_PID" || true

serve_start two --workflows "$WF" --store "$TMPD/two.db" --dataflow-url "$E" \
    --credentials "$TMPD/creds/service-account.json" --audience sluice-ids --jwks-url "$E/oauth2/v3/certs" \
    --allow-email "$SA" --api-allow-email ops@example.com
expect_eq "ingress identity delivers events" "$(as "$TOK" POST /v1/events/pubsub "$push")" 200
expect_eq "ingress identity: POST /v1/runs is 403" "$(as "$TOK" POST /v1/runs '{"workflow":"example"}')" 403
jget d.error.message | grep -q 'API' && ok "the refusal names the API" || fail "message: $(cat "$TMPD/body")"
expect_eq "ingress identity: GET /v1/runs is 403" "$(as "$TOK" GET /v1/runs)" 403
expect_eq "ingress identity: cancel is 403" "$(as "$TOK" POST /v1/runs/x:cancel '{}')" 403
expect_eq "ingress identity: reconcile is 403" "$(as "$TOK" POST '/v1/reconcile?budget_ms=10')" 403
expect_eq "ingress identity: workflows is 403" "$(as "$TOK" GET /v1/workflows)" 403
curl -s "$S/metrics" >"$TMPD/metrics"
grep -q 'sluice_events_total{source="pubsub",outcome="foreign"} 1' "$TMPD/metrics" && ok "the delivery was counted" \
    || fail "metrics: $(grep events_total "$TMPD/metrics")"
"$SLUICE_BIN" serve --workflows "$WF" --audience a --api-allow-email 2>"$TMPD/usage.err" && fail "missing value accepted" \
    || ok "--api-allow-email needs a value"
kill -TERM "$SRV_PID"; wait "$SRV_PID" || true

serve_start three --workflows "$WF" --store "$TMPD/three.db" --dataflow-url "$E" \
    --credentials "$TMPD/creds/service-account.json" --audience sluice-ids --jwks-url "$E/oauth2/v3/certs" \
    --api-allow-email "$SA"
expect_eq "no --allow-email: API identity refused on ingress" "$(as "$TOK" POST /v1/events/pubsub "$push")" 403
expect_eq "no --allow-email: API identity on the API" "$(as "$TOK" GET /v1/runs)" 200
finish
