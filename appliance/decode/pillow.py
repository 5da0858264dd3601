"""Bytes -> pixels with Pillow, as the PDQ reference sees them.

The reference hashes Pillow's ``Image.convert("RGB")`` of the file at full
resolution, with the pixels as stored: no EXIF rotation, no pre-resize, the
first frame of an animation. Every failure becomes an ItemFault with a stable
code; nothing here ever writes the bytes anywhere.

Pillow is asked to try one plugin only, the format ``probe`` found, so no
other plugin (EPS and its Ghostscript, ICO and its embedded images) ever sees
the bytes; and its size must be the probe's, so the memory estimate made from
the probe is the memory of what is really decoded.
"""

from __future__ import annotations

import io
import time
from dataclasses import dataclass, field
from typing import IO, Any, cast

import numpy as np
from numpy.typing import NDArray
from PIL import Image, ImageOps, PngImagePlugin, UnidentifiedImageError

from appliance.decode.layout import Layout
from appliance.errors import ItemCode, ItemFault
from appliance.override import SharedOverride

# Compressed PNG text chunks are inflated at open, up to 64 MB by default;
# nothing here reads them.
PngImagePlugin.MAX_TEXT_MEMORY = 4 << 20

_EXIF_ORIENTATION = 0x0112
# Rows converted to RGB at a time: a full-size converted copy would cost 4
# bytes a pixel more at the peak (the estimate in probe.py assumes strips).
_STRIP_BYTES = 4 << 20


def _set_max_pixels(value: int | None) -> None:
    Image.MAX_IMAGE_PIXELS = value


# Pillow's decompression-bomb check lifted while a decode of ours runs. Pixel
# limits are ours (probe), checked before any pixel is decoded; Pillow's own
# check (``Image.MAX_IMAGE_PIXELS``, read by ``Image.open`` and some plugins'
# loads) would warn, or refuse at another limit. Pillow reads that module
# global at each check and has no per-call limit, so it is None while at
# least one decode is inside and put back as it was after the last (decodes
# run on several threads with ``limits.decode_isolation = "inline"``). Pillow
# used elsewhere in the process keeps its limit outside our decodes
# (importing this module changes nothing).
_own_pixel_limits = SharedOverride(lambda: Image.MAX_IMAGE_PIXELS, _set_max_pixels, None)


class _Reader(io.RawIOBase):
    """The file as Pillow reads it: a view of the bytes (io.BytesIO would copy
    them whole), refusing to go on past ``deadline`` (time.monotonic).
    Decoders read in blocks of at most 64 KB, so a slow decode is stopped at
    its next read (a process worker is also killed)."""

    def __init__(self, data: bytes | memoryview, deadline: float | None) -> None:
        super().__init__()
        self._view = memoryview(data).cast("B")
        self._pos = 0
        self._deadline = deadline

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: len(self._view)}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def read(self, size: int | None = -1, /) -> bytes:
        if self._deadline is not None and time.monotonic() > self._deadline:
            raise ItemFault(ItemCode.DECODE_TIMEOUT, "decoding ran past limits.max_decode_seconds")
        end = len(self._view) if size is None or size < 0 else self._pos + size
        chunk = bytes(self._view[self._pos : end])
        self._pos += len(chunk)
        return chunk

    def readinto(self, buffer: Any) -> int:
        chunk = self.read(len(memoryview(buffer)))
        memoryview(buffer).cast("B")[: len(chunk)] = chunk
        return len(chunk)


def open_image(data: bytes | memoryview, layout: Layout,
               deadline: float | None = None) -> Image.Image:
    """Parse the header with the one plugin of ``layout.format``; no pixel is decoded yet."""
    try:
        with _own_pixel_limits():
            image = Image.open(cast(IO[bytes], _Reader(data, deadline)), formats=[layout.format])
    except ItemFault:
        raise
    except UnidentifiedImageError as exc:
        raise ItemFault(ItemCode.CORRUPT_IMAGE,
                        f"starts like {layout.format} but its header is damaged") from exc
    except Exception as exc:  # Pillow raises many types on damaged headers
        raise ItemFault(ItemCode.CORRUPT_IMAGE, f"unreadable image header: {exc}") from exc
    if image.size != (layout.width, layout.height):
        raise ItemFault(
            ItemCode.CORRUPT_IMAGE,
            f"{layout.format} header says {image.size[0]}x{image.size[1]} but its structure "
            f"{layout.width}x{layout.height}",
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
                with _own_pixel_limits():  # a strip of a very wide image is one wide crop
                    self._rgb = _to_rgb(self.image)
            except MemoryError as exc:
                raise ItemFault(ItemCode.DECOMPRESSION_BOMB,
                                "the RGB pixels need more memory than decoding is given") from exc
            except Exception as exc:
                raise ItemFault(
                    ItemCode.UNSUPPORTED_IMAGE,
                    f"{self.image.format} mode {self.image.mode} has no RGB form: {exc}",
                ) from exc
        return self._rgb

    def exif_transposed(self) -> Decoded | None:
        """The image turned as its EXIF orientation tag says, or None when the
        tag is absent or already upright (1)."""
        orientation = self.image.getexif().get(_EXIF_ORIENTATION, 1)
        if orientation in (None, 1):
            return None
        turned = ImageOps.exif_transpose(self.image)
        return Decoded(turned, self.scale) if turned is not None else None


def _to_rgb(image: Image.Image) -> NDArray[np.uint8]:
    """``np.asarray(image.convert("RGB"))``, a strip of rows at a time.

    Conversion to RGB is pixel by pixel for every mode (dithering applies
    only to "1" and "P" targets), so strips give the same bytes as the whole
    image. Whole, the conversion would hold a second full-size picture and
    ``np.asarray`` two copies of its bytes (Pillow's ``tobytes`` joins a list
    of chunks) on top of the array: 10 bytes a pixel more at the peak.
    """
    width, height = image.size
    out = np.empty((height, width, 3), dtype=np.uint8)
    rows = max(1, _STRIP_BYTES // (4 * width))
    for top in range(0, height, rows):
        bottom = min(height, top + rows)
        strip = image if (top, bottom) == (0, height) else image.crop((0, top, width, bottom))
        if strip.mode != "RGB":
            strip = strip.convert("RGB")
        out[top:bottom] = np.asarray(strip)
    return out


def decode(data: bytes | memoryview, layout: Layout, fast_min_side: int | None = None,
           deadline: float | None = None) -> Decoded:
    """Decode ``data`` (whose structure ``probe`` found to be ``layout``), faults by code.

    With ``fast_min_side``, a JPEG is decoded at the smallest DCT scale (1/2,
    1/4 or 1/8) that keeps both sides at or above ``fast_min_side`` (or at
    full size when smaller): much less work for a slightly different picture.
    ``deadline`` (time.monotonic) stops a decode that runs past it.
    """
    image = open_image(data, layout, deadline)
    scale = 1
    if fast_min_side is not None and image.format in ("JPEG", "MPO"):
        width, height = image.size
        # draft() picks the largest scale s in 8, 4, 2, 1 with s <= min(W // w, H // h).
        image.draft(None, (min(width, fast_min_side), min(height, fast_min_side)))
        scale = max(1, round(width / image.size[0]))
    try:
        with _own_pixel_limits():
            image.load()
    except ItemFault:
        raise
    except MemoryError as exc:
        raise ItemFault(ItemCode.DECOMPRESSION_BOMB,
                        f"{image.format} needs more memory to decode than it is given") from exc
    except Exception as exc:  # truncated data, broken streams, decoder errors
        raise ItemFault(ItemCode.CORRUPT_IMAGE, f"{image.format} does not decode: {exc}") from exc
    return Decoded(image, scale)
