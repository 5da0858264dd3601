"""The CPU PDQ hasher's second stage: a (64, 64) float32 plane to hashes and quality.

The quality, the 16x64 DCT (accumulated in order) and the lower median, each
float32 operation as the reference's, so hash and quality match
``pdqhash.compute`` bit for bit; the 8 dihedral hashes come from one DCT.

The kernels are ``njit(cache=True, nogil=True)``: compiled on first use, then
loaded from the disk cache. No kernel here calls one of another module: numba
invalidates a cached kernel when its own source file changes, not when a
callee's does, so a call across files would keep a callee's old code.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from appliance.jit import kernel as _kernel

HASH_BYTES = 32
"""Length of a PDQ hash in bytes (256 bits)."""

_F32 = NDArray[np.float32]


@_kernel
def quality(a: _F32) -> int:
    """Quality 0..100 of a (64, 64) float32: sum of truncated scaled gradients / 90."""
    total = 0
    hundred = np.float32(100.0)
    scale = np.float32(255.0)
    for i in range(63):
        for j in range(64):
            d = (a[i, j] - a[i + 1, j]) * hundred / scale
            total += int(abs(d))
    for i in range(64):
        for j in range(63):
            d = (a[i, j] - a[i, j + 1]) * hundred / scale
            total += int(abs(d))
    return min(total // 90, 100)


@_kernel
def _dct(a: _F32, d: _F32) -> _F32:
    """(16, 16) float32 B = D A D^T of a (64, 64) float32, d the (16, 64) DCT matrix.

    One float32 accumulator per value, k increasing (the reference's loops,
    vectorised over the other index).
    """
    t = np.zeros((16, 64), dtype=np.float32)
    for i in range(16):
        for k in range(64):
            dik = d[i, k]
            for j in range(64):
                t[i, j] += dik * a[k, j]
    b = np.zeros((16, 16), dtype=np.float32)
    for i in range(16):
        for j in range(16):
            s = np.float32(0.0)
            for k in range(64):
                s += t[i, k] * d[j, k]
            b[i, j] = s
    return b


@_kernel
def _threshold(b: _F32, out: NDArray[np.uint8]) -> None:
    """out (32,) uint8 = the hash of a (16, 16) float32 B.

    Bit 16*i + j is set when B[i, j] exceeds the lower median (Torben's median of
    256 values is the 128th smallest); bit k lands at 2**k of the big-endian
    256-bit integer.
    """
    flat = b.reshape(256)
    median = np.sort(flat)[127]
    out[:] = 0
    for k in range(256):
        if flat[k] > median:
            out[31 - k // 8] |= np.uint8(1 << (k % 8))


@_kernel
def dct_bits(a: _F32, d: _F32) -> NDArray[np.uint8]:
    """(32,) uint8 hash of a (64, 64) float32 (see _dct and _threshold)."""
    out = np.empty(HASH_BYTES, dtype=np.uint8)
    _threshold(_dct(a, d), out)
    return out


@_kernel
def dihedral_bits(a: _F32, d: _F32) -> NDArray[np.uint8]:
    """(8, 32) uint8: the hashes of the 8 rotations/flips of the image, from one DCT.

    Order as the reference's: original, rot90, rot180, rot270, flipX, flipY,
    flip+1 (transpose), flip-1. A rotation or flip of the image only transposes
    B and flips the signs of the odd-frequency rows or columns; each variant is
    then thresholded at its own median.
    """
    b = _dct(a, d)
    out = np.empty((8, HASH_BYTES), dtype=np.uint8)
    v = np.empty((16, 16), dtype=np.float32)
    for variant in range(8):
        for i in range(16):
            for j in range(16):
                x = b[i, j]
                if variant == 0:
                    v[i, j] = x
                elif variant == 1:  # rot90
                    v[j, i] = x if j % 2 == 1 else -x
                elif variant == 2:  # rot180
                    v[i, j] = -x if (i + j) % 2 == 1 else x
                elif variant == 3:  # rot270
                    v[j, i] = x if i % 2 == 1 else -x
                elif variant == 4:  # flipX
                    v[i, j] = x if i % 2 == 1 else -x
                elif variant == 5:  # flipY
                    v[i, j] = x if j % 2 == 1 else -x
                elif variant == 6:  # flip+1: transpose
                    v[j, i] = x
                else:  # flip-1: anti-transpose
                    v[j, i] = -x if (i + j) % 2 == 1 else x
        _threshold(v, out[variant])
    return out
