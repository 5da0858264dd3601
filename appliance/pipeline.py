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
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Executor
from contextlib import contextmanager
from dataclasses import dataclass, field, replace

import numpy as np
from numpy.typing import NDArray

from appliance import signals as sig
from appliance.config import Config
from appliance.decode import Decoded, decode
from appliance.errors import ItemCode, ItemFault
from appliance.hashers.digests import digest_bytes
from appliance.hashers.pdq import DIHEDRAL_VARIANTS
from appliance.hashers.registry import GROUPS, GroupHasher, PixelOptions, hash_pixels
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
    # False for Hash requests: hashes only, no match against the lists.
    match: bool = True


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


PENDING_QUALITY = -1
"""The quality of a PDQ placeholder that a device stage fills in."""


@dataclass
class Deferred:
    """Work that an accelerator takes over from ``hash_item`` for one item.

    ``hash_item`` leaves placeholders in the result, in the place the CPU path
    would put the hashes, so the order of hashes is the same on every backend:
    digests of files under ``digest_cpu_min`` bytes (``digest_names`` says
    which; the value is b"" until filled) and PDQ of each decoded image
    (``images``, in order; each has 1 or 8 placeholders of quality
    ``PENDING_QUALITY``, 8 with dihedral on).
    """

    digest_cpu_min: int
    digest_names: list[str] = field(default_factory=list)
    images: list[NDArray[np.uint8]] = field(default_factory=list)

    def pdq_group(
        self, decoded: Decoded, names: Sequence[str], options: PixelOptions
    ) -> list[HashValue]:
        """Stands in for the PDQ group of ``hash_pixels``: keeps the pixels for the device."""
        self.images.append(decoded.rgb())
        variants = DIHEDRAL_VARIANTS if options.pdq_dihedral else ("original",)
        return [
            HashValue("pdq", b"", PENDING_QUALITY, "" if v == "original" else v)
            for v in variants
        ]


Lookup = Callable[[str, list[bytes], list[int | None]], list[list[Hit]]]


class Pipeline:
    def __init__(self, config: Config, metrics: Metrics | None = None) -> None:
        self.limits = config.limits
        self.hashing = config.hashing
        self.options = PixelOptions(pdq_dihedral=config.matching.pdq_dihedral)
        self.metrics = metrics

    def prepare_snapshot(self, snapshot: Snapshot) -> None:
        """Called with each newly loaded snapshot before it is swapped in (the
        GPU pipeline uploads it); the CPU pipeline matches on the host as is."""

    def lookup(
        self, snapshot: Snapshot, signal: str, values: list[bytes], qualities: list[int | None]
    ) -> list[list[Hit]]:
        """Hits of precomputed hashes (the Lookup RPC), as ``Snapshot.match``."""
        return snapshot.match(signal, values, qualities)

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
            groups = GROUPS if deferred is None else {**GROUPS, "pdq": deferred.pdq_group}
            self._hash_pixels(item, pixel_names, result, groups)
        if not result.hashes and result.skipped:
            # Nothing that was asked for could be made: the item as a whole failed.
            result.error = next(iter(result.skipped.values()))
        return result

    def _hash_pixels(
        self,
        item: Item,
        names: Sequence[str],
        result: ItemResult,
        groups: Mapping[str, GroupHasher],
    ) -> None:
        fast = self.hashing.fast_min_side if self.hashing.pdq_mode == "fast" else None
        try:
            with self._stage("decode"):
                decoded = decode(item.content, self.limits.max_pixels, fast)
            # The RGB conversion happens in the hashers that need it (PDQ), so a
            # request for the imagehash family alone never pays for it.
            with self._stage("perceptual"):
                hashes = hash_pixels(decoded, names, self.options, groups)
                hashes += self._exif_variant(decoded, names, groups)
        except ItemFault as fault:
            for name in names:
                result.skipped[name] = ItemError.of(fault)
            return
        result.hashes.extend(hashes)

    def _exif_variant(
        self, decoded: Decoded, names: Sequence[str], groups: Mapping[str, GroupHasher]
    ) -> list[HashValue]:
        """Hashes of the EXIF-corrected orientation, when asked for and it differs.

        With dihedral matching on they add nothing: the EXIF orientations are
        all among the 8 rotations/flips already queried.
        """
        if not self.hashing.exif_orientation or self.options.pdq_dihedral:
            return []
        turned = decoded.exif_transposed()
        if turned is None:
            return []
        hashes = hash_pixels(turned, names, self.options, groups)
        return [replace(h, variant="exif") for h in hashes]

    def match(
        self, results: Sequence[ItemResult], snapshot: Snapshot, lookup: Lookup | None = None
    ) -> None:
        """Fill ``matches`` of every result, one index query per signal
        (``lookup``: the snapshot's own ``match`` unless a device index stands in)."""
        find = lookup or snapshot.match
        with self._stage("match"):
            queries: dict[str, list[tuple[ItemResult, HashValue]]] = defaultdict(list)
            for result in results:
                for value in result.hashes:
                    queries[value.signal].append((result, value))
            for signal, pairs in queries.items():
                hits = find(signal, [v.value for _, v in pairs], [v.quality for _, v in pairs])
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
        """Process a batch synchronously: hashes on ``pool``, then one match pass
        (of the items that ask for matching, when there is a snapshot)."""
        results = list(pool.map(self.hash_item, items))
        if snapshot is not None:
            self.match(matchable(items, results), snapshot)
        self.record(results)
        return results


def matchable(items: Sequence[Item], results: Sequence[ItemResult]) -> list[ItemResult]:
    """The results to match: of items that ask for it and were processed."""
    return [r for i, r in zip(items, results, strict=True) if i.match and r.error is None]
