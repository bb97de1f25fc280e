#!/usr/bin/env bash
# emulator_get: jobs.get throughput of `sluice emulator`.
# Starts the emulator on an ephemeral port (auth on: a token from the metadata endpoint is sent like a real
# client would), creates one job, runs wrk against jobs.get and prints requests/s.
# Usage: [EMU_ARGS="--latency-ms 50"] bench/emulator_get.sh [SLUICE_BIN] [wrk args...]
#        (defaults: build/sluice, -t2 -c64 -d5s; EMU_ARGS are extra emulator flags)
set -euo pipefail
BIN=${1:-${SLUICE_BIN:-$(dirname "$0")/../build/sluice}}
shift || true
WRK_ARGS=("$@")
[ ${#WRK_ARGS[@]} -eq 0 ] && WRK_ARGS=(-t2 -c64 -d5s)
TMPD=$(mktemp -d "${TMPDIR:-/tmp}/emu-bench.XXXXXX")
PID=""
cleanup() { [ -n "$PID" ] && kill "$PID" 2>/dev/null && wait "$PID" 2>/dev/null; rm -rf "$TMPD"; }
trap cleanup EXIT

# shellcheck disable=SC2086
"$BIN" emulator --port 0 --ready-file "$TMPD/ready" --pending-ms 0 --running-ms 3600000 ${EMU_ARGS:-} >"$TMPD/out" 2>"$TMPD/err" &
PID=$!
for _ in $(seq 1 500); do [ -s "$TMPD/ready" ] && break; sleep 0.02; done
B=$(tr -d '\n' <"$TMPD/ready")
TOKEN=$(curl -s -H 'Metadata-Flavor: Google' "$B/computeMetadata/v1/instance/service-accounts/default/token" |
        grep -o '"access_token": *"[^"]*"' | cut -d'"' -f4)
P=/v1b3/projects/bench-project/locations/europe-west4
ID=$(curl -s -H "Authorization: Bearer $TOKEN" -X POST --data-binary \
     '{"launchParameter":{"jobName":"bench-job","containerSpecGcsPath":"gs://bench/spec.json","environment":{"additionalUserLabels":{"bench":"yes"}}}}' \
     "$B$P/flexTemplates:launch" | grep -o '"id": *"[^"]*"' | cut -d'"' -f4)
URL="$B$P/jobs/$ID?view=JOB_VIEW_SUMMARY"
[ "$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $TOKEN" "$URL")" == 200 ] || { echo "setup failed" >&2; exit 1; }
echo "wrk ${WRK_ARGS[*]} -H 'Authorization: Bearer ...' $URL"
wrk "${WRK_ARGS[@]}" -H "Authorization: Bearer $TOKEN" "$URL" | tee "$TMPD/wrk"
RPS=$(awk '/Requests\/sec/ {print $2}' "$TMPD/wrk")
NON2XX=$(awk '/Non-2xx/ {print $5}' "$TMPD/wrk")
echo "jobs.get requests/s: $RPS${NON2XX:+ (non-2xx: $NON2XX)}"
