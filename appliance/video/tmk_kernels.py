"""TMK+PDQF's arithmetic on the CPU, each float32 operation as the reference's.

The reference (ThreatExchange ``tmk/cpp``: ``bufferhashers.cpp``,
``algo/tmkfv.cpp``, ``lib/vec.cpp``) is float32 C++ built without FMA, with
a few steps in double; these kernels keep the same operations in the same
order, so a ``.tmk`` made here scores 1.000000 against the reference's on the
same frames, and the scores of two ``.tmk`` files are the reference's to the
last printed decimal:

- ``float_luma``: that luma of a frame at any size (vPDQ's);
- ``frame_features``: the PDQF feature of 64x64 RGB frames: the C++ float32
  luma (``fillFloatLumaFromRGB``: ``0.299f*R + 0.587f*G + 0.114f*B``; not
  the image PDQ's float64 luma) and the 64 -> 16 DCT, 256 floats, with no box
  filter (a 64x64 plane is used as it is), no threshold and no normalisation;
- ``ingest``: each frame's feature into the pure average and, L2-normalised,
  into the cosine and sine sums of every period and coefficient: the angle
  and its cos/sin in double, each product added to the float32 sum in double
  and rounded back, as ``acc += g * cosArg`` does in C++;
- ``finish``: the average, then each sum L2-normalised and scaled by
  sqrt(a_j);
- ``cosine``: level 1, the cosine of two pure averages (sequential float32
  dot and norms);
- ``level2``: per period the best circular offset by the reference's
  incremental cos/sin recurrence in float32 (not a direct cos(j*delta)).

The kernels are ``njit(cache=True, nogil=True)``; none calls a kernel of
another module (numba's cache would keep a callee's old code).
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import NDArray

from appliance.jit import kernel as _kernel

_F32 = NDArray[np.float32]


@_kernel
def float_luma(rgb: NDArray[np.uint8], out: _F32) -> None:
    """out (H, W) = ``(0.299f*R + 0.587f*G) + 0.114f*B`` of rgb (H, W, 3) uint8, in
    float32 (the C++ reference's luma, which vPDQ hashes at full size)."""
    wr, wg, wb = np.float32(0.299), np.float32(0.587), np.float32(0.114)
    for y in range(rgb.shape[0]):
        for x in range(rgb.shape[1]):
            r = np.float32(rgb[y, x, 0])
            g = np.float32(rgb[y, x, 1])
            b = np.float32(rgb[y, x, 2])
            out[y, x] = (wr * r + wg * g) + wb * b


@_kernel
def frame_features(rgb: NDArray[np.uint8], d: _F32, out: _F32) -> None:
    """out[n] (256,) = the PDQF feature of rgb[n] (64, 64, 3) uint8; d: the
    (16, 64) DCT matrix (``kernels.pdq_dct.dct_matrix``)."""
    wr, wg, wb = np.float32(0.299), np.float32(0.587), np.float32(0.114)
    luma = np.empty((64, 64), dtype=np.float32)
    t = np.empty((16, 64), dtype=np.float32)
    for n in range(rgb.shape[0]):
        frame = rgb[n]
        for y in range(64):
            for x in range(64):
                r = np.float32(frame[y, x, 0])
                g = np.float32(frame[y, x, 1])
                b = np.float32(frame[y, x, 2])
                luma[y, x] = (wr * r + wg * g) + wb * b
        t[:] = 0
        for i in range(16):
            for k in range(64):
                dik = d[i, k]
                for j in range(64):
                    t[i, j] += dik * luma[k, j]
        for i in range(16):
            for j in range(16):
                s = np.float32(0.0)
                for k in range(64):
                    s += t[i, k] * d[j, k]
                out[n, 16 * i + j] = s


@_kernel
def _norm(v: _F32) -> np.float32:
    """sqrtf of the float32 sum of squares, in order (``libvec``'s L2 norm)."""
    s = np.float32(0.0)
    for k in range(v.shape[0]):
        s += v[k] * v[k]
    return np.float32(math.sqrt(s))


@_kernel
def ingest(features: _F32, t0: int, periods: NDArray[np.int32], pure: _F32,
           cos: _F32, sin: _F32) -> None:
    """Add frames features[n] (256,) at resampled times t0 + n to the sums.

    pure (256,); cos and sin (P, m, 256) float32, sin[:, 0] left zero.
    """
    dim = features.shape[1]
    coefficients = cos.shape[1]
    g = np.empty(dim, dtype=np.float32)
    two_pi = 2.0 * math.pi
    for n in range(features.shape[0]):
        f = features[n]
        t = t0 + n
        for k in range(dim):
            pure[k] += f[k]
        s = np.float32(0.0)
        for k in range(dim):
            s += f[k] * f[k]
        norm = np.float32(math.sqrt(s))
        for k in range(dim):
            g[k] = f[k] / norm if norm > 0 else f[k]
        for i in range(periods.shape[0]):
            period = np.float64(periods[i])
            for k in range(dim):
                cos[i, 0, k] += g[k]
            for j in range(1, coefficients):
                arg = two_pi * np.float64(j) * np.float64(t) / period
                c, sn = math.cos(arg), math.sin(arg)
                for k in range(dim):
                    gk = np.float64(g[k])
                    cos[i, j, k] = np.float32(np.float64(cos[i, j, k]) + gk * c)
                    sin[i, j, k] = np.float32(np.float64(sin[i, j, k]) + gk * sn)


@_kernel
def finish(count: int, coefficients: _F32, pure: _F32, cos: _F32, sin: _F32) -> None:
    """The end of ingest: the average, then each sum normalised and scaled by sqrt(a_j)."""
    if count <= 0:
        return
    n = np.float32(count)
    for k in range(pure.shape[0]):
        pure[k] /= n
    for i in range(cos.shape[0]):
        for j in range(cos.shape[1]):
            scale = np.float32(math.sqrt(coefficients[j]))
            for v in (cos[i, j], sin[i, j]):
                norm = _norm(v)
                if norm > 0:
                    for k in range(v.shape[0]):
                        v[k] /= norm
                for k in range(v.shape[0]):
                    v[k] *= scale


@_kernel
def cosine(a: _F32, b: _F32) -> float:
    """Level 1: dot(a, b) / (|a| |b|) in float32; 0 when either is all zero (the
    reference divides 0 by 0 when only one is; a score of nothing is 0 here)."""
    dot = np.float32(0.0)
    na = np.float32(0.0)
    nb = np.float32(0.0)
    for k in range(a.shape[0]):
        dot += a[k] * b[k]
        na += a[k] * a[k]
        nb += b[k] * b[k]
    norms = np.float32(math.sqrt(na)) * np.float32(math.sqrt(nb))
    if norms == 0:
        return 0.0
    return float(np.float32(dot / norms))


@_kernel
def _dot(a: _F32, b: _F32) -> np.float32:
    s = np.float32(0.0)
    for k in range(a.shape[0]):
        s += a[k] * b[k]
    return s


@_kernel
def level2(periods: NDArray[np.int32], normalizer: np.float32, cos_a: _F32, sin_a: _F32,
           cos_b: _F32, sin_b: _F32) -> float:
    """Level 2 of a (cos_a, sin_a) and b: the best over periods of the best
    circular offset's K, over ``normalizer`` (a's pair-score normaliser)."""
    coefficients = cos_a.shape[1]
    cc = np.empty(coefficients, dtype=np.float32)
    ss = np.empty(coefficients, dtype=np.float32)
    sc = np.empty(coefficients, dtype=np.float32)
    cs = np.empty(coefficients, dtype=np.float32)
    two = np.float32(2.0)
    best = np.float32(0.0)
    for i in range(periods.shape[0]):
        for j in range(coefficients):
            cc[j] = _dot(cos_a[i, j], cos_b[i, j])
            ss[j] = _dot(sin_a[i, j], sin_b[i, j])
            sc[j] = _dot(sin_a[i, j], cos_b[i, j])
            cs[j] = _dot(cos_a[i, j], sin_b[i, j])
        period = periods[i]
        top = np.float32(0.0)
        for offset in range(period):
            delta = np.float32(2.0 * math.pi * np.float64(np.float32(offset))
                               / np.float64(np.float32(period)))
            k_delta = cc[0]
            c = np.float32(1.0)
            s = np.float32(0.0)
            beta = np.float32(math.sin(np.float64(delta)))
            alpha = np.float32(math.sin(np.float64(delta) / 2.0))
            alpha = two * alpha * alpha
            for j in range(1, coefficients):
                nc = alpha * c + beta * s
                ns = alpha * s - beta * c
                c -= nc
                s -= ns
                k_delta += c * (cc[j] + ss[j])
                k_delta += s * (sc[j] - cs[j])
            if offset == 0 or k_delta > top:
                top = k_delta
        if i == 0 or top > best:
            best = top
    return float(np.float32(best / normalizer))
