"""Serving at scale through a real server: batching across requests, the
bounded queue, deadlines, cancellation, graceful shutdown under load, request
ids and JSON logs. The batcher's timers run on a FakeClock: nothing waits for
a batch delay in real time."""

from __future__ import annotations

import hashlib
import json
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from typing import Any

import grpc
import pytest

from appliance import demo
from appliance.batching import FakeClock
from appliance.config import BatchingConfig, Config
from appliance.v1 import appliance_pb2 as pb
from appliance.v1 import appliance_pb2_grpc as pb_grpc
from tests.helpers import ServerThread, make_config, start_server_process

DELAY_MS = 60_000.0  # on the fake clock: a batch leaves when full or when the test says


def _config(**batching: Any) -> Config:
    config = make_config()
    return replace(config, batching=replace(
        BatchingConfig(max_delay_ms=DELAY_MS, max_concurrent_batches=1, max_batch_items=64,
                       max_queue_wait_ms=0.0), **batching))


def _sample(srv: ServerThread, name: str, **labels: str) -> float:
    value = srv.handle.app.metrics.registry.get_sample_value(name, labels)
    return 0.0 if value is None else value


def _wait(condition: Callable[[], bool], what: str, timeout: float = 20) -> None:
    end = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(start=1000.0)


@contextmanager
def _serve(
    config: Config, clock: FakeClock
) -> Iterator[tuple[ServerThread, pb_grpc.ApplianceStub]]:
    srv = ServerThread(config, clock=clock)
    srv.wait_ready()
    try:
        with grpc.insecure_channel(srv.address) as channel:
            yield srv, pb_grpc.ApplianceStub(channel)
    finally:
        srv.stop()


def test_concurrent_requests_share_batches_and_get_their_own_results(clock: FakeClock) -> None:
    with _serve(_config(max_batch_items=8), clock) as (srv, stub):
        contents = [f"file number {i}".encode() * (i + 1) for i in range(20)]
        futures = [stub.Hash.future(pb.FileRequest(id=f"r{i}", content=c, signals=["md5"]))
                   for i, c in enumerate(contents)]
        # Full batches of 8 leave at once; the last 4 leave when their delay is up.
        _wait(lambda: srv.handle.app.lanes.light.queued_items == 4
              and _sample(srv, "appliance_stage_seconds_count", stage="queue") == 16,
              "two full batches gone and the last 4 files queued")
        assert sum(f.done() for f in futures) <= 16  # 4 wait for their delay
        srv.run_soon(lambda: clock.advance(DELAY_MS / 1000))
        for i, (future, content) in enumerate(zip(futures, contents, strict=True)):
            result = future.result(timeout=30).result
            assert result.id == f"r{i}"
            assert [h.value for h in result.hashes] == [hashlib.md5(content).hexdigest()]
        assert _sample(srv, "appliance_batch_size_count") == 3
        assert _sample(srv, "appliance_batch_size_sum") == 20
        assert _sample(srv, "appliance_batch_fill_ratio_sum") == pytest.approx(1 + 1 + 0.5)


def test_a_full_queue_answers_resource_exhausted_at_once(clock: FakeClock) -> None:
    with _serve(_config(max_queue_items=2), clock) as (srv, stub):
        queued = [stub.Hash.future(pb.FileRequest(content=b"a")),
                  stub.Hash.future(pb.FileRequest(content=b"b"))]
        _wait(lambda: srv.handle.app.lanes.light.queued_items == 2, "two queued files")
        with pytest.raises(grpc.RpcError) as info:
            stub.Hash(pb.FileRequest(content=b"c"), timeout=10)
        assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "max_queue_items=2" in (info.value.details() or "")
        assert _sample(srv, "appliance_shed_requests_total", reason="queue_full") == 1
        srv.run_soon(lambda: clock.advance(DELAY_MS / 1000))
        assert all(f.result(timeout=30).result.hashes for f in queued)


def test_a_request_whose_deadline_passes_in_the_queue_is_dropped(clock: FakeClock) -> None:
    with _serve(_config(), clock) as (srv, stub):
        future = stub.Hash.future(pb.FileRequest(content=b"late"), timeout=20)
        _wait(lambda: srv.handle.app.lanes.light.queued_items == 1, "the file queued")
        srv.run_soon(lambda: clock.advance(25))  # past its 20 s deadline, on the fake clock
        with pytest.raises(grpc.RpcError) as info:
            future.result(timeout=10)  # long before the client's own 20 s
        assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        assert _sample(srv, "appliance_shed_requests_total", reason="deadline") == 1
        assert _sample(srv, "appliance_files_total", result="ok") == 0  # no work was done


def test_a_cancelled_request_frees_its_place(clock: FakeClock) -> None:
    with _serve(_config(max_queue_items=1), clock) as (srv, stub):
        future = stub.Hash.future(pb.FileRequest(content=b"x" * 100))
        _wait(lambda: srv.handle.app.lanes.light.queued_items == 1, "the file queued")
        future.cancel()
        _wait(lambda: srv.handle.app.lanes.light.queued_items == 0, "the queue emptied")
        assert _sample(srv, "appliance_queue_bytes") == 0
        assert _sample(srv, "appliance_shed_requests_total", reason="cancelled") == 1
        after = stub.Hash.future(pb.FileRequest(content=b"y"))  # fits again
        _wait(lambda: srv.handle.app.lanes.light.queued_items == 1, "the next file queued")
        srv.run_soon(lambda: clock.advance(DELAY_MS / 1000))
        assert after.result(timeout=30).result.hashes
        assert _sample(srv, "appliance_files_total", result="ok") == 1


def test_the_request_id_comes_back_in_trailing_metadata(clock: FakeClock) -> None:
    with _serve(_config(max_batch_items=1), clock) as (_, stub):
        _, call = stub.Hash.with_call(pb.FileRequest(content=b"abc"),
                                      metadata=(("x-request-id", "req-42"),))
        assert ("x-request-id", "req-42") in call.trailing_metadata()
        _, call = stub.Hash.with_call(pb.FileRequest(content=b"abc"),
                                      metadata=(("x-request-id", "not a token; " * 3),))
        fresh = dict(call.trailing_metadata())["x-request-id"]
        assert len(fresh) == 32 and fresh != "req-42"


def test_sigterm_under_load_answers_every_accepted_request() -> None:
    """Clients send continuously; SIGTERM; the server exits 0, and every request
    it admitted was answered OK. Each request carries its own x-request-id and
    the server logs every refusal with it (JSON), so a failed call can be told
    apart: refused by the server, or never reached it (connection refused)."""
    contents = list(demo.build().files.values())
    server, address, _ = start_server_process(
        "--max-delay-ms", "100", "--grace-seconds", "20", "--log-format", "json",
        "--log-requests")
    calls: list[tuple[str, str, bool]] = []  # (request id, code, after the signal)
    lock = threading.Lock()
    stop = threading.Event()
    signalled = threading.Event()

    def client(n: int) -> None:
        with grpc.insecure_channel(address) as channel:
            stub = pb_grpc.ApplianceStub(channel)
            i = 0
            while not stop.is_set():
                rid = f"c{n}-{i}"
                try:
                    stub.Match(pb.FileRequest(content=contents[i % len(contents)]),
                               timeout=30, metadata=(("x-request-id", rid),))
                    code = "OK"
                except grpc.RpcError as exc:
                    code = exc.code().name
                with lock:
                    calls.append((rid, code, signalled.is_set()))
                i += 1
                if code != "OK":
                    time.sleep(0.01)

    threads = [threading.Thread(target=client, args=(n,)) for n in range(6)]
    try:
        for t in threads:
            t.start()
        _wait(lambda: sum(c == "OK" for _, c, _ in calls) >= 20, "answers before the signal",
              timeout=60)
        signalled.set()
        server.send_signal(signal.SIGTERM)
        assert server.wait(timeout=30) == 0
        time.sleep(0.3)
    finally:
        stop.set()
        for t in threads:
            t.join(30)
        if server.poll() is None:
            server.kill()
    assert server.stderr is not None
    events = [json.loads(line) for line in server.stderr.read().splitlines() if line.strip()]
    assert any("shutting down" in e["msg"] for e in events)
    served = {e["request_id"]: e["code"] for e in events if e["msg"] == "rpc"}
    assert set(served.values()) <= {"OK", "UNAVAILABLE"}  # admitted: OK; else refused
    codes = Counter(code for _, code, _ in calls)
    for rid, code, _ in calls:
        if served.get(rid) == "OK":
            assert code == "OK", (rid, code)  # admitted, so answered
        elif code != "OK":
            # Refused by the server, or never reached a handler: the connection was
            # refused (UNAVAILABLE) or gRPC cancelled it as the server stopped.
            assert code in ("UNAVAILABLE", "CANCELLED"), (rid, code, codes)
    assert sum(code == "OK" for _, code, late in calls if late) >= 1, codes  # drained
    assert codes["OK"] == sum(code == "OK" for code in served.values())


def test_files_whose_deadline_passed_before_their_batch_ran_are_skipped() -> None:
    from concurrent.futures import ThreadPoolExecutor

    from appliance.intake import Work, run_work
    from appliance.pipeline import Pipeline
    from appliance.results import Item

    clock = FakeClock(start=50.0)
    work = [Work(Item("late", b"abc", ("md5",)), None, deadline=49.0),
            Work(Item("in-time", b"abc", ("md5",)), None, deadline=51.0),
            Work(Item("no-deadline", b"abc", ("md5",)), None)]
    with ThreadPoolExecutor(2) as pool:
        late, in_time, no_deadline = run_work(Pipeline(Config()), pool, work, clock)
    assert late.id == "late" and late.error is not None
    assert late.error.code == "DEADLINE_EXCEEDED" and not late.hashes
    digest = hashlib.md5(b"abc").digest()
    assert [h.value for h in in_time.hashes] == [h.value for h in no_deadline.hashes] == [digest]
