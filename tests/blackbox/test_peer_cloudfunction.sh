#!/usr/bin/env bash
# test_peer_cloudfunction: the benchmark's Cloud Function peer (bench/peers/cloudfunction) still works, so
# `make bench` cannot compare against a peer that silently rotted. The emulator and the peer under gunicorn
# (as bench/compare.sh runs it, sleep off): a finished my-job-1 job's "Worker pool stopped." push makes the
# peer launch my-job-2--<epoch second> with trigger_my_job_2's parameters; a foreign job's push and the
# job's other message ("Executing success step") launch nothing. Nothing leaves 127.0.0.1.
source "$(dirname "$0")/emu_lib.sh"
PEER_DIR="${SLUICE_SRC:?}/bench/peers/cloudfunction"
[ -x /usr/bin/gunicorn ] || { echo "FAIL: /usr/bin/gunicorn missing (scripts/deps.sh installs gunicorn, python3-flask, python3-googleapi)" >&2; exit 1; }

emu_start emu --no-auth --pending-ms 50 --running-ms 300
E=$B
port=$(/usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
P="http://127.0.0.1:$port"
(cd "$PEER_DIR" && PEER_DATAFLOW_URL=$E PEER_SLEEP_S=0 exec /usr/bin/gunicorn -c gunicorn.conf.py \
    -b "127.0.0.1:$port" main:app) >"$TMPD/peer.out" 2>"$TMPD/peer.err" &
EMU_PIDS+=($!)
peer_up() { curl -sf -o /dev/null "$P/"; }
poll_until 15 peer_up || { cat "$TMPD/peer.err" >&2; echo "FAIL: peer not answering" >&2; exit 1; }
ok "peer answers under gunicorn"

expect_eq "push to the peer" "$(req POST /emulator/config "{\"events\": {\"push_url\": \"$P/\"}, \"jobs\": [{\"match\": \"my-job-2--*\", \"running_ms\": 600000}]}")" 200
launch() { # NAME -> status
    req POST /v1b3/projects/my-project/locations/europe-west4/flexTemplates:launch \
        "{\"launchParameter\": {\"jobName\": \"$1\", \"containerSpecGcsPath\": \"gs://b/$1.json\"}}"
}
expect_eq "launch my-job-1" "$(launch my-job-1--smoke)" 200
expect_eq "launch a foreign job" "$(launch someone-elses--smoke)" 200

next_launched() { req GET /emulator/jobs >/dev/null; [ "$(jget 'count(d.jobs, function(j) return j.name:match("^my%-job%-2%-%-%d+$") end)')" = 1 ]; }
poll_until 15 next_launched || fail "no my-job-2--<epoch> job on the emulator ($(jget 'map(d.jobs, function(j) return j.name end)'))"
expect_eq "its template" "$(jget 'filter(d.jobs, function(j) return j.name:match("^my%-job%-2") end)[1].templatePath')" \
    gs://my-bucket/my-job-2/python_command_spec.json
req GET /emulator/launches >/dev/null
params='filter(d.launches, function(l) return l.body.launchParameter.jobName:match("^my%-job%-2") end)[1].body.launchParameter.parameters'
expect_eq "its parameters" "$(jget "$params.my_job_2_param_1 .. ' ' .. $params.setup_file .. ' ' .. len($params)")" \
    "value_1 /dataflow/template/setup.py 2"
# both finished jobs' pushes were delivered (two messages each) and acknowledged
stats_ok() { req GET /emulator/stats >/dev/null; [ "$(jget 'd.deliveries.push.delivered')" -ge 4 ]; }
poll_until 10 stats_ok || fail "pushes not all delivered: $(jget 'd.deliveries.push')"
expect_eq "no delivery failed" "$(jget 'd.deliveries.push.failed_attempts or 0')" 0
expect_eq "launches: my-job-1, the foreign job and one my-job-2" "$(jget 'len(d.launches_by_name)')" 3
# ...and after every push was answered, still one my-job-2 job on the emulator (not only one name)
req GET /emulator/jobs >/dev/null
expect_eq "one my-job-2 job in the end" "$(jget 'count(d.jobs, function(j) return j.name:match("^my%-job%-2%-%-%d+$") end)')" 1
finish
