#!/usr/bin/env bash
# Run here, where PyPI is reachable: puts into .whl/ the wheels that bench/gpu_check.sh installs on
# a GPU machine without network access (CPython 3.12, x86_64 Linux).
#
# That machine (the device tool's nvidia-h200 image) already has torch, torchvision, numpy, pillow,
# tensorboard, tqdm, matplotlib, PyYAML, packaging, cloudpickle and typing_extensions: what
# hydra-core, omegaconf and submitit require beyond themselves (their Requires-Dist, printed below).
# It lacks hydra-core, omegaconf, their ANTLR runtime and submitit. torch and torchvision are never
# fetched (gigabytes, and the machine's own match its CUDA driver).
#
# The versions are the ones installed in this checkout's .venv (else the python3 on PATH), so the GPU
# runs use what the tests here use.
#
#   bash bench/fetch_gpu_wheels.sh        # then, on the GPU machine: bash bench/gpu_check.sh
set -euo pipefail
cd "$(dirname "$0")/.."

PACKAGES=(hydra-core omegaconf antlr4-python3-runtime submitit)
python=python3
if [[ -x .venv/bin/python ]]; then
    python=.venv/bin/python
fi

installed_version() {
    "$python" -m pip show "$1" 2>/dev/null | sed -n 's/^Version: //p'
}

# A wheel's file name starts with its project name, lower-case, "-" written as "_".
wheel_stem() {
    echo "$1" | tr '[:upper:]-' '[:lower:]_'
}

fetch() {
    local name=$1 version=$2
    # Only one version of each may be in .whl/: pip refuses to install two at once.
    rm -f .whl/"$(wheel_stem "$name")"-*.whl
    if ! "$python" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
        --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
        --platform manylinux2014_x86_64 -d .whl "$name==$version"; then
        # Some releases are a source archive only (antlr4-python3-runtime 4.9.3, which omegaconf
        # pins): build the wheel here, which is only right for a pure-Python package.
        echo "fetch_gpu_wheels: no wheel of $name $version on the index; building it from source"
        "$python" -m pip wheel -q --no-deps -w .whl "$name==$version"
        if ! compgen -G ".whl/$(wheel_stem "$name")-$version-*-none-any.whl" >/dev/null; then
            echo "fetch_gpu_wheels: $name $version built into a platform wheel; it needs a wheel for CPython 3.12 x86_64" >&2
            exit 1
        fi
    fi
}

mkdir -p .whl
wheels=()
for name in "${PACKAGES[@]}"; do
    version=$(installed_version "$name")
    if [[ -z $version ]]; then
        echo "fetch_gpu_wheels: $name is not installed in $python (pip install -e '.[dev]' first)" >&2
        exit 1
    fi
    fetch "$name" "$version"
    wheels+=(.whl/"$(wheel_stem "$name")"-"$version"-*.whl)
done

echo "fetch_gpu_wheels: their requirements (the GPU machine must have those not listed above):"
for wheel in "${wheels[@]}"; do
    unzip -p "$wheel" '*.dist-info/METADATA' | grep '^Requires-Dist' | grep -v 'extra ==' |
        sed "s|^|  $(basename "$wheel"): |" || true
done
echo "fetch_gpu_wheels: wheels in .whl/:"
ls -l "${wheels[@]}"
du -ch "${wheels[@]}" | tail -n 1
