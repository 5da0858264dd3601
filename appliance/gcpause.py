"""The cyclic garbage collector paused around work that makes many objects.

A Lookup of 100,000 hashes makes about 600,000 small objects (a result, its
lists, its hash value each), none of them in a cycle, yet each allocation
burst makes the collector walk them all again: it doubled the time of such a
Lookup (1.3 s to 2.6 s). Paused only around the thread's work, the collector
then walked them once, on the event loop, as soon as the next allocation came
(a legitimate caller's p99 doubled); so the pause covers the whole RPC, and
its objects are freed by reference counting before the collector runs again.

The collector is process-wide: it is paused while at least one such piece of
work runs (a count under a lock, as they overlap) and given back as it was.
"""

from __future__ import annotations

import gc
import threading
from collections.abc import Iterator
from contextlib import contextmanager

_paused = 0
_was_enabled = True
_pause_lock = threading.Lock()


@contextmanager
def no_cycle_collection() -> Iterator[None]:
    """Pause the cyclic collector for the ``with`` block (see the module)."""
    global _paused, _was_enabled
    with _pause_lock:
        if _paused == 0:
            _was_enabled = gc.isenabled()
            gc.disable()
        _paused += 1
    try:
        yield
    finally:
        with _pause_lock:
            _paused -= 1
            if _paused == 0 and _was_enabled:
                gc.enable()
