"""PDQ hashes and qualities of a batch of decoded images on the GPU.

CPU twin: ``appliance.hashers.pdq.pdq_from_rgb``; the same float32 operations
in the same order, so hashes and qualities are identical. The images are
packed ragged into one flat uint8 buffer (per-image pixel offset, height,
width) and go through four kernels of ``kernels._pdq_cuda``:

1. ``luma``: one thread per pixel, float64 luma rounded to float32 (or
   ``float_luma``: the C++ reference's float32 luma, for vPDQ's frames);
2. ``box_filter``, four times (rows, columns, rows, columns), ping-ponging
   between two float32 planes: one block per image, one thread per row or
   column, one running float32 sum in the reference's four phases (exactly
   64x64 images are not filtered);
3. ``finish``: one block of 256 threads per image: decimation to 64x64,
   quality, the 16x64 DCT (one float32 accumulator per value, k increasing),
   then for the image (or each of its 8 rotations/flips, which only transpose
   and negate parts of the DCT) the lower median and the packed bits.

Images under 5 pixels on a side get a zero hash and quality 0 on the host.
Correct first: the filter threads walk rows one pixel at a time (not
coalesced), which is the obvious thing to speed up later. Built on first use
by a cached factory; runs under ``NUMBA_ENABLE_CUDASIM=1`` on the CPU.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray

from kernels._launch import after_launch, before_launch, lazy_kernel, to_host
from kernels.pdq_dct import dct_matrix

HASH_BYTES = 32
MIN_DIM = 5  # the reference hashes smaller images as all zeros, quality 0
THREADS_LUMA = 256
THREADS_FILTER = 128
THREADS_FINISH = 256  # finish's shared partial sums assume exactly 256
MAX_LUMA_BLOCKS = 4096

_kernel = lazy_kernel("kernels._pdq_cuda")  # the module: four kernels


def pdq_batch(
    images: Sequence[NDArray[np.uint8]],
    xp: Any,
    dihedral: bool = False,
    host_buffer: Callable[[int], NDArray[np.uint8]] | None = None,
    stream: Any = 0,
    float_luma: bool = False,
) -> tuple[NDArray[np.uint8], NDArray[np.int32]]:
    """(hashes, qualities (N,) int32) of (H, W, 3) uint8 images (NumPy, or on
    the device of ``xp``: they are packed on the host), on the host.

    hashes is (N, 32) uint8, row i equal to ``pdq_from_rgb(images[i])``; with
    ``dihedral`` it is (N, 8, 32), ``pdq_dihedral_from_rgb``'s 8 hashes. ``xp``
    is the device's array module (cupy, or numpy under the simulator);
    ``host_buffer(nbytes)`` gives the uint8 staging buffer the pixels are packed
    into (pinned memory makes the upload asynchronous; default: a new array);
    ``stream`` is the numba stream the kernels run on. ``float_luma``: the
    C++ reference's float32 luma, as vPDQ hashes frames (CPU twin:
    ``pdq_from_luma`` of ``appliance.hashers.video.luma``), not the image PDQ's.
    """
    n = len(images)
    nvar = 8 if dihedral else 1
    hashes = np.zeros((n, nvar, HASH_BYTES), dtype=np.uint8)
    qualities = np.zeros(n, dtype=np.int32)
    keep: list[int] = []
    for i, rgb in enumerate(images):
        if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
            raise ValueError(f"image {i}: expected (H, W, 3) uint8, got {rgb.shape} {rgb.dtype}")
        if rgb.shape[0] >= MIN_DIM and rgb.shape[1] >= MIN_DIM:
            keep.append(i)
    if keep:
        got_h, got_q = _run(images, keep, xp, nvar, host_buffer, stream, float_luma)
        idx = np.array(keep, dtype=np.int64)
        hashes[idx] = got_h.reshape(len(keep), nvar, HASH_BYTES)
        qualities[idx] = got_q
    return (hashes if dihedral else hashes[:, 0]), qualities


def _run(
    images: Sequence[NDArray[np.uint8]],
    keep: list[int],
    xp: Any,
    nvar: int,
    host_buffer: Callable[[int], NDArray[np.uint8]] | None,
    stream: Any,
    float_luma: bool = False,
) -> tuple[NDArray[np.uint8], NDArray[np.int32]]:
    heights = np.array([images[i].shape[0] for i in keep], dtype=np.int64)
    widths = np.array([images[i].shape[1] for i in keep], dtype=np.int64)
    sizes = heights * widths
    offsets = np.zeros(len(keep), dtype=np.int64)
    np.cumsum(sizes[:-1], out=offsets[1:])
    total = int(sizes.sum())
    flat = host_buffer(3 * total) if host_buffer else np.empty(3 * total, dtype=np.uint8)
    for k, i in enumerate(keep):
        o = 3 * int(offsets[k])
        flat[o : o + 3 * int(sizes[k])] = np.ascontiguousarray(to_host(images[i])).reshape(-1)

    mod = _kernel()
    m = len(keep)
    d_rgb = xp.asarray(flat[: 3 * total])
    d_off = xp.asarray(offsets)
    d_h = xp.asarray(heights)
    d_w = xp.asarray(widths)
    d_dct = xp.asarray(np.ascontiguousarray(dct_matrix()))
    plane_a = xp.empty(total, dtype=xp.float32)
    plane_b = xp.empty(total, dtype=xp.float32)
    d_hashes = xp.zeros((m * nvar, HASH_BYTES), dtype=xp.uint8)
    d_qual = xp.zeros(m, dtype=xp.int32)

    blocks = max(1, min(MAX_LUMA_BLOCKS, -(-total // THREADS_LUMA)))
    before_launch(xp, stream)
    (mod.float_luma if float_luma else mod.luma)[blocks, THREADS_LUMA, stream](d_rgb, plane_a)
    for src, dst, along_cols in (
        (plane_a, plane_b, 0),
        (plane_b, plane_a, 1),
        (plane_a, plane_b, 0),
        (plane_b, plane_a, 1),
    ):
        mod.box_filter[m, THREADS_FILTER, stream](src, dst, d_off, d_h, d_w, along_cols)
    mod.finish[m, THREADS_FINISH, stream](plane_a, d_off, d_h, d_w, d_dct, d_hashes, d_qual)
    after_launch(stream)
    return to_host(d_hashes), to_host(d_qual)
