"""The list formats, one by one: each parsed from a fixture the test writes,
with its deletions and its bad rows reported by number."""

from __future__ import annotations

import hashlib
import io
import json
import sqlite3
import tempfile

import pytest

from appliance.errors import ListError
from appliance.lists import FORMATS, FormatOptions, ListBuilder, load_list
from appliance.lists.records import run_parser
from appliance.signals import SIGNALS
from tests.lists import format_fixtures as fx
from tests.lists.format_fixtures import (
    BILLION_LAUGHS,
    MD5,
    PDNA,
    PDQ,
    PHASH,
    SHA1,
    SHA256,
    b64,
    column,
    lines_reported,
    load,
    refusal,
)

# --- delimited (csv) -----------------------------------------------------------


def test_le_export_header_flags_photodna_and_ids(tmp_path):
    hl = load(tmp_path, "export.csv", fx.csv_le_export())
    assert hl.entry_ids == ("IMG-1", "IMG-2", "IMG-3", "IMG-4")
    # Every row is an entry; the Baseline flag becomes the category.
    assert hl.categories == ("baseline", "", "baseline", "")
    assert column(hl, "photodna") == {"IMG-1": PDNA[0].hex(), "IMG-3": PDNA[2].hex()}
    assert column(hl, "md5") == {
        "IMG-1": MD5[0].hex(),
        "IMG-2": MD5[1].hex(),
        "IMG-4": MD5[3].hex(),
    }
    assert column(hl, "sha1") == {"IMG-1": SHA1[0].hex(), "IMG-3": SHA1[2].hex()}


@pytest.mark.parametrize(
    ("flag", "category"),
    [(v, "baseline") for v in ("Y", "yes", "TRUE", "1", "t")]
    + [(v, "") for v in ("N", "No", "false", "0", "")],
)
def test_baseline_flag_spellings(tmp_path, flag, category):
    hl = load(tmp_path, "l.csv", f"md5;baseline\n{MD5[0].hex()};{flag}\n".encode())
    assert hl.categories == (category,)


def test_category_column_wins_over_baseline_but_flag_is_checked(tmp_path):
    hl = load(tmp_path, "l.csv", f"md5,category,Baseline\n{MD5[0].hex()},A1,Y\n".encode())
    assert hl.categories == ("A1",)
    bad_flag = f"md5,category,Baseline\n{MD5[0].hex()},A1,maybe\n"
    message = refusal(tmp_path, "l.csv", bad_flag.encode())
    assert "line 2: Baseline must be Y/N" in message


def test_csv_photodna_hex_and_base64_and_all_signal_columns(tmp_path):
    header = "id,md5,sha1,sha256,pdq,phash,dhash,ahash,whash,photodna,mediaid2"
    row1 = ",".join(
        ["a", MD5[0].hex(), SHA1[0].hex(), SHA256[0].hex(), PDQ[0].hex()]
        + [PHASH[0].hex()] * 4
        + [PDNA[0].hex(), "ignored"]
    )
    row2 = f"b,,,,,,,,,{b64(PDNA[1])},"
    hl = load(tmp_path, "l.csv", f"{header}\n{row1}\n{row2}\n".encode())
    # The video columns have tests of their own (tests/lists/test_video_lists.py).
    assert set(hl.columns) == {n for n, s in SIGNALS.items() if s.media != "video"}
    assert column(hl, "photodna") == {"a": PDNA[0].hex(), "b": PDNA[1].hex()}


@pytest.mark.parametrize("id_column", ["id", "entry_id", "Image ID", "MediaID"])
def test_id_column_names(tmp_path, id_column):
    hl = load(tmp_path, "l.csv", f"{id_column}\tmd5\nX9\t{MD5[0].hex()}\n".encode())
    assert hl.entry_ids == ("X9",)


def test_csv_bad_rows_with_line_numbers(tmp_path):
    rows = [
        "MD5;PhotoDNA;Image ID;Baseline",
        f"{MD5[0].hex()};;1;Y",  # 2 fine
        f"{MD5[0].hex()[:-2]};;2;Y",  # 3 short md5
        f";{PDNA[0].hex()[:-1]};3;N",  # 4 photodna neither hex nor base64
        f"{MD5[1].hex()};;4;perhaps",  # 5 bad flag
        ";;5;Y",  # 6 no hash
    ]
    message = refusal(tmp_path, "l.csv", "\n".join(rows).encode())
    assert "4 bad rows" in message and "l.csv" in message
    assert "line 3: md5 must be 32 hex digits" in message
    assert "line 4: photodna must be 288 hex digits or base64 of 144 bytes" in message
    assert "line 5: Baseline must be" in message
    assert "line 6: no hash value" in message
    assert lines_reported(message) == [3, 4, 5, 6]


# --- text ----------------------------------------------------------------------


def test_text_infers_unambiguous_lengths_and_skips_comments(tmp_path):
    hl = load(tmp_path, "hashes.txt", fx.text_md5())
    assert hl.entry_ids == ("line-3", "line-4", "line-5", "line-6")
    assert column(hl, "md5") == {"line-3": MD5[0].hex(), "line-4": MD5[1].hex()}
    assert column(hl, "sha1") == {"line-5": SHA1[0].hex()}
    assert column(hl, "photodna") == {"line-6": PDNA[0].hex()}


@pytest.mark.parametrize(("value", "candidates"), [(PDQ[0], "sha256 or pdq"), (PHASH[0], "phash")])
def test_text_ambiguous_length_needs_a_declared_signal(tmp_path, value, candidates):
    data = f"{MD5[0].hex()}\n{value.hex()}\n".encode()
    message = refusal(tmp_path, "h.txt", data, "text")
    assert "line 2" in message and candidates in message and "declare" in message


def test_text_declared_signal(tmp_path):
    data = f"{PDQ[0].hex()}\n\n{PDQ[1].hex()}\n".encode()
    hl = load(tmp_path, "h.txt", data, "text", signal="PDQ")
    assert column(hl, "pdq") == {"line-1": PDQ[0].hex(), "line-3": PDQ[1].hex()}
    hl = load(tmp_path, "h.txt", f"{b64(PDNA[2])}\n".encode(), "text", signal="photodna")
    assert column(hl, "photodna") == {"line-1": PDNA[2].hex()}
    hl = load(tmp_path, "h.txt", f"{PHASH[1].hex()}\n".encode(), "text", signal="phash")
    assert column(hl, "phash") == {"line-1": PHASH[1].hex()}
    assert "unknown" in refusal(tmp_path, "h.txt", b"00\n", "text", signal="crc32")


def test_text_bad_lines_are_numbered(tmp_path):
    data = f"{MD5[0].hex()}\nxyz\n# c\n{MD5[1].hex()[:-1]}g\n{SHA1[0].hex()}\n".encode()
    message = refusal(tmp_path, "h.txt", data, "text")
    assert "2 bad rows" in message
    assert "line 2: 3 characters is no signal's hex length" in message
    assert "line 4: md5 must be 32 hex digits" in message


# --- VICS ----------------------------------------------------------------------


def test_vics_2_media_with_hash_keys_hashes_array_and_photodna_base64_or_hex(tmp_path):
    hl = load(tmp_path, "v.json", fx.vics_v2())
    assert hl.entry_ids == ("1", "2", "3") and hl.categories == ("1", "2", "0")
    assert column(hl, "md5") == {"1": MD5[0].hex(), "2": MD5[1].hex()}
    assert column(hl, "sha1") == {"1": SHA1[0].hex(), "3": SHA1[2].hex()}
    assert column(hl, "photodna") == {"1": PDNA[0].hex(), "2": PDNA[1].hex()}


def test_vics_1_cases_with_media(tmp_path):
    hl = load(tmp_path, "v.json", fx.vics_v1())
    assert hl.entry_ids == ("10", "11", "12") and hl.categories == ("1", "2", "")
    assert column(hl, "md5") == {"10": MD5[3].hex(), "12": MD5[4].hex()}


def test_vics_bad_records_are_numbered(tmp_path):
    doc = {
        "@odata.context": "x",
        "value": [
            {"MediaID": 1, "MD5": MD5[0].hex()},
            {"MediaID": 2, "MD5": "abc"},  # record 2
            {"MediaID": 3},  # record 3: no hash
            "not an object",  # record 4
            {
                "MediaID": 5,
                "MD5": MD5[1].hex(),
                "Hashes": [{"HashName": "MD5", "HashValue": MD5[2].hex()}],
            },
            {"MediaID": [1], "SHA1": 5},  # record 6
        ],
    }
    message = refusal(tmp_path, "v.json", json.dumps(doc).encode())
    assert "5 bad rows" in message
    assert "record 2: md5 must be 32 hex digits" in message
    assert "record 3: no hash value" in message
    assert "record 4: not a JSON object" in message
    assert "record 5: two different md5 values" in message
    assert "record 6: mediaid must be a number or text; sha1 must be text" in message


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b'[{"MD5": "x"}]', "not a VICS document"),
        (b'{"odata.metadata": "x"}', "no 'value' array"),
        (b'{"value": [{"MD5": "' + MD5[0].hex().encode() + b'"},\n\n ]}', "line 3: invalid JSON"),
        (b'{"value": []} {', "more text after the document"),
        (b'{"value": [' + b"[" * 100_000 + b"]" * 100_000 + b"]}", "nested too deeply"),
        (b'{"value": [{"MediaID": 1' + b"1" * 5000 + b"}]}", "invalid JSON"),
        (b'{"value": [{"MD5": "\xff"}]}', "not UTF-8"),
    ],
)
def test_vics_unreadable_documents(tmp_path, data, expected):
    assert expected in refusal(tmp_path, "v.json", data, "vics")


def test_vics_large_file_streams_across_chunks(tmp_path):
    media = [
        {"MediaID": n, "Category": n % 3, "MD5": hashlib.md5(str(n).encode()).hexdigest()}
        for n in range(4000)
    ]
    # One 1.x case bigger than the reader's buffer: read key by key, not whole.
    case = {"CaseNumber": "big", "Media": media[:2000], "Notes": "n" * 70_000}
    doc = {"odata.metadata": "x", "value": [case, *media[2000:]]}
    hl = load(tmp_path, "v.json", json.dumps(doc, indent=2).encode())
    assert hl.entry_ids == tuple(str(n) for n in range(4000))
    assert column(hl, "md5")["3999"] == media[3999]["MD5"]


# --- NCMEC ---------------------------------------------------------------------


def test_ncmec_page_images_videos_and_deletions(tmp_path):
    hl = load(tmp_path, "page.xml", fx.ncmec_page())
    # image 1003 deleted; deletedVideo 1001 does not touch image 1001.
    assert hl.entry_ids == ("image:1001", "image:1002", "video:1002")
    assert hl.categories == ("A1", "B1", "A2")
    # PhotoDNA as base64 (1001) and as hex (1002).
    assert column(hl, "photodna") == {"image:1001": PDNA[0].hex(), "image:1002": PDNA[1].hex()}
    assert column(hl, "md5") == {"image:1001": MD5[0].hex(), "video:1002": MD5[3].hex()}


def test_ncmec_without_namespace_delete_by_fingerprint_and_readd(tmp_path):
    xml = f"""<result><IMAGE ID="1"><fingerprints><MD5>{MD5[0].hex()}</MD5></fingerprints></IMAGE>
    <image id="2"><md5>{MD5[1].hex()}</md5></image>
    <deletedImage><fingerprints><md5>{MD5[1].hex()}</md5></fingerprints></deletedImage>
    <deletedImage id="1"/>
    <image id="1"><fingerprints><sha1>{SHA1[0].hex()}</sha1></fingerprints></image></result>"""
    hl = load(tmp_path, "p.xml", xml.encode())
    assert hl.entry_ids == ("image:1",) and column(hl, "sha1") == {"image:1": SHA1[0].hex()}


def test_ncmec_bad_items_are_numbered(tmp_path):
    xml = f"""<queryResult><images>
    <image><id>1</id><fingerprints><md5>{MD5[0].hex()}</md5></fingerprints></image>
    <image><id>2</id><fingerprints><md5>zz</md5></fingerprints></image>
    <image><id>3</id><classification>A1</classification></image>
    <deletedImage><timestamp>x</timestamp></deletedImage>
    <image><id>5</id><fingerprints><pdna>{"A" * 191}</pdna></fingerprints></image>
    </images></queryResult>"""
    message = refusal(tmp_path, "p.xml", xml.encode())
    assert "4 bad rows" in message
    assert "record 2 (image 2): md5 must be 32 hex digits" in message
    assert "record 3 (image 3): no fingerprint" in message
    assert "record 4 (deletedImage): a deletion without an id" in message
    assert "record 5 (image 5): photodna must be" in message


@pytest.mark.parametrize(
    "data",
    [
        BILLION_LAUGHS,
        b'<?xml version="1.0"?>\n<!DOCTYPE r SYSTEM "file:///etc/passwd"><r/>',
        # Far past any "head": the whole stream is checked.
        b"<r>" + b"<!-- pad -->" * 5000 + b"<!DOCTYPE x></r>",
        b"<r><!ENTITY x 'y'></r>",
    ],
)
def test_ncmec_refuses_dtds_and_entities(tmp_path, data):
    message = refusal(tmp_path, "p.xml", data, "ncmec")
    assert "DOCTYPE or ENTITY declaration refused" in message


def test_ncmec_refuses_utf16_and_malformed_xml(tmp_path):
    utf16 = '<?xml version="1.0" encoding="UTF-16"?><r/>'.encode("utf-16")
    assert "not UTF-8 XML" in refusal(tmp_path, "p.xml", utf16, "ncmec")
    message = refusal(tmp_path, "p.xml", b"<r>\n<image>\n</r>", "ncmec")
    assert "not well-formed XML" in message and "line 3" in message
    assert "not well-formed XML" in refusal(tmp_path, "p.xml", b"", "ncmec")


# --- StopNCII ------------------------------------------------------------------


def test_stopncii_page_statuses_and_ids(tmp_path):
    hl = load(tmp_path, "s.json", fx.stopncii_page())
    # PDQ[1] was added (status "active") then withdrawn by hash.
    assert hl.entry_ids == ("SNCII-1", "h-2")
    assert column(hl, "pdq") == {"SNCII-1": PDQ[0].hex()}
    assert column(hl, "md5") == {"h-2": MD5[0].hex()}


def test_stopncii_json_lines_and_array_and_delete_by_id(tmp_path):
    hl = load(tmp_path, "s.jsonl", fx.stopncii_lines())
    assert hl.entry_ids == ("record-2",) and column(hl, "md5") == {"record-2": MD5[2].hex()}
    records = [
        {"signalType": "PDQ", "hashValue": PDQ[4].hex(), "hashStatus": "ACTIVE"},
        {"signalType": "md5", "hashValue": MD5[4].hex()},  # no status: an add
    ]
    hl = load(tmp_path, "s.json", json.dumps(records).encode())
    assert hl.entry_ids == ("record-1", "record-2")


def test_stopncii_withdrawal_never_deletes_by_shared_case_number(tmp_path):
    records = [
        {"signalType": "ImagePDQ", "hashValue": PDQ[0].hex(), "caseNumbers": {"C1": "Active"}},
        {"signalType": "ImagePDQ", "hashValue": PDQ[1].hex(), "caseNumbers": {"C1": "Active"}},
        {
            "signalType": "ImagePDQ",
            "hashValue": PDQ[1].hex(),
            "hashStatus": "Deleted",
            "caseNumbers": {"C1": "Deleted"},
        },
    ]
    hl = load(tmp_path, "s.json", json.dumps(records).encode())
    assert column(hl, "pdq") == {"C1": PDQ[0].hex()}


def test_stopncii_bad_records_are_numbered(tmp_path):
    records = [
        {"signalType": "VideoSSCD", "hashValue": "00", "hashStatus": "Active"},
        {"signalType": "ImagePDQ", "hashValue": PDQ[0].hex(), "hashStatus": "Pending"},
        {"signalType": "ImagePDQ", "hashValue": PDQ[0].hex()[:10]},
        {"hashValue": PDQ[0].hex()},
        {"signalType": "ImagePDQ", "hashValue": PDQ[0].hex()},
    ]
    message = refusal(tmp_path, "s.json", json.dumps(records).encode())
    assert "4 bad rows" in message
    assert "record 1: signal type 'VideoSSCD' is not one this appliance matches" in message
    assert "record 2: hashStatus 'Pending'" in message
    assert "record 3: pdq must be 64 hex digits" in message
    assert "record 4: signalType and hashValue" in message
    assert "empty list file" in refusal(tmp_path, "s.json", b" \n", "stopncii")
    # Types the feed shares but nothing here computes are skipped: a mixed feed loads.
    # (VideoTMK is read now: tests/test_video_pipeline.py.)
    mixed = [
        {"signalType": "Text", "hashValue": "00", "hashStatus": "Active"},
        {"signalType": "ImagePDQ", "hashValue": PDQ[0].hex()},
    ]
    hl = load(tmp_path, "m.json", json.dumps(mixed).encode(), "stopncii")
    assert column(hl, "pdq") == {"record-2": PDQ[0].hex()}


# --- ThreatExchange ------------------------------------------------------------


def test_threatexchange_signal_file(tmp_path):
    hl = load(tmp_path, "signals.te", fx.threatexchange_file())
    assert hl.entry_ids == ("line-2", "line-3", "line-5", "line-6")
    assert column(hl, "pdq") == {"line-2": PDQ[0].hex(), "line-5": PDQ[1].hex()}
    assert column(hl, "md5") == {"line-3": MD5[0].hex(), "line-6": MD5[1].hex()}


def test_threatexchange_declared_type_and_bad_lines(tmp_path):
    data = f"{PDQ[0].hex()}\npdq {PDQ[1].hex()}\n".encode()
    hl = load(tmp_path, "s.te", data, "threatexchange", signal="pdq")
    assert column(hl, "pdq") == {"line-1": PDQ[0].hex(), "line-2": PDQ[1].hex()}
    text = f"pdq {PDQ[0].hex()}\nbogus http://example.test\n{PDQ[1].hex()}\nmd5 {MD5[0].hex()} x\n"
    message = refusal(tmp_path, "s.te", text.encode(), "threatexchange")
    assert "3 bad rows" in message
    assert "line 2: signal type 'bogus' is not one this appliance matches" in message
    assert "line 3: expected '<signal type> <hash>'" in message
    assert lines_reported(message) == [2, 3, 4]
    skipped = f"url http://example.test\npdq {PDQ[1].hex()}\n".encode()
    assert column(load(tmp_path, "k.te", skipped, "threatexchange"), "pdq") == {
        "line-2": PDQ[1].hex()
    }


# --- NSRL ----------------------------------------------------------------------


def test_nsrl_text_file(tmp_path):
    hl = load(tmp_path, "NSRLFile.txt", fx.nsrl_file())
    assert hl.entry_ids == ("row-2", "row-3") and hl.categories == ("nsrl", "nsrl")
    assert column(hl, "sha1") == {"row-2": SHA1[0].hex(), "row-3": SHA1[1].hex()}
    assert column(hl, "md5") == {"row-2": MD5[0].hex(), "row-3": MD5[1].hex()}
    bad = fx.nsrl_file() + b'"XYZ","","","f",1,1,"1",""\r\n'
    assert "line 4: sha1 must be 40 hex digits" in refusal(tmp_path, "NSRLFile.txt", bad)


def test_nsrl_sqlite_file_table(tmp_path, monkeypatch):
    path = tmp_path / "RDS_modern.db"
    data = fx.nsrl_sqlite(path)
    with monkeypatch.context() as patch:
        # A file on disk is opened where it is, never copied (RDS files are tens of GB).
        patch.setattr(tempfile, "TemporaryDirectory", None)
        hl = load_list(str(path), "rds")
    assert hl.version == hashlib.sha256(data).hexdigest()[:16]
    assert hl.entry_ids == ("row-1", "row-2") and hl.categories == ("nsrl", "nsrl")
    assert column(hl, "sha256") == {"row-1": SHA256[0].hex(), "row-2": SHA256[1].hex()}
    # The same bytes from a stream that is not a file (copied to a temporary file).
    builder = ListBuilder("rds", "")
    run_parser(FORMATS["nsrl-sqlite"], io.BytesIO(data), builder, FormatOptions())
    assert builder.build("v").entry_ids == hl.entry_ids


def test_nsrl_sqlite_bad_rows_and_bad_databases(tmp_path):
    rows = [
        (SHA256[0].hex(), SHA1[0].hex(), MD5[0].hex(), "", "a", 1, 1),
        (SHA256[1].hex(), "nothex", MD5[1].hex(), "", "b", 1, 1),
        ("", "", "", "", "c", 1, 1),
        (b"\x00" * 32, SHA1[2].hex(), MD5[2].hex(), "", "d", 1, 1),
    ]
    fx.nsrl_sqlite(tmp_path / "bad.db", rows)
    with pytest.raises(ListError) as info:
        load_list(str(tmp_path / "bad.db"), "rds")
    message = str(info.value)
    assert "3 bad rows" in message and "row 2: sha1 must be 40 hex digits" in message
    assert "row 3: no hash value" in message and "row 4: sha256 is bytes" in message

    other = tmp_path / "other.db"
    connection = sqlite3.connect(other)
    connection.execute("CREATE TABLE PKG (x)")
    connection.execute("CREATE VIEW FILE AS SELECT 'a' AS sha1")
    connection.commit()
    connection.close()
    assert "no FILE table" in refusal(tmp_path, "other.db", other.read_bytes(), "nsrl-sqlite")
    assert "SQLite" in refusal(tmp_path, "junk.db", b"not a database" * 100, "nsrl-sqlite")
