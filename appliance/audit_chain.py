"""The audit log's hash chain: its format, its head file, and ``appliance audit verify``.

Every record line carries ``prev``, the lowercase hex SHA-256 of the previous
record's exact line bytes (without the newline); the first record ever written
carries ``GENESIS``. Changing, removing, inserting or reordering records
breaks the link of the record after them. The chain runs on across restarts
(it continues from the file's last complete line) and across rotated files
(from ``<log>.head``, the hash of the last record written before the rotation).

Torn lines: a write cut short (the process killed, a full disk) leaves part of
a line at the end of the file. The writer leaves it as it is; its next record
starts on a new line, links to the last whole record, and carries ``torn``:
the SHA-256 of the torn lines between the two, joined by newlines. ``verify``
accepts torn lines only so acknowledged, or as the last line of the last file
(nothing has followed it yet); anywhere else they are bad records.

This module imports nothing heavy, so ``appliance audit verify`` starts at once.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, TextIO

from appliance.errors import ApplianceError

GENESIS = "0" * 64
# The fields of every record, in the order they are written (``torn``, when
# present, comes just before ``prev``).
FIELDS = ("time", "request_id", "identity", "item_id", "list", "list_version", "entry_id",
          "signal", "distance", "kind", "suppressed", "prev")
TORN = "torn"
HEAD_SUFFIX = ".head"
_HEX = frozenset("0123456789abcdef")
_TAIL_BLOCK = 1 << 16

_NOT_FOLLOWING = "(that record was changed, or records between were removed)"
_NOT_FOLLOWING_FILE = ("(the files are not given oldest first, that record was changed, "
                       "or records between were removed)")


class AuditHeadInvalid(ApplianceError):
    """``<log>.head`` does not hold a hash: the chain cannot be continued."""


def digest(line: bytes) -> str:
    """The link to a record: the SHA-256 of its line bytes, without the newline."""
    return hashlib.sha256(line).hexdigest()


def is_digest(value: object) -> bool:
    return isinstance(value, str) and len(value) == 64 and set(value) <= _HEX


# -- the writer's side: where the chain continues -----------------------------

def read_head(log_path: str) -> str | None:
    """The hash in ``<log>.head``, or None when there is no head file."""
    path = log_path + HEAD_SUFFIX
    try:
        with open(path, encoding="ascii", errors="replace") as f:
            value = f.read(1024).strip()
    except FileNotFoundError:
        return None
    if not is_digest(value):
        raise AuditHeadInvalid(f"{path}: not a lowercase hex SHA-256 (remove it only if "
                               "the log it follows is known; verify will show the gap)")
    return value


def write_head(log_path: str, head: str) -> None:
    """Replace ``<log>.head`` atomically: written aside, fsync'ed, renamed, and
    the directory fsync'ed, so a crash leaves the old head or the new one."""
    target = log_path + HEAD_SUFFIX
    directory = os.path.dirname(os.path.abspath(target))
    fd, aside = tempfile.mkstemp(dir=directory, prefix=os.path.basename(target) + ".")
    try:
        try:
            view = memoryview(f"{head}\n".encode())
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(aside, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(aside)
        raise
    dir_fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def tail(fd: int) -> tuple[bytes | None, bytes]:
    """(the file's last complete line, the bytes after it): the line is None when
    no line is complete; the bytes are empty unless the file ends mid-line."""
    pos = os.fstat(fd).st_size
    buf = b""
    while True:
        step = min(_TAIL_BLOCK, pos)
        pos -= step
        buf = os.pread(fd, step, pos) + buf
        last = buf.rfind(b"\n")
        if last >= 0:
            before = buf.rfind(b"\n", 0, last)
            if before >= 0 or pos == 0:
                return buf[before + 1:last], buf[last + 1:]
        elif pos == 0:
            return None, buf


def continues(line: bytes, head: str) -> bool:
    """Whether ``line`` is a whole record linked to ``head`` (a torn write that
    stopped just before its newline left the record whole)."""
    try:
        record = json.loads(line)
    except ValueError:
        return False
    return isinstance(record, dict) and record.get("prev") == head


# -- the reader's side: verify ------------------------------------------------

@dataclass
class Verdict:
    files: int
    records: int = 0
    start: str | None = None  # the first record's prev: where the checked chain starts
    head: str | None = None  # the hash of the last record
    warnings: list[str] = field(default_factory=list)
    error: str | None = None  # "FILE:LINE: what is wrong", at the first bad record


def _parse(line: bytes) -> tuple[dict[str, Any] | None, str]:
    """(the record, "") or (None, what is wrong with the line)."""
    try:
        record = json.loads(line)
    except ValueError:
        return None, "not JSON"
    if not isinstance(record, dict):
        return None, "not a JSON object"
    missing = [name for name in FIELDS if name not in record]
    if missing:
        return None, f"field{'s' if len(missing) > 1 else ''} {', '.join(missing)} missing"
    if not is_digest(record["prev"]):
        return None, "prev is not a lowercase hex SHA-256"
    if TORN in record and not is_digest(record[TORN]):
        return None, "torn is not a lowercase hex SHA-256"
    return record, ""


@dataclass
class _Torn:
    """Lines that are not records, since the last record."""

    path: str
    where: str
    why: str
    hash: Any = field(default_factory=hashlib.sha256)
    count: int = 0
    ended: bool = True  # the last of them ends with a newline

    def add(self, line: bytes, ended: bool) -> None:
        self.hash.update(b"\n" + line if self.count else line)
        self.count += 1
        self.ended = ended


def verify(paths: Sequence[str]) -> Verdict:
    """Check the chain through ``paths``, oldest first, streaming line by line.

    Raises OSError when a file cannot be read."""
    verdict = Verdict(files=len(paths))
    head: str | None = None
    torn: _Torn | None = None
    after = ""  # the file of the last record, when it is not the current one
    for path in paths:
        with open(path, "rb") as f:
            for number, raw in enumerate(f, 1):
                ended = raw.endswith(b"\n")
                line = raw[:-1] if ended else raw
                where = f"{path}:{number}"
                record, why = _parse(line)
                if record is None:
                    torn = torn or _Torn(path, where, why)
                    torn.add(line, ended)
                    continue
                if torn is not None:
                    if record.get(TORN) != torn.hash.hexdigest():
                        verdict.error = f"{torn.where}: {torn.why}"
                        return verdict
                    verdict.warnings.append(
                        f"{torn.where}: {torn.count} torn line(s), left by a write cut short "
                        f"and acknowledged by the record at {where}")
                    torn = None
                elif TORN in record and head is not None:
                    verdict.error = (f"{where}: says torn lines come before it, but none "
                                     "does (lines were removed)")
                    return verdict
                if head is None:
                    verdict.start = record["prev"]
                elif record["prev"] != head:
                    verdict.error = (
                        f"{where}: does not follow the last record of {after} "
                        f"{_NOT_FOLLOWING_FILE}" if after
                        else f"{where}: does not follow the record before it {_NOT_FOLLOWING}")
                    return verdict
                head, after = digest(line), ""
                verdict.records += 1
        after = after or path
    if torn is not None:
        last = torn.path == paths[-1]
        if torn.count == 1 and not torn.ended and torn.why == "not JSON" and last:
            verdict.warnings.append(f"{torn.where}: torn last line (a write cut short, e.g. "
                                    "by a crash), not a record")
        else:
            verdict.error = f"{torn.where}: {torn.why}"
            return verdict
    verdict.head = head
    return verdict


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def run_verify(paths: Sequence[str], out: TextIO | None = None,
               err: TextIO | None = None) -> int:
    """``appliance audit verify``: 0 when the chain holds, 1 at a bad record
    (named on ``out``); ApplianceError (exit 2) when a file cannot be read.
    Warnings go to ``err``."""
    out, err = out or sys.stdout, err or sys.stderr
    try:
        for path in paths:  # every file readable before any verdict
            with open(path, "rb"):
                pass
        verdict = verify(paths)
    except OSError as exc:
        raise ApplianceError(f"{exc.filename or paths}: {exc.strerror or exc}") from exc
    for warning in verdict.warnings:
        print(f"warning: {warning}", file=err)
    if verdict.error is not None:
        print(verdict.error, file=out)
        return 1
    summary = f"{_plural(verdict.records, 'record')} in {_plural(verdict.files, 'file')}"
    if verdict.records:
        summary += f", chain intact from {verdict.start}, head {verdict.head}"
    print(summary, file=out)
    return 0
