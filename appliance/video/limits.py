"""The limits of one video's decode: a frozen dataclass with no imports of the package.

``settings.LimitsConfig`` inherits these fields (``[limits] max_video_seconds``,
...), so a ``LimitsConfig`` can be passed wherever a ``VideoLimits`` is
asked for; tests and benchmarks build a ``VideoLimits`` of their own. They
live here, not in settings.py, which is at its size limit.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class VideoLimits:
    # A video's duration (from its header, then from each frame's timestamp);
    # longer ones get VIDEO_TOO_LONG. An hour.
    max_video_seconds: float = 3600.0
    # Frames decoded from one video (declared, then counted): VIDEO_TOO_LONG.
    max_video_frames: int = 100_000
    # Pixels of one frame (width x height; 8,294,400 is 4K UHD, 3840 x 2160):
    # larger ones get VIDEO_TOO_LARGE, from the header before decoding.
    max_video_pixels: int = 8_294_400
    # Wall-clock time of one video's decode, checked at each packet and
    # frame: past it, DECODE_TIMEOUT.
    max_video_decode_seconds: float = 60.0
