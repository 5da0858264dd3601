"""Which decoded frames make TMK's 15 frames a second: the ffmpeg CLI's ``-r 15``.

The TMK reference does not resample itself: it reads what ``ffmpeg -i FILE
-s 64:64 -pix_fmt rgb24 -r 15 -f rawvideo`` writes, and that is ffmpeg's
constant-frame-rate "vsync" (``do_video_out`` in fftools/ffmpeg.c, 4.x and
5.x, with which the reference's hashes were made), not an ``fps`` filter and
not nearest-timestamp sampling. Per decoded frame, at x = its time in output
frames since the file's start (plus ffmpeg's bias of 2**-17), with d = its
duration in output frames and n = the frames written so far:

- delta0 = x - n, delta = delta0 + d; a frame that starts before n but ends
  after it is clipped (delta0 = 0);
- delta < -1.1: dropped; delta > 1.1: written round(delta) times, the first
  round(delta0 - 0.6) of them copies of the previous frame (when delta0 >
  1.1); otherwise written once;
- at the end, the median of the last three counts of copies is written again
  (0 for a steady rate).

d is min(15 / stream rate, 1), or the frame's own duration rounded to whole
output frames when that is at least 1 (ffmpeg takes the packet's duration
when no filter was named). A file with one stream only starts at its first
frame instead of copying it forward ("vscfr"). For 30 frames a second this
keeps frames 0, 1, 2, 3, 5, 7, 9, ...: floor(N/2) + 2 of N, the counts in the
reference's ``.tmk`` headers.
"""

from __future__ import annotations

import math

OUT_FPS = 15
_BIAS = 1.0 / (1 << 17)


def _lrint(x: float) -> int:
    """C's lrintf: to the nearest integer, halves to even (Python's round)."""
    return round(x)


class Resampler:
    """Feed each decoded frame's time and duration (seconds); get how many times
    to write the previous frame, then this one. Not thread-safe."""

    def __init__(self, rate: float | None, one_stream: bool, fps: int = OUT_FPS) -> None:
        self.fps = fps
        self._duration = min(fps / rate, 1.0) if rate else 1.0
        self._vscfr = one_stream
        self.written = 0
        self._copies = [0, 0, 0]

    def step(self, seconds: float, duration: float | None) -> tuple[int, int]:
        """(copies of the previous frame, copies of this frame) to write now."""
        x = seconds * self.fps
        x += math.copysign(_BIAS, x) if x else 0.0
        d = self._duration
        if duration is not None and duration > 0 and _lrint(duration * self.fps) > 0:
            d = float(_lrint(duration * self.fps))
        delta0 = x - self.written
        delta = delta0 + d
        if delta0 < 0 < delta:
            delta0 = 0.0
        if self._vscfr and self.written == 0 and delta0 >= 0.5:
            delta, delta0 = d, 0.0
            self.written = _lrint(x)
        total, previous = 1, 0
        if delta < -1.1:
            total = 0
        elif delta > 1.1:
            total = _lrint(delta)
            if delta0 > 1.1:
                previous = _lrint(delta0 - 0.6)
        previous = min(previous, total)
        self._copies = [previous, *self._copies[:2]]
        self.written += total
        return previous, total - previous

    def flush(self) -> int:
        """Copies of the last frame to write at the end of the stream."""
        extra = sorted(self._copies)[1]
        self.written += extra
        return extra
