"""From the configuration's list specs to an index Snapshot, and reloads.

``Catalog`` remembers, per list, the files' fingerprints (path, size, mtime,
ctime, inode, device; of each ``.sha256`` manifest too) and the ListIndex
built from them. A reload re-reads only the lists whose files changed, and
re-indexes only those whose content (version) changed: the others are
shared, untouched, with the previous snapshot. Every file is read whole or
refused (``appliance.lists.integrity``): a failed load changes nothing.
"""

from __future__ import annotations

import hashlib
import os
import threading
from dataclasses import dataclass, replace

from appliance import demo
from appliance.config import Config, ListSpec
from appliance.errors import ListError
from appliance.index import snapfile
from appliance.index.compiled import open_compiled
from appliance.index.snapshot import ListIndex, Snapshot
from appliance.lists import load_list, manifest
from appliance.lists.csv_format import parse_csv
from appliance.lists.integrity import Reading, open_for_writing
from appliance.lists.model import HashList

DEMO_SOURCE = "embedded demo"
_CHUNK = 8 << 20

# Per file: (path, size, mtime ns, ctime ns, inode, device). ctime and inode
# because size and mtime alone miss a same-size list published with its
# mtime kept (cp -p, rsync -a, tar): ctime cannot be set, a rename changes
# the inode.
Fingerprint = tuple[tuple[str, int, int, int, int, int], ...]


@dataclass(frozen=True)
class Loaded:
    snapshot: Snapshot
    # list name -> where it came from (a path, or "embedded demo")
    sources: dict[str, str]

    @property
    def is_demo(self) -> bool:
        return set(self.sources.values()) == {DEMO_SOURCE}


def _files(spec: ListSpec) -> tuple[str, ...]:
    return (spec.path, *spec.deltas)


def _print(path: str, st: os.stat_result) -> tuple[str, int, int, int, int, int]:
    return (path, st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_dev)


def fingerprint(spec: ListSpec) -> Fingerprint:
    """What each file of a list is now (and its manifest, when it has one: a
    new manifest must trigger a reload); ListError if a list file is missing."""
    out = []
    for path in _files(spec):
        try:
            out.append(_print(path, os.stat(path)))
        except OSError as exc:
            raise ListError(f"list {spec.name!r}: cannot read {path}: {exc.strerror}") from exc
        sums = manifest.path_of(path)
        try:
            out.append(_print(sums, os.stat(sums)))
        except FileNotFoundError:
            continue
        except OSError:
            out.append((sums, -1, 0, 0, 0, 0))  # there, but unreadable: the load says why
    return tuple(out)


def writers(config: Config) -> bool | None:
    """Whether any file of the enabled lists (manifests included) is open for
    writing now: True, False, or None when that cannot be told here (leases
    are not available). The watcher's hint that a change is still going on."""
    seen = False
    for spec in config.lists:
        if not spec.enabled:
            continue
        for path in _files(spec):
            for candidate in (path, manifest.path_of(path)):
                if candidate != path and not os.path.lexists(candidate):
                    continue
                state = open_for_writing(candidate)
                if state:
                    return True
                seen = seen or state is None
    return None if seen else False


def _open_compiled(path: str) -> list[ListIndex]:
    """The lists of the compiled snapshot at ``path``, read whole or refused:
    checked like a list file (``Reading``) across the verification and the
    mapping, and against its ``.sha256`` manifest when it has one."""
    what = f"snapshot {path}"
    expected = manifest.expected_digest(path, what)
    try:
        with Reading(path, what) as reading:
            if expected is not None:
                # One more read of the file, only when the operator asked for it.
                sha256, nbytes = hashlib.sha256(), 0
                while chunk := reading.file.read(_CHUNK):
                    reading.check()
                    sha256.update(chunk)
                    nbytes += len(chunk)
                reading.finish(nbytes)
                manifest.check(sha256.digest(), expected, path, what)
            # Every array's checksum first: the indexes trust their arrays,
            # and a corrupt one must be refused, not served.
            snapfile.verify(path)
            reading.check()
            return open_compiled(path)[0]
    except OSError as exc:
        raise ListError(f"{what}: cannot read: {exc.strerror or exc}") from exc
    except (KeyError, IndexError, TypeError, ValueError) as exc:
        # A manifest that passes its digest but not its schema: made by hand
        # or by another build; as corrupt as a bad checksum.
        raise ListError(f"{what}: malformed ({type(exc).__name__}: {exc})") from exc


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
            compiled_now: dict[str, list[ListIndex]] = {}
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
                        compiled = _open_compiled(spec.path)
                        rebuilt.extend(x.name for x in compiled)
                    compiled_now[spec.name] = compiled
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
            # Only now: a load that failed half-way leaves the last one's state.
            self._cache, self.rebuilt, self._compiled = cache, rebuilt, compiled_now
            return Loaded(snapshot, sources)


def load_snapshot(config: Config) -> Loaded:
    """One-off load (the CLI's local commands): a fresh Catalog."""
    return Catalog().load(config)
