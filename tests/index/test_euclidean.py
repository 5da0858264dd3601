"""EuclideanIndex (PhotoDNA) against a plain NumPy brute force, on every search path."""

from __future__ import annotations

import math
import threading
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from numpy.typing import NDArray

from appliance.config import MatchingConfig
from appliance.index import euclidean
from appliance.index.compiled import open_compiled, write_compiled
from appliance.index.euclidean import EuclideanIndex
from appliance.index.hamming import Found
from appliance.index.snapshot import ListIndex, Snapshot
from appliance.lists.model import HashList, SignalColumn

W = 144
RADII = (0, 1, 50, 500, 5000)
# Each search path forced by the module's knobs, with small chunks so that
# every chunk boundary is crossed on small data.
MODES: dict[str, dict[str, object]] = {
    "auto": {},
    "brute": {"TREE_MAX_SPREAD": 0.0, "PAIRS": 64, "BRUTE_ROWS": 16, "BRUTE_QUERIES": 8,
              "_LOOKUPS": 3},
    "tree": {"BRUTE_MAX_ROWS": 0, "TREE_MAX_SPREAD": math.inf, "CHUNK": 7, "VERIFY": 5,
             "TREE_PAIRS": 40},
    # Tiny ladder steps: most queries overflow them, go to brute force, and
    # after the first chunks the rest skip the tree.
    "ladder": {"BRUTE_MAX_ROWS": 0, "TREE_MAX_SPREAD": math.inf, "LADDER": (1, 2), "CHUNK": 4},
}


@pytest.fixture(params=sorted(MODES))
def mode(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    name: str = request.param
    for knob, value in MODES[name].items():
        monkeypatch.setattr(euclidean, knob, value)
    return name


def reference(
    queries: NDArray[np.uint8], values: NDArray[np.uint8], rows: NDArray[np.int64], radius: int
) -> list[Found]:
    """Every pair's squared distance in int64, hits sorted by (distance, row)."""
    diff = queries[:, None, :].astype(np.int64) - values[None, :, :].astype(np.int64)
    d2 = (diff * diff).sum(axis=2)
    out: list[Found] = []
    for row_d2 in d2:
        hit = np.flatnonzero(row_d2 <= radius * radius)
        dist = np.rint(np.sqrt(row_d2[hit])).astype(np.int32)
        order = np.lexsort((rows[hit], dist))
        out.append((rows[hit][order].astype(np.int64), dist[order]))
    return out


def assert_same(got: list[Found], want: list[Found]) -> None:
    assert len(got) == len(want)
    for i, ((g_rows, g_dist), (w_rows, w_dist)) in enumerate(zip(got, want, strict=True)):
        assert g_rows.dtype == np.int64 and g_dist.dtype == np.int32, i
        assert np.array_equal(g_rows, w_rows) and np.array_equal(g_dist, w_dist), i


def at_distance(rng: np.random.Generator, base: NDArray[np.uint8], d2: int) -> NDArray[np.uint8]:
    """A vector at squared distance exactly ``d2`` from base: d2 as a sum of
    squares of steps <= 127, one per byte (each fits one way or the other)."""
    steps = []
    while d2:
        step = min(127, math.isqrt(d2))
        steps.append(step)
        d2 -= step * step
    assert len(steps) <= W
    out = base.astype(np.int64)
    for j, step in zip(rng.choice(W, size=len(steps), replace=False), steps, strict=True):
        out[j] += step if out[j] + step <= 255 else -step
    return out.astype(np.uint8)


def shuffled_rows(rng: np.random.Generator, n: int) -> NDArray[np.int64]:
    """Distinct, unordered, non-trivial rows (positions must map through them)."""
    return (rng.permutation(3 * n)[:n] + 11).astype(np.int64)


def clustered(seed: int, radius: int, n_random: int = 600) -> tuple[
    NDArray[np.uint8], NDArray[np.uint8], NDArray[np.int64]
]:
    """(queries, values, rows): values in clusters, plus for each query planted
    values at squared distances around radius**2 (just inside and just outside)
    and duplicated values; queries include list values themselves."""
    rng = np.random.default_rng(seed)
    centres = rng.integers(0, 256, size=(20, W))
    noise = rng.normal(0, 15, size=(n_random, W))
    values = np.clip(centres[rng.integers(0, 20, n_random)] + noise, 0, 255).astype(np.uint8)
    queries = rng.integers(0, 256, size=(12, W), dtype=np.uint8)
    planted = []
    if radius <= 1000:  # farther plants need more than W steps of 127
        r2 = radius * radius
        for q in queries:
            for d2 in {0, max(0, (radius - 1) ** 2), max(0, r2 - 1), r2, r2 + 1, (radius + 1) ** 2}:
                planted.append(at_distance(rng, q, d2))
    rows_of = [values, *([np.array(planted)] if planted else [])]
    values = np.concatenate(rows_of)
    values = np.concatenate([values, values[::9]])  # duplicates, each with its own row
    values = values[rng.permutation(len(values))]
    queries = np.concatenate([queries, values[:5]])
    return queries, values, shuffled_rows(rng, len(values))


@pytest.mark.parametrize("radius", RADII)
def test_clustered_with_planted_neighbours(mode: str, radius: int) -> None:
    queries, values, rows = clustered(radius, radius)
    got = EuclideanIndex(values, rows).search(queries, radius)
    want = reference(queries, values, rows, radius)
    assert_same(got, want)
    if radius <= 1000:  # each planted query: its 0 and r**2 plants in, r**2 + 1 out
        planted_hits = sum(len(r) for r, _ in want[:12])
        assert planted_hits >= 12 * (2 if radius else 1)
        assert all(len(d) and d[0] == 0 for _, d in want)


@pytest.mark.parametrize("seed", [1, 2])
def test_random_data_every_radius(mode: str, seed: int) -> None:
    rng = np.random.default_rng(seed)
    values = rng.integers(0, 256, size=(700, W), dtype=np.uint8)
    rows = shuffled_rows(rng, len(values))
    queries = np.concatenate([rng.integers(0, 256, (30, W), dtype=np.uint8), values[::70]])
    index = EuclideanIndex(values, rows)
    for radius in (*RADII, 1200, 1300):
        assert_same(index.search(queries, radius), reference(queries, values, rows, radius))


@pytest.mark.parametrize("width", [5, 300])
def test_other_widths(mode: str, width: int) -> None:
    """Fewer bytes than blocks; and rows too wide for exact float32 (float64 then)."""
    rng = np.random.default_rng(width)
    values = rng.integers(0, 256, size=(600, width), dtype=np.uint8)
    values[::3] = values[0] // 2 + rng.integers(0, 9, size=(200, width), dtype=np.uint8)
    rows = shuffled_rows(rng, len(values))
    queries = np.concatenate([values[:20:2], rng.integers(0, 256, (5, width), dtype=np.uint8)])
    index = EuclideanIndex(values, rows)
    for radius in (0, 1, 20, 60, 200, 5000):
        assert_same(index.search(queries, radius), reference(queries, values, rows, radius))


def test_extreme_bytes_at_the_boundary(mode: str) -> None:
    """All-0 and all-255 vectors (the largest norms, where float32 rounds most),
    with neighbours at exactly r**2 and r**2 + 1."""
    rng = np.random.default_rng(3)
    bases = np.array([np.zeros(W), np.full(W, 255), np.tile([0, 255], W // 2)], np.uint8)
    radius = 1000
    values = np.array([at_distance(rng, b, d) for b in bases for d in (radius**2, radius**2 + 1)])
    values = np.concatenate([values, bases])
    rows = np.arange(len(values), dtype=np.int64)
    got = EuclideanIndex(values, rows).search(bases, radius)
    assert_same(got, reference(bases, values, rows, radius))
    assert [list(r) for r, _ in got[:2]] == [[6, 0], [7, 2]]


def test_empty_list_one_row_no_queries(mode: str) -> None:
    rng = np.random.default_rng(4)
    queries = rng.integers(0, 256, (3, W), dtype=np.uint8)
    empty = EuclideanIndex(np.empty((0, W), np.uint8), np.empty(0, np.int64))
    for radius in RADII:
        assert [len(r) for r, _ in empty.search(queries, radius)] == [0, 0, 0]
        assert empty.search(queries[:0], radius) == []
    one = EuclideanIndex(queries[:1].copy(), np.array([42], np.int64))
    for radius in RADII:
        assert_same(one.search(queries, radius),
                    reference(queries, queries[:1], np.array([42]), radius))
        assert one.search(queries[:0], radius) == []
    assert one.search(queries, 0)[0][0].tolist() == [42]


def test_hit_order_is_distance_then_row(mode: str) -> None:
    rng = np.random.default_rng(5)
    query = rng.integers(60, 200, (1, W), dtype=np.uint8)
    # Distances 3, 0, 3, 2 (twice, one duplicate value), 0: rows given out of order.
    d2s = [9, 0, 9, 4, 4, 0]
    values = np.array([at_distance(rng, query[0], d) for d in d2s])
    values[4] = values[3]
    rows = np.array([50, 40, 30, 20, 10, 60], np.int64)
    (got_rows, got_dist), = EuclideanIndex(values, rows).search(query, 3)
    assert got_rows.tolist() == [40, 60, 10, 20, 30, 50]
    assert got_dist.tolist() == [0, 0, 2, 2, 3, 3]


def test_bad_calls() -> None:
    index = EuclideanIndex(np.zeros((2, W), np.uint8), np.arange(2, dtype=np.int64))
    with pytest.raises(ValueError, match="radius"):
        index.search(np.zeros((1, W), np.uint8), -1)
    with pytest.raises(ValueError, match="queries"):
        index.search(np.zeros((1, W - 1), np.uint8), 1)
    with pytest.raises(ValueError, match="rows"):
        EuclideanIndex(np.zeros((2, W), np.uint8), np.arange(3, dtype=np.int64))


def test_first_use_from_many_threads(monkeypatch: pytest.MonkeyPatch) -> None:
    """The tree and the exact index are built once, lazily, whoever asks first."""
    monkeypatch.setattr(euclidean, "BRUTE_MAX_ROWS", 0)
    monkeypatch.setattr(euclidean, "TREE_MAX_SPREAD", math.inf)
    queries, values, rows = clustered(7, 50)
    index = EuclideanIndex(values, rows)
    start = threading.Barrier(8)
    results: dict[int, list[Found]] = {}

    def work(i: int) -> None:
        start.wait()
        results[i] = index.search(queries, 50 if i % 2 else 0)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i, found in results.items():
        assert_same(found, reference(queries, values, rows, 50 if i % 2 else 0))
    assert len(results) == 8


def test_compiled_snapshot_round_trip(tmp_path: Path) -> None:
    queries, values, _ = clustered(8, 40)
    n = len(values)
    rows = np.sort(np.random.default_rng(8).permutation(2 * n)[:n]).astype(np.int64)
    hash_list = HashList(
        name="pdna", version="v1",
        entry_ids=tuple(f"e{i}" for i in range(2 * n)),
        categories=tuple(f"c{i % 3}" for i in range(2 * n)),
        columns={"photodna": SignalColumn(rows=rows, values=values)},
    )
    path = tmp_path / "pdna.snap"
    write_compiled(path, [ListIndex(hash_list)], {})
    compiled, _ = open_compiled(path)
    arrays = compiled[0].matchers["photodna"].to_arrays()
    assert sorted(arrays) == ["rows", "values"] and not arrays["values"].flags.writeable
    as_bytes = [bytes(q) for q in queries]
    for threshold in (0, 40, 300):
        matching = replace(MatchingConfig(), photodna_threshold=threshold)
        direct = Snapshot([ListIndex(hash_list)], matching).match("photodna", as_bytes)
        mapped = Snapshot(compiled, matching).match("photodna", as_bytes)
        assert mapped == direct
        # The snapshot orders equal distances by entry id (a string), not by row.
        want = [
            sorted((int(d), f"e{r}") for r, d in zip(w_rows, w_dist, strict=True))
            for w_rows, w_dist in reference(queries, values, rows, threshold)
        ]
        assert [[(h.distance, h.entry_id) for h in hits] for hits in direct] == want
        assert sum(map(len, want)) > len(queries)
