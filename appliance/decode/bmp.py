"""The structure of a BMP: header, size, bit depth, compression.

Pillow decodes run-length-encoded BMPs in Python, with loops that run once
per pixel (padding a row that an end-of-line code cut short): a 13 KB RLE8
file of 3000x3000 held a core for 3 s. So an RLE bitmap's pixels count
against ``max_segments``, one per 32 pixels, which allows about 2 MP by default.
"""

from __future__ import annotations

from appliance.decode.layout import Bounds, Layout, corrupt, segments, unpack
from appliance.errors import ItemCode, ItemFault

FORMAT = "BMP"
_HEADERS = frozenset({12, 40, 52, 56, 64, 108, 124})
_RLE = frozenset({1, 2})
_READ = frozenset({0, 1, 2, 3, 6})  # RGB, RLE8, RLE4, BITFIELDS, ALPHABITFIELDS
_RLE_PIXELS_PER_SEGMENT = 32


def walk(data: bytes | memoryview, bounds: Bounds) -> Layout:
    view = memoryview(data)
    if bytes(view[:2]) != b"BM":
        raise corrupt(FORMAT, "no BM signature")
    (header,) = unpack(FORMAT, "<I", view, 14)
    if header not in _HEADERS:
        raise corrupt(FORMAT, f"a {header}-byte info header")
    if header == 12:
        width, height, _, bpp = unpack(FORMAT, "<HHHH", view, 18)
        compression = 0
    else:
        width, height, _, bpp, compression = unpack(FORMAT, "<iiHHI", view, 18)
    height = abs(height)  # negative: stored top-down
    if width <= 0 or height == 0:
        raise corrupt(FORMAT, f"an image of {width}x{height}")
    if compression not in _READ:
        raise ItemFault(ItemCode.UNSUPPORTED_FORMAT, f"BMP compression {compression} is not read")
    items = segments(FORMAT, bounds)
    items.add(1)
    if compression in _RLE:
        items.add(width * height // _RLE_PIXELS_PER_SEGMENT)
    mode = "P" if bpp <= 8 else "RGBA" if bpp == 32 else "RGB"
    # The RLE decoder builds the whole picture as a bytearray before Pillow copies it.
    decoder = width * height if compression in _RLE else 0
    return Layout(FORMAT, width, height, mode, decoder_bytes=decoder, segments=items.count)
