"""The compiled snapshot file: named arrays behind a checksummed header, mapped
with mmap so that opening costs no parsing and no copying.

Layout (little-endian):

    0   8 B   magic b"BLSNAP01"
    8   u32   format version (FORMAT_VERSION)
    12  u32   reserved (0)
    16  u64   manifest offset
    24  u64   manifest length
    32  u64   total file length (a truncated file is refused on this alone)
    40  32 B  SHA-256 of the manifest
    72  ...   zero padding up to 4096
    4096 ...  the arrays, each at a 64-byte aligned offset
    ...       the manifest: UTF-8 JSON {"meta": {...}, "arrays": {name: {offset,
              dtype, shape, crc32}}}

Opening checks the magic, the version, the length and the manifest's digest
and maps every array read-only (milliseconds, whatever the size). ``verify``
also checks each array's CRC-32, reading the file with plain reads rather
than through the mapping, so the check does not make the arrays resident.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import mmap
import os
import struct
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from appliance.errors import ListError

MAGIC = b"BLSNAP01"
FORMAT_VERSION = 1
_HEADER = struct.Struct("<8sIIQQQ32s")
_DATA_START = 4096
_ALIGN = 64
_READ_CHUNK = 8 << 20


@dataclass
class SnapshotFile:
    path: str
    meta: dict[str, Any]
    arrays: dict[str, NDArray[Any]]
    _map: mmap.mmap | None
    # name -> (offset, dtype, shape): for reading an array with pread, not the map.
    regions: dict[str, tuple[int, np.dtype[Any], tuple[int, ...]]]

    def reader(self, name: str) -> FileArray:
        """Array ``name`` read element by element with pread: for data that only
        hits need (entry ids), which then never becomes resident. Through the
        map, the kernel's fault-around would map 16 pages around every read."""
        offset, dtype, shape = self.regions[name]
        return FileArray(os.open(self.path, os.O_RDONLY), offset, dtype, shape)

    def close(self) -> None:
        # The arrays stay valid while referenced: numpy keeps the mmap alive.
        self.arrays = {}
        self._map = None


class FileArray:
    """A 1-D array on disk, read with pread: ``a[i]`` and ``a.read(i, j)``."""

    def __init__(self, fd: int, offset: int, dtype: np.dtype[Any], shape: tuple[int, ...]):
        self._fd, self._offset, self.dtype, self.shape = fd, offset, dtype, shape

    def __len__(self) -> int:
        return self.shape[0]

    def read(self, start: int, stop: int) -> NDArray[Any]:
        """Items ``start`` to ``stop`` (clipped to the array, as a slice would be):
        never the bytes of whatever follows the array in the file."""
        n = self.shape[0]
        start, stop = max(0, min(start, n)), max(0, min(stop, n))
        size = self.dtype.itemsize
        data = os.pread(self._fd, max(0, stop - start) * size, self._offset + start * size)
        return np.frombuffer(data, dtype=self.dtype)

    def __getitem__(self, i: int) -> Any:
        n = self.shape[0]
        if not -n <= i < n:
            raise IndexError(f"index {i} out of range for an array of {n}")
        return self.read(i % n, i % n + 1)[0]

    def __del__(self) -> None:
        with contextlib.suppress(OSError):
            os.close(self._fd)


def _aligned(n: int) -> int:
    return (n + _ALIGN - 1) // _ALIGN * _ALIGN


def write(path: str | Path, meta: Mapping[str, Any], arrays: Mapping[str, NDArray[Any]]) -> int:
    """Write ``arrays`` and ``meta`` (JSON-able) to ``path`` atomically (a
    temporary file renamed into place); returns the file's size."""
    target = Path(path)
    tmp = target.with_name(target.name + ".tmp")
    entries: dict[str, dict[str, Any]] = {}
    with tmp.open("wb") as f:
        f.write(b"\0" * _DATA_START)
        offset = _DATA_START
        for name, array in arrays.items():
            data = np.ascontiguousarray(array)
            pad = _aligned(offset) - offset
            f.write(b"\0" * pad)
            offset += pad
            raw = data.view(np.uint8).reshape(-1).data if data.size else memoryview(b"")
            f.write(raw)
            entries[name] = {
                "offset": offset, "dtype": data.dtype.str, "shape": list(data.shape),
                "nbytes": data.nbytes, "crc32": zlib.crc32(raw),
            }
            offset += data.nbytes
        manifest = json.dumps({"meta": dict(meta), "arrays": entries},
                              separators=(",", ":")).encode()
        f.write(manifest)
        total = offset + len(manifest)
        f.seek(0)
        f.write(_HEADER.pack(MAGIC, FORMAT_VERSION, 0, offset, len(manifest), total,
                             hashlib.sha256(manifest).digest()))
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, target)
    return total


def is_snapshot(path: str | Path) -> bool:
    try:
        # O_NONBLOCK: a FIFO configured as a list must not hang this peek.
        with open(path, "rb", opener=lambda p, flags: os.open(p, flags | os.O_NONBLOCK)) as f:
            return f.read(len(MAGIC)) == MAGIC
    except OSError:
        return False


def _manifest(path: str, f: Any) -> tuple[dict[str, Any], int]:
    head = f.read(_HEADER.size)
    if len(head) < _HEADER.size:
        raise ListError(f"snapshot {path}: truncated header ({len(head)} bytes)")
    magic, version, _, m_offset, m_length, total, digest = _HEADER.unpack(head)
    if magic != MAGIC:
        raise ListError(f"snapshot {path}: not a compiled snapshot (bad magic)")
    if version != FORMAT_VERSION:
        raise ListError(f"snapshot {path}: format version {version}, this build reads "
                        f"{FORMAT_VERSION}; compile it again")
    size = os.fstat(f.fileno()).st_size
    if size != total:
        raise ListError(f"snapshot {path}: {size} bytes on disk, header says {total} "
                        "(truncated or appended to)")
    if m_offset < _DATA_START or m_offset + m_length != total:
        # The writer puts the manifest last, after the arrays: anything else
        # is damage (and a seek or read past 2**63 would not even be an OSError).
        raise ListError(f"snapshot {path}: the header puts the manifest at {m_offset} "
                        f"({m_length} bytes), not at the end of the file")
    f.seek(m_offset)
    manifest = f.read(m_length)
    if hashlib.sha256(manifest).digest() != digest:
        raise ListError(f"snapshot {path}: manifest checksum mismatch (corrupt)")
    try:
        parsed = json.loads(manifest)
    except (ValueError, RecursionError) as exc:  # not UTF-8, not JSON, nested too deep
        raise ListError(f"snapshot {path}: the manifest is not JSON ({exc})") from exc
    _check_manifest(path, parsed, m_offset)
    return parsed, size


def _natural(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _check_manifest(path: str, parsed: Any, data_end: int) -> None:
    """ListError unless ``parsed`` is a manifest as ``write`` makes them: the
    digest says the manifest is intact, not that it was written by ``write``
    (it may be made by hand or by another build), and what maps the arrays
    trusts every offset, dtype and shape checked here."""

    def malformed(why: str) -> ListError:
        return ListError(f"snapshot {path}: malformed manifest: {why}")

    if not isinstance(parsed, dict) or not isinstance(parsed.get("meta"), dict):
        raise malformed("no 'meta' object")
    arrays = parsed.get("arrays")
    if not isinstance(arrays, dict):
        raise malformed("no 'arrays' object")
    for name, entry in arrays.items():
        if not isinstance(entry, dict):
            raise malformed(f"array {name!r} is not an object")
        offset: Any = entry.get("offset")
        nbytes: Any = entry.get("nbytes")
        shape: Any = entry.get("shape")
        if not (_natural(offset) and _natural(nbytes) and _natural(entry.get("crc32"))):
            raise malformed(f"array {name!r} has no offset, nbytes and crc32 of whole numbers")
        if not isinstance(shape, list) or len(shape) > 8 or not all(map(_natural, shape)):
            raise malformed(f"array {name!r} has no shape of at most 8 whole numbers")
        if not isinstance(entry.get("dtype"), str):  # np.dtype(None) is float64
            raise malformed(f"array {name!r} has no dtype")
        try:
            dtype = np.dtype(entry["dtype"])
        except (TypeError, ValueError, SyntaxError) as exc:
            raise malformed(f"array {name!r} has no dtype ({exc})") from exc
        if dtype.kind not in "biuf" or dtype.fields is not None or dtype.subdtype is not None:
            raise malformed(f"array {name!r} is of dtype {dtype.str}, not a number")
        if math.prod(shape) * dtype.itemsize != nbytes:
            raise malformed(f"array {name!r} of shape {shape} {dtype.str} is not {nbytes} bytes")
        if offset < _DATA_START or offset + nbytes > data_end:
            raise ListError(f"snapshot {path}: array {name} runs past the data")


def open_snapshot(path: str | Path) -> SnapshotFile:
    """Map ``path`` read-only; ListError when it is truncated, corrupt or not a snapshot."""
    name = str(path)
    try:
        with open(name, "rb") as f:
            parsed, size = _manifest(name, f)
            mapping = mmap.mmap(f.fileno(), size, access=mmap.ACCESS_READ)
            # Lookups touch the arrays at random. Without this hint the kernel
            # reads ahead and maps neighbouring pages on every fault, and a few
            # hits would make whole regions (entry ids) resident for nothing.
            if hasattr(mmap, "MADV_RANDOM"):
                mapping.madvise(mmap.MADV_RANDOM)
    except OSError as exc:
        raise ListError(f"snapshot {name}: cannot open: {exc.strerror or exc}") from exc
    arrays: dict[str, NDArray[Any]] = {}
    regions = {}
    for key, entry in parsed["arrays"].items():
        dtype = np.dtype(entry["dtype"])
        count = int(np.prod(entry["shape"], dtype=np.int64))
        flat = np.frombuffer(mapping, dtype=dtype, count=count, offset=entry["offset"])
        arrays[key] = flat.reshape(entry["shape"])
        regions[key] = (int(entry["offset"]), dtype, tuple(entry["shape"]))
    return SnapshotFile(name, parsed["meta"], arrays, mapping, regions)


def verify(path: str | Path) -> None:
    """Check every array's CRC-32; ListError naming the first that differs."""
    name = str(path)
    with open(name, "rb") as f:
        parsed, _ = _manifest(name, f)
        for key, entry in sorted(parsed["arrays"].items(), key=lambda kv: kv[1]["offset"]):
            f.seek(entry["offset"])
            crc, left = 0, entry["nbytes"]
            while left:
                chunk = f.read(min(left, _READ_CHUNK))
                if not chunk:
                    raise ListError(f"snapshot {name}: array {key} is cut short")
                crc = zlib.crc32(chunk, crc)
                left -= len(chunk)
            if crc != entry["crc32"]:
                raise ListError(f"snapshot {name}: array {key} fails its checksum (corrupt)")
