#!/usr/bin/env bash
# The GPU check, one command: carried wheels installed offline, then every GPU path timed, each step
# time-boxed, all figures in DIR/device_check.json (DIR = $OUT when set, else --out DIR).
#
#   bash benchmarks/fetch_device_wheels.sh                 # here, once: the missing packages into .whl/
#   bash benchmarks/device_check.sh --out DIR              # there (H200): about 7.5 minutes at most
#   bash benchmarks/device_check.sh --dry-run --out DIR    # anywhere: small volume, CPU, no wheels
#
# Other options go to benchmarks/device_check.py (--budget SECONDS, --only STEP,STEP, --keep-work);
# see docs/performance.md ("GPU check") for what each figure means.
set -u
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="${PYTHON:-python3}"

dry=0
out_arg=""
rest=()
while [ $# -gt 0 ]; do
    case "$1" in
        --dry-run) dry=1; rest+=("$1") ;;
        --out) out_arg="${2:-}"; shift ;;
        --out=*) out_arg="${1#--out=}" ;;
        *) rest+=("$1") ;;
    esac
    shift
done
DIR="${OUT:-$out_arg}"
if [ -z "$DIR" ]; then
    echo "error: --out DIR: where device_check.json goes (or set OUT)" >&2
    exit 2
fi
mkdir -p "$DIR" || { echo "error: --out $DIR: cannot create the folder" >&2; exit 2; }

# carried wheels: installed into a private folder that goes first on the path (nothing system-wide)
wheels="skipped (dry run)"
if [ "$dry" = 0 ]; then
    shopt -s nullglob
    whl=("$REPO"/.whl/*.whl)
    if [ ${#whl[@]} -eq 0 ]; then
        wheels="none found in .whl/ (run benchmarks/fetch_device_wheels.sh and carry .whl)"
    else
        site="${DEVICE_SITE:-/tmp/emchunks-site}"
        t0=$(date +%s.%N)
        if "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
                --target "$site" "${whl[@]}" >"$DIR/wheels.log" 2>&1; then
            wheels="ok: ${#whl[@]} wheels in $(awk "BEGIN{printf \"%.1f\", $(date +%s.%N) - $t0}") s"
        else
            wheels="failed: pip install exited non-zero (see wheels.log)"
        fi
        export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
    fi
fi
# emchunks runs from the source tree (not pip-installed there)
export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1
cd "$REPO" || exit 2
exec "$PY" "$REPO/benchmarks/device_check.py" --out "$DIR" --wheels "$wheels" "${rest[@]}"
