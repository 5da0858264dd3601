"""Exact-match index for fixed-width hash values (digests, PhotoDNA vectors).

Each key of W bytes is stored as ``ceil(W / 8)`` big-endian uint64 words, zero
padded (MD5: 2 words, SHA-1: 3, SHA-256: 4, PhotoDNA's 144 bytes: 18), so that
comparing words in order compares the bytes in order: every byte counts,
trailing zero bytes included (the trap of NumPy's ``S`` dtype, which drops
them). Keys are sorted by (key, row); rows are kept as uint32 when they fit
(int64 otherwise). MD5: 16 + 4 = 20 bytes per entry, plus a directory of at
most 65537 offsets (the first index of each value of the keys' top bits), so a
lookup is a binary search within one directory bucket (~150 keys at 10M).

Building is a counting sort on the top bits (up to 24) then a sort within each
bucket: O(M) on digests, which are uniform. Lookups are numba kernels over the
whole batch (``njit(cache=True, nogil=True)``, single-threaded).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np
from numpy.typing import NDArray

from appliance.index.arrays import ArrayIndex, check_values, fits_u32
from appliance.index.arrays import Rows as _Rows
from appliance.index.hamming import Found
from appliance.jit import kernel as _kernel

_EMPTY_ROWS: NDArray[np.int64] = np.empty(0, dtype=np.int64)
_EMPTY_ROWS.flags.writeable = False
# Directory: 16 bits at most, 256 KiB; fewer for small indexes (~32 keys a bucket).
_DIR_BITS = 16
# Sorting buckets: ~4 keys each, 22 bits at most (a 32 MiB count table; measured
# on 10M MD5, 22 bits builds 1.3x faster than 18 or 24).
_SORT_BITS = 22
# Buckets up to this size are insertion-sorted, larger ones heap-sorted.
_INSERTION_MAX = 32
# Binary searches run in step (8..32 measure alike).
_GROUP = 16



# ----------------------------------------------------------------------------- kernels


@_kernel
def _bucket(word: np.uint64, bits: int) -> int:
    """The top ``bits`` bits of word (0 when bits is 0: a shift by 64 is undefined)."""
    if bits == 0:
        return 0
    return int(np.int64(word >> np.uint64(64 - bits)))


@_kernel
def _less(keys: NDArray[np.uint64], rows: _Rows, a: int, b: int) -> bool:
    """(keys[a], rows[a]) < (keys[b], rows[b]), keys compared word by word."""
    for w in range(keys.shape[1]):
        if keys[a, w] != keys[b, w]:
            return bool(keys[a, w] < keys[b, w])
    return bool(rows[a] < rows[b])


@_kernel
def _swap(keys: NDArray[np.uint64], rows: _Rows, a: int, b: int) -> None:
    for w in range(keys.shape[1]):
        keys[a, w], keys[b, w] = keys[b, w], keys[a, w]
    rows[a], rows[b] = rows[b], rows[a]


@_kernel
def _sift_down(keys: NDArray[np.uint64], rows: _Rows, lo: int, root: int, n: int) -> None:
    """Restore the max-heap of entries lo..lo+n-1 below position root (0-based)."""
    while 2 * root + 1 < n:
        child = 2 * root + 1
        if child + 1 < n and _less(keys, rows, lo + child, lo + child + 1):
            child += 1
        if not _less(keys, rows, lo + root, lo + child):
            return
        _swap(keys, rows, lo + root, lo + child)
        root = child


@_kernel
def _sort_range(keys: NDArray[np.uint64], rows: _Rows, lo: int, hi: int) -> None:
    """Sort entries lo..hi-1 by (key, row) in place: insertion sort when few
    (the usual bucket), heapsort when many (skewed keys: O(k log k), no extra memory)."""
    n = hi - lo
    if n <= _INSERTION_MAX:
        for i in range(lo + 1, hi):
            j = i
            while j > lo and _less(keys, rows, j, j - 1):
                _swap(keys, rows, j, j - 1)
                j -= 1
        return
    for root in range(n // 2 - 1, -1, -1):
        _sift_down(keys, rows, lo, root, n)
    for end in range(n - 1, 0, -1):
        _swap(keys, rows, lo, lo + end)
        _sift_down(keys, rows, lo, 0, end)


@_kernel
def _build(
    words: NDArray[np.uint64],
    rows: NDArray[np.int64],
    bits: int,
    keys: NDArray[np.uint64],
    out_rows: _Rows,
) -> NDArray[np.int64]:
    """keys, out_rows = words, rows sorted by (key, row); returns the (2**bits + 1,)
    offsets of the buckets of the top ``bits`` bits of the first word."""
    n = words.shape[0]
    start = np.zeros((1 << bits) + 1, dtype=np.int64)
    for i in range(n):
        start[_bucket(words[i, 0], bits) + 1] += 1
    for b in range(1 << bits):
        start[b + 1] += start[b]
    cursor = start[:-1].copy()
    for i in range(n):
        b = _bucket(words[i, 0], bits)
        at = cursor[b]
        for w in range(words.shape[1]):  # 2x faster than keys[at] = words[i]
            keys[at, w] = words[i, w]
        out_rows[at] = rows[i]
        cursor[b] = at + 1
    for b in range(1 << bits):
        if start[b + 1] - start[b] > 1:
            _sort_range(keys, out_rows, start[b], start[b + 1])
    return start


@_kernel
def _compare(keys: NDArray[np.uint64], i: int, q: NDArray[np.uint64]) -> int:
    """-1, 0 or 1 as keys[i] is below, equal to or above q."""
    for w in range(q.shape[0]):
        if keys[i, w] != q[w]:
            return -1 if keys[i, w] < q[w] else 1
    return 0


@_kernel
def _lookup(
    keys: NDArray[np.uint64],
    directory: NDArray[np.int64],
    bits: int,
    queries: NDArray[np.uint64],
    first: NDArray[np.int64],
    count: NDArray[np.int64],
) -> None:
    """first[i], count[i]: the run of keys equal to queries[i] (count 0 when none).

    A binary search in the query's directory bucket, branch-free and for _GROUP
    queries in step: their loads do not depend on each other, so the cache
    misses overlap (2x the one-query-at-a-time loop on 10M MD5).
    """
    n_words = keys.shape[1]
    base = np.empty(_GROUP, dtype=np.int64)
    size = np.empty(_GROUP, dtype=np.int64)
    for g in range(0, queries.shape[0], _GROUP):
        n = min(_GROUP, queries.shape[0] - g)
        for j in range(n):
            b = _bucket(queries[g + j, 0], bits)
            base[j], size[j] = directory[b], directory[b + 1] - directory[b]
        more = True
        while more:  # halve every range until one key is left
            more = False
            for j in range(n):
                if size[j] > 1:
                    half = size[j] >> 1
                    i = base[j] + half
                    below, equal = False, True  # keys[i - 1] < q, word by word
                    for w in range(n_words):
                        k, qw = keys[i - 1, w], queries[g + j, w]
                        below |= equal & (k < qw)
                        equal &= k == qw
                    if below:
                        base[j] = i
                    size[j] -= half
                    more |= size[j] > 1
        for j in range(n):
            q = queries[g + j]
            end = directory[_bucket(q[0], bits) + 1]
            lo = base[j]
            if lo < end and _compare(keys, lo, q) < 0:
                lo += 1
            first[g + j] = lo
            hi = lo
            while hi < end and _compare(keys, hi, q) == 0:  # duplicates: rare and few
                hi += 1
            count[g + j] = hi - lo


@_kernel
def _gather(rows: _Rows, first: NDArray[np.int64], count: NDArray[np.int64]) -> NDArray[np.int64]:
    """The rows of every run, one after the other, as int64."""
    out = np.empty(count.sum(), dtype=np.int64)
    k = 0
    for i in range(first.shape[0]):
        for j in range(first[i], first[i] + count[i]):
            out[k] = rows[j]
            k += 1
    return out


# ----------------------------------------------------------------------------- index


def _words_of(values: NDArray[np.uint8], width: int, what: str) -> NDArray[np.uint64]:
    """(N, width) uint8 -> (N, ceil(width / 8)) big-endian uint64 words, zero padded."""
    if values.dtype != np.uint8 or values.ndim != 2 or values.shape[1] != width:
        raise ValueError(f"{what} must be (N, {width}) uint8, got {values.shape} {values.dtype}")
    if width % 8 == 0:
        padded = np.ascontiguousarray(values)
    else:
        padded = np.zeros((len(values), -(-width // 8) * 8), dtype=np.uint8)
        padded[:, :width] = values
    return padded.view(">u8").astype(np.uint64)


class ExactIndex(ArrayIndex):
    """All rows whose value equals a query, for a batch of queries at once.

    Built from ``values`` (M, W) uint8 and ``rows`` (M,) int64 (the caller's
    id of each value; duplicates of a value are kept, each with its row).
    Host memory, numba kernels; O(M) to build on uniform keys (digests),
    O(Q log M) to look up. Saved and mapped back as ``ArrayIndex`` says:
    ``keys``, ``rows`` and the bucket ``directory``.
    """

    ARRAYS: ClassVar[tuple[str, ...]] = ("keys", "rows", "directory")
    BOUNDS: ClassVar[tuple[str, ...]] = ("directory",)

    def __init__(self, values: NDArray[np.uint8], rows: NDArray[np.int64]) -> None:
        check_values(values, rows)
        width, n = int(values.shape[1]), len(values)
        words = _words_of(values, width, "values")
        rows = np.asarray(rows, dtype=np.int64)
        keys = np.empty_like(words)
        small = fits_u32(rows)
        out_rows: _Rows = np.empty(n, dtype=np.uint32) if small else np.empty(n, dtype=np.int64)
        sort_bits = max(0, min(_SORT_BITS, n.bit_length() - 2))
        start = _build(words, rows, sort_bits, keys, out_rows)
        del words
        dir_bits = max(0, min(_DIR_BITS, n.bit_length() - 5))
        directory = start[:: 1 << (sort_bits - dir_bits)] if sort_bits > dir_bits else start
        directory = np.ascontiguousarray(directory)
        self._adopt(width, {"keys": keys, "rows": out_rows, "directory": directory})

    def _adopt(self, width: int, arrays: dict[str, NDArray[Any]]) -> None:
        super()._adopt(width, arrays)
        self._keys: NDArray[np.uint64] = arrays["keys"]
        self._rows: _Rows = arrays["rows"]
        self._directory: NDArray[np.int64] = arrays["directory"]
        self._bits = (len(self._directory) - 1).bit_length() - 1

    @classmethod
    def _layout(
        cls, width: int, n: int, arrays: Mapping[str, NDArray[Any]]
    ) -> dict[str, tuple[np.dtype[Any], tuple[int, ...]]]:
        directory = arrays["directory"]
        size = len(directory) - 1
        if directory.dtype != np.int64 or directory.ndim != 1 or size < 1 or size & (size - 1):
            raise ValueError(f"directory must be (2**b + 1,) int64, got {directory.shape}")
        return {"keys": (np.dtype(np.uint64), (n, -(-width // 8)))}

    @property
    def keys(self) -> NDArray[np.uint64]:
        """(N, ceil(W / 8)) uint64: the stored keys, sorted (read-only; what
        ``kernels.exact`` searches on a device)."""
        return self._keys

    def stored(self) -> tuple[NDArray[np.uint8], NDArray[np.int64]]:
        """Every stored value as (M, W) uint8 bytes with its (M,) int64 row, in
        stored order (a copy): what it was built from, for list deltas
        (appliance.bulk.delta) when no parsed list is at hand."""
        raw = self._keys.astype(">u8").view(np.uint8).reshape(len(self._keys), -1)
        return np.ascontiguousarray(raw[:, :self.width]), self._rows.astype(np.int64)

    def search(self, queries: NDArray[np.uint8], radius: int = 0) -> list[Found]:
        """The search contract of every index (see ``HammingIndex.search``): per
        query its rows, ascending, each at distance 0 (``radius`` is ignored:
        only equal values match)."""
        return [(rows, np.zeros(len(rows), dtype=np.int32)) for rows in self.lookup(queries)]

    def find(self, queries: NDArray[np.uint8]) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
        """(first, count), both (Q,) int64: the rows of query i are
        ``rows[first[i]:first[i] + count[i]]`` in ``to_arrays()``, count 0 when none."""
        q_words = _words_of(queries, self.width, "queries")
        first = np.empty(len(q_words), dtype=np.int64)
        count = np.empty(len(q_words), dtype=np.int64)
        _lookup(self._keys, self._directory, self._bits, q_words, first, count)
        return first, count

    def lookup(self, queries: NDArray[np.uint8]) -> list[NDArray[np.int64]]:
        """For each query row of ``queries`` (Q, W) uint8, the (k,) int64 rows
        whose value equals it, ascending; an empty array when there is none.

        The returned arrays are read-only.
        """
        return self.rows_of(*self.find(queries))

    def query_words(self, queries: NDArray[np.uint8]) -> NDArray[np.uint64]:
        """(Q, W) uint8 queries as the (Q, K) uint64 words ``keys`` are sorted by."""
        return _words_of(queries, self.width, "queries")

    def rows_of(
        self, first: NDArray[np.int64], count: NDArray[np.int64]
    ) -> list[NDArray[np.int64]]:
        """``lookup``'s answer from ``find``'s (first, count), wherever they were
        computed (the GPU kernel of kernels.exact gives the same two arrays)."""
        first = np.ascontiguousarray(first, dtype=np.int64)
        count = np.ascontiguousarray(count, dtype=np.int64)
        flat = _gather(self._rows, first, count)
        flat.flags.writeable = False
        starts = np.cumsum(count) - count
        return [
            flat[lo : lo + k] if k else _EMPTY_ROWS
            for lo, k in zip(starts.tolist(), count.tolist(), strict=True)
        ]
