#!/usr/bin/env bash
# Runs the network benchmarks against a freshly started emulator. Usage: bench/run.sh BUILD_DIR
set -euo pipefail
build=${1:-build}
echo "== jobs.get, 200 in flight, emulator latency 50 ms, 5 s"
"$build/bench_client" --sluice "$build/sluice" --seconds 5 --inflight 200 --latency-ms 50 --mode get
echo "== flex launches, 200 in flight, emulator latency 50 ms, 5 s"
"$build/bench_client" --sluice "$build/sluice" --seconds 5 --inflight 200 --latency-ms 50 --mode launch
echo "== reconcile burst: 10,000 jobs.get queued at once, 200 connections, latency 50 ms"
"$build/bench_client" --sluice "$build/sluice" --inflight 200 --latency-ms 50 --burst 10000
