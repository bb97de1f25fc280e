#!/usr/bin/env bash
# `make fuzz`: runs each libFuzzer target of a SLUICE_FUZZ build for a bounded time and fails if any crashes.
# Usage: fuzz/run.sh BUILD_DIR [TARGET...]   (targets: push cloudevent logentry jwt jwks dataflow workflow;
#        default all). Environment: FUZZ_SECONDS (per target, default 60), FUZZ_PARALLEL (targets at once, default
#        1, at most 2 on a shared machine), FUZZ_ARGS (extra libFuzzer flags).
# The seed corpus fuzz/corpus/<target>/ is only read; what the fuzzer finds goes to BUILD/fuzz/work/<target>/
# (kept between runs, so later runs start where the last stopped), crash inputs to BUILD/fuzz/artifacts/, logs to
# BUILD/fuzz/logs/<target>.log. A crash input belongs in fuzz/corpus/<target>/ once fixed (the ctest smoke
# replays it) and in a unit test of the owning module.
set -uo pipefail
build=${1:?usage: fuzz/run.sh BUILD_DIR [TARGET...]}
shift
here=$(cd "$(dirname "$0")" && pwd)
seconds=${FUZZ_SECONDS:-60}
parallel=${FUZZ_PARALLEL:-1}
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(push cloudevent logentry jwt jwks dataflow workflow)
out="$build/fuzz"
mkdir -p "$out/logs" "$out/artifacts"

run_one() {
  local t=$1 bin="$build/fuzz_$1" dict=json.dict
  [ "$t" = workflow ] && dict=lua.dict
  [ -x "$bin" ] || { echo "fuzz: $bin is missing (cmake -S . -B $build -DSLUICE_FUZZ=ON -DCMAKE_C_COMPILER=clang)" >&2; return 2; }
  mkdir -p "$out/work/$t" "$out/artifacts/$t"
  # -timeout: one input may take this long (the workflow target's Lua budget is 0.5 s per call);
  # -rss_limit_mb: the default 2 GiB, stated.
  "$bin" -max_total_time="$seconds" -timeout=20 -rss_limit_mb=2048 -print_final_stats=1 \
    -dict="$here/$dict" -artifact_prefix="$out/artifacts/$t/" ${FUZZ_ARGS:-} \
    "$out/work/$t" "$here/corpus/$t" >"$out/logs/$t.log" 2>&1
}

summary() {
  local t=$1 rc=$2 log="$out/logs/$1.log"
  local execs rate cov secs
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
  cov=$(grep -Eo 'cov: [0-9]+ ft: [0-9]+ corp: [0-9]+/[0-9]+[a-zA-Z]*' "$log" | tail -1)
  if [ "$rc" -eq 0 ]; then
    printf 'fuzz %-10s ok     %ss  %s execs (%s/s)  %s\n' "$t" "$seconds" "${execs:-?}" "${rate:-?}" "${cov:-}"
  else
    printf 'fuzz %-10s FAILED (exit %s): %s\n' "$t" "$rc" "$(grep -Eo 'Test unit written to .*' "$log" | tail -1)"
    grep -E 'ERROR: |SUMMARY: |runtime error' "$log" | head -5 | sed 's/^/    /'
  fi
}

failed=0
pids=() names=()
for t in "${targets[@]}"; do
  run_one "$t" &
  pids+=($!) names+=("$t")
  if [ ${#pids[@]} -ge "$parallel" ]; then
    wait "${pids[0]}"; rc=$?
    summary "${names[0]}" $rc; [ $rc -eq 0 ] || failed=1
    pids=("${pids[@]:1}") names=("${names[@]:1}")
  fi
done
for i in "${!pids[@]}"; do
  wait "${pids[$i]}"; rc=$?
  summary "${names[$i]}" $rc; [ $rc -eq 0 ] || failed=1
done
[ $failed -eq 0 ] && echo "fuzz: every target ran ${seconds}s without a crash" || echo "fuzz: crashes found; see $out/logs and $out/artifacts" >&2
exit $failed
