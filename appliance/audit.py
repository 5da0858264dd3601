"""Append-only audit log of every match.

One JSON object per line: time, request id, list, list version, entry id,
signal, distance. Each write is flushed and fsync'ed before the answer goes
out, so a record survives a crash of the process or the machine. No file
content and no hash of a non-matching file is ever written.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Iterable

from appliance.index.snapshot import Hit


class AuditLog:
    def __init__(self, path: str) -> None:
        self.path = path
        self._lock = threading.Lock()
        # O_APPEND: concurrent writers (even other processes) never interleave lines.
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)

    def record(self, request_id: str, item_id: str, hits: Iterable[Hit]) -> None:
        now = time.time()
        lines = [
            json.dumps(
                {
                    "time": round(now, 6),
                    "request_id": request_id,
                    "item_id": item_id,
                    "list": h.list,
                    "list_version": h.list_version,
                    "entry_id": h.entry_id,
                    "signal": h.signal,
                    "distance": h.distance,
                    "kind": h.kind,
                    "suppressed": h.suppressed,
                },
                separators=(",", ":"),
            )
            for h in hits
        ]
        if not lines:
            return
        data = ("\n".join(lines) + "\n").encode()
        with self._lock:
            os.write(self._fd, data)
            os.fsync(self._fd)

    def close(self) -> None:
        with self._lock:
            if self._fd >= 0:
                os.close(self._fd)
                self._fd = -1
