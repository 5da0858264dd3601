"""Lists: allow-lists, the catalog's reuse, reloads under load, SIGHUP and watching."""

from __future__ import annotations

import hashlib
import os
import signal
import threading
from pathlib import Path

import grpc
import pytest

from appliance.config import ListSpec, MatchingConfig
from appliance.loading import Catalog
from appliance.v1 import appliance_pb2 as pb
from appliance.v1 import appliance_pb2_grpc as pb_grpc
from tests.helpers import (
    ServerThread,
    encode,
    md5_hex,
    scene_image,
    start_server_process,
    with_lists,
)


@pytest.fixture(scope="module")
def files() -> list[bytes]:
    return [encode(scene_image(s), "PNG") for s in (1, 2, 3)]


def test_allow_list_suppresses_block_hits(tmp_path: Path, files: list[bytes]) -> None:
    block, allow = tmp_path / "block.csv", tmp_path / "nsrl.csv"
    block.write_text(f"id,md5\nB1,{md5_hex(files[0])}\nB2,{md5_hex(files[1])}\n")
    allow.write_text(f"id,md5\nN1,{md5_hex(files[0])}\n")
    config = with_lists(ListSpec("block", str(block)),
                         ListSpec("nsrl", str(allow), kind="allow"))
    srv = ServerThread(config)
    srv.wait_ready()
    try:
        with grpc.insecure_channel(srv.address) as channel:
            stub = pb_grpc.ApplianceStub(channel)
            both = stub.Match(pb.FileRequest(content=files[0], signals=["md5"])).result
            assert not both.matched
            hits = {(m.list, m.kind, m.suppressed) for m in both.matches}
            assert hits == {("block", "block", True), ("nsrl", "allow", False)}
            only_block = stub.Match(pb.FileRequest(content=files[1], signals=["md5"])).result
            assert only_block.matched
            assert [(m.entry_id, m.suppressed) for m in only_block.matches] == [("B2", False)]
            statuses = {s.name: s.kind for s in stub.GetStatus(pb.StatusRequest()).lists}
            assert statuses == {"block": "block", "nsrl": "allow"}
        metrics = srv.handle.app.metrics
        assert metrics.suppressed.labels("block", "md5")._value.get() == 1
        assert metrics.matches.labels("block", "md5")._value.get() == 1
    finally:
        srv.stop()


def test_catalog_reuses_untouched_lists(tmp_path: Path, files: list[bytes]) -> None:
    a, b = tmp_path / "a.csv", tmp_path / "b.csv"
    a.write_text(f"id,md5\nA1,{md5_hex(files[0])}\n")
    b.write_text(f"id,md5\nB1,{md5_hex(files[1])}\n")
    config = with_lists(ListSpec("a", str(a)), ListSpec("b", str(b)))
    catalog = Catalog()
    first = catalog.load(config)
    assert sorted(catalog.rebuilt) == ["a", "b"]
    second = catalog.load(config)
    assert catalog.rebuilt == [] and second.snapshot.indexes[0] is first.snapshot.indexes[0]
    os.utime(a, ns=(1, 1))  # touched, same content: re-read, not re-indexed
    third = catalog.load(config)
    assert catalog.rebuilt == [] and third.snapshot.indexes[0] is first.snapshot.indexes[0]
    b.write_text(f"id,md5\nB1,{md5_hex(files[1])}\nB2,{md5_hex(files[2])}\n")
    fourth = catalog.load(config)
    assert catalog.rebuilt == ["b"]
    assert fourth.snapshot.indexes[0] is first.snapshot.indexes[0]
    new_b, old_b = fourth.snapshot.indexes[1], first.snapshot.indexes[1]
    assert new_b.hash_list.version != old_b.hash_list.version
    # Disabled lists are not loaded; categories are mapped.
    mapped = with_lists(ListSpec("a", str(a), categories=(("", "unrated"),)),
                         ListSpec("b", str(b), enabled=False))
    loaded = Catalog().load(mapped)
    assert [x.name for x in loaded.snapshot.indexes] == ["a"]
    assert loaded.snapshot.lists[0].categories == ("unrated",)


def test_reloads_under_load_lose_nothing_and_never_mix(tmp_path: Path, files: list[bytes]) -> None:
    listing = tmp_path / "l.csv"
    base = f"id,md5,sha256\nE1,{md5_hex(files[0])},{hashlib.sha256(files[0]).hexdigest()}\n"

    def write(version: int) -> str:
        text = base + f"X{version},{version:032x},\n"
        listing.write_text(text)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    versions = {write(0)}
    srv = ServerThread(with_lists(ListSpec("l", str(listing))))
    srv.wait_ready()
    stop = threading.Event()
    seen: list[str] = []
    failures: list[BaseException] = []

    def client() -> None:
        with grpc.insecure_channel(srv.address) as channel:
            stub = pb_grpc.ApplianceStub(channel)
            while not stop.is_set():
                try:
                    result = stub.Match(pb.FileRequest(content=files[0],
                                                       signals=["md5", "sha256"])).result
                    got = {m.list_version for m in result.matches}
                    assert len(result.matches) == 2 and len(got) == 1, result
                    seen.append(got.pop())
                except BaseException as exc:
                    failures.append(exc)
                    return

    threads = [threading.Thread(target=client) for _ in range(3)]
    for t in threads:
        t.start()
    try:
        with grpc.insecure_channel(srv.address) as channel:
            stub = pb_grpc.ApplianceStub(channel)
            for version in range(1, 6):
                versions.add(write(version))
                reply = stub.ReloadLists(pb.ReloadRequest())
                assert reply.ok, reply.message
                assert reply.lists[0].version == hashlib.sha256(
                    listing.read_bytes()).hexdigest()[:16]
            listing.write_text("id,md5\nbad,xyz\n")  # a failed reload keeps the old lists
            reply = stub.ReloadLists(pb.ReloadRequest())
            assert not reply.ok and "line 2" in reply.message
            assert reply.lists[0].version in versions
    finally:
        stop.set()
        for t in threads:
            t.join(30)
        metrics = srv.handle.app.metrics
        srv.stop()
    assert not failures, failures[:3]
    assert seen and set(seen) <= versions
    assert metrics.list_reloads.labels("success")._value.get() == 6  # first load + 5
    assert metrics.list_reloads.labels("failure")._value.get() == 1
    assert metrics.last_reload_success._value.get() == 0


def test_watching_reloads_changed_files(tmp_path: Path, files: list[bytes]) -> None:
    listing = tmp_path / "w.csv"
    listing.write_text(f"id,md5\nW1,{md5_hex(files[0])}\n")
    srv = ServerThread(with_lists(ListSpec("w", str(listing)), watch_lists_seconds=0.02))
    first = srv.wait_ready().snapshot.lists[0].version
    try:
        listing.write_text(f"id,md5\nW1,{md5_hex(files[0])}\nW2,{md5_hex(files[1])}\n")
        changed = threading.Event()
        for _ in range(500):  # bounded: the watcher looks every 20 ms
            loaded = srv.handle.app.lists.loaded
            if loaded is not None and loaded.snapshot.lists[0].version != first:
                changed.set()
                break
            changed.wait(0.02)
        assert changed.is_set()
    finally:
        srv.stop()


def test_sighup_reloads_a_running_server(tmp_path: Path, files: list[bytes]) -> None:
    listing = tmp_path / "h.csv"
    listing.write_text(f"id,md5\nH1,{md5_hex(files[0])}\n")
    server, address, _ = start_server_process("--lists", f"h={listing}")
    try:
        assert server.stderr is not None
        listing.write_text(f"id,md5\nH1,{md5_hex(files[0])}\nH2,{md5_hex(files[1])}\n")
        server.send_signal(signal.SIGHUP)
        for line in server.stderr:  # the reload logs its outcome
            if "reloaded on SIGHUP" in line:
                break
        with grpc.insecure_channel(address) as channel:
            stub = pb_grpc.ApplianceStub(channel)
            [status] = stub.GetStatus(pb.StatusRequest()).lists
            assert status.version == hashlib.sha256(listing.read_bytes()).hexdigest()[:16]
            assert status.entries["md5"] == 2
        server.send_signal(signal.SIGTERM)
        assert server.wait(timeout=30) == 0
    finally:
        if server.poll() is None:
            server.kill()


def test_list_tables_in_the_config_file(tmp_path: Path) -> None:
    from appliance import config as cfg
    from appliance.errors import ConfigError

    path = tmp_path / "c.toml"
    path.write_text(
        '[[lists]]\nname = "nsrl"\npath = "/x/NSRLFile.txt"\nformat = "nsrl"\nkind = "allow"\n'
        'signals = ["sha1"]\ncategories = { "1" = "csam" }\nenabled = false\n'
    )
    [spec] = cfg.load(str(path)).lists
    assert spec == ListSpec("nsrl", "/x/NSRLFile.txt", "nsrl", "allow", False, ("sha1",),
                            (("1", "csam"),))
    path.write_text('[[lists]]\nname = "a"\npath = "p"\nkind = "maybe"\n')
    with pytest.raises(ConfigError, match="block or allow"):
        cfg.load(str(path))
    path.write_text('[[lists]]\nname = "a"\npath = "p"\nsignals = ["crc"]\n')
    with pytest.raises(ConfigError, match="unknown signals"):
        cfg.load(str(path))
    assert MatchingConfig().pdq_threshold == 31


def test_deltas_add_and_delete_after_the_base_list(tmp_path: Path, files: list[bytes]) -> None:
    import json

    from appliance.decode import decode_rgb
    from appliance.hashers.pdq import pdq_from_rgb

    pdqs = [pdq_from_rgb(decode_rgb(f, 10**8))[0].hex() for f in files]
    base = tmp_path / "base.csv"
    base.write_text(f"id,pdq\nA,{pdqs[0]}\nB,{pdqs[1]}\n")
    withdrawn = tmp_path / "d1.json"  # a StopNCII-style withdrawal of B's hash
    withdrawn.write_text(json.dumps([{"signalType": "pdq", "hashValue": pdqs[1],
                                      "hashStatus": "Withdrawn"}]))
    added = tmp_path / "d2.csv"
    added.write_text(f"id,pdq\nC,{pdqs[2]}\n")
    spec = ListSpec("l", str(base), deltas=(str(withdrawn), str(added)))
    loaded = Catalog().load(with_lists(spec))
    hl = loaded.snapshot.lists[0]
    assert sorted(hl.entry_ids) == ["A", "C"]
    digests = b"".join(hashlib.sha256(p.read_bytes()).digest()
                       for p in (base, withdrawn, added))
    assert hl.version == hashlib.sha256(digests).hexdigest()[:16]
    hits = loaded.snapshot.match("pdq", [bytes.fromhex(p) for p in pdqs])
    assert [[h.entry_id for h in found] for found in hits] == [["A"], [], ["C"]]
