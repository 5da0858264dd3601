"""A read-only stream that hashes the bytes read through it.

A list's version is the SHA-256 of its file; computing it as the parser
streams the file costs no second read.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Callable
from typing import TYPE_CHECKING, BinaryIO

if TYPE_CHECKING:
    from _typeshed import WriteableBuffer


class DigestReader(io.RawIOBase):
    """Reads ``inner`` and keeps the SHA-256 and the count of everything read so far.

    ``name`` is the inner stream's (a path for files), so a parser that must
    reopen the file by path (SQLite) can; wrap it in ``io.BufferedReader``
    for line reading. ``on_read`` runs before every read of ``inner``: the
    file's integrity check (``integrity.Reading.check``), which stops a read
    of a file that is being rewritten within a chunk.
    """

    def __init__(self, inner: BinaryIO, on_read: Callable[[], None] | None = None) -> None:
        super().__init__()
        self._inner = inner
        self._on_read = on_read
        self._sha256 = hashlib.sha256()
        self.nbytes = 0
        self.name: object = getattr(inner, "name", None)

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: WriteableBuffer) -> int:
        if self._on_read is not None:
            self._on_read()
        view = memoryview(buffer).cast("B")
        data = self._inner.read(len(view))
        view[: len(data)] = data
        self._sha256.update(data)
        self.nbytes += len(data)
        return len(data)

    def hexdigest(self) -> str:
        return self._sha256.hexdigest()

    def digest(self) -> bytes:
        return self._sha256.digest()
