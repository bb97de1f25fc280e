# pubsub_lib: Google's own Pub/Sub emulator for the black-box tests that need it (not a test itself), on top of
# serve_lib.sh. The caller sets PROJ, then `source`s this: it starts `gcloud beta emulators pubsub start` on a free
# port of 127.0.0.1 in its own process group (stopped, group and all, on exit), exports PUBSUB_EMULATOR_HOST, sets
# PS (the project's REST base) and defines psreq. Without gcloud (or Java) the test says so and is skipped
# (exit 77, ctest's SKIP_RETURN_CODE); under CI=true that is a failure.
source "$(dirname "${BASH_SOURCE[0]}")/serve_lib.sh"
: "${PROJ:?set PROJ before sourcing pubsub_lib.sh}"

if ! command -v gcloud >/dev/null 2>&1 || ! command -v java >/dev/null 2>&1; then
    if [ "${CI:-}" = true ]; then
        echo "FAIL: gcloud (with Java) is not installed, and CI=true requires the Pub/Sub emulator tests" >&2
        exit 1
    fi
    echo "SKIP: Google's Pub/Sub emulator needs gcloud and Java (gcloud components install pubsub-emulator)"
    exit 77
fi

PS_PGID=""
ps_stop() {
    [ -n "$PS_PGID" ] || return 0
    kill -TERM -- "-$PS_PGID" 2>/dev/null || true
    for _ in $(seq 1 100); do kill -0 -- "-$PS_PGID" 2>/dev/null || break; sleep 0.1; done
    kill -KILL -- "-$PS_PGID" 2>/dev/null || true
    PS_PGID=""
}
trap 'ps_stop; emu_cleanup' EXIT

PS_PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
export PUBSUB_EMULATOR_HOST=127.0.0.1:$PS_PORT
PS="http://$PUBSUB_EMULATOR_HOST/v1/projects/$PROJ"
mkdir -p "$TMPD/pubsub-data"
CLOUDSDK_CORE_DISABLE_PROMPTS=1 setsid gcloud beta emulators pubsub start --host-port="$PUBSUB_EMULATOR_HOST" \
    --project="$PROJ" --data-dir="$TMPD/pubsub-data" >"$TMPD/pubsub.log" 2>&1 &
PS_PGID=$!
ps_up() {
    kill -0 "$PS_PGID" 2>/dev/null || return 0 # died: stop waiting
    curl -s -o /dev/null -w '%{http_code}' "http://$PUBSUB_EMULATOR_HOST/" 2>/dev/null | grep -q 200
}
poll_until 90 ps_up || true
if ! curl -s -o /dev/null "http://$PUBSUB_EMULATOR_HOST/"; then
    tail -20 "$TMPD/pubsub.log" >&2
    echo "FAIL: Google's Pub/Sub emulator did not start within $((90 * TM)) s" >&2
    exit 1
fi
ok "Google's Pub/Sub emulator is up on $PUBSUB_EMULATOR_HOST"

# psreq METHOD PATH [BODY]: the emulator's REST API; prints the status code, the body lands in $TMPD/body.
psreq() {
    local data=()
    [ $# -gt 2 ] && data=(--data-binary "$3")
    curl -s -o "$TMPD/body" -w '%{http_code}' -X "$1" -H 'Content-Type: application/json' "${data[@]}" "$PS$2"
}
