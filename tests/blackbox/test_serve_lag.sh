#!/usr/bin/env bash
# test_serve_lag: `sluice serve` on the real API's slower behaviours, against the emulator with lag.mode =
# "stale" (jobs.get shows the state before the end for 3 s after it, as Dataflow does right after "Worker pool
# stopped.") and a 10-minute poll (the Cloud Run setting), so only events and the engine's own short re-check
# schedule can move runs on. Measured on the emulator's clock, not counted:
#   - each next launch leaves within lag + 1 s of the previous job's true end; a run of the 3-job chain ends
#     within its inherent time (each job's run time + the lag) + 2 s per step;
#   - a cancel, a drain and a timeout reach their final run state within the wind-down + lag + 1 s, and the job
#     in the emulator is CANCELLED / DRAINED;
#   - a timed-out step fails even though its drained job ends in a success state (DRAINED);
#   - on_run_failure = "cancel": the sibling's job is cancelled in the emulator and the run fails.
source "$(dirname "$0")/serve_lib.sh"
TW="${SLUICE_SRC:?}/tests/data/engine"
OPTOK=operator-secret
LAG=3000 CANCEL=1500 DRAIN=2000

emu_start emu --write-credentials "$TMPD/creds" --seed 11 --pending-ms 100 --running-ms 1500 \
    --lag-ms "$LAG" --lag-mode stale
E=$B
serve_start srv --workflows "$TW" --store "$TMPD/lag.db" --dataflow-url "$E" \
    --credentials "$TMPD/creds/service-account.json" --audience sluice-test \
    --jwks-url "$E/oauth2/v3/certs" --allow-email pubsub-push@emulator.iam.gserviceaccount.com \
    --operator-token "$OPTOK" --poll-interval 10m
cfg=$(cat <<JSON
{"events": {"push_url": "$S/v1/events/pubsub", "audience": "sluice-test"},
 "job_defaults": {"cancel_ms": $CANCEL, "drain_ms": $DRAIN},
 "jobs": [{"match": "sib-quick--*", "running_ms": 300, "outcome": "JOB_STATE_FAILED"},
          {"match": "sib-long--*", "running_ms": 600000},
          {"match": "stops-long--*", "running_ms": 600000}]}
JSON
)
B=$E; expect_eq "emulator config" "$(req POST /emulator/config "$cfg")" 200

now_ms() { date +%s%3N; }
start_run() { # WORKFLOW [--param k=v]... -> run id
    "$SLUICE_BIN" start "$@" --server "$S" --token "$OPTOK"
}
run_state() { sget "/v1/runs/$1" >/dev/null; jget d.run.state; }
state_is() { [ "$(run_state "$1")" = "$2" ]; }

# Times on the emulator's and the server's clocks (one machine): RFC 3339 with milliseconds -> unix ms.
cat >"$TMPD/times.lua" <<'LUA'
local cjson = require("cjson")
local function ms(s)
    local y, mo, d, h, mi, sec, frac = s:match("(%d+)-(%d+)-(%d+)T(%d+):(%d+):(%d+)%.?(%d*)Z")
    y, mo = tonumber(y), tonumber(mo)
    if mo <= 2 then y, mo = y - 1, mo + 12 end -- days from civil (proleptic Gregorian)
    local days = 365 * y + y // 4 - y // 100 + y // 400 + (153 * (mo - 3) + 2) // 5 + tonumber(d) - 719469
    local f = frac ~= "" and tonumber((frac .. "00"):sub(1, 3)) or 0
    return ((days * 24 + tonumber(h)) * 60 + tonumber(mi)) * 60000 + tonumber(sec) * 1000 + f
end
local function load(p) local f = assert(io.open(p)); local d = cjson.decode(f:read("a")); f:close(); return d end
local jobs, run, lag = load(arg[1]).jobs, load(arg[2]).run, tonumber(arg[3])
-- the run's jobs by step letter: chain-a--<run>-1 ...
local by = {}
for _, j in ipairs(jobs) do
    local step = j.name:match("^chain%-(%a)%-%-" .. run.id .. "%-")
    if step then by[step] = j end
end
local worst, inherent = 0, 0
for i, s in ipairs({ "a", "b", "c" }) do
    local j = assert(by[s], "no job for step " .. s)
    inherent = inherent + ms(j.currentStateTime) - ms(j.createTime) + lag
    local nxt = by[({ "b", "c" })[i] or ""]
    if nxt then
        local gap = ms(nxt.createTime) - (ms(j.currentStateTime) + lag)
        if gap > worst then worst = gap end
    end
end
local total = ms(run.finished_at) - ms(run.created_at)
print(string.format("%d %d %d", worst, total, inherent))
LUA

# 1. three chains at once: hand-overs and run time
runs=()
for _ in 1 2 3; do runs+=("$(start_run chain)"); done
all_done() { for id in "${runs[@]}"; do state_is "$id" succeeded || return 1; done; }
poll_until 60 all_done || fail "chains did not succeed within 60 s with a 10 min poll (states: $(for id in "${runs[@]}"; do run_state "$id"; done))"
B=$E; req GET /emulator/jobs >/dev/null; cp "$TMPD/body" "$TMPD/jobs.json"
for id in "${runs[@]}"; do
    sget "/v1/runs/$id" >/dev/null; cp "$TMPD/body" "$TMPD/run.json"
    read -r worst total inherent < <(lua5.4 "$TMPD/times.lua" "$TMPD/jobs.json" "$TMPD/run.json" "$LAG")
    echo "run $id: worst hand-over ${worst} ms after the API could know; run ${total} ms, inherent ${inherent} ms"
    [ "$worst" -le 1000 ] && ok "run $id: next launch within lag + 1 s of the job's end" \
        || fail "run $id: a next launch left $worst ms after lag + the job's end"
    [ "$total" -le $((inherent + 3 * 2000)) ] && ok "run $id: within inherent time + 2 s per step" \
        || fail "run $id: took $total ms, inherent $inherent ms"
done

# 2. cancel, drain, timeout: time to the final state and the job's state in Dataflow
stop_case() { # TAG KIND WANT_RUN_STATE JOB_PREFIX WANT_JOB_STATE BUDGET_MS [cancel]
    local tag=$1 kind=$2 want=$3 prefix=$4 want_job=$5 budget=$6 do_cancel=${7:-}
    local id t0 t1
    id=$(start_run stops --param "kind=$kind")
    running() { sget "/v1/runs/$id" >/dev/null; [ "$(jget 'count(d.run.steps, function(s) return s.state == "running" end)')" -ge 1 ]; }
    poll_until 20 running || { fail "$tag: the job never ran"; return; }
    t0=$(now_ms)
    if [ -n "$do_cancel" ]; then
        expect_eq "$tag: cancel accepted" "$(sreq POST "/v1/runs/$id:cancel" '{}' -H "Authorization: Bearer $OPTOK" -H 'Content-Type: application/json')" 202
    fi
    poll_until 30 state_is "$id" "$want" || fail "$tag: run state $(run_state "$id"), want $want"
    t1=$(now_ms)
    echo "$tag: run $want $((t1 - t0)) ms after the $([ -n "$do_cancel" ] && echo request || echo job started running) (budget $budget ms)"
    [ $((t1 - t0)) -le "$budget" ] && ok "$tag: final state within the wind-down + lag + $TM s" \
        || fail "$tag: took $((t1 - t0)) ms, budget $budget ms"
    B=$E; req GET /emulator/jobs >/dev/null
    expect_eq "$tag: the job in Dataflow" "$(jget "(filter(d.jobs, function(j) return j.name:find('$prefix--$id', 1, true) end)[1] or {}).currentState")" "$want_job"
}
# (the 1 s of slack scales with SLUICE_TEST_TIMEOUT_MULTIPLIER: the sanitizer build runs slower)
stop_case cancel Long cancelled stops-long JOB_STATE_CANCELLED $((CANCEL + LAG + 1000 * TM)) cancel
stop_case drain Stream cancelled stops-stream JOB_STATE_DRAINED $((DRAIN + LAG + 1000 * TM)) cancel
# the 2 s timeout counts from the launch, which is before "running": the budget is measured from running
stop_case timeout Slow failed stops-slow JOB_STATE_DRAINED $((2000 + DRAIN + LAG + 1000 * TM))
sget "/v1/runs/$(sget '/v1/runs?limit=1' >/dev/null; jget 'd.runs[1].id')" >/dev/null
expect_eq "timeout: the drained job's step failed" "$(jget '(filter(d.run.steps, function(s) return s.name == "Slow" end)[1]).state')" failed
jget '(filter(d.run.steps, function(s) return s.name == "Slow" end)[1]).error' | grep -q "timed out; the job was stopped and ended JOB_STATE_DRAINED" \
    && ok "timeout: the error says so" || fail "timeout: error $(jget 'd.run.steps')"

# 3. on_run_failure = "cancel": the sibling's job is cancelled and the run fails
sid=$(start_run siblings)
poll_until 30 state_is "$sid" failed || fail "siblings: run state $(run_state "$sid")"
long_cancelled() {
    B=$E; req GET /emulator/jobs >/dev/null
    [ "$(jget "(filter(d.jobs, function(j) return j.name:find('sib-long--$sid', 1, true) end)[1] or {}).currentState")" = JOB_STATE_CANCELLED ]
}
poll_until 15 long_cancelled && ok "siblings: the long branch's job was cancelled in Dataflow" \
    || fail "siblings: the long job is $(jget "(filter(d.jobs, function(j) return j.name:find('^sib%-long') end)[1] or {}).currentState")"
settled() { sget "/v1/runs/$sid" >/dev/null; [ "$(jget '(filter(d.run.steps, function(s) return s.name == "Long" end)[1]).state')" = cancelled ]; }
poll_until 15 settled && ok "siblings: the long step is recorded cancelled" || fail "siblings: long step $(jget 'd.run.steps')"

B=$E; req GET /emulator/stats >/dev/null
expect_eq "every job created once" "$(not_once jobs_created_by_name)" 0
rc=0; kill -TERM "$SRV_PID"; wait "$SRV_PID" || rc=$?
expect_eq "serve exits 0 on SIGTERM" "$rc" 0
emu_stop "$EMU_PID"
finish
