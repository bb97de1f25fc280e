#!/usr/bin/env bash
# test_serve_replicas_crash: the crash test across replicas. Three `sluice serve` replicas on one PostgreSQL store,
# each on a fixed port; the emulator delivers its Pub/Sub pushes round robin to all three (a failed delivery is
# retried on the next one, as behind one push endpoint). 200 runs of the shipped workflows are started through
# all three APIs (idempotently: a start that fails is asked again elsewhere with the same request key), while a
# killer SIGKILLs a random replica at random moments and restarts it on its port. At the end every run has
# succeeded and the emulator saw exactly one job per name. The kill schedule is seeded ($SLUICE_CRASH_SEED) so a
# failure can be replayed. $SLUICE_TEST_STORE=firestore (ctest blackbox.test_serve_replicas_crash.firestore) runs the
# same test on a Firestore store on Google's emulator instead (fs_lib.sh; skipped without gcloud, failed under CI).
source "$(dirname "$0")/serve_lib.sh"
source "$(dirname "$0")/pg_lib.sh"
source "$(dirname "$0")/fs_lib.sh"
# Replicas (re)started by the killer's subshell are not in EMU_PIDS: their pids are kept in files.
kill_replicas() { for f in "$TMPD"/pid.*; do [ -e "$f" ] && kill -9 "$(cat "$f")" 2>/dev/null; done; return 0; }
trap 'touch "$TMPD/stop-killer"; kill_replicas; pg_stop; fs_stop; emu_cleanup' EXIT
W="${SLUICE_SRC:?}/workflows"
# On Firestore, 100 runs and twice the wait: every store operation is a round trip to the emulator's JVM, and 200 runs
# under kills took 4-7 minutes on an idle 2-core machine and did not finish in 240 s on a loaded one.
if [ "${SLUICE_TEST_STORE:-}" = firestore ]; then N_RUNS=${N_RUNS:-100}; DONE_WAIT=480; else N_RUNS=${N_RUNS:-200}; DONE_WAIT=240; fi
SEED=${SLUICE_CRASH_SEED:-$(date +%s)}
echo "seed $SEED (SLUICE_CRASH_SEED=$SEED replays the kill schedule)"
RANDOM=$SEED
if [ "${SLUICE_TEST_STORE:-}" = firestore ]; then
    fs_start || { echo "FAIL: cannot start the Firestore emulator (see above)"; exit 1; }
    STORE_URL=$FS_URL
else
    pg_start || { echo "FAIL: cannot start PostgreSQL (see above)"; exit 1; }
    STORE_URL=$PG_URL
fi
emu_start emu --write-credentials "$TMPD/creds" --pending-ms 100 --running-ms 1500
E=$B

# Fixed ports below the ephemeral range (32768 and up), so no outgoing connection takes a dead replica's port
# before its restart binds it again.
free_port() {
    local p
    for _ in $(seq 1 100); do
        p=$((20000 + RANDOM % 12000))
        [[ " ${PORTS[*]} " == *" $p "* ]] && continue
        python3 -c 'import socket,sys; s=socket.socket(); s.bind(("127.0.0.1",int(sys.argv[1])))' "$p" 2>/dev/null &&
            { echo "$p"; return 0; }
    done
    return 1
}
PORTS=() PIDS=() URLS=()
start_at() { # INDEX: (re)starts replica INDEX on its port
    local i=$1 log="$TMPD/r$1.err"
    "$SLUICE_BIN" serve --listen 127.0.0.1 --port "${PORTS[$i]}" --workflows "$W" --store "$STORE_URL" \
        --dataflow-url "$E" --no-auth --credentials "$TMPD/creds/service-account.json" \
        --poll-interval 300ms --tick 100ms --lease 2s >>"$TMPD/r$i.out" 2>>"$log" &
    PIDS[$i]=$!
    echo "${PIDS[$i]}" >"$TMPD/pid.$i"
    for _ in $(seq 1 250); do
        curl -s -o /dev/null "${URLS[$i]}/readyz" && return 0
        kill -0 "${PIDS[$i]}" 2>/dev/null || { tail -5 "$log" >&2; return 1; }
        sleep 0.02
    done
    return 1
}
for i in 0 1 2; do
    PORTS[$i]=$(free_port)
    URLS[$i]="http://127.0.0.1:${PORTS[$i]}"
    start_at "$i" || { fail "replica $i did not start"; finish; }
done
B=$E; req POST /emulator/config "{\"events\":{\"push_url\":\"${URLS[0]}/v1/events/pubsub ${URLS[1]}/v1/events/pubsub ${URLS[2]}/v1/events/pubsub\",\"max_attempts\":40,\"backoff_ms\":100}}" >/dev/null

# The killer: every 0.3–1.5 s one replica, chosen at random, is SIGKILLed and restarted 0.1–0.4 s later.
KILLS=0
killer() {
    RANDOM=$SEED # a subshell: bash seeds its RANDOM afresh there
    while [ ! -e "$TMPD/stop-killer" ]; do
        sleep "0.$((3 + RANDOM % 12))"
        local i=$((RANDOM % 3))
        kill -9 "$(cat "$TMPD/pid.$i")" 2>/dev/null || true
        wait "$(cat "$TMPD/pid.$i")" 2>/dev/null || true
        KILLS=$((KILLS + 1))
        echo "$KILLS" >"$TMPD/kills"
        sleep "0.$((1 + RANDOM % 4))"
        [ -e "$TMPD/stop-killer" ] && break
        start_at "$i" || echo "restart of replica $i failed" >>"$TMPD/killer.log"
    done
}
killer &
KILLER=$!

# Starts: run i of workflow example or daily, through replica i % 3; on failure the next replica, same key.
t0=$(date +%s%3N)
ids=()
for n in $(seq 1 "$N_RUNS"); do
    wf=example; [ $((n % 2)) -eq 0 ] && wf=daily
    id=""
    for try in $(seq 0 50); do
        u=${URLS[$(((n + try) % 3))]}
        id=$(curl -s -m 5 -X POST -H 'Content-Type: application/json' \
            -d "{\"workflow\":\"$wf\",\"request_key\":\"crash-$SEED-$n\"}" "$u/v1/runs" 2>/dev/null |
            lua5.4 -e 'local ok, d = pcall(require("cjson").decode, io.read("a")); print(ok and type(d) == "table" and d.run and d.run.id or "")') || true
        [ -n "$id" ] && break
        sleep 0.1
    done
    [ -n "$id" ] || { fail "run $n could not be started"; continue; }
    ids+=("$id")
done
ok "${#ids[@]} runs started in $(( $(date +%s%3N) - t0 )) ms under kills"

# Wait until every run finished, asking any live replica.
all_done() {
    local u body
    for u in "${URLS[@]}"; do
        body=$(curl -s -m 5 "$u/v1/runs?state=succeeded&limit=1000" 2>/dev/null) || continue
        [ -n "$body" ] || continue
        n=$(printf '%s' "$body" | lua5.4 -e 'local ok, d = pcall(require("cjson").decode, io.read("a")); print(ok and d.runs and #d.runs or -1)') || true
        [ "$n" -ge 0 ] || continue
        echo "$n" >"$TMPD/succeeded"
        [ "$n" -ge "$N_RUNS" ]
        return
    done
    return 1
}
poll_until "$DONE_WAIT" all_done && ok "every run succeeded ($(( $(date +%s%3N) - t0 )) ms from the first start)" ||
    fail "only $(cat "$TMPD/succeeded" 2>/dev/null || echo ?) of $N_RUNS runs succeeded"
touch "$TMPD/stop-killer"
wait "$KILLER" 2>/dev/null || true
kills=$(cat "$TMPD/kills" 2>/dev/null || echo 0)
[ "$kills" -ge 10 ] && ok "$kills replicas were killed (-9) and restarted meanwhile" || fail "only $kills kills"
[ -s "$TMPD/killer.log" ] && fail "$(cat "$TMPD/killer.log")"
for i in 0 1 2; do kill -0 "$(cat "$TMPD/pid.$i")" 2>/dev/null || start_at "$i" || fail "replica $i did not restart"; done
# Starts retried elsewhere with the same request key made no second run.
expect_eq "one run per start (request keys)" "$(printf '%s\n' "${ids[@]}" | sort -u | wc -l)" "$N_RUNS"
curl -s -m 5 "${URLS[0]}/v1/runs?limit=1000" -o "$TMPD/body"
expect_eq "the store holds exactly the $N_RUNS runs" "$(jget 'len(d.runs)')" "$N_RUNS"
for u in "${URLS[@]}"; do
    curl -s -m 5 "$u/v1/runs?state=failed&limit=10" -o "$TMPD/body"
    expect_eq "no failed run (seen from $u)" "$(jget 'len(d.runs)')" 0
done

B=$E; req GET /emulator/stats >/dev/null
expect_eq "every job created once" "$(not_once jobs_created_by_name)" 0
# A post-mortem for a name created twice: what each replica logged about it.
for name in $(jget "(function() local o={} for k,v in pairs(d.jobs_created_by_name or {}) do if v ~= 1 then o[#o+1]=k end end return table.concat(o,' ') end)()"); do
    echo "--- $name, in the replicas' logs:" >&2
    grep -h -F "$name" "$TMPD"/r*.err >&2 || true
done
# The truth on Dataflow's side: every job it ran ended DONE.
B=$E; req GET /emulator/jobs >/dev/null
expect_eq "every job the emulator ran ended DONE" "$(jget 'count(d.jobs, function(j) return j.currentState ~= "JOB_STATE_DONE" end)')" 0
B=$E; req GET /emulator/stats >/dev/null
if [ "${SLUICE_TEST_STORE:-}" = firestore ]; then
    # The succeeded steps with a job, from the API (the runs' steps) instead of SQL.
    steps=0
    for id in $(printf '%s\n' "${ids[@]}" | sort -u); do
        curl -s -m 5 "${URLS[0]}/v1/runs/$id" -o "$TMPD/run"
        n=$(python3 -c 'import json,sys; d=json.load(sys.stdin); d=d.get("run", d); print(sum(1 for s in d.get("steps", []) if s.get("job_name") and s.get("state") == "succeeded"))' <"$TMPD/run")
        steps=$((steps + n))
    done
else
    steps=$(psql "$PG_URL" -Atc "SELECT count(*) FROM steps WHERE job_name IS NOT NULL AND state = 'succeeded'")
fi
expect_eq "one job for each launched step of the $N_RUNS runs ($steps)" "$(jget 'len(d.jobs_created_by_name)')" "$steps"
[ "$steps" -ge $((N_RUNS * 3)) ] || fail "only $steps launched steps"
dups=$(not_once launches_by_name)
echo "launch requests sent more than once (each answered by Dataflow's name check, no second job): $dups"
finish
