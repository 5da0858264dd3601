"""The fuzz targets of tests/fuzz, without atheris: every target over its seed
corpus, and every input that fuzzing found (``scripts/fuzz.py``), must pass.

Each finding is kept here as the smallest input that showed it, with what
it was; the fix is in the module the finding was in.
"""

from __future__ import annotations

import base64
import json
import struct
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from appliance.index.snapshot import ListIndex
from appliance.lists import parse_csv
from tests.fuzz import fuzz_decode, fuzz_lists, fuzz_snapshot
from tests.fuzz.engine import Target

TARGETS: dict[str, Target] = {
    **fuzz_decode.TARGETS, **fuzz_lists.TARGETS, **fuzz_snapshot.TARGETS,
}


def _b64(text: str) -> bytes:
    return base64.b64decode(text)


# target -> inputs found by fuzzing (and a few by hand, around each finding).
REGRESSIONS: dict[str, list[bytes]] = {
    "decode-webp": [
        # Lossy ("VP8 ") frames whose 14-bit height (or width) is 0: probe gave
        # a 16144x0 Layout, and estimate() then raised ValueError (a negative
        # shift) out of the pipeline's cost check. Fixed in decode/webp.py (the
        # walker refuses it) and decode/probe.py (no walker's empty picture passes).
        _b64("UklGRjYAAABXRUJQVlA4ICoAAADQAQCdASoQfwAA"),
        _b64("UklGRigAAABXRUJQVlA4IBwAAAAwAQCdASoAAAEAAA=="),
        _b64("UklGRigAAABXRUJQVlA4IBwAAAAwAQCdASoIAAAAMECWJZQAA3AA/u6mLqAjoEAA"),
    ],
    "decode-tiff": [
        # A BigTIFF whose IFD offset is 0xffffffffffffd8ff (found by decode-jpeg):
        # struct.unpack_from raised OverflowError out of probe. Fixed in
        # decode/layout.py: offsets outside the data are refused first.
        _b64("TU0AK////////9gAAAAAXQAAAAAAAP////////8BAAAAAAAA"),
        b"II+\x00\x08\x00\x00\x00" + struct.pack("<Q", 2**63),
        b"II*\x00" + struct.pack("<I", 2**32 - 1),
    ],
}


def test_every_finding_names_a_target() -> None:
    assert set(REGRESSIONS) <= set(TARGETS)


@pytest.mark.parametrize("name", sorted(TARGETS))
def test_target_passes_its_seeds(name: str) -> None:
    target = TARGETS[name]
    seeds = target.seeds()
    assert seeds, name
    for data in seeds:
        target.one_input(data)
        # The empty input and every seed cut short are inputs like any other.
        target.one_input(data[: len(data) // 2])
    target.one_input(b"")


@pytest.mark.parametrize("name", sorted(REGRESSIONS))
def test_findings_stay_fixed(name: str) -> None:
    for data in REGRESSIONS[name]:
        TARGETS[name].one_input(data)


def test_sqlite_schema_of_bad_utf8_is_a_list_error() -> None:
    # list-nsrl-sqlite: one byte of the table's name in sqlite_master changed
    # (FILE -> FI\xbbE). SQLite's "malformed database schema (FI\xbbE)" then
    # reached Python's sqlite3, which decodes error messages as strict UTF-8:
    # UnicodeDecodeError escaped the parser. Fixed in lists/formats/nsrl_sqlite.py.
    database = fuzz_lists.SEEDS["nsrl-sqlite"]()[0]
    assert database.count(b"FILE") == 3  # name, tbl_name, sql of the one table
    for at in range(3):
        parts = database.split(b"FILE")
        TARGETS["list-nsrl-sqlite"].one_input(
            b"FILE".join(parts[: at + 1]) + b"FI\xbbE" + b"FILE".join(parts[at + 1 :]))
    TARGETS["list-nsrl-sqlite"].one_input(database.replace(b"FILE", b"\xff\xfe\xfd\xfc"))


# -- the Hamming index of a compiled snapshot, which is too large an input to fuzz --


@pytest.fixture(scope="module")
def pdq_snapshot() -> bytes:
    rng = np.random.default_rng(5)
    rows = "".join(f"R{i},c,{rng.bytes(32).hex()}\n" for i in range(4))
    index = ListIndex(parse_csv(f"id,category,pdq\n{rows}".encode(), "pdq", "pdq.csv"))
    return fuzz_snapshot.snapshot_bytes([index])


def _manifest_at(data: bytes) -> int:
    return int(struct.unpack_from("<8sIIQQQ32s", data)[3])


def _remanifest(data: bytes, change: Callable[[dict[str, Any]], object]) -> bytes:
    """``data`` with its manifest changed by ``change``, then sealed (digests made to match)."""
    offset = _manifest_at(data)
    manifest = json.loads(data[offset:])
    change(manifest)
    return fuzz_snapshot.seal(data[:offset] + json.dumps(manifest).encode())


def _array(name: str, **entry: Any) -> Callable[[dict[str, Any]], None]:
    def change(manifest: dict[str, Any]) -> None:
        manifest["arrays"][name].update(entry)
    return change


def _list(**info: Any) -> Callable[[dict[str, Any]], None]:
    def change(manifest: dict[str, Any]) -> None:
        manifest["meta"]["lists"][0].update(info)
    return change


# Manifests that pass their digest but are not as write_compiled makes them.
# Before the fixes in index/snapfile.py (_check_manifest) and index/compiled.py
# (_lists), the first three escaped Catalog.load as AttributeError and
# IndexError, and the next two were served as they were; a manifest nested
# too deep (test_a_manifest_that_is_not_json...) escaped as RecursionError.
MANIFEST_DAMAGE: dict[str, Callable[[dict[str, Any]], object]] = {
    "arrays a list": lambda m: m.update(arrays=[]),
    "arrays a string": lambda m: m.update(arrays="0/ids/blob"),
    "no lists": lambda m: m["meta"].update(lists=[]),
    "a list of no kind": _list(kind="neither"),
    "a list named by a number": _list(name=5),
    "a list a string": lambda m: m["meta"].update(lists=["x"]),
    "counts of an unknown signal": _list(counts={"zz": 1}),
    "categories not strings": _list(categories=[1]),
    "offset below zero": _array("0/ids/blob", offset=-2**70, nbytes=2**70 + 2),
    "offset a float": _array("0/ids/blob", offset=4096.5),
    "nbytes not the shape's": _array("0/ids/blob", nbytes=1),
    "dtype of objects": _array("0/ids/blob", dtype="|O"),
    "dtype None": _array("0/ids/blob", dtype=None),
    "dtype structured": _array("0/ids/blob", dtype=[["a", "|u1"]]),
    "shape huge": _array("0/ids/blob", shape=[2**40, 2**40]),
    "shape of 70 dims": _array("0/ids/blob", shape=[1] * 70),
    "no crc32": _array("0/ids/blob", crc32=None),
}


@pytest.fixture(scope="module")
def small_snapshot() -> bytes:
    return fuzz_snapshot.seeds()[1]


@pytest.mark.parametrize("damage", sorted(MANIFEST_DAMAGE))
def test_damaged_manifests_are_list_errors(small_snapshot: bytes, damage: str) -> None:
    fuzz_snapshot.one_input_raw(_remanifest(small_snapshot, MANIFEST_DAMAGE[damage]))


def test_a_manifest_that_is_not_json_is_a_list_error(small_snapshot: bytes) -> None:
    offset = _manifest_at(small_snapshot)
    deep = b"[" * 100_000 + b"]" * 100_000  # RecursionError in json.loads, before the fix
    huge = b'{"meta": {}, "arrays": {"a": 1' + b"0" * 5000 + b"}}"  # past int's 4300 digits
    for manifest in (b"\xff\xfe", deep, b"[" * 100_000, huge):
        fuzz_snapshot.one_input_raw(fuzz_snapshot.seal(small_snapshot[:offset] + manifest))


def test_a_header_pointing_anywhere_is_a_list_error(small_snapshot: bytes) -> None:
    # The manifest's offset and length are u64: past 2**63 a seek or read
    # raised OverflowError (or MemoryError) before any checksum was looked at.
    head = struct.Struct("<8sIIQQQ32s")
    magic, version, reserved, offset, length, total, digest = head.unpack_from(small_snapshot)
    body = small_snapshot[head.size :]
    for at, size in ((2**64 - 1, length), (offset, 2**64 - 1), (2**63, 2**63), (0, total),
                     (offset - 1, length + 1)):
        data = head.pack(magic, version, reserved, at, size, total, digest) + body
        fuzz_snapshot.one_input_raw(data)


HAMMING_DAMAGE: dict[str, Callable[[dict[str, Any]], object]] = {
    "offsets reshaped": _array("0/pdq/offsets", shape=[65537, 16]),
    "ids of another dtype": _array("0/pdq/ids", dtype="<i8", shape=[15, 2]),
    "words cut short": _array("0/pdq/words", shape=[3, 4], nbytes=96),
    "rows as floats": _array("0/pdq/rows", dtype="<f4"),
    "no ids": lambda m: m["arrays"].pop("0/pdq/ids"),
    "no width": lambda m: m["arrays"].pop("0/pdq/width"),
}


def test_sealed_pdq_snapshot_opens(pdq_snapshot: bytes) -> None:
    assert fuzz_snapshot.seal(pdq_snapshot) == pdq_snapshot
    fuzz_snapshot.one_input_sealed(pdq_snapshot)


@pytest.mark.parametrize("damage", sorted(HAMMING_DAMAGE))
def test_damaged_hamming_arrays_are_list_errors(pdq_snapshot: bytes, damage: str) -> None:
    fuzz_snapshot.one_input_raw(_remanifest(pdq_snapshot, HAMMING_DAMAGE[damage]))
