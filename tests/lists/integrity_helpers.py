"""Helpers for tests of lists that change while they are read.

``leases_unavailable`` says why read leases cannot be used in a folder (the
tests of the lease path skip with that reason); ``during_read`` runs an
action in the middle of a list file's read, deterministically: after the
first chunk, from the reading thread itself, so no test waits on timing.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from appliance.lists import integrity


def leases_unavailable(folder: Path) -> str | None:
    """None when a read lease can be taken on a file in ``folder``, else why not."""
    if not integrity.LEASES:
        return "no read leases (F_SETLEASE) on this platform"
    probe = folder / ".lease-probe"
    probe.write_bytes(b"x")
    fd = os.open(probe, os.O_RDONLY)
    try:
        fcntl.fcntl(fd, fcntl.F_SETSIG, signal.SIGURG)  # never the fatal SIGIO
        fcntl.fcntl(fd, fcntl.F_SETLEASE, fcntl.F_RDLCK)
        fcntl.fcntl(fd, fcntl.F_SETLEASE, fcntl.F_UNLCK)
    except OSError as exc:
        return (
            f"read leases refused in {folder} ({errno.errorcode.get(exc.errno or 0, exc)}: "
            "not the file's owner without CAP_LEASE, or a filesystem without leases)"
        )
    finally:
        os.close(fd)
        probe.unlink()
    return None


@pytest.fixture
def leases(tmp_path: Path) -> None:
    """Skip unless read leases work in tmp_path (the lease path is tested)."""
    why = leases_unavailable(tmp_path)
    if why:
        pytest.skip(why)


@pytest.fixture
def no_leases(monkeypatch: pytest.MonkeyPatch) -> None:
    """As on a system that refuses leases: the before/after checks alone."""
    monkeypatch.setattr(integrity, "LEASES", False)


def during_read(
    monkeypatch: pytest.MonkeyPatch,
    action: Callable[[], object],
    after: int = 1,
    of: Path | None = None,
) -> list[int]:
    """Run ``action`` once, in the reading thread, before the read of chunk
    ``after + 1`` of the next file read (or of the next read of ``of``), once
    its first ``after`` chunks are read; returns a list that gets one item
    when it ran."""
    original = integrity.Reading.check
    calls, ran = [0], list[int]()

    def check(self: integrity.Reading) -> None:
        if of is None or self.path == str(of):
            calls[0] += 1
        if calls[0] == after + 1 and not ran:
            ran.append(1)
            action()
        original(self)

    monkeypatch.setattr(integrity.Reading, "check", check)
    return ran


def break_lease(path: Path) -> None:
    """Open ``path`` for writing as a writer would, without blocking: the kernel
    starts breaking our read lease, then refuses the open (EWOULDBLOCK). A
    blocking open would wait for the reader, which is this very thread."""
    with contextlib.suppress(BlockingIOError):
        os.close(os.open(path, os.O_WRONLY | os.O_NONBLOCK))


@contextlib.contextmanager
def writer_process(path: Path) -> Iterator[subprocess.Popen[str]]:
    """Another process that holds ``path`` open for writing until the block ends."""
    code = (
        "import sys\n"
        f"f = open({str(path)!r}, 'ab')\n"
        "print('open', flush=True)\n"
        "sys.stdin.read()\n"
    )
    child = subprocess.Popen(
        [sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert child.stdout is not None and child.stdout.readline() == "open\n"
        yield child
    finally:
        if child.stdin is not None:
            child.stdin.close()
        child.wait(30)


def md5_csv(count: int, first: int = 0) -> bytes:
    """A CSV list of ``count`` made-up MD5 values: several read chunks long."""
    rows = "".join(f"E{i},{i:032x}\n" for i in range(first, first + count))
    return f"id,md5\n{rows}".encode()
