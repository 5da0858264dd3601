"""Safe list defaults: NSRL formats are allow lists unless said otherwise; empty lists are said."""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path

import grpc
import pytest

from appliance import cli
from appliance.config import Config, ListSpec
from appliance.index.compiled import open_compiled
from appliance.index.snapshot import Snapshot
from appliance.lists import FORMATS, default_kind, read_list
from appliance.loading import Catalog, Loaded
from appliance.v1 import appliance_pb2 as pb
from appliance.v1 import appliance_pb2_grpc as pb_grpc
from tests.helpers import ServerThread, make_config, with_lists
from tests.lists.format_fixtures import nsrl_sqlite

# Two files: an operating system file that NSRL knows and a block list lists
# too (a bad entry, or a common icon), and one that only the block list has.
SHARED, LISTED = b"a file NSRL knows\n", b"a file only the block list has\n"
NSRL_HEADER = (
    '"SHA-1","MD5","CRC32","FileName","FileSize","ProductCode","OpSystemCode","SpecialCode"'
)


def nsrl_text(*blobs: bytes) -> str:
    rows = [f'"{hashlib.sha1(b).hexdigest().upper()}","{hashlib.md5(b).hexdigest().upper()}",'
            f'"00000000","f{i}.dll",{len(b)},1,"358",""' for i, b in enumerate(blobs)]
    return "\r\n".join([NSRL_HEADER, *rows]) + "\r\n"


@pytest.fixture
def lists(tmp_path: Path) -> tuple[Path, Path]:
    block = tmp_path / "baseline.csv"
    block.write_text("id,md5\n" + "".join(
        f"B{i},{hashlib.md5(b).hexdigest()}\n" for i, b in enumerate((SHARED, LISTED))))
    nsrl = tmp_path / "NSRLFile.txt"
    nsrl.write_text(nsrl_text(SHARED))
    return block, nsrl


def _config(*specs: ListSpec) -> Config:
    return Config(lists=specs)


def _kinds(loaded: Loaded) -> dict[str, str]:
    return {x.name: x.kind for x in loaded.snapshot.indexes}


def test_only_the_nsrl_formats_default_to_allow() -> None:
    assert {f: default_kind(f) for f in FORMATS} == {
        f: "allow" if f in ("nsrl", "nsrl-sqlite") else "block" for f in FORMATS
    }


def test_the_kind_follows_the_format_named_or_detected(tmp_path: Path) -> None:
    nsrl = tmp_path / "hashes.txt"  # no NSRL name: detected from the header
    nsrl.write_text(nsrl_text(SHARED))
    rds = tmp_path / "rds.db"
    nsrl_sqlite(rds, [(hashlib.sha256(SHARED).hexdigest(), hashlib.sha1(SHARED).hexdigest(),
                       hashlib.md5(SHARED).hexdigest(), "", "f", 1, 1)])
    assert read_list(str(nsrl), "n")[1] == "nsrl"
    loaded = Catalog().load(_config(
        ListSpec("detected", str(nsrl)),
        ListSpec("named", str(nsrl), format="nsrl"),
        ListSpec("sqlite", str(rds)),
        # The same bytes read as CSV are a CSV list: block, as every other format.
        ListSpec("as-csv", str(nsrl), format="csv"),
        ListSpec("said", str(nsrl), kind="block"),
        ListSpec("said-csv", str(nsrl), format="csv", kind="allow"),
    ))
    assert _kinds(loaded) == {"detected": "allow", "named": "allow", "sqlite": "allow",
                              "as-csv": "block", "said": "block", "said-csv": "allow"}


def test_a_reload_keeps_the_resolved_kind(tmp_path: Path, lists: tuple[Path, Path]) -> None:
    _, nsrl = lists
    catalog = Catalog()
    config = _config(ListSpec("nsrl", str(nsrl)))
    first = catalog.load(config).snapshot.indexes[0]
    nsrl.touch()  # touched, not changed: the index is kept, kind and all
    again = catalog.load(config).snapshot.indexes[0]
    assert again is first and again.kind == "allow"
    nsrl.write_text(nsrl_text(SHARED, LISTED))
    changed = catalog.load(config).snapshot.indexes[0]
    assert changed is not first and changed.kind == "allow" and changed.hash_list.size == 2


def _match(srv: ServerThread, content: bytes) -> pb.FileResult:
    with grpc.insecure_channel(srv.address) as channel:
        stub = pb_grpc.ApplianceStub(channel)
        return stub.Match(pb.FileRequest(content=content, signals=["md5", "sha1"])).result


def _hits(result: pb.FileResult) -> set[tuple[str, str, bool]]:
    return {(m.list, m.kind, m.suppressed) for m in result.matches}


def test_a_server_treats_nsrl_without_a_kind_as_an_allow_list(
    lists: tuple[Path, Path]
) -> None:
    block, nsrl = lists
    srv = ServerThread(with_lists(ListSpec("baseline", str(block)), ListSpec("nsrl", str(nsrl))))
    srv.wait_ready()
    try:
        shared = _match(srv, SHARED)
        assert not shared.matched
        assert _hits(shared) == {("baseline", "block", True), ("nsrl", "allow", False)}
        listed = _match(srv, LISTED)
        assert listed.matched and _hits(listed) == {("baseline", "block", False)}
        with grpc.insecure_channel(srv.address) as channel:
            status = pb_grpc.ApplianceStub(channel).GetStatus(pb.StatusRequest())
        assert {s.name: s.kind for s in status.lists} == {"baseline": "block", "nsrl": "allow"}
        metrics = srv.handle.app.metrics
        assert metrics.suppressed.labels("baseline", "md5")._value.get() == 1
    finally:
        srv.stop()


def test_an_explicit_block_kind_for_nsrl_still_reports_its_files(
    lists: tuple[Path, Path]
) -> None:
    block, nsrl = lists
    srv = ServerThread(with_lists(ListSpec("baseline", str(block)),
                                  ListSpec("nsrl", str(nsrl), kind="block")))
    srv.wait_ready()
    try:
        shared = _match(srv, SHARED)
        assert shared.matched
        assert _hits(shared) == {("baseline", "block", False), ("nsrl", "block", False)}
    finally:
        srv.stop()


def _cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = cli.main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_the_readme_compile_example_gives_an_allow_list(
    tmp_path: Path, lists: tuple[Path, Path], capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in [n for n in os.environ if n.startswith("APPLIANCE_")]:
        monkeypatch.delenv(name)
    block, nsrl = lists
    out = tmp_path / "lists.snap"
    code, _, err = _cli(capsys, "lists", "compile", f"baseline={block}", f"nsrl={nsrl}",
                        "-o", str(out))
    assert code == 0, err
    assert "[allow]" in err and "baseline@" in err
    indexes, _ = open_compiled(out)
    assert [(x.name, x.kind) for x in indexes] == [("baseline", "block"), ("nsrl", "allow")]
    code, text, err = _cli(capsys, "lists", "inspect", "--verify", str(out))
    assert code == 0, err
    info = json.loads(text)
    assert [(x["name"], x["kind"]) for x in info["lists"]] == [("baseline", "block"),
                                                               ("nsrl", "allow")]
    # The README's spelling says it; a kind said on the command line wins.
    code, _, err = _cli(capsys, "lists", "compile", f"baseline={block}",
                        f"nsrl:allow={nsrl}", "-o", str(out))
    assert code == 0, err
    assert [x.kind for x in open_compiled(out)[0]] == ["block", "allow"]
    code, _, err = _cli(capsys, "lists", "compile", f"nsrl:block={nsrl}", "-o", str(out))
    assert code == 0, err
    assert [x.kind for x in open_compiled(out)[0]] == ["block"]
    # The format is kept: NSRL bytes read as CSV have no "nsrl" category.
    code, _, err = _cli(capsys, "lists", "compile", f"n:allow:csv={nsrl}", "-o", str(out))
    assert code == 0, err
    [index] = open_compiled(out)[0]
    assert index.kind == "allow" and list(index.hash_list.categories) == [""]
    code, _, err = _cli(capsys, "lists", "compile", f"n:allow:xml={nsrl}", "-o", str(out))
    assert code == 2 and "NAME:KIND:FORMAT=PATH" in err


# --- empty lists ---


def test_an_empty_list_loads_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    empty_block = tmp_path / "baseline.csv"
    empty_block.write_text("id,md5\n")
    empty_allow = tmp_path / "NSRLFile.txt"
    empty_allow.write_text(NSRL_HEADER + "\r\n")
    full = tmp_path / "full.csv"
    full.write_text(f"id,md5\nF,{hashlib.md5(LISTED).hexdigest()}\n")
    config = _config(ListSpec("baseline", str(empty_block)), ListSpec("nsrl", str(empty_allow)),
                     ListSpec("full", str(full)))
    catalog = Catalog()
    with caplog.at_level(logging.WARNING, logger="appliance.lists"):
        loaded = catalog.load(config)
    assert _kinds(loaded) == {"baseline": "block", "nsrl": "allow", "full": "block"}
    warned = {r.getMessage() for r in caplog.records if r.levelno == logging.WARNING}
    assert warned == {
        f"block list 'baseline' ({empty_block}) loaded with no entries: "
        "a wrong file or a wrong column?",
        f"allow list 'nsrl' ({empty_allow}) loaded with no entries",
    }


def _empty(srv: ServerThread, name: str) -> float | None:
    registry = srv.handle.app.metrics.registry
    value: float | None = registry.get_sample_value("appliance_list_empty", {"list": name})
    return value


def test_the_empty_list_metric_follows_reloads(tmp_path: Path) -> None:
    listing = tmp_path / "baseline.csv"
    listing.write_text("id,md5\n")
    full = tmp_path / "full.csv"
    full.write_text(f"id,md5\nF,{hashlib.md5(LISTED).hexdigest()}\n")
    srv = ServerThread(with_lists(ListSpec("baseline", str(listing)),
                                  ListSpec("full", str(full))))
    srv.wait_ready()
    try:
        assert (_empty(srv, "baseline"), _empty(srv, "full")) == (1.0, 0.0)
        listing.write_text(f"id,md5\nB,{hashlib.md5(SHARED).hexdigest()}\n")
        with grpc.insecure_channel(srv.address) as channel:
            assert pb_grpc.ApplianceStub(channel).ReloadLists(pb.ReloadRequest()).ok
        assert (_empty(srv, "baseline"), _empty(srv, "full")) == (0.0, 0.0)
    finally:
        srv.stop()


def test_the_empty_list_series_of_a_list_gone_is_cleared(tmp_path: Path) -> None:
    empty = tmp_path / "gone.csv"
    empty.write_text("id,md5\n")
    full = tmp_path / "full.csv"
    full.write_text(f"id,md5\nF,{hashlib.md5(LISTED).hexdigest()}\n")
    both = Catalog().load(_config(ListSpec("gone", str(empty)), ListSpec("full", str(full))))
    after = Loaded(Snapshot([both.snapshot.indexes[1]], make_config().matching),
                   {"full": str(full)})
    served = iter([both, after])
    srv = ServerThread(with_lists(ListSpec("gone", str(empty)), ListSpec("full", str(full))),
                       loader=lambda config: next(served))
    srv.wait_ready()
    try:
        assert (_empty(srv, "gone"), _empty(srv, "full")) == (1.0, 0.0)
        with grpc.insecure_channel(srv.address) as channel:
            assert pb_grpc.ApplianceStub(channel).ReloadLists(pb.ReloadRequest()).ok
        assert (_empty(srv, "gone"), _empty(srv, "full")) == (None, 0.0)
    finally:
        srv.stop()
