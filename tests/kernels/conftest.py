"""Kernel tests run where a kernel can run: under Numba's CUDA simulator
(``NUMBA_ENABLE_CUDASIM=1``, a separate pytest process: ``dev.py test`` starts
one) or on a real GPU. Tests marked ``gpu`` need the real device.

Without either, they are skipped, which suits a CPU machine but would let a
GPU check pass with nothing run: with ``APPLIANCE_REQUIRE_GPU=1`` (which
``benchmarks/gpu_check.sh`` sets on the device) a missing real GPU makes every
kernel test fail, with the reason, and ``gpu`` tests are never skipped."""

from __future__ import annotations

import os
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pytest

SIMULATOR = os.environ.get("NUMBA_ENABLE_CUDASIM") == "1"
REQUIRE_GPU = os.environ.get("APPLIANCE_REQUIRE_GPU") == "1"


def _gpu() -> tuple[bool, str]:
    """(a real CUDA device is visible to numba, why not)."""
    if SIMULATOR:
        return False, "NUMBA_ENABLE_CUDASIM=1 (the simulator) is set"
    try:
        from numba import cuda

        if cuda.is_available():
            return True, ""
        return False, "numba.cuda sees no CUDA device (driver, CUDA_VISIBLE_DEVICES?)"
    except Exception as exc:
        return False, f"numba.cuda cannot start: {type(exc).__name__}: {exc}"


GPU, NO_GPU_REASON = _gpu()
MISSING_GPU = (f"APPLIANCE_REQUIRE_GPU=1 demands a real GPU, but {NO_GPU_REASON}; "
               "unset it to run the kernel tests under the simulator")


def _is_kernel_test(item: Any) -> bool:
    return "tests/kernels" in str(item.fspath).replace(os.sep, "/")


def pytest_collection_modifyitems(config: Any, items: list[Any]) -> None:
    for item in items:
        if not _is_kernel_test(item):
            continue
        if REQUIRE_GPU:
            continue  # run; without a GPU, _required_gpu fails each one
        if not (SIMULATOR or GPU):
            item.add_marker(pytest.mark.skip(
                reason="kernels run under NUMBA_ENABLE_CUDASIM=1 or on a GPU"))
        elif "gpu" in item.keywords and not GPU:
            item.add_marker(pytest.mark.skip(reason="needs a real CUDA device"))


@pytest.fixture(scope="session", autouse=True)
def _required_gpu() -> None:
    # Session scope: set up before any module fixture (the GPU pipeline tests'
    # backend) could fail first with a less clear error.
    if REQUIRE_GPU and not GPU:
        pytest.fail(MISSING_GPU, pytrace=False)


def pytest_report_header(config: Any) -> str:
    where = "a real GPU" if GPU else "the CUDA simulator" if SIMULATOR else "nothing"
    demand = " (APPLIANCE_REQUIRE_GPU=1)" if REQUIRE_GPU else ""
    return f"kernel tests run on: {where}{demand}"


@pytest.fixture
def xp() -> Any:
    """The array module of the device: CuPy on a GPU, NumPy under the simulator."""
    if GPU:
        import cupy

        return cupy
    return np


@pytest.fixture(scope="module")
def backend() -> Any:
    """The GPU backend the kernel tests run on: the device, or gpu-sim."""
    from appliance.backend import select_backend  # only where kernel tests run

    return select_backend("gpu" if GPU else "gpu-sim")


@pytest.fixture(scope="module")
def pool() -> Iterator[ThreadPoolExecutor]:
    with ThreadPoolExecutor(2) as p:
        yield p
