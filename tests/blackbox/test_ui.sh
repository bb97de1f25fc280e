#!/usr/bin/env bash
# test_ui: the web UI (/ui/) in headless Chromium against `sluice serve` and the emulator, holding runs in every
# state: running, succeeded, failed (with Dataflow's failure cause), recovered via on_failure, cancelled,
# redriven, a step retried twice (three attempts), and a workflow failing three runs in a row (the grid's streak). ui_check.py loads each page at 1280 and 390 px, fails on any console error or uncaught exception,
# checks the DOM (steps, states, console links, the Gantt, the start form), cancels a run from its page by
# keyboard and checks that the emulator cancelled its job, and writes a screenshot of each page next to the test
# log (build/Testing/Temporary/ui/). Also here, with curl: the static files need no token, the API does;
# ETag/304; --ui-trust-header; the runs filters (failed step, search); jobs.messages in the emulator.
source "$(dirname "$0")/serve_lib.sh"
WF="${SLUICE_SRC:?}/tests/blackbox/ui_workflows"
OPTOK=ui-operator-secret
SHOTS="${SLUICE_UI_SHOTS:-$(dirname "$SLUICE_BIN")/Testing/Temporary/ui}"
mkdir -p "$SHOTS"
command -v chromium >/dev/null || { echo "chromium is not installed (scripts/deps.sh installs it)" >&2; exit 1; }

emu_start emu --write-credentials "$TMPD/creds" --seed 5 --pending-ms 40 --running-ms 250
E=$B
cfg='{"jobs":[{"match":"slow-work--*","running_ms":600000},
 {"match":"ui-bad--*-1","outcome":"JOB_STATE_FAILED","failure_cause":"S07:Report/Write failed., A work item was attempted 4 times without success."},
 {"match":"ui-full--*","outcome":"JOB_STATE_FAILED","failure_cause":"S03:Report failed., Quota exceeded for quota metric CPUs."},
 {"match":"ui-flaky--*-1","outcome":"JOB_STATE_FAILED","failure_cause":"S01:Flaky failed., worker lost."},
 {"match":"ui-flaky--*-2","outcome":"JOB_STATE_FAILED","failure_cause":"S01:Flaky failed., worker lost again."},
 {"match":"ui-broken--*","outcome":"JOB_STATE_FAILED","failure_cause":"S02:Broken failed., table not found."}]}'
expect_eq "emulator config" "$(req POST /emulator/config "$cfg")" 200

# Run notifications (the run page's Notifications section): a webhook receiver that takes every event (delivered),
# and a Pub/Sub "emulator" address where nothing listens (retrying).
python3 "$(dirname "$0")/notify_receiver.py" ui-secret 0 "$TMPD/rport" 0 "$TMPD/got.jsonl" &
EMU_PIDS+=($!)
poll_until 10 test -s "$TMPD/rport" || fail "webhook receiver did not start"
DEAD=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
PUBSUB_EMULATOR_HOST=127.0.0.1:$DEAD serve_start srv --workflows "$WF" --store "$TMPD/ui.db" --dataflow-url "$E" \
    --credentials "$TMPD/creds/service-account.json" --audience sluice-ui-test --jwks-url "$E/oauth2/v3/certs" \
    --operator-token "$OPTOK" --poll-interval 200ms --ui-trust-header X-Test-Verified-User \
    --notify-webhook "http://127.0.0.1:$(tr -d '\n' <"$TMPD/rport")/hook" --notify-secret ui-secret \
    --notify-topic projects/ui-project/topics/runs

# ---- static files without a token, the API with one ----
expect_eq "GET /ui/ without a token" "$(sreq GET /ui/)" 200
grep -qi '^content-security-policy:' "$TMPD/headers" && ok "index.html has a CSP" || fail "no CSP on index.html"
expect_eq "GET /ui/dagre.min.js" "$(sreq GET /ui/dagre.min.js)" 200
grep -q 'graphlib' "$TMPD/body" && ok "dagre is embedded" || fail "dagre.min.js body"
expect_eq "GET /ui/nope.js" "$(sreq GET /ui/nope.js)" 404
expect_eq "GET / redirects to /ui/" "$(sreq GET /)" 302
expect_eq "API without a token" "$(sreq GET /v1/runs)" 401
expect_eq "API with the proxy's header" "$(sreq GET /v1/runs '' -H 'X-Test-Verified-User: alice@example.com' -X GET)" 200
expect_eq "API with an empty proxy header" "$(sreq GET /v1/runs '' -H 'X-Test-Verified-User;' -X GET)" 401

start_run() { # WORKFLOW PARAMS-JSON -> run id
    local out
    out=$(curl -s -H "Authorization: Bearer $OPTOK" -H 'Content-Type: application/json' \
        -d "{\"workflow\":\"$1\",\"params\":$2}" "$S/v1/runs")
    printf '%s' "$out" | lua5.4 -e "local c=require('cjson'); print(c.decode(io.read('a')).run.id)"
}
run_state() { sget "/v1/runs/$1" >/dev/null; jget d.run.state; }
state_is() { [ "$(run_state "$1")" = "$2" ]; }
step_state_is() { sget "/v1/runs/$1" >/dev/null; [ "$(jget "filter(d.run.steps, function(s) return s.name == '$2' end)[1].state")" = "$3" ]; }

R_OK=$(start_run uitest '{"mode":"quick"}')
R_REC=$(start_run uitest '{"mode":"full"}')
R_FAIL=$(start_run uitest '{"mode":"bad"}')
R_RED=$(start_run uitest '{"mode":"bad"}')
R_CAN=$(start_run slow '{}')
R_RUN=$(start_run slow '{}')
R_UIC=$(start_run slow '{}')
R_RETRY=$(start_run flaky '{"mode":"retry"}')
R_BRK1=$(start_run flaky '{"mode":"broken"}')
R_BRK2=$(start_run flaky '{"mode":"broken"}')
R_BRK3=$(start_run flaky '{"mode":"broken"}')
poll_until 60 state_is "$R_OK" succeeded || fail "quick run did not succeed: $(run_state "$R_OK")"
poll_until 60 state_is "$R_REC" succeeded || fail "recovered run did not succeed: $(run_state "$R_REC")"
poll_until 60 state_is "$R_FAIL" failed || fail "bad run did not fail: $(run_state "$R_FAIL")"
poll_until 60 state_is "$R_RED" failed || fail "second bad run did not fail"
poll_until 60 state_is "$R_RETRY" succeeded || fail "retried run did not succeed: $(run_state "$R_RETRY")"
for r in "$R_BRK1" "$R_BRK2" "$R_BRK3"; do poll_until 60 state_is "$r" failed || fail "broken run $r did not fail"; done
OOK=$OPTOK
expect_eq "redrive" "$(sreq POST "/v1/runs/$R_RED:redrive" '{}' -H "Authorization: Bearer $OOK" -H 'Content-Type: application/json')" 202
poll_until 60 state_is "$R_RED" succeeded || fail "redriven run did not succeed: $(run_state "$R_RED")"
for r in "$R_CAN" "$R_RUN" "$R_UIC"; do
    poll_until 30 step_state_is "$r" Work running || fail "slow run $r not running"
done
expect_eq "cancel by API" "$(sreq POST "/v1/runs/$R_CAN:cancel" '' -H "Authorization: Bearer $OOK" -H 'Content-Type: application/json')" 202
poll_until 30 state_is "$R_CAN" cancelled || fail "cancelled run: $(run_state "$R_CAN")"

# ---- the API the pages use ----
sget "/v1/runs/$R_FAIL" >/dev/null
cause=$(jget "filter(d.run.steps, function(s) return s.name == 'Bad' end)[1].failure_cause")
expect_eq "failure cause from jobs.messages" "$cause" \
    "Workflow failed. Causes: S07:Report/Write failed., A work item was attempted 4 times without success."
sget "/v1/runs/$R_REC" >/dev/null
expect_eq "recovered note" "$(jget 'd.run.recovered[1].step')" Full
etag=$(grep -i '^etag:' "$TMPD/headers" | tr -d '\r' | cut -d' ' -f2)
[ -n "$etag" ] && ok "run has an ETag" || fail "no ETag"
expect_eq "If-None-Match -> 304" "$(sget "/v1/runs/$R_REC" -H "If-None-Match: $etag")" 304
expect_eq "runs with a failed step" "$(sget '/v1/runs?failed_step=true&workflow=uitest' >/dev/null; jget 'table.concat((function() local t = map(d.runs, function(r) return r.id end) table.sort(t) return t end)(), ",")')" \
    "$(printf '%s\n' "$R_REC" "$R_FAIL" | sort | paste -sd,)"
expect_eq "search by run id prefix" "$(sget "/v1/runs?q=${R_OK:0:6}" >/dev/null; jget 'd.runs[1].id')" "$R_OK"
expect_eq "search by job name" "$(sget "/v1/runs?q=ui-full--$R_REC-1" >/dev/null; jget 'd.runs[1].id .. #d.runs')" "${R_REC}1"
expect_eq "workflow graph edges" "$(sget /v1/workflows/uitest >/dev/null; jget 'count(d.workflow.graph.edges, function(e) return e.kind == "on_failure" end) .. "/" .. count(d.workflow.graph.edges, function(e) return e.kind == "choice" end)')" "2/3"
expect_eq "workflow params" "$(jget 'map(d.workflow.params, function(p) return p.name end)')" '["day","mode"]'
expect_eq "load errors with file:line" "$(sget /v1/workflows >/dev/null; jget 'd.errors[1].errors[1]')" \
    "$WF/broken.lua:8: step 'First': next step 'Nowhere' does not exist"
notify_settled() { # the failed run's event: delivered to the webhook, tried (and failing) on the topic
    sget "/v1/runs/$R_FAIL" >/dev/null
    [ "$(jget "count(d.run.notifications, function(n) return n.sink == 'webhook' and n.state == 'delivered' end)")" = 1 ] &&
        [ "$(jget "count(d.run.notifications, function(n) return n.sink == 'pubsub' and n.state == 'retrying' end)")" = 1 ]
}
poll_until 30 notify_settled && ok "failed run: webhook delivered, topic retrying" || fail "notifications: $(cat "$TMPD/body")"
# attempts (issue 22): the retried step's three attempts with their own job ids, errors and causes
sget "/v1/runs/$R_RETRY" >/dev/null
expect_eq "three attempts of Flaky" "$(jget "table.concat(map(filter(d.run.steps, function(s) return s.name == 'Flaky' end)[1].attempts, function(a) return a.attempt .. ':' .. a.state end), ',')")" \
    "1:failed,2:failed,3:succeeded"
expect_eq "each attempt has its own job id" "$(jget "#filter(d.run.steps, function(s) return s.name == 'Flaky' end)[1].attempts[2].job_id > 0 and filter(d.run.steps, function(s) return s.name == 'Flaky' end)[1].attempts[2].job_id ~= filter(d.run.steps, function(s) return s.name == 'Flaky' end)[1].attempts[3].job_id")" true
expect_eq "attempt 2's cause kept" "$(jget "filter(d.run.steps, function(s) return s.name == 'Flaky' end)[1].attempts[2].failure_cause")" \
    "Workflow failed. Causes: S01:Flaky failed., worker lost again."
expect_eq "root cause of a failed run" "$(sget "/v1/runs/$R_FAIL" >/dev/null; jget 'd.run.root_cause.step')" Bad
expect_eq "recovered filter" "$(sget '/v1/runs?recovered=true' >/dev/null; jget 'table.concat(map(d.runs, function(r) return r.id end), ",")')" "$R_REC"
expect_eq "grid: Broken failed three runs in a row" "$(sget '/v1/workflows/flaky/grid?limit=10' >/dev/null; jget "count(d.runs, function(r) return r.cells.Broken and r.cells.Broken.state == 'failed' end)")" 3
# ---- the pages, in Chromium ----
cat >"$TMPD/runs.json" <<EOF
{"base": "$S", "token": "$OPTOK", "emulator": "$E", "shots": "$SHOTS",
 "ok": "$R_OK", "recovered": "$R_REC", "failed": "$R_FAIL", "redriven": "$R_RED",
 "cancelled": "$R_CAN", "running": "$R_RUN", "ui_cancel": "$R_UIC", "retried": "$R_RETRY",
 "broken": ["$R_BRK1", "$R_BRK2", "$R_BRK3"]}
EOF
if python3 "$(dirname "$0")/ui_check.py" "$TMPD/runs.json"; then ok "browser checks"; else fail "browser checks"; fi
finish
