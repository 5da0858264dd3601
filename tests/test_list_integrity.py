"""A list file is loaded whole or not at all.

Files rewritten in place, renamed over or truncated while they are read,
files still open for writing, ``.sha256`` manifests, corrupt SQLite and
compiled snapshots: each is a ListError naming the list and the reason, never
a partial list and never another exception. Mid-read changes are made from
the reading thread itself (``during_read``), so no test waits on timing.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import os
import sqlite3
import struct
from dataclasses import replace
from pathlib import Path

import pytest

from appliance.config import Config, ListSpec
from appliance.errors import ListError
from appliance.index import snapfile
from appliance.index.compiled import write_compiled
from appliance.lists import FileInFlux, integrity, load_list
from appliance.loading import Catalog, fingerprint, writers
from tests.helpers import make_config
from tests.lists import format_fixtures as fx
from tests.lists.integrity_helpers import (  # noqa: F401 - fixtures
    break_lease,
    during_read,
    leases,
    md5_csv,
    no_leases,
    writer_process,
)

ROWS = 80_005  # the size of the list in the incident: many read chunks


def _config(*specs: ListSpec) -> Config:
    return replace(make_config(), lists=specs)


@pytest.fixture
def listing(tmp_path: Path) -> Path:
    path = tmp_path / "l.csv"
    path.write_bytes(md5_csv(ROWS))
    return path


def _aside(path: Path, data: bytes) -> None:
    """Publish ``data`` at ``path`` the safe way: written aside, renamed in."""
    tmp = path.with_name(path.name + ".new")
    tmp.write_bytes(data)
    os.replace(tmp, path)


# --- a file that changes while it is read ---


@pytest.mark.usefixtures("no_leases")
def test_rewritten_in_place_during_the_read_is_refused(listing: Path, monkeypatch) -> None:
    # The incident: an operator's `cp new l.csv` truncates the file and writes
    # the new one while the old one is half read. Without the checks the read
    # just ends early: a valid list of the rows read so far.
    new = md5_csv(ROWS, first=10**6)

    def rewrite() -> None:
        with listing.open("wb") as f:  # O_TRUNC, as cp does
            f.write(new[: len(new) // 2])

    ran = during_read(monkeypatch, rewrite)
    with pytest.raises(FileInFlux, match="changed while it was read") as caught:
        load_list(str(listing), "l")
    assert ran
    assert "'l'" in str(caught.value) and "renaming it into place" in str(caught.value)


@pytest.mark.usefixtures("no_leases")
def test_same_size_rewrite_in_place_is_refused(listing: Path, monkeypatch) -> None:
    # Same size, so only the modification time (and ctime) can tell.
    data = listing.read_bytes()

    def overwrite() -> None:
        with listing.open("r+b") as f:
            f.seek(len(data) - 40)
            f.write(b"f" * 32)

    during_read(monkeypatch, overwrite)
    with pytest.raises(FileInFlux, match="modified during the read"):
        load_list(str(listing), "l")


@pytest.mark.usefixtures("no_leases")
def test_appended_to_during_the_read_is_refused(listing: Path, monkeypatch) -> None:
    def append() -> None:
        with listing.open("ab") as f:
            f.write(b"X1,%032x\n" % 7)

    during_read(monkeypatch, append)
    with pytest.raises(FileInFlux, match="size went from"):
        load_list(str(listing), "l")


@pytest.mark.usefixtures("no_leases")
def test_truncated_during_the_read_is_refused(listing: Path, monkeypatch) -> None:
    during_read(monkeypatch, lambda: os.truncate(listing, 100_000))
    with pytest.raises(FileInFlux, match="size went from"):
        load_list(str(listing), "l")


@pytest.mark.parametrize("lease", [True, False], ids=["lease", "no-lease"])
def test_renamed_over_during_the_read_is_refused(
    listing: Path, monkeypatch, lease: bool, tmp_path: Path
) -> None:
    # Publishing by rename is right, but the read that was under way read the
    # old file while the path now names the new one: that read is not the list.
    if not lease:
        monkeypatch.setattr(integrity, "LEASES", False)
    during_read(monkeypatch, lambda: _aside(listing, md5_csv(10)))
    with pytest.raises(FileInFlux, match="replaced"):
        load_list(str(listing), "l")
    assert len(load_list(str(listing), "l").entry_ids) == 10  # the next read is fine


@pytest.mark.usefixtures("leases")
def test_opened_for_writing_during_the_read_breaks_the_lease(listing: Path, monkeypatch) -> None:
    during_read(monkeypatch, lambda: break_lease(listing))
    with pytest.raises(FileInFlux, match="opened for writing during the read"):
        load_list(str(listing), "l")
    # The lease is given back: a writer opens the file at once now.
    os.close(os.open(listing, os.O_WRONLY | os.O_NONBLOCK))


@pytest.mark.usefixtures("leases")
def test_still_open_for_writing_is_refused(listing: Path) -> None:
    with listing.open("ab"), pytest.raises(FileInFlux, match="still open for writing"):
        load_list(str(listing), "l")  # held by this process, on another fd
    with writer_process(listing):  # another process
        with pytest.raises(FileInFlux, match="still open for writing by another process"):
            load_list(str(listing), "l")
        assert writers(_config(ListSpec("l", str(listing)))) is True
    assert writers(_config(ListSpec("l", str(listing)))) is False
    assert len(load_list(str(listing), "l").entry_ids) == ROWS


@pytest.mark.usefixtures("leases")
def test_a_file_closed_a_moment_ago_loads_at_once(tmp_path: Path) -> None:
    path = tmp_path / "fresh.csv"
    with path.open("wb") as f:
        f.write(md5_csv(3))
    assert len(load_list(str(path), "fresh").entry_ids) == 3


def test_leases_refused_fall_back_to_the_checks(listing: Path, monkeypatch) -> None:
    # Not the owner without CAP_LEASE (EACCES), or no leases on the filesystem
    # (EINVAL): the read goes on, checked before and after only.
    real = fcntl.fcntl

    def refusing(fd: int, cmd: int, arg: int = 0) -> object:
        if cmd == fcntl.F_SETLEASE and arg == fcntl.F_RDLCK:
            raise PermissionError(errno.EACCES, "Permission denied")
        return real(fd, cmd, arg)

    monkeypatch.setattr(fcntl, "fcntl", refusing)
    with integrity.Reading(str(listing), "list") as reading:
        assert not reading.leased
    assert len(load_list(str(listing), "l").entry_ids) == ROWS
    during_read(monkeypatch, lambda: os.truncate(listing, 1000))
    with pytest.raises(FileInFlux):
        load_list(str(listing), "l")


def test_a_fifo_is_refused_without_hanging(tmp_path: Path) -> None:
    fifo = tmp_path / "l.csv"
    os.mkfifo(fifo)
    with pytest.raises(ListError, match="not a regular file"):
        load_list(str(fifo), "l")
    with pytest.raises(ListError, match="not a regular file"):
        Catalog().load(_config(ListSpec("l", str(fifo))))


@pytest.mark.usefixtures("no_leases")
def test_a_delta_changed_during_its_read_is_refused(tmp_path: Path, monkeypatch) -> None:
    base, delta = tmp_path / "base.csv", tmp_path / "delta.csv"
    base.write_bytes(md5_csv(3))
    delta.write_bytes(md5_csv(ROWS, first=100))
    during_read(monkeypatch, lambda: os.truncate(delta, 5000), of=delta)
    with pytest.raises(FileInFlux, match=r"delta\.csv"):
        load_list(str(base), "l", deltas=[str(delta)])


@pytest.mark.usefixtures("no_leases")
def test_sqlite_renamed_over_during_the_parse_is_refused(tmp_path: Path, monkeypatch) -> None:
    # SQLite reads the database by path after the digest's read: a rename in
    # between would have it parse another file than the one hashed.
    path = tmp_path / "nsrl.db"
    fx.nsrl_sqlite(path, [(f"{i:064x}", f"{i:040x}", f"{i:032x}", "", "", 1, 1)
                          for i in range(5000)])
    other = tmp_path / "other.db"
    fx.nsrl_sqlite(other)
    during_read(monkeypatch, lambda: os.replace(other, path))
    with pytest.raises(FileInFlux, match="replaced"):
        load_list(str(path), "nsrl")


# --- .sha256 manifests ---


def _sha256sum(path: Path, data: bytes | None = None, name: str = "") -> Path:
    digest = hashlib.sha256(path.read_bytes() if data is None else data).hexdigest()
    sums = path.with_name(path.name + ".sha256")
    sums.write_text(f"{digest}  {name or path.name}\n")
    return sums


def test_a_matching_manifest_loads(listing: Path) -> None:
    _sha256sum(listing, name="*l.csv.new")  # binary-mode name; names are not compared
    assert len(load_list(str(listing), "l").entry_ids) == ROWS


def test_a_mismatching_manifest_is_refused(listing: Path) -> None:
    # The list is half written (or not the one named) when the read begins.
    _sha256sum(listing, data=md5_csv(ROWS + 1))
    with pytest.raises(ListError, match=r"does not match its \.sha256 manifest"):
        load_list(str(listing), "l")


@pytest.mark.parametrize("text", ["", "abc  l.csv\n", "0" * 65 + "\n", ("a" * 64 + "\n") * 2])
def test_a_malformed_manifest_is_refused(listing: Path, text: str) -> None:
    listing.with_name("l.csv.sha256").write_text(text)
    with pytest.raises(ListError, match="not a sha256sum line"):
        load_list(str(listing), "l")


def test_each_delta_is_checked_against_its_own_manifest(tmp_path: Path) -> None:
    base, delta = tmp_path / "base.csv", tmp_path / "d.csv"
    base.write_bytes(md5_csv(3))
    delta.write_bytes(md5_csv(2, first=10))
    _sha256sum(base)
    _sha256sum(delta, data=b"something else")
    with pytest.raises(ListError, match=r"d\.csv does not match"):
        load_list(str(base), "l", deltas=[str(delta)])


def test_a_new_manifest_changes_the_fingerprint_and_is_checked(listing: Path) -> None:
    spec = ListSpec("l", str(listing))
    catalog = Catalog()
    catalog.load(_config(spec))
    before = fingerprint(spec)
    _sha256sum(listing, data=b"not this list")
    assert fingerprint(spec) != before  # so the watcher sees it
    with pytest.raises(ListError, match="does not match"):
        catalog.load(_config(spec))  # and the cached list is not reused unchecked


def test_a_same_size_list_with_its_mtime_kept_changes_the_fingerprint(listing: Path) -> None:
    # cp -p / rsync -a / tar keep the mtime: the inode and ctime still tell.
    spec = ListSpec("l", str(listing))
    before = fingerprint(spec)
    st = listing.stat()
    data = listing.read_bytes()
    _aside(listing, data[:-33] + b"f" * 32 + b"\n")
    os.utime(listing, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert listing.stat().st_size == st.st_size
    assert fingerprint(spec) != before


# --- corrupt SQLite: a ListError naming the list and the reason ---


def _corruptions(tmp_path: Path) -> dict[str, bytes]:
    good = fx.nsrl_sqlite(tmp_path / "good.db", [
        (f"{i:064x}", f"{i:040x}", f"{i:032x}", "", "", 1, 1) for i in range(3000)
    ])
    connection = sqlite3.connect(tmp_path / "empty.db")
    connection.execute("CREATE TABLE other (x)")
    connection.commit()
    connection.close()
    return {
        "truncated": good[: len(good) // 2],
        "magic only": b"SQLite format 3\x00" + b"\x07" * 200,
        "pages overwritten": good[:4096] + b"\xff" * (len(good) - 4096),
        "header broken": good[:16] + b"\x00" * 84 + good[100:],
        "no FILE table": (tmp_path / "empty.db").read_bytes(),
    }


@pytest.mark.parametrize(
    "kind", ["truncated", "magic only", "pages overwritten", "header broken", "no FILE table"]
)
def test_a_corrupt_sqlite_list_is_a_list_error_at_first_load(tmp_path: Path, kind: str) -> None:
    path = tmp_path / "nsrl.db"
    path.write_bytes(_corruptions(tmp_path)[kind])
    spec = ListSpec("nsrl", str(path), kind="allow")
    with pytest.raises(ListError) as caught:
        Catalog().load(_config(spec))
    message = str(caught.value)
    assert type(caught.value) is ListError and "'nsrl'" in message
    assert any(w in message for w in ("malformed", "not a database", "no FILE table")), message


def test_a_virtual_file_table_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "v.db"
    connection = sqlite3.connect(path)
    try:
        connection.execute("CREATE VIRTUAL TABLE FILE USING fts5(md5)")
    except sqlite3.OperationalError:
        pytest.skip("this SQLite has no fts5")
    connection.execute("INSERT INTO FILE VALUES (?)", (fx.MD5[0].hex(),))
    connection.commit()
    connection.close()
    with pytest.raises(ListError, match="virtual table"):
        load_list(str(path), "v")


# --- compiled snapshots ---


@pytest.fixture
def compiled(tmp_path: Path) -> Path:
    source = tmp_path / "src.csv"
    source.write_bytes(md5_csv(50))
    loaded = Catalog().load(_config(ListSpec("src", str(source))))
    out = tmp_path / "lists.snap"
    write_compiled(out, loaded.snapshot.indexes, loaded.sources)
    return out


def test_a_snapshot_renamed_over_while_it_is_opened_is_refused(compiled: Path, monkeypatch,
                                                              tmp_path: Path) -> None:
    other = tmp_path / "other.snap"
    write_compiled(other, Catalog().load(_config(ListSpec(
        "src", str(tmp_path / "src.csv")))).snapshot.indexes, {})
    verify = snapfile.verify

    def verify_then_replace(path: str) -> None:
        verify(path)
        os.replace(other, compiled)  # after the check, before the mapping

    monkeypatch.setattr(snapfile, "verify", verify_then_replace)
    with pytest.raises(FileInFlux, match=r"snapshot .*replaced"):
        Catalog().load(_config(ListSpec("x", str(compiled))))


def test_a_snapshot_and_its_manifest(compiled: Path) -> None:
    config = _config(ListSpec("x", str(compiled)))
    _sha256sum(compiled)
    assert Catalog().load(config).snapshot.lists[0].name == "src"
    _sha256sum(compiled, data=b"other")
    with pytest.raises(ListError, match=r"does not match its \.sha256 manifest"):
        Catalog().load(config)


def test_a_snapshot_with_a_malformed_manifest_is_a_list_error(compiled: Path) -> None:
    # The manifest's digest is a checksum, not a signature: a crafted file can
    # carry a valid digest over JSON of the wrong shape.
    data = bytearray(compiled.read_bytes())
    header = struct.Struct("<8sIIQQQ32s")
    magic, version, _, offset, _, _, _ = header.unpack_from(data)
    manifest = json.dumps({"meta": {}, "arrays": {"a": {"offset": 0}}}).encode()
    data[offset:] = manifest
    header.pack_into(data, 0, magic, version, 0, offset, len(manifest), len(data),
                     hashlib.sha256(manifest).digest())
    compiled.write_bytes(bytes(data))
    with pytest.raises(ListError, match="malformed"):
        Catalog().load(_config(ListSpec("x", str(compiled))))
