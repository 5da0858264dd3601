"""A warm-up batch of every GPU kernel, checked against its CPU twin.

numba.cuda compiles a kernel at its first launch (NVVM, then the linker; tens
of seconds for all of them on a fresh machine, well under a second from the
on-disk cache of ``cache=True``). Run before the server says ready, this
moves that cost out of the first requests and out of benchmarks' measured
phases, and it proves each kernel on this device before any answer depends
on it: the digest kernel against hashlib, PDQ (with its 8 dihedral variants
when configured) against the CPU hasher, and the exact and Hamming index
searches against the host snapshot. One set of argument types is compiled
per kernel, and the pipeline only ever launches with those types.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
from numpy.typing import NDArray

from appliance.config import MatchingConfig
from appliance.gpu.device import Device
from appliance.gpu.index import DeviceIndex
from appliance.hashers.pdq import pdq_dihedral_from_rgb, pdq_from_rgb
from appliance.index.snapshot import Snapshot
from appliance.lists.csv_format import parse_csv
from kernels.digests import digest_batch
from kernels.pdq import pdq_batch

# Lengths around the padding boundaries (55/56: the length fits or not in the
# last block; 64: a whole block), so every branch of the digest kernel runs.
_LENGTHS = (0, 1, 55, 56, 64, 130)
# Small: under the simulator each CUDA thread is a Python thread.
_IMAGE_SHAPE = (20, 24)


class KernelCheckFailed(RuntimeError):
    """A warm-up kernel failed or answered unlike its CPU twin; names the kernel."""


def _files() -> list[bytes]:
    rng = np.random.default_rng(13)
    return [rng.integers(0, 256, n, dtype=np.uint8).tobytes() for n in _LENGTHS]


def _image() -> NDArray[np.uint8]:
    """A textured picture: a flat one would hash to quality 0 and check little."""
    h, w = _IMAGE_SHAPE
    yy, xx = np.mgrid[0:h, 0:w]
    planes = [(xx * (3 + c) + yy * (7 - c) + (xx * yy) % (5 + c)) * 37 % 256 for c in range(3)]
    return np.stack(planes, axis=-1).astype(np.uint8)


@contextmanager
def _kernel(name: str, timings: dict[str, float]) -> Iterator[None]:
    started = time.perf_counter()
    try:
        yield
    except KernelCheckFailed:
        raise
    except Exception as exc:
        raise KernelCheckFailed(f"the {name} kernel: {type(exc).__name__}: {exc}") from exc
    timings[name] = time.perf_counter() - started


def _expect(name: str, ok: bool, what: str) -> None:
    if not ok:
        raise KernelCheckFailed(f"the {name} kernel: {what}")


def _digests(device: Device) -> None:
    files = _files()
    lengths = np.array([len(f) for f in files], dtype=np.int64)
    offsets = np.zeros(len(files), dtype=np.int64)
    np.cumsum(lengths[:-1], out=offsets[1:])
    flat = np.frombuffer(b"".join(files), dtype=np.uint8)
    # As the pipeline calls it: the buffer uploaded, and also NumPy offsets.
    columns = digest_batch(device.upload(flat), offsets, device.upload(lengths), device.xp,
                           stream=device.kernel_stream)
    got = [device.to_host(c) for c in columns]
    for k, algorithm in enumerate((hashlib.md5, hashlib.sha1, hashlib.sha256)):
        want = [algorithm(f).digest() for f in files]
        rows = [got[k][i].tobytes() for i in range(len(files))]
        _expect("digest", rows == want, f"{algorithm().name} differs from hashlib")


def _pdq(device: Device, rgb: NDArray[np.uint8], dihedral: bool) -> None:
    name = "pdq dihedral" if dihedral else "pdq"
    hashes, qualities = pdq_batch([rgb], device.xp, dihedral=dihedral,
                                  host_buffer=device.staging, stream=device.kernel_stream)
    if dihedral:
        want, quality = pdq_dihedral_from_rgb(rgb)
        got = [hashes[0][v].tobytes() for v in range(8)]
    else:
        one, quality = pdq_from_rgb(rgb)
        want, got = [one], [hashes[0].tobytes()]
    _expect(name, [bytes(w) for w in want] == got, "hash differs from the CPU hasher")
    _expect(name, int(qualities[0]) == int(quality), "quality differs from the CPU hasher")


def _snapshot(md5: bytes, pdq: bytes) -> Snapshot:
    listing = f"id,md5,pdq\nwarm-up,{md5.hex()},{pdq.hex()}\n".encode()
    return Snapshot([parse_csv(listing, "warm-up", "warm-up")], MatchingConfig())


def _index(device: Device, timings: dict[str, float], rgb: NDArray[np.uint8]) -> None:
    md5 = hashlib.md5(_files()[2]).digest()
    pdq = bytes(pdq_from_rgb(rgb)[0])
    near = bytes([pdq[0] ^ 0b101]) + pdq[1:]  # 2 bits away: a hit at distance 2
    snapshot = _snapshot(md5, pdq)
    with _kernel("index upload", timings):
        index = DeviceIndex(snapshot, device)
    cases: list[tuple[str, str, list[bytes], list[int | None] | None]] = [
        ("exact", "md5", [md5, bytes(16)], None),
        ("hamming", "pdq", [near, bytes(32)], [100, 100]),
    ]
    for name, signal, values, qualities in cases:
        with _kernel(name, timings):
            got = index.match(signal, values, qualities)
            want = snapshot.match(signal, values, qualities)
            _expect(name, got == want and bool(want[0]) and not want[1],
                    "hits differ from the host index")


def warm_up_kernels(device: Device, dihedral: bool) -> dict[str, float]:
    """Launch every kernel once on ``device`` (inside its ``scope()``) and check
    the answers; seconds per kernel. Raises KernelCheckFailed naming the kernel."""
    timings: dict[str, float] = {}
    rgb = _image()
    # PDQ as the pipeline will run it: with the 8 variants or without (the
    # same kernels either way; the variants add work to ``finish``).
    steps: list[tuple[str, Callable[[], Any]]] = [
        ("digest", lambda: _digests(device)),
        ("pdq dihedral" if dihedral else "pdq", lambda: _pdq(device, rgb, dihedral)),
    ]
    for name, step in steps:
        with _kernel(name, timings):
            step()
    _index(device, timings, rgb)
    return timings
