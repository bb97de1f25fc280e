#!/usr/bin/env bash
# The offline CLI end to end: version and help, usage errors (exit 2), validate on good and broken
# directories, graph in both formats, and plan golden tests against tests/data/plan/*.json (compared as
# JSON, not as text) with their exit codes.
set -euo pipefail
: "${SLUICE_BIN:?}" "${SLUICE_SRC:?}"
S="$SLUICE_SRC/tests/data/samples"
W="$SLUICE_SRC/workflows"
G="$SLUICE_SRC/tests/data/plan"
T="--time 2024-05-01T12:00:00Z"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fails=0
n=0

# expect_rc WANT CMD...: runs CMD with stdout/stderr in $tmp/out and $tmp/err and checks its exit status.
expect_rc() {
  local want=$1 rc=0
  shift
  n=$((n + 1))
  "$@" >"$tmp/out" 2>"$tmp/err" || rc=$?
  if [ "$rc" -ne "$want" ]; then
    echo "FAIL: $* exited $rc, want $want"
    echo "--- stdout"; head -c 2000 "$tmp/out"; echo "--- stderr"; head -c 2000 "$tmp/err"
    fails=$((fails + 1))
    return 1
  fi
}

# expect_in FILE TEXT: the fixed string TEXT occurs in FILE.
expect_in() {
  n=$((n + 1))
  if ! grep -qF -- "$2" "$1"; then
    echo "FAIL: '$2' not in $(basename "$1"):"; head -c 2000 "$1"; echo
    fails=$((fails + 1))
  fi
}

# ---- version, help, usage errors ----
expect_rc 0 "$SLUICE_BIN" --version && expect_in "$tmp/out" "sluice 0.1.0"
expect_rc 0 "$SLUICE_BIN" version
expect_rc 0 "$SLUICE_BIN" --help && expect_in "$tmp/out" "commands:"
for cmd in validate plan graph; do
  expect_rc 0 "$SLUICE_BIN" "$cmd" --help && expect_in "$tmp/out" "usage: sluice $cmd"
  expect_rc 0 "$SLUICE_BIN" help "$cmd" && expect_in "$tmp/out" "usage: sluice $cmd"
  expect_rc 2 "$SLUICE_BIN" "$cmd" --no-such-option && expect_in "$tmp/err" "(see 'sluice $cmd --help')"
done
expect_rc 0 "$SLUICE_BIN" version --help
# Regression (issue 17, finding 16): the client commands' --help did not say where the server and the token come
# from. Both forms of help are the same text and name both variables.
for cmd in start status cancel redrive; do
  expect_rc 0 "$SLUICE_BIN" "$cmd" --help && expect_in "$tmp/out" "usage: sluice $cmd" \
    && expect_in "$tmp/out" '$SLUICE_SERVER' && expect_in "$tmp/out" '$SLUICE_OPERATOR_TOKEN'
  cp "$tmp/out" "$tmp/help-flag"
  expect_rc 0 "$SLUICE_BIN" help "$cmd" && n=$((n + 1)) && cmp -s "$tmp/out" "$tmp/help-flag" \
    || { echo "FAIL: 'sluice help $cmd' and 'sluice $cmd --help' differ"; fails=$((fails + 1)); }
done
expect_rc 2 "$SLUICE_BIN"
expect_rc 2 "$SLUICE_BIN" frobnicate && expect_in "$tmp/err" "sluice: unknown command 'frobnicate'"
expect_rc 2 "$SLUICE_BIN" validate && expect_in "$tmp/err" "give at least one file or directory"
expect_rc 2 "$SLUICE_BIN" graph && expect_in "$tmp/err" "give exactly one workflow file"
expect_rc 2 "$SLUICE_BIN" graph --format svg "$W/fanout.lua" && expect_in "$tmp/err" "--format must be mermaid or dot, not 'svg'"
expect_rc 2 "$SLUICE_BIN" plan "$W/example.lua" && expect_in "$tmp/err" "give either --after JOB_NAME or --event FILE"
expect_rc 2 "$SLUICE_BIN" plan "$W/example.lua" --after a --event b
expect_rc 2 "$SLUICE_BIN" plan "$W/example.lua" --after my-job-1 --time yesterday && expect_in "$tmp/err" "--time must be RFC 3339"
expect_rc 2 "$SLUICE_BIN" plan "$W/example.lua" --after my-job-1 --run R_1 && expect_in "$tmp/err" "--run must be lowercase letters and digits, not 'R_1'"
expect_rc 2 "$SLUICE_BIN" plan "$W/example.lua" --after my-job-1 --param novalue && expect_in "$tmp/err" "--param takes k=v, not 'novalue'"
expect_rc 2 "$SLUICE_BIN" plan "$W/example.lua" --event "$tmp/does-not-exist.json"
# Enumerated and numeric flag values are checked (regression: `plan --state BOGUS` planned for a state that does
# not exist and exited 0).
expect_rc 2 "$SLUICE_BIN" plan "$W/example.lua" --after my-job-1--r1-1 --state BOGUS \
  && expect_in "$tmp/err" "--state must be a Dataflow job state (DONE, FAILED, CANCELLED, DRAINED, RUNNING, ...), not 'BOGUS'"
expect_rc 0 "$SLUICE_BIN" plan "$W/example.lua" --after my-job-1--r1-1 --state job_state_cancelled $T
expect_rc 2 "$SLUICE_BIN" graph --format DOT "$W/fanout.lua" && expect_in "$tmp/err" "--format must be mermaid or dot, not 'DOT'"
expect_rc 2 "$SLUICE_BIN" run "$W/example.lua" --poll-interval soon && expect_in "$tmp/err" "--poll-interval takes a duration"
expect_rc 2 "$SLUICE_BIN" serve --no-auth --workflows "$W" --port 80x && expect_in "$tmp/err" "invalid value '80x' for --port"
expect_rc 2 "$SLUICE_BIN" serve --no-auth --workflows "$W" --threads four && expect_in "$tmp/err" "invalid value 'four' for --threads"
expect_rc 2 "$SLUICE_BIN" serve --no-auth --workflows "$W" --writer-priority high && expect_in "$tmp/err" "invalid value 'high' for --writer-priority"
# The environment is checked like the flags (regression: PORT=abc bound an ephemeral port, a bad SLUICE_LEASE was
# ignored, and --grace or --tick past 2^31 ms overflowed).
PORT=abc expect_rc 2 "$SLUICE_BIN" serve --no-auth --workflows "$W" && expect_in "$tmp/err" "invalid value 'abc' for \$PORT"
SLUICE_LEASE=5x expect_rc 2 "$SLUICE_BIN" serve --no-auth --workflows "$W" && expect_in "$tmp/err" "invalid value '5x' for \$SLUICE_LEASE"
expect_rc 2 "$SLUICE_BIN" serve --no-auth --workflows "$W" --grace 30d && expect_in "$tmp/err" "invalid value '30d' for --grace"
expect_rc 2 "$SLUICE_BIN" serve --no-auth --workflows "$W" --tick 30d && expect_in "$tmp/err" "invalid value '30d' for --tick"

# ---- validate ----
expect_rc 0 "$SLUICE_BIN" validate "$W"
expect_in "$tmp/out" "ok $W/example.lua: workflow 'example', 5 steps"
expect_in "$tmp/out" "ok $W/fanout.lua: workflow 'daily', 9 steps"
expect_rc 0 "$SLUICE_BIN" validate --quiet "$W"
[ -s "$tmp/out" ] && { echo "FAIL: validate --quiet printed: $(cat "$tmp/out")"; fails=$((fails + 1)); }
mkdir "$tmp/wf"
cp "$W/example.lua" "$tmp/wf/"
cat >"$tmp/wf/broken.lua" <<'LUA'
return {
  name = "broken",
  region = "europe-west4",
  start = "A",
  steps = {
    A = { job_name = "a", template = "gs://bucket/t.json", nxet = "B" },
  },
}
LUA
printf 'return {\n  name = "syntax"\n  start = "A",\n}\n' >"$tmp/wf/syntax.lua"
expect_rc 2 "$SLUICE_BIN" validate "$tmp/wf"
expect_in "$tmp/out" "ok $tmp/wf/example.lua: workflow 'example', 5 steps"
expect_in "$tmp/err" "$tmp/wf/broken.lua:6: step 'A': unknown field 'nxet'"
expect_in "$tmp/err" "$tmp/wf/syntax.lua:3: '}' expected (to close '{' at line 1) near 'start'"
expect_in "$tmp/err" "2 problems in 3 files"
# two copies of the same workflow: the name and every job name collide
cp "$W/example.lua" "$tmp/wf/copy.lua"
rm "$tmp/wf/broken.lua" "$tmp/wf/syntax.lua"
expect_rc 2 "$SLUICE_BIN" validate "$tmp/wf"
expect_in "$tmp/err" "$tmp/wf/example.lua: workflow name 'example' is also used by $tmp/wf/copy.lua"
# Every problem of a file in one pass, each with its line (regression, issue 8 item 12: the graph checks only ran
# when everything before them passed, so missing next and on_failure targets went unreported; steps declared on one
# line got no line). The same lines are asserted in tests/unit/test_workflow.c (test_bad_twelve_at_once).
V="$SLUICE_SRC/tests/data/validate/twelve.lua"
expect_rc 2 "$SLUICE_BIN" validate "$V"
for want in \
  "9: labels: label key 'Team' is invalid" \
  "16: step 'Ingest': next step 'Missing' does not exist" \
  "18: step 'Ingest': retry.attempts must be between 1 and 100" \
  "24: step 'Clean': on_failure step 'Nowhere' does not exist" \
  "25: step 'Clean': timeout must be a duration" \
  "30: cycle: step 'Report' leads back to 'Clean'" \
  "31: step 'Report': unknown field 'tempalte'" \
  "32: step 'Report': on_cancel must be \"cancel\" or \"drain\"" \
  "34: step 'Notify' has 'timeout' but no template" \
  "35: step 'Orphan' is unreachable from start step 'Ingest'" \
  "35: step 'Pick': next is a function, so list the steps it may return in 'choices'" \
  "35: steps 'Clean' and 'Orphan' share job_name 'clean'"; do
  expect_in "$tmp/err" "$V:$want"
done
expect_in "$tmp/err" "12 problems in 1 file"
n=$((n + 1))
[ "$(grep -c "^$V:[0-9][0-9]*: " "$tmp/err")" -eq 12 ] || { echo "FAIL: not every problem has a line:"; cat "$tmp/err"; fails=$((fails + 1)); }
# What Dataflow refuses outright is refused offline (issue 9): a bucket name Cloud Storage cannot have (regression:
# gs://b/x.json validated, then every launch was refused), and a classic template with no tempLocation anywhere.
cat >"$tmp/refused.lua" <<'LUA'
return {
  name = "refused", project = "p", region = "europe-west4", start = "A",
  steps = {
    A = { job_name = "a", template = "gs://b/x.json", next = "B" },
    B = { job_name = "b", classic_template = "gs://my-bucket/t",
          parameters = { input = "gs://my_bucket-/in" } },
  },
}
LUA
expect_rc 2 "$SLUICE_BIN" validate "$tmp/refused.lua"
expect_in "$tmp/err" "$tmp/refused.lua:4: step 'A': template 'gs://b/x.json': bucket name 'b' is shorter than 3 characters"
expect_in "$tmp/err" "$tmp/refused.lua:5: step 'B': a classic template needs environment.tempLocation (in the workflow's or the step's environment, or returned by a parameter function)"
expect_in "$tmp/err" "$tmp/refused.lua:6: step 'B': parameters.input 'gs://my_bucket-/in': bucket name 'my_bucket-' must start and end with a letter or digit"
expect_in "$tmp/err" "3 problems in 1 file"
mkdir -p "$tmp/empty"
expect_rc 2 "$SLUICE_BIN" validate "$tmp/empty" && expect_in "$tmp/err" "no *.lua workflow files in this directory"
expect_rc 2 "$SLUICE_BIN" validate "$tmp/nowhere"

# ---- validate: notify, failure_handler, deadline (issue 20) ----
# Each broken declaration is reported with its line; a good one passes. notify.on = {} is the empty list (regression:
# Lua's empty table arrived as an object and was reported as "must be a string or a list of strings, not a table").
N="$SLUICE_SRC/tests/data/validate/notify"
expect_rc 0 "$SLUICE_BIN" validate "$N/notify_ok.lua" && expect_in "$tmp/out" "ok $N/notify_ok.lua: workflow 'notify_ok', 2 steps"
expect_rc 2 "$SLUICE_BIN" validate "$N/notify_bad.lua"
for want in \
  "3: deadline must be a positive duration (\"30m\", \"2h\")" \
  "4: notify.pubsub 'projects/p/subscriptions/s' must be projects/PROJECT/topics/TOPIC" \
  "4: notify.webhook 'http://hooks.example.com/x' may use http:// only to a loopback address (else https://)" \
  "5: notify.on: unknown event 'exploded' (started, succeeded, failed, cancelled, recovered, deadline_missed)" \
  "5: unknown notify field 'email' (webhook, pubsub, on)" \
  "7: step 'A': deadline must be a positive duration (\"30m\", \"2h\")" \
  "8: step 'B': a hook has no deadline (it does not wait)"; do
  expect_in "$tmp/err" "$N/notify_bad.lua:$want"
done
expect_in "$tmp/err" "7 problems in 1 file"
expect_rc 2 "$SLUICE_BIN" validate "$N/notify_empty.lua"
expect_in "$tmp/err" "$N/notify_empty.lua:3: notify needs a webhook or a pubsub topic"
expect_in "$tmp/err" "$N/notify_empty.lua:3: notify.on lists no event"
expect_in "$tmp/err" "2 problems in 1 file"
expect_rc 2 "$SLUICE_BIN" validate "$N/handler_bad.lua"
expect_in "$tmp/err" "$N/handler_bad.lua:3: failure_handler step 'Nope' does not exist"
expect_rc 2 "$SLUICE_BIN" validate "$N/handler_start.lua"
expect_in "$tmp/err" "$N/handler_start.lua:3: failure_handler 'A' is the start step"
expect_rc 2 "$SLUICE_BIN" validate "$N/handler_reached.lua"
expect_in "$tmp/err" "$N/handler_reached.lua:3: failure_handler 'H' is also reached from step 'A': it must run only when the run fails"
expect_in "$tmp/err" "$N/handler_reached.lua:3: failure_handler 'H' is also step 'B''s on_failure: it must run only when the run fails"
expect_in "$tmp/err" "$N/handler_reached.lua:7: failure_handler 'H' must have no next, choices or on_failure (it ends the failed run)"
# webhook URLs: https anywhere; http only to a loopback address, and never with credentials or a look-alike host
for url in "https://hooks.example.com/x?k=1" "http://127.0.0.1:8080/h" "http://127.9.9.9/h" "http://localhost/h" "http://[::1]:80/h"; do
  printf 'return { name = "u", project = "p", region = "europe-west4", start = "A", notify = { webhook = "%s" },\n  steps = { A = { job_name = "u-a", template = "gs://my-bucket/t.json" } } }\n' "$url" >"$tmp/u.lua"
  expect_rc 0 "$SLUICE_BIN" validate "$tmp/u.lua"
done
for url in "http://127.0.0.1.evil.example/h" "http://user@127.0.0.1/h" "http://[::2]/h" "ftp://127.0.0.1/h" "https:///h" "http://10.0.0.1/h"; do
  printf 'return { name = "u", project = "p", region = "europe-west4", start = "A", notify = { webhook = "%s" },\n  steps = { A = { job_name = "u-a", template = "gs://my-bucket/t.json" } } }\n' "$url" >"$tmp/u.lua"
  expect_rc 2 "$SLUICE_BIN" validate "$tmp/u.lua" && expect_in "$tmp/err" "$tmp/u.lua:1: notify.webhook '$url'"
done
# serve's own sinks are checked the same way, before it starts
expect_rc 2 "$SLUICE_BIN" serve --notify-webhook http://example.com/x --no-auth --workflows "$N" --store "$tmp/ns.db"
expect_in "$tmp/err" "sluice serve: --notify-webhook 'http://example.com/x' may use http:// only to a loopback address (else https://)"
expect_rc 2 "$SLUICE_BIN" serve --notify-topic projects/p/subscriptions/s --no-auth --workflows "$N" --store "$tmp/ns.db"
expect_in "$tmp/err" "sluice serve: --notify-topic 'projects/p/subscriptions/s' must be projects/PROJECT/topics/TOPIC"
expect_rc 2 "$SLUICE_BIN" serve --notify-on failed,boom --no-auth --workflows "$N" --store "$tmp/ns.db"
expect_in "$tmp/err" "sluice serve: --notify-on 'failed,boom': a comma-separated list of started"

# ---- graph ----
expect_rc 0 "$SLUICE_BIN" graph "$W/fanout.lua"
expect_in "$tmp/out" "flowchart TD"
expect_in "$tmp/out" "  s_join[\"Join<br/>daily-join (join)\"]"
expect_in "$tmp/out" "  s_join -.->|choice| s_fullreport"
expect_in "$tmp/out" "  s_quickreport -->|on failure| s_notifyfailure"
expect_rc 0 "$SLUICE_BIN" graph --format dot "$W/fanout.lua"
expect_in "$tmp/out" "digraph \"daily\" {"
expect_in "$tmp/out" "  \"Ingest\" -> \"CleanOrders\";"
expect_in "$tmp/out" "  \"FullReport\" -> \"NotifyFailure\" [color=red, label=\"on failure\"];"
expect_rc 0 "$SLUICE_BIN" graph --format=mermaid "$W/example.lua"
expect_in "$tmp/out" "  s_step1 --> s_step2"
expect_rc 2 "$SLUICE_BIN" graph "$tmp/nowhere.lua"

# ---- plan golden tests ----
# json_equal GOT WANT: compares two JSON files as data and prints a diff of the sorted forms when they differ.
json_equal() {
  python3 - "$1" "$2" <<'PY'
import json, sys, difflib
got, want = (json.load(open(p)) for p in sys.argv[1:3])
if got != want:
    g, w = (json.dumps(x, indent=1, sort_keys=True).splitlines() for x in (got, want))
    print("\n".join(difflib.unified_diff(w, g, "want", "got", lineterm="")))
    sys.exit(1)
PY
}

# golden NAME RC ARGS...: plan ARGS must exit RC and print JSON equal to tests/data/plan/NAME.json.
golden() {
  local name=$1 rc=$2
  shift 2
  expect_rc "$rc" "$SLUICE_BIN" plan "$@" $T || return 0
  n=$((n + 1))
  if ! json_equal "$tmp/out" "$G/$name.json"; then
    echo "FAIL: plan golden $name differs (plan $*)"
    fails=$((fails + 1))
  fi
}

golden example-after-job1 0 "$W/example.lua" --after my-job-1--r7f3k2-1
golden example-after-job3 0 "$W/example.lua" --after my-job-3--r7f3k2-1
golden example-job1-failed 0 "$W/example.lua" --after my-job-1--r7f3k2-1 --state FAILED
golden example-event-push 0 "$W/example.lua" --event "$S/pubsub-push-wrapped-logentry.json"
golden example-event-eventarc 0 "$W/example.lua" --event "$S/eventarc-dataflow-status-changed.http"
golden fanout-after-ingest 0 "$W/fanout.lua" --after daily-ingest--r1-1
golden fanout-clean-failed 0 "$W/fanout.lua" --after daily-clean-orders--r1-1 --state FAILED
golden fanout-report-failed 0 "$W/fanout.lua" --after daily-report-quick--r1-1 --state FAILED
golden fanout-choice-full 0 "$W/fanout.lua" --after daily-join--r1-1 --param full=true
golden fanout-choice-default 0 "$W/fanout.lua" --after daily-join--r1-1
golden fanout-join-launch 0 "$W/fanout.lua" --after daily-clean-customers--r1-1
# A job that belongs to no step is an error, not a plan (regression, issue 17: it printed "ignored" and exit 0).
expect_rc 2 "$SLUICE_BIN" plan "$W/fanout.lua" --after some-other-job--r1-1 $T &&
    expect_in "$tmp/err" "job 'some-other-job--r1-1' belongs to no step of workflow 'daily'"
[ -s "$tmp/out" ] && { echo "FAIL: plan printed a plan for a job of no step"; fails=$((fails + 1)); }
golden example-after-job1 0 "$W/example.lua" --after my-job-1--r7f3k2-1 --json # docs/operating.md
# retry classes (decide.c): a refused launch is final unless retry.on lists "rejected"; a timeout is retried
golden fanout-clean-rejected 0 "$W/fanout.lua" --after daily-clean-orders--r1-1 --state FAILED --outcome rejected
golden fanout-clean-timeout 0 "$W/fanout.lua" --after daily-clean-orders--r1-1 --state CANCELLED --outcome timeout
expect_rc 2 "$SLUICE_BIN" plan "$W/fanout.lua" --after daily-clean-orders--r1-1 --outcome bogus &&
    expect_in "$tmp/err" "--outcome is timeout, rejected or error, not 'bogus'"

# The launch after my-job-1 is exactly the reference Flex request's launchParameter.
expect_rc 0 "$SLUICE_BIN" plan "$W/example.lua" --after my-job-1--r7f3k2-1 $T
n=$((n + 1))
python3 - "$tmp/out" "$S/dataflow-flex-launch-request.json" <<'PY' || { echo "FAIL: launch body != reference sample"; fails=$((fails + 1)); }
import json, sys
plan, ref = (json.load(open(p)) for p in sys.argv[1:3])
got = plan["actions"][0]["request"]["body"]["launchParameter"]
if got != ref["launchParameter"]:
    print("got ", json.dumps(got, sort_keys=True)); print("want", json.dumps(ref["launchParameter"], sort_keys=True)); sys.exit(1)
PY
# The other events decode to the same finished job; a failed job get (confirmed FAILED) fails the run.
expect_rc 0 "$SLUICE_BIN" plan "$W/example.lua" --event "$S/dataflow-job-get-failed.json" $T
expect_in "$tmp/out" "\"outcome\": \"run-fails\""
expect_rc 0 "$SLUICE_BIN" plan "$W/example.lua" --event "$S/logentry-workflow-failed.json" $T
expect_in "$tmp/out" "\"outcome\": \"run-fails\""
expect_in "$tmp/out" "the state is a hint from a log line"
expect_rc 0 "$SLUICE_BIN" plan "$W/example.lua" --event "$S/pubsub-push-unwrapped-with-metadata.http" $T
expect_in "$tmp/out" "\"outcome\": \"success\""
# A launch response is a pending job, not a finished one (regression, see test_events.c test_launch_response).
expect_rc 0 "$SLUICE_BIN" plan "$W/example.lua" --event "$S/dataflow-flex-launch-response.json" $T
expect_in "$tmp/out" "\"outcome\": \"not-finished\""
# A retry exhausted: attempt 3 of 3 failed and CleanOrders has no on_failure.
expect_rc 0 "$SLUICE_BIN" plan "$W/fanout.lua" --after daily-clean-orders--r1-3 --state FAILED $T
expect_in "$tmp/out" "\"outcome\": \"run-fails\""
# A running job: nothing happens yet.
expect_rc 0 "$SLUICE_BIN" plan "$W/fanout.lua" --after daily-ingest--r1-1 --state RUNNING $T
expect_in "$tmp/out" "\"outcome\": \"not-finished\""
# An irrelevant event file and an invalid workflow are usage errors.
expect_rc 2 "$SLUICE_BIN" plan "$W/example.lua" --event "$S/dataflow-jobs-list-empty.json" $T
expect_rc 2 "$SLUICE_BIN" plan "$tmp/nowhere.lua" --after x $T
# A parameter function that fails makes plan exit 1 with the error in the action.
cat >"$tmp/fails.lua" <<'LUA'
return {
  name = "fails", project = "p", region = "r", start = "A",
  steps = {
    A = { job_name = "a", template = "gs://bucket/a.json", next = "B" },
    B = { job_name = "b", template = "gs://bucket/b.json", ["function"] = function(ctx) error("no input for " .. ctx.job_name) end },
  },
}
LUA
expect_rc 1 "$SLUICE_BIN" plan "$tmp/fails.lua" --after a--r1-1 $T
expect_in "$tmp/out" "no input for b--r1-1"
expect_in "$tmp/out" "\"error\": true"

# ---- sink-filter ----
# The log sink's filter for the shipped workflows: every launch step's job_name + "--", sorted (hooks launch
# nothing), the narrow filter for job ends.
F='resource.type="dataflow_step" AND logName:"dataflow.googleapis.com%2Fjob-message" AND textPayload="Worker pool stopped."'
want="$F AND (resource.labels.job_name:\"al-extract--\" OR resource.labels.job_name:\"al-load--\" OR resource.labels.job_name:\"daily-clean-customers--\" OR resource.labels.job_name:\"daily-clean-orders--\" OR resource.labels.job_name:\"daily-ingest--\" OR resource.labels.job_name:\"daily-join--\" OR resource.labels.job_name:\"daily-notify--\" OR resource.labels.job_name:\"daily-report-full--\" OR resource.labels.job_name:\"daily-report-quick--\" OR resource.labels.job_name:\"my-job-1--\" OR resource.labels.job_name:\"my-job-2--\" OR resource.labels.job_name:\"my-job-3--\")"
expect_rc 0 "$SLUICE_BIN" sink-filter "$W"
n=$((n + 1))
[ "$(cat "$tmp/out")" == "$want" ] || { echo "FAIL: sink-filter $W:"; cat "$tmp/out"; echo "want: $want"; fails=$((fails + 1)); }
# files and directories together: the same prefixes once each
expect_rc 0 "$SLUICE_BIN" sink-filter "$W/example.lua" "$W/fanout.lua" "$W/alerting.lua"
n=$((n + 1))
[ "$(cat "$tmp/out")" == "$want" ] || { echo "FAIL: sink-filter of the two files differs"; fails=$((fails + 1)); }
cp "$tmp/out" "$tmp/filter.txt"
# The filter matches the sample end-of-job LogEntry: each clause holds for it, and its job_name has one prefix.
n=$((n + 1))
python3 - "$tmp/filter.txt" "$S/logentry-worker-pool-stopped.json" <<'PY' || { echo "FAIL: the filter does not match the sample LogEntry"; fails=$((fails + 1)); }
import json, re, sys
flt, entry = open(sys.argv[1]).read().strip(), json.load(open(sys.argv[2]))
exact = dict(re.findall(r'([\w.]+)="([^"]*)"', flt))
has = re.findall(r'([\w.]+):"([^"]*)"', flt)
def field(path):
    v = entry
    for k in path.split("."): v = v[k]
    return v
assert exact == {"resource.type": "dataflow_step", "textPayload": "Worker pool stopped."}, exact
assert all(field(k) == v for k, v in exact.items())
assert ("logName", "dataflow.googleapis.com%2Fjob-message") in has and "dataflow.googleapis.com%2Fjob-message" in field("logName")
prefixes = [v for k, v in has if k == "resource.labels.job_name"]
assert len(prefixes) == 12 and prefixes == sorted(prefixes), prefixes
assert [p for p in prefixes if field("resource.labels.job_name").startswith(p)] == ["my-job-1--"], prefixes
PY
# Regression (issue 17, finding 16): --format terraform printed `filter = ...`, but deploy/terraform's variable is
# sink_filter, so the line did not paste into terraform.tfvars.
expect_rc 0 "$SLUICE_BIN" sink-filter --format terraform "$W/example.lua"
expect_in "$tmp/out" 'sink_filter = "resource.type=\"dataflow_step\" AND logName:\"dataflow.googleapis.com%2Fjob-message\" AND textPayload=\"Worker pool stopped.\" AND (resource.labels.job_name:\"my-job-1--\" OR resource.labels.job_name:\"my-job-2--\" OR resource.labels.job_name:\"my-job-3--\")"'
expect_rc 0 "$SLUICE_BIN" sink-filter --help && expect_in "$tmp/out" "usage: sluice sink-filter"
expect_rc 2 "$SLUICE_BIN" sink-filter && expect_in "$tmp/err" "give at least one file or directory"
expect_rc 2 "$SLUICE_BIN" sink-filter --format yaml "$W" && expect_in "$tmp/err" "--format must be text or terraform"
expect_rc 2 "$SLUICE_BIN" sink-filter --bogus "$W" && expect_in "$tmp/err" "(see 'sluice sink-filter --help')"
expect_rc 2 "$SLUICE_BIN" sink-filter "$tmp/refused.lua" && expect_in "$tmp/err" "bucket name 'b' is shorter than 3 characters"
[ -s "$tmp/out" ] && { echo "FAIL: sink-filter printed a filter for invalid workflows"; fails=$((fails + 1)); }

# ---- stores: a password never printed, reading creates nothing, files 0600 ----
# expect_not_in FILE TEXT: the fixed string TEXT does not occur in FILE.
expect_not_in() {
  n=$((n + 1))
  if grep -qF -- "$2" "$1"; then
    echo "FAIL: '$2' in $(basename "$1"):"; head -c 2000 "$1"; echo
    fails=$((fails + 1))
  fi
}
# Regression (issue 17, finding 5): a PostgreSQL password in --store was printed when the store could not be
# opened (serve, run, status), in the URL form, the keyword form, and libpq's echo of a malformed string.
mkdir -p "$tmp/nowf"
for url in 'postgres://u:S3cretPW@127.0.0.1:1/db' 'host=127.0.0.1 port=1 user=u password=S3cretPW dbname=db' \
           'postgres://u:S3c%zzretPW@127.0.0.1:1/db' 'host=127.0.0.1 port=1 password=S3cret PW'; do
  expect_rc 1 "$SLUICE_BIN" status --store "$url" && expect_in "$tmp/err" "cannot open the store"
  cat "$tmp/out" "$tmp/err" >"$tmp/all"; expect_not_in "$tmp/all" "S3cret"
  expect_rc 1 "$SLUICE_BIN" run "$W/example.lua" --no-auth --project p --store "$url"
  cat "$tmp/out" "$tmp/err" >"$tmp/all"; expect_not_in "$tmp/all" "S3cret"
  expect_rc 1 "$SLUICE_BIN" serve --no-auth --workflows "$tmp/nowf" --listen 127.0.0.1 --port 0 --store "$url"
  cat "$tmp/out" "$tmp/err" >"$tmp/all"; expect_not_in "$tmp/all" "S3cret" && expect_in "$tmp/all" "cannot open the store"
done
# Regression (issue 17, finding 16): `sluice status --store typo.db` created an empty database and exited 0.
(cd "$tmp" && expect_rc 1 "$SLUICE_BIN" status --store typo.db) && expect_in "$tmp/err" "creates none"
n=$((n + 1)); [ ! -e "$tmp/typo.db" ] || { echo "FAIL: status --store created typo.db"; fails=$((fails + 1)); }
: >"$tmp/empty.db"
expect_rc 1 "$SLUICE_BIN" status --store "$tmp/empty.db" && expect_in "$tmp/err" "empty"
# Regression (issue 17, finding 11): the store files were created 0644; the database and its -wal/-shm are 0600.
# umask first, then serve alone in the background: with `umask 022 && serve &` the `&` took both, $! was a subshell's
# pid, and the kill below left serve running after the test.
(umask 022; "$SLUICE_BIN" serve --no-auth --workflows "$tmp/nowf" --listen 127.0.0.1 --port 0 --store "$tmp/mode.db" \
   --ready-file "$tmp/ready" >"$tmp/serve.out" 2>&1 & echo $! >"$tmp/serve.pid"; wait) &
for _ in $(seq 1 1000); do [ -s "$tmp/ready" ] && break; sleep 0.02; done
n=$((n + 1))
for f in "$tmp/mode.db" "$tmp/mode.db-wal" "$tmp/mode.db-shm"; do
  m=$(stat -c %a "$f" 2>/dev/null || echo missing)
  [ "$m" = 600 ] || { echo "FAIL: $(basename "$f") has mode $m, want 600"; fails=$((fails + 1)); }
done
kill -TERM "$(cat "$tmp/serve.pid")"; wait
expect_rc 0 "$SLUICE_BIN" status --store "$tmp/mode.db"

echo "$n checks, $fails failed"
[ "$fails" -eq 0 ]
