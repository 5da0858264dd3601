"""The batcher's queue: admission against its bounds, removal, accounting.

``BatchQueue`` holds the requests waiting for a batch, FIFO by arrival, and
what they count against: items and bytes queued (``max_queue_items``,
``max_queue_bytes``), the oldest one's wait (``max_queue_wait_ms``), and the
bytes held by queued and running items (``HeldBytes``, shared with the other
lane and the streams). A full queue refuses at once (``Overloaded``): a fast
refusal lets clients back off, where an unbounded queue only turns overload
into timeouts. ``batching.Batcher`` adds the dispatcher that cuts batches from
it; everything runs on one asyncio event loop.
"""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from appliance.admission import HeldBytes, Reservation
from appliance.clock import Clock, MonotonicClock
from appliance.config import BatchingConfig
from appliance.errors import DeadlineExceeded, Overloaded, ShuttingDown
from appliance.metrics import Metrics

T = TypeVar("T")
R = TypeVar("R")


@dataclass(eq=False)
class Request(Generic[T, R]):
    """One ``submit`` call: its items, their results so far, how far it has got."""

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


class BatchQueue(ABC, Generic[T, R]):
    """The queued requests of one lane and their accounting (see the module)."""

    def __init__(
        self,
        config: BatchingConfig,
        clock: Clock | None,
        metrics: Metrics | None,
        held: HeldBytes | None,
        lane: str,
    ) -> None:
        self._config = config
        self._clock: Clock = clock or MonotonicClock()
        self._metrics = metrics
        self._lane = lane
        self._queue: deque[Request[T, R]] = deque()
        self._queued_items = 0
        self._queued_bytes = 0
        self._held = held or HeldBytes(config.max_inflight_bytes)
        self._closing = False
        # Set on every change the dispatcher may act on (``_changed``).
        self._wake = asyncio.Event()

    @property
    def queued_items(self) -> int:
        return self._queued_items

    @property
    def queued_bytes(self) -> int:
        return self._queued_bytes

    @abstractmethod
    def start(self) -> None:
        """Start what consumes the queue (the batcher's dispatcher), if not yet started."""

    def _admit(
        self, items: Sequence[T], sizes: list[int], deadline: float | None,
        reservation: Reservation | None,
    ) -> Request[T, R]:
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
        request: Request[T, R] = Request(
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

    def _expire(self, request: Request[T, R]) -> None:
        if request.queued and not request.started:
            self._unqueue(request, DeadlineExceeded(
                "the deadline passed while the request waited in the queue"), "deadline")

    def _unqueue(self, request: Request[T, R], exc: BaseException | None,
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
