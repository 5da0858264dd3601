"""CSV list parsing: formats, defaults, versions, and refusal of bad lists."""

from __future__ import annotations

import contextlib
import hashlib
import random
import re

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from appliance.errors import ListError
from appliance.lists import FORMATS, load_list, parse_csv
from appliance.signals import SIGNALS

RNG = random.Random(1234)


def rand_hex(signal: str) -> str:
    return bytes(RNG.randrange(256) for _ in range(SIGNALS[signal].nbytes)).hex()


MD5 = [rand_hex("md5") for _ in range(4)]
SHA1 = [rand_hex("sha1") for _ in range(4)]
SHA256 = [rand_hex("sha256") for _ in range(4)]
PDQ = [rand_hex("pdq") for _ in range(4)]
PHOTODNA = [rand_hex("photodna") for _ in range(4)]


def column_hex(hl, signal):
    col = hl.columns[signal]
    return {int(r): bytes(v).hex() for r, v in zip(col.rows, col.values, strict=True)}


def refusal(data: bytes) -> str:
    with pytest.raises(ListError) as info:
        parse_csv(data, "bad", "bad.csv")
    return str(info.value)


@pytest.mark.parametrize("delim", [",", ";", "\t"])
def test_delimiters_give_the_same_list(delim):
    lines = [
        delim.join(["id", "md5", "sha1", "sha256", "pdq", "photodna", "category"]),
        delim.join(["a", MD5[0], SHA1[0], SHA256[0], PDQ[0], PHOTODNA[0], "A1"]),
        delim.join(["b", "", SHA1[1], "", PDQ[1], "", "B"]),
        delim.join(["c", MD5[2], "", "", "", "", ""]),
    ]
    hl = parse_csv("\n".join(lines).encode(), "demo")
    assert hl.name == "demo"
    assert hl.entry_ids == ("a", "b", "c")
    assert hl.categories == ("A1", "B", "")
    assert column_hex(hl, "md5") == {0: MD5[0], 2: MD5[2]}
    assert column_hex(hl, "sha1") == {0: SHA1[0], 1: SHA1[1]}
    assert column_hex(hl, "sha256") == {0: SHA256[0]}
    assert column_hex(hl, "pdq") == {0: PDQ[0], 1: PDQ[1]}
    assert column_hex(hl, "photodna") == {0: PHOTODNA[0]}
    assert hl.count("md5") == 2 and hl.count("photodna") == 1
    for signal, col in hl.columns.items():
        assert col.values.dtype == np.uint8 and col.rows.dtype == np.int64
        assert col.values.shape == (len(col.rows), SIGNALS[signal].nbytes)


def test_bom_crlf_case_and_blanks_in_header():
    data = (f"\ufeff  MD5 ;Entry_ID; Category \r\n{MD5[0]};x1;cat\r\n").encode()
    hl = parse_csv(data, "l")
    assert hl.entry_ids == ("x1",)
    assert hl.categories == ("cat",)
    assert column_hex(hl, "md5") == {0: MD5[0]}


def test_only_signals_with_values_have_columns_and_count_zero_otherwise():
    hl = parse_csv(f"md5,sha1,pdq\n{MD5[0]},,\n".encode(), "l")
    assert set(hl.columns) == {"md5"}
    assert hl.count("sha1") == 0 and hl.count("pdq") == 0 and hl.count("md5") == 1


def test_default_ids_are_line_numbers_and_blank_lines_are_skipped():
    data = f"\n\nmd5,id\n{MD5[0]},\n\n{MD5[1]},named\n  \n,\n{MD5[2]}\n".encode()
    hl = parse_csv(data, "l")
    # header on line 3; data rows on lines 4, 6 and 9; a short row is fine.
    assert hl.entry_ids == ("row-4", "named", "row-9")
    assert hl.categories == ("", "", "")


def test_no_id_column_and_unknown_columns_ignored():
    data = f"comment,pdq,whatever\nhello,{PDQ[0]},1\n,{PDQ[1]},\n".encode()
    hl = parse_csv(data, "l")
    assert hl.entry_ids == ("row-2", "row-3")
    assert column_hex(hl, "pdq") == {0: PDQ[0], 1: PDQ[1]}


def test_single_column_list():
    hl = parse_csv(f"SHA256\n{SHA256[0]}\n{SHA256[1]}\n".encode(), "l")
    assert column_hex(hl, "sha256") == {0: SHA256[0], 1: SHA256[1]}


def test_quoted_fields():
    data = f'"md5","id","category"\n"{MD5[0]}","a, b","x;y"\n'.encode()
    hl = parse_csv(data, "l")
    assert hl.entry_ids == ("a, b",) and hl.categories == ("x;y",)


def test_upper_case_hex_is_normalised_and_cells_are_stripped():
    hl = parse_csv(f"md5,pdq\n  {MD5[0].upper()} , {PDQ[0].upper()}\n".encode(), "l")
    assert column_hex(hl, "md5") == {0: MD5[0]}
    assert column_hex(hl, "pdq") == {0: PDQ[0]}


def test_trailing_empty_fields_are_allowed():
    hl = parse_csv(f"md5,id\n{MD5[0]},a,,\n".encode(), "l")
    assert hl.entry_ids == ("a",)


def test_version_is_sha256_prefix_of_the_bytes():
    data = f"md5\n{MD5[0]}\n".encode()
    hl = parse_csv(data, "l")
    assert hl.version == hashlib.sha256(data).hexdigest()[:16]
    # Any edit, even invisible to the parsed content, is a new version.
    assert parse_csv(data + b"\n", "l").version != hl.version


def test_header_only_list_is_empty():
    hl = parse_csv(b"md5,id\n", "l")
    assert hl.size == 0 and dict(hl.columns) == {}


def test_arrays_are_read_only():
    hl = parse_csv(f"md5\n{MD5[0]}\n".encode(), "l")
    with pytest.raises(ValueError):
        hl.columns["md5"].values[0, 0] = 1
    with pytest.raises(ValueError):
        hl.columns["md5"].rows[0] = 1


def test_every_bad_row_is_reported_with_its_line():
    rows = [
        "md5,pdq,id",
        f"{MD5[0]},,ok1",  # 2: fine
        f"{MD5[0][:-1]},,short",  # 3: md5 too short
        f"{MD5[0]}zz,,long",  # 4: md5 too long
        f",{PDQ[0][:-1]}g,badhex",  # 5: pdq not hex
        ",,nohash",  # 6: no hash at all
        f"{MD5[1]},,x,extra",  # 7: too many fields
        "",  # 8: blank, fine
        f"{MD5[2]},{PDQ[2]},ok2",  # 9: fine
        f"0x{MD5[3][2:]},,prefix",  # 10: not hex
    ]
    message = refusal("\n".join(rows).encode())
    assert "bad.csv" in message and "6 bad rows" in message
    assert "line 3: md5 must be 32 hex digits" in message
    assert "line 4: md5 must be 32 hex digits" in message
    assert "line 5: pdq must be 64 hex digits" in message
    assert "line 6: no hash value" in message
    assert "line 7: 4 fields, but the header has 3" in message
    assert "line 10: md5 must be 32 hex digits" in message
    reported = [int(n) for n in re.findall(r"line (\d+):", message)]
    assert reported == [3, 4, 5, 6, 7, 10]


def test_two_bad_cells_in_one_row_count_as_one_bad_row():
    message = refusal(b"md5,sha1\nab,cd\n")
    assert "1 bad row," in message
    assert "md5 must be" in message and "sha1 must be" in message


def test_many_bad_rows_are_counted_and_the_first_twenty_quoted():
    data = "md5\n" + "\n".join("nothex" for _ in range(50)) + "\n"
    message = refusal(data.encode())
    assert "50 bad rows" in message and "and 30 more" in message
    reported = [int(n) for n in re.findall(r"line (\d+):", message)]
    assert reported == list(range(2, 22))


def test_multiline_quoted_record_reports_its_first_line():
    message = refusal(f'md5,id\n{MD5[0]},a\nxx,"b\nc"\n{MD5[1]},d\nyy,e\n'.encode())
    reported = [int(n) for n in re.findall(r"line (\d+):", message)]
    assert reported == [3, 6]


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"", "empty list file"),
        (b"\n  \r\n\t\n", "empty list file"),
        (b"id,category,name\n1,a,b\n", "no hash column"),
        (b"md5|sha1\n", "no hash column"),
        (b"md5,sha1;pdq\n", "ambiguous"),
        (b"md5,MD5\n", "md5 column twice"),
        (b"id,entry_id,md5\n", "id column twice"),
        (b"md5\n\xff\xfe\n", "not UTF-8"),
    ],
)
def test_unusable_files_are_refused(data, expected):
    assert expected in refusal(data)


def test_oversized_field_is_refused_not_raised_raw():
    # A quoted field may span lines: over the csv module's limit (raised to the
    # line limit, 4 MiB, for TMK cells) it is refused, not raised.
    message = refusal(b'md5\n"' + (b"a" * 3_000_000 + b"\n") * 2 + b'"\n')
    assert "line 2" in message and "unreadable CSV" in message


def test_fields_as_large_as_video_cells_are_read_then_judged():
    # 351 KB is a TMK cell: read whole, then judged as a value of its column.
    message = refusal(b"md5\n" + b"a" * 351_128 + b"\n")
    assert "line 2" in message and "md5 must be 32 hex digits" in message


def test_load_list_reads_files_and_refuses_missing_or_unknown(tmp_path):
    path = tmp_path / "known.csv"
    path.write_bytes(f"md5\n{MD5[0]}\n".encode())
    hl = load_list(str(path), "known")
    assert hl.name == "known" and hl.count("md5") == 1
    assert "csv" in FORMATS
    with pytest.raises(ListError, match="cannot read"):
        load_list(str(tmp_path / "missing.csv"), "missing")
    with pytest.raises(ListError, match="unknown format"):
        load_list(str(path), "known", fmt="xml")
    path.write_bytes(b"md5\nnope\n")
    with pytest.raises(ListError, match=re.escape(str(path))):
        load_list(str(path), "known")


LIST_ALPHABET = st.sampled_from(
    [
        *[",", ";", "\t", "\n", "\r", '"', " ", "\ufeff", "\x00", "a", "F", "0", "9", "z", "é"],
        *["md5", "MD5", "pdq", "sha1", "id", "category", MD5[0], PDQ[0], SHA1[0]],
    ]
)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400))
def test_random_bytes_only_ever_raise_list_error(data):
    # Any other exception fails the test.
    with contextlib.suppress(ListError):
        parse_csv(data, "fuzz")


@settings(max_examples=300, deadline=None)
@given(st.lists(LIST_ALPHABET, max_size=60).map("".join))
def test_random_list_like_text_only_ever_raises_list_error(text):
    try:
        hl = parse_csv(text.encode(), "fuzz")
    except ListError:
        return
    # Whatever loads is consistent.
    assert len(hl.entry_ids) == len(hl.categories)
    for signal, col in hl.columns.items():
        assert col.values.shape == (len(col.rows), SIGNALS[signal].nbytes)
        assert len(col) > 0 and all(0 <= r < hl.size for r in col.rows.tolist())
