"""PDQ perceptual hash, bit-identical to Meta's reference (``pdqhash.compute``).

Pure NumPy + numba on the CPU. Every float32 operation of the reference is done
in the same order per value, so the hash and quality match bit for bit; the
speed comes from memory order only:

- the luma of a strip of rows is computed straight into a transposed strip,
  so the box filter along the rows runs down that strip with one running sum
  per row held in a vector (no serial dependency chain per pixel);
- the box filter along the columns processes whole rows at a time, one
  running sum per column;
- the second pass keeps only the 64 columns and 64 rows that decimation reads.

All numba functions release the GIL, so a thread pool hashes images in parallel.
"""

from __future__ import annotations

import math
from functools import cache

import numpy as np
from numba import njit
from numpy.typing import NDArray

HASH_BYTES = 32
"""Length of a PDQ hash in bytes (256 bits)."""

_MIN_DIM = 5  # the reference refuses to hash smaller images (all-zero hash, quality 0)
_STRIP = 32  # rows filtered together along x; one float32 running sum per row
_TILE = 16  # columns per transpose tile


@cache
def _dct_matrix() -> NDArray[np.float32]:
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


# ----------------------------------------------------------------------------- kernels


@njit(cache=True, nogil=True)
def _luma_rows(rgb, y0, kn, out):  # type: ignore[no-untyped-def]
    """out[k, x] = luma of rgb[y0 + k, x] for k < kn; rgb (H, W, 3) uint8, out (>=kn, W) float32.

    float64 R*0.299 + G*0.587 + B*0.114, left to right, then rounded to float32:
    exactly what ``pdqhash.compute`` does in NumPy before calling the C++ code.
    """
    width = rgb.shape[1]
    for k in range(kn):
        src = rgb[y0 + k]
        dst = out[k]
        for x in range(width):
            r = np.float64(src[x, 0])
            g = np.float64(src[x, 1])
            b = np.float64(src[x, 2])
            dst[x] = np.float32(r * 0.299 + g * 0.587 + b * 0.114)


@njit(cache=True, nogil=True)
def _transpose(src, dst, kn):  # type: ignore[no-untyped-def]
    """dst[x, k] = src[k, x] for k < kn; src (>=kn, W), dst (W, >=kn), float32.

    Done in tiles of _TILE columns so that both sides of a tile stay in L1.
    """
    width = src.shape[1]
    for x0 in range(0, width, _TILE):
        x1 = min(x0 + _TILE, width)
        for k in range(kn):
            s = src[k]
            for x in range(x0, x1):
                dst[x, k] = s[x]


@njit(cache=True, nogil=True)
def _untranspose(src, dst, kn):  # type: ignore[no-untyped-def]
    """dst[k, x] = src[x, k] for k < kn; src (W, >=kn), dst (>=kn, W), float32; tiled."""
    width = src.shape[0]
    for x0 in range(0, width, _TILE):
        x1 = min(x0 + _TILE, width)
        for k in range(kn):
            d = dst[k]
            for x in range(x0, x1):
                d[x] = src[x, k]


@njit(cache=True, nogil=True)
def _box_down(src, dst, w, m):  # type: ignore[no-untyped-def]
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


@njit(cache=True, nogil=True)
def _decimation_index(n):  # type: ignore[no-untyped-def]
    """(64,) int64: the reference's sample positions int((i + 0.5) * n / 64), in double."""
    idx = np.empty(64, dtype=np.int64)
    for i in range(64):
        idx[i] = int((i + 0.5) * n / 64)
    return idx


@njit(cache=True, nogil=True)
def _quality(a):  # type: ignore[no-untyped-def]
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


@njit(cache=True, nogil=True)
def _dct_bits(a, d):  # type: ignore[no-untyped-def]
    """(32,) uint8 hash of a (64, 64) float32 with d the (16, 64) DCT matrix.

    B = D A D^T with one float32 accumulator per value, k increasing (the
    reference's loops, vectorised over the other index). Bit 16*i + j is set when
    B[i, j] exceeds the lower median (Torben's median of 256 values is the 128th
    smallest); bit k lands at 2**k of the big-endian 256-bit integer.
    """
    t = np.zeros((16, 64), dtype=np.float32)
    for i in range(16):
        for k in range(64):
            dik = d[i, k]
            for j in range(64):
                t[i, j] += dik * a[k, j]
    b = np.zeros(256, dtype=np.float32)
    for i in range(16):
        for j in range(16):
            s = np.float32(0.0)
            for k in range(64):
                s += t[i, k] * d[j, k]
            b[16 * i + j] = s
    median = np.sort(b)[127]
    out = np.zeros(HASH_BYTES, dtype=np.uint8)
    for k in range(256):
        if b[k] > median:
            out[31 - k // 8] |= np.uint8(1 << (k % 8))
    return out


@njit(cache=True, nogil=True)
def _emit(sums, count, emitted, ne):  # type: ignore[no-untyped-def]
    """emitted[ne] = sums / count: one output row of the pass along y (float32 division)."""
    c = np.float32(count)
    e = emitted[ne]
    for x in range(sums.shape[0]):
        e[x] = sums[x] / c


@njit(cache=True, nogil=True)
def _flush(emitted, ne, t, o, wr, cols, narrow, done):  # type: ignore[no-untyped-def]
    """Pass two along x of emitted[:ne] (ne, W) into narrow[done:done+ne] (kept at cols)."""
    _transpose(emitted, t, ne)
    _box_down(t, o, wr, ne)
    for k in range(ne):
        row = narrow[done + k]
        for c in range(cols.shape[0]):
            row[c] = o[cols[c], k]


@njit(cache=True, nogil=True)
def _downsample(rgb, luma, from_rgb):  # type: ignore[no-untyped-def]
    """(64, 64) float32: the reference's two Jarosz passes and decimation, streamed.

    The input is rgb (H, W, 3) uint8 when from_rgb, else luma (H, W) float32 (the
    other argument is a dummy: one compiled body serves both entry points).
    Pass one along x runs on transposed strips of _STRIP rows, one running sum per
    row in a vector. Its rows enter a ring of the last rows for pass one along y,
    one running sum per column. Those output rows, again as transposed strips, get
    pass two along x, kept only at the 64 decimated columns (the running sums still
    see every value). Pass two along y runs on that narrow (H, 64) plane. No full
    (H, W) plane is ever allocated, which saves the page faults and the memory
    traffic, and keeps the working set in L2.
    """
    if from_rgb:
        height, width = rgb.shape[0], rgb.shape[1]
    else:
        height, width = luma.shape
    wr = (width + 127) // 128
    wc = (height + 127) // 128
    half = (wc + 2) // 2
    # Room for the wc rows that are subtracted later plus one new strip, and a
    # multiple of _STRIP so that each strip lands in consecutive ring rows.
    ring_n = ((wc + 2 * _STRIP - 1) // _STRIP) * _STRIP
    ring = np.empty((ring_n, width), dtype=np.float32)
    t = np.empty((width, _STRIP), dtype=np.float32)
    o = np.empty((width, _STRIP), dtype=np.float32)
    emitted = np.empty((_STRIP, width), dtype=np.float32)
    lumas = np.empty((_STRIP if from_rgb else 0, width), dtype=np.float32)
    sums = np.zeros(width, dtype=np.float32)
    cols = _decimation_index(width)
    narrow = np.empty((height, 64), dtype=np.float32)
    count = 0
    ne = 0
    done = 0
    for y0 in range(0, height, _STRIP):
        kn = min(_STRIP, height - y0)
        if from_rgb:
            _luma_rows(rgb, y0, kn, lumas)
            _transpose(lumas, t, kn)
        else:
            _transpose(luma[y0 : y0 + kn], t, kn)
        _box_down(t, o, wr, kn)
        r0 = y0 % ring_n
        _untranspose(o, ring[r0 : r0 + kn], kn)
        # Pass one along y, one input row at a time, in the phases of _box_down.
        for ri in range(y0, y0 + kn):
            a = ring[ri % ring_n]
            if ri < wc:
                for x in range(width):
                    sums[x] += a[x]
                count += 1
            else:
                b = ring[(ri - wc) % ring_n]
                for x in range(width):
                    sums[x] += a[x]
                    sums[x] -= b[x]
            if ri >= half - 1:
                _emit(sums, count, emitted, ne)
                ne += 1
                if ne == _STRIP:
                    _flush(emitted, ne, t, o, wr, cols, narrow, done)
                    done += ne
                    ne = 0
    for li in range(height - wc, height - wc + half - 1):
        b = ring[li % ring_n]
        for x in range(width):
            sums[x] -= b[x]
        count -= 1
        _emit(sums, count, emitted, ne)
        ne += 1
        if ne == _STRIP:
            _flush(emitted, ne, t, o, wr, cols, narrow, done)
            done += ne
            ne = 0
    if ne > 0:
        _flush(emitted, ne, t, o, wr, cols, narrow, done)
    # Columns are independent, so filtering only the 64 kept ones is exact.
    narrow2 = np.empty((height, 64), dtype=np.float32)
    _box_down(narrow, narrow2, wc, 64)
    rows = _decimation_index(height)
    out = np.empty((64, 64), dtype=np.float32)
    for i in range(64):
        out[i] = narrow2[rows[i]]
    return out


@njit(cache=True, nogil=True)
def _pdq(rgb, luma, from_rgb, d):  # type: ignore[no-untyped-def]
    """(hash (32,) uint8, quality): see _downsample for the arguments; H and W >= 5."""
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
    return _dct_bits(a, d), _quality(a)


# ----------------------------------------------------------------------------- public API

# Placeholders for the unused input of _pdq (one compiled body for both inputs).
_NO_RGB = np.zeros((0, 0, 3), dtype=np.uint8)
_NO_LUMA = np.zeros((0, 0), dtype=np.float32)



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
    bits, quality = _pdq(np.ascontiguousarray(rgb), _NO_LUMA, True, _dct_matrix())
    return bits.tobytes(), int(quality)


def pdq_from_luma(luma: NDArray[np.float32]) -> tuple[bytes, int]:
    """PDQ hash and quality of an (H, W) float32 luma plane (other real dtypes are cast).

    Same result as the reference's ``pdqHash256FromFloatLuma`` on that plane.
    """
    if luma.ndim != 2:
        raise ValueError(f"expected an (H, W) luma plane, got shape {luma.shape}")
    if luma.shape[0] < _MIN_DIM or luma.shape[1] < _MIN_DIM:
        return bytes(HASH_BYTES), 0
    plane = np.ascontiguousarray(luma, dtype=np.float32)
    bits, quality = _pdq(_NO_RGB, plane, False, _dct_matrix())
    return bits.tobytes(), int(quality)


def pdq_hex(h: bytes) -> str:
    """The 64 lowercase hex digits of a 32-byte PDQ hash, as the reference prints it."""
    if len(h) != HASH_BYTES:
        raise ValueError(f"a PDQ hash is {HASH_BYTES} bytes, got {len(h)}")
    return h.hex()
