"""The pipeline of the GPU backends: CPU threads prepare, the device computes.

A batch goes through two stages (both ``Pipeline.run``; this class only
supplies the device's hashers, its fault handling and its index):

1. CPU, on the worker pool, outside the device lock: the checks, decoding,
   the groups with no device hasher (the imagehash family), and the digests
   of files of at least ``gpu.digest_cpu_min_bytes`` (one GPU thread walks one
   file's blocks in sequence, so a large file is faster on a CPU core);
2. device, one group's batch at a time under the device lock: each group with
   a device hasher (``SignalType.device_hasher``: appliance.gpu.hashers) once
   over the whole batch (the fused digest kernel over all small files, the PDQ
   kernels over all decoded images, with the 8 dihedral variants when
   configured), then the match against the snapshot's ``DeviceIndex``.

A video's frames are hashed on the device as its decode streams them, batch
by batch (``video_sink``: appliance.gpu.video), each launch under the lock.

Because only stage 2 holds the lock, the CPU stage of the next batch runs
while the device works on this one (the server runs several batches at once;
``appliance scan`` keeps two in flight).

Any exception in a device group's batch (out of device memory, a kernel that
fails to compile or launch), in the match, in a lookup or in the upload of
the lists is a GPU fault: it is logged and counted (``fallbacks``, and
``appliance_gpu_fallbacks_total`` by stage), and that piece of work alone is
redone on the CPU (a group's batch by its hasher's CPU twin, on the same bytes
or pixels), so the caller still gets the same answers. With ``gpu.strict`` it
is raised instead, as a GpuFault whose ``__cause__`` is the original
exception: tests, benchmarks and the GPU check must fail on a broken kernel,
not measure or verify the CPU under the name of the GPU. ``fault_hook`` lets
tests inject such faults.

``warm_up`` runs every kernel once, checked against its CPU twin, before the
server says ready (appliance.gpu.warmup): it compiles them (or loads them from
numba's cache) and proves them on this device.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import TypeVar

from appliance.config import Config
from appliance.errors import ApplianceError, ConfigError, ItemFault
from appliance.gpu.device import Device
from appliance.gpu.index import DeviceIndex
from appliance.gpu.video import DeviceHashing
from appliance.gpu.warmup import warm_up_kernels
from appliance.hashers.video import Hashing
from appliance.index.snapshot import Snapshot
from appliance.metrics import Metrics
from appliance.pipeline import Pipeline
from appliance.results import Hit, ItemResult
from appliance.sandbox import Decoders
from appliance.signals import SIGNALS, resolve
from appliance.work import DeviceHasher

log = logging.getLogger("appliance.gpu")

T = TypeVar("T")


class GpuFault(ApplianceError, RuntimeError):
    """A device fault raised, not fallen back from (``gpu.strict``; tests also
    inject it); ``__cause__`` is the original exception. An ApplianceError, so
    a strict warm-up failure stops ``appliance serve`` with one line."""


def _one_line(exc: BaseException, limit: int = 300) -> str:
    text = " ".join(str(exc).split())
    text = text if len(text) <= limit else text[: limit - 3] + "..."
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def device_hashers() -> dict[str, DeviceHasher]:
    """group -> its device hasher, of every group whose signal types name one.

    ConfigError when a group's signals disagree (some with a device hasher,
    some without, or different ones), or a device hasher cannot compute a
    signal that names it: refused at start, never answered with empty values.
    """
    paths: dict[str, set[str | None]] = {}
    for s in SIGNALS.values():
        if s.computable:
            paths.setdefault(s.group, set()).add(s.device_hasher)
    hashers: dict[str, DeviceHasher] = {}
    for group, found in paths.items():
        if found == {None}:
            continue
        if len(found) != 1:
            raise ConfigError(f"the signals of group {group!r} name different device "
                              f"hashers: {sorted(map(str, found))}")
        [path] = found
        assert path is not None
        hasher = resolve(path)
        names = [s.name for s in SIGNALS.values() if s.group == group]
        refused = [n for n in names if not hasher.supports(n)]
        if refused:
            raise ConfigError(f"{path} cannot compute {', '.join(refused)}")
        hashers[group] = hasher
    return hashers


class GpuPipeline(Pipeline):
    def __init__(self, config: Config, device: Device, metrics: Metrics | None = None,
                 decoders: Decoders | None = None) -> None:
        super().__init__(config, metrics, decoders, device_hashers(), device)
        self.device: Device = device
        self.strict = config.gpu.strict
        # Device faults seen (each one a fallback to the CPU unless strict): a
        # plain count, with or without metrics, for benchmarks and checks.
        self.fallbacks = 0
        self._fallbacks_lock = threading.Lock()
        # Called with a stage name ("digest", "perceptual", "match", "upload",
        # "lookup", "warm-up") before the device does it; tests raise from it
        # to inject a fault.
        self.fault_hook: Callable[[str], None] | None = None
        self._index: DeviceIndex | None = None
        self._index_lock = threading.Lock()

    # -- the lists ------------------------------------------------------------

    def prepare_snapshot(self, snapshot: Snapshot) -> None:
        """Upload a new snapshot's indexes (lists that did not change keep their
        device copy). Runs in the list loader's thread before the swap. If the
        upload fails, batches match that snapshot on the CPU (counted as an
        "upload" fallback) and serving goes on."""
        try:
            self._inject("upload")
            with self.device.scope():
                index = DeviceIndex(snapshot, self.device, self._index)
        except Exception as exc:
            self._device_fault("upload", exc, "this snapshot is matched on the CPU")
            return
        with self._index_lock:
            self._index = index  # the old copy is freed once no batch uses it
        if self.metrics is not None:
            self.metrics.gpu_memory.labels("index").set(index.nbytes)
            self.metrics.gpu_memory.labels("pool").set(self.device.pool_bytes())

    def lookup(
        self, snapshot: Snapshot, signal: str, values: list[bytes], qualities: list[int | None],
        extra: int = 0,
    ) -> list[list[Hit]]:
        """Lookup on the device index; on a device fault, on the host (counted)."""
        index = self._device_index(snapshot)
        if index is None:
            return snapshot.match(signal, values, qualities, extra=extra)
        try:
            with self.device.scope():
                self._inject("lookup")
                return index.match(signal, values, qualities, extra)
        except ItemFault:
            raise  # a bad value, not a device fault: the caller reports it
        except Exception as exc:
            self._device_fault("lookup", exc, "answered on the CPU")
            return snapshot.match(signal, values, qualities, extra=extra)

    def _device_index(self, snapshot: Snapshot) -> DeviceIndex | None:
        with self._index_lock:
            index = self._index
        return index if index is not None and index.snapshot is snapshot else None

    # -- a batch ----------------------------------------------------------------

    def video_sink(self, names: tuple[str, ...]) -> Hashing:
        """A video's frames, as its decode streams them, hashed on the device."""
        return DeviceHashing(names, self.device, self._on_device)

    def _on_device(self, stage: str, run: Callable[[], T], fallback: Callable[[], T]) -> T:
        """One group's batch on the device; on a device fault, ``fallback`` (the
        CPU twin on the same inputs), counted, or a GpuFault when strict."""
        try:
            with self.device.scope():
                self._inject(stage)
                with self._stage(stage):
                    return run()
        except Exception as exc:
            self._device_fault(stage, exc, "this batch of it is redone on the CPU")
        return fallback()

    def _match_batch(self, results: Sequence[ItemResult], snapshot: Snapshot,
                     bands: Sequence[int]) -> None:
        index = self._device_index(snapshot)
        if index is None:
            # This snapshot's upload failed (or it was never prepared): the host
            # indexes answer, as on the CPU backend.
            self.match(results, snapshot, bands=bands)
            return
        try:
            with self.device.scope():
                self._inject("match")
                self.match(results, snapshot, lookup=index.match, bands=bands)
            return
        except Exception as exc:
            self._device_fault("match", exc, "this batch is matched on the CPU")
        for result in results:
            result.matches, result.near = [], []  # what the device found before it failed
        self.match(results, snapshot, bands=bands)

    def warm_up(self) -> None:
        """Every kernel once on this device, checked against its CPU twin, and
        the time logged. A fault is logged loudly and counted; with
        ``gpu.strict`` it is raised (GpuFault, one line: the server does not start)."""
        started = time.perf_counter()
        try:
            self._inject("warm-up")
            with self.device.scope():
                timings = warm_up_kernels(self.device, self.hashers, self.pdq_dihedral)
        except Exception as exc:
            self._device_fault("warm-up", exc, "batches fall back to the CPU when kernels fail")
            return
        log.info("GPU kernels warmed up (compiled, or loaded from numba's cache) and checked "
                 "against the CPU on %s in %.1f s (%s)", self.device.name,
                 time.perf_counter() - started,
                 ", ".join(f"{name} {seconds:.2f} s" for name, seconds in timings.items()))

    def _inject(self, stage: str) -> None:
        if self.fault_hook is not None:
            self.fault_hook(stage)

    def _device_fault(self, stage: str, exc: Exception, fallback: str) -> None:
        """Count a device fault in ``stage``; raise it as a GpuFault when
        strict, else log it (the caller then does ``fallback``). Called from
        the ``except`` clause that caught ``exc``."""
        with self._fallbacks_lock:
            self.fallbacks += 1
        if self.strict:
            log.error("GPU fault in the %s stage, raised (gpu.strict)", stage, exc_info=exc)
            raise GpuFault(f"GPU fault in the {stage} stage (gpu.strict, no fallback to the "
                           f"CPU): {_one_line(exc)}") from exc
        log.error("GPU fault in the %s stage; %s", stage, fallback, exc_info=exc)
        if self.metrics is not None:
            self.metrics.gpu_fallbacks.labels(stage).inc()
