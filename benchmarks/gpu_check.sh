#!/usr/bin/env bash
# The GPU checks of the Miras kernels as one time-limited run, for a CUDA machine without network access:
#
#   bash benchmarks/gpu_check.sh wheels [DIR]   # where pip reaches an index: the wheels the peers need, into DIR
#   bash benchmarks/gpu_check.sh run LOGDIR     # on the GPU: the gpu-marked tests, then the benchmark
#
# `wheels` downloads fla (the Gated DeltaNet and DeltaNet peers) and titans-pytorch with the dependencies that a
# CUDA image holding torch, triton, transformers, einops, numpy and tqdm lacks; all are pure-Python wheels, so they
# install on any Python and platform. `run` installs WHEELS (default .whl) into a temporary target where that folder
# exists; runs every gpu-marked test of tests/kernels and tests/miras with the first autotune config alone
# (MIRAS_AUTOTUNE=first: the tests check values, and each further config is one more compile); then `python -m
# benchmarks.speed $BENCH_ARGS` (default: B = 4, T = 4096, H = 16 at D = 64 and 128, the peers first), also with one
# config unless BENCH_AUTOTUNE=all (compiling five configs of every kernel takes minutes; the record says which).
# Each step has its own limit (TEST_TIMEOUT, default 200, and BENCH_TIMEOUT, 330 seconds). The benchmark rewrites
# its record after every row, so a run stopped by its limit keeps what it measured. Logs, the tests' junit xml and
# miras_cuda.{md,json} land in LOGDIR: copy the record to reports/benchmarks/ and commit it. A tree copied without
# .git names its commit in MIRAS_GIT_SHA.
set -uo pipefail

PYTHON=${PYTHON:-python3}
WHEEL_PINS=(
    fla-core==0.6.0 flash-linear-attention==0.6.0
    titans-pytorch==0.5.5 accelerated-scan==0.3.1 assoc-scan==0.0.6 axial-positional-embedding==0.3.12
    einx==0.4.3 frozendict==2.5.1 hyper-connections==0.4.11 loguru==0.7.3 pyvers==0.2.3
    rotary-embedding-torch==0.9.1 tensordict==0.15.3 torch-einops-utils==0.2.0 x-transformers==2.31.10
)
DEFAULT_BENCH_ARGS="--shapes 4x4096x16x64 4x4096x16x128
    --methods gated_deltanet deltanet sdpa flash_attention moneta_linear yaad_linear memora_linear
    moneta yaad memora memora_tangent naive:yaad titans_pytorch
    --decoders fused:yaad chunk:yaad torch:yaad fused:yaad_linear chunk:yaad_linear fused:memora chunk:memora"

usage() {
    sed -n '2,5p' "$0" | sed 's/^# \{0,1\}//' >&2
    exit 2
}

wheels() {
    local dir=${1:-.whl}
    mkdir -p "$dir" || exit 1
    "$PYTHON" -m pip download --no-deps --only-binary=:all: --dest "$dir" "${WHEEL_PINS[@]}" || exit 1
    local odd
    odd=$(find "$dir" -name '*.whl' ! -name '*-none-any.whl')
    if [ -n "$odd" ]; then
        echo "not pure-Python, so tied to this machine's Python and platform: $odd" >&2
        exit 1
    fi
    echo "wrote ${#WHEEL_PINS[@]} wheels to $dir"
}

run() {
    local logs=${1:?LOGDIR}
    mkdir -p "$logs" || exit 1
    logs=$(cd "$logs" && pwd)
    local wheels=${WHEELS:-.whl}
    if compgen -G "$wheels/*.whl" >/dev/null; then
        local site
        site=$(mktemp -d)
        "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --target "$site" "$wheels"/*.whl || exit 1
        export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
    fi
    export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
    {
        date -u
        nvidia-smi || true
        "$PYTHON" - <<'PY'
import importlib

from kernels.utils import git_tag

for name in ("torch", "triton", "fla", "titans_pytorch"):
    try:
        print(name, getattr(importlib.import_module(name), "__version__", "unknown"))
    except ImportError as error:
        print(name, "missing:", error)
print("git", git_tag("."))
PY
    } >"$logs/env.txt" 2>&1

    local tests
    tests=$(grep -rl "pytest\.mark\.gpu" tests/kernels tests/miras | sort)
    [ -n "$tests" ] || { echo "no gpu-marked tests under tests/kernels and tests/miras" >&2; exit 1; }
    # shellcheck disable=SC2086
    MIRAS_AUTOTUNE=first timeout -s INT -k 15 "${TEST_TIMEOUT:-200}" \
        "$PYTHON" -m pytest -v --tb=short -m gpu -p no:cacheprovider --junitxml "$logs/gpu_tests.xml" $tests \
        2>&1 | tee "$logs/gpu_tests.log"
    local tests_rc=${PIPESTATUS[0]}

    # shellcheck disable=SC2086
    MIRAS_AUTOTUNE=${BENCH_AUTOTUNE:-first} timeout -s INT -k 15 "${BENCH_TIMEOUT:-330}" \
        "$PYTHON" -m benchmarks.speed ${BENCH_ARGS:-$DEFAULT_BENCH_ARGS} --out "$logs" 2>&1 | tee "$logs/bench.log"
    local bench_rc=${PIPESTATUS[0]}
    echo "gpu tests: exit $tests_rc; benchmark: exit $bench_rc (124: stopped at its limit)" | tee -a "$logs/env.txt"
    [ "$tests_rc" -eq 0 ] && [ "$bench_rc" -eq 0 ]
}

case "${1:-}" in
    wheels) shift; wheels "$@" ;;
    run) shift; run "$@" ;;
    *) usage ;;
esac
