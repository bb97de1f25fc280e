#!/usr/bin/env bash
# test_run_engine: `sluice run` on the engine's harder paths, against the emulator:
#   1. on_run_failure = "cancel": the sibling's job is cancelled in the emulator before `run` exits 1;
#   2. waiting costs nothing: a run waiting on a 30 s job uses < 0.5 s of CPU (user + system, from /proc);
#   3. SIGINT while a launch is in flight (the emulator answers after 3 s): exit 0 at once, and the same command
#      resumes the run, which then succeeds with one job per step (no duplicate of the unanswered launch);
#   4. SIGTERM to `sluice serve` while calls are in flight: exit 0; a new server on the same store finishes the run.
# Under `make asan` this runs with the sanitized binary: a use-after-free at shutdown fails it.
source "$(dirname "$0")/serve_lib.sh"
TW="${SLUICE_SRC:?}/tests/data/engine"
W="${SLUICE_SRC:?}/workflows"

run_wf() { # FILE STORE ARGS... (foreground) -> exit code; output in $TMPD/run.out / run.err
    local wf=$1 db=$2; shift 2
    local rc=0
    SLUICE_LOG_LEVEL=warning timeout 120 "$SLUICE_BIN" run "$wf" --store "$TMPD/$db" --dataflow-url "$B" \
        --credentials "$TMPD/creds/service-account.json" "$@" >"$TMPD/run.out" 2>"$TMPD/run.err" || rc=$?
    echo "$rc"
}
job_state() { req GET /emulator/jobs >/dev/null; jget "(filter(d.jobs, function(j) return j.name:find('$1', 1, true) end)[1] or {}).currentState"; }
one_job_per_name() {
    req GET /emulator/stats >/dev/null
    not_once jobs_created_by_name
}

# 1. a failing branch cancels its sibling
emu_start sib --write-credentials "$TMPD/creds" --pending-ms 50 --running-ms 300 --config <(cat <<'JSON'
{"job_defaults": {"cancel_ms": 800},
 "jobs": [{"match": "sib-quick--*", "outcome": "JOB_STATE_FAILED"}, {"match": "sib-long--*", "running_ms": 600000}]}
JSON
)
rc=$(run_wf "$TW/siblings.lua" sib.db --poll-interval 200ms)
expect_eq "siblings: the run fails (exit 1)" "$rc" 1
expect_eq "siblings: the long job was cancelled before run exited" "$(job_state sib-long--)" JOB_STATE_CANCELLED
grep -q "step Quick failed" "$TMPD/run.out" && ok "siblings: the failure is reported" || { cat "$TMPD/run.out"; fail "siblings: no failure message"; }
emu_stop "$EMU_PID"

# 2. waiting on a 30 s job costs no CPU
emu_start idle --write-credentials "$TMPD/creds" --pending-ms 100 --running-ms 30000
"$SLUICE_BIN" run "$TW/chain.lua" --store "$TMPD/idle.db" --dataflow-url "$B" --poll-interval 5s --quiet \
    --credentials "$TMPD/creds/service-account.json" >"$TMPD/idle.out" 2>"$TMPD/idle.err" &
RUN_PID=$!
EMU_PIDS+=("$RUN_PID")
launched() { [ "$(job_state chain-a--)" = JOB_STATE_RUNNING ]; }
poll_until 20 launched || fail "idle: chain-a never ran"
cpu_ticks() { awk '{print $14 + $15}' "/proc/$RUN_PID/stat"; }
c0=$(cpu_ticks); t0=$(date +%s%3N)
sleep 28 # a fixed wait is the point here: the process must sit idle while the job runs
c1=$(cpu_ticks); t1=$(date +%s%3N)
hz=$(getconf CLK_TCK)
cpu_ms=$(( (c1 - c0) * 1000 / hz ))
echo "idle: ${cpu_ms} ms of CPU over $((t1 - t0)) ms of waiting"
[ "$cpu_ms" -lt 500 ] && ok "idle: waiting used < 0.5 s of CPU" || fail "idle: waiting used $cpu_ms ms of CPU"
kill -INT "$RUN_PID"; wait "$RUN_PID" || true
emu_stop "$EMU_PID"

# 3. SIGINT with a launch in flight, then the same command resumes
emu_start slow --write-credentials "$TMPD/creds" --pending-ms 50 --running-ms 200 \
    --config <(echo '{"faults": {"flexTemplates.launch": {"latency_ms": 3000}}}')
SLUICE_LOG_LEVEL=warning "$SLUICE_BIN" run "$W/example.lua" --store "$TMPD/int.db" --dataflow-url "$B" \
    --credentials "$TMPD/creds/service-account.json" --poll-interval 100ms >"$TMPD/int.out" 2>"$TMPD/int.err" &
RUN_PID=$!
EMU_PIDS+=("$RUN_PID")
# the launch is in flight once the step is launching: the emulator answers only after 3 s
launching() { grep -q "step Step1 launching" "$TMPD/int.out"; }
poll_until 10 launching || fail "SIGINT: Step1 never started launching"
sleep 0.5
t0=$(date +%s%3N)
rc=0; kill -INT "$RUN_PID"; wait "$RUN_PID" || rc=$?
t1=$(date +%s%3N)
expect_eq "SIGINT: exit 0" "$rc" 0
[ $((t1 - t0)) -lt 2500 ] && ok "SIGINT: exited in $((t1 - t0)) ms, without waiting for the answer" || fail "SIGINT: took $((t1 - t0)) ms"
grep -q "Run the same command again to resume" "$TMPD/int.err" && ok "SIGINT: says how to resume" || { cat "$TMPD/int.err"; fail "SIGINT: message"; }
grep -q "Sanitizer\|runtime error" "$TMPD/int.err" && { cat "$TMPD/int.err"; fail "SIGINT: sanitizer report"; } || ok "SIGINT: no sanitizer report"
req POST /emulator/config '{"faults": {"flexTemplates.launch": {"latency_ms": 0}}}' >/dev/null
rc=$(run_wf "$W/example.lua" int.db --poll-interval 100ms)
expect_eq "SIGINT: the same command resumes and succeeds" "$rc" 0
grep -q "resuming run" "$TMPD/run.err" && ok "SIGINT: the run was resumed" || { cat "$TMPD/run.err"; fail "SIGINT: not resumed"; }
expect_eq "SIGINT: one job per step" "$(one_job_per_name)" 0
emu_stop "$EMU_PID"

# 4. SIGTERM to serve with calls in flight, then a new server finishes the run
emu_start srvemu --write-credentials "$TMPD/creds" --pending-ms 50 --running-ms 200 \
    --config <(echo '{"faults": {"default": {"latency_ms": 3000}}}')
E=$B
serve_start srv1 --workflows "$W" --store "$TMPD/srv.db" --dataflow-url "$E" --no-auth \
    --credentials "$TMPD/creds/service-account.json" --poll-interval 100ms
id=$(curl -s -X POST -H 'Content-Type: application/json' -d '{"workflow":"example"}' "$S/v1/runs" | lua5.4 -e 'print((require("cjson").decode(io.read("a")).run or {}).id or "")')
[ -n "$id" ] && ok "serve: run $id started" || fail "serve: start"
srv_launching() { sget "/v1/runs/$id" >/dev/null; [ "$(jget 'count(d.run.steps, function(s) return s.state == "launching" end)')" -ge 1 ]; }
poll_until 10 srv_launching || fail "SIGTERM: no launch in flight"
sleep 0.3
t0=$(date +%s%3N)
rc=0; kill -TERM "$SRV_PID"; wait "$SRV_PID" || rc=$?
t1=$(date +%s%3N)
expect_eq "SIGTERM: serve exits 0 with calls in flight" "$rc" 0
echo "SIGTERM: exited in $((t1 - t0)) ms"
grep -q "AddressSanitizer\|runtime error" "$TMPD/srv1.err" && fail "SIGTERM: sanitizer report" || ok "SIGTERM: no sanitizer report"
B=$E; req POST /emulator/config '{"faults": {"default": {"latency_ms": 0}}}' >/dev/null
serve_start srv2 --workflows "$W" --store "$TMPD/srv.db" --dataflow-url "$E" --no-auth \
    --credentials "$TMPD/creds/service-account.json" --poll-interval 100ms
done_ok() { sget "/v1/runs/$id" >/dev/null; [ "$(jget d.run.state)" = succeeded ]; }
poll_until 30 done_ok && ok "SIGTERM: the next server finished the run" || fail "SIGTERM: run state $(jget d.run.state)"
B=$E; expect_eq "SIGTERM: one job per step" "$(one_job_per_name)" 0
rc=0; kill -TERM "$SRV_PID"; wait "$SRV_PID" || rc=$?
expect_eq "serve exits 0" "$rc" 0
emu_stop "$EMU_PID"
finish
