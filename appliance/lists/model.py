"""The in-memory form of one loaded hash list, whatever file format it came from.

A list is a table of entries (id, category) and, per signal, a column of hash
values. Columns are stored sparsely: an entry may carry an MD5 and a PDQ but
no SHA-1, so each column keeps the entry row of each of its values.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from appliance.signals import SIGNALS


@dataclass(frozen=True, eq=False)
class SignalColumn:
    """All the values of one signal in one list.

    ``rows``: (M,) int64, host memory; the entry row (index into
    ``HashList.entry_ids``) of each value, ascending (a framed signal's
    entry has a value per frame: its rows repeat).
    ``values``: (M, signal.nbytes) uint8, host memory, C-contiguous; the raw
    hash bytes (not hex).

    Compared by identity (``eq=False``): element-wise array equality has no
    single truth value.
    """

    rows: NDArray[np.int64]
    values: NDArray[np.uint8]

    def __post_init__(self) -> None:
        if self.rows.ndim != 1 or self.values.ndim != 2 or len(self.rows) != len(self.values):
            raise ValueError(
                f"column shapes disagree: rows {self.rows.shape}, values {self.values.shape}"
            )
        if self.rows.dtype != np.int64 or self.values.dtype != np.uint8:
            raise ValueError(
                f"column dtypes must be int64/uint8, got {self.rows.dtype}/{self.values.dtype}"
            )

    def __len__(self) -> int:
        return len(self.rows)


@dataclass(frozen=True, eq=False)
class HashList:
    """One loaded list: immutable, shared by every snapshot that includes it.

    ``version`` is the first 16 hex digits of the SHA-256 of the list file's
    bytes, so two loads of the same file agree and any edit changes it.
    ``columns`` holds only the signals that have at least one value.
    """

    name: str
    version: str
    # Tuples when parsed; lazy sequences over a mapped file in compiled snapshots.
    entry_ids: Sequence[str]
    categories: Sequence[str]
    columns: Mapping[str, SignalColumn]

    def __post_init__(self) -> None:
        if not self.columns:
            return  # a compiled snapshot's list: its values live in its indexes
        if len(self.entry_ids) != len(self.categories):
            raise ValueError("entry_ids and categories must have one item per entry")
        for signal, column in self.columns.items():
            width = SIGNALS[signal].nbytes
            if column.values.shape[1] != width:
                raise ValueError(
                    f"{signal} values must be {width} bytes wide, got {column.values.shape[1]}"
                )
            if len(column) and not 0 <= int(column.rows.min()) <= int(column.rows.max()) < len(
                self.entry_ids
            ):
                raise ValueError(f"{signal} rows point outside the list's entries")

    @property
    def size(self) -> int:
        """Number of entries (rows of the list file)."""
        return len(self.entry_ids)

    def count(self, signal: str) -> int:
        """Number of ``signal`` values in this list (a framed signal's: entries
        with frames, not frames); 0 when the list has none."""
        column = self.columns.get(signal)
        if column is None:
            return 0
        if SIGNALS[signal].framed and len(column):
            return int(np.count_nonzero(np.diff(column.rows))) + 1
        return len(column)
