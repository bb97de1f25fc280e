#!/usr/bin/env bash
# test_serve_max_runs: a workflow's max_active_runs holds across three replicas on a shared PostgreSQL store. The
# workflow allows 2 runs at once and has one job per run; 20 runs are started at once through the three replicas.
# Checks: every run succeeds, the emulator never sees more than 2 of its jobs active, runs beyond the limit are
# shown pending (queued) meanwhile, and they start in the order they were created.
source "$(dirname "$0")/serve_lib.sh"
source "$(dirname "$0")/pg_lib.sh"
trap 'pg_stop; emu_cleanup' EXIT
W="${SLUICE_SRC:?}/tests/blackbox/quota_workflows"
N=20
pg_start || { echo "FAIL: cannot start PostgreSQL (see above)"; exit 1; }
emu_start emu --no-auth --pending-ms 50 --running-ms 300
E=$B
bases=()
for r in a b c; do
    serve_start "rep-$r" --workflows "$W" --store "$PG_URL" --dataflow-url "$E" --no-auth --dataflow-no-auth \
        --project limit-project --poll-interval 10m --tick 50ms
    bases+=("$S")
done
B=$E; req POST /emulator/config "{\"events\":{\"push_url\":\"${bases[0]} ${bases[1]} ${bases[2]}\"}}" >/dev/null
ids=()
for i in $(seq 1 $N); do # one at a time, so the creation order is known
    id=$(curl -s -X POST -H 'Content-Type: application/json' -d '{"workflow":"limited"}' "${bases[$((i % 3))]}/v1/runs" |
        lua5.4 -e 'print((require("cjson").decode(io.read("a")).run or {}).id or "")')
    ids+=("$id")
done
S=${bases[1]}; sget "/v1/runs?workflow=limited&limit=1000" >/dev/null
queued=$(jget 'count(d.runs, function(r) return r.state == "pending" end)')
[ "$queued" -ge 1 ] && ok "$queued runs wait queued (pending)" || fail "no run waits queued"
all_done() {
    S=${bases[0]}; sget "/v1/runs?workflow=limited&limit=1000" >/dev/null
    [ "$(jget 'count(d.runs, function(r) return r.state == "succeeded" end)')" -ge "$N" ]
}
poll_until 90 all_done && ok "all $N runs succeeded" || fail "runs: $(jget 'map(d.runs, function(r) return r.state end)')"
B=$E; req GET /emulator/stats >/dev/null
max=$(jget d.active_jobs.max)
[ "$max" -le 2 ] && ok "at most $max jobs active at once (max_active_runs 2)" || fail "$max jobs active at once"
expect_eq "every job created once" "$(not_once jobs_created_by_name)" 0
# in order: the jobs were created in the order of their runs (job names end in --<run id>-<attempt>)
B=$E; req GET /emulator/jobs >/dev/null
order=$(jget 'table.concat(map((function() local t = {} for _, j in ipairs(d.jobs) do t[#t+1] = j end table.sort(t, function(a, b) return a.createTime < b.createTime end) return t end)(), function(j) return j.name:match("%-%-(%w+)%-%d+$") end), " ")')
want="${ids[*]}"
# two slots free at once may start in either order: compare pairwise-sorted windows of 2
norm() { echo "$1" | tr ' ' '\n' | awk '{a[NR]=$0} END {for (i = 1; i <= NR; i += 2) { if (i + 1 <= NR && a[i] > a[i+1]) print a[i+1] "\n" a[i]; else { print a[i]; if (i + 1 <= NR) print a[i+1] } }}' | tr '\n' ' '; }
[ "$(norm "$order")" = "$(norm "$want")" ] && ok "queued runs started in the order they were created" ||
    fail "start order: $order, created: $want"
[ "$FAILS" -eq 0 ] || exit 1
