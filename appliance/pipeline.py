"""The work on one batch of files: digests, decode, perceptual hashes, match.

``hash_item`` is thread-safe and is run for many items at once on a thread
pool (hashlib, Pillow's decoders and the numba PDQ code all release the GIL).
``match`` then looks up all values of a batch per signal in one call, so the
index sees batches, not single queries. One bad item gets its own error and
never fails its batch.
"""

from __future__ import annotations

import logging
import os
import time
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Executor
from contextlib import contextmanager
from dataclasses import dataclass, field, replace

import numpy as np
from numpy.typing import NDArray

from appliance import signals as sig
from appliance.admission import DecodeBudget
from appliance.config import Config
from appliance.decode import Bounds, Cost, Layout, Needs, estimate, probe
from appliance.errors import ItemCode, ItemFault
from appliance.hashers.digests import digest_bytes
from appliance.index.snapshot import Snapshot, match_radius
from appliance.metrics import Metrics
from appliance.pixels import PixelJob
from appliance.results import HashValue, Hit, Item, ItemError, ItemResult, suppress_allowed
from appliance.sandbox import Decoders, InlineDecoders, ProcessDecoders

log = logging.getLogger("appliance.pipeline")


def _best_per_entry(hits: Sequence[Hit]) -> list[Hit]:
    """One hit per (signal, list, entry): the closest, the stored orientation on ties.

    With dihedral or EXIF variants a symmetric picture can match one entry
    several ways; the caller wants to know the entry matched, and how closely.
    """
    best: dict[tuple[str, str, str], Hit] = {}
    for hit in sorted(hits, key=lambda h: (h.distance, h.variant != "")):
        best.setdefault((hit.signal, hit.list, hit.entry_id), hit)
    return sorted(best.values(), key=lambda h: (h.distance, h.signal, h.list, h.entry_id))


@dataclass
class Deferred:
    """Work that an accelerator takes over from ``hash_item`` for one item.

    ``hash_item`` leaves placeholders in the result, in the place the CPU path
    would put the hashes, so the order of hashes is the same on every backend:
    digests of files under ``digest_cpu_min`` bytes (``digest_names`` says
    which; the value is b"" until filled) and PDQ of each decoded image
    (``images``, in order; each has 1 or 8 placeholders of quality
    ``pixels.PENDING_QUALITY``, 8 with dihedral on). ``held`` is the decode
    budget the images hold until the device has hashed them.
    """

    digest_cpu_min: int
    digest_names: list[str] = field(default_factory=list)
    images: list[NDArray[np.uint8]] = field(default_factory=list)
    held: int = 0


# (signal, values, qualities, extra radius) -> per value its hits (Snapshot.match).
Lookup = Callable[[str, list[bytes], list[int | None], int], list[list[Hit]]]


def make_decoders(config: Config, metrics: Metrics | None = None) -> Decoders:
    """Where pixels are decoded, as ``limits.decode_isolation`` says; one worker
    process per worker thread (the threads are what run decodes)."""
    if config.limits.decode_isolation == "inline":
        return InlineDecoders()
    return ProcessDecoders(config.server.workers or os.cpu_count() or 1, metrics=metrics)


class Pipeline:
    # The GPU pipeline leaves PDQ to its device: decoders hand back the pixels.
    export_pdq = False

    def __init__(
        self, config: Config, metrics: Metrics | None = None, decoders: Decoders | None = None
    ) -> None:
        lim = config.limits
        self.limits = lim
        self.hashing = config.hashing
        self.pdq_dihedral = config.matching.pdq_dihedral
        self.metrics = metrics
        self.bounds = Bounds(lim.max_pixels, lim.max_scans, lim.max_segments, lim.max_frames)
        self.decoders = decoders or make_decoders(config, metrics)
        self.budget = DecodeBudget(lim.max_decode_bytes_in_flight, metrics)

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

    def hash_item(self, item: Item, deferred: Deferred | None = None) -> ItemResult:
        """All requested hashes of one item; never raises for a bad item.

        With ``deferred``, small-file digests and PDQ are left as placeholders
        for a device stage to fill (see ``Deferred``).
        """
        try:
            return self._hash_item(item, deferred)
        except Exception as exc:  # a bug or MemoryError: this item fails, not its batch
            log.exception("item %r failed unexpectedly", item.id)
            return ItemResult(
                id=item.id, size=len(item.content),
                error=ItemError(ItemCode.INTERNAL, f"internal error: {type(exc).__name__}"),
            )

    def _hash_item(self, item: Item, deferred: Deferred | None) -> ItemResult:
        size = len(item.content)
        result = ItemResult(id=item.id, size=size)
        try:
            wanted = sig.select_computable(item.signals)
            if size == 0:
                raise ItemFault(ItemCode.EMPTY, "the file is empty")
            limit = self.limits.max_stream_bytes if item.streamed else self.limits.max_file_bytes
            if size > limit:
                raise ItemFault(ItemCode.TOO_LARGE, f"{size} bytes exceeds the limit of {limit}")
        except ItemFault as fault:
            result.error = ItemError.of(fault)
            return result
        digest_names = [n for n in wanted if sig.SIGNALS[n].source == "bytes"]
        if digest_names and deferred is not None and item.digests is None \
                and size < deferred.digest_cpu_min:
            deferred.digest_names = digest_names
            result.hashes.extend(HashValue(n, b"") for n in digest_names)
        elif digest_names:
            with self._stage("digest"):
                digests = item.digests or digest_bytes(item.content, digest_names)
            result.hashes.extend(HashValue(n, digests[n]) for n in digest_names)
        pixel_names = [n for n in wanted if sig.SIGNALS[n].source == "pixels"]
        if pixel_names:
            self._hash_pixels(item, pixel_names, result, deferred)
        if not result.hashes and result.skipped:
            # Nothing that was asked for could be made: the item as a whole failed.
            result.error = next(iter(result.skipped.values()))
        return result

    def layout(self, item: Item) -> Layout:
        """The file's structure (probed now unless the server did), or ItemFault."""
        if isinstance(item.layout, ItemFault):
            raise item.layout
        return item.layout or probe(item.content, self.bounds, self.limits.image_formats)

    def cost(self, layout: Layout, names: Sequence[str], export: bool) -> Cost:
        """Estimated peak memory of decoding and hashing; ItemFault over the per-file limit."""
        needs = Needs(
            pdq="pdq" in names, family=any(n != "pdq" for n in names),
            exif=self.hashing.exif_orientation and not self.pdq_dihedral,
            export_rgb=export and "pdq" in names,
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
        self, item: Item, names: Sequence[str], result: ItemResult, deferred: Deferred | None
    ) -> None:
        """Probe, estimate, admit, then decode and hash in a decoder (see sandbox)."""
        lim = self.limits
        export = deferred is not None
        try:
            layout = self.layout(item)
            cost = self.cost(layout, names, export)
            fast = self.hashing.fast_min_side if self.hashing.pdq_mode == "fast" else None
            job = PixelJob(tuple(names), self.pdq_dihedral, self.hashing.exif_orientation,
                           fast, export_pdq=export)
            wait = time.monotonic() + lim.max_decode_wait_seconds
            if item.deadline is not None:
                wait = min(wait, item.deadline)
            with self.budget.hold(cost.memory, wait, keep=cost.exported) as kept:
                out = self.decoders.run(item.content, layout, job, cost,
                                        lim.max_decode_seconds, item.deadline)
                if deferred is not None and out.images:
                    # The pixels now wait in this process for the device: their
                    # share of the budget stays held until it has hashed them.
                    deferred.held += kept.take()
        except ItemFault as fault:
            for name in names:
                result.skipped[name] = ItemError.of(fault)
            return
        if self.metrics is not None:
            self.metrics.stage_seconds.labels("decode").observe(out.decode_seconds)
            self.metrics.stage_seconds.labels("perceptual").observe(out.hash_seconds)
            if out.peak_bytes:
                self.metrics.decode_peak.observe(out.peak_bytes)
        result.hashes.extend(out.hashes)
        if deferred is not None:
            deferred.images.extend(out.images)

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
        """Process a batch synchronously: hashes on ``pool``, then one match pass
        (of the items that ask for matching, when there is a snapshot)."""
        results = list(pool.map(self.hash_item, items))
        if snapshot is not None:
            wanted = matchable_items(items, results)
            self.match([r for _, r in wanted], snapshot, bands=[i.probe_band for i, _ in wanted])
        self.record(results)
        return results


def matchable(items: Sequence[Item], results: Sequence[ItemResult]) -> list[ItemResult]:
    """The results to match: of items that ask for it and were processed."""
    return [r for _, r in matchable_items(items, results)]


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
    ``near``. Each result keeps one hit per entry (``_best_per_entry``), and an
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
                hit = replace(hit, variant=value.variant)
                (result.near if hit.distance > radius else result.matches).append(hit)
    for result in results:
        result.matches = suppress_allowed(_best_per_entry(result.matches))
        result.near = _best_per_entry(result.near)
