"""Hash text as list files write it -> raw bytes, and other shared cell readers.

Lists write hashes as hex (any case), except PhotoDNA, which VICS, NCMEC and
some exports write as base64 of its 144 bytes. Both spellings are accepted
wherever a PhotoDNA value is read: their lengths (288 hex, 192 base64) never
collide.
"""

from __future__ import annotations

import base64
import binascii

from appliance.errors import ItemFault
from appliance.lists.records import FormatError, FormatOptions
from appliance.signals import SIGNALS


class BadValue(Exception):
    """A cell that cannot be read; the message is for the bad-row report."""


def parse_hash(signal: str, text: str) -> bytes:
    """``text`` as a value of ``signal``; BadValue with the reason otherwise."""
    try:
        return SIGNALS[signal].parse(text)
    except ItemFault as fault:
        if signal != "photodna":
            raise BadValue(fault.message) from fault
        compact = "".join(text.split())  # base64 is often wrapped over lines
        try:
            value = base64.b64decode(compact, validate=True)
        except (binascii.Error, ValueError):
            value = b""
        if len(value) != SIGNALS[signal].nbytes:
            raise BadValue(
                f"photodna must be 288 hex digits or base64 of 144 bytes, "
                f"got {len(compact)} characters"
            ) from fault
        return value


def parse_flag(column: str, text: str) -> bool:
    """A yes/no cell: Y/N, Yes/No, True/False, T/F, 1/0 in any case; blank is no."""
    value = text.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise BadValue(f"{column} must be Y/N, Yes/No, True/False or 1/0, got {text.strip()!r}")


_TRUE = frozenset({"y", "yes", "true", "t", "1"})
_FALSE = frozenset({"", "n", "no", "false", "f", "0"})


def hashes_or_problems(
    cells: dict[str, str],
) -> tuple[dict[str, bytes], list[str]]:
    """Parse non-blank ``signal -> text`` cells: (parsed hashes, problems)."""
    parsed: dict[str, bytes] = {}
    problems: list[str] = []
    for signal, text in cells.items():
        if not text.strip():
            continue
        try:
            parsed[signal] = parse_hash(signal, text)
        except BadValue as exc:
            problems.append(str(exc))
    return parsed, problems


def declared_signal(options: FormatOptions) -> str | None:
    """The configured signal of a list (``options.signal``), normalised; FormatError
    when it is not a registered signal."""
    if options.signal is None:
        return None
    name = options.signal.strip().lower()
    if name not in SIGNALS:
        raise FormatError(
            f"declared signal {options.signal!r} is unknown; known: {', '.join(SIGNALS)}"
        )
    return name


def is_hex(text: str) -> bool:
    return bool(text) and all(c in _HEX_DIGITS for c in text)


_HEX_DIGITS = frozenset("0123456789abcdefABCDEF")
