"""MultiIndexHamming against a brute-force Python popcount and against HammingIndex."""

from __future__ import annotations

import numpy as np
import pytest

from appliance.index import mih
from appliance.index.hamming import HammingIndex
from appliance.index.mih import MultiIndexHamming
from tests.index.planted import MAX_PLANTED, brute_force, corpus, flip_bits


def as_lists(found):
    for rows, dists in found:
        assert rows.dtype == np.int64 and dists.dtype == np.int32
    return [(r.tolist(), d.tolist()) for r, d in found]


@pytest.mark.parametrize("radius", [0, 1, 8, 15, 16, 31, 32, 40, 47, 48, 64])
def test_search_matches_brute_force(radius):
    queries, entries, rows = corpus(seed=radius)
    index = MultiIndexHamming(entries, rows)
    expected = brute_force(queries, entries, rows, radius)
    assert as_lists(index.search(queries, radius)) == expected
    # Every planted distance up to the radius was there to be found.
    for _, dists in expected:
        assert set(range(min(radius, MAX_PLANTED) + 1)) <= set(dists)


def test_radius_picks_probes_or_scan():
    index = MultiIndexHamming(*corpus(seed=1)[1:])
    # 16 chunks: 31 -> 1-bit probes (17 per chunk), 47 -> 2-bit (137), 48 -> scan.
    assert index.probes(31) == 16 * 17 <= mih.MAX_PROBES
    assert index.probes(47) == 16 * 137 <= mih.MAX_PROBES
    assert index.probes(48) > mih.MAX_PROBES


@pytest.mark.parametrize("radius", [0, 31, 40])
def test_scan_gives_the_same_result(radius, monkeypatch):
    queries, entries, rows = corpus(seed=100 + radius)
    index = MultiIndexHamming(entries, rows)
    probed = as_lists(index.search(queries, radius))
    monkeypatch.setattr(mih, "MAX_PROBES", -1)
    assert as_lists(index.search(queries, radius)) == probed


def test_agrees_with_hamming_index_on_more_data():
    rng = np.random.default_rng(3)
    entries = rng.integers(0, 256, size=(30_000, 32), dtype=np.uint8)
    near = np.array([flip_bits(rng, entries[i], int(rng.integers(0, 40))) for i in range(200)])
    queries = np.concatenate([near, rng.integers(0, 256, size=(50, 32), dtype=np.uint8)])
    rows = rng.permutation(len(entries)).astype(np.int64)
    for radius in (31, 40):
        got = as_lists(MultiIndexHamming(entries, rows).search(queries, radius))
        assert got == as_lists(HammingIndex(entries, rows).search(queries, radius))
        assert sum(len(r) for r, _ in got) >= 100


def test_crowded_buckets_and_many_hits():
    # 3000 entries within 5 bits of one query: every bucket it probes holds
    # thousands (several candidate blocks), each entry is probed from many
    # chunks but reported once, and the hits overflow the first output room.
    rng = np.random.default_rng(4)
    query = rng.integers(0, 256, size=(1, 32), dtype=np.uint8)
    near = np.array([flip_bits(rng, query[0], int(rng.integers(0, 6))) for _ in range(3000)])
    entries = np.concatenate([near, rng.integers(0, 256, size=(500, 32), dtype=np.uint8)])
    rows = np.arange(len(entries), dtype=np.int64)[::-1].copy()
    [(got, dists)] = MultiIndexHamming(entries, rows).search(query, 31)
    [(want, want_d)] = HammingIndex(entries, rows).search(query, 31)
    assert got.tolist() == want.tolist() and dists.tolist() == want_d.tolist()
    assert len(got) == 3000


def test_duplicates_come_back_sorted_by_row():
    value = np.random.default_rng(5).integers(0, 256, size=(1, 32), dtype=np.uint8)
    entries = np.repeat(value, 9, axis=0)
    rows = np.array([50, 3, 7, 1 << 40, 0, 9, 8, 2, 1], dtype=np.int64)
    [(got, dists)] = MultiIndexHamming(entries, rows).search(value, 0)
    assert got.tolist() == sorted(rows.tolist())
    assert dists.tolist() == [0] * 9


@pytest.mark.parametrize(
    ("rows", "dtype"),
    [
        (np.arange(5, dtype=np.int64), np.uint32),
        (np.array([0, 1, 2, 3, (1 << 32) - 1], dtype=np.int64), np.uint32),
        (np.array([0, 1, 2, 3, 1 << 32], dtype=np.int64), np.int64),
        (np.array([0, 1, -2, 3, 4], dtype=np.int64), np.int64),
    ],
)
def test_rows_are_kept_small_when_they_fit(rows, dtype):
    entries = np.random.default_rng(6).integers(0, 256, size=(5, 32), dtype=np.uint8)
    index = MultiIndexHamming(entries, rows)
    assert index.to_arrays()["rows"].dtype == dtype
    found = index.search(entries, 0)
    assert [r.tolist() for r, _ in found] == [[int(r)] for r in rows]


def test_memory_per_entry():
    n = 20_000
    entries = np.random.default_rng(7).integers(0, 256, size=(n, 32), dtype=np.uint8)
    index = MultiIndexHamming(entries, np.arange(n, dtype=np.int64))
    arrays = index.to_arrays()
    # 32 B hash + 4 B row + 15 x 4 B ids, and 16 fixed tables of 65537 offsets.
    per_entry = sum(a.nbytes for k, a in arrays.items() if k != "offsets") - 8
    assert per_entry == 96 * n
    assert arrays["offsets"].nbytes == 16 * 65537 * 4
    assert index.nbytes == sum(a.nbytes for a in arrays.values())


def test_empty_index_and_empty_batch():
    index = MultiIndexHamming(np.empty((0, 32), dtype=np.uint8), np.empty(0, dtype=np.int64))
    assert len(index) == 0
    queries = np.zeros((3, 32), dtype=np.uint8)
    for radius in (0, 31, 256):
        assert as_lists(index.search(queries, radius)) == [([], [])] * 3
    full = MultiIndexHamming(*corpus(seed=8)[1:])
    assert full.search(np.empty((0, 32), dtype=np.uint8), 31) == []


@pytest.mark.parametrize("width", [8, 16, 3])
@pytest.mark.parametrize("radius", [0, 3, 7, 10, 12, 20])
def test_other_widths(width, radius):
    # 8 bytes: the 64-bit imagehash family, 4 chunks (radius 10 -> 2-bit probes).
    queries, entries, rows = corpus(seed=width * 100 + radius, width=width, n_random=800)
    index = MultiIndexHamming(entries, rows)
    assert index.n_chunks == -(-width // 2)
    assert as_lists(index.search(queries, radius)) == brute_force(queries, entries, rows, radius)


def test_round_trip_through_read_only_memory_maps(tmp_path):
    queries, entries, rows = corpus(seed=9)
    rows[::5] += 1 << 33  # int64 rows
    index = MultiIndexHamming(entries, rows)
    arrays = index.to_arrays()
    assert all(type(a) is np.ndarray for a in arrays.values())
    for name, a in arrays.items():
        np.save(tmp_path / f"{name}.npy", a)
    mapped = {name: np.load(tmp_path / f"{name}.npy", mmap_mode="r") for name in arrays}
    loaded = MultiIndexHamming.from_arrays(mapped)
    assert len(loaded) == len(index)
    for name in ("words", "rows", "offsets", "ids"):
        assert np.shares_memory(loaded.to_arrays()[name], mapped[name])  # no copy
    for radius in (0, 31, 64):
        want = as_lists(index.search(queries, radius))
        assert as_lists(loaded.search(queries, radius)) == want


def test_from_arrays_checks_shapes_and_dtypes():
    arrays = MultiIndexHamming(*corpus(seed=10)[1:]).to_arrays()
    for name, bad in [
        ("words", arrays["words"][:-1]),
        ("ids", arrays["ids"].astype(np.int64)),
        ("offsets", arrays["offsets"][:, :-1]),
        ("rows", arrays["rows"].astype(np.float64)),
        ("ids", np.asfortranarray(arrays["ids"])),
    ]:
        with pytest.raises(ValueError):
            MultiIndexHamming.from_arrays({**arrays, name: bad})


def test_from_arrays_checks_the_bucket_bounds():
    # Buckets are read as ids[c - 1][offsets[c, v]:offsets[c, v + 1]] in
    # compiled code without bounds checks: bounds out of range must not load.
    arrays = MultiIndexHamming(*corpus(seed=11)[1:]).to_arrays()
    offsets, n = arrays["offsets"], len(arrays["rows"])
    # One past the end, a start not at 0, a bucket that ends before it starts, far out.
    for at, value in (((3, -1), n + 1), ((0, 0), 5), ((2, 100), int(offsets[2, 101]) + 1),
                      ((5, 7), 2**31 - 1)):
        bad = offsets.copy()
        bad[at] = value
        with pytest.raises(ValueError, match=f"offsets must rise from 0 to {n}"):
            MultiIndexHamming.from_arrays({**arrays, "offsets": bad})


def test_input_errors():
    entries = np.zeros((4, 32), dtype=np.uint8)
    with pytest.raises(ValueError):
        MultiIndexHamming(entries, np.arange(3, dtype=np.int64))
    with pytest.raises(ValueError):
        MultiIndexHamming(np.zeros((4, 32), dtype=np.int64), np.arange(4, dtype=np.int64))
    index = MultiIndexHamming(entries, np.arange(4, dtype=np.int64))
    with pytest.raises(ValueError):
        index.search(np.zeros((1, 8), dtype=np.uint8), 31)
    with pytest.raises(ValueError):
        index.search(np.zeros((1, 32), dtype=np.uint8), -1)
    with pytest.raises(ValueError):
        index.search(np.zeros((1, 32), dtype=np.int64), 31)


def test_unaligned_and_strided_inputs():
    queries, entries, rows = corpus(seed=11)
    expected = brute_force(queries, entries, rows, 31)
    # Shifted by one byte (not 8-byte aligned), and every other row of a wider array.
    buffer = np.zeros(entries.size + 1, dtype=np.uint8)
    buffer[1:] = entries.ravel()
    unaligned = buffer[1:].reshape(entries.shape)
    assert as_lists(MultiIndexHamming(unaligned, rows).search(queries, 31)) == expected
    wide = np.zeros((len(queries), 64), dtype=np.uint8)
    wide[:, ::2] = queries
    index = MultiIndexHamming(entries, rows)
    assert as_lists(index.search(wide[:, ::2], 31)) == expected
