#!/usr/bin/env bash
# test_serve_replicas: several `sluice serve` replicas on one PostgreSQL store. Every replica serves ingress and
# the API; one holds the engine's lock (store_engine_lock) and runs the engine, the others stand by. Runs
# started through a standby's API are driven by the leader; when the leader is killed (-9) a standby takes the
# lock within seconds and finishes what is in flight and what comes next. Exactly one job per name throughout.
source "$(dirname "$0")/serve_lib.sh"
source "$(dirname "$0")/pg_lib.sh"
trap 'pg_stop; emu_cleanup' EXIT
W="${SLUICE_SRC:?}/workflows"
pg_start || { echo "FAIL: cannot start PostgreSQL (see above)"; exit 1; }
emu_start emu --write-credentials "$TMPD/creds" --pending-ms 50 --running-ms 400
E=$B
start_replica() { # NAME
    serve_start "$1" --workflows "$W" --store "$PG_URL" --dataflow-url "$E" --no-auth \
        --credentials "$TMPD/creds/service-account.json" --poll-interval 200ms --tick 50ms
}
start_replica a; A=$S; A_PID=$SRV_PID
start_replica b; SB=$S
role() { curl -s "$1/readyz" | lua5.4 -e 'print((require("cjson").decode(io.read("a")).engine_role))'; }
expect_eq "the first replica runs the engine" "$(role "$A")" leader
expect_eq "the second stands by" "$(role "$SB")" standby
curl -s "$SB/readyz" -o "$TMPD/body"; expect_eq "a standby is ready (it serves ingress and the API)" "$(jget d.ready)" true
B=$E; req POST /emulator/config "{\"events\":{\"push_url\":\"$A/v1/events/pubsub\"}}" >/dev/null
start_run() { curl -s -X POST -H 'Content-Type: application/json' -d '{"workflow":"example"}' "$1/v1/runs" |
    lua5.4 -e 'print((require("cjson").decode(io.read("a")).run or {}).id or "")'; }
runs=()
for _ in 1 2 3; do runs+=("$(start_run "$SB")"); done
done_on() { local s=$1; shift; for id in "$@"; do S=$s; sget "/v1/runs/$id" >/dev/null; [ "$(jget d.run.state)" = succeeded ] || return 1; done; }
poll_until 30 done_on "$SB" "${runs[@]}" && ok "runs started on the standby were driven by the leader" || fail "runs: $(jget d.run.state)"
# the leader dies; more runs arrive; the standby takes over
long=$(start_run "$SB")
kill -9 "$A_PID"; wait "$A_PID" 2>/dev/null || true
t0=$(date +%s%3N)
leader_b() { [ "$(role "$SB")" = leader ]; }
poll_until 15 leader_b && ok "the standby took over in $(( $(date +%s%3N) - t0 )) ms" || fail "no takeover: $(role "$SB")"
more=()
for _ in 1 2 3; do more+=("$(start_run "$SB")"); done
poll_until 40 done_on "$SB" "$long" "${more[@]}" && ok "the new leader finished the run in flight and the new ones" \
    || fail "after takeover: $(jget d.run.state)"
start_replica c
expect_eq "a replica started later stands by" "$(role "$S")" standby
B=$E; req GET /emulator/stats >/dev/null
expect_eq "every job created once" "$(jget 'count((function() local t={} for _,v in pairs(d.jobs_created_by_name) do t[#t+1]=v end return t end)(), function(v) return v ~= 1 end)')" 0
expect_eq "every step launched once" "$(jget 'count((function() local t={} for _,v in pairs(d.launches_by_name) do t[#t+1]=v end return t end)(), function(v) return v ~= 1 end)')" 0
expect_eq "7 runs x 3 jobs" "$(jget 'len(d.jobs_created_by_name)')" 21

# Inbox notifications: with a 10-minute tick and poll, only events move runs — and the events go to the standby's
# ingress. The leader learns of them at once through LISTEN/NOTIFY on the store.
for p in "${EMU_PIDS[@]}"; do [ "$p" = "$EMU_PID" ] || kill -9 "$p" 2>/dev/null || true; done
serve_start lead2 --workflows "$W" --store "$PG_URL" --dataflow-url "$E" --no-auth \
    --credentials "$TMPD/creds/service-account.json" --poll-interval 10m --tick 10m
L2=$S
leads2() { [ "$(role "$L2")" = leader ]; }
poll_until 15 leads2 || fail "no leader: $(role "$L2")"
serve_start std2 --workflows "$W" --store "$PG_URL" --dataflow-url "$E" --no-auth \
    --credentials "$TMPD/creds/service-account.json" --poll-interval 10m --tick 10m
S2=$S
expect_eq "the second stands by" "$(role "$S2")" standby
B=$E; req POST /emulator/config "{\"events\":{\"push_url\":\"$S2/v1/events/pubsub\"}}" >/dev/null
t0=$(date +%s%3N)
nid=$(start_run "$S2")
poll_until 20 done_on "$S2" "$nid" && ok "events recorded by the standby drove the leader's run ($(( $(date +%s%3N) - t0 )) ms, tick and poll 10 min)" \
    || fail "notify: run $(jget d.run.state)"
finish
