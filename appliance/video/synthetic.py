"""Synthetic videos encoded in memory: for warming up the kernels, tests and benchmarks.

No video is ever read from or written to disk here. ``clip`` is a gradient
that moves and a level that steps, so consecutive frames differ and their
hashes are not degenerate.
"""

from __future__ import annotations

import io
from fractions import Fraction
from typing import Any

import av
import numpy as np
from numpy.typing import NDArray


def has_encoder(name: str) -> bool:
    """Whether this PyAV wheel can encode with ``name`` (libx264 is not in every build)."""
    try:
        av.codec.Codec(name, "w")
    except Exception:
        return False
    return True


def clip(i: int, width: int, height: int) -> NDArray[np.uint8]:
    """Frame i of the synthetic clip, (height, width, 3) uint8 RGB."""
    y, x = np.mgrid[0:height, 0:width]
    base = (x * 255 // max(width - 1, 1) + 8 * i) % 256
    out = np.stack([base, (y * 255 // max(height - 1, 1)), np.full_like(x, (40 * i) % 256)], -1)
    return out.astype(np.uint8)


def encode(fmt: str, codec: str, *, width: int = 64, height: int = 48, frames: int = 8,
           rate: int | Fraction = 25, pix: str = "yuv420p", pts: list[int] | None = None,
           time_base: Fraction | None = None, rotation: float | None = None,
           options: dict[str, str] | None = None,
           pictures: list[NDArray[np.uint8]] | None = None) -> bytes:
    """A video of ``frames`` frames of ``clip`` (or of ``pictures``, RGB) in
    container ``fmt`` with ``codec``; ``pts``/``time_base`` set each frame's
    timestamp (variable frame rate), ``rotation`` the display matrix."""
    buf = io.BytesIO()
    with av.open(buf, "w", format=fmt, options=options or {}) as out:
        stream: Any = out.add_stream(codec, rate=rate)  # a VideoStream for a video codec
        stream.width, stream.height, stream.pix_fmt = width, height, pix
        if time_base is not None:
            stream.codec_context.time_base = time_base
        if rotation is not None:
            stream.set_display_rotation(rotation)
        count = len(pictures) if pictures is not None else frames
        for i in range(count):
            rgb = pictures[i] if pictures is not None else clip(i, width, height)
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            if pts is not None:
                frame.pts, frame.time_base = pts[i], time_base
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return buf.getvalue()


def tiny() -> bytes:
    """A 16-frame 64x48 MPEG-4 AVI (every wheel has that encoder): the warm-up's video."""
    return encode("avi", "mpeg4", frames=16)
