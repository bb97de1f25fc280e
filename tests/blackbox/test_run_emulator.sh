#!/usr/bin/env bash
# `sluice run` end to end against the emulator process: the shipped workflows complete with exactly one job per
# step; a failed job does not trigger its successor; API faults (429/5xx at 20%, the 404 lag window, slow
# answers, a 400 whose job did start) still complete every run without a duplicate job; a run killed with SIGKILL
# resumes when the same command runs again; an unreachable Dataflow is logged and shown on the step.
source "$(dirname "$0")/emu_lib.sh"
W="$SLUICE_SRC/workflows"

# jobs_created_by_name and launches_by_name of the emulator as "name count" lines
stats() { curl -s "$B/emulator/stats" | python3 -c '
import json, sys
s = json.load(sys.stdin)
for k in ("jobs_created_by_name", "launches_by_name"):
    for n, c in sorted(s.get(k, {}).items()):
        print(k, n, c)'; }

run() { # run WORKFLOW STORE ARGS... -> exit code, output in $TMPD/run.out
    local wf=$1 db=$2; shift 2
    local rc=0
    SLUICE_LOG_LEVEL=warning timeout 120 "$SLUICE_BIN" run "$W/$wf.lua" --store "$TMPD/$db" --dataflow-url "$B" \
        --credentials "$TMPD/creds/service-account.json" --poll-interval 100ms "$@" >"$TMPD/run.out" 2>"$TMPD/run.err" || rc=$?
    echo "$rc"
}

# 1. both shipped workflows complete; one job per step
emu_start clean --write-credentials "$TMPD/creds" --pending-ms 50 --running-ms 150
[ "$(run example a.db)" = 0 ] && ok "example completes" || { cat "$TMPD/run.out" "$TMPD/run.err"; fail "example"; }
[ "$(run fanout a.db)" = 0 ] && ok "fanout completes" || { cat "$TMPD/run.out" "$TMPD/run.err"; fail "fanout"; }
created=$(stats | awk '$1=="jobs_created_by_name"' | wc -l)
[ "$created" = 8 ] && ok "8 jobs created (3 + 5)" || fail "expected 8 jobs, got $created"
dups=$(stats | awk '$3 != 1' | wc -l)
[ "$dups" = 0 ] && ok "exactly one launch and one job per step" || { stats; fail "duplicates"; }
grep -q "run .* succeeded" "$TMPD/run.out" || fail "no summary line"
emu_stop "$EMU_PID"

# 2. a failed job does not trigger its successor
emu_start failing --write-credentials "$TMPD/creds" --pending-ms 50 --running-ms 100 --config <(echo '{"jobs":[{"match":"my-job-1--*","outcome":"JOB_STATE_FAILED"}]}')
[ "$(run example b.db)" = 1 ] && ok "a failed my-job-1 fails the run (exit 1)" || fail "exit code on failure"
grep -q "ended JOB_STATE_FAILED" "$TMPD/run.out" && ok "the failure is reported" || { cat "$TMPD/run.out"; fail "no failure message"; }
if stats | grep -q "my-job-2"; then fail "my-job-2 was launched after my-job-1 failed"; else ok "my-job-2 never launched"; fi
# Regression (issue 17, finding 16): failure_cause stayed null for runs done by `sluice run` (it exited before the
# job messages it had asked for were answered); and `sluice status RUN` printed no step errors, which
# docs/operating.md promises.
grep -q "cause: Workflow failed. Causes:" "$TMPD/run.out" && ok "run's summary shows the job's cause" \
    || { cat "$TMPD/run.out"; fail "no cause in run's summary"; }
rid=$(sed -n 's/^run \([a-z0-9]*\) failed.*/\1/p' "$TMPD/run.out" | tail -1)
"$SLUICE_BIN" status "$rid" --store "$TMPD/b.db" --json >"$TMPD/st.json" 2>&1 || fail "status --json exit $?"
expect_eq "failure_cause is recorded by sluice run" \
    "$(lua5.4 -e 'local d = require("cjson").decode(io.read("a")) for _, s in ipairs(d.steps) do
        if s.name == "Step1" then print(type(s.failure_cause) == "string" and s.failure_cause:match("^Workflow failed%. Causes:") ~= nil) end end' <"$TMPD/st.json")" true
"$SLUICE_BIN" status "$rid" --store "$TMPD/b.db" >"$TMPD/st.txt" 2>&1 || fail "status exit $?"
grep -qE "^ +error: .*JOB_STATE_FAILED" "$TMPD/st.txt" && ok "status RUN prints the step's error" \
    || { cat "$TMPD/st.txt"; fail "status RUN prints no step error"; }
grep -qE "^ +cause: Workflow failed. Causes:" "$TMPD/st.txt" && ok "status RUN prints the job's cause" \
    || { cat "$TMPD/st.txt"; fail "status RUN prints no cause"; }
emu_stop "$EMU_PID"

# 3. API faults: 429 10% + 503 10% on every Dataflow method, a 2 s lag window of 404s after each job ends,
#    20% slow answers, and 30% of launches that create the job yet answer 400
cat >"$TMPD/faults.json" <<'JSON'
{"faults": {"default": {"rate_429": 0.1, "rate_503": 0.1, "slow_rate": 0.2, "slow_ms": 300, "retry_delay_s": 0.2},
            "flexTemplates.launch": {"launched_400_rate": 0.3}},
 "lag": {"window_ms": 2000, "mode": "not_found"}}
JSON
emu_start faulty --write-credentials "$TMPD/creds" --pending-ms 50 --running-ms 150 --seed 7 --config "$TMPD/faults.json"
[ "$(run example c.db)" = 0 ] && ok "example completes under faults" || { cat "$TMPD/run.out" "$TMPD/run.err" | tail -20; fail "example under faults"; }
[ "$(run fanout c.db)" = 0 ] && ok "fanout completes under faults" || { cat "$TMPD/run.out" "$TMPD/run.err" | tail -20; fail "fanout under faults"; }
dups=$(stats | awk '$1=="jobs_created_by_name" && $3 != 1' | wc -l)
created=$(stats | awk '$1=="jobs_created_by_name"' | wc -l)
[ "$dups" = 0 ] && [ "$created" = 8 ] && ok "under faults: 8 jobs, none twice" || { stats; fail "jobs under faults"; }
emu_stop "$EMU_PID"

# 4. SIGKILL mid-run, then the same command resumes the same run
emu_start resume --write-credentials "$TMPD/creds" --pending-ms 100 --running-ms 600
SLUICE_LOG_LEVEL=warning "$SLUICE_BIN" run "$W/example.lua" --store "$TMPD/d.db" --dataflow-url "$B" \
    --credentials "$TMPD/creds/service-account.json" --poll-interval 100ms >"$TMPD/first.out" 2>&1 &
pid=$!
for _ in $(seq 200); do grep -q "my-job-2" "$TMPD/first.out" 2>/dev/null && break; sleep 0.05; done
kill -9 "$pid"; wait "$pid" 2>/dev/null || true
grep -q "my-job-2" "$TMPD/first.out" || fail "the first process never reached my-job-2"
[ "$(run example d.db)" = 0 ] && ok "the re-run completes" || { cat "$TMPD/run.out" "$TMPD/run.err"; fail "resume"; }
grep -q "resuming run" "$TMPD/run.err" && ok "it resumed the same run" || { cat "$TMPD/run.err"; fail "not resumed"; }
first_run=$(grep -o 'my-job-1--[a-z0-9]*' "$TMPD/first.out" | head -1 | sed 's/my-job-1--//')
grep -q "run $first_run succeeded" "$TMPD/run.out" && ok "run $first_run succeeded" || { cat "$TMPD/run.out"; fail "wrong run"; }
dups=$(stats | awk '$3 != 1' | wc -l)
created=$(stats | awk '$1=="jobs_created_by_name"' | wc -l)
[ "$dups" = 0 ] && [ "$created" = 3 ] && ok "3 jobs, each launched once across the kill" || { stats; fail "jobs across kill"; }
emu_stop "$EMU_PID"

# 5. Regression (issue 17, finding 15): with an unreachable --dataflow-url (a closed local port), `sluice run`
#    showed "launching" for 40 s and logged nothing at the default level. The failing launch is logged at WARNING
#    with its reason, once per 30 s however many attempts fail, and shown on the step by `sluice status` (and by
#    run's own progress) as a "retrying: ..." note.
"$SLUICE_BIN" run "$W/example.lua" --store "$TMPD/e.db" --dataflow-url http://127.0.0.1:1 --no-auth --project p \
    >"$TMPD/down.out" 2>"$TMPD/down.err" &
down_pid=$!
EMU_PIDS+=("$down_pid")
noted() { "$SLUICE_BIN" status --store "$TMPD/e.db" "$(sed -n 's/.*"run \([a-z0-9]*\) of example started".*/\1/p' "$TMPD/down.err" | head -1)" \
    >"$TMPD/down.st" 2>/dev/null && grep -qE "^ +retrying: .*Couldn't connect to server \(([3-9]|[1-9][0-9]+) failed attempts" "$TMPD/down.st"; }
poll_until 20 noted && ok "status shows the failing launch's reason on its step" \
    || { cat "$TMPD/down.st" "$TMPD/down.err"; fail "no retrying note on the launching step"; }
grep -q '"severity":"WARNING","message":"dataflow: launch of my-job-1--[a-z0-9]*-1 failed: connect failed: .*retrying in' "$TMPD/down.err" \
    && ok "the failing launch is logged at WARNING with its reason" || { cat "$TMPD/down.err"; fail "no WARNING for the failing launch"; }
attempts=$(sed -n 's/.*(\([0-9]*\) failed attempts.*/\1/p' "$TMPD/down.st" | head -1)
warnings=$(grep -c '"dataflow: launch of' "$TMPD/down.err")
[ "${attempts:-0}" -ge 3 ] && [ "$warnings" -lt "$attempts" ] && ok "$warnings WARNING line(s) for $attempts failed attempts (rate-limited)" \
    || fail "$warnings WARNING lines for ${attempts:-?} failed attempts: not rate-limited"
# run prints its progress on its own clock: poll for the line (the store already has the note).
progress_noted() { grep -q "Step1 launching attempt 1 my-job-1--[a-z0-9]*-1 retrying: " "$TMPD/down.out"; }
poll_until 20 progress_noted && ok "run's progress shows the note" \
    || { cat "$TMPD/down.out"; fail "run's progress shows no note"; }
kill -INT "$down_pid"
wait "$down_pid" || fail "run exited $? on SIGINT"

if [ "$FAILS" -eq 0 ]; then echo "all run checks passed"; else echo "$FAILS check(s) failed"; exit 1; fi
