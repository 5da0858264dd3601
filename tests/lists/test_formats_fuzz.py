"""Fuzzing every list parser: random bytes and mutated valid fixtures.

Whatever the bytes, a parser either builds a consistent list or refuses it
with ListError: never another exception, never a hang. Each example also
runs through a stream that hands out a few bytes per read, which must give
the same outcome: chunk boundaries are invisible.
"""

from __future__ import annotations

import contextlib
import io
import signal
import tempfile
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from appliance.errors import ListError
from appliance.lists import FORMATS, FormatOptions, ListBuilder, detect_format
from appliance.lists.records import run_parser
from appliance.signals import SIGNALS
from tests.lists import format_fixtures as fx
from tests.lists.format_fixtures import Trickle

HANG_SECONDS = 10


@contextlib.contextmanager
def no_hang() -> Iterator[None]:
    """Turn a hang into a failure: the hypothesis deadline only judges
    examples that finish."""

    def alarm(signum, frame):
        raise TimeoutError(f"parser still running after {HANG_SECONDS} s")

    previous = signal.signal(signal.SIGALRM, alarm)
    signal.setitimer(signal.ITIMER_REAL, HANG_SECONDS)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def outcome(fmt: str, stream, options: FormatOptions):
    """The parsed list's content, or "refused"; any other exception escapes."""
    builder = ListBuilder("fuzz", "")
    try:
        with no_hang():
            run_parser(FORMATS[fmt], stream, builder, options)
            hl = builder.build("v")
    except ListError:
        return "refused"
    assert len(hl.entry_ids) == len(hl.categories) == hl.size
    # Served in UTF-8 answers: every string must encode (no lone surrogates).
    for text in (*hl.entry_ids, *hl.categories):
        text.encode("utf-8")
    content = {}
    for name, col in hl.columns.items():
        assert col.values.shape == (len(col.rows), SIGNALS[name].nbytes)
        rows = col.rows.tolist()
        assert len(rows) > 0 and rows == sorted(rows) and all(0 <= r < hl.size for r in rows)
        content[name] = (rows, col.values.tobytes())
    return hl.entry_ids, hl.categories, content


DEFAULT = FormatOptions()


def check(fmt: str, data: bytes, options: FormatOptions = DEFAULT) -> None:
    whole = outcome(fmt, io.BytesIO(data), options)
    assert outcome(fmt, Trickle(data, step=7), options) == whole


def _sqlite_fixture(rows: int = 0) -> bytes:
    """The two-row fixture, or one of ``rows`` rows: several b-tree pages, so
    that mutations reach interior pages and overflow chains, not only page 1."""
    many = [(f"{i:064x}", f"{i:040x}", f"{i:032x}", "x" * (i % 700), "", i, 1)
            for i in range(rows)]
    with tempfile.TemporaryDirectory() as folder:
        return fx.nsrl_sqlite(Path(folder) / "f.db", many or None)


FIXTURES: dict[str, list[bytes]] = {
    "csv": [fx.csv_le_export(), f"id,md5,pdq\na,{fx.MD5[0].hex()},{fx.PDQ[0].hex()}\n".encode()],
    "text": [fx.text_md5()],
    "vics": [fx.vics_v2(), fx.vics_v1()],
    "ncmec": [fx.ncmec_page()],
    "stopncii": [fx.stopncii_page(), fx.stopncii_lines()],
    "threatexchange": [fx.threatexchange_file()],
    "nsrl": [fx.nsrl_file()],
    "nsrl-sqlite": [_sqlite_fixture(), _sqlite_fixture(rows=300)],
}
# Bytes that matter to some format, spliced in by the mutator.
TOKENS = [
    b"\n", b"\r", b"\r\n", b",", b";", b"\t", b'"', b"#", b"\x00", b"\xff", b"\xef\xbb\xbf",
    b"{", b"}", b"[", b"]", b":", b"null", b"1e999", b"\\u12", b"<", b">", b"</image>",
    b"<image>", b"<!DOCTYPE x>", b"<!ENTITY", b"&amp;", b"&lol;", b"<![CDATA[", b"]]>",
    b'"\\ud800"',
    b"deletedImage", b"Withdrawn", b"hashRecords", b"Media", b"value", b"SQLite format 3\x00",
    fx.MD5[1].hex().encode(), fx.PDQ[2].hex().encode(), fx.b64(fx.PDNA[3]).encode(),
]  # fmt: skip


@st.composite
def mutated(draw, fmt: str) -> bytes:
    data = bytearray(draw(st.sampled_from(FIXTURES[fmt])))
    for _ in range(draw(st.integers(1, 6))):
        at = draw(st.integers(0, len(data)))
        kind = draw(st.sampled_from(["flip", "delete", "insert", "token", "duplicate", "cut"]))
        if kind == "flip" and at < len(data):
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif kind == "delete":
            del data[at : at + draw(st.integers(1, 64))]
        elif kind == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=16))
        elif kind == "token":
            data[at:at] = draw(st.sampled_from(TOKENS))
        elif kind == "duplicate":
            data[at:at] = data[at : at + draw(st.integers(1, 200))]
        elif kind == "cut":
            del data[at:]
    return bytes(data)


FUZZ = settings(
    max_examples=200,
    deadline=timedelta(seconds=3),
    suppress_health_check=[HealthCheck.too_slow],
)
OPTIONS = st.sampled_from([FormatOptions(), FormatOptions(signal="pdq"), FormatOptions("md5")])


@pytest.mark.parametrize("fmt", sorted(FORMATS))
@FUZZ
@given(data=st.binary(max_size=1500), options=OPTIONS)
def test_random_bytes_only_ever_raise_list_error(fmt, data, options):
    check(fmt, data, options)


@pytest.mark.parametrize("fmt", sorted(FORMATS))
@FUZZ
@given(data=st.data())
def test_mutated_fixtures_only_ever_raise_list_error(fmt, data):
    check(fmt, data.draw(mutated(fmt)))


@pytest.mark.parametrize("fmt", sorted(FORMATS))
def test_unmutated_fixtures_load(fmt):
    for data in FIXTURES[fmt]:
        assert outcome(fmt, io.BytesIO(data), FormatOptions()) != "refused"


@FUZZ
@given(
    data=st.one_of(st.binary(max_size=600), mutated("vics"), mutated("ncmec"), mutated("csv")),
    name=st.sampled_from(["a.csv", "b.json", "c.xml", "d.txt", "e.db", "NSRLFile.txt", "f"]),
)
def test_detection_names_a_format_or_raises_list_error(data, name):
    with contextlib.suppress(ListError):
        assert detect_format(data, name) in FORMATS


@FUZZ
@given(data=st.data())
def test_mutated_sqlite_files_only_ever_raise_list_error(data):
    # Through load_list on a file, as the server reads it: SQLite opens the
    # path itself (immutable, read-only), a different code path from the
    # copied stream above. A corrupt page must be a ListError, never
    # sqlite3.DatabaseError.
    from appliance.lists import load_list

    mutant = data.draw(mutated("nsrl-sqlite"))
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "nsrl.db"
        path.write_bytes(mutant)
        with no_hang(), contextlib.suppress(ListError):
            load_list(str(path), "fuzz", "nsrl-sqlite")
