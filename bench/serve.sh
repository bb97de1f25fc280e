#!/usr/bin/env bash
# serve: benchmarks of `sluice serve` (docs/benchmarks.md, "Server").
#  1. authenticated pushes that must be recorded (OIDC verified, group-committed to the inbox, synchronous=FULL)
#  2. authenticated pushes of foreign jobs (verified, acknowledged, not written)
#  3. process start to /readyz 200 with 100 workflows
#  4. idle RSS
# Tokens come from the emulator's metadata identity endpoint; serve verifies them against the emulator's JWKS.
# Usage: bench/serve.sh [BUILD_DIR] [wrk args...]   (default: build, -t2 -c64 -d10s)
# Environment: ONLY_RECORDED=1 (measurement 1 only), SHOW_HIST=1 (commit, lock-wait and checkpoint histograms),
#   RUNS=N (measurements 1 and 2 N times in a row on the same server, one summary line per run),
#   HOG=1 (a CPU-bound busy loop pinned to CPU 1 competes for the whole benchmark),
#   SERVE_ARGS (extra `sluice serve` options).
set -euo pipefail
BUILD=${1:-$(dirname "$0")/../build}
shift || true
WRK_ARGS=("$@")
[ ${#WRK_ARGS[@]} -eq 0 ] && WRK_ARGS=(-t2 -c64 -d10s)
BIN=$BUILD/sluice
SRC=$(cd "$(dirname "$0")/.." && pwd)
TMPD=$(mktemp -d "${TMPDIR:-/tmp}/serve-bench.XXXXXX")
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done; rm -rf "$TMPD"; }
trap cleanup EXIT
if [ -n "${HOG:-}" ]; then
    taskset -c 1 sh -c 'while :; do :; done' &
    PIDS+=($!)
    echo "== a CPU hog (pid $!) runs on CPU 1"
fi
RUNS=${RUNS:-1}
source "$SRC/bench/bench_lib.sh"

bench_emulator

start_serve() { # NAME WORKFLOWS_DIR [args]
    local name=$1 wf=$2; shift 2
    SLUICE_LOG_LEVEL=${SLUICE_LOG_LEVEL:-warning} "$BIN" serve --listen 127.0.0.1 --port 0 --ready-file "$TMPD/$name.ready" \
        --workflows "$wf" --store "$TMPD/$name.db" --audience "$AUD" --jwks-url "$E/oauth2/v3/certs" \
        --dataflow-url "$E" --dataflow-no-auth --poll-interval 10m "$@" >/dev/null 2>"$TMPD/$name.err" &
    SRV=$!
    PIDS+=("$SRV")
    wait_file "$TMPD/$name.ready"
    S=$(tr -d '\n' <"$TMPD/$name.ready")
}

start_serve push "$SRC/workflows" ${SERVE_ARGS:-}
pressure() { # the machine's CPU and I/O pressure (PSI "some", last 10 s), when the kernel reports it
    local cpu io
    cpu=$(sed -n 's/^some avg10=\([0-9.]*\).*/\1/p' /proc/pressure/cpu 2>/dev/null) || true
    io=$(sed -n 's/^some avg10=\([0-9.]*\).*/\1/p' /proc/pressure/io 2>/dev/null) || true
    [ -n "$cpu" ] && printf ', cpu psi %s%%, io psi %s%%' "$cpu" "$io"
    return 0
}
push_runs() { # JOB_PREFIX: RUNS runs of wrk; with RUNS > 1 one line per run (uptime first)
    local i
    for i in $(seq 1 "$RUNS"); do
        if [ "$RUNS" -eq 1 ]; then
            wrk "${WRK_ARGS[@]}" -s "$SRC/bench/serve_push.lua" "$S" -- "$TOKEN" "$1"
        else
            local out
            out=$(wrk "${WRK_ARGS[@]}" -s "$SRC/bench/serve_push.lua" "$S" -- "$TOKEN" "$1")
            printf 'run %d (load %s%s): %s/s, %s\n' "$i" "$(cut -d' ' -f1 /proc/loadavg)" "$(pressure)" \
                "$(awk '/^Requests\/sec/ {printf "%d", $2}' <<<"$out")" "$(grep '^p50' <<<"$out")"
        fi
    done
}
echo "== 1. recorded pushes: wrk ${WRK_ARGS[*]} -s bench/serve_push.lua (OIDC, unique ids, synchronous=FULL)"
push_runs my-job-1
curl -s "$S/metrics" | grep -E '^sluice_(events_total|inbox_batches_total|inbox_commit_seconds_(sum|count)|engine_events_consumed|store_wal_frames)' || true
[ -n "${SHOW_HIST:-}" ] && curl -s "$S/metrics" | grep -E '^sluice_(inbox_(commit|lock_wait|commit_only|queue_wait)|store_checkpoint)_seconds_(bucket|count|sum)'
[ -n "${ONLY_RECORDED:-}" ] && exit 0
echo "== 2. foreign pushes: wrk ${WRK_ARGS[*]} -s bench/serve_push.lua (OIDC, acknowledged without a write)"
push_runs someone-elses-job
echo "== 4. idle RSS after the load, and of a fresh idle server"
sleep 1
grep VmRSS /proc/$SRV/status
kill -TERM "$SRV"; wait "$SRV" || true

mkdir -p "$TMPD/wf100"
for i in $(seq 1 100); do
    sed -e "s/name = \"example\"/name = \"example$i\"/" -e "s/job_name = \"\([a-z0-9-]*\)\"/job_name = \"w$i-\1\"/" \
        "$SRC/workflows/example.lua" >"$TMPD/wf100/example$i.lua"
done
echo "== 3. process start to /readyz 200 with 100 workflows (5 starts, fresh store each; then 5 on an existing store)"
"$BUILD/bench_serve_start" "$BIN" "$TMPD/wf100" "$TMPD" "$E"
