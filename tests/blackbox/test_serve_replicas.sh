#!/usr/bin/env bash
# test_serve_replicas: several `sluice serve` replicas on one PostgreSQL store. Every replica serves ingress and
# the API and runs the engine; the engines split the work row by row, and the holder of the leader lease (one at
# a time) also runs retention. Runs started through one replica's API are driven by any of them; when the leader
# is killed (-9) another takes the lease within its time and the runs in flight finish. A replica paused
# (SIGSTOP) between recording a launch intent and sending it, and continued after its claim ran out, sends
# nothing: another replica launched the step meanwhile. Exactly one job per name throughout.
source "$(dirname "$0")/serve_lib.sh"
source "$(dirname "$0")/pg_lib.sh"
trap 'pg_stop; emu_cleanup' EXIT
W="${SLUICE_SRC:?}/workflows"
pg_start || { echo "FAIL: cannot start PostgreSQL (see above)"; exit 1; }
emu_start emu --write-credentials "$TMPD/creds" --pending-ms 50 --running-ms 400
E=$B
start_replica() { # NAME
    serve_start "$1" --workflows "$W" --store "$PG_URL" --dataflow-url "$E" --no-auth \
        --credentials "$TMPD/creds/service-account.json" --poll-interval 200ms --tick 50ms --lease 2s
}
start_replica a; A=$S; A_PID=$SRV_PID
start_replica b; SB=$S
role() { curl -s "$1/readyz" | lua5.4 -e 'print((require("cjson").decode(io.read("a")).engine_role))'; }
expect_eq "the first replica runs the engine" "$(role "$A")" leader
expect_eq "the second follows" "$(role "$SB")" follower
curl -s "$SB/readyz" -o "$TMPD/body"; expect_eq "a follower is ready" "$(jget d.ready)" true
B=$E; req POST /emulator/config "{\"events\":{\"push_url\":\"$A/v1/events/pubsub\"}}" >/dev/null
start_run() { curl -s -X POST -H 'Content-Type: application/json' -d '{"workflow":"example"}' "$1/v1/runs" |
    lua5.4 -e 'print((require("cjson").decode(io.read("a")).run or {}).id or "")'; }
runs=()
for _ in $(seq 1 12); do runs+=("$(start_run "$SB")"); done
done_on() { local s=$1; shift; for id in "$@"; do S=$s; sget "/v1/runs/$id" >/dev/null; [ "$(jget d.run.state)" = succeeded ] || return 1; done; }
poll_until 30 done_on "$SB" "${runs[@]}" && ok "runs started on the follower finished" || fail "runs: $(jget d.run.state)"
sent() { curl -s "$1/metrics" | awk '$1 == "sluice_engine_launches_sent_total" {print int($2)}'; }
sa=$(sent "$A"); sb=$(sent "$SB")
[ "${sa:-0}" -gt 0 ] && [ "${sb:-0}" -gt 0 ] && ok "both engines launched jobs ($sa and $sb of 36)" ||
    fail "the work was not split: replica a sent $sa launches, b $sb"
# the leader dies; more runs arrive; another replica takes the lease over
long=$(start_run "$SB")
kill -9 "$A_PID"; wait "$A_PID" 2>/dev/null || true
t0=$(date +%s%3N)
leader_b() { [ "$(role "$SB")" = leader ]; }
poll_until 15 leader_b && took=$(( $(date +%s%3N) - t0 )) && ok "the follower took the lease over in $took ms" ||
    fail "no takeover: $(role "$SB")"
[ "${took:-99999}" -le 3000 ] && ok "within the lease (2 s) and one renewal" || fail "takeover took ${took:-?} ms"
more=()
for _ in 1 2 3; do more+=("$(start_run "$SB")"); done
poll_until 40 done_on "$SB" "$long" "${more[@]}" && ok "the run in flight and the new ones finished" \
    || fail "after takeover: $(jget d.run.state)"
start_replica c
expect_eq "a replica started later follows" "$(role "$S")" follower
once() {
    B=$E; req GET /emulator/stats >/dev/null
    expect_eq "every job created once" "$(not_once jobs_created_by_name)" 0
    expect_eq "every step launched once" "$(not_once launches_by_name)" 0
    expect_eq "$1 runs x 3 jobs" "$(jget 'len(d.jobs_created_by_name)')" $(($1 * 3))
}
once 16

# Inbox notifications: with a 10-minute tick and poll, only events move runs — and the events go to the standby's
# ingress. The leader learns of them at once through LISTEN/NOTIFY on the store.
for p in "${EMU_PIDS[@]}"; do [ "$p" = "$EMU_PID" ] || kill -9 "$p" 2>/dev/null || true; done
serve_start lead2 --workflows "$W" --store "$PG_URL" --dataflow-url "$E" --no-auth \
    --credentials "$TMPD/creds/service-account.json" --poll-interval 10m --tick 10m --lease 2s
L2=$S
leads2() { [ "$(role "$L2")" = leader ]; }
poll_until 15 leads2 || fail "no leader: $(role "$L2")"
serve_start std2 --workflows "$W" --store "$PG_URL" --dataflow-url "$E" --no-auth \
    --credentials "$TMPD/creds/service-account.json" --poll-interval 10m --tick 10m --lease 2s
S2=$S
expect_eq "the second follows" "$(role "$S2")" follower
B=$E; req POST /emulator/config "{\"events\":{\"push_url\":\"$S2/v1/events/pubsub\"}}" >/dev/null
t0=$(date +%s%3N)
nid=$(start_run "$S2")
poll_until 20 done_on "$S2" "$nid" && ok "events recorded by one replica woke the engines ($(( $(date +%s%3N) - t0 )) ms, tick and poll 10 min)" \
    || fail "notify: run $(jget d.run.state)"
# std2's ingress wakes its own engine directly; the leader can only have learnt of the work through NOTIFY
woken() { curl -s "$1/metrics" | awk '$1 == "sluice_engine_notifications_total" {print int($2)}'; }
n2=$(woken "$L2")
[ "${n2:-0}" -gt 0 ] && ok "the other replica's engine was woken by $n2 notifications" || fail "no notification reached $L2"
once 17

# Fencing: replica p stops itself (SIGSTOP) right after it committed the intent of its first launch and before the
# request leaves. Replica q takes the step over when the claim (the 2 s lease) runs out, launches it and finishes
# the run; only then is p continued: its claim ran out, so it must not send the request it held (the job has
# ended by then, so a late send would create a second job of the same name).
for p in "${EMU_PIDS[@]}"; do [ "$p" = "$EMU_PID" ] || kill -9 "$p" 2>/dev/null || true; done
SLUICE_FAULT_PAUSE_BEFORE_LAUNCH=1 start_replica p; P=$S; P_PID=$SRV_PID
leads_p() { [ "$(role "$P")" = leader ]; }
poll_until 10 leads_p || fail "p alone does not lead: $(role "$P")"
B=$E; req POST /emulator/config "{\"events\":{\"push_url\":\"$P/v1/events/pubsub\"}}" >/dev/null
# p may stop itself before its 201 leaves (its engine can be quicker than its HTTP thread), so the start carries a
# request key and its answer is not waited for; the same start sent to q returns the run p recorded.
FENCED_START='{"workflow":"example","request_key":"fenced-1"}'
curl -s -m 60 -X POST -H 'Content-Type: application/json' -d "$FENCED_START" "$P/v1/runs" >/dev/null 2>&1 &
stopped() { [ "$(awk '{print $3}' "/proc/$P_PID/stat" 2>/dev/null)" = T ]; }
poll_until 10 stopped && ok "p stopped itself between the intent and the send" || fail "p did not stop"
t0=$(date +%s%3N)
start_replica q; Q=$S
fid=$(curl -s -X POST -H 'Content-Type: application/json' -d "$FENCED_START" "$Q/v1/runs" |
    lua5.4 -e 'print((require("cjson").decode(io.read("a")).run or {}).id or "")')
[ -n "$fid" ] && ok "q answers the start p recorded (request key)" || fail "q does not know the fenced start"
B=$E; req POST /emulator/config "{\"events\":{\"push_url\":\"$Q/v1/events/pubsub\"}}" >/dev/null
poll_until 30 done_on "$Q" "$fid" && ok "q took the step over and finished the run in $(( $(date +%s%3N) - t0 )) ms" ||
    fail "fenced run: $(jget d.run.state)"
leads_q() { [ "$(role "$Q")" = leader ]; }
poll_until 10 leads_q && ok "q holds the leader lease while p is paused" || fail "lease: q is $(role "$Q")"
kill -CONT "$P_PID"
not_sent() { grep -q "ran out before it was sent" "$TMPD/p.err"; }
poll_until 10 not_sent && ok "p, continued, did not send the launch it held" || fail "p did not report the fence"
fenced() { [ "$(curl -s "$P/metrics" | awk '$1 == "sluice_engine_fenced_total" {print int($2)}')" = 1 ]; }
poll_until 10 fenced && ok "p counted the launch it dropped" || fail "p's sluice_engine_fenced_total is not 1"
p_follows() { [ "$(role "$P")" = follower ]; }
poll_until 10 p_follows && ok "p knows it lost the lease" || fail "p is $(role "$P")"
once 18
more2=$(start_run "$P")
poll_until 30 done_on "$P" "$more2" && ok "p works on afterwards" || fail "after the pause: $(jget d.run.state)"
once 19
finish
