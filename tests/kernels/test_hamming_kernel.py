"""The GPU Hamming kernel against brute force and its CPU twin, overflow included."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

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


def test_numpy_entries_and_queries_give_the_same_hits(xp: Any) -> None:
    queries, entries, _ = corpus(7, n_random=200)
    want = hamming.search(_device(xp, pack(entries)), _device(xp, pack(queries)), 31, xp)
    got = hamming.search(pack(entries), pack(queries), 31, xp)
    for a, b in zip(got, want, strict=True):
        assert isinstance(a, np.ndarray) and (a == b).all()
    assert len(want[0]) > 0


@pytest.mark.gpu
def test_the_hit_counter_is_read_after_the_kernel_on_a_non_blocking_stream(xp: Any) -> None:
    """Outside Device.scope: the kernel on a non-blocking stream, CuPy's current
    stream the legacy default one, which is not ordered after it. ``launch``
    synchronises its stream before it reads the counter, so no hit is missed."""
    from numba import cuda

    rng = np.random.default_rng(2)
    entries = xp.asarray(rng.integers(0, 2**63, (1 << 17, 4), dtype=np.uint64))
    queries = xp.asarray(rng.integers(0, 2**63, (64, 4), dtype=np.uint64))
    stream = xp.cuda.Stream(non_blocking=True)
    numba_stream = cuda.external_stream(stream.ptr)
    for _ in range(5):
        # Radius 256: every pair is a hit, and the kernel takes long enough to race.
        *_, total = hamming.launch(entries, queries, 256, 1, xp, stream=numba_stream)
        assert total == entries.shape[0] * queries.shape[0]
