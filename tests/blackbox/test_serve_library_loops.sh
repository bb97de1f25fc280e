#!/usr/bin/env bash
# test_serve_library_loops: regression, issue 17 finding 2. Lua library functions that loop inside C without
# calling anything (table.move over a huge range, string.rep of empty pieces) escaped the budget: in a parameter
# function every later POST /v1/runs hung, no run advanced and /readyz still said ready; at a file's top level they
# hung the loader and `sluice validate`. Now the loader starts with such a file reported as an error, `validate`
# answers, the parameter function's call ends with the budget's error (its step fails), string.rep("",
# math.maxinteger) returns "" at once, runs of another workflow advance and succeed meanwhile, and /readyz keeps
# answering (ready: the budget held, so the watchdog has nothing to report).
source "$(dirname "$0")/serve_lib.sh"
M=${SLUICE_TEST_TIMEOUT_MULTIPLIER:-1}
WD="$TMPD/workflows"
mkdir -p "$WD"
cp "${SLUICE_SRC:?}/tests/data/engine/chain.lua" "$WD/"
cat >"$WD/wedge.lua" <<'LUA'
return {
  name = "wedge", project = "p", region = "europe-west1", start = "A",
  steps = {
    A = { job_name = "wedge-a", template = "gs://bkt/a.json",
          ["function"] = function(ctx)
            table.move({}, 1, math.maxinteger - 1, 1, {})
            return { n = "1" }
          end },
  },
}
LUA
cat >"$WD/emptyrep.lua" <<'LUA'
return {
  name = "emptyrep", project = "p", region = "europe-west1", start = "A",
  steps = {
    A = { job_name = "emptyrep-a", template = "gs://bkt/a.json",
          ["function"] = function(ctx) return { n = tostring(#string.rep("", math.maxinteger)) } end },
  },
}
LUA
cat >"$WD/toplevel.lua" <<'LUA'
table.move({}, 1, math.maxinteger - 1, 1, {})
return { name = "toplevel", project = "p", region = "europe-west1", start = "A",
         steps = { A = { job_name = "toplevel-a", template = "gs://bkt/a.json" } } }
LUA

# validate answers (the file's top level is stopped by the budget) instead of hanging
rc=0; timeout $((10 * M)) "$SLUICE_BIN" validate "$WD/toplevel.lua" >"$TMPD/validate.out" 2>&1 || rc=$?
expect_eq "validate of a top-level loop exits 2" "$rc" 2
grep -q "script budget exceeded" "$TMPD/validate.out" && ok "validate says the budget ran out" \
    || fail "validate: $(cat "$TMPD/validate.out")"

emu_start emu --write-credentials "$TMPD/creds" --pending-ms 50 --running-ms 300
E=$B
serve_start srv --workflows "$WD" --store "$TMPD/b.db" --dataflow-url "$E" --no-auth \
    --credentials "$TMPD/creds/service-account.json" --poll-interval 200ms
sget /readyz >/dev/null
jget 'd.workflow_errors' | grep -q "script budget exceeded" && ok "the loader reported the top-level loop" \
    || fail "workflow_errors: $(jget 'd.workflow_errors')"

start() { curl -s -m $((10 * M)) -X POST -H 'Content-Type: application/json' -d "{\"workflow\":\"$1\"}" "$S/v1/runs" |
    lua5.4 -e 'print((require("cjson").decode(io.read("a")).run or {}).id or "")'; }
wedges=() chains=()
for _ in 1 2; do wedges+=("$(start wedge)"); chains+=("$(start chain)"); done
rep=$(start emptyrep)
for id in "${wedges[@]}" "${chains[@]}" "$rep"; do [ -n "$id" ] || fail "a POST /v1/runs got no run"; done
# /readyz answers quickly, and ready, all the while
slow=0 notready=0
for _ in $(seq 1 20); do
    code=$(curl -s -m $((1 * M)) -o "$TMPD/ready" -w '%{http_code}' "$S/readyz") || code=000
    [ "$code" = 000 ] && slow=$((slow + 1))
    [ "$code" = 200 ] || notready=$((notready + 1))
    sleep 0.1
done
expect_eq "/readyz answered within 1 s every time" "$slow" 0
expect_eq "/readyz stayed ready" "$notready" 0
state_is() { sget "/v1/runs/$1" >/dev/null; [ "$(jget d.run.state)" = "$2" ]; }
all() { local want=$1; shift; for id in "$@"; do state_is "$id" "$want" || return 1; done; }
poll_until 40 all succeeded "${chains[@]}" && ok "the other workflow's runs succeeded" \
    || fail "chains: $(for id in "${chains[@]}"; do sget "/v1/runs/$id" >/dev/null; jget d.run.state; done)"
poll_until 20 all succeeded "$rep" && ok "string.rep('', math.maxinteger) returned at once" \
    || fail "emptyrep: $(sget "/v1/runs/$rep" >/dev/null; jget 'd.run')"
poll_until 20 all failed "${wedges[@]}" && ok "the looping runs failed" || fail "wedges did not fail"
for id in "${wedges[@]}"; do
    sget "/v1/runs/$id" >/dev/null
    jget '(d.run.steps[1] or {}).error' | grep -q "script budget exceeded" && ok "run $id: the step says the budget ran out" \
        || fail "run $id: step error $(jget 'd.run.steps')"
done
grep -q "past its" "$TMPD/srv.err" && fail "a call overran its budget: $(grep "past its" "$TMPD/srv.err")"
rc=0; kill -TERM "$SRV_PID"; wait "$SRV_PID" || rc=$?
expect_eq "serve exits 0" "$rc" 0
emu_stop "$EMU_PID"
finish
