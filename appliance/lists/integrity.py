"""Reading a file that an operator may be rewriting: whole, or refused.

An operator who copies a new list over the old one in place, while the
appliance reads it, would otherwise get a list of the first N rows loaded
and reported as a success. ``Reading`` opens a file for one read and refuses
it (``FileInFlux``, a ListError) when:

- it is still open for writing by any process when the read starts: on
  Linux a read lease (``F_SETLEASE``, ``F_RDLCK``) cannot be taken then
  (EAGAIN);
- it is opened for writing or truncated during the read: the kernel breaks
  our lease, which ``check`` (called on every chunk read) notices;
- what the file was before the read differs from what it is after: stat of
  the path before opening, fstat of the open file and stat of the path after
  the read (size, mtime, ctime, inode, device: a rename over the path gives
  another inode), and the bytes read equal the size.

Leases need the file's owner or CAP_LEASE and a filesystem that has them;
where they are refused (EACCES, EPERM, EINVAL) the before/after checks
alone apply. Nothing here waits: a file that was closed a moment ago reads
at once.

Holding a lease has two side effects, both handled here. A writer's open
blocks until the lease is given up (at most ``/proc/sys/fs/lease-break-time``
seconds): ``check`` notices the break at the next chunk and the read then
fails and releases it, so the writer waits milliseconds. And the kernel
signals the break with SIGIO, whose default action kills the process: the
signal is changed to SIGURG (ignored by default) before the lease is taken
and the fd's owner cleared right after, so no signal is sent at all.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import signal
import stat
from dataclasses import dataclass
from types import TracebackType
from typing import BinaryIO

from appliance.errors import ListError

# Off where the platform has no leases; tests turn it off to exercise the
# before/after checks alone, as on a system that refuses leases.
LEASES = hasattr(fcntl, "F_SETLEASE") and hasattr(fcntl, "F_SETSIG")
# Leases not permitted here (not the owner, no CAP_LEASE) or not supported by
# the filesystem (or switched off, fs.leases-enable = 0): fall back silently.
_NO_LEASE = frozenset({errno.EACCES, errno.EPERM, errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP})
PUBLISH = "publish a list by writing it aside in the same directory and renaming it into place"


class FileInFlux(ListError):
    """The file was being written, or changed, while it was read. Nothing of it
    was loaded; the watcher retries such a file later instead of counting it."""


@dataclass(frozen=True)
class Identity:
    """What must not change while a file is read."""

    device: int
    inode: int
    size: int
    mtime_ns: int
    ctime_ns: int

    @classmethod
    def of(cls, st: os.stat_result) -> Identity:
        return cls(st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def _difference(before: Identity, after: Identity) -> str:
    """How ``after`` differs from ``before`` in words; "" when it does not."""
    if (before.device, before.inode) != (after.device, after.inode):
        return "it was replaced (renamed over or re-created) during the read"
    if before.size != after.size:
        return f"its size went from {before.size} to {after.size} bytes during the read"
    if (before.mtime_ns, before.ctime_ns) != (after.mtime_ns, after.ctime_ns):
        return "it was modified during the read"
    return ""


def _take_lease(fd: int) -> bool:
    """A read lease on ``fd``: True if held, False if leases are not available
    here. Raises OSError(EAGAIN) when the file is open for writing."""
    if not LEASES:
        return False
    try:
        # Before the lease: the break must not be announced with SIGIO (fatal).
        fcntl.fcntl(fd, fcntl.F_SETSIG, signal.SIGURG)
        fcntl.fcntl(fd, fcntl.F_SETLEASE, fcntl.F_RDLCK)
    except OSError as exc:
        if exc.errno in _NO_LEASE:
            return False
        raise
    # Taking the lease made us the fd's owner, to be signalled; nobody is.
    fcntl.fcntl(fd, fcntl.F_SETOWN, 0)
    return True


def _lease_broken(fd: int) -> bool:
    # A pending break reads as F_UNLCK (the type we are asked to go down to),
    # and so does a lease the kernel already took back.
    return bool(fcntl.fcntl(fd, fcntl.F_GETLEASE) != fcntl.F_RDLCK)


def _release(fd: int) -> None:
    # OSError: the kernel took it back already; closing the fd would anyway.
    with contextlib.suppress(OSError):
        fcntl.fcntl(fd, fcntl.F_SETLEASE, fcntl.F_UNLCK)


class Reading:
    """One checked read of the file at ``path``; ``what`` names it in errors
    ("list 'nsrl' (/lists/nsrl.db)").

    Use as a context manager: ``file`` is the open binary file. Call ``check``
    as the read goes (cheap: one fcntl) and ``finish(nbytes)`` after reading
    it whole; leaving the block checks the file against what it was before,
    also when the parser failed (a torn row is then explained as the change
    it was). Raises FileInFlux, or ListError when the file cannot be read.
    """

    def __init__(self, path: str, what: str) -> None:
        self.path = path
        self.what = what
        self.leased = False
        self._before: Identity | None = None
        self._file: BinaryIO | None = None
        self._nbytes: int | None = None

    @property
    def file(self) -> BinaryIO:
        assert self._file is not None, "use Reading as a context manager"
        return self._file

    @property
    def size(self) -> int:
        """The file's size when the read started."""
        assert self._before is not None, "use Reading as a context manager"
        return self._before.size

    def _influx(self, why: str) -> FileInFlux:
        return FileInFlux(f"{self.what}: the file changed while it was read ({why}); {PUBLISH}")

    def __enter__(self) -> Reading:
        try:
            st = os.stat(self.path)
            if not stat.S_ISREG(st.st_mode):
                raise ListError(f"{self.what}: {self.path} is not a regular file")
            self._before = Identity.of(st)
            # O_NONBLOCK: a FIFO swapped in after the stat must not hang the
            # open (it is refused below); it changes nothing for regular files.
            self._file = open(  # closed in __exit__
                self.path, "rb", opener=lambda p, flags: os.open(p, flags | os.O_NONBLOCK)
            )
        except OSError as exc:
            if exc.errno == errno.EAGAIN:  # O_NONBLOCK met another's write lease
                raise FileInFlux(
                    f"{self.what}: the file is held by another process's lease (being "
                    f"written?); reload once it is released, or {PUBLISH}"
                ) from exc
            raise ListError(f"{self.what}: cannot read {self.path}: {exc.strerror or exc}") from exc
        try:
            self._start()
        except BaseException:
            self._file.close()
            raise
        return self

    def _start(self) -> None:
        fd = self.file.fileno()
        try:
            opened = os.fstat(fd)
            if not stat.S_ISREG(opened.st_mode):
                raise ListError(f"{self.what}: {self.path} is not a regular file")
            os.set_blocking(fd, True)
            self.leased = _take_lease(fd)
        except OSError as exc:
            if exc.errno == errno.EAGAIN:
                raise FileInFlux(
                    f"{self.what}: the file is still open for writing by another process; "
                    f"reload once it is closed, or {PUBLISH}"
                ) from exc
            raise ListError(f"{self.what}: cannot read {self.path}: {exc.strerror or exc}") from exc
        assert self._before is not None
        why = _difference(self._before, Identity.of(opened))
        if why:  # between our stat and our open
            raise self._influx(why)

    def check(self) -> None:
        """Raise FileInFlux if the file was opened for writing since the read began."""
        if self.leased and _lease_broken(self.file.fileno()):
            raise self._influx("it was opened for writing during the read")

    def finish(self, nbytes: int) -> None:
        """Record that the read reached the end after ``nbytes`` bytes."""
        self._nbytes = nbytes

    def _changes(self) -> str:
        """What changed since the read began; "" when nothing did."""
        before = self._before
        assert before is not None
        fd = self.file.fileno()
        if self.leased and _lease_broken(fd):
            return "it was opened for writing during the read"
        try:
            now = Identity.of(os.stat(self.path))
        except FileNotFoundError:
            return "it was removed during the read"
        # The path first: a rename over it also changes the old file's ctime
        # (one link fewer), and "replaced" is the better explanation.
        if (now.device, now.inode) != (before.device, before.inode):
            return _difference(before, now)
        why = _difference(before, Identity.of(os.fstat(fd))) or _difference(before, now)
        if why:
            return why
        if self._nbytes is not None and self._nbytes != before.size:
            return f"{self._nbytes} bytes read of {before.size}"
        return ""

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            # After a parser error too: a change explains it better than a
            # torn row does. Not after an interrupt (KeyboardInterrupt).
            why = self._changes() if exc is None or isinstance(exc, Exception) else ""
        except OSError as error:
            why = f"it could not be checked after the read: {error.strerror or error}"
        finally:
            if self.leased:
                _release(self.file.fileno())
            self.file.close()
        if why:
            raise self._influx(why) from exc


def open_for_writing(path: str) -> bool | None:
    """Whether some process has ``path`` open for writing now: True, False, or
    None when this cannot be told here (no leases, or the file is unreadable)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except OSError:
        return None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode) or not _take_lease(fd):
            return None
        _release(fd)
        return False
    except OSError as exc:
        return True if exc.errno == errno.EAGAIN else None
    finally:
        os.close(fd)
