"""The work on one batch of files: digests, decode, perceptual hashes, match.

``hash_item`` is thread-safe and is run for many items at once on a thread
pool (hashlib, Pillow's decoders and the numba PDQ code all release the GIL).
``match`` then looks up all values of a batch per signal in one call, so the
index sees batches, not single queries. One bad item gets its own error and
never fails its batch.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import Executor
from contextlib import contextmanager
from dataclasses import dataclass, field, replace

from appliance import signals as sig
from appliance.config import Config
from appliance.decode import Decoded, decode
from appliance.errors import ItemCode, ItemFault
from appliance.hashers.digests import digest_bytes
from appliance.hashers.registry import PixelOptions, hash_pixels
from appliance.index.snapshot import Hit, Snapshot
from appliance.metrics import Metrics
from appliance.signals import HashValue

log = logging.getLogger("appliance.pipeline")


@dataclass(frozen=True)
class Item:
    """One file to process. ``digests`` holds values already computed while
    the bytes streamed in (MatchStream), so they are not computed twice;
    ``streamed`` files are held to ``max_stream_bytes``, others to
    ``max_file_bytes``."""

    id: str
    content: bytes | memoryview
    signals: tuple[str, ...] = ()
    digests: Mapping[str, bytes] | None = None
    streamed: bool = False


@dataclass(frozen=True)
class ItemError:
    code: str
    message: str

    @classmethod
    def of(cls, fault: ItemFault) -> ItemError:
        return cls(fault.code, fault.message)


@dataclass
class ItemResult:
    id: str
    size: int
    hashes: list[HashValue] = field(default_factory=list)
    # Requested signals that could not be made, with why.
    skipped: dict[str, ItemError] = field(default_factory=dict)
    # Set when the item could not be processed at all.
    error: ItemError | None = None
    matches: list[Hit] = field(default_factory=list)

    @property
    def matched(self) -> bool:
        """True when a block list matched and no allow list vouched for the file."""
        return any(h.kind == "block" and not h.suppressed for h in self.matches)


def _best_per_entry(hits: Sequence[Hit]) -> list[Hit]:
    """One hit per (signal, list, entry): the closest, the stored orientation on ties.

    With dihedral or EXIF variants a symmetric picture can match one entry
    several ways; the caller wants to know the entry matched, and how closely.
    """
    best: dict[tuple[str, str, str], Hit] = {}
    for hit in sorted(hits, key=lambda h: (h.distance, h.variant != "")):
        best.setdefault((hit.signal, hit.list, hit.entry_id), hit)
    return sorted(best.values(), key=lambda h: (h.distance, h.signal, h.list, h.entry_id))


def suppress_allowed(hits: list[Hit]) -> list[Hit]:
    """An allow-list hit (e.g. NSRL: a known-benign file) marks the file's block
    hits suppressed: they are still reported, but the file is not matched."""
    if not any(h.kind == "allow" for h in hits):
        return hits
    return [replace(h, suppressed=True) if h.kind == "block" else h for h in hits]


class Pipeline:
    def __init__(self, config: Config, metrics: Metrics | None = None) -> None:
        self.limits = config.limits
        self.hashing = config.hashing
        self.options = PixelOptions(pdq_dihedral=config.matching.pdq_dihedral)
        self.metrics = metrics

    @contextmanager
    def _stage(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            if self.metrics is not None:
                self.metrics.stage_seconds.labels(name).observe(time.perf_counter() - start)

    def hash_item(self, item: Item) -> ItemResult:
        """All requested hashes of one item; never raises for a bad item."""
        try:
            return self._hash_item(item)
        except Exception as exc:  # a bug or MemoryError: this item fails, not its batch
            log.exception("item %r failed unexpectedly", item.id)
            return ItemResult(
                id=item.id, size=len(item.content),
                error=ItemError(ItemCode.INTERNAL, f"internal error: {type(exc).__name__}"),
            )

    def _hash_item(self, item: Item) -> ItemResult:
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
        if digest_names:
            with self._stage("digest"):
                digests = item.digests or digest_bytes(item.content, digest_names)
            result.hashes.extend(HashValue(n, digests[n]) for n in digest_names)
        pixel_names = [n for n in wanted if sig.SIGNALS[n].source == "pixels"]
        if pixel_names:
            self._hash_pixels(item, pixel_names, result)
        if not result.hashes and result.skipped:
            # Nothing that was asked for could be made: the item as a whole failed.
            result.error = next(iter(result.skipped.values()))
        return result

    def _hash_pixels(self, item: Item, names: Sequence[str], result: ItemResult) -> None:
        fast = self.hashing.fast_min_side if self.hashing.pdq_mode == "fast" else None
        try:
            with self._stage("decode"):
                decoded = decode(item.content, self.limits.max_pixels, fast)
            # The RGB conversion happens in the hashers that need it (PDQ), so a
            # request for the imagehash family alone never pays for it.
            with self._stage("perceptual"):
                hashes = hash_pixels(decoded, names, self.options)
                hashes += self._exif_variant(decoded, names)
        except ItemFault as fault:
            for name in names:
                result.skipped[name] = ItemError.of(fault)
            return
        result.hashes.extend(hashes)

    def _exif_variant(self, decoded: Decoded, names: Sequence[str]) -> list[HashValue]:
        """Hashes of the EXIF-corrected orientation, when asked for and it differs.

        With dihedral matching on they add nothing: the EXIF orientations are
        all among the 8 rotations/flips already queried.
        """
        if not self.hashing.exif_orientation or self.options.pdq_dihedral:
            return []
        turned = decoded.exif_transposed()
        if turned is None:
            return []
        return [replace(h, variant="exif") for h in hash_pixels(turned, names, self.options)]

    def match(self, results: Sequence[ItemResult], snapshot: Snapshot) -> None:
        """Fill ``matches`` of every result, one index query per signal."""
        with self._stage("match"):
            queries: dict[str, list[tuple[ItemResult, HashValue]]] = defaultdict(list)
            for result in results:
                for value in result.hashes:
                    queries[value.signal].append((result, value))
            for signal, pairs in queries.items():
                hits = snapshot.match(
                    signal, [v.value for _, v in pairs], [v.quality for _, v in pairs]
                )
                for (result, value), found in zip(pairs, hits, strict=True):
                    result.matches.extend(replace(h, variant=value.variant) for h in found)
            for result in results:
                result.matches = suppress_allowed(_best_per_entry(result.matches))

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
        """Process a batch synchronously: hashes on ``pool``, then one match pass."""
        results = list(pool.map(self.hash_item, items))
        if snapshot is not None:
            self.match(results, snapshot)
        self.record(results)
        return results
