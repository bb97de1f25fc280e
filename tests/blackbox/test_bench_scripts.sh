#!/usr/bin/env bash
# test_bench_scripts: the benchmark commands docs/benchmarks.md shows still run, in short forms, and print what
# the docs read off them. The figures themselves are `make bench`'s (bench/run.sh), never a test's: this only
# fails when a script or an option it documents breaks. Covers bench/serve.sh with its defaults and with every
# option it documents (RUNS, HOG, ONLY_RECORDED, SHOW_HIST, wrk arguments), the loader statistics of a start
# (LD_DEBUG=statistics), an idle server's memory (/proc/PID/smaps_rollup), and bench/cost.py's per-run counts and
# cold start in short forms.
source "$(dirname "$0")/emu_lib.sh"
BUILD=$(dirname "$SLUICE_BIN")
SRC=${SLUICE_SRC:?}
cd "$SRC"

rc=0; bench/serve.sh "$BUILD" -t1 -c2 -d1s >"$TMPD/serve.out" 2>&1 || rc=$?
expect_eq "bench/serve.sh with its measurements" "$rc" 0
for want in "== 1. recorded pushes" "== 2. foreign pushes" "fresh store: median" "existing store: median" "VmRSS:"; do
    grep -qF "$want" "$TMPD/serve.out" && ok "serve.sh printed '$want'" || fail "serve.sh printed no '$want'"
done
[ "$(grep -c 'non-2xx 0, errors 0' "$TMPD/serve.out")" -ge 2 ] && ok "every push answered 2xx" ||
    fail "pushes failed: $(grep 'non-2xx' "$TMPD/serve.out")"

rc=0; HOG=1 RUNS=2 ONLY_RECORDED=1 SHOW_HIST=1 bench/serve.sh "$BUILD" -t1 -c2 -d1s >"$TMPD/variants.out" 2>&1 || rc=$?
expect_eq "bench/serve.sh HOG=1 RUNS=2 ONLY_RECORDED=1 SHOW_HIST=1" "$rc" 0
expect_eq "two runs, one line each" "$(grep -c '^run [12] (load' "$TMPD/variants.out")" 2
grep -q "a CPU hog" "$TMPD/variants.out" && ok "the hog ran" || fail "no hog"
grep -q "^sluice_inbox_commit_seconds_bucket" "$TMPD/variants.out" && ok "histograms shown" || fail "no histograms"
grep -q "== 2. foreign" "$TMPD/variants.out" && fail "ONLY_RECORDED ran measurement 2" || ok "only measurement 1"

# bench/cost.py (docs/cost.md, docs/benchmarks.md "Cold start"): one run of each workflow, and one cold start
rc=0; python3 bench/cost.py "$BUILD" --runs 1 >"$TMPD/cost.out" 2>&1 || rc=$?
expect_eq "bench/cost.py --runs 1" "$rc" 0
for want in "per run of example " "per run of daily " "per idle reconcile " "pushes=" "resumed_s=" "cpu_s="; do
    grep -qF "$want" "$TMPD/cost.out" && ok "cost.py printed '$want'" || fail "cost.py printed no '$want': $(tail -3 "$TMPD/cost.out")"
done
rc=0; python3 bench/cost.py "$BUILD" --cold-start 1 >"$TMPD/cold.out" 2>&1 || rc=$?
expect_eq "bench/cost.py --cold-start 1" "$rc" 0
for want in "process start -> ready" "process start -> first push answered" "process start -> next launch at emulator"; do
    grep -qF "$want" "$TMPD/cold.out" && ok "cost.py printed '$want'" || fail "cost.py printed no '$want': $(tail -3 "$TMPD/cold.out")"
done

LD_DEBUG=statistics "$SLUICE_BIN" version >/dev/null 2>"$TMPD/ld.err"
grep -q "total startup time in dynamic loader" "$TMPD/ld.err" && ok "the loader's statistics of a start" ||
    fail "no loader statistics: $(head -3 "$TMPD/ld.err")"

"$SLUICE_BIN" serve --listen 127.0.0.1 --port 0 --ready-file "$TMPD/s.ready" --workflows "$SRC/workflows" \
    --store "$TMPD/s.db" --no-auth --dataflow-url http://127.0.0.1:9 --dataflow-no-auth >/dev/null 2>"$TMPD/s.err" &
SRV=$!
EMU_PIDS+=("$SRV")
poll_until 10 test -s "$TMPD/s.ready" || fail "serve did not start: $(tail -3 "$TMPD/s.err")"
grep -E '^(Rss|Pss_File|Pss_Anon):' "/proc/$SRV/smaps_rollup" >"$TMPD/smaps" || true
expect_eq "an idle server's memory, from smaps_rollup" "$(wc -l <"$TMPD/smaps")" 3
finish
