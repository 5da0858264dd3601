"""The numba.cuda source of kernels.hamming (imported on first use only).

The tile sizes are written here, not imported from kernels.hamming: numba
freezes globals into the compiled kernel and its on-disk cache is invalidated
only when this file changes, so a size imported from elsewhere could change
under a stale cached kernel. kernels.hamming checks that the two agree.
"""

from numba import cuda, int32, uint64

TILE_Q = 32
WORDS = 4


@cuda.jit(cache=True)
def radius_search(entries, queries, radius, out_q, out_e, out_d, counter):  # type: ignore[no-untyped-def]
    """Hits of queries[blockIdx.y tile] against entries[strided range]; see kernels.hamming."""
    tile = cuda.shared.array(shape=(TILE_Q, WORDS), dtype=uint64)
    q0 = cuda.blockIdx.y * TILE_Q
    nq = min(TILE_Q, queries.shape[0] - q0)
    t = cuda.threadIdx.x
    if t < nq * WORDS:
        tile[t // WORDS, t % WORDS] = queries[q0 + t // WORDS, t % WORDS]
    cuda.syncthreads()
    capacity = out_q.shape[0]
    start = cuda.blockIdx.x * cuda.blockDim.x + t
    stride = cuda.gridDim.x * cuda.blockDim.x
    for e in range(start, entries.shape[0], stride):
        w0, w1, w2, w3 = entries[e, 0], entries[e, 1], entries[e, 2], entries[e, 3]
        for j in range(nq):
            d = (cuda.popc(w0 ^ tile[j, 0]) + cuda.popc(w1 ^ tile[j, 1])
                 + cuda.popc(w2 ^ tile[j, 2]) + cuda.popc(w3 ^ tile[j, 3]))
            if d <= radius:
                slot = cuda.atomic.add(counter, 0, 1)
                if slot < capacity:
                    out_q[slot] = int32(q0 + j)
                    out_e[slot] = e
                    out_d[slot] = int32(d)
