#!/usr/bin/env bash
# test_health: `sluice health [URL]` (the image's HEALTHCHECK, which has no curl): exit 0 and the answer on a
# ready serve's /readyz, PORT honoured for the default URL, 1 when nothing listens or the answer is not 200,
# 2 for usage errors.
# Also (issue 17, finding 16): bound to every interface, serve's start-up log said "listening on
# http://127.0.0.1:PORT"; it names the address bound, while the ready file keeps a URL usable from here.
source "$(dirname "$0")/serve_lib.sh"
serve_start srv --workflows "${SLUICE_SRC:?}/workflows" --store "$TMPD/h.db" --no-auth --dataflow-no-auth \
    --dataflow-url http://127.0.0.1:9
out=$("$SLUICE_BIN" health "$S/readyz") && ok "ready: exit 0" || fail "health on a ready serve failed: $out"
case "$out" in 200\ *'"ready":true'*) ok "prints the status and the answer" ;; *) fail "output: $out" ;; esac
port=${S##*:}
PORT=$port "$SLUICE_BIN" health >/dev/null && ok "default URL from \$PORT" || fail "PORT=$port sluice health failed"
rc=0; "$SLUICE_BIN" health "$S/no-such-path" >/dev/null || rc=$?
expect_eq "a 404 is unhealthy" "$rc" 1
kill "$SRV_PID"; wait "$SRV_PID" || true
rc=0; "$SLUICE_BIN" health --timeout 2 "$S/readyz" 2>"$TMPD/err" || rc=$?
expect_eq "nothing listening: exit 1" "$rc" 1
grep -q "readyz" "$TMPD/err" && ok "the error names the URL" || fail "stderr: $(cat "$TMPD/err")"
serve_start any --workflows "${SLUICE_SRC:?}/workflows" --store "$TMPD/any.db" --no-auth --dataflow-no-auth \
    --dataflow-url http://127.0.0.1:9 --listen 0.0.0.0
grep -q "listening on 0.0.0.0:${S##*:} (every interface)" "$TMPD/any.err" && ok "the log names the bound address" \
    || fail "start-up log: $(grep listening "$TMPD/any.err")"
expect_eq "the ready file is a URL usable from here" "$S" "http://127.0.0.1:${S##*:}"
"$SLUICE_BIN" health "$S/healthz" >/dev/null && ok "reachable there" || fail "not reachable at $S"
kill "$SRV_PID"; wait "$SRV_PID" || true
rc=0; "$SLUICE_BIN" health a b 2>/dev/null || rc=$?
expect_eq "two URLs: usage" "$rc" 2
rc=0; "$SLUICE_BIN" health --timeout x 2>/dev/null || rc=$?
expect_eq "bad timeout: usage" "$rc" 2
finish
