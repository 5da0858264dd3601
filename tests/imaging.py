"""Synthetic test pictures and their encoding; Pillow and NumPy only, so that
the device tests (tests/kernels) import no server module."""

from __future__ import annotations

import io
from typing import Any

import numpy as np
from PIL import Image


def synthetic_image(seed: int, size: tuple[int, int] = (96, 80)) -> Image.Image:
    """A textured RGB picture (high PDQ quality), deterministic in ``seed``."""
    rng = np.random.default_rng(seed)
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    planes = [
        128 + 90 * np.sin(xx / rng.uniform(3, 12) + rng.uniform(0, 6))
        * np.cos(yy / rng.uniform(3, 12) + rng.uniform(0, 6))
        for _ in range(3)
    ]
    pixels = np.clip(np.stack(planes, axis=-1) + rng.normal(0, 8, (h, w, 3)), 0, 255)
    return Image.fromarray(pixels.astype(np.uint8), "RGB")


def encode(image: Image.Image, fmt: str = "PNG", **options: Any) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()
