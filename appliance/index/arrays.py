"""What the indexes held as plain arrays share (``ExactIndex``, ``MultiIndexHamming``).

Such an index is a few named arrays, besides its ``width`` (bytes per value):
``rows`` (N,), the caller's row of each stored position, uint32 when every row
fits (int64 otherwise), and one or more bucket directories (offsets that rise
from 0 to N) into the sorted entries. ``to_arrays`` gives them without a copy,
for a compiled snapshot to save; ``from_arrays`` adopts them again, read-only
memory maps welcome, checking their shapes, dtypes and the directories' bounds
(compiled lookups index by those without bounds checks) but not reading the
entries' arrays (a 10M-entry map stays cold: the snapshot's checksums vouch
for them, ``lists inspect --verify``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar, Self

import numpy as np
from numpy.typing import NDArray

from appliance.index.hamming import check_bounds

U32_MAX = (1 << 32) - 1

Rows = NDArray[np.uint32] | NDArray[np.int64]
_ROW_DTYPES = (np.dtype(np.uint32), np.dtype(np.int64))


def check_values(values: NDArray[np.uint8], rows: NDArray[np.int64], min_width: int = 0) -> None:
    """ValueError unless values is (M, W >= min_width) and rows is (M,)."""
    if values.ndim != 2 or values.shape[1] < min_width:
        raise ValueError(f"values must be (M, W) uint8, got shape {values.shape}")
    if rows.shape != (values.shape[0],):
        raise ValueError(f"rows must be ({values.shape[0]},), got {rows.shape}")


def fits_u32(rows: NDArray[np.int64]) -> bool:
    """True when every row can be stored as uint32 (0 <= row < 2**32)."""
    return len(rows) == 0 or (int(rows.min()) >= 0 and int(rows.max()) <= U32_MAX)


def index_dtype(n: int) -> type[np.uint32] | type[np.int64]:
    """uint32 for positions and offsets of up to 2**32 - 1 entries, else int64."""
    return np.uint32 if n <= U32_MAX else np.int64


class ArrayIndex:
    """An index held as named arrays: ``ARRAYS`` (their names, in ``to_arrays``
    order, ``rows`` among them) and ``BOUNDS`` (those that are bucket
    directories). A subclass sets its arrays in ``_adopt`` and says in
    ``_layout`` what they must be."""

    ARRAYS: ClassVar[tuple[str, ...]]
    BOUNDS: ClassVar[tuple[str, ...]]
    width: int
    _arrays: dict[str, NDArray[Any]]

    def _adopt(self, width: int, arrays: dict[str, NDArray[Any]]) -> None:
        """Take ``arrays`` (one per name of ARRAYS), made read-only, as the index's."""
        self.width = width
        for a in arrays.values():
            a.flags.writeable = False
        self._arrays = arrays

    @classmethod
    def _layout(
        cls, width: int, n: int, arrays: Mapping[str, NDArray[Any]]
    ) -> dict[str, tuple[np.dtype[Any], tuple[int, ...]]]:
        """The dtype and shape each array but ``rows`` must have, for n entries."""
        raise NotImplementedError

    def __len__(self) -> int:
        return len(self._arrays["rows"])

    @property
    def nbytes(self) -> int:
        """Bytes held by the index arrays (all of its memory but a few small objects)."""
        return sum(a.nbytes for a in self.to_arrays().values())

    def to_arrays(self) -> dict[str, NDArray[Any]]:
        """The index as plain arrays (no copy), to save and memory-map; see from_arrays."""
        return {"width": np.array([self.width], dtype=np.int64), **self._arrays}

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, NDArray[Any]]) -> Self:
        """The index whose ``to_arrays()`` gave ``arrays``, without copy or rebuild.

        The arrays may be read-only memory maps. Their shapes and dtypes are
        checked, and the bucket bounds (small, read whole); the entries' arrays
        are not read here (a 10M-entry map stays cold): their contents are
        trusted, as the snapshot's checksums vouch (``lists inspect --verify``).
        """
        width = int(arrays["width"][0])
        # np.asarray: a plain ndarray view of a np.memmap (which numba may not take).
        got = {name: np.asarray(arrays[name]) for name in cls.ARRAYS}
        rows = got["rows"]
        if rows.ndim != 1 or rows.dtype not in _ROW_DTYPES:
            raise ValueError(f"rows must be (N,) uint32 or int64, got {rows.shape} {rows.dtype}")
        n = len(rows)
        for name, (dtype, shape) in cls._layout(width, n, got).items():
            a = got[name]
            if a.dtype != dtype or a.shape != shape:
                raise ValueError(f"{name} must be {shape} {dtype}, got {a.shape} {a.dtype}")
        for name, a in got.items():
            if not a.flags.c_contiguous:
                raise ValueError(f"{name} must be C-contiguous")
        for name in cls.BOUNDS:
            check_bounds(name, got[name], n)
        index = cls.__new__(cls)
        index._adopt(width, got)
        return index
