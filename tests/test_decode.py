"""Decoding: formats, the reference's RGB conversion, limits and typed refusals."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from appliance.decode import decode_rgb
from appliance.errors import ItemCode, ItemFault
from tests.helpers import encode, synthetic_image

BIG = 10**9


def _code(data: bytes, max_pixels: int = BIG) -> str:
    with pytest.raises(ItemFault) as info:
        decode_rgb(data, max_pixels)
    return info.value.code


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "GIF", "WEBP", "BMP", "TIFF"])
def test_formats_decode_like_pillow_convert_rgb(fmt: str) -> None:
    data = encode(synthetic_image(1, (61, 47)), fmt)
    expected = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
    got = decode_rgb(data, BIG)
    assert got.dtype == np.uint8 and got.shape == (47, 61, 3) and got.flags.c_contiguous
    assert np.array_equal(got, expected)


@pytest.mark.parametrize("mode", ["L", "RGBA", "P", "I;16", "CMYK", "1", "LA"])
def test_modes_convert_as_the_reference(mode: str) -> None:
    image = synthetic_image(2, (33, 29))
    image = image.convert("L").convert(mode) if mode == "I;16" else image.convert(mode)
    fmt = "TIFF" if mode in ("I;16", "CMYK") else "PNG"
    data = encode(image, fmt)
    expected = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
    assert np.array_equal(decode_rgb(data, BIG), expected)


def test_exif_orientation_is_not_applied() -> None:
    image = synthetic_image(3, (40, 20))
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW" in the tag; the reference ignores it
    data = encode(image, "JPEG", exif=exif.tobytes())
    assert decode_rgb(data, BIG).shape == (20, 40, 3)


def test_animated_gif_gives_first_frame() -> None:
    frames = [synthetic_image(s, (30, 30)) for s in (4, 5)]
    buffer = io.BytesIO()
    frames[0].save(buffer, "GIF", save_all=True, append_images=frames[1:])
    first = np.asarray(Image.open(io.BytesIO(buffer.getvalue())).convert("RGB"))
    assert np.array_equal(decode_rgb(buffer.getvalue(), BIG), first)


def test_not_an_image() -> None:
    assert _code(b"%PDF-1.4 hello, not an image") == ItemCode.NOT_AN_IMAGE
    assert _code(bytes(range(256)) * 4) == ItemCode.NOT_AN_IMAGE


def test_truncated_image_is_corrupt() -> None:
    data = encode(synthetic_image(6, (200, 150)), "JPEG")
    assert _code(data[: len(data) // 2]) == ItemCode.CORRUPT_IMAGE
    png = encode(synthetic_image(6, (200, 150)), "PNG")
    assert _code(png[: len(png) // 2]) == ItemCode.CORRUPT_IMAGE


def test_damaged_header_is_corrupt() -> None:
    png = bytearray(encode(synthetic_image(7, (20, 20)), "PNG"))
    png[16:24] = b"\xff" * 8  # IHDR width/height garbage, CRC now wrong
    assert _code(bytes(png)) == ItemCode.CORRUPT_IMAGE


def _png_header_claiming(width: int, height: int) -> bytes:
    """A PNG whose IHDR claims a huge size (valid CRC) with a tiny body."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = b"IHDR" + ihdr
    body = zlib.compress(b"\x00" * 64)
    idat = b"IDAT" + body
    return (
        b"\x89PNG\r\n\x1a\n"
        + struct.pack(">I", len(ihdr)) + chunk + struct.pack(">I", zlib.crc32(chunk))
        + struct.pack(">I", len(body)) + idat + struct.pack(">I", zlib.crc32(idat))
        + struct.pack(">I", 0) + b"IEND" + struct.pack(">I", zlib.crc32(b"IEND"))
    )


def test_decompression_bomb_refused_before_decoding() -> None:
    # 100k x 100k RGB would need 30 GB; it must be refused from the header alone.
    assert _code(_png_header_claiming(100_000, 100_000), 100_000_000) == (
        ItemCode.DECOMPRESSION_BOMB
    )


def test_pixel_limit_is_the_configured_one() -> None:
    data = encode(Image.new("RGB", (1000, 1000), (1, 2, 3)), "PNG")
    assert _code(data, max_pixels=999_999) == ItemCode.DECOMPRESSION_BOMB
    assert decode_rgb(data, max_pixels=1_000_000).shape == (1000, 1000, 3)


@pytest.mark.parametrize("fmt", ["PNG", "GIF", "TIFF"])
def test_pillow_s_own_pixel_limit_is_lifted_per_decode_only(
    fmt: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Ours is the limit (the probe's); Pillow's global one, here far below this
    # image (it would refuse it), is lifted while we decode and left as it was.
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)
    data = encode(Image.new("RGB", (300, 200), (1, 2, 3)), fmt)
    assert decode_rgb(data, max_pixels=60_000).shape == (200, 300, 3)
    assert Image.MAX_IMAGE_PIXELS == 100
    with pytest.raises(Image.DecompressionBombError):
        Image.open(io.BytesIO(data))
