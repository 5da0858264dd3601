"""The imagehash family as signals: aHash, pHash, dHash, wHash, 64 bits each.

Bit-identical to ``imagehash`` 4.3.2 with its default arguments (hash_size 8;
wHash with image_scale None, mode "haar", remove_max_haar_ll True) on the same
PIL image, because every value is computed by the routine imagehash uses:
Pillow's ``convert("L")`` and LANCZOS resize (8x8 aHash, 9x8 dHash, 32x32 pHash,
S x S wHash with S = max(8, 2**int(log2(min(w, h))))), scipy.fftpack's DCT and
pywt's Haar transforms, then NumPy's mean or median. A hash's 64 bits are taken
row by row, the first the most significant: ``bytes.fromhex(str(imagehash.x(im)))``.

The speed comes from doing less of the same work, never from other arithmetic:

- one ``convert("L")`` serves the four hashes (an "L" image needs none), and a
  resize whose size two hashes share (wHash's S is 8 or 32) is done once;
- wHash's transforms: see ``_whash_low`` (7x faster than imagehash's pywt calls
  at 2048x2048, 83 ms against 578 ms; fewer Python calls on small images);
- the pipeline hashes each image on its own pool thread (Pillow and pywt
  release the GIL); the threshold step works on a stack of images (scipy's
  DCT of an (N, 32, 32) stack, NumPy's mean and median per row), which for
  one image is that image's own values.

Errors are imagehash's: a mode Pillow cannot convert to "L" ("LAB", "La")
raises its ValueError. One exception, by choice: wHash of an image with no
pixels raises ValueError where imagehash fails on log2(0) (an OverflowError
after a RuntimeWarning); aHash, pHash and dHash of it are Pillow's resize of
nothing (all bits zero), as in imagehash.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from functools import lru_cache
from typing import Any

import numpy as np
import pywt
from numpy.typing import NDArray
from PIL import Image

FAMILY = ("ahash", "phash", "dhash", "whash")
"""The signals this module computes, each 8 bytes."""

HASH_BYTES = 8

_LANCZOS = Image.Resampling.LANCZOS  # imagehash's ANTIALIAS
_HAAR = pywt.Wavelet("haar")
# Resized (width, height) of each hash but wHash, whose size depends on the image.
_SIZES = {"ahash": (8, 8), "dhash": (9, 8), "phash": (32, 32)}
# float64 values per wHash chunk: 1 MiB stays in L2 through all levels (measured
# at 2048x2048: 79 ms, against 136 ms for the whole plane at once).
_CHUNK = 1 << 17

_U8 = NDArray[np.uint8]
_F64 = NDArray[np.float64]


def whash_scale(size: tuple[int, int]) -> int:
    """wHash's side S for an image of size (w, h), exactly as imagehash computes it."""
    natural: int = 2 ** int(np.log2(min(size)))
    return max(natural, 8)


@lru_cache(maxsize=16)
def _morton(levels: int) -> NDArray[np.intp]:
    """(4**levels,) intp: for each position of a (2**levels)-square tile laid out
    for ``_whash_low``, the row-major index of its pixel.

    Bit 2k of a position is bit k of the row, bit 2k+1 bit k of the column: the
    pair a Haar step along the rows combines is adjacent, and so, once that step
    has dropped the row bit, is the pair of the step along the columns.
    """
    bits = np.arange(4**levels, dtype=np.intp).reshape((2,) * (2 * levels))
    # Axes 0..levels-1 are row bits, most significant first; then the column bits.
    order = [axis for k in range(levels) for axis in (levels + k, k)]
    perm = bits.transpose(order).reshape(-1)
    perm.flags.writeable = False  # cached and shared between threads
    return perm


def _decompose(x: _F64, levels: int) -> tuple[_F64, list[tuple[Any, Any, Any]]]:
    """``levels`` steps of wavedec2 on x, (n,) float64 laid out by ``_morton``.

    Returns the approximations and, per step, the details (da, ad, dd), which
    are wavedec2's (cH, cV, cD) laid out the same way. Each step is dwtn's:
    along the rows, then along the columns of both halves.
    """
    details = []
    for _ in range(levels):
        a, d = pywt.dwt(x, _HAAR)
        x, ad = pywt.dwt(a, _HAAR)
        da, dd = pywt.dwt(d, _HAAR)
        details.append((da, ad, dd))
    return x, details


def _reconstruct(x: _F64, details: list[tuple[Any, Any, Any]]) -> _F64:
    """Inverse of ``_decompose``, step by step as waverec2's idwtn: columns, then rows."""
    for da, ad, dd in reversed(details):
        x = pywt.idwt(pywt.idwt(x, ad, _HAAR), pywt.idwt(da, dd, _HAAR), _HAAR)
    return x


def _whash_low(small: _U8) -> _F64:
    """(8, 8) float64: imagehash's ``dwt_low`` of small, the (S, S) uint8 resized image.

    imagehash: pixels / 255; wavedec2 to the 1x1 top; that coefficient zeroed;
    waverec2; wavedec2 down to 8x8, whose approximation is dwt_low. pywt's Haar
    filter has 2 taps and every length here is even, so each coefficient comes
    from its own pair, with no boundary extension, by the same C loop (sum = 0,
    then += each tap's product) wherever the pair lies. Hence:

    - the first log2(S/8) levels are separate work on each of the 64 tiles of
      (S/8)^2 pixels, done in chunks of tiles that stay in cache; then the top
      three levels on the 8x8 tile approximations;
    - laid out by ``_morton``, each 2-D step is 1-D ``pywt.dwt`` / ``idwt`` /
      ``downcoef`` steps on contiguous memory: pywt's routine on the same
      pairs, in the same order, without its strided column reads (a cache miss
      each at large S) or the Python cost of its n-D wrappers on small arrays.

    The test suite checks every value against imagehash's calls, bit for bit.
    """
    side = small.shape[0]
    levels = side.bit_length() - 4  # log2(S / 8); S is a power of 2, >= 8
    tile = 4**levels
    tiles = small.reshape(8, side // 8, 8, side // 8).transpose(0, 2, 1, 3).reshape(64, tile)
    flat = np.take(tiles, _morton(levels), axis=1).reshape(-1)
    per = max(1, min(64, _CHUNK // tile))  # tiles per chunk
    firsts = range(0, 64, per)
    lows = np.empty(64)
    kept = []
    for first in firsts:
        chunk = flat[first * tile : (first + per) * tile] / 255.0  # imagehash's pixels / 255.
        lows[first : first + per], details = _decompose(chunk, levels)
        kept.append(details)
    # The top three levels, on the 8x8 tile approximations, laid out the same way.
    order = _morton(3)
    top, top_details = _decompose(lows[order], 3)
    tops = np.empty(64)
    tops[order] = _reconstruct(top * 0, top_details)  # remove_max_haar_ll: coeffs[0] *= 0
    for first, details in zip(firsts, kept, strict=True):
        x = _reconstruct(tops[first : first + per], details)
        # The second wavedec2 keeps only the approximation: 2 * levels 1-D steps.
        lows[first : first + per] = pywt.downcoef("a", x, _HAAR, level=2 * levels) if levels else x
    return lows.reshape(8, 8)


def _check(names: Iterable[str]) -> list[str]:
    """names without repeats, in order; ValueError on a name outside FAMILY."""
    wanted = list(dict.fromkeys(names))
    unknown = [n for n in wanted if n not in FAMILY]
    if unknown:
        raise ValueError(f"not imagehash-family signals: {unknown}; known: {FAMILY}")
    return wanted


def _reduce(image: Image.Image, names: Sequence[str]) -> dict[str, NDArray[Any]]:
    """The small array each hash thresholds: ahash (8, 8) uint8, dhash (8, 9) uint8,
    phash (32, 32) uint8 (resized pixels), whash (8, 8) float64 (``_whash_low``)."""
    if not names:
        return {}
    sizes = dict(_SIZES)
    if "whash" in names:
        if image.width == 0 or image.height == 0:
            raise ValueError(f"whash needs an image with pixels, got {image.size}")
        side = whash_scale(image.size)
        sizes["whash"] = (side, side)
    # Pillow's convert("L") of an "L" image is a copy of the same pixels: skip it.
    gray = image if image.mode == "L" else image.convert("L")
    resized: dict[tuple[int, int], _U8] = {}
    out: dict[str, NDArray[Any]] = {}
    for name in names:
        size = sizes[name]
        if size not in resized:
            resized[size] = np.asarray(gray.resize(size, _LANCZOS))
        out[name] = _whash_low(resized[size]) if name == "whash" else resized[size]
    return out


def _bits(name: str, stack: NDArray[Any]) -> NDArray[np.bool_]:
    """(N, 64) bool: the hash bits of N images from their stacked ``_reduce`` arrays."""
    bits: NDArray[np.bool_]
    if name == "ahash":
        bits = stack > stack.mean(axis=(1, 2), keepdims=True)  # exact: integer sums over 64
    elif name == "dhash":
        bits = stack[:, :, 1:] > stack[:, :, :-1]
    else:
        if name == "phash":
            # Imported here: scipy.fftpack costs 0.14 s at start, for pHash only.
            from scipy.fftpack import dct

            stack = dct(dct(stack, axis=1), axis=2)[:, :8, :8]
        values = np.asarray(stack, dtype=np.float64).reshape(-1, 64)
        bits = values > np.median(values, axis=1, keepdims=True)
    return bits.reshape(-1, 64)


def _finish(
    reduced: Sequence[dict[str, NDArray[Any]]], names: Sequence[str]
) -> list[dict[str, bytes]]:
    """Threshold and pack each name's arrays, batched over the images."""
    out: list[dict[str, bytes]] = [{} for _ in reduced]
    if not reduced:
        return out
    for name in names:
        packed = np.packbits(_bits(name, np.stack([r[name] for r in reduced])), axis=1)
        for result, row in zip(out, packed, strict=True):
            result[name] = row.tobytes()
    return out


def family_hashes(image: Image.Image, names: Sequence[str] = FAMILY) -> dict[str, bytes]:
    """Each requested hash as 8 bytes == ``bytes.fromhex(str(imagehash.<name>(image)))``.

    image: a loaded PIL image in its file's own mode (as Image.open gives it;
    the "L" conversion is done here, as imagehash does). The dict follows the
    order of names; ValueError names outside FAMILY.
    """
    wanted = _check(names)
    return _finish([_reduce(image, wanted)], wanted)[0]


def ahash(image: Image.Image) -> bytes:
    """imagehash.average_hash(image) as 8 bytes."""
    return family_hashes(image, ("ahash",))["ahash"]


def phash(image: Image.Image) -> bytes:
    """imagehash.phash(image) as 8 bytes."""
    return family_hashes(image, ("phash",))["phash"]


def dhash(image: Image.Image) -> bytes:
    """imagehash.dhash(image) as 8 bytes."""
    return family_hashes(image, ("dhash",))["dhash"]


def whash(image: Image.Image) -> bytes:
    """imagehash.whash(image) as 8 bytes."""
    return family_hashes(image, ("whash",))["whash"]
