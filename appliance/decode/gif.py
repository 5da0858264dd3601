"""The structure of a GIF, up to its first frame: the canvas Pillow decodes onto.

Pillow decodes the first frame onto a canvas the size of the logical screen,
grown when the frame reaches beyond it: a 35-byte file with a 10000x10000
screen is a 100 MP decode. Extension blocks before the first frame are read
one sub-block at a time in Python, so they count against ``max_segments``.
Nothing after the first frame's descriptor is read: later frames are never decoded.
"""

from __future__ import annotations

from appliance.decode.layout import Bounds, Layout, corrupt, segments, unpack

FORMAT = "GIF"


def walk(data: bytes | memoryview, bounds: Bounds) -> Layout:
    view = memoryview(data)
    n = len(view)
    if bytes(view[:6]) not in (b"GIF87a", b"GIF89a"):
        raise corrupt(FORMAT, "no GIF signature")
    width, height, flags = unpack(FORMAT, "<HHB", view, 6)
    pos = 13 + (3 << ((flags & 7) + 1) if flags & 0x80 else 0)
    blocks = segments(FORMAT, bounds)
    while pos < n:
        introducer = view[pos]
        blocks.add()
        if introducer == 0x21:  # extension: label, then sub-blocks up to an empty one
            pos += 2
            while pos < n and view[pos]:
                blocks.add()
                pos += 1 + view[pos]
            pos += 1
        elif introducer == 0x2C:  # the first image descriptor
            x, y, w, h = unpack(FORMAT, "<HHHH", view, pos + 1)
            # As Pillow does: the canvas grows to hold the frame.
            width, height = max(width, x + w), max(height, y + h)
            break
        elif introducer == 0x3B:
            raise corrupt(FORMAT, "no frame before the trailer")
        else:
            raise corrupt(FORMAT, f"unknown block 0x{introducer:02x} at byte {pos}")
    else:
        raise corrupt(FORMAT, "no frame")
    if width == 0 or height == 0:
        raise corrupt(FORMAT, f"a canvas of {width}x{height}")
    return Layout(FORMAT, width, height, "P", segments=blocks.count)
