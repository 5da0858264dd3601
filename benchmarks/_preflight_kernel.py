"""The numba.cuda kernel of benchmarks/gpu_preflight.py (imported on first use only,
after the preflight has chosen the real driver or the simulator: ``numba.cuda``
must be a global of the kernel's module for the simulator to run it)."""

# numba.cuda's dialect (thread indices) is beyond mypy, as for kernels/_*_cuda.py.
# mypy: ignore-errors

from numba import cuda

MASK = 0xFFFFFFFF


# no-cache: the preflight exists to prove that NVVM compiles and links a kernel on
# this machine, so it must compile every time rather than load a cached one.
@cuda.jit
def slow_fill(out, value, spins):
    """out[i] = value + i, after ``spins`` rounds of a 32-bit LCG per thread, so
    that the kernel takes long enough for a misordered reader to see it unfinished.
    out: (n,) int64 on the device."""
    i = cuda.grid(1)
    if i >= out.shape[0]:
        return
    x = i + 1
    for _ in range(spins):
        x = (x * 1664525 + 1013904223) & MASK
    # The store depends on the LCG's result, so the loop cannot be compiled away
    # (a chance of 2**-32 per thread of a spurious -1).
    if x == 12345:
        out[i] = -1
    else:
        out[i] = value + i
