# test_emulator_api: the emulated Dataflow REST API: launch shapes, validation errors, one active job per
# name (409), lifecycle with short durations, get/list/paging/views, cancel/drain and "has terminated",
# forced states, the lag window (404 and stale), robustness (404/405/413/garbage), inspection endpoints.
source "$(dirname "$0")/emu_lib.sh"
S=${SLUICE_SRC:-$(dirname "$0")/../..}/tests/data/samples
P=/v1b3/projects/my-project/locations/europe-west4

cat >"$TMPD/cfg.json" <<'JSON'
{"auth": false,
 "job_defaults": {"pending_ms": 200, "running_ms": 700},
 "jobs": [{"match": "fail-*", "pending_ms": 20, "running_ms": 60, "outcome": "JOB_STATE_FAILED"},
          {"match": "stream-*", "streaming": true, "pending_ms": 10, "drain_ms": 50},
          {"match": "slow-*", "pending_ms": 60000},
          {"match": "life-*", "pending_ms": 1500, "running_ms": 2500},
          {"match": "flexrs-*", "queued_ms": 1500, "pending_ms": 0, "running_ms": 60000}],
 "templates": {"missing": ["gs://bucket/missing*"], "required_parameters": {"gs://bucket/needs-input": ["input", "output"]}},
 "list_page_size": 2}
JSON
# Bad invocations exit 2 without starting.
for args in "--bogus" "--port 99999" "--host ::1" "--port" "--config /nonexistent/x.json" "--seed -1"; do
    rc=0; "$SLUICE_BIN" emulator $args >/dev/null 2>&1 || rc=$?
    expect_eq "exit code for: $args" "$rc" 2
done
echo '{"faults":{"jobs.get":{"rate_500":0.7,"rate_503":0.7}}}' >"$TMPD/badcfg.json"
rc=0; "$SLUICE_BIN" emulator --config "$TMPD/badcfg.json" >/dev/null 2>&1 || rc=$?
expect_eq "rates above 1 refused" "$rc" 2
emu_start api --config "$TMPD/cfg.json"
grep -q "^{\"listening\":\"$B\"}\$" "$TMPD/api.out" && ok "listening line" || fail "listening line: $(cat "$TMPD/api.out")"

expect_eq healthz "$(req GET /emulator/healthz)" 200

flex() { # flex NAME [LABELS-JSON] [PATH]
    local labels=${2:-'{"sluice-run":"r1"}'} path=${3:-gs://bucket/spec.json}
    req POST "$P/flexTemplates:launch" "{\"launchParameter\":{\"jobName\":\"$1\",\"containerSpecGcsPath\":\"$path\",\"parameters\":{\"a\":\"b\"},\"environment\":{\"additionalUserLabels\":$labels}}}"
}

# --- Launch: the sample request, response shape ---
expect_eq "flex launch sample" "$(req POST "$P/flexTemplates:launch" @"$S/dataflow-flex-launch-request.json")" 200
cp "$TMPD/body" "$TMPD/launch1"
# The duplicate goes first, while the job is surely still active.
expect_eq "duplicate 409" "$(req POST "$P/flexTemplates:launch" @"$S/dataflow-flex-launch-request.json")" 409
expect_eq "409 status" "$(jget 'd["error"]["status"]')" ALREADY_EXISTS
expect_eq "409 reason" "$(jget 'd.error.errors[1]["reason"]')" alreadyExists
cp "$TMPD/launch1" "$TMPD/body"
ID=$(jget 'd["job"]["id"]')
[[ "$ID" =~ ^[0-9]{4}-[0-9]{2}-[0-9]{2}_[0-9]{2}_[0-9]{2}_[0-9]{2}-[0-9]+$ ]] && ok "job id format" || fail "job id $ID"
expect_eq "launch has no currentState" "$(jget 'd.job.currentState ~= nil')" false
expect_eq "launch epoch time" "$(jget 'd["job"]["currentStateTime"]')" "1970-01-01T00:00:00Z"
expect_eq "launch type" "$(jget 'd["job"]["type"]')" JOB_TYPE_BATCH
expect_eq "launch location" "$(jget 'd["job"]["location"]')" europe-west4

# --- One active job per name (the 409 itself is checked right after the first launch) ---
expect_eq "same name other region" "$(req POST /v1b3/projects/my-project/locations/us-central1/flexTemplates:launch @"$S/dataflow-flex-launch-request.json")" 200

# --- get: views and labels ---
expect_eq "get summary" "$(req GET "$P/jobs/$ID")" 200
expect_eq "summary omits labels" "$(jget 'd.labels ~= nil')" false
expect_eq "get all" "$(req GET "$P/jobs/$ID?view=JOB_VIEW_ALL")" 200
expect_eq "labels returned" "$(jget 'd["labels"]["sluice-step"]')" step2
expect_eq "bad view" "$(req GET "$P/jobs/$ID?view=BOGUS")" 400
expect_eq "get unknown" "$(req GET "$P/jobs/2020-01-01_00_00_00-1")" 404
expect_eq "404 status" "$(jget 'd["error"]["status"]')" NOT_FOUND
expect_eq "get other region" "$(req GET "/v1b3/projects/my-project/locations/asia-east1/jobs/$ID")" 404

# --- lifecycle: PENDING -> RUNNING -> DONE ---
state() { req GET "$P/jobs/$1" >/dev/null; jget 'd.currentState'; }
is_state() { [ "$(state "$1")" == "$2" ]; }
# A dedicated job whose RUNNING phase is long enough to be seen on a loaded machine.
flex life-1 >/dev/null
LIFE=$(jget 'd.job.id')
expect_eq "starts PENDING" "$(state "$LIFE")" JOB_STATE_PENDING
poll_until 10 is_state "$LIFE" JOB_STATE_RUNNING && ok "reaches RUNNING" || fail "never RUNNING"
poll_until 10 is_state "$LIFE" JOB_STATE_DONE && ok "reaches DONE" || fail "never DONE"
poll_until 10 is_state "$ID" JOB_STATE_DONE && ok "first job DONE" || fail "first job never DONE"
expect_eq "name reusable after terminal" "$(req POST "$P/flexTemplates:launch" @"$S/dataflow-flex-launch-request.json")" 200
ID2=$(jget 'd["job"]["id"]')

# --- FlexRS-style QUEUED first ---
flex flexrs-1 >/dev/null
QID=$(jget 'd.job.id')
expect_eq "starts QUEUED" "$(state "$QID")" JOB_STATE_QUEUED
poll_until 10 is_state "$QID" JOB_STATE_RUNNING && ok "QUEUED -> RUNNING" || fail "QUEUED never RUNNING"

# --- failure outcome by rule ---
flex fail-job-1 >/dev/null
FID=$(jget 'd["job"]["id"]')
poll_until 10 is_state "$FID" JOB_STATE_FAILED && ok "rule outcome FAILED" || fail "never FAILED"

# --- cancel / drain ---
flex slow-job-1 >/dev/null
SID=$(jget 'd["job"]["id"]')
expect_eq "cancel" "$(req PUT "$P/jobs/$SID" '{"requestedState":"JOB_STATE_CANCELLED"}')" 200
expect_eq "cancelling" "$(jget 'd["currentState"]')" JOB_STATE_CANCELLING
poll_until 10 is_state "$SID" JOB_STATE_CANCELLED && ok "cancelled" || fail "never CANCELLED"
expect_eq "cancel terminated" "$(req PUT "$P/jobs/$SID" '{"requestedState":"JOB_STATE_CANCELLED"}')" 400
expect_eq "has terminated status" "$(jget 'd["error"]["status"]')" FAILED_PRECONDITION
grep -q "has terminated" "$TMPD/body" && ok "has terminated text" || fail "no 'has terminated'"
expect_eq "drain batch" "$(req PUT "$P/jobs/$ID2" '{"requestedState":"JOB_STATE_DRAINED"}')" 400
expect_eq "bad requestedState" "$(req PUT "$P/jobs/$ID2" '{"requestedState":"JOB_STATE_BOGUS"}')" 400
expect_eq "missing requestedState" "$(req PUT "$P/jobs/$ID2" '{}')" 400
expect_eq "update unknown job" "$(req PUT "$P/jobs/nope" '{"requestedState":"JOB_STATE_CANCELLED"}')" 404

flex stream-job-1 >/dev/null
STID=$(jget 'd["job"]["id"]')
poll_until 10 is_state "$STID" JOB_STATE_RUNNING && ok "streaming RUNNING" || fail "streaming never RUNNING"
req GET "$P/jobs/$STID" >/dev/null
expect_eq "streaming type" "$(jget 'd["type"]')" JOB_TYPE_STREAMING
expect_eq "drain" "$(req PUT "$P/jobs/$STID" '{"requestedState":"JOB_STATE_DRAINED"}')" 200
expect_eq "draining" "$(jget 'd["currentState"]')" JOB_STATE_DRAINING
poll_until 10 is_state "$STID" JOB_STATE_DRAINED && ok "drained" || fail "never DRAINED"

# --- forced state on demand ---
flex stream-job-2 >/dev/null
ST2=$(jget 'd["job"]["id"]')
expect_eq "finish" "$(req POST "/emulator/jobs/$ST2:finish" '{"state":"JOB_STATE_FAILED"}')" 200
expect_eq "forced FAILED" "$(state "$ST2")" JOB_STATE_FAILED
expect_eq "finish unknown" "$(req POST "/emulator/jobs/nope:finish" '{}')" 404

# --- list: filters, name, paging ---
expect_eq "list active" "$(req GET "$P/jobs?filter=ACTIVE")" 200
expect_eq "active is only running/pending" "$(jget 'count(d.jobs, function(j) return j.currentState ~= "JOB_STATE_PENDING" and j.currentState ~= "JOB_STATE_RUNNING" end)')" 0
expect_eq "list by name" "$(req GET "$P/jobs?filter=ALL&name=fail-job-1")" 200
expect_eq "one by name" "$(jget 'len(d["jobs"])')" 1
expect_eq "list empty" "$(req GET "$P/jobs?filter=ACTIVE&name=nobody")" 200
expect_eq "empty list is {}" "$(jget 'd')" "{}"
expect_eq "bad filter" "$(req GET "$P/jobs?filter=SOME")" 400
# page through everything with pageSize 2
seen=0; tok=""; pages=0
while :; do
    req GET "$P/jobs?filter=ALL&pageSize=2${tok:+&pageToken=$tok}" >/dev/null
    n=$(jget 'len(d.jobs)'); seen=$((seen + n)); pages=$((pages + 1))
    tok=$(jget 'd.nextPageToken')
    [ -z "$tok" ] && break
    [ "$pages" -gt 20 ] && break
done
req GET /emulator/jobs >/dev/null
total=$(jget 'count(d.jobs, function(j) return j.location == "europe-west4" end)')
expect_eq "paging covers all jobs" "$seen" "$total"
[ "$pages" -ge 3 ] && ok "several pages ($pages)" || fail "only $pages pages"
expect_eq "bad page token" "$(req GET "$P/jobs?pageToken=garbage")" 400
expect_eq "bad page size" "$(req GET "$P/jobs?pageSize=ten")" 400
expect_eq "list view all" "$(req GET "$P/jobs?name=flexrs-1&view=JOB_VIEW_ALL")" 200
expect_eq "list all has labels" "$(jget 'd.jobs[1].labels["sluice-run"]')" r1
expect_eq "list summary" "$(req GET "$P/jobs?name=flexrs-1")" 200
expect_eq "list summary omits labels" "$(jget 'd.jobs[1].labels == nil')" true

# --- validation ---
expect_eq "bad name uppercase" "$(flex Bad_Name)" 400
expect_eq "bad name trailing dash" "$(flex bad-)" 400
expect_eq "bad name digit first" "$(flex 1bad)" 400
expect_eq "name 1 char ok" "$(flex a)" 200
expect_eq "label key uppercase" "$(flex lbl-1 '{"Key":"v"}')" 400
expect_eq "label key digit" "$(flex lbl-2 '{"1k":"v"}')" 400
expect_eq "label value bad char" "$(flex lbl-3 '{"k":"V!"}')" 400
expect_eq "label value 64" "$(flex lbl-4 "{\"k\":\"$(printf 'a%.0s' $(seq 64))\"}")" 400
expect_eq "label key 64" "$(flex lbl-5 "{\"k$(printf 'a%.0s' $(seq 63))\":\"v\"}")" 400
expect_eq "label value empty ok" "$(flex lbl-6 '{"k":""}')" 200
many="{$(for i in $(seq 0 64); do printf '"k%d":"v",' "$i"; done)\"last\":\"v\"}"
expect_eq "65 labels" "$(flex lbl-7 "$many")" 400
expect_eq "label 400 status" "$(jget 'd["error"]["status"]')" INVALID_ARGUMENT
expect_eq "missing jobName" "$(req POST "$P/flexTemplates:launch" '{"launchParameter":{"containerSpecGcsPath":"gs://b/x"}}')" 400
expect_eq "missing spec path" "$(req POST "$P/flexTemplates:launch" '{"launchParameter":{"jobName":"x"}}')" 400
expect_eq "non-gs path" "$(flex np-1 '{}' /local/file)" 400
expect_eq "unknown field" "$(req POST "$P/flexTemplates:launch" '{"launchParameter":{"jobName":"x","containerSpecGcsPath":"gs://b/x","labels":{"a":"b"}}}')" 400
grep -q 'Unknown name' "$TMPD/body" && ok "unknown name text" || fail "unknown name text"
expect_eq "param not string" "$(req POST "$P/flexTemplates:launch" '{"launchParameter":{"jobName":"x","containerSpecGcsPath":"gs://b/x","parameters":{"n":5}}}')" 400
expect_eq "garbage json" "$(req POST "$P/flexTemplates:launch" '{not json')" 400
expect_eq "garbage status" "$(jget 'd["error"]["status"]')" INVALID_ARGUMENT
expect_eq "garbage code" "$(jget 'd["error"]["code"]')" 400
expect_eq "missing template" "$(flex mt-1 '{}' gs://bucket/missing-spec.json)" 400
expect_eq "required params" "$(flex rp-1 '{}' gs://bucket/needs-input)" 400
expect_eq "violations" "$(jget 'table.concat(map(d.error.details[1].parameterViolations, function(v) return v.parameter end), ",")')" input,output
expect_eq "violations type" "$(jget 'd.error.details[1]["@type"]')" type.googleapis.com/google.dataflow.v1beta3.InvalidTemplateParameters
expect_eq "validateOnly" "$(req POST "$P/flexTemplates:launch" '{"launchParameter":{"jobName":"vo-1","containerSpecGcsPath":"gs://b/x"},"validateOnly":true}')" 200
expect_eq "validateOnly no job" "$(jget 'd.job ~= nil')" false
expect_eq "validateOnly created nothing" "$(req GET "$P/jobs?name=vo-1")" 200
expect_eq "validateOnly list empty" "$(jget 'd')" "{}"

# --- classic templates ---
expect_eq "classic sample" "$(req POST "$P/templates:launch?gcsPath=gs://my-bucket/templates/my-job-3&validateOnly=false" @"$S/dataflow-classic-launch-request.json")" 400
grep -q 'Unknown name .*_query' "$TMPD/body" && ok "classic rejects unknown _query" || fail "classic unknown field"
CL=$(grep -v '"_query"' "$S/dataflow-classic-launch-request.json")
expect_eq "classic launch" "$(req POST "$P/templates:launch?gcsPath=gs://my-bucket/templates/my-job-3" "$CL")" 200
CID=$(jget 'd["job"]["id"]')
expect_eq "classic 409" "$(req POST "$P/templates:launch?gcsPath=gs://my-bucket/templates/my-job-3" "$CL")" 409
req GET "$P/jobs/$CID?view=JOB_VIEW_DESCRIPTION" >/dev/null
expect_eq "classic labels" "$(jget 'd["labels"]["sluice-run"]')" r7f3k2
expect_eq "classic no gcsPath" "$(req POST "$P/templates:launch" "$CL")" 400
expect_eq "classic no tempLocation" "$(req POST "$P/templates:launch?gcsPath=gs://b/t" '{"jobName":"cl-2"}')" 400
expect_eq "classic validateOnly" "$(req POST "$P/templates:launch?gcsPath=gs://b/t&validateOnly=true" '{"jobName":"cl-3","environment":{"tempLocation":"gs://b/tmp"}}')" 200

# --- robustness ---
expect_eq "unknown path" "$(req GET /nothing/here)" 404
expect_eq "unknown dataflow path" "$(req GET "$P/snapshots")" 404
expect_eq "wrong method launch" "$(req GET "$P/flexTemplates:launch")" 405
grep -qi '^Allow: POST' "$TMPD/headers" && ok "Allow header" || fail "Allow header"
expect_eq "wrong method job" "$(req DELETE "$P/jobs/$ID")" 405
head -c 1100000 /dev/zero | tr '\0' 'a' >"$TMPD/big"
expect_eq "body too large" "$(req POST "$P/flexTemplates:launch" @"$TMPD/big")" 413
expect_eq "binary garbage" "$(req POST "$P/flexTemplates:launch" "$(printf '\x01\x02\xff\xfe')")" 400
long=$(printf 'x%.0s' $(seq 3000))
expect_eq "long job id" "$(req GET "$P/jobs/$long")" 404
expect_eq "long project" "$(req GET "/v1b3/projects/$long/locations/r/jobs")" 404
expect_eq "encoded NUL" "$(req GET "$P/jobs/abc%00def")" 404
expect_eq "encoded colon" "$(req POST "$P/flexTemplates%3Alaunch" '{}')" 400
expect_eq "empty segments" "$(req GET "/v1b3/projects//locations//jobs")" 404
expect_eq "array body" "$(req POST "$P/flexTemplates:launch" '[1,2]')" 400
expect_eq "deep nesting" "$(req POST "$P/flexTemplates:launch" "$(printf '[%.0s' $(seq 5000))")" 400
expect_eq "bad form on /token" "$(req POST /token '%%%&&&=')" 400
# Clients that hang up mid-request or mid-body do not hurt it.
printf 'POST %s/flexTemplates:launch HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{"laun' "$P" >"$TMPD/partial"
(exec 3<>/dev/tcp/127.0.0.1/"${B##*:}"; cat "$TMPD/partial" >&3; exec 3>&-) || true
(exec 3<>/dev/tcp/127.0.0.1/"${B##*:}"; printf 'GARBAGE\r\n\r\n' >&3; exec 3>&-) || true
expect_eq "still healthy" "$(req GET /emulator/healthz)" 200

# --- inspection endpoints ---
expect_eq launches "$(req GET /emulator/launches)" 200
expect_eq "first launch recorded" "$(jget 'd.launches[1].body["launchParameter"]["jobName"]')" my-job-2--r7f3k2-1
expect_eq "first outcome" "$(jget 'd.launches[1].outcome')" created
expect_eq "second outcome" "$(jget 'd.launches[2].outcome .. "," .. d.launches[2].status')" rejected,409
expect_eq "classic query recorded" "$(jget 'filter(d.launches, function(l) return l.method == "templates.launch" end)[2].query.gcsPath')" gs://my-bucket/templates/my-job-3
expect_eq stats "$(req GET /emulator/stats)" 200
expect_eq "launches per name" "$(jget 'd["launches_by_name"]["my-job-2--r7f3k2-1"]')" 4
expect_eq "created per name" "$(jget 'd["jobs_created_by_name"]["my-job-2--r7f3k2-1"]')" 3
expect_eq "requests by status" "$(jget 'd["requests"]["flexTemplates.launch"]["409"]')" 1
expect_eq "config get" "$(req GET /emulator/config)" 200
expect_eq "config shows page size" "$(jget 'd["list_page_size"]')" 2
expect_eq "bad config rejected" "$(req POST /emulator/config '{"lag":{"mode":"sometimes"}}')" 400
expect_eq "bad config type" "$(req POST /emulator/config '{"faults":{"jobs.get":{"rate_503":2}}}')" 400
expect_eq "unknown control" "$(req GET /emulator/nope)" 404

# --- API lag: 404 window, then stale window ---
expect_eq "lag on" "$(req POST /emulator/config '{"lag":{"window_ms":3000,"mode":"not_found"},"jobs":[{"match":"lag-*","pending_ms":0,"running_ms":30}]}')" 200
flex lag-job-1 >/dev/null
LID=$(jget 'd["job"]["id"]')
req GET /emulator/jobs >/dev/null
is_done_internally() { req GET /emulator/jobs >/dev/null; [ "$(jget "filter(d.jobs, function(j) return j.id == '$LID' end)[1].currentState")" == JOB_STATE_DONE ]; }
poll_until 10 is_done_internally && ok "lag job done" || fail "lag job not done"
expect_eq "lag 404" "$(req GET "$P/jobs/$LID")" 404
get_ok() { [ "$(req GET "$P/jobs/$LID")" == 200 ]; }
poll_until 10 get_ok && ok "visible after window" || fail "still 404 after window"
expect_eq "after window DONE" "$(jget 'd["currentState"]')" JOB_STATE_DONE
req POST /emulator/config '{"lag":{"window_ms":3000,"mode":"stale"}}' >/dev/null
flex lag-job-2 >/dev/null
LID=$(jget 'd["job"]["id"]')
poll_until 10 is_done_internally && ok "lag job 2 done" || fail "lag job 2 not done"
expect_eq "stale 200" "$(req GET "$P/jobs/$LID")" 200
expect_eq "stale state" "$(jget 'd["currentState"]')" JOB_STATE_RUNNING
is_state_done() { is_state "$LID" JOB_STATE_DONE; }
poll_until 10 is_state_done && ok "fresh after window" || fail "stale forever"

# --- reset ---
expect_eq reset "$(req POST /emulator/reset)" 200
req GET /emulator/jobs >/dev/null
expect_eq "reset clears jobs" "$(jget 'len(d["jobs"])')" 0
req GET /emulator/config >/dev/null
expect_eq "reset restores config" "$(jget 'd["lag"]["window_ms"]')" 0

emu_stop "$EMU_PID"
finish
