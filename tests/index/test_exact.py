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


@pytest.mark.parametrize("width", [1, 8, 9, 16, 20])
@pytest.mark.parametrize("m", [1, 2, 3, 17, 40, 300, 5000])
def test_sizes_and_widths_against_brute_force(width, m):
    # Sizes from no directory bits (m < 32) up to several; widths that pad.
    rng = np.random.default_rng(m * 1000 + width)
    keys = rng.integers(0, 256, size=(m, width), dtype=np.uint8)
    keys[m // 2 :: 3] = keys[0]  # duplicates
    rows = rng.permutation(m).astype(np.int64)
    index = ExactIndex(keys, rows)
    expected = brute_force(keys, rows)
    queries = np.concatenate([keys, make_queries(rng, keys)])
    assert [g.tolist() for g in index.lookup(queries)] == [
        expected.get(bytes(q), []) for q in queries
    ]


@pytest.mark.parametrize("width", [16, 20, 32])
def test_skewed_keys_and_long_runs_of_duplicates(width):
    # Keys sharing their first bytes land in one directory and sorting bucket
    # (the heapsort path); one key repeated 500 times, its rows shuffled; keys
    # differing only in the last byte, including 0x00 and 0xff.
    rng = np.random.default_rng(width)
    keys = np.zeros((3000, width), dtype=np.uint8)
    keys[:, 8:] = rng.integers(0, 256, size=(3000, width - 8), dtype=np.uint8)
    keys[:500] = keys[500]
    keys[600:856, :-1] = keys[600, :-1]
    keys[600:856, -1] = np.arange(256)
    more = rng.integers(0, 256, size=(2000, width), dtype=np.uint8)
    keys = np.concatenate([keys, more])
    rows = rng.permutation(len(keys)).astype(np.int64)
    index = ExactIndex(keys, rows)
    expected = brute_force(keys, rows)
    queries = np.concatenate([keys[::3], make_queries(rng, keys)])
    got = index.lookup(queries)
    assert [g.tolist() for g in got] == [expected.get(bytes(q), []) for q in queries]
    assert len(index.lookup(keys[:1])[0]) == 501


@pytest.mark.parametrize(
    ("rows", "dtype"),
    [
        (np.arange(4, dtype=np.int64), np.uint32),
        (np.array([0, 1, 2, (1 << 32) - 1], dtype=np.int64), np.uint32),
        (np.array([0, 1, 2, 1 << 32], dtype=np.int64), np.int64),
        (np.array([0, -1, 2, 3], dtype=np.int64), np.int64),
    ],
)
def test_rows_are_kept_small_when_they_fit(rows, dtype):
    keys = np.random.default_rng(3).integers(0, 256, size=(4, 16), dtype=np.uint8)
    index = ExactIndex(keys, rows)
    assert index.to_arrays()["rows"].dtype == dtype
    found = index.lookup(keys)
    assert all(f.dtype == np.int64 and not f.flags.writeable for f in found)
    assert [f.tolist() for f in found] == [[int(r)] for r in rows]


def test_memory_per_entry():
    m = 100_000
    keys = np.random.default_rng(4).integers(0, 256, size=(m, 16), dtype=np.uint8)
    index = ExactIndex(keys, np.arange(m, dtype=np.int64))
    arrays = index.to_arrays()
    assert arrays["keys"].nbytes + arrays["rows"].nbytes == 20 * m  # MD5: 16 B + 4 B
    assert arrays["directory"].nbytes <= 8 * 65537
    assert index.nbytes == sum(a.nbytes for a in arrays.values())


def test_find_gives_runs_in_the_stored_rows():
    rng = np.random.default_rng(6)
    keys = make_keys(rng, 20, 1000)
    rows = rng.permutation(1000).astype(np.int64)
    index = ExactIndex(keys, rows)
    first, count = index.find(keys[:50])
    stored = index.to_arrays()["rows"]
    for f, c, want in zip(first, count, index.lookup(keys[:50]), strict=True):
        assert stored[f : f + c].tolist() == want.tolist()


@pytest.mark.parametrize("rows_offset", [0, 1 << 40])
def test_round_trip_through_read_only_memory_maps(tmp_path, rows_offset):
    rng = np.random.default_rng(5)
    keys = make_keys(rng, 20, 3000)
    rows = rng.permutation(3000).astype(np.int64) + rows_offset
    index = ExactIndex(keys, rows)
    arrays = index.to_arrays()
    assert all(type(a) is np.ndarray for a in arrays.values())
    for name, a in arrays.items():
        np.save(tmp_path / f"{name}.npy", a)
    mapped = {name: np.load(tmp_path / f"{name}.npy", mmap_mode="r") for name in arrays}
    loaded = ExactIndex.from_arrays(mapped)
    assert len(loaded) == len(index) and loaded.width == 20
    for name in ("keys", "rows", "directory"):
        assert np.shares_memory(loaded.to_arrays()[name], mapped[name])  # no copy
    queries = make_queries(rng, keys)
    want = [r.tolist() for r in index.lookup(queries)]
    assert [r.tolist() for r in loaded.lookup(queries)] == want


def test_from_arrays_checks_shapes_and_dtypes():
    arrays = ExactIndex(make_keys(np.random.default_rng(7), 16, 500), np.arange(500)).to_arrays()
    for name, bad in [
        ("keys", arrays["keys"][:-1]),
        ("keys", arrays["keys"].astype(np.int64)),
        ("rows", arrays["rows"].astype(np.float32)),
        ("directory", arrays["directory"][:-1]),
        ("directory", arrays["directory"].astype(np.uint32)),
        ("width", np.array([20])),
    ]:
        with pytest.raises(ValueError):
            ExactIndex.from_arrays({**arrays, name: bad})


def _bumped(a: np.ndarray, at: tuple[int, ...], value: int) -> np.ndarray:
    out = a.copy()
    out[at] = value
    return out


def test_from_arrays_checks_the_bucket_bounds():
    # The compiled lookup indexes keys by the directory without bounds checks:
    # a snapshot whose directory points past the keys must not load.
    arrays = ExactIndex(make_keys(np.random.default_rng(8), 16, 500), np.arange(500)).to_arrays()
    directory = arrays["directory"]
    for bad in (_bumped(directory, (-1,), 501), _bumped(directory, (0,), -1),
                _bumped(directory, (1,), 10**9)):
        with pytest.raises(ValueError, match="directory must rise from 0 to 500"):
            ExactIndex.from_arrays({**arrays, "directory": bad})
