#!/usr/bin/env bash
# test_serve_flow: `sluice serve` drives both shipped workflows (example, daily/fanout) through each ingress
# path — Pub/Sub push of the log sink's LogEntries, and Eventarc statusChanged CloudEvents — against the
# emulator, with duplicated and reordered deliveries. The poll interval is 10 minutes, so only events can move
# the runs forward in time. Checks: every run succeeds, exactly one launch and one job per step, duplicates
# are acknowledged as such, the CLI client (start/status/cancel) works, and so does --process-in-request.
source "$(dirname "$0")/serve_lib.sh"
WF="${SLUICE_SRC:?}/workflows"
OPTOK=operator-secret

run_mode() { # TAG MODE (push|eventarc) [extra serve args...]
    local tag=$1 mode=$2; shift 2
    emu_start "emu-$tag" --write-credentials "$TMPD/creds-$tag" --seed 7 --pending-ms 50 --running-ms 150
    local E=$B
    serve_start "srv-$tag" --workflows "$WF" --store "$TMPD/$tag.db" --dataflow-url "$E" \
        --credentials "$TMPD/creds-$tag/service-account.json" --audience sluice-test \
        --jwks-url "$E/oauth2/v3/certs" --allow-email pubsub-push@emulator.iam.gserviceaccount.com \
        --operator-token "$OPTOK" --poll-interval 10m "$@"
    local cfg
    if [ "$mode" = push ]; then
        cfg="{\"events\":{\"push_url\":\"$S/v1/events/pubsub\",\"audience\":\"sluice-test\",\"duplicate_rate\":0.5,\"reorder_rate\":0.5,\"reorder_ms\":100}}"
    else
        cfg="{\"events\":{\"eventarc_url\":\"$S/v1/events/eventarc\",\"audience\":\"sluice-test\",\"duplicate_rate\":0.5,\"reorder_rate\":0.5,\"reorder_ms\":100}}"
    fi
    B=$E; expect_eq "$mode: emulator config" "$(req POST /emulator/config "$cfg")" 200
    sreq GET /readyz >/dev/null; expect_eq "$mode: ready" "$(jget d.ready)" true

    local runs=()
    for wf in example daily example daily; do
        local id
        id=$("$SLUICE_BIN" start "$wf" --server "$S" --token "$OPTOK" --param date=2026-11-27) || fail "$mode: start $wf"
        runs+=("$id")
    done
    run_done() {
        for id in "${runs[@]}"; do
            sget "/v1/runs/$id" >/dev/null
            case "$(jget d.run.state)" in succeeded|failed|cancelled) ;; *) return 1 ;; esac
        done
    }
    poll_until 60 run_done || fail "$mode: runs did not finish within 60 s (events not driving them?)"
    for id in "${runs[@]}"; do
        sget "/v1/runs/$id" >/dev/null
        expect_eq "$mode: run $id state" "$(jget d.run.state)" succeeded
    done
    B=$E; req GET /emulator/stats >/dev/null
    expect_eq "$mode: every step launched once" "$(not_once launches_by_name)" 0
    expect_eq "$mode: every job created once" "$(not_once jobs_created_by_name)" 0
    local launches; launches=$(jget 'len(d.launches_by_name)')
    [ "$launches" -ge 8 ] && ok "$mode: $launches jobs launched" || fail "$mode: only $launches launches"
    local dups; dups=$(jget "d.deliveries.$mode.duplicates or 0")
    curl -s "$S/metrics" >"$TMPD/metrics"
    local src=$mode; [ "$mode" = push ] && src=pubsub
    grep -q "sluice_events_total{source=\"$src\",outcome=\"recorded\"}" "$TMPD/metrics" && ok "$mode: events recorded" \
        || fail "$mode: no recorded events in /metrics"
    grep -q 'sluice_launches_total{workflow="example",step="Step2",outcome="ok"} 2' "$TMPD/metrics" \
        && ok "$mode: launches counted by workflow and step" || fail "$mode: sluice_launches_total missing"
    grep -q 'sluice_dataflow_call_seconds_count{method="get"}' "$TMPD/metrics" && ok "$mode: API latency histogram" \
        || fail "$mode: sluice_dataflow_call_seconds missing"
    grep -qE '^sluice_lua_call_seconds_count\{outcome="ok"\} [1-9]' "$TMPD/metrics" && ok "$mode: Lua call time" \
        || fail "$mode: sluice_lua_call_seconds missing"
    if [ "$dups" -gt 0 ]; then
        grep -q "sluice_events_total{source=\"$src\",outcome=\"duplicate\"}" "$TMPD/metrics" && ok "$mode: $dups duplicates acknowledged" \
            || fail "$mode: duplicates sent but none counted"
    fi
    # the poller did not do the work: no jobs.get beyond one confirmation per finished job
    local gets; gets=$(jget 'd.requests["jobs.get"] and d.requests["jobs.get"]["200"] or 0')
    [ "$gets" -le "$launches" ] && ok "$mode: $gets confirmations for $launches jobs" || fail "$mode: $gets jobs.get for $launches jobs"

    # CLI: status of one run, the list, and cancelling a run whose first job runs long
    "$SLUICE_BIN" status "${runs[0]}" --server "$S" --token "$OPTOK" >"$TMPD/status.out" || fail "$mode: status"
    grep -q "succeeded" "$TMPD/status.out" && ok "$mode: status shows the run" || fail "$mode: status output"
    SLUICE_SERVER=$S "$SLUICE_BIN" status --token "$OPTOK" | grep -c . >"$TMPD/n"; expect_eq "$mode: status lists runs" "$(cat "$TMPD/n")" 4
    B=$E; req POST /emulator/config '{"job_defaults":{"running_ms":600000}}' >/dev/null
    local cid; cid=$("$SLUICE_BIN" start example --server "$S" --token "$OPTOK")
    running() { sget "/v1/runs/$cid" >/dev/null; [ "$(jget 'count(d.run.steps, function(s) return s.state == "running" end)')" -ge 1 ]; }
    poll_until 20 running || fail "$mode: the first job never ran"
    "$SLUICE_BIN" cancel "$cid" --server "$S" --token "$OPTOK" >/dev/null || fail "$mode: cancel"
    cancelled() { sget "/v1/runs/$cid" >/dev/null; [ "$(jget d.run.state)" = cancelled ]; }
    poll_until 30 cancelled || fail "$mode: run not cancelled (state $(jget d.run.state))"
    expect_eq "$mode: cancel of a finished run" "$(sreq POST "/v1/runs/${runs[0]}:cancel" '{}' -H "Authorization: Bearer $OPTOK" -H 'Content-Type: application/json')" 200
    expect_eq "$mode: start without a token" "$(sreq POST /v1/runs '{"workflow":"example"}' -H 'Content-Type: application/json')" 401
    local rc=0; kill -TERM "$SRV_PID"; wait "$SRV_PID" || rc=$?
    expect_eq "$mode: serve exits 0 on SIGTERM" "$rc" 0
    [ "$rc" -eq 0 ] || tail -20 "$TMPD/srv-$tag.err" >&2 # the last lines serve logged, for the post-mortem
    emu_stop "$EMU_PID"
}

[ -n "${ONLY_INREQ:-}" ] || run_mode push push
[ -n "${ONLY_INREQ:-}" ] || run_mode eventarc eventarc
# Cloud Run with CPU only during requests: the engine wakes only for events and commands (10 min tick) and each
# push is answered after the engine has acted on it.
run_mode inrequest push --process-in-request 3s --tick 10m
[ -n "${DEBUG_LOG:-}" ] && cp "$TMPD"/srv-*.err /tmp/srv/ || true
finish
