# bench_lib: helpers sourced by bench/serve.sh and bench/replicas.sh (not a benchmark itself). They need BIN (the
# sluice binary), TMPD (a temp dir) and PIDS (an array the caller's cleanup kills).
# wait_file PATH: waits up to 10 s for PATH to be non-empty, else exits 1.
wait_file() { for _ in $(seq 1 1000); do [ -s "$1" ] && return 0; sleep 0.01; done; echo "no $1" >&2; exit 1; }
# bench_emulator: starts the emulator (auth off) and sets E (its URL), AUD and TOKEN (an OIDC token for AUD from
# the emulator's metadata identity endpoint; serve verifies it against the emulator's JWKS).
bench_emulator() {
    "$BIN" emulator --port 0 --ready-file "$TMPD/emu" --no-auth >/dev/null 2>"$TMPD/emu.err" &
    PIDS+=($!)
    wait_file "$TMPD/emu"
    E=$(tr -d '\n' <"$TMPD/emu")
    AUD=https://sluice.example/push
    TOKEN=$(curl -s -H 'Metadata-Flavor: Google' "$E/computeMetadata/v1/instance/service-accounts/default/identity?audience=$AUD")
}
