"""Incremental JSON reading with the standard library: a pull reader.

JSON list files (VICS, StopNCII pages) are one big object or array, or JSON
lines; ``json.load`` would hold the whole file, and its objects, in memory.
``JsonReader`` walks the containers itself (``members``, ``items``) and
decodes only the values inside them, one at a time, with the C decoder
(``json.JSONDecoder.raw_decode``) over a buffer it refills from the stream.

Memory: the buffer holds the value being decoded plus at most one chunk, so
the bound is the largest single value the caller asks for (one record),
however long the file.
"""

from __future__ import annotations

import codecs
import json
import re
from collections.abc import Iterator
from typing import BinaryIO

from appliance.lists.records import FormatError

CHUNK = 1 << 16
_WS = re.compile(r"[ \t\n\r]*")
# A decode error this close to the end of the buffer may just be the value
# running on into the next chunk.
_TAIL = 16


class JsonReader:
    """Pull reader over a binary stream of UTF-8 JSON text (a BOM is allowed).

    Errors are FormatError naming the line ("line 12: invalid JSON: ...").
    """

    def __init__(self, stream: BinaryIO) -> None:
        self._stream = stream
        self._decoder = codecs.getincrementaldecoder("utf-8-sig")("strict")
        self._json = json.JSONDecoder()
        self._buf = ""
        self._pos = 0
        self._eof = False
        self._bytes = 0
        # Line number of buffer index _line_at (counted lazily, once per character).
        self._line = 1
        self._line_at = 0

    def _fill(self, at_least: int = CHUNK) -> bool:
        """Append at least ``at_least`` more bytes' worth of text; False at end of file."""
        if self._eof:
            return False
        data = self._stream.read(max(CHUNK, at_least))
        try:
            text = self._decoder.decode(data, final=not data)
        except UnicodeDecodeError as exc:
            raise self.error(f"not UTF-8 text (near byte {self._bytes + exc.start})") from exc
        self._bytes += len(data)
        self._eof = not data
        self._count_lines(self._pos)
        self._buf = self._buf[self._pos :] + text
        self._pos = self._line_at = 0
        return True

    def _count_lines(self, upto: int) -> int:
        if upto > self._line_at:
            self._line += self._buf.count("\n", self._line_at, upto)
            self._line_at = upto
        return self._line

    @property
    def line(self) -> int:
        """Line of the next unread character (1-based)."""
        return self._count_lines(self._pos)

    def error(self, message: str, at: int | None = None) -> FormatError:
        at = self._pos if at is None else at
        line = self._line + (self._buf.count("\n", self._line_at, at) if at > self._line_at else 0)
        return FormatError(f"line {line}: {message}")

    def peek(self) -> str:
        """The next character that is not whitespace, not consumed; "" at end of file."""
        while True:
            match = _WS.match(self._buf, self._pos)
            self._pos = match.end() if match else self._pos
            if self._pos < len(self._buf):
                return self._buf[self._pos]
            if not self._fill():
                return ""

    def expect(self, char: str) -> None:
        found = self.peek()
        if found != char:
            what = repr(found) if found else "the end of the file"
            raise self.error(f"invalid JSON: expected {char!r}, found {what}")
        self._pos += 1

    def _decode(self) -> tuple[object, int]:
        try:
            return self._json.raw_decode(self._buf, self._pos)
        except RecursionError as exc:
            raise self.error("invalid JSON: nested too deeply") from exc

    def value(self) -> object:
        """Decode the next value, reading as much of the stream as it takes."""
        if not self.peek():
            raise self.error("invalid JSON: expected a value, found the end of the file")
        while True:
            try:
                obj, end = self._decode()
            except json.JSONDecodeError as exc:
                truncated = (
                    exc.msg.startswith("Unterminated string") or exc.pos >= len(self._buf) - _TAIL
                )
                # Read on (doubling what is pending, so a long value costs
                # linear time) unless the error is plainly inside the text.
                if truncated and self._fill(len(self._buf) - self._pos):
                    continue
                raise self.error(f"invalid JSON: {exc.msg}", exc.pos) from exc
            except ValueError as exc:  # e.g. an integer over the digit limit
                raise self.error(f"invalid JSON: {exc}") from exc
            # A number (or anything) ending exactly at the buffer's end may go on.
            if end >= len(self._buf) and self._fill(len(self._buf) - self._pos):
                continue
            self._pos = end
            return obj

    def value_in_buffer(self) -> tuple[bool, object]:
        """The next value if it is already wholly in the buffer: (True, value);
        else (False, None), nothing consumed. Call after ``peek``.

        The fast path for small records: one C call instead of walking keys.
        """
        try:
            obj, end = self._decode()
        except ValueError:  # JSONDecodeError included: the slow path will say why
            return False, None
        if end >= len(self._buf) and not self._eof:
            return False, None
        self._pos = end
        return True, obj

    def items(self) -> Iterator[None]:
        """Enter an array; yield once per element, which the caller must consume."""
        self.expect("[")
        if self.peek() == "]":
            self._pos += 1
            return
        while True:
            yield
            found = self.peek()
            self._pos += 1
            if found == "]":
                return
            if found != ",":
                self._pos -= 1
                raise self.error(f"invalid JSON: expected ',' or ']', found {found or 'the end'!r}")

    def members(self) -> Iterator[str]:
        """Enter an object; yield each key, whose value the caller must consume."""
        self.expect("{")
        if self.peek() == "}":
            self._pos += 1
            return
        while True:
            if self.peek() != '"':
                raise self.error("invalid JSON: expected a key in double quotes")
            key = self.value()
            assert isinstance(key, str)  # a value that starts with '"' is a string
            self.expect(":")
            yield key
            found = self.peek()
            self._pos += 1
            if found == "}":
                return
            if found != ",":
                self._pos -= 1
                raise self.error(
                    f"invalid JSON: expected ',' or '}}', found {found or 'the end'!r}"
                )


def find_key(obj: dict[str, object], key: str) -> object:
    """``obj``'s value under ``key`` compared case-insensitively; None if absent."""
    for name, value in obj.items():
        if name.lower() == key:
            return value
    return None


def flatten(reader: JsonReader, nested: str) -> Iterator[object]:
    """Read one value; if it is an object holding an array under key ``nested``
    (case-insensitive), yield that array's elements one by one (streamed:
    a VICS 1.x case with all its Media, a StopNCII page with its hashRecords);
    otherwise yield the value itself (a Media object, a record)."""
    if reader.peek() != "{":
        yield reader.value()
        return
    whole, obj = reader.value_in_buffer()
    if whole:
        assert isinstance(obj, dict)
        inner = find_key(obj, nested)
        if isinstance(inner, list):
            yield from inner
        else:
            yield obj
        return
    collected: dict[str, object] = {}
    streamed = False
    for key in reader.members():
        if key.lower() == nested and reader.peek() == "[":
            streamed = True
            for _ in reader.items():
                yield reader.value()
        else:
            collected[key] = reader.value()
    if not streamed:
        yield collected
