"""Rate limits per identity: token buckets of files and of Lookup hashes.

A bucket holds ``burst`` seconds of its rate and refills continuously; a
request takes its whole cost or nothing. Over the rate, the request is
refused with the seconds until it would fit, which the server sends back as
``grpc-retry-pushback-ms`` (gRPC's retry policy waits that long). A request
larger than the whole bucket can never fit: refused without a delay to wait.
The buckets live on the event loop (no locks).
"""

from __future__ import annotations

import time
from collections.abc import Callable

from appliance.errors import RateLimited
from appliance.security.identities import Identity


class Bucket:
    def __init__(self, rate: float, seconds: float, clock: Callable[[], float]) -> None:
        self.rate = rate
        self.capacity = max(1.0, rate * seconds)
        self.tokens = self.capacity
        self._clock = clock
        self._last = clock()

    def take(self, n: float) -> float | None:
        """0 when ``n`` tokens were taken; else the seconds until they would be
        there (None: more than the bucket ever holds)."""
        now = self._clock()
        self.tokens = min(self.capacity, self.tokens + (now - self._last) * self.rate)
        self._last = now
        if n > self.capacity:
            return None
        if n <= self.tokens:
            self.tokens -= n
            return 0.0
        return (n - self.tokens) / self.rate


class RateLimits:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        # (identity name, kind) -> (the identity as configured, its bucket)
        self._buckets: dict[tuple[str, str], tuple[Identity, Bucket]] = {}

    def check(self, identity: Identity, kind: str, n: int) -> None:
        """Take ``n`` of ``kind`` ("files" or "lookups") or raise RateLimited."""
        rate = identity.files_per_second if kind == "files" else identity.lookups_per_second
        if rate is None or n <= 0:
            return
        key = (identity.name, kind)
        held = self._buckets.get(key)
        if held is None or held[0] != identity:  # new, or changed by a reload
            held = (identity, Bucket(rate, identity.burst, self._clock))
            self._buckets[key] = held
        wait = held[1].take(n)
        if wait == 0.0:
            return
        what = "files" if kind == "files" else "Lookup hashes"
        if wait is None:
            raise RateLimited(f"{n} {what} in one request is more than identity "
                              f"{identity.name!r} may send at once ({held[1].capacity:g}); "
                              "split the request", None)
        raise RateLimited(f"identity {identity.name!r} is over its rate of {rate:g} {what} per "
                          f"second; retry in {wait:.3f} s", wait)
