"""Exact Euclidean-radius search for byte vectors (PhotoDNA: 144 bytes).

A hit is ``||x - y|| <= radius``, reported as ``round(||x - y||)``. Three paths,
all exact (no false negatives, no false positives):

- radius 0 (the default: identical vectors): an ``ExactIndex`` hash lookup;
- filter then verify: each vector is cut into ``BLOCKS`` runs of bytes
  (PhotoDNA: 16 x 9) and projected onto their sums ``s_b``. By Cauchy-Schwarz,
  ``sum_b (s_b(x) - s_b(y))**2 <= n * ||x - y||**2`` (n: the longest run, 9),
  so every hit lies within ``sqrt(n) * radius`` of the query in block-sum
  space. A ``cKDTree`` on the (M, 16) sums finds those candidates as the k
  nearest within that bound, k = 16, then 256, then 4096 for the queries that
  filled k (arrays of bounded size, unlike ball queries' lists); they are then
  checked on the full vectors. A query with more goes to brute force;
- brute force, for small lists and radii too large for the tree:
  ``||x||**2 + ||y||**2 - 2 x.y`` by a float32 matrix product, exact for
  W <= 258 bytes (every partial sum is an integer below 2**24).

The tree pays while the bound is small beside the spread of the block sums:
a 16-dimensional tree splits each dimension about once, and a wider ball
meets most of its cells (``TREE_MAX_SPREAD``). The tree and the exact index
are built on first use (a compiled snapshot stores only values and rows),
under a lock, as searches come from several threads. Temporaries stay below
about 40 MiB whatever Q and M are, besides the hits and a few bytes a query.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any

import numpy as np
from numpy.typing import NDArray

from appliance.index.exact import ExactIndex
from appliance.index.hamming import Found, check_queries, group_hits

BLOCKS = 16
# At or below this many rows brute force wins outright: a tree query costs
# microseconds, a brute-force row nanoseconds.
BRUTE_MAX_ROWS = 512
# The tree is used while the filter radius is at most this many times the
# median standard deviation of a block sum over the list. Measured on
# clustered and uniform random PhotoDNA-like data, 1000 queries: at 0.7 the
# tree is 6-25x faster than brute force, at 1.35 1.4-2.6x, at 1.7 0.7-2.3x
# (slower on 200k rows), at 2.0 0.3-1.9x.
TREE_MAX_SPREAD = 1.5
# Neighbour counts asked of the tree in turn: a query that still has k
# candidates at the last step (or past n / 8: verifying a pair costs ~25
# brute-force pairs) goes to brute force.
LADDER = (16, 256, 4096)
# Queries sent down the ladder at once: how many go before dense candidates
# (most queries overflowing the ladder) are noticed.
CHUNK = 512
# Query x neighbour answers per tree search: 2**16, 1 MiB (int64 + float64).
TREE_PAIRS = 1 << 16
# Candidate pairs verified at once: (VERIFY, W) float32, 9 MiB for PhotoDNA.
VERIFY = 1 << 14
# Brute-force blocks of queries x rows: 2**21 pairs, 8 MiB per float32 matrix.
PAIRS = 1 << 21
BRUTE_ROWS = 4096
BRUTE_QUERIES = 1 << 14
# Queries per exact-index lookup (its words: 144 bytes a query).
_LOOKUPS = 1 << 16

_MAX_BYTE = 255
_Pairs = tuple[NDArray[np.intp], NDArray[np.intp], NDArray[np.int64]]  # query, position, d2


def _float_type(width: int) -> type[np.floating[Any]]:
    """float32 when every dot product of two rows is an integer below 2**24
    (so every partial sum is exact whatever the summation order), else float64."""
    return np.float32 if width * _MAX_BYTE**2 < 1 << 24 else np.float64


def _joined(parts: list[_Pairs]) -> _Pairs:
    if not parts:
        return np.empty(0, np.intp), np.empty(0, np.intp), np.empty(0, np.int64)
    qi, pos, d2 = (np.concatenate(x) for x in zip(*parts, strict=True))
    return qi, pos, d2


class EuclideanIndex:
    """All rows within a Euclidean radius of each query, for a batch of queries.

    Built from ``values`` (M, W) uint8 and ``rows`` (M,) int64, the caller's id
    of each value (duplicates allowed). Host memory: the values as given (not
    copied), plus, once used, a tree of (M, 16) float64 block sums (about 140
    bytes per row) or the exact index (radius 0, 150 bytes per PhotoDNA row).
    """

    def __init__(self, values: NDArray[np.uint8], rows: NDArray[np.int64]) -> None:
        if values.ndim != 2 or values.dtype != np.uint8:
            raise ValueError(f"values must be (M, W) uint8, got {values.shape} {values.dtype}")
        if rows.shape != (values.shape[0],):
            raise ValueError(f"rows must be ({values.shape[0]},), got {rows.shape}")
        self.width = int(values.shape[1])
        self._values, self._rows = values, rows
        # Block b is bytes starts[b] .. starts[b + 1] - 1, `longest` bytes at most.
        parts = np.array_split(np.arange(self.width), max(1, min(BLOCKS, self.width)))
        self._starts = np.array([p[0] for p in parts if len(p)], dtype=np.intp)
        self._longest = max(1, max(len(p) for p in parts))
        self._float = _float_type(self.width)
        self._lock = threading.Lock()
        self._tree: Any = None
        self._spread: float | None = None
        self._exact: ExactIndex | None = None

    def __len__(self) -> int:
        return len(self._rows)

    def to_arrays(self) -> dict[str, NDArray[Any]]:
        """The raw values and rows (no copy): all a compiled snapshot stores."""
        return {"values": self._values, "rows": self._rows}

    def stored(self) -> tuple[NDArray[np.uint8], NDArray[np.int64]]:
        """The values and their rows as built (see ExactIndex.stored)."""
        return np.ascontiguousarray(self._values), np.asarray(self._rows, dtype=np.int64)

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, NDArray[Any]]) -> EuclideanIndex:
        """The index of ``to_arrays()``'s arrays (read-only maps welcome); builds nothing."""
        return cls(np.asarray(arrays["values"]), np.asarray(arrays["rows"]))

    def search(self, queries: NDArray[np.uint8], radius: int) -> list[Found]:
        """For each row of ``queries`` (Q, W) uint8, every row within ``radius``.

        Returns one ``(rows (k,) int64, distances (k,) int32)`` per query,
        distances ``round(sqrt(d2))``, sorted by distance, then row.
        """
        check_queries(queries, self.width, radius)
        if not len(queries):
            return []
        if radius == 0:
            return self._identical(queries)
        # No squared distance exceeds W * 255**2: clamping changes no answer
        # and keeps the brute force's float32 thresholds exact.
        r2 = min(radius * radius, self.width * _MAX_BYTE**2)
        # Squared block-sum distances are integers, a hit's <= longest * r2: a
        # margin of 0.5 no float rounding can eat, that admits no integer above.
        bound = float(np.sqrt(self._longest * r2 + 0.5))
        if len(self) > BRUTE_MAX_ROWS and bound <= TREE_MAX_SPREAD * self._block_spread():
            qi, pos, d2 = self._filtered(queries, r2, bound)
        else:
            qi, pos, d2 = self._brute(queries, r2)
        dist = np.rint(np.sqrt(d2)).astype(np.int32)
        return group_hits(qi, np.asarray(self._rows[pos], dtype=np.int64), dist, len(queries))

    # ------------------------------------------------------------------ paths

    def _identical(self, queries: NDArray[np.uint8]) -> list[Found]:
        index = self._exact_index()
        found = [r for lo in range(0, len(queries), _LOOKUPS)
                 for r in index.lookup(queries[lo : lo + _LOOKUPS])]
        # One read-only zero array, sliced: no allocation per query.
        zeros = np.zeros(max(len(r) for r in found), dtype=np.int32)
        zeros.flags.writeable = False
        return [(rows, zeros[: len(rows)]) for rows in found]

    def _filtered(self, queries: NDArray[np.uint8], r2: int, bound: float) -> _Pairs:
        """Tree candidates within ``bound`` in block-sum space, verified; queries
        with too many candidates go to brute force."""
        tree, n = self._kd_tree(), len(self)
        ladder = [k for k in LADDER if k <= max(LADDER[0], n // 8)]
        hits: list[_Pairs] = []
        brute: list[NDArray[np.intp]] = []
        for start in range(0, len(queries), CHUNK):
            if start and sum(map(len, brute)) > start // 2:
                # Most queries so far had too many candidates (dense clusters):
                # the rest go straight to brute force rather than down the ladder.
                brute.append(np.arange(start, len(queries), dtype=np.intp))
                break
            pending = np.arange(start, min(start + CHUNK, len(queries)), dtype=np.intp)
            sums = self._block_sums(queries[pending])
            for k in ladder:
                more: list[NDArray[np.intp]] = []
                step = max(1, TREE_PAIRS // k)
                for lo in range(0, len(pending), step):
                    at = pending[lo : lo + step]
                    _, idx = tree.query(sums[lo : lo + step], k=k, distance_upper_bound=bound)
                    idx = np.asarray(idx, dtype=np.intp).reshape(len(at), k)
                    # Absent neighbours are n. All k found: there may be more.
                    full = idx[:, -1] < n
                    qi, col = np.nonzero((idx < n) & ~full[:, None])
                    hits.append(self._verify(queries, at[qi], idx[qi, col], r2))
                    more.append(lo + np.flatnonzero(full))
                kept = np.concatenate(more)
                pending, sums = pending[kept], sums[kept]
                if not len(pending):
                    break
            brute.append(pending)
        if brute:
            hits.append(self._brute(queries, r2, np.concatenate(brute)))
        return _joined(hits)

    def _verify(
        self, queries: NDArray[np.uint8], qi: NDArray[np.intp], pos: NDArray[np.intp], r2: int
    ) -> _Pairs:
        """Of the pairs (query qi[i], position pos[i]), those with d2 <= r2, and
        their d2: full vectors, VERIFY pairs at a time, exact (see _float_type)."""
        kept: list[_Pairs] = []
        for lo in range(0, len(qi), VERIFY):
            q, p = qi[lo : lo + VERIFY], pos[lo : lo + VERIFY]
            diff = queries[q].astype(self._float)
            diff -= self._values[p]
            d2 = np.einsum("ij,ij->i", diff, diff).astype(np.int64)
            ok = d2 <= r2
            kept.append((q[ok], p[ok], d2[ok]))
        return _joined(kept)

    def _brute(
        self, queries: NDArray[np.uint8], r2: int, subset: NDArray[np.intp] | None = None
    ) -> _Pairs:
        """Every (query, position, d2) with d2 <= r2, for the queries of ``subset``
        (indices; all when None), by blocks of queries x rows."""
        n, fl = len(self), self._float
        picked = np.arange(len(queries), dtype=np.intp) if subset is None else subset
        rows_step = min(BRUTE_ROWS, max(1, n))
        q_step = max(1, min(BRUTE_QUERIES, PAIRS // rows_step))
        out: list[_Pairs] = []
        for q0 in range(0, len(picked), q_step):
            at = picked[q0 : q0 + q_step]
            qf = queries[at].astype(fl)
            nq = np.einsum("ij,ij->i", qf, qf).astype(np.int64)
            # r2 - nq lies in [-W*255**2, W*255**2]: exact in float32 (W <= 258).
            limit = (r2 - nq + 2).astype(fl)[:, None]
            for m0 in range(0, n, rows_step):
                vf = self._values[m0 : m0 + rows_step].astype(fl)
                nm = np.einsum("ij,ij->i", vf, vf).astype(np.int64)
                xy = qf @ vf.T  # exact integers (see _float_type)
                # d2 <= r2  <=>  nm - 2 xy <= r2 - nq. In float32, nm - 2 xy
                # (|.| < 2**25) rounds by at most 1: a margin of 2 (in limit)
                # keeps every hit, and the survivors' d2 is redone in int64.
                approx = xy * -2
                approx += nm.astype(fl)
                qi, col = np.nonzero(approx <= limit)
                del approx
                d2 = nq[qi] + nm[col] - 2 * xy[qi, col].astype(np.int64)
                ok = d2 <= r2
                out.append((at[qi[ok]], col[ok] + m0, d2[ok]))
        return _joined(out)

    # ------------------------------------------------------------------ lazy parts

    def _block_sums(self, values: NDArray[np.uint8]) -> NDArray[np.float64]:
        """(N, W) uint8 -> (N, blocks) float64 sums of each block (exact integers)."""
        sums: NDArray[np.float64] = np.add.reduceat(values, self._starts, axis=1, dtype=np.float64)
        return sums

    def _block_spread(self) -> float:
        """Median over blocks of the standard deviation of a block sum, on about
        8192 rows spread over the list (an estimate is enough to pick a path)."""
        with self._lock:
            if self._spread is None:
                sample = self._values[:: max(1, len(self) // 8192)]
                self._spread = float(np.median(self._block_sums(sample).std(axis=0)))
            return self._spread

    def _kd_tree(self) -> Any:
        with self._lock:  # uncontended once built: microseconds
            if self._tree is None:
                sums = np.empty((len(self), len(self._starts)), dtype=np.float64)
                step = 1 << 13  # reduceat casts its input to float64 first: 9 MiB at a time
                for lo in range(0, len(self), step):
                    sums[lo : lo + step] = self._block_sums(self._values[lo : lo + step])
                # Imported here: SciPy's spatial module costs 0.2 s at every
                # start, and only a PhotoDNA search above radius 0 needs it.
                from scipy.spatial import cKDTree

                self._tree = cKDTree(sums, copy_data=False)
            return self._tree

    def _exact_index(self) -> ExactIndex:
        with self._lock:
            if self._exact is None:
                self._exact = ExactIndex(self._values, np.asarray(self._rows, dtype=np.int64))
            return self._exact
