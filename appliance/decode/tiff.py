"""The structure of a TIFF (classic and BigTIFF): the first image's directory.

Pillow decodes only the first image (IFD0), so only IFD0 is read. What can
cost more than the picture: a compressed strip or tile is decoded by libtiff
into a buffer of the whole strip or tile, which the header sets freely (a
16 x 16 image with one 65535 x 65535 tile is a 4 GB allocation); Pillow
makes one Python tile entry per strip or tile, and reads each tag in Python.
"""

from __future__ import annotations

from appliance.decode.layout import Bounds, Layout, corrupt, segments, unpack
from appliance.errors import ItemCode, ItemFault

FORMAT = "TIFF"
# Compressions read: none, CCITT (RLE, G3, G4), LZW, JPEG, Adobe deflate,
# PackBits, deflate, LZMA, Zstandard, WebP. Not "old JPEG" (6): libtiff's own
# documentation calls its support a best-effort guess.
COMPRESSIONS = frozenset({1, 2, 3, 4, 5, 7, 8, 32773, 32946, 34925, 50000, 50001})
_TYPE_SIZES = {1: 1, 2: 1, 3: 2, 4: 4, 5: 8, 6: 1, 7: 1, 8: 2, 9: 4, 10: 8, 11: 4, 12: 8,
               13: 4, 16: 8, 17: 8, 18: 8}
_INT_FORMATS = {1: "B", 3: "H", 4: "I", 6: "b", 8: "h", 9: "i", 13: "I", 16: "Q", 17: "q", 18: "Q"}
_WIDTH, _LENGTH, _BITS, _COMPRESSION, _PHOTOMETRIC = 256, 257, 258, 259, 262
_STRIP_OFFSETS, _SAMPLES, _ROWS_PER_STRIP = 273, 277, 278
_TILE_WIDTH, _TILE_LENGTH, _TILE_OFFSETS, _SAMPLE_FORMAT = 322, 323, 324, 339
_WANTED = {_WIDTH, _LENGTH, _BITS, _COMPRESSION, _PHOTOMETRIC, _SAMPLES, _ROWS_PER_STRIP,
           _TILE_WIDTH, _TILE_LENGTH, _SAMPLE_FORMAT}


def walk(data: bytes | memoryview, bounds: Bounds) -> Layout:
    view = memoryview(data)
    head = bytes(view[:4])
    order = "<" if head[:2] == b"II" else ">" if head[:2] == b"MM" else ""
    if not order:
        raise corrupt(FORMAT, "no byte order mark")
    (magic,) = unpack(FORMAT, order + "H", view, 2)
    big = magic == 43
    if magic not in (42, 43):
        raise corrupt(FORMAT, f"magic number {magic}")
    (ifd,) = unpack(FORMAT, order + ("Q" if big else "I"), view, 8 if big else 4)
    (count,) = unpack(FORMAT, order + ("Q" if big else "H"), view, ifd)
    items = segments(FORMAT, bounds)
    items.add(count)
    entry, first = (20, ifd + 8) if big else (12, ifd + 2)
    values: dict[int, int] = {}
    counts: dict[int, int] = {}
    for i in range(count):
        at = first + i * entry
        tag, kind = unpack(FORMAT, order + "HH", view, at)
        (n,) = unpack(FORMAT, order + ("Q" if big else "I"), view, at + 4)
        counts[tag] = n
        if tag in _WANTED and kind in _INT_FORMATS and n >= 1:
            values[tag] = _largest(view, order, big, at, kind, min(n, 16))
    width, height = values.get(_WIDTH, 0), values.get(_LENGTH, 0)
    if width <= 0 or height <= 0:
        raise corrupt(FORMAT, f"an image of {width}x{height}")
    compression = values.get(_COMPRESSION, 1)
    if compression not in COMPRESSIONS:
        raise ItemFault(ItemCode.UNSUPPORTED_FORMAT, f"TIFF compression {compression} is not read")
    samples = values.get(_SAMPLES, 1)
    bits = values.get(_BITS, 1)
    tiled = _TILE_OFFSETS in counts
    units = counts.get(_TILE_OFFSETS if tiled else _STRIP_OFFSETS, 0)
    items.add(units)  # one Python tile entry each
    if tiled:
        unit_pixels = values.get(_TILE_WIDTH, 0) * values.get(_TILE_LENGTH, 0)
    else:
        unit_pixels = width * min(height, values.get(_ROWS_PER_STRIP, height) or height)
    # libtiff decodes a strip or tile whole, into native samples (or RGBA for
    # YCbCr JPEG); uncompressed data goes through Pillow's own raw decoder.
    decoder = 0 if compression == 1 else unit_pixels * max(4, -(-samples * bits // 8))
    return Layout(FORMAT, width, height, _mode(samples, bits, values.get(_SAMPLE_FORMAT, 1)),
                  decoder_bytes=decoder, segments=items.count)


def _largest(view: memoryview, order: str, big: bool, at: int, kind: int, n: int) -> int:
    """The largest of the first ``n`` integer values of an entry (BitsPerSample
    has one per sample), inline or at their offset."""
    size = _TYPE_SIZES[kind]
    inline = 8 if big else 4
    where = at + (12 if big else 8)
    if size * n > inline:
        (where,) = unpack(FORMAT, order + ("Q" if big else "I"), view, where)
    return int(max(unpack(FORMAT, f"{order}{n}{_INT_FORMATS[kind]}", view, where)))


def _mode(samples: int, bits: int, sample_format: int) -> str:
    """Enough of Pillow's mode to size the decoded picture."""
    if samples == 1 and bits <= 8:
        return "L"
    if samples == 1 and bits == 16 and sample_format == 1:
        return "I;16"
    return "RGBA" if samples >= 4 else "RGB" if samples >= 2 else "I"
