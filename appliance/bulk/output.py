"""Where bulk work reads and writes: local paths or object-store URIs, and the
Parquet files of its results.

A name with a scheme (``s3://bucket/prefix``, ``gs://...``, ``hdfs://...``)
goes to pyarrow's filesystem for that scheme, with its usual credentials
(environment, instance roles); anything else is a local path, made absolute
here so that every Ray worker reads the same file. The output directory gets
``part-00000.parquet``, ``part-00001.parquet``, ... of at most
``ROWS_PER_FILE`` rows each, and refuses a directory that already holds
parts, which would mix two runs.
"""

from __future__ import annotations

import os
from typing import Any

from appliance.errors import ApplianceError

ROWS_PER_FILE = 1_000_000


def is_uri(name: str) -> bool:
    return "://" in name


def filesystem(name: str) -> tuple[Any, str]:
    """(pyarrow filesystem, path in it) of a local path or a URI."""
    from pyarrow import fs

    if is_uri(name):
        try:
            found: tuple[Any, str] = fs.FileSystem.from_uri(name)
            return found
        except Exception as exc:  # pyarrow raises ArrowInvalid/OSError for unknown schemes
            raise ApplianceError(f"{name}: {exc}") from exc
    return fs.LocalFileSystem(), os.path.abspath(name)


def absolute(name: str) -> str:
    """A local path made absolute; a URI as it is."""
    return name if is_uri(name) else os.path.abspath(name)


class ParquetParts:
    """Results streamed into numbered Parquet files under one directory."""

    def __init__(self, out: str, schema: Any, rows_per_file: int = ROWS_PER_FILE) -> None:
        from pyarrow import fs as pafs

        self.fs, self.root = filesystem(out)
        self.schema, self.rows_per_file = schema, rows_per_file
        info = self.fs.get_file_info(self.root)
        if info.type == pafs.FileType.File:
            raise ApplianceError(f"--out {out}: is a file, not a directory")
        if info.type == pafs.FileType.Directory:
            selector = pafs.FileSelector(self.root, recursive=False)
            if any(i.base_name.startswith("part-") for i in self.fs.get_file_info(selector)):
                raise ApplianceError(f"--out {out}: already holds results (part-*.parquet); "
                                     "name a new directory")
        elif not is_uri(out):
            parent = os.path.dirname(self.root)
            if not os.path.isdir(parent):
                raise ApplianceError(f"--out {out}: the directory {parent} does not exist")
        self.fs.create_dir(self.root, recursive=is_uri(out))
        self.files: list[str] = []
        self._writer: Any = None
        self._in_file = 0

    def write(self, table: Any) -> None:
        """Append ``table`` (of ``schema``), starting a new part when one is full."""
        import pyarrow.parquet as pq

        table = table.cast(self.schema)
        start = 0
        while start < table.num_rows:
            if self._writer is None or self._in_file >= self.rows_per_file:
                self._next(pq)
            take = min(table.num_rows - start, self.rows_per_file - self._in_file)
            self._writer.write_table(table.slice(start, take))
            self._in_file += take
            start += take

    def _next(self, pq: Any) -> None:
        if self._writer is not None:
            self._writer.close()
        path = f"{self.root}/part-{len(self.files):05d}.parquet"
        self._writer = pq.ParquetWriter(path, self.schema, filesystem=self.fs,
                                        compression="zstd")
        self.files.append(path)
        self._in_file = 0

    def close(self) -> None:
        """Finish the last part; with no row at all, one empty part that still
        carries the schema."""
        import pyarrow.parquet as pq

        if self._writer is None:
            self._next(pq)
        self._writer.close()
        self._writer = None
