"""``APPLIANCE_REQUIRE_GPU=1`` (set by benchmarks/gpu_check.sh on the device)
turns the kernel tests' skip into a failure when no real GPU is visible: a
GPU check on a machine whose driver numba cannot see must not pass with
every kernel test skipped. Subprocesses: the conftest reads the environment
at import, and the simulator must be chosen before numba.cuda is imported."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ONE_FILE = "tests/kernels/test_exact_kernel.py"


def _pytest(**env: str) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items()
            if k not in ("APPLIANCE_REQUIRE_GPU", "NUMBA_ENABLE_CUDASIM")}
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", ONE_FILE],
        cwd=ROOT, env={**base, **env}, capture_output=True, text=True, timeout=300,
    )


def test_without_a_gpu_the_kernel_tests_skip_unless_one_is_required() -> None:
    hidden = {"CUDA_VISIBLE_DEVICES": ""}  # no GPU, whatever this machine has
    skipped = _pytest(**hidden)
    assert skipped.returncode == 0, skipped.stdout
    assert "skipped" in skipped.stdout and "failed" not in skipped.stdout
    required = _pytest(APPLIANCE_REQUIRE_GPU="1", **hidden)
    assert required.returncode == 1, required.stdout
    assert "APPLIANCE_REQUIRE_GPU=1 demands a real GPU" in required.stdout
    assert "skipped" not in required.stdout


def test_the_simulator_does_not_satisfy_the_demand() -> None:
    proc = _pytest(APPLIANCE_REQUIRE_GPU="1", NUMBA_ENABLE_CUDASIM="1")
    assert proc.returncode == 1, proc.stdout
    assert "NUMBA_ENABLE_CUDASIM=1 (the simulator) is set" in proc.stdout
