"""Optional checksum manifests: ``<list file>.sha256`` next to a list file.

The before/after checks of ``integrity`` catch a file that changes while it
is read, but not one that was already half-written (or corrupted in transit)
when the read began. An operator who publishes a list with its manifest,
the list first and then ``sha256sum list > list.sha256``, gets the list
refused until its content is the one the manifest names.

The manifest is what ``sha256sum`` writes: 64 hex digits, whitespace, and
optionally the file name (with sha256sum's ``*`` for binary mode), on one
line. The name is not compared: a list is often checksummed under one name
and published under another.
"""

from __future__ import annotations

import os
import re

from appliance.errors import ListError
from appliance.lists.integrity import Reading

SUFFIX = ".sha256"
# More than any one-line manifest needs; a bigger file is not a manifest.
_MAX_BYTES = 4096
# (sha256sum starts the line with a backslash when it escapes the file name.)
_LINE = re.compile(rb"\s*\\?([0-9a-fA-F]{64})(?:[ \t]+\*?[^\r\n]*)?\s*")


def path_of(list_path: str) -> str:
    return list_path + SUFFIX


def expected_digest(list_path: str, what: str) -> bytes | None:
    """The SHA-256 that ``list_path``'s manifest names, or None when it has
    none; ListError when the manifest cannot be read or is malformed."""
    path = path_of(list_path)
    if not os.path.lexists(path):
        return None  # no manifest: nothing to check
    where = f"{what}: manifest {path}"
    try:
        with Reading(path, where) as reading:
            if reading.size > _MAX_BYTES:
                raise ListError(f"{where}: {reading.size} bytes is too big for a manifest")
            data = reading.file.read(_MAX_BYTES)
            reading.finish(len(data))
    except OSError as exc:
        raise ListError(f"{where}: cannot read: {exc.strerror or exc}") from exc
    match = _LINE.fullmatch(data)
    if match is None:
        raise ListError(
            f"{what}: manifest {path} is not a sha256sum line "
            "(64 hex digits, then optionally the file name)"
        )
    return bytes.fromhex(match.group(1).decode())


def check(digest: bytes, expected: bytes | None, path: str, what: str) -> None:
    """ListError unless ``digest`` (the file's SHA-256) is the manifest's."""
    if expected is not None and digest != expected:
        raise ListError(
            f"{what}: {path} does not match its {SUFFIX} manifest (file sha256 "
            f"{digest.hex()}, manifest {expected.hex()}); the file is incomplete or "
            "not the one the manifest names"
        )

