"""What the server admits: the bytes of files it holds, and the memory of decodes.

``HeldBytes`` bounds the bytes of files the server holds at once, whatever
holds them: queued or running in either lane's batcher, or still arriving in
a MatchStream (``batching.max_inflight_bytes``). It lives on the event loop.

``DecodeBudget`` is the memory admitted to decoding, shared by every decode at once.

Each decode asks for its estimated peak memory (``decode.estimate``) before
it starts and gives it back when it ends. While the budget is spent, a decode
waits (for room, its request's deadline or ``limits.max_decode_wait_seconds``,
whichever comes first) and is then refused OVERLOADED: N hostile files wait
their turn or are refused, they do not multiply the memory. A decode larger
than the whole budget is refused at once (the per-file limit,
``limits.max_decode_bytes``, is checked before this).

Threads, not asyncio: decodes are waited for on the worker threads.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

from appliance.errors import ItemCode, ItemFault
from appliance.metrics import Metrics


class HeldBytes:
    """A count of held bytes against a limit (0: none). Event-loop only."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.held = 0

    def try_take(self, nbytes: int) -> bool:
        if self.limit > 0 and self.held + nbytes > self.limit:
            return False
        self.held += nbytes
        return True

    def release(self, nbytes: int) -> None:
        self.held -= nbytes


class Reservation:
    """Bytes taken from a ``HeldBytes`` for one request before it is queued
    (a stream, as its chunks arrive). The batcher adopts them when it queues
    the request (``hand_over``); whatever was not handed over is given back
    by ``release``, which is safe to call in a ``finally`` either way."""

    def __init__(self, held: HeldBytes) -> None:
        self._held = held
        self.nbytes = 0

    def take(self, nbytes: int) -> bool:
        if not self._held.try_take(nbytes):
            return False
        self.nbytes += nbytes
        return True

    def hand_over(self) -> int:
        nbytes, self.nbytes = self.nbytes, 0
        return nbytes

    def release(self) -> None:
        self._held.release(self.hand_over())


class DecodeBudget:
    def __init__(self, capacity: int, metrics: Metrics | None = None) -> None:
        self.capacity = capacity
        self._in_use = 0
        self._waiting = 0
        self._cond = threading.Condition()
        self._metrics = metrics
        if metrics is not None:
            metrics.decode_budget.labels("capacity").set(capacity)

    @property
    def in_use(self) -> int:
        return self._in_use

    @property
    def waiting(self) -> int:
        return self._waiting

    def acquire(self, nbytes: int, until: float) -> bool:
        """Take ``nbytes``, waiting until ``until`` (time.monotonic) at most;
        False when there was no room in time."""
        nbytes = max(0, nbytes)
        with self._cond:
            if self._in_use + nbytes <= self.capacity:
                self._take(nbytes)
                return True
            if nbytes > self.capacity:
                return False
            self._waiting += 1
            try:
                while self._in_use + nbytes > self.capacity:
                    left = until - time.monotonic()
                    if left <= 0:
                        return False
                    self._cond.wait(left)
                self._take(nbytes)
                return True
            finally:
                self._waiting -= 1

    def _take(self, nbytes: int) -> None:
        self._in_use += nbytes
        self._publish()

    def release(self, nbytes: int) -> None:
        with self._cond:
            self._in_use -= max(0, nbytes)
            self._publish()
            self._cond.notify_all()

    def _publish(self) -> None:
        if self._metrics is not None:
            self._metrics.decode_budget.labels("in_use").set(self._in_use)

    @contextmanager
    def hold(self, nbytes: int, until: float, keep: int = 0) -> Iterator[Kept]:
        """``nbytes`` for the duration of the block, or ItemFault(OVERLOADED).

        ``keep`` of them may outlive the block: ``Kept.take()`` in the block
        hands them to the caller, who releases them later (pixels waiting in
        this process for a device)."""
        if not self.acquire(nbytes, until):
            raise ItemFault(
                ItemCode.OVERLOADED,
                f"no room for {nbytes >> 20} MiB in the decode budget "
                f"(limits.max_decode_bytes_in_flight={self.capacity >> 20} MiB) in time",
            )
        kept = Kept(min(keep, nbytes))
        try:
            yield kept
        finally:
            self.release(nbytes - kept.taken)


class Kept:
    """Part of a hold that its caller may keep past the hold's block."""

    def __init__(self, nbytes: int) -> None:
        self._nbytes = nbytes
        self.taken = 0

    def take(self) -> int:
        self.taken, self._nbytes = self.taken + self._nbytes, 0
        return self.taken
