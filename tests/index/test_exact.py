"""ExactIndex against a dict built by brute force, on seeded random keys."""

from __future__ import annotations

from collections import defaultdict

import numpy as np
import pytest

from appliance.index.exact import ExactIndex

WIDTHS = [16, 20, 32, 144]


def make_keys(rng: np.random.Generator, width: int, m: int) -> np.ndarray:
    keys = rng.integers(0, 256, size=(m, width), dtype=np.uint8)
    # Trailing zero bytes: the 'S' dtype trap. Some keys end in one or more
    # 0x00 bytes, and some differ from another key only in that last byte.
    for i in range(0, m, 5):
        keys[i, width - 1 - i % 3 :] = 0
    keys[1] = keys[0]
    keys[1, -1] = 1
    keys[2, :] = 0  # all zero
    keys[3, :] = 255
    # Duplicated values, each copy with its own row.
    dup = rng.integers(0, m, size=m // 4)
    keys[m - len(dup) :] = keys[dup]
    return keys


def brute_force(keys: np.ndarray, rows: np.ndarray) -> dict[bytes, list[int]]:
    table: dict[bytes, list[int]] = defaultdict(list)
    for key, row in zip(keys, rows, strict=True):
        table[bytes(key)].append(int(row))
    return {k: sorted(v) for k, v in table.items()}


def make_queries(rng: np.random.Generator, keys: np.ndarray) -> np.ndarray:
    present = keys[rng.integers(0, len(keys), size=200)]
    absent = rng.integers(0, 256, size=(100, keys.shape[1]), dtype=np.uint8)
    # Near misses: a present key with only its last byte changed, in
    # particular to or from 0x00.
    near = keys[rng.integers(0, len(keys), size=100)].copy()
    near[:, -1] ^= rng.integers(1, 256, size=100, dtype=np.uint8)
    trimmed = keys[rng.integers(0, len(keys), size=50)].copy()
    trimmed[:, -1] = 0
    return np.concatenate([present, absent, near, trimmed])


@pytest.mark.parametrize("width", WIDTHS)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_lookup_matches_brute_force(width, seed):
    rng = np.random.default_rng(seed * 100 + width)
    keys = make_keys(rng, width, 2000)
    rows = rng.permutation(10 * len(keys))[: len(keys)].astype(np.int64) + (1 << 40)
    index = ExactIndex(keys, rows)
    expected = brute_force(keys, rows)
    queries = make_queries(rng, keys)
    found = index.lookup(queries)
    assert len(found) == len(queries)
    hits = 0
    for query, got in zip(queries, found, strict=True):
        assert got.dtype == np.int64
        want = expected.get(bytes(query), [])
        assert got.tolist() == want
        hits += bool(want)
    assert hits >= 200  # the test did exercise hits and misses
    assert any(len(v) > 1 for v in expected.values())


def test_keys_differing_only_in_trailing_zero_bytes_are_distinct():
    keys = np.zeros((4, 16), dtype=np.uint8)
    keys[:, 0] = 7
    keys[1, -1] = 1
    keys[2, -2] = 1
    keys[3, -2:] = 1
    index = ExactIndex(keys, np.arange(4, dtype=np.int64))
    assert [r.tolist() for r in index.lookup(keys)] == [[0], [1], [2], [3]]
    probe = np.zeros((1, 16), dtype=np.uint8)
    probe[0, 0] = 7
    probe[0, -3] = 1
    assert index.lookup(probe)[0].tolist() == []


def test_non_contiguous_queries_and_values():
    rng = np.random.default_rng(5)
    wide = rng.integers(0, 256, size=(300, 40), dtype=np.uint8)
    keys = wide[:, ::2]  # strided (300, 20)
    index = ExactIndex(keys, np.arange(300, dtype=np.int64))
    queries = np.asfortranarray(keys[::-1])
    got = index.lookup(queries)
    expected = brute_force(np.ascontiguousarray(keys), np.arange(300))
    assert [g.tolist() for g in got] == [expected[bytes(q)] for q in queries]


def test_empty_index_and_empty_batch():
    index = ExactIndex(np.empty((0, 16), dtype=np.uint8), np.empty(0, dtype=np.int64))
    assert len(index) == 0
    assert [r.tolist() for r in index.lookup(np.zeros((3, 16), dtype=np.uint8))] == [[], [], []]
    assert index.lookup(np.empty((0, 16), dtype=np.uint8)) == []


def test_shape_errors():
    index = ExactIndex(np.zeros((2, 16), dtype=np.uint8), np.arange(2, dtype=np.int64))
    with pytest.raises(ValueError):
        index.lookup(np.zeros((1, 20), dtype=np.uint8))
    with pytest.raises(ValueError):
        index.lookup(np.zeros((1, 16), dtype=np.int64))
    with pytest.raises(ValueError):
        ExactIndex(np.zeros((2, 16), dtype=np.uint8), np.arange(3, dtype=np.int64))
