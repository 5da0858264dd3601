"""Index benchmark: ours beside its peers on the same data in the same run, one thread.

    python benchmarks/index.py [--sizes 1000000,10000000] [--quick] [--repeat N]

(a) PDQ at radius 31 (distance <= 31): ``MultiIndexHamming`` against faiss
    ``IndexBinaryMultiHash(256, 16, 16)`` with ``nflip = 1`` (the same 16 x 16-bit
    pigeonhole scheme) and ``IndexBinaryFlat.range_search`` (brute force), on N
    random hashes and 1000 queries: half near-duplicates of entries (0..31 bits
    flipped), half random (a tenth of them with near-duplicates planted in the
    list). faiss's range_search keeps distances < radius, so it is given 32.
    Ours must return exactly what the flat scan returns; the multi-hash recall
    against it is reported. Build time; memory per entry (ours: its arrays'
    nbytes; faiss: the growth of the process's resident set while building).
(b) Exact MD5: ``ExactIndex`` against NumPy sorted void keys and
    ``np.searchsorted`` (the previous ExactIndex), on N random digests (1% of
    them duplicated) and a batch of 100k queries (half present). Both return
    the same per-query row lists; ours also through ``find``, its kernel alone.

Every figure runs on one thread (faiss.omp_set_num_threads(1)); times are
medians over the repeats, except that a peer whose first run takes over 10 s
is timed once.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import faiss
import numpy as np
from numpy.typing import NDArray

from appliance.index.exact import ExactIndex
from appliance.index.mih import MultiIndexHamming

RADIUS = 31
Hits = set[tuple[int, int, int]]  # (query, entry, distance)


def rss_bytes() -> int:
    """Resident set size of this process (psutil-free)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def timed(run: Callable[[], object], repeat: int, budget_s: float = 10.0) -> float:
    """Median seconds of run() over ``repeat`` runs, or one run when it takes over budget_s."""
    times: list[float] = []
    while len(times) < repeat and (not times or times[0] <= budget_s):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def built(make: Callable[[], Any]) -> tuple[Any, float, int]:
    """(make(), seconds, resident bytes it added)."""
    before = rss_bytes()
    start = time.perf_counter()
    obj = make()
    return obj, time.perf_counter() - start, rss_bytes() - before


@dataclass(frozen=True)
class Row:
    name: str
    build_s: float
    bytes_per_entry: float
    rate: float  # queries (or lookups) per second
    note: str = ""


def print_table(title: str, rows: Sequence[Row], unit: str) -> None:
    """The rows of one section, ours first; each peer with ratios of the first
    row to it (q/s: > 1 is ours faster; build s and B/entry: < 1 is ours faster,
    smaller)."""
    print(f"\n{title}")
    header = (
        f"{'index':<36} {'build s':>8} {'B/entry':>8} {unit:>11}   "
        f"{'ours/peer: ' + unit:>16} {'build':>7} {'memory':>7}  note"
    )
    print(header)
    print("-" * len(header))
    ours = rows[0]
    for r in rows:
        peer = not r.name.startswith("ours")
        ratios = (
            f"{ours.rate / r.rate:>15.2f}x {ours.build_s / r.build_s:>6.2f}x "
            f"{ours.bytes_per_entry / r.bytes_per_entry:>6.2f}x"
            if peer
            else f"{'':>16} {'':>7} {'':>7}"
        )
        print(
            f"{r.name:<36} {r.build_s:>8.2f} {r.bytes_per_entry:>8.1f} {r.rate:>11.0f}   "
            f"{ratios}  {r.note}"
        )


# ----------------------------------------------------------------------------- PDQ


def flip(rng: np.random.Generator, value: NDArray[np.uint8], bits: int) -> NDArray[np.uint8]:
    """value (32,) uint8 with ``bits`` distinct bits flipped."""
    unpacked = np.unpackbits(value)
    unpacked[rng.choice(256, size=bits, replace=False)] ^= 1
    return np.packbits(unpacked)


def pdq_data(n: int, n_queries: int, seed: int) -> tuple[NDArray[np.uint8], NDArray[np.uint8]]:
    """(entries (n, 32), queries (n_queries, 32)) uint8; see the module docstring."""
    rng = np.random.default_rng(seed)
    entries = rng.integers(0, 256, size=(n, 32), dtype=np.uint8)
    half = n_queries // 2
    near = [
        flip(rng, entries[i], int(rng.integers(0, RADIUS + 1))) for i in rng.integers(0, n, half)
    ]
    far = rng.integers(0, 256, size=(n_queries - half, 32), dtype=np.uint8)
    for q in far[: len(far) // 10]:  # planted near-duplicates at 0..31 bits
        for d in rng.integers(0, RADIUS + 1, size=4):
            entries[rng.integers(0, n)] = flip(rng, q, int(d))
    return entries, np.concatenate([np.array(near).reshape(-1, 32), far])


def faiss_hits(lims: NDArray[np.int64], dist: NDArray[np.int32], ids: NDArray[np.int64]) -> Hits:
    return {
        (q, int(i), int(d))
        for q in range(len(lims) - 1)
        for i, d in zip(ids[lims[q] : lims[q + 1]], dist[lims[q] : lims[q + 1]], strict=True)
    }


def faiss_search(index: Any, queries: NDArray[np.uint8], repeat: int) -> tuple[Hits, float]:
    """(hits, seconds) of a faiss binary index's range_search at distance <= RADIUS."""
    start = time.perf_counter()
    hits = faiss_hits(*index.range_search(queries, RADIUS + 1))
    first = time.perf_counter() - start
    if first > 10:
        return hits, first
    return hits, timed(lambda: index.range_search(queries, RADIUS + 1), repeat)


def bench_pdq(n: int, n_queries: int, repeat: int) -> list[Row]:
    entries, queries = pdq_data(n, n_queries, seed=n)
    MultiIndexHamming(entries[:1000], np.arange(1000)).search(queries[:2], RADIUS)  # compile

    ours, ours_build, _ = built(lambda: MultiIndexHamming(entries, np.arange(n, dtype=np.int64)))
    found = ours.search(queries, RADIUS)
    ours_hits = {
        (q, int(r), int(d))
        for q, (rows, dists) in enumerate(found)
        for r, d in zip(rows, dists, strict=True)
    }
    ours_s = timed(lambda: ours.search(queries, RADIUS), repeat)

    def make_flat() -> Any:
        index = faiss.IndexBinaryFlat(256)
        index.add(entries)
        return index

    flat, flat_build, flat_rss = built(make_flat)
    flat_hits, flat_s = faiss_search(flat, queries, repeat)
    del flat
    assert ours_hits == flat_hits, "MultiIndexHamming and IndexBinaryFlat disagree"

    def make_multihash() -> Any:
        index = faiss.IndexBinaryMultiHash(256, 16, 16)
        index.nflip = 1
        index.add(entries)
        return index

    multihash, mh_build, mh_rss = built(make_multihash)
    mh_hits, mh_s = faiss_search(multihash, queries, repeat)
    del multihash
    recall = len(mh_hits & flat_hits) / max(1, len(flat_hits))
    extra = len(mh_hits - flat_hits)

    with_hits = sum(1 for rows, _ in found if len(rows))
    return [
        Row("ours MultiIndexHamming", ours_build, ours.nbytes / n, n_queries / ours_s,
            f"{len(ours_hits)} hits, {with_hits} queries with hits: = flat"),
        Row("faiss IndexBinaryMultiHash nflip=1", mh_build, mh_rss / n, n_queries / mh_s,
            f"recall {recall:.4f}, {extra} wrong"),
        Row("faiss IndexBinaryFlat range_search", flat_build, flat_rss / n, n_queries / flat_s),
    ]  # fmt: skip


# ----------------------------------------------------------------------------- exact


class VoidSortedIndex:
    """The peer: keys as NumPy void scalars sorted by (key, row), np.searchsorted."""

    def __init__(self, values: NDArray[np.uint8], rows: NDArray[np.int64]) -> None:
        keys = np.ascontiguousarray(values).view(f"V{values.shape[1]}").ravel()
        by_row = np.argsort(rows, kind="stable")
        order = by_row[np.argsort(keys[by_row], kind="stable")]
        self.keys, self.rows = keys[order], rows[order]

    def lookup(self, queries: NDArray[np.uint8]) -> list[NDArray[np.int64]]:
        q = np.ascontiguousarray(queries).view(f"V{queries.shape[1]}").ravel()
        left = np.searchsorted(self.keys, q, side="left").tolist()
        right = np.searchsorted(self.keys, q, side="right").tolist()
        return [self.rows[lo:hi] for lo, hi in zip(left, right, strict=True)]


def bench_exact(n: int, n_queries: int, repeat: int) -> list[Row]:
    rng = np.random.default_rng(n + 1)
    values = rng.integers(0, 256, size=(n, 16), dtype=np.uint8)
    values[rng.integers(0, n, n // 100)] = values[rng.integers(0, n, n // 100)]
    rows = np.arange(n, dtype=np.int64)
    present = values[rng.integers(0, n, n_queries // 2)]
    absent = rng.integers(0, 256, size=(n_queries - len(present), 16), dtype=np.uint8)
    queries = np.concatenate([present, absent])[rng.permutation(n_queries)]
    ExactIndex(values[:100], rows[:100]).lookup(queries[:2])  # compile

    ours, ours_build, _ = built(lambda: ExactIndex(values, rows))
    peer, peer_build, _ = built(lambda: VoidSortedIndex(values, rows))
    got, want = ours.lookup(queries), peer.lookup(queries)
    assert all(np.array_equal(a, b) for a, b in zip(got, want, strict=True)), "lookups disagree"
    hits = sum(1 for a in got if len(a))
    ours_s = timed(lambda: ours.lookup(queries), repeat)
    find_s = timed(lambda: ours.find(queries), repeat)
    peer_s = timed(lambda: peer.lookup(queries), repeat)
    peer_bytes = peer.keys.nbytes + peer.rows.nbytes
    return [
        Row("ours ExactIndex.lookup", ours_build, ours.nbytes / n, n_queries / ours_s,
            f"{hits} queries with hits: = peer"),
        Row("ours ExactIndex.find (kernel alone)", ours_build, ours.nbytes / n,
            n_queries / find_s, "first, count per query"),
        Row("NumPy void keys + searchsorted", peer_build, peer_bytes / n, n_queries / peer_s),
    ]  # fmt: skip


# ----------------------------------------------------------------------------- main


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--sizes", default="1000000,10000000", help="PDQ list sizes, commas")
    parser.add_argument("--exact-size", type=int, default=10_000_000, help="MD5 entries")
    parser.add_argument("--queries", type=int, default=1000, help="PDQ queries per batch")
    parser.add_argument("--lookups", type=int, default=100_000, help="MD5 queries per batch")
    parser.add_argument("--repeat", type=int, default=3, help="timed runs per figure (median)")
    parser.add_argument("--quick", action="store_true", help="sizes 100k and 1M, MD5 1M")
    args = parser.parse_args(argv)
    sizes = [100_000, 1_000_000] if args.quick else [int(s) for s in args.sizes.split(",")]
    exact_size = 1_000_000 if args.quick else args.exact_size
    repeat = max(1, args.repeat)
    faiss.omp_set_num_threads(1)
    print(
        f"numpy {np.__version__}, faiss {faiss.__version__}, 1 thread, repeat {repeat}; "
        f"PDQ radius {RADIUS}, {args.queries} queries (half near-duplicates)"
    )
    for n in sizes:
        print_table(f"PDQ, {n:,} entries", bench_pdq(n, args.queries, repeat), "queries/s")
    title = f"MD5 exact, {exact_size:,} entries, {args.lookups:,} queries a batch"
    print_table(title, bench_exact(exact_size, args.lookups, repeat), "lookups/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
