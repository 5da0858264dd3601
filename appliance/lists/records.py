"""What every list-format parser produces, and the builder that turns it into a HashList.

A parser reads a list file as a stream and hands each row to a ``ListBuilder``
as a ``Record`` (an entry to add, or a deletion), or reports the row as bad
with ``ListBuilder.error``. The builder applies deletions in file order and,
at the end, either builds the immutable ``HashList`` or refuses the list
whole: a list with any bad row is never half-served.

A parser that cannot go on at all (not UTF-8, not well-formed XML, no usable
header) raises ``FormatError``; ``run_parser`` turns it into the list's
ListError, after any bad rows already found.
"""

from __future__ import annotations

from array import array
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import BinaryIO

import numpy as np
from numpy.typing import NDArray

from appliance.errors import ListError
from appliance.lists.model import HashList, SignalColumn
from appliance.signals import SIGNALS

# Bad rows quoted in the refusal; the count covers all of them.
MAX_REPORTED = 20


@dataclass(frozen=True)
class Record:
    """One row of a list file.

    ``hashes``: signal name -> raw hash bytes (``Signal.parse`` output, the
    signal's width, or whole frames of a framed signal). ``delete`` marks a
    deletion (NCMEC ``deletedImage``, StopNCII withdrawn/deleted): it removes
    matching earlier entries.
    """

    entry_id: str
    category: str
    hashes: Mapping[str, bytes]
    delete: bool = False


@dataclass(frozen=True)
class FormatOptions:
    """What a list file cannot say about itself; given by configuration.

    ``signal``: the signal of a plain hash-per-line file (``text``, or
    ``threatexchange`` rows without a type), when its length does not tell.
    """

    signal: str | None = None


class FormatError(Exception):
    """The file cannot be read as its format at all; the parser stops.

    The message names the place ("line 3: ...") but not the list: the
    builder adds that.
    """


class ListBuilder:
    """Accumulates records in order and builds a HashList.

    A delete removes earlier entries with the same entry_id (and, when it
    carries hashes, entries having any of those hash values for the same
    signal); adds after a delete are kept. Deleting what is not there is not
    an error: feeds delete entries that an earlier page added.
    """

    def __init__(self, name: str, source: str) -> None:
        self.name = name
        self.source = source
        self._ids: list[str] = []
        self._categories: list[str] = []
        self._alive = bytearray()
        # Per signal, the entry row of each value and the values packed end to
        # end: a few bytes per hash instead of a Python object per hash, which
        # matters for lists of tens of millions of rows (NSRL).
        self._rows: dict[str, array[int]] = {}
        self._values: dict[str, bytearray] = {}
        # Built at the first delete only: most lists never delete, and these
        # indexes cost a dict entry per hash.
        self._by_id: dict[str, list[int]] | None = None
        self._by_value: dict[tuple[str, bytes], list[int]] | None = None
        self._bad = 0
        self._quoted: list[str] = []

    @property
    def where(self) -> str:
        """The list as error messages name it."""
        return f"list {self.name!r}" + (f" ({self.source})" if self.source else "")

    @property
    def bad_rows(self) -> int:
        return self._bad

    def add(self, record: Record) -> None:
        """Apply one record. A malformed record (unknown signal, wrong width, an
        add without hashes) is a parser bug, not a bad row: ValueError."""
        for signal, value in record.hashes.items():
            known = SIGNALS.get(signal)
            if known is None or not known.fits(len(value)):
                raise ValueError(f"record {record.entry_id!r}: bad {signal} value {value!r}")
        if not (_encodable(record.entry_id) and _encodable(record.category)):
            # JSON's "\ud800" escapes decode to lone surrogates, which no UTF-8
            # answer (gRPC, the audit log, a compiled snapshot) can carry: a
            # bad row here, not a failed request later. !a: the report must
            # be encodable too.
            self.error(f"entry {record.entry_id!a}", "id or category is not valid Unicode "
                       "(a lone surrogate, from a \\u escape)")
            return
        if record.delete:
            self._delete(record)
            return
        if not record.hashes:
            raise ValueError(f"record {record.entry_id!r} adds an entry without hashes")
        row = len(self._ids)
        self._ids.append(record.entry_id)
        self._categories.append(record.category)
        self._alive.append(1)
        for signal, value in record.hashes.items():
            # A framed value (vPDQ) is one row per frame, all of this entry.
            records = len(value) // SIGNALS[signal].nbytes
            self._rows.setdefault(signal, array("q")).extend([row] * records)
            self._values.setdefault(signal, bytearray()).extend(value)
        if self._by_id is not None and self._by_value is not None:
            self._by_id.setdefault(record.entry_id, []).append(row)
            for key in record.hashes.items():
                self._by_value.setdefault(key, []).append(row)

    def _index(self) -> tuple[dict[str, list[int]], dict[tuple[str, bytes], list[int]]]:
        if self._by_id is None or self._by_value is None:
            by_id: dict[str, list[int]] = {}
            for row, entry_id in enumerate(self._ids):
                by_id.setdefault(entry_id, []).append(row)
            by_value: dict[tuple[str, bytes], list[int]] = {}
            for signal, rows in self._rows.items():
                width, packed = SIGNALS[signal].nbytes, self._values[signal]
                for i, row in enumerate(rows):
                    key = (signal, bytes(packed[i * width : (i + 1) * width]))
                    by_value.setdefault(key, []).append(row)
            self._by_id, self._by_value = by_id, by_value
        return self._by_id, self._by_value

    def _delete(self, record: Record) -> None:
        by_id, by_value = self._index()
        # pop: the rows are gone for good, and a later add of the same id or
        # value starts a fresh index entry that this delete must not reach.
        for row in by_id.pop(record.entry_id, ()):
            self._alive[row] = 0
        for key in record.hashes.items():
            for row in by_value.pop(key, ()):
                self._alive[row] = 0

    def error(self, where: str, message: str) -> None:
        """Report a bad row (``where`` as "line 7" / "record 3"); the list will be refused."""
        self._bad += 1
        if len(self._quoted) < MAX_REPORTED:
            self._quoted.append(f"{where}: {message}")

    def _summary(self) -> str:
        rows = "row" if self._bad == 1 else "rows"
        more = f"; and {self._bad - MAX_REPORTED} more" if self._bad > MAX_REPORTED else ""
        return f"{self._bad} bad {rows}, list refused: {'; '.join(self._quoted)}{more}"

    def fail(self, message: str) -> ListError:
        """The ListError for a file that could not be read to its end (FormatError)."""
        before = f"; before that, {self._summary()}" if self._bad else ""
        return ListError(f"{self.where}: {message}{before}")

    def build(self, version: str) -> HashList:
        """The list, or ListError if any bad row was reported."""
        if self._bad:
            raise ListError(f"{self.where}: {self._summary()}")
        alive = np.frombuffer(self._alive, dtype=np.uint8).astype(bool)
        # New row of each surviving entry (deleted ones are dropped, order kept).
        renumber = np.cumsum(alive, dtype=np.int64) - 1
        columns: dict[str, SignalColumn] = {}
        for signal in SIGNALS:  # registry order: the same file gives the same mapping
            if signal not in self._rows:
                continue
            rows = np.frombuffer(self._rows[signal], dtype=np.int64)
            values = np.frombuffer(self._values[signal], dtype=np.uint8).reshape(
                len(rows), SIGNALS[signal].nbytes
            )
            keep = alive[rows]
            # Fancy indexing copies, so the arrays own their memory, apart
            # from the builder's buffers; read-only because a list is shared
            # by concurrent snapshots.
            kept_rows, kept_values = renumber[rows[keep]], values[keep]
            if len(kept_rows):
                kept_rows.flags.writeable = False
                kept_values.flags.writeable = False
                columns[signal] = SignalColumn(rows=kept_rows, values=kept_values)
        everything = bool(alive.all())
        return HashList(
            name=self.name,
            version=version,
            entry_ids=tuple(self._ids) if everything else _compress(self._ids, alive),
            categories=(
                tuple(self._categories) if everything else _compress(self._categories, alive)
            ),
            columns=MappingProxyType(columns),
        )


def _encodable(text: str) -> bool:
    if text.isascii():  # nearly always: no second look
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _compress(items: list[str], alive: NDArray[np.bool_]) -> tuple[str, ...]:
    return tuple(item for item, keep in zip(items, alive.tolist(), strict=True) if keep)


# (the file as a binary stream, where the rows go, configuration) -> None.
# Reads the stream incrementally; reports bad rows to the builder and raises
# FormatError when it cannot go on.
Parser = Callable[[BinaryIO, ListBuilder, FormatOptions], None]


def run_parser(
    parser: Parser, stream: BinaryIO, builder: ListBuilder, options: FormatOptions
) -> None:
    """Run ``parser`` over ``stream``; a FormatError becomes the list's ListError."""
    try:
        parser(stream, builder, options)
    except FormatError as exc:
        raise builder.fail(str(exc)) from exc
