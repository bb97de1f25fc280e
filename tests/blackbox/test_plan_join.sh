#!/usr/bin/env bash
# Regression: `sluice plan` of a join step after one of its predecessors ran the join's parameter function
# with only that predecessor in ctx.results, so fanout.lua's Join (which reads ctx.results.CleanOrders and
# ctx.results.CleanCustomers) failed with "attempt to index a nil value" and plan exited 1. A join only
# launches once every predecessor succeeded; plan now assumes the others did (attempt 1) and lists them in
# "assumed_succeeded".
set -euo pipefail
: "${SLUICE_BIN:?}" "${SLUICE_SRC:?}"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
for after in daily-clean-customers--r1-1 daily-clean-orders--r1-1; do
  rc=0
  "$SLUICE_BIN" plan "$SLUICE_SRC/workflows/fanout.lua" --after "$after" --time 2024-05-01T12:00:00Z >"$tmp/out.json" 2>"$tmp/err" || rc=$?
  if [ "$rc" -ne 0 ]; then echo "plan --after $after: exit $rc, want 0"; cat "$tmp/out.json" "$tmp/err"; exit 1; fi
  python3 - "$tmp/out.json" "$after" <<'PY'
import json, sys
out = json.load(open(sys.argv[1]))
a = out["actions"][0]
other = "CleanOrders" if sys.argv[2].startswith("daily-clean-customers") else "CleanCustomers"
want = {"customers": "daily-clean-customers--r1-1", "orders": "daily-clean-orders--r1-1"}
got = a["request"]["body"]["parameters"]
assert a["step"] == "Join" and "error" not in a, a
assert got == want, f"got {got} want {want}"
assert a["assumed_succeeded"] == [other], a["assumed_succeeded"]
PY
done
echo "ok"
