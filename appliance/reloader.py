"""The server's lists: the first load, reloads, and watching the files.

A reload builds the new snapshot aside (in a worker thread, from the Catalog,
which re-reads and re-indexes only what changed) and then swaps one
reference. Requests take that reference once when they start, so every
answer comes from one snapshot: never a mix of versions, never a failed
request because of a reload. A reload that fails (a bad row, a missing file,
a file caught being written, any exception at all) changes nothing: the
previous snapshot keeps serving and the failure is logged and counted. The
watcher waits for a changed file to settle before it loads it, so that a
copy in progress is not counted as a failure.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from appliance import loading
from appliance.config import Config
from appliance.errors import ApplianceError
from appliance.lists.integrity import FileInFlux
from appliance.loading import Loaded
from appliance.metrics import Metrics

log = logging.getLogger("appliance.lists")


# A change the watcher has seen but not yet loaded: (its fingerprints, when
# the watcher first saw the files differ from the last load).
_Pending = tuple[object, float]
# ``_tried`` before the first load: the watcher has nothing to compare with.
_NOT_YET = object()


class ListManager:
    def __init__(
        self,
        config: Config,
        metrics: Metrics,
        loader: Callable[[Config], Loaded],
        fingerprints: Callable[[Config], object] | None = None,
        writers: Callable[[Config], bool | None] = loading.writers,
        settle_seconds: float = 600.0,
    ) -> None:
        self.config = config
        self.metrics = metrics
        self.loaded: Loaded | None = None
        # Why the lists are not loaded (first load failed), for UNAVAILABLE answers.
        self.error = ""
        # Loads get a thread of their own: parsing a large list must not take a
        # hashing worker away from requests for the minutes it may last.
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="appliance-lists")
        self._loader = loader
        self._fingerprints = fingerprints
        # Whether a list file is open for writing now (True/False), or None
        # when that cannot be told here: the watcher waits for the writer.
        self._writers = writers
        # The watcher gives up waiting for a change to settle after this long
        # (a writer that never closes the file): it loads it and counts the
        # failure, so that an alert fires.
        self.settle_seconds = settle_seconds
        self._lock = asyncio.Lock()
        # File fingerprints as of the last load attempt, good or bad: the watcher
        # reloads when the files differ from them (and not again for a bad file
        # that has not changed since). None: unknown (a file was missing, or
        # was caught being written), so the watcher tries again.
        self._tried: object = _NOT_YET
        self._pending: _Pending | None = None
        # The watcher's last "a file is missing" message (logged once).
        self._missing = ""

    def close(self) -> None:
        """Stop the loading thread; a load in progress is abandoned."""
        self._pool.shutdown(wait=False, cancel_futures=True)

    async def reload(self, reason: str) -> tuple[bool, str]:
        """Load the lists again and swap them in; (ok, what happened).

        Reads at once (SIGHUP, ReloadLists): a file that is being written
        fails this reload, cleanly, like any bad list. Every failure, whatever
        raised it, is counted and leaves the previous snapshot serving.
        """
        result = await self._reload(reason, defer_influx=False)
        assert result is not None
        return result

    async def _reload(self, reason: str, defer_influx: bool) -> tuple[bool, str] | None:
        """``reload``; with ``defer_influx``, a file caught changing (FileInFlux)
        is not a failure but a change still going on: None, nothing counted,
        and the watcher looks again at its next poll."""
        async with self._lock:
            loop = asyncio.get_running_loop()
            started = time.perf_counter()
            try:
                self._tried = None
                if self._fingerprints is not None:
                    self._tried = await loop.run_in_executor(
                        self._pool, self._fingerprints, self.config
                    )
                loaded = await loop.run_in_executor(self._pool, self._loader, self.config)
            except FileInFlux as exc:
                # Not a verdict on the files: the watcher must look again once
                # they settle, even if they do not change any more (a writer
                # that only closes the file).
                self._tried = None
                if not defer_influx:
                    return self._failed(reason, str(exc))
                log.info("lists are changing on disk; reloading once they settle: %s", exc)
                return None
            except ApplianceError as exc:
                return self._failed(reason, str(exc))
            except Exception as exc:
                # A bug, or a parser's exception that escaped its ListError:
                # still a failed reload (counted, alerting), never a crash at
                # start or an INTERNAL answer, and the old lists keep serving.
                log.exception("lists %s: unexpected error", reason)
                return self._failed(
                    reason, f"internal error while loading lists: {type(exc).__name__}: {exc}"
                )
            self.loaded = loaded  # the swap: one reference, atomic
            self.error = ""
            self._publish(loaded)
            self._record(ok=True)
            summary = describe(loaded)
            log.info("lists %s in %.2f s: %s", reason, time.perf_counter() - started, summary)
            return True, summary

    def _failed(self, reason: str, message: str) -> tuple[bool, str]:
        if self.loaded is None:
            self.error = message
        self._record(ok=False)
        # ``reason`` is a past participle ("loaded", "reloaded on SIGHUP").
        log.error("lists not %s: %s", reason, message)
        if self.loaded is not None:
            log.error("still serving the previous lists")
        return False, message

    def _record(self, ok: bool) -> None:
        m = self.metrics
        m.list_reloads.labels("success" if ok else "failure").inc()
        m.last_reload_timestamp.set(time.time())
        m.last_reload_success.set(1 if ok else 0)

    def _publish(self, loaded: Loaded) -> None:
        m = self.metrics
        # Lists and versions that went away must not linger as stale series.
        m.index_entries.clear()
        m.list_info.clear()
        m.list_empty.clear()
        for (list_name, signal_name), count in loaded.snapshot.entry_counts().items():
            m.index_entries.labels(list_name, signal_name).set(count)
        for index in loaded.snapshot.indexes:
            m.list_info.labels(index.name, index.hash_list.version, index.kind).set(1)
            m.list_empty.labels(index.name).set(0 if index.hash_list.size else 1)
        m.lists_ready.set(1)

    async def watch(self, every: float) -> None:
        """Every ``every`` seconds, ``poll``: reload once changed files settle."""
        if self._fingerprints is None:
            return
        while True:
            await asyncio.sleep(every)
            await self.poll()

    async def poll(self) -> None:
        """One look at the files (the watcher's step; tests call it directly).

        A change is loaded once it has settled, so that an operator copying a
        big file in place does not fire a failed reload: at once when no
        process has a changed file open for writing (leases tell), else when
        the fingerprints stayed the same for one more poll and no writer is
        known. A load that still catches a file changing is not counted
        either (it waits for the next poll), unless the change has waited
        ``settle_seconds``.
        """
        if self._fingerprints is None or self._tried is _NOT_YET:
            return  # no files to watch, or the first load has not looked at them yet
        loop = asyncio.get_running_loop()
        try:
            current = await loop.run_in_executor(self._pool, self._fingerprints, self.config)
        except ApplianceError as exc:  # a file is gone for a moment: look again later
            # Once, not at every poll: the same missing file is one event.
            if str(exc) != self._missing:
                log.warning("watching lists: %s (said once; looking again every %g s)", exc,
                            self.config.server.watch_lists_seconds)
                self._missing = str(exc)
            return
        if self._missing:
            log.info("watching lists: the files are back")
            self._missing = ""
        if current == self._tried:
            self._pending = None
            return
        now = loop.time()
        steady = self._pending is not None and self._pending[0] == current
        since = now if self._pending is None else self._pending[1]
        self._pending = (current, since)
        writing = await loop.run_in_executor(self._pool, self._writers, self.config)
        overdue = now - since >= self.settle_seconds
        if not overdue and (writing or (writing is None and not steady)):
            return  # a writer holds a file, or it may still be writing: look again
        if await self._reload("changed on disk, reloaded", defer_influx=not overdue) is not None:
            self._pending = None


def describe(loaded: Loaded) -> str:
    parts = []
    for index in loaded.snapshot.indexes:
        total = sum(index.count(s) for s in index.matchers)
        kind = "" if index.kind == "block" else f" [{index.kind}]"
        parts.append(f"{index.name}@{index.hash_list.version}{kind} ({total} hashes)")
    text = ", ".join(parts)
    return f"embedded demo list {text}" if loaded.is_demo else text
