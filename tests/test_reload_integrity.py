"""Reloads and the watcher when list files are corrupt, being written, or the
loader fails unexpectedly: every failure is counted, the old lists keep
serving, and a file caught mid-copy by the watcher is waited for, not counted.

The watcher tests drive ``ListManager.poll`` step by step (no sleeps); files
held open for writing stand for an operator's copy in progress.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
from pathlib import Path
from typing import Any

import grpc
import pytest

from appliance.config import Config, ListSpec
from appliance.lists import integrity
from appliance.loading import Catalog
from appliance.metrics import Metrics
from appliance.reloader import ListManager
from appliance.v1 import appliance_pb2 as pb
from appliance.v1 import appliance_pb2_grpc as pb_grpc
from tests.helpers import ServerThread, encode, md5_hex, scene_image, with_lists
from tests.lists.format_fixtures import nsrl_sqlite
from tests.lists.integrity_helpers import (
    during_read,
    leases_unavailable,
    md5_csv,
    writer_process,
)


@pytest.fixture(scope="module")
def files() -> list[bytes]:
    return [encode(scene_image(s), "PNG") for s in (1, 2, 3)]


# --- every failure counted; an explicit reload reads at once ---


def _counts(metrics: Any) -> tuple[float, float]:
    return (metrics.list_reloads.labels("success")._value.get(),
            metrics.list_reloads.labels("failure")._value.get())


def test_a_corrupt_sqlite_list_fails_the_reload_and_the_old_one_serves(
    tmp_path: Path, files: list[bytes]
) -> None:
    path = tmp_path / "nsrl.db"
    good = nsrl_sqlite(path, [(hashlib.sha256(f).hexdigest(), hashlib.sha1(f).hexdigest(),
                               md5_hex(f), "", "", 1, 1) for f in files[:1]]
                       + [(f"{i:064x}", f"{i:040x}", f"{i:032x}", "", "", 1, 1)
                          for i in range(3000)])
    srv = ServerThread(with_lists(ListSpec("nsrl", str(path))))
    version = srv.wait_ready().snapshot.lists[0].version
    try:
        aside = tmp_path / "nsrl.db.new"
        aside.write_bytes(good[: len(good) // 2])  # truncated in transit
        os.replace(aside, path)
        with grpc.insecure_channel(srv.address) as channel:
            stub = pb_grpc.ApplianceStub(channel)
            reply = stub.ReloadLists(pb.ReloadRequest())  # not INTERNAL
            assert not reply.ok
            assert "'nsrl'" in reply.message and "malformed" in reply.message, reply.message
            assert [x.version for x in reply.lists] == [version]
            result = stub.Match(pb.FileRequest(content=files[0], signals=["md5"])).result
            assert [m.entry_id for m in result.matches] == ["row-1"]
        metrics = srv.handle.app.metrics
        assert _counts(metrics) == (1, 1)
        assert metrics.last_reload_success._value.get() == 0
    finally:
        srv.stop()


def test_an_unexpected_exception_from_the_loader_is_a_counted_failure(tmp_path: Path) -> None:
    listing = tmp_path / "l.csv"
    listing.write_text(f"id,md5\nA,{'0' * 32}\n")
    config = with_lists(ListSpec("l", str(listing)))
    catalog = Catalog()
    fail = [True]

    def loader(config: Config) -> Any:
        if fail[0]:
            raise KeyError("boom")  # a bug, not a ListError
        return catalog.load(config)

    async def scenario() -> None:
        metrics = Metrics()
        manager = ListManager(config, metrics, loader, catalog.fingerprints)
        try:
            ok, message = await manager.reload("loaded")  # the first load: no crash
            assert not ok and message == "internal error while loading lists: KeyError: 'boom'"
            assert manager.loaded is None and manager.error == message
            fail[0] = False
            assert (await manager.reload("reloaded"))[0]
            served = manager.loaded
            fail[0] = True
            ok, _ = await manager.reload("reloaded")
            assert not ok and manager.loaded is served  # the old lists keep serving
            assert manager.error == ""
            assert _counts(metrics) == (1, 2)
            assert metrics.last_reload_success._value.get() == 0
        finally:
            manager.close()

    asyncio.run(scenario())


def test_an_explicit_reload_reads_at_once(tmp_path: Path, files: list[bytes]) -> None:
    listing = tmp_path / "l.csv"
    listing.write_text(f"id,md5\nA,{md5_hex(files[0])}\n")
    srv = ServerThread(with_lists(ListSpec("l", str(listing))))
    srv.wait_ready()
    try:
        with grpc.insecure_channel(srv.address) as channel:
            stub = pb_grpc.ApplianceStub(channel)
            with listing.open("w") as f:  # complete and closed just before
                f.write(f"id,md5\nA,{md5_hex(files[0])}\nB,{md5_hex(files[1])}\n")
            reply = stub.ReloadLists(pb.ReloadRequest())
            assert reply.ok, reply.message
            assert reply.lists[0].version == hashlib.sha256(listing.read_bytes()).hexdigest()[:16]
            why = leases_unavailable(tmp_path)
            if why:
                pytest.skip(f"the still-being-written half: {why}")
            with listing.open("a") as writer:  # mid-write: refused, cleanly
                writer.write(f"C,{md5_hex(files[2])}")
                writer.flush()
                reply = stub.ReloadLists(pb.ReloadRequest())
            assert not reply.ok and "still open for writing" in reply.message
            assert _counts(srv.handle.app.metrics) == (2, 1)
    finally:
        srv.stop()


# --- the watcher: a change is loaded once it has settled --------------------


def _watched(path: Path, **manager: Any) -> Any:
    catalog = Catalog()
    config = with_lists(ListSpec("w", str(path)))
    return ListManager(config, Metrics(), catalog.load, catalog.fingerprints, **manager)


def _version(manager: Any) -> str:
    return str(manager.loaded.snapshot.lists[0].version)


def _polls(manager: Any, *steps: Any) -> None:
    """The first load, then each step (a callable, or "poll"), in one event loop."""
    async def run() -> None:
        try:
            assert (await manager.reload("loaded"))[0]
            for step in steps:
                if step == "poll":
                    await manager.poll()
                else:
                    step()
        finally:
            manager.close()

    asyncio.run(run())


def test_the_watcher_waits_for_the_writer_to_close(tmp_path: Path) -> None:
    why = leases_unavailable(tmp_path)
    if why:
        pytest.skip(why)
    listing = tmp_path / "w.csv"
    listing.write_bytes(md5_csv(3))
    manager = _watched(listing)
    versions: list[str] = []
    counts: list[tuple[float, float]] = []
    held = contextlib.ExitStack()

    def start_copying() -> None:  # an operator's copy in progress, in another process
        held.enter_context(writer_process(listing))
        with listing.open("ab") as f:
            f.write(b"E9,%032x\n" % 9)

    def seen() -> None:
        versions.append(_version(manager))
        counts.append(_counts(manager.metrics))

    _polls(manager, seen, start_copying, "poll", "poll", "poll", seen, held.close, "poll", seen)
    assert versions[0] == versions[1] != versions[2]
    assert counts == [(1, 0), (1, 0), (2, 0)]  # no failed reload while it was written


def test_the_watcher_loads_a_closed_file_at_the_first_poll_with_leases(tmp_path: Path) -> None:
    why = leases_unavailable(tmp_path)
    if why:
        pytest.skip(why)
    listing = tmp_path / "w.csv"
    listing.write_bytes(md5_csv(3))
    manager = _watched(listing)
    versions: list[str] = []
    _polls(manager, lambda: versions.append(_version(manager)),
           lambda: listing.write_bytes(md5_csv(4)), "poll",
           lambda: versions.append(_version(manager)))
    assert versions[0] != versions[1] and _counts(manager.metrics) == (2, 0)


def test_the_watcher_waits_one_steady_poll_without_leases(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(integrity, "LEASES", False)
    listing = tmp_path / "w.csv"
    listing.write_bytes(md5_csv(3))
    manager = _watched(listing)
    versions: list[str] = []

    def seen() -> None:
        versions.append(_version(manager))

    _polls(manager, seen,
           lambda: listing.write_bytes(md5_csv(4)), "poll", seen,  # first sight: wait
           lambda: listing.write_bytes(md5_csv(5)), "poll", seen,  # changed again: wait
           "poll", seen)  # the same for one more poll: load
    assert versions[0] == versions[1] == versions[2] != versions[3]
    assert _counts(manager.metrics) == (2, 0)


def test_the_watcher_does_not_count_a_file_caught_changing(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(integrity, "LEASES", False)
    listing = tmp_path / "w.csv"
    listing.write_bytes(md5_csv(3))
    manager = _watched(listing)
    versions: list[str] = []

    def change_under_the_watcher() -> None:
        def appended() -> None:
            with listing.open("ab") as f:
                f.write(b"X,%032x\n" % 1)

        during_read(monkeypatch, appended, of=listing)

    _polls(manager, lambda: versions.append(_version(manager)),
           lambda: listing.write_bytes(md5_csv(20_000)), "poll",
           change_under_the_watcher, "poll",  # steady, but caught changing: deferred
           lambda: versions.append(_version(manager)),
           "poll", "poll", lambda: versions.append(_version(manager)))
    assert versions[0] == versions[1] != versions[2]
    assert _counts(manager.metrics) == (2, 0)
    assert manager.loaded.snapshot.lists[0].size == 20_001


def test_the_watcher_counts_a_change_that_never_settles(tmp_path: Path) -> None:
    why = leases_unavailable(tmp_path)
    if why:
        pytest.skip(why)
    listing = tmp_path / "w.csv"
    listing.write_bytes(md5_csv(3))
    manager = _watched(listing, settle_seconds=0.0)  # waited long enough already
    writers: list[Any] = []

    def start_writing() -> None:  # and never close
        writers.append(listing.open("ab"))
        writers[0].write(b"E9,%032x\n" % 9)
        writers[0].flush()

    try:
        _polls(manager, start_writing, "poll")
    finally:
        writers[0].close()
    assert _counts(manager.metrics) == (1, 1)  # the alert fires
    assert manager.metrics.last_reload_success._value.get() == 0


def test_the_watcher_retries_a_reload_that_caught_the_writer(tmp_path: Path) -> None:
    # An explicit reload while the copy is finishing fails (counted); the
    # writer then only closes the file, so nothing changes on disk after
    # the failure, and the watcher must still load it.
    why = leases_unavailable(tmp_path)
    if why:
        pytest.skip(why)
    listing = tmp_path / "w.csv"
    listing.write_bytes(md5_csv(3))
    manager = _watched(listing)

    async def run() -> None:
        try:
            assert (await manager.reload("loaded"))[0]
            first = _version(manager)
            with listing.open("wb") as writer:
                writer.write(md5_csv(4))
                writer.flush()
                ok, message = await manager.reload("reloaded on SIGHUP")
                assert not ok and "still open for writing" in message
            await manager.poll()
            assert _version(manager) != first
            assert _counts(manager.metrics) == (2, 1)
        finally:
            manager.close()

    asyncio.run(run())
