#!/usr/bin/env bash
# test_self_contained: the repository stands alone. A user's clone has nothing beside it, so no tracked file may
# read, name or link a path outside the tree (regression: three tests read their fixtures from a sibling
# directory that only the developers' machines have, and failed on every fresh clone). Checks every tracked
# file (or, outside a git checkout, every file of the source tree but build directories) for the names of
# that directory and of the documents in it, and that every sample the tests read is in tests/data/samples.
set -euo pipefail
: "${SLUICE_SRC:?}"
cd "$SLUICE_SRC"
fails=0
# The patterns are spelled in pieces so that this file does not match itself.
dir="shar""ed"
pats=("\\.\\./$dir" "SLUICE_${dir^^}" "$dir/reference" "gcp""-facts" "original""-approach" "$dir/hooks")
if git rev-parse --is-inside-work-tree >/dev/null 2>&1; then
    mapfile -t files < <(git ls-files)
else
    mapfile -t files < <(find . -type f -not -path './build*' -not -path './.git/*' | sed 's|^\./||')
fi
[ "${#files[@]}" -gt 50 ] || { echo "FAIL: found only ${#files[@]} files under $SLUICE_SRC"; exit 1; }
for p in "${pats[@]}"; do
    hits=$(printf '%s\0' "${files[@]}" | xargs -0 grep -lIE -e "$p" 2>/dev/null || true)
    if [ -n "$hits" ]; then
        echo "FAIL: files naming '$p' (outside the repository):"; echo "$hits" | sed 's/^/  /'
        fails=$((fails + 1))
    fi
done
# Symbolic links must stay inside the tree.
for f in "${files[@]}"; do
    [ -L "$f" ] || continue
    t=$(readlink -f "$f")
    case "$t" in "$(pwd -P)"/*) ;; *) echo "FAIL: $f links outside the repository ($t)"; fails=$((fails + 1)) ;; esac
done
# Every sample a test names exists in the repository.
for s in $(grep -rhoE '[a-z0-9-]+\.(json|http)' tests/unit/test_events.c tests/integration/test_dataflow.c \
           tests/blackbox/test_cli.sh tests/blackbox/test_emulator_api.sh | sort -u); do
    case "$s" in dataflow-*|eventarc-*|logentry-*|pubsub-*) ;; *) continue ;; esac
    [ -f "tests/data/samples/$s" ] || { echo "FAIL: sample $s is not in tests/data/samples"; fails=$((fails + 1)); }
done
# The samples are what their generator writes (so they can be changed in one place, and are not hand-edited).
gen=$(mktemp -d)
trap 'rm -rf "$gen"' EXIT
python3 tests/data/samples/make_samples.py "$gen"
for f in "$gen"/*; do
    cmp -s "$f" "tests/data/samples/$(basename "$f")" || { echo "FAIL: tests/data/samples/$(basename "$f") differs from what make_samples.py writes"; fails=$((fails + 1)); }
done
[ "$fails" -eq 0 ] || exit 1
echo "ok: ${#files[@]} files, none names anything outside the repository"
