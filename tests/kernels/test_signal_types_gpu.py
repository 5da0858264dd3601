"""The GPU twin of tests/test_signal_types.py, generated over the registry: for
every signal type with a device hasher, the gpu-sim backend (a real GPU where
there is one) hashes known files as the CPU does, through the public pipeline,
with zero fallbacks (strict: a device fault fails the test instead of being
answered by the CPU)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest

from appliance.backend import Backend, make_pipeline
from appliance.config import Config, GpuConfig, LimitsConfig
from appliance.metrics import Metrics
from appliance.pipeline import Pipeline
from appliance.results import Item
from appliance.signals import SIGNALS, SignalType, resolve
from tests.imaging import encode, synthetic_image

DEVICE = [s for s in SIGNALS.values() if s.device_hasher]
# Tiny: the simulator runs every CUDA thread as a Python thread. Digests also
# see the block edges (55, 64 bytes) and an empty file.
FILES = [("png", encode(synthetic_image(5, (40, 32)), "PNG")),
         ("jpg", encode(synthetic_image(6, (24, 20)), "JPEG", quality=85)),
         ("bytes-55", b"x" * 55), ("bytes-64", b"y" * 64), ("bytes-0", b"")]
CONFIG = Config(limits=LimitsConfig(decode_isolation="inline"),
                gpu=GpuConfig(strict=True, digest_cpu_min_bytes=1 << 20))


def test_some_signal_has_a_device_hasher() -> None:
    assert DEVICE


@pytest.mark.parametrize("signal", DEVICE, ids=lambda s: s.name)
def test_the_device_hasher_is_found(signal: SignalType) -> None:
    assert signal.device_hasher is not None
    assert resolve(signal.device_hasher) is not None


@pytest.mark.parametrize("signal", DEVICE, ids=lambda s: s.name)
def test_the_device_gives_the_cpus_answer_with_no_fallback(
    signal: SignalType, backend: Backend, pool: ThreadPoolExecutor
) -> None:
    files = FILES if signal.media == "bytes" else FILES[:2]
    items = [Item(name, data, (signal.name,), match=False) for name, data in files]
    metrics = Metrics()
    gpu = make_pipeline(CONFIG, backend, metrics)
    assert backend.name in ("gpu", "gpu-sim") and backend.gpu is not None
    want = Pipeline(CONFIG).run(items, None, pool)
    got = gpu.run(items, None, pool)
    assert [(r.id, r.hashes, r.error, sorted(r.skipped)) for r in got] == [
        (r.id, r.hashes, r.error, sorted(r.skipped)) for r in want]
    assert all(r.hashes for r in want if r.error is None)
    samples = [s.value for family in metrics.registry.collect()
               if family.name == "appliance_gpu_fallbacks" for s in family.samples
               if s.name == "appliance_gpu_fallbacks_total"]
    assert sum(samples) == 0 and getattr(gpu, "fallbacks", 0) == 0
