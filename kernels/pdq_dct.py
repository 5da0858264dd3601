"""The PDQ DCT matrix, shared by the CPU hasher (appliance.hashers.pdq) and the
GPU kernels (kernels.pdq): NumPy only, importable anywhere."""

from __future__ import annotations

import math
from functools import cache

import numpy as np
from numpy.typing import NDArray


@cache
def dct_matrix() -> NDArray[np.float32]:
    """(16, 64) float32: rows 1..16 of the 64-point DCT-II, as the reference builds it.

    The scale factor is a float32; each entry is computed in double with libm's
    cos (Python's ``math.cos``, the same libm the reference calls) and then rounded.
    """
    scale = float(np.float32(math.sqrt(2.0 / 64.0)))
    d = np.empty((16, 64), dtype=np.float32)
    for i in range(16):
        for j in range(64):
            d[i, j] = scale * math.cos((math.pi / 2 / 64.0) * (i + 1) * (2 * j + 1))
    return d
