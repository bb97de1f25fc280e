#!/usr/bin/env bash
# The web UI's runs page through the HTTP API with 100,000 runs in the store: fills a store with bench_ui_runs
# (which also times the store queries in-process), starts `sluice serve --no-auth` on it, and times each query
# the page makes (GET /v1/runs with its filters, limit 25) with curl: median and worst of 20, in milliseconds,
# plus the 304 answer to a poll that carries the page's ETag, and the workflow page's grid
# (GET /v1/workflows/wf0/grid). Usage: bench/ui_runs.sh BUILD_DIR [RUNS] [WORKFLOWS] (WORKFLOWS 1: every run is
# of wf0, so its grid pages through all RUNS).
set -euo pipefail
build=${1:-build}
runs=${2:-100000}
nwf=${3:-5}
here=$(cd "$(dirname "$0")" && pwd)
tmp=$(mktemp -d "${TMPDIR:-/tmp}/bench-ui.XXXXXX")
srv=""
cleanup() { [ -n "$srv" ] && kill "$srv" 2>/dev/null && wait "$srv" 2>/dev/null; rm -rf "$tmp"; }
trap cleanup EXIT
"$build/bench_ui_runs" --store "$tmp/ui.db" --runs "$runs" --workflows "$nwf"
SLUICE_LOG_LEVEL=warning "$build/sluice" serve --no-auth --workflows "$here/../workflows" --store "$tmp/ui.db" \
    --listen 127.0.0.1 --port 0 --ready-file "$tmp/ready" --dataflow-url http://127.0.0.1:9 --dataflow-no-auth \
    --project bench-project 2>"$tmp/serve.err" &
srv=$!
for _ in $(seq 1 500); do [ -s "$tmp/ready" ] && break; sleep 0.02; done
S=$(tr -d '\n' <"$tmp/ready")
probe_job="wf$(( runs / 3 % 5 ))-report--r$(printf '%09d' $(( runs / 3 )))-1"
echo "GET /v1/runs through sluice serve, limit 25, $runs runs (curl time_total; median / worst of 20):"
timeit() { # LABEL QUERY [curl args]
    local label=$1 q=$2; shift 2
    local ts
    ts=$(for _ in $(seq 1 20); do curl -s -o /dev/null -w '%{time_total}\n' "$@" "$S/v1/runs?limit=25$q"; done | sort -n)
    printf '  %-30s median %6.1f ms  worst %6.1f ms\n' "$label" \
        "$(echo "$ts" | sed -n 10p | awk '{print $1 * 1000}')" "$(echo "$ts" | tail -1 | awk '{print $1 * 1000}')"
}
timeit "newest" ""
timeit "state=failed" "&state=failed"
timeit "workflow=wf3" "&workflow=wf3"
timeit "any failed step" "&failed_step=true"
timeit "wf3 + succeeded + failed" "&workflow=wf3&state=succeeded&failed_step=true"
timeit "search: run id prefix" "&q=r0000123"
timeit "search: exact job name" "&q=$probe_job"
timeit "search: job name prefix" "&q=wf2-clean--r00005"
cursor=$(curl -s "$S/v1/runs?limit=1000" | sed 's/.*"next_cursor":"\([^"]*\)".*/\1/')
timeit "page after 1000 runs (cursor)" "&cursor=$cursor"
etag=$(curl -s -D - -o /dev/null "$S/v1/runs?limit=25" | tr -d '\r' | sed -n 's/^[Ee][Tt][Aa][Gg]: //p')
timeit "poll with If-None-Match (304)" "" -H "If-None-Match: $etag"
code=$(curl -s -o /dev/null -w '%{http_code}' -H "If-None-Match: $etag" "$S/v1/runs?limit=25")
echo "  (the poll's status: $code)"
echo "GET /v1/workflows/wf0/grid through sluice serve, limit 25, $(( runs / nwf )) runs of wf0:"
gridit() { # LABEL QUERY
    local label=$1 q=$2 ts
    ts=$(for _ in $(seq 1 20); do curl -s -o /dev/null -w '%{time_total}\n' "$S/v1/workflows/wf0/grid?limit=25$q"; done | sort -n)
    printf '  %-30s median %6.1f ms  worst %6.1f ms\n' "$label" \
        "$(echo "$ts" | sed -n 10p | awk '{print $1 * 1000}')" "$(echo "$ts" | tail -1 | awk '{print $1 * 1000}')"
}
gridit "newest page" ""
gcursor=$(curl -s "$S/v1/workflows/wf0/grid?limit=100" | sed 's/.*"next_cursor":"\([^"]*\)".*/\1/')
gridit "page after 100 runs (cursor)" "&cursor=$gcursor"
