"""HammingIndex against a brute-force Python popcount over ints."""

from __future__ import annotations

import numpy as np
import pytest

from appliance.index.hamming import HammingIndex, distance
from tests.index.planted import N_QUERIES, brute_force, corpus, flip_bits


def as_lists(found):
    return [(r.tolist(), d.tolist()) for r, d in found]


@pytest.mark.parametrize("radius", [0, 1, 8, 31, 40])
def test_search_matches_brute_force(radius):
    queries, entries, rows = corpus(seed=radius)
    found = HammingIndex(entries, rows).search(queries, radius)
    for r, d in found:
        assert r.dtype == np.int64 and d.dtype == np.int32
    expected = brute_force(queries, entries, rows, radius)
    assert as_lists(found) == expected
    # Every planted distance up to the radius was found for every query.
    for _, dists in expected:
        assert set(range(radius + 1)) <= set(dists)


def test_chunk_boundaries_do_not_change_results():
    queries, entries, rows = corpus(seed=99, n_random=300)
    expected = brute_force(queries, entries, rows, 31)
    m = len(entries)
    for chunk in [1, 2, 7, 64, m - 1, m, m + 1, 10 * m]:
        index = HammingIndex(entries, rows, chunk_pairs=chunk * N_QUERIES)
        assert as_lists(index.search(queries, 31)) == expected, chunk
    # Fewer pairs than queries still scans one entry at a time.
    assert as_lists(HammingIndex(entries, rows, chunk_pairs=3).search(queries, 31)) == expected


@pytest.mark.parametrize("chunk_pairs", [1, 2, 3, 50, 100, 101, 102, 1 << 20])
def test_every_entry_is_scanned_whatever_the_chunking(chunk_pairs):
    # Every entry is a hit, so an entry skipped at a chunk edge (first, last,
    # or between chunks) shows up as a missing row.
    rng = np.random.default_rng(11)
    query = rng.integers(0, 256, size=(1, 32), dtype=np.uint8)
    entries = np.array([flip_bits(rng, query[0], int(rng.integers(0, 6))) for _ in range(101)])
    rows = np.arange(101, dtype=np.int64)
    [(got, dists)] = HammingIndex(entries, rows, chunk_pairs=chunk_pairs).search(query, 5)
    assert sorted(got.tolist()) == rows.tolist()
    assert as_lists([(got, dists)]) == brute_force(query, entries, rows, 5)


@pytest.mark.parametrize("width", [8, 20, 32])
def test_other_widths(width):
    queries, entries, rows = corpus(seed=width, width=width, n_random=200)
    radius = min(20, 4 * width)
    found = HammingIndex(entries, rows, chunk_pairs=500).search(queries, radius)
    assert as_lists(found) == brute_force(queries, entries, rows, radius)


def test_full_distance_range_does_not_overflow():
    query = np.zeros((1, 32), dtype=np.uint8)
    entries = np.stack(
        [
            np.full(32, 255, np.uint8),
            flip_bits(np.random.default_rng(0), np.full(32, 255, np.uint8), 1),
        ]
    )
    index = HammingIndex(entries, np.array([5, 6], dtype=np.int64))
    rows, dists = index.search(query, 256)[0]
    assert rows.tolist() == [6, 5] and dists.tolist() == [255, 256]
    rows, dists = index.search(query, 255)[0]
    assert rows.tolist() == [6] and dists.tolist() == [255]


def test_empty_index_empty_batch_and_no_hits():
    empty = HammingIndex(np.empty((0, 32), np.uint8), np.empty(0, np.int64))
    assert as_lists(empty.search(np.zeros((2, 32), np.uint8), 31)) == [([], []), ([], [])]
    index = HammingIndex(np.zeros((3, 32), np.uint8), np.arange(3, dtype=np.int64))
    assert index.search(np.empty((0, 32), np.uint8), 31) == []
    far = np.full((1, 32), 255, np.uint8)
    assert as_lists(index.search(far, 31)) == [([], [])]


def test_bad_arguments():
    index = HammingIndex(np.zeros((3, 32), np.uint8), np.arange(3, dtype=np.int64))
    with pytest.raises(ValueError):
        index.search(np.zeros((1, 16), np.uint8), 31)
    with pytest.raises(ValueError):
        index.search(np.zeros((1, 32), np.uint8), -1)
    with pytest.raises(ValueError):
        HammingIndex(np.zeros((3, 32), np.uint8), np.arange(3, dtype=np.int64), chunk_pairs=0)


def test_distance_helper():
    rng = np.random.default_rng(3)
    for _ in range(200):
        a, b = (bytes(rng.integers(0, 256, 32, dtype=np.uint8)) for _ in range(2))
        expected = sum(bin(x ^ y).count("1") for x, y in zip(a, b, strict=True))
        assert distance(a, b) == expected
    assert distance(b"\x00" * 32, b"\xff" * 32) == 256
    with pytest.raises(ValueError):
        distance(b"\x00", b"\x00\x00")
