"""Project VIC VICS JSON (format "vics"), OData 1.x and 2.0.

A top-level object with a ``value`` array, e.g. (2.0)::

    {"@odata.context": ".../DataModels/2.0.xml/Default/$metadata#Media",
     "value": [{"MediaID": 1, "Category": 1, "MD5": "ADEB...", "SHA1": "2B03...",
                "PhotoDNA": "<base64 of 144 bytes>",
                "Hashes": [{"HashName": "SHA256", "HashValue": "..."}]}, ...]}

1.x files (``"odata.metadata"``) may nest the Media objects in cases:
``"value": [{"CaseNumber": ..., "Media": [{...}, ...]}]``; both shapes are read.
Keys and hash names are case-insensitive; a hash is a top-level key named
after a signal (MD5, SHA1, SHA256, PDQ, PhotoDNA; "SHA-1" too) or an item of
``Hashes``; hash names this appliance does not know are ignored. PhotoDNA is
base64 (as VICS writes it) or 288 hex digits. ``MediaID`` is the entry id
("record-N" when absent), ``Category`` (number or text) the category. Bad
records are reported as "record N", counting Media objects from 1.

Streamed with ``jsonstream``: memory holds one Media object at a time (a 1.x
case's other fields are kept while its Media array is read).
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

# Hash key or HashName (lowercase) -> signal.
HASH_NAMES: dict[str, str] = {**{s: s for s in SIGNALS}, "sha-1": "sha1", "sha-256": "sha256"}


def _scalar(fields: dict[str, object], key: str, problems: list[str]) -> str:
    """A number-or-text field as text; "" when absent or null."""
    value = fields.get(key)
    if value is None:
        return ""
    if isinstance(value, bool) or not isinstance(value, int | str):
        problems.append(f"{key} must be a number or text")
        return ""
    return str(value).strip()


def _hash_texts(fields: dict[str, object], problems: list[str]) -> list[tuple[str, object]]:
    """(signal, value as written) from the top-level keys and the Hashes array."""
    found = [(HASH_NAMES[k], v) for k, v in fields.items() if k in HASH_NAMES and v is not None]
    listed = fields.get("hashes")
    if listed is None:
        return found
    if not isinstance(listed, list):
        problems.append("Hashes must be an array")
        return found
    for item in listed:
        if not isinstance(item, dict):
            problems.append("Hashes items must be objects")
            continue
        lowered = {str(k).lower(): v for k, v in item.items()}
        name, value = lowered.get("hashname"), lowered.get("hashvalue")
        signal = HASH_NAMES.get(name.strip().lower()) if isinstance(name, str) else None
        if signal is not None and value is not None:
            found.append((signal, value))
    return found


def _record(number: int, media: object) -> Record | str:
    if not isinstance(media, dict):
        return "not a JSON object"
    fields = {str(k).lower(): v for k, v in media.items()}
    problems: list[str] = []
    entry_id = _scalar(fields, "mediaid", problems) or f"record-{number}"
    category = _scalar(fields, "category", problems)
    hashes: dict[str, bytes] = {}
    for signal, text in _hash_texts(fields, problems):
        if not isinstance(text, str):
            problems.append(f"{signal} must be text")
            continue
        if not text.strip():
            continue
        try:
            value = parse_hash(signal, text)
        except BadValue as exc:
            problems.append(str(exc))
            continue
        if hashes.setdefault(signal, value) != value:
            problems.append(f"two different {signal} values")
    if problems:
        return "; ".join(problems)
    if not hashes:
        return "no hash value (MD5, SHA1, PhotoDNA, ...)"
    return Record(entry_id, category, hashes)


def parse(stream: BinaryIO, builder: ListBuilder, options: FormatOptions) -> None:
    reader = JsonReader(stream)
    if reader.peek() != "{":
        raise reader.error("not a VICS document: expected a JSON object with a 'value' array")
    number = 0
    found = False
    for key in reader.members():
        if key.lower() != "value" or reader.peek() != "[":
            reader.value()  # odata metadata and the like
            continue
        found = True
        for _ in reader.items():
            for media in flatten(reader, "media"):
                number += 1
                result = _record(number, media)
                if isinstance(result, str):
                    builder.error(f"record {number}", result)
                else:
                    builder.add(result)
    if reader.peek():
        raise reader.error("invalid JSON: more text after the document")
    if not found:
        raise FormatError("not a VICS document: no 'value' array")


_MARKS = re.compile(rb'"(odata\.metadata|@odata\.context|MediaID)"')


def sniff(head: bytes) -> int:
    text = head.removeprefix(BOM).lstrip()
    return CERTAIN if text.startswith(b"{") and _MARKS.search(text) else 0


FORMAT = ListFormat("vics", parse, sniff, names=("*.json",))
