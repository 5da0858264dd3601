"""The attacks of benchmarks/hostile.py: each one sent as a hostile client would.

Every attack is a function ``(Target) -> Outcome``: it sends its files or
calls to the server under test and says what came back and how long it took.
The files come from tests/hostile.py at the sizes seen when the issue was filed.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import socket
import sqlite3
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import grpc
import numpy as np

from appliance.v1 import appliance_pb2 as pb
from appliance.v1 import appliance_pb2_grpc as pb_grpc
from benchmarks.load_server import ServerProcess, metric, scrape
from tests import hostile

MiB = 1 << 20
OPTIONS = [("grpc.max_send_message_length", 512 * MiB),
           ("grpc.max_receive_message_length", 512 * MiB)]


@dataclass
class Target:
    server: ServerProcess
    folder: Path  # the lists the server loads
    listed: bytes  # a file whose MD5 is listed
    quick: bool = False

    def stub(self) -> tuple[grpc.Channel, pb_grpc.ApplianceStub]:
        channel = grpc.insecure_channel(self.server.address, options=OPTIONS)
        return channel, pb_grpc.ApplianceStub(channel)


@dataclass
class Outcome:
    answer: str
    seconds: float
    notes: list[str] = field(default_factory=list)


def _codes(results: Iterable[pb.FileResult]) -> str:
    """What a client saw per file: an item error, a skipped PDQ, or OK."""
    seen: Counter[str] = Counter()
    for r in results:
        if r.HasField("error"):
            seen[r.error.code] += 1
        elif any(s.signal == "pdq" for s in r.skipped):
            seen[next(s.reason.code for s in r.skipped if s.signal == "pdq")] += 1
        else:
            seen["OK"] += 1
    return ", ".join(f"{code} x{n}" if n > 1 else code for code, n in seen.most_common())


def _rpc_codes(calls: Iterable[Callable[[], object]]) -> Counter[str]:
    out: Counter[str] = Counter()
    for call in calls:
        try:
            call()
            out["OK"] += 1
        except grpc.RpcError as exc:
            out[exc.code().name] += 1
    return out


def _summary(counter: Counter[str]) -> str:
    return ", ".join(f"{k} x{v}" for k, v in counter.most_common())


@dataclass
class Files:
    """One hostile file in a Match (``count`` 1) or ``count`` of them in one MatchBatch."""

    make: Callable[[], bytes]
    count: int = 1
    deadline: float = 300.0

    def prepare(self) -> None:
        """Make the file before the attack's window opens (a 100 MP WebP takes seconds)."""
        _cached(self.make)

    def __call__(self, t: Target) -> Outcome:
        data = _cached(self.make)
        channel, stub = t.stub()
        with channel:
            started = time.perf_counter()
            try:
                if self.count == 1:
                    result = stub.Match(pb.FileRequest(id="hostile", content=data),
                                        timeout=self.deadline).result
                    answer, note = _codes([result]), f"{len(data):,} bytes"
                else:
                    count = 4 if t.quick else self.count
                    request = pb.BatchRequest(files=[pb.FileRequest(id=f"f{i}", content=data)
                                                     for i in range(count)])
                    answer = _codes(stub.MatchBatch(request, timeout=self.deadline).results)
                    note = f"one MatchBatch of {count} x {len(data):,} bytes"
            except grpc.RpcError as exc:
                answer, note = exc.code().name, f"{len(data):,} bytes"
            return Outcome(answer, time.perf_counter() - started, [note])


_files: dict[Callable[[], bytes], bytes] = {}


def _cached(make: Callable[[], bytes]) -> bytes:
    if make not in _files:
        _files[make] = make()
    return _files[make]


@cache
def scans_jpeg() -> bytes:
    return hostile.jpeg_empty_scans(15000, 4096, 4096)


class TwoSlowJpegs:
    """Two 15,000-scan JPEGs with 1 s deadlines, then four 5 s calls of a normal file."""

    def prepare(self) -> None:
        scans_jpeg()

    def __call__(self, t: Target) -> Outcome:
        return two_slow_jpegs_with_deadlines(t)


def two_slow_jpegs_with_deadlines(t: Target) -> Outcome:
    """Two 15,000-scan JPEGs with 1 s deadlines, then four 5 s calls of a normal file."""
    data = scans_jpeg()
    channel, stub = t.stub()
    with channel:
        started = time.perf_counter()
        hostile_calls = [stub.Match.future(pb.FileRequest(content=data), timeout=1.0)
                         for _ in range(2)]
        codes: Counter[str] = Counter()
        for call in hostile_calls:
            try:
                codes[_codes([call.result().result])] += 1
            except grpc.RpcError as exc:
                codes[exc.code().name] += 1
        after = _rpc_codes(lambda: stub.Match(pb.FileRequest(content=t.listed), timeout=5.0)
                           for _ in range(4))
        return Outcome(f"{_summary(codes)}; then 5 s calls: {_summary(after)}",
                       time.perf_counter() - started)


async def _stall_streams(address: str, count: int, chunk: bytes, chunks: int,
                         check: Callable[[], str]) -> tuple[Counter[str], str, float]:
    """``count`` MatchStreams that send ``chunks`` chunks and then stall; ``check``
    runs once they all stall. Returns the streams' codes, check's answer, seconds."""
    channels = [grpc.aio.insecure_channel(address, options=OPTIONS) for _ in range(10)]
    # Any: the stubs' types miss the call-then-write form of a stream (no iterator).
    stubs: list[Any] = [pb_grpc.ApplianceStub(c) for c in channels]
    started = time.perf_counter()
    calls = [stubs[i % len(stubs)].MatchStream() for i in range(count)]

    async def feed(call: grpc.aio.StreamUnaryCall[pb.Chunk, pb.FileResponse]) -> None:
        try:
            for _ in range(chunks):
                await call.write(pb.Chunk(id="stalled", data=chunk))
        except Exception:  # the server ended the stream: counted below
            return

    await asyncio.gather(*(feed(c) for c in calls))
    loop = asyncio.get_running_loop()
    answer = await loop.run_in_executor(None, check)
    codes: Counter[str] = Counter()

    async def outcome(call: grpc.aio.StreamUnaryCall[pb.Chunk, pb.FileResponse]) -> None:
        try:
            await asyncio.wait_for(call, 60)
            codes["OK"] += 1
        except grpc.aio.AioRpcError as exc:
            codes[exc.code().name] += 1
        except TimeoutError:
            codes["still open after 60 s"] += 1
            call.cancel()

    await asyncio.gather(*(outcome(c) for c in calls))
    for channel in channels:
        await channel.close(None)
    return codes, answer, time.perf_counter() - started


def _control_check(t: Target) -> Callable[[], str]:
    def check() -> str:
        channel, stub = t.stub()
        with channel:
            codes = _rpc_codes([
                lambda: stub.GetStatus(pb.StatusRequest(), timeout=5),
                lambda: stub.Match(pb.FileRequest(content=t.listed), timeout=5),
                lambda: stub.ReloadLists(pb.ReloadRequest(), timeout=30),
            ])
        return f"GetStatus, Match, ReloadLists beside them: {_summary(codes)}"
    return check


def stalled_streams(t: Target) -> Outcome:
    codes, check, seconds = asyncio.run(_stall_streams(
        t.server.address, 300, b"x", 1, _control_check(t)))
    return Outcome(f"streams: {_summary(codes)}; {check}", seconds)


def big_stalled_streams(t: Target) -> Outcome:
    count = 3 if t.quick else 8
    codes, check, seconds = asyncio.run(_stall_streams(
        t.server.address, count, bytes(MiB), 200, _control_check(t)))
    return Outcome(f"{count} streams of 200 MiB: {_summary(codes)}; {check}", seconds)


def huge_messages(t: Target) -> Outcome:
    data = bytes(250 * MiB)
    channel, stub = t.stub()
    with channel:
        started = time.perf_counter()
        calls = [stub.Match.future(pb.FileRequest(content=data), timeout=60) for _ in range(6)]
        codes = _rpc_codes(call.result for call in calls)
        return Outcome(f"6 x 250 MiB Match: {_summary(codes)}", time.perf_counter() - started)


def _lookup(t: Target, hashes: list[pb.Hash]) -> Outcome:
    channel, stub = t.stub()
    with channel:
        started = time.perf_counter()
        try:
            answer = stub.Lookup(pb.LookupRequest(hashes=hashes), timeout=120)
            matched = sum(bool(r.matches) for r in answer.results)
            errors = Counter(r.error.code for r in answer.results if r.error.code)
            text = f"{len(answer.results):,} results, {matched:,} matched"
            if errors:
                text += f", errors: {_summary(errors)}"
        except grpc.RpcError as exc:
            text = exc.code().name
        return Outcome(text, time.perf_counter() - started)


def lookup_listed_md5(t: Target) -> Outcome:
    md5 = hashlib.md5(t.listed).hexdigest()
    return _lookup(t, [pb.Hash(signal="md5", value=md5)] * 100_000)


def lookup_random_pdq(t: Target) -> Outcome:
    rng = np.random.default_rng(1)
    values = rng.integers(0, 256, (100_000, 32), dtype=np.uint8)
    return _lookup(t, [pb.Hash(signal="pdq", value=v.tobytes().hex(), quality=90)
                       for v in values])


def lookup_photodna(t: Target) -> Outcome:
    rng = np.random.default_rng(2)
    values = rng.integers(0, 256, (100_000, 144), dtype=np.uint8)
    return _lookup(t, [pb.Hash(signal="photodna", value=v.tobytes().hex()) for v in values])


def lookup_quality_1000(t: Target) -> Outcome:
    return _lookup(t, [pb.Hash(signal="pdq", value="0" * 64, quality=1000)])


def long_id(t: Target) -> Outcome:
    channel, stub = t.stub()
    with channel:
        started = time.perf_counter()
        codes = _rpc_codes([lambda: stub.Match(pb.FileRequest(id="i" * (2 * MiB),
                                                              content=b"abc"), timeout=10)])
        return Outcome(f"a 2 MB id: {_summary(codes)}", time.perf_counter() - started)


def idle_metrics_connections(t: Target) -> Outcome:
    before = t.server.threads()
    host, port = t.server.metrics_url.split("//")[1].split("/")[0].split(":")
    sockets = [socket.create_connection((host, int(port))) for _ in range(200)]
    started = time.perf_counter()
    try:
        value = metric(scrape(t.server.metrics_url), "appliance_lists_ready")
        answer = f"scrape with 200 idle connections open: {'OK' if value == 1 else 'failed'}"
    except OSError as exc:
        answer = f"scrape failed: {exc}"
    seconds = time.perf_counter() - started
    during = t.server.threads()
    for s in sockets:
        s.close()
    return Outcome(f"{answer}; server threads {before} -> {during}", seconds)


def reload_during_rewrite(t: Target) -> Outcome:
    """Rewrite the block list in place, slowly, while reloading; then check the
    listed file still matches (the old list kept) and a reload after the rewrite."""
    path = t.folder / "block.csv"
    content = path.read_bytes()
    channel, stub = t.stub()
    started = time.perf_counter()
    with channel:
        done = threading.Event()

        def rewrite() -> None:
            with open(path, "wb") as f:
                step = max(1, len(content) // 50)
                for i in range(0, len(content), step):
                    f.write(content[i : i + step])
                    f.flush()
                    time.sleep(0.02)
            done.set()

        writer = threading.Thread(target=rewrite)
        writer.start()
        during: Counter[str] = Counter()
        while not done.is_set():
            reply = stub.ReloadLists(pb.ReloadRequest(), timeout=30)
            during["ok" if reply.ok else "refused"] += 1
            time.sleep(0.05)
        writer.join()
        still = stub.Match(pb.FileRequest(content=t.listed), timeout=10).result
        after = stub.ReloadLists(pb.ReloadRequest(), timeout=30)
    return Outcome(
        f"reloads during the rewrite: {_summary(during)}; listed file still matches: "
        f"{'yes' if still.matched else 'NO'}; reload after it: {'ok' if after.ok else 'refused'}",
        time.perf_counter() - started)


def corrupt_sqlite(t: Target) -> Outcome:
    path = t.folder / "nsrl.db"
    good = path.read_bytes()
    before = metric(scrape(t.server.metrics_url), "appliance_list_reloads_total",
                    'outcome="failure"')
    aside = t.folder / ".nsrl.db.tmp"
    aside.write_bytes(good[:4096] + os.urandom(len(good) - 4096))
    aside.replace(path)  # published as an operator would, but corrupt
    channel, stub = t.stub()
    started = time.perf_counter()
    with channel:
        reply = stub.ReloadLists(pb.ReloadRequest(), timeout=30)
        values = scrape(t.server.metrics_url)
        seconds = time.perf_counter() - started
        aside.write_bytes(good)
        aside.replace(path)
        restored = stub.ReloadLists(pb.ReloadRequest(), timeout=30)
    failures = metric(values, "appliance_list_reloads_total", 'outcome="failure"') - before
    return Outcome(
        f"ok={reply.ok} ({reply.message[:60]}...); failures counted: {failures:g}; "
        f"last_reload_success={metric(values, 'appliance_lists_last_reload_success'):g}; "
        f"restored: ok={restored.ok}", seconds)


def write_nsrl(path: Path, rows: int = 1000) -> None:
    """A small NSRL RDSv3-style SQLite file (FILE table of hex hashes)."""
    db = sqlite3.connect(path)
    with db:  # commits; the connection is closed below (an open one is a writer)
        db.execute("CREATE TABLE FILE (sha256 TEXT, sha1 TEXT, md5 TEXT, crc32 TEXT, "
                   "file_name TEXT, file_size INTEGER, package_id INTEGER)")
        rng = np.random.default_rng(3)
        db.executemany("INSERT INTO FILE VALUES (?, ?, ?, '0', 'x', 1, 1)", [
            (rng.bytes(32).hex().upper(), rng.bytes(20).hex().upper(), rng.bytes(16).hex().upper())
            for _ in range(rows)])
    db.close()
