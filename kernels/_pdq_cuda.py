"""The numba.cuda source of kernels.pdq (imported on first use only).

Bit-exactness with the CPU twin (``appliance.hashers.pdq``) needs the same
float32/float64 operations in the same order. NVVM contracts a*b + c into one
FMA by default, which rounds once instead of twice; every product that feeds a
sum is therefore written with libdevice's explicitly rounded ``*_rn`` functions
(PTX ``mul.rn``/``add.rn`` are never contracted). Under the simulator, which has
no libdevice, plain Python stand-ins do the same NumPy scalar arithmetic.
Sums and differences without a product (the box filter, quality) cannot be
contracted and are written plainly. All helpers are inline: a kernel that calls
another dispatcher cannot be compiled to PTX without a driver.
"""

from numba import config, cuda, float32, float64, int32, uint8

if config.ENABLE_CUDASIM:

    def _fmul(x, y):  # type: ignore[no-untyped-def]
        return x * y

    def _fadd(x, y):  # type: ignore[no-untyped-def]
        return x + y

    def _dmul(x, y):  # type: ignore[no-untyped-def]
        return x * y

    def _dadd(x, y):  # type: ignore[no-untyped-def]
        return x + y

else:
    from numba.cuda.libdevice import dadd_rn as _dadd
    from numba.cuda.libdevice import dmul_rn as _dmul
    from numba.cuda.libdevice import fadd_rn as _fadd
    from numba.cuda.libdevice import fmul_rn as _fmul

MEDIAN_RANK = 127  # the lower median of 256 values: 128th smallest (0-based 127)


@cuda.jit(cache=True)
def luma(rgb, out):  # type: ignore[no-untyped-def]
    """out[p] = float32(float64 R*0.299 + G*0.587 + B*0.114) of pixel p of the flat rgb."""
    start = cuda.grid(1)
    stride = cuda.gridsize(1)
    for p in range(start, out.shape[0], stride):
        r = float64(rgb[3 * p])
        g = float64(rgb[3 * p + 1])
        b = float64(rgb[3 * p + 2])
        out[p] = float32(_dadd(_dadd(_dmul(r, 0.299), _dmul(g, 0.587)), _dmul(b, 0.114)))


@cuda.jit(cache=True)
def float_luma(rgb, out):  # type: ignore[no-untyped-def]
    """out[p] = (0.299f*R + 0.587f*G) + 0.114f*B in float32 (the C++ reference's luma,
    which vPDQ hashes; not the image PDQ's float64 luma) of pixel p."""
    start = cuda.grid(1)
    stride = cuda.gridsize(1)
    wr, wg, wb = float32(0.299), float32(0.587), float32(0.114)
    for p in range(start, out.shape[0], stride):
        r = float32(rgb[3 * p])
        g = float32(rgb[3 * p + 1])
        b = float32(rgb[3 * p + 2])
        out[p] = _fadd(_fadd(_fmul(wr, r), _fmul(wg, g)), _fmul(wb, b))


@cuda.jit(cache=True)
def box_filter(src, dst, offsets, heights, widths, along_cols):  # type: ignore[no-untyped-def]
    """One Jarosz box-filter pass of image blockIdx.x, along its rows (along_cols == 0)
    or its columns, src -> dst (flat float32 planes, image i at offsets[i], row-major).

    Each thread filters whole vectors (rows or columns) with one running float32
    sum in the reference's four phases. Exactly 64x64 images are left alone.
    """
    img = cuda.blockIdx.x
    h = heights[img]
    w = widths[img]
    if h == 64 and w == 64:
        return
    off = offsets[img]
    if along_cols == 0:
        nvec = h
        n = w
        es = 1
        vs = w
    else:
        nvec = w
        n = h
        es = w
        vs = 1
    win = (n + 127) // 128
    half = (win + 2) // 2
    for v in range(cuda.threadIdx.x, nvec, cuda.blockDim.x):
        base = off + v * vs
        s = float32(0.0)
        ri = 0
        li = 0
        oi = 0
        for _ in range(half - 1):
            s = s + src[base + ri * es]
            ri += 1
        count = half - 1
        for _ in range(win - half + 1):
            s = s + src[base + ri * es]
            ri += 1
            count += 1
            dst[base + oi * es] = s / float32(count)
            oi += 1
        c = float32(count)
        for _ in range(n - win):
            s = s + src[base + ri * es]
            s = s - src[base + li * es]
            ri += 1
            li += 1
            dst[base + oi * es] = s / c
            oi += 1
        for _ in range(half - 1):
            s = s - src[base + li * es]
            li += 1
            count -= 1
            dst[base + oi * es] = s / float32(count)
            oi += 1


@cuda.jit(cache=True)
def finish(plane, offsets, heights, widths, dct, hashes, qualities):  # type: ignore[no-untyped-def]
    """Image blockIdx.x (256 threads): decimate to 64x64, quality, DCT, then per
    variant the median and bits (hashes has 1 or 8 rows per image)."""
    a = cuda.shared.array(shape=(64, 64), dtype=float32)
    t_mat = cuda.shared.array(shape=(16, 64), dtype=float32)
    bv = cuda.shared.array(shape=256, dtype=float32)
    vv = cuda.shared.array(shape=256, dtype=float32)
    part = cuda.shared.array(shape=256, dtype=int32)
    bits = cuda.shared.array(shape=256, dtype=int32)
    med = cuda.shared.array(shape=1, dtype=float32)
    img = cuda.blockIdx.x
    tid = cuda.threadIdx.x
    nthreads = cuda.blockDim.x
    h = heights[img]
    w = widths[img]
    off = offsets[img]
    for o in range(tid, 4096, nthreads):
        i = o // 64
        j = o % 64
        ri = int((i + 0.5) * h / 64)
        cj = int((j + 0.5) * w / 64)
        a[i, j] = plane[off + ri * w + cj]
    cuda.syncthreads()
    # Quality: truncated scaled gradients, vertical pairs then horizontal.
    total = 0
    hundred = float32(100.0)
    scale = float32(255.0)
    for p in range(tid, 63 * 64, nthreads):
        i = p // 64
        j = p % 64
        d = (a[i, j] - a[i + 1, j]) * hundred / scale
        total += int(abs(d))
    for p in range(tid, 64 * 63, nthreads):
        i = p // 63
        j = p % 63
        d = (a[i, j] - a[i, j + 1]) * hundred / scale
        total += int(abs(d))
    part[tid] = int32(total)
    # T = D A: one float32 accumulator per value, k increasing.
    for o in range(tid, 1024, nthreads):
        i = o // 64
        j = o % 64
        s = float32(0.0)
        for k in range(64):
            s = _fadd(s, _fmul(dct[i, k], a[k, j]))
        t_mat[i, j] = s
    cuda.syncthreads()
    if tid == 0:
        q = 0
        for k in range(nthreads):
            q += part[k]
        q = q // 90
        if q > 100:
            q = 100
        qualities[img] = int32(q)
    # B = T D^T.
    for o in range(tid, 256, nthreads):
        i = o // 16
        j = o % 16
        s = float32(0.0)
        for k in range(64):
            s = _fadd(s, _fmul(t_mat[i, k], dct[j, k]))
        bv[o] = s
    cuda.syncthreads()
    # One hash per variant: the image as is, or its 8 rotations/flips (the
    # reference's order) when hashes has 8 rows per image. A rotation or flip
    # transposes B and negates odd-frequency rows or columns (see the CPU twin's
    # hashers.pdq_bits.dihedral_bits); each variant is thresholded at its own median.
    nvar = hashes.shape[0] // qualities.shape[0]
    for variant in range(nvar):
        for o in range(tid, 256, nthreads):
            i = o // 16
            j = o % 16
            x = bv[o]
            dest = o
            neg = False
            if variant == 1:  # rot90
                dest = j * 16 + i
                neg = j % 2 == 0
            elif variant == 2:  # rot180
                neg = (i + j) % 2 == 1
            elif variant == 3:  # rot270
                dest = j * 16 + i
                neg = i % 2 == 0
            elif variant == 4:  # flipX
                neg = i % 2 == 0
            elif variant == 5:  # flipY
                neg = j % 2 == 0
            elif variant == 6:  # flip+1: transpose
                dest = j * 16 + i
            elif variant == 7:  # flip-1: anti-transpose
                dest = j * 16 + i
                neg = (i + j) % 2 == 1
            vv[dest] = -x if neg else x
        cuda.syncthreads()
        # Lower median: the value with at most 127 smaller values and more than 127 <= it.
        for o in range(tid, 256, nthreads):
            v = vv[o]
            less = 0
            leq = 0
            for k in range(256):
                x = vv[k]
                if x < v:
                    less += 1
                if x <= v:
                    leq += 1
            if less <= MEDIAN_RANK and leq > MEDIAN_RANK:
                med[0] = v
        cuda.syncthreads()
        m = med[0]
        for o in range(tid, 256, nthreads):
            bits[o] = 1 if vv[o] > m else 0
        cuda.syncthreads()
        # Bit k = 16i + j lands in byte 31 - k // 8, at 1 << (k % 8).
        row = img * nvar + variant
        for byte in range(tid, 32, nthreads):
            k0 = 8 * (31 - byte)
            val = 0
            for b in range(8):
                val |= bits[k0 + b] << b
            hashes[row, byte] = uint8(val)
        cuda.syncthreads()  # vv, med and bits are reused by the next variant
