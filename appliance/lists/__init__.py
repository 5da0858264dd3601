"""Hash lists: reading list files into immutable in-memory ``HashList`` objects.

One module per file format, each a ``parse(data, name, source) -> HashList``
registered in ``FORMATS``; ``load_list`` reads a file and hands its bytes to
the parser of its format. A list that has any bad row is refused whole
(ListError), so a reload keeps serving the previous snapshot.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from appliance.errors import ListError
from appliance.lists.csv_format import parse_csv
from appliance.lists.model import HashList, SignalColumn

# (file bytes, list name, source for messages) -> HashList
Parser = Callable[[bytes, str, str], HashList]

FORMATS: dict[str, Parser] = {
    "csv": parse_csv,
}


def load_list(path: str, name: str, fmt: str = "csv") -> HashList:
    """Read the list file at ``path`` as format ``fmt`` and name it ``name``.

    Raises ListError when the file cannot be read, the format is unknown or
    the content is not a valid list.
    """
    parser = FORMATS.get(fmt)
    if parser is None:
        raise ListError(
            f"list {name!r} ({path}): unknown format {fmt!r}; known: {', '.join(FORMATS)}"
        )
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise ListError(f"list {name!r}: cannot read {path}: {exc.strerror or exc}") from exc
    return parser(data, name, path)


__all__ = ["FORMATS", "HashList", "Parser", "SignalColumn", "load_list", "parse_csv"]
