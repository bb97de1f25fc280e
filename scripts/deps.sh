#!/usr/bin/env bash
# Installs the Debian 12 packages Sluice builds, tests and benchmarks with, only when one is missing.
# python3-flask, python3-googleapi and gunicorn run the benchmark's Cloud Function peer (bench/peers/cloudfunction).
# postgresql provides the server binaries (/usr/lib/postgresql/15/bin) the PostgreSQL store tests start in a
# temp dir; its own cluster service is not used (nor pgbouncer's: tests/blackbox/test_store_pooled.sh runs its own).
# Idempotent and quiet when nothing is needed. Needs root or sudo only when something must be installed.
#   scripts/deps.sh          what building, testing and benchmarking need (every make target)
#   scripts/deps.sh image    also what `make image` and `make image-test` need (podman, buildah, mmdebstrap:
#                            heavy, so only those targets ask for them)
#   scripts/deps.sh --fuzz   clang and its sanitizer and libFuzzer runtimes instead, which only `make fuzz` needs
set -euo pipefail
pkgs=(build-essential cmake pkg-config liblua5.4-dev lua-cjson-dev libcurl4-openssl-dev libssl-dev
      libmicrohttpd-dev libsqlite3-dev libjansson-dev libcmocka-dev wrk lua5.4 curl python3 sqlite3
      libpq-dev postgresql pgbouncer node-dagre-layout chromium python3-flask python3-googleapi gunicorn)
if [ "${1:-}" = image ]; then
    pkgs+=(podman buildah mmdebstrap uidmap)
fi
[ "${1:-}" = --fuzz ] && pkgs=(clang libclang-rt-14-dev) # the runtime is only a Recommends of clang-14
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
# npm (tests/terraform: an HCL parser from npm) by command: a Node.js from elsewhere (nodesource) bundles its
# own npm and conflicts with Debian's package.
command -v npm >/dev/null || missing+=(nodejs npm)
[ ${#missing[@]} -eq 0 ] && exit 0
echo "deps: installing ${missing[*]}" >&2
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
