"""Exact-match index for fixed-width hash values (digests, PhotoDNA vectors).

Keys are kept sorted as NumPy void scalars (``V{W}``): a void compares its W
bytes as raw memory, every byte counted. A fixed-width bytes dtype (``S{W}``)
would be the obvious choice, but NumPy treats ``S`` values as NUL-padded
strings and drops trailing zero bytes when they come out, a trap for digests
that end in 0x00; the void view has no such notion.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

_EMPTY_ROWS: NDArray[np.int64] = np.empty(0, dtype=np.int64)
_EMPTY_ROWS.flags.writeable = False


def _as_keys(values: NDArray[np.uint8], width: int, what: str) -> NDArray[np.void]:
    """(N, width) uint8 -> (N,) V{width}, one void key per row (a copy if needed)."""
    if values.dtype != np.uint8 or values.ndim != 2 or values.shape[1] != width:
        raise ValueError(f"{what} must be (N, {width}) uint8, got {values.shape} {values.dtype}")
    contiguous = np.ascontiguousarray(values)
    return contiguous.view(np.dtype(f"V{width}")).reshape(len(contiguous))


class ExactIndex:
    """All rows whose value equals a query, for a batch of queries at once.

    Built from ``values`` (M, W) uint8 and ``rows`` (M,) int64 (the caller's
    id of each value; duplicates of a value are kept, each with its row).
    Host memory, NumPy only; O(M log M) to build, O(Q log M) to look up.
    """

    def __init__(self, values: NDArray[np.uint8], rows: NDArray[np.int64]) -> None:
        if values.ndim != 2:
            raise ValueError(f"values must be (M, W) uint8, got shape {values.shape}")
        if rows.shape != (values.shape[0],):
            raise ValueError(f"rows must be ({values.shape[0]},), got {rows.shape}")
        self.width = int(values.shape[1])
        keys = _as_keys(values, self.width, "values")
        rows = np.asarray(rows, dtype=np.int64)
        # Sort by row first, then stably by key: equal keys keep ascending rows,
        # so lookups return rows in a deterministic order.
        by_row = np.argsort(rows, kind="stable")
        order = by_row[np.argsort(keys[by_row], kind="stable")]
        self._keys: NDArray[np.void] = keys[order]
        self._rows: NDArray[np.int64] = rows[order]
        self._rows.flags.writeable = False

    def __len__(self) -> int:
        return len(self._rows)

    def lookup(self, queries: NDArray[np.uint8]) -> list[NDArray[np.int64]]:
        """For each query row of ``queries`` (Q, W) uint8, the (k,) int64 rows
        whose value equals it, ascending; an empty array when there is none.

        The returned arrays are read-only views into the index.
        """
        keys = _as_keys(queries, self.width, "queries")
        left = np.searchsorted(self._keys, keys, side="left")
        right = np.searchsorted(self._keys, keys, side="right")
        return [
            self._rows[lo:hi] if hi > lo else _EMPTY_ROWS
            for lo, hi in zip(left.tolist(), right.tolist(), strict=True)
        ]
