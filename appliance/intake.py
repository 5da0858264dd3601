"""From a request's files to their lanes, and a stream's chunks to one file.

Two lanes, each a ``Batcher`` of its own: files whose decode is estimated to
need more than ``limits.heavy_decode_bytes`` (large pictures, and every
hostile file that is allowed at all) take the heavy lane, with its own queue
and a few workers; everything else the light lane. A batch answers when all
its files are done, so without lanes one 100 MP picture would hold a batch
of small ones, and a handful of them every batch slot: with lanes, small
files never wait behind large ones. The lane is picked from the file's
structure (``decode.probe``), read in a thread before the file is queued;
the probe travels with the file, so it is not read twice.

A MatchStream holds bytes while the client uploads, so a stream may go
quiet for at most ``limits.stream_idle_seconds`` and last at most
``limits.stream_max_seconds``, and its bytes count against the same bound as
queued files (``batching.max_inflight_bytes``) from the first chunk on.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, replace
from typing import Any

from appliance import signals as sig
from appliance.admission import Reservation
from appliance.batching import Batcher, Clock
from appliance.config import LimitsConfig
from appliance.errors import (
    DeadlineExceeded,
    InvalidRequest,
    ItemCode,
    ItemFault,
    Overloaded,
    TooLarge,
)
from appliance.hashers.digests import Digester
from appliance.index.snapshot import Snapshot
from appliance.media import wanted_signals
from appliance.metrics import Metrics
from appliance.pipeline import Pipeline
from appliance.results import Item, ItemError, ItemResult

# Stream chunks at least this large are digested in a thread.
_DIGEST_OFF_LOOP = 64 << 10
# Signal names one file may ask for (there are nine signals).
MAX_SIGNALS = 32


class StreamTimeout(DeadlineExceeded):
    """A stream went quiet, or lasted, longer than the limits allow."""


@dataclass(frozen=True)
class Work:
    """One file in a lane's queue, with the snapshot its request matches
    against (taken once per request, so a reload never splits a request)."""

    item: Item
    snapshot: Snapshot | None
    # The request's deadline on the batcher's clock, if it has one.
    deadline: float | None = None


def run_work(
    pipeline: Pipeline, pool: Executor, work: Sequence[Work], clock: Clock
) -> list[ItemResult]:
    """One batch from a lane through the pipeline: usually one snapshot, two
    only while a reload swaps them (each part runs on its own).

    Files whose request's deadline has already passed are not processed: their
    caller has been answered DEADLINE_EXCEEDED by gRPC, and under overload
    that work would only delay the requests that can still be answered in time.
    """
    results: list[ItemResult | None] = [None] * len(work)
    groups: dict[int, list[int]] = {}
    now = clock.now()
    for i, w in enumerate(work):
        if w.deadline is not None and w.deadline <= now:
            results[i] = ItemResult(id=w.item.id, size=len(w.item.content), error=ItemError(
                ItemCode.DEADLINE_EXCEEDED, "the request's deadline passed before this file ran"))
            continue
        groups.setdefault(id(w.snapshot), []).append(i)
    for positions in groups.values():
        snapshot = work[positions[0]].snapshot
        done = pipeline.run([work[i].item for i in positions], snapshot, pool)
        for i, result in zip(positions, done, strict=True):
            results[i] = result
    return [r for r in results if r is not None]


def check_item(item_id: str, signals: Sequence[str], max_id_chars: int) -> None:
    """Ids reach logs and the audit log, signal lists a loop: both are bounded."""
    if len(item_id) > max_id_chars:
        raise InvalidRequest(f"a file id of {len(item_id)} characters; at most "
                             f"limits.max_id_chars={max_id_chars}")
    if not item_id.isprintable():
        raise InvalidRequest("a file id with control characters")
    if len(signals) > MAX_SIGNALS:
        raise InvalidRequest(f"{len(signals)} signal names for one file; at most {MAX_SIGNALS}")


def size_of(work: Work) -> int:
    return len(work.item.content)


def route(pipeline: Pipeline, items: Sequence[Item]) -> tuple[list[Item], list[bool]]:
    """Each item with its probe attached (a layout, or the fault that refuses
    it), and whether it takes the heavy lane. Runs in a thread."""
    routed, heavy = [], []
    for item in items:
        try:
            wanted = wanted_signals(item)
        except ItemFault:
            wanted = ()  # the pipeline reports the bad signal name
        names = [n for n in wanted if sig.SIGNALS[n].media == "image"]
        # A video's decode takes seconds: videos never hold up pictures.
        is_heavy = any(sig.SIGNALS[n].media == "video" for n in wanted)
        if names and 0 < len(item.content) <= pipeline.limits.max_stream_bytes:
            try:
                layout = pipeline.layout(item)
                cost = pipeline.cost(layout, names)
                item = replace(item, layout=layout)
                is_heavy = is_heavy or cost.picture_bytes > pipeline.limits.heavy_decode_bytes
            except ItemFault as fault:
                item = replace(item, layout=fault)
        routed.append(item)
        heavy.append(is_heavy)
    return routed, heavy


class Lanes:
    """The light and the heavy lane, and the routing of a request's files between them."""

    def __init__(
        self, light: Batcher[Work, ItemResult], heavy: Batcher[Work, ItemResult],
        pipeline: Pipeline, intake_pool: Executor, clock: Clock,
    ) -> None:
        self.light, self.heavy = light, heavy
        self._pipeline = pipeline
        self._pool = intake_pool
        self._clock = clock

    async def run(
        self, items: Sequence[Item], snapshot: Snapshot | None, match: bool,
        remaining: float | None, reservation: Reservation | None = None,
    ) -> list[ItemResult]:
        """The results of ``items`` in order; ``remaining``: seconds to the deadline."""
        deadline = None if remaining is None else time.monotonic() + remaining
        queue_deadline = None if remaining is None else self._clock.now() + remaining
        items = [replace(i, match=match, deadline=deadline) for i in items]
        loop = asyncio.get_running_loop()
        items, heavy = await loop.run_in_executor(self._pool, route, self._pipeline, items)
        parts = [(lane, [k for k, h in enumerate(heavy) if h == is_heavy])
                 for lane, is_heavy in ((self.light, False), (self.heavy, True))]
        parts = [(lane, ks) for lane, ks in parts if ks]
        tasks = [
            asyncio.ensure_future(lane.submit(
                [Work(items[k], snapshot, queue_deadline) for k in ks], queue_deadline,
                reservation if len(parts) == 1 else None,
            ))
            for lane, ks in parts
        ]
        try:
            done = await asyncio.gather(*tasks)
        except BaseException:
            for task in tasks:  # one part failed: the other's files are no use now
                task.cancel()
            raise
        results: list[ItemResult | None] = [None] * len(items)
        for (_, ks), part in zip(parts, done, strict=True):
            for k, result in zip(ks, part, strict=True):
                results[k] = result
        return [r for r in results if r is not None]

    async def close(self, drain: bool) -> None:
        await asyncio.gather(self.light.close(drain), self.heavy.close(drain))


async def receive_stream(
    request_iterator: Any, limits: LimitsConfig, reservation: Reservation, pool: Executor,
    metrics: Metrics | None = None,
) -> Item:
    """A MatchStream's chunks as one Item, digested as they arrive.

    The bytes are taken from ``reservation`` chunk by chunk (Overloaded when
    the server holds all it may); the caller releases what the batcher did
    not adopt. Raises StreamTimeout, Overloaded, InvalidRequest.
    """
    loop = asyncio.get_running_loop()
    end = loop.time() + limits.stream_max_seconds
    iterator = request_iterator.__aiter__()
    first = None
    digester = Digester()
    chunks: list[bytes] = []
    while True:
        left = end - loop.time()
        if left <= 0:
            raise StreamTimeout(f"the stream lasted longer than limits.stream_max_seconds="
                                f"{limits.stream_max_seconds:g}")
        try:
            chunk = await asyncio.wait_for(iterator.__anext__(),
                                           min(limits.stream_idle_seconds, left))
        except StopAsyncIteration:
            break
        except TimeoutError as exc:
            raise StreamTimeout(f"the stream sent nothing for limits.stream_idle_seconds="
                                f"{limits.stream_idle_seconds:g} (or ran out of "
                                f"limits.stream_max_seconds)") from exc
        if first is None:
            first = chunk
            check_item(chunk.id, chunk.signals, limits.max_id_chars)
        data = chunk.data
        if digester.nbytes + len(data) > limits.max_stream_bytes:
            chunks.clear()  # nothing of a refused upload is kept
            raise TooLarge(f"the stream exceeds max_stream_bytes={limits.max_stream_bytes}")
        if not reservation.take(len(data)):
            if metrics is not None:
                metrics.shed.labels("inflight_bytes").inc()
            chunks.clear()
            raise Overloaded("the server holds all the file bytes it may "
                             "(batching.max_inflight_bytes); try again later")
        # Digests advance as the chunks arrive: no second pass over the bytes.
        if len(data) >= _DIGEST_OFF_LOOP:
            await loop.run_in_executor(pool, digester.update, data)
        else:
            digester.update(data)
        chunks.append(data)
    if first is None:
        raise InvalidRequest("the stream has no chunks")
    content = await loop.run_in_executor(pool, b"".join, chunks)
    chunks.clear()
    return Item(first.id, content, tuple(first.signals), digests=digester.digests(),
                streamed=True)


