"""Time for the batchers and the servicer: a ``Clock`` protocol, the real one, a fake.

Timers run on the asyncio event loop. Everything that waits on time takes a
``Clock``, so that tests drive it with ``FakeClock.advance`` and never sleep.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol


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
