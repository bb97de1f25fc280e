#!/usr/bin/env bash
# test_scale_to_zero: `sluice serve` as Cloud Run runs it scaled to zero with CPU only during requests. A front
# proxy (cpu_proxy.py) forwards every request and freezes the process (SIGSTOP) as soon as none is in flight,
# resuming it (SIGCONT) when one arrives; the emulator's pushes, the runs' starts and the reconcile ticks all go
# through it. The emulator's jobs run ~1.5 s and jobs.get shows the state before the end for 3 s after it (the
# real API's lag); the poll interval and the idle tick are 10 minutes. Checks, on the emulator's clock:
#   (a) from pushes alone (no reconcile tick): the 3-job example chain and the fan-out workflow (daily) succeed,
#       each job is launched within lag + 2 s of the end of the last job it waits for (the first within 2 s of
#       the run's start) and each run ends within 2 s of its last job's end + lag: job time + lag + 2 s a step;
#   (b) a step retried after a 30 s backoff is launched again within backoff + 60 s of its failed attempt's end
#       by a simulated Cloud Scheduler (POST /v1/reconcile every 10 s) alone, and the run succeeds;
#   (c) every step launched once; serve exits 0 on SIGTERM.
# Regression for: a run started by POST /v1/runs was answered before its first launch left, and a pushed end
# was answered before the engine's re-checks through the API's lag: the process was frozen with the launch unsent
# (or the re-check undone) and the run stalled until the next reconcile tick.
# The store is $SLUICE_TEST_STORE when set (e.g. firestore://PROJECT with FIRESTORE_EMULATOR_HOST), else SQLite.
source "$(dirname "$0")/serve_lib.sh"
OPTOK=operator-secret
LAG=3000 STEP_SLACK=2000 BACKOFF=30000 TICK_EVERY=10
command -v python3 >/dev/null || { echo "SKIP: python3 not found"; exit 77; }

WF="$TMPD/workflows"
mkdir -p "$WF"
cp "$SLUICE_SRC/workflows/example.lua" "$SLUICE_SRC/workflows/fanout.lua" "$SLUICE_SRC/tests/data/serverless/flaky.lua" "$WF/"
# SLUICE_TEST_STORE: a store URL (firestore://PROJECT with FIRESTORE_EMULATOR_HOST set), or "firestore" for a
# project of this test's own on the emulator; anything else (unset, "postgres" for the integration tests): SQLite.
case "${SLUICE_TEST_STORE:-}" in
    *://*) STORE=$SLUICE_TEST_STORE ;;
    firestore)
        [ -n "${FIRESTORE_EMULATOR_HOST:-}" ] || { echo "SKIP: SLUICE_TEST_STORE=firestore without FIRESTORE_EMULATOR_HOST"; exit 77; }
        STORE="firestore://s2z-$$-$RANDOM" ;;
    *) STORE=$TMPD/s2z.db ;;
esac

PROXY_PID=""
s2z_cleanup() {
    if [ -n "$PROXY_PID" ]; then kill "$PROXY_PID" 2>/dev/null || true; wait "$PROXY_PID" 2>/dev/null || true; fi
    if [ -n "${SRV_PID:-}" ]; then kill -CONT "$SRV_PID" 2>/dev/null || true; fi
    emu_cleanup
}
trap s2z_cleanup EXIT

emu_start emu --write-credentials "$TMPD/creds" --seed 5 --pending-ms 100 --running-ms 1500 \
    --lag-ms "$LAG" --lag-mode stale
E=$B
serve_start srv --workflows "$WF" --store "$STORE" --dataflow-url "$E" \
    --credentials "$TMPD/creds/service-account.json" --audience sluice-test \
    --jwks-url "$E/oauth2/v3/certs" --allow-email pubsub-push@emulator.iam.gserviceaccount.com \
    --operator-token "$OPTOK" --poll-interval 10m --tick 10m --process-in-request 30s
python3 "$SLUICE_SRC/tests/blackbox/cpu_proxy.py" "$TMPD/proxy.ready" "$S" "$SRV_PID" "$TMPD/proxy.json" \
    2>"$TMPD/proxy.err" &
PROXY_PID=$!
poll_until 10 test -s "$TMPD/proxy.ready" || { fail "proxy not ready"; finish; }
P=$(tr -d '\n' <"$TMPD/proxy.ready")
# Pub/Sub holds a push open up to the subscription's ack deadline; the emulator's 5 s default is shorter than
# the 3 s lag plus a re-check, so it is raised as the Terraform module does (30 s).
cfg="{\"events\":{\"push_url\":\"$P/v1/events/pubsub\",\"audience\":\"sluice-test\",\"timeout_ms\":30000},
      \"jobs\":[{\"match\":\"flaky-load--*-1\",\"running_ms\":300,\"outcome\":\"JOB_STATE_FAILED\"}]}"
B=$E; expect_eq "emulator config" "$(req POST /emulator/config "$cfg")" 200

start_run() { "$SLUICE_BIN" start "$@" --server "$P" --token "$OPTOK"; }
# The run as the store has it, read without a request to the server (which would give it CPU). A SQLite store is
# read from a copy of its file and log: a reader of the live file may be held to an older snapshot while the
# frozen server's connections hold every WAL read mark, which says nothing about what the server committed.
run_json() {
    local st=$STORE
    if [[ "$STORE" != *://* ]]; then
        rm -rf "$TMPD/snap"; mkdir -p "$TMPD/snap"
        cp "$STORE" "$TMPD/snap/s.db"; [ -f "$STORE-wal" ] && cp "$STORE-wal" "$TMPD/snap/s.db-wal"
        st=$TMPD/snap/s.db
    fi
    "$SLUICE_BIN" status "$1" --store "$st" --json >"$TMPD/body" 2>"$TMPD/status.err"
}
run_state() { run_json "$1" && jget d.state; }
state_is() { [ "$(run_state "$1")" = "$2" ]; }

# gaps JOBS RUN LAG EDGES: the worst launch delay past (predecessors' end + lag), the first launch's delay past
# the run's start, and the run's end past (its last job's end + lag), in ms. EDGES: "job<-pred,pred;job<-..."
# by job-name prefix; a job without an entry is a first step. Times are RFC 3339 on one machine's clock.
cat >"$TMPD/gaps.lua" <<'LUA'
local cjson = require("cjson")
local function ms(s)
    local y, mo, d, h, mi, sec, frac = s:match("(%d+)-(%d+)-(%d+)T(%d+):(%d+):(%d+)%.?(%d*)Z")
    y, mo = tonumber(y), tonumber(mo)
    if mo <= 2 then y, mo = y - 1, mo + 12 end
    local days = 365 * y + y // 4 - y // 100 + y // 400 + (153 * (mo - 3) + 2) // 5 + tonumber(d) - 719469
    local f = frac ~= "" and tonumber((frac .. "00"):sub(1, 3)) or 0
    return ((days * 24 + tonumber(h)) * 60 + tonumber(mi)) * 60000 + tonumber(sec) * 1000 + f
end
local function load(p) local f = assert(io.open(p)); local d = cjson.decode(f:read("a")); f:close(); return d end
local jobs, run, lag = load(arg[1]).jobs, load(arg[2]), tonumber(arg[3])
local by = {}
for _, j in ipairs(jobs) do
    local prefix = j.name:match("^(.-)%-%-" .. run.id:gsub("%-", "%%-") .. "%-")
    if prefix then by[prefix] = j end
end
local preds = {}
for entry in arg[4]:gmatch("[^;]+") do
    local job, ps = entry:match("^(.-)<%-(.*)$")
    preds[job] = {}
    for p in ps:gmatch("[^,]+") do table.insert(preds[job], p) end
end
local worst, first, last_end = 0, 0, 0
for name, j in pairs(by) do
    local e = ms(j.currentStateTime) + lag
    if e > last_end then last_end = e end
    if preds[name] then
        local ready = 0
        for _, p in ipairs(preds[name]) do
            local pj = assert(by[p], "no job " .. p .. " in run " .. run.id)
            ready = math.max(ready, ms(pj.currentStateTime) + lag)
        end
        worst = math.max(worst, ms(j.createTime) - ready)
    else
        first = math.max(first, ms(j.createTime) - ms(run.created_at))
    end
end
local n = 0
for _ in pairs(by) do n = n + 1 end
print(string.format("%d %d %d %d", worst, first, ms(run.finished_at) - last_end, n))
LUA

check_run() { # TAG RUN EDGES JOBS_WANTED
    local tag=$1 id=$2 edges=$3 want=$4
    run_json "$id" && cp "$TMPD/body" "$TMPD/run-$id.json"
    read -r worst first tail njobs < <(lua5.4 "$TMPD/gaps.lua" "$TMPD/jobs.json" "$TMPD/run-$id.json" "$LAG" "$edges")
    expect_eq "$tag: jobs of the run" "$njobs" "$want"
    local bound=$((STEP_SLACK * TM))
    [ "$first" -le "$bound" ] && ok "$tag: first launch ${first} ms after the run's start" \
        || fail "$tag: first launch ${first} ms after the run's start (bound $bound)"
    [ "$worst" -le "$bound" ] && ok "$tag: each launch within ${worst} ms of its predecessors' end + lag" \
        || fail "$tag: a launch ${worst} ms after its predecessors' end + lag (bound $bound)"
    [ "$tail" -le "$bound" ] && ok "$tag: run ended ${tail} ms after its last job's end + lag" \
        || fail "$tag: run ended ${tail} ms after its last job's end + lag (bound $bound)"
}

# (a) pushes alone: two chains and two fan-outs at once
ex1=$(start_run example) || fail "start example"
ex2=$(start_run example) || fail "start example"
d1=$(start_run daily --param date=2026-12-07) || fail "start daily"
d2=$(start_run daily --param date=2026-12-08) || fail "start daily"
all_done() { for id in "$ex1" "$ex2" "$d1" "$d2"; do state_is "$id" succeeded || return 1; done; }
# inherent time: 3 jobs x (0.1 + 1.5 + 3) s on the longest path, 4 for the fan-out; 60 s is ample
poll_until 60 all_done || fail "runs did not succeed from pushes alone (states: $(for id in "$ex1" "$ex2" "$d1" "$d2"; do run_state "$id"; done))"
B=$E; req GET /emulator/jobs >/dev/null; cp "$TMPD/body" "$TMPD/jobs.json"
CHAIN="my-job-2<-my-job-1;my-job-3<-my-job-2"
FAN="daily-clean-orders<-daily-ingest;daily-clean-customers<-daily-ingest;daily-join<-daily-clean-orders,daily-clean-customers;daily-report-quick<-daily-join"
check_run "example" "$ex1" "$CHAIN" 3
check_run "example" "$ex2" "$CHAIN" 3
check_run "daily" "$d1" "$FAN" 5
check_run "daily" "$d2" "$FAN" 5
cp "$TMPD/proxy.json" "$TMPD/body"; reconciles=$(jget 'd.by_path["/v1/reconcile"] or 0')
expect_eq "(a) no reconcile tick was needed" "$reconciles" 0

# (b) a retry after a 30 s backoff, launched by the reconcile tick alone
fl=$(start_run flaky) || fail "start flaky"
"$SLUICE_BIN" status "$fl" --store "$STORE" >/dev/null
ticker() {
    while :; do
        sleep "$TICK_EVERY"
        # as the Terraform's Cloud Scheduler job sends it
        curl -s -o /dev/null -X POST -H "Authorization: Bearer $OPTOK" -H 'Content-Type: application/json' \
            --data '{}' "$P/v1/reconcile?budget_ms=5000"
    done
}
ticker &
TICKER_PID=$!
EMU_PIDS+=("$TICKER_PID")
poll_until $(( (BACKOFF + 60000) / 1000 + 30 )) state_is "$fl" succeeded \
    || fail "the retried run did not succeed (state $(run_state "$fl"))"
kill "$TICKER_PID" 2>/dev/null; wait "$TICKER_PID" 2>/dev/null || true
B=$E; req GET /emulator/jobs >/dev/null
read -r retry_gap < <(jget "(function() local a, b
    for _, j in ipairs(d.jobs) do
        if j.name:find('^flaky%-load%-%-$fl%-1') then a = j elseif j.name:find('^flaky%-load%-%-$fl%-2') then b = j end
    end
    if not (a and b) then return -1 end
    local function ms(s) local h, mi, sec, frac = s:match('T(%d+):(%d+):(%d+)%.?(%d*)Z')
        return ((tonumber(h) * 60 + tonumber(mi)) * 60 + tonumber(sec)) * 1000 + (frac ~= '' and tonumber((frac .. '00'):sub(1, 3)) or 0) end
    return math.tointeger(ms(b.createTime) - ms(a.currentStateTime)) end)()")
if [ "$retry_gap" -ge "$BACKOFF" ] && [ "$retry_gap" -le $((BACKOFF + 60000 * TM)) ]; then
    ok "(b) retry launched ${retry_gap} ms after the failed attempt's end (backoff 30 s, bound 90 s)"
else
    fail "(b) retry launched ${retry_gap} ms after the failed attempt's end (want 30000..$((BACKOFF + 60000 * TM)))"
fi

# (c) exactly once; a clean stop
B=$E; req GET /emulator/stats >/dev/null
expect_eq "every step launched once" "$(not_once launches_by_name)" 0
expect_eq "every job created once" "$(not_once jobs_created_by_name)" 0
kill "$PROXY_PID"; wait "$PROXY_PID" 2>/dev/null; PROXY_PID=""
kill -CONT "$SRV_PID"
rc=0; kill -TERM "$SRV_PID"; wait "$SRV_PID" || rc=$?
expect_eq "serve exits 0 on SIGTERM" "$rc" 0
[ "$rc" -eq 0 ] || tail -20 "$TMPD/srv.err" >&2
finish
