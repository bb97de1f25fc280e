#!/usr/bin/env bash
# test_serve_reload_labels: issue 23: sluice_launches_total labels a launch with its own run's workflow and step,
# which the engine puts on the launch request. It used to look the job name up again in the current workflow
# set, so a run still on a version a reload retired was counted under the new version's step name, and one of a
# workflow the reload removed under workflow="unknown". Two runs launch their first step under version 1; a
# reload renames gamma's second step (same job name) and removes delta; both runs then launch their second
# step, which /metrics must count as gamma/B and delta/B. The second steps' parameter functions run in the
# engine after the reload: sluice_lua_call_seconds counts them.
source "$(dirname "$0")/serve_lib.sh"
WD="$TMPD/wf"
mkdir -p "$WD"

two_steps() { # NAME SECOND: A (a long job) -> SECOND, whose job name is NAME-b and which has a parameter function
    cat <<LUA
function params_$1() return { at = "second" } end
return {
  name = "$1", project = "p", region = "europe-west1", start = "A",
  steps = {
    A = { job_name = "$1-a", template = "gs://bkt/a.json", next = "$2" },
    $2 = { job_name = "$1-b", template = "gs://bkt/b.json", ["function"] = "params_$1" },
  },
}
LUA
}
two_steps gamma B >"$WD/gamma.lua"
two_steps delta B >"$WD/delta.lua"
emu_start emu --write-credentials "$TMPD/creds" --pending-ms 50 --running-ms 200 \
    --config <(echo '{"jobs": [{"match": "*-a--*", "running_ms": 600000}]}')
E=$B
serve_start srv --workflows "$WD" --store "$TMPD/l.db" --dataflow-url "$E" --no-auth --no-watch \
    --credentials "$TMPD/creds/service-account.json" --poll-interval 200ms

start() { curl -s -X POST -H 'Content-Type: application/json' -d "{\"workflow\":\"$1\"}" "$S/v1/runs" >"$TMPD/start.json"
          lua5.4 -e 'local d = require("cjson").decode(io.read("a")) print((d.run or {}).id or "none")' <"$TMPD/start.json"; }
run_field() { sget "/v1/runs/$1" >/dev/null; jget "d.run.$2"; }
step_state() { sget "/v1/runs/$1" >/dev/null; jget "(filter(d.run.steps, function(s) return s.name == '$2' end)[1] or {}).state"; }
first_running() { [ "$(step_state "$1" A)" = running ]; }
metrics() { curl -s "$S/metrics" >"$TMPD/metrics.txt"; }
lua_ok() { metrics; awk '$1 == "sluice_lua_call_seconds_count{outcome=\"ok\"}" {print $2}' "$TMPD/metrics.txt"; }

rg=$(start gamma)
rd=$(start delta)
poll_until 20 first_running "$rg" && poll_until 20 first_running "$rd" && ok "both runs launched their first step" \
    || fail "first steps not running: gamma $(step_state "$rg" A), delta $(step_state "$rd" A)"

# the reload: gamma's second step is renamed (its job name stays), delta is removed
two_steps gamma Last >"$WD/gamma.lua"
rm "$WD/delta.lua"
expect_eq "reload" "$(curl -s -o /dev/null -w '%{http_code}' -X POST -H 'Content-Type: application/json' "$S/v1/workflows:reload")" 200
sget /v1/workflows >/dev/null
expect_eq "delta is gone after the reload" "$(jget "len(filter(d.workflows, function(w) return w.name == 'delta' end))")" 0
lua_before=$(lua_ok)

# the first jobs end: each run launches its second step, on its own (retired) version
B=$E
for r in "$rg" "$rd"; do
    sget "/v1/runs/$r" >/dev/null
    job=$(jget "(filter(d.run.steps, function(s) return s.name == 'A' end)[1] or {}).job_id")
    expect_eq "the first job of $r ends" "$(req POST "/emulator/jobs/$job:finish" '{}' -H 'Content-Type: application/json')" 200
done
finished() { [ "$(run_field "$1" state)" = succeeded ]; }
poll_until 30 finished "$rg" && ok "the gamma run finished on its version" || fail "gamma run $rg: $(run_field "$rg" state)"
poll_until 30 finished "$rd" && ok "the removed delta's run finished" || fail "delta run $rd: $(run_field "$rd" state)"

metrics
grep '^sluice_launches_total' "$TMPD/metrics.txt"
grep -q '^sluice_launches_total{workflow="gamma",step="B",outcome="ok"} 1$' "$TMPD/metrics.txt" \
    && ok "the retired version's step is counted under its run's step" || fail "no gamma/B launch counted"
grep -q '^sluice_launches_total{workflow="delta",step="B",outcome="ok"} 1$' "$TMPD/metrics.txt" \
    && ok "the removed workflow's launch is counted under its run's workflow" || fail "no delta/B launch counted"
grep -qE '^sluice_launches_total\{(workflow="unknown"|[^}]*step="(Last|unknown)")' "$TMPD/metrics.txt" \
    && fail "a launch was counted under the current set's names or as unknown" || ok "no launch mislabelled"
lua_after=$(lua_ok)
[ "${lua_after:-0}" -ge $(( ${lua_before:-0} + 2 )) ] 2>/dev/null \
    && ok "the second steps' parameter functions are counted ($lua_before -> $lua_after Lua calls)" \
    || fail "sluice_lua_call_seconds_count{outcome=\"ok\"}: $lua_before -> $lua_after"

serve_stop "$SRV_PID" srv
emu_stop "$EMU_PID"
finish
