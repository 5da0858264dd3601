"""The lists' indexes in device memory, searched by the kernels of ``kernels``.

A ``DeviceIndex`` mirrors one ``Snapshot``: for each list and signal, the
arrays its kernel searches are uploaded once, when the snapshot is built (in
the list loader's thread, before the swap), and a reload re-uploads only the
lists that changed: an unchanged ``ListIndex`` object keeps its device copy.

Each index kind has its device searcher in ``SEARCHERS``, keyed as the host
index classes of ``snapshot.INDEXES`` are; it uploads what its kernel reads
from the host index, through the index's own accessors:

- exact signals (digests), ``ExactSearcher``: the sorted key words of the
  host ``ExactIndex``; ``kernels.exact`` finds each query's run of keys, and
  the host index turns runs into entry rows (hits are few; the rows stay in
  host memory);
- Hamming signals, ``HammingSearcher``: the host ``MultiIndexHamming``'s
  packed words, padded with zero words to the kernel's four (a zero word adds
  no distance), searched by the tiled brute force of ``kernels.hamming``; hit
  positions map to rows on the host;
- TMK, ``TmkSearcher``: the unit pure averages, level 1 against all of them
  as one matrix product; the candidates are scored on the host;
- vPDQ, ``FrameSearcher``: every frame hash, as a Hamming list; the counting
  per entry is the host's;
- a kind without a searcher (Euclidean: PhotoDNA, looked up, never computed)
  is searched by its host index.

Search goes through ``Snapshot.match`` with a finder, so hits, their order,
the quality gate and the radius are the CPU path's by construction.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
from numpy.typing import NDArray

from appliance.gpu.device import Device
from appliance.index.exact import ExactIndex
from appliance.index.hamming import Found, group_hits
from appliance.index.mih import MultiIndexHamming
from appliance.index.snapshot import ListIndex, Snapshot
from appliance.index.video import FrameIndex, TmkIndex, near
from appliance.results import Hit
from appliance.signals import SIGNALS, MatchKind
from kernels import exact as exact_kernel
from kernels import hamming as hamming_kernel

_KERNEL_WORDS = hamming_kernel.WORDS


def _pad_words(words: NDArray[np.uint64]) -> NDArray[np.uint64]:
    """(N, k <= 4) uint64 -> (N, 4), zero words appended (the kernel reads 4)."""
    if words.shape[1] > _KERNEL_WORDS:
        raise ValueError(f"hashes of {words.shape[1]} words exceed the kernel's {_KERNEL_WORDS}")
    if words.shape[1] == _KERNEL_WORDS:
        return np.ascontiguousarray(words)
    out = np.zeros((words.shape[0], _KERNEL_WORDS), dtype=np.uint64)
    out[:, : words.shape[1]] = words
    return out


class DeviceSearcher(Protocol):
    """One index's arrays on a device, searched there under its host index's
    contract (``Index.search``); ``nbytes``: the device bytes they hold."""

    nbytes: int

    def search(self, queries: NDArray[np.uint8], radius: int) -> list[Found]: ...


class ExactSearcher:
    """An ``ExactIndex``'s sorted keys on ``device``, searched by ``kernels.exact``."""

    def __init__(self, host: ExactIndex, device: Device) -> None:
        self._host, self._device = host, device
        keys = np.asarray(host.keys)
        self._keys = device.upload(keys)
        self.nbytes = int(keys.nbytes)

    def search(self, queries: NDArray[np.uint8], radius: int) -> list[Found]:
        dev, host = self._device, self._host
        words = dev.upload(host.query_words(queries))
        first, count = exact_kernel.find(self._keys, words, dev.xp, stream=dev.kernel_stream)
        rows = host.rows_of(dev.to_host(first), dev.to_host(count))
        return [(r, np.zeros(len(r), dtype=np.int32)) for r in rows]


class HammingSearcher:
    """A ``MultiIndexHamming``'s words on ``device`` (padded to the kernel's
    four), searched by the tiled brute force of ``kernels.hamming``."""

    def __init__(self, host: MultiIndexHamming, device: Device) -> None:
        self._host, self._device = host, device
        entries = _pad_words(np.asarray(host.words))
        self._entries = device.upload(entries)
        self.nbytes = int(entries.nbytes)

    def search(self, queries: NDArray[np.uint8], radius: int) -> list[Found]:
        dev, host = self._device, self._host
        words = dev.upload(_pad_words(host.query_words(queries, radius)))
        qi, pos, dist = hamming_kernel.search(
            self._entries, words, radius, dev.xp, stream=dev.kernel_stream
        )
        return group_hits(qi.astype(np.intp), host.rows_at(pos), dist, len(queries))


class TmkSearcher:
    """A ``TmkIndex``'s unit pure averages on ``device``: level 1 of every entry
    as one float32 matrix product there, the candidates' exact level 1 and
    level 2 on the host (``TmkIndex.match``, given ``candidates``)."""

    def __init__(self, host: TmkIndex, device: Device) -> None:
        self._host, self._device = host, device
        units = np.ascontiguousarray(host.units)
        self._units = device.upload(units)
        self.nbytes = int(units.nbytes)

    def search(self, queries: NDArray[np.uint8], radius: int) -> list[Found]:
        raise TypeError("TMK entries match by score (candidates)")

    def candidates(self, units: NDArray[np.float32], level1: float) -> list[NDArray[np.intp]]:
        dev = self._device
        approx = dev.to_host(dev.xp.matmul(dev.upload(np.ascontiguousarray(units)),
                                           self._units.T))
        return near(approx, level1)

    def hook(self) -> Any:
        return self.candidates


class FrameSearcher:
    """A ``FrameIndex``'s frame hashes on ``device``, searched as a Hamming list
    (``HammingSearcher``); the per-entry counting stays on the host."""

    def __init__(self, host: FrameIndex, device: Device) -> None:
        self._frames = HammingSearcher(host.frames, device)
        self.nbytes = self._frames.nbytes

    def search(self, queries: NDArray[np.uint8], radius: int) -> list[Found]:
        return self._frames.search(queries, radius)

    def hook(self) -> Any:
        return self.search


# The device searcher of each index kind, beside snapshot.INDEXES (its host
# index class); a kind absent here is searched on the host.
SEARCHERS: dict[MatchKind, Callable[[Any, Device], DeviceSearcher]] = {
    "exact": ExactSearcher,
    "hamming": HammingSearcher,
    "two_level": TmkSearcher,
    "frames": FrameSearcher,
}


@dataclass
class _DeviceList:
    """One list's device searchers, by signal."""

    searchers: dict[str, DeviceSearcher] = field(default_factory=dict)
    nbytes: int = 0


def _upload_list(index: ListIndex, device: Device) -> _DeviceList:
    out = _DeviceList()
    for signal, host in index.matchers.items():
        upload = SEARCHERS.get(SIGNALS[signal].match)
        if upload is not None:
            out.searchers[signal] = searcher = upload(host, device)
            out.nbytes += searcher.nbytes
    return out


class DeviceIndex:
    """A snapshot's searchable arrays on ``device``; ``match`` is ``Snapshot.match``'s twin."""

    def __init__(
        self, snapshot: Snapshot, device: Device, previous: DeviceIndex | None = None
    ) -> None:
        self.snapshot = snapshot
        self.device = device
        reuse = previous._lists if previous is not None else {}
        # Keyed by the ListIndex object: the Catalog hands back the same object
        # for a list that did not change, so its device copy is reused.
        self._lists: dict[int, tuple[ListIndex, _DeviceList]] = {}
        for index in snapshot.indexes:
            kept = reuse.get(id(index))
            if kept is not None and kept[0] is index:
                self._lists[id(index)] = kept
            else:
                self._lists[id(index)] = (index, _upload_list(index, device))

    @property
    def nbytes(self) -> int:
        """Device bytes held by the uploaded arrays."""
        return sum(d.nbytes for _, d in self._lists.values())

    def match(
        self, signal: str, values: list[bytes], qualities: list[int | None] | None = None,
        extra: int = 0,
    ) -> list[list[Hit]]:
        """``Snapshot.match`` with the search done on the device."""
        return self.snapshot.match(signal, values, qualities, finder=self._find, extra=extra,
                                   video=self._video)

    def _video(self, index: ListIndex, signal: str) -> Any:
        """The device search of a video signal's index (None: none uploaded)."""
        searcher = self._lists[id(index)][1].searchers.get(signal)
        if isinstance(searcher, TmkSearcher | FrameSearcher):
            return searcher.hook()
        return None

    def _find(
        self, index: ListIndex, signal: str, queries: NDArray[np.uint8], radius: int
    ) -> list[Found]:
        searcher = self._lists[id(index)][1].searchers.get(signal)
        if searcher is None:
            return list(index.matchers[signal].search(queries, radius))
        return searcher.search(queries, radius)
