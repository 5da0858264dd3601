"""Hash lists: reading list files into immutable in-memory ``HashList`` objects.

One module per file format under ``formats``, each a streaming parser
``(stream, builder, options)`` registered in ``FORMATS``; ``load_list`` opens
a file, finds its format (named, or detected from its first bytes and name)
and streams it through the parser into a ``ListBuilder``; ``read_list`` also
says which format that was, and ``default_kind`` what kind (block or allow)
a list of that format is when its configuration does not say. A list that has
any bad row is refused whole (ListError), so a reload keeps serving the
previous snapshot; so is a file that changes while it is read (``integrity``)
or that does not match its ``.sha256`` manifest (``manifest``).
"""

from __future__ import annotations

import hashlib
import io
import os
from collections.abc import Sequence

from appliance.config import ListKind
from appliance.errors import ListError
from appliance.lists import manifest
from appliance.lists.csv_format import parse_csv
from appliance.lists.detect import HEAD_BYTES, detect
from appliance.lists.digest import DigestReader
from appliance.lists.formats import (
    ListFormat,
    delimited,
    ncmec,
    nsrl,
    nsrl_sqlite,
    stopncii,
    text,
    threatexchange,
    tmk_dir,
    vics,
)
from appliance.lists.integrity import FileInFlux, Reading
from appliance.lists.model import HashList, SignalColumn
from appliance.lists.records import (
    FormatError,
    FormatOptions,
    ListBuilder,
    Parser,
    Record,
    run_parser,
)

# The registry: one line per format. Detection considers these in this order
# (order only matters for messages; ties are refused).
_REGISTERED: tuple[ListFormat, ...] = (
    delimited.FORMAT,  # "csv"
    text.FORMAT,  # "text"
    vics.FORMAT,  # "vics"
    ncmec.FORMAT,  # "ncmec"
    stopncii.FORMAT,  # "stopncii"
    threatexchange.FORMAT,  # "threatexchange"
    nsrl.FORMAT,  # "nsrl"
    nsrl_sqlite.FORMAT,  # "nsrl-sqlite"
)
FORMATS: dict[str, Parser] = {f.name: f.parse for f in _REGISTERED}
_KINDS: dict[str, ListKind] = {f.name: f.kind for f in _REGISTERED}

AUTO = "auto"
DEFAULT_OPTIONS = FormatOptions()
_CHUNK = 1 << 16


def detect_format(head: bytes, path: str) -> str:
    """The format of the file at ``path`` whose first bytes (a few KiB) are
    ``head``; ListError when it cannot tell."""
    return detect(head, path, _REGISTERED)


def default_kind(fmt: str) -> ListKind:
    """The kind of a list of the registered format ``fmt`` whose configuration
    names none: "allow" for the NSRL formats (known-benign files: matching
    them as a block list would flag every operating system file), else "block"."""
    return _KINDS.get(fmt, "block")  # tmk-dir (a directory) too


def load_list(
    path: str,
    name: str,
    fmt: str = AUTO,
    options: FormatOptions = DEFAULT_OPTIONS,
    deltas: Sequence[str] = (),
) -> HashList:
    """``read_list``'s list alone."""
    return read_list(path, name, fmt, options, deltas)[0]


def read_list(
    path: str,
    name: str,
    fmt: str = AUTO,
    options: FormatOptions = DEFAULT_OPTIONS,
    deltas: Sequence[str] = (),
) -> tuple[HashList, str]:
    """Read the list file at ``path`` as format ``fmt`` ("auto": detect it) and
    name it ``name``; then apply each file of ``deltas`` (additions and
    deletions, in any supported format) in order.

    A directory is read as a directory of ``.tmk`` files (format "tmk-dir",
    ``formats.tmk_dir``). Each file is streamed once: the parser reads it incrementally and its
    SHA-256 is computed on the way; a file that is being written, or changes
    while it is read, is refused (FileInFlux), and a file with a ``.sha256``
    manifest next to it must match it. The version is the first 16 hex digits of
    the file's SHA-256, or with deltas of the SHA-256 of all files' digests in
    order. Returns the list and the format ``path`` was read as (``fmt``, or
    the detected one; deltas may be of other formats). Raises ListError when a
    file cannot be read, the format is unknown or cannot be told, or the
    content is not a valid list.
    """
    if fmt != AUTO and fmt not in FORMATS and fmt != tmk_dir.NAME:
        raise ListError(
            f"list {name!r} ({path}): unknown format {fmt!r}; known: {AUTO}, "
            f"{', '.join(FORMATS)}, {tmk_dir.NAME}"
        )
    builder = ListBuilder(name, path)
    if os.path.isdir(path) or fmt == tmk_dir.NAME:
        # A directory of .tmk files, one entry each (deltas: more files).
        digest = tmk_dir.read_directory(path, builder)
        digests = [digest] + [_feed(d, name, AUTO, options, builder)[0] for d in deltas]
        return builder.build(hashlib.sha256(b"".join(digests)).hexdigest()[:16]), tmk_dir.NAME
    first, fmt = _feed(path, name, fmt, options, builder)
    digests = [first] + [_feed(delta, name, AUTO, options, builder)[0] for delta in deltas]
    if not deltas:
        return builder.build(first.hex()[:16]), fmt
    return builder.build(hashlib.sha256(b"".join(digests)).hexdigest()[:16]), fmt


def _feed(
    path: str, name: str, fmt: str, options: FormatOptions, builder: ListBuilder
) -> tuple[bytes, str]:
    """Stream one file through its parser into ``builder``; returns its SHA-256
    and its format (``fmt``, or the detected one when ``fmt`` is "auto").

    The file is read whole or refused (``integrity``): a file still open for
    writing, or one that changes while it is read, is a FileInFlux, never a
    list of its first rows. With a ``.sha256`` manifest next to it, the file's
    SHA-256 must be the manifest's.
    """
    what = f"list {name!r} ({path})"
    expected = manifest.expected_digest(path, what)
    try:
        with Reading(path, what) as reading:
            file = reading.file
            if fmt == AUTO:
                head = file.read(HEAD_BYTES)
                file.seek(0)
                try:
                    fmt = detect_format(head, path)
                except ListError as exc:
                    raise ListError(f"list {name!r}: {exc}") from exc
            digest = DigestReader(file, reading.check)
            stream = io.BufferedReader(digest, _CHUNK)
            run_parser(FORMATS[fmt], stream, builder, options)
            # Whatever the parser left unread (trailing blanks) is part of the
            # file, so part of the version.
            while stream.read(_CHUNK):
                pass
            reading.finish(digest.nbytes)
    except OSError as exc:
        raise ListError(f"list {name!r}: cannot read {path}: {exc.strerror or exc}") from exc
    manifest.check(digest.digest(), expected, path, what)
    return digest.digest(), fmt


__all__ = [
    "AUTO",
    "FORMATS",
    "FileInFlux",
    "FormatError",
    "FormatOptions",
    "HashList",
    "ListBuilder",
    "Parser",
    "Record",
    "SignalColumn",
    "default_kind",
    "detect_format",
    "load_list",
    "parse_csv",
    "read_list",
]
