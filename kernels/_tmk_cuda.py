"""The numba.cuda source of kernels.tmk (imported on first use only).

One block of 256 threads per 64x64 frame: the C++ reference's float32 luma
into shared memory, T = D A (16x64, one float32 accumulator per value, k
increasing), then B = T D^T with one output per thread: the same float32
operations in the same order as the CPU twin
(``appliance.video.tmk_kernels.frame_features``). Products feeding sums use
libdevice's explicitly rounded ``*_rn`` (NVVM would otherwise contract them
into FMAs, which round once); the simulator has no libdevice and uses plain
NumPy scalar arithmetic instead, as ``kernels._pdq_cuda`` does.
"""

from numba import config, cuda, float32

if config.ENABLE_CUDASIM:

    def _fmul(x, y):  # type: ignore[no-untyped-def]
        return x * y

    def _fadd(x, y):  # type: ignore[no-untyped-def]
        return x + y

else:
    from numba.cuda.libdevice import fadd_rn as _fadd
    from numba.cuda.libdevice import fmul_rn as _fmul

SIDE = 64
FRAME = SIDE * SIDE * 3
THREADS = 256  # one per output value; the loops below assume exactly 256


@cuda.jit(cache=True)
def features(rgb, dct, out):  # type: ignore[no-untyped-def]
    """out[n] (256,) float32 = the PDQF feature of frame n of the flat rgb (n * 12288 bytes)."""
    n = cuda.blockIdx.x
    tid = cuda.threadIdx.x
    luma = cuda.shared.array((64, 64), float32)
    t = cuda.shared.array((16, 64), float32)
    d = cuda.shared.array((16, 64), float32)
    base = n * FRAME
    wr, wg, wb = float32(0.299), float32(0.587), float32(0.114)
    for p in range(tid, SIDE * SIDE, THREADS):
        r = float32(rgb[base + 3 * p])
        g = float32(rgb[base + 3 * p + 1])
        b = float32(rgb[base + 3 * p + 2])
        luma[p // SIDE, p % SIDE] = _fadd(_fadd(_fmul(wr, r), _fmul(wg, g)), _fmul(wb, b))
    for q in range(tid, 16 * SIDE, THREADS):
        d[q // SIDE, q % SIDE] = dct[q // SIDE, q % SIDE]
    cuda.syncthreads()
    for q in range(tid, 16 * SIDE, THREADS):
        i, j = q // SIDE, q % SIDE
        s = float32(0.0)
        for k in range(SIDE):
            s = _fadd(s, _fmul(d[i, k], luma[k, j]))
        t[i, j] = s
    cuda.syncthreads()
    i, j = tid // 16, tid % 16
    s = float32(0.0)
    for k in range(SIDE):
        s = _fadd(s, _fmul(t[i, k], d[j, k]))
    out[n, tid] = s
