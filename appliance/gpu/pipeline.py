"""The pipeline of the GPU backends: CPU threads prepare, the device computes.

A batch goes through two stages:

1. CPU, on the worker pool, outside the device lock: the checks, decoding,
   the imagehash family, and the digests of files of at least
   ``gpu.digest_cpu_min_bytes`` (one GPU thread walks one file's blocks in
   sequence, so a large file is faster on a CPU core), all by the CPU
   pipeline's own ``hash_item``, which leaves placeholders for the rest;
2. device, one batch at a time under the device lock: the fused digest
   kernel over all small files, the PDQ kernels over all decoded images (with
   the 8 dihedral variants when configured), and the match against the
   snapshot's ``DeviceIndex``.

Because only stage 2 holds the lock, the CPU stage of the next batch runs
while the device works on this one (the server runs several batches at once;
``appliance scan`` keeps two in flight).

Any exception in stage 2 (out of device memory, a kernel that fails to
compile or launch), in a lookup or in the upload of the lists is a GPU fault:
it is logged and counted (``fallbacks``, and ``appliance_gpu_fallbacks_total``
by stage), and the work is redone on the CPU path, so the caller still gets
the same answers. With ``gpu.strict`` it is raised instead, as a GpuFault
whose ``__cause__`` is the original exception: tests, benchmarks and the GPU
check must fail on a broken kernel, not measure or verify the CPU under the
name of the GPU. ``fault_hook`` lets tests inject such faults.

``warm_up`` runs every kernel once, checked against its CPU twin, before the
server says ready (appliance.gpu.warmup): it compiles them (or loads them from
numba's cache) and proves them on this device.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from dataclasses import replace

import numpy as np

from appliance.config import Config
from appliance.errors import ApplianceError, ItemFault
from appliance.gpu.device import Device
from appliance.gpu.index import DeviceIndex
from appliance.gpu.warmup import warm_up_kernels
from appliance.index.snapshot import Snapshot
from appliance.metrics import Metrics
from appliance.pipeline import Deferred, Pipeline, matchable_items
from appliance.pixels import PENDING_QUALITY
from appliance.results import HashValue, Hit, Item, ItemResult
from appliance.sandbox import Decoders
from kernels.digests import digest_batch
from kernels.pdq import pdq_batch

log = logging.getLogger("appliance.gpu")

_DIGEST_COLUMNS = {"md5": 0, "sha1": 1, "sha256": 2}


class GpuFault(ApplianceError, RuntimeError):
    """A device fault raised, not fallen back from (``gpu.strict``; tests also
    inject it); ``__cause__`` is the original exception. An ApplianceError, so
    a strict warm-up failure stops ``appliance serve`` with one line."""


def _one_line(exc: BaseException, limit: int = 300) -> str:
    text = " ".join(str(exc).split())
    text = text if len(text) <= limit else text[: limit - 3] + "..."
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class GpuPipeline(Pipeline):
    export_pdq = True

    def __init__(self, config: Config, device: Device, metrics: Metrics | None = None,
                 decoders: Decoders | None = None) -> None:
        super().__init__(config, metrics, decoders)
        self.device = device
        self.digest_cpu_min = config.gpu.digest_cpu_min_bytes
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

    def run(
        self, items: Sequence[Item], snapshot: Snapshot | None, pool: Executor
    ) -> list[ItemResult]:
        deferred = [Deferred(self.digest_cpu_min) for _ in items]
        results = list(pool.map(self.hash_item, items, deferred))
        try:
            return self._device_stages(items, results, deferred, snapshot, pool)
        finally:
            # The decoded pixels are hashed (or dropped): their budget is free.
            self.budget.release(sum(d.held for d in deferred))

    def _device_stages(
        self, items: Sequence[Item], results: list[ItemResult], deferred: list[Deferred],
        snapshot: Snapshot | None, pool: Executor,
    ) -> list[ItemResult]:
        stage = "digest"
        try:
            with self.device.scope():
                self._inject(stage)
                with self._stage("digest"):
                    self._digests(items, results, deferred)
                stage = "perceptual"
                self._inject(stage)
                with self._stage("perceptual"):
                    self._pdq(results, deferred)
                if snapshot is not None:
                    stage = "match"
                    self._match(items, results, snapshot)
        except Exception as exc:
            self._device_fault(stage, exc, "the batch is redone on the CPU")
            return super().run(items, snapshot, pool)
        self.record(results)
        return results

    def warm_up(self) -> None:
        """Every kernel once on this device, checked against its CPU twin, and
        the time logged. A fault is logged loudly and counted; with
        ``gpu.strict`` it is raised (GpuFault, one line: the server does not start)."""
        started = time.perf_counter()
        try:
            self._inject("warm-up")
            with self.device.scope():
                timings = warm_up_kernels(self.device, self.pdq_dihedral)
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

    def _digests(
        self, items: Sequence[Item], results: list[ItemResult], deferred: list[Deferred]
    ) -> None:
        """The fused digest kernel over every file whose digests were deferred."""
        todo = [i for i, d in enumerate(deferred) if d.digest_names and results[i].error is None]
        if not todo:
            return
        dev = self.device
        lengths = np.array([len(items[i].content) for i in todo], dtype=np.int64)
        offsets = np.zeros(len(todo), dtype=np.int64)
        np.cumsum(lengths[:-1], out=offsets[1:])
        total = int(lengths.sum())
        flat = dev.staging(max(1, total))
        for i, offset, length in zip(todo, offsets.tolist(), lengths.tolist(), strict=True):
            flat[offset : offset + length] = np.frombuffer(items[i].content, dtype=np.uint8)
        columns = digest_batch(
            dev.upload(flat), dev.upload(offsets), dev.upload(lengths), dev.xp,
            stream=dev.kernel_stream,
        )
        host = [dev.to_host(c) for c in columns]
        for row, i in enumerate(todo):
            hashes = results[i].hashes
            for k, value in enumerate(hashes):
                column = _DIGEST_COLUMNS.get(value.signal)
                if column is not None and value.value == b"":
                    hashes[k] = HashValue(value.signal, host[column][row].tobytes())

    def _pdq(self, results: list[ItemResult], deferred: list[Deferred]) -> None:
        """The PDQ kernels over every decoded image, filling the placeholders in order."""
        images = [img for d in deferred for img in d.images]
        if not images:
            return
        dev = self.device
        dihedral = self.pdq_dihedral
        hashes, qualities = pdq_batch(
            images, dev.xp, dihedral=dihedral, host_buffer=dev.staging, stream=dev.kernel_stream
        )
        rows = hashes.reshape(len(images), -1, 32)
        image = 0
        for result, d in zip(results, deferred, strict=True):
            if not d.images:
                continue
            slots = [k for k, h in enumerate(result.hashes)
                     if h.signal == "pdq" and h.quality == PENDING_QUALITY]
            per_image = rows.shape[1]
            if len(slots) != per_image * len(d.images):
                raise RuntimeError(f"{result.id}: {len(slots)} PDQ placeholders "
                                   f"for {len(d.images)} image(s)")
            for n in range(len(d.images)):
                for v in range(per_image):
                    k = slots[n * per_image + v]
                    result.hashes[k] = replace(
                        result.hashes[k],
                        value=rows[image][v].tobytes(),
                        quality=int(qualities[image]),
                    )
                image += 1

    def _match(self, items: Sequence[Item], results: list[ItemResult], snapshot: Snapshot) -> None:
        index = self._device_index(snapshot)
        wanted = matchable_items(items, results)
        chosen, bands = [r for _, r in wanted], [i.probe_band for i, _ in wanted]
        if index is None:
            # This snapshot's upload failed (or it was never prepared): the host
            # indexes answer, as on the CPU backend.
            self.match(chosen, snapshot, bands=bands)
            return
        self._inject("match")
        self.match(chosen, snapshot, lookup=index.match, bands=bands)
