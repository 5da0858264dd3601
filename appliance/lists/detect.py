"""Telling a list file's format from its first bytes and its name.

Every registered format's sniffer scores the head (0, PLAUSIBLE or CERTAIN)
and a file name matching one of its patterns adds NAME_HINT: content
decides, the name breaks ties or decides alone when content says nothing.
A tie at the top, or no score at all, is refused: guessing wrong would load
a list with the wrong signals, so the operator names the format instead.
"""

from __future__ import annotations

import fnmatch
import os
from collections.abc import Iterable

from appliance.errors import ListError
from appliance.lists.formats import NAME_HINT, ListFormat

# Enough for any sniffer: a header line, a JSON document's first keys, an XML root.
HEAD_BYTES = 8192


def detect(head: bytes, path: str, formats: Iterable[ListFormat]) -> str:
    """The name of the format ``head`` (the file's first bytes) and ``path`` point to."""
    name = os.path.basename(path).lower()
    scores: dict[str, int] = {}
    known: list[str] = []
    for candidate in formats:
        known.append(candidate.name)
        hinted = any(fnmatch.fnmatchcase(name, pattern) for pattern in candidate.names)
        score = candidate.sniff(head) + (NAME_HINT if hinted else 0)
        if score:
            scores[candidate.name] = score
    if not scores:
        raise ListError(
            f"{path}: cannot tell the list's format from its content or name; "
            f"name it (one of {', '.join(known)})"
        )
    best = max(scores.values())
    top = [n for n, s in scores.items() if s == best]
    if len(top) > 1:
        raise ListError(f"{path}: the list could be {' or '.join(top)}; name its format")
    return top[0]
