"""Indexes of the video signals: TMK's two levels, vPDQ's frames.

Their hits are not within a distance, so they do not search by radius as
``INDEXES``' others do: ``match`` takes whole query values and the match
rule, and gives per query the (row, scores) of every entry that matches.

- ``TmkIndex`` keeps only the unit pure averages resident, (M, 256) float32,
  1 KiB an entry. A query's level 1 against all of them is one float32
  matrix product; the entries within a margin of the threshold are then
  scored exactly as the reference does (level 1, then level 2 for those that
  pass), reading their full features (a ``.tmk``'s 263 KB) from ``values``:
  in a compiled snapshot a memory map, so only candidates' pages are read.
- ``FrameIndex`` puts every frame hash of every entry in one
  ``MultiIndexHamming``; a query's frames are searched at the frame radius
  and the hits counted per entry, as python-threatexchange's brute-force
  matcher counts them (``appliance.video.vpdq``): each side de-duplicated by
  hash and gated by quality, both percentages at least their minimum.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray

from appliance.index.arrays import check_values
from appliance.index.mih import MultiIndexHamming
from appliance.video import vpdq
from appliance.video.tmk import TmkFeatures
from appliance.video.tmk_format import DIM, PURE_AT, TMK_BYTES
from appliance.video.vpdq_format import FRAME_BYTES

Scored = list[tuple[int, tuple[tuple[str, float], ...]]]
"""Per query: (entry row, (score name, value) pairs) of each matching entry."""

# The float32 matrix product's level 1 may differ from the reference's
# sequential sums in the 6th decimal; candidates within this of the
# threshold are scored exactly.
MARGIN = 1e-3

Candidates = Callable[[NDArray[np.float32], float], list[NDArray[np.intp]]]
"""(Q, 256) unit averages, level-1 threshold -> per query, candidate positions."""
Search = Callable[[NDArray[np.uint8], int], list[Any]]
"""(k, 32) frame hashes, radius -> per frame (positions, distances), MultiIndexHamming's."""


def near(approx: NDArray[np.float32], level1: float) -> list[NDArray[np.intp]]:
    """Per row of (Q, M) float32 cosines, the positions within MARGIN of ``level1``."""
    return [np.flatnonzero(row >= level1 - MARGIN) for row in approx]


def _unit(pure: NDArray[np.float32]) -> NDArray[np.float32]:
    norms = np.sqrt((pure.astype(np.float64) ** 2).sum(axis=1, keepdims=True))
    out: NDArray[np.float32] = np.divide(pure, norms, out=np.zeros_like(pure),
                                         where=norms > 0).astype(np.float32)
    return out


class TmkIndex:
    """TMK+PDQF entries: ``values`` (M, 263344) uint8 ``.tmk`` bytes, ``rows`` (M,)."""

    def __init__(self, values: NDArray[np.uint8], rows: NDArray[np.int64]) -> None:
        check_values(values, rows, TMK_BYTES)
        pure = np.ascontiguousarray(values[:, PURE_AT:PURE_AT + 4 * DIM]).view("<f4")
        self._adopt(values, np.asarray(rows, dtype=np.int64), _unit(pure.astype(np.float32)))

    def _adopt(self, values: NDArray[np.uint8], rows: NDArray[np.int64],
               unit: NDArray[np.float32]) -> None:
        for a in (values, rows, unit):
            a.flags.writeable = False
        self._values, self._rows, self._unit = values, rows, unit

    def __len__(self) -> int:
        return len(self._rows)

    def to_arrays(self) -> dict[str, NDArray[Any]]:
        return {"values": self._values, "rows": self._rows, "unit": self._unit}

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, NDArray[Any]]) -> TmkIndex:
        values, rows, unit = (np.asarray(arrays[k]) for k in ("values", "rows", "unit"))
        n = len(rows)
        if values.shape != (n, TMK_BYTES) or values.dtype != np.uint8 or rows.dtype != np.int64 \
                or unit.shape != (n, DIM) or unit.dtype != np.float32:
            raise ValueError(f"tmk index arrays do not fit: values {values.shape}, "
                             f"rows {rows.shape} {rows.dtype}, unit {unit.shape} {unit.dtype}")
        index = cls.__new__(cls)
        index._adopt(values, rows, unit)
        return index

    def search(self, queries: NDArray[np.uint8], radius: int) -> list[Any]:
        raise TypeError("TMK entries match by score: call match()")

    @property
    def units(self) -> NDArray[np.float32]:
        """(M, 256) float32: the unit pure averages (what a device copies)."""
        return self._unit

    def candidates(self, units: NDArray[np.float32], level1: float) -> list[NDArray[np.intp]]:
        """Per query unit average (Q, 256), the positions whose float32 cosine is
        within the margin of ``level1`` (a device does the same product)."""
        return near(units @ self._unit.T, level1)

    def match(self, queries: Sequence[bytes], level1: float, level2: float,
              candidates: Candidates | None = None) -> list[Scored]:
        """Per query, the entries at least ``level1`` and ``level2``, best first.
        ``candidates``: ``self.candidates``' twin on a device."""
        features = [TmkFeatures.from_bytes(value) for value in queries]
        out: list[Scored] = []
        if not features:
            return out
        units = _unit(np.stack([f.pure for f in features]))
        near = (candidates or self.candidates)(units, level1) if len(self._rows) else \
            [np.zeros(0, np.intp)] * len(features)
        for query, positions in zip(features, near, strict=True):
            found: Scored = []
            if len(self._rows):
                for position in positions.tolist():
                    entry = TmkFeatures.from_bytes(self._values[position])
                    s1 = query.level1(entry)
                    if s1 < level1:
                        continue
                    s2 = query.level2(entry)
                    if s2 >= level2:
                        found.append((int(self._rows[position]),
                                      (("level1", s1), ("level2", s2))))
            found.sort(key=lambda hit: -hit[1][1][1])
            out.append(found)
        return out


def _first_of_hash(values: NDArray[np.uint8], rows: NDArray[np.int64]) -> NDArray[np.bool_]:
    """(F,) True where a frame is the first of its hash within its entry."""
    keys = np.concatenate([rows.astype(">u8").view(np.uint8).reshape(-1, 8),
                           values[:, :32]], axis=1)
    _, first = np.unique(keys, axis=0, return_index=True)
    out = np.zeros(len(rows), dtype=bool)
    out[first] = True
    return out


class FrameIndex:
    """vPDQ entries: ``values`` (F, 41) uint8, a frame each, ``rows`` (F,) their entries."""

    def __init__(self, values: NDArray[np.uint8], rows: NDArray[np.int64]) -> None:
        check_values(values, rows, FRAME_BYTES)
        values = np.ascontiguousarray(values)
        rows = np.asarray(rows, dtype=np.int64)
        hashes = np.ascontiguousarray(values[:, :32])
        mih = MultiIndexHamming(hashes, np.arange(len(rows), dtype=np.int64))
        self._adopt(values, rows, _first_of_hash(values, rows), mih)

    def _adopt(self, values: NDArray[np.uint8], rows: NDArray[np.int64],
               first: NDArray[np.bool_], mih: MultiIndexHamming) -> None:
        for a in (values, rows, first):
            a.flags.writeable = False
        self._values, self._rows, self._first, self._mih = values, rows, first, mih
        self._totals: dict[int, NDArray[np.int64]] = {}

    def __len__(self) -> int:
        return len(self._rows)

    def to_arrays(self) -> dict[str, NDArray[Any]]:
        mih = {f"mih.{k}": a for k, a in self._mih.to_arrays().items()}
        return {"values": self._values, "rows": self._rows, "first": self._first, **mih}

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, NDArray[Any]]) -> FrameIndex:
        values, rows, first = (np.asarray(arrays[k]) for k in ("values", "rows", "first"))
        n = len(rows)
        if values.shape != (n, FRAME_BYTES) or values.dtype != np.uint8 \
                or rows.dtype != np.int64 or first.shape != (n,) or first.dtype != np.bool_:
            raise ValueError(f"vpdq index arrays do not fit: values {values.shape}, "
                             f"rows {rows.shape} {rows.dtype}, first {first.shape}")
        if n and (int(rows.min()) < 0 or bool((np.diff(rows) < 0).any())):
            raise ValueError("vpdq index rows must be ascending entry rows")
        mih = MultiIndexHamming.from_arrays(
            {k[4:]: a for k, a in arrays.items() if k.startswith("mih.")})
        if len(mih) != n:
            raise ValueError(f"vpdq frame index has {len(mih)} frames for {n} rows")
        index = cls.__new__(cls)
        index._adopt(values, rows, first, mih)
        return index

    def search(self, queries: NDArray[np.uint8], radius: int) -> list[Any]:
        raise TypeError("vPDQ entries match by their frames: call match()")

    def _eligible_totals(self, quality_min: int) -> NDArray[np.int64]:
        """Per entry row, its frames that take part (first of their hash, quality >= min)."""
        totals = self._totals.get(quality_min)
        if totals is None:
            eligible = self._first & (self._values[:, 32] >= quality_min)
            size = int(self._rows[-1]) + 1 if len(self._rows) else 0
            totals = np.bincount(self._rows[eligible], minlength=size).astype(np.int64)
            self._totals[quality_min] = totals
        return totals

    @property
    def frames(self) -> MultiIndexHamming:
        """The index of every frame hash (rows: frame positions; what a device copies)."""
        return self._mih

    def match(self, queries: Sequence[bytes], rules: vpdq.VpdqRules,
              search: Search | None = None) -> list[Scored]:
        """Per query, the entries it matches by ``rules``, best first. ``search``:
        the frame index's search on a device."""
        totals = self._eligible_totals(rules.quality_min)
        find = search or self._mih.search
        out: list[Scored] = []
        for value in queries:
            keep = vpdq.prepare(value, rules.quality_min)
            found: Scored = []
            if len(keep) and len(self._rows):
                frames = vpdq.records(value)[keep]
                seconds = frames[:, 37:41].copy().view("<f4").reshape(-1)
                hits = find(np.ascontiguousarray(frames[:, :32]), rules.distance)
                found = self._count(hits, seconds, totals, rules)
            out.append(found)
        return out

    def _count(self, hits: list[Any], seconds: NDArray[np.float32],
               totals: NDArray[np.int64], rules: vpdq.VpdqRules) -> Scored:
        """Per entry: which query frames hit it, and how many of its frames were hit."""
        quality = self._values[:, 32]
        by_entry: dict[int, tuple[set[int], set[int]]] = {}
        for k, (positions, _) in enumerate(hits):
            for p in positions.tolist():
                if not self._first[p] or quality[p] < rules.quality_min:
                    continue
                row = int(self._rows[p])
                query_frames, entry_frames = by_entry.setdefault(row, (set(), set()))
                query_frames.add(k)
                entry_frames.add(p)
        found: Scored = []
        count = len(seconds)
        for row, (query_frames, entry_frames) in by_entry.items():
            score = vpdq.score_from_counts([k in query_frames for k in range(count)],
                                           len(entry_frames), int(totals[row]),
                                           seconds.tolist())
            if score is not None and score.matches(rules):
                found.append((row, (("query_percent", score.query_percent),
                                    ("compared_percent", score.compared_percent),
                                    ("first_seconds", score.first_seconds),
                                    ("last_seconds", score.last_seconds))))
        found.sort(key=lambda hit: (-hit[1][0][1], -hit[1][1][1], hit[0]))
        return found
