"""Backend choice (auto, cpu, gpu, gpu-sim), and gpu-sim answering as cpu
through the command line and a server (subprocesses: the simulator must be
chosen before numba.cuda is imported, and this process has imported it)."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import signal
import subprocess
import sys
from pathlib import Path

import grpc
import pytest

from appliance.backend import select_backend
from appliance.errors import ConfigError
from appliance.gpu.device import DeviceUnavailable, open_device, probe
from appliance.v1 import appliance_pb2 as pb
from appliance.v1 import appliance_pb2_grpc as pb_grpc
from tests.helpers import encode, start_server_process, synthetic_image

ENV = {k: v for k, v in os.environ.items()
       if not k.startswith("APPLIANCE_") and k != "NUMBA_ENABLE_CUDASIM"}
HAS_GPU = probe()[0]


def test_cpu_is_chosen_when_asked() -> None:
    backend = select_backend("cpu")
    assert backend.name == "cpu" and backend.gpu is None and backend.reason == "requested"


def test_auto_says_what_it_chose_and_why(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="appliance.backend"):
        backend = select_backend("auto")
    assert backend.name == ("gpu" if HAS_GPU else "cpu")
    assert backend.reason.startswith("auto: ")
    assert f"backend {backend.name} on" in caplog.text


@pytest.mark.skipif(HAS_GPU, reason="this machine has a GPU")
def test_gpu_without_a_device_refuses_with_the_reason() -> None:
    with pytest.raises(ConfigError, match=r"--backend gpu: .*use --backend cpu"):
        select_backend("gpu")


def test_an_unknown_backend_is_refused() -> None:
    with pytest.raises(ConfigError, match="unknown backend"):
        select_backend("tpu")


def test_gpu_sim_cannot_follow_the_real_numba_cuda_in_one_process() -> None:
    from numba import cuda

    if cuda.is_available.__module__.endswith("simulator_init"):
        pytest.skip("this process runs the simulator already")
    with pytest.raises(DeviceUnavailable, match="NUMBA_ENABLE_CUDASIM=1"):
        open_device("gpu-sim")


@pytest.fixture(scope="module")
def small_set(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[Path], Path]:
    """Tiny images (the simulator runs every CUDA thread as a Python thread), a
    file that is not an image, and a list with digests and PDQ hashes of some."""
    root = tmp_path_factory.mktemp("small")
    files = []
    for i, (fmt, size) in enumerate([("PNG", (32, 24)), ("JPEG", (40, 40)), ("PNG", (20, 30))]):
        path = root / f"img{i}.{fmt.lower()}"
        path.write_bytes(encode(synthetic_image(300 + i, size), fmt))
        files.append(path)
    text = root / "notes.txt"
    text.write_bytes(b"not a picture\n" * 20)
    files.append(text)
    proc = subprocess.run(
        [sys.executable, "-m", "appliance", "hash", "--signals", "pdq", str(files[1])],
        capture_output=True, text=True, check=True, env=ENV, timeout=120,
    )
    pdq = json.loads(proc.stdout)["pdq"]
    near = f"{int(pdq[0], 16) ^ 0x3:x}{pdq[1:]}"  # 2 bits away
    listing = root / "list.csv"
    listing.write_text(
        "id,md5,sha256,pdq\n"
        f"d1,{hashlib.md5(files[0].read_bytes()).hexdigest()},,\n"
        f"d2,,{hashlib.sha256(text.read_bytes()).hexdigest()},\n"
        f"p1,,,{near}\n"
    )
    return files, listing


def _cli(*args: str) -> str:
    proc = subprocess.run([sys.executable, "-m", "appliance", *args], capture_output=True,
                          text=True, env=ENV, timeout=300)
    assert proc.returncode in (0, 1), proc.stderr
    return proc.stdout


@pytest.mark.parametrize("dihedral", [False, True], ids=["plain", "dihedral"])
def test_cli_gpu_sim_answers_as_cpu(small_set: tuple[list[Path], Path], dihedral: bool) -> None:
    files, listing = small_set
    common = ["--signals", "md5,sha1,sha256,pdq,phash", "--pdq-quality-min", "0",
              "--lists", str(listing), *(["--dihedral"] if dihedral else [])]
    paths = [str(p) for p in files]
    cpu = _cli("match", "--backend", "cpu", *common, *paths)
    sim = _cli("match", "--backend", "gpu-sim", *common, *paths)
    assert sim == cpu
    by_file = {Path(o["file"]).name: o for o in map(json.loads, cpu.splitlines())}
    assert {m["entry_id"] for m in by_file["img0.png"]["matches"]} == {"d1"}
    assert {m["entry_id"] for m in by_file["img1.jpeg"]["matches"]} == {"p1"}
    assert {m["entry_id"] for m in by_file["notes.txt"]["matches"]} == {"d2"}
    hashed = _cli("hash", "--backend", "gpu-sim", "--signals", "md5,pdq", *paths)
    assert hashed == _cli("hash", "--backend", "cpu", "--signals", "md5,pdq", *paths)


def test_a_gpu_sim_server_answers_as_a_cpu_server(small_set: tuple[list[Path], Path]) -> None:
    files, listing = small_set
    request = pb.BatchRequest(files=[
        pb.FileRequest(id=p.name, content=p.read_bytes(),
                       signals=["md5", "sha1", "sha256", "pdq", "dhash"]) for p in files
    ])
    lookup = pb.LookupRequest(hashes=[
        pb.Hash(signal="md5", value=hashlib.md5(files[0].read_bytes()).hexdigest()),
        pb.Hash(signal="sha256", value=hashlib.sha256(files[3].read_bytes()).hexdigest()),
        pb.Hash(signal="md5", value="0" * 32),
    ])
    replies, lookups = {}, {}
    for backend in ("cpu", "gpu-sim"):
        server, address, ready = start_server_process(
            "--backend", backend, "--lists", f"listed={listing}", "--pdq-quality-min", "0")
        try:
            assert f"backend={backend}" in ready
            with grpc.insecure_channel(address) as channel:
                stub = pb_grpc.ApplianceStub(channel)
                replies[backend] = stub.MatchBatch(request, timeout=120)
                lookups[backend] = stub.Lookup(lookup, timeout=120)
                status = stub.GetStatus(pb.StatusRequest(), timeout=30)
                assert status.backend == backend
            server.send_signal(signal.SIGTERM)
            assert server.wait(timeout=60) == 0
        finally:
            if server.poll() is None:
                server.kill()
    assert replies["gpu-sim"] == replies["cpu"]
    assert lookups["gpu-sim"] == lookups["cpu"]
    assert [[m.entry_id for m in r.matches] for r in lookups["cpu"].results] == [["d1"], ["d2"], []]
    matched = {r.id: {m.entry_id for m in r.matches} for r in replies["cpu"].results}
    assert matched == {"img0.png": {"d1"}, "img1.jpeg": {"p1"}, "img2.png": set(),
                       "notes.txt": {"d2"}}


def test_serve_gpu_without_a_device_exits_2_with_the_reason() -> None:
    if HAS_GPU:
        pytest.skip("this machine has a GPU")
    proc = subprocess.run(
        [sys.executable, "-m", "appliance", "serve", "--backend", "gpu", "--port", "0",
         "--metrics-port", "0"], capture_output=True, text=True, env=ENV, timeout=120,
    )
    assert proc.returncode == 2
    assert "--backend gpu: " in proc.stderr and "use --backend cpu" in proc.stderr
