#!/usr/bin/env bash
# The GPU check, for an H200 machine with no network: one run of at most 5
# minutes (benchmarks/RESULTS.md keeps its last output; README "Backends" says
# how to read it).
#
#   bash benchmarks/gpu_check.sh            on the GPU machine
#   bash benchmarks/gpu_check.sh --tiny     anywhere: Numba's CUDA simulator, tiny sizes
#   GPU_CHECK_ONLY="kernels pipeline" bash benchmarks/gpu_check.sh
#                                           a rerun of some sections (wheels and
#                                           preflight always run)
#
# It installs nothing from the network: it runs on the machine's python3
# (numba, numba-cuda, CuPy, cuda-core, cuda-pathfinder, NumPy, Pillow, SciPy,
# pytest, hypothesis and prometheus-client are in the device image), with
# this checkout on PYTHONPATH, plus the wheels of .wheels/ when that folder
# was carried: PyWavelets and grpcio's health and reflection services are not
# in the image, nor PyAV (the video decoder, with its FFmpeg), and its protobuf
# and grpcio may be older than our generated code needs. Fetch them here, once
# (.wheels/ is git-ignored):
#
#   for p in PyWavelets==1.9.0 protobuf==7.36.2 grpcio==1.85.3 av==18.1.0 \
#            grpcio-health-checking==1.85.1 grpcio-reflection==1.85.1; do
#     python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
#       --implementation cp --platform manylinux_2_28_x86_64 \
#       --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
#       --platform manylinux2014_x86_64 -d .wheels "$p"; done
#
# (48 MB, under the tool's 64 MiB; PyAV is 36 of it). Carry no NVVM (nvidia-nvvm, numba-cuda[cu13]): numba-cuda finds the
# system toolkit's through CUDA_HOME, which this script sets, and an NVVM newer
# than the image's nvJitLink may not link. If the preflight says numba-cuda or
# CuPy is older than tested, add numba-cuda==0.30.4 (no extras) or
# cupy-cuda13x to the list. Then call the device tool once, from the repo root:
#
#   run(command="bash benchmarks/gpu_check.sh", carry=[".wheels"], timeout_s=330)
#
# 330 s covers the check's own 300 s budget and the wheels; with the machine's
# start (1 to 2 minutes) that leaves room in a 15-minute lease for one rerun
# of the failed sections (GPU_CHECK_ONLY), or call give_back. The whole output
# is also written to $OUT/gpu_check.log (with tests.xml, load_cpu.json and
# load_gpu.json beside it), so the 12,000-character tail loses nothing.
#
# Sections, each under its own `timeout` and all within GPU_CHECK_BUDGET (300 s):
#   wheels     install .wheels/ into /tmp/appliance-site (when carried)
#   preflight  benchmarks/gpu_preflight.py: versions, driver, NVVM, a tiny kernel
#              on a CuPy array and on a numba stream made from a CuPy stream;
#              a failure stops the check (exit 2)
#   tests      tests/kernels and the sm_90 PTX tests on the device, with
#              APPLIANCE_REQUIRE_GPU=1 (no GPU: every test fails, none skips)
#   kernels    benchmarks/gpu_kernels.py: kernel rows, the digest sweep and the
#              line "digest_cpu_min_bytes: N (measured)"
#   pipeline   benchmarks/gpu_pipeline.py: the GPU pipeline (gpu.strict) vs the CPU's
#   video      benchmarks/gpu_video.py: videos (tmk, vpdq) through both pipelines
#   load-cpu   benchmarks/load.py, batching off and on, CPU backend (the peer)
#   load-gpu   the same phases, callers and data, --backend gpu, APPLIANCE_GPU_STRICT=1
# Each benchmark prints its rows as measured and ends with "fallbacks: N"; a
# section with N > 0 fails even if its command exited 0. The summary table
# ends the output; exit 0: every section ok; 1: a section failed, timed out or
# was skipped for want of budget; 2: the preflight failed (nothing else ran).
set -uo pipefail

GPU_CHECK_BUDGET=${GPU_CHECK_BUDGET:-300}
SECTION_ROWS=()  # "name|state|seconds|limit|fallbacks" per section run
CROSSOVER=""     # the kernels section's "digest_cpu_min_bytes: ..." line
status=0
_check_began=$SECONDS

# section NAME LIMIT COMMAND...: run COMMAND under `timeout` (LIMIT seconds, or
# what is left of the budget if less), print its output as it comes, record
# ok / FAIL / TIMEOUT / SKIPPED with its seconds and its "fallbacks: N".
section() {
    local name=$1 limit=$2
    shift 2
    # A rerun on a fresh machine needs the wheels and the preflight again.
    if [ -n "${GPU_CHECK_ONLY:-}" ] && [ "$name" != preflight ] && [ "$name" != wheels ] \
        && [[ " $GPU_CHECK_ONLY " != *" $name "* ]]; then
        skipped "$name" "not in GPU_CHECK_ONLY"
        return 0
    fi
    local left=$((GPU_CHECK_BUDGET - (SECONDS - _check_began)))
    if ((left < 5)); then
        echo "== $name: SKIPPED (the check's ${GPU_CHECK_BUDGET} s budget is spent)"
        SECTION_ROWS+=("$name|SKIPPED|0|$limit|-")
        status=$((status > 1 ? status : 1))
        return 1
    fi
    ((limit > left)) && limit=$left
    echo "== $name (limit ${limit} s, at $((SECONDS - _check_began)) s of ${GPU_CHECK_BUDGET} s)"
    local out rc started=$SECONDS
    out=$(mktemp)
    # The whole process group is signalled at the limit (servers too), then killed.
    timeout --kill-after=5 "$limit" "$@" 2>&1 | tee "$out"
    rc=${PIPESTATUS[0]}
    local took=$((SECONDS - started)) state fallbacks
    fallbacks=$(sed -n 's/^fallbacks: \([0-9][0-9]*\).*/\1/p' "$out" | tail -n 1)
    local crossover
    crossover=$(grep '^digest_cpu_min_bytes:' "$out" | tail -n 1)
    if [ -n "$crossover" ]; then CROSSOVER=$crossover; fi
    rm -f "$out"
    case $rc in
        0) state=ok ;;
        124 | 137) state=TIMEOUT ;;
        *) state=FAIL ;;
    esac
    if [ "$state" = ok ] && [ "${fallbacks:-0}" != 0 ]; then
        state=FAIL # a device fault: the figures are not the GPU's
    fi
    echo "== $name: $state in ${took} s (exit $rc${fallbacks:+, fallbacks $fallbacks})"
    SECTION_ROWS+=("$name|$state|$took|$limit|${fallbacks:--}")
    if [ "$state" != ok ]; then
        status=$((status > 1 ? status : 1))
        return 1
    fi
}

# skipped NAME WHY: a section that does not apply here (not a failure).
skipped() {
    echo "== $1: not run ($2)"
    SECTION_ROWS+=("$1|not-run|0|-|-")
}

summary() {
    echo "== summary: $((SECONDS - _check_began)) s of the ${GPU_CHECK_BUDGET} s budget"
    printf '%-10s %-8s %8s %8s %10s\n' section result seconds limit fallbacks
    local row name state took limit fallbacks
    for row in "${SECTION_ROWS[@]}"; do
        IFS='|' read -r name state took limit fallbacks <<<"$row"
        printf '%-10s %-8s %8s %8s %10s\n' "$name" "$state" "$took" "$limit" "$fallbacks"
    done
    if [ -n "$CROSSOVER" ]; then echo "$CROSSOVER"; fi
    echo "== gpu_check: $([ "$status" = 0 ] && echo ok || echo FAILED) (exit $status)"
}

# Sourced (tests/test_gpu_check.py): the functions above, nothing run.
if [[ "${BASH_SOURCE[0]}" != "$0" ]]; then
    return 0
fi

cd "$(dirname "$0")/.." || exit 2
if [ -n "${OUT:-}" ] && [ -z "${GPU_CHECK_LOGGING:-}" ]; then
    # Everything into $OUT/gpu_check.log as well, written as it comes.
    mkdir -p "$OUT"
    GPU_CHECK_LOGGING=1 bash "$0" "$@" 2>&1 | tee "$OUT/gpu_check.log"
    exit "${PIPESTATUS[0]}"
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
# The device image's python3; here (--tiny on a development machine) the
# project's virtual environment when there is one, which has numba-cuda.
if [ -n "${PYTHON:-}" ]; then
    PY=$PYTHON
elif [ -x .venv/bin/python ]; then
    PY=.venv/bin/python
else
    PY=python3
fi
TINY=0
if [ "${1:-}" = "--tiny" ]; then TINY=1; fi

echo "== gpu_check $(date -u +%Y-%m-%dT%H:%M:%SZ) $(git rev-parse --short HEAD 2>/dev/null || echo '(no git)')$( ((TINY)) && echo ' --tiny (simulator)')"
if ((TINY)); then
    export NUMBA_ENABLE_CUDASIM=1
    # Measured on the 2-vCPU development VM.
    echo "budget: expected ~170 s here (tests ~110, kernels ~25, pipeline ~20, load ~10); limits: preflight 60, tests 200, kernels 90, pipeline 90, load-cpu 60; all within ${GPU_CHECK_BUDGET} s"
else
    export APPLIANCE_REQUIRE_GPU=1
    # Estimates until the first device run replaces them (kernels cached by the tests).
    echo "budget: expected ~200 s on an H200 (wheels 10, preflight 10, tests 70, kernels 35, pipeline 20, load-cpu 20, load-gpu 35); limits: 30, 40, 100, 60, 40, 40, 70; all within ${GPU_CHECK_BUDGET} s, plus the machine's start (1-2 min)"
fi

# The wheels are built for the device image's Python (3.12); --tiny runs on
# this machine's environment, which has its own packages.
if ((TINY)) && compgen -G ".wheels/*.whl" >/dev/null; then
    skipped wheels "--tiny: this environment's packages"
elif compgen -G ".wheels/*.whl" >/dev/null; then
    section wheels 30 "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir \
        --upgrade --target /tmp/appliance-site .wheels/*.whl
    export PYTHONPATH="$PYTHONPATH:/tmp/appliance-site"
fi
if [ -z "${CUDA_HOME:-}" ]; then
    home=$("$PY" -m benchmarks.gpu_preflight --find-cuda-home)
    if [ -n "$home" ]; then
        # numba-cuda looks for NVVM in wheels first, in a system toolkit only through CUDA_HOME.
        export CUDA_HOME=$home
        echo "CUDA_HOME=$home (set by gpu_check: the system toolkit's NVVM is in $home/nvvm)"
    else
        echo "CUDA_HOME unset: no system toolkit with nvvm/lib64 under /usr/local/cuda*, /opt/cuda"
    fi
else
    echo "CUDA_HOME=$CUDA_HOME (from the environment)"
fi

preflight=(-m benchmarks.gpu_preflight)
if ((TINY)); then preflight+=(--simulator); fi
if ! section preflight $((TINY ? 60 : 40)) "$PY" "${preflight[@]}"; then
    echo "== the preflight failed: nothing else can run here; its last lines say why"
    status=2
    summary
    exit 2
fi

if ((TINY)); then
    section tests 200 "$PY" -m pytest -q -p no:cacheprovider --tb=short -rfEs tests/kernels
    section kernels 90 "$PY" benchmarks/gpu_kernels.py --tiny
    section pipeline 90 "$PY" benchmarks/gpu_pipeline.py --tiny
    section video 60 "$PY" benchmarks/gpu_video.py --tiny
    # The load benchmark's machinery on the CPU backend (servers on the
    # simulator would take minutes per picture); strict is a no-op there, but
    # the server must accept the variable the GPU phases pass it.
    section load-cpu 60 "$PY" -m benchmarks.load --phases on --callers 4 --warmup 0.5 \
        --seconds 1 --small 4 --large 1 --fail-on-errors --server-env APPLIANCE_GPU_STRICT=1 \
        ${OUT:+--json "$OUT/load_cpu.json"}
    skipped load-gpu "simulator"
else
    section tests 100 "$PY" -m pytest -q -p no:cacheprovider --tb=short -rfEs \
        ${OUT:+--junitxml "$OUT/tests.xml"} tests/kernels tests/test_kernels_ptx.py
    section kernels 60 "$PY" benchmarks/gpu_kernels.py
    section pipeline 40 "$PY" benchmarks/gpu_pipeline.py
    section video 30 "$PY" benchmarks/gpu_video.py --repeat 2
    # Peers: the same phases, callers, corpus and measured seconds; the GPU
    # server compiles or loads and checks its kernels before it says ready,
    # and its warm-up seconds cover CuPy's own first-use compilations.
    LOAD=(--phases "off,on" --callers 128 --seconds 4 --small 32 --large 4 --fail-on-errors)
    section load-cpu 40 "$PY" -m benchmarks.load "${LOAD[@]}" --warmup 3 \
        ${OUT:+--json "$OUT/load_cpu.json"}
    section load-gpu 70 "$PY" -m benchmarks.load "${LOAD[@]}" --warmup 6 \
        --server-args "--backend gpu" --server-env APPLIANCE_GPU_STRICT=1 \
        ${OUT:+--json "$OUT/load_gpu.json"}
fi
summary
exit "$status"
