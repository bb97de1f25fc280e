# test_emulator_faults: seeded, replayable fault injection (429 with RetryInfo, 500, 503, dropped
# connections), fixed and random latency served through suspend/resume (200 delayed requests at once), and
# the launch traps: "400 but launched" and "launched but timeout".
source "$(dirname "$0")/emu_lib.sh"
P=/v1b3/projects/my-project/locations/europe-west4
LAUNCH='{"launchParameter":{"jobName":"NAME","containerSpecGcsPath":"gs://b/spec.json"}}'
launch() { req POST "$P/flexTemplates:launch" "${LAUNCH/NAME/$1}" "${@:2}"; }

cat >"$TMPD/faults.json" <<'JSON'
{"auth": false, "job_defaults": {"pending_ms": 60000},
 "faults": {"jobs.get": {"rate_429": 0.15, "rate_500": 0.15, "rate_503": 0.2}}}
JSON

# The status sequence of 40 sequential jobs.get calls.
sequence() {
    local s=""
    for _ in $(seq 1 40); do s+="$(curl -s -o /dev/null -w '%{http_code}' "$B$P/jobs/$1")"; s+=" "; done
    echo "$s"
}

emu_start a --seed 42 --config "$TMPD/faults.json"
A=$EMU_PID
launch job-1 >/dev/null
J1=$(jget 'd.job.id')
S42=$(sequence "$J1")
echo "seed 42: $S42"
for c in 200 429 500 503; do [[ " $S42" == *" $c "* ]] && ok "saw $c" || fail "no $c in sequence"; done
req POST /emulator/reset >/dev/null
req POST /emulator/config "$(cat "$TMPD/faults.json")" >/dev/null
launch job-1 >/dev/null
J1b=$(jget 'd.job.id')
# Job ids start with the creation time; the random digits after it replay.
expect_eq "reset replays the same job id digits" "${J1b##*-}" "${J1##*-}"
expect_eq "reset replays the same faults" "$(sequence "$J1b")" "$S42"
emu_stop "$A"

emu_start b --seed 42 --config "$TMPD/faults.json"
launch job-1 >/dev/null
J2=$(jget 'd.job.id')
expect_eq "same seed, new process: same job id digits" "${J2##*-}" "${J1##*-}"
req GET "$P/jobs" >/dev/null # another method's dice do not disturb jobs.get's stream
expect_eq "same seed, new process: same faults" "$(sequence "$J2")" "$S42"
emu_stop "$EMU_PID"

emu_start c --seed 43 --config "$TMPD/faults.json"
launch job-1 >/dev/null
J3=$(jget 'd.job.id')
S43=$(sequence "$J3")
[ "$S43" != "$S42" ] && ok "other seed, other faults" || fail "seed 43 replayed seed 42"

# --- error shapes ---
req POST /emulator/config '{"faults":{"jobs.get":{"rate_429":1,"rate_500":0,"rate_503":0,"retry_delay_s":7}}}' >/dev/null
expect_eq "429" "$(req GET "$P/jobs/$J3")" 429
expect_eq "429 status" "$(jget 'd.error.status')" RESOURCE_EXHAUSTED
expect_eq "RetryInfo" "$(jget 'd.error.details[1]["@type"] .. " " .. d.error.details[1].retryDelay')" "type.googleapis.com/google.rpc.RetryInfo 7s"
req POST /emulator/config '{"faults":{"jobs.get":{"rate_429":0,"rate_500":1}}}' >/dev/null
expect_eq "500" "$(req GET "$P/jobs/$J3")" 500
expect_eq "500 status" "$(jget 'd.error.status')" INTERNAL
req POST /emulator/config '{"faults":{"jobs.get":{"rate_500":0,"rate_503":1}}}' >/dev/null
expect_eq "503" "$(req GET "$P/jobs/$J3")" 503
expect_eq "503 status" "$(jget 'd.error.status')" UNAVAILABLE
req POST /emulator/config '{"faults":{"jobs.get":{"rate_503":0,"drop_rate":1}}}' >/dev/null
rc=0; curl -s -o /dev/null "$B$P/jobs/$J3" || rc=$?
expect_eq "dropped connection (curl: empty reply)" "$rc" 52
req POST /emulator/config '{"faults":{"jobs.get":{"drop_rate":0}}}' >/dev/null
expect_eq "faults off again" "$(req GET "$P/jobs/$J3")" 200
req GET /emulator/stats >/dev/null
expect_eq "dropped counted" "$(jget 'd.requests["jobs.get"].dropped')" 1
# The control endpoints never fail.
req POST /emulator/config '{"faults":{"default":{"rate_503":1}}}' >/dev/null
expect_eq "default applies to list" "$(req GET "$P/jobs")" 503
expect_eq "control unaffected" "$(req GET /emulator/healthz)" 200
req POST /emulator/config '{"faults":{"default":{"rate_503":0}}}' >/dev/null

# --- latency: 200 concurrent delayed answers must not queue behind two server threads ---
req POST /emulator/config '{"faults":{"default":{"latency_ms":1000}}}' >/dev/null
for i in $(seq 1 200); do echo "url = \"$B$P/jobs/$J3\""; echo "output = /dev/null"; done >"$TMPD/urls"
t0=$(date +%s%N)
codes=$(curl -s -Z --parallel-max 250 -K "$TMPD/urls" -w '%{http_code}\n' 2>/dev/null)
t1=$(date +%s%N)
ms=$(( (t1 - t0) / 1000000 ))
expect_eq "200 delayed answers" "$(grep -c '^200$' <<<"$codes")" 200
[ "$ms" -ge 1000 ] && ok "latency applied (${ms} ms)" || fail "answered too early (${ms} ms)"
[ "$ms" -lt 6000 ] && ok "delays overlap (${ms} ms for 200 x 1000 ms)" || fail "delays serialised (${ms} ms)"
# Clients that give up while their answer is parked: the emulator stays healthy and still stops cleanly.
curl -s -o /dev/null -Z --parallel-max 50 -m 0.3 -K <(head -100 "$TMPD/urls") 2>/dev/null || true
t0=$(date +%s%N); req GET /emulator/healthz >/dev/null; t1=$(date +%s%N)
[ $(( (t1 - t0) / 1000000 )) -lt 900 ] && ok "control endpoints not delayed" || fail "healthz delayed"
req POST /emulator/config '{"faults":{"default":{"latency_ms":0,"slow_rate":1,"slow_ms":400}}}' >/dev/null
t0=$(date +%s%N); req GET "$P/jobs/$J3" >/dev/null; t1=$(date +%s%N)
[ $(( (t1 - t0) / 1000000 )) -ge 400 ] && ok "slow answer" || fail "slow answer too fast"
req POST /emulator/config '{"faults":{"default":{"slow_rate":0}}}' >/dev/null

# --- trap: 400 but launched ---
req POST /emulator/config '{"faults":{"flexTemplates.launch":{"launched_400_rate":1}}}' >/dev/null
expect_eq "400 but launched" "$(launch trap-1)" 400
expect_eq "looks like bad params" "$(jget 'd.error.details[1]["@type"]')" type.googleapis.com/google.dataflow.v1beta3.InvalidTemplateParameters
req GET "$P/jobs?filter=ACTIVE&name=trap-1" >/dev/null
expect_eq "yet the job exists" "$(jget 'len(d.jobs)')" 1
req POST /emulator/config '{"faults":{"flexTemplates.launch":{"launched_400_rate":0}}}' >/dev/null
expect_eq "retry gets 409" "$(launch trap-1)" 409

# --- trap: launched but the answer comes too late (dropped) ---
req POST /emulator/config '{"faults":{"flexTemplates.launch":{"launched_timeout_rate":1,"launched_timeout_ms":1500}}}' >/dev/null
rc=0; curl -s -o /dev/null --max-time 0.5 -X POST --data-binary "${LAUNCH/NAME/trap-2}" "$B$P/flexTemplates:launch" || rc=$?
expect_eq "client timed out" "$rc" 28
req GET "$P/jobs?filter=ACTIVE&name=trap-2" >/dev/null
expect_eq "job created anyway" "$(jget 'len(d.jobs)')" 1
req POST /emulator/config '{"faults":{"flexTemplates.launch":{"launched_timeout_ms":300,"launched_timeout_drop":false}}}' >/dev/null
t0=$(date +%s%N); code=$(launch trap-3); t1=$(date +%s%N)
expect_eq "late answer" "$code" 200
[ $(( (t1 - t0) / 1000000 )) -ge 300 ] && ok "answer was late" || fail "answer not late"
req POST /emulator/config '{"faults":{"flexTemplates.launch":{"launched_timeout_rate":0}}}' >/dev/null
req GET /emulator/launches >/dev/null
expect_eq "launch outcomes" "$(jget 'table.concat(map(filter(d.launches, function(l) return l.body.launchParameter.jobName:find("trap") end), function(l) return l.outcome end), ",")')" \
    "created_answered_400,rejected,created_timeout,created_timeout"
poll_until 10 bash -c "curl -s $B/emulator/stats | grep -q '\"dropped\"'" && ok "timeout drop counted" || fail "drop not counted"

emu_stop "$EMU_PID"
finish
