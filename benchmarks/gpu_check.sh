#!/usr/bin/env bash
# The GPU check, for an H200 machine with no network (benchmarks/RESULTS.md keeps
# its last output). It installs nothing from the network: it runs on the
# machine's python3 (numba-cuda, CuPy, NumPy, Pillow, SciPy, pytest are in its
# image), with this checkout on PYTHONPATH, plus the wheels of .wheels/ when
# that folder was carried (PyWavelets and grpcio's health and reflection
# services are not in the image; its protobuf is older than our generated
# code's). Fetch them here with
#
#   for p in PyWavelets==1.9.0 protobuf==7.36.2 grpcio==1.85.3 \
#            grpcio-health-checking==1.85.1 grpcio-reflection==1.85.1; do
#     python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
#       --implementation cp --platform manylinux_2_28_x86_64 \
#       --platform manylinux2014_x86_64 -d .wheels "$p"; done
#
# and name .wheels in the device call's carry. Then:
#
#   bash benchmarks/gpu_check.sh            on the GPU machine (within ~8 minutes)
#   bash benchmarks/gpu_check.sh --tiny     anywhere: simulator, tiny sizes
#
# 1. the kernel and GPU-pipeline tests on the device (or the simulator), and
#    PTX for sm_90;
# 2. the GPU benchmarks beside their CPU twins, as tables: kernels, then the
#    whole pipeline;
# 3. the server under load (benchmarks/load.py, short phases): on the CPU
#    backend with the machine's 16 cores, then batching off vs on with the
#    GPU backend.
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
PY=${PYTHON:-python3}
if compgen -G ".wheels/*.whl" >/dev/null; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/appliance-site .wheels/*.whl && export PYTHONPATH="$PYTHONPATH:/tmp/appliance-site"
fi
if [ "${1:-}" = "--tiny" ]; then
    export NUMBA_ENABLE_CUDASIM=1
    BENCH=(--tiny)
else
    BENCH=()
fi
echo "== gpu_check $(date -u +%Y-%m-%dT%H:%MZ) $(git rev-parse --short HEAD 2>/dev/null)"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null \
    || echo "(no nvidia-smi)"
"$PY" -c "import numba, numpy; print('numba', numba.__version__, 'numpy', numpy.__version__)"
status=0
echo "== tests"
"$PY" -m pytest -q -p no:cacheprovider tests/kernels || status=1
if [ -z "${NUMBA_ENABLE_CUDASIM:-}" ]; then
    "$PY" -m pytest -q -p no:cacheprovider tests/test_kernels_ptx.py || status=1
fi
echo "== benchmarks: kernels"
"$PY" benchmarks/gpu_kernels.py "${BENCH[@]}" || status=1
echo "== benchmarks: pipeline"
"$PY" benchmarks/gpu_pipeline.py "${BENCH[@]}" || status=1
if [ -z "${NUMBA_ENABLE_CUDASIM:-}" ]; then
    echo "== benchmarks: server under load, cpu backend"
    "$PY" -m benchmarks.load --quick --callers 64 || status=1
    echo "== benchmarks: server under load, gpu backend"
    "$PY" -m benchmarks.load --quick --callers 128 --phases off,on --server-args "--backend gpu" \
        || status=1
fi
exit $status
