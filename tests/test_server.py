"""Every RPC through the generated stubs against a real in-process server."""

from __future__ import annotations

import hashlib
import json
import threading
import urllib.request
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import grpc
import numpy as np
import pdqhash
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from PIL import Image
from prometheus_client.parser import text_string_to_metric_families

from appliance import demo
from appliance.config import Config, ListSpec
from appliance.errors import ListError
from appliance.loading import Loaded, load_snapshot
from appliance.v1 import appliance_pb2 as pb
from appliance.v1 import appliance_pb2_grpc as pb_grpc
from tests.helpers import ServerThread, encode, make_config, synthetic_image

MAX_FILE = 1 << 20


@pytest.fixture(scope="module")
def demo_set() -> demo.DemoSet:
    return demo.build()


@pytest.fixture(scope="module")
def server() -> Iterator[ServerThread]:
    srv = ServerThread(make_config(max_file_bytes=MAX_FILE, max_request_files=8,
                                   max_stream_bytes=3 * MAX_FILE))
    srv.wait_ready()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def stub(server: ServerThread) -> Iterator[pb_grpc.ApplianceStub]:
    with grpc.insecure_channel(server.address) as channel:
        yield pb_grpc.ApplianceStub(channel)


def _hashes(result: pb.FileResult) -> dict[str, str]:
    return {h.signal: h.value for h in result.hashes}


def _reference_pdq(data: bytes) -> tuple[str, int]:
    import io

    rgb = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
    bits, quality = pdqhash.compute(rgb)
    return np.packbits(bits).tobytes().hex(), int(quality)


def test_hash_gives_digests_and_pdq(stub: pb_grpc.ApplianceStub) -> None:
    data = encode(synthetic_image(21, (150, 101)), "JPEG", quality=85)
    result = stub.Hash(pb.FileRequest(content=data, id="f1")).result
    assert result.id == "f1" and result.size == len(data)
    hashes = _hashes(result)
    assert hashes["md5"] == hashlib.md5(data).hexdigest()
    assert hashes["sha1"] == hashlib.sha1(data).hexdigest()
    assert hashes["sha256"] == hashlib.sha256(data).hexdigest()
    pdq = next(h for h in result.hashes if h.signal == "pdq")
    assert (pdq.value, pdq.quality) == _reference_pdq(data)
    assert not result.matches and not result.matched and not result.HasField("error")


def test_match_demo_files(stub: pb_grpc.ApplianceStub, demo_set: demo.DemoSet) -> None:
    files = demo_set.files
    listed = stub.Match(pb.FileRequest(content=files["listed-by-digest-and-pdq.png"])).result
    assert listed.matched
    assert {(m.signal, m.entry_id, m.distance) for m in listed.matches} == {
        ("md5", "demo-0001", 0), ("sha1", "demo-0001", 0), ("sha256", "demo-0001", 0),
        ("pdq", "demo-0001", 0),
    }
    version = hashlib.sha256(demo_set.list_csv).hexdigest()[:16]
    assert all(m.list == "demo" and m.list_version == version for m in listed.matches)
    near = stub.Match(pb.FileRequest(content=files["near-copy-of-listed.jpg"])).result
    assert [(m.signal, m.entry_id) for m in near.matches] == [("pdq", "demo-0001")]
    assert 0 < near.matches[0].distance <= 31
    assert near.matches[0].query == _hashes(near)["pdq"]
    clean = stub.Match(pb.FileRequest(content=files["not-listed.png"])).result
    assert not clean.matched and not clean.matches


def test_match_batch_keeps_order_and_isolates_faults(
    stub: pb_grpc.ApplianceStub, demo_set: demo.DemoSet
) -> None:
    files = [
        pb.FileRequest(id="a", content=demo_set.files["listed-by-pdq.jpg"]),
        pb.FileRequest(id="b", content=b""),
        pb.FileRequest(id="c", content=b"x" * (MAX_FILE + 1)),
        pb.FileRequest(id="d", content=b"not an image at all"),
        pb.FileRequest(id="e", content=demo_set.files["not-listed.png"], signals=["md5", "nope"]),
        pb.FileRequest(id="f", content=encode(synthetic_image(5), "PNG")[:300]),
        pb.FileRequest(id="g", content=demo_set.files["not-listed.png"], signals=["sha256"]),
    ]
    response = stub.MatchBatch(pb.BatchRequest(files=files))
    results = {r.id: r for r in response.results}
    assert [r.id for r in response.results] == list("abcdefg")
    assert [m.entry_id for m in results["a"].matches] == ["demo-0002"]
    assert results["b"].error.code == "EMPTY"
    assert results["c"].error.code == "TOO_LARGE"
    assert results["d"].HasField("error") is False
    assert _hashes(results["d"])["md5"] == hashlib.md5(b"not an image at all").hexdigest()
    assert [(s.signal, s.reason.code) for s in results["d"].skipped] == [("pdq", "NOT_AN_IMAGE")]
    assert results["e"].error.code == "UNKNOWN_SIGNAL"
    assert results["f"].skipped[0].reason.code == "CORRUPT_IMAGE"
    assert list(_hashes(results["g"])) == ["sha256"]


def test_batch_level_faults(stub: pb_grpc.ApplianceStub) -> None:
    with pytest.raises(grpc.RpcError) as info:
        stub.MatchBatch(pb.BatchRequest())
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    too_many = [pb.FileRequest(content=b"x")] * 9
    with pytest.raises(grpc.RpcError) as info:
        stub.MatchBatch(pb.BatchRequest(files=too_many))
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


def _chunks(data: bytes, size: int, **first: object) -> Iterator[pb.Chunk]:
    for i in range(0, len(data), size):
        yield pb.Chunk(data=data[i:i + size], **(first if i == 0 else {}))  # type: ignore[arg-type]


def test_match_stream(stub: pb_grpc.ApplianceStub, demo_set: demo.DemoSet) -> None:
    data = demo_set.files["listed-by-digest-and-pdq.png"]
    result = stub.MatchStream(_chunks(data, 1000, id="s1", signals=["md5", "pdq"])).result
    assert result.id == "s1" and result.size == len(data)
    assert _hashes(result)["md5"] == hashlib.md5(data).hexdigest()
    assert {m.signal for m in result.matches} == {"md5", "pdq"}
    # Streams may be larger than one message's file limit, up to max_stream_bytes.
    big = np.random.default_rng(1).integers(0, 256, 2 * MAX_FILE, dtype=np.uint8).tobytes()
    result = stub.MatchStream(_chunks(big, 256 * 1024, signals=["sha256"])).result
    assert not result.HasField("error")
    assert _hashes(result) == {"sha256": hashlib.sha256(big).hexdigest()}


def test_match_stream_limits(stub: pb_grpc.ApplianceStub) -> None:
    with pytest.raises(grpc.RpcError) as info:
        stub.MatchStream(iter(()))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    huge = b"\0" * (256 * 1024)
    with pytest.raises(grpc.RpcError) as info:
        stub.MatchStream(pb.Chunk(data=huge) for _ in range(13))
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


def test_lookup(stub: pb_grpc.ApplianceStub, demo_set: demo.DemoSet) -> None:
    data = demo_set.files["listed-by-digest-and-pdq.png"]
    pdq_hex, _ = _reference_pdq(data)
    flipped = f"{int(pdq_hex, 16) ^ 0b111:064x}"  # 3 bits away
    response = stub.Lookup(pb.LookupRequest(hashes=[
        pb.Hash(signal="md5", value=hashlib.md5(data).hexdigest().upper()),
        pb.Hash(signal="pdq", value=flipped),
        pb.Hash(signal="pdq", value=flipped, quality=10),  # under the quality gate
        pb.Hash(signal="md5", value="abc"),
        pb.Hash(signal="crc32", value="00000000"),
        pb.Hash(signal="sha1", value="0" * 40),
        pb.Hash(signal="photodna", value="00" * 144),
    ]))
    r = response.results
    assert len(r) == 7
    assert [m.entry_id for m in r[0].matches] == ["demo-0001"]
    assert [(m.entry_id, m.distance) for m in r[1].matches] == [("demo-0001", 3)]
    assert not r[2].matches
    assert r[3].error.code == "MALFORMED_HASH"
    assert r[4].error.code == "UNKNOWN_SIGNAL"
    assert not r[5].matches and not r[5].HasField("error")
    assert not r[6].matches and not r[6].HasField("error")
    with pytest.raises(grpc.RpcError) as info:
        stub.Lookup(pb.LookupRequest())
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_status(stub: pb_grpc.ApplianceStub, demo_set: demo.DemoSet) -> None:
    status = stub.GetStatus(pb.StatusRequest())
    assert status.ready and status.backend == "cpu"
    assert status.pdq_threshold == 31 and status.pdq_quality_min == 50
    [listed] = status.lists
    assert listed.name == "demo" and listed.source == "embedded demo"
    assert listed.version == hashlib.sha256(demo_set.list_csv).hexdigest()[:16]
    assert dict(listed.entries) == {"md5": 1, "sha1": 1, "sha256": 1, "pdq": 2}


def test_health_and_reflection(server: ServerThread) -> None:
    with grpc.insecure_channel(server.address) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for service in ("", "appliance.v1.Appliance"):
            reply = health.Check(health_pb2.HealthCheckRequest(service=service))
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
        refl = reflection_pb2_grpc.ServerReflectionStub(channel)
        [reply] = list(refl.ServerReflectionInfo(iter([
            reflection_pb2.ServerReflectionRequest(list_services="")
        ])))
        names = {s.name for s in reply.list_services_response.service}
        assert {"appliance.v1.Appliance", "grpc.health.v1.Health"} <= names


def test_metrics_endpoint(server: ServerThread, stub: pb_grpc.ApplianceStub,
                          demo_set: demo.DemoSet) -> None:
    stub.Match(pb.FileRequest(content=demo_set.files["listed-by-pdq.jpg"]))
    stub.Match(pb.FileRequest(content=b""))
    url = f"http://127.0.0.1:{server.handle.metrics_port}/metrics"
    with urllib.request.urlopen(url, timeout=10) as reply:
        text = reply.read().decode()
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text) for s in family.samples
    }
    names = {name for name, _ in samples}
    for required in (
        "appliance_files_total", "appliance_bytes_total", "appliance_matches_total",
        "appliance_batch_size_bucket", "appliance_stage_seconds_bucket",
        "appliance_queue_depth", "appliance_index_entries", "appliance_backend_info",
        "appliance_errors_total", "appliance_queue_bytes", "appliance_batch_fill_ratio_bucket",
        "appliance_batches_running", "appliance_inflight_requests", "appliance_requests_total",
    ):
        assert required in names, required
    assert samples[("appliance_matches_total", (("list", "demo"), ("signal", "pdq")))] >= 1
    assert samples[("appliance_errors_total", (("code", "EMPTY"),))] >= 1
    assert samples[("appliance_index_entries", (("list", "demo"), ("signal", "pdq")))] == 2
    stages = {dict(labels)["stage"] for name, labels in samples
              if name == "appliance_stage_seconds_count"}
    assert {"queue", "digest", "decode", "perceptual", "match"} <= stages
    assert samples[("appliance_queue_depth", ())] == 0


def test_not_serving_until_lists_load() -> None:
    release = threading.Event()

    def slow_loader(config: Config) -> Loaded:
        release.wait(30)
        return load_snapshot(config)

    srv = ServerThread(make_config(), loader=slow_loader)
    try:
        with grpc.insecure_channel(srv.address) as channel:
            health = health_pb2_grpc.HealthStub(channel)
            reply = health.Check(health_pb2.HealthCheckRequest(service=""))
            assert reply.status == health_pb2.HealthCheckResponse.NOT_SERVING
            stub = pb_grpc.ApplianceStub(channel)
            with pytest.raises(grpc.RpcError) as info:
                stub.Match(pb.FileRequest(content=b"abc"))
            assert info.value.code() == grpc.StatusCode.UNAVAILABLE
            # Hashing needs no list.
            assert stub.Hash(pb.FileRequest(content=b"abc")).result.hashes
            assert not stub.GetStatus(pb.StatusRequest()).ready
            release.set()
            srv.wait_ready()
            reply = health.Check(health_pb2.HealthCheckRequest(service=""))
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
            assert stub.Match(pb.FileRequest(content=b"abc")).result.hashes
    finally:
        release.set()
        srv.stop()


def test_bad_list_keeps_server_not_serving(tmp_path: Path) -> None:
    path = tmp_path / "bad.csv"
    path.write_text("md5,id\nnot-hex,1\n")
    config = make_config()
    config = Config(server=config.server, limits=config.limits, matching=config.matching,
                    lists=(ListSpec("bad", str(path)),))
    srv = ServerThread(config)
    try:
        with pytest.raises(RuntimeError, match="line 2"):
            srv.wait_ready()
        with grpc.insecure_channel(srv.address) as channel:
            stub = pb_grpc.ApplianceStub(channel)
            with pytest.raises(grpc.RpcError) as info:
                stub.Match(pb.FileRequest(content=b"abc"))
            assert info.value.code() == grpc.StatusCode.UNAVAILABLE
            assert "line 2" in (info.value.details() or "")
    finally:
        srv.stop()
    with pytest.raises(ListError):
        load_snapshot(config)


def test_inflight_limit_answers_resource_exhausted() -> None:
    release, entered = threading.Event(), threading.Event()
    config = make_config()
    config = replace(config, server=replace(config.server, max_inflight_requests=1))
    srv = ServerThread(config)
    srv.wait_ready()
    original = srv.handle.app.pipeline.hash_item

    def blocking(item):
        entered.set()
        release.wait(30)
        return original(item)

    srv.handle.app.pipeline.hash_item = blocking  # type: ignore[method-assign,assignment]
    try:
        with grpc.insecure_channel(srv.address) as channel:
            stub = pb_grpc.ApplianceStub(channel)
            first = stub.Hash.future(pb.FileRequest(content=b"abc"))
            assert entered.wait(30)  # the first request is now in flight
            with pytest.raises(grpc.RpcError) as info:
                stub.Hash(pb.FileRequest(content=b"def"))
            assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            release.set()
            assert first.result(timeout=30).result.hashes
            assert stub.Hash(pb.FileRequest(content=b"ghi")).result.hashes
    finally:
        release.set()
        srv.stop()


def test_audit_log_records_every_match(tmp_path: Path, demo_set: demo.DemoSet) -> None:
    log_path = tmp_path / "audit.jsonl"
    config = make_config()
    config = replace(config, server=replace(config.server, audit_log=str(log_path)))
    srv = ServerThread(config)
    srv.wait_ready()
    try:
        with grpc.insecure_channel(srv.address) as channel:
            stub = pb_grpc.ApplianceStub(channel)
            stub.Match(pb.FileRequest(id="up-1", content=demo_set.files["listed-by-pdq.jpg"]))
            stub.Match(pb.FileRequest(id="up-2", content=demo_set.files["not-listed.png"]))
    finally:
        srv.stop()
    records = [json.loads(line) for line in log_path.read_text().splitlines()]
    assert [(r["item_id"], r["list"], r["entry_id"], r["signal"]) for r in records] == [
        ("up-1", "demo", "demo-0002", "pdq")
    ]
    assert {"time", "request_id", "list_version", "distance"} <= set(records[0])


def test_audit_log_records_lookup_matches_by_index(tmp_path: Path, demo_set: demo.DemoSet
                                                   ) -> None:
    log_path = tmp_path / "audit.jsonl"
    config = make_config()
    config = replace(config, server=replace(config.server, audit_log=str(log_path)))
    data = demo_set.files["listed-by-digest-and-pdq.png"]
    pdq_hex, _ = _reference_pdq(data)
    srv = ServerThread(config)
    srv.wait_ready()
    try:
        with grpc.insecure_channel(srv.address) as channel:
            pb_grpc.ApplianceStub(channel).Lookup(pb.LookupRequest(hashes=[
                pb.Hash(signal="pdq", value=pdq_hex), pb.Hash(signal="md5", value="abc"),
                pb.Hash(signal="sha1", value="0" * 40),
                pb.Hash(signal="md5", value=hashlib.md5(data).hexdigest()),
            ]))
    finally:
        srv.stop()
    records = [json.loads(line) for line in log_path.read_text().splitlines()]
    assert [(r["item_id"], r["entry_id"], r["signal"]) for r in records] == [
        ("lookup[0]", "demo-0001", "pdq"), ("lookup[3]", "demo-0001", "md5")
    ]


def test_photodna_lookup_exact_and_euclidean(tmp_path: Path) -> None:
    rng = np.random.default_rng(12)
    listed = rng.integers(0, 256, 144, dtype=np.uint8)
    path = tmp_path / "pdna.csv"
    path.write_text(f"id,photodna\nP1,{listed.tobytes().hex()}\n")
    near = listed.astype(np.int32)
    # Move two components by 3 and 4 (away from the ends of 0..255): L2 distance 5.
    near[:2] += np.array([3, 4]) * np.where(listed[:2] < 128, 1, -1)
    near_hex = near.astype(np.uint8).tobytes().hex()
    for threshold, expect_near in ((0, False), (5, True)):
        base = make_config()
        config = replace(base, lists=(ListSpec("pdna", str(path)),),
                         matching=replace(base.matching, photodna_threshold=threshold))
        srv = ServerThread(config)
        srv.wait_ready()
        try:
            with grpc.insecure_channel(srv.address) as channel:
                stub = pb_grpc.ApplianceStub(channel)
                exact, close = stub.Lookup(pb.LookupRequest(hashes=[
                    pb.Hash(signal="photodna", value=listed.tobytes().hex()),
                    pb.Hash(signal="photodna", value=near_hex),
                ])).results
            assert [(m.entry_id, m.distance) for m in exact.matches] == [("P1", 0)]
            assert [(m.entry_id, m.distance) for m in close.matches] == (
                [("P1", 5)] if expect_near else []
            )
        finally:
            srv.stop()
