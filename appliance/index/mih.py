"""Multi-index hashing (MIH): exact Hamming-radius search without scanning every entry.

Each hash of W bytes is cut into ``m = ceil(W / 2)`` chunks of 16 bits (PDQ,
256 bits: 16 chunks; the 64-bit imagehash family: 4). If two hashes differ in
at most r bits, some chunk differs in at most ``s = r // m`` bits (pigeonhole:
otherwise the total would be at least m * (s + 1) > r). So for each chunk we
probe the buckets of the query's chunk value xor every 16-bit mask of at most
s bits (s = 1 for PDQ at 31: 17 buckets per chunk), and verify each candidate
by its full distance. Nothing within the radius is missed; the result is the
one ``HammingIndex`` (the brute-force reference) gives, in the same order.

Layout, all plain arrays so that a snapshot can memory-map them (``to_arrays``):

- ``words`` (N, ceil(W / 8)) uint64: the hashes, zero padded, sorted by chunk 0
  (a counting sort, stable), so chunk 0 needs no id table and reads them in order;
- ``rows`` (N,) uint32 (int64 when a row is negative or >= 2**32): the caller's
  row of each stored position;
- ``offsets`` (m, 65537) uint32 (int64 from 2**32 entries): for chunk c, the
  entries whose chunk value is v are ``ids[c - 1][offsets[c, v]:offsets[c, v + 1]]``
  (for chunk 0, stored positions ``offsets[0, v]`` up to ``offsets[0, v + 1]``);
- ``ids`` (m - 1, N) uint32 (int64 from 2**32 entries): stored positions by
  chunk value, ascending within a bucket (counting sort, O(N) per chunk).

PDQ: 32 B + 4 B + 15 x 4 B = 96 bytes per entry, plus 4 MiB of offsets.

A candidate shows up once per chunk within s bits of the query's, so it is
reported only from the first such chunk (checked on the few that pass the
distance test): no visited array, no random write per candidate.

When the probes would touch too much of the index (``MAX_PROBES``: a large
radius for the chunk count), a full scan is cheaper and is used instead.
Kernels are ``njit(cache=True, nogil=True)`` and single-threaded: callers may
search from several threads at once.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from functools import cache
from typing import Any, ClassVar

import numpy as np
from numpy.typing import NDArray

from appliance.index.arrays import ArrayIndex, Rows, check_values, fits_u32, index_dtype
from appliance.index.hamming import Found, check_queries, group_hits, pack
from appliance.jit import kernel as _kernel
from appliance.jit import prefetch as _prefetch

CHUNK_BITS = 16
_BUCKETS = 1 << CHUNK_BITS
# Probes per query (chunks x masks) above which the full scan is used. A probe
# reads one bucket of N / 65536 entries on uniform data, and each candidate costs
# a random cache line where the scan streams. Measured on 1M PDQ: 16 x 137
# probes (3.3% of N, radius 32..47) are 2.8x faster than the scan, 16 x 697
# (17%, radius 48..63) 1.8x slower; 4096 lies between.
MAX_PROBES = 4096

_Ids = NDArray[np.uint32] | NDArray[np.int64]
_I64 = NDArray[np.int64]
_I32 = NDArray[np.int32]


# ----------------------------------------------------------------------------- kernels


@_kernel
def _popcount(x: np.uint64) -> np.uint64:
    """Set bits of a uint64 (the SWAR form, which LLVM turns into one popcnt)."""
    x = x - ((x >> np.uint64(1)) & np.uint64(0x5555555555555555))
    x = (x & np.uint64(0x3333333333333333)) + ((x >> np.uint64(2)) & np.uint64(0x3333333333333333))
    x = (x + (x >> np.uint64(4))) & np.uint64(0x0F0F0F0F0F0F0F0F)
    return (x * np.uint64(0x0101010101010101)) >> np.uint64(56)


@_kernel
def _chunk(word: np.uint64, c: int) -> int:
    """Value of 16-bit chunk c (0..m-1) of a hash, given the uint64 word c // 4 holds."""
    return int((word >> np.uint64((c & 3) * 16)) & np.uint64(0xFFFF))


@_kernel
def _distance(words: NDArray[np.uint64], e: int, q: NDArray[np.uint64]) -> int:
    """Hamming distance between stored entry e of words (N, nw) and q (nw,)."""
    if q.shape[0] == 4:  # PDQ, unrolled (the loop below measures 1.7x slower)
        return int(
            _popcount(words[e, 0] ^ q[0])
            + _popcount(words[e, 1] ^ q[1])
            + _popcount(words[e, 2] ^ q[2])
            + _popcount(words[e, 3] ^ q[3])
        )
    d = np.uint64(0)
    for w in range(q.shape[0]):
        d += _popcount(words[e, w] ^ q[w])
    return int(d)


@_kernel
def _counting_sort(words: NDArray[np.uint64], c: int, offsets: _Ids, ids: _Ids) -> None:
    """Fill offsets (65537,) and ids (N,) with entry positions sorted (stably) by chunk c."""
    n = words.shape[0]
    w = c >> 2
    offsets[:] = 0
    for e in range(n):
        offsets[_chunk(words[e, w], c) + 1] += 1
    cursor = np.empty(_BUCKETS, dtype=np.int64)
    total = 0
    for v in range(_BUCKETS):
        cursor[v] = total
        total += offsets[v + 1]
        offsets[v + 1] = total
    for e in range(n):
        v = _chunk(words[e, w], c)
        ids[cursor[v]] = e
        cursor[v] += 1


@_kernel
def _take_rows(a: NDArray[np.uint64], order: NDArray[np.int64]) -> NDArray[np.uint64]:
    """a[order] for a (N, k): NumPy's fancy indexing of rows is 6x slower."""
    out = np.empty((order.shape[0], a.shape[1]), dtype=a.dtype)
    for i in range(order.shape[0]):
        for j in range(a.shape[1]):
            out[i, j] = a[order[i], j]
    return out


@_kernel
def _first_chunk(words: NDArray[np.uint64], e: int, q: NDArray[np.uint64], c: int, s: int) -> bool:
    """True when no chunk before c of entry e is within s bits of q's: chunk c
    is the first that finds e, so e is reported from it and from no other."""
    for c2 in range(c):
        x = (words[e, c2 >> 2] ^ q[c2 >> 2]) >> np.uint64((c2 & 3) * 16)
        if _popcount(x & np.uint64(0xFFFF)) <= s:
            return False
    return True


# Candidates gathered (their lines prefetched) before they are verified, and how
# many buckets ahead the id runs are prefetched. Measured on 1M PDQ: 1.9x the
# plain loop (which waits on one miss after another); 256..2048 and 8..16 alike.
_BLOCK = 512
_AHEAD = 16


@_kernel
def _verify(
    words: NDArray[np.uint64],
    q: NDArray[np.uint64],
    qi: int,
    radius: int,
    s: int,
    cand: NDArray[np.int64],
    cand_chunk: NDArray[np.int64],
    fill: int,
    out_q: NDArray[np.int64],
    out_p: NDArray[np.int64],
    out_d: NDArray[np.int32],
    n: int,
) -> int:
    """Append the first fill candidates within radius of q to out; the new count."""
    for j in range(fill):
        e = cand[j]
        d = _distance(words, e, q)
        if d <= radius and _first_chunk(words, e, q, int(cand_chunk[j]), s):
            if n < out_q.shape[0]:
                out_q[n], out_p[n], out_d[n] = qi, e, d
            n += 1
    return n


@_kernel
def _probe(
    words: NDArray[np.uint64],
    offsets: _Ids,
    ids: _Ids,
    queries: NDArray[np.uint64],
    radius: int,
    masks: NDArray[np.int64],
    s: int,
    out_q: NDArray[np.int64],
    out_p: NDArray[np.int64],
    out_d: NDArray[np.int32],
) -> int:
    """(query, stored position, distance) of every entry within radius of each query,
    grouped by query, into out_q, out_p, out_d (K,); returns how many there are.

    words (N, nw) uint64, offsets (m, 65537), ids (m - 1, N), queries (Q, nw)
    uint64, masks: the 16-bit masks of at most s bits. Hits beyond K are counted,
    not written: the caller runs again with room for all.
    """
    n_chunks, n_masks = offsets.shape[0], masks.shape[0]
    n_buckets = n_chunks * n_masks
    lo = np.empty(n_buckets, dtype=np.int64)
    hi = np.empty(n_buckets, dtype=np.int64)
    cand = np.empty(_BLOCK, dtype=np.int64)
    cand_chunk = np.empty(_BLOCK, dtype=np.int64)
    n = 0
    for qi in range(queries.shape[0]):
        q = queries[qi]
        for c in range(n_chunks):
            qc = _chunk(q[c >> 2], c)
            for t in range(n_masks):
                v = qc ^ masks[t]
                lo[c * n_masks + t] = offsets[c, v]
                hi[c * n_masks + t] = offsets[c, v + 1]
        fill = 0
        for b in range(-_AHEAD, n_buckets):
            # The run of ids of a bucket ahead: its first and last lines (the
            # hardware prefetcher brings those between).
            ahead = b + _AHEAD
            if n_masks <= ahead < n_buckets and hi[ahead] > lo[ahead]:
                _prefetch(ids, ahead // n_masks - 1, lo[ahead])
                _prefetch(ids, ahead // n_masks - 1, hi[ahead] - 1)
            if b < 0:
                continue
            c = b // n_masks
            k = lo[b]
            while k < hi[b]:
                take = min(hi[b] - k, _BLOCK - fill)
                if c == 0:  # chunk 0 is the stored order: its ids are the positions
                    for j in range(take):
                        _prefetch(words, k + j, 0)
                        cand[fill + j], cand_chunk[fill + j] = k + j, 0
                else:
                    for j in range(take):
                        e = np.int64(ids[c - 1, k + j])
                        _prefetch(words, e, 0)
                        cand[fill + j], cand_chunk[fill + j] = e, c
                fill += take
                k += take
                if fill == _BLOCK:
                    n = _verify(
                        words, q, qi, radius, s, cand, cand_chunk, fill, out_q, out_p, out_d, n
                    )
                    fill = 0
        n = _verify(words, q, qi, radius, s, cand, cand_chunk, fill, out_q, out_p, out_d, n)
    return n


@_kernel
def _scan(
    words: NDArray[np.uint64],
    queries: NDArray[np.uint64],
    radius: int,
    out_q: NDArray[np.int64],
    out_p: NDArray[np.int64],
    out_d: NDArray[np.int32],
) -> int:
    """Like _probe, by comparing every query with every entry (blocks of entries
    that stay in L1/L2 while all queries pass over them); not grouped by query."""
    n_entries = words.shape[0]
    block = 2048
    n = 0
    for start in range(0, n_entries, block):
        stop = min(n_entries, start + block)
        for qi in range(queries.shape[0]):
            q = queries[qi]
            for e in range(start, stop):
                d = _distance(words, e, q)
                if d <= radius:
                    if n < out_q.shape[0]:
                        out_q[n], out_p[n], out_d[n] = qi, e, d
                    n += 1
    return n


# ----------------------------------------------------------------------------- index


@cache
def _masks(s: int) -> NDArray[np.int64]:
    """The 16-bit masks of at most s set bits, fewest bits first (read-only)."""
    values = np.arange(_BUCKETS, dtype=np.int64)
    bits = np.bitwise_count(values)
    masks = values[np.argsort(bits, kind="stable")][: int(np.sum(bits <= s))]
    masks.flags.writeable = False
    return masks


def _pack(values: NDArray[np.uint8]) -> NDArray[np.uint64]:
    """(N, W) uint8 -> (N, ceil(W / 8)) uint64: a view when W is a multiple of 8
    and the rows are contiguous (PDQ, the imagehash family), else ``pack``'s copy."""
    wide = values.ndim == 2 and values.shape[1] % 8 == 0
    if values.dtype == np.uint8 and wide and values.flags.c_contiguous:
        return values.view(np.uint64)
    return pack(values)


def _hits(kernel: Callable[..., int], *args: object, room: int) -> tuple[_I64, _I64, _I32]:
    """The (query, position, distance) hits of ``kernel(*args, out_q, out_p, out_d)``:
    run with room for that many, and once more with room for all when there were
    more (rare: a batch of queries with many near-duplicates each)."""
    while True:
        out_q, out_p = np.empty(room, dtype=np.int64), np.empty(room, dtype=np.int64)
        out_d = np.empty(room, dtype=np.int32)
        n = int(kernel(*args, out_q, out_p, out_d))
        if n <= room:
            return out_q[:n], out_p[:n], out_d[:n]
        room = n


class MultiIndexHamming(ArrayIndex):
    """Entries within a Hamming radius of each query, for a batch of queries.

    A drop-in for ``HammingIndex``: built from ``values`` (M, W) uint8 (W = 32
    for PDQ, 8 for the imagehash family) and ``rows`` (M,) int64, the caller's
    id of each value; ``search`` has the same contract and result order. Host
    memory, numba kernels; O(M) to build. Saved and mapped back as
    ``ArrayIndex`` says: ``words``, ``rows``, the ``offsets`` directories, ``ids``.
    """

    ARRAYS: ClassVar[tuple[str, ...]] = ("words", "rows", "offsets", "ids")
    BOUNDS: ClassVar[tuple[str, ...]] = ("offsets",)

    def __init__(self, values: NDArray[np.uint8], rows: NDArray[np.int64]) -> None:
        check_values(values, rows, min_width=1)
        n, width = values.shape
        n_chunks = -(-width // 2)
        packed = _pack(values)
        dtype = index_dtype(n)
        offsets = np.empty((n_chunks, _BUCKETS + 1), dtype=dtype)
        order = np.empty(n, dtype=np.int64)
        _counting_sort(packed, 0, offsets[0], order)
        words = _take_rows(packed, order)
        del packed
        rows = np.asarray(rows, dtype=np.int64)[order]
        ids = np.empty((n_chunks - 1, n), dtype=dtype)
        for c in range(1, n_chunks):
            _counting_sort(words, c, offsets[c], ids[c - 1])
        stored: Rows = rows.astype(np.uint32) if fits_u32(rows) else rows
        self._adopt(width, {"words": words, "rows": stored, "offsets": offsets, "ids": ids})

    def _adopt(self, width: int, arrays: dict[str, NDArray[Any]]) -> None:
        super()._adopt(width, arrays)
        self._words: NDArray[np.uint64] = arrays["words"]
        self._rows: Rows = arrays["rows"]
        self._offsets: _Ids = arrays["offsets"]
        self._ids: _Ids = arrays["ids"]
        self.n_chunks = int(self._offsets.shape[0])

    @classmethod
    def _layout(
        cls, width: int, n: int, arrays: Mapping[str, NDArray[Any]]
    ) -> dict[str, tuple[np.dtype[Any], tuple[int, ...]]]:
        n_chunks, dtype = -(-width // 2), np.dtype(index_dtype(n))
        return {
            "words": (np.dtype(np.uint64), (n, -(-width // 8))),
            "offsets": (dtype, (n_chunks, _BUCKETS + 1)),
            "ids": (dtype, (n_chunks - 1, n)),
        }

    @property
    def words(self) -> NDArray[np.uint64]:
        """(N, ceil(W / 8)) uint64: the stored hashes, packed as ``query_words``
        packs queries, in stored order (read-only)."""
        return self._words

    def stored(self) -> tuple[NDArray[np.uint8], NDArray[np.int64]]:
        """Every stored hash as (M, W) uint8 bytes with its (M,) int64 row, in
        stored order (a copy; see ExactIndex.stored)."""
        raw = np.ascontiguousarray(self._words).view(np.uint8).reshape(len(self._words), -1)
        return np.ascontiguousarray(raw[:, :self.width]), self._rows.astype(np.int64)

    def rows_at(self, positions: NDArray[Any]) -> NDArray[np.int64]:
        """The (k,) int64 rows of stored ``positions`` (what a search of ``words`` finds)."""
        rows: NDArray[np.int64] = self._rows[positions].astype(np.int64)
        return rows

    def query_words(self, queries: NDArray[np.uint8], radius: int) -> NDArray[np.uint64]:
        """(Q, W) uint8 queries packed as ``words`` are (checked first)."""
        check_queries(queries, self.width, radius)
        return _pack(queries)

    def probes(self, radius: int) -> int:
        """Buckets one query probes at this radius (chunks x masks of radius // chunks bits)."""
        return self.n_chunks * len(_masks(min(radius // self.n_chunks, CHUNK_BITS)))

    def search(self, queries: NDArray[np.uint8], radius: int) -> list[Found]:
        """For each row of ``queries`` (Q, W) uint8, every entry at distance <= ``radius``.

        Returns one ``(rows (k,) int64, distances (k,) int32)`` per query,
        sorted by distance, then row.
        """
        check_queries(queries, self.width, radius)
        q_words = _pack(queries)
        room = 64 * len(q_words)
        if self.probes(radius) <= MAX_PROBES:
            s = radius // self.n_chunks
            args = (self._words, self._offsets, self._ids, q_words, radius, _masks(s), s)
            qi, pos, dist = _hits(_probe, *args, room=room)
        else:
            qi, pos, dist = _hits(_scan, self._words, q_words, radius, room=room)
        return group_hits(qi, self.rows_at(pos), dist, len(q_words))
