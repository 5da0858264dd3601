"""The pixel stage of one file: decode it, then make every requested pixel signal.

This is the code that touches a hostile file's pixels, so it is what the
sandbox runs in its worker processes (``appliance.sandbox``); the inline
backend runs the same function in the calling thread. Its inputs and output
are plain data (``PixelJob``, ``PixelResult``) so that they cross a process
boundary as JSON and bytes, never as pickles.

With ``export`` (the GPU backends), the signals named there are left to the
device: they are not hashed here, and the RGB pixels of each view of the file
(the picture, then its EXIF turn when that is hashed too) come back in
``images``; ``assemble`` later puts the device's hashes of them in the place
the CPU path gives them, so the order of hashes is the same on every backend.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace

import numpy as np
from numpy.typing import NDArray

from appliance.decode import Decoded, Layout, decode
from appliance.hashers.registry import PixelOptions, hash_pixels
from appliance.results import HashValue
from appliance.signals import SIGNALS

EXIF = "exif"
"""The variant of the hashes of the EXIF-corrected orientation."""


@dataclass(frozen=True)
class PixelJob:
    """What to make of one file's pixels."""

    names: tuple[str, ...]
    pdq_dihedral: bool = False
    # Also hash the EXIF-corrected orientation (variant "exif") when it differs.
    exif_orientation: bool = False
    # JPEG decoded at a reduced DCT scale keeping both sides >= this (fast mode).
    fast_min_side: int | None = None
    # Signals left to a device: not hashed here, the RGB pixels in ``images``.
    export: tuple[str, ...] = ()


@dataclass
class PixelResult:
    hashes: list[HashValue]
    # With an export: the RGB (H, W, 3) uint8 of each view, the picture first.
    images: list[NDArray[np.uint8]] = field(default_factory=list)
    decode_seconds: float = 0.0
    hash_seconds: float = 0.0
    # Peak memory of the work over the worker's idle size, where measured (sandbox).
    peak_bytes: int = 0


def hash_file(data: bytes | memoryview, layout: Layout, job: PixelJob,
              deadline: float | None = None) -> PixelResult:
    """Decode ``data`` (as ``probe`` found it: ``layout``) and hash its pixels.

    Raises ItemFault for a file that cannot be decoded or hashed; ``deadline``
    (time.monotonic) stops a decode that runs past it with DECODE_TIMEOUT.
    """
    started = time.perf_counter()
    decoded = decode(data, layout, job.fast_min_side, deadline)
    decoded_at = time.perf_counter()
    here = [n for n in job.names if n not in job.export]
    options = PixelOptions(pdq_dihedral=job.pdq_dihedral)
    hashes: list[HashValue] = []
    images: list[NDArray[np.uint8]] = []
    for view, picture in enumerate(_views(decoded, job)):
        made = hash_pixels(picture, here, options) if here else []
        hashes += [replace(h, variant=EXIF) for h in made] if view else made
        if job.export:
            images.append(picture.rgb())
    return PixelResult(hashes, images, decoded_at - started, time.perf_counter() - decoded_at)


def _views(decoded: Decoded, job: PixelJob) -> list[Decoded]:
    """The picture, and its EXIF-corrected orientation when asked for and it differs.

    With dihedral matching on the turn adds nothing: the EXIF orientations are
    all among the 8 rotations/flips already queried.
    """
    if not job.exif_orientation or job.pdq_dihedral:
        return [decoded]
    turned = decoded.exif_transposed()
    return [decoded] if turned is None else [decoded, turned]


def assemble(names: Sequence[str], here: Sequence[HashValue],
             device: Mapping[str, Sequence[Sequence[HashValue]]]) -> list[HashValue]:
    """One file's pixel hashes in the CPU path's order: per view (the picture,
    then its EXIF turn), per group in order of first appearance among ``names``.

    ``here``: the hashes ``hash_file`` made; ``device``: group -> per view (the
    images ``hash_file`` exported, in order) the hashes a device made of it.
    """
    if not device:
        return list(here)
    groups = list(dict.fromkeys(SIGNALS[n].group for n in names))
    views = {len(rows) for rows in device.values()}
    if len(views) != 1:
        raise ValueError(f"device hashes of {sorted(views)} views of one file")
    out: list[HashValue] = []
    for view in range(views.pop()):
        for group in groups:
            if group in device:
                made = device[group][view]
                out += [replace(h, variant=EXIF) for h in made] if view else made
            else:
                out += [h for h in here if SIGNALS[h.signal].group == group
                        and (h.variant == EXIF) == (view > 0)]
    return out
