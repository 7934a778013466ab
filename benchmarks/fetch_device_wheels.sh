#!/usr/bin/env bash
# Download the wheels of benchmarks/device_wheels.txt (cp312, manylinux x86_64, no dependencies) into .whl/
# (git-ignored) for the GPU machine, and check that they and the source tree fit the 60 MiB we allow for
# a device call (its limit is 64 MiB). Run from anywhere, on a machine that reaches PyPI:
#   bash benchmarks/fetch_device_wheels.sh
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="${PYTHON:-python3}"
DEST="$REPO/.whl"
LIMIT_MIB=60
mkdir -p "$DEST"
rm -f "$DEST"/*.whl  # one version of each: two would stop the install there
platforms=()
for p in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_24_x86_64 manylinux_2_17_x86_64 \
         manylinux2014_x86_64 manylinux_2_5_x86_64 manylinux1_x86_64; do
    platforms+=(--platform "$p")
done
grep -v '^\s*#' "$REPO/benchmarks/device_wheels.txt" | grep -v '^\s*$' | while read -r spec; do
    "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        "${platforms[@]}" -d "$DEST" "$spec" 2> >(grep -v "is ignored: it is neither a file nor a directory" >&2)
done
wanted=$(grep -v '^\s*#' "$REPO/benchmarks/device_wheels.txt" | grep -cv '^\s*$')
got=$(ls "$DEST"/*.whl | wc -l)
wheels=$(du -cb "$DEST"/*.whl | tail -1 | cut -f1)
# what travels besides: tracked files and untracked files git does not ignore
tree=$(cd "$REPO" && git ls-files -z --cached --others --exclude-standard | xargs -0 du -cb 2>/dev/null \
       | grep total$ | awk '{s += $1} END {print s + 0}')
total=$((wheels + tree))
mib() { awk "BEGIN {printf \"%.1f\", $1 / 1048576}"; }
echo "wheels: $got of $wanted in $DEST, $(mib "$wheels") MiB"
echo "source tree: $(mib "$tree") MiB; together $(mib "$total") MiB (limit $LIMIT_MIB MiB)"
if [ "$got" -ne "$wanted" ]; then
    echo "error: expected $wanted wheels, found $got" >&2
    exit 1
fi
if [ "$total" -gt $((LIMIT_MIB * 1048576)) ]; then
    echo "error: wheels and source tree exceed $LIMIT_MIB MiB" >&2
    exit 1
fi
