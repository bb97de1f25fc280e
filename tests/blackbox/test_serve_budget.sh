#!/usr/bin/env bash
# test_serve_budget: a workflow whose parameter function never returns on its own (a pattern that backtracks for
# hours inside one C call, where Lua's instruction hook never fires) cannot stall `sluice serve`: each such call
# ends with a budget error within the time budget (2 s by default) plus a margin, its step fails with that
# error, and runs of another workflow started at the same time keep advancing and succeed.
source "$(dirname "$0")/serve_lib.sh"
WD="$TMPD/workflows"
mkdir -p "$WD"
cp "${SLUICE_SRC:?}/tests/data/engine/chain.lua" "$WD/"
cat >"$WD/bomb.lua" <<'LUA'
return {
  name = "bomb", project = "p", region = "europe-west1", start = "A",
  steps = {
    A = { job_name = "bomb-a", template = "gs://bkt/a.json",
          ["function"] = function(ctx)
            return { n = tostring(string.rep("a", 3000):find(".-.-.-.-.-x")) }
          end },
  },
}
LUA
emu_start emu --write-credentials "$TMPD/creds" --pending-ms 50 --running-ms 300
E=$B
serve_start srv --workflows "$WD" --store "$TMPD/b.db" --dataflow-url "$E" --no-auth \
    --credentials "$TMPD/creds/service-account.json" --poll-interval 200ms
start() { curl -s -X POST -H 'Content-Type: application/json' -d "{\"workflow\":\"$1\"}" "$S/v1/runs" |
    lua5.4 -e 'print((require("cjson").decode(io.read("a")).run or {}).id or "")'; }
t0=$(date +%s%3N)
bombs=() chains=()
for _ in 1 2; do bombs+=("$(start bomb)"); chains+=("$(start chain)"); done
state_is() { sget "/v1/runs/$1" >/dev/null; [ "$(jget d.run.state)" = "$2" ]; }
all() { local want=$1; shift; for id in "$@"; do state_is "$id" "$want" || return 1; done; }
poll_until 40 all succeeded "${chains[@]}" && ok "the other workflow's runs succeeded" || fail "chains: $(for id in "${chains[@]}"; do sget "/v1/runs/$id" >/dev/null; jget d.run.state; done)"
t1=$(date +%s%3N)
poll_until 20 all failed "${bombs[@]}" && ok "the misbehaving runs failed" || fail "bombs did not fail"
echo "chains done $((t1 - t0)) ms after the starts, with 2 budget kills of 2 s each on the engine thread"
for id in "${bombs[@]}"; do
    sget "/v1/runs/$id" >/dev/null
    jget '(d.run.steps[1] or {}).error' | grep -q "script budget exceeded" && ok "run $id: the step says the budget ran out" \
        || fail "run $id: step error $(jget 'd.run.steps')"
done
kills=$(curl -s "$S/metrics" | awk '$1 == "sluice_lua_call_seconds_count{outcome=\"timeout\"}" {print $2}')
[ "${kills:-0}" -ge 2 ] && ok "$kills budget kills counted" || fail "timeouts not counted: $(curl -s "$S/metrics" | grep lua_call_seconds_count)"
rc=0; kill -TERM "$SRV_PID"; wait "$SRV_PID" || rc=$?
expect_eq "serve exits 0" "$rc" 0
emu_stop "$EMU_PID"
finish
