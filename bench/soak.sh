#!/usr/bin/env bash
# `make soak`: SOAK_SECONDS (default 600) of steady traffic against `sluice serve` and the emulator, then checks
# that nothing leaked and nothing was lost. Usage: bench/soak.sh BUILD_DIR.
#
# Set-up: the emulator (jobs pending 50 ms, running 400 ms; attempt 1 of soak-b fails, so retries happen) sends
# OIDC-signed Pub/Sub pushes *and* Eventarc statusChanged events for every job to `sluice serve` (authentication
# on, 20 % duplicated and 20 % reordered deliveries); serve polls every 5 s.
# Load, from this one shell: a run started every SOAK_INTERVAL seconds (default 0.5), in turn of the shipped
# `example` (3 jobs in a chain) and `daily` (fan-out, join, choice: 5 jobs) workflows and a `soak` workflow (2 jobs, one
# retried); every 5th run cancelled about a second after its start; every 15 s `soak.lua` rewritten and
# `POST /v1/workflows:reload` sent (every 4th time with a syntax error, fixed by the next); API reads and
# foreign-job pushes in between.
# Measured: serve's VmRSS and open fds after the warm-up (max(30 s, a tenth of the time), load running) and at
# the end of the load, sampled every 10 s in between. Pass when:
#   - RSS grew less than 5 % and the fd count by at most SOAK_FD_SLACK (default 2) from start to end;
#   - every run is accounted for: all runs are in a terminal state once the load stopped and they drained (one
#     still running is tolerated only if it started in the last 10 s), none failed, a cancelled one is cancelled
#     (or succeeded when the cancel answered already_finished);
#   - the emulator created exactly one job per job name, and every job it created is a step of one of these
#     runs (and every step's job is one of its jobs);
#   - the emulator gave up on no event delivery (every event was eventually answered 2xx), serve is alive at the
#     end and exits 0 on SIGTERM with no sanitizer report (run it on an ASan build: bench/soak.sh build-asan).
# Exit 0 on pass, 1 on failure. SOAK_KEEP=1 keeps the temp dir (logs, store, dumps).
set -euo pipefail
build=${1:-build}
SL=$(cd "$build" && pwd)/sluice
here=$(cd "$(dirname "$0")" && pwd)
seconds=${SOAK_SECONDS:-600}
interval=${SOAK_INTERVAL:-0.5}
fd_slack=${SOAK_FD_SLACK:-2}
warmup=$((seconds / 10)); [ "$warmup" -ge 30 ] || warmup=30
[ "$seconds" -gt "$warmup" ] || { echo "soak: SOAK_SECONDS must exceed the warm-up ($warmup s)" >&2; exit 2; }
TMPD=$(mktemp -d "${TMPDIR:-/tmp}/soak.XXXXXX")
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
    if [ "${SOAK_KEEP:-0}" = 1 ]; then echo "soak: kept $TMPD"; else rm -rf "$TMPD"; fi
}
trap cleanup EXIT
OPTOK=soak-operator
AUD=sluice-soak
now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }
wait_file() { for _ in $(seq 1 500); do [ -s "$1" ] && return 0; kill -0 "$2" 2>/dev/null || return 1; sleep 0.02; done; return 1; }
api() { curl -s -H "Authorization: Bearer $OPTOK" -H 'Content-Type: application/json' "$@"; }
js() { lua5.4 "$here/soak_account.lua" get "$@"; } # js FILE EXPR: a Lua expression over d = the JSON in FILE

# the emulator
"$SL" emulator --port 0 --ready-file "$TMPD/emu.url" --write-credentials "$TMPD/creds" --seed 11 \
    --pending-ms 50 --running-ms 400 \
    --config <(echo '{"jobs": [{"match": "soak-b--*-1", "outcome": "JOB_STATE_FAILED"}]}') \
    >"$TMPD/emu.out" 2>"$TMPD/emu.err" &
EMU_PID=$!; PIDS+=("$EMU_PID")
wait_file "$TMPD/emu.url" "$EMU_PID" || { cat "$TMPD/emu.err" >&2; echo "soak: emulator did not start" >&2; exit 1; }
E=$(tr -d '\n' <"$TMPD/emu.url")
MD=(-H 'Metadata-Flavor: Google')
sa_email=$(curl -s "${MD[@]}" "$E/computeMetadata/v1/instance/service-accounts/default/email")

# the workflows: the shipped two and `soak`, which the load rewrites
mkdir -p "$TMPD/wf"
cp "$here/../workflows/example.lua" "$here/../workflows/fanout.lua" "$TMPD/wf/"
soak_wf() { # MARK [broken]
    if [ "${2:-}" = broken ]; then printf 'return {\n  name = "soak",\n  steps = { A = { job_name = \n'; return; fi
    cat <<LUA
return {
  name = "soak", project = "p", region = "europe-west1", start = "A",
  steps = {
    A = { job_name = "soak-a", template = "gs://bkt/a.json", parameters = { mark = "$1" }, next = "B" },
    B = { job_name = "soak-b", template = "gs://bkt/b.json", retry = { attempts = 2, backoff = "1s" } },
  },
}
LUA
}
write_soak() { soak_wf "$@" >"$TMPD/wf/soak.lua.tmp" && mv "$TMPD/wf/soak.lua.tmp" "$TMPD/wf/soak.lua"; }
write_soak m0

# sluice serve, authentication on
"$SL" serve --listen 127.0.0.1 --port 0 --ready-file "$TMPD/srv.url" --workflows "$TMPD/wf" \
    --store "$TMPD/soak.db" --dataflow-url "$E" --credentials "$TMPD/creds/service-account.json" \
    --audience "$AUD" --jwks-url "$E/oauth2/v3/certs" --allow-email pubsub-push@emulator.iam.gserviceaccount.com \
    --allow-email "$sa_email" --operator-token "$OPTOK" --poll-interval 5s \
    >"$TMPD/srv.out" 2>"$TMPD/srv.err" &
SRV_PID=$!; PIDS+=("$SRV_PID")
wait_file "$TMPD/srv.url" "$SRV_PID" || { cat "$TMPD/srv.err" >&2; echo "soak: serve did not start" >&2; exit 1; }
S=$(tr -d '\n' <"$TMPD/srv.url")
cfg="{\"events\":{\"push_url\":\"$S/v1/events/pubsub\",\"eventarc_url\":\"$S/v1/events/eventarc\",\"audience\":\"$AUD\",\"duplicate_rate\":0.2,\"reorder_rate\":0.2,\"reorder_ms\":200}}"
[ "$(curl -s -o /dev/null -w '%{http_code}' -X POST --data-binary "$cfg" "$E/emulator/config")" = 200 ] \
    || { echo "soak: emulator config refused" >&2; exit 1; }
token=$(curl -s "${MD[@]}" "$E/computeMetadata/v1/instance/service-accounts/default/identity?audience=$AUD")

rss() { awk '/^VmRSS/ {print $2}' "/proc/$SRV_PID/status"; }
fds() { ls "/proc/$SRV_PID/fd" | wc -l; }
foreign_push() { # a verified push about a job no workflow knows: acknowledged, never recorded
    local le data
    le="{\"resource\":{\"type\":\"dataflow_step\",\"labels\":{\"job_id\":\"2024-05-01_01_02_03-$1\",\"job_name\":\"someone-else--$1\",\"region\":\"europe-west1\",\"project_id\":\"1\"}},\"textPayload\":\"Worker pool stopped.\",\"logName\":\"projects/p/logs/dataflow.googleapis.com%2Fjob-message\"}"
    data=$(printf '%s' "$le" | base64 -w0)
    curl -s -o /dev/null -w '%{http_code}\n' -H "Authorization: Bearer $token" -H 'Content-Type: application/json' \
        --data-binary "{\"message\":{\"data\":\"$data\",\"messageId\":\"foreign-$1\"},\"subscription\":\"s\"}" \
        "$S/v1/events/pubsub" >>"$TMPD/foreign.codes"
}

echo "soak: ${seconds}s against serve $S (pid $SRV_PID) and the emulator $E; warm-up ${warmup}s"
: >"$TMPD/runs.txt"; : >"$TMPD/cancels.txt"; : >"$TMPD/series.txt"; : >"$TMPD/errors.txt"; : >"$TMPD/foreign.codes"
wfs=(example daily soak)
t0=$(now); i=0; reloads=0; broken=0; last_sample=-10; rss0=""; fd0=""; prev2=""; prev1=""
while :; do
    el=$(elapsed "$t0"); el_s=${el%.*}
    [ "$el_s" -ge "$seconds" ] && break
    if ! kill -0 "$SRV_PID" 2>/dev/null; then
        echo "soak: FAIL: serve died at ${el}s; the end of its log:" >&2
        tail -5 "$TMPD/srv.err" >&2
        exit 1
    fi
    i=$((i + 1))
    wf=${wfs[$((i % 3))]}
    code=$(api -o "$TMPD/start.json" -w '%{http_code}' -X POST \
        --data-binary "{\"workflow\":\"$wf\",\"params\":{\"date\":\"2026-11-27\"},\"request_key\":\"soak-$i\"}" "$S/v1/runs")
    if [ "$code" = 201 ]; then
        id=$(js "$TMPD/start.json" d.run.id)
        echo "$id $wf $el" >>"$TMPD/runs.txt"
        prev2=$prev1; prev1=$id
    else
        echo "start $i ($wf): HTTP $code $(cat "$TMPD/start.json")" >>"$TMPD/errors.txt"
    fi
    # cancel the run started two iterations ago (about a second old), every 5th iteration
    if [ $((i % 5)) = 0 ] && [ -n "$prev2" ]; then
        code=$(api -o "$TMPD/cancel.json" -w '%{http_code}' -X POST "$S/v1/runs/$prev2:cancel")
        case "$code" in
            202|200) echo "$prev2 $(js "$TMPD/cancel.json" d.already_finished)" >>"$TMPD/cancels.txt" ;;
            *) echo "cancel $prev2: HTTP $code" >>"$TMPD/errors.txt" ;;
        esac
    fi
    if [ $((i % 10)) = 0 ]; then
        for p in "/v1/runs?limit=20" /v1/workflows /readyz /metrics; do
            code=$(api -o /dev/null -w '%{http_code}' "$S$p")
            [ "$code" = 200 ] || echo "GET $p: HTTP $code" >>"$TMPD/errors.txt"
        done
        foreign_push "$i"
    fi
    # a reload every 15 s; every 4th writes a syntax error that the next one fixes
    if [ "$el_s" -ge $(((reloads + 1) * 15)) ]; then
        reloads=$((reloads + 1))
        if [ $((reloads % 4)) = 0 ]; then write_soak x broken; broken=$((broken + 1)); else write_soak "m$reloads"; fi
        code=$(api -o "$TMPD/reload.json" -w '%{http_code}' -X POST "$S/v1/workflows:reload")
        [ "$code" = 200 ] || echo "reload $reloads: HTTP $code" >>"$TMPD/errors.txt"
    fi
    if [ "$el_s" -ge "$warmup" ] && [ -z "$rss0" ]; then
        rss0=$(rss); fd0=$(fds)
        echo "soak: after warm-up (${el}s, $i runs started): RSS $rss0 kB, $fd0 fds"
    fi
    if [ "$el_s" -ge $((last_sample + 10)) ]; then
        last_sample=$el_s
        echo "$el $(rss) $(fds) $i" >>"$TMPD/series.txt"
    fi
    sleep "$interval"
done
load_end=$(elapsed "$t0")
rss1=$(rss); fd1=$(fds)
echo "soak: load stopped at ${load_end}s after $i runs, $reloads reloads ($broken broken): RSS $rss1 kB, $fd1 fds"

# let the runs finish, then account for every one
drained() {
    for st in pending running cancelling; do
        api -o "$TMPD/d.json" "$S/v1/runs?state=$st&limit=1"
        [ "$(js "$TMPD/d.json" 'len(d.runs)')" = 0 ] || return 1
    done
}
td=$(now)
for _ in $(seq 1 600); do drained && break; sleep 0.1; done
drain_s=$(elapsed "$td")
rss2=$(rss); fd2=$(fds)
echo "soak: runs drained ${drain_s}s after the load; idle: RSS $rss2 kB, $fd2 fds"
: >"$TMPD/runs.jsonl"
while read -r id _; do api "$S/v1/runs/$id"; echo; done <"$TMPD/runs.txt" >"$TMPD/runs.jsonl"
curl -s "$E/emulator/stats" >"$TMPD/stats.json"
curl -s "$S/metrics" >"$TMPD/metrics.txt"
alive=1; kill -0 "$SRV_PID" 2>/dev/null || alive=0
# stop serve as Cloud Run does (SIGTERM): it must exit 0; a sanitized build reports leaks at this exit
srv_rc=0; kill -TERM "$SRV_PID" 2>/dev/null || true; wait "$SRV_PID" || srv_rc=$?
ferr=$(grep -cv '^200$' "$TMPD/foreign.codes" || true)
fn=$(wc -l <"$TMPD/foreign.codes")
san=$(grep -c 'Sanitizer\|runtime error' "$TMPD/srv.err" || true)
lerr=$(grep -c '"level":"error"' "$TMPD/srv.err" || true)

status=0
lua5.4 "$here/soak_account.lua" account "$TMPD/runs.txt" "$TMPD/runs.jsonl" "$TMPD/cancels.txt" "$TMPD/stats.json" \
    "$load_end" || status=1
growth=$(awk -v a="$rss0" -v b="$rss1" 'BEGIN { printf "%.2f", (b - a) * 100 / a }')
echo "soak: RSS ${rss0} -> ${rss1} kB (${growth} %), fds ${fd0} -> ${fd1}; idle after drain ${rss2} kB, ${fd2} fds"
echo "soak: RSS/fd series (s, kB, fds, runs started):"; sed 's/^/    /' "$TMPD/series.txt"
echo "soak: engine: $(grep -E '^sluice_engine_(launches_sent|checks|events_consumed)_total ' "$TMPD/metrics.txt" | tr '\n' ' ')"
echo "soak: events: $(grep -E '^sluice_events_total' "$TMPD/metrics.txt" | sed 's/sluice_events_total//' | tr '\n' ' ')"
echo "soak: reloads: $(grep -E '^sluice_workflow_reloads_total' "$TMPD/metrics.txt" | sed 's/sluice_workflow_reloads_total//' | tr '\n' ' ')"
echo "soak: foreign pushes: $fn sent, $ferr not answered 200; serve error log lines: $lerr; sanitizer reports: $san"
awk -v g="$growth" 'BEGIN { exit !(g < 5) }' && echo "ok: RSS growth ${growth} % < 5 %" || { echo "FAIL: RSS grew ${growth} %"; status=1; }
[ $((fd1 - fd0)) -le "$fd_slack" ] && echo "ok: fd count flat (${fd0} -> ${fd1})" || { echo "FAIL: fds grew ${fd0} -> ${fd1}"; status=1; }
[ -s "$TMPD/errors.txt" ] && { echo "FAIL: API errors during the load:"; head -20 "$TMPD/errors.txt"; status=1; } || echo "ok: every API request of the load answered as expected"
[ "$ferr" = 0 ] && echo "ok: foreign pushes acknowledged" || { echo "FAIL: $ferr foreign pushes not acknowledged"; status=1; }
[ "$alive" = 1 ] && [ "$srv_rc" = 0 ] && [ "$san" = 0 ] && echo "ok: serve alive to the end, exited 0 on SIGTERM, no sanitizer report" \
    || { echo "FAIL: serve died ($alive), exited $srv_rc on SIGTERM, or reported ($san sanitizer lines)"; status=1; }
[ $status = 0 ] && echo "soak: PASS" || echo "soak: FAIL"
exit $status
