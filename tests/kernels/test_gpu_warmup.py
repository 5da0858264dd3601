"""The GPU warm-up (backend gpu-sim here, the device on a real GPU): every
kernel run and checked before the server says ready; a broken kernel logged
and counted, and with gpu.strict a start stopped with one line."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import replace
from typing import Any

import pytest

from appliance.backend import Backend, make_pipeline
from appliance.config import Config, GpuConfig, LimitsConfig, MatchingConfig
from appliance.gpu.pipeline import GpuFault, GpuPipeline
from appliance.gpu.warmup import KernelCheckFailed
from appliance.pipeline import Pipeline
from appliance.server import create_server
from kernels import digests, hamming
from tests.helpers import make_config
from tests.kernels.conftest import GPU


def _pipeline(backend: Backend, strict: bool, dihedral: bool = False) -> GpuPipeline:
    config = Config(gpu=GpuConfig(strict=strict), matching=MatchingConfig(pdq_dihedral=dihedral))
    pipeline = make_pipeline(config, backend)
    assert isinstance(pipeline, GpuPipeline)
    return pipeline


class _Launches:
    """Wraps a kernel factory: counts launches, optionally breaks the kernel."""

    def __init__(self, kernel: Any, broken: bool = False) -> None:
        self.kernel, self.broken, self.count = kernel, broken, 0

    def __getitem__(self, config: Any) -> Any:
        # Broken: launches nothing, so the outputs keep their zeros.
        launch = None if self.broken else self.kernel[config]

        def run(*args: Any) -> None:
            self.count += 1
            if launch is not None:
                launch(*args)

        return run


@pytest.mark.parametrize("dihedral", [False, True], ids=["plain", "dihedral"])
def test_the_warm_up_runs_and_checks_every_kernel(
    backend: Backend, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch,
    dihedral: bool,
) -> None:
    spies = {}
    for module in (digests, hamming):
        spy = _Launches(module._kernel())
        monkeypatch.setattr(module, "_kernel", lambda spy=spy: spy)
        spies[module.__name__] = spy
    pipeline = _pipeline(backend, strict=True, dihedral=dihedral)
    with caplog.at_level(logging.INFO, logger="appliance.gpu"):
        pipeline.warm_up()
    assert pipeline.fallbacks == 0
    [line] = [r.getMessage() for r in caplog.records if "warmed up" in r.getMessage()]
    pdq = "pdq dihedral" if dihedral else "pdq"
    for name in ("digest", pdq, "exact", "hamming"):
        assert f"{name} " in line, line
    assert all(spy.count >= 1 for spy in spies.values())


def test_a_broken_kernel_is_counted_and_logged_without_strict(
    backend: Backend, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(digests, "_kernel", lambda: _Launches(None, broken=True))
    pipeline = _pipeline(backend, strict=False)
    with caplog.at_level(logging.ERROR, logger="appliance.gpu"):
        pipeline.warm_up()  # does not raise: serving falls back batch by batch
    assert pipeline.fallbacks == 1
    assert any("warm-up" in r.getMessage() and r.exc_info for r in caplog.records)


def test_a_broken_kernel_stops_a_strict_warm_up(
    backend: Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(digests, "_kernel", lambda: _Launches(None, broken=True))
    pipeline = _pipeline(backend, strict=True)
    with pytest.raises(GpuFault) as raised:
        pipeline.warm_up()
    cause = raised.value.__cause__
    assert isinstance(cause, KernelCheckFailed) and "digest kernel" in str(cause)
    message = str(raised.value)
    assert "\n" not in message and "warm-up" in message and "md5 differs" in message
    assert pipeline.fallbacks == 1


def test_a_kernel_that_fails_to_launch_names_itself(
    backend: Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    class Uncompilable:
        def __getitem__(self, config: Any) -> Any:
            raise TypeError("No implementation of function (stands in for a TypingError)\n...")

    monkeypatch.setattr(hamming, "_kernel", Uncompilable)
    with pytest.raises(GpuFault, match=r"the hamming kernel: TypeError: No implementation"):
        _pipeline(backend, strict=True).warm_up()


def test_the_cpu_pipeline_has_nothing_to_warm_up() -> None:
    Pipeline(Config(limits=LimitsConfig(decode_isolation="inline"))).warm_up()


def _server_config(strict: bool) -> Config:
    config = make_config(decode_isolation="inline")
    return replace(config, server=replace(config.server, backend="gpu" if GPU else "gpu-sim"),
                   gpu=GpuConfig(strict=strict))


def test_a_gpu_server_warms_up_before_it_is_ready(caplog: pytest.LogCaptureFixture) -> None:
    async def start_and_stop() -> None:
        handle = await create_server(_server_config(strict=True), metrics_http=False)
        assert isinstance(handle.app.pipeline, GpuPipeline)
        assert handle.app.pipeline.fallbacks == 0
        await handle.wait_ready()
        await handle.stop(0)

    with caplog.at_level(logging.INFO, logger="appliance.gpu"):
        asyncio.run(start_and_stop())
    assert any("GPU kernels warmed up" in r.getMessage() for r in caplog.records)


def test_a_strict_gpu_server_does_not_start_with_a_broken_kernel(
    monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(digests, "_kernel", lambda: _Launches(None, broken=True))
    with pytest.raises(GpuFault, match="GPU fault in the warm-up stage") as raised:
        asyncio.run(create_server(_server_config(strict=True), metrics_http=False))
    assert "\n" not in str(raised.value)


@pytest.mark.gpu
def test_after_the_warm_up_a_batch_compiles_nothing(backend: Backend) -> None:
    """The warm-up launched every kernel with the argument types the pipeline
    uses: a batch of images, digests, matches and a lookup adds no overload."""
    from concurrent.futures import ThreadPoolExecutor

    from kernels import exact, pdq
    from tests.kernels.test_gpu_pipeline import _config, _items, _listed_snapshot

    config = replace(_config(strict=True), limits=LimitsConfig(decode_isolation="inline"))
    pipeline = make_pipeline(config, backend)
    assert isinstance(pipeline, GpuPipeline)
    pipeline.warm_up()
    mod = pdq._kernel()
    compiled = [digests._kernel(), exact._kernel(), hamming._kernel(), mod.luma,
                mod.box_filter, mod.finish]
    before = [len(k.overloads) for k in compiled]
    assert all(before), before
    snapshot = _listed_snapshot(config.matching)
    pipeline.prepare_snapshot(snapshot)
    with ThreadPoolExecutor(2) as pool:
        results = pipeline.run(_items(), snapshot, pool)
    assert any(r.matches for r in results)
    pdq_values = [v.tobytes() for v in snapshot.lists[0].columns["pdq"].values]
    pipeline.lookup(snapshot, "pdq", pdq_values, [None] * len(pdq_values))
    assert [len(k.overloads) for k in compiled] == before
