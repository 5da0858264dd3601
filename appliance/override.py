"""A process-wide setting overridden while at least one holder needs it.

Some settings exist once per process (Pillow's decompression-bomb limit, the
cyclic garbage collector's switch) yet must change only around our own work,
which runs on several threads at once. ``SharedOverride`` counts the holders
under a lock: the first one in saves the setting and sets the override, the
last one out puts back what it found, so that overlapping holders never
restore it under one another and the setting is as it was outside them.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Generic, TypeVar

T = TypeVar("T")


class SharedOverride(Generic[T]):
    """``with override():`` holds ``value`` in the setting read by ``read``
    and written by ``write`` for the block (see the module)."""

    def __init__(self, read: Callable[[], T], write: Callable[[T], None], value: T) -> None:
        self._read, self._write, self._value = read, write, value
        self._lock = threading.Lock()
        self._holders = 0
        self._saved: T | None = None

    @contextmanager
    def __call__(self) -> Iterator[None]:
        with self._lock:
            if self._holders == 0:
                self._saved = self._read()
                self._write(self._value)
            self._holders += 1
        try:
            yield
        finally:
            with self._lock:
                self._holders -= 1
                if self._holders == 0:
                    self._write(self._saved)  # type: ignore[arg-type]
