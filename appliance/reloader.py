"""The server's lists: the first load, reloads, and watching the files.

A reload builds the new snapshot aside (in a worker thread, from the Catalog,
which re-reads and re-indexes only what changed) and then swaps one
reference. Requests take that reference once when they start, so every
answer comes from one snapshot: never a mix of versions, never a failed
request because of a reload. A reload that fails (a bad row, a missing file)
changes nothing: the previous snapshot keeps serving and the failure is
logged and counted.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from appliance.config import Config
from appliance.errors import ApplianceError
from appliance.loading import Loaded
from appliance.metrics import Metrics

log = logging.getLogger("appliance.lists")


class ListManager:
    def __init__(
        self,
        config: Config,
        metrics: Metrics,
        loader: Callable[[Config], Loaded],
        fingerprints: Callable[[Config], object] | None = None,
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
        self._lock = asyncio.Lock()
        # File fingerprints as of the last load attempt, good or bad: the watcher
        # reloads when the files differ from them (and not again for a bad file
        # that has not changed since).
        self._tried: object = None

    def close(self) -> None:
        """Stop the loading thread; a load in progress is abandoned."""
        self._pool.shutdown(wait=False, cancel_futures=True)

    async def reload(self, reason: str) -> tuple[bool, str]:
        """Load the lists again and swap them in; (ok, what happened)."""
        async with self._lock:
            loop = asyncio.get_running_loop()
            started = time.perf_counter()
            try:
                if self._fingerprints is not None:
                    self._tried = await loop.run_in_executor(
                        self._pool, self._fingerprints, self.config
                    )
                loaded = await loop.run_in_executor(self._pool, self._loader, self.config)
            except ApplianceError as exc:
                message = str(exc)
                if self.loaded is None:
                    self.error = message
                self._record(ok=False)
                log.error("lists %s failed: %s", reason, message)
                if self.loaded is not None:
                    log.error("still serving the previous lists")
                return False, message
            self.loaded = loaded  # the swap: one reference, atomic
            self.error = ""
            self._publish(loaded)
            self._record(ok=True)
            summary = describe(loaded)
            log.info("lists %s in %.2f s: %s", reason, time.perf_counter() - started, summary)
            return True, summary

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
        for (list_name, signal_name), count in loaded.snapshot.entry_counts().items():
            m.index_entries.labels(list_name, signal_name).set(count)
        for index in loaded.snapshot.indexes:
            m.list_info.labels(index.name, index.hash_list.version, index.kind).set(1)
        m.lists_ready.set(1)

    async def watch(self, every: float) -> None:
        """Reload whenever a list file's size or modification time changes."""
        if self._fingerprints is None:
            return
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(every)
            if self._tried is None:
                continue  # the first load has not looked at the files yet
            try:
                current = await loop.run_in_executor(self._pool, self._fingerprints, self.config)
            except ApplianceError as exc:  # a file is gone for a moment: look again later
                log.warning("watching lists: %s", exc)
                continue
            if current != self._tried:
                await self.reload("changed on disk, reloaded")


def describe(loaded: Loaded) -> str:
    parts = []
    for index in loaded.snapshot.indexes:
        total = sum(index.count(s) for s in index.matchers)
        kind = "" if index.kind == "block" else f" [{index.kind}]"
        parts.append(f"{index.name}@{index.hash_list.version}{kind} ({total} hashes)")
    text = ", ".join(parts)
    return f"embedded demo list {text}" if loaded.is_demo else text
