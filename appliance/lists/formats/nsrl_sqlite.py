"""NIST NSRL RDSv3 SQLite databases (format "nsrl-sqlite").

Rows of the ``FILE`` table (columns ``sha256, sha1, md5, crc32, file_name,
file_size, package_id``): the hash columns that exist are read, as hex text
in any case; every entry's category is "nsrl" and its id "row-N", N counting
the table's rows from 1 in storage order. Read with a streaming cursor, so
memory does not grow with the table.

SQLite reads a file, not a stream. When the stream is a plain file on disk
(``load_list``), it is read to its end for the list's version and the same
path is opened read-only (immutable: no journal, no locks, nothing written
next to the list). Any other stream is copied to a temporary file first.
The database is a list file like any other, so untrusted: ``FILE`` must be a
table, not a view that could run arbitrary queries, and the schema's own
functions are not trusted.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

from appliance.lists.formats import CERTAIN, ListFormat
from appliance.lists.formats.values import BadValue, parse_hash
from appliance.lists.records import FormatError, FormatOptions, ListBuilder, Record

MAGIC = b"SQLite format 3\x00"
CATEGORY = "nsrl"
HASH_COLUMNS = ("sha256", "sha1", "md5")
_BATCH = 10_000
# sqlite3.Warning is not an sqlite3.Error; neither must escape as itself. Nor
# UnicodeDecodeError: Python decodes SQLite's error messages as strict UTF-8,
# and a corrupt schema puts the file's own bytes in one ("malformed database
# schema (FI\xbbE)"), so the error about the file fails to be made.
_SQLITE_ERRORS = (sqlite3.Error, sqlite3.Warning, UnicodeDecodeError)


@contextmanager
def _database_path(stream: BinaryIO) -> Iterator[str]:
    name = getattr(stream, "name", None)
    if isinstance(name, str) and os.path.isfile(name):
        while stream.read(1 << 20):  # through the caller's digest
            pass
        yield name
        return
    with tempfile.TemporaryDirectory(prefix="nsrl-") as folder:
        path = os.path.join(folder, "list.db")
        with open(path, "wb") as copy:
            shutil.copyfileobj(stream, copy, 1 << 20)
        yield path


def _connect(path: str) -> sqlite3.Connection:
    uri = Path(path).resolve().as_uri() + "?mode=ro&immutable=1"
    connection = sqlite3.connect(uri, uri=True, check_same_thread=False)
    try:
        # Bad bytes in a text column make that row bad, not the whole file.
        connection.text_factory = lambda raw: raw.decode("utf-8", "replace")
        connection.execute("PRAGMA trusted_schema = OFF")
        connection.execute("PRAGMA query_only = ON")
    except BaseException:
        connection.close()
        raise
    return connection


def _columns(connection: sqlite3.Connection) -> list[str]:
    kind = connection.execute(
        "SELECT type, sql FROM sqlite_master WHERE lower(name) = 'file'"
    ).fetchone()
    if kind is None or kind[0] != "table":
        raise FormatError("no FILE table: not an NSRL RDSv3 database")
    if str(kind[1] or "").lstrip().upper().startswith("CREATE VIRTUAL"):
        # A virtual table runs its module's code over data the file controls.
        raise FormatError("FILE is a virtual table: not an NSRL RDSv3 database")
    present = {str(row[1]).lower() for row in connection.execute("PRAGMA table_info(FILE)")}
    columns = [c for c in HASH_COLUMNS if c in present]
    if not columns:
        raise FormatError(f"the FILE table has no hash column ({', '.join(HASH_COLUMNS)})")
    return columns


def _record(number: int, columns: list[str], row: tuple[object, ...]) -> Record | str:
    hashes: dict[str, bytes] = {}
    problems: list[str] = []
    for signal, value in zip(columns, row, strict=True):
        if value is None or value == "":
            continue
        if not isinstance(value, str):
            problems.append(f"{signal} is {type(value).__name__}, not hex text")
            continue
        try:
            hashes[signal] = parse_hash(signal, value)
        except BadValue as exc:
            problems.append(str(exc))
    if problems:
        return "; ".join(problems)
    if not hashes:
        return "no hash value in any hash column"
    return Record(f"row-{number}", CATEGORY, hashes)


def parse(stream: BinaryIO, builder: ListBuilder, options: FormatOptions) -> None:
    with _database_path(stream) as path:
        try:
            connection = _connect(path)
        except _SQLITE_ERRORS as exc:
            raise FormatError(f"cannot open as SQLite: {exc}") from exc
        try:
            columns = _columns(connection)
            cursor = connection.execute(f"SELECT {', '.join(columns)} FROM FILE")
            number = 0
            while batch := cursor.fetchmany(_BATCH):
                for row in batch:
                    number += 1
                    result = _record(number, columns, row)
                    if isinstance(result, str):
                        builder.error(f"row {number}", result)
                    else:
                        builder.add(result)
        except _SQLITE_ERRORS as exc:
            # A corrupt or truncated file, a non-database that has the magic:
            # SQLite says which ("database disk image is malformed").
            raise FormatError(f"unreadable SQLite database: {exc}") from exc
        finally:
            connection.close()


def sniff(head: bytes) -> int:
    return CERTAIN if head.startswith(MAGIC) else 0


FORMAT = ListFormat(
    "nsrl-sqlite", parse, sniff, names=("*.db", "*.sqlite", "*.sqlite3"), kind="allow"
)
