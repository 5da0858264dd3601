"""Append-only audit log of every match, written by one thread with group commit.

One JSON object per line: time, request id, item id, list, list version, entry
id, signal, distance, kind, suppressed. No file content and no hash of a
non-matching file is ever written.

``submit`` queues the hits of one item and returns a future that completes once
they are written *and* fsync'ed, so the caller can hold its answer until the
record would survive a crash of the process or the machine. The writer thread
takes everything queued at that moment, writes it in a few large writes and
fsyncs once (group commit): a Lookup of 100,000 listed hashes costs one fsync,
not 100,000, and the event loop never waits on the disk.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Iterable
from concurrent.futures import Future
from dataclasses import dataclass

from appliance.errors import Overloaded
from appliance.index.snapshot import Hit

# Ids longer than this are cut in the record (the server refuses long ids too;
# this keeps one hostile id from bloating every line of its request).
MAX_ID_CHARS = 256
# Records queued and not yet on disk. Beyond it ``submit`` raises rather than
# blocks: its caller is the event loop, and blocking there would stall every
# RPC; a refused request can be retried, while an unbounded queue (a disk that
# stopped answering) would grow until the process is killed. At ~300 bytes a
# line this bounds the queue at a few hundred MB.
MAX_QUEUED_RECORDS = 1_000_000
# Records go out in writes of about this size, each of whole lines: O_APPEND
# makes each write land at the end in one piece, so two writers (even two
# processes) interleave whole lines only; one huge bytes object is not needed,
# and each join/encode (which holds the GIL) stays short: with 4 MiB the event
# loop saw stalls up to ~27 ms during a 100,000-hit group, with 1 MiB ~15 ms.
_WRITE_CHUNK = 1 << 20

_ENCODER = json.JSONEncoder(separators=(",", ":"))  # reused: json.dumps builds one per call


class AuditBacklogFull(Overloaded):
    """More than ``max_queued`` records wait for the disk; the request is refused."""


@dataclass(frozen=True)
class _Entry:
    """The records of one submit: (item id, its hits) per item, one future."""

    time: float
    request_id: str
    items: tuple[tuple[str, tuple[Hit, ...]], ...]
    future: Future[None]

    @property
    def records(self) -> int:
        return sum(len(hits) for _, hits in self.items)


def _bounded(value: str) -> str:
    if len(value) <= MAX_ID_CHARS:
        return value
    return f"{value[:MAX_ID_CHARS]}…(+{len(value) - MAX_ID_CHARS} chars)"


def _lines(entry: _Entry) -> Iterable[str]:
    stamp = round(entry.time, 6)
    request_id = _bounded(entry.request_id)
    for item, hits in entry.items:
        yield from _item_lines(stamp, request_id, _bounded(item), hits)


def _item_lines(stamp: float, request_id: str, item_id: str,
                hits: tuple[Hit, ...]) -> Iterable[str]:
    for h in hits:
        yield _ENCODER.encode(
            {
                "time": stamp,
                "request_id": request_id,
                "item_id": item_id,
                "list": h.list,
                "list_version": h.list_version,
                "entry_id": h.entry_id,
                "signal": h.signal,
                "distance": h.distance,
                "kind": h.kind,
                "suppressed": h.suppressed,
            }
        ) + "\n"


class AuditLog:
    def __init__(self, path: str, *, max_queued: int = MAX_QUEUED_RECORDS) -> None:
        self.path = path
        self.max_queued = max_queued
        # O_APPEND: concurrent writers (even other processes) never interleave lines.
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        self._cond = threading.Condition()
        self._queue: list[_Entry] = []
        self._queued = 0  # records submitted and not yet written (queued or in the writer)
        self._closed = False
        # A write failed part-way: the file may end in half a line, so the next
        # group starts with a newline and only that one line is lost to a reader.
        self._torn = False
        # Daemon: a process that exits without close() must not hang on it. Records
        # whose futures had not completed may then be lost, but no caller was told
        # they were audited.
        self._thread = threading.Thread(target=self._run, name="audit-writer", daemon=True)
        self._thread.start()

    def submit(self, request_id: str, item_id: str, hits: Iterable[Hit]) -> Future[None]:
        """Queue one record per hit; the future completes once they are fsync'ed.

        The caller's thread only takes a tuple of the hits (frozen, so safe to
        keep) and the time; encoding and I/O happen in the writer thread. The
        future gets the OSError of a failed write or fsync. Raises RuntimeError
        after ``close`` and AuditBacklogFull beyond ``max_queued`` records.
        """
        return self.submit_many(request_id, [(item_id, hits)])

    def submit_many(self, request_id: str,
                    items: Iterable[tuple[str, Iterable[Hit]]]) -> Future[None]:
        """``submit`` for the items of one request at once, with one future: a
        Lookup of 100,000 listed hashes hands the event loop one future to
        wait for, not 100,000."""
        entry = _Entry(time.time(), request_id,
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

    def record(self, request_id: str, item_id: str, hits: Iterable[Hit]) -> None:
        """``submit`` and wait until the records are on disk (the CLI, tests)."""
        self.submit(request_id, item_id, hits).result()

    def close(self) -> None:
        """Write and fsync everything submitted so far, stop the writer, close the file."""
        with self._cond:
            self._closed = True
            self._cond.notify()
        if threading.current_thread() is not self._thread:
            self._thread.join()
        with self._cond:
            if self._fd >= 0:
                os.close(self._fd)
                self._fd = -1

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
        """Write the group's records in whole-line chunks, then fsync once."""
        chunk: list[str] = ["\n"] if self._torn else []
        size = len(chunk)
        for entry in group:
            for line in _lines(entry):
                chunk.append(line)
                size += len(line)
                if size >= _WRITE_CHUNK:
                    self._write("".join(chunk).encode())
                    chunk, size = [], 0
        if chunk:
            self._write("".join(chunk).encode())
        os.fsync(self._fd)

    def _write(self, data: bytes) -> None:
        # A short write on a regular file means a full disk or a signal: the rest
        # goes in another write, and until it is out the file ends mid-line. If
        # os.write raises, ``_torn`` already says where the file ends.
        view = memoryview(data)
        while view:
            view = view[os.write(self._fd, view):]
            self._torn = bool(view)
