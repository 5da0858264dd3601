"""The GPU Hamming kernel against brute force and its CPU twin, overflow included."""

from __future__ import annotations

from typing import Any

import numpy as np

from appliance.index.hamming import pack
from appliance.index.mih import MultiIndexHamming
from kernels import hamming
from tests.index.planted import brute_force, corpus


def _device(xp: Any, a: np.ndarray) -> Any:
    return xp.asarray(np.ascontiguousarray(a))


def test_matches_brute_force_and_the_cpu_twin(xp: Any) -> None:
    queries, entries, rows = corpus(3, n_random=600)
    for radius in (0, 8, 31, 40):
        qi, ei, di = hamming.search(_device(xp, pack(entries)), _device(xp, pack(queries)),
                                    radius, xp)
        got = [([int(rows[e]) for e, q2 in zip(ei, qi, strict=True) if q2 == q],
                [int(d) for d, q2 in zip(di, qi, strict=True) if q2 == q])
               for q in range(len(queries))]
        # Brute force orders by (distance, row); the kernel's entries by position.
        expected = brute_force(queries, entries, rows, radius)
        assert [sorted(zip(d, r, strict=True)) for r, d in got] == [
            sorted(zip(d, r, strict=True)) for r, d in expected
        ], radius
        twin = MultiIndexHamming(entries, rows).search(queries, radius)
        assert sum(len(r) for r, _ in twin) == len(qi)


def test_overflow_is_detected_and_nothing_is_dropped(xp: Any) -> None:
    queries, entries, _ = corpus(5, n_random=300)
    e, q = _device(xp, pack(entries)), _device(xp, pack(queries))
    _, _, _, total = hamming.launch(e, q, 256, 10, xp)  # radius 256: every pair is a hit
    assert total == len(entries) * len(queries)  # counted past the 10 it could write
    qi, ei, _ = hamming.search(e, q, 256, xp, capacity=10)
    assert len(qi) == total
    assert sorted(zip(qi.tolist(), ei.tolist(), strict=True)) == [
        (a, b) for a in range(len(queries)) for b in range(len(entries))
    ]


def test_empty_inputs(xp: Any) -> None:
    none = _device(xp, np.zeros((0, 4), np.uint64))
    some = _device(xp, pack(np.zeros((3, 32), np.uint8)))
    for a, b in ((none, some), (some, none)):
        qi, _, _ = hamming.search(a, b, 31, xp)
        assert len(qi) == 0
