"""What a newer snapshot of the lists added relative to an older one.

Retro-matching after a list update only needs the values the update brought:
a stored hash that matched none of the old values can only match a new one.
A value is new when the list of the same name in the old snapshot has no
equal value of that signal (any entry); a list the old snapshot lacks is new
whole. Deletions and category changes are not additions. The result is a
snapshot over the newer lists (hits name their versions and entries) whose
indexes hold the new values only, searched as any snapshot is.

Values come from a parsed list's columns, or back out of a compiled
snapshot's indexes (``stored()``), so either form works on either side.
Video signals (whole-video matching) are not part of a delta.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

from appliance.index.snapshot import INDEXES, VIDEO_KINDS, ListIndex, Snapshot
from appliance.signals import SIGNALS

# Values looked up in the old index at once.
_CHUNK = 1 << 16


def added(new: Snapshot, old: Snapshot) -> Snapshot:
    """A snapshot of ``new``'s lists holding only the values ``old`` lacks."""
    olds = {x.name: x for x in old.indexes}
    return Snapshot([_added(x, olds.get(x.name)) for x in new.indexes], new.matching)


def count(snapshot: Snapshot) -> int:
    """Values indexed in ``snapshot``, all lists and signals."""
    return sum(snapshot.entry_counts().values())


def _values(index: ListIndex, signal: str) -> tuple[NDArray[np.uint8], NDArray[np.int64]]:
    column = index.hash_list.columns.get(signal)
    if column is not None:
        return column.values, column.rows
    matcher: Any = index.matchers[signal]
    stored: tuple[NDArray[np.uint8], NDArray[np.int64]] = matcher.stored()
    return stored


def _absent(matcher: Any, values: NDArray[np.uint8]) -> NDArray[np.bool_]:
    """Per value, whether ``matcher`` has no equal value (a radius-0 search)."""
    out = np.empty(len(values), dtype=np.bool_)
    for lo in range(0, len(values), _CHUNK):
        found = matcher.search(np.ascontiguousarray(values[lo:lo + _CHUNK]), 0)
        out[lo:lo + len(found)] = [len(rows) == 0 for rows, _ in found]
    return out


def _added(new: ListIndex, old: ListIndex | None) -> ListIndex:
    matchers: dict[str, Any] = {}
    counts: dict[str, int] = {}
    for signal in new.matchers:
        kind = SIGNALS[signal].match
        if kind in VIDEO_KINDS:
            continue
        values, rows = _values(new, signal)
        if old is not None and signal in old.matchers and len(values):
            keep = _absent(old.matchers[signal], values)
            values, rows = values[keep], rows[keep]
        if len(values):
            order = np.argsort(rows, kind="stable")
            matchers[signal] = INDEXES[kind](np.ascontiguousarray(values[order]),
                                             np.ascontiguousarray(rows[order], dtype=np.int64))
            counts[signal] = len(values)
    return ListIndex(new.hash_list, new.kind, matchers=matchers, counts=counts)
