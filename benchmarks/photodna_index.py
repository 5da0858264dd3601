"""PhotoDNA index benchmark: ``EuclideanIndex`` beside brute force, same data, same run.

    python benchmarks/photodna_index.py [--queries 100000] [--sizes 50,10000,200000]
                                        [--radii 0,50] [--repeat 3] [--quick]

Data, per list size M: M / 20 cluster centres of uniform random bytes, rows =
centre + Normal(0, 20) per byte (clipped to 0..255; rows of one cluster lie
~340 apart). Queries: 3% planted within the radius of a list row (a copy at
radius 0), 30% new members of the clusters (near the list, mostly outside the
radius), the rest uniform random. So a few percent of queries have hits.

Peers, on the same data in the same run:
- "old brute force": the previous ``_EuclideanMatcher`` (its int32 copy of the
  list and ``find``), verbatim. Its Python loop runs once per query and row
  chunk (Q x M times at Q = 100k) over (Q, chunk, 144) int32 temporaries, so it
  runs only up to ``OLD_MAX_PAIRS`` query x row pairs (100k x 50);
- "NumPy brute force": ``d2 = |x|^2 + |y|^2 - 2 x.y`` in float64 (exact), in
  blocks of 1024 queries x 4096 rows.
Their answers must equal ours, query by query (checked on the first run,
before any figure is printed). Times: median of ``--repeat`` runs, one run
when the first takes over ``--budget`` (10 s; 2 s with ``--quick``). Memory:
the peak resident set above the start of each run (VmHWM reset through
/proc/self/clear_refs; glibc's mmap threshold is pinned so that freed arrays
leave the resident set at once). "build" is ours' first search of one query,
which builds the tree (or the exact index at radius 0), and its memory. BLAS
runs on one thread unless OPENBLAS_NUM_THREADS / OMP_NUM_THREADS are set, as
the tree search is single-threaded.
"""

from __future__ import annotations

import os

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")  # before NumPy loads its BLAS

import argparse  # noqa: E402
import ctypes  # noqa: E402
import itertools  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable, Sequence  # noqa: E402
from dataclasses import dataclass  # noqa: E402

import numpy as np  # noqa: E402
from numpy.typing import NDArray  # noqa: E402

from appliance.index.euclidean import EuclideanIndex  # noqa: E402
from appliance.index.hamming import Found  # noqa: E402

W = 144
OLD_MAX_PAIRS = 5_000_000
Search = Callable[[], list[Found]]


# ----------------------------------------------------------------------------- peers


def old_find(
    values: NDArray[np.uint8], rows: NDArray[np.int64], queries: NDArray[np.uint8], radius: int
) -> list[Found]:
    """The previous _EuclideanMatcher (constructor and find), as it was."""
    chunk_elements = 1 << 24
    values_i32 = values.astype(np.int32)
    q = queries.astype(np.int32)
    limit = radius * radius
    out: list[list[tuple[NDArray[np.int64], NDArray[np.int64]]]] = [[] for _ in q]
    step = max(1, chunk_elements // max(1, q.shape[0] * q.shape[1]))
    for start in range(0, len(values_i32), step):
        block = values_i32[start:start + step]
        d2 = ((q[:, None, :] - block[None, :, :]) ** 2).sum(axis=2, dtype=np.int64)
        for i, row in enumerate(d2):
            hit = np.flatnonzero(row <= limit)
            out[i].append((hit + start, row[hit]))
    found: list[Found] = []
    for parts in out:
        pos = np.concatenate([p for p, _ in parts]) if parts else np.empty(0, np.int64)
        d2s = np.concatenate([d for _, d in parts]) if parts else np.empty(0, np.int64)
        dist = np.rint(np.sqrt(d2s)).astype(np.int32)
        hit_rows = rows[pos].astype(np.int64)
        order = np.lexsort((hit_rows, dist))
        found.append((hit_rows[order], dist[order]))
    return found


def numpy_brute(
    values: NDArray[np.uint8], rows: NDArray[np.int64], queries: NDArray[np.uint8], radius: int
) -> list[Found]:
    """Straightforward blocked brute force in float64 (every value an exact integer)."""
    found_q, found_p, found_d = [], [], []
    for q0 in range(0, len(queries), 1024):
        qf = queries[q0:q0 + 1024].astype(np.float64)
        nq = (qf * qf).sum(axis=1)
        for m0 in range(0, len(values), 4096):
            vf = values[m0:m0 + 4096].astype(np.float64)
            d2 = nq[:, None] + (vf * vf).sum(axis=1)[None, :] - 2.0 * (qf @ vf.T)
            qi, pos = np.nonzero(d2 <= radius * radius)
            found_q.append(qi + q0)
            found_p.append(pos + m0)
            found_d.append(d2[qi, pos])
    qi = np.concatenate(found_q) if found_q else np.empty(0, np.intp)
    pos = np.concatenate(found_p) if found_p else np.empty(0, np.intp)
    dist = np.rint(np.sqrt(np.concatenate(found_d) if found_d else np.empty(0))).astype(np.int32)
    hit_rows = rows[pos]
    order = np.lexsort((hit_rows, dist, qi))
    qi, hit_rows, dist = qi[order], hit_rows[order], dist[order]
    bounds = np.searchsorted(qi, np.arange(len(queries) + 1))
    return [(hit_rows[a:b], dist[a:b]) for a, b in itertools.pairwise(bounds.tolist())]


# ----------------------------------------------------------------------------- data


def dataset(
    n_rows: int, n_queries: int, radius: int, seed: int
) -> tuple[NDArray[np.uint8], NDArray[np.uint8]]:
    """(values (n_rows, 144), queries (n_queries, 144)) uint8; see the module docstring."""
    rng = np.random.default_rng(seed)
    n_centres = max(1, n_rows // 20)
    centres = rng.integers(0, 256, size=(n_centres, W)).astype(np.float64)

    def members(n: int) -> NDArray[np.uint8]:
        noisy = centres[rng.integers(0, n_centres, n)] + rng.normal(0, 20, size=(n, W))
        return np.clip(np.rint(noisy), 0, 255).astype(np.uint8)

    values = members(n_rows)
    n_planted, n_near = n_queries * 3 // 100, n_queries * 3 // 10
    step = rng.normal(size=(n_planted, W))
    # A random direction, a random length up to the radius, rounded down per
    # byte towards zero so that the length only shrinks (clipping shrinks it too).
    step *= (rng.uniform(0, radius, n_planted) / np.linalg.norm(step, axis=1))[:, None]
    planted = values[rng.integers(0, n_rows, n_planted)] + np.trunc(step)
    queries = np.concatenate([
        np.clip(planted, 0, 255).astype(np.uint8),
        members(n_near),
        rng.integers(0, 256, size=(n_queries - n_planted - n_near, W), dtype=np.uint8),
    ])
    return values, queries[rng.permutation(n_queries)]


# ----------------------------------------------------------------------------- measuring


_LIBC = ctypes.CDLL("libc.so.6") if sys.platform.startswith("linux") else None
if _LIBC is not None:
    _LIBC.mallopt(-3, 128 * 1024)  # M_MMAP_THRESHOLD: fixed, so big frees unmap


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(field)


def measured(run: Callable[[], object]) -> tuple[object, float, float]:
    """(run(), seconds, peak resident MiB above the start of the run)."""
    if _LIBC is not None:
        _LIBC.malloc_trim(0)
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # VmHWM := VmRSS
    base = _status_kib("VmRSS")
    start = time.perf_counter()
    result = run()
    seconds = time.perf_counter() - start
    return result, seconds, (_status_kib("VmHWM") - base) / 1024


@dataclass(frozen=True)
class Row:
    method: str
    seconds: float
    peak_mib: float
    with_hits: int
    build_s: float | None = None
    build_mib: float | None = None


def timed(name: str, run: Search, repeat: int, budget_s: float) -> tuple[Row, list[Found]]:
    """The first run's answer; the median time and the largest peak over the runs."""
    found, first, peak = measured(run)
    times, peaks = [first], [peak]
    while len(times) < repeat and first <= budget_s:
        _, seconds, peak = measured(run)
        times.append(seconds)
        peaks.append(peak)
    answer: list[Found] = found  # type: ignore[assignment]
    hits = sum(1 for rows, _ in answer if len(rows))
    return Row(name, statistics.median(times), max(peaks), hits), answer


def same(a: list[Found], b: list[Found]) -> bool:
    return len(a) == len(b) and all(
        np.array_equal(ra, rb) and np.array_equal(da, db)
        for (ra, da), (rb, db) in zip(a, b, strict=True)
    )


def bench(n_rows: int, n_queries: int, radius: int, repeat: int, budget_s: float) -> list[Row]:
    values, queries = dataset(n_rows, n_queries, radius, seed=n_rows + radius)
    rows = np.arange(n_rows, dtype=np.int64)
    index = EuclideanIndex(values, rows)
    _, build_s, build_mib = measured(lambda: index.search(queries[:1], radius))
    ours, answer = timed("ours EuclideanIndex", lambda: index.search(queries, radius), repeat,
                         budget_s)
    table = [Row(ours.method, ours.seconds, ours.peak_mib, ours.with_hits, build_s, build_mib)]
    peers: list[tuple[str, Search]] = [
        ("NumPy brute force (float64)", lambda: numpy_brute(values, rows, queries, radius)),
    ]
    if n_rows * n_queries <= OLD_MAX_PAIRS:
        peers.insert(0, ("old brute force", lambda: old_find(values, rows, queries, radius)))
    for name, run in peers:
        row, theirs = timed(name, run, repeat, budget_s)
        if not same(answer, theirs):
            raise AssertionError(f"{name} and ours disagree at M={n_rows}, radius {radius}")
        table.append(row)
    return table


def print_table(cases: Sequence[tuple[int, int, list[Row]]]) -> None:
    """Markdown: one line per method and case; speed-up = the peer's seconds / ours."""
    print("| rows | radius | method | build s | search s | peak MiB | queries with hits "
          "| ours faster by |")
    print("| ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: |")
    for n_rows, radius, table in cases:
        ours = table[0]
        for r in table:
            build = "" if r.build_s is None else f"{r.build_s:.3f} ({r.build_mib:.0f} MiB)"
            ratio = "" if r is ours else f"{r.seconds / ours.seconds:.1f}x"
            print(f"| {n_rows:,} | {radius} | {r.method} | {build} | {r.seconds:.3f} "
                  f"| {r.peak_mib:.0f} | {r.with_hits:,} | {ratio} |")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--queries", type=int, default=100_000, help="queries per batch")
    parser.add_argument("--sizes", default="50,10000,200000", help="list sizes, commas")
    parser.add_argument("--radii", default="0,50", help="radii, commas")
    parser.add_argument("--repeat", type=int, default=3, help="timed runs per figure (median)")
    parser.add_argument("--budget", type=float, default=10.0,
                        help="a figure whose first run takes longer is timed once")
    parser.add_argument("--quick", action="store_true", help="5,000 queries, budget 2 s")
    args = parser.parse_args(argv)
    n_queries = 5_000 if args.quick else args.queries
    sizes = [int(s) for s in args.sizes.split(",")]
    radii = [int(r) for r in args.radii.split(",")]
    EuclideanIndex(np.zeros((1, W), np.uint8), np.zeros(1, np.int64)).search(
        np.zeros((1, W), np.uint8), 0)  # numba compiles (or loads) the exact-index kernels
    print(f"numpy {np.__version__}, BLAS threads {os.environ['OPENBLAS_NUM_THREADS']}, "
          f"{n_queries:,} queries, repeat {args.repeat}\n")
    budget = min(args.budget, 2.0) if args.quick else args.budget
    repeat = max(1, args.repeat)
    cases = [(n, r, bench(n, n_queries, r, repeat, budget)) for n in sizes for r in radii]
    print_table(cases)
    return 0


if __name__ == "__main__":
    sys.exit(main())
