"""The GPU exact-lookup kernel against its CPU twin (ExactIndex) and a dict."""

from __future__ import annotations

from typing import Any

import numpy as np

from appliance.index.exact import ExactIndex, _words_of
from kernels import exact


def test_finds_every_key_run_like_the_cpu_index(xp: Any) -> None:
    rng = np.random.default_rng(9)
    for width in (16, 20, 32):
        values = rng.integers(0, 256, (400, width), dtype=np.uint8)
        values[::9] = values[1::9][: len(values[::9])]  # duplicated keys
        values[5, -1] ^= 1  # differs from a neighbour in the last byte only
        index = ExactIndex(values, np.arange(len(values), dtype=np.int64))
        arrays = index.to_arrays()
        queries = np.concatenate([values[:60], rng.integers(0, 256, (40, width), np.uint8)])
        # A writable copy: the index keeps its own arrays read-only.
        keys = xp.asarray(np.array(arrays["keys"]))
        first, count = exact.find(keys, xp.asarray(_words_of(queries, width, "queries")), xp)
        first = first.get() if hasattr(first, "get") else first
        count = count.get() if hasattr(count, "get") else count
        rows = np.asarray(arrays["rows"]).astype(np.int64)
        expected = index.lookup(queries)
        for i, want in enumerate(expected):
            got = sorted(rows[first[i]:first[i] + count[i]].tolist())
            assert got == sorted(want.tolist()), (width, i)
        by_value: dict[bytes, int] = {}
        for v in values:
            by_value[v.tobytes()] = by_value.get(v.tobytes(), 0) + 1
        assert [int(c) for c in count] == [by_value.get(q.tobytes(), 0) for q in queries]


def test_numpy_keys_and_queries_are_accepted(xp: Any) -> None:
    rng = np.random.default_rng(4)
    values = rng.integers(0, 256, (50, 16), dtype=np.uint8)
    index = ExactIndex(values, np.arange(len(values), dtype=np.int64))
    keys = np.array(index.to_arrays()["keys"])
    queries = _words_of(values[::7], 16, "queries")
    got = exact.find(keys, queries, xp)  # NumPy in, device arrays out
    want = exact.find(xp.asarray(keys), xp.asarray(queries), xp)
    host = [[a.get() if hasattr(a, "get") else np.asarray(a) for a in pair] for pair in (got, want)]
    assert all((a == b).all() for a, b in zip(host[0], host[1], strict=True))
    assert (host[0][1] == 1).all()  # every query found once
