#!/usr/bin/env bash
# test_serve_adopt: `sluice serve --adopt-foreign`. A job of the example workflow's first launch step
# (my-job-1) that Sluice did not launch finishes; its events (Pub/Sub push and Eventarc, several per job) start
# exactly one run from that step, which goes on to my-job-2 and my-job-3. Without the flag nothing starts.
source "$(dirname "$0")/serve_lib.sh"
WF="${SLUICE_SRC:?}/workflows"
OPTOK=operator-secret

emu_start emu --no-auth --seed 3 --pending-ms 50 --running-ms 150
E=$B
launch_foreign() { # NAME
    B=$E req POST /v1b3/projects/my-project/locations/europe-west4/flexTemplates:launch \
        "{\"launchParameter\":{\"jobName\":\"$1\",\"containerSpecGcsPath\":\"gs://my-bucket/my-job-1/python_command_spec.json\"}}" >/dev/null
}
runs_json() { sget "/v1/runs?limit=100" >/dev/null; }

for variant in adopt plain; do
    args=(); [ "$variant" = adopt ] && args=(--adopt-foreign)
    serve_start "srv-$variant" --workflows "$WF" --store "$TMPD/$variant.db" --dataflow-url "$E" --dataflow-no-auth \
        --no-auth --operator-token "$OPTOK" --poll-interval 10m "${args[@]}"
    B=$E; req POST /emulator/config "{\"events\":{\"push_url\":\"$S/v1/events/pubsub\",\"eventarc_url\":\"$S/v1/events/eventarc\",\"duplicate_rate\":0.5}}" >/dev/null
    launch_foreign "my-job-1--manual-$variant"
    if [ "$variant" = adopt ]; then
        adopted_done() { runs_json; [ "$(jget 'count(d.runs, function(r) return r.origin == "adopted" and r.state == "succeeded" end)')" = 1 ]; }
        poll_until 30 adopted_done || fail "adopt: no adopted run succeeded ($(cat "$TMPD/body"))"
        runs_json; expect_eq "adopt: exactly one run" "$(jget 'len(d.runs)')" 1
        id=$(jget 'd.runs[1].id')
        sget "/v1/runs/$id" >/dev/null
        expect_eq "adopt: Step1 holds the foreign job" "$(jget 'd.run.steps[1].name .. " " .. d.run.steps[1].job_name .. " " .. d.run.steps[1].state')" "Step1 my-job-1--manual-adopt succeeded"
        expect_eq "adopt: steps" "$(jget 'len(d.run.steps)')" 4
        B=$E; req GET /emulator/stats >/dev/null
        expect_eq "adopt: my-job-2 launched once" "$(jget "d.launches_by_name['my-job-2--$id-1']")" 1
        expect_eq "adopt: my-job-3 launched once" "$(jget "d.launches_by_name['my-job-3--$id-1']")" 1
        expect_eq "adopt: my-job-1 not relaunched" "$(jget "d.launches_by_name['my-job-1--$id-1'] or 0")" 0
    else
        # wait until the foreign job's events were delivered, then check nothing started
        delivered() { curl -s "$S/metrics" | grep 'sluice_events_total{source="eventarc",outcome="recorded"}' >/dev/null; }
        poll_until 20 delivered || fail "plain: events not delivered"
        B=$S; req POST "/v1/reconcile?budget_ms=2000" '' -H 'Content-Type: application/json' >/dev/null
        runs_json; expect_eq "plain: no run without --adopt-foreign" "$(jget 'len(d.runs)')" 0
    fi
    kill -TERM "$SRV_PID"; wait "$SRV_PID" || fail "$variant: serve exit code"
done
emu_stop "$EMU_PID"
finish
