"""Video decoding from memory, within limits, one frame at a time (PyAV: FFmpeg's libraries).

Every uploaded file is hostile, so:

1. The container comes from the file's first bytes (``sniff``) and only the
   allow-list is read: MP4/MOV (FFmpeg's ``mov`` demuxer), Matroska/WebM,
   AVI and GIF. The demuxer is then named explicitly to FFmpeg, never
   guessed, and FFmpeg is told the same list (``format_whitelist``), no
   protocol at all (``protocol_whitelist``) and no way to open another file
   (``io_open``): playlist and concat demuxers (HLS, ffconcat), which read
   local files and URLs, can never be chosen, and a container can never
   reach outside the bytes it was given. Bytes are read from memory through
   PyAV's own I/O; nothing is written to disk.
2. ``open_video`` reads the header only: the first video stream, its codec
   (an allow-list too), its size, rate and duration, and refuses
   what breaks a limit before a frame is decoded (``VideoLimits``).
3. ``Video.frames`` decodes lazily, one frame held at a time, and checks the
   limits again as it goes (headers lie): each frame's size, its timestamp
   against the duration limit, the count of frames, and the deadline.

A GIF is read here as a video (every frame, with its delays as timestamps),
as well as by ``appliance.decode`` as an image (its first frame): the image
signals and the video signals each get the media they hash.

Frames are given as stored: each frame's ``rotation`` says how a player would
turn it (the display matrix FFmpeg attaches to decoded frames; PyAV reads it
from frames, not from the stream's header), and is left to the signals to
apply or not.
"""

from __future__ import annotations

import io
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import cached_property
from types import TracebackType
from typing import Any

import av
import av.container
import numpy as np
from av.video.reformatter import VideoReformatter
from numpy.typing import NDArray

from appliance.errors import ItemCode, ItemFault
from appliance.video.limits import VideoLimits, decode_bytes

# Container signatures -> FFmpeg's demuxer. MP4 and QuickTime: an ``ftyp``
# atom, or (old QuickTime) one of these atoms first.
_MOV_ATOMS = (b"ftyp", b"moov", b"mdat", b"wide", b"free", b"skip")
# ISO files that hold still images, not video (the image decoder names them).
_IMAGE_BRANDS = (b"avif", b"avis", b"heic", b"heix", b"heim", b"heis", b"mif1", b"msf1")
CONTAINERS: tuple[str, ...] = ("mov", "matroska", "avi", "gif")
# The video codecs decoded, by FFmpeg's decoder names.
CODECS: tuple[str, ...] = ("h264", "hevc", "vp8", "vp9", "av1", "mpeg4", "gif")
# Recognised only to be refused by name (first bytes -> what).
_REFUSED: tuple[tuple[bytes, str], ...] = (
    (b"#EXTM3U", "an HLS playlist (it names other files)"),
    (b"ffconcat", "an ffconcat list (it names other files)"),
    (b"[playlist]", "a playlist"),
    (b"<?xml", "an XML document (DASH manifests name other files)"),
)
# FFmpeg's probe of the header, bounded: bytes read and streams created.
_CONTAINER_OPTIONS = {
    "format_whitelist": ",".join(CONTAINERS),
    "protocol_whitelist": "none",
    "probesize": str(8 << 20),
    "max_streams": "16",
}


def _refuse_io(url: str, flags: int, options: dict[str, Any]) -> Any:
    raise PermissionError(f"a video may not open other files or URLs ({url!r})")


@dataclass(frozen=True)
class VideoInfo:
    """What the header says, checked against the limits before decoding.

    ``average_rate``: frames
    per second, the stream's average rate or else its base rate, as vPDQ
    reads it (None when the container says neither); ``duration``: seconds
    (None when unknown); ``frames``: the declared count (0 when unknown);
    ``start``: the file's first timestamp in seconds; ``streams``: how many
    streams the file has (audio and others included).
    """

    container: str
    codec: str
    width: int
    height: int
    average_rate: float | None
    duration: float | None
    frames: int
    start: float = 0.0
    streams: int = 1

    @property
    def frame_bytes(self) -> int:
        """Bytes of one decoded RGB frame (H x W x 3 uint8)."""
        return self.width * self.height * 3

    @property
    def decode_bytes(self) -> int:
        """Estimated peak memory of decoding and hashing this video (the estimate
        admission makes for the largest frame, ``limits.decode_bytes``)."""
        return decode_bytes(self.width * self.height)


@dataclass(frozen=True)
class Frame:
    """One decoded frame, converted only to what a signal asks of it.

    ``index`` counts from 0 in decoder output order; ``seconds`` is its
    presentation time from the file's start (FFmpeg's ``start_time``) and
    ``duration`` its length (None when unknown); ``rotation`` the degrees
    (0..359) counter-clockwise a player turns it (display matrix). ``rgb`` is
    the frame at its own size, ``scaled`` a resized copy; both (H, W, 3)
    uint8, C-contiguous, made by FFmpeg's swscale from the decoder's YUV.
    """

    index: int
    seconds: float
    source: Any = field(repr=False)
    duration: float | None = None
    rotation: int = 0
    # The video's two swscale contexts (one per output size), kept across
    # frames: building one costs more than converting a small frame.
    scalers: Any = field(default=None, repr=False)

    def _scaler(self, which: int) -> Any:
        return self.scalers[which] if self.scalers is not None else VideoReformatter()

    @cached_property
    def rgb(self) -> NDArray[np.uint8]:
        out = self._scaler(0).reformat(self.source, format="rgb24", threads=1)
        return np.ascontiguousarray(out.to_ndarray())

    def scaled(self, width: int, height: int) -> NDArray[np.uint8]:
        """The frame stretched to width x height with bicubic interpolation (the
        ffmpeg CLI's default for ``-s``, what the TMK reference reads)."""
        out = self._scaler(1).reformat(self.source, width=width, height=height, format="rgb24",
                                       interpolation="BICUBIC", threads=1)
        return np.ascontiguousarray(out.to_ndarray())


def sniff(data: bytes | memoryview) -> str:
    """The FFmpeg demuxer of the allow-list that ``data`` is for; NOT_A_VIDEO otherwise."""
    head = bytes(data[:16])
    for magic, what in _REFUSED:
        if head.lstrip(b"\xef\xbb\xbf \t\r\n").startswith(magic):
            raise ItemFault(ItemCode.NOT_A_VIDEO, f"{what} is never read")
    if head[4:8] in _MOV_ATOMS:
        if head[4:8] == b"ftyp" and head[8:12] in _IMAGE_BRANDS:
            raise ItemFault(ItemCode.NOT_A_VIDEO, "an ISO still image (HEIF/AVIF)")
        return "mov"
    if head.startswith(b"\x1a\x45\xdf\xa3"):
        return "matroska"
    if head[:4] == b"RIFF" and head[8:12] == b"AVI ":
        return "avi"
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "gif"
    raise ItemFault(ItemCode.NOT_A_VIDEO, "no video container recognised")


def _open(data: bytes | memoryview, fmt: str) -> av.container.InputContainer:
    """FFmpeg's demuxer ``fmt`` on ``data``, confined to the allow-list and to the bytes."""
    try:
        return av.open(io.BytesIO(data), mode="r", format=fmt,
                       container_options=dict(_CONTAINER_OPTIONS), io_open=_refuse_io)
    except (av.FFmpegError, PermissionError, ValueError) as exc:
        raise ItemFault(ItemCode.CORRUPT_VIDEO, f"{fmt}: unreadable header: {exc}") from exc


class Video:
    """An open video: its ``info``, and ``frames()`` to decode it once.

    A context manager; closing it frees FFmpeg's state. Not thread-safe: one
    decode, on one thread, feeds every video signal of the file.
    """

    def __init__(self, container: av.container.InputContainer, stream: Any,
                 info: VideoInfo, limits: VideoLimits, deadline: float,
                 clock: Callable[[], float]) -> None:
        self._container = container
        self._stream = stream
        self.info = info
        self._limits = limits
        self._deadline = deadline
        self._clock = clock
        self._started = False

    def __enter__(self) -> Video:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        self._container.close()

    def _check_time(self) -> None:
        if self._clock() > self._deadline:
            raise ItemFault(ItemCode.DECODE_TIMEOUT,
                            f"decoding ran past limits.max_video_decode_seconds "
                            f"({self._limits.max_video_decode_seconds:g})")

    def frames(self) -> Iterator[Frame]:
        """Decode the video stream, yielding each frame as it comes (one at a time).

        Raises ItemFault (from the iterator, after the frames already given):
        VIDEO_TOO_LONG, VIDEO_TOO_LARGE, DECODE_TIMEOUT, and CORRUPT_VIDEO when
        the stream breaks (a truncated or damaged file) or gives no frame.
        """
        if self._started:
            raise RuntimeError("a video is decoded once; open it again to decode again")
        self._started = True
        lim, stream = self._limits, self._stream
        scalers = (VideoReformatter(), VideoReformatter())
        time_base = stream.time_base
        # Times count from the file's start, as the ffmpeg CLI counts them.
        start = 0
        if self.info.start and time_base is not None:
            start = round(self.info.start / time_base)
        count = 0
        try:
            for packet in self._container.demux(stream):
                self._check_time()
                for frame in packet.decode():
                    self._check_time()
                    if count >= lim.max_video_frames:
                        raise ItemFault(ItemCode.VIDEO_TOO_LONG, f"more than "
                                        f"limits.max_video_frames ({lim.max_video_frames})")
                    if frame.width * frame.height > lim.max_video_pixels:
                        raise ItemFault(ItemCode.VIDEO_TOO_LARGE,
                                        f"a frame of {frame.width}x{frame.height} is over "
                                        f"limits.max_video_pixels ({lim.max_video_pixels})")
                    pts = frame.pts
                    seconds = (float((pts - start) * time_base)
                               if pts is not None and time_base is not None else
                               count / (self.info.average_rate or 1.0))
                    if seconds > lim.max_video_seconds:
                        raise ItemFault(ItemCode.VIDEO_TOO_LONG, f"a frame at {seconds:g} s "
                                        f"is past limits.max_video_seconds "
                                        f"({lim.max_video_seconds:g})")
                    duration = (float(frame.duration * time_base)
                                if frame.duration and time_base is not None else None)
                    yield Frame(count, seconds, frame, duration, round(frame.rotation) % 360,
                                scalers)
                    count += 1
        except (av.FFmpegError, ValueError) as exc:
            raise ItemFault(ItemCode.CORRUPT_VIDEO,
                            f"{self.info.codec}: broken after {count} frames: {exc}") from exc
        if count == 0:
            raise ItemFault(ItemCode.CORRUPT_VIDEO, f"{self.info.codec}: no decodable frame")


def _duration(container: av.container.InputContainer, stream: Any) -> float | None:
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    if container.duration is not None:
        return container.duration / av.time_base
    return None


def open_video(data: bytes | memoryview, limits: VideoLimits | None = None, *,
               threads: int = 1, clock: Callable[[], float] = time.monotonic,
               deadline: float | None = None) -> Video:
    """Sniff, open and check ``data``'s first video stream, decoding nothing yet.

    ``limits``: any object with ``VideoLimits``' fields (``LimitsConfig`` has
    them); ``threads``: FFmpeg's decoding threads for this one video; ``clock``:
    where the deadline (``limits.max_video_decode_seconds`` from now, or
    ``deadline`` on that clock if sooner) is read.
    Raises ItemFault: NOT_A_VIDEO (no allowed container, or no video stream),
    UNSUPPORTED_FORMAT (a codec not decoded), CORRUPT_VIDEO (an unreadable
    header), VIDEO_TOO_LONG, VIDEO_TOO_LARGE (over a limit, from the header).
    """
    lim = limits if limits is not None else VideoLimits()
    stop = clock() + lim.max_video_decode_seconds
    deadline = stop if deadline is None else min(stop, deadline)
    fmt = sniff(data)
    container = _open(data, fmt)
    try:
        if not container.streams.video:
            raise ItemFault(ItemCode.NOT_A_VIDEO, f"{fmt}: no video stream (audio only?)")
        stream = container.streams.video[0]
        ctx = stream.codec_context
        codec = ctx.codec.name if ctx.codec is not None else ""
        if codec not in CODECS:
            raise ItemFault(ItemCode.UNSUPPORTED_FORMAT,
                            f"{fmt}: the {codec or 'unknown'} codec is not decoded")
        width, height = int(ctx.width or 0), int(ctx.height or 0)
        if width * height > lim.max_video_pixels:
            raise ItemFault(ItemCode.VIDEO_TOO_LARGE, f"{width}x{height} frames are over "
                            f"limits.max_video_pixels ({lim.max_video_pixels})")
        duration = _duration(container, stream)
        if duration is not None and duration > lim.max_video_seconds:
            raise ItemFault(ItemCode.VIDEO_TOO_LONG, f"{duration:g} s is over "
                            f"limits.max_video_seconds ({lim.max_video_seconds:g})")
        declared = int(stream.frames or 0)
        if declared > lim.max_video_frames:
            raise ItemFault(ItemCode.VIDEO_TOO_LONG, f"{declared} frames are over "
                            f"limits.max_video_frames ({lim.max_video_frames})")
        ctx.thread_count = threads
        rate = stream.average_rate or stream.base_rate
        start = container.start_time
        info = VideoInfo(container=fmt, codec=codec, width=width, height=height,
                         frames=declared, duration=duration,
                         average_rate=float(rate) if rate else None,
                         start=start / av.time_base if start else 0.0,
                         streams=len(container.streams))
    except BaseException:
        container.close()
        raise
    return Video(container, stream, info, lim, deadline, clock)


def decode_frames(data: bytes | memoryview, limits: VideoLimits | None = None) -> Iterator[Frame]:
    """``open_video`` then ``frames()``, closing the video when the iteration ends."""
    with open_video(data, limits) as video:
        yield from video.frames()
