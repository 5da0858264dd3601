"""The probe: formats by allow-list, structures walked within bounds, against Pillow."""

from __future__ import annotations

import contextlib
import io
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from appliance.decode import DEFAULT_BOUNDS, Bounds, Needs, estimate, probe, sniff
from appliance.decode.layout import mode_bytes
from appliance.errors import ItemCode, ItemFault
from tests import hostile
from tests.helpers import encode, synthetic_image

DATA = Path(__file__).parent / "data" / "pdq"


def _code(data: bytes, bounds: Bounds = DEFAULT_BOUNDS) -> str:
    with pytest.raises(ItemFault) as info:
        probe(data, bounds)
    return info.value.code


def _samples() -> dict[str, bytes]:
    """Real files of every format, mode and option the appliance reads."""
    files = {p.name: p.read_bytes() for p in DATA.rglob("*")
             if p.suffix.lower() in (".jpg", ".jpeg", ".png", ".gif", ".webp", ".bmp", ".tif")}
    image = synthetic_image(1, (61, 47))
    cases: list[tuple[str, dict[str, Any]]] = [
        ("PNG", {}), ("JPEG", {}), ("JPEG", {"progressive": True}),
        ("JPEG", {"subsampling": 0}), ("GIF", {}), ("WEBP", {}), ("WEBP", {"lossless": True}),
        ("BMP", {}), ("TIFF", {}), ("TIFF", {"compression": "tiff_lzw"}),
        ("TIFF", {"compression": "tiff_adobe_deflate"}), ("TIFF", {"compression": "jpeg"}),
    ]
    for fmt, options in cases:
        files[f"{fmt} {options}"] = encode(image, fmt, **options)
    for mode in ("L", "RGBA", "P", "I;16", "CMYK", "1", "LA", "I", "F"):
        picture = image.convert("L").convert(mode) if mode in ("I;16", "I", "F") else \
            image.convert(mode)
        for fmt in ("PNG", "TIFF", "BMP", "WEBP", "JPEG", "GIF"):
            try:
                files[f"{mode} as {fmt}"] = encode(picture, fmt)
            except (OSError, ValueError, KeyError):
                continue  # a mode the format cannot store
    frames = [synthetic_image(s, (30, 30)) for s in (4, 5)]
    for fmt in ("GIF", "PNG", "WEBP"):
        buffer = io.BytesIO()
        frames[0].save(buffer, fmt, save_all=True, append_images=frames[1:])
        files[f"animated {fmt}"] = buffer.getvalue()
    return files


SAMPLES = _samples()


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_layout_is_what_pillow_decodes(name: str) -> None:
    data = SAMPLES[name]
    layout = probe(data, DEFAULT_BOUNDS)
    image = Image.open(io.BytesIO(data))
    assert image.format in (layout.format, "MPO")
    assert image.size == (layout.width, layout.height)
    # The estimate is made from the layout's mode: it must not be cheaper than Pillow's.
    assert mode_bytes(image.mode) <= mode_bytes(layout.mode)
    assert layout.file_bytes == len(data)


def test_png_modes_are_pillows() -> None:
    for colour, depths in {0: (1, 2, 4, 8, 16), 2: (8, 16), 3: (1, 2, 4, 8), 4: (8, 16),
                           6: (8, 16)}.items():
        for depth in depths:
            ihdr = np.array([0, 0, 0, 4, 0, 0, 0, 4, depth, colour, 0, 0, 0], np.uint8).tobytes()
            data = (b"\x89PNG\r\n\x1a\n" + hostile.png_chunk(b"IHDR", ihdr)
                    + hostile.png_chunk(b"IEND", b""))
            assert probe(data, DEFAULT_BOUNDS).mode == Image.open(io.BytesIO(data)).mode


def test_progressive_jpeg_counts_its_scans_and_coefficients() -> None:
    data = encode(synthetic_image(2, (640, 480)), "JPEG", progressive=True)
    layout = probe(data, DEFAULT_BOUNDS)
    assert layout.scans == 10  # libjpeg's default progression for YCbCr
    # 4:2:0: 80x60 Y blocks and 40x30 of each chroma, 64 coefficients of 2 bytes.
    assert layout.decoder_bytes == (80 * 60 + 2 * 40 * 30) * 128
    baseline = probe(encode(synthetic_image(2, (640, 480)), "JPEG"), DEFAULT_BOUNDS)
    assert baseline.scans == 1 and baseline.decoder_bytes == 0


@pytest.mark.parametrize(("data", "code"), [
    (hostile.eps_file(), ItemCode.UNSUPPORTED_FORMAT),
    (b"\xc5\xd0\xd3\xc6" + bytes(28), ItemCode.UNSUPPORTED_FORMAT),
    (hostile.ico_lying(16, 64), ItemCode.UNSUPPORTED_FORMAT),
    (hostile.icns_lying(64), ItemCode.UNSUPPORTED_FORMAT),
    (b"8BPS" + bytes(30), ItemCode.UNSUPPORTED_FORMAT),
    (b"\x00\x00\x00\x0cjP  \r\n\x87\n", ItemCode.UNSUPPORTED_FORMAT),
    (b"\x00\x00\x00\x1cftypavif" + bytes(20), ItemCode.UNSUPPORTED_FORMAT),
    (hostile.pdf_file(), ItemCode.NOT_AN_IMAGE),
    (b"just some text, nothing more", ItemCode.NOT_AN_IMAGE),
    (b"BM" + b"and then a sentence", ItemCode.NOT_AN_IMAGE),
])
def test_formats_outside_the_allow_list_are_refused_by_name(data: bytes, code: str) -> None:
    assert _code(data) == code


def test_a_format_left_out_of_the_configuration_is_refused() -> None:
    png = encode(synthetic_image(3), "PNG")
    with pytest.raises(ItemFault) as info:
        sniff(png, ("JPEG",))
    assert info.value.code == ItemCode.UNSUPPORTED_FORMAT and "PNG" in info.value.message


def test_structures_over_their_bounds_are_too_complex() -> None:
    assert _code(hostile.jpeg_empty_scans(101, 64, 64)) == ItemCode.TOO_COMPLEX
    assert probe(hostile.jpeg_empty_scans(99, 64, 64), DEFAULT_BOUNDS).scans == 100
    small = hostile.jpeg_small()
    assert _code(hostile.jpeg_with_markers(small, 70_000 * 4)) == ItemCode.TOO_COMPLEX
    assert _code(hostile.jpeg_photoshop_resources(small, 70)) == ItemCode.TOO_COMPLEX
    assert _code(hostile.png_unknown_chunks(70_000 * 12)) == ItemCode.TOO_COMPLEX
    assert _code(hostile.gif_comment_blocks(40_000)) == ItemCode.TOO_COMPLEX
    assert _code(hostile.bmp_rle8_eol(3000, 3000)) == ItemCode.TOO_COMPLEX
    tight = Bounds(DEFAULT_BOUNDS.max_pixels, 100, 100, 10)
    assert _code(hostile.png_unknown_chunks(101 * 12), tight) == ItemCode.TOO_COMPLEX
    assert probe(hostile.png_unknown_chunks(90 * 12), tight).segments <= 100


def test_pixels_are_counted_on_what_is_decoded() -> None:
    # The GIF canvas grows to hold the first frame, as Pillow grows it.
    layout = probe(hostile.gif_frame_beyond_screen(10, 5000), DEFAULT_BOUNDS)
    assert (layout.width, layout.height) == (5001, 5001)
    assert Image.open(io.BytesIO(hostile.gif_frame_beyond_screen(10, 5000))).size == (5001, 5001)
    assert _code(hostile.gif_frame_beyond_screen(10, 20000)) == ItemCode.DECOMPRESSION_BOMB
    assert _code(hostile.gif_screen(20000, 20000)) == ItemCode.DECOMPRESSION_BOMB
    # An animated WebP's canvas, not its 1x1 frame.
    canvas = probe(hostile.webp_animated_canvas(3000, 2000), DEFAULT_BOUNDS)
    assert (canvas.width, canvas.height) == (3000, 2000)
    assert Image.open(io.BytesIO(hostile.webp_animated_canvas(3000, 2000))).size == (3000, 2000)


def test_the_estimate_refuses_what_pixels_alone_would_allow() -> None:
    # 100 M pixels in one column or one row: Pillow's row pointers and PDQ's
    # per-row and per-column buffers make these tens of GB.
    for data in (hostile.png_gray(1, 100_000_000), hostile.png_gray(100_000_000, 1)):
        layout = probe(data, DEFAULT_BOUNDS)
        assert estimate(layout, Needs()).memory > 4 << 30
    # A TIFF of 16x16 pixels whose one tile is 8192x8192: libtiff's tile buffer.
    tile = probe(hostile.tiff_tiles(16, 16, 8192), DEFAULT_BOUNDS)
    assert estimate(tile, Needs()).memory > 8192 * 8192
    assert Image.open(io.BytesIO(hostile.tiff_tiles(16, 16, 8192))).size == (16, 16)


def test_truncated_and_garbled_headers_are_corrupt() -> None:
    for data in SAMPLES.values():
        for cut in (13, 30, 60):
            try:
                probe(data[:cut], DEFAULT_BOUNDS)
            except ItemFault as fault:
                assert fault.code in (ItemCode.CORRUPT_IMAGE, ItemCode.NOT_AN_IMAGE)
    rng = np.random.default_rng(7)
    for data in list(SAMPLES.values())[:20]:
        for _ in range(20):
            garbled = bytearray(data)
            for at in rng.integers(0, min(len(data), 200), 4).tolist():
                garbled[at] = int(rng.integers(0, 256))
            with contextlib.suppress(ItemFault):  # any typed refusal; never another exception
                probe(bytes(garbled), DEFAULT_BOUNDS)
