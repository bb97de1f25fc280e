#!/usr/bin/env bash
# test_redrive: `sluice redrive` against `sluice serve` and the emulator: a run whose second job failed is re-run
# from that step only — the first job is not launched again, the failed step gets a new attempt (a new job name),
# the rest follows, and every job name is created exactly once. Also `sluice status --store FILE` (no server).
# Regression (issue 17, finding 12): a redriven run whose step fails again goes to its on_failure step again even
# when that step had run (and succeeded) before the redrive: Dataflow sees the alert job launched a second time.
source "$(dirname "$0")/serve_lib.sh"
W="$TMPD/workflows"
mkdir -p "$W"
cp "${SLUICE_SRC:?}/workflows/example.lua" "$W/"
# Load fails every time; its on_failure Alert (a launch step) runs, then Cleanup, which fails once: the run fails.
cat >"$W/alerting.lua" <<'LUA'
return {
  name = "alerting", project = "p", region = "europe-west4", start = "Load",
  steps = {
    Load = { job_name = "al-load", template = "gs://my-bucket/t/load.json", on_failure = "Alert" },
    Alert = { job_name = "al-alert", template = "gs://my-bucket/t/alert.json", next = "Cleanup",
              ["function"] = function(ctx) return { failed = ctx.job and ctx.job.name or "?" } end },
    Cleanup = { job_name = "al-clean", template = "gs://my-bucket/t/clean.json" },
  },
}
LUA
OPTOK=operator-secret
WAIT=30 # poll_until scales it by SLUICE_TEST_TIMEOUT_MULTIPLIER
emu_start emu --write-credentials "$TMPD/creds" --pending-ms 50 --running-ms 150 \
    --config <(echo '{"jobs": [{"match": "my-job-2--*-1", "outcome": "JOB_STATE_FAILED"},
                               {"match": "al-load--*", "outcome": "JOB_STATE_FAILED"},
                               {"match": "al-clean--*-1", "outcome": "JOB_STATE_FAILED"}]}')
E=$B
serve_start srv --workflows "$W" --store "$TMPD/r.db" --dataflow-url "$E" --no-auth --operator-token "$OPTOK" \
    --credentials "$TMPD/creds/service-account.json" --poll-interval 100ms
id=$("$SLUICE_BIN" start example --server "$S" --param date=2026-12-01)
state_is() { sget "/v1/runs/$id" >/dev/null; [ "$(jget d.run.state)" = "$1" ]; }
poll_until 30 state_is failed && ok "the run failed at my-job-2" || fail "run state $(jget d.run.state)"
expect_eq "redrive of an unknown run is refused (exit 1)" "$("$SLUICE_BIN" redrive nosuchrun --server "$S" >/dev/null 2>&1; echo $?)" 1
"$SLUICE_BIN" redrive "$id" --server "$S" >"$TMPD/redrive.out" || fail "redrive exit $?"
grep -q "is running again" "$TMPD/redrive.out" && ok "redrive accepted" || fail "redrive output: $(cat "$TMPD/redrive.out")"
poll_until 30 state_is succeeded && ok "the redriven run succeeded" || fail "run state $(jget d.run.state)"
B=$E; req GET /emulator/stats >/dev/null
expect_eq "my-job-1 launched once" "$(jget "d.launches_by_name['my-job-1--$id-1']")" 1
expect_eq "my-job-2 attempt 1 once" "$(jget "d.launches_by_name['my-job-2--$id-1']")" 1
expect_eq "my-job-2 attempt 2 once" "$(jget "d.launches_by_name['my-job-2--$id-2']")" 1
expect_eq "my-job-3 once" "$(jget "d.launches_by_name['my-job-3--$id-1']")" 1
expect_eq "every job created once" "$(not_once jobs_created_by_name)" 0
expect_eq "redrive of a succeeded run is refused (exit 1)" "$("$SLUICE_BIN" redrive "$id" --server "$S" >/dev/null 2>&1; echo $?)" 1
# with other params, on the current version (docs/operating.md)
id2=$("$SLUICE_BIN" start example --server "$S" --param date=2026-12-01)
st2() { sget "/v1/runs/$id2" >/dev/null; [ "$(jget d.run.state)" = "$1" ]; }
poll_until 30 st2 failed || fail "run 2 state $(jget d.run.state)"
"$SLUICE_BIN" redrive "$id2" --param date=2026-12-02 --latest --server "$S" >/dev/null || fail "redrive --latest exit $?"
poll_until 30 st2 succeeded && ok "redrive --param --latest succeeded" || fail "run 2 state $(jget d.run.state)"
expect_eq "the redriven run has the new param" "$(jget d.run.params.date)" 2026-12-02
# status from the store file, no server needed
"$SLUICE_BIN" status "$id" --store "$TMPD/r.db" >"$TMPD/st.out" || fail "status --store exit $?"
grep -q "run $id  workflow example  succeeded" "$TMPD/st.out" && ok "status --store shows the run" || fail "status --store: $(cat "$TMPD/st.out")"
grep -qE "Step2 +succeeded +2 " "$TMPD/st.out" && ok "status --store shows the second attempt" || fail "status --store: $(cat "$TMPD/st.out")"
"$SLUICE_BIN" status --store "$TMPD/r.db" --json | lua5.4 -e 'local d = require("cjson").decode(io.read("a")) os.exit(#d == 2 and 0 or 1)' \
    && ok "status --store --json lists the runs" || fail "status --store --json"
expect_eq "status --store on a missing file (exit 1)" "$("$SLUICE_BIN" status x --store "$TMPD/none/x.db" >/dev/null 2>&1; echo $?)" 1
# the on_failure step is reached again after a redrive (finding 12)
id3=$("$SLUICE_BIN" start alerting --server "$S")
st3() { sget "/v1/runs/$id3" >/dev/null; [ "$(jget d.run.state)" = "$1" ]; }
poll_until "$WAIT" st3 failed && ok "alerting: the run failed at Cleanup" || fail "alerting: run state $(jget d.run.state)"
"$SLUICE_BIN" redrive "$id3" --server "$S" >/dev/null || fail "alerting: redrive exit $?"
poll_until "$WAIT" st3 succeeded && ok "alerting: the redriven run recovered" || fail "alerting: run state $(jget d.run.state)"
B=$E; req GET /emulator/stats >/dev/null
expect_eq "alerting: Load attempt 2 launched" "$(jget "d.launches_by_name['al-load--$id3-2']")" 1
expect_eq "alerting: the alert before the redrive" "$(jget "d.launches_by_name['al-alert--$id3-1']")" 1
expect_eq "alerting: the alert launched again after the second failure" "$(jget "d.launches_by_name['al-alert--$id3-2']")" 1
expect_eq "alerting: Cleanup again after it" "$(jget "d.launches_by_name['al-clean--$id3-2']")" 1
expect_eq "alerting: every job created once" "$(not_once jobs_created_by_name)" 0
req GET /emulator/launches >/dev/null
expect_eq "alerting: the second alert names the second failed job" \
    "$(jget "(filter(d.launches or d, function(l) return l.body.launchParameter.jobName == 'al-alert--$id3-2' end))[1].body.launchParameter.parameters.failed")" \
    "al-load--$id3-2"
rc=0; kill -TERM "$SRV_PID"; wait "$SRV_PID" || rc=$?
expect_eq "serve exits 0" "$rc" 0
emu_stop "$EMU_PID"
finish
