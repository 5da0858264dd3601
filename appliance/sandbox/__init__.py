"""Where a file's pixels are decoded and hashed: a worker process, or inline.

``ProcessDecoders`` (the default, ``limits.decode_isolation = "process"``)
runs ``appliance.pixels.hash_file`` in worker processes forked from a warm
zygote, each job under a memory limit from its estimate and a wall-clock
limit after which the worker is killed: a hostile file can stall or crash a
worker, never the server, and the worker is back in milliseconds.
``InlineDecoders`` (``"inline"``) runs the same function in the calling
thread: no process hop, but a decode past its time is only stopped at its
next read, and a decoder crash is the server's crash.
"""

from __future__ import annotations

import atexit
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, fields
from typing import Any, Protocol, TypeVar

from appliance.decode import Cost, Layout
from appliance.errors import ItemCode, ItemFault
from appliance.hashers.video import Hashing, VideoJob, VideoResult, hash_video
from appliance.metrics import Metrics
from appliance.pixels import PixelJob, PixelResult, hash_file
from appliance.sandbox.pool import (
    NoWorker,
    SandboxUnavailable,
    WorkerPool,
    WorkerTimeout,
    Zygote,
)
from appliance.sandbox.protocol import (
    ChannelClosed,
    Reply,
    parse_part,
    parse_reply,
    parse_video_reply,
)
from appliance.video.limits import VideoLimits
from appliance.video.tmk_format import TMK_BYTES
from appliance.video.vpdq_format import FRAME_BYTES

log = logging.getLogger("appliance.sandbox")
T = TypeVar("T")

# Room for the reply's JSON around the exported pixels.
_REPLY_SLACK = 1 << 20


class Decoders(Protocol):
    """Runs the pixel stage of one file within its limits."""

    def run(self, data: bytes | memoryview, layout: Layout, job: PixelJob, cost: Cost,
            seconds: float, deadline: float | None) -> PixelResult:
        """``seconds``: the time limit of this file (limits.max_decode_seconds);
        ``deadline`` (time.monotonic): its request's, if any. Raises ItemFault."""
        ...

    def run_video(self, data: bytes | memoryview, job: VideoJob, limits: VideoLimits,
                  memory: int, deadline: float | None, sink: Hashing | None = None
                  ) -> VideoResult:
        """The video stage of one file within ``limits`` (its time limit is
        ``limits.max_video_decode_seconds``), under ``memory`` bytes. With a
        ``sink`` (a device's), the frames are hashed by it, in this process,
        as the decode makes them."""
        ...

    @property
    def healthy(self) -> bool: ...

    def start(self) -> None: ...

    def close(self) -> None: ...


def _timed_out(deadline: float | None) -> ItemFault:
    if deadline is not None and time.monotonic() >= deadline:
        return ItemFault(ItemCode.DEADLINE_EXCEEDED,
                         "the request's deadline passed while this file was decoding")
    return ItemFault(ItemCode.DECODE_TIMEOUT,
                     "decoding and hashing ran past limits.max_decode_seconds; stopped")


def _inline(stage: Callable[[], T], deadline: float | None, out_of_memory: str,
            what: str) -> T:
    """``stage()`` in this thread, its failures as a worker's would be told."""
    try:
        return stage()
    except ItemFault as fault:
        if fault.code == ItemCode.DECODE_TIMEOUT:
            raise _timed_out(deadline) from fault
        raise
    except MemoryError as exc:
        raise ItemFault(out_of_memory, "decoding ran out of memory") from exc
    except Exception as exc:  # a bug: this file's signals of the stage fail, as in a worker
        log.exception("%s stage failed unexpectedly", what)
        raise internal_error(exc) from exc


class InlineDecoders:
    healthy = True

    def run(self, data: bytes | memoryview, layout: Layout, job: PixelJob, cost: Cost,
            seconds: float, deadline: float | None) -> PixelResult:
        stop = time.monotonic() + seconds
        limit = stop if deadline is None else min(stop, deadline)
        return _inline(lambda: hash_file(data, layout, job, limit), deadline,
                       ItemCode.DECOMPRESSION_BOMB, "pixel")

    def run_video(self, data: bytes | memoryview, job: VideoJob, limits: VideoLimits,
                  memory: int, deadline: float | None, sink: Hashing | None = None
                  ) -> VideoResult:
        return _inline(lambda: hash_video(data, job, limits, deadline, sink), deadline,
                       ItemCode.VIDEO_TOO_LARGE, "video")

    def start(self) -> None:
        pass

    def close(self) -> None:
        pass


class ProcessDecoders:
    def __init__(self, size: int, zygote: Zygote | None = None,
                 metrics: Metrics | None = None) -> None:
        self.pool = WorkerPool(size, zygote or shared_zygote())
        self._metrics = metrics

    def _count(self, reason: str) -> None:
        if self._metrics is not None:
            self._metrics.decode_workers_killed.labels(reason).inc()

    @property
    def healthy(self) -> bool:
        return self.pool.healthy

    def start(self) -> None:
        self.pool.start()

    def close(self) -> None:
        busy = self.pool.close()
        for _ in range(busy):
            self._count("shutdown")

    def run(self, data: bytes | memoryview, layout: Layout, job: PixelJob, cost: Cost,
            seconds: float, deadline: float | None) -> PixelResult:
        header = {
            "layout": asdict(layout), "names": list(job.names), "dihedral": job.pdq_dihedral,
            "exif": job.exif_orientation, "fast": job.fast_min_side, "export": list(job.export),
            "memory": cost.memory,
        }
        # The signals hashed there: the exported ones come back as pixels.
        here = tuple(n for n in job.names if n not in job.export)
        reply, _ = self._exchange(header, data, seconds, deadline,
                                  cost.exported + _REPLY_SLACK, here)
        return PixelResult(reply.hashes, reply.images, reply.decode_seconds, reply.hash_seconds,
                           reply.peak_bytes)

    def _exchange(self, header: dict[str, Any], data: bytes | memoryview, seconds: float,
                  deadline: float | None, most: int, names: tuple[str, ...],
                  video: bool = False,
                  on_part: Callable[[dict[str, Any], bytearray], None] | None = None,
                  ) -> tuple[Reply, int]:
        """One job in a worker: (its checked reply, frames decoded); ItemFault
        for the job's own fault and for a worker that timed out, died or is missing."""
        retired = self.pool.retired
        try:
            frame, payload = self.pool.exchange(header, data, seconds, deadline, most, on_part)
            if video:
                reply, frames = parse_video_reply(frame, payload, names)
            else:
                reply, frames = parse_reply(frame, payload, names), 0
        except WorkerTimeout as exc:
            self._count("timeout")
            raise _timed_out(deadline) from exc
        except NoWorker as exc:
            raise ItemFault(ItemCode.OVERLOADED if deadline is None else
                            ItemCode.DEADLINE_EXCEEDED, str(exc)) from exc
        except ChannelClosed as exc:
            self._count("failed")
            raise ItemFault(ItemCode.DECODER_FAILED,
                            f"the decoder's process died on this file ({exc})") from exc
        except SandboxUnavailable as exc:
            raise ItemFault(ItemCode.DECODER_FAILED, f"no decoder process: {exc}") from exc
        finally:
            if self.pool.retired > retired:
                self._count("retired")
        if reply.code:
            if reply.trace:
                log.error("decode worker: %s\n%s", reply.message, reply.trace)
            raise ItemFault(reply.code, reply.message)
        return reply, frames

    def run_video(self, data: bytes | memoryview, job: VideoJob, limits: VideoLimits,
                  memory: int, deadline: float | None, sink: Hashing | None = None
                  ) -> VideoResult:
        header = {"video": {"names": list(job.names), "seconds_per_hash": job.seconds_per_hash,
                            "limits": {f.name: getattr(limits, f.name)
                                       for f in fields(VideoLimits)},
                            "export": sink is not None},
                  "memory": memory}
        # The reply: the values, at most a .tmk and a vPDQ frame per frame
        # decoded; or, streamed to a sink, one full-size frame at a time.
        most = max(TMK_BYTES + FRAME_BYTES * limits.max_video_frames,
                   3 * limits.max_video_pixels) + _REPLY_SLACK

        def part(header: dict[str, Any], payload: bytearray) -> None:
            assert sink is not None
            kind, rgb, index, seconds = parse_part(header, payload, limits.max_video_pixels)
            if kind == "stretched":
                sink.tmk_frames(rgb)
            else:
                sink.vpdq_frame(index, seconds, rgb)

        reply, frames = self._exchange(header, data, limits.max_video_decode_seconds, deadline,
                                       most, () if sink else job.names, video=True,
                                       on_part=part if sink is not None else None)
        if sink is None:
            return VideoResult(reply.hashes, frames, reply.decode_seconds, reply.hash_seconds,
                               reply.peak_bytes)
        return VideoResult(sink.values(), frames, reply.decode_seconds, sink.seconds,
                           reply.peak_bytes)


def internal_error(exc: BaseException) -> ItemFault:
    """What a client is told of a bug in the pixel stage: its type, never its text."""
    return ItemFault(ItemCode.INTERNAL, f"internal error in the decoder: {type(exc).__name__}")


_shared: Zygote | None = None
_shared_lock = threading.Lock()


def shared_zygote() -> Zygote:
    """The process's one zygote: every pool forks its workers from it."""
    global _shared
    with _shared_lock:
        if _shared is None:
            _shared = Zygote()
            atexit.register(_shared.close)
        return _shared


__all__ = ["Decoders", "InlineDecoders", "ProcessDecoders", "shared_zygote"]
