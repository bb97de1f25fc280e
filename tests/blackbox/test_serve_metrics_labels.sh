#!/usr/bin/env bash
# test_serve_metrics_labels: issue 17, finding 10: a step name with a double quote and a newline injected lines
# into /metrics (label values were not escaped). A workflow whose step name closes the label set and starts a
# series of its own runs a launch; /metrics must stay well-formed (every sample line one series), carry the name
# escaped per the Prometheus text format, and hold no injected series.
source "$(dirname "$0")/serve_lib.sh"
WD="$TMPD/workflows"
mkdir -p "$WD"
cat >"$WD/inject.lua" <<'LUA'
local evil = 'A"} 1\nsluice_injected_total 99\n# '
return {
  name = "inject", project = "p", region = "europe-west1", start = evil,
  steps = {
    [evil] = { job_name = "inject-a", template = "gs://bkt/a.json" },
  },
}
LUA
emu_start emu --write-credentials "$TMPD/creds" --pending-ms 50 --running-ms 200
E=$B
serve_start srv --workflows "$WD" --store "$TMPD/m.db" --dataflow-url "$E" --no-auth \
    --credentials "$TMPD/creds/service-account.json" --poll-interval 200ms
code=$(sreq POST /v1/runs '{"workflow":"inject"}' -H 'Content-Type: application/json')
expect_eq "the run starts" "$code" 201
launched() { curl -s "$S/metrics" >"$TMPD/metrics.txt"; grep -q '^sluice_launches_total{workflow="inject"' "$TMPD/metrics.txt"; }
poll_until 20 launched && ok "the launch is counted" || fail "no launch counted: $(grep launches_total "$TMPD/metrics.txt")"
grep -q '^sluice_injected' "$TMPD/metrics.txt" && fail "a series was injected: $(grep -n sluice_injected "$TMPD/metrics.txt")" \
    || ok "no injected series"
grep -qF 'step="A\"} 1\nsluice_injected_total 99\n# "' "$TMPD/metrics.txt" && ok "the step name is escaped" \
    || fail "escaped step name not found: $(grep launches_total "$TMPD/metrics.txt")"
# Every line is a comment or one sample: a name, optional {labels} with quoted (escaped) values, a number.
bad=$(grep -v '^#' "$TMPD/metrics.txt" |
    grep -cvE '^[a-zA-Z_:][a-zA-Z0-9_:]*(\{([a-zA-Z_][a-zA-Z0-9_]*="([^"\\]|\\.)*",?)*\})? [-+0-9.eEInfa]+$' || true)
expect_eq "malformed sample lines" "$bad" 0
rc=0; kill -TERM "$SRV_PID"; wait "$SRV_PID" || rc=$?
expect_eq "serve exits 0" "$rc" 0
emu_stop "$EMU_PID"
finish
