"""The CPU PDQ hasher's first stage: an image to the (64, 64) float32 plane it hashes.

Luma, the reference's two Jarosz box filter passes and decimation, each float32
operation on the same values in the same order as ``pdqhash.compute`` (float64
luma cast to float32; one running float32 sum in four phases per filter), so
the plane matches bit for bit. The speed is memory order:

- the filter along x runs on strips of rows stored transposed, so the running
  sums of a strip's rows form a vector and no per-pixel serial chain remains;
- the filter along y takes whole rows at a time, one running sum per column;
- the image streams strip by strip through small buffers (a ring keeps the rows
  the filter along y subtracts later), and the second pass keeps only the 64
  columns and 64 rows that decimation reads: no full-size plane is allocated.

The kernels are ``njit(cache=True, nogil=True)``: compiled on first use, then
loaded from the disk cache. No kernel here calls one of another module: numba
invalidates a cached kernel when its own source file changes, not when a
callee's does, so a call across files would keep a callee's old code.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from appliance.jit import kernel as _kernel

# Rows filtered together along x, one float32 running sum each. 16 to 48 measure
# the same; the strip buffers must leave the ring and the next strip room in L2.
_STRIP = 32

_F32 = NDArray[np.float32]
_I64 = NDArray[np.int64]


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
def plane(rgb: NDArray[np.uint8], luma: _F32, from_rgb: bool) -> _F32:
    """The (64, 64) float32 plane PDQ hashes; see _downsample for the arguments; H, W >= 5."""
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
    return a
