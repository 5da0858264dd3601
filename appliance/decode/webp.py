"""The structure of a WebP: the canvas, the bitstream kind, the frames.

Pillow decodes WebP through libwebp's animation decoder, which composes the
first frame onto a full RGBA canvas (and keeps a second one for the next
frame's blending); Pillow copies the canvas out as bytes and then into its
own image. A lossless bitstream also needs libwebp's ARGB planes. So a WebP
costs several times its RGB size, and the canvas, not the frame, sets it:
a 94-byte animated file can ask for a 16383 x 16383 canvas.
"""

from __future__ import annotations

from appliance.decode.layout import Bounds, Counter, Layout, corrupt, segments, unpack

FORMAT = "WEBP"


def walk(data: bytes | memoryview, bounds: Bounds) -> Layout:
    view = memoryview(data)
    n = len(view)
    if bytes(view[:4]) != b"RIFF" or bytes(view[8:12]) != b"WEBP":
        raise corrupt(FORMAT, "no RIFF/WEBP header")
    chunks = segments(FORMAT, bounds)
    frames = Counter(FORMAT, "frames", bounds.max_frames, "max_frames")
    canvas: tuple[int, int] | None = None
    alpha = False
    still: tuple[int, int] | None = None
    pos = 12
    while pos + 8 <= n:
        kind, size = unpack(FORMAT, "<4sI", view, pos)
        chunks.add()
        body = pos + 8
        if kind == b"VP8X":
            flags, = unpack(FORMAT, "<B", view, body)
            w = int.from_bytes(view[body + 4 : body + 7], "little") + 1
            h = int.from_bytes(view[body + 7 : body + 10], "little") + 1
            canvas, alpha = (w, h), bool(flags & 0x10)
        elif kind == b"ANMF":
            frames.add()
        elif kind == b"VP8L":
            *still_size, has_alpha = _vp8l_header(view, body)
            still, alpha = (still_size[0], still_size[1]), alpha or has_alpha
        elif kind == b"VP8 ":
            still = _vp8_size(view, body)
        elif kind == b"ALPH":
            alpha = True
        pos = body + size + (size & 1)
    size = canvas or still
    if size is None:
        raise corrupt(FORMAT, "no VP8X, VP8 or VP8L chunk")
    width, height = size
    if width == 0 or height == 0:  # a VP8 frame header's 14-bit sizes may be 0
        raise corrupt(FORMAT, f"a picture of {width}x{height}")
    pixels = width * height
    # Two RGBA canvases in libwebp and one more for the bytes handed to Pillow
    # (measured: lossy and lossless alike, about 12 bytes a pixel over the picture).
    decoder = pixels * 4 * 3
    return Layout(FORMAT, width, height, "RGBA" if alpha else "RGB", decoder_bytes=decoder,
                  segments=chunks.count, frames=max(1, frames.count))


def _vp8l_header(view: memoryview, at: int) -> tuple[int, int, bool]:
    """(width, height, alpha hint) of a lossless bitstream."""
    signature, bits = unpack(FORMAT, "<BI", view, at)
    if signature != 0x2F:
        raise corrupt(FORMAT, "bad VP8L signature")
    return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1, bool(bits >> 28 & 1)


def _vp8_size(view: memoryview, at: int) -> tuple[int, int]:
    start = bytes(view[at + 3 : at + 6])
    if start != b"\x9d\x01\x2a":
        raise corrupt(FORMAT, "bad VP8 start code")
    w, h = unpack(FORMAT, "<HH", view, at + 6)
    return w & 0x3FFF, h & 0x3FFF
