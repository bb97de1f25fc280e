# pg_lib: a throwaway PostgreSQL server for black-box tests (sourced, not a test itself); the shell twin of
# tests/integration/pg_harness.h. pg_start: initdb in a temp dir and postgres on a Unix socket there only (no TCP
# port), fsync off ($PG_FSYNC=on for benches), as the user sluice-test when run as root (created if missing: the server
# refuses root); sets PG_DIR and PG_URL (a conninfo for database `sluice`) and returns non-zero with the server's
# log when it cannot start.
# pg_stop: stops it and removes the dir; call it from the test's EXIT trap.
PG_BIN=${SLUICE_PG_BIN:-/usr/lib/postgresql/15/bin}
PG_AS=()

pg_start() {
    if [ ! -x "$PG_BIN/initdb" ]; then
        echo "pg_start: $PG_BIN/initdb is missing (apt-get install postgresql, or scripts/deps.sh)" >&2
        return 1
    fi
    PG_DIR=$(mktemp -d "${TMPDIR:-/tmp}/sluice-pg-XXXXXX")
    if [ "$(id -u)" -eq 0 ]; then
        id sluice-test >/dev/null 2>&1 ||
            useradd --system --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin sluice-test
        chown sluice-test: "$PG_DIR"
        PG_AS=(runuser -u sluice-test --)
    fi
    if ! "${PG_AS[@]}" "$PG_BIN/initdb" -D "$PG_DIR/data" -U sluice -A trust -E UTF8 --locale=C --no-sync \
        >"$PG_DIR/initdb.log" 2>&1; then
        echo "pg_start: initdb failed:" >&2; cat "$PG_DIR/initdb.log" >&2; return 1
    fi
    if ! (cd "$PG_DIR" && "${PG_AS[@]}" "$PG_BIN/pg_ctl" -D "$PG_DIR/data" -l "$PG_DIR/server.log" -w -t 30 \
        -o "-c listen_addresses= -k $PG_DIR -p 5432 -c fsync=${PG_FSYNC:-off}" start >/dev/null); then
        echo "pg_start: the server did not start:" >&2; cat "$PG_DIR/server.log" >&2; return 1
    fi
    "$PG_BIN/createdb" -h "$PG_DIR" -p 5432 -U sluice sluice || return 1
    PG_URL="host=$PG_DIR port=5432 user=sluice dbname=sluice"
}

pg_stop() {
    [ -n "${PG_DIR:-}" ] || return 0
    (cd "$PG_DIR" && "${PG_AS[@]}" "$PG_BIN/pg_ctl" -D "$PG_DIR/data" -m fast -w stop >/dev/null 2>&1) || true
    rm -rf "$PG_DIR"
    PG_DIR=
}
