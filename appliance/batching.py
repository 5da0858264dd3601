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
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import replace
from typing import TypeVar, cast

from appliance.admission import HeldBytes, Reservation
from appliance.batch_queue import BatchQueue, Request
from appliance.clock import Clock, FakeClock, MonotonicClock, Timer
from appliance.config import BatchingConfig
from appliance.errors import ShuttingDown
from appliance.metrics import Metrics

# The clocks are imported from here by the servicer, the lanes and the tests.
__all__ = ["Batcher", "Clock", "FakeClock", "MonotonicClock", "Timer", "resolve"]

T = TypeVar("T")
R = TypeVar("R")


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


class Batcher(BatchQueue[T, R]):
    """Groups the items of many concurrent ``submit`` calls into batches.

    ``run_batch(items)`` must return one result per item, in order. The
    dispatcher task starts on ``start()`` or lazily on the first ``submit``.
    The queue, its bounds and its accounting are ``BatchQueue``'s; this class
    cuts batches from it and runs them.
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
        super().__init__(config, clock, metrics, held, lane)
        self._run_batch = run_batch
        self._size_of = size_of
        self._concurrency = concurrency
        self._dispatcher: asyncio.Task[None] | None = None
        self._batches: set[asyncio.Task[None]] = set()

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
        owners: list[tuple[Request[T, R], int]] = []
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
        self, items: list[T], owners: list[tuple[Request[T, R], int]], nbytes: int
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

    def _fail(self, owners: list[tuple[Request[T, R], int]], exc: BaseException) -> None:
        for request in {request for request, _ in owners}:
            # Its later items are no use once it has failed.
            self._unqueue(request, exc, None)

