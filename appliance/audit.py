"""Append-only audit log of every match, written by one thread with group commit.

One JSON object per line: time, request id, identity (the authenticated
caller), item id, list, list version, entry id, signal, distance, kind,
suppressed, and ``prev``, the SHA-256 of the record before it, so the file is a
hash chain (``audit_chain``: the format, the head file, ``appliance audit
verify``). No file content and no hash of a non-matching file is ever written.

``submit`` queues the hits of one item and returns a future that completes once
they are written *and* fsync'ed, so the caller can hold its answer until the
record would survive a crash of the process or the machine. The writer thread
takes everything queued at that moment, writes it in a few large writes and
fsyncs once (group commit): a Lookup of 100,000 listed hashes costs one fsync,
not 100,000, and the event loop never waits on the disk. The writer is the
only one who knows the order of the records, so it alone computes the links.

The chain continues from the file's last complete line, else from
``<path>.head`` (written by ``reopen``, for logrotate, and ``close``), else
from ``GENESIS``.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
from collections.abc import Iterable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

from appliance import audit_chain as chain
from appliance.audit_chain import GENESIS, AuditHeadInvalid, digest
from appliance.errors import Overloaded
from appliance.results import Hit

__all__ = ["GENESIS", "AuditBacklogFull", "AuditHeadInvalid", "AuditLog"]

# Ids longer than this are cut in the record (the server refuses long ids too;
# this keeps one hostile id from bloating every line of its request).
MAX_ID_CHARS = 256
# Records queued and not yet on disk. Beyond it ``submit`` raises rather than
# blocks: its caller is the event loop, and blocking there would stall every
# RPC; a refused request can be retried, while an unbounded queue (a disk that
# stopped answering) would grow until the process is killed. At ~400 bytes a
# line this bounds the queue at a few hundred MB.
MAX_QUEUED_RECORDS = 1_000_000
# Records go out in writes of about this size, each of whole lines: O_APPEND
# makes each write land at the end in one piece, so two writers (even two
# processes) interleave whole lines only; one huge bytes object is not needed,
# and each join/encode (which holds the GIL) stays short: with 4 MiB the event
# loop saw stalls up to ~27 ms during a 100,000-hit group, with 1 MiB ~15 ms.
_WRITE_CHUNK = 1 << 20
# O_RDWR: the tail is read back through the descriptor that appends to it.
_FLAGS = os.O_RDWR | os.O_CREAT | os.O_APPEND

# Reused: json.dumps builds one per call. ASCII output, so a line's str and
# bytes are the same characters and the hash is of exactly what is written.
_ENCODER = json.JSONEncoder(separators=(",", ":"))


class AuditBacklogFull(Overloaded):
    """More than ``max_queued`` records wait for the disk; the request is refused."""


@dataclass(frozen=True)
class _Entry:
    """The records of one submit: (item id, its hits) per item, one future."""

    time: float
    request_id: str
    identity: str
    items: tuple[tuple[str, tuple[Hit, ...]], ...]
    future: Future[None]

    @property
    def records(self) -> int:
        return sum(len(hits) for _, hits in self.items)


def _bounded(value: str) -> str:
    if len(value) <= MAX_ID_CHARS:
        return value
    return f"{value[:MAX_ID_CHARS]}…(+{len(value) - MAX_ID_CHARS} chars)"


def _records(entry: _Entry) -> Iterator[dict[str, Any]]:
    """The records of an entry, without their link (``prev``)."""
    stamp = round(entry.time, 6)
    request_id, identity = _bounded(entry.request_id), _bounded(entry.identity)
    for item, hits in entry.items:
        item_id = _bounded(item)
        for h in hits:
            yield {"time": stamp, "request_id": request_id, "identity": identity,
                   "item_id": item_id, "list": h.list, "list_version": h.list_version,
                   "entry_id": h.entry_id, "signal": h.signal, "distance": h.distance,
                   "kind": h.kind, "suppressed": h.suppressed}


class AuditLog:
    def __init__(self, path: str, *, max_queued: int = MAX_QUEUED_RECORDS) -> None:
        self.path = path
        self.max_queued = max_queued
        # O_APPEND: concurrent writers (even other processes) never interleave lines.
        self._fd = os.open(path, _FLAGS, 0o600)
        # Held to write, fsync or swap the file (the writer, reopen, close);
        # the chain state below is under it.
        self._io = threading.Lock()
        self._head = GENESIS  # the hash of the last whole record in the file
        # Torn lines since that record (the last may be the file's unfinished
        # end), acknowledged by the next record's ``torn``.
        self._junk: list[bytes] = []
        # The file ends mid-line (a write failed part-way, or a crash): the next
        # group starts with a newline, so only that one line is lost to a reader.
        self._torn = False
        try:
            self._resume()
        except BaseException:
            os.close(self._fd)
            raise
        self._cond = threading.Condition()
        self._queue: list[_Entry] = []
        self._queued = 0  # records submitted and not yet written (queued or in the writer)
        self._closed = False
        # Daemon: a process that exits without close() must not hang on it. Records
        # whose futures had not completed may then be lost, but no caller was told
        # they were audited.
        self._thread = threading.Thread(target=self._run, name="audit-writer", daemon=True)
        self._thread.start()

    @property
    def head(self) -> str:
        """The hash of the last record written (an anchor to keep elsewhere)."""
        with self._io:
            return self._head

    def submit(self, request_id: str, item_id: str, hits: Iterable[Hit], *,
               identity: str = "") -> Future[None]:
        """Queue one record per hit; the future completes once they are fsync'ed.

        The caller's thread only takes a tuple of the hits (frozen, so safe to
        keep) and the time; encoding, linking and I/O happen in the writer
        thread. The future gets the OSError of a failed write or fsync. Raises
        RuntimeError after ``close`` and AuditBacklogFull beyond ``max_queued``
        records.
        """
        return self.submit_many(request_id, [(item_id, hits)], identity=identity)

    def submit_many(self, request_id: str, items: Iterable[tuple[str, Iterable[Hit]]], *,
                    identity: str = "") -> Future[None]:
        """``submit`` for the items of one request at once, with one future: a
        Lookup of 100,000 listed hashes hands the event loop one future to
        wait for, not 100,000."""
        entry = _Entry(time.time(), request_id, identity,
                       tuple((item, tuple(hits)) for item, hits in items), Future())
        count = entry.records
        if not count:
            entry.future.set_result(None)
            return entry.future
        with self._cond:
            if self._closed:
                raise RuntimeError("audit log is closed")
            if self._queued + count > self.max_queued:
                raise AuditBacklogFull(
                    f"audit log backlog: {self._queued} records wait for the disk "
                    f"(max {self.max_queued})"
                )
            self._queued += count
            self._queue.append(entry)
            self._cond.notify()
        return entry.future

    def record(self, request_id: str, item_id: str, hits: Iterable[Hit], *,
               identity: str = "") -> None:
        """``submit`` and wait until the records are on disk (the CLI, tests)."""
        self.submit(request_id, item_id, hits, identity=identity).result()

    def reopen(self) -> None:
        """Open ``path`` again, after logrotate has moved the file away (SIGHUP).

        The old file is fsync'ed and the head written to ``<path>.head`` first,
        so the chain continues in the new file even across a restart. Waits
        for the group being written, if any (one group's write and fsync).
        """
        with self._io:
            if self._fd < 0:
                raise RuntimeError("audit log is closed")
            os.fsync(self._fd)
            chain.write_head(self.path, self._head)
            fd = os.open(self.path, _FLAGS, 0o600)
            old, self._fd = self._fd, fd
            same = os.path.samestat(os.fstat(fd), os.fstat(old))
            os.close(old)
            if not same:
                # The chain goes on in the new file. Torn lines at the end of the
                # old one stay there, and the next record still acknowledges them.
                self._torn = bool(chain.tail(fd)[1])

    def close(self) -> None:
        """Write and fsync everything submitted so far, stop the writer, write
        the head file, close the file."""
        with self._cond:
            self._closed = True
            self._cond.notify()
        if threading.current_thread() is not self._thread:
            self._thread.join()
        with self._io:
            if self._fd >= 0:
                try:
                    chain.write_head(self.path, self._head)
                finally:
                    os.close(self._fd)
                    self._fd = -1

    # -- the chain ------------------------------------------------------------

    def _resume(self) -> None:
        """Take up the chain where the file (or its head file) leaves it."""
        last, rest = chain.tail(self._fd)
        head = digest(last) if last is not None else chain.read_head(self.path) or GENESIS
        self._junk, self._torn = [], bool(rest)
        if rest and chain.continues(rest, head):
            head = digest(rest)  # a whole record, only its newline missing
        elif rest:
            self._junk = [rest]
        self._head = head

    def _advance(self, data: bytes, sep: bool, lines: list[tuple[int, str]], n: int) -> None:
        """Follow the first ``n`` bytes of ``data`` into the file: ``data`` is a
        newline if ``sep``, then lines of (length, hash) each with its newline."""
        pos = 0
        if sep:
            if n == 0:
                return
            self._torn, pos = False, 1
        for length, line_hash in lines:
            end = pos + length
            if n < end:  # this line did not get out whole: a torn line
                if n > pos:
                    self._junk.append(data[pos:n])
                    self._torn = True
                return
            self._head, self._junk, self._torn = line_hash, [], n == end
            pos = end + 1
            if n < pos:
                return

    # -- the writer thread ----------------------------------------------------

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._closed:
                    self._cond.wait()
                if not self._queue:
                    return  # closed and drained
                group, self._queue = self._queue, []
            # A future cancelled by its caller is not completed, but its records
            # are still written: an extra record is harmless, a missing one is not.
            live = [e.future for e in group if e.future.set_running_or_notify_cancel()]
            try:
                with self._io:
                    self._commit(group)
            except BaseException as exc:  # every caller must hear of it, whatever it is
                for future in live:
                    future.set_exception(exc)
                if not isinstance(exc, Exception):
                    raise
            else:
                for future in live:
                    future.set_result(None)
            finally:
                with self._cond:
                    self._queued -= sum(e.records for e in group)

    def _commit(self, group: list[_Entry]) -> None:
        """Link and write the group's records in whole-line chunks, then fsync once."""
        encode, sha256 = _ENCODER.encode, hashlib.sha256  # per record: no lookups
        head = self._head
        torn = digest(b"\n".join(self._junk)) if self._junk else None
        sep = self._torn
        chunk: list[bytes] = [b"\n"] if sep else []
        lines: list[tuple[int, str]] = []
        size = len(chunk)
        for entry in group:
            for fields in _records(entry):
                if torn is not None:
                    fields[chain.TORN], torn = torn, None
                fields["prev"] = head
                line = encode(fields).encode()
                head = sha256(line).hexdigest()  # chain.digest
                chunk.append(line + b"\n")
                lines.append((len(line), head))
                size += len(line) + 1
                if size >= _WRITE_CHUNK:
                    self._write(b"".join(chunk), sep, lines)
                    chunk, lines, size, sep = [], [], 0, False
        if chunk:
            self._write(b"".join(chunk), sep, lines)
        os.fsync(self._fd)

    def _write(self, data: bytes, sep: bool, lines: list[tuple[int, str]]) -> None:
        # A short write on a regular file means a full disk or a signal: the rest
        # goes in another write, and until it is out the file ends mid-line. If
        # os.write raises, ``_advance`` records what did get out.
        view, n = memoryview(data), 0
        try:
            while n < len(data):
                n += os.write(self._fd, view[n:])
        finally:
            self._advance(data, sep, lines, n)
