"""Exact lookup of digests on the GPU: binary search over sorted key words.

CPU twin: ``appliance.index.exact.ExactIndex`` (whose ``to_arrays()`` gives
the ``keys`` (N, K) uint64, big-endian words sorted lexicographically, and
``rows`` this kernel reads). One thread per query finds the first key equal
to its query and how many there are; the caller gathers the rows. Built on
first use by a cached factory; runs under ``NUMBA_ENABLE_CUDASIM=1`` on the CPU.
"""

from __future__ import annotations

from functools import cache
from typing import Any

THREADS = 256


@cache
def _kernel() -> Any:
    # numba.cuda must be a global of the kernel's module for the simulator.
    from kernels import _exact_cuda

    return _exact_cuda.lookup


def find(keys: Any, queries: Any, xp: Any, stream: Any = 0) -> tuple[Any, Any]:
    """(first (Q,) int64, count (Q,) int64): the run of ``keys`` equal to each query."""
    first = xp.zeros(queries.shape[0], dtype=xp.int64)
    count = xp.zeros(queries.shape[0], dtype=xp.int64)
    if queries.shape[0] and keys.shape[0]:
        blocks = -(-queries.shape[0] // THREADS)
        _kernel()[blocks, THREADS, stream](keys, queries, first, count)
    return first, count
