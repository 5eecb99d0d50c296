#!/usr/bin/env bash
# One command on a machine with one NVIDIA GPU, torch installed and no network access: installs the
# wheels of .whl/ (made by bench/fetch_gpu_wheels.sh) into /tmp/site, then runs bench/gpu_check.py,
# which writes every check into one JSON file ($OUT/gpu_check.json when OUT is set, else
# bench/results/gpu_check.json) and prints where. Without a GPU it runs the CPU checks and marks
# the others skipped.
#
# Exit code 0 when the JSON was written, also if checks failed (they are in the file); non-zero when
# the wheels do not install or the driver itself crashes.
#
#   bash bench/gpu_check.sh [--out FILE] [--budget-s SECONDS]
set -euo pipefail
cd "$(dirname "$0")/.."

site=/tmp/site
if compgen -G ".whl/*.whl" >/dev/null; then
    # --no-deps: torch, numpy and the rest are the machine's own; only what .whl/ holds goes in.
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target "$site" .whl/*.whl
    export PYTHONPATH="$site:$PWD"
else
    echo "gpu_check: no .whl/*.whl (bash bench/fetch_gpu_wheels.sh makes them): using the installed packages" >&2
    export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
fi

export PYTHONUNBUFFERED=1
python3 bench/gpu_check.py "$@"
