#!/usr/bin/env bash
# test_image: the container image (Dockerfile, `make image`). Builds it with scripts/image.sh (a local Debian 12
# base from mmdebstrap, then podman build with chroot isolation), checks its metadata (non-root user, PORT,
# STOPSIGNAL, HEALTHCHECK, the baked-in workflows) and size, then runs the image's own `sluice serve` with
# `buildah run --isolation chroot` (it shares the host network; plain `podman run` does not work on these
# machines) against the emulator running on the host from the build tree:
#   - serve listens on $PORT, becomes ready, and `sluice health` inside the image says so;
#   - a run started through the API advances to succeeded (Pub/Sub pushes from the emulator, OIDC-checked);
#   - a directory mounted over /etc/sluice/workflows replaces the shipped ones, and a file added there is
#     picked up by the hot reload;
#   - SIGTERM stops it with exit 0.
# Not part of `ctest` (it needs podman, buildah and mmdebstrap, installed by `scripts/deps.sh image`, and a
# few minutes): `make image-test`, a step of .ci/run. SLUICE_SKIP_IMAGE_TEST=1 skips it; nothing else does: a
# missing tool is a failure.
if [ -n "${SLUICE_SKIP_IMAGE_TEST:-}" ]; then echo "SKIP: SLUICE_SKIP_IMAGE_TEST is set"; exit 0; fi
source "$(dirname "$0")/serve_lib.sh"
SRC=${SLUICE_SRC:?}
for t in podman buildah mmdebstrap; do
    command -v "$t" >/dev/null || { echo "FAIL: $t is not installed (run scripts/deps.sh image, or set SLUICE_SKIP_IMAGE_TEST=1 to skip this test)" >&2; exit 1; }
done
TAG=localhost/sluice:test-$$
CTRS=()
image_cleanup() {
    for c in "${CTRS[@]}"; do buildah rm "$c" >/dev/null 2>&1 || true; done
    podman rmi "$TAG" >/dev/null 2>&1 || true
    emu_cleanup
}
trap image_cleanup EXIT

start_s=$(date +%s)
"$SRC/scripts/image.sh" "$TAG" >"$TMPD/image.out" 2>"$TMPD/image.err" || { cat "$TMPD/image.err" "$TMPD/image.out" >&2; echo "FAIL: image build" >&2; exit 1; }
size=$(podman image inspect --format '{{.Size}}' "$TAG")
ok "image built in $(( $(date +%s) - start_s )) s: $size bytes ($(( size / 1000000 )) MB)"
[ "$size" -lt 150000000 ] && ok "image under 150 MB" || fail "image is $size bytes"

inspect() { podman image inspect --format "$1" "$TAG"; }
expect_eq "runs as the non-root user" "$(inspect '{{.Config.User}}')" "10001:10001"
expect_eq "STOPSIGNAL" "$(inspect '{{.Config.StopSignal}}')" "SIGTERM"
inspect '{{json .Config.Healthcheck}}' | grep -q '"sluice","health"' && ok "HEALTHCHECK runs sluice health" \
    || fail "healthcheck: $(inspect '{{json .Config.Healthcheck}}')"
inspect '{{json .Config.Env}}' | grep -q '"PORT=8080"' && ok "PORT defaults to 8080" || fail "env: $(inspect '{{json .Config.Env}}')"
expect_eq "entrypoint" "$(inspect '{{json .Config.Entrypoint}}')" '["sluice"]'

# the emulator on the host (build tree), with Pub/Sub pushes to the containerised serve
mkdir -p "$TMPD/share"
emu_start emu --write-credentials "$TMPD/share/creds" --pending-ms 50 --running-ms 150 --seed 5
E=$B
chmod -R a+rX "$TMPD/share"
mkdir -p "$TMPD/share/out" && chmod 0777 "$TMPD/share/out"
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
OPTOK=image-operator

# ctr_serve NAME PORT [buildah run args...] -- [serve args...]: a new container of the image running serve;
# sets S, SRV_PID (the buildah process) and CTR.
ctr_serve() {
    local name=$1 port=$2; shift 2
    local bargs=()
    while [ "$1" != "--" ]; do bargs+=("$1"); shift; done
    shift
    CTR=$(buildah from --name "sluice-test-$name-$$" "$TAG")
    CTRS+=("$CTR")
    buildah run --isolation chroot --env "PORT=$port" -v "$TMPD/share:/host:ro" -v "$TMPD/share/out:/out" "${bargs[@]}" \
        "$CTR" -- sluice serve --workflows /etc/sluice/workflows --listen 127.0.0.1 --ready-file "/out/$name.ready" \
        --dataflow-url "$E" --credentials /host/creds/service-account.json --audience sluice-image-test \
        --jwks-url "$E/oauth2/v3/certs" --allow-email pubsub-push@emulator.iam.gserviceaccount.com \
        --operator-token "$OPTOK" --poll-interval 10m "$@" >"$TMPD/$name.out" 2>"$TMPD/$name.err" &
    SRV_PID=$!
    EMU_PIDS+=("$SRV_PID")
    for _ in $(seq 1 1500); do
        [ -s "$TMPD/share/out/$name.ready" ] && break
        kill -0 "$SRV_PID" 2>/dev/null || { cat "$TMPD/$name.err" >&2; echo "FAIL: serve in the image died" >&2; exit 1; }
        sleep 0.02
    done
    [ -s "$TMPD/share/out/$name.ready" ] || { cat "$TMPD/$name.err" >&2; echo "FAIL: serve in the image not ready" >&2; exit 1; }
    S=$(tr -d '\n' <"$TMPD/share/out/$name.ready")
}
# serve_pid: the image's sluice process under our buildah run (buildah does not forward SIGTERM: it kills its
# child, whereas a container runtime sends STOPSIGNAL to the entrypoint, which is sluice itself).
serve_pid() {
    local p=$SRV_PID next
    for _ in 1 2 3 4 5 6; do
        [ "$(cat "/proc/$p/comm" 2>/dev/null)" = sluice ] && { echo "$p"; return 0; }
        next=$(ps -o pid= --ppid "$p" | head -1 | tr -d ' ')
        [ -n "$next" ] || break
        p=$next
    done
    return 1
}
stop_serve() { # NAME: SIGTERM to the image's sluice; expects it to stop cleanly and buildah run to exit 0
    local rc=0 pid
    pid=$(serve_pid) || { fail "$1: no sluice process under buildah run $SRV_PID"; kill "$SRV_PID"; wait "$SRV_PID" || true; return; }
    kill -TERM "$pid"; wait "$SRV_PID" || rc=$?
    expect_eq "$1: SIGTERM stops serve with exit 0" "$rc" 0
}

port=$(free_port)
ctr_serve main "$port" --
expect_eq "serve listens on \$PORT" "$S" "http://127.0.0.1:$port"
sget /readyz >/dev/null; expect_eq "ready" "$(jget d.ready)" true
# the image bakes in the repo's workflows/: the names serve lists are the ones `sluice validate` finds there
want_wf=$("$SLUICE_BIN" validate "$SLUICE_SRC/workflows" | sed -n "s/^ok .*: workflow '\([^']*\)'.*/\1/p" | sort | tr '\n' ' ')
expect_eq "the shipped workflows are baked in" \
    "$(sget /v1/workflows >/dev/null; jget 'table.concat((function() local t = {} for _, w in ipairs(d.workflows) do t[#t+1] = w.name end table.sort(t) return t end)(), " ") .. " "')" "$want_wf"
buildah run --isolation chroot --env "PORT=$port" "$CTR" -- sluice health >"$TMPD/health.out" \
    && ok "sluice health (the HEALTHCHECK) inside the image: $(cut -c1-40 "$TMPD/health.out")" || fail "health: $(cat "$TMPD/health.out")"

B=$E; expect_eq "emulator pushes to serve" "$(req POST /emulator/config "{\"events\":{\"push_url\":\"$S/v1/events/pubsub\",\"audience\":\"sluice-image-test\"}}")" 200
id=$("$SLUICE_BIN" start example --server "$S" --token "$OPTOK" --param date=2026-11-27) || fail "start example"
finished() { sget "/v1/runs/$id" >/dev/null; case "$(jget d.run.state)" in succeeded|failed|cancelled) return 0 ;; esac; return 1; }
poll_until 60 finished || fail "run $id did not finish (state $(jget d.run.state))"
sget "/v1/runs/$id" >/dev/null
expect_eq "the run advanced to the end" "$(jget d.run.state)" succeeded
steps=$(jget 'count(d.run.steps, function(s) return s.state == "succeeded" end)')
[ "$steps" -ge 3 ] && ok "$steps steps succeeded (event-driven: poll interval 10 min)" || fail "only $steps steps succeeded"
curl -s "$S/metrics" >"$TMPD/metrics"
grep -q 'sluice_events_total{source="pubsub",outcome="recorded"}' "$TMPD/metrics" && ok "pushes recorded" \
    || fail "no recorded pushes in /metrics"
stop_serve main

# a mounted workflows directory replaces the shipped ones; a file added there is reloaded
mkdir -p "$TMPD/wf"
cat >"$TMPD/wf/one.lua" <<'LUA'
return { name = "one", project = "p", region = "europe-west1", start = "A",
  steps = { A = { job_name = "one-a", template = "gs://bkt/a.json" } } }
LUA
chmod -R a+rX "$TMPD/wf"
port=$(free_port)
ctr_serve mounted "$port" -v "$TMPD/wf:/etc/sluice/workflows:ro" --
names() { sget /v1/workflows >/dev/null; jget 'table.concat(map(d.workflows, function(w) return w.name end), ",")'; }
expect_eq "the mount replaces the shipped workflows" "$(names)" "one"
sed 's/"one"/"two"/; s/one-a/two-a/' "$TMPD/wf/one.lua" >"$TMPD/wf/.two.tmp" && chmod a+r "$TMPD/wf/.two.tmp" \
    && mv "$TMPD/wf/.two.tmp" "$TMPD/wf/two.lua"
has_two() { names | grep -q two; }
poll_until 10 has_two && ok "a file added to the mount is reloaded" || fail "reload: workflows $(names)"
stop_serve mounted
echo "image size: $size bytes"
finish
