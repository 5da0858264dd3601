"""Structured logging: one line per event, the fields, the privacy safety net."""

from __future__ import annotations

import io
import json
import logging
import re
from collections.abc import Iterator
from typing import Any

import pytest

from appliance import logs
from appliance.logs import log_event, setup_logging

TS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
log = logging.getLogger("appliance.test")


@pytest.fixture(autouse=True)
def _restore_root() -> Iterator[None]:
    """Take our handler off the root logger again, whatever the test did."""
    root = logging.getLogger()
    level = root.level
    yield
    for handler in [h for h in root.handlers if isinstance(h, logs._Handler)]:
        root.removeHandler(handler)
    root.setLevel(level)


def _json_lines(stream: io.StringIO) -> list[dict[str, Any]]:
    text = stream.getvalue()
    assert text.endswith("\n")
    return [json.loads(line) for line in text.splitlines()]


def _setup(fmt: str) -> io.StringIO:
    stream = io.StringIO()
    setup_logging(fmt, level=logging.DEBUG, stream=stream)
    return stream


def test_json_line_has_the_keys_and_the_extras() -> None:
    stream = _setup("json")
    log.info("served %s files", 3, extra={"request_id": "r1", "method": "Match", "files": 3})
    (line,) = _json_lines(stream)
    assert TS.match(line["ts"]), line["ts"]
    assert line["level"] == "INFO"
    assert line["logger"] == "appliance.test"
    assert line["msg"] == "served 3 files"
    assert line["request_id"] == "r1"
    assert line["method"] == "Match"
    assert line["files"] == 3
    assert "exc" not in line
    assert "args" not in line and "lineno" not in line  # LogRecord internals stay out


def test_log_event_puts_fields_as_extras() -> None:
    stream = _setup("json")
    log_event(
        log, logging.INFO, "request",
        request_id="r2", method="Match", code="OK", files=3, seconds=0.012,
    )
    (line,) = _json_lines(stream)
    assert line["msg"] == "request"
    assert {k: line[k] for k in ("request_id", "method", "code", "files", "seconds")} == {
        "request_id": "r2", "method": "Match", "code": "OK", "files": 3, "seconds": 0.012,
    }


def test_log_event_renames_reserved_fields_instead_of_failing() -> None:
    stream = _setup("json")
    # "name" and "msg" are LogRecord attributes, "level" a key of the line itself.
    log_event(log, logging.WARNING, "100% done", name="a", msg="b", level="c", logger="d")
    (line,) = _json_lines(stream)
    assert line["msg"] == "100% done"
    assert line["level"] == "WARNING"
    assert line["logger"] == "appliance.test"
    assert (line["name_"], line["msg_"], line["level_"], line["logger_"]) == ("a", "b", "c", "d")


def test_log_event_respects_the_level() -> None:
    stream = io.StringIO()
    setup_logging("json", level=logging.WARNING, stream=stream)
    log_event(log, logging.INFO, "quiet")
    log_event(log, logging.ERROR, "loud")
    assert [line["msg"] for line in _json_lines(stream)] == ["loud"]


def test_exception_is_one_line_under_exc() -> None:
    stream = _setup("json")
    try:
        raise ValueError("bad\nthing")
    except ValueError:
        log.exception("failed", extra={"request_id": "r3"})
    assert stream.getvalue().count("\n") == 1
    (line,) = _json_lines(stream)
    assert line["level"] == "ERROR"
    assert line["exc"].startswith("Traceback (most recent call last):")
    assert "ValueError: bad\nthing" in line["exc"]
    assert line["request_id"] == "r3"


def test_newlines_and_odd_values_keep_json_on_one_line() -> None:
    stream = _setup("json")
    log.info("a\nb\r\nc\u2028d", extra={"obj": object(), "nan": float("nan"), "t": (1, "x")})
    assert stream.getvalue().count("\n") == 1
    (line,) = _json_lines(stream)
    assert line["msg"] == "a\nb\r\nc\u2028d"
    assert line["obj"].startswith("<object object")
    assert line["nan"] == "nan"
    assert line["t"] == [1, "x"]


@pytest.mark.parametrize("fmt", ["json", "text"])
def test_bytes_are_never_logged(fmt: str) -> None:
    secret = b"SECRET-FILE-CONTENT"
    stream = _setup(fmt)
    log.info("x", extra={"content": secret, "buf": bytearray(5), "view": memoryview(b"abcd")})
    log.info("got %s", secret)
    log.info("got %(data)r", {"data": secret})
    log_event(log, logging.INFO, "nested", files=[secret, {"inner": secret}])
    out = stream.getvalue()
    assert "SECRET" not in out
    assert out.count(f"<{len(secret)} bytes>") == 5
    assert "<5 bytes>" in out and "<4 bytes>" in out
    if fmt == "json":
        first, second, third, fourth = _json_lines(stream)
        assert first["content"] == f"<{len(secret)} bytes>"
        assert second["msg"] == f"got <{len(secret)} bytes>"
        assert third["msg"] == f"got '<{len(secret)} bytes>'"
        assert fourth["files"] == [f"<{len(secret)} bytes>", {"inner": f"<{len(secret)} bytes>"}]


def test_text_format() -> None:
    stream = _setup("text")
    log_event(
        log, logging.INFO, "request", request_id="r1", method="Match", files=3,
        seconds=0.012, note="two words", ok=True,
    )
    (line,) = stream.getvalue().splitlines()
    ts, level, logger, rest = line.split(" ", 3)
    assert TS.match(ts)
    assert (level, logger) == ("INFO", "appliance.test")
    assert rest == (
        'request request_id=r1 method=Match files=3 seconds=0.012 note="two words" ok=true'
    )


def test_text_format_escapes_newlines() -> None:
    stream = _setup("text")
    log.warning("line one\nline two", extra={"path": "a\nb"})
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        log.exception("failed")
    lines = stream.getvalue().splitlines()
    assert len(lines) == 2
    assert lines[0].endswith(r'WARNING appliance.test line one\nline two path="a\nb"')
    assert " ERROR appliance.test failed exc=\"Traceback (most recent call last):\\n" in lines[1]
    assert lines[1].endswith('RuntimeError: boom"')


def test_setup_twice_does_not_duplicate_lines() -> None:
    first = io.StringIO()
    second = io.StringIO()
    setup_logging("text", stream=first)
    setup_logging("json", stream=second)
    log.info("once")
    assert first.getvalue() == ""
    assert [line["msg"] for line in _json_lines(second)] == ["once"]
    ours = [h for h in logging.getLogger().handlers if isinstance(h, logs._Handler)]
    assert len(ours) == 1


def test_setup_leaves_other_handlers_alone() -> None:
    other = logging.StreamHandler(io.StringIO())
    root = logging.getLogger()
    root.addHandler(other)
    try:
        setup_logging("json", stream=io.StringIO())
        setup_logging("json", stream=io.StringIO())
        assert other in root.handlers
    finally:
        root.removeHandler(other)


def test_unknown_format_is_refused() -> None:
    with pytest.raises(ValueError, match="log format"):
        setup_logging("xml")
