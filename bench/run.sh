#!/usr/bin/env bash
# `make bench`: every benchmark, each against a freshly started emulator where it needs one.
# Usage: bench/run.sh BUILD_DIR. Figures and their meaning: docs/benchmarks.md.
set -euo pipefail
build=${1:-build}
here=$(cd "$(dirname "$0")" && pwd)
echo "== workflows: load + validate 100 files; one parameter-function call"
"$build/bench_workflow"
echo "== store: per-operation cost (2000 operations)"
"$build/bench_store" 2000
echo "== emulator: jobs.get with wrk"
"$here/emulator_get.sh" "$build/sluice"
echo "== client: jobs.get, 200 in flight, emulator latency 50 ms, 5 s"
"$build/bench_client" --sluice "$build/sluice" --seconds 5 --inflight 200 --latency-ms 50 --mode get
echo "== client: flex launches, 200 in flight, emulator latency 50 ms, 5 s"
"$build/bench_client" --sluice "$build/sluice" --seconds 5 --inflight 200 --latency-ms 50 --mode launch
echo "== engine: launches/s, emulator answering after 50 ms"
"$build/bench_engine" --sluice "$build/sluice" --mode launch --runs 3000
echo "== engine: 10,000 runs in flight (memory, one reconciler pass)"
"$build/bench_engine" --sluice "$build/sluice" --mode inflight --runs 10000
echo "== engine: job known DONE -> next launch sent, instant emulator"
"$build/bench_engine" --sluice "$build/sluice" --mode overhead --runs 300
echo "== web UI: the runs page's queries with 100,000 runs (store and HTTP)"
"$here/ui_runs.sh" "$build"
if [ -x "$here/serve.sh" ]; then echo "== server"; "$here/serve.sh" "$build"; fi
