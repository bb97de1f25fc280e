#!/usr/bin/env bash
# test_serve_firestore: `sluice serve --store firestore://...` end to end on Google's Firestore emulator: runs of the
# shipped example workflow (three chained Dataflow jobs on the Dataflow emulator) succeed, and /metrics counts the
# Firestore documents read, written and deleted (sluice_store_ops_total{op}). It prints the documents per run, the
# numbers docs/cost.md is computed from: the delta over N runs (started one after another, each waited for) less
# what the idle server spent in the same time, divided by N. Skipped (77) without gcloud, failed under CI=true.
source "$(dirname "$0")/serve_lib.sh"
source "$(dirname "$0")/fs_lib.sh"
trap 'fs_stop; emu_cleanup' EXIT
N=${N_RUNS:-5}
fs_start || { echo "FAIL: cannot start the Firestore emulator (see above)"; exit 1; }
emu_start emu --write-credentials "$TMPD/creds" --pending-ms 50 --running-ms 200
E=$B
# A long tick and poll: between runs the server does next to nothing, so the per-run numbers are the runs' own.
serve_start srv --workflows "${SLUICE_SRC:?}/workflows" --store "$FS_URL" --dataflow-url "$E" --no-auth \
    --credentials "$TMPD/creds/service-account.json" --poll-interval 200ms --tick 10m
B=$E; req POST /emulator/config "{\"events\":{\"push_url\":\"$S/v1/events/pubsub\"}}" >/dev/null
ops() { curl -s "$S/metrics" | awk -v op="$1" '$1 == "sluice_store_ops_total{op=\"" op "\"}" { print $2 + 0; f = 1 } END { if (!f) print 0 }'; }
state_is() { sget "/v1/runs/$1" >/dev/null; [ "$(jget d.run.state)" = "$2" ]; }
# The idle rate first: the same server for a while with nothing to do.
r0=$(ops read) w0=$(ops write) d0=$(ops delete)
t0=$(date +%s%3N)
sleep 3
ir=$(( $(ops read) - r0 )) iw=$(( $(ops write) - w0 )) idle_ms=$(( $(date +%s%3N) - t0 ))
echo "idle: $ir reads, $iw writes in $idle_ms ms"
r0=$(ops read) w0=$(ops write) d0=$(ops delete)
t0=$(date +%s%3N)
for i in $(seq 1 "$N"); do
    code=$(sreq POST /v1/runs '{"workflow":"example"}' -H 'Content-Type: application/json')
    [ "$code" = 201 ] || { fail "run $i: start answered $code: $(cat "$TMPD/body")"; continue; }
    id=$(jget d.run.id)
    poll_until 60 state_is "$id" succeeded || fail "run $i ($id): $(jget d.run.state)"
done
ms=$(( $(date +%s%3N) - t0 ))
r=$(( $(ops read) - r0 )) w=$(( $(ops write) - w0 )) d=$(( $(ops delete) - d0 ))
ok "$N runs of example succeeded on Firestore in $ms ms"
[ "$r" -gt 0 ] && [ "$w" -gt 0 ] && ok "sluice_store_ops_total counts reads ($r) and writes ($w)" || fail "ops: reads $r writes $w"
idle_r=$(( ir * ms / (idle_ms > 0 ? idle_ms : 1) )) idle_w=$(( iw * ms / (idle_ms > 0 ? idle_ms : 1) ))
echo "per run of example.lua: $(( (r - idle_r) / N )) reads, $(( (w - idle_w) / N )) writes, $(( d / N )) deletes" \
     "(total $r reads, $w writes, $d deletes over $N runs; idle share ${idle_r} reads, ${idle_w} writes)"
rc=0; kill -TERM "$SRV_PID"; wait "$SRV_PID" || rc=$?
expect_eq "serve exits 0" "$rc" 0
finish
