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


# Bytes a pixel of the largest allowed frame may cost while a video is hashed:
# the decoder's reference frames (YUV 4:2:0, up to 16 of them, the frame
# being decoded and one in conversion: 18 x 1.5), one RGB frame (3) and the
# float32 planes of its full-size PDQ (vPDQ: luma and two filter passes, 12).
_BYTES_PER_PIXEL = 18 * 1.5 + 3 + 12
# FFmpeg's own state, the demuxer's index and TMK's sums, whatever the size.
_BASE_BYTES = 64 << 20


def decode_bytes(pixels: int) -> int:
    """Estimated peak memory of decoding and hashing a video of frames of ``pixels``."""
    return int(pixels * _BYTES_PER_PIXEL) + _BASE_BYTES


def decode_memory(limits: VideoLimits) -> int:
    """What one video's decode is admitted for (``limits.max_decode_bytes_in_flight``
    counts it) and its worker's memory limit: the worst case of the largest
    frame ``limits.max_video_pixels`` allows, since a video's size is only
    known once FFmpeg has read its header, in the worker. 445 MiB at the 4K
    default; a host that takes 1080p at most halves it by lowering that limit."""
    return decode_bytes(limits.max_video_pixels)
