"""The work on one batch of files: digests, decode, perceptual hashes, match.

``hash_item`` is thread-safe and is run for many items at once on a thread
pool (hashlib, Pillow's decoders and the numba PDQ code all release the GIL).
Signals are computed by groups (``SignalType.group``): the digests in one pass
over the bytes, each image group from one decode. A backend with a device
(appliance.gpu) passes the device hashers of some groups: ``hash_item`` then
leaves those groups' work in the item's ``Work`` (the file's bytes, or the
decoded pixels), and ``run`` hashes each such group once for the whole batch
(``_on_device``) before it puts every item's hashes together in the same
order as the CPU path. ``match`` then looks up all values of a batch per
signal in one call, so the index sees batches, not single queries. One bad
item gets its own error and never fails its batch.
"""

from __future__ import annotations

import logging
import os
import time
from collections import defaultdict
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Executor
from contextlib import contextmanager
from dataclasses import replace
from functools import partial
from typing import Any, TypeVar

from appliance import signals as sig
from appliance.admission import DecodeBudget
from appliance.config import Config
from appliance.decode import Bounds, Cost, Layout, Needs, estimate, probe
from appliance.errors import ItemCode, ItemFault
from appliance.hashers.digests import digest_bytes
from appliance.hashers.video import Hashing
from appliance.index.snapshot import Snapshot, match_radius
from appliance.media import hash_video, wanted_signals
from appliance.metrics import Metrics
from appliance.pixels import PixelJob
from appliance.results import HashValue, Hit, Item, ItemError, ItemResult, suppress_allowed
from appliance.sandbox import Decoders, InlineDecoders, ProcessDecoders
from appliance.work import DeviceHasher, Work, device_inputs, distribute

log = logging.getLogger("appliance.pipeline")


def best_per_entry(hits: Sequence[Hit]) -> list[Hit]:
    """One hit per (signal, list, entry): the closest, the stored orientation on ties.

    With dihedral or EXIF variants a symmetric picture can match one entry
    several ways; the caller wants to know the entry matched, and how closely.
    """
    best: dict[tuple[str, str, str], Hit] = {}
    for hit in sorted(hits, key=lambda h: (h.distance, h.variant != "")):
        best.setdefault((hit.signal, hit.list, hit.entry_id), hit)
    return sorted(best.values(), key=lambda h: (h.distance, h.signal, h.list, h.entry_id))


T = TypeVar("T")


# (signal, values, qualities, extra radius) -> per value its hits (Snapshot.match).
Lookup = Callable[[str, list[bytes], list[int | None], int], list[list[Hit]]]


def make_decoders(config: Config, metrics: Metrics | None = None) -> Decoders:
    """Where pixels are decoded, as ``limits.decode_isolation`` says; one worker
    process per worker thread (the threads are what run decodes)."""
    if config.limits.decode_isolation == "inline":
        return InlineDecoders()
    return ProcessDecoders(config.server.workers or os.cpu_count() or 1, metrics=metrics)


class Pipeline:
    """The pipeline of every backend. ``hashers``: group -> its device hasher
    (none: all on the CPU), run on ``device`` (see ``_on_device``)."""

    def __init__(
        self, config: Config, metrics: Metrics | None = None, decoders: Decoders | None = None,
        hashers: Mapping[str, DeviceHasher] | None = None, device: Any = None,
    ) -> None:
        lim = config.limits
        self.limits = lim
        self.hashing = config.hashing
        self.pdq_dihedral = config.matching.pdq_dihedral
        self.metrics = metrics
        self.bounds = Bounds(lim.max_pixels, lim.max_scans, lim.max_segments, lim.max_frames)
        self.decoders = decoders or make_decoders(config, metrics)
        self.budget = DecodeBudget(lim.max_decode_bytes_in_flight, metrics)
        self.device = device
        self.hashers = dict(hashers or {})
        # Files of at least this many bytes are digested on the CPU threads even
        # where a device hasher exists (a device thread walks a file's blocks in
        # sequence, so a large file is faster on a CPU core).
        self.digest_cpu_min = config.gpu.digest_cpu_min_bytes

    def start(self) -> None:
        """Start the decode workers now (the server, before it says ready)."""
        self.decoders.start()

    def warm_up(self) -> None:
        """Run this backend's kernels once before the server says ready. Nothing
        here: the CPU kernels are compiled by ``appliance.warmup``; the GPU
        pipeline runs and checks its device kernels."""

    def close(self) -> None:
        """Stop the decode workers; a decode still running gets DECODER_FAILED."""
        self.decoders.close()

    def prepare_snapshot(self, snapshot: Snapshot) -> None:
        """Called with each newly loaded snapshot before it is swapped in (the
        GPU pipeline uploads it); the CPU pipeline matches on the host as is."""

    def video_sink(self, names: tuple[str, ...]) -> Hashing | None:
        """Where a video's frames are hashed: None, where it is decoded (the CPU
        pipeline); the GPU pipeline's hashes them on its device."""
        return None

    def lookup(
        self, snapshot: Snapshot, signal: str, values: list[bytes], qualities: list[int | None],
        extra: int = 0,
    ) -> list[list[Hit]]:
        """Hits of precomputed hashes (the Lookup RPC), as ``Snapshot.match``."""
        return snapshot.match(signal, values, qualities, extra=extra)

    @contextmanager
    def _stage(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            if self.metrics is not None:
                self.metrics.stage_seconds.labels(name).observe(time.perf_counter() - start)

    def hash_item(self, item: Item, work: Work | None = None) -> ItemResult:
        """All requested hashes of one item; never raises for a bad item.

        With ``work``, the groups that have a device hasher are left in it for
        ``run``'s device batches, and the result's hashes are made by
        ``work.finish`` once they are done; without, everything is done here.
        """
        try:
            if work is None:
                own = Work()
                result = self._hash_item(item, own, defer=False)
                own.finish(result)
                return result
            return self._hash_item(item, work, defer=True)
        except Exception as exc:  # a bug or MemoryError: this item fails, not its batch
            log.exception("item %r failed unexpectedly", item.id)
            return _internal(item, exc)

    def _hash_item(self, item: Item, work: Work, defer: bool) -> ItemResult:
        size = len(item.content)
        result = ItemResult(id=item.id, size=size)
        try:
            wanted = wanted_signals(item)
            if size == 0:
                raise ItemFault(ItemCode.EMPTY, "the file is empty")
            limit = self.limits.max_stream_bytes if item.streamed else self.limits.max_file_bytes
            if size > limit:
                raise ItemFault(ItemCode.TOO_LARGE, f"{size} bytes exceeds the limit of {limit}")
        except ItemFault as fault:
            result.error = ItemError.of(fault)
            return result
        work.digest_names = [n for n in wanted if sig.SIGNALS[n].media == "bytes"]
        now: list[str] = []
        for name in work.digest_names:
            group = sig.SIGNALS[name].group
            if defer and group in self.hashers and item.digests is None \
                    and size < self.digest_cpu_min:
                work.left.setdefault(group, []).append(name)
            else:
                now.append(name)
        if now:
            with self._stage("digest"):
                digests = item.digests or digest_bytes(item.content, now)
            work.values.update((n, digests[n]) for n in now)
        pixel_names = [n for n in wanted if sig.SIGNALS[n].media == "image"]
        if pixel_names:
            self._hash_pixels(item, pixel_names, result, work, defer)
        video_names = [n for n in wanted if sig.SIGNALS[n].media == "video"]
        if video_names:
            hash_video(self, item, video_names, result, work)
        return result

    def wait_until(self, item: Item) -> float:
        """Until when (time.monotonic) a decode of ``item`` may wait for room in the budget."""
        wait = time.monotonic() + self.limits.max_decode_wait_seconds
        return wait if item.deadline is None else min(wait, item.deadline)

    def layout(self, item: Item) -> Layout:
        """The file's structure (probed now unless the server did), or ItemFault."""
        if isinstance(item.layout, ItemFault):
            raise item.layout
        return item.layout or probe(item.content, self.bounds, self.limits.image_formats)

    def _exports(self, names: Sequence[str]) -> tuple[str, ...]:
        """The image signals of ``names`` that a device hasher takes from the pixels."""
        return tuple(n for n in names if sig.SIGNALS[n].group in self.hashers)

    def cost(self, layout: Layout, names: Sequence[str], export: bool = True) -> Cost:
        """Estimated peak memory of decoding and hashing (``export``: the device
        groups' pixels go to the device); ItemFault over the per-file limit."""
        needs = Needs.of(
            {sig.SIGNALS[n].group for n in names},
            {sig.SIGNALS[n].group for n in self._exports(names)} if export else (),
            exif=self.hashing.exif_orientation and not self.pdq_dihedral,
        )
        cost = estimate(layout, needs)
        memory = cost.memory
        if memory > self.limits.max_decode_bytes:
            raise ItemFault(
                ItemCode.DECOMPRESSION_BOMB,
                f"{layout.format} of {layout.width}x{layout.height} ({layout.mode}) needs about "
                f"{memory >> 20} MiB to decode and hash, over limits.max_decode_bytes="
                f"{self.limits.max_decode_bytes >> 20} MiB",
            )
        return cost

    def _hash_pixels(
        self, item: Item, names: Sequence[str], result: ItemResult, work: Work, defer: bool
    ) -> None:
        """Probe, estimate, admit, then decode and hash in a decoder (see sandbox)."""
        lim = self.limits
        export = self._exports(names) if defer else ()
        try:
            layout = self.layout(item)
            cost = self.cost(layout, names, bool(export))
            fast = self.hashing.fast_min_side if self.hashing.pdq_mode == "fast" else None
            job = PixelJob(tuple(names), self.pdq_dihedral, self.hashing.exif_orientation,
                           fast, export=export)
            with self.budget.hold(cost.memory, self.wait_until(item),
                                  keep=cost.exported) as kept:
                out = self.decoders.run(item.content, layout, job, cost,
                                        lim.max_decode_seconds, item.deadline)
                if export and out.images:
                    # The pixels now wait in this process for the device: their
                    # share of the budget stays held until it has hashed them.
                    work.held += kept.take()
        except ItemFault as fault:
            result.skip(names, fault)
            return
        if self.metrics is not None:
            self.metrics.stage_seconds.labels("decode").observe(out.decode_seconds)
            self.metrics.stage_seconds.labels("perceptual").observe(out.hash_seconds)
            if out.peak_bytes:
                self.metrics.decode_peak.observe(out.peak_bytes)
        work.pixel_names, work.pixel_hashes = tuple(names), list(out.hashes)
        work.exported, work.images = export, list(out.images)

    def _device_batches(self, items: Sequence[Item], works: Sequence[Work]) -> None:
        """Each device group once over all of the batch's inputs of it."""
        for group, hasher in self.hashers.items():
            todo = device_inputs(group, items, works)
            if not todo:
                continue
            asked = {n for _, wanted, _ in todo for n in wanted}
            names = [n for n in sig.SIGNALS if n in asked]
            inputs = [x for _, _, xs in todo for x in xs]
            dihedral = self.pdq_dihedral
            out = self._on_device(hasher.stage,
                                  partial(hasher.batch, self.device, inputs, names, dihedral),
                                  partial(hasher.cpu, inputs, names, dihedral))
            distribute(group, todo, out)

    def _on_device(self, stage: str, run: Callable[[], T], fallback: Callable[[], T]) -> T:
        """One group's batch on the device (the GPU pipeline adds the device's
        scope and its faults' fallback to ``fallback``, the CPU twin)."""
        with self._stage(stage):
            return run()

    def match(
        self, results: Sequence[ItemResult], snapshot: Snapshot, lookup: Lookup | None = None,
        bands: Sequence[int] | None = None,
    ) -> None:
        """Fill ``matches`` of every result, one index query per signal and band
        (``lookup``: the snapshot's own ``match`` unless a device index stands in).

        ``bands[k]`` (default 0): result k's hits up to that many bits beyond a
        Hamming threshold go to its ``near`` (the probe guard's), not its matches.
        """

        def own(signal: str, values: list[bytes], qualities: list[int | None],
                extra: int) -> list[list[Hit]]:
            return snapshot.match(signal, values, qualities, extra=extra)

        with self._stage("match"):
            match_results(results, snapshot, lookup or own, bands)

    def _match_batch(self, results: Sequence[ItemResult], snapshot: Snapshot,
                     bands: Sequence[int]) -> None:
        """A batch's match (the GPU pipeline's is on its device index)."""
        self.match(results, snapshot, bands=bands)

    def record(self, results: Sequence[ItemResult]) -> None:
        """Count a finished batch in the metrics."""
        m = self.metrics
        if m is None:
            return
        m.batch_size.observe(len(results))
        for result in results:
            m.bytes.inc(result.size)
            if result.error is not None:
                m.files.labels("error").inc()
                m.errors.labels(result.error.code).inc()
                continue
            for reason in result.skipped.values():
                m.errors.labels(reason.code).inc()
            m.files.labels("matched" if result.matched else "ok").inc()
            m.count_hits(result.matches)

    def run(
        self, items: Sequence[Item], snapshot: Snapshot | None, pool: Executor
    ) -> list[ItemResult]:
        """Process a batch synchronously: hashes on ``pool``, then each device
        group's batch, then one match pass (of the items that ask for
        matching, when there is a snapshot)."""
        if self.hashers:
            results = self._hash_batch(items, pool)
        else:  # everything on the CPU: each item is finished on the pool
            results = list(pool.map(self.hash_item, items))
        if snapshot is not None:
            wanted = matchable_items(items, results)
            self._match_batch([r for _, r in wanted], snapshot, [i.probe_band for i, _ in wanted])
        self.record(results)
        return results

    def _hash_batch(self, items: Sequence[Item], pool: Executor) -> list[ItemResult]:
        """The hashes of a batch whose device groups run once over all of it."""
        works = [Work() for _ in items]
        results = list(pool.map(self.hash_item, items, works))
        try:
            self._device_batches(items, works)
        finally:
            # The decoded pixels are hashed (or dropped): their budget is free.
            self.budget.release(sum(w.held for w in works))
        for k, (item, work) in enumerate(zip(items, works, strict=True)):
            try:
                work.finish(results[k])
            except Exception as exc:  # a bug: this item fails, not its batch
                log.exception("item %r failed unexpectedly", item.id)
                results[k] = _internal(item, exc)
        return results


def _internal(item: Item, exc: BaseException) -> ItemResult:
    return ItemResult(
        id=item.id, size=len(item.content),
        error=ItemError(ItemCode.INTERNAL, f"internal error: {type(exc).__name__}"),
    )


def matchable_items(items: Sequence[Item], results: Sequence[ItemResult]
                    ) -> list[tuple[Item, ItemResult]]:
    """(item, result) of the items that ask for matching and were processed."""
    return [(i, r) for i, r in zip(items, results, strict=True) if i.match and r.error is None]


def match_results(
    results: Sequence[ItemResult], snapshot: Snapshot, find: Lookup,
    bands: Sequence[int] | None = None,
) -> None:
    """Fill ``matches`` and ``near`` of every result from its hashes: the one
    match path of files (``Pipeline.match``) and of precomputed hashes (Lookup).

    One ``find`` query per signal and band; ``bands[k]`` (default 0): result
    k's hits up to that many bits beyond a Hamming threshold go to its
    ``near``. Each result keeps one hit per entry (``best_per_entry``), and an
    allow-list hit suppresses its block hits.
    """
    queries: dict[tuple[str, int], list[tuple[ItemResult, HashValue]]] = defaultdict(list)
    for k, result in enumerate(results):
        band = bands[k] if bands is not None else 0
        for value in result.hashes:
            queries[(value.signal, band)].append((result, value))
    for (signal, band), pairs in queries.items():
        hits = find(signal, [v.value for _, v in pairs], [v.quality for _, v in pairs], band)
        radius = match_radius(signal, snapshot.matching)
        for (result, value), found in zip(pairs, hits, strict=True):
            for hit in found:
                if hit.variant != value.variant:  # replace() is slow: a Lookup has 100k hits
                    hit = replace(hit, variant=value.variant)
                (result.near if hit.distance > radius else result.matches).append(hit)
    for result in results:
        # Most results have no hit or one (a Lookup's 100k hashes): nothing to choose.
        if len(result.matches) > 1:
            result.matches = suppress_allowed(best_per_entry(result.matches))
        if len(result.near) > 1:
            result.near = best_per_entry(result.near)
