"""A spec pointing to a compiled snapshot: honoured without a rebuild, or refused."""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path

import grpc
import pytest

from appliance import loading
from appliance.config import Config, ListSpec
from appliance.errors import ListError
from appliance.index.compiled import write_compiled
from appliance.index.snapshot import ListIndex
from appliance.loading import Catalog, Loaded
from appliance.results import Hit
from appliance.v1 import appliance_pb2 as pb
from appliance.v1 import appliance_pb2_grpc as pb_grpc
from tests.helpers import ServerThread, with_lists
from tests.lists.test_list_kinds import LISTED, NSRL_HEADER, SHARED, nsrl_text


def _config(*specs: ListSpec) -> Config:
    return Config(lists=specs)


def _compile(out: Path, *specs: ListSpec) -> Path:
    loaded = Catalog().load(_config(*specs))
    write_compiled(out, loaded.snapshot.indexes, loaded.sources)
    return out


@pytest.fixture
def sources(tmp_path: Path) -> tuple[Path, Path]:
    block = tmp_path / "baseline.csv"
    block.write_text("id,category,md5,sha1\n" + "".join(
        f"B{i},cat{i},{hashlib.md5(b).hexdigest()},{hashlib.sha1(b).hexdigest()}\n"
        for i, b in enumerate((SHARED, LISTED))))
    nsrl = tmp_path / "NSRLFile.txt"
    nsrl.write_text(nsrl_text(SHARED))
    return block, nsrl


@pytest.fixture
def mixed(tmp_path: Path, sources: tuple[Path, Path]) -> Path:
    """baseline (block, md5 + sha1) and nsrl (allow by its format's default)."""
    block, nsrl = sources
    return _compile(tmp_path / "mixed.snap", ListSpec("baseline", str(block)),
                    ListSpec("nsrl", str(nsrl)))


@pytest.fixture
def allow_only(tmp_path: Path, sources: tuple[Path, Path]) -> Path:
    return _compile(tmp_path / "allow.snap", ListSpec("nsrl", str(sources[1])))


def _load(*specs: ListSpec) -> Loaded:
    return Catalog().load(_config(*specs))


def _hits(loaded: Loaded, signal: str, content: bytes) -> list[Hit]:
    digest = hashlib.new(signal, content).digest()
    return loaded.snapshot.match(signal, [digest])[0]


def test_a_plain_spec_serves_the_lists_as_compiled(mixed: Path) -> None:
    loaded = _load(ListSpec("anything", str(mixed)))
    # The spec's name names the file; the lists keep their compiled names and kinds.
    assert [(x.name, x.kind) for x in loaded.snapshot.indexes] == [("baseline", "block"),
                                                                   ("nsrl", "allow")]
    assert loaded.sources == {"baseline": str(mixed), "nsrl": str(mixed)}
    assert {(h.list, h.kind) for h in _hits(loaded, "md5", SHARED)} == {
        ("baseline", "block"), ("nsrl", "allow")}


def test_a_compiled_list_name_must_not_clash_with_another_list(
    mixed: Path, sources: tuple[Path, Path]
) -> None:
    with pytest.raises(ListError, match="list names must be unique"):
        _load(ListSpec("snap", str(mixed)), ListSpec("baseline", str(sources[0])))


@pytest.mark.parametrize("kind", ["block", "allow"])
def test_a_kind_applies_to_every_list_of_a_single_kind_snapshot(
    tmp_path: Path, allow_only: Path, sources: tuple[Path, Path], kind: str
) -> None:
    loaded = _load(ListSpec("nsrl", str(allow_only), kind=kind))  # type: ignore[arg-type]
    assert [(x.name, x.kind) for x in loaded.snapshot.indexes] == [("nsrl", kind)]
    assert {h.kind for h in _hits(loaded, "sha1", SHARED)} == {kind}
    block_only = _compile(tmp_path / "block.snap", ListSpec("baseline", str(sources[0])))
    loaded = _load(ListSpec("b", str(block_only), kind=kind))  # type: ignore[arg-type]
    assert [x.kind for x in loaded.snapshot.indexes] == [kind]


@pytest.mark.parametrize("kind", ["block", "allow"])
def test_one_kind_over_lists_of_both_kinds_is_refused(mixed: Path, kind: str) -> None:
    with pytest.raises(ListError) as caught:
        _load(ListSpec("x", str(mixed), kind=kind))  # type: ignore[arg-type]
    message = str(caught.value)
    assert "block lists ['baseline'] and allow lists ['nsrl']" in message, message
    assert f"kind = {kind!r}" in message and "recompile" in message, message
    assert "leave kind out" in message, message


def test_signals_keep_only_their_indexes(mixed: Path) -> None:
    loaded = _load(ListSpec("x", str(mixed), signals=("sha1",)))
    assert {x.name: set(x.matchers) for x in loaded.snapshot.indexes} == {
        "baseline": {"sha1"}, "nsrl": {"sha1"}}
    assert loaded.snapshot.entry_counts() == {("baseline", "sha1"): 2, ("nsrl", "sha1"): 1}
    assert _hits(loaded, "md5", SHARED) == []
    assert {h.list for h in _hits(loaded, "sha1", SHARED)} == {"baseline", "nsrl"}
    # Entries stay: a hit still names its entry and category.
    [hit] = _hits(loaded, "sha1", LISTED)
    assert (hit.entry_id, hit.category) == ("B1", "cat1")


def test_signals_the_snapshot_has_none_of_are_refused(mixed: Path) -> None:
    with pytest.raises(ListError, match=r"none of the signals \['pdq'\] \(it has md5, sha1\)"):
        _load(ListSpec("x", str(mixed), signals=("pdq",)))
    # One that some list has is enough; the others are simply not there.
    loaded = _load(ListSpec("x", str(mixed), signals=("pdq", "md5")))
    assert {s for x in loaded.snapshot.indexes for s in x.matchers} == {"md5"}


def test_categories_are_mapped(mixed: Path) -> None:
    loaded = _load(ListSpec("x", str(mixed), categories=(("cat0", "A1"), ("nsrl", "benign"))))
    assert {(h.list, h.entry_id, h.category) for h in _hits(loaded, "md5", SHARED)} == {
        ("baseline", "B0", "A1"), ("nsrl", "row-2", "benign")}
    [unmapped] = _hits(loaded, "md5", LISTED)
    assert unmapped.category == "cat1"
    assert list(loaded.snapshot.indexes[0].hash_list.categories) == ["A1", "cat1"]


@pytest.mark.parametrize(
    ("change", "message"),
    [({"format": "csv"}, "is a compiled snapshot, not a csv list"),
     ({"format": "nsrl"}, "is a compiled snapshot, not a nsrl list"),
     ({"deltas": ("DELTA",)}, "deltas cannot be applied to a compiled snapshot")],
)
def test_a_format_or_deltas_are_refused(
    mixed: Path, sources: tuple[Path, Path], change: dict[str, object], message: str
) -> None:
    if "deltas" in change:
        change = {"deltas": (str(sources[0]),)}
    spec = ListSpec("x", str(mixed), **change)  # type: ignore[arg-type]
    with pytest.raises(ListError, match=message):
        _load(spec)
    assert _load(ListSpec("x", str(mixed), format="auto")).snapshot.indexes


def test_the_catalog_reuses_a_snapshot_and_reapplies_a_changed_spec(
    mixed: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    opened: list[str] = []
    real = loading._open_compiled

    def counting(path: str) -> list[ListIndex]:
        opened.append(path)
        return real(path)

    monkeypatch.setattr(loading, "_open_compiled", counting)
    catalog = Catalog()
    plain = _config(ListSpec("x", str(mixed)))
    first = catalog.load(plain).snapshot.indexes
    assert catalog.rebuilt == ["baseline", "nsrl"] and len(opened) == 1
    again = catalog.load(plain).snapshot.indexes
    assert [a is b for a, b in zip(first, again, strict=True)] == [True, True]
    assert catalog.rebuilt == [] and len(opened) == 1
    # The spec changed, the file did not: applied again, without reopening.
    narrowed = catalog.load(_config(ListSpec("x", str(mixed), signals=("md5",)))).snapshot
    assert {s for x in narrowed.indexes for s in x.matchers} == {"md5"}
    assert catalog.rebuilt == [] and len(opened) == 1
    # A refused spec changes nothing: the last load's state stays.
    with pytest.raises(ListError):
        catalog.load(_config(ListSpec("x", str(mixed), kind="block")))
    back = catalog.load(plain).snapshot.indexes
    assert {s for x in back for s in x.matchers} == {"md5", "sha1"} and len(opened) == 1
    # The file changed: opened again.
    os.utime(mixed, ns=(1, 1))
    catalog.load(plain)
    assert len(opened) == 2 and catalog.rebuilt == ["baseline", "nsrl"]


def test_an_empty_compiled_list_is_warned_about(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    empty = tmp_path / "NSRLFile.txt"
    empty.write_text(NSRL_HEADER + "\r\n")
    snap = _compile(tmp_path / "empty.snap", ListSpec("nsrl", str(empty)))
    caplog.clear()  # the compile's own warning, about the list file
    with caplog.at_level(logging.WARNING, logger="appliance.lists"):
        loaded = _load(ListSpec("x", str(snap)))
    assert [(x.name, x.kind, x.hash_list.size) for x in loaded.snapshot.indexes] == [
        ("nsrl", "allow", 0)]
    assert [r.getMessage() for r in caplog.records] == [
        f"allow list 'nsrl' ({snap}) loaded with no entries"]


def test_a_server_serving_the_readme_snapshot_suppresses_nsrl_files(mixed: Path) -> None:
    srv = ServerThread(with_lists(ListSpec("lists", str(mixed))))
    srv.wait_ready()
    try:
        with grpc.insecure_channel(srv.address) as channel:
            stub = pb_grpc.ApplianceStub(channel)
            shared = stub.Match(pb.FileRequest(content=SHARED, signals=["md5"])).result
            listed = stub.Match(pb.FileRequest(content=LISTED, signals=["md5"])).result
        assert not shared.matched and listed.matched
        assert {(m.list, m.suppressed) for m in shared.matches} == {("baseline", True),
                                                                    ("nsrl", False)}
    finally:
        srv.stop()

