"""The pixel stage of one file: decode it, then make every requested pixel signal.

This is the code that touches a hostile file's pixels, so it is what the
sandbox runs in its worker processes (``appliance.sandbox``); the inline
backend runs the same function in the calling thread. Its inputs and output
are plain data (``PixelJob``, ``PixelResult``) so that they cross a process
boundary as JSON and bytes, never as pickles.

With ``export_pdq`` (the GPU backends), PDQ is left to the device: each PDQ
hash is a placeholder of quality ``PENDING_QUALITY`` in its place in the
hash order, and the RGB pixels of each image it needs come back in ``images``.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import numpy as np
from numpy.typing import NDArray

from appliance.decode import Decoded, Layout, decode
from appliance.hashers.pdq import DIHEDRAL_VARIANTS
from appliance.hashers.registry import GROUPS, GroupHasher, PixelOptions, hash_pixels
from appliance.results import HashValue

PENDING_QUALITY = -1
"""The quality of a PDQ placeholder that a device stage fills in."""


@dataclass(frozen=True)
class PixelJob:
    """What to make of one file's pixels."""

    names: tuple[str, ...]
    pdq_dihedral: bool = False
    # Also hash the EXIF-corrected orientation (variant "exif") when it differs.
    exif_orientation: bool = False
    # JPEG decoded at a reduced DCT scale keeping both sides >= this (fast mode).
    fast_min_side: int | None = None
    # Leave PDQ to a device: placeholders in the hashes, RGB pixels in ``images``.
    export_pdq: bool = False


@dataclass
class PixelResult:
    hashes: list[HashValue]
    # RGB (H, W, 3) uint8 of each image whose PDQ was left to the device, in order.
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
    images: list[NDArray[np.uint8]] = []
    groups: dict[str, GroupHasher] = dict(GROUPS)
    if job.export_pdq:
        groups["pdq"] = _exporter(images)
    options = PixelOptions(pdq_dihedral=job.pdq_dihedral)
    hashes = hash_pixels(decoded, job.names, options, groups)
    hashes += _exif_variant(decoded, job, options, groups)
    return PixelResult(hashes, images, decoded_at - started, time.perf_counter() - decoded_at)


def _exporter(images: list[NDArray[np.uint8]]) -> GroupHasher:
    """A PDQ group that keeps the pixels for the device and leaves placeholders."""

    def export(decoded: Decoded, names: Sequence[str], options: PixelOptions) -> list[HashValue]:
        images.append(decoded.rgb())
        variants = DIHEDRAL_VARIANTS if options.pdq_dihedral else ("original",)
        return [HashValue("pdq", b"", PENDING_QUALITY, "" if v == "original" else v)
                for v in variants]

    return export


def _exif_variant(decoded: Decoded, job: PixelJob, options: PixelOptions,
                  groups: dict[str, GroupHasher]) -> list[HashValue]:
    """Hashes of the EXIF-corrected orientation, when asked for and it differs.

    With dihedral matching on they add nothing: the EXIF orientations are
    all among the 8 rotations/flips already queried.
    """
    if not job.exif_orientation or job.pdq_dihedral:
        return []
    turned = decoded.exif_transposed()
    if turned is None:
        return []
    return [replace(h, variant="exif") for h in hash_pixels(turned, job.names, options, groups)]
