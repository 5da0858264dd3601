"""Files into Items, and through the pipeline, for the local commands (``scan``,
``match``) and the bulk engine.

A file is held to ``limits.max_stream_bytes``, as ``--server`` holds the
files it streams, so local, remote and bulk answers agree; a larger file is
refused from its size, unread. The bytes go into the Item and nowhere else.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Executor
from contextlib import AbstractContextManager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from appliance.errors import ItemCode
from appliance.results import Item, ItemError, ItemResult

if TYPE_CHECKING:
    from appliance.index.snapshot import Snapshot
    from appliance.pipeline import Pipeline

Opener = Callable[[str], AbstractContextManager[Any]]
"""name -> an open binary file: the built-in ``open`` for local paths, a
pyarrow filesystem's ``open_input_file`` for object-store URIs."""


def _size(f: Any) -> int:
    # A local file's size from its descriptor; pyarrow's NativeFile says it itself.
    if hasattr(f, "fileno"):
        try:
            return os.fstat(f.fileno()).st_size
        except (OSError, ValueError):
            pass
    return int(f.size())


def local_open(name: str) -> AbstractContextManager[Any]:
    return open(name, "rb")  # the caller's with-statement closes it


def read_item(name: str, limit: int, signals: tuple[str, ...],
              opener: Opener = local_open) -> Item | ItemResult:
    """The Item of the file ``name``, or the ItemResult saying why it could not
    be read (UNREADABLE, or TOO_LARGE from its size)."""
    try:
        with opener(name) as f:
            size = _size(f)
            if size > limit:
                return ItemResult(id=name, size=size, error=ItemError(
                    ItemCode.TOO_LARGE, f"{size} bytes exceeds limits.max_stream_bytes={limit}"))
            return Item(name, f.read(limit + 1), signals, streamed=True)
    except OSError as exc:
        return ItemResult(id=name, size=0, error=ItemError(ItemCode.UNREADABLE, str(exc)))


def hash_files(names: Sequence[str], pipeline: Pipeline, snapshot: Snapshot | None,
               pool: Executor, limit: int, signals: tuple[str, ...],
               opener: Callable[[str], Opener] | None = None) -> list[ItemResult]:
    """The files ``names``, read on ``pool`` (``opener(name)`` opens one; default
    the built-in ``open``) and run through ``pipeline`` as one batch: their
    results in order, a file that could not be read with its own. The bytes
    are dropped when this returns."""
    read = list(pool.map(
        lambda n: read_item(n, limit, signals, opener(n) if opener else local_open), names))
    items = [r for r in read if isinstance(r, Item)]
    done = iter(pipeline.run(items, snapshot, pool))
    return [next(done) if isinstance(r, Item) else r for r in read]


def walk(root: Path) -> Iterator[Path]:
    """Every file under ``root``, in sorted order (directories are not followed
    through symbolic links; a link to a file is a file)."""
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(filenames):
            yield Path(dirpath) / name
