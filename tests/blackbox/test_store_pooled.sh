#!/usr/bin/env bash
# test_store_pooled: two `sluice serve` replicas reach PostgreSQL through PgBouncer in transaction pooling mode with
# a pool of two server connections, so a replica's transactions may land on different sessions and sessions are
# shared between replicas: with --store-poll-only the store keeps no session state (no prepared statements, no
# LISTEN, settings per transaction), no replica logs an error (a prepared statement missing on another session
# would), and runs started on either replica finish, one job per name on the emulator.
source "$(dirname "$0")/serve_lib.sh"
source "$(dirname "$0")/pg_lib.sh"
bouncer_stop() { [ -n "${BNC_PID:-}" ] && kill "$BNC_PID" 2>/dev/null; return 0; }
trap 'bouncer_stop; pg_stop; emu_cleanup' EXIT
W="${SLUICE_SRC:?}/workflows"
command -v pgbouncer >/dev/null || [ -x /usr/sbin/pgbouncer ] || { echo "FAIL: pgbouncer is missing (scripts/deps.sh installs it)"; exit 1; }
pg_start || { echo "FAIL: cannot start PostgreSQL (see above)"; exit 1; }
mkdir -p "$PG_DIR/bouncer"
printf '"sluice" ""\n' >"$PG_DIR/bouncer/users.txt"
cat >"$PG_DIR/bouncer/pgbouncer.ini" <<INI
[databases]
sluice = host=$PG_DIR port=5432 dbname=sluice user=sluice
[pgbouncer]
listen_addr =
listen_port = 6432
unix_socket_dir = $PG_DIR/bouncer
auth_type = trust
auth_file = $PG_DIR/bouncer/users.txt
pool_mode = transaction
default_pool_size = 2
max_client_conn = 100
logfile = $PG_DIR/bouncer/pgbouncer.log
INI
[ "$(id -u)" -eq 0 ] && chown -R sluice-test: "$PG_DIR/bouncer"
"${PG_AS[@]}" /usr/sbin/pgbouncer "$PG_DIR/bouncer/pgbouncer.ini" >/dev/null 2>&1 &
BNC_PID=$!
for _ in $(seq 1 100); do [ -S "$PG_DIR/bouncer/.s.PGSQL.6432" ] && break; sleep 0.05; done
[ -S "$PG_DIR/bouncer/.s.PGSQL.6432" ] || { cat "$PG_DIR/bouncer/pgbouncer.log" >&2; fail "pgbouncer did not start"; finish; }
BURL="host=$PG_DIR/bouncer port=6432 user=sluice dbname=sluice"
emu_start emu --write-credentials "$TMPD/creds" --pending-ms 50 --running-ms 300
E=$B
replica() {
    serve_start "$1" --workflows "$W" --store "$BURL" --store-poll-only --dataflow-url "$E" --no-auth \
        --credentials "$TMPD/creds/service-account.json" --poll-interval 200ms --tick 50ms --lease 2s
}
replica a; A=$S
replica b; SB=$S
B=$E; req POST /emulator/config "{\"events\":{\"push_url\":\"$A/v1/events/pubsub $SB/v1/events/pubsub\"}}" >/dev/null
start_run() { curl -s -X POST -H 'Content-Type: application/json' -d '{"workflow":"example"}' "$1/v1/runs" |
    lua5.4 -e 'print((require("cjson").decode(io.read("a")).run or {}).id or "")'; }
runs=()
for i in 1 2 3 4 5 6; do if [ $((i % 2)) -eq 0 ]; then runs+=("$(start_run "$A")"); else runs+=("$(start_run "$SB")"); fi; done
done_on() { local s=$1; shift; for id in "$@"; do S=$s; sget "/v1/runs/$id" >/dev/null; [ "$(jget d.run.state)" = succeeded ] || return 1; done; }
poll_until 40 done_on "$A" "${runs[@]}" && ok "six runs through PgBouncer (transaction pooling, two server connections) finished" ||
    fail "pooled runs: $(jget d.run.state)"
errs=$(grep -h '"ERROR"' "$TMPD/a.err" "$TMPD/b.err" || true)
expect_eq "no error logged" "$errs" ""
B=$E; req GET /emulator/stats >/dev/null
expect_eq "every job created once" "$(not_once jobs_created_by_name)" 0
expect_eq "6 runs x 3 jobs" "$(jget 'len(d.jobs_created_by_name)')" 18
finish
