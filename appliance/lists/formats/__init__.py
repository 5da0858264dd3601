"""List file formats: one module per format, each exporting ``FORMAT``.

A format is a streaming parser (see ``appliance.lists.records.Parser``) and a
sniffer that says how sure it is that a file's first bytes are in this
format; ``appliance.lists`` registers them and ``detect`` picks among them.
Shared pieces: ``lines`` (numbered text lines of a binary stream),
``jsonstream`` (incremental JSON), ``values`` (hash text -> bytes).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from appliance.config import ListKind
from appliance.lists.records import Parser

# How sure a sniffer is, from content alone. The file name adds NAME_HINT, so
# content decides and the name breaks ties (or decides when content says
# nothing, e.g. an empty "list.csv" gets the CSV parser's error message).
PLAUSIBLE = 2  # could be this format (a header with a hash column, a hex line)
CERTAIN = 4  # a mark only this format has (SQLite magic, an OData key, the NSRL header)
NAME_HINT = 1

# (first bytes of the file, at most a few KiB) -> confidence: 0, PLAUSIBLE or CERTAIN
Sniffer = Callable[[bytes], int]


@dataclass(frozen=True)
class ListFormat:
    """One registered format. ``names``: fnmatch patterns of the lowercased
    file name that hint at it. ``kind``: what a list of this format is when
    its configuration does not say (``ListSpec.kind`` "auto"): "allow" for
    lists of known-benign files (NIST NSRL), "block" for the others."""

    name: str
    parse: Parser
    sniff: Sniffer
    names: tuple[str, ...] = ()
    kind: ListKind = "block"
