"""NCMEC hash-sharing XML pages (format "ncmec").

The layout read (namespaces ignored, element and attribute names case-insensitive)::

    <queryResult xmlns="https://hashsharing.ncmec.org/hashsharing/v2">
      <images count="2" maxTimestamp="...">
        <image>                                  (or <image id="...">)
          <id>1001</id>
          <classification>A1</classification>   (optional; the category)
          <fingerprints>
            <md5>32 hex</md5> <sha1>40 hex</sha1>
            <pdna>PhotoDNA: base64 of 144 bytes, or 288 hex</pdna>
          </fingerprints>
          <member .../> <timestamp>...</timestamp> <feedback>...</feedback>  (ignored)
        </image>
        <deletedImage><id>1001</id></deletedImage>
      </images>
      <videos> <video>...</video> <deletedVideo>...</deletedVideo> </videos>
      <paging><next>...</next></paging>
    </queryResult>

``image``/``video`` elements are entries wherever they appear (containers
are optional); fingerprints may also sit directly in the item. sha256 and pdq
fingerprints are read too, and a video's ``<tmk_pdqf>`` (``TMK_PDQF``: the
``.tmk`` file's bytes in base64; also ``<tmkPdqf>``/``<tmk>``); others
(videntifier links) are ignored.
Images and videos are numbered separately by NCMEC, so entry ids are
"image:<id>" and "video:<id>": a deletedVideo never removes an image.
``deletedImage``/``deletedVideo`` remove earlier entries with that id (and
with any fingerprint they carry). Bad items are reported as "record N",
counting items from 1.

Read with ``iterparse``, dropping each item once read: memory holds one item.
DTDs are refused outright (any ``<!DOCTYPE`` or ``<!ENTITY`` anywhere in the
stream): they are the door to entity-expansion ("billion laughs") and
external-entity attacks, and a hash list needs neither. Only UTF-8 is read
(the parser's encoding is forced, NUL bytes refused), so a declaration
cannot slip past that check in another encoding.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from typing import BinaryIO

from appliance.lists.formats import CERTAIN, PLAUSIBLE, ListFormat
from appliance.lists.formats.lines import BOM
from appliance.lists.formats.values import hashes_or_problems
from appliance.lists.records import FormatError, FormatOptions, ListBuilder, Record

# Item element (lowercase local name) -> kind of entry.
ITEMS = {"image": "image", "video": "video", "deletedimage": "image", "deletedvideo": "video"}
# Fingerprint element -> signal.
FINGERPRINTS = {
    "md5": "md5",
    "sha1": "sha1",
    "sha256": "sha256",
    "pdq": "pdq",
    "pdna": "photodna",
    "photodna": "photodna",
    # Video TMK+PDQF: the .tmk file's bytes in base64.
    "tmk_pdqf": "tmk",
    "tmkpdqf": "tmk",
    "tmk": "tmk",
}
_REFUSED = (b"<!DOCTYPE", b"<!ENTITY")
_OVERLAP = max(len(m) for m in _REFUSED) - 1


class _Guard:
    """Passes the stream's bytes to the XML parser, refusing DTDs and non-UTF-8 on the way."""

    def __init__(self, stream: BinaryIO) -> None:
        self._stream = stream
        self._tail = b""  # a mark may straddle two reads

    def read(self, size: int = -1) -> bytes:
        data = self._stream.read(size)
        if b"\x00" in data:
            raise FormatError("not UTF-8 XML (NUL bytes: UTF-16/32 is not accepted)")
        window = self._tail + data
        if any(mark in window for mark in _REFUSED):
            raise FormatError(
                "XML with a DOCTYPE or ENTITY declaration refused "
                "(entity-expansion and external-entity attacks; a hash list needs no DTD)"
            )
        self._tail = window[-_OVERLAP:]
        return data


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1].lower()


def _attribute(elem: ET.Element, name: str) -> str:
    for key, value in elem.attrib.items():
        if _local(key) == name:
            return value.strip()
    return ""


def _child_text(elem: ET.Element, name: str) -> str:
    for child in elem:
        if _local(child.tag) == name:
            return (child.text or "").strip()
    return ""


def _item(number: int, elem: ET.Element) -> tuple[str, Record | str]:
    """(where, the item's record or what is wrong with it)."""
    tag = elem.tag.rsplit("}", 1)[-1]
    kind = ITEMS[tag.lower()]
    ident = _attribute(elem, "id") or _child_text(elem, "id")
    where = f"record {number} ({tag} {ident})" if ident else f"record {number} ({tag})"
    cells: dict[str, str] = {}
    problems: list[str] = []
    for child in elem:
        inner = list(child) if _local(child.tag) == "fingerprints" else [child]
        for fingerprint in inner:
            signal = FINGERPRINTS.get(_local(fingerprint.tag).replace("-", "_"))
            text = (fingerprint.text or "").strip()
            if signal is None or not text:
                continue
            if cells.setdefault(signal, text) != text:
                problems.append(f"two different {signal} fingerprints")
    hashes, bad = hashes_or_problems(cells)
    problems += bad
    if problems:
        return where, "; ".join(problems)
    if tag.lower().startswith("deleted"):
        if not ident and not hashes:
            return where, "a deletion without an id or a fingerprint"
        # Without an id, "record-N" names no earlier entry: delete by fingerprint.
        entry_id = f"{kind}:{ident}" if ident else f"record-{number}"
        return where, Record(entry_id, "", hashes, delete=True)
    if not hashes:
        return where, "no fingerprint (md5, sha1, pdna, tmk_pdqf)"
    category = _child_text(elem, "classification") or _attribute(elem, "classification")
    return where, Record(f"{kind}:{ident or f'record-{number}'}", category, hashes)


def parse(stream: BinaryIO, builder: ListBuilder, options: FormatOptions) -> None:
    open_elements: list[ET.Element] = []
    item_depth = 0  # depth of the item being read; 0 outside items
    number = 0
    events = ET.iterparse(_Guard(stream), ("start", "end"), parser=ET.XMLParser(encoding="utf-8"))
    try:
        for event, elem in events:
            if event == "start":
                open_elements.append(elem)
                if not item_depth and _local(elem.tag) in ITEMS:
                    item_depth = len(open_elements)
                continue
            depth = len(open_elements)
            open_elements.pop()
            if item_depth and depth > item_depth:
                continue  # part of the item: kept until the item ends
            if depth == item_depth:
                item_depth = 0
                number += 1
                where, result = _item(number, elem)
                if isinstance(result, str):
                    builder.error(where, result)
                else:
                    builder.add(result)
            if open_elements:
                # Read and done with: drop it, so memory stays one item deep.
                open_elements[-1].remove(elem)
    except ET.ParseError as exc:
        raise FormatError(f"not well-formed XML: {exc}") from exc


def sniff(head: bytes) -> int:
    text = head.removeprefix(BOM).lstrip()
    if not text.startswith(b"<"):
        return 0
    lowered = text.lower()
    marks = (b"hashsharing.ncmec.org", b"<queryresult", b"<fingerprints", b"<deletedimage")
    return CERTAIN if any(m in lowered for m in marks) else PLAUSIBLE


FORMAT = ListFormat("ncmec", parse, sniff, names=("*.xml",))
