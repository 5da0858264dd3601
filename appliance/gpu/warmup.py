"""A warm-up batch of every GPU kernel, checked against its CPU twin.

numba.cuda compiles a kernel at its first launch (NVVM, then the linker; tens
of seconds for all of them on a fresh machine, well under a second from the
on-disk cache of ``cache=True``). Run before the server says ready, this
moves that cost out of the first requests and out of benchmarks' measured
phases, and it proves each kernel on this device before any answer depends
on it: the digest kernel against hashlib, PDQ (with its 8 dihedral variants
when configured) against the CPU hasher, and the exact and Hamming index
searches against the host snapshot, the video signals' frame kernels against
their CPU twins. One set of argument types is compiled
per kernel, and the pipeline only ever launches with those types.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np
from numpy.typing import NDArray

from appliance.config import MatchingConfig
from appliance.gpu.device import Device
from appliance.gpu.index import DeviceIndex
from appliance.hashers.video import Hashing
from appliance.index.snapshot import Snapshot
from appliance.lists.csv_format import parse_csv
from appliance.results import HashValue
from appliance.signals import SIGNALS
from appliance.work import DeviceHasher
from kernels.pdq import pdq_batch
from kernels.tmk import tmk_features

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


def _inputs(media: str) -> list[Any]:
    return _files() if media == "bytes" else [_image()]


def _check(device: Device, hasher: DeviceHasher, names: Sequence[str], dihedral: bool,
           timings: dict[str, float]) -> list[list[HashValue]]:
    """One device hasher's batch against its CPU twin; the twin's answers."""
    label = hasher.label(names, dihedral)
    inputs = _inputs(SIGNALS[names[0]].media)
    with _kernel(label, timings):
        got = hasher.batch(device, inputs, names, dihedral)
        want = hasher.cpu(inputs, names, dihedral)
        _expect(label, len(got) == len(want), f"{len(got)} answers for {len(want)} inputs")
        for name in names:
            pairs = [(g, w) for gs, ws in zip(got, want, strict=True)
                     for g, w in zip(gs, ws, strict=True) if w.signal == name]
            _expect(label, all(g.signal == name for g, _ in pairs), f"{name} is missing")
            _expect(label, all(g.value == w.value for g, w in pairs),
                    f"{name} differs from the CPU")
            _expect(label, all(g.quality == w.quality for g, w in pairs),
                    f"{name}'s quality differs from the CPU")
            _expect(label, all(g.variant == w.variant for g, w in pairs),
                    f"{name}'s variants differ from the CPU")
    return want


def _snapshot(values: Mapping[str, bytes]) -> Snapshot:
    listing = (f"id,{','.join(values)}\nwarm-up,{','.join(v.hex() for v in values.values())}\n")
    return Snapshot([parse_csv(listing.encode(), "warm-up", "warm-up")], MatchingConfig())


def _index(device: Device, timings: dict[str, float], values: Mapping[str, bytes]) -> None:
    """The device index of a list of ``values`` (signal -> one value) against the
    host's: for each match kind, the first signal of it, a hit and a miss."""
    snapshot = _snapshot(values)
    with _kernel("index upload", timings):
        index = DeviceIndex(snapshot, device)
    kinds: dict[str, str] = {}
    for name in values:
        kinds.setdefault(SIGNALS[name].match, name)
    for kind, name in kinds.items():
        value = values[name]
        # A Hamming hit 2 bits away (distance 2); an exact one as listed.
        hit = bytes([value[0] ^ 0b101]) + value[1:] if kind == "hamming" else value
        queries = [hit, bytes(len(value))]
        qualities: list[int | None] | None = [100, 100] if SIGNALS[name].quality else None
        with _kernel(kind, timings):
            got = index.match(name, queries, qualities)
            want = snapshot.match(name, queries, qualities)
            _expect(kind, got == want and bool(want[0]) and not want[1],
                    "hits differ from the host index")


def warm_up_kernels(device: Device, hashers: Mapping[str, DeviceHasher], dihedral: bool
                    ) -> dict[str, float]:
    """Launch every kernel once on ``device`` (inside its ``scope()``) and check
    the answers; seconds per kernel. ``hashers``: group -> its device hasher
    (``appliance.gpu.pipeline.device_hashers``). Raises KernelCheckFailed
    naming the kernel."""
    timings: dict[str, float] = {}
    listed: dict[str, bytes] = {}
    for group, hasher in hashers.items():
        names = [s.name for s in SIGNALS.values() if s.group == group]
        # PDQ as the pipeline will run it: with the 8 variants or without (the
        # same kernels either way; the variants add work to ``finish``).
        want = _check(device, hasher, names, dihedral, timings)
        for value in want[-1]:
            listed.setdefault(value.signal, value.value)
    if any(s.media == "video" for s in SIGNALS.values()):
        _video(device, timings)
    # The list in registry order, as a list file would have it.
    _index(device, timings, {n: listed[n] for n in SIGNALS if n in listed})
    return timings


def _video(device: Device, timings: dict[str, float]) -> None:
    """The video kernels (appliance.gpu.video): TMK's features of two stretched
    frames and vPDQ's float32-luma PDQ of a frame, against the CPU's."""
    cpu = Hashing(())
    image = _image()
    frames = np.stack([np.resize(image, (64, 64, 3)), np.resize(image[::-1], (64, 64, 3))])
    with _kernel("tmk features", timings):
        got = tmk_features(frames, device.xp, stream=device.kernel_stream)
        _expect("tmk features", got.tobytes() == cpu.tmk_features(frames).tobytes(),
                "features differ from the CPU")
    with _kernel("vpdq pdq", timings):
        hashes, qualities = pdq_batch([image], device.xp, host_buffer=device.staging,
                                      stream=device.kernel_stream, float_luma=True)
        _expect("vpdq pdq", (hashes[0].tobytes(), int(qualities[0])) == cpu.vpdq_hash(image),
                "hash or quality differs from the CPU")
