"""CSV hash lists from bytes in memory: ``parse_csv``, kept for its callers.

The format itself (columns, delimiters, the law-enforcement export layout)
is ``appliance.lists.formats.delimited``, a streaming parser; this wraps it
for data already in memory (the embedded demo list, tests).
"""

from __future__ import annotations

import hashlib
import io

from appliance.lists.formats import delimited
from appliance.lists.model import HashList
from appliance.lists.records import FormatOptions, ListBuilder, run_parser


def parse_csv(data: bytes, name: str, source: str = "") -> HashList:
    """Parse a CSV list file's bytes into a HashList called ``name``.

    ``source`` (usually the path) names the file in error messages. Raises
    ListError for anything that is not a well-formed list: not UTF-8, empty,
    a header without a hash column or with an ambiguous delimiter, or any bad
    row (all of them counted, the first MAX_REPORTED quoted with line numbers).
    """
    builder = ListBuilder(name, source)
    run_parser(delimited.parse, io.BytesIO(data), builder, FormatOptions())
    return builder.build(hashlib.sha256(data).hexdigest()[:16])
