"""Hostile clients against a real server: no lock-out, bounded bytes, bounded input.

Stalled streams, streams that hold bytes, large pictures sent to block small
ones, over-long ids, out-of-range values, a Lookup of 100,000 hashes, and a
server whose decode workers cannot start. Each test drives a real grpc.aio
server in-process; waits are on events or bounded polls, never on timing.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from appliance import demo
from appliance import pipeline as pipeline_module
from appliance.config import BatchingConfig, Config
from appliance.sandbox import InlineDecoders
from appliance.v1 import appliance_pb2 as pb
from appliance.v1 import appliance_pb2_grpc as pb_grpc
from tests import hostile
from tests.helpers import encode, make_config, synthetic_image


def _until(condition: Callable[[], bool], what: str, seconds: float = 30) -> None:
    end = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < end, f"timed out waiting for {what}"
        time.sleep(0.01)


def _code(call: Any) -> grpc.StatusCode | None:
    """The status of a finished future call (waiting up to 30 s); None when OK."""
    error = call.exception(timeout=30)
    return None if error is None else error.code()


def _config(**changes: Any) -> Config:
    config = make_config()
    server = {k: v for k, v in changes.items() if hasattr(config.server, k)}
    limits = {k: v for k, v in changes.items() if hasattr(config.limits, k)}
    batching = {k: v for k, v in changes.items() if hasattr(config.batching, k)}
    return replace(config, server=replace(config.server, **server),
                   limits=replace(config.limits, **limits),
                   batching=replace(config.batching, **batching))


class _Stall:
    """A MatchStream request iterator: one chunk, then nothing until released."""

    def __init__(self, data: bytes = b"x") -> None:
        self.release = threading.Event()
        self.data = data

    def __iter__(self) -> Iterator[pb.Chunk]:
        yield pb.Chunk(id="stalled", data=self.data)
        self.release.wait(60)


def test_stalled_streams_lock_out_nothing(serve) -> None:
    srv = serve(_config(max_inflight_streams=4, stream_idle_seconds=1.0))
    stalls = [_Stall() for _ in range(6)]
    with grpc.insecure_channel(srv.address) as channel:
        stub = pb_grpc.ApplianceStub(channel)
        calls = [stub.MatchStream.future(iter(s)) for s in stalls]
        # Four hold their slot; the two beyond the streams' limit are refused at once.
        refused = [c for c in calls if c.done()]
        _until(lambda: sum(c.done() for c in calls) >= 2, "the streams over the limit")
        refused = [c for c in calls if c.done()]
        assert [_code(c) for c in refused] == [grpc.StatusCode.RESOURCE_EXHAUSTED] * 2
        # Everything else still works.
        assert stub.GetStatus(pb.StatusRequest()).ready
        assert stub.Match(pb.FileRequest(content=b"hello")).result.hashes
        assert stub.ReloadLists(pb.ReloadRequest()).ok
        health = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())
        assert health.status == health_pb2.HealthCheckResponse.SERVING
        # The stalled ones end after the idle timeout, and their bytes are let go.
        for call in calls:
            if call not in refused:
                assert _code(call) == grpc.StatusCode.DEADLINE_EXCEEDED
        _until(lambda: srv.handle.app.held.held == 0, "the held bytes to return")
    for s in stalls:
        s.release.set()


def test_stream_bytes_count_against_the_bytes_held(serve) -> None:
    srv = serve(_config(max_inflight_bytes=3 << 20, max_stream_bytes=8 << 20,
                        stream_idle_seconds=20.0))
    first, second = _Stall(bytes(2 << 20)), _Stall(bytes(2 << 20))
    with grpc.insecure_channel(srv.address) as channel:
        stub = pb_grpc.ApplianceStub(channel)
        holding = stub.MatchStream.future(iter(first))
        _until(lambda: srv.handle.app.held.held == 2 << 20, "the first stream's bytes")
        over = stub.MatchStream.future(iter(second))
        assert _code(over) == grpc.StatusCode.RESOURCE_EXHAUSTED
        # A file that fits is still served beside the held stream.
        assert stub.Hash(pb.FileRequest(content=bytes(512 << 10))).result.hashes
        first.release.set()
        assert holding.result(30).result.size == 2 << 20
        _until(lambda: srv.handle.app.held.held == 0, "the held bytes to return")
    second.release.set()


def test_a_stream_that_lasts_too_long_is_ended(serve) -> None:
    srv = serve(_config(stream_idle_seconds=5.0, stream_max_seconds=0.5))

    def trickle() -> Iterator[pb.Chunk]:
        for _ in range(200):
            yield pb.Chunk(id="slow", data=b"x")
            time.sleep(0.02)  # the client's pace, not the test's timing

    with grpc.insecure_channel(srv.address) as channel, pytest.raises(grpc.RpcError) as info:
        pb_grpc.ApplianceStub(channel).MatchStream(trickle())
    assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED


def test_messages_larger_than_any_limit_allows_are_not_received(serve) -> None:
    srv = serve(_config(max_file_bytes=1 << 20, max_request_bytes=1 << 20,
                        max_batch_bytes=1 << 20))
    with grpc.insecure_channel(srv.address, options=[
            ("grpc.max_send_message_length", 64 << 20)]) as channel:
        stub = pb_grpc.ApplianceStub(channel)
        with pytest.raises(grpc.RpcError) as info:
            stub.Match(pb.FileRequest(content=bytes(3 << 20)))
        assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert stub.Match(pb.FileRequest(content=bytes(1 << 20))).result.size == 1 << 20


def test_ids_and_values_are_bounded(serve) -> None:
    srv = serve(_config())
    with grpc.insecure_channel(srv.address) as channel:
        stub = pb_grpc.ApplianceStub(channel)
        for bad in ("x" * 300, "line\nbreak", "tab\tbed"):
            with pytest.raises(grpc.RpcError) as info:
                stub.Match(pb.FileRequest(id=bad, content=b"abc"))
            assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        with pytest.raises(grpc.RpcError) as info:
            stub.MatchBatch(pb.BatchRequest(files=[pb.FileRequest(id="ok", content=b"a"),
                                                   pb.FileRequest(id="y" * 257, content=b"b")]))
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        with pytest.raises(grpc.RpcError) as info:
            stub.Match(pb.FileRequest(content=b"abc", signals=["md5"] * 33))
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert stub.Match(pb.FileRequest(id="ü-ok " + "z" * 250, content=b"abc")).result.hashes
        pdq = "0" * 64
        answer = stub.Lookup(pb.LookupRequest(hashes=[
            pb.Hash(signal="pdq", value=pdq, quality=1000),
            pb.Hash(signal="pdq", value=pdq, quality=-1),
            pb.Hash(signal="pdq", value=pdq, quality=100),
        ]))
        assert [r.error.code for r in answer.results] == ["MALFORMED_HASH", "MALFORMED_HASH", ""]


def test_a_lookup_of_100000_hashes_is_answered_in_full(serve, tmp_path: Path) -> None:
    srv = serve(replace(_config(), server=replace(_config().server,
                                                  audit_log=str(tmp_path / "audit.jsonl"))))
    listed = demo.build().files["listed-by-digest-and-pdq.png"]
    md5 = hashlib.md5(listed).hexdigest()
    with grpc.insecure_channel(srv.address, options=[
            ("grpc.max_receive_message_length", 256 << 20)]) as channel:
        stub = pb_grpc.ApplianceStub(channel)
        answer = stub.Lookup(pb.LookupRequest(hashes=[pb.Hash(signal="md5", value=md5)] * 100_000),
                             timeout=120)
        assert len(answer.results) == 100_000
        assert all(r.matches and r.matches[0].signal == "md5" for r in answer.results)
    lines = (tmp_path / "audit.jsonl").read_text().splitlines()
    assert len(lines) == 100_000  # every hit audited before the answer


class _Gate(InlineDecoders):
    """Inline decoding that holds large pictures until released."""

    def __init__(self) -> None:
        self.release, self.entered = threading.Event(), threading.Event()

    def run(self, data, layout, job, cost, seconds, deadline):
        if layout.pixels >= 4_000_000:
            self.entered.set()
            self.release.wait(60)
        return super().run(data, layout, job, cost, seconds, deadline)


def test_large_pictures_never_hold_up_small_ones(serve, monkeypatch) -> None:
    gate = _Gate()
    monkeypatch.setattr(pipeline_module, "make_decoders", lambda config, metrics=None: gate)
    srv = serve(_config(workers=2, heavy_workers=1, heavy_decode_bytes=16 << 20))
    big = hostile.gif_screen(3000, 3000)  # 9 MP: the heavy lane
    small = encode(synthetic_image(1, (64, 64)), "PNG")
    with grpc.insecure_channel(srv.address) as channel:
        stub = pb_grpc.ApplianceStub(channel)
        heavy = [stub.Match.future(pb.FileRequest(id=f"big{i}", content=big)) for i in range(3)]
        assert gate.entered.wait(30)
        _until(lambda: srv.handle.app.lanes.heavy.queued_items == 2, "two big files queued")
        # Small files go through while every heavy slot is busy, batched with nothing heavy.
        for i in range(10):
            result = stub.Match(pb.FileRequest(id=f"small{i}", content=small), timeout=10).result
            assert result.hashes[-1].signal == "pdq"
        mixed = stub.MatchBatch.future(pb.BatchRequest(files=[
            pb.FileRequest(id="s", content=small), pb.FileRequest(id="b", content=big)]))
        assert not mixed.done()  # its big file waits its turn in the heavy lane
        gate.release.set()
        assert [f.result(30).result.id for f in heavy] == ["big0", "big1", "big2"]
        assert [r.id for r in mixed.result(30).results] == ["s", "b"]


def test_health_follows_the_decode_workers(serve, monkeypatch) -> None:
    class Flaky(InlineDecoders):
        healthy = True

        def start(self) -> None:
            pass

    flaky = Flaky()
    monkeypatch.setattr(pipeline_module, "make_decoders", lambda config, metrics=None: flaky)
    srv = serve(_config())
    with grpc.insecure_channel(srv.address) as channel:
        health = health_pb2_grpc.HealthStub(channel)

        def status() -> int:
            return int(health.Check(health_pb2.HealthCheckRequest()).status)

        assert status() == health_pb2.HealthCheckResponse.SERVING
        flaky.healthy = False  # the zygote cannot start: no image can be decoded
        srv.call(srv.handle.set_health())
        assert status() == health_pb2.HealthCheckResponse.NOT_SERVING
        flaky.healthy = True
        srv.call(srv.handle.set_health())
        assert status() == health_pb2.HealthCheckResponse.SERVING


def test_overload_is_shed_not_reported_as_unhealthy(serve) -> None:
    srv = serve(_config(max_inflight_requests=1))
    gate = threading.Event()
    original = srv.handle.app.pipeline.hash_item
    srv.handle.app.pipeline.hash_item = (
        lambda item, d=None: (gate.wait(30), original(item, d))[1])
    with grpc.insecure_channel(srv.address) as channel:
        stub = pb_grpc.ApplianceStub(channel)
        first = stub.Hash.future(pb.FileRequest(content=b"abc"))
        _until(lambda: srv.handle.app.inflight.get("files") == 1, "the first call in flight")
        with pytest.raises(grpc.RpcError) as info:
            stub.Hash(pb.FileRequest(content=b"def"))
        assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        check = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())
        assert check.status == health_pb2.HealthCheckResponse.SERVING
        assert stub.GetStatus(pb.StatusRequest()).ready  # control has its own limit
        gate.set()
        assert first.result(30).result.hashes


def test_default_limits_hold_bytes_and_messages() -> None:
    config = Config()
    assert config.batching.max_inflight_bytes >= config.limits.max_stream_bytes
    assert config.limits.max_request_bytes == config.limits.max_file_bytes
    assert BatchingConfig().max_inflight_bytes > 0


def test_sigterm_exits_within_grace_while_large_pictures_decode() -> None:
    """Admitted slow work (100 MP pictures, allowed by every limit) is decoding in
    worker processes when SIGTERM comes: the server still exits within its grace
    and a second, its workers with it."""
    import re
    import signal
    import urllib.request

    from tests.helpers import start_server_process

    grace = 1.0
    server, address, ready = start_server_process("--grace-seconds", str(grace))
    metrics = re.search(r"metrics=(\S+)", ready)
    assert metrics is not None
    big = hostile.gif_screen(10000, 10000)

    def decoding() -> bool:
        text = urllib.request.urlopen(metrics.group(1), timeout=5).read().decode()
        found = re.search(r'appliance_decode_budget_bytes\{state="in_use"\} (\S+)', text)
        return found is not None and float(found.group(1)) > 0

    try:
        with grpc.insecure_channel(address) as channel:
            stub = pb_grpc.ApplianceStub(channel)
            calls = [stub.Match.future(pb.FileRequest(id=f"big{i}", content=big), timeout=60)
                     for i in range(4)]
            _until(decoding, "a decode to be running")
            started = time.monotonic()
            server.send_signal(signal.SIGTERM)
            assert server.wait(timeout=30) == 0
            assert time.monotonic() - started < grace + 1.0
            for call in calls:
                _code(call)  # answered, or cut off at shutdown: never left hanging
    finally:
        if server.poll() is None:
            server.kill()
    assert server.stderr is not None
    log = server.stderr.read()
    assert "they are stopped" in log or "requests still running" in log
