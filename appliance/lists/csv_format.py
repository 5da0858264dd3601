"""CSV hash lists: the simplest list format (see DESIGN.md, "List files").

A header row names the columns, case-insensitively and ignoring surrounding
blanks: one per signal of the registry (md5, sha1, sha256, pdq, photodna),
``id`` (or ``entry_id``) and ``category``; other columns are ignored. The
delimiter is a comma, a semicolon or a tab, whichever splits the header.
Each data row fills any subset of the hash columns, at least one.

A list is all or nothing: every bad row is collected with its line number
and, if there is any, the whole list is refused with one ListError, so an
operator fixes the file in one pass and a half-read list is never served.
"""

from __future__ import annotations

import csv
import hashlib
import io
import itertools
from collections.abc import Iterator
from dataclasses import dataclass, field
from types import MappingProxyType

import numpy as np

from appliance.errors import ItemFault, ListError
from appliance.lists.model import HashList, SignalColumn
from appliance.signals import SIGNALS

DELIMITERS = (",", ";", "\t")
# Header names of the non-hash columns -> the field they fill.
_META_COLUMNS = {"id": "id", "entry_id": "id", "category": "category"}
# Bad rows quoted in the error; the count covers all of them.
MAX_REPORTED = 20


@dataclass
class _Header:
    """Where each recognised column sits in a row (0-based field index)."""

    hashes: dict[str, int] = field(default_factory=dict)
    meta: dict[str, int] = field(default_factory=dict)
    width: int = 0


@dataclass
class _Builder:
    """Accumulates the rows of a list as they stream past."""

    entry_ids: list[str] = field(default_factory=list)
    categories: list[str] = field(default_factory=list)
    rows: dict[str, list[int]] = field(default_factory=dict)
    values: dict[str, list[bytes]] = field(default_factory=dict)


def _first_line(text: str) -> tuple[int, str] | None:
    """(1-based number, text) of the first non-blank physical line, or None."""
    for number, line in enumerate(io.StringIO(text, newline=""), start=1):
        if line.strip():
            return number, line
    return None


class _BadHeader(Exception):
    """The header row cannot be used; the whole list is refused."""


def _sniff(line: str) -> str:
    """The delimiter that splits the header line; quotes are honoured."""
    try:
        splitting = [d for d in DELIMITERS if len(next(csv.reader([line], delimiter=d), [])) > 1]
    except csv.Error as exc:
        raise _BadHeader(f"unreadable header: {exc}") from exc
    if len(splitting) > 1:
        names = " and ".join(repr(d) for d in splitting)
        raise _BadHeader(f"header line is ambiguous: it splits on {names}")
    # No delimiter at all: a one-column list, where any delimiter will do.
    return splitting[0] if splitting else DELIMITERS[0]


def _parse_header(cells: list[str]) -> _Header:
    header = _Header(width=len(cells))
    for index, cell in enumerate(cells):
        name = cell.strip().lower()
        if name in SIGNALS:
            target, key = header.hashes, name
        elif name in _META_COLUMNS:
            target, key = header.meta, _META_COLUMNS[name]
        else:
            continue
        if key in target:
            raise _BadHeader(f"header names the {key} column twice")
        target[key] = index
    if not header.hashes:
        raise _BadHeader(
            f"header has no hash column (expected one of {', '.join(SIGNALS)}; "
            f"delimiters tried: comma, semicolon, tab)"
        )
    return header


def _parse_row(line: int, cells: list[str], header: _Header, out: _Builder) -> str | None:
    """Add one data row to ``out``; return what is wrong with it instead, if anything."""
    if len(cells) > header.width and any(c.strip() for c in cells[header.width :]):
        # Extra empty cells are trailing delimiters, harmless; extra values
        # mean the row does not line up with the header.
        return f"{len(cells)} fields, but the header has {header.width}"
    problems: list[str] = []
    parsed: dict[str, bytes] = {}
    for signal, index in header.hashes.items():
        text = cells[index].strip() if index < len(cells) else ""
        if not text:
            continue
        try:
            parsed[signal] = SIGNALS[signal].parse(text)
        except ItemFault as fault:
            problems.append(fault.message)
    if problems:
        return "; ".join(problems)
    if not parsed:
        return "no hash value in any hash column"

    def meta(key: str) -> str:
        index = header.meta.get(key)
        return cells[index].strip() if index is not None and index < len(cells) else ""

    row = len(out.entry_ids)
    out.entry_ids.append(meta("id") or f"row-{line}")
    out.categories.append(meta("category"))
    for signal, value in parsed.items():
        out.rows.setdefault(signal, []).append(row)
        out.values.setdefault(signal, []).append(value)
    return None


class _Unreadable(Exception):
    """The CSV reader cannot go on (e.g. a field over the csv module's size limit)."""

    def __init__(self, line: int, why: str) -> None:
        super().__init__(why)
        self.line = line


def _records(text: str, first: int, delimiter: str) -> Iterator[tuple[int, list[str]]]:
    """(1-based line where the record starts, cells) for every record from line ``first``.

    Streams over the text; a quoted field may span lines, so the start line
    comes from the reader's count of lines consumed. Raises _Unreadable.
    """
    lines = itertools.islice(io.StringIO(text, newline=""), first - 1, None)
    reader = csv.reader(lines, delimiter=delimiter)
    consumed = first - 1
    while True:
        try:
            cells = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            raise _Unreadable(consumed + 1, f"unreadable CSV: {exc}") from exc
        yield consumed + 1, cells
        consumed = first - 1 + reader.line_num


def _refuse(where: str, bad: list[tuple[int, str]]) -> ListError:
    shown = "; ".join(f"line {line}: {why}" for line, why in bad[:MAX_REPORTED])
    more = f"; and {len(bad) - MAX_REPORTED} more" if len(bad) > MAX_REPORTED else ""
    rows = "row" if len(bad) == 1 else "rows"
    return ListError(f"{where}: {len(bad)} bad {rows}, list refused: {shown}{more}")


def parse_csv(data: bytes, name: str, source: str = "") -> HashList:
    """Parse a CSV list file's bytes into a HashList called ``name``.

    ``source`` (usually the path) names the file in error messages. Raises
    ListError for anything that is not a well-formed list: not UTF-8, empty,
    a header without a hash column or with an ambiguous delimiter, or any bad
    row (all of them counted, the first MAX_REPORTED quoted with line numbers).
    """
    where = f"list {name!r}" + (f" ({source})" if source else "")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise ListError(f"{where}: not UTF-8 text (line {line}, byte {exc.start})") from exc
    found = _first_line(text)
    if found is None:
        raise ListError(f"{where}: empty list file (no header row)")
    first, header_line = found
    out = _Builder()
    bad: list[tuple[int, str]] = []
    try:
        records = _records(text, first, _sniff(header_line))
        header = _parse_header(next(records, (first, []))[1])
        for line, cells in records:
            if not any(c.strip() for c in cells):
                continue  # blank line (or only delimiters)
            problem = _parse_row(line, cells, header, out)
            if problem is not None:
                bad.append((line, problem))
    except _BadHeader as exc:
        raise ListError(f"{where}: line {first}: {exc}") from exc
    except _Unreadable as exc:
        # Nothing after this point can be read: refuse with what was found.
        bad.append((exc.line, str(exc)))
    if bad:
        raise _refuse(where, bad)
    columns = {}
    for signal, values in out.values.items():
        rows = np.asarray(out.rows[signal], dtype=np.int64)
        packed = np.frombuffer(b"".join(values), dtype=np.uint8).reshape(
            len(values), SIGNALS[signal].nbytes
        )
        # Read-only: a list is shared by concurrent snapshots. (frombuffer of
        # bytes is read-only already; rows is made so explicitly.)
        rows.flags.writeable = False
        columns[signal] = SignalColumn(rows=rows, values=packed)
    return HashList(
        name=name,
        version=hashlib.sha256(data).hexdigest()[:16],
        entry_ids=tuple(out.entry_ids),
        categories=tuple(out.categories),
        # Registry order, so the same file always gives the same mapping.
        columns=MappingProxyType({s: columns[s] for s in SIGNALS if s in columns}),
    )
