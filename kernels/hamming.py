"""Hamming radius search on the GPU: every (query, entry, distance) within a radius.

CPU twin: ``appliance.index.mih.MultiIndexHamming`` (and the brute-force
``appliance.index.hamming.HammingIndex``): the same hits, the same order.

The kernel is a tiled brute force, which on a GPU beats probing hash tables:
each block keeps ``TILE_Q`` queries in shared memory and each thread walks a
strided range of entries, so an entry's four words are read from global
memory once per tile of queries rather than once per query. Hits go to a
bounded output buffer through one atomic counter; when the counter passes the
buffer's capacity the launch is repeated with a buffer of exactly the needed
size, so no hit is ever dropped. Entries are (N, 4) uint64 (a 256-bit hash as
``MultiIndexHamming`` packs it); queries (Q, 4) uint64.

Importing this module imports no CUDA library: the kernel is built on first
use by a cached factory (``numba.cuda`` under ``NUMBA_ENABLE_CUDASIM=1`` runs
it on the CPU, which is how CI tests it).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

from kernels._launch import after_launch, before_launch, device_array, lazy_kernel, to_host

TILE_Q = 32  # queries per block, kept in shared memory (32 x 4 words = 1 KiB)
THREADS = 256
WORDS = 4  # a 256-bit hash

_kernel = lazy_kernel("kernels._hamming_cuda", "radius_search", TILE_Q=TILE_Q, WORDS=WORDS)


def launch(
    entries: Any,
    queries: Any,
    radius: int,
    capacity: int,
    xp: Any,
    blocks_x: int = 0,
    stream: Any = 0,
) -> tuple[Any, Any, Any, int]:
    """One launch: (query index, entry position, distance) arrays of the hits
    found and the total number of hits (which may exceed ``capacity``: then
    only ``capacity`` were written). ``entries`` (N, 4) and ``queries`` (Q, 4)
    uint64 may be NumPy or on the device of ``xp`` (numpy/cupy); the outputs
    are on that device, complete on return: the launch ``stream`` is
    synchronised before the hit counter is read, whatever stream is current."""
    kernel = _kernel()
    entries = device_array(xp, entries, xp.uint64)
    queries = device_array(xp, queries, xp.uint64)
    out_q = xp.empty(max(1, capacity), dtype=xp.int32)
    out_e = xp.empty(max(1, capacity), dtype=xp.int64)
    out_d = xp.empty(max(1, capacity), dtype=xp.int32)
    counter = xp.zeros(1, dtype=xp.int64)
    n, q = entries.shape[0], queries.shape[0]
    if n and q:
        grid_x = blocks_x or max(1, min(1024, -(-n // THREADS)))
        grid = (grid_x, -(-q // TILE_Q))
        before_launch(xp, stream)
        kernel[grid, THREADS, stream](entries, queries, radius, out_q, out_e, out_d, counter)
        after_launch(stream)
    total = int(to_host(counter)[0])
    return out_q, out_e, out_d, total


def search(
    entries: Any, queries: Any, radius: int, xp: Any, capacity: int = 1 << 16, stream: Any = 0
) -> tuple[NDArray[np.int32], NDArray[np.int64], NDArray[np.int32]]:
    """All hits within ``radius``, sorted by (query, distance, entry), on the host.

    Overflow is handled, never dropped: if the first launch counted more hits
    than ``capacity``, it runs again with room for exactly that many.
    """
    out_q, out_e, out_d, total = launch(entries, queries, radius, capacity, xp, stream=stream)
    if total > capacity:
        out_q, out_e, out_d, total = launch(entries, queries, radius, total, xp, stream=stream)
    qi, ei, di = (to_host(a[:total]) for a in (out_q, out_e, out_d))
    order = np.lexsort((ei, di, qi))
    return qi[order], ei[order], di[order]
