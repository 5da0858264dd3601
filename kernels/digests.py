"""MD5, SHA-1 and SHA-256 of every file of a ragged batch, fused, on the GPU.

CPU twin: ``hashlib`` (``md5``, ``sha1``, ``sha256`` of each file's bytes).
The batch is one flat uint8 buffer with an (offset, length) per file. One
thread hashes one file: a file's 64-byte blocks are sequential by nature, so
the parallelism is across files. Each block is read once; the same bytes
become the 16 message words of MD5 (little-endian) and of SHA-1/SHA-256
(big-endian), and the three compression functions run on that block before
the next is read. Padding (0x80, zeros, the 64-bit bit length) is built in
the last one or two blocks without copying the file.

Threads are handed files longest first (``order`` = lengths sorted
descending), so the threads of a warp walk about as many blocks and finish
together. Built on first use by a cached factory; runs under
``NUMBA_ENABLE_CUDASIM=1`` on the CPU.
"""

from __future__ import annotations

from typing import Any

from kernels._launch import after_launch, before_launch, device_array, lazy_kernel

THREADS = 128  # threads per block; each keeps ~1.3 KiB of message schedule locally
# The hashlib names of ``digest_batch``'s outputs, in its order.
COLUMNS = ("md5", "sha1", "sha256")

_kernel = lazy_kernel("kernels._digests_cuda", "digest")


def digest_batch(
    data: Any, offsets: Any, lengths: Any, xp: Any, stream: Any = 0
) -> tuple[Any, Any, Any]:
    """data: (B,) uint8 flat buffer of all files; offsets, lengths: (N,) int64;
    each NumPy or on the device of ``xp`` (numpy/cupy).

    Returns (md5 (N, 16) uint8, sha1 (N, 20) uint8, sha256 (N, 32) uint8),
    row i the digests of ``data[offsets[i]:offsets[i] + lengths[i]]``, on the
    device of ``xp``, computed on numba ``stream`` and complete on return (the
    stream is synchronised). Raises ValueError if a file lies outside ``data``.
    """
    data = device_array(xp, data, xp.uint8).reshape(-1)
    offsets = device_array(xp, offsets, xp.int64).reshape(-1)
    lengths = device_array(xp, lengths, xp.int64).reshape(-1)
    n = int(lengths.shape[0])
    if int(offsets.shape[0]) != n:
        raise ValueError(f"offsets has {offsets.shape[0]} entries, lengths {n}")
    md5 = xp.zeros((n, 16), dtype=xp.uint8)
    sha1 = xp.zeros((n, 20), dtype=xp.uint8)
    sha256 = xp.zeros((n, 32), dtype=xp.uint8)
    if n == 0:
        return md5, sha1, sha256
    if int(lengths.min()) < 0 or int(offsets.min()) < 0:
        raise ValueError("offsets and lengths must be non-negative")
    if int((offsets + lengths).max()) > int(data.shape[0]):
        raise ValueError("a file extends past the end of data")
    # Longest first, so a warp's threads walk about as many blocks each.
    order = xp.ascontiguousarray(xp.argsort(lengths)[::-1], dtype=xp.int64)
    blocks = -(-n // THREADS)
    before_launch(xp, stream)
    _kernel()[blocks, THREADS, stream](data, offsets, lengths, order, md5, sha1, sha256)
    after_launch(stream)
    return md5, sha1, sha256
