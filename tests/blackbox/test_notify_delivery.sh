#!/usr/bin/env bash
# test_notify_delivery: run notifications delivered without a resident delivery thread (issue 20).
# (a) `sluice run` delivers before it exits: a run that fails, whose workflow declares notify = {webhook = ...}, to a
#     receiver on 127.0.0.1 that refuses the first attempt; `sluice run` exits 1 within a bound, and the receiver has
#     the signed `failed` event (with the failed step and Dataflow's cause) answered 200 by then.
# (b) scaled to zero: `sluice serve --process-in-request 5s` with its delivery thread not started
#     (SLUICE_TEST_NOTIFY_NO_THREAD=1, as a container without CPU between requests): the failed run's event stays in
#     the outbox (the receiver gets nothing) until POST /v1/reconcile, whose answer counts it as `notified`; the API
#     then shows it delivered.
source "$(dirname "$0")/serve_lib.sh"
W="$TMPD/workflows"
mkdir -p "$W"
SECRET=run-secret-9
export SLUICE_TEST_NOTIFY_BACKOFF=200,1000,3600000
emu_start emu --write-credentials "$TMPD/creds" --pending-ms 50 --running-ms 150 \
    --config <(echo '{"jobs": [{"match": "dl-load--*", "outcome": "JOB_STATE_FAILED", "failure_cause": "disk full"}]}')
E=$B
# start_receiver NAME FAIL_FIRST: sets RURL
start_receiver() {
    python3 "$(dirname "$0")/notify_receiver.py" "$SECRET" 0 "$TMPD/$1.port" "$2" "$TMPD/$1.jsonl" &
    EMU_PIDS+=($!)
    poll_until 10 test -s "$TMPD/$1.port" || { fail "receiver $1 did not start"; exit 1; }
    RURL="http://127.0.0.1:$(tr -d '\n' <"$TMPD/$1.port")/hook"
    touch "$TMPD/$1.jsonl"
}
# write_wf URL: the failing workflow, its notify webhook at URL
write_wf() {
    cat >"$W/dl.lua" <<LUA
return {
  name = "dl", project = "p", region = "europe-west4", start = "Load",
  notify = { webhook = "$1", on = { "failed" } },
  steps = { Load = { job_name = "dl-load", template = "gs://my-bucket/t/load.json" } },
}
LUA
    "$SLUICE_BIN" validate "$W" >/dev/null || fail "sluice validate dl.lua"
}
# delivered_ok FILE TYPE: the receiver answered 200 to a signed event of TYPE
delivered_ok() { grep "\"type\": \"dev.sluice.run.$2\"" "$1" | grep '"ok_sig": true' | grep -q '"status": 200'; }

# (a) sluice run
start_receiver run 1
write_wf "$RURL"
t0=$(date +%s)
rc=0
SLUICE_NOTIFY_SECRET=$SECRET SLUICE_LOG_LEVEL=warning timeout $((120 * TM)) "$SLUICE_BIN" run "$W/dl.lua" \
    --store "$TMPD/run.db" --dataflow-url "$E" --credentials "$TMPD/creds/service-account.json" --quiet \
    --poll-interval 200ms \
    >"$TMPD/run.out" 2>"$TMPD/run.err" || rc=$?
t1=$(date +%s)
expect_eq "sluice run of a failing run exits 1" "$rc" 1
[ $((t1 - t0)) -le $((20 * TM)) ] && ok "sluice run returned in $((t1 - t0)) s (delivery is bounded)" \
    || fail "sluice run took $((t1 - t0)) s"
delivered_ok "$TMPD/run.jsonl" failed && ok "the receiver has the signed failed event, answered 200, when run exits" \
    || fail "receiver log: $(cat "$TMPD/run.jsonl") / run stderr: $(cat "$TMPD/run.err")"
expect_eq "one refused attempt, then one delivery, same id" "$(lua5.4 - "$TMPD/run.jsonl" <<'LUA'
local cjson = require("cjson")
local ids, n, k = {}, 0, 0
for l in io.lines(arg[1]) do local r = cjson.decode(l); ids[r.id] = (ids[r.id] or 0) + 1; n = n + 1 end
for _ in pairs(ids) do k = k + 1 end
print(n .. " attempts, " .. k .. " id")
LUA
)" "2 attempts, 1 id"
lua5.4 - "$TMPD/run.jsonl" <<'LUA' && ok "the event names the failed step and Dataflow's cause" || fail "event data: $(cat "$TMPD/run.jsonl")"
local cjson = require("cjson")
for l in io.lines(arg[1]) do
  local r = cjson.decode(l)
  assert(r.failure and r.failure.step == "Load", "failure.step")
  assert(r.failure.cause and r.failure.cause:find("disk full", 1, true), "failure.cause: " .. tostring(r.failure.cause))
end
LUA

# (a') the receiver is down (nothing listens on its port): `sluice run` still exits 1, within its delivery bound
# (15 s after the run is over), and the event stays in the store's outbox for a later `sluice run` or serve.
DOWN=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
write_wf "http://127.0.0.1:$DOWN/hook"
t0=$(date +%s)
rc=0
SLUICE_LOG_LEVEL=warning timeout $((120 * TM)) "$SLUICE_BIN" run "$W/dl.lua" --store "$TMPD/down.db" \
    --dataflow-url "$E" --credentials "$TMPD/creds/service-account.json" --quiet --poll-interval 200ms \
    >"$TMPD/down.out" 2>"$TMPD/down.err" || rc=$?
t1=$(date +%s)
expect_eq "receiver down: sluice run exits 1" "$rc" 1
[ $((t1 - t0)) -le $((35 * TM)) ] && ok "receiver down: sluice run gave up delivering after $((t1 - t0)) s" \
    || fail "receiver down: sluice run took $((t1 - t0)) s"
down_id=$(sqlite3 "$TMPD/down.db" "SELECT id FROM runs LIMIT 1" 2>/dev/null || true)
"$SLUICE_BIN" status "$down_id" --store "$TMPD/down.db" --json >"$TMPD/body" 2>/dev/null || true
expect_eq "receiver down: the event is still pending in the outbox, attempted" \
    "$(jget "count(d.run and d.run.notifications or d.notifications, function(n) return n.state ~= 'delivered' and n.attempts > 0 end)")" 1

# (b) serve, scaled to zero: only POST /v1/reconcile delivers
start_receiver srv 0
write_wf "$RURL"
OPTOK=operator-secret
SLUICE_TEST_NOTIFY_NO_THREAD=1 serve_start srv --workflows "$W" --store "$TMPD/srv.db" --dataflow-url "$E" \
    --no-auth --operator-token "$OPTOK" --credentials "$TMPD/creds/service-account.json" --poll-interval 100ms \
    --process-in-request 5s --notify-secret "$SECRET"
id=$("$SLUICE_BIN" start dl --server "$S") || fail "start dl"
state_is() { sget "/v1/runs/$1" >/dev/null; [ "$(jget d.run.state)" = "$2" ]; }
poll_until 30 state_is "$id" failed && ok "the run failed" || fail "run state $(jget d.run.state)"
sget "/v1/runs/$id" >/dev/null
expect_eq "its event waits in the outbox, never attempted" \
    "$(jget "count(d.run.notifications, function(n) return n.type == 'failed' and n.attempts == 0 and n.state ~= 'delivered' end)")" 1
expect_eq "the receiver got nothing without a reconcile" "$(wc -l <"$TMPD/srv.jsonl")" 0
NOTIFIED=0
reconcile_delivers() {
    local code; code=$(sreq POST '/v1/reconcile?budget_ms=3000' '' -H "Authorization: Bearer $OPTOK" -H 'Content-Type: application/json')
    [ "$code" = 200 ] || { echo "reconcile: HTTP $code $(cat "$TMPD/body")" >&2; return 1; }
    NOTIFIED=$((NOTIFIED + $(jget 'd.notified or 0')))
    delivered_ok "$TMPD/srv.jsonl" failed
}
poll_until 30 reconcile_delivers && ok "POST /v1/reconcile delivered the event" || fail "receiver: $(cat "$TMPD/srv.jsonl")"
[ "$NOTIFIED" -ge 1 ] && ok "reconcile's answer counted it (notified $NOTIFIED)" || fail "notified $NOTIFIED"
sget "/v1/runs/$id" >/dev/null
expect_eq "the API shows it delivered" "$(jget "count(d.run.notifications, function(n) return n.state == 'delivered' end)")" 1
rc=0; kill -TERM "$SRV_PID"; wait "$SRV_PID" || rc=$?
expect_eq "serve exits 0 on SIGTERM" "$rc" 0
finish
