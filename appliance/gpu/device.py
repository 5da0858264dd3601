"""The device of a GPU backend: its array module, staging memory and stream.

Two kinds, one interface, so the pipeline above has a single code path:
- ``gpu``: CuPy arrays in device memory, kernels compiled by numba.cuda,
  pinned host staging buffers, one non-blocking stream for copies and kernels;
- ``gpu-sim``: NumPy arrays and Numba's CUDA simulator (slow: for tests and
  development on machines without a GPU).

The simulator is chosen by numba when ``numba.cuda`` is first imported, so
``gpu-sim`` must be opened before anything imports it; a process that already
imported the real numba.cuda cannot switch, and says so.
"""

from __future__ import annotations

import importlib
import os
import sys
import threading
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from typing import Any

import numpy as np
from numpy.typing import NDArray

from appliance.errors import ConfigError


class DeviceUnavailable(ConfigError):
    """The requested GPU backend cannot run here; the message says why."""


def _use_simulator() -> None:
    """Make numba.cuda the CUDA simulator (before its first import)."""
    from numba.core import config

    loaded = sys.modules.get("numba.cuda")
    if loaded is not None:
        if getattr(loaded.is_available, "__module__", "").endswith("simulator_init"):
            return
        raise DeviceUnavailable(
            "gpu-sim: numba.cuda was already imported without the simulator in this "
            "process; start it with NUMBA_ENABLE_CUDASIM=1 or choose gpu-sim first"
        )
    # numba reads the variable when its configuration is (re)loaded.
    os.environ["NUMBA_ENABLE_CUDASIM"] = "1"
    config.reload_config()  # type: ignore[no-untyped-call]


def probe() -> tuple[bool, str]:
    """(a CUDA device is usable, what was found or why not), without raising."""
    try:
        cupy = importlib.import_module("cupy")
    except ImportError:
        return False, "CuPy is not installed (pip install '.[gpu]')"
    try:
        count = int(cupy.cuda.runtime.getDeviceCount())
    except Exception as exc:  # no driver, no device: CuPy raises its runtime error
        return False, f"no CUDA device: {type(exc).__name__}: {exc}"
    if count < 1:
        return False, "no CUDA device"
    try:
        from numba import cuda

        if not cuda.is_available():  # type: ignore[no-untyped-call]
            return False, "numba.cuda sees no CUDA device"
    except Exception as exc:
        return False, f"numba.cuda cannot start: {type(exc).__name__}: {exc}"
    return True, f"{count} CUDA device(s)"


class Device:
    """One device: array module ``xp``, host staging buffer, stream, memory figures.

    The pipeline uses it from one thread at a time (it holds the device lock),
    so the staging buffer is shared and reused between batches.
    """

    def __init__(self, xp: Any, simulated: bool, name: str, ordinal: int = 0) -> None:
        self.xp = xp
        self.simulated = simulated
        self.name = name
        self.ordinal = ordinal
        self._staging: NDArray[np.uint8] = np.empty(0, dtype=np.uint8)
        self._lock = threading.Lock()
        self._cupy_stream: Any = None
        self.kernel_stream: Any = 0  # numba launches: the default stream under the simulator
        if not simulated:
            self._cupy_stream = xp.cuda.Stream(non_blocking=True)
            from numba import cuda

            # Kernels and CuPy's copies on the same stream, so they are ordered.
            self.kernel_stream = cuda.external_stream(self._cupy_stream.ptr)

    def staging(self, nbytes: int) -> NDArray[np.uint8]:
        """A host uint8 buffer of at least ``nbytes``, pinned on a real GPU (an
        asynchronous upload source); reused, grown by doubling."""
        if self._staging.shape[0] < nbytes:
            size = max(nbytes, 2 * self._staging.shape[0], 1 << 20)
            if self.simulated:
                self._staging = np.empty(size, dtype=np.uint8)
            else:
                import cupyx

                self._staging = cupyx.empty_pinned((size,), dtype=np.uint8)
        return self._staging[:nbytes]

    def upload(self, host: Any) -> Any:
        """A device copy of ``host`` (asynchronous from pinned memory on a GPU);
        an array already on the device is made contiguous, not copied back
        (``np.ascontiguousarray`` refuses CuPy arrays as CuPy refuses NumPy's)."""
        if self.simulated:
            return np.array(host, copy=True)
        if not isinstance(host, np.ndarray):
            return self.xp.ascontiguousarray(self.xp.asarray(host))
        out = self.xp.empty(host.shape, dtype=host.dtype)
        out.set(np.ascontiguousarray(host), stream=self._cupy_stream)
        return out

    def to_host(self, a: Any) -> NDArray[Any]:
        return a.get(stream=self._cupy_stream) if hasattr(a, "get") else np.asarray(a)

    @contextmanager
    def scope(self) -> Iterator[None]:
        """Device work of one batch, in whatever thread: our device made current
        for CuPy and numba (both keep the current device per thread), CuPy's
        allocations and copies on our stream, which is synchronised at the end,
        so the batch's results are complete."""
        with self._lock, ExitStack() as stack:
            if not self.simulated:
                from numba import cuda

                stack.enter_context(self.xp.cuda.Device(self.ordinal))
                stack.enter_context(cuda.gpus[self.ordinal])
                stack.enter_context(self._cupy_stream)
            yield
            if self._cupy_stream is not None:
                self._cupy_stream.synchronize()

    def pool_bytes(self) -> int:
        """Bytes held by CuPy's memory pool (0 under the simulator)."""
        if self.simulated:
            return 0
        return int(self.xp.get_default_memory_pool().total_bytes())


def open_device(kind: str, ordinal: int = 0) -> Device:
    """The device of backend ``kind`` ("gpu" or "gpu-sim"); DeviceUnavailable
    with the reason when it cannot run here."""
    if kind == "gpu-sim":
        _use_simulator()
        return Device(np, simulated=True, name="CUDA simulator (NumPy)")
    if kind != "gpu":
        raise ValueError(f"not a GPU backend: {kind!r}")
    ok, why = probe()
    if not ok:
        raise DeviceUnavailable(
            f"--backend gpu: {why}; use --backend cpu (or auto, which falls back to the CPU)"
        )
    import cupy

    count = int(cupy.cuda.runtime.getDeviceCount())
    if not 0 <= ordinal < count:
        raise DeviceUnavailable(f"gpu.device={ordinal}, but there are {count} CUDA device(s)")
    cupy.cuda.Device(ordinal).use()
    from numba import cuda

    cuda.select_device(ordinal)  # type: ignore[no-untyped-call]
    props = cupy.cuda.runtime.getDeviceProperties(ordinal)
    name = props["name"]
    name = name.decode() if isinstance(name, bytes) else str(name)
    return Device(cupy, simulated=False, name=f"{name} #{ordinal}", ordinal=ordinal)
