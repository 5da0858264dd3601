"""Which hash lists to load: ``ListSpec``, from a command-line spec or a ``[[lists]]`` table."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Literal, get_args

from appliance.errors import ConfigError

ListKind = Literal["block", "allow"]
# What a list spec says of its kind: "auto" (not said) becomes, once the
# list's format is known, that format's kind (appliance.lists.default_kind:
# allow for the NSRL formats, block for the others); block or allow always win.
SpecKind = Literal["auto", "block", "allow"]
AUTO_KIND: SpecKind = "auto"
_SPEC_KINDS: dict[str, SpecKind] = {kind: kind for kind in get_args(SpecKind)}

SPEC_FORMS = "PATH, NAME=PATH, NAME:KIND=PATH or NAME:KIND:FORMAT=PATH"


def _formats() -> tuple[str, ...]:
    # Imported here: the list parsers (NumPy, SQLite) are not needed to read a
    # configuration, and appliance.lists itself imports appliance.config.
    from appliance.lists import AUTO, FORMATS
    from appliance.lists.formats.tmk_dir import NAME as TMK_DIR

    return (AUTO, *FORMATS, TMK_DIR)


@dataclass(frozen=True)
class ListSpec:
    """One hash list to load. On the command line ``PATH`` (name = file stem),
    ``NAME=PATH``, ``NAME:KIND=PATH`` or ``NAME:KIND:FORMAT=PATH`` (``parse``);
    in the configuration file, a ``[[lists]]`` table with:

    - ``format``: "auto" (detected from the content) or a format name;
    - ``kind``: "block" (matches are reported) or "allow" (known-benign files:
      a hit suppresses the block hits of the same file); "auto", the default,
      is allow for the NSRL formats and block for every other;
    - ``enabled``: false keeps the list configured but not loaded;
    - ``signals``: only these of the list's signals are indexed (empty: all);
    - ``categories``: the list's own category values mapped to ours;
    - ``deltas``: files of additions and deletions applied after ``path``, in order.

    For a compiled snapshot, ``name`` names the file, not its lists (they keep
    their compiled names); ``kind``, ``signals`` and ``categories`` apply to
    every list in it, or the load is refused (appliance.loading).
    """

    name: str
    path: str
    format: str = "auto"
    kind: SpecKind = AUTO_KIND
    enabled: bool = True
    signals: tuple[str, ...] = ()
    categories: tuple[tuple[str, str], ...] = ()
    deltas: tuple[str, ...] = ()

    @classmethod
    def parse(cls, spec: str) -> ListSpec:
        """A command-line spec. Without "=" the whole spec is the PATH (which may
        then hold ":"); with one, what comes before the first "=" is
        NAME[:KIND[:FORMAT]], KIND block or allow, FORMAT a list format or auto."""
        head, sep, path = spec.partition("=")
        if not sep:
            if not Path(spec).stem:
                raise _bad_spec(spec, "its PATH has no file name to name the list by")
            return cls(name=Path(spec).stem, path=spec)
        parts = head.split(":")
        if not path:
            raise _bad_spec(spec, "the PATH after '=' is empty")
        if len(parts) > 3:
            raise _bad_spec(spec, f"{head!r} has {len(parts) - 1} ':', at most 2")
        if not all(parts):
            raise _bad_spec(spec, f"{head!r} has an empty part")
        if "/" in head:
            # Most likely a PATH that holds "=": it needs a NAME= in front.
            raise _bad_spec(spec, f"{head!r} is not a NAME (it holds '/')")
        name, kind, fmt = (*parts, "", "")[:3]
        if kind and kind not in get_args(ListKind):
            raise _bad_spec(spec, f"unknown KIND {kind!r}")
        if fmt and fmt not in _formats():
            raise _bad_spec(spec, f"unknown FORMAT {fmt!r}")
        return cls(name=name, path=path, format=fmt or "auto", kind=_SPEC_KINDS[kind or "auto"])

    @classmethod
    def from_table(cls, table: Mapping[str, Any]) -> ListSpec:
        known = {f.name for f in fields(cls)}
        unknown = set(table) - known
        if unknown:
            raise ConfigError(f"[[lists]]: unknown keys {sorted(unknown)}; known: {sorted(known)}")
        if "name" not in table or "path" not in table:
            raise ConfigError(f"[[lists]] needs name and path, got {dict(table)}")
        kind = _SPEC_KINDS.get(str(table.get("kind", AUTO_KIND)))
        if kind is None:
            raise ConfigError(f"list {table['name']!r}: kind must be block or allow "
                              f"(or auto: allow for NSRL formats, else block), "
                              f"got {table['kind']!r}")
        fmt = str(table.get("format", "auto"))
        if fmt not in _formats():
            raise ConfigError(f"list {table['name']!r}: unknown format {fmt!r}; "
                              f"known: {', '.join(_formats())}")
        categories = table.get("categories", {})
        if not isinstance(categories, Mapping):
            raise ConfigError(f"list {table['name']!r}: categories must be a table")
        return cls(
            name=str(table["name"]),
            path=str(table["path"]),
            format=fmt,
            kind=kind,
            enabled=bool(table.get("enabled", True)),
            signals=tuple(str(s) for s in table.get("signals", ())),
            categories=tuple((str(k), str(v)) for k, v in categories.items()),
            deltas=tuple(str(d) for d in table.get("deltas", ())),
        )


def _bad_spec(spec: str, why: str) -> ConfigError:
    return ConfigError(
        f"list spec {spec!r}: {why}; a list spec is {SPEC_FORMS} "
        f"(KIND: {' or '.join(get_args(ListKind))}; FORMAT: {', '.join(_formats())})"
    )
