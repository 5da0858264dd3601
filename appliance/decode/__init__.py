"""Decoding within a budget: a file's structure is read and its cost bounded
before any pixel is decoded.

- ``probe``: the format (from an allow-list), the structure (one walker per
  format: jpeg, png, gif, webp, tiff, bmp), the limits on pixels, scans,
  container items and frames, and the memory estimate (``estimate``);
- ``pillow``: the decode itself, by the one Pillow plugin the probe named,
  and the reference's RGB conversion.

The admission of decodes against a shared memory budget is ``appliance.admission``;
where the decode runs (a worker process with hard limits) is ``appliance.sandbox``.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from appliance.config import IMAGE_FORMATS
from appliance.decode.layout import Bounds, Layout
from appliance.decode.pillow import Decoded, decode, open_image
from appliance.decode.probe import Cost, Needs, estimate, probe, sniff

# Structure bounds that leave every ordinary file alone (the defaults of LimitsConfig).
DEFAULT_BOUNDS = Bounds(max_pixels=100_000_000, max_scans=100, max_segments=65536,
                        max_frames=10000)


def decode_file(data: bytes | memoryview, max_pixels: int,
                fast_min_side: int | None = None) -> Decoded:
    """Probe and decode ``data`` in this thread, with the default structure
    bounds (tests and benchmarks; the pipeline goes through ``appliance.sandbox``)."""
    bounds = Bounds(max_pixels, DEFAULT_BOUNDS.max_scans, DEFAULT_BOUNDS.max_segments,
                    DEFAULT_BOUNDS.max_frames)
    return decode(data, probe(data, bounds), fast_min_side)


def decode_rgb(data: bytes | memoryview, max_pixels: int) -> NDArray[np.uint8]:
    """``decode_file`` at full size, as an (H, W, 3) uint8 C-contiguous array."""
    return decode_file(data, max_pixels).rgb()


__all__ = [
    "DEFAULT_BOUNDS",
    "IMAGE_FORMATS",
    "Bounds",
    "Cost",
    "Decoded",
    "Layout",
    "Needs",
    "decode",
    "decode_file",
    "decode_rgb",
    "estimate",
    "open_image",
    "probe",
    "sniff",
]
