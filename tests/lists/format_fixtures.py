"""Synthetic list files, one valid fixture per format, and helpers for the format tests.

Every hash is random bytes from a seeded generator: no real list content.
"""

from __future__ import annotations

import base64
import io
import json
import random
import re
import sqlite3
from collections.abc import Sequence
from pathlib import Path

import pytest

from appliance.errors import ListError
from appliance.lists import FORMATS, FormatOptions, ListBuilder, load_list
from appliance.lists.records import run_parser
from appliance.signals import SIGNALS

RNG = random.Random(20240501)


def rand(signal: str) -> bytes:
    return bytes(RNG.randrange(256) for _ in range(SIGNALS[signal].nbytes))


MD5 = [rand("md5") for _ in range(6)]
SHA1 = [rand("sha1") for _ in range(6)]
SHA256 = [rand("sha256") for _ in range(4)]
PDQ = [rand("pdq") for _ in range(6)]
PHASH = [rand("phash") for _ in range(2)]
PDNA = [rand("photodna") for _ in range(4)]


def b64(value: bytes) -> str:
    return base64.b64encode(value).decode()


def csv_le_export() -> bytes:
    """The law-enforcement export layout: semicolons, Image ID, Baseline flag."""
    rows = [
        "MD5;SHA1;ZZ40;PhotoDNA;Lace;Image ID;Notes;Baseline",
        f"{MD5[0].hex()};{SHA1[0].hex()};zz;{PDNA[0].hex()};x;IMG-1;;Y",
        f"{MD5[1].hex()};;;;;IMG-2;a note;N",
        f";{SHA1[2].hex()};;{PDNA[2].hex()};;IMG-3;;true",
        f"{MD5[3].hex()};;;;;IMG-4;;0",
    ]
    return ("\r\n".join(rows) + "\r\n").encode()


def text_md5() -> bytes:
    return (
        "# known files\n\n"
        + f"{MD5[0].hex()}\n{MD5[1].hex().upper()}  # upper case is fine\n"
        + f"{SHA1[0].hex()}\n{PDNA[0].hex()}\n"
    ).encode()


def vics_v2() -> bytes:
    doc = {
        "@odata.context": "http://github.com/VICSDATAMODEL/ProjectVic/DataModels/2.0.xml"
        "/Default/$metadata#Media",
        "value": [
            {
                "MediaID": 1,
                "Category": 1,
                "MD5": MD5[0].hex().upper(),
                "SHA1": SHA1[0].hex().upper(),
                "PhotoDNA": b64(PDNA[0]),
                "MediaSize": 2835,
            },
            {
                "MediaID": "2",
                "Category": "2",
                "Hashes": [
                    {"HashName": "md5", "HashValue": MD5[1].hex()},
                    {"hashname": "PHOTODNA", "hashvalue": PDNA[1].hex()},
                    {"HashName": "Bagnolet", "HashValue": "not ours"},
                ],
            },
            {"MediaID": 3, "Category": 0, "SHA1": SHA1[2].hex(), "MD5": None},
        ],
    }
    return json.dumps(doc, indent=1).encode()


def vics_v1() -> bytes:
    doc = {
        "odata.metadata": "http://github.com/ICMEC/ProjectVic/DataModels/1.3.xml/$metadata#Cases",
        "value": [
            {
                "CaseNumber": "C-1",
                "Media": [
                    {"MediaID": 10, "Category": 1, "MD5": MD5[3].hex()},
                    {"MediaID": 11, "Category": 2, "SHA1": SHA1[3].hex()},
                ],
            },
            {"CaseNumber": "C-2", "Media": [{"MediaID": 12, "MD5": MD5[4].hex()}]},
        ],
    }
    return json.dumps(doc).encode()


NCMEC_NS = "https://hashsharing.ncmec.org/hashsharing/v2"


def ncmec_page() -> bytes:
    return f"""<?xml version="1.0" encoding="UTF-8" standalone="yes"?>
<queryResult xmlns="{NCMEC_NS}">
  <images count="4" maxTimestamp="2024-01-01T00:00:00Z">
    <image>
      <member id="42">Example Member</member>
      <timestamp>2024-01-01T00:00:00Z</timestamp>
      <id>1001</id>
      <classification>A1</classification>
      <fingerprints>
        <md5>{MD5[0].hex()}</md5>
        <sha1>{SHA1[0].hex()}</sha1>
        <pdna>{b64(PDNA[0])}</pdna>
      </fingerprints>
      <feedback><affirmativeFeedback type="Md5"><members><member id="1">x</member></members>
      </affirmativeFeedback></feedback>
    </image>
    <image id="1002">
      <classification>B1</classification>
      <fingerprints><pdna>{PDNA[1].hex()}</pdna></fingerprints>
    </image>
    <image><id>1003</id><fingerprints><md5>{MD5[2].hex()}</md5></fingerprints></image>
    <deletedImage><id>1003</id><timestamp>2024-01-02T00:00:00Z</timestamp></deletedImage>
  </images>
  <videos count="2" maxTimestamp="2024-01-01T00:00:00Z">
    <video>
      <id>1002</id>
      <classification>A2</classification>
      <fingerprints>
        <md5>{MD5[3].hex().upper()}</md5>
        <tmk-pdqf rel="self" href="/v2/entries/1/fingerprints/TMK_PDQF"/>
      </fingerprints>
    </video>
    <deletedVideo><id>1001</id></deletedVideo>
  </videos>
  <paging><next>/v2/entries?start=2001&amp;size=1000</next></paging>
</queryResult>
""".encode()


def stopncii_page() -> bytes:
    records = [
        {
            "lastModtimestamp": 1700000000,
            "signalType": "ImagePDQ",
            "hashValue": PDQ[0].hex(),
            "hashStatus": "Active",
            "caseNumbers": {"SNCII-1": "Active"},
        },
        {
            "signalType": "VideoMD5",
            "hashValue": MD5[0].hex().upper(),
            "hashStatus": "Received",
            "hashId": "h-2",
        },
        {"signalType": "pdq", "hashValue": PDQ[1].hex(), "hashStatus": "active"},
        {"signalType": "ImagePDQ", "hashValue": PDQ[1].hex(), "hashStatus": "Withdrawn"},
    ]
    page = {"count": len(records), "nextPageToken": "t", "hasMoreRecords": False}
    return json.dumps({**page, "hashRecords": records}).encode()


def stopncii_lines() -> bytes:
    rows = [
        {"signalType": "ImagePDQ", "hashValue": PDQ[2].hex(), "hashStatus": "Active", "id": 7},
        {"signalType": "VIDEO_MD5", "hashValue": MD5[2].hex(), "hashStatus": "Active"},
        {"signalType": "ImagePDQ", "hashValue": PDQ[3].hex(), "hashStatus": "Deleted", "id": 7},
    ]
    return "".join(json.dumps(r) + "\n" for r in rows).encode()


def threatexchange_file() -> bytes:
    return (
        "# exported from a collaboration\n"
        f"pdq {PDQ[0].hex()}\n"
        f"video_md5 {MD5[0].hex()}\n"
        "\n"
        f"PDQ   {PDQ[1].hex().upper()}\n"
        f"md5 {MD5[1].hex()}\n"
    ).encode()


def nsrl_file() -> bytes:
    header = (
        '"SHA-1","MD5","CRC32","FileName","FileSize","ProductCode","OpSystemCode","SpecialCode"'
    )
    rows = [
        f'"{SHA1[0].hex().upper()}","{MD5[0].hex().upper()}","AABBCCDD","a.dll",1024,1,"358",""',
        f'"{SHA1[1].hex().upper()}","{MD5[1].hex().upper()}","00112233","caf\xe9.txt",2,2,"358",""',
    ]
    # File names are not always UTF-8 in NSRL: Latin-1 bytes on purpose.
    return ("\r\n".join([header, *rows]) + "\r\n").encode("latin-1")


def nsrl_sqlite(path: Path, rows: Sequence[Sequence[object]] | None = None) -> bytes:
    """An RDSv3-shaped database at ``path``; returns its bytes."""
    if rows is None:
        rows = [
            (SHA256[0].hex().upper(), SHA1[0].hex().upper(), MD5[0].hex().upper(), "x", "a", 1, 1),
            (SHA256[1].hex().upper(), SHA1[1].hex().upper(), MD5[1].hex().upper(), "x", "b", 2, 1),
        ]
    connection = sqlite3.connect(path)
    connection.execute(
        "CREATE TABLE FILE (sha256 VARCHAR NOT NULL, sha1 VARCHAR NOT NULL, md5 VARCHAR NOT NULL,"
        " crc32 VARCHAR, file_name VARCHAR, file_size INTEGER, package_id INTEGER)"
    )
    connection.executemany("INSERT INTO FILE VALUES (?, ?, ?, ?, ?, ?, ?)", rows)
    connection.commit()
    connection.close()
    return path.read_bytes()


# format -> (file name, bytes) of a valid fixture; nsrl-sqlite is built on demand.
TEXT_FIXTURES = {
    "csv": ("export.csv", csv_le_export),
    "text": ("hashes.txt", text_md5),
    "vics": ("vics.json", vics_v2),
    "ncmec": ("page.xml", ncmec_page),
    "stopncii": ("stopncii.json", stopncii_page),
    "threatexchange": ("signals.te", threatexchange_file),
    "nsrl": ("NSRLFile.txt", nsrl_file),
}

BILLION_LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;">]>
<queryResult><image><id>&lol2;</id></image></queryResult>"""


# --- helpers ---


def column(hl, signal):
    """{entry id: value hex} of one signal's column."""
    col = hl.columns[signal]
    return {hl.entry_ids[int(r)]: bytes(v).hex() for r, v in zip(col.rows, col.values, strict=True)}


def load(tmp_path, name, data, fmt="auto", **options):
    path = tmp_path / name
    path.write_bytes(data)
    return load_list(str(path), "L", fmt, FormatOptions(**options))


def refusal(tmp_path, name, data, fmt="auto", **options):
    with pytest.raises(ListError) as info:
        load(tmp_path, name, data, fmt, **options)
    return str(info.value)


def lines_reported(message):
    return [int(n) for n in re.findall(r"line (\d+)[:,]", message)]


class Trickle(io.RawIOBase):
    """A stream that hands out at most a few bytes per read and refuses read()
    of everything: parsers must stream, and cope with short reads."""

    def __init__(self, data: bytes, step: int = 3) -> None:
        self._data, self._pos, self._step = data, 0, step
        self.largest = 0

    def readable(self):
        return True

    def read(self, size=-1):
        if size is None or size < 0:
            raise AssertionError("read of the whole stream")
        self.largest = max(self.largest, size)
        part = self._data[self._pos : self._pos + min(size, self._step)]
        self._pos += len(part)
        return part

    def readinto(self, buffer):
        part = self.read(len(buffer))
        buffer[: len(part)] = part
        return len(part)


def parsed(fmt, stream, **options):
    builder = ListBuilder("L", "")
    run_parser(FORMATS[fmt], stream, builder, FormatOptions(**options))
    hl = builder.build("v")
    return hl.entry_ids, hl.categories, {s: column(hl, s) for s in hl.columns}
