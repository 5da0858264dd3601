"""The numba.cuda source of kernels.exact (imported on first use only).

The key comparison is written inline rather than as a device function:
compiling a kernel that calls another dispatcher needs a CUDA driver, and the
PTX of every kernel must build on machines without one (CI)."""

from numba import cuda


@cuda.jit(cache=True)
def lookup(keys, queries, first, count):  # type: ignore[no-untyped-def]
    """first[q], count[q]: the run of keys equal to queries[q] (lower, then upper bound)."""
    q = cuda.grid(1)
    if q >= queries.shape[0]:
        return
    n, width = keys.shape[0], keys.shape[1]
    start = 0
    for bound in range(2):  # 0: first key >= query; 1: first key > query
        lo, hi = start, n
        while lo < hi:
            mid = (lo + hi) // 2
            order = 0  # -1, 0, 1: keys[mid] <, ==, > queries[q]
            for w in range(width):
                a, b = keys[mid, w], queries[q, w]
                if a != b:
                    order = -1 if a < b else 1
                    break
            if order < 0 or (bound == 1 and order == 0):
                lo = mid + 1
            else:
                hi = mid
        if bound == 0:
            start = lo
    first[q] = start
    count[q] = lo - start
