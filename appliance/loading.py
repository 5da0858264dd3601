"""From the configuration's list specs to an index Snapshot, and reloads.

``Catalog`` remembers, per list, the files' fingerprints (path, size, mtime)
and the ListIndex built from them. A reload re-reads only the lists whose
files changed, and re-indexes only those whose content (version) changed:
the others are shared, untouched, with the previous snapshot.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass, replace

from appliance import demo
from appliance.config import Config, ListSpec
from appliance.errors import ListError
from appliance.index import snapfile
from appliance.index.compiled import open_compiled
from appliance.index.snapshot import ListIndex, Snapshot
from appliance.lists import load_list
from appliance.lists.csv_format import parse_csv
from appliance.lists.model import HashList

DEMO_SOURCE = "embedded demo"

Fingerprint = tuple[tuple[str, int, int], ...]


@dataclass(frozen=True)
class Loaded:
    snapshot: Snapshot
    # list name -> where it came from (a path, or "embedded demo")
    sources: dict[str, str]

    @property
    def is_demo(self) -> bool:
        return set(self.sources.values()) == {DEMO_SOURCE}


def fingerprint(spec: ListSpec) -> Fingerprint:
    """(path, size, mtime in ns) of each file of a list; ListError if one is missing."""
    out = []
    for path in (spec.path, *spec.deltas):
        try:
            st = os.stat(path)
        except OSError as exc:
            raise ListError(f"list {spec.name!r}: cannot read {path}: {exc.strerror}") from exc
        out.append((path, st.st_size, st.st_mtime_ns))
    return tuple(out)


def _read(spec: ListSpec) -> HashList:
    hash_list = load_list(spec.path, spec.name, spec.format, deltas=spec.deltas)
    if spec.categories:
        mapping = dict(spec.categories)
        hash_list = replace(
            hash_list, categories=tuple(mapping.get(c, c) for c in hash_list.categories)
        )
    return hash_list


class Catalog:
    """Loads the configured lists into snapshots, reusing what did not change.

    Thread-safe: a reload may run while requests are served from the last
    snapshot; ``load`` builds the new one aside and never mutates a snapshot.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        # list name -> (spec, fingerprint, index)
        self._cache: dict[str, tuple[ListSpec, Fingerprint, ListIndex]] = {}
        self.rebuilt: list[str] = []  # lists (re)indexed by the last load, for logs and tests
        self._compiled: dict[str, list[ListIndex]] = {}

    def fingerprints(self, config: Config) -> dict[str, Fingerprint]:
        return {spec.name: fingerprint(spec) for spec in config.lists if spec.enabled}

    def load(self, config: Config) -> Loaded:
        """Every enabled list of ``config`` (or the embedded demo list when none is
        configured) as a new Loaded. Raises ListError, naming the file and its
        bad rows, when any list fails: nothing is half-loaded."""
        with self._lock:
            if not config.lists:
                hash_list = parse_csv(demo.build().list_csv, demo.LIST_NAME, DEMO_SOURCE)
                return Loaded(Snapshot([hash_list], config.matching),
                              {demo.LIST_NAME: DEMO_SOURCE})
            indexes: list[ListIndex] = []
            rebuilt: list[str] = []
            cache: dict[str, tuple[ListSpec, Fingerprint, ListIndex]] = {}
            sources: dict[str, str] = {}
            for spec in config.lists:
                if not spec.enabled:
                    continue
                prints = fingerprint(spec)
                if snapfile.is_snapshot(spec.path):
                    # A compiled snapshot: its lists, mapped with their indexes.
                    cached = self._cache.get(spec.name)
                    if cached is not None and cached[1] == prints:
                        compiled = self._compiled[spec.name]
                    else:
                        # Every array's checksum first: the indexes trust their
                        # arrays, and a corrupt one must be refused, not served.
                        snapfile.verify(spec.path)
                        compiled = open_compiled(spec.path)[0]
                        rebuilt.extend(x.name for x in compiled)
                    self._compiled[spec.name] = compiled
                    indexes.extend(compiled)
                    sources.update((x.name, spec.path) for x in compiled)
                    cache[spec.name] = (spec, prints, compiled[0])
                    continue
                cached = self._cache.get(spec.name)
                if cached is not None and cached[0] == spec and cached[1] == prints:
                    index = cached[2]
                else:
                    hash_list = _read(spec)
                    if cached is not None and cached[0] == spec and (
                        cached[2].hash_list.version == hash_list.version
                    ):
                        index = cached[2]  # touched, not changed: keep its index
                    else:
                        index = ListIndex(hash_list, spec.kind, spec.signals)
                        rebuilt.append(spec.name)
                indexes.append(index)
                sources[spec.name] = spec.path
                cache[spec.name] = (spec, prints, index)
            if not indexes:
                raise ListError("every configured list is disabled")
            try:
                snapshot = Snapshot(indexes, config.matching)
            except ValueError as exc:  # e.g. the same list name twice
                raise ListError(str(exc)) from exc
            self._cache, self.rebuilt = cache, rebuilt
            return Loaded(snapshot, sources)


def load_snapshot(config: Config) -> Loaded:
    """One-off load (the CLI's local commands): a fresh Catalog."""
    return Catalog().load(config)
