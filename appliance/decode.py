"""Bytes -> RGB pixels, as the PDQ reference sees them.

The reference hashes Pillow's ``Image.convert("RGB")`` of the file at full
resolution, with the pixels as stored: no EXIF rotation, no pre-resize, the
first frame of an animation. Every failure becomes an ItemFault with a stable
code; nothing here ever writes the bytes anywhere.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray
from PIL import Image, ImageOps, UnidentifiedImageError

from appliance.errors import ItemCode, ItemFault

# We check width x height against the configured limit ourselves, before any
# pixel is decoded, and report DECOMPRESSION_BOMB. Pillow's own global check
# would warn, or refuse at a limit other than the configured one.
Image.MAX_IMAGE_PIXELS = None

_EXIF_ORIENTATION = 0x0112

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


@dataclass
class Decoded:
    """One decoded image: the first frame, pixels as stored, in the file's own mode.

    ``rgb()`` is the reference's input (``Image.convert("RGB")``), made once
    and shared by every hasher that needs it; the imagehash family works from
    ``image`` itself, as imagehash does. ``scale`` > 1 when a JPEG was decoded
    at reduced size (fast mode): the stored size is ``scale`` times larger.
    """

    image: Image.Image
    scale: int = 1
    _rgb: NDArray[np.uint8] | None = field(default=None, repr=False)

    def rgb(self) -> NDArray[np.uint8]:
        """(H, W, 3) uint8, C-contiguous."""
        if self._rgb is None:
            try:
                converted = self.image.convert("RGB")
            except Exception as exc:
                raise ItemFault(
                    ItemCode.UNSUPPORTED_IMAGE,
                    f"{self.image.format} mode {self.image.mode} has no RGB form: {exc}",
                ) from exc
            self._rgb = np.ascontiguousarray(np.asarray(converted, dtype=np.uint8))
        return self._rgb

    def exif_transposed(self) -> Decoded | None:
        """The image turned as its EXIF orientation tag says, or None when the
        tag is absent or already upright (1)."""
        orientation = self.image.getexif().get(_EXIF_ORIENTATION, 1)
        if orientation in (None, 1):
            return None
        turned = ImageOps.exif_transpose(self.image)
        return Decoded(turned, self.scale) if turned is not None else None


def decode(
    data: bytes | memoryview, max_pixels: int, fast_min_side: int | None = None
) -> Decoded:
    """Decode ``data``, refusing bombs from the header and faults by code.

    With ``fast_min_side``, a JPEG is decoded at the smallest DCT scale (1/2,
    1/4 or 1/8) that keeps both sides at or above ``fast_min_side`` (or at
    full size when smaller): much less work for a slightly different picture.
    """
    image = open_image(data, max_pixels)
    scale = 1
    if fast_min_side is not None and image.format == "JPEG":
        width, height = image.size
        # draft() picks the largest scale s in 8, 4, 2, 1 with s <= min(W // w, H // h).
        image.draft(None, (min(width, fast_min_side), min(height, fast_min_side)))
        scale = max(1, round(width / image.size[0]))
    try:
        image.load()
    except Image.DecompressionBombError as exc:
        raise ItemFault(ItemCode.DECOMPRESSION_BOMB, str(exc)) from exc
    except Exception as exc:  # truncated data, broken streams, decoder errors
        raise ItemFault(ItemCode.CORRUPT_IMAGE, f"{image.format} does not decode: {exc}") from exc
    return Decoded(image, scale)


def decode_rgb(data: bytes | memoryview, max_pixels: int) -> NDArray[np.uint8]:
    """Decode ``data`` at full size to an (H, W, 3) uint8 C-contiguous array."""
    return decode(data, max_pixels).rgb()
