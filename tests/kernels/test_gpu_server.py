"""A GPU server (gpu-sim here, the device on a real GPU) answers a batch
through gRPC as the references do, with zero device faults.

Not strict on purpose: a strict server would raise on a fault, so this test
shows the other half of the contract, that a serving GPU backend answers a
batch from the device and counts no fallback (``appliance_gpu_fallbacks_total``
stays at zero). The answers are checked against hashlib and pdqhash, not
against the CPU backend's own output.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import grpc
import numpy as np
import pdqhash
import pytest
from PIL import Image

from appliance.config import GpuConfig, ListSpec, MatchingConfig
from appliance.gpu.pipeline import GpuPipeline
from appliance.v1 import appliance_pb2 as pb
from appliance.v1 import appliance_pb2_grpc as pb_grpc
from tests.helpers import ServerThread, encode, make_config, synthetic_image
from tests.kernels.conftest import GPU


def _pdq_hex(data: bytes) -> tuple[str, int]:
    rgb = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
    bits, quality = pdqhash.compute(rgb)
    return np.packbits(bits).tobytes().hex(), int(quality)


@pytest.fixture(scope="module")
def files() -> dict[str, bytes]:
    # Tiny: the simulator runs every CUDA thread as a Python thread.
    return {
        "listed.png": encode(synthetic_image(3, (40, 32)), "PNG"),
        "other.png": encode(synthetic_image(4, (36, 28)), "PNG"),
        "notes.txt": b"not a picture " * 40,
    }


@pytest.fixture(scope="module")
def server(files: dict[str, bytes], tmp_path_factory: pytest.TempPathFactory
           ) -> Iterator[ServerThread]:
    listed = files["listed.png"]
    path: Path = tmp_path_factory.mktemp("lists") / "block.csv"
    path.write_text(f"id,md5,pdq\nentry-1,{hashlib.md5(listed).hexdigest()},"
                    f"{_pdq_hex(listed)[0]}\n")
    config = make_config(decode_isolation="inline")
    config = replace(
        config,
        server=replace(config.server, backend="gpu" if GPU else "gpu-sim"),
        gpu=GpuConfig(strict=False, digest_cpu_min_bytes=1 << 20),
        matching=MatchingConfig(pdq_quality_min=0),
        lists=(ListSpec("block", str(path)),),
    )
    srv = ServerThread(config)
    srv.wait_ready()
    yield srv
    srv.stop()


def test_a_gpu_server_answers_a_batch_with_no_fallback(
    server: ServerThread, files: dict[str, bytes]
) -> None:
    pipeline = server.handle.app.pipeline
    assert isinstance(pipeline, GpuPipeline)
    names = list(files)
    request = pb.BatchRequest(files=[pb.FileRequest(id=n, content=files[n]) for n in names])
    with grpc.insecure_channel(server.address) as channel:
        response = pb_grpc.ApplianceStub(channel).MatchBatch(request, timeout=600)
    results = {r.id: r for r in response.results}
    assert list(results) == names
    for name in names:
        got = {h.signal: h.value for h in results[name].hashes}
        data = files[name]
        assert got["md5"] == hashlib.md5(data).hexdigest()
        assert got["sha1"] == hashlib.sha1(data).hexdigest()
        assert got["sha256"] == hashlib.sha256(data).hexdigest()
        if name.endswith(".png"):
            want, quality = _pdq_hex(data)
            [pdq] = [h for h in results[name].hashes if h.signal == "pdq"]
            assert (pdq.value, pdq.quality) == (want, quality)
    hits = {(m.signal, m.entry_id) for m in results["listed.png"].matches}
    assert hits == {("md5", "entry-1"), ("pdq", "entry-1")}
    assert results["listed.png"].matched
    assert not results["other.png"].matches and not results["notes.txt"].matches
    # Every stage ran on the device: no fault counted, by stage or in all.
    assert pipeline.fallbacks == 0
    samples = [s for family in server.handle.app.metrics.registry.collect()
               if family.name == "appliance_gpu_fallbacks" for s in family.samples
               if s.name == "appliance_gpu_fallbacks_total"]
    assert sum(s.value for s in samples) == 0
