"""From the configuration's list specs to an index Snapshot, and reloads.

``Catalog`` remembers, per list, the files' fingerprints (path, size, mtime,
ctime, inode, device; of each ``.sha256`` manifest too) and the ListIndex
built from them. A reload re-reads only the lists whose files changed, and
re-indexes only those whose content (version) changed: the others are
shared, untouched, with the previous snapshot. Every file is read whole or
refused (``appliance.lists.integrity``): a failed load changes nothing.

A spec's kind "auto" is resolved here, once the list's format is known (the
format's kind: allow for NSRL, block for the others), before its ListIndex is
built. A compiled snapshot's lists are served as the spec says (``_honour``)
or refused, and a list with no entries is logged as a warning.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

from appliance import demo
from appliance.config import Config, ListKind, ListSpec
from appliance.errors import ListError
from appliance.index import snapfile
from appliance.index.compiled import Categories, open_compiled
from appliance.index.snapshot import ListIndex, Snapshot
from appliance.lists import AUTO, default_kind, manifest, read_list
from appliance.lists.csv_format import parse_csv
from appliance.lists.integrity import Reading, open_for_writing
from appliance.lists.model import HashList
from appliance.signals import get as get_signal

log = logging.getLogger("appliance.lists")

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


def _read(spec: ListSpec) -> tuple[HashList, ListKind]:
    """The list of ``spec``, read from its files, and its kind: the spec's, or
    when it says "auto" that of the format its file was read as."""
    hash_list, fmt = read_list(spec.path, spec.name, spec.format, deltas=spec.deltas)
    if spec.categories:
        hash_list = replace(
            hash_list, categories=_mapped(hash_list.categories, dict(spec.categories))
        )
    return hash_list, default_kind(fmt) if spec.kind == "auto" else spec.kind


def _mapped(categories: Sequence[str], mapping: Mapping[str, str]) -> Sequence[str]:
    if isinstance(categories, Categories):  # a compiled list's: map its table of names
        return Categories(categories.codes, [mapping.get(c, c) for c in categories.names])
    return tuple(mapping.get(c, c) for c in categories)


def _honour(spec: ListSpec, opened: list[ListIndex]) -> list[ListIndex]:
    """The lists of the compiled snapshot of ``spec`` as the spec says: its kind
    for every list, only the indexes of its signals, its categories mapped.
    None of these rebuilds an index. What the snapshot cannot honour without a
    rebuild (a format, deltas, one kind over lists of both kinds, signals it
    has none of) is a ListError saying to recompile: never silently ignored.
    The lists keep their compiled names; ``spec.name`` names the file.
    """
    what = f"snapshot {spec.name!r} ({spec.path})"
    if spec.format != AUTO:
        raise ListError(f"{what} is a compiled snapshot, not a {spec.format} list: "
                        "leave its format out (auto)")
    if spec.deltas:
        raise ListError(f"{what}: deltas cannot be applied to a compiled snapshot; "
                        "recompile it with them")
    if spec.kind == "auto" and not spec.signals and not spec.categories:
        return opened
    if spec.kind != "auto" and len({x.kind for x in opened}) > 1:
        # One kind for all would turn a block list into an allow list (every
        # hit of it suppressing the others) or NSRL into a block list.
        block = [x.name for x in opened if x.kind == "block"]
        allow = [x.name for x in opened if x.kind == "allow"]
        raise ListError(f"{what} holds block lists {block} and allow lists {allow}: "
                        f"kind = {spec.kind!r} cannot apply to all of them; leave kind out "
                        "to keep their compiled kinds, or recompile them apart")
    wanted = {get_signal(s).name for s in spec.signals}
    has = sorted({s for x in opened for s in x.matchers})
    if wanted and not wanted.intersection(has):
        raise ListError(f"{what} has none of the signals {sorted(wanted)} (it has "
                        f"{', '.join(has) or 'none'}); recompile it from lists that have them")
    mapping = dict(spec.categories)
    served = []
    for x in opened:
        hash_list = x.hash_list
        if mapping:
            hash_list = replace(hash_list, categories=_mapped(hash_list.categories, mapping))
        matchers = {s: m for s, m in x.matchers.items() if not wanted or s in wanted}
        kind = x.kind if spec.kind == "auto" else spec.kind
        served.append(ListIndex(hash_list, kind, matchers=matchers,
                                counts={s: x.count(s) for s in matchers}))
    return served


def _warn_if_empty(index: ListIndex, path: str) -> None:
    """A list with no entries loads (emptying an allow list is legitimate), but
    is said: a block list with nothing in it is most often the wrong file, or
    a file whose hash column was not recognised."""
    if index.hash_list.size:
        return
    why = ": a wrong file or a wrong column?" if index.kind == "block" else ""
    log.warning("%s list %r (%s) loaded with no entries%s", index.kind, index.name, path, why)


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
        # spec name -> a compiled snapshot's lists: as opened, as the spec serves them
        self._compiled: dict[str, tuple[list[ListIndex], list[ListIndex]]] = {}

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
            compiled_now: dict[str, tuple[list[ListIndex], list[ListIndex]]] = {}
            for spec in config.lists:
                if not spec.enabled:
                    continue
                prints = fingerprint(spec)
                if snapfile.is_snapshot(spec.path):
                    # A compiled snapshot: its lists, mapped with their indexes.
                    cached = self._cache.get(spec.name)
                    previous = self._compiled.get(spec.name)
                    if cached is not None and previous is not None and cached[1] == prints:
                        opened, served = previous
                        if cached[0] != spec:
                            served = _honour(spec, opened)
                    else:
                        opened = _open_compiled(spec.path)
                        served = _honour(spec, opened)
                        rebuilt.extend(x.name for x in served)
                        for x in served:
                            _warn_if_empty(x, spec.path)
                    compiled_now[spec.name] = (opened, served)
                    indexes.extend(served)
                    sources.update((x.name, spec.path) for x in served)
                    cache[spec.name] = (spec, prints, served[0])
                    continue
                cached = self._cache.get(spec.name)
                if cached is not None and cached[0] == spec and cached[1] == prints:
                    index = cached[2]
                else:
                    hash_list, kind = _read(spec)
                    if cached is not None and cached[0] == spec and (
                        cached[2].hash_list.version == hash_list.version
                    ):
                        index = cached[2]  # touched, not changed: keep its index
                    else:
                        index = ListIndex(hash_list, kind, spec.signals)
                        rebuilt.append(spec.name)
                    _warn_if_empty(index, spec.path)
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
