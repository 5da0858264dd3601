"""The index snapshot: every loaded list, indexed per signal, matched in batches.

A snapshot never changes after it is built. A reload builds a new one aside
and swaps one reference, so a batch in flight finishes on the snapshot it
started with and never sees a half-loaded list.

Each list has its own index per signal (``ListIndex``), built once per list
version: a reload that changes one list rebuilds that list's indexes only, and
the others are shared with the previous snapshot. Queries go out in batches,
one search per list and signal. How a signal matches comes from the signal
registry (``SignalType.match``): ``INDEXES`` holds one index class per match
kind, and the per-signal settings (match radius, quality gate) come from the
signal types (``SignalType.threshold``, ``SignalType.quality_min``).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import replace
from functools import partial
from typing import Any, Literal, Protocol

import numpy as np
from numpy.typing import NDArray

from appliance.config import MatchingConfig
from appliance.index.euclidean import EuclideanIndex
from appliance.index.exact import ExactIndex
from appliance.index.hamming import Found
from appliance.index.mih import MultiIndexHamming
from appliance.index.video import FrameIndex, TmkIndex
from appliance.lists.model import HashList
from appliance.results import Hit
from appliance.signals import SIGNALS, MatchKind, SignalType
from appliance.signals import get as get_signal
from appliance.video.vpdq import VpdqRules


class Index(Protocol):
    """What every index of ``INDEXES`` is: built from ``(values (M, W) uint8,
    rows (M,) int64)`` (the entry row of each value, so that a hit needs no
    lookup in the list's columns, which a compiled snapshot does not even map),
    searched, and saved as plain arrays for a compiled snapshot."""

    def __len__(self) -> int: ...

    def search(self, queries: NDArray[np.uint8], radius: int) -> list[Found]:
        """(Q, W) uint8 -> per query (rows (k,) int64, distances (k,) int32)."""
        ...

    def to_arrays(self) -> dict[str, NDArray[Any]]:
        """The index as plain arrays, for a compiled snapshot (no copy)."""
        ...


class IndexType(Protocol):
    """An index class: its constructor builds, ``from_arrays`` maps back ``to_arrays``."""

    def __call__(self, values: NDArray[np.uint8], rows: NDArray[np.int64]) -> Index: ...

    def from_arrays(self, arrays: Mapping[str, NDArray[Any]]) -> Index: ...


# One index class per match kind of the signal registry. Each builds, searches
# and saves itself; the GPU backend's device searchers (appliance.gpu.index.
# SEARCHERS) sit beside it under the same keys.
INDEXES: dict[MatchKind, IndexType] = {
    "exact": ExactIndex,  # sorted keys, binary search
    "hamming": MultiIndexHamming,  # exact for every radius (it scans where probing would not pay)
    # PhotoDNA: hash lookup at radius 0, a block-sum tree then verification
    # above, brute force where that pays.
    "euclidean": EuclideanIndex,
    # Video: TMK's level-1 cosine over resident averages, then level 2 of the
    # candidates; vPDQ's frames in a MultiIndexHamming, counted per entry.
    "two_level": TmkIndex,
    "frames": FrameIndex,
}
VIDEO_KINDS: tuple[MatchKind, ...] = ("two_level", "frames")

ListKind = Literal["block", "allow"]

Finder = Callable[["ListIndex", str, NDArray[np.uint8], int], list[Found]]
VideoFinder = Callable[["ListIndex", str], Any]
"""(list, video signal) -> a device's search for that index (TmkIndex's
``candidates``, FrameIndex's frame search), or None: the host's."""
"""(list, signal, (Q, W) queries, radius) -> per query (rows, distances), as Index.search."""


class ListIndex:
    """One list with an index per signal. Built once per list version and
    shared by every snapshot that includes that version, so a reload rebuilds
    only the lists that changed. ``kind``: "block" lists report matches;
    "allow" lists (e.g. NSRL) suppress block matches of the same file."""

    def __init__(
        self,
        hash_list: HashList,
        kind: ListKind = "block",
        signals: Collection[str] | None = None,
        matchers: Mapping[str, Index] | None = None,
        counts: Mapping[str, int] | None = None,
    ) -> None:
        """Index ``hash_list`` (only ``signals``, when given), or adopt ``matchers``
        already built and their value ``counts`` (a compiled snapshot's)."""
        self.hash_list = hash_list
        self.kind: ListKind = kind
        if matchers is not None:
            self.matchers: dict[str, Index] = dict(matchers)
            self._counts = dict(counts or {})
            return
        wanted = set(SIGNALS) if not signals else {get_signal(n).name for n in signals}
        self.matchers = {
            signal: INDEXES[SIGNALS[signal].match](column.values, column.rows)
            for signal, column in hash_list.columns.items()
            if signal in wanted and len(column)
        }
        self._counts = {signal: hash_list.count(signal) for signal in self.matchers}

    @property
    def name(self) -> str:
        return self.hash_list.name

    def count(self, signal: str) -> int:
        """Values of ``signal`` indexed (0 when the signal is not indexed)."""
        return self._counts.get(signal, 0)


class Snapshot:
    """Immutable: all loaded lists with their indexes. A reload builds a new Snapshot and
    swaps a reference; requests in flight finish on the one they started with."""

    def __init__(
        self, lists: Sequence[HashList | ListIndex], matching: MatchingConfig
    ) -> None:
        indexes = [x if isinstance(x, ListIndex) else ListIndex(x) for x in lists]
        names = [x.name for x in indexes]
        if len(set(names)) != len(names):
            raise ValueError(f"list names must be unique, got {names}")
        self.indexes: tuple[ListIndex, ...] = tuple(indexes)
        self.lists: tuple[HashList, ...] = tuple(x.hash_list for x in indexes)
        self.matching = matching

    def signals(self) -> frozenset[str]:
        """The signals that at least one loaded list has values for."""
        return frozenset(s for x in self.indexes for s in x.matchers)

    def entry_counts(self) -> dict[tuple[str, str], int]:
        """(list name, signal) -> number of that signal's values in that list (as indexed)."""
        return {(x.name, s): x.count(s) for x in self.indexes for s in x.matchers}

    def match(
        self,
        signal: str,
        values: Sequence[bytes],
        qualities: Sequence[int | None] | None = None,
        finder: Finder | None = None,
        extra: int = 0,
        video: VideoFinder | None = None,
    ) -> list[list[Hit]]:
        """All hits of each value over all lists, in the order of ``values``.

        ``values`` are raw hash bytes of the signal's width (parse hex with
        ``SignalType.parse`` first). ``qualities``, when given, has one item
        per value; for a signal with a quality gate (``SignalType.quality_min``)
        a value whose quality is known and below the minimum gets no hits.
        Each value's hits are ordered by (distance, list name, entry id).
        Raises ItemFault(UNKNOWN_SIGNAL) for an unregistered signal and
        ValueError for a value of the wrong width.
        ``finder`` searches in place of the lists' own matchers (a GPU copy of
        them); it must keep their contract. ``extra`` widens a Hamming
        signal's radius by that many bits (hits beyond the threshold: what the
        probe guard counts, never reported as matches). ``video``: per list
        and video signal, a device's search for its index (see VideoFinder).
        """
        spec = get_signal(signal)
        if qualities is not None and len(qualities) != len(values):
            raise ValueError(f"{len(qualities)} qualities for {len(values)} values")
        for value in values:
            if not spec.fits(len(value)):
                raise ValueError(
                    f"{spec.name} values must be {spec.nbytes} bytes, got {len(value)}"
                )
        if spec.match in VIDEO_KINDS:
            return self._match_video(spec, values, video)
        results: list[list[Hit]] = [[] for _ in values]
        wanted = list(range(len(values)))
        minimum = spec.quality_min(self.matching)
        if minimum is not None and qualities is not None:

            def passes(quality: int | None, minimum: int = minimum) -> bool:
                return quality is None or quality >= minimum

            wanted = [i for i in wanted if passes(qualities[i])]
        indexes = [x for x in self.indexes if spec.name in x.matchers]
        if not wanted or not indexes:
            return results
        radius = match_radius(spec.name, self.matching)
        if spec.match == "hamming":
            radius += extra
        queries = np.frombuffer(b"".join(values[i] for i in wanted), dtype=np.uint8)
        queries = queries.reshape(len(wanted), spec.nbytes)
        for index in indexes:
            if finder is None:
                found = index.matchers[spec.name].search(queries, radius)
            else:
                found = finder(index, spec.name, queries, radius)
            for i, (positions, distances) in zip(wanted, found, strict=True):
                query = spec.format(values[i])
                results[i].extend(
                    self._hit(spec.name, index, int(p), int(d), query)
                    for p, d in zip(positions.tolist(), distances.tolist(), strict=True)
                )
        for hits in results:
            hits.sort(key=lambda h: (h.distance, h.list, h.entry_id))
        return results

    def _match_video(self, spec: SignalType, values: Sequence[bytes],
                     video: VideoFinder | None) -> list[list[Hit]]:
        """Hits of whole videos: each list's video index scores them by the
        signal's rule (its options in ``matching``); distance 0, the scores in
        the hit, best first."""
        option = partial(_option, self.matching, spec)
        results: list[list[Hit]] = [[] for _ in values]
        for index in (x for x in self.indexes if spec.name in x.matchers):
            matcher: Any = index.matchers[spec.name]
            hook = video(index, spec.name) if video is not None else None
            if spec.match == "two_level":
                found = matcher.match(values, float(option("level1")), float(option("level2")),
                                      hook)
            else:
                found = matcher.match(values, VpdqRules(
                    int(option("threshold")), int(option("quality_min")),
                    float(option("query_percent")), float(option("compared_percent"))), hook)
            for hits, scored in zip(results, found, strict=True):
                hits.extend(replace(self._hit(spec.name, index, row, 0, ""), scores=scores)
                            for row, scores in scored)
        for hits in results:
            hits.sort(key=lambda h: (-h.scores[-1][1] if spec.match == "two_level"
                                     else -h.scores[0][1], h.list, h.entry_id))
        return results

    def _hit(self, signal: str, index: ListIndex, row: int, distance: int, query: str) -> Hit:
        hl = index.hash_list
        return Hit(
            signal=signal,
            list=hl.name,
            list_version=hl.version,
            entry_id=hl.entry_ids[row],
            category=hl.categories[row],
            distance=distance,
            query=query,
            kind=index.kind,
        )


def _option(matching: MatchingConfig, spec: SignalType, key: str) -> Any:
    return getattr(matching, spec.field(key))


def match_radius(signal: str, matching: MatchingConfig) -> int:
    """The match radius of a signal: 0 for exact ones, its threshold for the others."""
    return SIGNALS[signal].threshold(matching)
