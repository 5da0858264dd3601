"""StopNCII.org hash records (format "stopncii").

Records as the StopNCII FetchHashes API returns them::

    {"signalType": "ImagePDQ", "hashValue": "f8f8...", "hashStatus": "Active",
     "caseNumbers": {"SNCII-123": "Active"}, "lastModtimestamp": 1700000000}

in a JSON array, one per line (JSON lines), or in API pages
``{"count": 2, "hashRecords": [...], "nextPageToken": ...}`` (several pages
may follow each other). Keys and values are case-insensitive.
``signalType``: ImagePDQ or PDQ -> pdq; VideoMD5, video_md5 or MD5 -> md5;
VideoTMK or video_tmk -> tmk (the hash value is the ``.tmk`` file's bytes in
base64); this appliance's signal names. The feed's other known types (Text,
URL) cannot be matched here and are skipped, so a mixed feed still loads; an
unknown type is a bad record. ``hashStatus``: Active or Received adds
(also when absent); Withdrawn or Deleted removes earlier records with the same
hash (and the same ``hashId``/``id`` when given); anything else is a bad record.

Entry id: ``hashId`` or ``id``, else the record's case numbers joined with
",", else "record-N". Case numbers are shared by several hashes, so a
withdrawal never deletes by them, only by hash (and hashId/id). Records are
counted from 1 ("record N") across the whole file. Streamed with
``jsonstream``: memory holds one record at a time.
"""

from __future__ import annotations

import re
from typing import BinaryIO

from appliance.lists.formats import CERTAIN, ListFormat
from appliance.lists.formats.jsonstream import JsonReader, flatten
from appliance.lists.formats.lines import BOM
from appliance.lists.formats.values import BadValue, parse_hash
from appliance.lists.records import FormatError, FormatOptions, ListBuilder, Record
from appliance.signals import SIGNALS

# signalType (lowercase) -> signal.
TYPES: dict[str, str] = {
    **{s: s for s in SIGNALS},
    "imagepdq": "pdq",
    "videomd5": "md5",
    "video_md5": "md5",
    # The .tmk file's bytes in base64.
    "videotmk": "tmk",
    "video_tmk": "tmk",
}
ADD = frozenset({"active", "received"})
REMOVE = frozenset({"withdrawn", "deleted"})


def _id(value: object) -> str:
    ok = isinstance(value, int | str) and not isinstance(value, bool)
    return str(value).strip() if ok else ""


def _cases(value: object) -> str:
    if isinstance(value, dict):
        return ",".join(sorted(str(k) for k in value))
    if isinstance(value, list):
        return ",".join(str(v) for v in value if isinstance(v, int | str))
    return ""


# Types StopNCII shares that no hasher here computes: skipped, not refused.
SKIPPED_TYPES = frozenset({"text", "url"})


def _record(number: int, record: object) -> Record | str | None:
    if not isinstance(record, dict):
        return "not a JSON object"
    fields = {str(k).lower(): v for k, v in record.items()}
    kind, text, status = fields.get("signaltype"), fields.get("hashvalue"), fields.get("hashstatus")
    if not isinstance(kind, str) or not isinstance(text, str):
        return "signalType and hashValue must both be text"
    signal = TYPES.get(kind.strip().lower())
    if signal is None:
        if kind.strip().lower() in SKIPPED_TYPES:
            return None
        return f"signal type {kind!r} is not one this appliance matches"
    state = "active" if status is None else str(status).strip().lower()
    if state not in ADD | REMOVE:
        return f"hashStatus {status!r} is none of Active, Received, Withdrawn, Deleted"
    try:
        hashes = {signal: parse_hash(signal, text)}
    except BadValue as exc:
        return str(exc)
    own_id = _id(fields.get("hashid")) or _id(fields.get("id"))
    if state in REMOVE:
        # "record-N" names no earlier entry: such a delete goes by hash only.
        return Record(own_id or f"record-{number}", "", hashes, delete=True)
    return Record(own_id or _cases(fields.get("casenumbers")) or f"record-{number}", "", hashes)


def parse(stream: BinaryIO, builder: ListBuilder, options: FormatOptions) -> None:
    reader = JsonReader(stream)
    if not reader.peek():
        raise FormatError("empty list file")
    number = 0

    def take(value: object) -> None:
        nonlocal number
        number += 1
        result = _record(number, value)
        if isinstance(result, str):
            builder.error(f"record {number}", result)
        elif result is not None:
            builder.add(result)

    while reader.peek():  # JSON lines: one value after another
        if reader.peek() == "[":
            for _ in reader.items():
                for value in flatten(reader, "hashrecords"):
                    take(value)
        else:
            for value in flatten(reader, "hashrecords"):
                take(value)


_MARKS = re.compile(rb'"(signalType|hashStatus|hashRecords)"')


def sniff(head: bytes) -> int:
    text = head.removeprefix(BOM).lstrip()
    return CERTAIN if text[:1] in (b"[", b"{") and _MARKS.search(text) else 0


FORMAT = ListFormat("stopncii", parse, sniff, names=("*.json", "*.jsonl", "*.ndjson"))
