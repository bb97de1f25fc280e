#!/usr/bin/env bash
# test_store_pg: the binary on a PostgreSQL store (pg_lib.sh starts a real server): `sluice store migrate`
# from a SQLite file and its exit codes, then `sluice status --store CONNINFO` reading runs from PostgreSQL.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/pg_lib.sh"
TMPD=$(mktemp -d)
trap 'pg_stop; rm -rf "$TMPD"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }
pg_start || fail "cannot start the PostgreSQL test server"

# An empty SQLite store, made by serve (reading commands such as status create none).
mkdir "$TMPD/wf"
"$SLUICE_BIN" serve --no-auth --workflows "$TMPD/wf" --store "$TMPD/src.db" --listen 127.0.0.1 --port 0 \
    --ready-file "$TMPD/ready" >"$TMPD/serve.log" 2>&1 &
spid=$!
for _ in $(seq 1 1000); do [ -s "$TMPD/ready" ] || ! kill -0 $spid 2>/dev/null && break; sleep 0.02; done
[ -s "$TMPD/ready" ] || fail "serve did not start: $(cat "$TMPD/serve.log")"
kill -TERM $spid
wait $spid || fail "serve exited $? on SIGTERM"
[ -s "$TMPD/src.db" ] || fail "serve made no SQLite store"
out=$("$SLUICE_BIN" store migrate --from "$TMPD/src.db" --to "$PG_URL") || fail "migrate exited $?"
[ "$out" = "copied 0 scripts, 0 runs, 0 steps, 0 inbox events (0 unprocessed)
runs: pending 0 running 0 succeeded 0 failed 0 cancelling 0 cancelled 0" ] || fail "migrate printed: $out"
set +e
"$SLUICE_BIN" store migrate --from "$TMPD/src.db" --to "$TMPD/other.db" 2>"$TMPD/err"; rc=$?
set -e
[ $rc -eq 2 ] || fail "a SQLite --to exited $rc, want 2"
grep -q "must be a PostgreSQL URL" "$TMPD/err" || fail "message: $(cat "$TMPD/err")"

# A run written under the API's back (psql) is what the CLI shows from PostgreSQL.
h=0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef
"$PG_BIN/psql" -q -X -v ON_ERROR_STOP=1 "$PG_URL" -c "INSERT INTO scripts VALUES ('$h', 'etl', 'return {}', 1);
  INSERT INTO runs(id, workflow, script_hash, state, created_at, updated_at) VALUES ('r-pg-1', 'etl', '$h', 'running', 1, 1)" \
  || fail "psql insert"
out=$("$SLUICE_BIN" status --store "$PG_URL" --json) || fail "status exited $?"
echo "$out" | grep -q '"r-pg-1"' || fail "status did not list the run: $out"
set +e
"$SLUICE_BIN" store migrate --from "$TMPD/src.db" --to "$PG_URL" 2>"$TMPD/err"; rc=$?
set -e
[ $rc -eq 1 ] || fail "a non-empty target exited $rc, want 1"
grep -q "not empty" "$TMPD/err" || fail "message: $(cat "$TMPD/err")"
echo "ok"
