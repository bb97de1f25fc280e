# serve_lib: helpers sourced by the `sluice serve` black-box tests (not a test itself), on top of emu_lib.sh.
# serve_start NAME ARGS...: starts `sluice serve` on 127.0.0.1 with an ephemeral port, waits for its ready file
# (polling) and sets S (base URL) and SRV_PID. The process is killed on exit by emu_cleanup.
source "$(dirname "${BASH_SOURCE[0]}")/emu_lib.sh"

serve_start() {
    local name=$1; shift
    rm -f "$TMPD/$name.ready"
    "$SLUICE_BIN" serve --listen 127.0.0.1 --port 0 --ready-file "$TMPD/$name.ready" "$@" \
        >"$TMPD/$name.out" 2>"$TMPD/$name.err" &
    SRV_PID=$!
    EMU_PIDS+=("$SRV_PID")
    for _ in $(seq 1 $((500 * TM))); do
        [ -s "$TMPD/$name.ready" ] && break
        kill -0 "$SRV_PID" 2>/dev/null || { cat "$TMPD/$name.err" >&2; echo "serve died" >&2; exit 1; }
        sleep 0.02
    done
    [ -s "$TMPD/$name.ready" ] || { echo "serve not ready" >&2; exit 1; }
    S=$(tr -d '\n' <"$TMPD/$name.ready")
}

# sreq METHOD PATH [BODY] [curl args...]: like req, against the server.
sreq() {
    local method=$1 path=$2; shift 2
    local data=()
    if [ $# -gt 0 ]; then data=(--data-binary "$1"); shift; fi
    curl -s -o "$TMPD/body" -D "$TMPD/headers" -w '%{http_code}' -X "$method" "${data[@]}" "$@" "$S$path"
}

# sget PATH [curl args...]: GET with the operator token ($OPTOK) when set; prints the status code.
sget() {
    local path=$1; shift
    local auth=()
    [ -n "${OPTOK:-}" ] && auth=(-H "Authorization: Bearer $OPTOK")
    curl -s -o "$TMPD/body" -D "$TMPD/headers" -w '%{http_code}' "${auth[@]}" "$@" "$S$path"
}

# serve_stop PID NAME: SIGTERM, then waits up to 30 s (x TM) for the exit; fails the test when the code is not 0 or
# the process outlives the wait (then kills it with SIGABRT, so a core or ASan's report says where it hung; NAME's
# stderr tail is printed).
serve_stop() {
    local pid=$1 name=$2 rc=0 i
    kill -TERM "$pid" 2>/dev/null || return 0
    for i in $(seq 1 $((1500 * TM))); do kill -0 "$pid" 2>/dev/null || break; sleep 0.02; done
    if kill -0 "$pid" 2>/dev/null; then
        fail "serve $name (pid $pid) still running $((30 * TM)) s after SIGTERM"
        kill -ABRT "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
        tail -n 20 "$TMPD/$name.err" >&2 2>/dev/null || true
        return 0
    fi
    wait "$pid" || rc=$?
    [ "$rc" -eq 0 ] || fail "serve $name exited with $rc after SIGTERM"
}
