"""The server's side of the sandbox: the zygote process and a pool of workers.

``WorkerPool.exchange`` sends one job to an idle worker and waits for its
reply up to a wall-clock deadline. A worker that does not answer in time, or
dies, or sends anything malformed, is killed and dropped, and the next job
gets a fresh fork: a hostile file can cost one worker, never the server, and
never longer than its time limit. Workers are killed through a pidfd, which
names the process itself, so a recycled pid can never be hit.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from appliance.sandbox import protocol

log = logging.getLogger("appliance.sandbox")

# The first start of a fresh checkout compiles the PDQ kernels (tens of seconds).
_WARM_TIMEOUT = 300.0
# How long a job with no deadline waits for a free worker.
_ACQUIRE_SECONDS = 60.0
# glibc's allocator in the workers, fixed rather than adaptive (see
# appliance.allocator): blocks of 32 MiB and more (a picture of 8 MP and up)
# are mapped and go back to the system as soon as they are freed, and up to
# 64 MiB of freed heap is kept for the next file. Returning everything (a
# 1 MiB threshold) made every ordinary file fault its pages in afresh: 2.5x
# the time of the same decode inline, measured on 0.3 to 3 MP JPEGs; with
# this, within 1.3x.
_WORKER_ENV = {"MALLOC_MMAP_THRESHOLD_": str(32 << 20), "MALLOC_TRIM_THRESHOLD_": str(64 << 20),
               "MALLOC_ARENA_MAX": "2"}


class SandboxUnavailable(Exception):
    """No worker could be started (the zygote failed to start or to fork)."""


class WorkerTimeout(Exception):
    """A worker did not answer before its deadline and was killed."""


class NoWorker(Exception):
    """Every worker stayed busy until the caller's deadline."""


@dataclass(eq=False)
class Worker:
    pid: int
    sock: socket.socket
    pidfd: int | None = field(default=None)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _dead: bool = False

    def kill(self) -> None:
        """SIGKILL and close; idempotent (shutdown and a failing job may race)."""
        with self._lock:
            if self._dead:
                return
            self._dead = True
            with contextlib.suppress(OSError):
                if self.pidfd is not None:
                    signal.pidfd_send_signal(self.pidfd, signal.SIGKILL)
                else:
                    os.kill(self.pid, signal.SIGKILL)
            self.sock.close()
            if self.pidfd is not None:
                os.close(self.pidfd)
                self.pidfd = None


class Zygote:
    """One warm zygote process, started on first use and restarted if it dies."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._proc: subprocess.Popen[bytes] | None = None
        self._control: socket.socket | None = None
        self.starts = 0

    def _start(self) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            self._proc = subprocess.Popen(
                [sys.executable, "-m", "appliance.sandbox.zygote", str(theirs.fileno())],
                pass_fds=(theirs.fileno(),), stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL, start_new_session=True,
                env={**os.environ, **_WORKER_ENV},
            )
        finally:
            theirs.close()
        ours.settimeout(_WARM_TIMEOUT)
        try:
            ready = ours.recv(1)
        except OSError as exc:
            ready = b""
            log.error("decode zygote did not start: %s", exc)
        if ready != protocol.READY:
            ours.close()
            self._reap()
            raise SandboxUnavailable("the decode zygote did not start")
        ours.settimeout(10.0)
        self._control = ours
        self.starts += 1

    def _reap(self) -> None:
        if self._proc is not None:
            self._proc.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._proc.wait(5)
            self._proc = None

    def spawn(self) -> Worker:
        """A new worker, forked by the zygote (started or restarted as needed)."""
        with self._lock:
            for attempt in (1, 2):
                if self._control is None or self._proc is None or self._proc.poll() is not None:
                    self._close_locked()
                    self._start()
                assert self._control is not None
                ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
                try:
                    socket.send_fds(self._control, [protocol.FORK], [theirs.fileno()])
                    raw = self._control.recv(protocol.PID.size)
                    if len(raw) != protocol.PID.size:
                        raise OSError("the zygote closed its channel")
                    (pid,) = protocol.PID.unpack(raw)
                except OSError as exc:
                    ours.close()
                    log.warning("decode zygote failed to fork (%s); restarting it", exc)
                    self._close_locked()
                    if attempt == 2:
                        raise SandboxUnavailable(f"the decode zygote cannot fork: {exc}") from exc
                    continue
                finally:
                    theirs.close()
                pidfd = None
                with contextlib.suppress(OSError, AttributeError):
                    pidfd = os.pidfd_open(pid)
                return Worker(pid, ours, pidfd)
        raise SandboxUnavailable("unreachable")

    @property
    def alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def _close_locked(self) -> None:
        if self._control is not None:
            self._control.close()
            self._control = None
        # The zygote holds nothing worth a clean exit (it would exit on the
        # closed channel too): killed at once, so that shutdown never waits on it.
        self._reap()

    def close(self) -> None:
        with self._lock:
            self._close_locked()


class WorkerPool:
    """Up to ``size`` workers, each serving one job at a time."""

    def __init__(self, size: int, zygote_: Zygote) -> None:
        self.size = size
        self._zygote = zygote_
        self._cond = threading.Condition()
        self._idle: list[Worker] = []
        self._busy: set[Worker] = set()
        self._starting = 0
        self._closed = False
        self.retired = 0  # workers replaced after a job that left them large

    def start(self) -> None:
        """Start the zygote and workers up to ``size`` now, not on the first file."""
        with self._cond:
            missing = self.size - len(self._idle) - len(self._busy) - self._starting
        workers = [self._zygote.spawn() for _ in range(max(0, missing))]
        with self._cond:
            self._idle.extend(workers)
            self._cond.notify_all()

    @property
    def healthy(self) -> bool:
        return not self._closed and (bool(self._idle) or bool(self._busy)
                                     or self._zygote.alive)

    def _acquire(self, deadline: float) -> Worker:
        with self._cond:
            while True:
                if self._closed:
                    raise SandboxUnavailable("the decode workers are shut down")
                if self._idle:
                    worker = self._idle.pop()
                    self._busy.add(worker)
                    return worker
                if len(self._busy) + self._starting < self.size:
                    self._starting += 1
                    break
                left = deadline - time.monotonic()
                if left <= 0:
                    raise NoWorker("no decode worker was free in time")
                self._cond.wait(left)
        try:
            worker = self._zygote.spawn()
        finally:
            with self._cond:
                self._starting -= 1
        with self._cond:
            self._busy.add(worker)
        return worker

    def _done(self, worker: Worker, reuse: bool) -> None:
        with self._cond:
            self._busy.discard(worker)
            if reuse and not self._closed:
                self._idle.append(worker)
            self._cond.notify()
        if not reuse:
            worker.kill()

    def exchange(self, header: dict[str, Any], payload: bytes | memoryview, seconds: float,
                 deadline: float | None, max_reply: int,
                 on_part: Callable[[dict[str, Any], bytearray], None] | None = None,
                 ) -> tuple[dict[str, Any], bytearray]:
        """Send one job and return the reply frame, killing the worker on any trouble.

        ``on_part``: the job streams (a video's frames for the device): every
        frame whose header has "part" before the reply goes to it, as it comes;
        whatever it raises ends the job (and the worker).

        The job may take ``seconds`` from when a worker starts it, and never
        past ``deadline`` (time.monotonic; the request's). Waiting for a free
        worker is bounded by ``deadline`` (or ``_ACQUIRE_SECONDS``), not by
        ``seconds``. Raises NoWorker, WorkerTimeout (the worker ran past its
        time and was killed), protocol.ChannelClosed (the worker died or
        misbehaved) or SandboxUnavailable.
        """
        wait = time.monotonic() + _ACQUIRE_SECONDS if deadline is None else deadline
        worker = self._acquire(wait)
        stop = time.monotonic() + seconds
        if deadline is not None:
            stop = min(stop, deadline)
        header = {**header, "seconds": max(0.0, stop - time.monotonic())}
        reuse = False
        try:
            _set_timeout(worker.sock, stop)
            protocol.send_frame(worker.sock, header, payload)
            while True:
                frame, body = protocol.read_frame(worker.sock, max_reply,
                                                  lambda: _set_timeout(worker.sock, stop))
                if on_part is None or not frame.get("part"):
                    break
                on_part(frame, body)
            # A worker that grew (a large picture leaves the allocator holding
            # memory) is replaced rather than kept at its high-water mark.
            reuse = not frame.get("retire")
            self.retired += not reuse
            return frame, body
        except TimeoutError as exc:
            raise WorkerTimeout("the decode worker ran past its deadline") from exc
        except OSError as exc:
            raise protocol.ChannelClosed(f"the decode worker failed: {exc}") from exc
        finally:
            self._done(worker, reuse)

    def close(self) -> int:
        """Kill every worker, busy ones too (shutdown: their callers get a fault);
        how many were busy."""
        with self._cond:
            self._closed = True
            busy = len(self._busy)
            workers = [*self._idle, *self._busy]
            self._idle.clear()
            self._cond.notify_all()
        for worker in workers:
            worker.kill()
        return busy


def _set_timeout(sock: socket.socket, deadline: float) -> None:
    left = deadline - time.monotonic()
    if left <= 0:
        raise TimeoutError("deadline passed")
    sock.settimeout(left)
