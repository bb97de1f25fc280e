#!/usr/bin/env bash
# `make demo`: everything on this machine, nothing outside it.
#   1. validate and plan the shipped workflows (offline);
#   2. start the Dataflow emulator (short job durations, its own OAuth endpoint and service-account key);
#   3. run both shipped workflows to completion with `sluice run` against it;
#   4. show what the emulator saw: one launch per step.
set -euo pipefail
bin=${1:-build/sluice}
root=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d /tmp/sluice-demo-XXXXXX)
emu_pid=""
cleanup() { [ -n "$emu_pid" ] && kill "$emu_pid" 2>/dev/null; wait 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

say "sluice validate workflows/"
"$bin" validate "$root/workflows"

say "sluice plan workflows/example.lua --after my-job-1--r7f3k2-1 (what launches next, exactly)"
"$bin" plan "$root/workflows/example.lua" --after my-job-1--r7f3k2-1

say "sluice graph workflows/fanout.lua"
"$bin" graph "$root/workflows/fanout.lua"

say "starting the Dataflow emulator (jobs take ~0.5 s)"
"$bin" emulator --port 0 --ready-file "$work/url" --write-credentials "$work/creds" \
    --pending-ms 100 --running-ms 400 >"$work/emulator.out" 2>"$work/emulator.log" &
emu_pid=$!
for _ in $(seq 100); do [ -s "$work/url" ] && break; sleep 0.05; done
url=$(cat "$work/url")
echo "emulator at $url (service-account key: $work/creds/service-account.json)"

for wf in example fanout; do
  say "sluice run workflows/$wf.lua"
  SLUICE_LOG_LEVEL=warning "$bin" run "$root/workflows/$wf.lua" --store "$work/sluice.db" \
      --dataflow-url "$url" --credentials "$work/creds/service-account.json" --poll-interval 200ms
done

say "what the emulator saw (launch requests per job name)"
curl -s "$url/emulator/stats" | python3 -c '
import json, sys
s = json.load(sys.stdin)
for name, n in s["launches_by_name"].items():
    print(f"  {n} x {name}")
print("token grants:", s.get("token_grants"))'
