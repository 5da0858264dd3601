"""Numbered text lines of a binary stream, read a chunk at a time.

Line endings are "\\n", "\\r\\n" or a lone "\\r" (as ``open(newline="")``
splits them, so the csv module sees what it expects), and are kept on each
line. Lines are decoded one by one so a bad byte is reported with its line
and file offset; splitting bytes at CR/LF is safe in UTF-8, whose multi-byte
sequences never contain those bytes.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import BinaryIO

from appliance.lists.records import FormatError

CHUNK = 1 << 16
# A longer line is refused: memory stays bounded even for a file without
# line breaks. Image rows are under a few KiB (a PhotoDNA hex is 288 bytes);
# video rows are larger: a TMK cell is 351 KB of base64, a vPDQ of an hour
# at one frame a second about 290 KB of JSON.
MAX_LINE = 4 << 20
BOM = b"\xef\xbb\xbf"

_LINE = re.compile(rb"[^\r\n]*(?:\r\n|\r|\n)")


def _raw_lines(stream: BinaryIO, max_line: int) -> Iterator[bytes]:
    carry = b""
    number = 0
    while True:
        chunk = stream.read(CHUNK)
        data = carry + chunk if carry else chunk
        if not chunk:
            if data:
                yield data
            return
        # Up to the last line ending; a final "\r" may be half of a "\r\n"
        # split across chunks, so it waits for the next chunk.
        limit = len(data) - 1 if data.endswith(b"\r") else len(data)
        cut = max(data.rfind(b"\n", 0, limit), data.rfind(b"\r", 0, limit)) + 1
        # The block ends with a line ending, so the matches tile it exactly.
        for match in _LINE.finditer(data, 0, cut):
            number += 1
            yield match.group()
        carry = data[cut:]
        if len(carry) > max_line:
            raise FormatError(f"line {number + 1}: longer than {max_line} bytes")


def text_lines(
    stream: BinaryIO, *, errors: str = "strict", max_line: int = MAX_LINE
) -> Iterator[tuple[int, str]]:
    """(1-based line number, text with its line ending) for every line.

    A UTF-8 byte order mark is dropped. ``errors="strict"`` raises
    FormatError at the first byte that is not UTF-8; "replace" substitutes
    it (for columns the parser ignores anyway, e.g. NSRL file names).
    """
    offset = 0
    for number, raw in enumerate(_raw_lines(stream, max_line), start=1):
        start = offset
        offset += len(raw)
        if number == 1 and raw.startswith(BOM):
            raw, start = raw[len(BOM) :], start + len(BOM)
        try:
            yield number, raw.decode("utf-8", errors)
        except UnicodeDecodeError as exc:
            raise FormatError(f"not UTF-8 text (line {number}, byte {start + exc.start})") from exc


def head_lines(head: bytes, count: int) -> list[str]:
    """Up to ``count`` non-blank lines of a file's first bytes, for sniffers.

    Undecodable bytes are replaced: sniffing only guesses; the parser judges.
    """
    text = head.removeprefix(BOM).decode("utf-8", "replace")
    return [line for line in text.splitlines() if line.strip()][:count]
