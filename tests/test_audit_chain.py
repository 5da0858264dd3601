"""The audit log's hash chain: links, tampering, torn lines, restarts, rotation,
the head file, ``appliance audit verify``, and a real server killed under load."""

from __future__ import annotations

import errno
import hashlib
import io
import json
import os
import signal
import stat
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import grpc
import pytest

from appliance import audit_chain, demo
from appliance.audit import GENESIS, AuditHeadInvalid, AuditLog
from appliance.audit_chain import run_verify, verify
from appliance.results import Hit
from appliance.v1 import appliance_pb2 as pb
from appliance.v1 import appliance_pb2_grpc as pb_grpc
from tests.helpers import start_server_process

WAIT = 30.0  # a bound on waits for threads and processes, never a timing assumption
NOT_FOLLOWING = ("does not follow the record before it (that record was changed, "
                 "or records between were removed)")


def hits(n: int, entry: str = "e") -> list[Hit]:
    return [Hit(signal="md5", list="demo", list_version="v1", entry_id=f"{entry}{i}",
                category="c", distance=0, query="00" * 16) for i in range(n)]


def sha(line: bytes) -> str:
    return hashlib.sha256(line).hexdigest()


def write_log(path: Path, records: int, request: str = "r") -> None:
    log = AuditLog(str(path))
    log.record(request, "item", hits(records), identity="uploads")
    log.close()


def lines(path: Path) -> list[bytes]:
    return path.read_bytes().split(b"\n")[:-1]


def set_lines(path: Path, new: list[bytes]) -> None:
    path.write_bytes(b"".join(line + b"\n" for line in new))


def check(*paths: Path) -> tuple[int, str, str]:
    """``appliance audit verify`` in-process: (exit status, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    code = run_verify([str(p) for p in paths], out, err)
    return code, out.getvalue(), err.getvalue()


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("APPLIANCE_")}
    return subprocess.run([sys.executable, "-m", "appliance", "audit", *args],
                          capture_output=True, text=True, env=env, timeout=WAIT, check=False)


# -- the chain --------------------------------------------------------------

def test_every_record_links_to_the_one_before(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    log = AuditLog(str(path))
    log.record("r1", "a", hits(2), identity="uploads")
    log.submit_many("r2", [("b", hits(1)), ("c", hits(2))]).result(WAIT)
    head = log.head
    log.close()
    raw = lines(path)
    records = [json.loads(line) for line in raw]
    assert len(records) == 5
    assert records[0]["prev"] == GENESIS
    assert [r["prev"] for r in records[1:]] == [sha(line) for line in raw[:-1]]
    assert head == sha(raw[-1])
    assert [r["identity"] for r in records] == ["uploads"] * 2 + [""] * 3
    assert all("torn" not in r for r in records)
    assert check(path) == (
        0, f"5 records in 1 file, chain intact from {GENESIS}, head {head}\n", "")


@pytest.mark.parametrize(
    ("change", "bad_line", "what"),
    [
        ("edit", 4, NOT_FOLLOWING),
        ("remove", 3, NOT_FOLLOWING),
        ("swap", 3, NOT_FOLLOWING),
        ("forge", 4, NOT_FOLLOWING),  # a forged record linked in: the next one breaks
        ("forge-unlinked", 3, NOT_FOLLOWING),
        ("garbage", 3, "not JSON"),
        ("drop-field", 3, "field identity missing"),
    ],
)
def test_verify_names_the_first_bad_record(
    tmp_path: Path, change: str, bad_line: int, what: str
) -> None:
    path = tmp_path / "audit.jsonl"
    write_log(path, 6)
    raw = lines(path)
    third = json.loads(raw[2])
    if change == "edit":  # the third record says another entry matched
        raw[2] = raw[2].replace(b'"entry_id":"e2"', b'"entry_id":"e9"')
    elif change == "remove":
        del raw[2]
    elif change == "swap":
        raw[2], raw[3] = raw[3], raw[2]
    elif change in ("forge", "forge-unlinked"):
        prev = sha(raw[1]) if change == "forge" else GENESIS
        forged = json.dumps({**third, "entry_id": "forged", "prev": prev},
                            separators=(",", ":")).encode()
        raw.insert(2, forged)
    elif change == "garbage":
        raw.insert(2, b"not a record")
    else:
        del third["identity"]
        raw[2] = json.dumps(third, separators=(",", ":")).encode()
    set_lines(path, raw)
    code, out, _ = check(path)
    assert (code, out) == (1, f"{path}:{bad_line}: {what}\n")


def test_verify_streams_and_stops_at_the_first_bad_record(tmp_path: Path) -> None:
    """Through a pipe that never ends: verify answers at the bad line, so it
    reads line by line and never needs the whole file."""
    source = tmp_path / "audit.jsonl"
    write_log(source, 3)
    raw = lines(source)
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    release = threading.Event()

    def feed() -> None:
        with open(fifo, "wb") as f:
            f.write(raw[0] + b"\n" + raw[2] + b"\n")  # the second record removed
            f.flush()
            release.wait(WAIT)

    feeder = threading.Thread(target=feed)
    feeder.start()
    verdicts: list[audit_chain.Verdict] = []
    reader = threading.Thread(target=lambda: verdicts.append(verify([str(fifo)])))
    reader.start()
    reader.join(WAIT)
    release.set()
    feeder.join(WAIT)
    assert verdicts and verdicts[0].error == f"{fifo}:2: {NOT_FOLLOWING}"


def test_10000_records_verify(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    write_log(path, 10_000)
    verdict = verify([str(path)])
    assert (verdict.records, verdict.error, verdict.start) == (10_000, None, GENESIS)
    assert verdict.head == sha(lines(path)[-1])


def test_verify_module_imports_nothing_heavy() -> None:
    code = ("import sys, appliance.audit_chain, appliance.cli; "
            "sys.exit(sorted({'numpy', 'numba', 'grpc'} & set(sys.modules)) or None)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=WAIT, check=False)
    assert proc.returncode == 0, proc.stderr


# -- torn lines -------------------------------------------------------------

def test_a_torn_last_line_after_a_crash_is_a_warning(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    write_log(path, 3)
    whole = lines(path)[0]
    with path.open("ab") as f:
        f.write(whole[: len(whole) // 2])  # the process died in the middle of a write
    code, out, err = check(path)
    assert code == 0 and out.startswith("3 records in 1 file, chain intact")
    assert f"{path}:4: torn last line" in err


@pytest.mark.parametrize("where", ["middle", "end of an older file", "ends with a newline"])
def test_a_torn_line_anywhere_else_is_a_bad_record(tmp_path: Path, where: str) -> None:
    old, new = tmp_path / "audit.jsonl.1", tmp_path / "audit.jsonl"
    write_log(old, 4)
    raw = lines(old)
    torn = raw[3][:40]
    if where == "middle":
        set_lines(old, [*raw[:2], torn, *raw[2:]])
        assert check(old)[:2] == (1, f"{old}:3: not JSON\n")
    elif where == "end of an older file":
        old.write_bytes(old.read_bytes() + torn)
        new.write_bytes(b"")
        assert check(old, new)[:2] == (1, f"{old}:5: not JSON\n")
    else:
        set_lines(old, [*raw, torn])
        assert check(old)[:2] == (1, f"{old}:5: not JSON\n")


def test_restart_after_a_crash_acknowledges_the_torn_line(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    write_log(path, 3)
    raw = lines(path)
    torn = raw[2][:50]
    path.write_bytes(path.read_bytes() + torn)
    write_log(path, 2, request="after")  # the restarted server goes on
    new = lines(path)
    assert new[:4] == [*raw, torn]  # the torn line is left as it is, on its own line
    first = json.loads(new[4])
    assert first["prev"] == sha(raw[2]) and first["torn"] == sha(torn)
    code, out, err = check(path)
    assert code == 0 and out.startswith("5 records in 1 file")
    assert f"{path}:4: 1 torn line(s)" in err
    # The acknowledgement covers that line only: removed or changed, verify fails.
    set_lines(path, [*raw, *new[4:]])
    assert check(path)[:2] == (
        1, f"{path}:4: says torn lines come before it, but none does (lines were removed)\n")
    set_lines(path, [*raw, torn + b"x", *new[4:]])
    assert check(path)[:2] == (1, f"{path}:4: not JSON\n")


def test_a_whole_last_record_without_its_newline_stays_in_the_chain(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    write_log(path, 3)
    path.write_bytes(path.read_bytes()[:-1])  # cut just before the last newline
    write_log(path, 2)
    records = [json.loads(line) for line in lines(path)]
    assert len(records) == 5 and not any("torn" in r for r in records)
    assert check(path) == (0, check(path)[1], "")


def test_failed_writes_keep_the_chain(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A short write then a full disk: the torn line is acknowledged by the next
    record; a failed fsync leaves its records in the chain."""
    real_write, real_fsync, calls = os.write, os.fsync, []

    def short_then_full_disk(fd: int, data: Any) -> int:
        calls.append(len(data))
        if len(calls) == 1:
            return real_write(fd, bytes(data[: len(data) // 2]))  # 1.5 of 3 lines
        if len(calls) == 2:
            raise OSError(errno.ENOSPC, "injected: disk full")
        return real_write(fd, data)

    def failing_fsync(fd: int) -> None:
        if len(calls) == 3:
            raise OSError(errno.EIO, "injected fsync failure")
        real_fsync(fd)

    monkeypatch.setattr(os, "write", short_then_full_disk)
    monkeypatch.setattr(os, "fsync", failing_fsync)
    path = tmp_path / "audit.jsonl"
    log = AuditLog(str(path))
    with pytest.raises(OSError, match="disk full"):
        log.record("r", "torn", hits(3))
    with pytest.raises(OSError, match="fsync"):
        log.record("r", "unsynced", hits(2))
    log.record("r", "after", hits(1))
    log.close()
    monkeypatch.undo()
    raw = lines(path)
    with pytest.raises(ValueError):
        json.loads(raw[1])
    items = [json.loads(line)["item_id"] for line in raw[:1] + raw[2:]]
    assert items == ["torn", "unsynced", "unsynced", "after"]  # the whole line is kept
    code, out, err = check(path)
    assert code == 0 and out.startswith("4 records in 1 file"), out
    assert f"{path}:2: 1 torn line(s)" in err


# -- restarts, rotation and the head file -------------------------------------

def test_a_restart_continues_the_chain(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    write_log(path, 2)
    last = lines(path)[-1]
    log = AuditLog(str(path))
    assert log.head == sha(last)
    log.record("r2", "item", hits(1))
    log.close()
    assert json.loads(lines(path)[2])["prev"] == sha(last)
    assert check(path)[:2] == (0, check(path)[1])
    assert check(path)[1].startswith("3 records in 1 file")


def rotate(path: Path, log: AuditLog, keep: int) -> None:
    """What logrotate does: shift the old files, move the log away, SIGHUP."""
    for n in range(keep, 0, -1):
        older = path.with_name(f"{path.name}.{n}")
        if older.exists():
            older.rename(path.with_name(f"{path.name}.{n + 1}"))
    path.rename(path.with_name(f"{path.name}.1"))
    log.reopen()


def test_rotation_continues_the_chain_across_files(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    log = AuditLog(str(path))
    for n in range(3):
        log.record(f"r{n}", "item", hits(2))
        rotate(path, log, keep=3)
        rotated = path.with_name(f"{path.name}.1")
        assert (tmp_path / "audit.jsonl.head").read_text() == sha(lines(rotated)[-1]) + "\n"
    log.record("r3", "item", hits(2))
    log.close()
    files = [tmp_path / f"audit.jsonl.{n}" for n in (3, 2, 1)] + [path]
    code, out, _ = check(*files)
    assert code == 0 and out.startswith(f"8 records in 4 files, chain intact from {GENESIS}")
    # The current file alone: its first record's prev is where the check starts.
    code, out, _ = check(path)
    assert (code, out) == (
        0, f"2 records in 1 file, chain intact from {sha(lines(files[2])[-1])}, "
           f"head {sha(lines(path)[-1])}\n")
    code, out, _ = check(files[2], files[3], files[1])  # .1, current, .2: wrong order
    assert code == 1
    assert out.startswith(f"{files[1]}:1: does not follow the last record of {files[3]} "
                          "(the files are not given oldest first")


def test_reopen_without_rotation_goes_on_in_the_same_file(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    log = AuditLog(str(path))
    log.record("r", "a", hits(1))
    log.reopen()
    log.record("r", "b", hits(1))
    log.close()
    assert len(lines(path)) == 2
    assert check(path)[0] == 0
    with pytest.raises(RuntimeError):
        log.reopen()


def test_a_torn_line_left_in_a_rotated_file_is_acknowledged_in_the_next(tmp_path: Path) -> None:
    """A crash, a restart, then logrotate before the next match: the torn line
    ends the old file, and the new file's first record acknowledges it."""
    path, old = tmp_path / "audit.jsonl", tmp_path / "audit.jsonl.1"
    write_log(path, 2)
    torn = lines(path)[1][:30]
    path.write_bytes(path.read_bytes() + torn)
    log = AuditLog(str(path))
    path.rename(old)
    log.reopen()
    log.record("r", "after", hits(1))
    log.close()
    [first] = [json.loads(line) for line in lines(path)]
    assert first["torn"] == sha(torn) and first["prev"] == sha(lines(old)[-1])
    code, out, err = check(old, path)
    assert code == 0 and out.startswith("3 records in 2 files")
    assert f"{old}:3: 1 torn line(s)" in err
    assert check(path)[0] == 0  # alone: the start is taken as given, torn mark and all


def test_a_restart_after_rotation_continues_from_the_head_file(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    write_log(path, 2)  # close() wrote the head file
    path.rename(tmp_path / "audit.jsonl.1")  # rotated while the server was down
    write_log(path, 1)
    assert check(tmp_path / "audit.jsonl.1", path)[:1] == (0,)
    assert json.loads(lines(path)[0])["prev"] == sha(lines(tmp_path / "audit.jsonl.1")[-1])


def test_the_head_file_is_written_atomically_and_holds_only_the_hash(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "audit.jsonl"
    head_file = tmp_path / "audit.jsonl.head"
    log = AuditLog(str(path))
    log.record("secret-request", "secret-item", hits(2))
    events: list[tuple[str, str]] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd: int) -> None:
        events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        real_fsync(fd)

    def replace(src: Any, dst: Any) -> None:
        events.append(("replace", f"{src} -> {dst}"))
        real_replace(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    log.reopen()
    aside = events[1][1]  # events[0]: the log's own fsync
    assert events == [("fsync", str(path)), ("fsync", aside),
                      ("replace", f"{aside} -> {head_file}"), ("fsync", str(tmp_path))]
    assert Path(aside).parent == tmp_path and not Path(aside).exists()
    assert head_file.read_text() == log.head + "\n"  # one line: the hash, nothing else
    assert stat.S_IMODE(head_file.stat().st_mode) == 0o600
    # A crash before the rename leaves the old head file whole, and nothing aside.
    old = head_file.read_bytes()
    log.record("r", "more", hits(1))

    def crash(src: Any, dst: Any) -> None:
        raise OSError(errno.EIO, "injected: crash before the rename")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="crash"):
        log.close()
    assert head_file.read_bytes() == old
    assert sorted(p.name for p in tmp_path.iterdir()) == ["audit.jsonl", "audit.jsonl.head"]


def test_a_head_file_that_is_not_a_hash_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    (tmp_path / "audit.jsonl.head").write_text("not a hash\n")
    with pytest.raises(AuditHeadInvalid):
        AuditLog(str(path))


# -- the command ------------------------------------------------------------

def test_the_audit_verify_command(tmp_path: Path) -> None:
    old, path = tmp_path / "audit.jsonl.1", tmp_path / "audit.jsonl"
    log = AuditLog(str(path))
    log.record("r", "item", hits(3))
    path.rename(old)
    log.reopen()
    log.record("r", "item", hits(2))
    log.close()
    ok = cli("verify", str(old), str(path))
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.startswith(f"5 records in 2 files, chain intact from {GENESIS}, head ")
    raw = lines(old)
    set_lines(old, [raw[0], raw[2]])
    bad = cli("verify", str(old), str(path))
    assert (bad.returncode, bad.stdout) == (1, f"{old}:2: {NOT_FOLLOWING}\n")
    assert cli("verify").returncode == 2  # no file
    missing = cli("verify", str(path), str(tmp_path / "missing"))
    assert missing.returncode == 2 and "missing" in missing.stderr
    assert cli("verify", str(tmp_path)).returncode == 2  # a directory


# -- a real server, killed under load ---------------------------------------

@pytest.mark.slow
def test_every_match_answered_is_in_the_log_after_sigkill(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    content = demo.build().files["listed-by-digest-and-pdq.png"]
    server, address, _ = start_server_process("--audit-log", str(path))
    matched: list[str] = []
    lock = threading.Lock()
    enough, stop = threading.Event(), threading.Event()

    def client(n: int) -> None:
        with grpc.insecure_channel(address) as channel:
            stub = pb_grpc.ApplianceStub(channel)
            i = 0
            while not stop.is_set():
                rid = f"c{n}-{i}"
                i += 1
                try:
                    response = stub.Match(pb.FileRequest(content=content), timeout=WAIT,
                                          metadata=(("x-request-id", rid),))
                except grpc.RpcError:
                    continue  # the server is gone (or refused): not answered
                if response.result.matches:
                    with lock:
                        matched.append(rid)
                        if len(matched) >= 200:
                            enough.set()

    threads = [threading.Thread(target=client, args=(n,)) for n in range(4)]
    try:
        for t in threads:
            t.start()
        assert enough.wait(120), "the clients got no matches"
        server.send_signal(signal.SIGKILL)  # while the clients go on sending
        assert server.wait(WAIT) == -signal.SIGKILL
    finally:
        stop.set()
        for t in threads:
            t.join(WAIT)
        if server.poll() is None:
            server.kill()
            server.wait(WAIT)
    proc = cli("verify", str(path))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    # (lines() leaves out a torn last line: the one thing verify lets by)
    logged = {json.loads(line)["request_id"] for line in lines(path)}
    with lock:
        answered = set(matched)
    assert len(answered) >= 200
    assert answered <= logged, sorted(answered - logged)[:5]
