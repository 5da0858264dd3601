"""Videos on the GPU backends (gpu-sim here, the device on a GPU): frames
streamed from the decode (inline, or from a worker process) to the device's
TMK and vPDQ kernels give the CPU pipeline's values, with no fallback; a
device fault redoes that batch on the CPU, counted. Clips stay tiny: the
simulator runs every CUDA thread as a Python thread."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest

from appliance.backend import Backend, make_pipeline
from appliance.config import Config, GpuConfig, LimitsConfig
from appliance.gpu.pipeline import GpuFault, GpuPipeline
from appliance.pipeline import Pipeline
from appliance.results import Item
from appliance.settings import Isolation
from appliance.video import synthetic, tmk_format, vpdq_format

# 6 frames at 15 a second: 6 stretched TMK frames (one batch), 1 vPDQ frame.
CLIP = synthetic.encode("avi", "mpeg4", width=32, height=24, frames=6, rate=15)


def _run(config: Config, backend: Backend, pool: ThreadPoolExecutor,
         calls: list[str]) -> tuple[GpuPipeline, list[Item]]:
    gpu = make_pipeline(config, backend)
    assert isinstance(gpu, GpuPipeline)
    gpu.fault_hook = calls.append
    gpu.start()
    return gpu, [Item("clip", CLIP, ("md5", "tmk", "vpdq")), Item("not", b"x" * 99, ("tmk",))]


@pytest.mark.parametrize("isolation", ["inline", "process"])
def test_video_hashes_on_the_device_equal_the_cpu(backend: Backend, pool: ThreadPoolExecutor,
                                                 isolation: Isolation) -> None:
    config = Config(gpu=GpuConfig(strict=True),
                    limits=LimitsConfig(decode_isolation=isolation))
    calls: list[str] = []
    gpu, items = _run(config, backend, pool, calls)
    try:
        got = gpu.run(items, None, pool)
    finally:
        gpu.close()
    want = Pipeline(Config(limits=LimitsConfig(decode_isolation="inline"))).run(items, None, pool)
    assert [(r.hashes, r.skipped) for r in got] == [(r.hashes, r.skipped) for r in want]
    assert gpu.fallbacks == 0
    # The device did it: one TMK batch and one vPDQ frame went through its guard.
    assert calls.count("video") == 2
    tmk, vpdq = got[0].hashes[1:]
    assert tmk_format.frames(tmk.value) == 6 and len(vpdq_format.unpack(vpdq.value)) == 1


def test_a_device_fault_in_a_video_redoes_that_batch_on_the_cpu(
        backend: Backend, pool: ThreadPoolExecutor) -> None:
    config = Config(limits=LimitsConfig(decode_isolation="inline"))
    calls: list[str] = []
    gpu, items = _run(config, backend, pool, calls)

    def fail(stage: str) -> None:
        calls.append(stage)
        if stage == "video" and calls.count("video") == 1:
            raise GpuFault("injected fault in the TMK batch")

    gpu.fault_hook = fail
    got = gpu.run(items[:1], None, pool)
    want = Pipeline(config).run(items[:1], None, pool)
    assert got[0].hashes == want[0].hashes and gpu.fallbacks == 1


def test_the_device_index_matches_videos_as_the_host(backend: Backend,
                                                     pool: ThreadPoolExecutor) -> None:
    import csv
    import io

    from appliance.config import MatchingConfig
    from appliance.gpu.index import DeviceIndex, FrameSearcher, TmkSearcher
    from appliance.index.snapshot import Snapshot
    from appliance.lists import parse_csv
    from appliance.signals import SIGNALS

    clips = [CLIP, synthetic.encode("avi", "mpeg4", width=32, height=24, frames=20, rate=15),
             synthetic.encode("avi", "mpeg4", width=24, height=32, frames=18, rate=12)]
    results = Pipeline(Config(limits=LimitsConfig(decode_isolation="inline"))).run(
        [Item(f"v{i}", c, ("tmk", "vpdq")) for i, c in enumerate(clips)], None, pool)
    text = io.StringIO()
    writer = csv.writer(text)
    writer.writerow(["id", "tmk", "vpdq"])
    for r in results[1:]:
        writer.writerow([r.id, *(SIGNALS[h.signal].format(h.value) for h in r.hashes)])
    snapshot = Snapshot([parse_csv(text.getvalue().encode(), "L")], MatchingConfig())
    gpu = make_pipeline(Config(gpu=GpuConfig(strict=True)), backend)
    index = DeviceIndex(snapshot, gpu.device)
    kinds = {type(s) for _, d in index._lists.values() for s in d.searchers.values()}
    assert {TmkSearcher, FrameSearcher} <= kinds
    for signal in ("tmk", "vpdq"):
        values = [next(h.value for h in r.hashes if h.signal == signal) for r in results]
        got, want = index.match(signal, values), snapshot.match(signal, values)
        assert got == want and not want[0] and [h.entry_id for h in want[1]] == ["v1"]
