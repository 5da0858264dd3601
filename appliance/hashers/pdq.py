"""PDQ perceptual hash, bit-identical to Meta's reference (``pdqhash.compute``).

NumPy + numba on the CPU, no reference code at run time, in two stages of
numba kernels: ``pdq_downsample`` turns the image into the (64, 64) float32
plane the reference hashes, ``pdq_bits`` turns that plane into the hash (or the
8 dihedral hashes) and the quality. This module checks the input and joins the
stages. The kernels release the GIL, so a thread pool hashes images in
parallel (``pdq_many``); they compile on first use, then load from numba's disk
cache.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import Executor
from typing import Any

import numpy as np
from numpy.typing import NDArray

from appliance.hashers import pdq_bits, pdq_downsample
from appliance.hashers.pdq_bits import HASH_BYTES
from kernels.pdq_dct import dct_matrix as _dct_matrix

__all__ = [
    "DIHEDRAL_VARIANTS", "HASH_BYTES", "pdq_dihedral_from_rgb", "pdq_from_luma",
    "pdq_from_rgb", "pdq_hex", "pdq_many",
]

_MIN_DIM = 5  # the reference refuses to hash smaller images (all-zero hash, quality 0)


def _pdq(
    rgb: NDArray[np.uint8], luma: NDArray[np.float32], from_rgb: bool, dihedral: bool
) -> tuple[NDArray[np.uint8], int]:
    """(hashes (n, 32) uint8, quality): the arguments as ``pdq_downsample.plane``'s.

    n is 8 (the dihedral variants, original first) when dihedral, else 1.
    """
    a = pdq_downsample.plane(rgb, luma, from_rgb)
    d = _dct_matrix()
    if dihedral:
        bits = pdq_bits.dihedral_bits(a, d)
    else:
        bits = pdq_bits.dct_bits(a, d).reshape(1, HASH_BYTES)
    return bits, int(pdq_bits.quality(a))


def _readonly(a: NDArray[Any]) -> NDArray[Any]:
    """A read-only view of a: read-only is part of numba's array type, and Pillow's
    arrays are read-only, so passing all inputs so gives one compilation for all."""
    view = a.view()
    view.flags.writeable = False
    return view


# Placeholders for the unused input of _pdq (one compiled body serves both inputs).
_NO_RGB = _readonly(np.zeros((0, 0, 3), dtype=np.uint8))
_NO_LUMA = _readonly(np.zeros((0, 0), dtype=np.float32))


def pdq_from_rgb(rgb: NDArray[np.uint8]) -> tuple[bytes, int]:
    """PDQ hash and quality of rgb: (H, W, 3) uint8, as ``np.asarray(img.convert("RGB"))``.

    Returns (hash, quality): hash is 32 bytes, ``bytes.fromhex`` of the reference's
    hex string; quality is 0..100. Images under 5 pixels on a side give 32 zero
    bytes and quality 0, as the reference does. Any strides are accepted.
    """
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"expected (H, W, 3) uint8 pixels, got {rgb.shape} {rgb.dtype}")
    if rgb.shape[0] < _MIN_DIM or rgb.shape[1] < _MIN_DIM:
        return bytes(HASH_BYTES), 0
    pixels = _readonly(np.ascontiguousarray(rgb))
    bits, quality = _pdq(pixels, _NO_LUMA, True, False)
    return bits[0].tobytes(), int(quality)


def pdq_from_luma(luma: NDArray[np.float32]) -> tuple[bytes, int]:
    """PDQ hash and quality of an (H, W) float32 luma plane (other real dtypes are cast).

    Same result as the reference's ``pdqHash256FromFloatLuma`` on that plane.
    """
    if luma.ndim != 2:
        raise ValueError(f"expected an (H, W) luma plane, got shape {luma.shape}")
    if luma.shape[0] < _MIN_DIM or luma.shape[1] < _MIN_DIM:
        return bytes(HASH_BYTES), 0
    luma_plane = _readonly(np.ascontiguousarray(luma, dtype=np.float32))
    bits, quality = _pdq(_NO_RGB, luma_plane, False, False)
    return bits[0].tobytes(), int(quality)


DIHEDRAL_VARIANTS = ("original", "rot90", "rot180", "rot270", "flipx", "flipy", "flip+1", "flip-1")
"""Names of the 8 dihedral hashes, in the reference's order (compute_dihedral)."""


def pdq_dihedral_from_rgb(rgb: NDArray[np.uint8]) -> tuple[list[bytes], int]:
    """The 8 PDQ hashes of rgb's rotations and flips (DIHEDRAL_VARIANTS order), and quality.

    Equal to ``pdqhash.compute_dihedral`` on the same pixels, at the cost of one
    hash plus seven re-thresholds. Images under 5 pixels give 8 zero hashes.
    """
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"expected (H, W, 3) uint8 pixels, got {rgb.shape} {rgb.dtype}")
    if rgb.shape[0] < _MIN_DIM or rgb.shape[1] < _MIN_DIM:
        return [bytes(HASH_BYTES)] * 8, 0
    pixels = _readonly(np.ascontiguousarray(rgb))
    bits, quality = _pdq(pixels, _NO_LUMA, True, True)
    return [row.tobytes() for row in bits], int(quality)


def pdq_many(
    images: Sequence[NDArray[np.uint8]], pool: Executor | None = None
) -> list[tuple[bytes, int]]:
    """pdq_from_rgb of each (H, W, 3) uint8 image, in order, spread over ``pool``'s
    threads (the kernels release the GIL, so a pool of N threads uses N cores)."""
    if pool is None:
        return [pdq_from_rgb(rgb) for rgb in images]
    return list(pool.map(pdq_from_rgb, images))


def pdq_hex(h: bytes) -> str:
    """The 64 lowercase hex digits of a 32-byte PDQ hash, as the reference prints it."""
    if len(h) != HASH_BYTES:
        raise ValueError(f"a PDQ hash is {HASH_BYTES} bytes, got {len(h)}")
    return h.hex()
