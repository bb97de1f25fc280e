# fs_lib: Google's Firestore emulator for black-box tests (sourced, not a test itself); the shell twin of
# tests/integration/fs_harness.h. fs_start: `gcloud emulators firestore start` on a free 127.0.0.1 port in a process
# group of its own, waited for (its "/" answers "Ok"); exports FIRESTORE_EMULATOR_HOST and sets FS_URL (a store of
# the test's own: firestore://sluice-bb-PID). Without gcloud it prints why and exits 77 (skipped), or 1 under CI=true.
# fs_stop: stops the whole group (gcloud's Java child outlives gcloud alone); call it from the test's EXIT trap.
FS_PID=

fs_start() {
    if ! command -v gcloud >/dev/null 2>&1; then
        echo "fs_start: gcloud is not installed: the Firestore emulator comes with the Google Cloud CLI" >&2
        [ "${CI:-}" = true ] && exit 1
        exit 77
    fi
    local port
    port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
    FS_LOG=$(mktemp "${TMPDIR:-/tmp}/sluice-fs-XXXXXX.log")
    setsid gcloud emulators firestore start --host-port "127.0.0.1:$port" --quiet >"$FS_LOG" 2>&1 &
    FS_PID=$!
    local deadline=$(( $(date +%s) + 90 * ${SLUICE_TEST_TIMEOUT_MULTIPLIER:-1} ))
    until [ "$(curl -s -m 2 "http://127.0.0.1:$port/" 2>/dev/null)" = "Ok" ]; do
        if ! kill -0 "$FS_PID" 2>/dev/null || [ "$(date +%s)" -gt "$deadline" ]; then
            echo "fs_start: the Firestore emulator did not start:" >&2; tail -20 "$FS_LOG" >&2
            return 1
        fi
        sleep 0.2
    done
    export FIRESTORE_EMULATOR_HOST="127.0.0.1:$port"
    FS_URL="firestore://sluice-bb-$$"
}

fs_stop() {
    [ -n "${FS_PID:-}" ] || return 0
    kill -TERM -- "-$FS_PID" 2>/dev/null || true
    for _ in $(seq 1 50); do kill -0 "$FS_PID" 2>/dev/null || break; sleep 0.1; done
    kill -KILL -- "-$FS_PID" 2>/dev/null || true
    rm -f "$FS_LOG"
    FS_PID=
}
