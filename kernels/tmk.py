"""TMK+PDQF frame features of a batch of 64x64 frames on the GPU.

CPU twin: ``appliance.video.tmk_kernels.frame_features``, the same float32
operations in the same order, so the features are identical and so is every
``.tmk`` built from them (the sums stay on the host: they are a few hundred
operations a frame beside the decode). The frames are uploaded as one flat
uint8 buffer and hashed one block per frame (``kernels._tmk_cuda``). Built on
first use by a cached factory; runs under ``NUMBA_ENABLE_CUDASIM=1`` on the CPU.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

from kernels._launch import after_launch, before_launch, lazy_kernel, to_host
from kernels.pdq_dct import dct_matrix

SIDE = 64
DIM = 256
THREADS = 256

_kernel = lazy_kernel("kernels._tmk_cuda", "features", SIDE=SIDE, THREADS=THREADS)


def tmk_features(frames: NDArray[np.uint8], xp: Any, stream: Any = 0) -> NDArray[np.float32]:
    """(n, 256) float32 on the host: the PDQF feature of each (n, 64, 64, 3) uint8 frame."""
    if frames.dtype != np.uint8 or frames.shape[1:] != (SIDE, SIDE, 3):
        raise ValueError(f"expected (n, 64, 64, 3) uint8 frames, got {frames.shape} {frames.dtype}")
    n = len(frames)
    if n == 0:
        return np.zeros((0, DIM), dtype=np.float32)
    d_rgb = xp.asarray(np.ascontiguousarray(frames).reshape(-1))
    d_dct = xp.asarray(np.ascontiguousarray(dct_matrix()))
    d_out = xp.zeros((n, DIM), dtype=xp.float32)
    before_launch(xp, stream)
    _kernel()[n, THREADS, stream](d_rgb, d_dct, d_out)
    after_launch(stream)
    out: NDArray[np.float32] = to_host(d_out)
    return out
