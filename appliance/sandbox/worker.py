"""A decode worker: one process, one file at a time, under hard limits.

Forked from the zygote with every module imported and every kernel compiled,
a worker serves jobs on its socket until the server closes it. For each job
it sets its own limits before touching the file:

- memory: RLIMIT_DATA at what the worker holds now plus the job's estimate
  with a margin, so that a decode the estimate got wrong fails with a
  MemoryError here (DECOMPRESSION_BOMB) instead of growing the machine;
- CPU: RLIMIT_CPU a second past the job's time limit, a second guard behind
  the server, which kills a worker whose job runs past its wall-clock limit;
- for the worker's whole life: no file may grow (RLIMIT_FSIZE 0, so nothing
  it runs can write a file) and no core file is dumped (a core would hold the
  uploaded bytes).

A job is a picture's pixel stage (``appliance.pixels.hash_file``) or a
video's (``appliance.hashers.video.hash_video``). Replies are JSON and raw
pixels or values (``protocol``). Peak memory per job is read
from the kernel (VmHWM, reset before each job) and sent back for the metrics.
"""

from __future__ import annotations

import resource
import signal
import socket
import time
import traceback
from collections.abc import Callable
from dataclasses import fields
from typing import Any, TypeVar

import numpy as np
from numpy.typing import NDArray

from appliance.decode import Layout
from appliance.errors import ItemCode, ItemFault
from appliance.hashers.video import Hashing, VideoJob, hash_video
from appliance.pixels import PixelJob, hash_file
from appliance.results import HashValue
from appliance.sandbox.protocol import (
    ChannelClosed,
    read_frame,
    reply_header,
    send_frame,
    video_reply,
)
from appliance.video.limits import VideoLimits

_VIDEO_LIMITS = tuple(f.name for f in fields(VideoLimits))
T = TypeVar("T")

# Headroom over the estimate before the memory limit bites: allocator
# fragmentation and Pillow's block cache, not a second picture.
_MEMORY_MARGIN = 1.25
_MEMORY_FLOOR = 64 << 20
_MAX_FILE = 1 << 31
# A worker this much larger than when it was forked asks to be replaced (its
# allocator keeps up to 64 MiB of freed heap on purpose: see sandbox.pool).
_RETIRE_GROWTH = 160 << 20


def confine() -> None:
    """Limits for the worker's whole life, set once after the fork."""
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    # Writing to a file then fails with EFBIG instead of killing the worker.
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (0, 0))
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the server decides when we stop
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def _status(field: str) -> int:
    """A /proc/self/status field in bytes (VmRSS, VmHWM, VmData), 0 if unknown."""
    try:
        with open("/proc/self/status", "rb") as status:
            for line in status:
                if line.startswith(field.encode() + b":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def _reset_peak() -> None:
    try:
        with open("/proc/self/clear_refs", "w") as clear:  # "5": reset VmHWM to VmRSS
            clear.write("5")
    except OSError:
        pass


def _limit(job: dict[str, Any]) -> None:
    data = _status("VmData")
    allowance = max(_MEMORY_FLOOR, int(int(job["memory"]) * _MEMORY_MARGIN))
    hard = resource.getrlimit(resource.RLIMIT_DATA)[1]
    soft = data + allowance if data else resource.RLIM_INFINITY
    if hard != resource.RLIM_INFINITY:
        soft = min(soft, hard)
    resource.setrlimit(resource.RLIMIT_DATA, (soft, hard))
    used = resource.getrusage(resource.RUSAGE_SELF)
    cpu = int(used.ru_utime + used.ru_stime + float(job["seconds"])) + 2
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, resource.getrlimit(resource.RLIMIT_CPU)[1]))


def _fault(call: Callable[[], T], out_of_memory: str) -> T | dict[str, Any]:
    """``call()``, or the reply header of the fault it raised."""
    try:
        return call()
    except ItemFault as fault:
        return {"ok": False, "code": fault.code, "message": fault.message}
    except MemoryError:
        return {"ok": False, "code": out_of_memory,
                "message": "decoding needed more memory than its estimate allowed"}


class _Exporter(Hashing):
    """Frames to the server, which hashes them on its device: the stretched
    TMK frames a batch at a time, vPDQ's frames one at a time, each sent as it
    is made (the socket's buffer holds the decode back when the server lags)."""

    def __init__(self, sock: socket.socket, names: tuple[str, ...]) -> None:
        super().__init__(names)
        self.sock = sock

    def tmk_frames(self, rgb: NDArray[np.uint8]) -> None:
        send_frame(self.sock, {"part": "stretched", "count": len(rgb)}, b"",
                   [np.ascontiguousarray(rgb).reshape(-1).data])

    def vpdq_frame(self, index: int, seconds: float, rgb: NDArray[np.uint8]) -> None:
        header = {"part": "sampled", "index": index, "seconds": seconds,
                  "height": int(rgb.shape[0]), "width": int(rgb.shape[1])}
        send_frame(self.sock, header, b"", [np.ascontiguousarray(rgb).reshape(-1).data])

    def values(self) -> list[HashValue]:
        return []  # made by the server from the frames


def _run_video(job: dict[str, Any], content: bytearray, sock: socket.socket
               ) -> tuple[dict[str, Any], list[memoryview]]:
    spec = job["video"]
    video_job = VideoJob(tuple(str(n) for n in spec["names"]), float(spec["seconds_per_hash"]))
    limits = VideoLimits(**{k: spec["limits"][k] for k in _VIDEO_LIMITS})
    deadline = time.monotonic() + float(job["seconds"])
    sink = _Exporter(sock, video_job.names) if spec.get("export") else None
    result = _fault(lambda: hash_video(memoryview(content), video_job, limits, deadline, sink),
                    ItemCode.VIDEO_TOO_LARGE)
    if isinstance(result, dict):
        return result, []
    header, blobs = video_reply(result.hashes, result.frames)
    header["decode_s"], header["hash_s"] = result.decode_seconds, result.hash_seconds
    return header, blobs


def _run(job: dict[str, Any], content: bytearray, sock: socket.socket
         ) -> tuple[dict[str, Any], list[memoryview]]:
    if "video" in job:
        return _run_video(job, content, sock)
    layout = Layout(**job["layout"])
    pixel_job = PixelJob(
        names=tuple(job["names"]), pdq_dihedral=bool(job["dihedral"]),
        exif_orientation=bool(job["exif"]), fast_min_side=job["fast"],
        export=tuple(str(n) for n in job["export"]),
    )
    deadline = time.monotonic() + float(job["seconds"])
    result = _fault(lambda: hash_file(memoryview(content), layout, pixel_job, deadline),
                    ItemCode.DECOMPRESSION_BOMB)
    if isinstance(result, dict):
        return result, []
    header = reply_header(result.hashes, result.images)
    header["decode_s"], header["hash_s"] = result.decode_seconds, result.hash_seconds
    return header, [image.reshape(-1).data for image in result.images]


def serve(sock: socket.socket) -> None:
    """Answer jobs until the server closes the socket."""
    confine()
    born = _status("VmRSS")
    while True:
        try:
            job, content = read_frame(sock, _MAX_FILE)
        except (ChannelClosed, OSError):
            return
        _reset_peak()
        base = _status("VmRSS")
        try:
            _limit(job)
            header, images = _run(job, content, sock)
        except Exception as exc:  # a bug: its type to the client, its trace to the server's log
            # (Not to stderr: a worker may not grow files, and stderr may be one.)
            header, images = {"ok": False, "code": ItemCode.INTERNAL,
                              "message": f"internal error in the decoder: {type(exc).__name__}",
                              "trace": traceback.format_exc()[-4000:]}, []
        del content
        header["peak"] = max(0, _status("VmHWM") - base)
        header["retire"] = _status("VmRSS") - born > _RETIRE_GROWTH
        hard = resource.getrlimit(resource.RLIMIT_DATA)[1]
        resource.setrlimit(resource.RLIMIT_DATA, (hard, hard))  # the reply may need it
        try:
            send_frame(sock, header, b"", images)
        except OSError:
            return
