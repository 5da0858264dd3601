"""Fuzz targets for the compiled snapshot reader, through the loader's own entry point.

The file is loaded by ``Catalog.load`` as the one configured list, as a
(re)load does: ``snapfile.is_snapshot``, then the file read whole, every
array's CRC-32 checked by ``snapfile.verify``, ``compiled.open_compiled``
mapping the arrays and adopting the indexes, and the snapshot built (a file
that is not a snapshot is read as a list file). Whatever the file, that
gives a snapshot of well-formed indexes or raises ListError, and never hangs.

Two targets, both seeded with valid snapshots written by ``write_compiled``:

- ``snapshot-raw``: the input is the file, as it is: damage that the header
  and the checksums must catch (truncation, bad magic, a flipped byte);
- ``snapshot``: the input is the file after ``seal``: the header's length
  and manifest digest, and each array's CRC-32 in the manifest, are made to
  match, as anyone writing a hostile snapshot would. This reaches the
  manifest's schema (JSON of any shape, offsets, dtypes, shapes) and the
  indexes' own checks of their arrays.
"""

from __future__ import annotations

import atexit
import hashlib
import json
import shutil
import struct
import tempfile
import zlib
from pathlib import Path

import numpy as np

from appliance.config import Config, ListSpec
from appliance.errors import ListError
from appliance.index import snapfile
from appliance.index.compiled import write_compiled
from appliance.index.snapshot import ListIndex
from appliance.lists import parse_csv
from appliance.loading import Catalog
from appliance.signals import SIGNALS as SIGNALS_ALL
from tests.fuzz.engine import Target, main

_HEADER = struct.Struct("<8sIIQQQ32s")
_folder: list[Path] = []


def _scratch() -> Path:
    if not _folder:
        _folder.append(Path(tempfile.mkdtemp(prefix="fuzz-snap-")))
        atexit.register(shutil.rmtree, _folder[0], True)
    return _folder[0] / "lists.snap"


def _open(data: bytes) -> None:
    """Load the file as the one configured list, as a (re)load does: ListError or a snapshot."""
    path = _scratch()
    path.write_bytes(data)
    if not snapfile.is_snapshot(path):
        assert not data.startswith(snapfile.MAGIC)
    try:
        loaded = Catalog().load(Config(lists=(ListSpec("snap", str(path)),)))
    except ListError as exc:
        str(exc).encode("utf-8")  # logged and counted: the refusal must encode
        return
    for index in loaded.snapshot.indexes:
        assert isinstance(index, ListIndex)
        assert isinstance(index.name, str) and index.kind in ("block", "allow"), index.kind
        assert set(index.matchers) <= set(SIGNALS_ALL), index.matchers


def seal(data: bytes) -> bytes:
    """``data`` with its header's manifest length and digest and total length, and
    (where the manifest is JSON of the expected shape) its arrays' CRC-32s, made
    to match. A seal of a sealed file changes nothing."""
    if len(data) < _HEADER.size:
        return data
    magic, version, reserved, m_offset, _, _, _ = _HEADER.unpack_from(data)
    # The manifest is the file's last part (as ``snapfile.write`` puts it): from
    # its offset to the end, whatever the header says its length is.
    manifest = data[m_offset:]
    try:
        parsed = json.loads(manifest)
        for entry in parsed["arrays"].values():
            offset, nbytes = int(entry["offset"]), int(entry["nbytes"])
            if offset >= 0 and 0 <= nbytes <= len(data):
                entry["crc32"] = zlib.crc32(data[offset : offset + nbytes])
        manifest = json.dumps(parsed, separators=(",", ":")).encode()
    except (ValueError, TypeError, KeyError, AttributeError, RecursionError, OverflowError):
        pass  # not the expected shape: the digest alone is sealed
    body = data[_HEADER.size : m_offset] if m_offset <= len(data) else data[_HEADER.size :]
    if m_offset > len(data):
        m_offset = _HEADER.size + len(body)
    total = m_offset + len(manifest)
    header = _HEADER.pack(magic, version, reserved, m_offset, len(manifest), total,
                          hashlib.sha256(manifest).digest())
    return header + body + manifest


def one_input_raw(data: bytes) -> None:
    _open(data)


def one_input_sealed(data: bytes) -> None:
    _open(seal(data))


# -- seeds: valid snapshots of every kind of index ---------------------------------


def _list_csv(rows: int, seed: int, signals: dict[str, int]) -> bytes:
    rng = np.random.default_rng(seed)
    lines = ["id,category," + ",".join(signals)]
    for i in range(rows):
        values = ",".join(rng.bytes(n).hex() for n in signals.values())
        lines.append(f"R{i},cat{i % 3},{values}")
    return ("\n".join(lines) + "\n").encode()


# Exact (digest) and Euclidean (PhotoDNA) indexes. Not a Hamming one: PDQ's
# multi-index tables are 4 MB whatever the list (65537 buckets per chunk),
# too large an input to mutate; tests/test_fuzz_regressions.py checks
# reshaped Hamming arrays instead.
SIGNALS = {"md5": 16, "sha256": 32, "photodna": 144}


def snapshot_bytes(indexes: list[ListIndex]) -> bytes:
    """The compiled snapshot of ``indexes``, as ``appliance lists compile`` writes it."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "lists.snap"
        write_compiled(path, indexes, {x.name: f"{x.name}.csv" for x in indexes})
        return path.read_bytes()


def seeds() -> list[bytes]:
    block = ListIndex(parse_csv(_list_csv(6, 1, SIGNALS), "block", "block.csv"))
    allow = ListIndex(parse_csv(_list_csv(2, 2, {"sha1": 20}), "allow", "allow.csv"),
                      kind="allow")
    return [snapshot_bytes(x) for x in ([block], [block, allow], [allow])]



TARGETS: dict[str, Target] = {
    "snapshot": Target("snapshot", one_input_sealed, seeds),
    "snapshot-raw": Target("snapshot-raw", one_input_raw, seeds),
}

if __name__ == "__main__":
    main(TARGETS)
