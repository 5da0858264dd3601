"""Dynamic batching between the servicer and the pipeline.

Requests (each a sequence of items, e.g. files) are queued FIFO by arrival;
one dispatcher task cuts the queue into batches and runs each batch through
``run_batch`` in its own task, then answers every request with exactly its own
results, in its own order. A request larger than a batch is split across
consecutive batches and reassembled.

Why it is built this way:

- The batch timer starts at the batch's *first* item, not its last: a steady
  trickle of items could otherwise hold a batch open forever, whereas this
  bounds the time any item waits for company by ``max_delay_ms``.
- At most ``concurrency`` batches run at once, and the dispatcher forms the next
  batch only when a slot is free. Items keep arriving while every slot is
  busy, so under load batches leave fuller (better use of the device) with no
  extra delay; when idle, a lone item leaves after at most ``max_delay_ms``.
- The queue is bounded in items and bytes and refuses at once when full
  (``Overloaded``): a fast refusal lets clients back off or go elsewhere,
  while an unbounded queue only turns overload into timeouts.
- Deadlines and cancellation remove a request's items before any work is
  spent on them; once an item has started, the request is finished normally.
- Time comes from an injectable ``Clock``, so tests drive timers with
  ``FakeClock.advance`` and never sleep.

Everything runs on one asyncio event loop: no threads, no locks.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Generic, Protocol, TypeVar, cast

from appliance.admission import HeldBytes, Reservation
from appliance.config import BatchingConfig
from appliance.errors import DeadlineExceeded, Overloaded, ShuttingDown
from appliance.metrics import Metrics

T = TypeVar("T")
R = TypeVar("R")


class Timer(Protocol):
    def cancel(self) -> None: ...


class Clock(Protocol):
    """Monotonic time in seconds, and timers on that time."""

    def now(self) -> float: ...

    def call_at(self, when: float, callback: Callable[[], object]) -> Timer:
        """Run ``callback`` on the event loop once ``now() >= when``."""
        ...

    async def sleep(self, seconds: float) -> None: ...


class MonotonicClock:
    """The real clock: ``time.monotonic`` and the running loop's timers."""

    def now(self) -> float:
        return time.monotonic()

    def call_at(self, when: float, callback: Callable[[], object]) -> Timer:
        # Relative, because the loop's own clock need not be time.monotonic.
        return asyncio.get_running_loop().call_later(max(0.0, when - self.now()), callback)

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


@dataclass(order=True)
class _FakeTimer:
    when: float
    seq: int
    callback: Callable[[], object] = field(compare=False)
    cancelled: bool = field(default=False, compare=False)

    def cancel(self) -> None:
        self.cancelled = True


class FakeClock:
    """A clock for tests: time stands still until ``advance`` moves it.

    ``advance`` runs the callbacks of due timers at once, in time order, with
    ``now()`` set to each timer's time; the coroutines they wake run when the
    caller next yields to the loop (``await asyncio.sleep(0)``).
    """

    def __init__(self, start: float = 0.0) -> None:
        self._now = start
        self._timers: list[_FakeTimer] = []
        self._seq = itertools.count()

    def now(self) -> float:
        return self._now

    def call_at(self, when: float, callback: Callable[[], object]) -> Timer:
        if when <= self._now:
            # Like the loop's call_at with a past time: run soon, not synchronously.
            return asyncio.get_running_loop().call_soon(callback)
        timer = _FakeTimer(when, next(self._seq), callback)
        heapq.heappush(self._timers, timer)
        return timer

    async def sleep(self, seconds: float) -> None:
        wake = asyncio.Event()
        timer = self.call_at(self._now + seconds, wake.set)
        try:
            await wake.wait()
        finally:
            timer.cancel()

    def advance(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError("time only moves forward")
        target = self._now + seconds
        while self._timers and self._timers[0].when <= target:
            timer = heapq.heappop(self._timers)
            if not timer.cancelled:
                self._now = max(self._now, timer.when)
                timer.callback()
        self._now = target

    @property
    def pending_timers(self) -> int:
        return sum(not t.cancelled for t in self._timers)


def resolve(config: BatchingConfig, backend: str, workers: int) -> BatchingConfig:
    """``config`` with its automatic (0) batch size and concurrency made concrete.

    GPU: batches of 256 files, 2 at once, so one batch is prepared on the host
    while the other is on the device (more would only compete for device
    memory), and kernels see enough images to fill the device.
    CPU: batches of one file per worker thread, 2 at once. A CPU batch gains
    little from size (its files are hashed one per thread either way; batching
    saves the hand-offs and gives the index batches of queries), while every
    file admitted to a running batch adds to the latency of the others: with
    one file per core and one batch waiting, each file has a core soon after it
    leaves the queue (measured with benchmarks/load.py; see RESULTS.md).
    """
    gpu = backend.startswith("gpu")
    return replace(
        config,
        max_batch_items=config.max_batch_items or (256 if gpu else max(1, workers)),
        max_concurrent_batches=config.max_concurrent_batches or 2,
    )


@dataclass(eq=False)
class _Request(Generic[T, R]):
    items: Sequence[T]
    sizes: list[int]
    deadline: float | None
    enqueued_at: float
    future: asyncio.Future[list[R]]
    results: list[Any]
    next: int = 0  # the first item not yet handed to a batch
    unanswered: int = 0  # items handed to a batch whose result has not come back
    queued_bytes: int = 0
    queued: bool = True  # some items still wait in the queue

    @property
    def started(self) -> bool:
        return self.next > 0


class Batcher(Generic[T, R]):
    """Groups the items of many concurrent ``submit`` calls into batches.

    ``run_batch(items)`` must return one result per item, in order. The
    dispatcher task starts on ``start()`` or lazily on the first ``submit``.
    """

    def __init__(
        self,
        run_batch: Callable[[list[T]], Awaitable[list[R]]],
        config: BatchingConfig,
        size_of: Callable[[T], int],
        concurrency: int,
        clock: Clock | None = None,
        metrics: Metrics | None = None,
        held: HeldBytes | None = None,
        lane: str = "light",
    ) -> None:
        """``held`` counts the bytes of queued and running items against
        ``max_inflight_bytes``; several batchers (and streams) may share one.
        ``lane`` names this batcher in the metrics (queue gauges, batch sizes)."""
        if concurrency < 1:
            raise ValueError(f"concurrency must be >= 1, got {concurrency}")
        if config.max_batch_items < 1:
            raise ValueError("max_batch_items must be >= 1 (batching.resolve makes 0 concrete)")
        self._run_batch = run_batch
        self._config = config
        self._size_of = size_of
        self._concurrency = concurrency
        self._clock: Clock = clock or MonotonicClock()
        self._metrics = metrics
        self._lane = lane
        self._queue: deque[_Request[T, R]] = deque()
        self._queued_items = 0
        self._queued_bytes = 0
        self._held = held or HeldBytes(config.max_inflight_bytes)
        self._closing = False
        self._wake = asyncio.Event()
        self._dispatcher: asyncio.Task[None] | None = None
        self._batches: set[asyncio.Task[None]] = set()

    @property
    def queued_items(self) -> int:
        return self._queued_items

    @property
    def queued_bytes(self) -> int:
        return self._queued_bytes

    @property
    def running_batches(self) -> int:
        return len(self._batches)

    def start(self) -> None:
        if self._dispatcher is None:
            self._dispatcher = asyncio.get_running_loop().create_task(self._dispatch())

    async def submit(
        self, items: Sequence[T], deadline: float | None = None,
        reservation: Reservation | None = None,
    ) -> list[R]:
        """The results of ``items``, in order, once every one has been processed.

        Raises ``Overloaded`` (queue full), ``DeadlineExceeded`` (``deadline``, on
        this batcher's clock, passed before any item started), ``ShuttingDown``,
        or whatever ``run_batch`` raised for a batch holding one of the items.
        ``reservation``: bytes the caller already holds for these items (a
        stream's, taken as they arrived); the batcher adopts them when it
        queues the request, and a refused request leaves them with the caller.
        """
        if not items:
            return []
        request = self._admit(items, [self._size_of(item) for item in items], deadline,
                              reservation)
        timer = None
        if deadline is not None:
            timer = self._clock.call_at(deadline, lambda: self._expire(request))
        try:
            return await request.future
        except asyncio.CancelledError:
            # The caller is gone: its queued items would be wasted work.
            self._unqueue(request, None, "cancelled")
            raise
        finally:
            if timer is not None:
                timer.cancel()

    def _admit(
        self, items: Sequence[T], sizes: list[int], deadline: float | None,
        reservation: Reservation | None,
    ) -> _Request[T, R]:
        """Queue a request, or refuse it (Overloaded, DeadlineExceeded, ShuttingDown)."""
        cfg = self._config
        if self._closing:
            self._shed("shutdown")
            raise ShuttingDown("the batcher is closing and takes no new requests")
        count, nbytes = len(items), sum(sizes)
        never = count > cfg.max_queue_items or nbytes > cfg.max_queue_bytes
        if (never or self._queued_items + count > cfg.max_queue_items
                or self._queued_bytes + nbytes > cfg.max_queue_bytes):
            self._shed("queue_full")
            why = ("can never fit the queue" if never else
                   f"does not fit: queue full with {self._queued_items} items, "
                   f"{self._queued_bytes} bytes")
            raise Overloaded(
                f"request of {count} items, {nbytes} bytes {why} "
                f"(max_queue_items={cfg.max_queue_items}, max_queue_bytes={cfg.max_queue_bytes})"
            )
        now = self._clock.now()
        waited = self._oldest_wait(now)
        if cfg.max_queue_wait_ms > 0 and waited * 1000 > cfg.max_queue_wait_ms:
            self._shed("queue_wait")
            raise Overloaded(
                f"the oldest queued file has waited {waited * 1000:.0f} ms "
                f"(max_queue_wait_ms={cfg.max_queue_wait_ms:g})"
            )
        if deadline is not None and deadline <= now:
            self._shed("deadline")
            raise DeadlineExceeded("the deadline had passed before the request was queued")
        extra = nbytes - (reservation.nbytes if reservation is not None else 0)
        if extra > 0 and not self._held.try_take(extra):
            self._shed("inflight_bytes")
            raise Overloaded(
                f"request of {nbytes} bytes does not fit: {self._held.held} bytes held "
                f"(max_inflight_bytes={self._held.limit})"
            )
        if reservation is not None:
            self._held.release(max(0, -extra))  # held more than the items need
            reservation.hand_over()
        # From here the bytes are released as the items leave: by their batch
        # (``_run``) or off the queue (``_unqueue``).
        self.start()
        request: _Request[T, R] = _Request(
            items, sizes, deadline, now, asyncio.get_running_loop().create_future(),
            [None] * count, queued_bytes=nbytes,
        )
        self._queue.append(request)
        self._queued_items += count
        self._queued_bytes += nbytes
        self._changed()
        return request

    def _oldest_wait(self, now: float) -> float:
        """Seconds the oldest request still queued has waited (0 when none is)."""
        for request in self._queue:
            if request.queued:
                return max(0.0, now - request.enqueued_at)
        return 0.0

    async def close(self, drain: bool = True) -> None:
        """Refuse new requests; then finish the accepted ones (``drain``) or refuse
        the queued ones with ``ShuttingDown``. Running batches always finish."""
        self._closing = True
        if not drain:
            for request in list(self._queue):
                self._unqueue(request, ShuttingDown("the batcher closed before this ran"),
                              "shutdown")
        self._wake.set()
        if self._dispatcher is not None:
            await self._dispatcher
        while self._batches:
            await asyncio.wait(set(self._batches))

    async def _dispatch(self) -> None:
        cfg = self._config
        try:
            while True:
                # Cleared before looking at the state, so no change after the look is lost.
                self._wake.clear()
                while self._queue and not self._queue[0].queued:
                    self._queue.popleft()
                if self._closing and not self._queue:
                    return
                timer = None
                if self._queue and len(self._batches) < self._concurrency:
                    now = self._clock.now()
                    due = self._queue[0].enqueued_at + cfg.max_delay_ms / 1000
                    full = (self._queued_items >= cfg.max_batch_items
                            or self._queued_bytes >= cfg.max_batch_bytes)
                    # Closing: nothing more will come, so waiting out the delay is pointless.
                    if full or now >= due or self._closing:
                        self._launch(now)
                        continue
                    timer = self._clock.call_at(due, self._wake.set)
                try:
                    await self._wake.wait()
                finally:
                    if timer is not None:
                        timer.cancel()
        finally:
            # Requests are left only if this task was cancelled or broke:
            # answer them rather than leave their callers waiting forever.
            for request in list(self._queue):
                self._unqueue(request, ShuttingDown("the batcher stopped"), "shutdown")

    def _launch(self, now: float) -> None:
        """Cut one batch from the head of the queue and start it."""
        cfg = self._config
        items: list[T] = []
        owners: list[tuple[_Request[T, R], int]] = []
        nbytes = 0
        while self._queue and len(items) < cfg.max_batch_items:
            request = self._queue[0]
            if not request.queued:
                self._queue.popleft()
                continue
            if not request.started and request.deadline is not None and request.deadline <= now:
                self._expire(request)
                continue
            size = request.sizes[request.next]
            if items and nbytes + size > cfg.max_batch_bytes:
                break  # an oversized item still leaves, alone, as the first of a batch
            items.append(request.items[request.next])
            owners.append((request, request.next))
            nbytes += size
            request.next += 1
            request.unanswered += 1
            request.queued_bytes -= size
            self._queued_items -= 1
            self._queued_bytes -= size
            if request.next == len(request.items):
                request.queued = False
                self._queue.popleft()
        self._changed()
        if not items:
            return
        m = self._metrics
        if m is not None:
            wait = m.stage_seconds.labels("queue")
            for request, _ in owners:
                wait.observe(now - request.enqueued_at)
            m.batch_fill.observe(
                min(1.0, max(len(items) / cfg.max_batch_items, nbytes / cfg.max_batch_bytes))
            )
        task = asyncio.get_running_loop().create_task(self._run(items, owners, nbytes))
        self._batches.add(task)
        task.add_done_callback(self._batch_done)

    def _batch_done(self, task: asyncio.Task[None]) -> None:
        self._batches.discard(task)
        self._wake.set()  # a slot is free

    async def _run(
        self, items: list[T], owners: list[tuple[_Request[T, R], int]], nbytes: int
    ) -> None:
        m = self._metrics
        if m is not None:
            m.batches_running.inc()
        try:
            results = await self._run_batch(items)
            if len(results) != len(items):
                # Results cannot be matched to items: no request may get another's.
                raise RuntimeError(
                    f"run_batch returned {len(results)} results for a batch of {len(items)} items"
                )
        except asyncio.CancelledError:
            self._fail(owners, ShuttingDown("the batch was cancelled"))
            raise
        except Exception as exc:
            self._fail(owners, exc)
            return
        finally:
            self._held.release(nbytes)
            if m is not None:
                m.batches_running.dec()
        for (request, index), result in zip(owners, results, strict=True):
            request.results[index] = result
            request.unanswered -= 1
            if not request.queued and request.unanswered == 0 and not request.future.done():
                request.future.set_result(cast("list[R]", request.results))

    def _fail(self, owners: list[tuple[_Request[T, R], int]], exc: BaseException) -> None:
        for request in {request for request, _ in owners}:
            # Its later items are no use once it has failed.
            self._unqueue(request, exc, None)

    def _expire(self, request: _Request[T, R]) -> None:
        if request.queued and not request.started:
            self._unqueue(request, DeadlineExceeded(
                "the deadline passed while the request waited in the queue"), "deadline")

    def _unqueue(self, request: _Request[T, R], exc: BaseException | None,
                 reason: str | None) -> None:
        """Take the request's remaining items off the queue and fail it with ``exc``.

        ``reason`` is counted as shed only when none of its items had started.
        Removal from the deque is lazy: the dispatcher drops dead entries."""
        if request.queued:
            request.queued = False
            self._queued_items -= len(request.items) - request.next
            self._queued_bytes -= request.queued_bytes
            self._held.release(request.queued_bytes)
            request.queued_bytes = 0
            if reason is not None and not request.started:
                self._shed(reason)
            self._changed()
        if exc is not None and not request.future.done():
            request.future.set_exception(exc)

    def _changed(self) -> None:
        m = self._metrics
        if m is not None:
            if self._lane == "light":
                m.queue_depth.set(self._queued_items)
                m.queue_bytes.set(self._queued_bytes)
            m.lane_queue_depth.labels(self._lane).set(self._queued_items)
        self._wake.set()

    def _shed(self, reason: str) -> None:
        if self._metrics is not None:
            self._metrics.shed.labels(reason).inc()
