"""The snapshot container: round trip, mapping, and refusal of damaged files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from appliance.errors import ListError
from appliance.index import snapfile


def _arrays() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(1)
    return {
        "a": rng.integers(0, 256, (1000, 32), dtype=np.uint8),
        "b": np.arange(777, dtype=np.uint32),
        "empty": np.zeros((0, 16), dtype=np.uint8),
        "c": rng.integers(0, 2**63, (5, 4), dtype=np.uint64),
    }


def test_round_trip_maps_read_only(tmp_path: Path) -> None:
    path = tmp_path / "x.snap"
    arrays = _arrays()
    size = snapfile.write(path, {"lists": ["l1"], "n": 3}, arrays)
    assert size == path.stat().st_size and snapfile.is_snapshot(path)
    opened = snapfile.open_snapshot(path)
    assert opened.meta == {"lists": ["l1"], "n": 3}
    for name, array in arrays.items():
        got = opened.arrays[name]
        assert got.dtype == array.dtype and np.array_equal(got, array)
        assert not got.flags.writeable
        if got.size:
            assert got.ctypes.data % 64 == 0
    snapfile.verify(path)


def test_damaged_files_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "x.snap"
    snapfile.write(path, {}, _arrays())
    data = path.read_bytes()
    cases = {
        "truncated": data[:-10],
        "bad magic": b"XXXXXXXX" + data[8:],
        "header only": data[:50],
        "appended": data + b"\0",
    }
    for what, damaged in cases.items():
        path.write_bytes(damaged)
        with pytest.raises(ListError):
            snapfile.open_snapshot(path)
        assert what
    flipped = bytearray(data)
    flipped[4096 + 10] ^= 0xFF  # inside the first array: only verify sees it
    path.write_bytes(bytes(flipped))
    snapfile.open_snapshot(path)
    with pytest.raises(ListError, match="checksum"):
        snapfile.verify(path)
    manifest_hit = bytearray(data)
    manifest_hit[-5] ^= 0x01
    path.write_bytes(bytes(manifest_hit))
    with pytest.raises(ListError, match="manifest"):
        snapfile.open_snapshot(path)
    assert not snapfile.is_snapshot(tmp_path / "missing")
