#!/usr/bin/env bash
# test_schedule_overlap: what a schedule time does while a run of the workflow is still active, driven by
# POST /v1/schedules:tick an hour at a time (serve's own tick off), with jobs that run for ten minutes.
# skip: no run for that time; buffer_one: one run waits (pending) and the next time is skipped; cancel_other: the
# active run is cancelled and the new one starts; allow: both run. The first tick only marks where the schedule
# starts (a schedule does not run its past).
source "$(dirname "$0")/serve_lib.sh"
W="${SLUICE_SRC:?}/tests/blackbox/overlap_workflows"
emu_start emu --no-auth --pending-ms 20 --running-ms 600000
E=$B
serve_start srv --workflows "$W" --store "$TMPD/ov.db" --dataflow-url "$E" --no-auth --dataflow-no-auth \
    --project ov-project --poll-interval 200ms --schedule-tick 0
t0=$(( $(date +%s) / 3600 * 3600 - 5 * 3600 + 1800 )) # half past, five hours ago
tick() { # HOURS after t0
    local t; t=$(date -u -d "@$(( t0 + $1 * 3600 ))" +%Y-%m-%dT%H:%M:%SZ)
    sreq POST /v1/schedules:tick '{}' -H 'Content-Type: application/json' -H "X-CloudScheduler-ScheduleTime: $t"
}
expect_eq "the first tick answers" "$(tick 0)" 200
expect_eq "the first tick starts nothing (no past runs)" "$(jget 'len(d.started)')" 0
expect_eq "the second tick answers" "$(tick 1)" 200
expect_eq "it starts one run per workflow" "$(jget 'len(d.started)')" 4
running() { sget "/v1/runs?workflow=$1&state=running" >/dev/null; [ "$(jget 'len(d.runs)')" -ge 1 ]; }
for w in ov_skip ov_buffer_one ov_cancel_other ov_allow; do
    poll_until 20 running "$w" || fail "$w: the first run is not running"
done
tick 2 >/dev/null
cp "$TMPD/body" "$TMPD/t2.json"
started() { jget "count(d.started, function(s) return s.workflow == '$1' end)"; }
skipped() { jget "count(d.skipped, function(s) return s.workflow == '$1' end)"; }
cp "$TMPD/t2.json" "$TMPD/body"
expect_eq "skip: nothing started" "$(started ov_skip)" 0
expect_eq "skip: the time is skipped" "$(skipped ov_skip)" 1
expect_eq "buffer_one: one run buffered" "$(started ov_buffer_one)" 1
expect_eq "cancel_other: one run started" "$(started ov_cancel_other)" 1
expect_eq "allow: one run started" "$(started ov_allow)" 1
tick 3 >/dev/null
expect_eq "buffer_one: the next time is skipped (one waits already)" "$(skipped ov_buffer_one)" 1
count_state() { sget "/v1/runs?workflow=$1&limit=100" >/dev/null; jget "count(d.runs, function(r) return r.state == '$2' end)"; }
expect_eq "buffer_one: one run waits, pending" "$(count_state ov_buffer_one pending)" 1
expect_eq "buffer_one: one runs" "$(count_state ov_buffer_one running)" 1
cancelled() { [ "$(count_state ov_cancel_other cancelled)" -ge 2 ]; }
poll_until 20 cancelled && ok "cancel_other: the earlier runs were cancelled" || fail "cancel_other: $(count_state ov_cancel_other cancelled) cancelled"
expect_eq "cancel_other: the newest runs" "$(count_state ov_cancel_other running)" 1
expect_eq "allow: three run at once" "$(count_state ov_allow running)" 3
expect_eq "skip: still one run" "$(sget "/v1/runs?workflow=ov_skip" >/dev/null; jget 'len(d.runs)')" 1
# a tick delivered twice: the same answer, no new run
tick 3 >/dev/null
expect_eq "a repeated tick starts nothing new" "$(jget 'count(d.started, function(s) return not s.existing end)')" 0
# the buffered run starts when the active one ends
sget "/v1/runs?workflow=ov_buffer_one&state=running" >/dev/null
rid=$(jget 'd.runs[1].id')
sget "/v1/runs/$rid" >/dev/null
job=$(jget 'd.run.steps[1].job_id')
B=$E; req POST "/emulator/jobs/$job:finish" '{"state":"JOB_STATE_DONE"}' >/dev/null
buffered_runs() { [ "$(count_state ov_buffer_one pending)" -eq 0 ] && [ "$(count_state ov_buffer_one running)" -eq 1 ]; }
poll_until 20 buffered_runs && ok "buffer_one: the buffered run started when the active one ended" || fail "buffer_one: not started"
expect_eq "bad schedule time" "$(sreq POST /v1/schedules:tick '{}' -H 'Content-Type: application/json' -H 'X-CloudScheduler-ScheduleTime: yesterday')" 400
[ "$FAILS" -eq 0 ] || exit 1
