"""Choosing the compute backend, once, at start.

This version computes on the CPU. ``auto`` therefore resolves to the CPU and
says so; ``gpu`` refuses to start with a clear message rather than silently
running on the CPU, so a deployment that expects a GPU notices at once.
"""

from __future__ import annotations

import os
import platform
from dataclasses import dataclass

from appliance.errors import ConfigError


@dataclass(frozen=True)
class Backend:
    name: str
    device: str
    # Why this backend was chosen, for the ready line and logs.
    reason: str


def _cpu_device() -> str:
    model = platform.processor() or platform.machine() or "cpu"
    return f"{model} x{os.cpu_count() or 1}"


def select_backend(requested: str) -> Backend:
    if requested == "cpu":
        return Backend("cpu", _cpu_device(), "requested")
    if requested == "auto":
        return Backend("cpu", _cpu_device(), "auto: this build has no GPU backend")
    raise ConfigError(
        f"backend {requested!r} is not available in this build: "
        "only the CPU backend is implemented; use --backend cpu or auto"
    )
