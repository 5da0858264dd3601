"""Plain hash lists (format "text"): one hash per line, nothing else.

Blank lines and ``#`` comments (whole-line or after the hash) are skipped.
The signal is declared by configuration (``FormatOptions.signal``) or, when
not, inferred from each line's length where only one signal has it: 32 hex
digits are MD5, 40 SHA-1, 288 PhotoDNA. 64 (SHA-256 or PDQ) and 16 (the
imagehash family) are ambiguous and need the declaration. A declared
PhotoDNA list may also write base64. Entries are called "line-N".
"""

from __future__ import annotations

from collections import defaultdict
from typing import BinaryIO

from appliance.lists.formats import PLAUSIBLE, ListFormat
from appliance.lists.formats.lines import head_lines, text_lines
from appliance.lists.formats.values import BadValue, declared_signal, is_hex, parse_hash
from appliance.lists.records import FormatError, FormatOptions, ListBuilder, Record
from appliance.signals import SIGNALS


def _by_length() -> dict[int, tuple[str, ...]]:
    lengths: dict[int, list[str]] = defaultdict(list)
    for signal in SIGNALS.values():
        if signal.hex_values:  # a text list is hex (video values have their own lists)
            lengths[signal.hex_len].append(signal.name)
    return {length: tuple(names) for length, names in lengths.items()}


# Hex length -> the signals of that length, from the registry.
BY_LENGTH = _by_length()
_LENGTHS = ", ".join(f"{n} {' or '.join(s)}" for n, s in sorted(BY_LENGTH.items()))


def _value(line: str) -> str:
    return line.split("#", 1)[0].strip()


def parse(stream: BinaryIO, builder: ListBuilder, options: FormatOptions) -> None:
    declared = declared_signal(options)
    for number, line in text_lines(stream):
        value = _value(line)
        if not value:
            continue
        signal = declared
        if signal is None:
            candidates = BY_LENGTH.get(len(value), ())
            if len(candidates) > 1:
                # Not a bad row: every such line would be, and the fix is
                # one setting, so say that once.
                raise FormatError(
                    f"line {number}: {len(value)} characters could be "
                    f"{' or '.join(candidates)}; declare the list's signal"
                )
            if not candidates:
                builder.error(
                    f"line {number}",
                    f"{len(value)} characters is no signal's hex length ({_LENGTHS})",
                )
                continue
            signal = candidates[0]
        try:
            hashes = {signal: parse_hash(signal, value)}
        except BadValue as exc:
            builder.error(f"line {number}", str(exc))
            continue
        builder.add(Record(f"line-{number}", "", hashes))


def sniff(head: bytes) -> int:
    values = [_value(line) for line in head_lines(head, 50)]
    first = next((v for v in values if v), "")
    return PLAUSIBLE if is_hex(first) and len(first) in BY_LENGTH else 0


FORMAT = ListFormat("text", parse, sniff, names=("*.hashes", "*.md5", "*.sha1"))
