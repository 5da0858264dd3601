"""What a file's structure says about the work of decoding it, found before decoding.

A walker (one module per format) reads a file's container structure, never
its pixel data, and returns a ``Layout``: the size Pillow will decode, the
mode it will decode to, and the counts that make decoding cost more than its
pixels (scans of a progressive JPEG, items Pillow parses one by one in Python,
frames). Each walker stops as soon as a count passes its bound in ``Bounds``,
so walking a hostile file costs at most a bounded number of steps, in C
(``bytes.find``, ``re``) wherever the file could make a Python loop long.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any

from appliance.errors import ItemCode, ItemFault


@dataclass(frozen=True)
class Bounds:
    """Limits on a file's structure, from ``LimitsConfig``."""

    max_pixels: int
    # Progressive (or multi-scan) JPEG scans: each one is a pass over every block.
    max_scans: int
    # Items Pillow reads one at a time in Python before and while decoding: JPEG
    # markers, PNG chunks, GIF blocks, TIFF tags, WebP chunks; a metadata
    # segment that Pillow parses further counts one per 64 bytes.
    max_segments: int
    # Frames of an animation that the container lists (only the first is decoded).
    max_frames: int


@dataclass(frozen=True)
class Layout:
    """A file's structure as the decoder will see it.

    ``width`` x ``height`` is the picture Pillow decodes (for a GIF, the logical
    screen grown to hold the first frame); ``mode`` the Pillow mode it decodes
    to; ``decoder_bytes`` memory the format's decoder holds on top of the
    decoded picture (a progressive JPEG's coefficients, a TIFF tile, a
    WebP canvas).
    """

    format: str
    width: int
    height: int
    mode: str
    decoder_bytes: int = 0
    scans: int = 1
    segments: int = 0
    frames: int = 1
    # The file's own size: a decoder holds the file too (set by ``probe``).
    file_bytes: int = 0

    @property
    def pixels(self) -> int:
        return self.width * self.height


def corrupt(fmt: str, why: str) -> ItemFault:
    return ItemFault(ItemCode.CORRUPT_IMAGE, f"{fmt}: {why}")


def too_complex(fmt: str, what: str, count: int | str, bound: int, name: str) -> ItemFault:
    return ItemFault(
        ItemCode.TOO_COMPLEX,
        f"{fmt} has {count} {what}, more than limits.{name}={bound}; refused before decoding",
    )


class Counter:
    """Counts one kind of structural item against its bound, raising once past it."""

    def __init__(self, fmt: str, what: str, bound: int, name: str) -> None:
        self.fmt, self.what, self.bound, self.name = fmt, what, bound, name
        self.count = 0

    def add(self, n: int = 1) -> None:
        self.count += n
        if self.count > self.bound:
            raise too_complex(self.fmt, self.what, f"over {self.bound}", self.bound, self.name)


def segments(fmt: str, bounds: Bounds) -> Counter:
    return Counter(fmt, "container items", bounds.max_segments, "max_segments")


def unpack(fmt: str, layout: str, data: bytes | memoryview, offset: int) -> tuple[Any, ...]:
    """struct.unpack_from, with a short file reported as a truncated image.

    Offsets come from the file (a TIFF's IFD offset is any 64-bit value), so one
    outside the data is refused first: struct would count a negative offset
    from the end, and raise OverflowError, not struct.error, past 2**63."""
    if not 0 <= offset <= len(data):
        raise corrupt(fmt, f"truncated at byte {offset}")
    try:
        return struct.unpack_from(layout, data, offset)
    except struct.error as exc:
        raise corrupt(fmt, f"truncated at byte {offset}") from exc


# Bytes Pillow keeps per decoded pixel, by mode ("RGB" is stored as 4 bytes).
_MODE_BYTES = {"1": 1, "L": 1, "P": 1, "I;16": 2, "I;16B": 2, "I;16L": 2, "I;16N": 2}


def mode_bytes(mode: str) -> int:
    return _MODE_BYTES.get(mode, 4)
