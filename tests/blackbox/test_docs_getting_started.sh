#!/usr/bin/env bash
# test_docs_getting_started: runs every ```sh block of docs/getting-started.md, in order, as one bash script
# (set -euo pipefail), in a copy of the source tree, so a command the page shows that fails or no longer exists
# fails this test. The only changes to the text: free ports instead of 8089 (emulator) and 8080 (serve), and
# this test's temporary directory instead of /tmp/sluice-*. Then it checks what the page says happened.
source "$(dirname "$0")/emu_lib.sh"
SRC=${SLUICE_SRC:?}
DOC="$SRC/docs/getting-started.md"
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
EP=$(free_port); SP=$(free_port)
while [ "$SP" = "$EP" ]; do SP=$(free_port); done

# the checkout: the source without build trees (make build builds into the copy's build/)
mkdir -p "$TMPD/checkout"
(cd "$SRC" && tar --exclude='./build*' --exclude=./.git -cf - .) | (cd "$TMPD/checkout" && tar -xf -)

awk '/^```sh$/ {on = 1; next} /^```/ {on = 0} on' "$DOC" >"$TMPD/blocks.sh"
n=$(grep -c '^```sh$' "$DOC")
[ "$n" -ge 6 ] && ok "$n sh blocks extracted" || fail "only $n sh blocks in $DOC"
{
    echo 'set -euo pipefail'
    echo 'trap '"'"'kill $(jobs -p) 2>/dev/null || true'"'"' EXIT   # what the page started, should it stop early'
    sed -e "s/8089/$EP/g" -e "s/8080/$SP/g" -e "s|/tmp/sluice-|$TMPD/sluice-|g" "$TMPD/blocks.sh"
} >"$TMPD/getting-started.sh"
grep -q "127.0.0.1:$SP" "$TMPD/getting-started.sh" && grep -q "127.0.0.1:$EP" "$TMPD/getting-started.sh" \
    && ok "ports substituted" || fail "the page no longer uses ports 8089 and 8080"

# run it; a timeout stops it (and whatever it started) if something hangs. It builds the copy from nothing: a full
# build took over 240 s beside a busy suite on 2 cores, so 600 s (scaled like every test limit)
rc=0
(cd "$TMPD/checkout" && timeout -k 5 $((600 * ${SLUICE_TEST_TIMEOUT_MULTIPLIER:-1})) bash -x "$TMPD/getting-started.sh") >"$TMPD/out" 2>"$TMPD/err" || rc=$?
if [ "$rc" -ne 0 ]; then
    tail -30 "$TMPD/err" >&2
    for f in "$TMPD"/sluice-*.log; do [ -f "$f" ] && { echo "--- $f" >&2; tail -5 "$f" >&2; }; done
fi
expect_eq "every command of the page succeeded" "$rc" 0
grep -q '^sluice ' "$TMPD/out" && ok "sluice version printed" || fail "no version line"
grep -q 'mermaid\|graph \|flowchart' "$TMPD/out" && ok "graph printed" || fail "no graph in the output"
grep -q 'resource.labels.job_name:"my-job-1--"' "$TMPD/out" && ok "sink-filter printed" || fail "no sink filter"
grep -qx '200' "$TMPD/out" && ok "the emulator took the push configuration" || fail "no 200 from /emulator/config"
grep -q '"ready":true' "$TMPD/out" && ok "sluice health saw serve ready" || fail "health output missing"
grep -qE '^run [a-z0-9]+  workflow daily  succeeded' "$TMPD/out" && ok "the daily run succeeded through serve" || fail "no succeeded daily run in the output"
grep -q 'sluice_events_total{source="pubsub",outcome="recorded"}' "$TMPD/out" && ok "pushes recorded, as the page says" \
    || fail "no recorded pushes in the metrics output"
[ -x "$TMPD/checkout/build/sluice" ] && ok "make build built build/sluice" || fail "no build/sluice in the checkout"
[ -n "${KEEP_OUT:-}" ] && cp "$TMPD/out" "$KEEP_OUT" && cp "$TMPD/err" "$KEEP_OUT.err"   # debugging
finish
