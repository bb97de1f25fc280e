#!/usr/bin/env bash
# replicas: `sluice serve` on a PostgreSQL store with one and with three replicas (docs/benchmarks.md,
# "PostgreSQL and replicas"). PostgreSQL 15 from Debian, started here in a temp dir with fsync on.
#  1. recorded pushes (OIDC verified, group-committed to the shared inbox): wrk against every replica at once,
#     64 connections in all, 10 s; requests/s summed, p99 the worst replica's
#  2. launches/s with the emulator answering after 50 ms: 3000 one-step runs, 1 and 3 engines on the store
# Usage: bench/replicas.sh [BUILD_DIR] [SECONDS]
set -euo pipefail
BUILD=${1:-$(dirname "$0")/../build}
SECS=${2:-10}
BIN=$BUILD/sluice
SRC=$(cd "$(dirname "$0")/.." && pwd)
TMPD=$(mktemp -d "${TMPDIR:-/tmp}/replicas-bench.XXXXXX")
PIDS=()
source "$SRC/tests/blackbox/pg_lib.sh"
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done; pg_stop; rm -rf "$TMPD"; }
trap cleanup EXIT
source "$SRC/bench/bench_lib.sh"
PG_FSYNC=on pg_start >/dev/null
bench_emulator
schema() { # a fresh schema of the test database, as a conninfo
    local n="s$RANDOM$RANDOM"
    psql "$PG_URL" -qAtc "CREATE SCHEMA $n" >/dev/null
    echo "$PG_URL options=-csearch_path=$n"
}
push_bench() { # N
    local n=$1 url urls=() i
    url=$(schema)
    for i in $(seq 1 "$n"); do
        SLUICE_LOG_LEVEL=warning "$BIN" serve --listen 127.0.0.1 --port 0 --ready-file "$TMPD/r$n-$i.ready" \
            --workflows "$SRC/workflows" --store "$url" --audience "$AUD" --jwks-url "$E/oauth2/v3/certs" \
            --dataflow-url "$E" --dataflow-no-auth --poll-interval 10m >/dev/null 2>"$TMPD/r$n-$i.err" &
        PIDS+=($!)
        wait_file "$TMPD/r$n-$i.ready"
        urls+=("$(tr -d '\n' <"$TMPD/r$n-$i.ready")")
    done
    local c=$((64 / n)) t=1
    [ "$n" -eq 1 ] && t=2
    local wrks=()
    for i in $(seq 1 "$n"); do
        PUSH_TAG=$i wrk -t$t -c$c -d${SECS}s -s "$SRC/bench/serve_push.lua" "${urls[$((i - 1))]}" -- "$TOKEN" my-job-1 \
            >"$TMPD/wrk$n-$i.out" 2>&1 &
        wrks+=($!)
    done
    for p in "${wrks[@]}"; do wait "$p" || true; done
    local rps=0 p99=0 r q
    for i in $(seq 1 "$n"); do
        r=$(awk '/^Requests\/sec:/ {print $2}' "$TMPD/wrk$n-$i.out")
        q=$(awk '/p99/ {for (i = 1; i <= NF; i++) if ($i == "p99") print $(i + 1)}' "$TMPD/wrk$n-$i.out" | head -1)
        rps=$(awk -v a="$rps" -v b="${r:-0}" 'BEGIN {print a + b}')
        p99=$(awk -v a="$p99" -v b="${q:-0}" 'BEGIN {print (b + 0 > a + 0) ? b : a}')
    done
    local recorded
    recorded=$(psql "$url" -qAtc "SELECT count(*) FROM inbox")
    printf 'recorded pushes, %d replica(s) on PostgreSQL: %.0f requests/s, p99 %s ms (worst replica); %s events in the inbox\n' \
        "$n" "$rps" "$p99" "$recorded"
    cat "$TMPD"/wrk$n-*.out | grep -E "Non-2xx|Socket errors" || true
}
echo "== 1. recorded pushes on PostgreSQL (wrk ${SECS}s, 64 connections in all)"
push_bench 1
for p in "${PIDS[@]:1}"; do kill "$p" 2>/dev/null || true; done
push_bench 3
for p in "${PIDS[@]:1}"; do kill "$p" 2>/dev/null || true; done
echo "== 2. launches/s on PostgreSQL, emulator latency 50 ms, 3000 runs"
"$BUILD/bench_engine" --sluice "$BIN" --mode launch --runs 3000 --store "$(schema)" || [ $? -eq 3 ] # 3: a target missed, printed
"$BUILD/bench_engine" --sluice "$BIN" --mode launch --runs 3000 --store "$(schema)" --engines 3 || [ $? -eq 3 ] # 3: a target missed, printed
