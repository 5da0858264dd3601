"""A read-only stream that hashes the bytes read through it.

A list's version is the SHA-256 of its file; computing it as the parser
streams the file costs no second read.
"""

from __future__ import annotations

import hashlib
import io
from typing import TYPE_CHECKING, BinaryIO

if TYPE_CHECKING:
    from _typeshed import WriteableBuffer


class DigestReader(io.RawIOBase):
    """Reads ``inner`` and keeps the SHA-256 of everything read so far.

    ``name`` is the inner stream's (a path for files), so a parser that must
    reopen the file by path (SQLite) can; wrap it in ``io.BufferedReader``
    for line reading.
    """

    def __init__(self, inner: BinaryIO) -> None:
        super().__init__()
        self._inner = inner
        self._sha256 = hashlib.sha256()
        self.name: object = getattr(inner, "name", None)

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: WriteableBuffer) -> int:
        view = memoryview(buffer).cast("B")
        data = self._inner.read(len(view))
        view[: len(data)] = data
        self._sha256.update(data)
        return len(data)

    def hexdigest(self) -> str:
        return self._sha256.hexdigest()
