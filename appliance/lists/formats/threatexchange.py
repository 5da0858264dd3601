"""python-threatexchange local signal files (format "threatexchange").

One ``<signal type> <hash>`` per line, as ``threatexchange``'s file exchange
writes them (e.g. ``pdq f8f8...``, ``video_md5 d41d...``); blank lines and
``#`` comments are skipped. A line with only a hash takes the declared signal
(``FormatOptions.signal``), as that exchange's ``signal_type`` setting does.
Type names: ``pdq``; ``md5``, ``video_md5`` and ``photo_md5`` (all an MD5 of
the file's bytes); ``vpdq``, whose value is the rest of the line (the
``VPDQSignal`` JSON array, which holds blanks); and this appliance's own
signal names. The other types python-threatexchange knows (url, raw_text,
trend_query, video_tmk_pdqf, ...) cannot be matched here and are skipped, so
a mixed file still loads; an unknown type is a bad row. Entries are called
"line-N".
"""

from __future__ import annotations

from typing import BinaryIO

from appliance.lists.formats import CERTAIN, ListFormat
from appliance.lists.formats.lines import head_lines, text_lines
from appliance.lists.formats.values import BadValue, declared_signal, is_hex, parse_hash
from appliance.lists.records import FormatOptions, ListBuilder, Record
from appliance.signals import SIGNALS

# ThreatExchange signal type name (lowercase) -> signal.
TYPES: dict[str, str] = {
    **{name: name for name in SIGNALS},
    "video_md5": "md5",
    "photo_md5": "md5",
}


# python-threatexchange's other signal types: no hasher here computes them.
SKIPPED_TYPES = frozenset({
    "url", "url_md5", "raw_text", "trend_query", "video_tmk_pdqf", "pdq_ocr", "text",
})


def _data_lines(lines: list[str]) -> list[str]:
    return [t for t in (line.strip() for line in lines) if t and not t.startswith("#")]


def parse(stream: BinaryIO, builder: ListBuilder, options: FormatOptions) -> None:
    declared = declared_signal(options)
    for number, line in text_lines(stream):
        # The type, then the value: the rest of the line (a vPDQ value has blanks).
        parts = line.split(None, 1)
        if not parts or parts[0].startswith("#"):
            continue
        where = f"line {number}"
        if declared is not None and not SIGNALS[declared].hex_values \
                and line.lstrip().startswith("["):
            parts = [line.strip()]  # a declared vPDQ list: the JSON is the whole line
        if len(parts) == 2:
            signal = TYPES.get(parts[0].lower())
            if signal is None and parts[0].lower() in SKIPPED_TYPES:
                continue
            if signal is None:
                builder.error(
                    where,
                    f"signal type {parts[0]!r} is not one this appliance matches "
                    f"(known: {', '.join(TYPES)})",
                )
                continue
        elif len(parts) == 1 and declared is not None:
            signal = declared
        else:
            builder.error(where, "expected '<signal type> <hash>'")
            continue
        if SIGNALS[signal].hex_values and len(parts[-1].split()) > 1:
            builder.error(where, "expected '<signal type> <hash>'")
            continue
        try:
            hashes = {signal: parse_hash(signal, parts[-1])}
        except BadValue as exc:
            builder.error(where, str(exc))
            continue
        builder.add(Record(f"line-{number}", "", hashes))


def sniff(head: bytes) -> int:
    lines = _data_lines(head_lines(head, 50))
    parts = lines[0].split() if lines else []
    signal = TYPES.get(parts[0].lower()) if len(parts) >= 2 else None
    known = signal is not None and (is_hex(parts[1]) or not SIGNALS[signal].hex_values)
    return CERTAIN if known else 0


FORMAT = ListFormat("threatexchange", parse, sniff, names=("*.te",))
