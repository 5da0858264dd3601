"""NIST NSRL RDS 2.x ``NSRLFile.txt`` (format "nsrl").

A quoted CSV with the header
``"SHA-1","MD5","CRC32","FileName","FileSize","ProductCode","OpSystemCode","SpecialCode"``
and upper-case hex digests. The hash columns (SHA-1, MD5, and SHA-256 where
present) are read; everything else is ignored. Every entry's category is
"nsrl" and its id "row-N". Its lists are allow lists (known-benign files)
unless the configuration names another kind (``FORMAT.kind``). File names
are not always UTF-8, and are not used, so undecodable bytes are replaced
rather than refusing the list.
"""

from __future__ import annotations

from typing import BinaryIO

from appliance.lists.formats import CERTAIN, ListFormat
from appliance.lists.formats.delimited import Dialect, header_cells, parse_delimited
from appliance.lists.records import FormatOptions, ListBuilder

CATEGORY = "nsrl"

NSRL = Dialect(
    fields={
        "sha-1": "sha1",
        "sha1": "sha1",
        "md5": "md5",
        "sha-256": "sha256",
        "sha256": "sha256",
    },
    category=CATEGORY,
    errors="replace",
)


def parse(stream: BinaryIO, builder: ListBuilder, options: FormatOptions) -> None:
    parse_delimited(stream, builder, NSRL)


def sniff(head: bytes) -> int:
    cells = set(header_cells(head))
    return CERTAIN if {"sha-1", "md5", "crc32"} <= cells else 0


FORMAT = ListFormat("nsrl", parse, sniff, names=("nsrlfile*",), kind="allow")
