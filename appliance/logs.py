"""Structured logging: one line per event, as text for people or JSON for machines.

``setup_logging("json")`` makes every record one JSON object on one line::

    {"ts": "2026-11-28T12:00:00.123Z", "level": "INFO", "logger": "appliance.server",
     "msg": "request", "request_id": "r1", "method": "Match", "code": "OK", "files": 3}

and ``setup_logging("text")`` the same event as a line a person reads::

    2026-11-28T12:00:00.123Z INFO appliance.server request request_id=r1 method=Match ...

Fields travel as ``extra=`` of the standard logging calls, or through
``log_event(log, logging.INFO, "request", request_id=rid, ...)``.

Privacy (DESIGN.md): file content is never logged. As a safety net the
formatters replace any bytes-like value, in a field or a ``%`` argument of the
message, by ``"<N bytes>"``, so a slip at a call site prints a size, not content.
"""

from __future__ import annotations

import json
import logging
import math
import sys
import time
from collections.abc import Mapping
from typing import Any, TextIO

FORMATS = ("text", "json")

# What every LogRecord carries; anything else in its __dict__ came from extra=.
_RECORD_ATTRS = frozenset(vars(logging.makeLogRecord({}))) | {"message", "asctime"}
# The keys of a JSON line of our own; an extra field of the same name gets a "_".
_CORE_KEYS = ("ts", "level", "logger", "msg", "exc", "stack")
# Containers nested deeper than this are printed with str(): a log line is no dump.
_MAX_DEPTH = 4


def _redact(value: Any, depth: int = 0) -> Any:
    """``value`` made JSON-ready: bytes-like -> "<N bytes>", containers walked,
    JSON scalars kept, anything else str()."""
    if isinstance(value, bytes | bytearray):
        return f"<{len(value)} bytes>"
    if isinstance(value, memoryview):
        return f"<{value.nbytes} bytes>"
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)  # NaN and Infinity are not JSON; strict readers refuse them
    if value is None or isinstance(value, str | bool | int | float):
        return value
    if depth < _MAX_DEPTH:
        if isinstance(value, Mapping):
            return {str(k): _redact(v, depth + 1) for k, v in value.items()}
        if isinstance(value, list | tuple | set | frozenset):
            return [_redact(v, depth + 1) for v in value]
    return str(value)


def _has_bytes(value: Any) -> bool:
    return isinstance(value, bytes | bytearray | memoryview)


def _message(record: logging.LogRecord) -> str:
    """``record.getMessage()``, with bytes-like ``%`` arguments redacted first."""
    args = record.args
    if isinstance(args, Mapping) and any(_has_bytes(v) for v in args.values()):
        cleaned: Any = {k: _redact(v) if _has_bytes(v) else v for k, v in args.items()}
    elif isinstance(args, tuple) and any(_has_bytes(v) for v in args):
        cleaned = tuple(_redact(v) if _has_bytes(v) else v for v in args)
    else:
        return record.getMessage()
    return str(str(record.msg) % cleaned)


def _timestamp(record: logging.LogRecord) -> str:
    """ISO 8601 UTC with milliseconds: ``2026-11-28T12:00:00.123Z``."""
    seconds = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
    return f"{seconds}.{int(record.msecs):03d}Z"


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    """The record's extra fields, redacted, in the order they were given; names
    starting with "_" are private to a handler or filter and left out."""
    fields: dict[str, Any] = {}
    for key, value in vars(record).items():
        if key in _RECORD_ATTRS or key.startswith("_"):
            continue
        name = f"{key}_" if key in _CORE_KEYS else key
        fields[name] = _redact(value)
    return fields


def _escape(text: str) -> str:
    """``text`` on one line: line breaks and other control characters escaped."""
    if text.isprintable():
        return text
    out = []
    for ch in text:
        if ch.isprintable():
            out.append(ch)
        elif ch in "\n\r\t":
            out.append({"\n": "\\n", "\r": "\\r", "\t": "\\t"}[ch])
        else:
            out.append(ascii(ch)[1:-1])  # "\x85", "\u2028"
    return "".join(out)


def _text_value(value: Any) -> str:
    """A field value for ``key=value``: bare when unambiguous, else JSON-quoted."""
    if isinstance(value, str):
        if value and value.isprintable() and not any(c in value for c in ' ="'):
            return value
        return json.dumps(value)
    return json.dumps(value, default=str)


class _Formatter(logging.Formatter):
    def _fields_and_trace(self, record: logging.LogRecord) -> dict[str, Any]:
        """The record's extra fields, then its traceback (``exc``) and stack, if any."""
        fields = _fields(record)
        if record.exc_info:
            fields["exc"] = self.formatException(record.exc_info)
        elif record.exc_text:
            fields["exc"] = record.exc_text
        if record.stack_info:
            fields["stack"] = self.formatStack(record.stack_info)
        return fields


class JsonFormatter(_Formatter):
    """One JSON object per record, on one line (json.dumps escapes line breaks)."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": _timestamp(record),
            "level": record.levelname,
            "logger": record.name,
            "msg": _message(record),
        }
        line.update(self._fields_and_trace(record))
        # ensure_ascii: also escapes U+2028 and friends, which some readers split on.
        return json.dumps(line, default=str)


class TextFormatter(_Formatter):
    """``TS LEVEL LOGGER message key=value ...``, one line per record: line breaks
    in the message, the fields and the traceback (``exc=``) are escaped."""

    def format(self, record: logging.LogRecord) -> str:
        parts = [_timestamp(record), record.levelname, record.name, _escape(_message(record))]
        fields = self._fields_and_trace(record)
        parts.extend(f"{_escape(key)}={_text_value(value)}" for key, value in fields.items())
        return " ".join(parts)


class _Handler(logging.StreamHandler[TextIO]):
    """The handler ``setup_logging`` installs; its class marks it for replacement."""


def setup_logging(
    fmt: str = "text", level: int = logging.INFO, stream: TextIO | None = None
) -> None:
    """Send the root logger's records to ``stream`` (stderr by default) as ``fmt``.

    Calling again replaces the handler an earlier call installed (never twice the
    same line); handlers installed by others (pytest's capture) are left alone.
    """
    if fmt not in FORMATS:
        raise ValueError(f"log format must be one of {', '.join(FORMATS)}, not {fmt!r}")
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, _Handler)]:
        root.removeHandler(old)
        old.close()
    handler = _Handler(sys.stderr if stream is None else stream)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root.addHandler(handler)
    root.setLevel(level)


def log_event(logger: logging.Logger, level: int, event: str, /, **fields: Any) -> None:
    """Log ``event`` as the message with ``fields`` as extra fields.

    The first three parameters are positional-only, so ``level=``, ``logger=`` and
    ``event=`` are free to be fields (a JSON field ``level`` prints as ``level_``).

    A field named like a LogRecord attribute (``name``, ``module``, ``msg``...),
    which logging would refuse, is renamed with a trailing ``_`` (``name_``).
    """
    if not logger.isEnabledFor(level):
        return
    extra = {f"{k}_" if k in _RECORD_ATTRS else k: v for k, v in fields.items()}
    # No args, so a "%" in event is printed as is; stacklevel=2: the record names
    # the caller's file and line, not this helper's.
    logger.log(level, event, extra=extra, stacklevel=2)
