"""Snapshot: matching over several lists, against a brute-force reference."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from appliance.config import MatchingConfig
from appliance.errors import ItemCode, ItemFault
from appliance.index.snapshot import Snapshot
from appliance.lists import HashList, parse_csv
from appliance.results import Hit


def flip(value: bytes, bits: list[int]) -> bytes:
    n = int.from_bytes(value, "big")
    for b in bits:
        n ^= 1 << b
    return n.to_bytes(len(value), "big")


Q_PDQ = bytes(np.random.default_rng(7).integers(0, 256, 32, dtype=np.uint8))
MD5_SHARED = hashlib.md5(b"shared").digest()
MD5_ALPHA = hashlib.md5(b"alpha only").digest()
MD5_ZERO_END = bytes(15) + b"\x00"  # ends in zero bytes, and all zero


def alpha_csv() -> bytes:
    lines = [
        "id;md5;pdq;category",
        f"a-near;;{flip(Q_PDQ, [1, 2, 3]).hex()};A1",
        f"a-shared;{MD5_SHARED.hex()};;A2",
        f"a-dup;{MD5_SHARED.hex().upper()};{flip(Q_PDQ, list(range(31))).hex()};A2",
        f"a-only;{MD5_ALPHA.hex()};{flip(Q_PDQ, list(range(32))).hex()};A3",
        f"a-zero;{MD5_ZERO_END.hex()};;A4",
    ]
    return "\n".join(lines).encode()


def beta_csv() -> bytes:
    lines = [
        "MD5,PDQ,Category",
        f"{MD5_SHARED.hex()},{Q_PDQ.hex()},B1",
        f",{flip(Q_PDQ, [10, 200, 255]).hex()},B2",
        f",{flip(Q_PDQ, list(range(0, 200, 10))).hex()},",
    ]
    return "\n".join(lines).encode()


@pytest.fixture
def lists() -> list[HashList]:
    return [parse_csv(beta_csv(), "beta"), parse_csv(alpha_csv(), "alpha")]


def test_exact_hits_carry_everything_and_are_ordered(lists):
    snap = Snapshot(lists, MatchingConfig())
    alpha_v = hashlib.sha256(alpha_csv()).hexdigest()[:16]
    beta_v = hashlib.sha256(beta_csv()).hexdigest()[:16]
    [shared, only, none, zero] = snap.match(
        "md5", [MD5_SHARED, MD5_ALPHA, hashlib.md5(b"x").digest(), MD5_ZERO_END]
    )
    q = MD5_SHARED.hex()
    assert shared == [
        Hit("md5", "alpha", alpha_v, "a-dup", "A2", 0, q),
        Hit("md5", "alpha", alpha_v, "a-shared", "A2", 0, q),
        Hit("md5", "beta", beta_v, "row-2", "B1", 0, q),
    ]
    assert [(h.list, h.entry_id, h.category) for h in only] == [("alpha", "a-only", "A3")]
    assert none == []
    assert [h.entry_id for h in zero] == ["a-zero"]
    assert zero[0].query == "00" * 16


def test_pdq_hits_within_default_threshold(lists):
    snap = Snapshot(lists, MatchingConfig())
    [hits] = snap.match("pdq", [Q_PDQ])
    assert [(h.distance, h.list, h.entry_id, h.category) for h in hits] == [
        (0, "beta", "row-2", "B1"),
        (3, "alpha", "a-near", "A1"),
        (3, "beta", "row-3", "B2"),
        (20, "beta", "row-4", ""),
        (31, "alpha", "a-dup", "A2"),
    ]  # a-only at 32 is just outside 31
    assert {h.query for h in hits} == {Q_PDQ.hex()} and {h.signal for h in hits} == {"pdq"}


def test_threshold_config_is_honoured(lists):
    assert [
        h.distance
        for h in Snapshot(lists, MatchingConfig(pdq_threshold=3)).match("pdq", [Q_PDQ])[0]
    ] == [0, 3, 3]
    assert [
        h.distance
        for h in Snapshot(lists, MatchingConfig(pdq_threshold=32)).match("pdq", [Q_PDQ])[0]
    ] == [0, 3, 3, 20, 31, 32]
    assert [
        h.distance
        for h in Snapshot(lists, MatchingConfig(pdq_threshold=0)).match("pdq", [Q_PDQ])[0]
    ] == [0]


def test_quality_gate(lists):
    values = [Q_PDQ] * 4
    snap = Snapshot(lists, MatchingConfig())
    counts = [len(h) for h in snap.match("pdq", values, [49, 50, None, 100])]
    assert counts == [0, 5, 5, 5]
    assert [len(h) for h in snap.match("pdq", values)] == [5, 5, 5, 5]
    strict = Snapshot(lists, MatchingConfig(pdq_quality_min=80))
    assert [len(h) for h in strict.match("pdq", values, [79, 80, 0, None])] == [0, 5, 0, 5]
    # The gate is PDQ's; digests have no quality to gate on.
    assert len(snap.match("md5", [MD5_SHARED], [0])[0]) == 3


def test_counts_and_signals(lists):
    snap = Snapshot(lists, MatchingConfig())
    assert snap.entry_counts() == {
        ("beta", "md5"): 1,
        ("beta", "pdq"): 3,
        ("alpha", "md5"): 4,
        ("alpha", "pdq"): 3,
    }
    assert snap.signals() == frozenset({"md5", "pdq"})
    assert snap.lists == tuple(lists)
    # A signal no list has: no hits, not an error.
    assert snap.match("sha1", [bytes(20), bytes(20)]) == [[], []]
    assert Snapshot([], MatchingConfig()).match("pdq", [Q_PDQ]) == [[]]


def test_bad_calls(lists):
    snap = Snapshot(lists, MatchingConfig())
    with pytest.raises(ItemFault) as info:
        snap.match("sha3", [bytes(32)])
    assert info.value.code == ItemCode.UNKNOWN_SIGNAL
    assert snap.match("MD5", [MD5_ALPHA])[0][0].signal == "md5"
    with pytest.raises(ValueError):
        snap.match("md5", [bytes(15)])
    with pytest.raises(ValueError):
        snap.match("pdq", [Q_PDQ], [50, 50])
    with pytest.raises(ValueError):
        Snapshot([lists[0], lists[0]], MatchingConfig())
    assert snap.match("md5", []) == []


def random_list(rng: np.random.Generator, name: str, pool: dict[str, list[bytes]]) -> bytes:
    lines = ["id,md5,pdq,photodna,category"]
    for i in range(300):
        cells = [f"{name}-{i}" if i % 3 else ""]
        for signal in ("md5", "pdq", "photodna"):
            if rng.random() < 0.3:
                cells.append("")
                continue
            values = pool[signal]
            if signal == "pdq" and rng.random() < 0.5:
                base = values[rng.integers(len(values))]
                bits = rng.choice(256, size=int(rng.integers(0, 45)), replace=False)
                cells.append(flip(base, [int(b) for b in bits]).hex())
            else:
                cells.append(values[rng.integers(len(values))].hex())
        if not any(cells[1:]):
            cells[1] = pool["md5"][0].hex()  # a row must have a hash
        cells.append(f"c{i % 4}")
        lines.append(",".join(cells))
    return "\n".join(lines).encode()


def brute_force(hls: list[HashList], signal: str, value: bytes, radius: int) -> list[Hit]:
    hits = []
    for hl in hls:
        col = hl.columns.get(signal)
        if col is None:
            continue
        for row, raw in zip(col.rows.tolist(), col.values, strict=True):
            d = (int.from_bytes(bytes(raw), "big") ^ int.from_bytes(value, "big")).bit_count()
            ok = d <= radius if signal == "pdq" else d == 0
            if ok:
                hits.append(
                    Hit(
                        signal,
                        hl.name,
                        hl.version,
                        hl.entry_ids[row],
                        hl.categories[row],
                        d,
                        value.hex(),
                    )
                )
    return sorted(hits, key=lambda h: (h.distance, h.list, h.entry_id))


@pytest.mark.parametrize("threshold", [0, 20, 31])
def test_random_lists_against_brute_force(threshold):
    rng = np.random.default_rng(threshold)
    pool = {
        s: [bytes(rng.integers(0, 256, n, dtype=np.uint8)) for _ in range(40)]
        for s, n in (("md5", 16), ("pdq", 32), ("photodna", 144))
    }
    hls = [parse_csv(random_list(rng, name, pool), name) for name in ("l1", "l2", "l3")]
    snap = Snapshot(hls, MatchingConfig(pdq_threshold=threshold))
    for signal, values in pool.items():
        queries = [*values, bytes(len(values[0]))]
        got = snap.match(signal, queries)
        assert got == [brute_force(hls, signal, q, threshold) for q in queries]
        assert sum(map(len, got)) > len(values)
