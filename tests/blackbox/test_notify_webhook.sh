#!/usr/bin/env bash
# test_notify_webhook: run notifications end to end (issue 20) with `sluice serve`, the Dataflow emulator and a real
# webhook receiver on 127.0.0.1 (notify_receiver.py) that verifies every signature and answers 503 to the first two
# attempts of each event. The receiver is down when the events are written, serve is killed with -9 while they wait,
# and both come back: every event the store holds is delivered, each attempt of an event carries the same id and the
# same bytes, and none is lost. Also: a failed run's failure_handler (a launch step) runs once, after the run failed,
# and again after a redrive that fails again (checked on the emulator's side); a step and a run deadline each fire
# one deadline_missed while the run goes on; a cancel sends `cancelled`. Short backoffs come from the test-only
# $SLUICE_TEST_NOTIFY_BACKOFF.
source "$(dirname "$0")/serve_lib.sh"
W="$TMPD/workflows"
mkdir -p "$W"
SECRET=test-secret-123
cat >"$W/nfail.lua" <<'LUA'
return {
  name = "nfail", project = "p", region = "europe-west4", start = "Load", on_run_failure = "cancel",
  failure_handler = "Alert",
  notify = { webhook = os.getenv and "http://127.0.0.1:1/x" or "http://127.0.0.1:1/x",
             on = { "started", "failed", "cancelled", "deadline_missed", "succeeded", "recovered" } },
  steps = {
    Load = { job_name = "nf-load", template = "gs://my-bucket/t/load.json" },
    Alert = { job_name = "nf-alert", template = "gs://my-bucket/t/alert.json",
              ["function"] = function(ctx) return { parameters = { failed = ctx.failure.step,
                                                                    job = ctx.failure.job.name } } end },
  },
}
LUA
cat >"$W/nslow.lua" <<'LUA'
return {
  name = "nslow", project = "p", region = "europe-west4", start = "Slow", deadline = "2s",
  steps = { Slow = { job_name = "ns-slow", template = "gs://my-bucket/t/slow.json", deadline = "1s" } },
}
LUA
OPTOK=operator-secret
export SLUICE_TEST_NOTIFY_BACKOFF=200,1000,3600000
emu_start emu --write-credentials "$TMPD/creds" --pending-ms 50 --running-ms 150 \
    --config <(echo '{"jobs": [{"match": "nf-load--*", "outcome": "JOB_STATE_FAILED", "failure_cause": "disk full"},
                               {"match": "ns-slow--*", "running_ms": 60000}]}')
E=$B
# the receiver's port is known before it listens: pick a free one
RPORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
sed -i "s#http://127.0.0.1:1/x#http://127.0.0.1:$RPORT/hook#g" "$W/nfail.lua"
"$SLUICE_BIN" validate "$W" >/dev/null || fail "sluice validate the test workflows"
SARGS=(--workflows "$W" --store "$TMPD/n.db" --dataflow-url "$E" --no-auth --operator-token "$OPTOK"
       --credentials "$TMPD/creds/service-account.json" --poll-interval 100ms
       --notify-webhook "http://127.0.0.1:$RPORT/server" --notify-secret "$SECRET")
serve_start srv "${SARGS[@]}"
id=$("$SLUICE_BIN" start nfail --server "$S")
state_is() { sget "/v1/runs/$1" >/dev/null; [ "$(jget d.run.state)" = "$2" ]; }
handler_done() { sget "/v1/runs/$id" >/dev/null; [ "$(jget "count(d.run.steps, function(s) return s.name == 'Alert' and s.state == 'succeeded' end)")" = 1 ]; }
poll_until 30 state_is "$id" failed && ok "the run failed" || fail "run state $(jget d.run.state)"
poll_until 30 handler_done && ok "the failure handler ran; the run stays failed" || fail "handler: $(cat "$TMPD/body")"
expect_eq "the run is still failed" "$(jget d.run.state)" failed
slow=$("$SLUICE_BIN" start nslow --server "$S")
missed() { sget "/v1/runs/$slow" >/dev/null; [ "$(jget "count(d.run.notifications, function(n) return n.type == 'deadline_missed' end)")" = 2 ]; }
poll_until 30 missed && ok "the step's and the run's deadlines each fired once" || fail "deadlines: $(cat "$TMPD/body")"
expect_eq "the slow run goes on" "$(jget d.run.state)" running
"$SLUICE_BIN" cancel "$slow" --server "$S" >/dev/null || fail "cancel"
poll_until 30 state_is "$slow" cancelled || fail "slow run state $(jget d.run.state)"
# the receiver is down so far: the events are retrying; serve dies hard while they wait
kill -9 "$SRV_PID"; wait "$SRV_PID" 2>/dev/null || true
python3 "$(dirname "$0")/notify_receiver.py" "$SECRET" "$RPORT" "$TMPD/rport" 2 "$TMPD/got.jsonl" &
EMU_PIDS+=($!)
poll_until 10 test -s "$TMPD/rport" || fail "receiver did not start"
serve_start srv2 "${SARGS[@]}"
all_delivered() {
    sget "/v1/runs/$1" >/dev/null
    [ "$(jget "count(d.run.notifications, function(n) return n.state ~= 'delivered' end)")" = 0 ] &&
        [ "$(jget "len(d.run.notifications)")" -ge "$2" ]
}
# nfail: started, failed (x2 sinks: workflow's and server's; the server takes failed only); nslow: 2 deadline_missed + cancelled (server)
poll_until 60 all_delivered "$id" 3 && ok "every event of the failed run delivered" || fail "nfail: $(cat "$TMPD/body")"
poll_until 60 all_delivered "$slow" 3 && ok "every event of the slow run delivered" || fail "nslow: $(cat "$TMPD/body")"
# the redriven run fails again: the handler runs again (a new attempt of Alert)
"$SLUICE_BIN" redrive "$id" --server "$S" >/dev/null || fail "redrive"
alert2() { B=$E; req GET /emulator/stats >/dev/null; [ "$(jget "d.launches_by_name['nf-alert--$id-2']")" = 1 ]; }
poll_until 30 alert2 && ok "the handler ran again after the redrive failed again" || fail "stats: $(cat "$TMPD/body")"
B=$E; req GET /emulator/stats >/dev/null
expect_eq "the handler's first job launched once" "$(jget "d.launches_by_name['nf-alert--$id-1']")" 1
expect_eq "every job created once" "$(not_once jobs_created_by_name)" 0
poll_until 60 all_delivered "$id" 6 && ok "the redrive's events delivered" || fail "nfail after redrive: $(cat "$TMPD/body")"
# the receiver's side
lua5.4 - "$TMPD/got.jsonl" "$TMPD/body" <<'LUA' || fail "receiver log checks"
local cjson = require("cjson")
local by, n = {}, 0
for line in io.lines(arg[1]) do
  local r = cjson.decode(line); n = n + 1
  assert(r.ok_sig, "a bad signature on " .. r.id)
  assert(r.ctype == "application/cloudevents+json", "content type " .. r.ctype)
  assert(r.spec == "1.0" and r.source:match("^//sluice/"), "CloudEvent attributes")
  by[r.id] = by[r.id] or {}
  table.insert(by[r.id], r)
end
local ids = 0
for id, rs in pairs(by) do
  ids = ids + 1
  assert(#rs >= 3, id .. " got " .. #rs .. " attempts, want the 2 refused + 1")
  for _, r in ipairs(rs) do assert(r.sha == rs[1].sha, "attempts of " .. id .. " differ") end
  if rs[1].type == "dev.sluice.run.failed" then
    assert(rs[1].failure and rs[1].failure.step == "Load", "failed event names the failed step")
  end
end
print("ok: receiver got " .. n .. " attempts of " .. ids .. " events, all signed, same bytes per id")
LUA
sget "/metrics" >/dev/null
grep -q 'sluice_notify_delivered_total{sink="webhook"}' "$TMPD/body" && ok "delivered metric" || fail "metrics: $(grep notify "$TMPD/body")"
grep -q 'sluice_notify_retried_total{sink="webhook"}' "$TMPD/body" && ok "retried metric" || fail "retried metric missing"
[ "$FAILS" -eq 0 ]
