"""The structure of a JPEG: frame size, components, scans, markers.

Costs that the pixel count does not show, and that this walk bounds:

- every scan of a progressive (or multi-scan) file is a pass over every block
  of the image: 15,000 empty scans in 511 KB held a core for 27 s;
- Pillow parses each marker before the first scan in Python: 64 MB of empty
  COM markers took 30 s; an APP13 (Photoshop) or APP2 (MPF) segment is
  parsed further, item by item, so it counts one per 64 bytes;
- a file with more than one scan is decoded into a buffer of all its DCT
  coefficients, 2 bytes a coefficient, before any pixel comes out.

Entropy-coded data is skipped with a regular expression (in C) to the next
marker. Only the first image is walked: an MPO's later pictures are never decoded.
"""

from __future__ import annotations

import re

from appliance.decode.layout import Bounds, Counter, Layout, corrupt, segments, unpack

FORMAT = "JPEG"
# SOFn markers: 0xC0-0xCF except DHT (C4), JPG (C8) and DAC (CC).
_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
_PROGRESSIVE = frozenset({0xC2, 0xC6, 0xCA, 0xCE})
# A marker after entropy-coded data: 0xFF then neither a stuffed 0x00, nor a
# restart marker (D0-D7), nor a fill byte (FF).
_NEXT_MARKER = re.compile(rb"\xff[\x01-\xcf\xd8-\xfe]")
# Markers with no length field.
_STANDALONE = frozenset({0x01, *range(0xD0, 0xD8)})
_PARSED_FURTHER = (b"Photoshop 3.0\x00", b"MPF\x00")


def walk(data: bytes | memoryview, bounds: Bounds) -> Layout:
    view = memoryview(data)
    n = len(view)
    if bytes(view[:2]) != b"\xff\xd8":
        raise corrupt(FORMAT, "no SOI marker")
    markers = segments(FORMAT, bounds)
    scans = Counter(FORMAT, "scans", bounds.max_scans, "max_scans")
    frame: tuple[int, int, list[tuple[int, int, int]]] | None = None
    progressive = False
    pos = 2
    while pos < n:
        if view[pos] != 0xFF:
            raise corrupt(FORMAT, f"expected a marker at byte {pos}")
        while pos + 1 < n and view[pos + 1] == 0xFF:  # fill bytes
            pos += 1
        if pos + 1 >= n:
            break
        marker = view[pos + 1]
        pos += 2
        markers.add()
        if marker == 0xD9:  # EOI: the first image ends here
            break
        if marker in _STANDALONE:
            continue
        (length,) = unpack(FORMAT, ">H", view, pos)
        if length < 2:
            raise corrupt(FORMAT, f"segment of length {length} at byte {pos}")
        body = view[pos + 2 : pos + length]
        if 0xE0 <= marker <= 0xEF and bytes(body[:14]).startswith(_PARSED_FURTHER):
            markers.add(len(body) // 64)
        if marker in _SOF:
            if frame is not None:
                raise corrupt(FORMAT, "a second frame header in one image")
            frame = _frame(body)
            progressive = marker in _PROGRESSIVE
        pos += length
        if marker == 0xDA:  # SOS: skip the entropy-coded data that follows
            if frame is None:
                raise corrupt(FORMAT, "a scan before the frame header")
            scans.add()
            found = _NEXT_MARKER.search(view, pos)
            pos = found.start() if found is not None else n
    if frame is None:
        raise corrupt(FORMAT, "no frame header (SOF)")
    width, height, components = frame
    buffered = progressive or scans.count > 1
    return Layout(
        FORMAT, width, height, _mode(len(components)),
        decoder_bytes=_coefficient_bytes(width, height, components) if buffered else 0,
        scans=scans.count, segments=markers.count,
    )


def _frame(body: memoryview) -> tuple[int, int, list[tuple[int, int, int]]]:
    precision, height, width, count = unpack(FORMAT, ">BHHB", body, 0)
    if precision != 8:
        raise corrupt(FORMAT, f"{precision}-bit samples are not decoded")
    if width == 0 or height == 0:
        raise corrupt(FORMAT, f"frame of {width}x{height} (DNL heights are not decoded)")
    if count not in (1, 3, 4):
        raise corrupt(FORMAT, f"{count} components")
    components = []
    for i in range(count):
        ident, sampling, _table = unpack(FORMAT, ">BBB", body, 6 + 3 * i)
        h, v = sampling >> 4, sampling & 15
        if not (1 <= h <= 4 and 1 <= v <= 4):
            raise corrupt(FORMAT, f"component {ident} has sampling factors {h}x{v}")
        components.append((ident, h, v))
    return width, height, components


def _mode(components: int) -> str:
    return {1: "L", 3: "RGB", 4: "CMYK"}[components]


def _coefficient_bytes(width: int, height: int, components: list[tuple[int, int, int]]) -> int:
    """The decoder's whole-image coefficient buffer: 64 coefficients of 2 bytes
    per 8x8 block of each component, in whole MCUs."""
    hmax = max(h for _, h, _ in components)
    vmax = max(v for _, _, v in components)
    mcus_x = -(-width // (8 * hmax))
    mcus_y = -(-height // (8 * vmax))
    blocks = sum(mcus_x * h * mcus_y * v for _, h, v in components)
    return blocks * 64 * 2
