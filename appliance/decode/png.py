"""The structure of a PNG (and APNG): header, chunks, frames.

Pillow reads every chunk, before, between and after the image data, one at a
time in Python (60 MB of empty unknown chunks took 24 s), so chunks count
against ``max_segments``. The decoder keeps two rows of filtered data besides
the picture: for a 100,000,000 x 1 image those rows alone are hundreds of MB.
"""

from __future__ import annotations

from appliance.decode.layout import Bounds, Counter, Layout, corrupt, segments, unpack

FORMAT = "PNG"
SIGNATURE = b"\x89PNG\r\n\x1a\n"

# (colour type, bit depth) -> the mode Pillow decodes to.
_MODES = {
    (0, 1): "1", (0, 2): "L", (0, 4): "L", (0, 8): "L", (0, 16): "I;16",
    (2, 8): "RGB", (2, 16): "RGB",
    (3, 1): "P", (3, 2): "P", (3, 4): "P", (3, 8): "P",
    (4, 8): "LA", (4, 16): "RGBA",
    (6, 8): "RGBA", (6, 16): "RGBA",
}
_CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}


def walk(data: bytes | memoryview, bounds: Bounds) -> Layout:
    view = memoryview(data)
    n = len(view)
    if bytes(view[:8]) != SIGNATURE:
        raise corrupt(FORMAT, "no PNG signature")
    length, kind = unpack(FORMAT, ">I4s", view, 8)
    if kind != b"IHDR" or length != 13:
        raise corrupt(FORMAT, "the first chunk is not a 13-byte IHDR")
    width, height, depth, colour, _, _, _ = unpack(FORMAT, ">IIBBBBB", view, 16)
    mode = _MODES.get((colour, depth))
    if mode is None:
        raise corrupt(FORMAT, f"colour type {colour} with bit depth {depth}")
    if width == 0 or height == 0 or width > 2**31 - 1 or height > 2**31 - 1:
        raise corrupt(FORMAT, f"image of {width}x{height}")
    chunks = segments(FORMAT, bounds)
    frames = Counter(FORMAT, "frames", bounds.max_frames, "max_frames")
    pos = 8
    while pos + 8 <= n:
        length, kind = unpack(FORMAT, ">I4s", view, pos)
        if length > 2**31 - 1:
            raise corrupt(FORMAT, f"chunk of {length} bytes at byte {pos}")
        chunks.add()
        if kind == b"acTL":
            (declared,) = unpack(FORMAT, ">I", view, pos + 8)
            frames.add(max(0, declared - 1))  # the default image is one
        elif kind == b"fcTL":
            _frame_fits(view, pos + 8, width, height)
        pos += 12 + length
        if kind == b"IEND":
            break
    # Two rows of filtered bytes (this one and the one above) for unfiltering.
    row = (width * _CHANNELS[colour] * depth + 7) // 8 + 1
    return Layout(FORMAT, width, height, mode, decoder_bytes=2 * row,
                  segments=chunks.count, frames=max(1, frames.count + 1))


def _frame_fits(view: memoryview, at: int, width: int, height: int) -> None:
    _, w, h, x, y = unpack(FORMAT, ">IIIII", view, at)
    if x + w > width or y + h > height or w == 0 or h == 0:
        raise corrupt(FORMAT, f"an APNG frame of {w}x{h} at ({x}, {y}) leaves the {width}x{height}"
                              " canvas")
