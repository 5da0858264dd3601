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
from appliance.video import tmk_kernels
from appliance.video import vpdq_format as vpdq_frames
from appliance.video.decode import Frame, open_video
from appliance.video.limits import VideoLimits
from appliance.video.resample import Resampler

_BATCH = 64  # resampled frames folded into the TMK sums per kernel call


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
    # Peak memory of the work over the worker's idle size, where measured (sandbox).
    peak_bytes: int = 0


def luma(rgb: NDArray[np.uint8]) -> NDArray[np.float32]:
    """The C++ reference's float32 luma of (H, W, 3) uint8 RGB (``fillFloatLumaFromRGB``)."""
    out = np.empty(rgb.shape[:2], dtype=np.float32)
    tmk_kernels.float_luma(np.ascontiguousarray(rgb), out)
    return out


class Hashing:
    """Where the walk's frames go: the stretched 64x64 frames of TMK in batches
    and vPDQ's sampled frames one by one. This one hashes them on the CPU; the
    GPU backends' (appliance.gpu.video) hashes them on the device, and a
    decode worker's (appliance.sandbox) sends them to the server to be."""

    def __init__(self, names: tuple[str, ...]) -> None:
        self.names = names
        self.sums = tmk_features.TmkAccumulator()
        self.frames: list[vpdq_frames.VpdqFrame] = []
        self.seconds = 0.0  # spent hashing (not decoding)

    def tmk_features(self, rgb: NDArray[np.uint8]) -> NDArray[np.float32]:
        """(n, 256) PDQF features of (n, 64, 64, 3) frames."""
        return self.sums.features(rgb)

    def vpdq_hash(self, rgb: NDArray[np.uint8]) -> tuple[bytes, int]:
        """PDQ and quality of one full-size frame, from the reference's float32 luma."""
        return pdq_from_luma(luma(rgb))

    def tmk_frames(self, rgb: NDArray[np.uint8]) -> None:
        started = time.perf_counter()
        self.sums.add_features(self.tmk_features(rgb))
        self.seconds += time.perf_counter() - started

    def vpdq_frame(self, index: int, seconds: float, rgb: NDArray[np.uint8]) -> None:
        started = time.perf_counter()
        pdq, quality = self.vpdq_hash(rgb)
        self.frames.append(vpdq_frames.VpdqFrame(pdq, quality, index, seconds))
        self.seconds += time.perf_counter() - started

    def values(self) -> list[HashValue]:
        """The values of ``names``, in that order, once every frame is in."""
        out = []
        for name in self.names:
            if name == "tmk":
                if not self.sums.frames:
                    raise ItemFault(ItemCode.CORRUPT_VIDEO,
                                    "tmk: no frame within the video's duration")
                out.append(HashValue(name, self.sums.finish().to_bytes()))
            else:
                out.append(HashValue(name, vpdq_frames.pack(self.frames)))
        return out


class _Tmk:
    """TMK's share of the walk: resample, stretch, batch."""

    def __init__(self, rate: float | None, one_stream: bool, sink: Hashing) -> None:
        self.resampler = Resampler(rate, one_stream)
        self.sink = sink
        self.batch = np.empty((_BATCH, tmk_features.SIDE, tmk_features.SIDE, 3), np.uint8)
        self.filled = 0
        self.last: NDArray[np.uint8] | None = None

    def _put(self, rgb: NDArray[np.uint8], times: int) -> None:
        for _ in range(times):
            self.batch[self.filled] = rgb
            self.filled += 1
            if self.filled == _BATCH:
                self._flush()

    def _flush(self) -> None:
        if self.filled:
            self.sink.tmk_frames(self.batch[: self.filled])
            self.filled = 0

    def frame(self, frame: Frame) -> None:
        previous, this = self.resampler.step(frame.seconds, frame.duration)
        if previous and self.last is not None:
            self._put(self.last, previous)
        if this:
            self.last = frame.scaled(tmk_features.SIDE, tmk_features.SIDE)
            self._put(self.last, this)

    def finish(self) -> None:
        extra = self.resampler.flush()
        if extra and self.last is not None:
            self._put(self.last, extra)
        self._flush()


class _Vpdq:
    """vPDQ's share of the walk: every step-th frame, at its own size."""

    def __init__(self, rate: float | None, seconds_per_hash: float, sink: Hashing) -> None:
        self.rate = rate or 0.0
        self.step = vpdq_frames.step(rate, seconds_per_hash)
        self.sink = sink

    def frame(self, frame: Frame) -> None:
        if frame.index % self.step == 0:
            self.sink.vpdq_frame(frame.index, vpdq_frames.timestamp(frame.index, self.rate),
                                 frame.rgb)


def hash_video(data: bytes | memoryview, job: VideoJob, limits: VideoLimits | None = None,
               deadline: float | None = None, sink: Hashing | None = None) -> VideoResult:
    """The video signals ``job`` names of ``data``, in ``job.names`` order.

    ``sink`` receives the frames (default: ``Hashing``, on the CPU); its
    ``values()`` are the result's hashes. Raises ItemFault (NOT_A_VIDEO,
    CORRUPT_VIDEO, VIDEO_TOO_LONG, VIDEO_TOO_LARGE, UNSUPPORTED_FORMAT,
    DECODE_TIMEOUT) for a file whose video signals cannot be made;
    ``deadline`` (time.monotonic) is a limit besides
    ``limits.max_video_decode_seconds``.
    """
    started = time.perf_counter()
    sink = sink if sink is not None else Hashing(job.names)
    with open_video(data, limits, deadline=deadline) as video:
        info = video.info
        tmk = _Tmk(info.average_rate, info.streams == 1, sink) if "tmk" in job.names else None
        vpdq = (_Vpdq(info.average_rate, job.seconds_per_hash, sink)
                if "vpdq" in job.names else None)
        count = 0
        for frame in video.frames():
            count += 1
            if tmk is not None:
                tmk.frame(frame)
            if vpdq is not None:
                vpdq.frame(frame)
        if tmk is not None:
            tmk.finish()
    hashes = sink.values()
    total = time.perf_counter() - started
    return VideoResult(hashes, count, total - sink.seconds, sink.seconds)
