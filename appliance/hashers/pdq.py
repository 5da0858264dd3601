"""PDQ perceptual hash, bit-identical to Meta's reference (``pdqhash.compute``).

NumPy + numba on the CPU, no reference code at run time. Each float32 operation
of the reference (float64 luma cast to float32; two passes of the Jarosz box
filter, one running float32 sum in four phases; decimation; quality; the 16x64
DCT, accumulated in order; the lower median) is done on the same values in the
same order, so hash and quality match bit for bit. The speed is memory order:

- the filter along x runs on strips of rows stored transposed, so the running
  sums of a strip's rows form a vector and no per-pixel serial chain remains;
- the filter along y takes whole rows at a time, one running sum per column;
- the image streams strip by strip through small buffers (a ring keeps the rows
  the filter along y subtracts later), and the second pass keeps only the 64
  columns and 64 rows that decimation reads: no full-size plane is allocated.

Kernels are ``njit(cache=True, nogil=True)``: a thread pool hashes images in
parallel; code compiles on first use, then loads from the disk cache.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import Executor
from typing import Any

import numpy as np
from numpy.typing import NDArray

from appliance.jit import kernel as _kernel
from kernels.pdq_dct import dct_matrix as _dct_matrix

HASH_BYTES = 32
"""Length of a PDQ hash in bytes (256 bits)."""

_MIN_DIM = 5  # the reference refuses to hash smaller images (all-zero hash, quality 0)
# Rows filtered together along x, one float32 running sum each. 16 to 48 measure
# the same; the strip buffers must leave the ring and the next strip room in L2.
_STRIP = 32

_F32 = NDArray[np.float32]
_I64 = NDArray[np.int64]


# ----------------------------------------------------------------------------- kernels


@_kernel
def _luma_rows(rgb: NDArray[np.uint8], y0: int, kn: int, out: _F32) -> None:
    """out[k, x] = luma of rgb[y0 + k, x] for k < kn; rgb (H, W, 3) uint8, out (>=kn, W) float32.

    float64 R*0.299 + G*0.587 + B*0.114, left to right, then rounded to float32:
    exactly what ``pdqhash.compute`` does in NumPy before calling the C++ code.
    The row is read as flat bytes with unsigned indices: with no negative-index
    wraparound to guard, LLVM vectorises the stride-3 loads.
    """
    width = rgb.shape[1]
    one = np.uint64(1)
    two = np.uint64(2)
    three = np.uint64(3)
    for k in range(kn):
        src = rgb[y0 + k].reshape(-1)
        dst = out[k]
        for x in range(np.uint64(width)):
            i = three * x
            r = np.float64(src[i])
            g = np.float64(src[i + one])
            b = np.float64(src[i + two])
            dst[x] = np.float32(r * 0.299 + g * 0.587 + b * 0.114)


@_kernel
def _touch(flat: NDArray[np.uint8], step: int, sink: NDArray[np.float64]) -> None:
    """Sum flat[::step] into sink[0] (kept only so that the loads stay).

    Reading the next strip first, one independent load per cache line, overlaps
    its cache misses: the luma loop alone left memory idle (12 MP: 27 ms, 11 ms
    with this).
    """
    s = 0.0
    for i in range(0, flat.shape[0], step):
        s += flat[i]
    sink[0] += s


@_kernel
def _transpose(src: _F32, dst: _F32, kn: int) -> None:
    """dst[x, k] = src[k, x] for k < kn; src (>=kn, W), dst (W, >=kn), float32.

    Inner loop over k: measured 2x faster than over x, tiled or not.
    """
    for x in range(src.shape[1]):
        d = dst[x]
        for k in range(kn):
            d[k] = src[k, x]


@_kernel
def _untranspose(src: _F32, dst: _F32, kn: int) -> None:
    """dst[k, x] = src[x, k] for k < kn; src (W, >=kn), dst (>=kn, W), float32."""
    for x in range(src.shape[0]):
        s = src[x]
        for k in range(kn):
            dst[k, x] = s[k]


@_kernel
def _box_down(src: _F32, dst: _F32, w: int, m: int) -> None:
    """Jarosz box filter of window w down axis 0 of src[:, :m] into dst[:, :m] (float32).

    One running float32 sum per column, in the reference's four phases (grow
    without output, grow with output, add-then-subtract, shrink). The sums are
    a vector, so each row of work is one vectorisable loop; per value the
    operations and their order are the reference's.
    """
    n = src.shape[0]
    half = (w + 2) // 2
    sums = np.zeros(m, dtype=np.float32)
    ri = 0
    li = 0
    oi = 0
    for _ in range(half - 1):
        a = src[ri]
        for j in range(m):
            sums[j] += a[j]
        ri += 1
    count = half - 1
    for _ in range(w - half + 1):
        count += 1
        c = np.float32(count)
        a = src[ri]
        o = dst[oi]
        for j in range(m):
            sums[j] += a[j]
            o[j] = sums[j] / c
        ri += 1
        oi += 1
    c = np.float32(count)
    for _ in range(n - w):
        a = src[ri]
        b = src[li]
        o = dst[oi]
        for j in range(m):
            sums[j] += a[j]
            sums[j] -= b[j]
            o[j] = sums[j] / c
        ri += 1
        li += 1
        oi += 1
    for _ in range(half - 1):
        count -= 1
        c = np.float32(count)
        b = src[li]
        o = dst[oi]
        for j in range(m):
            sums[j] -= b[j]
            o[j] = sums[j] / c
        li += 1
        oi += 1


@_kernel
def _decimation_index(n: int) -> _I64:
    """(64,) int64: the reference's sample positions int((i + 0.5) * n / 64), in double."""
    idx = np.empty(64, dtype=np.int64)
    for i in range(64):
        idx[i] = int((i + 0.5) * n / 64)
    return idx


@_kernel
def _quality(a: _F32) -> int:
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
def _dct_bits(a: _F32, d: _F32) -> NDArray[np.uint8]:
    """(32,) uint8 hash of a (64, 64) float32 (see _dct and _threshold)."""
    out = np.empty(HASH_BYTES, dtype=np.uint8)
    _threshold(_dct(a, d), out)
    return out


@_kernel
def _dihedral_bits(a: _F32, d: _F32) -> NDArray[np.uint8]:
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


@_kernel
def _flush(
    rows: _F32, kn: int, t: _F32, o: _F32, wr: int, cols: _I64, narrow: _F32, y0: int
) -> None:
    """Pass two along x of rows[:kn] (kn, W) into narrow[y0 : y0 + kn] (only at cols)."""
    _transpose(rows, t, kn)
    _box_down(t, o, wr, kn)
    for k in range(kn):
        out = narrow[y0 + k]
        for c in range(cols.shape[0]):
            out[c] = o[cols[c], k]


@_kernel
def _downsample(rgb: NDArray[np.uint8], luma: _F32, from_rgb: bool) -> _F32:
    """(64, 64) float32: the reference's two Jarosz passes and decimation, streamed.

    The input is rgb (H, W, 3) uint8 when from_rgb, else luma (H, W) float32 (the
    other argument is then a dummy: one compiled body serves both entry points).
    Pass one along x runs on transposed strips of _STRIP rows; its rows enter a
    ring that keeps what pass one along y subtracts later; that pass's output rows
    get pass two along x in transposed strips, kept at the 64 decimated columns;
    pass two along y runs on that narrow (H, 64) plane. No (H, W) plane is ever
    allocated: no page faults, little memory traffic, a working set in L2.
    """
    if from_rgb:
        height, width = rgb.shape[0], rgb.shape[1]
    else:
        height, width = luma.shape
    wr = (width + 127) // 128
    wc = (height + 127) // 128
    half = (wc + 2) // 2
    # Room for the wc rows still to be subtracted plus one new strip, and a
    # multiple of _STRIP so that each strip lands in consecutive ring rows.
    ring_n = ((wc + 2 * _STRIP - 1) // _STRIP) * _STRIP
    ring = np.empty((ring_n, width), dtype=np.float32)
    t = np.empty((width, _STRIP), dtype=np.float32)
    o = np.empty((width, _STRIP), dtype=np.float32)
    emitted = np.empty((_STRIP, width), dtype=np.float32)
    lumas = np.empty((_STRIP if from_rgb else 0, width), dtype=np.float32)
    sink = np.zeros(1)
    sums = np.zeros(width, dtype=np.float32)
    cols = _decimation_index(width)
    narrow = np.empty((height, 64), dtype=np.float32)
    count = 0  # rows in the running sums of pass one along y
    done = 0  # its output rows so far
    # Pass one along y in the phases of _box_down, one input row ri at a time;
    # from ri = height on, only the subtractions of the last phase remain.
    for ri in range(height + half - 1):
        if ri % _STRIP == 0 and ri < height:
            kn = min(_STRIP, height - ri)
            if from_rgb:
                if ri + _STRIP < height:
                    _touch(rgb[ri + _STRIP : ri + 2 * _STRIP].reshape(-1), 64, sink)
                _luma_rows(rgb, ri, kn, lumas)
                _transpose(lumas, t, kn)
            else:
                _transpose(luma[ri : ri + kn], t, kn)
            _box_down(t, o, wr, kn)
            _untranspose(o, ring[ri % ring_n : ri % ring_n + kn], kn)
        a = ring[ri % ring_n]
        b = ring[(ri - wc) % ring_n]
        if ri < wc:
            count += 1
            for x in range(width):
                sums[x] += a[x]
        elif ri < height:
            for x in range(width):
                sums[x] += a[x]
                sums[x] -= b[x]
        else:
            count -= 1
            for x in range(width):
                sums[x] -= b[x]
        if ri >= half - 1:
            c = np.float32(count)
            row = emitted[done % _STRIP]
            for x in range(width):
                row[x] = sums[x] / c
            done += 1
            if done % _STRIP == 0 or done == height:
                kn = (done - 1) % _STRIP + 1
                _flush(emitted, kn, t, o, wr, cols, narrow, done - kn)
    # Columns are independent, so filtering only the 64 kept ones is exact.
    narrow2 = np.empty((height, 64), dtype=np.float32)
    _box_down(narrow, narrow2, wc, 64)
    rows = _decimation_index(height)
    out = np.empty((64, 64), dtype=np.float32)
    for i in range(64):
        out[i] = narrow2[rows[i]]
    return out


@_kernel
def _pdq(
    rgb: NDArray[np.uint8], luma: _F32, from_rgb: bool, d: _F32, dihedral: bool
) -> tuple[NDArray[np.uint8], int]:
    """(hashes (n, 32) uint8, quality): see _downsample for the arguments; H and W >= 5.

    n is 8 (the dihedral variants, original first) when dihedral, else 1.
    """
    if from_rgb:
        height, width = rgb.shape[0], rgb.shape[1]
    else:
        height, width = luma.shape
    if height == 64 and width == 64:
        # The reference hashes a 64x64 luma as it is, without filtering.
        a = np.empty((64, 64), dtype=np.float32)
        if from_rgb:
            _luma_rows(rgb, 0, 64, a)
        else:
            a[:, :] = luma
    else:
        a = _downsample(rgb, luma, from_rgb)
    if dihedral:
        return _dihedral_bits(a, d), _quality(a)
    return _dct_bits(a, d).reshape(1, HASH_BYTES), _quality(a)


# ----------------------------------------------------------------------------- public API


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
    bits, quality = _pdq(pixels, _NO_LUMA, True, _dct_matrix(), False)
    return bits[0].tobytes(), int(quality)


def pdq_from_luma(luma: NDArray[np.float32]) -> tuple[bytes, int]:
    """PDQ hash and quality of an (H, W) float32 luma plane (other real dtypes are cast).

    Same result as the reference's ``pdqHash256FromFloatLuma`` on that plane.
    """
    if luma.ndim != 2:
        raise ValueError(f"expected an (H, W) luma plane, got shape {luma.shape}")
    if luma.shape[0] < _MIN_DIM or luma.shape[1] < _MIN_DIM:
        return bytes(HASH_BYTES), 0
    plane = _readonly(np.ascontiguousarray(luma, dtype=np.float32))
    bits, quality = _pdq(_NO_RGB, plane, False, _dct_matrix(), False)
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
    bits, quality = _pdq(pixels, _NO_LUMA, True, _dct_matrix(), True)
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
