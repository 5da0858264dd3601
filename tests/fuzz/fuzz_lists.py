"""Fuzz targets for the list-file parsers (one per format, ``list-NAME``) and the detector.

Whatever the bytes, a parser run through ``run_parser`` and ``ListBuilder.build``
either gives a consistent list (every id and category encodable as UTF-8,
columns of the signal's width with rows in range and in order) or refuses it
with ListError: never another exception, never a hang. Every input is parsed
twice, from one buffer and from a stream that hands out 7 bytes a read and
refuses ``read()`` of everything, and both must give the same outcome: chunk
boundaries are invisible, and parsers stream. ``nsrl-sqlite`` reads a file
(SQLite opens a path), so its input is written to a temporary file first.

``detect`` checks ``detect_format``: a registered format's name or ListError.
"""

from __future__ import annotations

import atexit
import io
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO, cast

from appliance.errors import ListError
from appliance.lists import FORMATS, FormatOptions, ListBuilder, detect_format
from appliance.lists.detect import HEAD_BYTES
from appliance.lists.records import run_parser
from appliance.signals import SIGNALS
from tests.fuzz.engine import Target, main
from tests.lists import format_fixtures as fx

Outcome = tuple[tuple[str, ...], tuple[str, ...], dict[str, tuple[list[int], bytes]]] | str
REFUSED = "refused"
# The formats whose rows may carry no signal of their own: also parsed as each of these.
_OPTIONS: dict[str, tuple[FormatOptions, ...]] = {
    "text": (FormatOptions(), FormatOptions(signal="pdq"), FormatOptions(signal="md5")),
    "threatexchange": (FormatOptions(), FormatOptions(signal="pdq")),
}


def outcome(fmt: str, stream: BinaryIO, options: FormatOptions) -> Outcome:
    """The parsed list's content, or REFUSED; any other exception escapes."""
    builder = ListBuilder("fuzz", "")
    try:
        run_parser(FORMATS[fmt], stream, builder, options)
        hl = builder.build("v")
    except ListError as exc:
        str(exc).encode("utf-8")  # the refusal is logged and served: it must encode
        return REFUSED
    assert len(hl.entry_ids) == len(hl.categories) == hl.size
    for text in (*hl.entry_ids, *hl.categories):
        text.encode("utf-8")  # served in UTF-8 answers: no lone surrogates
    content: dict[str, tuple[list[int], bytes]] = {}
    for name, col in hl.columns.items():
        assert col.values.shape == (len(col.rows), SIGNALS[name].nbytes), name
        rows = [int(r) for r in col.rows.tolist()]
        assert rows and rows == sorted(rows) and all(0 <= r < hl.size for r in rows), name
        content[name] = (rows, col.values.tobytes())
    return tuple(hl.entry_ids), tuple(hl.categories), content


def _stream_target(fmt: str) -> Callable[[bytes], None]:
    def one_input(data: bytes) -> None:
        for options in _OPTIONS.get(fmt, (FormatOptions(),)):
            whole = outcome(fmt, io.BytesIO(data), options)
            trickled = outcome(fmt, cast(BinaryIO, fx.Trickle(data, step=7)), options)
            assert trickled == whole, (whole, trickled)

    one_input.__name__ = f"one_input_{fmt}"
    return one_input


_folder: list[Path] = []


def _scratch() -> Path:
    """This process's temporary file for SQLite inputs (one directory, removed at exit)."""
    if not _folder:
        _folder.append(Path(tempfile.mkdtemp(prefix="fuzz-nsrl-")))
        atexit.register(shutil.rmtree, _folder[0], True)
    return _folder[0] / "list.db"


def one_input_sqlite(data: bytes) -> None:
    """The input as an NSRL RDSv3 database on disk, read as ``load_list`` reads it."""
    path = _scratch()
    path.write_bytes(data)
    with path.open("rb") as stream:  # a named file: SQLite opens the same path
        outcome("nsrl-sqlite", stream, FormatOptions())


# Names the detector is given: first byte of the input % len(NAMES), then the head.
NAMES = ("list.csv", "hashes.txt", "vics.json", "page.xml", "stopncii.json", "signals.te",
         "NSRLFile.txt", "rds.db", "list", "x.sqlite3", "hashes.json")


def one_input_detect(data: bytes) -> None:
    name = NAMES[data[0] % len(NAMES)] if data else NAMES[0]
    try:
        found = detect_format(data[1 : 1 + HEAD_BYTES], f"/lists/{name}")
    except ListError:
        return
    assert found in FORMATS, found


# -- seeds ----------------------------------------------------------------------


def _sqlite(rows: int) -> bytes:
    many: list[Any] = [(f"{i:064x}", f"{i:040x}", f"{i:032x}", "x" * (i % 50), "", i, 1)
                       for i in range(rows)]
    with tempfile.TemporaryDirectory() as folder:
        return fx.nsrl_sqlite(Path(folder) / "f.db", many or None)


SEEDS: dict[str, Callable[[], list[bytes]]] = {
    "csv": lambda: [fx.csv_le_export(), b"id,md5,pdq\n" + b",".join(
        [b"a", fx.MD5[0].hex().encode(), fx.PDQ[0].hex().encode()]) + b"\n",
        b'id\tsha1\tcategory\n"q""x"\t' + fx.SHA1[1].hex().encode() + b"\tcat\n"],
    "text": lambda: [fx.text_md5(), fx.PDQ[1].hex().encode() + b"\n"],
    "vics": lambda: [fx.vics_v2(), fx.vics_v1()],
    "ncmec": lambda: [fx.ncmec_page(), fx.BILLION_LAUGHS],
    "stopncii": lambda: [fx.stopncii_page(), fx.stopncii_lines()],
    "threatexchange": lambda: [fx.threatexchange_file()],
    "nsrl": lambda: [fx.nsrl_file()],
    "nsrl-sqlite": lambda: [_sqlite(0), _sqlite(40)],
}


def detect_seeds() -> list[bytes]:
    names = {"csv": 0, "text": 1, "vics": 2, "ncmec": 3, "stopncii": 4, "threatexchange": 5,
             "nsrl": 6, "nsrl-sqlite": 7}
    return [bytes([names[fmt]]) + seed[:HEAD_BYTES] for fmt, seeds in SEEDS.items()
            for seed in seeds()]


TARGETS: dict[str, Target] = {
    f"list-{fmt}": Target(f"list-{fmt}",
                          one_input_sqlite if fmt == "nsrl-sqlite" else _stream_target(fmt), seeds)
    for fmt, seeds in SEEDS.items()
}
TARGETS["detect"] = Target("detect", one_input_detect, detect_seeds)
assert set(SEEDS) == set(FORMATS), "a fuzz target for every registered list format"

if __name__ == "__main__":
    main(TARGETS)
