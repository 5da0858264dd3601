"""The index snapshot: every loaded list, indexed per signal, matched in batches.

A snapshot never changes after it is built. A reload builds a new one aside
and swaps one reference, so a batch in flight finishes on the snapshot it
started with and never sees a half-loaded list.

Per signal there is one index over the values of all lists together (one
search per batch, not one per list); each index position maps back to its
list and entry. How a signal matches comes from the signal registry
(``Signal.match``): ``_BUILDERS`` holds one index builder per match kind, and
the per-signal settings (Hamming radius, quality gate) come from the small
registries ``RADIUS`` and ``QUALITY_MIN``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
from numpy.typing import NDArray

from appliance.config import MatchingConfig
from appliance.index.exact import ExactIndex
from appliance.index.hamming import Found, HammingIndex
from appliance.lists.model import HashList
from appliance.signals import SIGNALS, MatchKind
from appliance.signals import get as get_signal


@dataclass(frozen=True)
class Hit:
    """One match of one queried value against one list entry."""

    signal: str
    list: str
    list_version: str
    entry_id: str
    category: str
    distance: int
    query: str  # the looked-up value, as lowercase hex
    # Which transform of the file matched ("" = as stored; a dihedral variant; "exif").
    variant: str = ""


# Hamming radius of each 'hamming' signal: a match is distance <= radius.
RADIUS: dict[str, Callable[[MatchingConfig], int]] = {
    "pdq": lambda m: m.pdq_threshold,
    "phash": lambda m: m.phash_threshold,
    "dhash": lambda m: m.dhash_threshold,
    "ahash": lambda m: m.ahash_threshold,
    "whash": lambda m: m.whash_threshold,
}
# Signals whose queries carry a quality: below the minimum a hash is too
# unreliable to match (flat or tiny images), so it gets no hits at all.
QUALITY_MIN: dict[str, Callable[[MatchingConfig], int]] = {
    "pdq": lambda m: m.pdq_quality_min,
}


class _Matcher(Protocol):
    def find(self, queries: NDArray[np.uint8]) -> list[Found]:
        """(Q, W) uint8 -> per query (positions (k,) int64, distances (k,) int32)."""
        ...


class _ExactMatcher:
    def __init__(self, values: NDArray[np.uint8], signal: str, matching: MatchingConfig) -> None:
        self._index = ExactIndex(values, np.arange(len(values), dtype=np.int64))

    def find(self, queries: NDArray[np.uint8]) -> list[Found]:
        return [(rows, np.zeros(len(rows), dtype=np.int32)) for rows in self._index.lookup(queries)]


class _HammingMatcher:
    def __init__(self, values: NDArray[np.uint8], signal: str, matching: MatchingConfig) -> None:
        radius = RADIUS.get(signal)
        if radius is None:
            raise ValueError(f"hamming signal {signal!r} has no entry in snapshot.RADIUS")
        self._radius = radius(matching)
        self._index = HammingIndex(values, np.arange(len(values), dtype=np.int64))

    def find(self, queries: NDArray[np.uint8]) -> list[Found]:
        return self._index.search(queries, self._radius)


# One index builder per match kind of the signal registry.
_BUILDERS: dict[MatchKind, Callable[[NDArray[np.uint8], str, MatchingConfig], _Matcher]] = {
    "exact": _ExactMatcher,
    "hamming": _HammingMatcher,
}


@dataclass(frozen=True)
class _SignalIndex:
    """One signal's values over all lists; position p came from entry
    ``entry_rows[p]`` of list ``list_ids[p]`` (both (N,) arrays)."""

    matcher: _Matcher
    list_ids: NDArray[np.int64]
    entry_rows: NDArray[np.int64]


class Snapshot:
    """Immutable: all loaded lists with their indexes. A reload builds a new Snapshot and
    swaps a reference."""

    def __init__(self, lists: Sequence[HashList], matching: MatchingConfig) -> None:
        names = [hl.name for hl in lists]
        if len(set(names)) != len(names):
            raise ValueError(f"list names must be unique, got {names}")
        self.lists: tuple[HashList, ...] = tuple(lists)
        self.matching = matching
        self._indexes: dict[str, _SignalIndex] = {}
        for signal in SIGNALS:
            parts = [(i, hl.columns[signal]) for i, hl in enumerate(self.lists) if hl.count(signal)]
            if not parts:
                continue
            values = np.concatenate([col.values for _, col in parts])
            self._indexes[signal] = _SignalIndex(
                matcher=_BUILDERS[SIGNALS[signal].match](values, signal, matching),
                list_ids=np.concatenate([np.full(len(col), i, dtype=np.int64) for i, col in parts]),
                entry_rows=np.concatenate([col.rows for _, col in parts]),
            )

    def signals(self) -> frozenset[str]:
        """The signals that at least one loaded list has values for."""
        return frozenset(self._indexes)

    def entry_counts(self) -> dict[tuple[str, str], int]:
        """(list name, signal) -> number of that signal's values in that list."""
        return {(hl.name, s): hl.count(s) for hl in self.lists for s in hl.columns}

    def match(
        self,
        signal: str,
        values: Sequence[bytes],
        qualities: Sequence[int | None] | None = None,
    ) -> list[list[Hit]]:
        """All hits of each value over all lists, in the order of ``values``.

        ``values`` are raw hash bytes of the signal's width (parse hex with
        ``Signal.parse`` first). ``qualities``, when given, has one item per
        value; for a signal in QUALITY_MIN a value whose quality is known and
        below the minimum gets no hits. Each value's hits are ordered by
        (distance, list name, entry id). Raises ItemFault(UNKNOWN_SIGNAL) for
        an unregistered signal and ValueError for a value of the wrong width.
        """
        spec = get_signal(signal)
        if qualities is not None and len(qualities) != len(values):
            raise ValueError(f"{len(qualities)} qualities for {len(values)} values")
        for value in values:
            if len(value) != spec.nbytes:
                raise ValueError(
                    f"{spec.name} values must be {spec.nbytes} bytes, got {len(value)}"
                )
        results: list[list[Hit]] = [[] for _ in values]
        index = self._indexes.get(spec.name)
        if index is None or not values:
            return results
        wanted = list(range(len(values)))
        gate = QUALITY_MIN.get(spec.name)
        if gate is not None and qualities is not None:
            minimum = gate(self.matching)

            def passes(quality: int | None) -> bool:
                return quality is None or quality >= minimum

            wanted = [i for i in wanted if passes(qualities[i])]
        if not wanted:
            return results
        queries = np.frombuffer(b"".join(values[i] for i in wanted), dtype=np.uint8)
        found = index.matcher.find(queries.reshape(len(wanted), spec.nbytes))
        for i, (positions, distances) in zip(wanted, found, strict=True):
            query = spec.format(values[i])
            hits = [
                self._hit(spec.name, index, int(p), int(d), query)
                for p, d in zip(positions.tolist(), distances.tolist(), strict=True)
            ]
            hits.sort(key=lambda h: (h.distance, h.list, h.entry_id))
            results[i] = hits
        return results

    def _hit(
        self, signal: str, index: _SignalIndex, position: int, distance: int, query: str
    ) -> Hit:
        hl = self.lists[int(index.list_ids[position])]
        row = int(index.entry_rows[position])
        return Hit(
            signal=signal,
            list=hl.name,
            list_version=hl.version,
            entry_id=hl.entry_ids[row],
            category=hl.categories[row],
            distance=distance,
            query=query,
        )
