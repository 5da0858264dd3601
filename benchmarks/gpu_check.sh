#!/usr/bin/env bash
# The GPU check, for an H200 machine with no network (benchmarks/RESULTS.md keeps
# its last output). It installs nothing from the network: it runs on the
# machine's python3 (numba-cuda, CuPy, NumPy, Pillow, SciPy, pytest are in its
# image), with this checkout on PYTHONPATH, plus the wheels of .wheels/ when
# that folder was carried (PyWavelets is not in the image). Fetch them here with
#
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
#       --implementation cp --platform manylinux_2_28_x86_64 -d .wheels PyWavelets==1.9.0
#
# and name .wheels in the device call's carry. Then:
#
#   bash benchmarks/gpu_check.sh            on the GPU machine (within ~8 minutes)
#   bash benchmarks/gpu_check.sh --tiny     anywhere: simulator, tiny sizes
#
# 1. the kernel and GPU-pipeline tests on the device (or the simulator), and
#    PTX for sm_90;
# 2. the GPU benchmarks beside their CPU twins, as tables: kernels, then the
#    whole pipeline.
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
exit $status
