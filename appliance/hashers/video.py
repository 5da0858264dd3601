"""The video signals of one file from one decode: TMK+PDQF and vPDQ.

``hash_video`` opens the video (``appliance.video.decode``: from memory,
within its limits) and walks its frames once. Each frame is converted only
into what a requested signal reads: TMK stretches the frames that ffmpeg's
``-r 15`` would keep (``Resampler``) to 64x64 and folds them, 64 at a time,
into its sums; vPDQ converts the sampled frames at their own size and hashes
them with PDQ. Neither holds more than a batch of 64x64 frames and one
full-size frame, whatever the video's length.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from appliance.errors import ItemCode, ItemFault
from appliance.hashers.pdq import pdq_from_luma
from appliance.results import HashValue
from appliance.video import tmk as tmk_features
from appliance.video import vpdq_format as vpdq_frames
from appliance.video.decode import Frame, open_video
from appliance.video.limits import VideoLimits
from appliance.video.resample import Resampler

_BATCH = 64  # resampled frames folded into the TMK sums per kernel call
_WR, _WG, _WB = np.float32(0.299), np.float32(0.587), np.float32(0.114)


@dataclass(frozen=True)
class VideoJob:
    """What to make of one video: ``names`` of its video signals, and vPDQ's
    sampling (``hashing.vpdq_seconds_per_hash``)."""

    names: tuple[str, ...]
    seconds_per_hash: float = vpdq_frames.SECONDS_PER_HASH

    @classmethod
    def of(cls, names: tuple[str, ...], hashing: Any) -> VideoJob:
        """The job of ``names`` under ``hashing`` (a HashingConfig)."""
        return cls(names, float(hashing.vpdq_seconds_per_hash))


@dataclass
class VideoResult:
    hashes: list[HashValue]
    frames: int = 0  # frames decoded
    decode_seconds: float = 0.0
    hash_seconds: float = 0.0


def luma(rgb: NDArray[np.uint8]) -> NDArray[np.float32]:
    """The C++ reference's float32 luma of (H, W, 3) uint8 RGB (``fillFloatLumaFromRGB``)."""
    r, g, b = (rgb[..., c].astype(np.float32) for c in range(3))
    out: NDArray[np.float32] = (_WR * r + _WG * g) + _WB * b
    return out


class _Tmk:
    """TMK's share of the walk: resample, stretch, batch, fold."""

    def __init__(self, rate: float | None, one_stream: bool) -> None:
        self.resampler = Resampler(rate, one_stream)
        self.sums = tmk_features.TmkAccumulator()
        self.batch = np.empty((_BATCH, tmk_features.SIDE, tmk_features.SIDE, 3), np.uint8)
        self.filled = 0
        self.last: NDArray[np.uint8] | None = None
        self.seconds = 0.0

    def _put(self, rgb: NDArray[np.uint8], times: int) -> None:
        for _ in range(times):
            self.batch[self.filled] = rgb
            self.filled += 1
            if self.filled == _BATCH:
                self._fold()

    def _fold(self) -> None:
        started = time.perf_counter()
        self.sums.add(self.batch[: self.filled])
        self.filled = 0
        self.seconds += time.perf_counter() - started

    def frame(self, frame: Frame) -> None:
        previous, this = self.resampler.step(frame.seconds, frame.duration)
        if previous and self.last is not None:
            self._put(self.last, previous)
        if this:
            self.last = frame.scaled(tmk_features.SIDE, tmk_features.SIDE)
            self._put(self.last, this)

    def finish(self) -> bytes:
        extra = self.resampler.flush()
        if extra and self.last is not None:
            self._put(self.last, extra)
        if self.filled:
            self._fold()
        if not self.sums.frames:
            raise ItemFault(ItemCode.CORRUPT_VIDEO, "tmk: no frame within the video's duration")
        return self.sums.finish().to_bytes()


class _Vpdq:
    """vPDQ's share of the walk: every step-th frame, hashed at its own size."""

    def __init__(self, rate: float | None, seconds_per_hash: float) -> None:
        self.rate = rate or 0.0
        self.step = vpdq_frames.step(rate, seconds_per_hash)
        self.frames: list[vpdq_frames.VpdqFrame] = []
        self.seconds = 0.0

    def frame(self, frame: Frame) -> None:
        if frame.index % self.step:
            return
        rgb = frame.rgb
        started = time.perf_counter()
        pdq, quality = pdq_from_luma(luma(rgb))
        self.frames.append(vpdq_frames.VpdqFrame(
            pdq, quality, frame.index, vpdq_frames.timestamp(frame.index, self.rate)))
        self.seconds += time.perf_counter() - started

    def finish(self) -> bytes:
        return vpdq_frames.pack(self.frames)


def hash_video(data: bytes | memoryview, job: VideoJob, limits: VideoLimits | None = None,
               deadline: float | None = None) -> VideoResult:
    """The video signals ``job`` names of ``data``, in ``job.names`` order.

    Raises ItemFault (NOT_A_VIDEO, CORRUPT_VIDEO, VIDEO_TOO_LONG,
    VIDEO_TOO_LARGE, UNSUPPORTED_FORMAT, DECODE_TIMEOUT) for a file whose
    video signals cannot be made; ``deadline`` (time.monotonic) is a limit
    besides ``limits.max_video_decode_seconds``.
    """
    started = time.perf_counter()
    with open_video(data, limits, deadline=deadline) as video:
        info = video.info
        tmk = _Tmk(info.average_rate, info.streams == 1) if "tmk" in job.names else None
        vpdq = _Vpdq(info.average_rate, job.seconds_per_hash) if "vpdq" in job.names else None
        count = 0
        for frame in video.frames():
            count += 1
            if tmk is not None:
                tmk.frame(frame)
            if vpdq is not None:
                vpdq.frame(frame)
        values = {}
        if tmk is not None:
            values["tmk"] = tmk.finish()
        if vpdq is not None:
            values["vpdq"] = vpdq.finish()
    hashing = (tmk.seconds if tmk else 0.0) + (vpdq.seconds if vpdq else 0.0)
    total = time.perf_counter() - started
    return VideoResult([HashValue(n, values[n]) for n in job.names], count,
                       total - hashing, hashing)

