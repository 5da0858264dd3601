"""Delimited lists (format "csv"): a header row, then one entry per row.

Columns are named case-insensitively, surrounding blanks ignored: one per
signal of the registry (md5, sha1, sha256, pdq, phash, dhash, ahash, whash,
photodna, tmk, vpdq; also "SHA-1"/"SHA-256"), the entry id (``id``, ``entry_id``,
``Image ID`` or ``MediaID``), ``category``, and ``Baseline``; others are
ignored. The delimiter is a comma, a semicolon or a tab, whichever splits
the header. Each row fills any subset of the hash columns, at least one; an
entry without an id is called "row-N" after its line.

This also reads the law-enforcement export layout
``MD5;SHA1;ZZ40;PhotoDNA;Lace;Image ID;...;Baseline``: lowercase hex
digests, PhotoDNA as 288 hex digits (base64 also accepted), and a Baseline
flag (Y/N, Yes/No, True/False, 1/0; blank is no). Video cells are large:
``tmk`` is a ``.tmk`` file in base64 (351 KB), ``vpdq`` python-threatexchange's
JSON array of frames (quote the cell: it holds commas). Every row is an entry,
whatever its flag: the flag becomes the category, "baseline" when set and ""
when not, so matches can still tell baseline material apart. A category
column, when there is one, wins over the flag (which must still be valid).

The same engine, with its own column names, reads NSRL's NSRLFile.txt (see
``nsrl``).
"""

from __future__ import annotations

import csv
import itertools
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import BinaryIO

from appliance.lists.formats import PLAUSIBLE, ListFormat
from appliance.lists.formats.lines import MAX_LINE, head_lines, text_lines
from appliance.lists.formats.values import BadValue, hashes_or_problems, parse_flag
from appliance.lists.records import FormatError, FormatOptions, ListBuilder, Record
from appliance.signals import SIGNALS

DELIMITERS = (",", ";", "\t")
# The csv module refuses fields over 128 KiB by default; a TMK cell is 351 KB.
# Its limit is process-wide: raised (never lowered) to a line's own limit.
csv.field_size_limit(max(csv.field_size_limit(), MAX_LINE))
ID, CATEGORY, BASELINE = "id", "category", "baseline"

# Header name (lowercase, stripped) -> field: a signal name, ID, CATEGORY or BASELINE.
CSV_FIELDS: Mapping[str, str] = {
    # Each signal's name and aliases (SignalType.aliases: "sha-1", ...).
    **{alias: s.name for s in SIGNALS.values() for alias in (s.name, *s.aliases)},
    "id": ID,
    "entry_id": ID,
    "image id": ID,
    "mediaid": ID,
    "category": CATEGORY,
    "baseline": BASELINE,
}


@dataclass(frozen=True)
class Dialect:
    """What distinguishes one delimited format from another."""

    fields: Mapping[str, str]
    # Category of every entry, overriding the columns (NSRL: "nsrl").
    category: str | None = None
    # "replace" where undecodable bytes can only be in ignored columns.
    errors: str = "strict"


CSV = Dialect(CSV_FIELDS)


@dataclass
class _Header:
    """Where each recognised column sits in a row (0-based field index)."""

    hashes: dict[str, int] = field(default_factory=dict)
    meta: dict[str, int] = field(default_factory=dict)
    width: int = 0


def _sniff_delimiter(line: str) -> str:
    """The delimiter that splits the header line; quotes are honoured."""
    try:
        splitting = [d for d in DELIMITERS if len(next(csv.reader([line], delimiter=d), [])) > 1]
    except csv.Error as exc:
        raise FormatError(f"unreadable header: {exc}") from exc
    if len(splitting) > 1:
        names = " and ".join(repr(d) for d in splitting)
        raise FormatError(f"header line is ambiguous: it splits on {names}")
    # No delimiter at all: a one-column list, where any delimiter will do.
    return splitting[0] if splitting else DELIMITERS[0]


def _parse_header(cells: list[str], dialect: Dialect) -> _Header:
    header = _Header(width=len(cells))
    for index, cell in enumerate(cells):
        key = dialect.fields.get(cell.strip().lower())
        if key is None:
            continue
        target = header.hashes if key in SIGNALS else header.meta
        if key in target:
            raise FormatError(f"header names the {key} column twice")
        target[key] = index
    if not header.hashes:
        raise FormatError(
            f"header has no hash column (expected one of {', '.join(SIGNALS)}; "
            f"delimiters tried: comma, semicolon, tab)"
        )
    return header


def _parse_row(line: int, cells: list[str], header: _Header, dialect: Dialect) -> Record | str:
    """The row's record, or what is wrong with it."""
    if len(cells) > header.width and any(c.strip() for c in cells[header.width :]):
        # Extra empty cells are trailing delimiters, harmless; extra values
        # mean the row does not line up with the header.
        return f"{len(cells)} fields, but the header has {header.width}"

    def cell(index: int | None) -> str:
        return cells[index].strip() if index is not None and index < len(cells) else ""

    parsed, problems = hashes_or_problems({s: cell(i) for s, i in header.hashes.items()})
    category = cell(header.meta.get(CATEGORY))
    if BASELINE in header.meta:
        try:
            baseline = parse_flag("Baseline", cell(header.meta[BASELINE]))
        except BadValue as exc:
            problems.append(str(exc))
        else:
            if CATEGORY not in header.meta:
                category = "baseline" if baseline else ""
    if problems:
        return "; ".join(problems)
    if not parsed:
        return "no hash value in any hash column"
    if dialect.category is not None:
        category = dialect.category
    return Record(cell(header.meta.get(ID)) or f"row-{line}", category, parsed)


class _Unreadable(Exception):
    """The csv reader cannot go on (e.g. a field over its size limit)."""

    def __init__(self, line: int, why: str) -> None:
        super().__init__(why)
        self.line = line


def _records(lines: Iterator[str], first: int, delimiter: str) -> Iterator[tuple[int, list[str]]]:
    """(1-based line where the record starts, cells) for every record.

    A quoted field may span lines, so the start line comes from the reader's
    count of lines consumed. Raises _Unreadable.
    """
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


def parse_delimited(stream: BinaryIO, builder: ListBuilder, dialect: Dialect) -> None:
    """Stream a delimited list into ``builder``."""
    lines = text_lines(stream, errors=dialect.errors)
    found = next(((number, line) for number, line in lines if line.strip()), None)
    if found is None:
        raise FormatError("empty list file (no header row)")
    first, header_line = found
    try:
        delimiter = _sniff_delimiter(header_line)
    except FormatError as exc:
        raise FormatError(f"line {first}: {exc}") from exc
    records = _records(itertools.chain([header_line], (t for _, t in lines)), first, delimiter)
    try:
        try:
            header = _parse_header(next(records, (first, []))[1], dialect)
        except FormatError as exc:
            raise FormatError(f"line {first}: {exc}") from exc
        for line, cells in records:
            if not any(c.strip() for c in cells):
                continue  # blank line (or only delimiters)
            result = _parse_row(line, cells, header, dialect)
            if isinstance(result, str):
                builder.error(f"line {line}", result)
            else:
                builder.add(result)
    except _Unreadable as exc:
        # Nothing after this point can be read: refuse with what was found.
        builder.error(f"line {exc.line}", str(exc))


def parse(stream: BinaryIO, builder: ListBuilder, options: FormatOptions) -> None:
    parse_delimited(stream, builder, CSV)


def header_cells(head: bytes) -> list[str]:
    """The first non-blank line's cells under every delimiter, lowercased, for sniffers."""
    lines = head_lines(head, 1)
    cells: list[str] = []
    for delimiter in DELIMITERS:
        try:
            cells += next(csv.reader(lines, delimiter=delimiter), [])
        except csv.Error:
            continue
    return [c.strip().lower() for c in cells]


def sniff(head: bytes) -> int:
    return PLAUSIBLE if any(c in CSV_FIELDS for c in header_cells(head)) else 0


FORMAT = ListFormat("csv", parse, sniff, names=("*.csv", "*.tsv"))
