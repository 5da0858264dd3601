"""Bytes -> RGB pixels, as the PDQ reference sees them.

The reference hashes Pillow's ``Image.convert("RGB")`` of the file at full
resolution, with the pixels as stored: no EXIF rotation, no pre-resize, the
first frame of an animation. Every failure becomes an ItemFault with a stable
code; nothing here ever writes the bytes anywhere.
"""

from __future__ import annotations

import io

import numpy as np
from numpy.typing import NDArray
from PIL import Image, UnidentifiedImageError

from appliance.errors import ItemCode, ItemFault

# We check width x height against the configured limit ourselves, before any
# pixel is decoded, and report DECOMPRESSION_BOMB. Pillow's own global check
# would warn, or refuse at a limit other than the configured one.
Image.MAX_IMAGE_PIXELS = None

# Leading bytes of the common formats. Pillow reports a damaged header of a
# known format as "unidentified"; these let us say CORRUPT_IMAGE instead of
# NOT_AN_IMAGE, which is what an operator needs to know.
_SIGNATURES = (
    (b"\x89PNG\r\n\x1a\n", "PNG"),
    (b"\xff\xd8\xff", "JPEG"),
    (b"GIF87a", "GIF"),
    (b"GIF89a", "GIF"),
    (b"II*\x00", "TIFF"),
    (b"MM\x00*", "TIFF"),
)


def _claimed_format(data: bytes | memoryview) -> str | None:
    head = bytes(data[:12])
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WEBP"
    if head[:2] == b"BM" and head[6:10] == bytes(4):  # "BM" alone is too common in text
        return "BMP"
    return next((name for magic, name in _SIGNATURES if head.startswith(magic)), None)


def open_image(data: bytes | memoryview, max_pixels: int) -> Image.Image:
    """Parse the header only and apply the pixel limit; no pixel is decoded yet."""
    try:
        image = Image.open(io.BytesIO(data))
    except UnidentifiedImageError as exc:
        claimed = _claimed_format(data)
        if claimed is not None:
            raise ItemFault(
                ItemCode.CORRUPT_IMAGE, f"starts like {claimed} but its header is damaged"
            ) from exc
        raise ItemFault(ItemCode.NOT_AN_IMAGE, "no image format recognised") from exc
    except Image.DecompressionBombError as exc:
        raise ItemFault(ItemCode.DECOMPRESSION_BOMB, str(exc)) from exc
    except Exception as exc:  # Pillow raises many types on damaged headers
        raise ItemFault(ItemCode.CORRUPT_IMAGE, f"unreadable image header: {exc}") from exc
    width, height = image.size
    if width <= 0 or height <= 0:
        raise ItemFault(ItemCode.CORRUPT_IMAGE, f"image has no pixels ({width}x{height})")
    if width * height > max_pixels:
        raise ItemFault(
            ItemCode.DECOMPRESSION_BOMB,
            f"{image.format} of {width}x{height} = {width * height} pixels "
            f"exceeds the limit of {max_pixels}",
        )
    return image


def decode_rgb(data: bytes | memoryview, max_pixels: int) -> NDArray[np.uint8]:
    """Decode ``data`` to an (H, W, 3) uint8 C-contiguous array on the host."""
    image = open_image(data, max_pixels)
    try:
        image.load()
    except Image.DecompressionBombError as exc:
        raise ItemFault(ItemCode.DECOMPRESSION_BOMB, str(exc)) from exc
    except Exception as exc:  # truncated data, broken streams, decoder errors
        raise ItemFault(ItemCode.CORRUPT_IMAGE, f"{image.format} does not decode: {exc}") from exc
    try:
        rgb = image.convert("RGB")
    except Exception as exc:
        raise ItemFault(
            ItemCode.UNSUPPORTED_IMAGE, f"{image.format} mode {image.mode} has no RGB form: {exc}"
        ) from exc
    return np.ascontiguousarray(np.asarray(rgb, dtype=np.uint8))
