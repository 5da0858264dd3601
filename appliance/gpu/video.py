"""The video signals' hashing on the device, as a video's frames stream in.

A video is decoded where pictures are (a sandboxed decode worker), which
streams its frames to the server as it makes them (appliance.sandbox): TMK's
stretched 64x64 frames in batches of 64, vPDQ's sampled frames one at a time.
``DeviceHashing`` receives them in the server's process: the PDQF features of
each TMK batch come from the TMK kernel (kernels.tmk) and each vPDQ frame's
hash from the PDQ kernels with the reference's float32 luma (kernels.pdq),
both bit for bit their CPU twins; the TMK sums (a few hundred operations a
frame) stay on the host. Memory holds one batch and one frame, whatever the
video's length. Each launch runs through the pipeline's device guard (stage
"video"): on a device fault that batch or frame is redone on the CPU,
counted, or raised when ``gpu.strict``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from numpy.typing import NDArray

from appliance.hashers.video import Hashing
from kernels.pdq import pdq_batch
from kernels.tmk import tmk_features

STAGE = "video"

OnDevice = Callable[[str, Callable[[], Any], Callable[[], Any]], Any]
"""``GpuPipeline._on_device``: (stage, run on the device, its CPU fallback) -> result."""


class DeviceHashing(Hashing):
    """``Hashing`` whose per-frame kernels run on ``device`` (see the module docstring)."""

    def __init__(self, names: tuple[str, ...], device: Any, on_device: OnDevice) -> None:
        super().__init__(names)
        self.device = device
        self.on_device = on_device
        self.launches = 0  # device launches made (tests: nothing fell back unseen)

    def tmk_features(self, rgb: NDArray[np.uint8]) -> NDArray[np.float32]:
        cpu = super().tmk_features

        def run() -> NDArray[np.float32]:
            self.launches += 1
            return tmk_features(rgb, self.device.xp, stream=self.device.kernel_stream)

        out: NDArray[np.float32] = self.on_device(STAGE, run, lambda: cpu(rgb))
        return out

    def vpdq_hash(self, rgb: NDArray[np.uint8]) -> tuple[bytes, int]:
        cpu = super().vpdq_hash

        def run() -> tuple[bytes, int]:
            self.launches += 1
            hashes, qualities = pdq_batch([rgb], self.device.xp, host_buffer=self.device.staging,
                                          stream=self.device.kernel_stream, float_luma=True)
            return hashes[0].tobytes(), int(qualities[0])

        out: tuple[bytes, int] = self.on_device(STAGE, run, lambda: cpu(rgb))
        return out
