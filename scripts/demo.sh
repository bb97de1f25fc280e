#!/usr/bin/env bash
# `make demo`: the real architecture, entirely on this machine.
#   1. offline: validate, plan and draw the shipped workflows;
#   2. `sluice run`: one workflow in the foreground against the Dataflow emulator (polling only);
#   3. `sluice serve`: the emulator sends Pub/Sub pushes (the log sink's LogEntries) and Eventarc statusChanged
#      events, each with an OIDC token signed by its own key; serve verifies them (JWKS from the emulator),
#      records them, and the engine advances both workflows from the events (polling is set to 10 minutes, so
#      progress you see is event-driven). Duplicate and reordered deliveries are switched on.
#   4. a summary: run states, one launch per job name, events by source and outcome.
set -euo pipefail
bin=${1:-build/sluice}
root=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d /tmp/sluice-demo-XXXXXX)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
wait_file() { for _ in $(seq 400); do [ -s "$1" ] && return 0; sleep 0.025; done; echo "timed out waiting for $1" >&2; exit 1; }

say "sluice validate workflows/"
"$bin" validate "$root/workflows"
say "sluice plan workflows/example.lua --after my-job-1--r7f3k2-1   (what launches next, exactly)"
"$bin" plan "$root/workflows/example.lua" --after my-job-1--r7f3k2-1
say "sluice graph workflows/fanout.lua"
"$bin" graph "$root/workflows/fanout.lua"

say "starting the Dataflow emulator (jobs take ~0.5 s; its own OAuth, metadata and JWKS endpoints)"
"$bin" emulator --port 0 --ready-file "$work/emu.url" --write-credentials "$work/creds" \
    --pending-ms 100 --running-ms 400 --seed 11 >/dev/null 2>"$work/emulator.log" &
pids+=($!)
wait_file "$work/emu.url"
emu=$(cat "$work/emu.url")
echo "emulator at $emu"

say "sluice run workflows/example.lua   (foreground, polling)"
SLUICE_LOG_LEVEL=warning "$bin" run "$root/workflows/example.lua" --store "$work/run.db" \
    --dataflow-url "$emu" --credentials "$work/creds/service-account.json" --poll-interval 200ms

say "sluice serve (push + Eventarc ingress with OIDC, engine driven by events)"
audience=sluice-demo
SLUICE_LOG_LEVEL=warning "$bin" serve --listen 127.0.0.1 --port 0 --ready-file "$work/serve.url" \
    --workflows "$root/workflows" --store "$work/serve.db" --dataflow-url "$emu" \
    --credentials "$work/creds/service-account.json" --audience "$audience" \
    --jwks-url "$emu/oauth2/v3/certs" --allow-email pubsub-push@emulator.iam.gserviceaccount.com \
    --operator-token demo-operator --poll-interval 10m >/dev/null 2>"$work/serve.log" &
pids+=($!)
wait_file "$work/serve.url"
srv=$(cat "$work/serve.url")
echo "serve at $srv"
curl -s "$srv/readyz"; echo
curl -s -X POST "$emu/emulator/config" -o /dev/null -d "{\"events\": {
    \"push_url\": \"$srv/v1/events/pubsub\", \"eventarc_url\": \"$srv/v1/events/eventarc\",
    \"audience\": \"$audience\", \"duplicate_rate\": 0.3, \"reorder_rate\": 0.3, \"reorder_ms\": 100}}"

r1=$("$bin" start example --server "$srv" --token demo-operator --param date=2026-11-27)
r2=$("$bin" start daily --server "$srv" --token demo-operator --param full=true)
echo "started runs $r1 (example) and $r2 (daily); progress comes from the events:"
# one line per poll; exits 0 once both runs are finished
progress() {
    "$bin" status "$r1" --server "$srv" --token demo-operator --json >"$work/s1.json"
    "$bin" status "$r2" --server "$srv" --token demo-operator --json >"$work/s2.json"
    python3 - "$work/s1.json" "$work/s2.json" <<'PY'
import json, sys
line, finished = [], True
for f in sys.argv[1:]:
    d = json.load(open(f))
    run = d.get("run", d)
    steps = run.get("steps") or d.get("steps") or []
    done = sum(1 for s in steps if s.get("state") in ("succeeded", "failed", "cancelled", "skipped"))
    line.append(f'{run.get("workflow", "?")}: {run.get("state", "?")} ({done}/{len(steps)} steps)')
    finished = finished and run.get("state") in ("succeeded", "failed", "cancelled")
print("  " + "   |   ".join(line), flush=True)
sys.exit(0 if finished else 1)
PY
}
for _ in $(seq 240); do progress && break; sleep 0.25; done

say "sluice status"
"$bin" status --server "$srv" --token demo-operator
say "sluice status $r2"
"$bin" status "$r2" --server "$srv" --token demo-operator

say "what the emulator saw: launch requests per job name (exactly one each)"
curl -s "$emu/emulator/stats" | python3 -c '
import json, sys
s = json.load(sys.stdin)
for name, n in s["launches_by_name"].items():
    print(f"  {n} x {name}")
print("deliveries:", json.dumps(s.get("deliveries", {})))'
say "what serve counted (/metrics): events by source and outcome"
curl -s "$srv/metrics" | grep -E '^sluice_events_total' || true
