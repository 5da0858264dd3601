#!/usr/bin/env bash
# The GPU check, for an H200 machine with no network (benchmarks/RESULTS.md keeps
# its last output). It installs nothing: it runs on the machine's python3, which
# has numba-cuda, CuPy, NumPy and pytest, with this checkout on PYTHONPATH.
#
#   bash benchmarks/gpu_check.sh            on the GPU machine
#   bash benchmarks/gpu_check.sh --tiny     anywhere: simulator, tiny sizes
#
# 1. the kernel tests on the device (or the simulator), and PTX for sm_90;
# 2. the GPU benchmarks beside their CPU twins, as a table.
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
PY=${PYTHON:-python3}
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
echo "== benchmarks"
"$PY" benchmarks/gpu_kernels.py "${BENCH[@]}" || status=1
exit $status
