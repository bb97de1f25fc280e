#!/usr/bin/env bash
# compare: `make bench`'s one table, Sluice against the Cloud Function peer (bench/peers/cloudfunction), both
# measured in the same run against `sluice emulator` on 127.0.0.1; the table is printed and written between the
# bench markers of docs/benchmarks.md (--no-docs: printed only). About 5 minutes on the 2-vCPU development VM.
# Usage: bench/compare.sh [BUILD_DIR] [--no-docs] [bench/compare.py options: --quick, --only PHASES]
set -euo pipefail
build=${1:-build}
shift || true
here=$(cd "$(dirname "$0")" && pwd)
for t in sluice bench_engine bench_serve_start; do
    [ -x "$build/$t" ] || { echo "compare: $build/$t missing (build first: make build)" >&2; exit 1; }
done
docs=(--docs "$here/../docs/benchmarks.md")
args=()
for a in "$@"; do if [ "$a" = --no-docs ]; then docs=(); else args+=("$a"); fi; done
build=$(cd "$build" && pwd)
echo "== Sluice vs the Cloud Function peer (bench/compare.py; load: $(cut -d' ' -f1-3 /proc/loadavg))"
exec /usr/bin/python3 "$here/compare.py" "$build" "${docs[@]}" "${args[@]}"
