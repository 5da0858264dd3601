"""Fuzz targets for the decode path: ``probe`` and then ``hash_file``, as the pipeline runs them.

One target per format (``decode-jpeg``, ``decode-png``, ...): the same check,
seeded with valid files of that format, so each run spends its time inside
one walker and one Pillow plugin. Whatever the bytes:

- ``probe`` returns a sane Layout or raises ItemFault (never another type);
- when the estimate is within what the pipeline admits (``MAX_MEMORY``),
  ``hash_file`` returns well-formed hashes or raises ItemFault (MemoryError
  would mean the estimate let through a decode it should have refused);
- both stay bounded in time (libFuzzer's ``-timeout``).

Run: ``python scripts/fuzz.py --targets decode-png`` (see scripts/fuzz.py).
"""

from __future__ import annotations

import io
import struct
import zlib
from collections.abc import Callable

import numpy as np
from PIL import Image

from appliance.decode import Bounds, Needs, estimate, probe
from appliance.errors import ItemFault
from appliance.hashers.imagehash_family import FAMILY
from appliance.pixels import PixelJob, hash_file
from appliance.signals import SIGNALS
from tests import hostile
from tests.fuzz.engine import Target, main
from tests.imaging import encode, synthetic_image

# Small bounds keep each input cheap; the walkers' logic is the same at any bound.
BOUNDS = Bounds(max_pixels=4_000_000, max_scans=100, max_segments=65536, max_frames=10000)
NEEDS = Needs(pdq=True, family=True, exif=True)
# Files estimated above this are refused by the pipeline (limits.max_decode_bytes);
# the fuzz target skips them rather than decode what would never be decoded.
MAX_MEMORY = 64 << 20
JOB = PixelJob(names=("pdq", *FAMILY), exif_orientation=True)


def one_input(data: bytes) -> None:
    """Probe, estimate and (when admitted) decode and hash ``data``; raises on a finding."""
    # A worker hashes a memoryview of its copy of the upload: the same here.
    view = memoryview(bytearray(data))
    try:
        layout = probe(view, BOUNDS)
    except ItemFault:
        return
    assert layout.width > 0 and layout.height > 0, layout
    assert layout.pixels <= BOUNDS.max_pixels, layout
    assert layout.scans <= BOUNDS.max_scans and layout.segments <= BOUNDS.max_segments, layout
    assert layout.frames <= BOUNDS.max_frames and layout.decoder_bytes >= 0, layout
    if estimate(layout, NEEDS).memory > MAX_MEMORY:
        return
    try:
        result = hash_file(view, layout, JOB)
    except ItemFault:
        return
    for value in result.hashes:
        assert value.signal in JOB.names, value
        assert len(value.value) == SIGNALS[value.signal].nbytes, value
        assert value.variant in ("", "exif"), value


# -- seeds: small valid files of each format ---------------------------------------


def _save(image: Image.Image, fmt: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def _picture(seed: int, size: tuple[int, int] = (24, 16)) -> Image.Image:
    return synthetic_image(seed, size)


def _exif_rotated() -> bytes:
    exif = Image.Exif()
    exif[0x0112] = 6  # rotated 90 degrees: the exif variant is hashed
    return _save(_picture(3), "JPEG", quality=60, exif=exif.tobytes())


def jpeg_seeds() -> list[bytes]:
    return [
        hostile.jpeg_small(16, 8),
        hostile.jpeg_small(16, 16, progressive=True),
        encode(_picture(1), "JPEG", quality=50),
        encode(_picture(2).convert("L"), "JPEG"),
        encode(_picture(2).convert("CMYK"), "JPEG"),
        encode(_picture(4), "JPEG", subsampling=2, optimize=True),
        hostile.jpeg_empty_scans(3, 16, 16),
        _exif_rotated(),
    ]


def _apng() -> bytes:
    frames = [_picture(5, (8, 8)), _picture(6, (8, 8))]
    return _save(frames[0], "PNG", save_all=True, append_images=frames[1:], duration=10)


def png_seeds() -> list[bytes]:
    text = (hostile.png_chunk(b"tEXt", b"k\x00v")
            + hostile.png_chunk(b"zTXt", b"z\x00\x00" + zlib.compress(b"compressed")))
    return [
        hostile.png_gray(8, 8),
        hostile.png_gray(4, 4, text),
        encode(_picture(1, (8, 8)), "PNG"),
        encode(_picture(1, (8, 8)).convert("RGBA"), "PNG"),
        encode(_picture(1, (8, 8)).convert("P"), "PNG", transparency=0),
        encode(_picture(1, (8, 8)).convert("1"), "PNG"),
        encode(Image.fromarray(np.arange(64, dtype=np.uint16).reshape(8, 8) * 1000), "PNG"),
        encode(_picture(1, (8, 8)).convert("LA"), "PNG"),
        _apng(),
    ]


def gif_seeds() -> list[bytes]:
    frames = [_picture(7, (8, 8)).convert("P"), _picture(8, (8, 8)).convert("P")]
    return [
        hostile.gif_screen(8, 8),
        hostile.gif_comment_blocks(2),
        hostile.gif_frame_beyond_screen(4, 6),
        encode(frames[0], "GIF"),
        _save(frames[0], "GIF", save_all=True, append_images=frames[1:], transparency=0, loop=0),
    ]


def webp_seeds() -> list[bytes]:
    return [
        hostile.webp_flat(8, 8),
        hostile.webp_flat(8, 8, lossless=False),
        hostile.webp_animated_canvas(8, 8),
        encode(_picture(1, (8, 8)).convert("RGBA"), "WEBP", lossless=True),
        encode(_picture(1, (16, 8)), "WEBP", quality=20),
    ]


def _big_endian_tiff() -> bytes:
    """A big-endian ("MM") uncompressed 4x4 greyscale TIFF, by hand (Pillow writes "II")."""
    pixels = bytes(range(16))
    entries = [(256, 3, 1, 4 << 16), (257, 3, 1, 4 << 16), (258, 3, 1, 8 << 16),
               (259, 3, 1, 1 << 16), (262, 3, 1, 1 << 16), (273, 4, 1, 0),
               (277, 3, 1, 1 << 16), (278, 3, 1, 4 << 16), (279, 4, 1, len(pixels))]
    data_at = 8 + 2 + 12 * len(entries) + 4
    ifd = struct.pack(">H", len(entries)) + b"".join(
        struct.pack(">HHII", tag, kind, count, data_at if tag == 273 else value)
        for tag, kind, count, value in entries) + struct.pack(">I", 0)
    return b"MM\x00*" + struct.pack(">I", 8) + ifd + pixels


def tiff_seeds() -> list[bytes]:
    small = _picture(9, (8, 8))
    pages = [small, _picture(10, (8, 8))]
    return [
        hostile.tiff_tiles(16, 16, 16),
        hostile.tiff_tiles(8, 8, 16, compression=1),
        encode(small, "TIFF"),
        encode(small, "TIFF", compression="tiff_lzw"),
        encode(small, "TIFF", compression="tiff_adobe_deflate"),
        encode(small, "TIFF", compression="packbits"),
        encode(small, "TIFF", compression="jpeg"),
        encode(small.convert("1"), "TIFF", compression="group4"),
        encode(small.convert("RGBA"), "TIFF"),
        encode(small.convert("CMYK"), "TIFF"),
        encode(Image.fromarray(np.arange(64, dtype=np.uint16).reshape(8, 8)), "TIFF"),
        _save(pages[0], "TIFF", save_all=True, append_images=pages[1:]),
        _big_endian_tiff(),
    ]


def bmp_seeds() -> list[bytes]:
    small = _picture(11, (8, 6))
    return [
        encode(small, "BMP"),
        encode(small.convert("P"), "BMP"),
        encode(small.convert("1"), "BMP"),
        encode(small.convert("RGBA"), "BMP"),
        hostile.bmp_rle8_eol(8, 8),
    ]


SEEDS: dict[str, Callable[[], list[bytes]]] = {
    "jpeg": jpeg_seeds, "png": png_seeds, "gif": gif_seeds, "webp": webp_seeds,
    "tiff": tiff_seeds, "bmp": bmp_seeds,
}
TARGETS: dict[str, Target] = {
    f"decode-{fmt}": Target(f"decode-{fmt}", one_input, seeds, ("appliance", "PIL"))
    for fmt, seeds in SEEDS.items()
}

if __name__ == "__main__":
    main(TARGETS)
