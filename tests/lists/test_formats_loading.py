"""Loading lists whatever their format: the builder (deletions, refusals),
format detection, versions, and streaming (bounded, short reads)."""

from __future__ import annotations

import hashlib
import io

import pytest

from appliance.errors import ListError
from appliance.lists import FORMATS, ListBuilder, Record, detect_format
from appliance.lists.records import MAX_REPORTED
from tests.lists import format_fixtures as fx
from tests.lists.format_fixtures import (
    BILLION_LAUGHS,
    MD5,
    PDQ,
    SHA1,
    Trickle,
    column,
    lines_reported,
    load,
    parsed,
    refusal,
)


def test_registry_names_every_format():
    assert set(FORMATS) == {
        "csv",
        "text",
        "vics",
        "ncmec",
        "stopncii",
        "threatexchange",
        "nsrl",
        "nsrl-sqlite",
    }


# --- ListBuilder ---------------------------------------------------------------


def test_builder_deletes_by_id_and_by_hash_and_keeps_later_adds():
    b = ListBuilder("L", "src")
    b.add(Record("a", "c1", {"md5": MD5[0]}))
    b.add(Record("b", "c2", {"md5": MD5[1], "pdq": PDQ[0]}))
    b.add(Record("c", "", {"pdq": PDQ[1]}))
    b.add(Record("a", "", {}, delete=True))  # by id
    b.add(Record("zz", "", {"pdq": PDQ[1]}, delete=True))  # by hash
    b.add(Record("nothing", "", {"md5": MD5[5]}, delete=True))  # deleting the absent is fine
    b.add(Record("a", "again", {"md5": MD5[0]}))  # an add after its delete is kept
    hl = b.build("v1")
    assert hl.entry_ids == ("b", "a") and hl.categories == ("c2", "again")
    assert column(hl, "md5") == {"b": MD5[1].hex(), "a": MD5[0].hex()}
    assert column(hl, "pdq") == {"b": PDQ[0].hex()}
    assert [int(r) for r in hl.columns["md5"].rows] == [0, 1]
    assert hl.version == "v1"


def test_builder_delete_after_index_keeps_indexing_new_adds():
    b = ListBuilder("L", "")
    b.add(Record("x", "", {"md5": MD5[0]}, delete=True))  # builds the index on an empty list
    b.add(Record("a", "", {"md5": MD5[0]}))
    b.add(Record("b", "", {"sha1": SHA1[0]}))
    b.add(Record("q", "", {"sha1": SHA1[0]}, delete=True))
    b.add(Record("a", "", {}, delete=True))
    hl = b.build("v")
    assert hl.size == 0 and dict(hl.columns) == {}


def test_builder_refuses_with_count_and_first_twenty():
    b = ListBuilder("L", "f.csv")
    for n in range(25):
        b.error(f"line {n + 1}", "bad")
    with pytest.raises(ListError) as info:
        b.build("v")
    message = str(info.value)
    assert message.startswith("list 'L' (f.csv): 25 bad rows, list refused: line 1: bad")
    assert "and 5 more" in message and len(lines_reported(message)) == MAX_REPORTED


def test_builder_rejects_malformed_records_as_bugs():
    b = ListBuilder("L", "")
    with pytest.raises(ValueError):
        b.add(Record("a", "", {"md5": b"short"}))
    with pytest.raises(ValueError):
        b.add(Record("a", "", {"nosuch": MD5[0]}))
    with pytest.raises(ValueError):
        b.add(Record("a", "", {}))


# --- detection, versions, streaming --------------------------------------------


def all_fixtures(tmp_path):
    out = {fmt: make() for fmt, (_, make) in fx.TEXT_FIXTURES.items()}
    out["nsrl-sqlite"] = fx.nsrl_sqlite(tmp_path / "fixture.db")
    return out


def test_every_format_is_detected_from_content_alone(tmp_path):
    for fmt, data in all_fixtures(tmp_path).items():
        assert detect_format(data[:8192], "/lists/upload.bin") == fmt, fmt
    assert detect_format(fx.vics_v1(), "a") == "vics"
    assert detect_format(fx.stopncii_lines(), "a") == "stopncii"
    assert detect_format(b"\xef\xbb\xbf\n\nid;MD5\n", "a") == "csv"


def test_names_break_ties_and_decide_when_content_is_silent(tmp_path):
    assert detect_format(b"", "/x/list.csv") == "csv"
    assert detect_format(b"", "/x/NSRLFile.txt") == "nsrl"
    assert detect_format(b"", "/x/RDS_2024.db") == "nsrl-sqlite"
    assert detect_format(b"<x/>", "a") == "ncmec"
    with pytest.raises(ListError, match="could be vics or stopncii"):
        detect_format(b"{}", "/x/list.json")
    with pytest.raises(ListError, match="cannot tell"):
        detect_format(b"hello world\n", "/x/list.bin")
    # Through load_list: the list is named, and the cause is given.
    message = refusal(tmp_path, "mystery.bin", b"hello\n")
    assert "list 'L'" in message and "cannot tell" in message
    assert "empty list file" in refusal(tmp_path, "empty.csv", b"")


def test_version_is_sha256_prefix_of_the_file_bytes(tmp_path):
    for fmt, data in all_fixtures(tmp_path).items():
        # Trailing blanks after the document are part of the file, so of the version.
        tail = b"" if fmt == "nsrl-sqlite" else b"\n\n  \n"
        hl = load(tmp_path, f"v-{fmt}", data + tail, fmt)
        assert hl.version == hashlib.sha256(data + tail).hexdigest()[:16], fmt


def test_parsers_stream_and_survive_short_reads(tmp_path):
    for fmt, data in all_fixtures(tmp_path).items():
        whole = parsed(fmt, io.BytesIO(data))
        trickle = Trickle(data)
        assert parsed(fmt, trickle) == whole, fmt
        assert trickle.largest <= 1 << 20, fmt


def test_ncmec_dtd_split_across_reads_is_still_refused():
    with pytest.raises(ListError, match="DOCTYPE"):
        parsed("ncmec", Trickle(BILLION_LAUGHS, step=2))


def test_long_line_without_breaks_is_refused_not_buffered(tmp_path):
    message = refusal(tmp_path, "h.txt", b"a" * (5 << 20), "text")
    assert "line 1: longer than" in message


def test_not_utf8_is_refused_with_line_and_byte(tmp_path):
    message = refusal(tmp_path, "h.txt", f"{MD5[0].hex()}\n\xff\n".encode("latin-1"), "text")
    assert "not UTF-8 text (line 2, byte 33)" in message


def test_a_fatal_error_after_bad_rows_reports_both(tmp_path):
    data = f"md5\nnothex\n{MD5[0].hex()}\n\xff\n".encode("latin-1")
    message = refusal(tmp_path, "l.csv", data)
    assert "not UTF-8 text (line 4" in message
    assert "before that, 1 bad row, list refused: line 2: md5 must be" in message
