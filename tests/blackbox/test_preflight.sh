#!/usr/bin/env bash
# `sluice preflight` against the emulator process: every launch step's request is validated with validateOnly
# (nothing is created); exact output and exit codes for a valid workflow, a missing required parameter (the
# parameter violations one per line), a missing template, a --param the parameter function reads, and usage
# errors. The emulator's templates.required_parameters and templates.missing make Dataflow's 400s.
source "$(dirname "$0")/emu_lib.sh"
W="$SLUICE_SRC/workflows"

# pf ARGS...: runs preflight against the emulator; output in $TMPD/pf.out (Dataflow's random "(hex): " message
# prefix removed) and $TMPD/pf.err; prints the exit code.
pf() {
    local rc=0
    SLUICE_LOG_LEVEL=warning timeout 60 "$SLUICE_BIN" preflight --dataflow-url "$B" \
        --credentials "$TMPD/creds/service-account.json" "$@" >"$TMPD/pf.raw" 2>"$TMPD/pf.err" || rc=$?
    sed -E 's/\([0-9a-f]{16}\): //' "$TMPD/pf.raw" >"$TMPD/pf.out"
    echo "$rc"
}
# expect_out WHAT: $TMPD/pf.out equals stdin.
expect_out() {
    if diff -u - "$TMPD/pf.out" >"$TMPD/diff"; then ok "$1"; else cat "$TMPD/diff" "$TMPD/pf.err"; fail "$1: output differs"; fi
}
# config JSON: a fresh emulator state (reset) with this configuration merged in.
config() {
    [ "$(req POST /emulator/reset)" = 200 ] || fail "emulator reset"
    [ "$(req POST /emulator/config "$1")" = 200 ] || fail "emulator config $1"
}

emu_start pf --write-credentials "$TMPD/creds"

# 1. the shipped example: every launch step valid (the emulator's auth on: a real token is used), nothing created
expect_eq "example valid: exit 0" "$(pf "$W/example.lua" --param date=2024-05-01)" 0
expect_out "example valid: output" <<'OUT'
ok Step1: my-job-1--preflight-1 (gs://my-bucket/my-job-1/python_command_spec.json)
ok Step2: my-job-2--preflight-1 (gs://my-bucket/my-job-2/python_command_spec.json)
ok Step3: my-job-3--preflight-1 (gs://my-bucket/my-job-3/python_command_spec.json)
3 launch steps: 3 valid, 0 refused, 0 not checked
OUT
req GET /emulator/launches >/dev/null
expect_eq "three validateOnly launches" "$(jget 'count(d.launches or d, function(l) return l.outcome == "validated" end)')" 3
req GET /emulator/stats >/dev/null
expect_eq "no job was created" "$(jget 'len(d.jobs_created_by_name)')" 0

# 2. a required parameter missing: the refusal with one line per violation, exit 1
config '{"templates": {"required_parameters": {"gs://my-bucket/my-job-2/*": ["input", "setup_file", "output"]}}}'
expect_eq "missing parameters: exit 1" "$(pf "$W/example.lua")" 1
expect_out "missing parameters: output" <<'OUT'
ok Step1: my-job-1--preflight-1 (gs://my-bucket/my-job-1/python_command_spec.json)
refused Step2 (HTTP 400): 2 parameter violations
  input: Required parameter is missing.
  output: Required parameter is missing.
ok Step3: my-job-3--preflight-1 (gs://my-bucket/my-job-3/python_command_spec.json)
3 launch steps: 2 valid, 1 refused, 0 not checked
OUT

# 3. a missing template, exit 1
config '{"templates": {"missing": ["gs://my-bucket/my-job-3/*"]}}'
expect_eq "missing template: exit 1" "$(pf "$W/example.lua")" 1
expect_out "missing template: output" <<'OUT'
ok Step1: my-job-1--preflight-1 (gs://my-bucket/my-job-1/python_command_spec.json)
ok Step2: my-job-2--preflight-1 (gs://my-bucket/my-job-2/python_command_spec.json)
refused Step3 (HTTP 400): Unable to open template file: gs://my-bucket/my-job-3/python_command_spec.json. Please check that the template file exists and that the caller has permission to read it.
3 launch steps: 2 valid, 1 refused, 0 not checked
OUT

# 4. the run's --param reaches the parameter function; predecessors are assumed succeeded (ctx.job is the
# previous step's job, ctx.results its result, in the engine's shape, with a placeholder job id); a function that
# fails is reported and nothing is sent for it. Regression (issue 17, finding 14): preflight gave ctx.results no
# job_id, so B, whose required parameter is its predecessor's job id, was refused ("Required parameter is
# missing") although a run launches it.
config '{"templates": {"required_parameters": {"gs://my-bucket/in/*": ["input"]}}}'
cat >"$TMPD/params.lua" <<'LUA'
return {
  name = "params", project = "p", region = "europe-west4", start = "A",
  steps = {
    A = { job_name = "a", template = "gs://my-bucket/in/a.json", next = "B",
          ["function"] = function(ctx) return { input = ctx.run.params.input } end },
    B = { job_name = "b", template = "gs://my-bucket/in/b.json", next = "C",
          ["function"] = function(ctx) return { input = ctx.results.A.job_id, seen = ctx.job.name .. "/" ..
            ctx.job.id .. "/" .. ctx.results.A.state .. "/" .. ctx.results.A.job_state } end },
    C = { job_name = "c", template = "gs://my-bucket/c.json",
          ["function"] = function(ctx) error("no date given") end },
  },
}
LUA
expect_eq "params: exit 1" "$(pf "$TMPD/params.lua")" 1
expect_out "params: without --param" <<OUT
refused A (HTTP 400): 1 parameter violation
  input: Required parameter is missing.
ok B: b--preflight-1 (gs://my-bucket/in/b.json)
error C: $TMPD/params.lua:10: no date given
stack traceback:
	[C]: in function 'error'
	$TMPD/params.lua:10: in function <$TMPD/params.lua:10>
	[C]: in ?
3 launch steps: 1 valid, 1 refused, 1 not checked
OUT
pf "$TMPD/params.lua" --param input=gs://my-bucket/x >/dev/null
expect_eq "params: with --param A is valid" "$(head -1 "$TMPD/pf.out")" "ok A: a--preflight-1 (gs://my-bucket/in/a.json)"
req GET /emulator/launches >/dev/null
B_PARAMS='(filter(d.launches or d, function(l) return l.body.launchParameter.jobName == "b--preflight-1" end))[1].body.launchParameter.parameters'
expect_eq "B's input is its predecessor's placeholder job id" "$(jget "$B_PARAMS.input")" "preflight-job-id-of-a"
expect_eq "B sees its predecessor as a run shows it" "$(jget "$B_PARAMS.seen")" \
    "a--preflight-1/preflight-job-id-of-a/succeeded/JOB_STATE_DONE"

# 5. usage errors and invalid workflows: exit 2, nothing sent
expect_eq "no file: exit 2" "$(pf)" 2
grep -qF "sluice preflight: give exactly one workflow file" "$TMPD/pf.err" && ok "no file: message" || fail "no file: $(cat "$TMPD/pf.err")"
expect_eq "bad --param: exit 2" "$(pf "$W/example.lua" --param novalue)" 2
grep -qF "sluice preflight: --param takes k=v, not 'novalue'" "$TMPD/pf.err" && ok "bad --param: message" || fail "bad --param: $(cat "$TMPD/pf.err")"
expect_eq "unknown option: exit 2" "$(pf "$W/example.lua" --frobnicate)" 2
grep -qF "(see 'sluice preflight --help')" "$TMPD/pf.err" && ok "unknown option: message" || fail "unknown option: $(cat "$TMPD/pf.err")"
printf 'return {\n  name = "bad", region = "r", start = "A",\n  steps = { A = { job_name = "a", template = "gs://b/t.json" } },\n}\n' >"$TMPD/bad.lua"
expect_eq "invalid workflow: exit 2" "$(pf "$TMPD/bad.lua")" 2
grep -qF "$TMPD/bad.lua:3: step 'A': template 'gs://b/t.json': bucket name 'b' is shorter than 3 characters" "$TMPD/pf.err" \
    && ok "invalid workflow: the problem with its line" || fail "invalid workflow: $(cat "$TMPD/pf.err")"
[ -s "$TMPD/pf.out" ] && fail "invalid workflow: printed $(cat "$TMPD/pf.out")"
rc=0; "$SLUICE_BIN" preflight --help >"$TMPD/help" || rc=$?
expect_eq "--help: exit 0" "$rc" 0
grep -q "^usage: sluice preflight FILE" "$TMPD/help" && ok "--help: usage" || fail "--help: $(cat "$TMPD/help")"

emu_stop "$EMU_PID"
finish
