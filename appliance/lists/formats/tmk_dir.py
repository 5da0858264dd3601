"""A directory of ``.tmk`` files (format "tmk-dir"): one TMK+PDQF entry per file.

What ThreatExchange's ``tmk-hash-video`` leaves behind: each file is one
video's ``.tmk`` (263,344 bytes, the reference's layout), its entry id the
file's name without ``.tmk``; files with other names are ignored, and a
``.tmk`` file that is not a valid one is a bad row. Each file is read whole
or refused (``appliance.lists.integrity``: not while it is being written).
The version is the SHA-256 of the sorted (name, SHA-256) pairs, so adding,
removing or changing any file changes it.
"""

from __future__ import annotations

import hashlib
import os

from appliance.errors import ItemFault, ListError
from appliance.lists.integrity import Reading
from appliance.lists.records import ListBuilder, Record
from appliance.video.tmk_format import TMK_BYTES, check

NAME = "tmk-dir"
SUFFIX = ".tmk"
# More than a .tmk is never read (a wrong file is refused, not buffered).
_MAX_FILE = TMK_BYTES + 1


def read_directory(path: str, builder: ListBuilder) -> bytes:
    """Add every ``.tmk`` file of ``path`` to ``builder``; the directory's digest."""
    try:
        names = sorted(n for n in os.listdir(path) if n.lower().endswith(SUFFIX))
    except OSError as exc:
        raise ListError(f"{builder.where}: cannot list {path}: {exc.strerror or exc}") from exc
    digest = hashlib.sha256()
    for name in names:
        where = f"file {name}"
        full = os.path.join(path, name)
        try:
            with Reading(full, f"{builder.where}: {name}") as reading:
                raw = reading.file.read(_MAX_FILE)
                reading.finish(len(raw))
        except OSError as exc:
            raise ListError(f"{builder.where}: cannot read {name}: "
                            f"{exc.strerror or exc}") from exc
        digest.update(name.encode("utf-8", "surrogateescape") + b"\0"
                      + hashlib.sha256(raw).digest())
        try:
            value = check(raw)
        except ItemFault as fault:
            builder.error(where, fault.message)
            continue
        builder.add(Record(name[: -len(SUFFIX)], "", {"tmk": value}))
    return digest.digest()
