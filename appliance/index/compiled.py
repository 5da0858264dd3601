"""Compiled snapshots: lists and their indexes in one file, opened by mapping it.

``appliance lists compile SPEC... -o FILE`` writes every list's entry ids,
categories and index arrays (the multi-index tables, the sorted digest keys)
with ``snapfile``; ``serve --lists FILE`` maps them back. Nothing is parsed or
rebuilt at start, and only what queries touch becomes resident: entry ids and
categories are read for hits alone.
"""

from __future__ import annotations

import datetime
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from appliance import __version__
from appliance.config import MatchingConfig
from appliance.errors import ListError
from appliance.index import snapfile
from appliance.index.snapshot import INDEXES, ListIndex
from appliance.lists.model import HashList
from appliance.signals import SIGNALS


class Strings(Sequence[str]):
    """A read-only sequence of strings stored as one UTF-8 blob and (N + 1) offsets
    (arrays in memory, or FileArrays read with pread)."""

    def __init__(self, blob: Any, offsets: Any) -> None:
        self._blob, self._offsets = blob, offsets

    @classmethod
    def pack(cls, items: Sequence[str]) -> tuple[NDArray[np.uint8], NDArray[np.uint64]]:
        encoded = [s.encode() for s in items]
        offsets = np.zeros(len(encoded) + 1, dtype=np.uint64)
        np.cumsum([len(e) for e in encoded], out=offsets[1:])
        return np.frombuffer(b"".join(encoded), dtype=np.uint8), offsets

    def __len__(self) -> int:
        return len(self._offsets) - 1

    @property
    def on_disk(self) -> bool:
        return isinstance(self._offsets, snapfile.FileArray)

    def arrays(self) -> tuple[NDArray[np.uint8], NDArray[np.uint64]]:
        return self._blob, self._offsets

    def __getitem__(self, i: Any) -> Any:
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        if isinstance(self._offsets, snapfile.FileArray):
            lo, hi = (int(x) for x in self._offsets.read(i, i + 2))
            return self._blob.read(lo, hi).tobytes().decode()
        lo, hi = int(self._offsets[i]), int(self._offsets[i + 1])
        return self._blob[lo:hi].tobytes().decode()

    def __iter__(self) -> Iterator[str]:
        return (self[i] for i in range(len(self)))


class Categories(Sequence[str]):
    """Per-entry category codes into a short table of distinct names."""

    def __init__(self, codes: Any, names: Sequence[str]) -> None:
        self.codes, self.names = codes, list(names)

    def __len__(self) -> int:
        return len(self.codes)

    def __getitem__(self, i: Any) -> Any:
        if isinstance(i, slice):
            return [self.names[int(c)] for c in self.codes[i]]
        return self.names[int(self.codes[i])]

    def __iter__(self) -> Iterator[str]:
        # Bounded by the length: a FileArray reads past its end rather than
        # raising the IndexError that Sequence's own __iter__ stops at.
        return (self[i] for i in range(len(self)))


def write_compiled(path: str | Path, indexes: Sequence[ListIndex], sources: dict[str, str]) -> int:
    """Write the lists and their indexes to ``path``; returns the file's size."""
    arrays: dict[str, NDArray[Any]] = {}
    lists = []
    for i, index in enumerate(indexes):
        hl = index.hash_list
        if isinstance(hl.entry_ids, Strings) and not hl.entry_ids.on_disk:  # already packed
            arrays[f"{i}/ids/blob"], arrays[f"{i}/ids/offsets"] = hl.entry_ids.arrays()
        else:
            arrays[f"{i}/ids/blob"], arrays[f"{i}/ids/offsets"] = Strings.pack(list(hl.entry_ids))
        if isinstance(hl.categories, Categories) and isinstance(hl.categories.codes, np.ndarray):
            names = hl.categories.names
            arrays[f"{i}/categories"] = hl.categories.codes
        else:
            names = sorted(set(hl.categories))
            code = {name: n for n, name in enumerate(names)}
            arrays[f"{i}/categories"] = np.array([code[c] for c in hl.categories], np.uint32)
        for signal, matcher in index.matchers.items():
            for key, array in matcher.to_arrays().items():
                arrays[f"{i}/{signal}/{key}"] = array
        lists.append({
            "name": index.name, "version": hl.version, "kind": index.kind,
            "source": sources.get(index.name, ""), "entries": len(hl.entry_ids),
            "categories": names, "counts": {s: index.count(s) for s in index.matchers},
        })
    meta = {"created": time.time(), "appliance": __version__, "lists": lists}
    return snapfile.write(path, meta, arrays)


def _lists(path: str | Path, meta: dict[str, Any]) -> list[dict[str, Any]]:
    """The manifest's list descriptions, ListError unless each is as
    ``write_compiled`` makes it: the manifest's digest says it is intact, not
    who wrote it, and a list named by a number or of an unknown kind would be
    served as it is."""
    lists = meta.get("lists")

    def malformed(why: str) -> ListError:
        return ListError(f"snapshot {path}: malformed manifest: {why}")

    if not isinstance(lists, list) or not lists:
        raise malformed("no lists")
    for n, info in enumerate(lists):
        if not isinstance(info, dict):
            raise malformed(f"list {n} is not an object")
        if not (isinstance(info.get("name"), str) and isinstance(info.get("version"), str)):
            raise malformed(f"list {n} has no name and version")
        if info.get("kind") not in ("block", "allow"):
            raise malformed(f"list {info['name']!r} is of kind {info.get('kind')!r}")
        names, counts = info.get("categories"), info.get("counts")
        if not isinstance(names, list) or not all(isinstance(c, str) for c in names):
            raise malformed(f"list {info['name']!r} has no category names")
        if not isinstance(counts, dict) or not all(
            signal in SIGNALS and isinstance(k, int) and k >= 0 for signal, k in counts.items()
        ):
            raise malformed(f"list {info['name']!r} has no value counts of known signals")
    return lists


def open_compiled(path: str | Path) -> tuple[list[ListIndex], dict[str, Any]]:
    """The lists of a compiled snapshot, indexes mapped, not rebuilt; and its meta.

    ListError for a file that is not an intact snapshot or whose manifest is
    not as ``write_compiled`` makes it; ValueError (or KeyError) for arrays
    that do not fit their indexes, which the loader reports as a ListError.
    """
    opened = snapfile.open_snapshot(path)
    arrays, meta = opened.arrays, opened.meta
    indexes = []
    for i, info in enumerate(_lists(path, meta)):
        # Entry ids and categories are read with pread, for hits only (see reader).
        hash_list = HashList(
            name=info["name"], version=info["version"],
            entry_ids=Strings(opened.reader(f"{i}/ids/blob"), opened.reader(f"{i}/ids/offsets")),
            categories=Categories(opened.reader(f"{i}/categories"), info["categories"]),
            columns={},
        )
        matchers = {}
        for signal in info["counts"]:
            prefix = f"{i}/{signal}/"
            parts = {k[len(prefix):]: a for k, a in arrays.items() if k.startswith(prefix)}
            matchers[signal] = INDEXES[SIGNALS[signal].match].from_arrays(parts)
        indexes.append(ListIndex(hash_list, info["kind"], matchers=matchers,
                                 counts=info["counts"]))
    return indexes, meta


def _when(created: Any) -> Any:
    """The snapshot's creation time as ISO 8601 UTC (it is stored as Unix time)."""
    if isinstance(created, int | float) and not isinstance(created, bool):
        return datetime.datetime.fromtimestamp(created, datetime.UTC).isoformat(
            timespec="seconds")
    return created


def describe(path: str | Path, matching: MatchingConfig | None = None) -> dict[str, Any]:
    """What ``lists inspect`` prints: lists, versions, kinds, counts (never hashes)."""
    opened = snapfile.open_snapshot(path)
    meta = opened.meta
    _lists(path, meta)
    return {
        "file": str(path), "bytes": Path(path).stat().st_size,
        "appliance": meta.get("appliance"), "created": _when(meta.get("created")),
        "lists": [
            {k: info[k] for k in ("name", "version", "kind", "source", "entries", "counts")}
            for info in meta["lists"]
        ],
    }
