"""Choosing the compute backend, once, at start, and building its pipeline.

- ``cpu``: NumPy, numba-compiled CPU code, hashlib and Pillow on threads;
- ``gpu``: CUDA kernels on the device, CuPy arrays; refuses to start, with
  the reason, when there is no usable device, so a deployment that expects a
  GPU notices at once instead of quietly running on the CPU;
- ``auto``: ``gpu`` when CuPy sees a device, else ``cpu``; the choice and why
  are logged and shown in ``appliance_backend_info`` and GetStatus;
- ``gpu-sim``: the GPU pipeline with NumPy in place of CuPy and the kernels
  under Numba's CUDA simulator: the same code path as ``gpu``, slow, for
  tests and development without a GPU.

``appliance.gpu`` (and with it CuPy and numba.cuda) is imported only here,
and only for a GPU backend.
"""

from __future__ import annotations

import logging
import os
import platform
from dataclasses import dataclass
from typing import Any

from appliance.config import Config, GpuConfig
from appliance.errors import ConfigError
from appliance.metrics import Metrics
from appliance.pipeline import Pipeline

log = logging.getLogger("appliance.backend")


@dataclass(frozen=True)
class Backend:
    name: str  # "cpu", "gpu" or "gpu-sim"
    device: str
    # Why this backend was chosen, for the ready line and logs.
    reason: str
    # The appliance.gpu.device.Device of a GPU backend, else None.
    gpu: Any = None


def _cpu_device() -> str:
    model = platform.processor() or platform.machine() or "cpu"
    return f"{model} x{os.cpu_count() or 1}"


def _gpu(kind: str, gpu: GpuConfig, reason: str) -> Backend:
    from appliance.gpu.device import open_device

    device = open_device(kind, gpu.device)
    return Backend(kind, device.name, reason, device)


def select_backend(requested: str, gpu: GpuConfig | None = None) -> Backend:
    """The backend to run on; ConfigError (with the reason) when ``gpu`` cannot."""
    gpu = gpu or GpuConfig()
    if requested == "cpu":
        backend = Backend("cpu", _cpu_device(), "requested")
    elif requested in ("gpu", "gpu-sim"):
        backend = _gpu(requested, gpu, "requested")
    elif requested == "auto":
        from appliance.gpu.device import probe

        found, why = probe()
        if found:
            backend = _gpu("gpu", gpu, f"auto: {why}")
        else:
            backend = Backend("cpu", _cpu_device(), f"auto: {why}")
    else:
        raise ConfigError(f"unknown backend {requested!r}: use auto, cpu, gpu or gpu-sim")
    log.info("backend %s on %s (%s)", backend.name, backend.device, backend.reason)
    return backend


def make_pipeline(config: Config, backend: Backend, metrics: Metrics | None = None) -> Pipeline:
    """The pipeline of ``backend``: the CPU one, or the GPU one on its device."""
    if backend.gpu is None:
        return Pipeline(config, metrics)
    from appliance.gpu.pipeline import GpuPipeline

    return GpuPipeline(config, backend.gpu, metrics)
