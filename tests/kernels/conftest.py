"""Kernel tests run where a kernel can run: under Numba's CUDA simulator
(``NUMBA_ENABLE_CUDASIM=1``, a separate pytest process: ``dev.py test`` starts
one) or on a real GPU. Tests marked ``gpu`` need the real device."""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import pytest

SIMULATOR = os.environ.get("NUMBA_ENABLE_CUDASIM") == "1"


def _gpu() -> bool:
    if SIMULATOR:
        return False
    try:
        from numba import cuda

        return bool(cuda.is_available())
    except Exception:
        return False


GPU = _gpu()


def pytest_collection_modifyitems(config: Any, items: list[Any]) -> None:
    for item in items:
        if "tests/kernels" not in str(item.fspath):
            continue
        if not (SIMULATOR or GPU):
            item.add_marker(pytest.mark.skip(
                reason="kernels run under NUMBA_ENABLE_CUDASIM=1 or on a GPU"))
        elif "gpu" in item.keywords and not GPU:
            item.add_marker(pytest.mark.skip(reason="needs a real CUDA device"))


@pytest.fixture
def xp() -> Any:
    """The array module of the device: CuPy on a GPU, NumPy under the simulator."""
    if GPU:
        import cupy

        return cupy
    return np
