"""The audit log: record format, group commit, draining, failures, bounds."""

from __future__ import annotations

import errno
import json
import os
import stat
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import pytest

from appliance.audit import AuditBacklogFull, AuditLog
from appliance.errors import Overloaded
from appliance.results import Hit

WAIT = 10.0  # a bound on waits for the writer thread, never a timing assumption

FIELDS = {"time", "request_id", "identity", "item_id", "list", "list_version", "entry_id",
          "signal", "distance", "kind", "suppressed", "prev"}


def hits(n: int, entry: str = "e") -> list[Hit]:
    return [Hit(signal="md5", list="demo", list_version="v1", entry_id=f"{entry}{i}",
                category="c", distance=0, query="00" * 16) for i in range(n)]


def read(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


class GatedFsync:
    """os.fsync that counts calls and holds the first one until ``release``."""

    def __init__(self, fail_first: bool = False) -> None:
        self.real = os.fsync
        self.calls = 0
        self.done = 0  # fsyncs that returned
        self.entered = threading.Event()
        self.gate = threading.Event()
        self.fail_first = fail_first
        self.lock = threading.Lock()

    def __call__(self, fd: int) -> None:
        with self.lock:
            self.calls += 1
            first = self.calls == 1
        if first:
            self.entered.set()
            assert self.gate.wait(WAIT)
            if self.fail_first:
                raise OSError(errno.EIO, "injected fsync failure")
        self.real(fd)
        with self.lock:
            self.done += 1


@pytest.fixture
def fsync(monkeypatch: pytest.MonkeyPatch) -> Iterator[GatedFsync]:
    gated = GatedFsync()
    monkeypatch.setattr(os, "fsync", gated)
    yield gated
    gated.gate.set()  # never leave the writer blocked, whatever the test did


def test_records_are_written_in_the_same_format(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    log = AuditLog(str(path))
    log.record("req-1", "item-1", hits(2), identity="uploads")
    log.record("req-2", "item-2", [])  # nothing to write, no error
    log.close()
    records = read(path)
    assert [r["entry_id"] for r in records] == ["e0", "e1"]
    for r in records:
        assert set(r) == FIELDS
        assert (r["request_id"], r["identity"], r["item_id"], r["list"], r["signal"]) == (
            "req-1", "uploads", "item-1", "demo", "md5")
        assert (r["distance"], r["kind"], r["suppressed"]) == (0, "block", False)


def test_group_commit_groups_and_completes_after_its_fsync(
    tmp_path: Path, fsync: GatedFsync
) -> None:
    log = AuditLog(str(tmp_path / "audit.jsonl"))
    first = log.submit("r", "first", hits(1))
    assert fsync.entered.wait(WAIT)  # the writer now holds the first group in fsync
    # When each future completed, how many fsyncs had returned (set in the writer).
    seen: dict[int, int] = {}

    def watch(key: int) -> Callable[[Future[None]], None]:
        return lambda _: seen.__setitem__(key, fsync.done)

    first.add_done_callback(watch(-1))
    futures: list[Future[None]] = []
    lock = threading.Lock()

    def producer(t: int) -> None:
        for i in range(50):
            f = log.submit(f"r{t}", f"item{i}", hits(2))
            with lock:
                f.add_done_callback(watch(len(futures)))
                futures.append(f)

    threads = [threading.Thread(target=producer, args=(t,)) for t in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(WAIT)
    assert len(futures) == 200
    assert not first.done() and not any(f.done() for f in futures)
    fsync.gate.set()
    first.result(WAIT)
    for f in futures:
        f.result(WAIT)
    assert fsync.calls == 2  # the first group, then all 200 submits in one
    log.close()
    assert seen[-1] >= 1 and all(seen[i] >= 2 for i in range(200))
    assert len(read(tmp_path / "audit.jsonl")) == 401


@pytest.mark.slow
def test_100k_hits_in_one_submit_take_one_fsync(tmp_path: Path, fsync: GatedFsync) -> None:
    fsync.gate.set()
    path = tmp_path / "audit.jsonl"
    log = AuditLog(str(path))
    log.submit("r", "lookup[0]", hits(100_000)).result(60)
    assert fsync.calls == 1
    log.close()  # (and the head file's fsyncs)
    records = read(path)
    assert len(records) == 100_000
    assert records[-1]["entry_id"] == "e99999"


def test_close_drains_what_was_submitted(tmp_path: Path, fsync: GatedFsync) -> None:
    path = tmp_path / "audit.jsonl"
    log = AuditLog(str(path))
    futures = [log.submit("r", "first", hits(1))]
    assert fsync.entered.wait(WAIT)
    futures += [log.submit("r", f"i{i}", hits(3)) for i in range(100)]
    closer = threading.Thread(target=log.close)
    closer.start()
    assert closer.is_alive()  # it cannot return while the writer is held in fsync
    fsync.gate.set()
    closer.join(WAIT)
    assert not closer.is_alive()
    assert all(f.done() and f.exception() is None for f in futures)
    assert len(read(path)) == 301
    with pytest.raises(RuntimeError):
        log.submit("r", "late", hits(1))
    log.close()  # idempotent


def test_failed_fsync_goes_to_the_group_and_the_log_stays_usable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    gated = GatedFsync(fail_first=True)
    monkeypatch.setattr(os, "fsync", gated)
    path = tmp_path / "audit.jsonl"
    log = AuditLog(str(path))
    failed = log.submit("r", "a", hits(1))
    assert gated.entered.wait(WAIT)
    also_failed = log.submit("r", "b", hits(1))  # queued behind the failing group
    gated.gate.set()
    exc = failed.exception(WAIT)
    assert isinstance(exc, OSError) and exc.errno == errno.EIO
    also_failed.result(WAIT)  # a later group commits
    log.record("r", "c", hits(1))
    log.close()
    assert [r["item_id"] for r in read(path)] == ["a", "b", "c"]


def test_a_torn_write_loses_one_line_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real_write, calls = os.write, []

    def short_then_full_disk(fd: int, data: Any) -> int:
        calls.append(len(data))
        if len(calls) == 1:
            return real_write(fd, bytes(data[: len(data) // 2]))
        if len(calls) == 2:
            raise OSError(errno.ENOSPC, "injected: disk full")
        return real_write(fd, data)

    monkeypatch.setattr(os, "write", short_then_full_disk)
    path = tmp_path / "audit.jsonl"
    log = AuditLog(str(path))
    with pytest.raises(OSError):
        log.record("r", "torn", hits(1))
    log.record("r", "after", hits(2))
    log.close()
    lines = path.read_text().splitlines()
    assert len(lines) == 3
    with pytest.raises(json.JSONDecodeError):
        json.loads(lines[0])
    assert [json.loads(line)["item_id"] for line in lines[1:]] == ["after", "after"]


def test_long_ids_are_truncated_with_a_marker(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    log = AuditLog(str(path))
    log.record("r" * 300, "i" * 256, hits(1), identity="u" * 257)
    log.record("\x00\n" + "x" * 1000, "ok", hits(1))
    log.close()
    first, second = read(path)
    assert first["request_id"] == "r" * 256 + "…(+44 chars)"
    assert first["item_id"] == "i" * 256  # at the limit: kept whole
    assert first["identity"] == "u" * 256 + "…(+1 chars)"
    assert second["request_id"] == ("\x00\n" + "x" * 254) + "…(+746 chars)"


def test_backlog_bound_refuses_at_once(tmp_path: Path, fsync: GatedFsync) -> None:
    log = AuditLog(str(tmp_path / "audit.jsonl"), max_queued=10)
    held = log.submit("r", "a", hits(6))
    assert fsync.entered.wait(WAIT)  # the 6 records count until they are on disk
    queued = log.submit("r", "b", hits(4))
    with pytest.raises(AuditBacklogFull) as refused:
        log.submit("r", "c", hits(1))
    assert isinstance(refused.value, Overloaded)  # RESOURCE_EXHAUSTED, retryable
    fsync.gate.set()
    held.result(WAIT)
    queued.result(WAIT)
    log.record("r", "d", hits(10))  # room again
    log.close()


@pytest.mark.slow
def test_mode_and_append(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    path.write_text('{"kept":true}\n')
    path.chmod(0o600)
    fresh = tmp_path / "fresh.jsonl"
    AuditLog(str(fresh)).close()
    assert stat.S_IMODE(fresh.stat().st_mode) == 0o600
    # Two logs on one path (as two processes would be) interleave whole lines only.
    logs = [AuditLog(str(path)), AuditLog(str(path))]

    def writer(k: int) -> None:
        # 6,000 records of ~360 bytes: more than one write (_WRITE_CHUNK) per group.
        for i in range(3):
            logs[k].record(f"log{k}", f"i{i}", hits(6_000, entry="x" * 100))

    threads = [threading.Thread(target=writer, args=(k,)) for k in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    for log in logs:
        log.close()
    records = read(path)
    assert records[0] == {"kept": True}
    assert sum(r.get("request_id") == "log0" for r in records) == 18_000
    assert sum(r.get("request_id") == "log1" for r in records) == 18_000
