#!/usr/bin/env bash
# `make image`: builds Sluice's container image with podman, from a Debian 12 base image made here.
# No registry is reachable on the build machines, so the base comes from the Debian mirror the machine already
# uses (its apt sources): mmdebstrap (minbase, docs/man/locales left out as in debian:bookworm-slim) →
# `podman import` → `podman build --isolation chroot --build-arg BASE=...` (chroot isolation: no user
# namespaces or network setup needed; RUN steps share the host network).
#   scripts/image.sh [TAG]              TAG defaults to localhost/sluice:dev
# Environment: SLUICE_IMAGE_BASE=IMAGE  use that base instead (e.g. docker.io/library/debian:bookworm-slim)
#              SLUICE_IMAGE_REBUILD_BASE=1  rebuild the local base even if it exists
# Prints the image's size on the last line ("image TAG: N bytes").
set -euo pipefail
cd "$(dirname "$0")/.."
tag=${1:-localhost/sluice:dev}
for t in podman mmdebstrap; do
    command -v "$t" >/dev/null || { echo "image: $t is missing (scripts/deps.sh image installs it)" >&2; exit 1; }
done

# The machine's enabled Debian 12 sources as one-line "deb URI SUITE COMPONENTS" entries: deb822 *.sources
# paragraphs and *.list lines, suites bookworm*, so third-party repositories stay out of the image.
debian_sources() {
    local files=()
    [ -f /etc/apt/sources.list ] && files+=(/etc/apt/sources.list)
    for f in /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources; do [ -f "$f" ] && files+=("$f"); done
    for f in "${files[@]}"; do
        case "$f" in
        *.sources) awk '
            function flush() { if (types ~ /(^| )deb( |$)/ && enabled != "no") {
                                 n = split(uris, u, " "); m = split(suites, s, " ")
                                 for (i = 1; i <= n; i++) for (j = 1; j <= m; j++) print "deb " u[i] " " s[j] " " comps }
                               types = uris = suites = comps = ""; enabled = "" }
            /^[ \t]*#/ { next }
            /^[ \t]*$/ { flush(); next }
            { k = tolower($1); sub(/:$/, "", k); v = $0; sub(/^[^:]*:[ \t]*/, "", v)
              if (k == "types") types = v; else if (k == "uris") uris = v; else if (k == "suites") suites = v
              else if (k == "components") comps = v; else if (k == "enabled") enabled = tolower(v) }
            END { flush() }' "$f" ;;
        *) grep -E '^[[:space:]]*deb[[:space:]]' "$f" | sed -E 's/\[[^]]*\][[:space:]]*//' ;;
        esac
    done | awk '$3 ~ /^bookworm/' | sort -u
}

base=${SLUICE_IMAGE_BASE:-}
if [ -z "$base" ]; then
    mapfile -t sources < <(debian_sources)
    [ ${#sources[@]} -gt 0 ] || { echo "image: no enabled Debian 12 (bookworm) entry in /etc/apt/sources*" >&2; exit 1; }
    base="localhost/sluice-base:bookworm-$(printf '%s\n' "${sources[@]}" | sha256sum | cut -c1-12)"
    if [ -n "${SLUICE_IMAGE_REBUILD_BASE:-}" ] || ! podman image exists "$base"; then
        echo "image: building $base with mmdebstrap from:" >&2
        printf '  %s\n' "${sources[@]}" >&2
        work=$(mktemp -d /tmp/sluice-base.XXXXXX)
        trap 'rm -rf "$work"' EXIT
        mmdebstrap --quiet --variant=minbase --hook-dir=/usr/share/mmdebstrap/hooks/merged-usr \
            --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/doc/*' \
            --dpkgopt='path-include=/usr/share/doc/*/copyright' --dpkgopt='path-exclude=/usr/share/locale/*' \
            --dpkgopt='path-exclude=/usr/share/info/*' --aptopt='Acquire::Languages "none"' \
            bookworm "$work/base.tar" "${sources[@]}" >"$work/mmdebstrap.log" 2>&1 \
            || { cat "$work/mmdebstrap.log" >&2; echo "image: mmdebstrap failed" >&2; exit 1; }
        podman import --quiet "$work/base.tar" "$base" >/dev/null
    fi
fi
echo "image: building $tag on $base" >&2
podman build --quiet --isolation chroot --format docker --build-arg "BASE=$base" -t "$tag" -f Dockerfile . >/dev/null
echo "image $tag: $(podman image inspect --format '{{.Size}}' "$tag") bytes"
