#!/usr/bin/env bash
# test_serve_quota: launches Dataflow refuses for quota wait instead of failing, and the job pool
# (--max-active-jobs) holds launches back, across replicas too. The emulator allows 5 active jobs per project and
# refuses the 6th with a quota error (429 RESOURCE_EXHAUSTED, 403 QUOTA_FOR_INSTANCES, 400 jobs-per-project);
# 50 runs of a one-job workflow start at once. Checks, sampled on the emulator's side: no run fails, never more
# than 5 jobs are active, and each launch after the first five comes within 2 s of the job end that freed its
# slot (the end event wakes the oldest waiting step), and, on one replica, /metrics counts the waits and the wakes.
# Regression: before, a quota refusal failed the step ("launch rejected (HTTP 403)") or was re-sent by the HTTP
# client after up to 32 s of backoff; and the three sluice_engine_pool/quota counters were never exposed.
# $SLUICE_TEST_STORE=firestore (ctest blackbox.test_serve_quota.firestore) runs it on Firestore stores on Google's
# emulator (fs_lib.sh; skipped without gcloud, failed under CI): the 429 round and the pool of one replica, with a
# slot-to-launch bound of 10 s (every hop from a job's end to the next launch is a round trip to the Firestore
# emulator, and the 429 round's retries take turns with it: 1.5-4 s idle, 7.7-8.8 s seen beside other tests). Regression there: the pool and the quota waits failed on Firestore (a WARNING at every job end). Not on
# Firestore yet: three replicas sharing one pool (most runs unfinished after 120 s, ticks losing commit races on
# every replica; a known gap).
source "$(dirname "$0")/serve_lib.sh"
source "$(dirname "$0")/pg_lib.sh"
source "$(dirname "$0")/fs_lib.sh"
trap 'pg_stop; fs_stop; emu_cleanup' EXIT
W="${SLUICE_SRC:?}/tests/blackbox/quota_workflows"
N=50
CODES="429 403 400"
GAP_MS=2000
if [ "${SLUICE_TEST_STORE:-}" = firestore ]; then
    fs_start || { echo "FAIL: cannot start the Firestore emulator (see above)"; exit 1; }
    CODES=429
    GAP_MS=10000
fi
store_url() { # NAME: a fresh store of the test's backend
    if [ "${SLUICE_TEST_STORE:-}" = firestore ]; then echo "$FS_URL-$1"; else echo "$TMPD/$1.db"; fi
}

start_runs() { # BASE: starts N runs at once (in parallel)
    local pids=()
    for i in $(seq 1 $N); do
        curl -s -o /dev/null -X POST -H 'Content-Type: application/json' -d '{"workflow":"burst"}' "$1/v1/runs" &
        pids+=($!)
    done
    wait "${pids[@]}"
}
all_done() { # BASE
    curl -s "$1/v1/runs?limit=1000" -o "$TMPD/body"
    [ "$(jget 'count(d.runs, function(r) return r.state == "succeeded" or r.state == "failed" or r.state == "cancelled" end)')" -ge "$N" ]
}
# The largest gap between a slot freeing (the k-th job end) and the launch that took it (job k + LIMIT), in ms,
# from the emulator's own job times.
slot_gap() { # LIMIT
    B=$E; req GET /emulator/jobs >/dev/null
    lua5.4 - "$TMPD/body" "$1" <<'LUA'
local cjson = require("cjson")
local f = assert(io.open(arg[1])); local d = cjson.decode(f:read("a")); f:close()
local limit = tonumber(arg[2])
local function ms(t) -- RFC 3339 UTC with fraction -> ms
  local y, mo, da, h, mi, s, frac = t:match("(%d+)-(%d+)-(%d+)T(%d+):(%d+):(%d+)%.?(%d*)Z")
  local secs = os.time({year = y, month = mo, day = da, hour = h, min = mi, sec = s, isdst = false})
  return secs * 1000 + math.floor(tonumber("0." .. (frac ~= "" and frac or "0")) * 1000 + 0.5)
end
local starts, ends = {}, {}
for _, j in ipairs(d.jobs) do
  starts[#starts + 1] = ms(j.createTime)
  if j.currentState == "JOB_STATE_DONE" then ends[#ends + 1] = ms(j.currentStateTime) end
end
table.sort(starts); table.sort(ends)
local worst = 0
for k = 1, #ends do
  local s = starts[k + limit]
  if s then worst = math.max(worst, s - ends[k]) end
end
print(worst)
LUA
}

metric() { # BASE NAME: sluice_engine_NAME_total from BASE's /metrics
    curl -s "$1/metrics" | awk -v m="sluice_engine_$2_total" '$1 == m { printf "%d", $2; f = 1 } END { if (!f) print -1 }'
}
check_round() { # TAG BASE EXPECT_QUOTA(1: refusals expected, 0: none allowed) LIMIT
    local tag=$1 base=$2 expect=$3 limit=$4
    poll_until 120 all_done "$base" || fail "$tag: the runs did not finish"
    curl -s "$base/v1/runs?limit=1000" -o "$TMPD/body"
    expect_eq "$tag: $N runs succeeded" "$(jget 'count(d.runs, function(r) return r.state == "succeeded" end)')" "$N"
    B=$E; req GET /emulator/stats >/dev/null
    local max; max=$(jget d.active_jobs.max)
    [ "$max" -le "$limit" ] && [ "$max" -ge 1 ] && ok "$tag: at most $max jobs active at once (limit $limit)" \
        || fail "$tag: $max jobs active at once (limit $limit)"
    expect_eq "$tag: every job created once" "$(not_once jobs_created_by_name)" 0
    B=$E; req GET /emulator/launches >/dev/null
    local refused; refused=$(jget 'count(d.launches, function(l) return l.outcome == "quota" end)')
    if [ "$expect" = 1 ]; then
        [ "$refused" -gt 0 ] && ok "$tag: $refused launches refused for quota, none failed" || fail "$tag: no quota refusal seen"
    else
        expect_eq "$tag: the pool kept every launch within the quota" "$refused" 0
    fi
    if [ "$base" = "$S" ]; then # one replica: its own counters tell how the launches waited
        local waits wakes
        waits=$(metric "$base" "$([ "$expect" = 1 ] && echo quota_refusals || echo pool_waits)")
        wakes=$(metric "$base" pool_wakes)
        [ "$waits" -gt 0 ] && [ "$wakes" -gt 0 ] && ok "$tag: /metrics: $waits waits, $wakes woken by a job's end" \
            || fail "$tag: /metrics: $waits waits, $wakes wakes"
    fi
    local gap; gap=$(slot_gap "$limit")
    [ "$gap" -le $((GAP_MS * TM)) ] && ok "$tag: each launch within $gap ms of its slot freeing" \
        || fail "$tag: a launch came $gap ms after its slot freed"
}

emu_round() { # QUOTA_ERROR: a fresh emulator allowing 5 active jobs
    emu_start "emu-$1" --no-auth --pending-ms 50 --running-ms 500 --max-active-jobs 5
    E=$B
    req POST /emulator/config "{\"quota\":{\"error\":$1}}" >/dev/null
}

# 1. Quota refusals alone (no pool): each shape waits and goes again; the job end that frees a slot wakes a waiter.
for code in $CODES; do
    emu_round "$code"
    serve_start "srv-$code" --workflows "$W" --store "$(store_url "q$code")" --dataflow-url "$E" --no-auth \
        --dataflow-no-auth --project quota-project --poll-interval 10m
    B=$E; req POST /emulator/config "{\"events\":{\"push_url\":\"$S/v1/events/pubsub\"}}" >/dev/null
    start_runs "$S"
    check_round "quota $code" "$S" 1 5
    kill "$SRV_PID"; wait "$SRV_PID" 2>/dev/null || true
    kill "$EMU_PID"; wait "$EMU_PID" 2>/dev/null || true
done

# 2. The pool at the quota: launches beyond it wait in Sluice and are never sent.
emu_round 429
serve_start srv-pool --workflows "$W" --store "$(store_url pool)" --dataflow-url "$E" --no-auth --dataflow-no-auth \
    --project quota-project --poll-interval 10m --max-active-jobs 5
B=$E; req POST /emulator/config "{\"events\":{\"push_url\":\"$S/v1/events/pubsub\"}}" >/dev/null
start_runs "$S"
check_round "pool 5" "$S" 0 5
kill "$SRV_PID"; wait "$SRV_PID" 2>/dev/null || true
kill "$EMU_PID"; wait "$EMU_PID" 2>/dev/null || true

if [ "${SLUICE_TEST_STORE:-}" = firestore ]; then
    echo "note: three replicas sharing one pool are not run on Firestore (a known gap)"
    [ "$FAILS" -eq 0 ] || exit 1
    exit 0
fi

# 3. Three replicas on a shared PostgreSQL store, a pool of 3 (the emulator would allow 5): held across replicas.
pg_start || { echo "FAIL: cannot start PostgreSQL (see above)"; exit 1; }
emu_round 429
bases=()
for r in a b c; do
    serve_start "rep-$r" --workflows "$W" --store "$PG_URL" --dataflow-url "$E" --no-auth --dataflow-no-auth \
        --project quota-project --poll-interval 10m --tick 50ms --max-active-jobs 3
    bases+=("$S")
done
B=$E; req POST /emulator/config "{\"events\":{\"push_url\":\"${bases[0]} ${bases[1]} ${bases[2]}\"}}" >/dev/null
pids=()
for i in $(seq 1 $N); do
    curl -s -o /dev/null -X POST -H 'Content-Type: application/json' -d '{"workflow":"burst"}' "${bases[$((i % 3))]}/v1/runs" &
    pids+=($!)
done
wait "${pids[@]}"
check_round "3 replicas, pool 3" "${bases[0]}" 0 3

[ "$FAILS" -eq 0 ] || exit 1
