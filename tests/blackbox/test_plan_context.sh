#!/usr/bin/env bash
# `sluice plan` hands functions the engine's context (issue 17, findings 13, 14 and 16). Regressions:
#  - plan built ctx.results in a shape of its own: `state` was the Dataflow state and `job_id` a JSON null (a
#    cjson.null userdata in Lua), so a function passing its predecessor's job id on failed; a retry planned with
#    `--state FAILED` saw its own failed attempt as ctx.job and lacked its predecessors' results, and errored where
#    the engine's retry works. The same function as integration.test_engine's test_context_results_shape runs here
#    and must get the same shape, with a placeholder job id that says so;
#  - after a refused launch (`--outcome rejected`) ctx.job was the failed step's job; a refused launch creates
#    none, so the on_failure step's ctx.job is nil, as in the engine;
#  - `plan --after unknown--x-1` exited 0: a job of no step is an error (exit 2) with a message.
set -euo pipefail
: "${SLUICE_BIN:?}" "${SLUICE_SRC:?}"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
T="--time 2024-05-01T12:00:00Z"
cat >"$tmp/cs.lua" <<'LUA'
return {
  name = "cs", project = "p", region = "r", start = "A",
  steps = {
    A = { job_name = "csa", template = "gs://bkt/a", next = "B" },
    B = { job_name = "csb", template = "gs://bkt/b", retry = { attempts = 2, backoff = 1 },
          ["function"] = function(ctx) return { input = ctx.results.A.job_id, from = ctx.job.step,
            st = ctx.results.A.state, js = ctx.results.A.job_state, att = ctx.results.A.attempt,
            own = tostring(ctx.results.B) } end },
  },
}
LUA
# plan_ok FILE ARGS...: plan must exit 0; its JSON lands in $tmp/out.json.
plan_ok() {
  local rc=0
  "$SLUICE_BIN" plan "$@" $T >"$tmp/out.json" 2>"$tmp/err" || rc=$?
  if [ "$rc" -ne 0 ]; then echo "FAIL: plan $*: exit $rc, want 0"; cat "$tmp/out.json" "$tmp/err"; exit 1; fi
}
# check PYTHON-EXPR...: each expression over `out` (the plan's JSON) and `a` (its first action) must hold.
check() {
  python3 - "$tmp/out.json" "$@" <<'PY'
import json, sys
out = json.load(open(sys.argv[1]))
a = out["actions"][0] if out["actions"] else {}
params = a.get("request", {}).get("body", {}).get("launchParameter", {}).get("parameters")
for e in sys.argv[2:]:
    if not eval(e):
        print("FAIL:", e, "\n", json.dumps(out, indent=1)); sys.exit(1)
PY
}
want='{"input": "plan-job-id-of-a", "from": "A", "st": "succeeded", "js": "JOB_STATE_DONE", "att": "1", "own": "nil"}'

# the retry of B: its predecessors as a run has them, not its own failed attempt
plan_ok "$tmp/cs.lua" --after csb--r1-1 --state FAILED
check 'out["outcome"] == "retry"' 'a["step"] == "B" and a["attempt"] == 2 and "error" not in a' "params == $want"
# B after A: the same context
plan_ok "$tmp/cs.lua" --after csa--r1-1
check 'out["outcome"] == "success"' 'a["step"] == "B" and a["attempt"] == 1' "params == $want"
# a job id from the event is the one the function sees
cat >"$tmp/job.json" <<'JSON'
{"id": "2024-05-01_05_00_00-123", "name": "csa--r1-1", "currentState": "JOB_STATE_DONE", "projectId": "p", "location": "r"}
JSON
plan_ok "$tmp/cs.lua" --event "$tmp/job.json"
check 'params["input"] == "2024-05-01_05_00_00-123"'

# on_failure after a refused launch: no job, so the shipped fanout.lua's guard gives "?"; after a failed job, its state
W="$SLUICE_SRC/workflows"
plan_ok "$W/fanout.lua" --after daily-report-quick--r1-1 --state FAILED --outcome rejected
check 'out["outcome"] == "on_failure"' 'params == {"message": "report failed in run r1: ?"}'
plan_ok "$W/fanout.lua" --after daily-report-quick--r1-1 --state FAILED
check 'params == {"message": "report failed in run r1: JOB_STATE_FAILED"}'

# nothing absent is a cjson.null: a hook and a choice see nil
cat >"$tmp/nil.lua" <<'LUA'
return {
  name = "nilcheck", project = "p", region = "r", start = "A",
  steps = {
    A = { job_name = "nca", template = "gs://bkt/a", next = "H" },
    H = { ["function"] = function(ctx)
            return { job_name = type(ctx.job_name), template = type(ctx.template_location), job = type(ctx.job),
                     id = type(ctx.job.id), labels = type(ctx.job.labels), out = type(ctx.results.A.output),
                     err = type(ctx.results.A.error) } end },
  },
}
LUA
plan_ok "$tmp/nil.lua" --after nca--r1-1
check 'a["action"] == "hook"' \
  'a["output"] == {"job_name": "nil", "template": "nil", "job": "table", "id": "string", "labels": "nil", "out": "nil", "err": "nil"}'

# a job that belongs to no step of the workflow: exit 2, a message naming the job names it has, no plan
for after in unknown--x-1 csc--r1-1; do
  rc=0
  "$SLUICE_BIN" plan "$tmp/cs.lua" --after "$after" $T >"$tmp/out" 2>"$tmp/err" || rc=$?
  [ "$rc" -eq 2 ] || { echo "FAIL: plan --after $after: exit $rc, want 2"; cat "$tmp/out" "$tmp/err"; exit 1; }
  grep -qF "sluice plan: job '$after' belongs to no step of workflow 'cs'" "$tmp/err" &&
    grep -qF "launch steps: csa, csb" "$tmp/err" || { echo "FAIL: plan --after $after: $(cat "$tmp/err")"; exit 1; }
  [ ! -s "$tmp/out" ] || { echo "FAIL: plan --after $after printed a plan"; exit 1; }
done
echo "ok"
