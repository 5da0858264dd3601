"""Exact lookup of digests on the GPU: binary search over sorted key words.

CPU twin: ``appliance.index.exact.ExactIndex``, whose ``keys`` ((N, K)
uint64, big-endian words sorted lexicographically) this kernel reads. One
thread per query finds the first key equal to its query and how many there
are; the caller gathers the rows (``ExactIndex.rows_of``). Built on first use
by a cached factory; runs under ``NUMBA_ENABLE_CUDASIM=1`` on the CPU.
"""

from __future__ import annotations

from typing import Any

from kernels._launch import after_launch, before_launch, device_array, lazy_kernel

THREADS = 256

_kernel = lazy_kernel("kernels._exact_cuda", "lookup")


def find(keys: Any, queries: Any, xp: Any, stream: Any = 0) -> tuple[Any, Any]:
    """(first (Q,) int64, count (Q,) int64): the run of ``keys`` (N, K) uint64
    equal to each of ``queries`` (Q, K) uint64, both NumPy or on the device of
    ``xp``. The results are on that device, complete on return (the launch
    ``stream`` is synchronised)."""
    keys = device_array(xp, keys, xp.uint64)
    queries = device_array(xp, queries, xp.uint64)
    first = xp.zeros(queries.shape[0], dtype=xp.int64)
    count = xp.zeros(queries.shape[0], dtype=xp.int64)
    if queries.shape[0] and keys.shape[0]:
        blocks = -(-queries.shape[0] // THREADS)
        before_launch(xp, stream)
        _kernel()[blocks, THREADS, stream](keys, queries, first, count)
        after_launch(stream)
    return first, count
